#!/usr/bin/env python3
"""Writes the committed seed corpus of the fuzz targets to fuzz/seeds/<target>/.

Seeds come from the captured Nova 34 messages under tests/fixtures/nova-34 (one
body per method and kind, small ones first), small tarballs built here, the
sample configuration of docs/configuration.md and the syntaxes the unit tests
use. Run it from the repository root after changing a source; the output is
deterministic (fixed mtimes, sorted inputs), so an unchanged run changes no
file. libFuzzer's own findings go to fuzz/corpus/ (not committed).
"""

import glob
import gzip
import hashlib
import io
import json
import lzma
import os
import shutil
import tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join(ROOT, "fuzz", "seeds")
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "nova-34")
MAX_BODY = 24 * 1024


def write(target, data, name=None):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    name = name or hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def records(value):
    """Every dict holding a `body_raw`, depth first."""
    if isinstance(value, dict):
        if isinstance(value.get("body_raw"), str):
            yield value
        for v in value.values():
            yield from records(v)
    elif isinstance(value, list):
        for v in value:
            yield from records(v)


def nova_objects(value):
    if isinstance(value, dict):
        if "nova_object.name" in value:
            yield value
        for v in value.values():
            yield from nova_objects(v)
    elif isinstance(value, list):
        for v in value:
            yield from nova_objects(v)


def messages():
    bodies = {}
    objects = {}
    files = sorted(glob.glob(os.path.join(FIXTURES, "*", "*.json")))
    for path in files:
        if os.sep + "raw" + os.sep in path or os.sep + "placement" + os.sep in path:
            continue
        with open(path) as f:
            doc = json.load(f)
        for rec in records(doc):
            body = rec["body_raw"]
            if len(body) > MAX_BODY:
                continue
            try:
                inner = json.loads(json.loads(body).get("oslo.message", "{}"))
            except (ValueError, AttributeError):
                continue
            kind = "call" if "_msg_id" in inner and "method" in inner else (
                "cast" if "method" in inner else
                "heartbeat" if inner.get("result") is None and inner.get("failure") is None else
                "failure" if inner.get("failure") else "reply")
            key = (inner.get("method", ""), kind)
            if key not in bodies or len(body) < len(bodies[key]):
                bodies[key] = body
            for obj in nova_objects(inner):
                text = json.dumps(obj, separators=(",", ":"))
                name = obj["nova_object.name"]
                if len(text) <= MAX_BODY and (name not in objects or len(text) < len(objects[name])):
                    objects[name] = text
    return bodies, objects


def tarball(entries, compress=None):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e["name"])
            info.mtime = 1700000000
            info.mode = e.get("mode", 0o644)
            info.uid = e.get("uid", 0)
            info.gid = e.get("gid", 0)
            data = e.get("data", b"")
            kind = e.get("type", "file")
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = e.get("mode", 0o755)
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = e["link"]
            elif kind == "hardlink":
                info.type = tarfile.LNKTYPE
                info.linkname = e["link"]
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            info.size = len(data) if kind == "file" else 0
            tar.addfile(info, io.BytesIO(data) if kind == "file" else None)
    raw = buf.getvalue()
    if compress == "gz":
        return gzip.compress(raw, mtime=0)
    if compress == "xz":
        return lzma.compress(raw)
    return raw


def tarballs():
    rootfs = [
        {"name": "etc", "type": "dir"},
        {"name": "etc/os-release", "data": b'NAME="Seed"\nID=seed\nVERSION_ID=1\n'},
        {"name": "bin", "type": "dir"},
        {"name": "bin/busybox", "data": b"\x7fELF" + bytes(60), "mode": 0o4755},
        {"name": "bin/sh", "type": "symlink", "link": "busybox"},
        {"name": "bin/ls", "type": "hardlink", "link": "bin/busybox"},
        {"name": "home/user/.profile", "data": b"export PS1='$ '\n", "uid": 1000, "gid": 1000},
        {"name": "tmp", "type": "dir", "mode": 0o1777},
        {"name": "var/run", "type": "symlink", "link": "/run"},
    ]
    write("unpack", tarball(rootfs), "rootfs.tar")
    write("unpack", tarball(rootfs, "gz"), "rootfs.tar.gz")
    write("unpack", tarball(rootfs, "xz"), "rootfs.tar.xz")
    hostile = {
        "traversal.tar": [{"name": "../escape", "data": b"x"}],
        "symlink-write.tar": [
            {"name": "etc", "type": "symlink", "link": "/etc"},
            {"name": "etc/passwd", "data": b"root::0:0::/:/bin/sh\n"},
        ],
        "special-symlink.tar": [
            {"name": "etc", "type": "dir"},
            {"name": "etc/os-release", "type": "symlink", "link": "/dev/zero"},
        ],
        "hardlink-outside.tar": [{"name": "shadow", "type": "hardlink", "link": "/etc/shadow"}],
        "hardlinks.tar": [{"name": "big", "data": b"A" * 4096}]
        + [{"name": "l%03d" % i, "type": "hardlink", "link": "big"} for i in range(50)],
        "fifo.tar": [{"name": "pipe", "type": "fifo"}],
        "uid-out-of-range.tar": [{"name": "f", "data": b"x", "uid": 70000}],
        "dir-then-file.tar": [
            {"name": "a", "type": "dir", "mode": 0o000},
            {"name": "a/b", "data": b"x"},
            {"name": "a", "data": b"replaced"},
        ],
    }
    for name, entries in sorted(hostile.items()):
        write("unpack", tarball(entries), name)
    # A decompression bomb: far over the target's 1 MiB cap.
    write("unpack", gzip.compress(tarball([{"name": "zeros", "data": bytes(4 << 20)}]), mtime=0),
          "bomb.tar.gz")


