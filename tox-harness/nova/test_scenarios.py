"""End-to-end scenarios through the real nova-api, conductor, scheduler, placement,
glance and neutron, against a compute host of each kind:

  reference  nova-compute with fake.FakeDriverWithoutFakeNodes (the oracle: these pass)
  corral     the corral daemon; for corral the server must also be a real runc
             container (id = server uuid) with the flavor's limits in its cgroup

Each scenario pins its servers with "host" (microversion >= 2.74, admin) and boots
with "networks": "none". Every transition waits (<= 120 s) for the target status with
OS-EXT-STS:task_state null; a failure prints the server's fault and the host's log tail.
"""

import json
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


def _rabbitmqctl(*args):
    return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, timeout=120)


@pytest.mark.skipif(os.environ.get("CORRAL_SKIP_BROKER_RESTART") == "1",
                    reason="CORRAL_SKIP_BROKER_RESTART=1")
def test_broker_restart_keeps_host_up(kind, hosts, nova, placement, servers, small_flavor, timer):
    """RabbitMQ away for 8 s and back: the host's next heartbeat reaches the conductor
    well within service_down_time (60 s), as nova-compute's does (report_interval 10 s),
    and the host still builds servers."""
    host = hosts.primary(kind)
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not installed")
    assert _rabbitmqctl("stop_app").returncode == 0
    try:
        time.sleep(8)
    finally:
        assert _rabbitmqctl("start_app").returncode == 0
        _rabbitmqctl("await_startup")
    back = time.time()
    timer("broker back")

    def heartbeat_since(t0):
        def check():
            sv = host.service()
            t = nh._utc_ts(sv.get("updated_at")) if sv else None
            return sv if t is not None and t >= t0 and sv["state"] == "up" else None
        return check

    # A first heartbeat, then the host keeps reporting: a call lost in the drop must
    # not hold the next ones back (report_interval is 10 s, service_down_time 60 s).
    # nova-compute's report_state call that was in flight when the broker went waits
    # out rpc_response_timeout (60 s) before the next one: the oracle gets that long
    # more; corral must not wait on a lost call.
    window = 45 if kind == "corral" else 45 + 60
    for since, what in ((back - 1, "a"), (back + 12, "a second")):
        sv = nh.wait_for(heartbeat_since(since), back + window - time.time())
        assert sv, ("%s heartbeat from %s did not reach the conductor within %d s of the broker's "
                    "return (service row: %s)\n%s" % (what, host.name, window, host.service(),
                                                      host.log_excerpt()))
        print("%s: %s heartbeat seen %.1f s after the broker came back" % (kind, what, time.time() - back))
    timer("heartbeats after the broker restart")
    srv = boot(servers, host, placement, small_flavor, timer)
    nova.delete("/servers/" + srv["id"], expect=204)
    nh.wait_gone(nova, srv["id"], host)


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


