"""Flavor scenarios through the real Nova stack (corral hosts only): servers booted
through nova-api with flavors carrying fields and extra specs (docs/flavors.md), and
each limit checked from INSIDE the container (`runc --root <runtime_root> exec <uuid>
sh -c ...`), as tests/flavors.rs and tests/limits.rs do for standalone instances.

The fake driver of the reference host applies no limit, so every scenario here is
marked kinds("corral") (deselected with --kinds reference).

Hosts (one per distinct config, module-scoped, torn down at the end of the module):
  flv  [corral] device_allowlist = unix-char:/dev/fuse, disk:<tmpdir>/*
       [corral] allow_privileged = false
  pin  [compute] cpu_dedicated_set = 1, cpu_shared_set = 0 (only for the CPU-pinning scenario)
"""

import os
import shutil
import subprocess
import tempfile
import time

import pytest

import novaharness as nh

MiB = 1 << 20

pytestmark = pytest.mark.kinds("corral")


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def share_base():
    """A host directory tree that the flv host's allowlist opens (`disk:<base>/*`)."""
    d = tempfile.mkdtemp(prefix="corral-flv-share-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def flv_host(hosts, share_base):
    h = hosts.start("corral", "flv", conf={"corral": {
        "device_allowlist": "unix-char:/dev/fuse, disk:%s/*" % share_base,
        "allow_privileged": "false",
    }})
    yield h
    hosts.teardown(h)


@pytest.fixture(scope="module")
def pin_host(hosts):
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs at least 2 CPUs (cpu_dedicated_set = 1, cpu_shared_set = 0)")
    h = hosts.start("corral", "pin", conf={"compute": {
        "cpu_dedicated_set": "1",
        "cpu_shared_set": "0",
    }})
    yield h
    hosts.teardown(h)


@pytest.fixture
def make_flavor(nova, run_id):
    """make_flavor(tag, ram=64, vcpus=1, swap=0, specs={...}, microversion=None): a flavor
    for this test, deleted at its end. `microversion` sets the extra specs at another
    compute microversion (< 2.86: nova-api does not validate them)."""
    made = []

    def make(tag, ram=64, vcpus=1, disk=1, swap=0, specs=None, microversion=None):
        fid = "corral-flv-%s-%s" % (run_id, tag)
        nova.delete("/flavors/" + fid, expect=(202, 404))
        body = {"id": fid, "name": fid, "ram": ram, "vcpus": vcpus, "disk": disk}
        if swap:
            body["swap"] = swap
        nova.post("/flavors", {"flavor": body}, expect=200)
        made.append(fid)
        if specs:
            headers = {}
            if microversion:
                headers = {"OpenStack-API-Version": "compute " + microversion,
                           "X-OpenStack-Nova-API-Version": microversion}
            nova.post("/flavors/%s/os-extra_specs" % fid, {"extra_specs": specs}, expect=200,
                      headers=headers)
        f = nova.get("/flavors/" + fid, expect=200).json()["flavor"]
        assert f.get("extra_specs", {}) == (specs or {}), f
        return f

    yield make
    for fid in made:
        nova.delete("/flavors/" + fid, expect=(202, 404))


# ----------------------------------------------------------------------------- helpers


def sh(host, sid, script, timeout=60):
    """`sh -c script` inside the server's container."""
    return subprocess.run(["runc", "--root", host.runtime_root, "exec", sid, "sh", "-c", script],
                          capture_output=True, text=True, timeout=timeout)


def sh_ok(host, sid, script, timeout=60):
    p = sh(host, sid, script, timeout)
    assert p.returncode == 0, "exec in %s failed (rc %d): %s\nstdout: %r\nstderr: %r" % (
        sid, p.returncode, script, p.stdout, p.stderr)
    return p.stdout.strip()


def v2_inside(host, sid):
    return sh_ok(host, sid, "[ -f /sys/fs/cgroup/cgroup.controllers ] && echo v2 || echo v1") == "v2"


def cg_read(host, sid, v1, v2):
    """One cgroup file as the container sees it (v1 path under /sys/fs/cgroup/, or v2)."""
    return sh_ok(host, sid, "if [ -f /sys/fs/cgroup/cgroup.controllers ]; then cat /sys/fs/cgroup/%s; "
                            "else cat /sys/fs/cgroup/%s; fi" % (v2, v1))


def kv(text):
    """'key value' lines (memory.oom_control, pids.events, memory.events) as a dict."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[0]] = parts[1]
    return out


def boot(servers, host, flavor, what="boot"):
    srv = servers.boot(host, flavor=flavor, what=what)
    assert srv["OS-EXT-SRV-ATTR:host"] == host.name
    assert srv["OS-EXT-STS:power_state"] == 1, nh.describe_server(srv)
    st = host.container_state(srv["id"])
    assert st is not None and st["status"] == "running", "container of %s: %r\n%s" % (
        srv["id"], st, host.log_excerpt())
    return srv, st


def still_active(nova, host, srv, pid):
    """The server is still ACTIVE/running and its container keeps the same init."""
    s = nh.wait_server(nova, srv["id"], "ACTIVE", host, timeout=10, what="after the test load")
    assert s["OS-EXT-STS:power_state"] == 1, nh.describe_server(s)
    st = host.container_state(srv["id"])
    assert st is not None and st["status"] == "running", "container after the load: %r" % st
    assert st["pid"] == pid, "the container's init changed (pid %s -> %s)" % (pid, st["pid"])
    assert host.alive(), "the corral daemon died\n" + host.log_excerpt()


def instance_dirs(host):
    d = os.path.join(host.state_dir, "instances")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def disk_of(path):
    """MAJ:MIN of the whole disk holding `path` (what corral throttles)."""
    dev = os.stat(path).st_dev
    entry = "/sys/dev/block/%d:%d" % (os.major(dev), os.minor(dev))
    if os.path.exists(os.path.join(entry, "partition")):
        return open(os.path.join(os.path.realpath(entry), "..", "dev")).read().strip()
    return "%d:%d" % (os.major(dev), os.minor(dev))


def boot_fails(nova, placement, servers, host, flavor, what):
    """Boots `flavor` on `host`, expects ERROR with a fault, and checks that nothing was
    left: no container, no instance dir, no allocation. Returns the fault message."""
    before = instance_dirs(host)
    usage = placement.usages(host.rp_uuid)
    s = servers.create(host=host, flavor=flavor)
    s = nh.wait_server(nova, s["id"], "ERROR", host, what=what)
    fault = s.get("fault") or {}
    msg = fault.get("message") or ""
    assert msg, "no fault: " + nh.describe_server(s)
    assert msg.isprintable(), "fault is not readable text: %r" % msg
    assert s["OS-EXT-STS:task_state"] is None, nh.describe_server(s)
    sid = s["id"]
    assert host.container_state(sid) is None, "a container was left for %s" % sid
    assert sid not in [c["id"] for c in host.containers()], host.containers()
    left = [d for d in instance_dirs(host) if sid in d]
    assert not left and instance_dirs(host) == before, (
        "instance dirs left: before %r, after %r" % (before, instance_dirs(host)))
    assert placement.allocations(sid) == {}, "allocations left: %r" % placement.allocations(sid)
    assert placement.usages(host.rp_uuid) == usage, "usage changed: %r -> %r" % (
        usage, placement.usages(host.rp_uuid))
    assert host.alive(), host.log_excerpt()
    print("\n  %s: fault %r" % (what, msg))
    nova.delete("/servers/" + sid, expect=204)
    nh.wait_gone(nova, sid, host)
    return msg, fault


# ----------------------------------------------------------------------------- limits


def test_memory_limit_and_oom_inside(kind, flv_host, nova, servers, make_flavor, timer):
    """memory_mb is the memory cgroup limit seen inside; a hog over it is OOM-killed
    inside only: the init stays, the server stays ACTIVE."""
    host = flv_host
    f = make_flavor("mem", ram=64)
    srv, st = boot(servers, host, f)
    timer("boot")
    sid = srv["id"]
    assert int(cg_read(host, sid, "memory/memory.limit_in_bytes", "memory.max")) == 64 * MiB
    # dd allocates one 128 MiB buffer and fills it: twice the limit
    p = sh(host, sid, "dd if=/dev/zero of=/dev/null bs=128M count=1")
    timer("hog")
    assert p.returncode == 137, "the hog was not SIGKILLed (rc %d): %r %r" % (p.returncode, p.stdout, p.stderr)
    events = kv(cg_read(host, sid, "memory/memory.oom_control", "memory.events"))
    assert int(events.get("oom_kill", 0)) >= 1, "no oom_kill counted in the container's cgroup: %r" % events
    still_active(nova, host, srv, st["pid"])
    assert sh_ok(host, sid, "echo alive") == "alive"


def test_vcpus_are_the_cfs_quota(kind, flv_host, servers, make_flavor):
    host = flv_host
    f = make_flavor("cpu2", vcpus=2)
    srv, _ = boot(servers, host, f)
    sid = srv["id"]
    if v2_inside(host, sid):
        quota, period = cg_read(host, sid, "", "cpu.max").split()
    else:
        quota = cg_read(host, sid, "cpu/cpu.cfs_quota_us", "")
        period = cg_read(host, sid, "cpu/cpu.cfs_period_us", "")
    assert int(quota) == 2 * int(period), "quota %s / period %s != vcpus 2" % (quota, period)


def test_cpu_quota_extra_specs(kind, flv_host, servers, make_flavor):
    """quota:cpu_shares, quota:cpu_quota, quota:cpu_period (the quota wins over vcpus)."""
    host = flv_host
    f = make_flavor("cpuq", vcpus=1, specs={
        "quota:cpu_shares": "512", "quota:cpu_quota": "150000", "quota:cpu_period": "200000"})
    srv, _ = boot(servers, host, f)
    sid = srv["id"]
    if v2_inside(host, sid):
        assert cg_read(host, sid, "", "cpu.max") == "150000 200000"
        assert cg_read(host, sid, "", "cpu.weight") == "20"   # runc's shares -> weight of 512
    else:
        assert cg_read(host, sid, "cpu/cpu.shares", "") == "512"
        assert cg_read(host, sid, "cpu/cpu.cfs_quota_us", "") == "150000"
        assert cg_read(host, sid, "cpu/cpu.cfs_period_us", "") == "200000"


def test_max_processes_stops_a_fork_bomb(kind, flv_host, nova, servers, make_flavor, timer):
    """corral:max_processes=40 is pids.max inside; 200 forks stop at 40, the server stays
    ACTIVE and the host is fine."""
    host = flv_host
    f = make_flavor("pids", specs={"corral:max_processes": "40"})
    srv, st = boot(servers, host, f)
    sid = srv["id"]
    assert cg_read(host, sid, "pids/pids.max", "pids.max") == "40"
    # the subshell dies at its first failed fork (ash raises); the sleepers hold the pids
    out = sh_ok(host, sid,
                "(i=0; while [ $i -lt 200 ]; do sleep 4 & i=$((i+1)); done) 2>/dev/null; "
                "if [ -f /sys/fs/cgroup/cgroup.controllers ]; then d=/sys/fs/cgroup; "
                "else d=/sys/fs/cgroup/pids; fi; "
                "read n < $d/pids.current; echo $n; cat $d/pids.events 2>/dev/null", timeout=60)
    timer("fork bomb")
    lines = out.splitlines()
    n = int(lines[0])
    assert n <= 40, "%d processes, limit 40" % n
    assert n >= 30, "the bomb should have filled the limit, got %d" % n
    events = kv("\n".join(lines[1:]))
    if "max" in events:
        assert int(events["max"]) >= 1, "no fork refused by the pids limit: %r" % events
    still_active(nova, host, srv, st["pid"])
    # once the sleepers exit, the container takes new processes again
    alive = nh.wait_for(lambda: sh(host, sid, "echo alive").stdout.strip() == "alive", 20, interval=1)
    assert alive, "exec never worked again after the bomb: %r" % (sh(host, sid, "echo alive"),)
    timer("recovered")
    assert host.service()["state"] == "up"


def test_swap_is_the_memsw_limit(kind, flv_host, servers, make_flavor):
    """swap = 32 MB on 64 MB: memory+swap = 96 MiB (v1 memsw), swap.max = 32 MiB (v2)."""
    host = flv_host
    f = make_flavor("swap", ram=64, swap=32)
    assert f["swap"] == 32, f
    srv, _ = boot(servers, host, f)
    sid = srv["id"]
    assert int(cg_read(host, sid, "memory/memory.limit_in_bytes", "memory.max")) == 64 * MiB
    v2 = v2_inside(host, sid)
    f_ = "/sys/fs/cgroup/memory.swap.max" if v2 else "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"
    have = sh_ok(host, sid, "[ -f %s ] && echo yes || echo no" % f_) == "yes"
    if not have:
        pytest.skip("the host does not account swap (%s absent): memsw not checked" % f_)
    got = int(sh_ok(host, sid, "cat " + f_))
    assert got == (32 if v2 else 96) * MiB, "%s = %d, expected %d MiB" % (f_, got, 32 if v2 else 96)


def test_disk_write_throttle(kind, flv_host, servers, make_flavor, timer):
    """quota:disk_write_bytes_sec=5242880 is the write throttle on the disk holding the
    server's writable root (its own root disk, a loop device, when the flavor has
    root_gb; else the disk of the host's state_path), seen inside; direct writes run at
    about that rate."""
    host = flv_host
    rate = 5 * MiB
    f = make_flavor("bps", specs={"quota:disk_write_bytes_sec": str(rate)})
    srv, _ = boot(servers, host, f)
    sid = srv["id"]
    layer = os.path.join(host.state_dir, "instances", sid, "layer")
    assert f["disk"] > 0 and os.path.ismount(layer), "no root disk of its own at %s" % layer
    disk = disk_of(layer)
    if v2_inside(host, sid):
        io = cg_read(host, sid, "", "io.max")
        assert any(l.startswith(disk + " ") and "wbps=%d" % rate in l for l in io.splitlines()), io
    else:
        assert cg_read(host, sid, "blkio/blkio.throttle.write_bps_device", "") == "%s %d" % (disk, rate)
        assert cg_read(host, sid, "blkio/blkio.throttle.read_bps_device", "") == "", "no read throttle asked"
    # direct I/O (v1 throttles only direct and synchronous writes): 15 MiB at 5 MiB/s ~ 3 s
    t0 = time.time()
    p = sh(host, sid, "dd if=/dev/zero of=/root/ddtest bs=1M count=15 oflag=direct", timeout=120)
    took = time.time() - t0
    timer("dd 15 MiB direct")
    if p.returncode != 0:
        print("direct I/O refused inside (%r): rate not measured" % p.stderr)
        return
    assert took >= 2.0, "15 MiB of direct writes at %d B/s took only %.2f s" % (rate, took)
    assert took < 30, "15 MiB at 5 MiB/s took %.1f s" % took
    sh_ok(host, sid, "rm -f /root/ddtest")


# ----------------------------------------------------------------------------- refusals


BAD_SPECS = [
    # (id, extra specs, microversion to set them at, what the fault must mention)
    ("privileged-perhaps", {"corral:privileged": "perhaps"}, None, ["corral:privileged"]),
    # nova-api refuses a negative cpu_shares from 2.86 on; an older client can still set it
    ("cpu-shares-negative", {"quota:cpu_shares": "-5"}, "2.85", ["quota:cpu_shares"]),
    ("device-floppy", {"corral:device:x": "floppy,path=/dev/fd0"}, None, ["corral:device:x", "floppy"]),
    # the allowlist is checked at spawn; its documented fault names the device by its NAME
    # (docs/flavors.md: "device fuse: unix-char /dev/fuse is not allowed by ..."), not the key
    ("device-not-allowed", {"corral:device:tun": "unix-char,path=/dev/net/tun"}, None,
     ["device tun", "/dev/net/tun", "device_allowlist"]),
]


@pytest.mark.parametrize("case", BAD_SPECS, ids=[c[0] for c in BAD_SPECS])
def test_bad_extra_spec_fails_the_build(kind, case, flv_host, nova, placement, servers, make_flavor):
    tag, specs, mv, want = case
    host = flv_host
    if mv:
        # (the check that this is only possible below 2.86)
        fid = make_flavor("bad-check-" + tag)["id"]
        r = nova.post("/flavors/%s/os-extra_specs" % fid, {"extra_specs": specs}, expect=(200, 400))
        assert r.status_code == 400, "nova-api %s accepted %r: %s" % (nh.COMPUTE_MICROVERSION, specs, r.text)
    f = make_flavor("bad-" + tag, specs=specs, microversion=mv)
    msg, fault = boot_fails(nova, placement, servers, host, f, "boot with %r" % specs)
    missing = [w for w in want if w not in msg]
    assert not missing, "the fault does not mention %r: %r\n  details: %s" % (
        missing, msg, (fault.get("details") or "")[:1500])


def test_privileged_refused_by_host(kind, flv_host, nova, placement, servers, make_flavor):
    """corral:privileged=true on a host with [corral] allow_privileged = false."""
    f = make_flavor("priv", specs={"corral:privileged": "true"})
    msg, fault = boot_fails(nova, placement, servers, flv_host, f, "privileged boot")
    assert "allow_privileged" in msg, "fault does not name [corral] allow_privileged: %r\n  details: %s" % (
        msg, (fault.get("details") or "")[:1500])


# ----------------------------------------------------------------------------- devices


def test_root_gb_is_the_size_of_the_root_disk(kind, flv_host, nova, servers, make_flavor, timer):
    """root_gb = 1: writing 1.2 GiB into the root fails inside with ENOSPC; the host keeps
    at most 1 GiB for it, and another server on the host still writes."""
    host = flv_host
    f = make_flavor("disk1", disk=1)
    srv, _ = boot(servers, host, f)
    sid = srv["id"]
    p = sh(host, sid, "dd if=/dev/zero of=/fill bs=1M count=1200 2>&1; echo rc=$?", timeout=300)
    timer("dd 1.2 GiB into a 1 GiB root")
    assert "No space left on device" in p.stdout and "rc=0" not in p.stdout, p.stdout + p.stderr
    img = os.path.join(host.state_dir, "instances", sid, "layer.img")
    held = os.stat(img).st_blocks * 512
    assert held <= 1 << 30, "the root disk of %s holds %d bytes" % (sid, held)
    sh_ok(host, sid, "rm -f /fill")
    other, _ = boot(servers, host, f, what="a second server")
    sh_ok(host, other["id"], "dd if=/dev/zero of=/fill bs=1M count=64 2>/dev/null && rm /fill && echo ok")
    nova.delete("/servers/" + sid, expect=204)
    nh.wait_gone(nova, sid, host)
    assert not os.path.exists(img), "the root disk outlived its server"


@pytest.fixture
def btrfs_host(hosts):
    """A corral host whose state path is a btrfs filesystem of its own (a 4 GiB sparse
    file, loop-mounted) with `[corral] storage = btrfs`."""
    if not shutil.which("mkfs.btrfs"):
        pytest.skip("btrfs-progs is not installed")
    name = hosts.name("corral", "btrfs")
    state = os.path.join(hosts.stack.hosts, name, "state")
    os.makedirs(state, exist_ok=True)
    img = tempfile.NamedTemporaryFile(prefix="btrfs-pool-", suffix=".img", delete=False)
    img.truncate(4 << 30)
    img.close()
    subprocess.run(["mkfs.btrfs", "-q", img.name], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "loop", img.name, state], check=True, capture_output=True)
    try:
        h = hosts.start("corral", conf={"corral": {"storage": "btrfs"}}, name=name)
        yield h
        hosts.teardown(h)
    finally:
        for _ in range(50):
            if subprocess.run(["umount", state], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", state], capture_output=True)
        os.unlink(img.name)


def test_root_gb_on_a_btrfs_pool(kind, btrfs_host, nova, placement, servers, make_flavor, timer):
    """storage = btrfs: the server's root is a subvolume, root_gb = 1 its qgroup limit
    (EDQUOT inside past it), and DISK_GB is the pool's filesystem, not the host's root."""
    host = btrfs_host
    inv = placement.inventories(host.rp_uuid)
    assert 2 <= inv["DISK_GB"]["total"] <= 4, inv["DISK_GB"]
    f = make_flavor("btrfs1", disk=1)
    srv, _ = boot(servers, host, f)
    sid = srv["id"]
    sub = os.path.join(host.state_dir, "instances", sid, "subvol")
    assert os.stat(sub).st_ino == 256, "the root of %s is no subvolume" % sid
    assert not os.path.exists(os.path.join(host.state_dir, "instances", sid, "layer.img"))
    p = sh(host, sid, "dd if=/dev/zero of=/fill bs=1M count=1200 2>&1; echo rc=$?", timeout=300)
    timer("dd 1.2 GiB into a 1 GiB btrfs root")
    assert "Disk quota exceeded" in p.stdout and "rc=0" not in p.stdout, p.stdout + p.stderr
    sh_ok(host, sid, "rm -f /fill")
    nova.delete("/servers/" + sid, expect=204)
    nh.wait_gone(nova, sid, host)
    listed = subprocess.run(["btrfs", "subvolume", "list", host.state_dir],
                            capture_output=True, text=True, check=True).stdout
    assert sid not in listed, listed


def test_fuse_only_when_granted(kind, flv_host, servers, make_flavor):
    host = flv_host
    if not os.path.exists("/dev/fuse"):
        pytest.skip("the host has no /dev/fuse")
    fuse = make_flavor("fuse", specs={"corral:device:fuse": "unix-char,path=/dev/fuse"})
    plain = make_flavor("nofuse")
    with_f, _ = boot(servers, host, fuse)
    without, _ = boot(servers, host, plain)
    hst = os.stat("/dev/fuse")
    assert sh_ok(host, with_f["id"], "stat -c '%t:%T' /dev/fuse") == "%x:%x" % (
        os.major(hst.st_rdev), os.minor(hst.st_rdev))
    # opening it read-write works (no mount needed); EPERM/ENOENT would fail here
    assert sh_ok(host, with_f["id"], "test -c /dev/fuse && exec 3<>/dev/fuse && echo opened") == "opened"
    assert sh_ok(host, without["id"], "test -e /dev/fuse && echo yes || echo no") == "no"
    # (not `exec 3<>`: that would create a plain file)
    p = sh(host, without["id"], "cat /dev/fuse")
    assert p.returncode != 0 and "No such file" in p.stderr, "read /dev/fuse without the device: %r" % (p,)


def test_host_directory_as_disk(kind, flv_host, servers, make_flavor, share_base):
    host = flv_host
    src = tempfile.mkdtemp(prefix="data-", dir=share_base)
    os.chmod(src, 0o755)
    with open(os.path.join(src, "hello"), "w") as fh:
        fh.write("from the host\n")
    f = make_flavor("disk", specs={"corral:device:data": "disk,source=%s,path=/data" % src})
    srv, _ = boot(servers, host, f)
    sid = srv["id"]
    assert sh_ok(host, sid, "cat /data/hello") == "from the host"
    # a bind mount: what the host writes later is seen too
    with open(os.path.join(src, "later"), "w") as fh:
        fh.write("written after boot\n")
    assert sh_ok(host, sid, "cat /data/later") == "written after boot"
    assert any(" /data " in l for l in sh_ok(host, sid, "cat /proc/mounts").splitlines())


# ----------------------------------------------------------------------------- dedicated CPUs


def test_dedicated_cpu_policy(kind, pin_host, nova, placement, servers, make_flavor, timer):
    """hw:cpu_policy=dedicated on a host with cpu_dedicated_set = 1, cpu_shared_set = 0:
    the dedicated server runs on CPU 1, a shared one on CPU 0; placement has PCPU = 1 and
    the dedicated server's allocation is PCPU (nova's scheduler asks for PCPU; with none
    reported it falls back to a VCPU query, so the boot alone does not show it)."""
    host = pin_host
    ded = make_flavor("ded", vcpus=1, specs={"hw:cpu_policy": "dedicated"})
    shared = make_flavor("shared", vcpus=1)
    d, _ = boot(servers, host, ded, what="dedicated boot")
    s, _ = boot(servers, host, shared, what="shared boot")
    timer("two boots")
    cpus = lambda sid: cg_read(host, sid, "cpuset/cpuset.cpus", "cpuset.cpus.effective")  # noqa: E731
    assert cpus(d["id"]) == "1", "dedicated server on CPUs %r, expected 1" % cpus(d["id"])
    assert cpus(s["id"]) == "0", "shared server on CPUs %r, expected 0" % cpus(s["id"])

    inv = placement.inventories(host.rp_uuid)
    problems = []
    if "PCPU" not in inv:
        problems.append("the provider reports no PCPU inventory: %r" % inv)
    elif inv["PCPU"]["total"] != 1:
        problems.append("PCPU total %r, expected 1 (cpu_dedicated_set = 1)" % inv["PCPU"])
    if inv.get("VCPU", {}).get("total") not in (None, 1):
        problems.append("VCPU total %r, expected 1 (cpu_shared_set = 0)" % inv["VCPU"])
    da = placement.allocations(d["id"]).get(host.rp_uuid, {}).get("resources")
    sa = placement.allocations(s["id"]).get(host.rp_uuid, {}).get("resources")
    if da != {"PCPU": 1, "MEMORY_MB": 64, "DISK_GB": 1}:
        problems.append("the dedicated server's allocation is %r, expected PCPU 1" % da)
    if sa != {"VCPU": 1, "MEMORY_MB": 64, "DISK_GB": 1}:
        problems.append("the shared server's allocation is %r, expected VCPU 1" % sa)
    assert not problems, "placement (PCPU):\n  " + "\n  ".join(problems)

    # the one dedicated CPU is taken: a second dedicated server does not boot, and leaves
    # nothing. Placement has no PCPU left, but nova's scheduler then falls back to a VCPU
    # query ([workarounds] disable_fallback_pcpu_query = False), so the host gets the
    # build and corral refuses it ("not enough free dedicated CPUs")
    msg, _ = boot_fails(nova, placement, servers, host, ded, "a second dedicated boot")
    assert "No valid host" in msg or "dedicated CPUs" in msg, msg


# ----------------------------------------------------------------------------- NIC through Placement

# the nic host runs its periodic resource update every NIC_UPDATE_INTERVAL s, so the
# scenario sees Placement's inventory after a periodic run with the NIC inside
NIC_UPDATE_INTERVAL = 5
NIC_CLASS = "CUSTOM_CORRAL_NIC"


@pytest.fixture(scope="module")
def host_veth():
    """A veth pair on the host (this kernel has no `dummy`): crlXXXXXX and crlXXXXXXp.
    Only the first end is given out; both are deleted at the end (errors ignored)."""
    name = "crl" + os.urandom(3).hex()          # 9 chars, the peer 10 (<= 15)
    peer = name + "p"
    p = subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", peer],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip("cannot create a veth pair: %s" % p.stderr.strip())
    yield name, peer
    for n in (name, peer):
        subprocess.run(["ip", "link", "del", n], capture_output=True)


@pytest.fixture(scope="module")
def nic_host(hosts, host_veth):
    name, _ = host_veth
    h = hosts.start("corral", "nic", conf={
        "corral": {"device_allowlist": "nic:%s" % name},
        "DEFAULT": {"update_resources_interval": str(NIC_UPDATE_INTERVAL)},
    })
    yield h
    hosts.teardown(h)


def on_host(ifname):
    return os.path.exists("/sys/class/net/" + ifname)


def nic_inside(host, sid, veth):
    """eth1 is in the server's container and up (IFF_UP), the veth end is gone from the
    host; the tc qdisc of eth1 (seen from the container's netns) is returned."""
    flags = sh_ok(host, sid, "cat /sys/class/net/eth1/flags")
    assert int(flags, 16) & 1, "eth1 inside is not up: flags %s" % flags
    assert not on_host(veth), "%s is still in the host's /sys/class/net" % veth
    pid = host.container_state(sid)["pid"]
    p = subprocess.run(["nsenter", "-t", str(pid), "-n", "tc", "qdisc", "show", "dev", "eth1"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, "tc qdisc show in the container's netns: %r" % (p,)
    return p.stdout


def nic_log_since(host, offset):
    with open(host.log, "rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace")


def test_nic_device_through_placement(kind, host_veth, nic_host, nova, placement, servers,
                                      make_flavor, timer):
    """A host NIC (one end of a veth pair, `[corral] device_allowlist = nic:<it>`) given
    by a flavor (`corral:device:eth1=nic`, `resources:CUSTOM_CORRAL_NIC=1`,
    `quota:vif_outbound_average=1000`) and scheduled by Placement: the host reports
    CUSTOM_CORRAL_NIC = 1, the server gets it (inside as eth1, up, tbf 8Mbit; the
    allocation holds it), a second such server finds no host, stop/start move it out and
    in again, delete gives it back to the host and frees the allocation."""
    veth, peer = host_veth
    host = nic_host
    rp = host.rp_uuid

    inv = nh.wait_for(lambda: placement.inventories(rp).get(NIC_CLASS), 30, interval=0.5)
    assert inv, "the provider of %s never reported %s: %r\n%s" % (
        host.name, NIC_CLASS, placement.inventories(rp), host.log_excerpt())
    assert inv["total"] == 1, "%s inventory %r, expected total 1 (only %s allowed)" % (NIC_CLASS, inv, veth)
    timer("inventory")

    f = make_flavor("nic", specs={
        "corral:device:eth1": "nic",
        "resources:%s" % NIC_CLASS: "1",
        "quota:vif_outbound_average": "1000",
    })
    log_mark = os.path.getsize(host.log)
    srv, _ = boot(servers, host, f, what="boot with the NIC")
    sid = srv["id"]
    timer("boot")
    qdisc = nic_inside(host, sid, veth)
    # 1000 KB/s (nova's unit, tc's kbps) = 8 Mbit/s
    assert "tbf" in qdisc and "rate 8Mbit" in qdisc, "eth1's qdisc: %r" % qdisc
    assert on_host(peer), "the veth peer %s left the host" % peer
    alloc = placement.allocations(sid).get(rp, {}).get("resources", {})
    assert alloc.get(NIC_CLASS) == 1, "the server's allocation: %r" % placement.allocations(sid)
    assert placement.usages(rp).get(NIC_CLASS) == 1, placement.usages(rp)

    # a periodic update with the NIC inside the container keeps the inventory (it is in use)
    time.sleep(NIC_UPDATE_INTERVAL * 2 + 1)
    inv = placement.inventories(rp).get(NIC_CLASS)
    assert inv and inv["total"] == 1, (
        "with the NIC inside the server, %s inventory is %r (expected total 1)" % (NIC_CLASS, inv))
    # (checked at the end, so that the rest of the scenario runs too)
    failed = [l for l in nic_log_since(host, log_mark).splitlines() if "update_available_resource failed" in l]
    timer("periodic with the NIC inside")

    # no other host has the class and this one's is taken: NoValidHost
    s2 = servers.create(flavor=f)
    s2 = nh.wait_server(nova, s2["id"], "ERROR", host, what="second boot with the NIC taken")
    assert "No valid host" in (s2.get("fault") or {}).get("message", ""), nh.describe_server(s2)
    assert not s2.get("OS-EXT-SRV-ATTR:host"), "a host was assigned: " + nh.describe_server(s2)
    assert placement.allocations(s2["id"]) == {}, placement.allocations(s2["id"])
    nova.delete("/servers/" + s2["id"], expect=204)
    nh.wait_gone(nova, s2["id"], host)
    timer("second server NoValidHost")

    # stop: the NIC comes home under its own name; start: it is inside again
    nova.action(sid, {"os-stop": None})
    nh.wait_server(nova, sid, "SHUTOFF", host, what="stop")
    assert on_host(veth), "%s is not back on the host after stop\n%s" % (veth, host.log_excerpt())
    assert placement.allocations(sid).get(rp, {}).get("resources", {}).get(NIC_CLASS) == 1
    timer("stop")
    nova.action(sid, {"os-start": None})
    s = nh.wait_server(nova, sid, "ACTIVE", host, what="start")
    assert s["OS-EXT-STS:power_state"] == 1, nh.describe_server(s)
    qdisc = nic_inside(host, sid, veth)
    assert "tbf" in qdisc and "rate 8Mbit" in qdisc, "eth1's qdisc after start: %r" % qdisc
    timer("start")

    # delete: back on the host, the allocation gone
    nova.delete("/servers/" + sid, expect=204)
    nh.wait_gone(nova, sid, host)
    timer("delete")
    assert on_host(veth), "%s is not back on the host after delete\n%s" % (veth, host.log_excerpt())
    assert placement.allocations(sid) == {}, placement.allocations(sid)
    assert placement.usages(rp).get(NIC_CLASS) == 0, placement.usages(rp)
    assert placement.inventories(rp).get(NIC_CLASS, {}).get("total") == 1, placement.inventories(rp)

    # the periodic resource update must not fail while the NIC is inside a server: a held
    # device still counts (docs/flavors.md, "Devices and the scheduler")
    assert not failed, (
        "while the NIC was inside the server the periodic update failed %d times in %d s:\n  %s"
        % (len(failed), NIC_UPDATE_INTERVAL * 2 + 1, "\n  ".join(failed[-3:])))
