"""Neutron ports through the real nova-api and the stack's real neutron API server.

Both kinds run the failed binding scenario (the reference nova-compute is the oracle for
what happens to the ports). The stack's neutron has ML2 with no mechanism driver and no agents (scripts/nova-stack.sh):
every port bound to a host ends with binding:vif_type=binding_failed. That is the failed
binding scenario: the build ends in ERROR with a readable PortBindingFailed fault, the port
Nova made is deleted, the port the user passed is unbound and kept.

The success path (a server on a network is ACTIVE with its addresses, delete removes the
port Nova made) needs an Open vSwitch agent alive on the compute host's name so that ML2
binds the port; without one it is skipped, naming what is missing. Neutron must also tell
Nova when the agent brings the port up (`notify_nova_on_port_status_changes = True` and a
`[nova]` section in neutron.conf), or the build waits `vif_plugging_timeout` (300 s) for
`network-vif-plugged` and fails with VirtualInterfaceCreateException.

Networks use 10.2xx.y.0/24 ranges unique to the run; nothing sends traffic.
"""

import random
import time

import pytest

import novaharness as nh


@pytest.fixture(scope="session")
def neutron(stack):
    # auth_strategy = noauth: an admin context; resources name their project
    return nh.RestClient(stack.neutron_url, {"Accept": "application/json", "X-Auth-Token": "admin"})


@pytest.fixture
def network(neutron, run_id):
    """A network of project `admin` (nova-api's noauth project) with one IPv4 subnet."""
    name = "corral-net-%s-%d" % (run_id, random.randrange(1 << 16))
    net = neutron.post("/v2.0/networks", {"network": {"name": name, "project_id": "admin"}},
                       expect=201).json()["network"]
    cidr = "10.2%02d.%d.0/24" % (random.randrange(10, 55), random.randrange(256))
    sub = neutron.post("/v2.0/subnets", {"subnet": {
        "network_id": net["id"], "cidr": cidr, "ip_version": 4, "project_id": "admin",
        "dns_nameservers": [cidr.replace(".0/24", ".2")]}}, expect=201).json()["subnet"]
    net["subnet"] = sub
    yield net
    for p in neutron.get("/v2.0/ports?network_id=" + net["id"], expect=200).json()["ports"]:
        neutron.delete("/v2.0/ports/" + p["id"], expect=(204, 404))
    neutron.delete("/v2.0/networks/" + net["id"], expect=(204, 404))


def ports_of(neutron, device_id):
    return neutron.get("/v2.0/ports?device_id=" + device_id, expect=200).json()["ports"]


def ovs_agent_on(neutron, host):
    agents = neutron.get("/v2.0/agents?agent_type=Open+vSwitch+agent", expect=(200, 404))
    if agents.status_code != 200:
        return None
    for a in agents.json().get("agents", []):
        if a.get("host") == host and a.get("alive"):
            return a
    return None


def test_failed_binding_is_an_error_that_cleans_up(kind, hosts, nova, servers, neutron, network):
    host = hosts.primary(kind)
    if ovs_agent_on(neutron, host.name):
        pytest.skip("an OVS agent binds ports on %s: no binding failure to observe" % host.name)
    user = neutron.post("/v2.0/ports", {"port": {"network_id": network["id"], "project_id": "admin",
                                                 "name": "corral-user-port"}},
                        expect=201).json()["port"]
    s = servers.create(host=host, networks=[{"uuid": network["id"]}, {"port": user["id"]}])
    s = nh.wait_server(nova, s["id"], "ERROR", host, what="boot with a port that cannot bind")
    fault = s.get("fault") or {}
    if kind == "corral":
        assert "Binding failed for port" in fault.get("message", ""), nh.describe_server(s)
        assert fault.get("details", "").startswith("PortBindingFailed: "), nh.describe_server(s)
    else:
        # nova-compute reschedules a PortBindingFailed even with no alternate host left;
        # the conductor then records MaxRetriesExceeded. corral fails in place instead,
        # keeping the cause as the fault.
        assert "Exceeded maximum number of retries" in fault.get("message", ""), nh.describe_server(s)
    # the port Nova made is gone, the user's is kept and free again
    assert ports_of(neutron, s["id"]) == [], ports_of(neutron, s["id"])
    kept = neutron.get("/v2.0/ports/" + user["id"], expect=200).json()["port"]
    assert kept["device_id"] == "" and kept["device_owner"] == "", kept
    assert not kept.get("binding:host_id"), kept
    left = [p for p in neutron.get("/v2.0/ports?network_id=" + network["id"], expect=200).json()["ports"]
            if p["device_owner"].startswith("compute:")]
    assert left == [], left
    if host.kind == "corral":
        assert host.container_state(s["id"]) is None
    nova.delete("/servers/" + s["id"], expect=204)
    nh.wait_gone(nova, s["id"], host)
    assert neutron.get("/v2.0/ports/" + user["id"], expect=200).json()["port"]["device_id"] == ""


