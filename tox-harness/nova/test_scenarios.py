"""End-to-end scenarios through the real nova-api, conductor, scheduler, placement,
glance and neutron, against a compute host of each kind:

  reference  nova-compute with fake.FakeDriverWithoutFakeNodes (the oracle: these pass)
  corral     the corral daemon; for corral the server must also be a real runc
             container (id = server uuid) with the flavor's limits in its cgroup

Each scenario pins its servers with "host" (microversion >= 2.74, admin) and boots
with "networks": "none". Every transition waits (<= 120 s) for the target status with
OS-EXT-STS:task_state null; a failure prints the server's fault and the host's log tail.
"""

import os
import shutil
import subprocess
import tempfile
import time
import uuid

import pytest

import novaharness as nh

MiB = 1 << 20


# ----------------------------------------------------------------------------- checks


def check_allocations(placement, host, server, flavor):
    allocs = placement.allocations(server["id"])
    assert list(allocs) == [host.rp_uuid], (
        "placement allocations of %s are %r, expected one on %s's provider %s"
        % (server["id"], allocs, host.name, host.rp_uuid))
    res = allocs[host.rp_uuid]["resources"]
    assert res == {"VCPU": flavor["vcpus"], "MEMORY_MB": flavor["ram"], "DISK_GB": flavor["disk"]}, res


def check_container(host, server, flavor, status="running"):
    """corral only: a runc container named after the server under the host's runtime
    root, in the requested state, with the flavor's memory and cpu limits."""
    if host.kind != "corral":
        return None
    st = host.container_state(server["id"])
    assert st is not None, "no runc container %s under %s (runc list: %r)\n%s" % (
        server["id"], host.runtime_root, host.containers(), host.log_excerpt())
    assert st["status"] == status, "container %s is %s, expected %s" % (server["id"], st["status"], status)
    if status in ("running", "paused"):
        mem, cpus, paths = nh.cgroup_limits(st["pid"])
        assert any(nh.CGROUP_PARENT in p for p in paths.values()), (
            "container cgroups %r are not under cgroup_parent %s" % (paths, nh.CGROUP_PARENT))
        assert mem == flavor["ram"] * MiB, "memory limit %r != flavor ram %d MiB (cgroups %r)" % (
            mem, flavor["ram"], paths)
        assert cpus is not None and abs(cpus - flavor["vcpus"]) < 1e-6, (
            "cpu quota/period %r != flavor vcpus %d (cgroups %r)" % (cpus, flavor["vcpus"], paths))
    return st


def check_no_container(host, sid):
    if host.kind == "corral":
        assert host.container_state(sid) is None, "container %s still exists after delete" % sid


def boot(servers, host, placement, flavor, timer=None):
    srv = servers.boot(host)
    if timer:
        timer("boot")
    assert srv["OS-EXT-SRV-ATTR:host"] == host.name
    assert srv["OS-EXT-STS:power_state"] == 1
    check_allocations(placement, host, srv, flavor)
    check_container(host, srv, flavor)
    return srv


def transition(nova, host, srv, body, status, what):
    nova.action(srv["id"], body)
    return nh.wait_server(nova, srv["id"], status, host, what=what)


# ----------------------------------------------------------------------------- scenarios


def test_service_up(kind, hosts, nova, placement):
    host = hosts.primary(kind)
    sv = host.service()
    assert sv["state"] == "up" and sv["status"] == "enabled", sv
    assert sv["binary"] == "nova-compute" and sv["zone"] == "nova", sv
    hyp = nova.get("/os-hypervisors/detail?hypervisor_hostname_pattern=" + host.name, expect=200).json()
    assert [h["service"]["host"] for h in hyp["hypervisors"]] == [host.name], hyp
    assert hyp["hypervisors"][0]["state"] == "up", hyp
    inv = placement.inventories(host.rp_uuid)
    assert {"VCPU", "MEMORY_MB", "DISK_GB"} <= set(inv), inv


def test_boot_and_delete(kind, hosts, nova, placement, servers, small_flavor, timer):
    host = hosts.primary(kind)
    srv = boot(servers, host, placement, small_flavor, timer)
    nova.delete("/servers/" + srv["id"], expect=204)
    nh.wait_gone(nova, srv["id"], host)
    timer("delete")
    assert placement.allocations(srv["id"]) == {}, "allocations left after delete"
    check_no_container(host, srv["id"])


