"""Shelve, unshelve and rescue through the real nova-api, conductor, scheduler,
placement and glance against a corral host: the server's own files survive a shelve
(offloaded or not) and are what the rescue container sees at /mnt."""

import json
import os
import time

import pytest

import novaharness as nh


def _exec(host, sid, cmd):
    p = host.runc("exec", sid, "sh", "-c", cmd)
    return p.returncode, p.stdout, p.stderr


def _usage(placement, host):
    return placement.usages(host.rp_uuid)


def _image_gone(glance, image_id, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = glance.get("/v2/images/" + image_id, expect=(200, 404))
        if r.status_code == 404 or r.json().get("status") == "deleted":
            return True
        time.sleep(1)
    return False


@pytest.mark.kinds("corral")
def test_shelve_offload_and_unshelve(kind, hosts, nova, placement, servers, glance, small_flavor,
                                     run_id, timer):
    """Default shelved_offload_time (0): shelve uploads the root to Glance and offloads at
    once: no container, no allocation, the host's usage drops; unshelve (to the same host)
    brings the server back ACTIVE with the file it wrote, and the shelved image is deleted."""
    host = hosts.primary(kind)
    srv = servers.boot(host)
    marker = "shelve-%s" % run_id
    assert _exec(host, srv["id"], "echo %s > /root/marker" % marker)[0] == 0
    before = _usage(placement, host)

    nova.action(srv["id"], {"shelve": None})
    nh.wait_server(nova, srv["id"], "SHELVED_OFFLOADED", what="shelve")
    # host and node are cleared by a save after the one of the vm_state, as nova does
    assert nh.wait_for(lambda: nova.server(srv["id"])["OS-EXT-SRV-ATTR:host"] is None, 30), \
        nova.server(srv["id"])
    timer("shelve + offload")
    assert host.container_state(srv["id"]) is None, "the container is still there after offload"
    assert placement.allocations(srv["id"]) == {}, placement.allocations(srv["id"])
    after = _usage(placement, host)
    assert after["VCPU"] == before["VCPU"] - small_flavor["vcpus"], (before, after)
    assert after["MEMORY_MB"] == before["MEMORY_MB"] - small_flavor["ram"], (before, after)
    images = glance.get("/v2/images?instance_uuid=%s&image_type=snapshot" % srv["id"],
                        expect=200).json()["images"]
    assert len(images) == 1 and images[0]["status"] == "active", images
    image_id = images[0]["id"]

    nova.action(srv["id"], {"unshelve": {"host": host.name}})
    back = nh.wait_server(nova, srv["id"], "ACTIVE", host, what="unshelve")
    timer("unshelve")
    assert back["OS-EXT-SRV-ATTR:host"] == host.name
    assert back["OS-EXT-STS:power_state"] == 1
    st = host.container_state(srv["id"])
    assert st is not None and st["status"] == "running", st
    rc, out, err = _exec(host, srv["id"], "cat /root/marker")
    assert (rc, out) == (0, marker + "\n"), out + err
    assert list(placement.allocations(srv["id"])) == [host.rp_uuid]
    assert _usage(placement, host)["VCPU"] == before["VCPU"]
    assert _image_gone(glance, image_id), "the shelved image %s was not deleted" % image_id


@pytest.mark.kinds("corral")
def test_shelve_without_offload_and_unshelve(kind, hosts, nova, placement, servers, glance,
                                             run_id, timer):
    """shelved_offload_time = -1 on the host: shelve leaves a stopped container and the
    allocation; unshelve goes through start_instance: running again with its file, the
    shelved image deleted."""
    host = hosts.start(kind, "keep", conf={"DEFAULT": {"shelved_offload_time": "-1"}})
    try:
        srv = servers.boot(host)
        marker = "keep-%s" % run_id
        assert _exec(host, srv["id"], "echo %s > /root/marker" % marker)[0] == 0
        nova.action(srv["id"], {"shelve": None})
        shelved = nh.wait_server(nova, srv["id"], "SHELVED", host, what="shelve")
        timer("shelve")
        assert shelved["OS-EXT-SRV-ATTR:host"] == host.name
        st = host.container_state(srv["id"])
        assert st is None or st["status"] == "stopped", st
        assert list(placement.allocations(srv["id"])) == [host.rp_uuid]
        images = glance.get("/v2/images?instance_uuid=%s&image_type=snapshot" % srv["id"],
                            expect=200).json()["images"]
        assert len(images) == 1, images

        nova.action(srv["id"], {"unshelve": None})
        nh.wait_server(nova, srv["id"], "ACTIVE", host, what="unshelve")
        timer("unshelve")
        rc, out, err = _exec(host, srv["id"], "cat /root/marker")
        assert (rc, out) == (0, marker + "\n"), out + err
        assert _image_gone(glance, images[0]["id"])
    finally:
        servers.cleanup()
        hosts.teardown(host)


@pytest.mark.kinds("corral")
def test_the_periodic_offloads_a_shelved_server(kind, hosts, nova, placement, servers, timer):
    """shelved_offload_time = 5, shelved_poll_interval = 1: the server is SHELVED first,
    then offloaded by the periodic task: no container, no allocation, on no host."""
    host = hosts.start(kind, "poll", conf={"DEFAULT": {"shelved_offload_time": "5",
                                                       "shelved_poll_interval": "1"}})
    try:
        srv = servers.boot(host)
        nova.action(srv["id"], {"shelve": None})
        nh.wait_server(nova, srv["id"], "SHELVED", host, what="shelve")
        timer("shelve")
        nh.wait_server(nova, srv["id"], "SHELVED_OFFLOADED", what="the periodic offload", timeout=60)
        assert nh.wait_for(lambda: nova.server(srv["id"])["OS-EXT-SRV-ATTR:host"] is None, 30)
        timer("periodic offload")
        assert host.container_state(srv["id"]) is None
        assert placement.allocations(srv["id"]) == {}
    finally:
        servers.cleanup()
        hosts.teardown(host)


@pytest.mark.kinds("corral")
def test_rescue_and_unrescue(kind, hosts, nova, servers, image, run_id, timer):
    """rescue: the container boots from the rescue image (its own root, not the server's)
    with the server's root read-write at /mnt; a file written there while rescued is in
    the server's root after unrescue; the rescue root's own files are gone. The rescue
    password is the admin_pass of the rescue's config drive, never of the server's.
    Deleting a rescued server removes it all."""
    host = hosts.primary(kind)
    srv = servers.boot(host, config_drive=True)
    seed = "/var/lib/cloud/seed/config_drive/openstack/latest/meta_data.json"
    password = "rescue-%s" % run_id
    marker = "rescue-%s" % run_id
    assert _exec(host, srv["id"], "echo %s > /root/marker" % marker)[0] == 0
    pid = host.container_state(srv["id"])["pid"]

    r = nova.action(srv["id"], {"rescue": {"rescue_image_ref": image["id"], "adminPass": password}},
                    expect=200)
    assert r.json() == {"adminPass": password}, r.json()
    rescued = nh.wait_server(nova, srv["id"], "RESCUE", host, what="rescue")
    timer("rescue")
    assert rescued["OS-EXT-STS:power_state"] == 1
    st = host.container_state(srv["id"])
    assert st["status"] == "running" and st["pid"] != pid, st
    # the rescue root is the image's: the server's file is only under /mnt
    assert _exec(host, srv["id"], "test -e /root/marker")[0] != 0
    rc, out, err = _exec(host, srv["id"], "cat /mnt/root/marker")
    assert (rc, out) == (0, marker + "\n"), out + err
    assert _exec(host, srv["id"], "echo fixed > /mnt/root/fixed && echo x > /rescue-only")[0] == 0
    rc, out, err = _exec(host, srv["id"], "cat " + seed)
    assert rc == 0 and json.loads(out).get("admin_pass") == password, out + err

    nova.action(srv["id"], {"unrescue": None})
    back = nh.wait_server(nova, srv["id"], "ACTIVE", host, what="unrescue")
    timer("unrescue")
    assert back["OS-EXT-STS:power_state"] == 1
    rc, out, err = _exec(host, srv["id"], "cat /root/fixed /root/marker")
    assert (rc, out) == (0, "fixed\n%s\n" % marker), out + err
    assert _exec(host, srv["id"], "test -e /rescue-only")[0] != 0
    assert _exec(host, srv["id"], "test -e /mnt/root")[0] != 0
    rc, out, err = _exec(host, srv["id"], "cat " + seed)
    assert rc == 0 and json.loads(out).get("admin_pass") != password, out + err

    # delete while rescued: container and both roots go
    nova.action(srv["id"], {"rescue": None}, expect=200)
    nh.wait_server(nova, srv["id"], "RESCUE", host, what="rescue again")
    nova.delete("/servers/" + srv["id"], expect=204)
    nh.wait_gone(nova, srv["id"])
    timer("delete rescued")
    assert host.container_state(srv["id"]) is None
    assert not os.path.exists(os.path.join(host.state_dir, "instances", srv["id"])), \
        "the instance directory is left"


def _consuming(host):
    with open(host.log, errors="replace") as f:
        return f.read().count("nova compute service consuming")


def _restart(host, crash_at=None):
    """Stops the host and starts it again, armed to SIGKILL itself at `crash_at`; returns
    once the new process has done its start-up recovery and consumes casts."""
    seen = _consuming(host)
    host.stop()
    host.crash_at = crash_at
    host.start()
    host.wait_ready()
    assert nh.wait_for(lambda: _consuming(host) > seen, 60), host.log_excerpt()


def _died(host):
    assert nh.wait_for(lambda: not host.alive(), 120), "the daemon did not reach its crash point"


def _mounts_of(sid):
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if sid in line]