def main():
    shutil.rmtree(SEEDS, ignore_errors=True)
    bodies, objects = messages()
    for (method, kind), body in sorted(bodies.items()):
        name = "%s-%s" % (method or "reply", kind)
        write("rpc_envelope", body, name)
        write("nova_message", body, name)
    # A capture file as `corral nova decode` reads it, and a bare object.
    with open(os.path.join(FIXTURES, "api-to-compute", "03-stop_instance.json"), "rb") as f:
        write("nova_message", f.read(), "capture-stop_instance.json")
    write("rpc_envelope", '{"method": "ping", "args": {}, "version": "1.0"}', "unenveloped")
    write("rpc_envelope", '{"oslo.version": "3.0", "oslo.message": "{}"}', "wrong-version")
    write("rpc_envelope", '{"oslo.version": "2.0", "oslo.message": '
          '"{\\"failure\\": \\"{\\\\\\"class\\\\\\": \\\\\\"X\\\\\\"}\\", \\"_msg_id\\": \\"1\\"}"}',
          "failure-reply")
    for name, text in sorted(objects.items()):
        write("nova_object", text, name)

    tarballs()

    with open(os.path.join(ROOT, "docs", "configuration.md")) as f:
        doc = f.read()
    blocks = doc.split("```ini\n")[1:]
    for i, block in enumerate(blocks):
        write("config", block.split("```")[0], "docs-%d.conf" % i)
    write("config", """[DEFAULT]
host = compute-1
state_path = /var/lib/corral
transport_url = rabbit://guest:guest@127.0.0.1:5672/
rpc_response_timeout = 60
report_interval = 10
cpu_allocation_ratio = 4.0
my_ip = 192.0.2.10

[oslo_messaging_rabbit]
rabbit_retry_interval = 1
rabbit_retry_backoff = 2
rabbit_interval_max = 30
kombu_reconnect_delay = 1.0
heartbeat_timeout_threshold = 60

[placement]
auth_type = password
auth_url = http://127.0.0.1/identity
username = nova
password = secret
project_name = service
region_name = RegionOne

[glance]
api_servers = http://127.0.0.1:9292

[corral]
max_image_bytes = 8G
console_log_max_bytes = 1M
idmap_base = 1000000
idmap_size = 65536
device_allowlist = unix-char:/dev/fuse,
  gpu:*

[pci]
device_spec = {"vendor_id": "8086", "product_id": "1520", "physical_network": "physnet1"}
alias = {"name": "a1", "vendor_id": "8086", "product_id": "1520", "device_type": "type-VF"}
""", "nova-compute.conf")

    for url in [
        "rabbit://guest:guest@127.0.0.1:5672/",
        "rabbit://a:b@h1:5673,c:d@h2/nova",
        "rabbit://us%40er:p%3Aa%2Fs%2Cs%25@host:5672//",
        "rabbit://a@b:c:d@host",
        "rabbit://[::1]:5672,[fe80::1%25eth0]/vhost?ssl=1&heartbeat_timeout_threshold=30",
        "rabbit:///",
        "kombu+rabbit://u:p@h:1/?rabbit_quorum_queue=true",
    ]:
        write("transport_url", url)

    write("extra_specs", "quota:cpu_shares=1024\nquota:cpu_quota=50000\nquota:cpu_period=100000\n"
          "hw:cpu_policy=dedicated\ncorral:max_processes=500\n", "cpu")
    write("extra_specs", "quota:disk_read_bytes_sec=10485760\nquota:disk_write_iops_sec=100\n"
          "quota:vif_inbound_average=1000\nquota:vif_outbound_burst=2000\n", "io")
    write("extra_specs", "corral:privileged=true\nlxd:nested_allowed=yes\n"
          "corral:device:fuse=unix-char,path=/dev/fuse\nhw:mem_page_size=large\n", "security")

    for name, text in [
        ("fuse", "unix-char,path=/dev/fuse"),
        ("lo", "unix-block, path=/dev/loop3, target=/dev/xvdb, mode=0660"),
        ("data", "disk,source=/srv/data,path=/mnt/data,readonly=yes"),
        ("u", "usb,vendorid=046d,productid=c52b,required=false,mode=0660"),
        ("g", "gpu,gputype=physical,vendorid=10de,pci=0000:81:00.0,id=0"),
        ("n", "nic,nictype=physical,parent=eth1,name=eth9"),
        ("0000:81:00.1", "unix-char:/dev/fuse\ndisk:/srv/shares/*\nusb:046d\nnic:eth*"),
        ("cpus", "0-3,^2,8-15"),
    ]:
        write("devices", "%s\n%s" % (name, text), name)

    for body in [
        {"name": "c1", "source": {"type": "image", "alias": "alpine"}},
        {"name": "c2", "source": {"type": "image", "fingerprint": "ab" * 32},
         "limits": {"cpus": 1.5, "memory_bytes": 268435456, "pids": 100},
         "privileged": False, "nesting": False,
         "extra_specs": {"quota:cpu_shares": "512"},
         "devices": {"fuse": "unix-char,path=/dev/fuse"},
         "command": ["/sbin/init"], "environment": {"LANG": "C"}, "start": False},
        {"action": "stop", "timeout": 30, "force": False},
        {"action": "restart", "timeout": -1},
        {"command": ["sh", "-c", "echo hi"], "environment": {"A": "b"}, "cwd": "/", "timeout": 5},
    ]:
        write("api_bodies", json.dumps(body))


if __name__ == "__main__":
    main()