def test_stop_start(kind, hosts, nova, placement, servers, small_flavor, timer):
    host = hosts.primary(kind)
    srv = boot(servers, host, placement, small_flavor, timer)
    s = transition(nova, host, srv, {"os-stop": None}, "SHUTOFF", "stop")
    timer("stop")
    assert s["OS-EXT-STS:power_state"] == 4, nh.describe_server(s)
    if kind == "corral":
        st = host.container_state(srv["id"])
        assert st is None or st["status"] != "running", "container still running after stop: %r" % st
    s = transition(nova, host, srv, {"os-start": None}, "ACTIVE", "start")
    timer("start")
    assert s["OS-EXT-STS:power_state"] == 1
    check_container(host, srv, small_flavor)


def test_reboot_soft_and_hard(kind, hosts, nova, placement, servers, small_flavor, timer):
    host = hosts.primary(kind)
    srv = boot(servers, host, placement, small_flavor, timer)
    transition(nova, host, srv, {"reboot": {"type": "SOFT"}}, "ACTIVE", "soft reboot")
    timer("soft reboot")
    check_container(host, srv, small_flavor)
    transition(nova, host, srv, {"reboot": {"type": "HARD"}}, "ACTIVE", "hard reboot")
    timer("hard reboot")
    check_container(host, srv, small_flavor)


def test_pause_unpause(kind, hosts, nova, placement, servers, small_flavor, timer):
    host = hosts.primary(kind)
    srv = boot(servers, host, placement, small_flavor, timer)
    s = transition(nova, host, srv, {"pause": None}, "PAUSED", "pause")
    timer("pause")
    # nova's fake driver pauses without changing power_state (stays 1); corral must report 3
    if kind == "corral":
        assert s["OS-EXT-STS:power_state"] == 3, nh.describe_server(s)
    check_container(host, srv, small_flavor, status="paused")
    transition(nova, host, srv, {"unpause": None}, "ACTIVE", "unpause")
    timer("unpause")
    check_container(host, srv, small_flavor)


def test_suspend_resume(kind, hosts, nova, placement, servers, small_flavor, timer):
    host = hosts.primary(kind)
    srv = boot(servers, host, placement, small_flavor, timer)
    s = transition(nova, host, srv, {"suspend": None}, "SUSPENDED", "suspend")
    timer("suspend")
    # as for pause, the fake driver keeps power_state 1; corral must report SUSPENDED (7)
    if kind == "corral":
        assert s["OS-EXT-STS:power_state"] == 7, nh.describe_server(s)
    transition(nova, host, srv, {"resume": None}, "ACTIVE", "resume")
    timer("resume")
    check_container(host, srv, small_flavor)


def test_console_output(kind, hosts, nova, placement, servers, small_flavor):
    host = hosts.primary(kind)
    srv = boot(servers, host, placement, small_flavor)

    def output():
        r = nova.action(srv["id"], {"os-getConsoleOutput": {"length": 50}}, expect=200)
        return r.json()["output"]

    out = output()
    assert isinstance(out, str)
    if kind == "reference":
        assert out == "FAKE CONSOLE OUTPUT\nANOTHER\nLAST LINE"
    else:
        # the busybox image's rcS prints these to the console (= the container's stdout)
        out = nh.wait_for(lambda: (lambda o: o if "corral-image: init done" in o else None)(output()), 30)
        assert out, "console output never showed 'corral-image: init done'; last: %r\n%s" % (
            output(), host.log_excerpt())
    nh.wait_server(nova, srv["id"], "ACTIVE", host, what="after console output")


def test_diagnostics(kind, hosts, nova, placement, servers, small_flavor):
    host = hosts.primary(kind)
    srv = boot(servers, host, placement, small_flavor)
    d = nova.get("/servers/%s/diagnostics" % srv["id"], expect=200).json()
    # the standard format since 2.48
    for k in ("state", "driver", "hypervisor", "hypervisor_os", "uptime", "num_cpus", "num_disks",
              "num_nics", "memory_details", "cpu_details", "nic_details", "disk_details", "config_drive"):
        assert k in d, "diagnostics lack %r: %r" % (k, d)
    assert d["state"] == "running", d
    if kind == "corral":
        assert d["num_cpus"] == small_flavor["vcpus"], d
        assert d["memory_details"]["maximum"] == small_flavor["ram"], d


def test_rebuild_same_image(kind, hosts, nova, placement, servers, small_flavor, image, timer):
    host = hosts.primary(kind)
    srv = boot(servers, host, placement, small_flavor, timer)
    nova.action(srv["id"], {"rebuild": {"imageRef": image["id"]}})
    # the API answers 202 with status REBUILD; wait for it to end
    s = nh.wait_server(nova, srv["id"], "ACTIVE", host, what="rebuild")
    timer("rebuild")
    assert s["image"]["id"] == image["id"]
    assert s["OS-EXT-SRV-ATTR:host"] == host.name
    check_allocations(placement, host, s, small_flavor)
    check_container(host, s, small_flavor)