@pytest.mark.kinds("corral")
def test_boot_on_a_network_lists_addresses_and_delete_removes_the_port(
        kind, hosts, nova, servers, neutron, network):
    host = hosts.primary(kind)
    if not ovs_agent_on(neutron, host.name):
        pytest.skip("no Open vSwitch agent alive for host %s in the stack: ML2 cannot bind ports "
                    "(the stack runs the neutron API only)" % host.name)
    s = servers.boot(host, networks=[{"uuid": network["id"]}])
    ports = ports_of(neutron, s["id"])
    assert len(ports) == 1, ports
    port = ports[0]
    assert port["binding:host_id"] == host.name, port
    assert port["device_owner"] == "compute:nova", port
    ip = port["fixed_ips"][0]["ip_address"]
    addrs = s["addresses"].get(network["name"])
    assert addrs and addrs[0]["addr"] == ip, s["addresses"]
    assert addrs[0]["OS-EXT-IPS-MAC:mac_addr"] == port["mac_address"], addrs
    nova.delete("/servers/" + s["id"], expect=204)
    nh.wait_gone(nova, s["id"], host)
    assert ports_of(neutron, s["id"]) == []


def test_attach_that_cannot_bind_fails_and_leaves_no_port(kind, hosts, nova, placement, servers,
                                                          neutron, network):
    host = hosts.primary(kind)
    if ovs_agent_on(neutron, host.name):
        pytest.skip("an OVS agent binds ports on %s: no binding failure to observe" % host.name)
    traits = placement.get("/resource_providers/%s/traits" % host.rp_uuid, expect=200).json()["traits"]
    assert "COMPUTE_NET_ATTACH_INTERFACE" in traits, traits
    srv = servers.boot(host)
    # a port on the network: created by the compute, bound, refused, deleted again
    r = nova.post("/servers/%s/os-interface" % srv["id"],
                  {"interfaceAttachment": {"net_id": network["id"]}}, expect=500)
    assert "PortBindingFailed" in r.text or "Unexpected API Error" in r.text, r.text
    assert ports_of(neutron, srv["id"]) == [], ports_of(neutron, srv["id"])
    # the user's port: unbound and kept
    user = neutron.post("/v2.0/ports", {"port": {"network_id": network["id"], "project_id": "admin"}},
                        expect=201).json()["port"]
    nova.post("/servers/%s/os-interface" % srv["id"],
              {"interfaceAttachment": {"port_id": user["id"]}}, expect=500)
    kept = neutron.get("/v2.0/ports/" + user["id"], expect=200).json()["port"]
    if kind == "corral":
        assert kept["device_id"] == "" and not kept.get("binding:host_id"), kept
    else:
        # nova-compute 34 unbinds only the passed ports whose update succeeded: the one
        # that failed to bind keeps the server as its device (corral frees it)
        assert kept["device_id"] == srv["id"], kept
    s = nh.wait_server(nova, srv["id"], "ACTIVE", host, what="server after the failed attach")
    assert s["addresses"] == {}, s["addresses"]


@pytest.mark.kinds("corral")
def test_network_changed_refreshes_the_addresses(kind, hosts, nova, servers, neutron, network):
    """A port Neutron gives the server is read into the info cache on `network-changed`,
    saved through the real conductor, and listed by nova-api; delete removes it.

    corral only: nova-compute 34 adds a port on `network-changed` only to a non-empty
    cache (`_build_network_info_model` with `refresh_vif_id`), so a server booted with no
    network keeps none there; corral rebuilds the cache from all the server's ports."""
    host = hosts.primary(kind)
    srv = servers.boot(host)
    assert srv["addresses"] == {}, srv["addresses"]
    port = neutron.post("/v2.0/ports", {"port": {
        "network_id": network["id"], "project_id": "admin", "device_id": srv["id"],
        "fixed_ips": [{"subnet_id": network["subnet"]["id"]}]}}, expect=201).json()["port"]
    ip = port["fixed_ips"][0]["ip_address"]
    nova.post("/os-server-external-events", {"events": [
        {"name": "network-changed", "server_uuid": srv["id"], "tag": port["id"]}]}, expect=200)
    deadline = nh._now() + 60
    addrs = None
    while nh._now() < deadline:
        addrs = nova.server(srv["id"])["addresses"].get(network["name"])
        if addrs:
            break
        time.sleep(0.3)
    assert addrs, "no addresses after network-changed\n%s" % host.log_excerpt()
    assert addrs[0]["addr"] == ip and addrs[0]["OS-EXT-IPS-MAC:mac_addr"] == port["mac_address"], addrs
    assert addrs[0]["version"] == 4 and addrs[0]["OS-EXT-IPS:type"] == "fixed", addrs
    ifs = nova.get("/servers/%s/os-interface" % srv["id"], expect=200).json()["interfaceAttachments"]
    assert [i["port_id"] for i in ifs] == [port["id"]], ifs
    nova.delete("/servers/" + srv["id"], expect=204)
    nh.wait_gone(nova, srv["id"], host)
    assert neutron.get("/v2.0/ports/" + port["id"], expect=(200, 404)).status_code == 404