@pytest.mark.kinds("corral")
def test_a_crash_mid_rescue_shelve_or_unshelve_is_recovered(kind, hosts, nova, placement, servers,
                                                            run_id, timer):
    """The daemon SIGKILLed in the middle of a rescue (its container made, not started),
    of a shelve offload (the container killed, not removed) and of an unshelve (the new
    container's record made), then restarted: the rescue is rolled back (ACTIVE on its
    own root, no rescue root mounted), the offload finished (SHELVED_OFFLOADED on no
    host, nothing left on the host, no allocation), the unshelve a failed spawn (ERROR,
    as nova-compute's _init_instance, with nothing left)."""
    host = hosts.start(kind, "crash")
    try:
        srv = servers.boot(host)
        sid = srv["id"]
        marker = "crash-%s" % run_id
        assert _exec(host, sid, "echo %s > /root/marker" % marker)[0] == 0
        idir = os.path.join(host.state_dir, "instances", sid)

        _restart(host, "start.after_create")
        nova.action(sid, {"rescue": None}, expect=200)
        _died(host)
        _restart(host)
        nh.wait_server(nova, sid, "ACTIVE", host, what="recovery of a rescue")
        timer("rescue crash")
        rc, out, err = _exec(host, sid, "cat /root/marker")
        assert (rc, out) == (0, marker + "\n"), out + err
        assert not os.path.exists(os.path.join(idir, "rescue")), os.listdir(idir)
        assert not [m for m in _mounts_of(sid) if "/rescue/" in m], _mounts_of(sid)

        _restart(host, "delete.after_kill")
        nova.action(sid, {"shelve": None})
        _died(host)
        _restart(host)
        nh.wait_server(nova, sid, "SHELVED_OFFLOADED", what="recovery of an offload")
        assert nh.wait_for(lambda: nova.server(sid)["OS-EXT-SRV-ATTR:host"] is None, 30)
        timer("offload crash")
        assert host.container_state(sid) is None
        assert not os.path.exists(idir), os.listdir(idir)
        assert not _mounts_of(sid), _mounts_of(sid)
        assert placement.allocations(sid) == {}

        _restart(host, "launch.after_record")
        nova.action(sid, {"unshelve": {"host": host.name}})
        _died(host)
        _restart(host)
        s = nh.wait_server(nova, sid, "ERROR", host, what="recovery of an unshelve")
        timer("unshelve crash")
        assert (s.get("fault") or {}).get("message"), nh.describe_server(s)
        assert host.container_state(sid) is None
        assert not os.path.exists(idir), os.listdir(idir)
        assert not _mounts_of(sid), _mounts_of(sid)
    finally:
        # an unarmed daemon deletes what a failed step left (an armed one would die in it)
        try:
            _restart(host)
        except Exception as e:  # noqa: BLE001 - clean-up goes on, loudly
            print("\nrestart before clean-up: %s" % e)
        servers.cleanup()
        hosts.teardown(host)