def test_flavor_larger_than_host(kind, hosts, nova, placement, servers, huge_flavor):
    host = hosts.primary(kind)
    before = placement.usages(host.rp_uuid)
    s = servers.create(host=host, flavor=huge_flavor)
    s = nh.wait_server(nova, s["id"], "ERROR", host, what="boot with a too-large flavor")
    assert s.get("fault"), nh.describe_server(s)
    assert "No valid host" in s["fault"]["message"], nh.describe_server(s)
    assert not s.get("OS-EXT-SRV-ATTR:host"), "a host was assigned: " + nh.describe_server(s)
    # nothing leaks: no allocation, unchanged usage, no container; the ERROR server deletes cleanly
    assert placement.allocations(s["id"]) == {}
    assert placement.usages(host.rp_uuid) == before
    check_no_container(host, s["id"])
    nova.delete("/servers/" + s["id"], expect=204)
    nh.wait_gone(nova, s["id"], host)


def test_missing_image_is_rejected(kind, hosts, nova, servers):
    host = hosts.primary(kind)
    missing = str(uuid.uuid4())
    r = servers.create(host=host, image_ref=missing, expect=400)
    assert r.json()["badRequest"]["message"] == "Can not find requested image", r.text
    left = nova.get("/servers?all_tenants=1&name=" + servers.name, expect=200).json()["servers"]
    assert left == [], left


@pytest.mark.kinds("corral")
def test_daemon_restart_keeps_instance(kind, hosts, nova, placement, servers, small_flavor, timer):
    host = hosts.primary(kind)
    srv = boot(servers, host, placement, small_flavor, timer)
    before = check_container(host, srv, small_flavor)
    host.stop()
    timer("daemon stop")
    st = host.container_state(srv["id"])
    assert st is not None and st["status"] == "running", (
        "the container did not survive the daemon's exit: %r" % st)
    host.start()
    try:
        host.wait_ready()
    except nh.HostStartError as e:
        pytest.fail("after a restart: %s" % e, pytrace=False)
    timer("daemon restart (fresh heartbeat)")
    s = nh.wait_server(nova, srv["id"], "ACTIVE", host, what="after the daemon restart")
    assert s["OS-EXT-STS:power_state"] == 1
    after = check_container(host, srv, small_flavor)
    assert after["pid"] == before["pid"], "the container was restarted (pid %s -> %s)" % (
        before["pid"], after["pid"])
    # and the restarted daemon still serves it
    transition(nova, host, srv, {"os-stop": None}, "SHUTOFF", "stop after restart")
    transition(nova, host, srv, {"os-start": None}, "ACTIVE", "start after restart")


def test_two_hosts_share_the_load(kind, hosts, nova, placement, servers, small_flavor, run_id, timer):
    """Two hosts of the kind with distinct `host` names serve the same nova; four
    servers booted without pinning (into an availability zone holding only these two)
    land on both."""
    pair = hosts.start_many(kind, 2, None)
    timer("two hosts up")
    by_name = {h.name: h for h in pair}
    az = "corral-az-%s-%s" % (run_id, kind)
    agg = nova.post("/os-aggregates", {"aggregate": {"name": az, "availability_zone": az}},
                    expect=200).json()["aggregate"]
    try:
        for h in pair:
            nova.post("/os-aggregates/%s/action" % agg["id"], {"add_host": {"host": h.name}}, expect=200)
        r = servers.create(flavor=small_flavor, availability_zone=az, min_count=4, max_count=4,
                           return_reservation_id=True)
        rid = r["reservation_id"]
        listed = nh.wait_for(lambda: nova.get("/servers/detail?all_tenants=1&reservation_id=" + rid,
                                              expect=200).json()["servers"], 30)
        servers.created.extend(s["id"] for s in listed)
        assert len(listed) == 4, listed
        done = [nh.wait_server(nova, s["id"], "ACTIVE", pair, what="boot of 4 in %s" % az) for s in listed]
        timer("4 servers ACTIVE")
        placed = {}
        for s in done:
            placed.setdefault(s["OS-EXT-SRV-ATTR:host"], []).append(s["id"])
        assert set(placed) == set(by_name), "servers were placed %r, expected both of %s" % (
            {k: len(v) for k, v in placed.items()}, sorted(by_name))
        for s in done:
            h = by_name[s["OS-EXT-SRV-ATTR:host"]]
            check_allocations(placement, h, s, small_flavor)
            check_container(h, s, small_flavor)
        for s in done:
            nova.delete("/servers/" + s["id"], expect=204)
        for s in done:
            h = by_name[s["OS-EXT-SRV-ATTR:host"]]
            nh.wait_gone(nova, s["id"], h)
            assert placement.allocations(s["id"]) == {}
            check_no_container(h, s["id"])
        timer("deleted")
    finally:
        # servers first: nova refuses to take a host with instances out of an AZ aggregate
        servers.cleanup()
        for h in pair:
            nova.post("/os-aggregates/%s/action" % agg["id"], {"remove_host": {"host": h.name}})
        nova.delete("/os-aggregates/%s" % agg["id"])
        hosts.teardown(*pair)