def _upload(glance, name, data, disk_format="raw"):
    img = glance.post("/v2/images", {"name": name, "disk_format": disk_format, "container_format": "bare",
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
        assert "unrecognised image" in fault, nh.describe_server(s)
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
def test_the_same_bytes_under_two_glance_images_boot(kind, hosts, nova, placement, servers, glance, run_id):
    """Two Glance images with the same bytes (an image uploaded twice, as users do): a
    server boots from each, the second from what the first cached."""
    host = hosts.primary(kind)
    with open(os.path.join(nh.STACK_BASE, "images", "busybox-rootfs.tar.gz"), "rb") as f:
        data = f.read()
    imgs = [_upload(glance, "corral-twice-%d-%s" % (i, run_id), data) for i in range(2)]
    made = []
    try:
        for img in imgs:
            s = servers.create(host=host, image_ref=img["id"])
            made.append(s["id"])
            s = nh.wait_server(nova, s["id"], "ACTIVE", host, what="boot from an image uploaded twice")
            assert s["image"]["id"] == img["id"], s["image"]
        for sid in made:
            nova.delete("/servers/" + sid, expect=204)
            nh.wait_gone(nova, sid, host)
    finally:
        for img in imgs:
            glance.delete("/v2/images/" + img["id"], expect=(204, 404))


def _disk_images(work):
    """From the busybox root: a squashfs, a GPT raw disk (root on its second
    partition) and a qcow2 of an MBR disk, made with the real tools."""
    sh = lambda cmd: subprocess.run(["sh", "-ec", cmd], check=True, cwd=work)
    os.makedirs(os.path.join(work, "root"))
    os.makedirs(os.path.join(work, "empty", "boot"))
    sh("tar -xpzf %s -C root" % os.path.join(nh.STACK_BASE, "images", "busybox-rootfs.tar.gz"))
    sh("mksquashfs root root.squashfs -noappend -quiet -no-progress")
    sh("truncate -s 24M p1.img p2.img && mkfs.ext4 -q -F -d empty p1.img && mkfs.ext4 -q -F -d root p2.img")
    for label, out in (("gpt", "gpt.raw"), ("dos", "mbr.raw")):
        sh("truncate -s 50M {o}; printf 'label: {l}\\nstart=2048, size=49152, type=L\\n"
           "start=51200, size=49152, type=L\\n' | sfdisk -q {o}; "
           "dd if=p1.img of={o} bs=1M seek=1 conv=notrunc status=none; "
           "dd if=p2.img of={o} bs=1M seek=25 conv=notrunc status=none".format(o=out, l=label))
    sh("qemu-img convert -f raw -O qcow2 mbr.raw disk.qcow2")
    return {name: os.path.join(work, name) for name in ("root.squashfs", "gpt.raw", "disk.qcow2")}


@pytest.mark.kinds("corral")
def test_disk_image_formats(kind, hosts, nova, placement, servers, glance, run_id, small_flavor):
    """qcow2, squashfs and raw disk images uploaded to Glance with a matching
    disk_format boot to ACTIVE from their root partition, and the host's provider
    carries COMPUTE_IMAGE_TYPE_QCOW2 and COMPUTE_IMAGE_TYPE_RAW. (Glance 33 inspects
    uploads itself and refuses a squashfs declared qcow2, so a lying image cannot be
    uploaded here; corral's own check of content against disk_format is covered by
    the cargo tests.)"""
    host = hosts.primary(kind)
    traits = placement.get("/resource_providers/%s/traits" % host.rp_uuid).json()["traits"]
    assert {"COMPUTE_IMAGE_TYPE_RAW", "COMPUTE_IMAGE_TYPE_QCOW2"} <= set(traits), traits
    work = tempfile.mkdtemp()
    imgs = []
    try:
        files = _disk_images(work)
        for name, fmt in (("disk.qcow2", "qcow2"), ("root.squashfs", "raw"), ("gpt.raw", "raw")):
            with open(files[name], "rb") as f:
                imgs.append((name, _upload(glance, "corral-%s-%s" % (name, run_id), f.read(), fmt)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    try:
        for name, img in imgs:
            s = servers.create(host=host, image_ref=img["id"])
            s = nh.wait_server(nova, s["id"], "ACTIVE", host, what="boot from " + name)
            st = check_container(host, s, small_flavor)
            with open("/proc/%d/root/etc/inittab" % st["pid"]) as f:
                assert "::sysinit:/etc/init.d/rcS" in f.read(), name
            nova.delete("/servers/" + s["id"], expect=204)
            nh.wait_gone(nova, s["id"], host)
    finally:
        for _, img in imgs:
            glance.delete("/v2/images/" + img["id"], expect=(204, 404))


@pytest.mark.kinds("corral")
def test_glance_bytes_that_do_not_match_their_hash(kind, hosts, nova, placement, servers, glance, run_id):
    """Glance computes os_hash_value itself on upload, so a user meets a mismatch when
    the store's bytes change afterwards (bit rot, a tampered or half-copied store):
    here the file store's copy is altered in place, then cut short. Each build ends
    in ERROR with a fault naming the cause, and nothing is left in corral's cache."""
    host = hosts.primary(kind)
    store = os.path.join(nh.STACK_BASE, "state", "glance", "images")
    with open(os.path.join(nh.STACK_BASE, "images", "busybox-rootfs.tar.gz"), "rb") as f:
        data = f.read()
    cache = os.path.join(host.state_dir, "images")
    imgs = []
    try:
        for how, want in (("altered", "sha512 mismatch"), ("truncated", "download of image")):
            img = _upload(glance, "corral-%s-%s" % (how, run_id), data)
            imgs.append(img)
            path = os.path.join(store, img["id"])
            assert os.path.getsize(path) == len(data), "no file store copy at %s" % path
            if how == "altered":
                with open(path, "r+b") as f:
                    f.seek(len(data) // 2)
                    b = f.read(1)
                    f.seek(len(data) // 2)
                    f.write(bytes([b[0] ^ 0xff]))
            else:
                os.truncate(path, len(data) // 2)
            before = sorted(os.listdir(cache)) if os.path.isdir(cache) else []
            s = servers.create(host=host, image_ref=img["id"])
            s = nh.wait_server(nova, s["id"], "ERROR", host, what="boot from an %s image" % how)
            fault = (s.get("fault") or {}).get("message", "")
            assert want in fault, nh.describe_server(s)
            assert fault.isprintable(), fault
            assert placement.allocations(s["id"]) == {}
            check_no_container(host, s["id"])
            after = sorted(os.listdir(cache)) if os.path.isdir(cache) else []
            assert after == before, "cache changed by a refused download: %r -> %r" % (before, after)
            nova.delete("/servers/" + s["id"], expect=204)
            nh.wait_gone(nova, s["id"], host)
    finally:
        for img in imgs:
            glance.delete("/v2/images/" + img["id"], expect=(204, 404))


def _corral_image(host, alias):
    """The corral host's image record for `alias` (None when absent), over its socket."""
    r = subprocess.run(["curl", "-s", "--unix-socket", host.socket, "http://corral/1.0/images?recursion=1"],
                       capture_output=True, text=True, check=True)
    images = json.loads(r.stdout)["metadata"]
    return next((i for i in images if alias in (i.get("aliases") or []) or i.get("alias") == alias), None)


@pytest.mark.kinds("corral")
def test_aggregate_image_caching(kind, hosts, nova, glance, run_id):
    """POST /os-aggregates/{id}/images (microversion 2.81): the conductor's cache_images
    call reaches the corral host in the aggregate, which downloads, verifies and caches
    the image before any server asks for it."""
    host = hosts.primary(kind)
    work = tempfile.mkdtemp()
    try:
        root = os.path.join(work, "root")
        os.makedirs(root)
        subprocess.run(["tar", "-xzf", os.path.join(nh.STACK_BASE, "images", "busybox-rootfs.tar.gz"),
                        "-C", root], check=True)
        with open(os.path.join(root, "etc", "precached"), "w") as f:
            f.write(run_id + "\n")  # bytes no other image has
        tarball = os.path.join(work, "pre.tar")
        subprocess.run(["tar", "--numeric-owner", "-C", root, "-cf", tarball, "."], check=True)
        with open(tarball, "rb") as f:
            img = _upload(glance, "corral-precache-" + run_id, f.read())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    agg = nova.post("/os-aggregates", {"aggregate": {"name": "corral-cache-" + run_id}},
                    expect=200).json()["aggregate"]
    try:
        nova.post("/os-aggregates/%s/action" % agg["id"], {"add_host": {"host": host.name}}, expect=200)
        alias = "glance/" + img["id"]
        assert _corral_image(host, alias) is None
        nova.post("/os-aggregates/%s/images" % agg["id"], {"cache": [{"id": img["id"]}]}, expect=202)
        assert nh.wait_for(lambda: _corral_image(host, alias) is not None, 120, interval=0.5), (
            "image %s never cached\n%s" % (img["id"], host.log_excerpt()))
        rec = _corral_image(host, alias)
        assert rec["properties"]["format"] == "tar", rec
    finally:
        nova.post("/os-aggregates/%s/action" % agg["id"], {"remove_host": {"host": host.name}})
        nova.delete("/os-aggregates/%s" % agg["id"])
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


# ----------------------------------------------------------------------------- PCI passthrough

# This machine's virtio-rng (0000:00:05.0, 1af4:1044); the stack's nova.conf has the alias
# "rng" for it (scripts/nova-stack.sh) and PciPassthroughFilter among the scheduler filters.
PCI_VENDOR, PCI_PRODUCT = "1af4", "1044"
PCI_SPEC = '{"vendor_id": "%s", "product_id": "%s"}' % (PCI_VENDOR, PCI_PRODUCT)


def _pci_address():
    """The address of the host's 1af4:1044 function, or None."""
    base = "/sys/bus/pci/devices"
    for addr in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        try:
            ids = [open(os.path.join(base, addr, f)).read().strip() for f in ("vendor", "device")]
        except OSError:
            continue
        if ids == ["0x" + PCI_VENDOR, "0x" + PCI_PRODUCT]:
            return addr
    return None


def _pci_rows(stack, host):
    """Nova's pci_devices rows of the host's compute node."""
    p = stack.db_prefix
    rows = stack.db_query(
        "select d.address, d.status, coalesce(d.instance_uuid, ''), d.vendor_id, d.product_id, "
        "d.dev_type, d.dev_id, d.label, coalesce(d.request_id, '') from %snova.pci_devices d "
        "join %snova.compute_nodes c on c.id = d.compute_node_id "
        "where c.hypervisor_hostname = '%s' and c.deleted = 0 and d.deleted = 0 order by d.address"
        % (p, p, host.name))
    keys = ("address", "status", "instance_uuid", "vendor_id", "product_id", "dev_type", "dev_id",
            "label", "request_id")
    return [dict(zip(keys, r)) for r in rows]


def _pci_pool_count(stack, host):
    """Free devices in ComputeNode.pci_device_pools (compute_nodes.pci_stats), as the
    scheduler's PciPassthroughFilter sees them."""
    rows = stack.db_query("select coalesce(pci_stats, '') from %snova.compute_nodes "
                          "where hypervisor_hostname = '%s' and deleted = 0" % (stack.db_prefix, host.name))
    if not rows or not rows[0][0] or rows[0][0] == "NULL":
        return None
    stats = json.loads(rows[0][0])
    return sum(p["nova_object.data"]["count"] for p in stats["nova_object.data"]["objects"])


def _container_env(host, sid):
    st = host.container_state(sid)
    assert st is not None and st.get("pid"), "no running container %s" % sid
    with open("/proc/%d/environ" % st["pid"], "rb") as f:
        return dict(kv.split("=", 1) for kv in f.read().decode(errors="replace").split("\0") if "=" in kv)


@pytest.fixture
def pci_flavor(nova, run_id):
    fid = "corral-test-pci-%s" % run_id
    nova.delete("/flavors/" + fid, expect=(202, 404))
    f = nova.post("/flavors", {"flavor": {"id": fid, "name": fid, "vcpus": 1, "ram": 128, "disk": 1}},
                  expect=200).json()["flavor"]
    nova.post("/flavors/%s/os-extra_specs" % fid, {"extra_specs": {"pci_passthrough:alias": "rng:1"}},
              expect=200)
    yield f
    nova.delete("/flavors/" + fid, expect=(202, 404))


@pytest.mark.kinds("corral")
def test_pci_passthrough(kind, stack, hosts, nova, placement, servers, pci_flavor, timer):
    """Nova's own PCI passthrough through the real nova-api/scheduler/conductor: a corral
    host with [pci] device_spec for the virtio-rng reports it (pci_devices row, pools),
    a flavor with pci_passthrough:alias=rng:1 gets it (allocated to the server, handed to
    the container), a second such server finds no host, a daemon restart keeps the claim,
    delete gives the device back."""
    addr = _pci_address()
    if addr is None:
        pytest.skip("this machine has no %s:%s PCI function" % (PCI_VENDOR, PCI_PRODUCT))
    host = hosts.start(kind, "pci", conf={"pci": {"device_spec": PCI_SPEC}})
    try:
        timer("host up")
        rows = nh.wait_for(lambda: _pci_rows(stack, host), 30)
        assert [(r["address"], r["status"], r["instance_uuid"]) for r in rows] == [(addr, "available", "")], rows
        r = rows[0]
        assert (r["vendor_id"], r["product_id"], r["dev_type"]) == (PCI_VENDOR, PCI_PRODUCT, "type-PCI"), r
        assert r["dev_id"] == "pci_" + addr.replace(":", "_").replace(".", "_"), r
        assert r["label"] == "label_%s_%s" % (PCI_VENDOR, PCI_PRODUCT), r
        assert _pci_pool_count(stack, host) == 1

        srv = servers.boot(host, flavor=pci_flavor, what="boot with pci_passthrough:alias=rng:1")
        timer("boot with the device")
        rows = _pci_rows(stack, host)
        assert [(r["address"], r["status"], r["instance_uuid"]) for r in rows] == [
            (addr, "allocated", srv["id"])], rows
        assert rows[0]["request_id"], "no request_id on the allocated device: %r" % rows
        assert _pci_pool_count(stack, host) == 0
        env = _container_env(host, srv["id"])
        assert env.get("CORRAL_PCI_DEVICES") == addr, (
            "container environment lacks CORRAL_PCI_DEVICES=%s: %r" % (addr, env))

        # the only device is taken: the scheduler (PciPassthroughFilter) finds no host
        s2 = servers.create(host=host, flavor=pci_flavor)
        s2 = nh.wait_server(nova, s2["id"], "ERROR", host, what="second boot with the device taken")
        assert "No valid host" in (s2.get("fault") or {}).get("message", ""), nh.describe_server(s2)
        nova.delete("/servers/" + s2["id"], expect=204)
        nh.wait_gone(nova, s2["id"], host)
        timer("second server NoValidHost")

        # a restart reloads the claim from Nova's records
        host.stop()
        host.start()
        try:
            host.wait_ready()
        except nh.HostStartError as e:
            pytest.fail("after a restart: %s" % e, pytrace=False)
        timer("daemon restart")
        rows = _pci_rows(stack, host)
        assert [(r["status"], r["instance_uuid"]) for r in rows] == [("allocated", srv["id"])], rows
        assert _pci_pool_count(stack, host) == 0

        nova.delete("/servers/" + srv["id"], expect=204)
        nh.wait_gone(nova, srv["id"], host)
        timer("delete")
        rows = nh.wait_for(lambda: [r for r in _pci_rows(stack, host) if r["status"] == "available"], 30)
        assert [(r["address"], r["status"], r["instance_uuid"], r["request_id"])
                for r in _pci_rows(stack, host)] == [(addr, "available", "", "")]
        assert _pci_pool_count(stack, host) == 1
    finally:
        servers.cleanup()
        hosts.teardown(host)


@pytest.mark.kinds("corral")
def test_pci_in_placement(kind, stack, hosts, nova, placement, servers, pci_flavor, timer):
    """[pci] report_in_placement = true: the device is a child resource provider
    <host>_<ADDRESS> with CUSTOM_PCI_<VENDOR>_<PRODUCT> = 1 and COMPUTE_MANAGED_PCI_DEVICE,
    as nova-compute's pci_placement_translator makes it; the scheduler of this stack does
    not allocate PCI in Placement ([filter_scheduler] pci_in_placement is off), so the
    compute heals the server's allocation, and delete releases it."""
    addr = _pci_address()
    if addr is None:
        pytest.skip("this machine has no %s:%s PCI function" % (PCI_VENDOR, PCI_PRODUCT))
    host = hosts.start(kind, "pcirp", conf={
        "pci": {"device_spec": PCI_SPEC, "report_in_placement": "true"},
        "DEFAULT": {"update_resources_interval": "3"},
    })
    try:
        rc = "CUSTOM_PCI_%s_%s" % (PCI_VENDOR.upper(), PCI_PRODUCT.upper())
        name = "%s_%s" % (host.name, addr.upper())
        rp = nh.wait_for(lambda: placement.provider(name), 30)
        assert rp, "no resource provider %s" % name
        assert rp["parent_provider_uuid"] == host.rp_uuid, rp
        inv = nh.wait_for(lambda: placement.inventories(rp["uuid"]), 30)
        assert {k: (v["total"], v["max_unit"], v["reserved"]) for k, v in inv.items()} == {rc: (1, 1, 0)}, inv
        traits = placement.get("/resource_providers/%s/traits" % rp["uuid"], expect=200).json()["traits"]
        assert {"COMPUTE_MANAGED_PCI_DEVICE", "OWNER_NOVA"} <= set(traits), traits
        # the device record and its pool name the provider
        p = stack.db_prefix

        def extra_rp():
            rows = stack.db_query(
                "select d.extra_info from %snova.pci_devices d join %snova.compute_nodes c "
                "on c.id = d.compute_node_id where c.hypervisor_hostname = '%s' and d.deleted = 0"
                % (p, p, host.name))
            return rows and json.loads(rows[0][0]).get("rp_uuid")

        assert nh.wait_for(extra_rp, 30) == rp["uuid"]
        timer("provider")

        srv = servers.boot(host, flavor=pci_flavor, what="boot with pci_passthrough:alias=rng:1")
        healed = nh.wait_for(lambda: placement.allocations(srv["id"]).get(rp["uuid"]), 30)
        assert healed and healed["resources"] == {rc: 1}, placement.allocations(srv["id"])
        assert placement.usages(rp["uuid"]) == {rc: 1}
        timer("boot, allocation healed")
        nova.delete("/servers/" + srv["id"], expect=204)
        nh.wait_gone(nova, srv["id"], host)
        assert placement.allocations(srv["id"]) == {}
        assert placement.usages(rp["uuid"]) == {rc: 0}
    finally:
        servers.cleanup()
        hosts.teardown(host)
    assert placement.provider(name) is None, "the device's provider outlived its compute service"


def test_config_drive_user_data(kind, hosts, nova, placement, servers, small_flavor, image, timer):
    """`openstack server create --config-drive true --user-data FILE`: corral gives the
    container Nova's OpenStack metadata at cloud-init's ConfigDrive seed directory,
    read-only and owned by the container's root; a rebuild writes it again."""
    import base64
    host = hosts.primary(kind)
    user_data = b"#!/bin/sh\necho corral-config-drive\n"
    srv = servers.boot(host, what="boot with a config drive", config_drive=True,
                       user_data=base64.b64encode(user_data).decode(),
                       metadata={"purpose": "config-drive"})
    timer("boot")
    assert srv["config_drive"] == "True", srv["config_drive"]
    if kind != "corral":
        return
    seed = "/var/lib/cloud/seed/config_drive/openstack/latest/"

    def inside(*argv):
        p = host.runc("exec", srv["id"], *argv)
        return p.returncode, p.stdout + p.stderr

    rc, out = inside("cat", seed + "user_data")
    assert (rc, out) == (0, user_data.decode()), out
    rc, out = inside("cat", seed + "meta_data.json")
    assert rc == 0, out
    md = json.loads(out)
    assert md["uuid"] == srv["id"] and md["name"] == srv["name"], md
    assert md["meta"] == {"purpose": "config-drive"}, md
    assert md["hostname"].startswith(srv["name"].lower()), md
    assert len(base64.b64decode(md["random_seed"])) == 512
    rc, out = inside("cat", seed + "network_data.json")
    assert (rc, json.loads(out)) == (0, {}), out
    rc, out = inside("stat", "-c", "%u %g %a", seed + "user_data", seed)
    assert (rc, out) == (0, "0 0 644\n0 0 755\n"), out
    rc, out = inside("sh", "-c", "echo x > " + seed + "user_data")
    assert rc != 0, "the config drive is writable: %s" % out
    # A rebuild writes the drive again: a new random seed.
    nova.action(srv["id"], {"rebuild": {"imageRef": image["id"]}})
    nh.wait_server(nova, srv["id"], "ACTIVE", host, what="rebuild")
    timer("rebuild")
    rc, out = inside("cat", seed + "meta_data.json")
    assert rc == 0, out
    assert json.loads(out)["random_seed"] != md["random_seed"]
    rc, out = inside("cat", seed + "user_data")
    assert (rc, out) == (0, user_data.decode()), out


def test_force_config_drive(kind, hosts, nova, placement, servers, small_flavor):
    """`[DEFAULT] force_config_drive = true` on the host: a server booted without asking
    gets a config drive, recorded on the instance (`config_drive` "True") as nova-compute
    records it; `[api] dhcp_domain` ends its metadata hostname."""
    import base64
    if kind != "corral":
        pytest.skip("per-host nova.conf options are set on corral hosts only")
    host = hosts.start(kind, "cfgd", conf={
        "DEFAULT": {"force_config_drive": "true"},
        "api": {"dhcp_domain": "example.test"},
    })
    try:
        srv = servers.boot(host, what="boot on a host forcing config drives")
        assert srv["config_drive"] == "True", srv["config_drive"]
        p = host.runc("exec", srv["id"], "cat",
                      "/var/lib/cloud/seed/config_drive/openstack/latest/meta_data.json")
        assert p.returncode == 0, p.stderr
        md = json.loads(p.stdout)
        assert md["uuid"] == srv["id"], md
        assert md["hostname"].endswith(".example.test"), md
        assert len(base64.b64decode(md["random_seed"])) == 512
        p = host.runc("exec", srv["id"], "ls", "/var/lib/cloud/seed/config_drive/openstack/latest")
        assert p.stdout.split() == ["meta_data.json", "network_data.json", "vendor_data.json",
                                    "vendor_data2.json"], p.stdout
    finally:
        servers.cleanup()
        hosts.teardown(host)


def _wait_image(glance, image_id, status="active", timeout=180):
    deadline = time.time() + timeout
    img = None
    while time.time() < deadline:
        img = glance.get("/v2/images/" + image_id, expect=(200, 404))
        img = img.json() if img.status_code == 200 else None
        if img is not None and img["status"] == status:
            return img
        if img is not None and img["status"] in ("killed", "deleted"):
            break
        time.sleep(1)
    raise AssertionError("image %s is not %s: %r" % (image_id, status, img))


def _backups(glance, sid):
    r = glance.get("/v2/images?image_type=backup&instance_uuid=%s&sort_key=created_at&sort_dir=asc" % sid,
                   expect=200)
    return r.json()["images"]


@pytest.mark.kinds("corral")
def test_snapshot_and_backup_to_glance(kind, hosts, nova, placement, servers, glance, run_id, timer):
    """`openstack server image create` (createImage) of a running container: a root
    tarball in Glance, ACTIVE, with nova's properties, from which a new server boots on
    corral with the file written before the snapshot; the source keeps its init.
    createBackup with rotation 1 twice leaves one backup."""
    host = hosts.primary(kind)
    srv = servers.boot(host)
    marker = "snap-%s" % run_id
    p = host.runc("exec", srv["id"], "sh", "-c", "echo %s > /root/marker" % marker)
    assert p.returncode == 0, p.stderr
    pid = host.container_state(srv["id"])["pid"]
    made = []
    try:
        r = nova.action(srv["id"], {"createImage": {"name": marker}})
        image_id = r.json()["image_id"]
        made.append(image_id)
        img = _wait_image(glance, image_id)
        nh.wait_server(nova, srv["id"], "ACTIVE", host, what="snapshot")
        timer("snapshot")
        assert img["disk_format"] == "raw" and img["container_format"] == "bare", img
        assert img["image_type"] == "snapshot" and img["instance_uuid"] == srv["id"], img
        assert img["image_location"] == "snapshot" and img["size"] > 0, img
        assert host.container_state(srv["id"])["pid"] == pid, "the snapshot changed the init"

        srv2 = servers.boot(host, image_ref=image_id, what="boot from the snapshot")
        timer("boot from snapshot")
        p = host.runc("exec", srv2["id"], "cat", "/root/marker")
        assert (p.returncode, p.stdout) == (0, marker + "\n"), p.stdout + p.stderr

        for i in range(2):
            r = nova.action(srv["id"], {"createBackup": {"name": "%s-bk%d" % (marker, i),
                                                         "backup_type": "daily", "rotation": 1}})
            made.append(r.json()["image_id"])
            nh.wait_server(nova, srv["id"], "ACTIVE", host, what="backup %d" % i)
        timer("two backups")
        deadline = time.time() + 60
        while time.time() < deadline and len(_backups(glance, srv["id"])) != 1:
            time.sleep(1)
        left = _backups(glance, srv["id"])
        assert [b["name"] for b in left] == ["%s-bk1" % marker], left
        assert left[0]["status"] == "active", left
    finally:
        for image_id in made:
            glance.delete("/v2/images/" + image_id, expect=(204, 404))