# the Neutron fixtures and helpers of the network scenarios
from test_networks import (addressed, boot_on, make_network, net_host, network, neutron,  # noqa: E402,F401
                           pings, ports_of, wait_dhcp, wait_port_active)


@pytest.mark.kinds("corral")
def test_shelve_offload_and_unshelve_keep_the_port(kind, net_host, nova, servers, neutron, network,
                                                   timer):
    """A server on a Neutron network: the offload unbinds its port from the host but keeps
    it the server's; the unshelve binds it here again and the server gets the same address
    by DHCP and answers its neighbour."""
    a, b = boot_on(servers, nova, net_host, 2, networks=[{"uuid": network["id"]}])
    (pa, ipa), (pb, ipb) = addressed(neutron, network, a), addressed(neutron, network, b)
    wait_dhcp(net_host, b["id"], "eth0", pb["mac_address"], ipb)
    timer("boot two")

    nova.action(b["id"], {"shelve": None})
    nh.wait_server(nova, b["id"], "SHELVED_OFFLOADED", what="shelve")
    assert nh.wait_for(lambda: nova.server(b["id"])["OS-EXT-SRV-ATTR:host"] is None, 30)
    timer("shelve")
    port = neutron.get("/v2.0/ports/" + pb["id"], expect=200).json()["port"]
    assert not port["binding:host_id"], port
    assert port["device_id"] == b["id"], port

    nova.action(b["id"], {"unshelve": {"host": net_host.name}})
    nh.wait_server(nova, b["id"], "ACTIVE", net_host, what="unshelve")
    timer("unshelve")
    assert [p["id"] for p in ports_of(neutron, b["id"])] == [pb["id"]]
    assert wait_port_active(neutron, pb["id"])["binding:host_id"] == net_host.name
    wait_dhcp(net_host, b["id"], "eth0", pb["mac_address"], ipb)
    assert pings(net_host, a["id"], ipb), "the unshelved server does not answer\n" + net_host.log_excerpt()
