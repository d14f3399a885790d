"""Ephemeral disks through the real Nova stack (corral hosts only): a flavor with
ephemeral_gb = 1 booted through nova-api gives the server a 1 GB filesystem at /mnt,
read from INSIDE the container; a rebuild with preserve_ephemeral keeps what it holds, a
rebuild without makes it again empty; several ephemeral disks are refused with a fault
(docs/nova.md#ephemeral-disks).

The fake driver of the reference host has no disks, so every scenario here is marked
kinds("corral").
"""

import os
import subprocess

import pytest

import novaharness as nh

pytestmark = pytest.mark.kinds("corral")

GiB_KiB = 1 << 20


@pytest.fixture
def eph_flavor(nova, run_id):
    """A flavor of 1 GB root and `ephemeral` GB ephemeral disk, deleted at the end."""
    made = []

    def make(ephemeral):
        fid = "corral-eph-%s-%d" % (run_id, ephemeral)
        nova.delete("/flavors/" + fid, expect=(202, 404))
        body = {"id": fid, "name": fid, "ram": 64, "vcpus": 1, "disk": 1,
                "OS-FLV-EXT-DATA:ephemeral": ephemeral}
        f = nova.post("/flavors", {"flavor": body}, expect=200).json()["flavor"]
        assert f["OS-FLV-EXT-DATA:ephemeral"] == ephemeral, f
        made.append(fid)
        return f

    yield make
    for fid in made:
        nova.delete("/flavors/" + fid, expect=(202, 404))