def _upload(glance, name, data):
    img = glance.post("/v2/images", {"name": name, "disk_format": "raw", "container_format": "bare",
                                     "visibility": "public"}, expect=201).json()
    glance.put("/v2/images/%s/file" % img["id"], data=data,
               headers={"Content-Type": "application/octet-stream"}, expect=204)
    return img


def _instance_dirs(host):
    d = os.path.join(host.state_dir, "instances")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


@pytest.mark.kinds("corral")
def test_image_that_is_not_a_root_tarball(kind, hosts, nova, placement, servers, glance, run_id):
    """A Glance image whose bytes are not a root tarball: the build fails with a fault
    the user can read, the server goes to ERROR, and nothing is left behind."""
    host = hosts.primary(kind)
    img = _upload(glance, "corral-not-a-tarball-" + run_id, os.urandom(64 * 1024))
    try:
        before = _instance_dirs(host)
        s = servers.create(host=host, image_ref=img["id"])
        s = nh.wait_server(nova, s["id"], "ERROR", host, what="boot from a non-tarball image")
        fault = (s.get("fault") or {}).get("message", "")
        assert "image archive refused" in fault, nh.describe_server(s)
        assert fault.isprintable(), "fault is not readable text: %r" % fault
        assert s["OS-EXT-STS:task_state"] is None
        assert placement.allocations(s["id"]) == {}, "allocations left after a failed build"
        check_no_container(host, s["id"])
        assert _instance_dirs(host) == before, "files left for a failed build"
        nova.delete("/servers/" + s["id"], expect=204)
        nh.wait_gone(nova, s["id"], host)
    finally:
        glance.delete("/v2/images/" + img["id"], expect=(204, 404))


@pytest.mark.kinds("corral")
def test_compute_killed_during_a_build(kind, hosts, nova, placement, servers, glance, run_id, small_flavor):
    """SIGKILL the daemon while a build is spawning (a big image keeps it there for a
    while); after a restart the server is in ERROR with a fault, and no container,
    file or allocation is left."""
    host = hosts.primary(kind)
    work = tempfile.mkdtemp()
    try:
        rootfs = os.path.join(work, "rootfs")
        os.makedirs(rootfs)
        subprocess.run(["tar", "-xzf", os.path.join(nh.STACK_BASE, "images", "busybox-rootfs.tar.gz"),
                        "-C", rootfs], check=True)
        with open(os.path.join(rootfs, "ballast"), "wb") as f:
            for _ in range(192):
                f.write(os.urandom(MiB))
        tarball = os.path.join(work, "big.tar")
        subprocess.run(["tar", "--numeric-owner", "-C", rootfs, "-cf", tarball, "."], check=True)
        with open(tarball, "rb") as f:
            img = _upload(glance, "corral-big-" + run_id, f.read())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    try:
        before = _instance_dirs(host)
        s = servers.create(host=host, image_ref=img["id"])
        spawning = nh.wait_for(
            lambda: nova.server(s["id"]).get("OS-EXT-STS:task_state") == "spawning", 60, interval=0.05)
        assert spawning, "the build never reached spawning: " + nh.describe_server(nova.server(s["id"]))
        host.proc.kill()
        host.proc.wait(10)
        host.stop()
        host.start()
        host.wait_ready()
        s = nh.wait_server(nova, s["id"], "ERROR", host, what="a build interrupted by a crash")
        assert (s.get("fault") or {}).get("message"), nh.describe_server(s)
        assert s["OS-EXT-STS:task_state"] is None
        assert placement.allocations(s["id"]) == {}, "allocations left after the crash"
        check_no_container(host, s["id"])
        assert _instance_dirs(host) == before, "files left after the crash"
        nova.delete("/servers/" + s["id"], expect=204)
        nh.wait_gone(nova, s["id"], host)
        # the host still builds
        srv = boot(servers, host, placement, small_flavor)
        nova.delete("/servers/" + srv["id"], expect=204)
        nh.wait_gone(nova, srv["id"], host)
    finally:
        glance.delete("/v2/images/" + img["id"], expect=(204, 404))