def sh_ok(host, sid, script, timeout=60):
    p = subprocess.run(["runc", "--root", host.runtime_root, "exec", sid, "sh", "-c", script],
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, "exec in %s failed (rc %d): %s\nstdout: %r\nstderr: %r" % (
        sid, p.returncode, script, p.stdout, p.stderr)
    return p.stdout.strip()


def mnt_kib(host, sid):
    """The size of the filesystem at /mnt inside, in KiB."""
    line = sh_ok(host, sid, "df -k /mnt | tail -n 1")
    return int(line.split()[1])


def rebuild(nova, host, srv, image, preserve):
    nova.action(srv["id"], {"rebuild": {"imageRef": image["id"],
                                        "preserve_ephemeral": preserve}})
    s = nh.wait_server(nova, srv["id"], "ACTIVE", host, what="rebuild (preserve_ephemeral=%s)"
                       % preserve)
    assert s["OS-EXT-STS:task_state"] is None, nh.describe_server(s)
    assert host.container_state(srv["id"])["status"] == "running"
    return s


def test_ephemeral_disk_at_mnt_kept_or_emptied_by_rebuild(kind, hosts, nova, placement,
                                                         servers, eph_flavor, image, timer):
    host = hosts.primary(kind)
    flavor = eph_flavor(1)
    srv = servers.boot(host, flavor=flavor, what="boot with ephemeral_gb=1")
    timer("boot")
    sid = srv["id"]
    assert srv["OS-EXT-SRV-ATTR:host"] == host.name
    # Placement holds root + ephemeral.
    alloc = placement.allocations(sid)
    assert alloc[host.rp_uuid]["resources"]["DISK_GB"] == 2, alloc
    # /mnt: a filesystem of its own of ~1 GB, the container root's, nosuid,nodev.
    kib = mnt_kib(host, sid)
    assert 0.9 * GiB_KiB <= kib <= GiB_KiB, "/mnt is %d KiB" % kib
    mounts = sh_ok(host, sid, "grep ' /mnt ' /proc/mounts")
    assert " ext4 " in mounts and "nosuid" in mounts and "nodev" in mounts, mounts
    assert sh_ok(host, sid, "stat -c '%u:%g' /mnt") == "0:0"
    img = os.path.join(host.state_dir, "instances", sid, "ephemeral.img")
    assert os.path.isfile(img), img
    # Sparse: the host holds far less than the disk's size.
    assert os.stat(img).st_blocks * 512 < 128 << 20
    sh_ok(host, sid, "echo kept > /mnt/data && echo root > /etc/marker && sync")

    # preserve_ephemeral: a new root, the same ephemeral disk.
    rebuild(nova, host, srv, image, True)
    timer("rebuild preserve_ephemeral")
    assert sh_ok(host, sid, "cat /mnt/data") == "kept"
    assert sh_ok(host, sid, "test -e /etc/marker && echo yes || echo no") == "no"
    # Without: made again, empty, same size.
    rebuild(nova, host, srv, image, False)
    timer("rebuild")
    assert sh_ok(host, sid, "ls -A /mnt") == ""
    assert 0.9 * GiB_KiB <= mnt_kib(host, sid) <= GiB_KiB
    # Stop and start keep it.
    sh_ok(host, sid, "echo again > /mnt/data && sync")
    nova.action(sid, {"os-stop": None})
    nh.wait_server(nova, sid, "SHUTOFF", host, what="stop")
    nova.action(sid, {"os-start": None})
    nh.wait_server(nova, sid, "ACTIVE", host, what="start")
    assert sh_ok(host, sid, "cat /mnt/data") == "again"
    timer("stop/start")
    # Delete: no file, no mount, no loop device.
    nova.delete("/servers/" + sid, expect=204)
    nh.wait_gone(nova, sid, host)
    assert not os.path.exists(img)
    with open("/proc/self/mountinfo") as f:
        assert sid not in f.read()
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    assert sid not in loops, loops


def test_several_ephemeral_disks_are_refused(kind, hosts, nova, placement, servers,
                                             eph_flavor, image):
    host = hosts.primary(kind)
    flavor = eph_flavor(2)
    before = placement.usages(host.rp_uuid)
    blank = {"source_type": "blank", "destination_type": "local", "volume_size": 1,
             "boot_index": -1, "delete_on_termination": True}
    s = servers.create(host=host, flavor=flavor, block_device_mapping_v2=[
        {"uuid": image["id"], "source_type": "image", "destination_type": "local",
         "boot_index": 0, "delete_on_termination": True},
        dict(blank), dict(blank)])
    s = nh.wait_server(nova, s["id"], "ERROR", host, what="boot with two ephemeral disks")
    msg = (s.get("fault") or {}).get("message") or ""
    assert "ephemeral" in msg, nh.describe_server(s)
    assert host.container_state(s["id"]) is None
    assert not os.path.exists(os.path.join(host.state_dir, "instances", s["id"]))
    assert placement.allocations(s["id"]) == {}
    assert placement.usages(host.rp_uuid) == before
    print("\n  two ephemeral disks: fault %r" % msg)


def _hypervisor(nova, host):
    """The host's hypervisor record at 2.87 (the last microversion showing its disk
    fields)."""
    hv = {"OpenStack-API-Version": "compute 2.87", "X-OpenStack-Nova-API-Version": "2.87"}
    hyp = nova.get("/os-hypervisors/detail?hypervisor_hostname_pattern=" + host.name,
                   expect=200, headers=hv).json()["hypervisors"]
    assert len(hyp) == 1, hyp
    return hyp[0]


def test_disk_available_least_is_what_the_disks_really_take(kind, hosts, nova, servers,
                                                           eph_flavor):
    """local_gb_used counts the flavors' disks (as nova's resource tracker does);
    disk_available_least is the free space once the sparse disk files have grown to
    their sizes (as libvirt reports it): a server with 1 GB root + 1 GB ephemeral takes
    about 2 GB of it while its files hold almost nothing, and gives it back on delete."""
    host = hosts.start(kind, "dal", conf={"DEFAULT": {"update_resources_interval": "2"}})
    try:
        before = _hypervisor(nova, host)
        assert before["disk_available_least"] is not None, before
        assert before["disk_available_least"] <= before["free_disk_gb"] + before[
            "local_gb_used"], before
        srv = servers.boot(host, flavor=eph_flavor(1), what="boot with 1 GB root + 1 GB ephemeral")
        img = os.path.join(host.state_dir, "instances", srv["id"], "ephemeral.img")
        held = os.stat(img).st_blocks * 512
        assert held < 64 << 20, held

        def dropped():
            h = _hypervisor(nova, host)
            return h if before["disk_available_least"] - h["disk_available_least"] >= 1 else None
        after = nh.wait_for(dropped, 30)
        assert after, "disk_available_least did not drop: %r -> %r" % (
            before["disk_available_least"], _hypervisor(nova, host)["disk_available_least"])
        assert after["local_gb_used"] == before["local_gb_used"] + 2, after
        print("\n  disk_available_least %d -> %d GB, local_gb_used %d -> %d GB (files hold %d KiB)"
              % (before["disk_available_least"], after["disk_available_least"],
                 before["local_gb_used"], after["local_gb_used"], held >> 10))
        nova.delete("/servers/" + srv["id"], expect=204)
        nh.wait_gone(nova, srv["id"], host)
        back = nh.wait_for(lambda: (lambda h: h if h["disk_available_least"]
                                    >= before["disk_available_least"] - 1 else None)(
                                        _hypervisor(nova, host)), 30)
        assert back, "disk_available_least not given back: %r" % _hypervisor(nova, host)
        assert back["local_gb_used"] == before["local_gb_used"], back
    finally:
        hosts.teardown(host)
