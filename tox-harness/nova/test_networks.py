"""Neutron ports and the data path through the real nova-api and the stack's real Neutron.

The stack's Neutron runs ML2/openvswitch with an OVS and a DHCP agent whose `host` is
stack.json's `neutron_agent_host` (scripts/nova-stack.sh). Ports bound to any other host
end with binding:vif_type=binding_failed: the failed binding scenarios run on the
primary hosts of both kinds (the reference nova-compute is the oracle for what happens to
the ports): the build ends in ERROR with a readable PortBindingFailed fault, the port Nova
made is deleted, the port the user passed is unbound and kept.

The success path runs on a corral host named as the agents (`net_host`), skipped naming
what is missing when no OVS agent is alive: ML2 binds its ports (vif_type ovs, the
agents' integration bridge), corral plugs them, the agent wires them and Neutron tells
Nova `network-vif-plugged`; the busybox image's udhcpc gets its address from the DHCP
agent's dnsmasq, and the servers ping each other.

Networks use 10.2xx.y.0/24 ranges unique to the run; traffic goes only between the
servers' own addresses on them.
"""

import contextlib
import os
import random
import signal
import subprocess
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
    yield from make_network(neutron, run_id)


@pytest.fixture
def network2(neutron, run_id):
    """A second such network."""
    yield from make_network(neutron, run_id)


def make_network(neutron, run_id):
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
        kind, net_host, nova, servers, neutron, network):
    host = net_host
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


# ----------------------------------------------------------------------------- the data path
# Servers on the stack's tenant networks, on the corral host named as the stack's OVS and
# DHCP agents (`neutron_agent_host` in stack.json): ML2 binds their ports (vif_type ovs),
# the agents wire them, dnsmasq answers the image's udhcpc. Traffic goes only between the
# servers' own addresses inside networks the test made.

DHCP_TIMEOUT = 90


@pytest.fixture
def net_host(hosts, stack, neutron):
    name = getattr(stack, "neutron_agent_host", None)
    if not name:
        pytest.skip("the stack names no host for its Neutron agents (stack.json neutron_agent_host)")
    if not ovs_agent_on(neutron, name):
        pytest.skip("no Open vSwitch agent alive for host %s in the stack" % name)
    h = hosts.start_neutron_host("corral")
    yield h
    hosts.teardown(h)


def inside(host, sid, script, timeout=30):
    p = subprocess.run(["runc", "--root", host.runtime_root, "exec", sid, "sh", "-c", script],
                       capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


def wait_port_active(neutron, port_id, timeout=60):
    port = None
    deadline = nh._now() + timeout
    while nh._now() < deadline:
        port = neutron.get("/v2.0/ports/" + port_id, expect=200).json()["port"]
        if port["status"] == "ACTIVE":
            return port
        time.sleep(0.5)
    raise AssertionError("port %s not ACTIVE after %d s: %s" % (port_id, timeout, port))


def wait_dhcp(host, sid, dev, mac, ip, timeout=DHCP_TIMEOUT):
    """`dev` inside the server has `mac` and, once udhcpc got its lease, `ip`/prefix."""
    out = ""
    deadline = nh._now() + timeout
    while nh._now() < deadline:
        rc, out = inside(host, sid, "cat /sys/class/net/%s/address; ip -4 -o addr show dev %s"
                         % (dev, dev))
        if rc == 0 and out.split("\n", 1)[0].strip() == mac.lower() and (" %s/" % ip) in out:
            return out
        time.sleep(1)
    raise AssertionError("%s of %s never had %s and %s by DHCP within %d s: %r\n%s" % (
        dev, sid, mac, ip, timeout, out, host.log_excerpt()))


def pings(host, sid, ip, timeout=30):
    """True once one ping from server `sid` to `ip` is answered within `timeout`."""
    deadline = nh._now() + timeout
    while nh._now() < deadline:
        rc, _ = inside(host, sid, "ping -c 1 -W 1 %s" % ip)
        if rc == 0:
            return True
    return False


def never_pings(host, sid, ip, tries=4):
    return all(inside(host, sid, "ping -c 1 -W 1 %s" % ip)[0] != 0 for _ in range(tries))


def boot_on(servers, nova, host, n, **kw):
    made = [servers.create(host=host, **kw) for _ in range(n)]
    return [nh.wait_server(nova, s["id"], "ACTIVE", host, what="boot on a network") for s in made]


def addressed(neutron, network, s):
    """(port, ip) of the server's one port on `network`, checked against its addresses."""
    ports = ports_of(neutron, s["id"])
    assert len(ports) == 1, ports
    port = wait_port_active(neutron, ports[0]["id"])
    ip = port["fixed_ips"][0]["ip_address"]
    addrs = s["addresses"].get(network["name"])
    assert addrs and addrs[0]["addr"] == ip, s["addresses"]
    assert addrs[0]["OS-EXT-IPS-MAC:mac_addr"] == port["mac_address"], addrs
    return port, ip


@pytest.mark.kinds("corral")
def test_two_servers_on_a_network_get_their_addresses_by_dhcp_and_ping_each_other(
        kind, net_host, nova, servers, neutron, network):
    a, b = boot_on(servers, nova, net_host, 2, networks=[{"uuid": network["id"]}])
    (pa, ipa), (pb, ipb) = addressed(neutron, network, a), addressed(neutron, network, b)
    assert pa["binding:vif_type"] == "ovs", pa
    wait_dhcp(net_host, a["id"], "eth0", pa["mac_address"], ipa)
    wait_dhcp(net_host, b["id"], "eth0", pb["mac_address"], ipb)
    assert pings(net_host, a["id"], ipb), "%s cannot ping %s\n%s" % (a["id"], ipb, net_host.log_excerpt())
    assert pings(net_host, b["id"], ipa), "%s cannot ping %s" % (b["id"], ipa)


def host_devices(port_id):
    """The host's devices named after `port_id` (tap, qbr, qvb, qvo)."""
    short = port_id[:11]
    p = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    return [line.split(":")[1].strip().split("@")[0] for line in p.stdout.splitlines()
            if short in line.split(":")[1]]


def ovs_ports_of(port_id):
    """OVS interfaces whose external_ids:iface-id is `port_id`."""
    p = subprocess.run(["ovs-vsctl", "--bare", "--columns=name", "find", "Interface",
                        "external_ids:iface-id=%s" % port_id], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p.stdout.split()


def processes_naming(word):
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open("/proc/%s/cmdline" % pid, "rb").read().decode(errors="replace")
        except OSError:
            continue
        if word in cmd and "pytest" not in cmd:
            found.append("%s: %s" % (pid, cmd.replace("\0", " ")))
    return found


@pytest.mark.kinds("corral")
def test_delete_leaves_no_device_and_frees_the_ports(kind, net_host, nova, servers, neutron, network):
    user = neutron.post("/v2.0/ports", {"port": {"network_id": network["id"], "project_id": "admin",
                                                 "name": "corral-user-port"}},
                        expect=201).json()["port"]
    (s,) = boot_on(servers, nova, net_host, 1, networks=[{"uuid": network["id"]}, {"port": user["id"]}])
    ports = ports_of(neutron, s["id"])
    assert {p["id"] for p in ports} >= {user["id"]} and len(ports) == 2, ports
    made = [p["id"] for p in ports if p["id"] != user["id"]][0]
    for pid in (made, user["id"]):
        wait_port_active(neutron, pid)
        assert host_devices(pid), "no host device for port %s" % pid
        assert ovs_ports_of(pid), "no OVS port for port %s" % pid
    nova.delete("/servers/" + s["id"], expect=204)
    nh.wait_gone(nova, s["id"], net_host)
    for pid in (made, user["id"]):
        assert host_devices(pid) == [], host_devices(pid)
        assert ovs_ports_of(pid) == [], ovs_ports_of(pid)
    assert net_host.container_state(s["id"]) is None
    assert processes_naming(s["id"]) == [], processes_naming(s["id"])
    assert not [n for n in os.listdir("/run/netns") if s["id"][:8] in n] if os.path.isdir("/run/netns") else True
    assert neutron.get("/v2.0/ports/" + made, expect=(200, 404)).status_code == 404
    kept = neutron.get("/v2.0/ports/" + user["id"], expect=200).json()["port"]
    assert kept["device_id"] == "" and not kept.get("binding:host_id"), kept


def act(nova, host, sid, body, status, what):
    nova.action(sid, body)
    return nh.wait_server(nova, sid, status, host, what=what)


@pytest.mark.kinds("corral")
def test_stop_start_reboot_and_a_daemon_restart_keep_the_address(
        kind, net_host, nova, servers, neutron, network):
    a, b = boot_on(servers, nova, net_host, 2, networks=[{"uuid": network["id"]}])
    (pa, ipa), (pb, ipb) = addressed(neutron, network, a), addressed(neutron, network, b)
    wait_dhcp(net_host, a["id"], "eth0", pa["mac_address"], ipa)
    wait_dhcp(net_host, b["id"], "eth0", pb["mac_address"], ipb)
    assert pings(net_host, a["id"], ipb), "no ping before the transitions"

    def reachable(what):
        s = nova.server(b["id"])
        assert s["addresses"][network["name"]][0]["addr"] == ipb, (what, s["addresses"])
        wait_dhcp(net_host, b["id"], "eth0", pb["mac_address"], ipb)
        assert pings(net_host, a["id"], ipb), "%s: %s no longer answers\n%s" % (
            what, ipb, net_host.log_excerpt())
        assert pings(net_host, b["id"], ipa), "%s: %s cannot reach %s" % (what, ipb, ipa)

    act(nova, net_host, b["id"], {"os-stop": None}, "SHUTOFF", "stop")
    assert never_pings(net_host, a["id"], ipb, tries=2), "a stopped server answers"
    act(nova, net_host, b["id"], {"os-start": None}, "ACTIVE", "start")
    reachable("stop/start")
    act(nova, net_host, b["id"], {"reboot": {"type": "SOFT"}}, "ACTIVE", "soft reboot")
    reachable("soft reboot")
    act(nova, net_host, b["id"], {"reboot": {"type": "HARD"}}, "ACTIVE", "hard reboot")
    reachable("hard reboot")
    net_host.stop()
    net_host.start()
    try:
        net_host.wait_ready()
    except nh.HostStartError as e:
        pytest.fail("after a restart: %s" % e, pytrace=False)
    nh.wait_server(nova, b["id"], "ACTIVE", net_host, what="after the daemon restart")
    reachable("daemon restart")
    assert [p["id"] for p in ports_of(neutron, b["id"])] == [pb["id"]]
    assert wait_port_active(neutron, pb["id"])["binding:host_id"] == net_host.name


def interfaces(nova, sid):
    return nova.get("/servers/%s/os-interface" % sid, expect=200).json()["interfaceAttachments"]


@pytest.mark.kinds("corral")
def test_attach_and_detach_a_port_on_a_second_network(
        kind, net_host, nova, servers, neutron, network, network2):
    (s,) = boot_on(servers, nova, net_host, 1, networks=[{"uuid": network["id"]}])
    p0, ip0 = addressed(neutron, network, s)
    wait_dhcp(net_host, s["id"], "eth0", p0["mac_address"], ip0)
    att = nova.post("/servers/%s/os-interface" % s["id"],
                    {"interfaceAttachment": {"net_id": network2["id"]}}, expect=200).json()
    att = att["interfaceAttachment"]
    port = wait_port_active(neutron, att["port_id"])
    ip1 = port["fixed_ips"][0]["ip_address"]
    assert port["device_id"] == s["id"] and port["binding:host_id"] == net_host.name, port
    assert att["mac_addr"] == port["mac_address"], att
    assert sorted(i["port_id"] for i in interfaces(nova, s["id"])) == sorted([p0["id"], port["id"]])
    addrs = nova.server(s["id"])["addresses"].get(network2["name"])
    assert addrs and addrs[0]["addr"] == ip1, nova.server(s["id"])["addresses"]
    # the image runs udhcpc only on the interfaces it boots with: ask for eth1's lease here
    rc, out = inside(net_host, s["id"], "udhcpc -n -q -i eth1 -t 10 -T 1 "
                     "-s /usr/share/udhcpc/default.script", timeout=60)
    assert rc == 0, out
    wait_dhcp(net_host, s["id"], "eth1", port["mac_address"], ip1)
    assert host_devices(port["id"]) and ovs_ports_of(port["id"])

    nova.delete("/servers/%s/os-interface/%s" % (s["id"], port["id"]), expect=202)
    deadline = nh._now() + 60
    while nh._now() < deadline:
        rc, out = inside(net_host, s["id"], "test -e /sys/class/net/eth1 && echo present || echo gone")
        if out.strip() == "gone" and [i["port_id"] for i in interfaces(nova, s["id"])] == [p0["id"]]:
            break
        time.sleep(0.5)
    assert out.strip() == "gone", out
    assert [i["port_id"] for i in interfaces(nova, s["id"])] == [p0["id"]]
    assert network2["name"] not in nova.server(s["id"])["addresses"]
    assert neutron.get("/v2.0/ports/" + port["id"], expect=(200, 404)).status_code == 404
    assert host_devices(port["id"]) == [] and ovs_ports_of(port["id"]) == []
    # a port the user made: attached, then detached unbound and kept
    user = neutron.post("/v2.0/ports", {"port": {"network_id": network2["id"], "project_id": "admin"}},
                        expect=201).json()["port"]
    nova.post("/servers/%s/os-interface" % s["id"],
              {"interfaceAttachment": {"port_id": user["id"]}}, expect=200)
    wait_port_active(neutron, user["id"])
    rc, out = inside(net_host, s["id"], "cat /sys/class/net/eth1/address")
    assert (rc, out.strip()) == (0, user["mac_address"]), out
    nova.delete("/servers/%s/os-interface/%s" % (s["id"], user["id"]), expect=202)
    kept = None
    deadline = nh._now() + 60
    while nh._now() < deadline:
        kept = neutron.get("/v2.0/ports/" + user["id"], expect=200).json()["port"]
        if kept["device_id"] == "" and not kept.get("binding:host_id"):
            break
        time.sleep(0.5)
    assert kept["device_id"] == "" and not kept.get("binding:host_id"), kept
    assert [i["port_id"] for i in interfaces(nova, s["id"])] == [p0["id"]]
    assert ovs_ports_of(user["id"]) == []


@pytest.fixture
def bare_group(neutron, run_id):
    """A security group of project `admin` with Neutron's default rules only (egress)."""
    sg = neutron.post("/v2.0/security-groups", {"security_group": {
        "name": "corral-sg-%s-%d" % (run_id, random.randrange(1 << 16)), "project_id": "admin"}},
        expect=201).json()["security_group"]
    yield sg
    # its servers go first (the servers fixture, torn down after this one: wait for them)
    deadline = nh._now() + 120
    while nh._now() < deadline:
        r = neutron.delete("/v2.0/security-groups/" + sg["id"], expect=(204, 404, 409))
        if r.status_code != 409:
            return
        for p in neutron.get("/v2.0/ports?security_groups=" + sg["id"], expect=200).json()["ports"]:
            neutron.put("/v2.0/ports/" + p["id"], {"port": {"security_groups": []}}, expect=(200, 404))
        time.sleep(1)


@pytest.mark.kinds("corral")
def test_a_security_group_without_icmp_blocks_the_ping_until_a_rule_allows_it(
        kind, net_host, nova, servers, neutron, network, bare_group):
    (a,) = boot_on(servers, nova, net_host, 1, networks=[{"uuid": network["id"]}])
    (b,) = boot_on(servers, nova, net_host, 1, networks=[{"uuid": network["id"]}],
                   security_groups=[{"name": bare_group["name"]}])
    (pa, ipa), (pb, ipb) = addressed(neutron, network, a), addressed(neutron, network, b)
    assert pb["security_groups"] == [bare_group["id"]], pb
    wait_dhcp(net_host, a["id"], "eth0", pa["mac_address"], ipa)
    wait_dhcp(net_host, b["id"], "eth0", pb["mac_address"], ipb)
    assert never_pings(net_host, a["id"], ipb), "%s answers a ping its security group does not allow" % ipb
    neutron.post("/v2.0/security-group-rules", {"security_group_rule": {
        "security_group_id": bare_group["id"], "direction": "ingress", "ethertype": "IPv4",
        "protocol": "icmp", "project_id": "admin"}}, expect=201)
    assert pings(net_host, a["id"], ipb), "%s still does not answer after the ICMP rule" % ipb


@contextlib.contextmanager
def paused_ovs_agent(stack):
    """SIGSTOP for the stack's OVS agent (its pidfile under run/): ports stay bound (the
    agent is still alive in Neutron's eyes for agent_down_time) but none goes ACTIVE, so
    Neutron sends no network-vif-plugged. SIGCONT at the end, whatever happens."""
    pidfile = os.path.join(stack.run, "neutron-ovs-agent.pid")
    try:
        pid = int(open(pidfile).read())
        cmd = open("/proc/%d/cmdline" % pid, "rb").read().decode(errors="replace")
    except (OSError, ValueError):
        pytest.skip("the stack's OVS agent does not run (no %s)" % pidfile)
    if stack.base not in cmd:
        pytest.skip("pid %d of %s is not this stack's OVS agent" % (pid, pidfile))
    os.kill(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        os.kill(pid, signal.SIGCONT)


def restart_with(host, conf):
    host.stop()
    host.extra_conf = conf
    host.start()
    try:
        host.wait_ready()
    except nh.HostStartError as e:
        pytest.fail("restarting %s: %s" % (host.name, e), pytrace=False)


@pytest.mark.kinds("corral")
def test_no_vif_plugged_in_time_is_an_error_that_leaves_nothing(
        kind, net_host, nova, servers, neutron, network):
    conf = dict(net_host.extra_conf)
    restart_with(net_host, {"DEFAULT": {"vif_plugging_timeout": "8", "vif_plugging_is_fatal": "true"}})
    try:
        user = neutron.post("/v2.0/ports", {"port": {"network_id": network["id"],
                                                     "project_id": "admin"}},
                            expect=201).json()["port"]
        with paused_ovs_agent(net_host.stack):
            s = servers.create(host=net_host, networks=[{"uuid": network["id"]}, {"port": user["id"]}])
            s = nh.wait_server(nova, s["id"], "ERROR", net_host, what="boot with no network-vif-plugged")
            ports = ports_of(neutron, s["id"])
        fault = s.get("fault") or {}
        assert fault.get("message") == "Virtual Interface creation failed", nh.describe_server(s)
        assert fault.get("details", "").startswith("VirtualInterfaceCreateException: "), fault
        assert ports == [], ports
        kept = neutron.get("/v2.0/ports/" + user["id"], expect=200).json()["port"]
        assert kept["device_id"] == "" and not kept.get("binding:host_id"), kept
        assert host_devices(user["id"]) == [] and ovs_ports_of(user["id"]) == []
        assert net_host.container_state(s["id"]) is None
        assert s["addresses"] == {}, s["addresses"]
    finally:
        restart_with(net_host, conf)


@pytest.mark.kinds("corral")
@pytest.mark.parametrize("point", ["plug.after_first", "plug.before_gate"])
def test_compute_killed_while_plugging_leaves_a_consistent_server(
        kind, point, net_host, nova, servers, neutron, network):
    """SIGKILL in the middle of plugging (`plug.after_first`: the first of two ports
    plugged, the second not; `plug.before_gate`: both plugged, network-vif-plugged not
    awaited yet), then a restart: the server is in ERROR with a
    fault, as nova-compute leaves a build its restart finds unfinished; no device or OVS
    port is left; deleting it deletes the port Nova made and unbinds the user's; and the
    host still boots servers on the network."""
    user = neutron.post("/v2.0/ports", {"port": {"network_id": network["id"], "project_id": "admin",
                                                 "name": "corral-user-port"}},
                        expect=201).json()["port"]
    net_host.stop()
    net_host.crash_at = point
    net_host.start()
    try:
        net_host.wait_ready()
    except nh.HostStartError as e:
        pytest.fail("starting %s with a crash point: %s" % (net_host.name, e), pytrace=False)
    s = servers.create(host=net_host, networks=[{"uuid": network["id"]}, {"port": user["id"]}])
    died = nh.wait_for(lambda: not net_host.alive(), 120, interval=0.1)
    assert died, "the daemon did not reach %s: " % point + nh.describe_server(nova.server(s["id"]))
    assert net_host.proc.returncode == -signal.SIGKILL, net_host.proc.returncode
    ports = ports_of(neutron, s["id"])
    assert len(ports) == 2, ports
    left = [d for p in ports for d in host_devices(p["id"])]
    assert left, "nothing was plugged before the crash: the scenario tests nothing"

    net_host.stop()
    net_host.start()
    try:
        net_host.wait_ready()
    except nh.HostStartError as e:
        pytest.fail("restarting after the crash: %s" % e, pytrace=False)
    s = nh.wait_server(nova, s["id"], "ERROR", net_host, what="a build interrupted while plugging")
    assert (s.get("fault") or {}).get("message"), nh.describe_server(s)
    assert s["OS-EXT-STS:task_state"] is None, nh.describe_server(s)
    for p in ports:
        assert host_devices(p["id"]) == [], (p["id"], host_devices(p["id"]))
        assert ovs_ports_of(p["id"]) == [], (p["id"], ovs_ports_of(p["id"]))
    assert net_host.container_state(s["id"]) is None

    nova.delete("/servers/" + s["id"], expect=204)
    nh.wait_gone(nova, s["id"], net_host)
    made = [p["id"] for p in ports if p["id"] != user["id"]]
    assert len(made) == 1, ports
    assert neutron.get("/v2.0/ports/" + made[0], expect=(200, 404)).status_code == 404
    kept = neutron.get("/v2.0/ports/" + user["id"], expect=200).json()["port"]
    assert kept["device_id"] == "" and not kept.get("binding:host_id"), kept

    (t,) = boot_on(servers, nova, net_host, 1, networks=[{"uuid": network["id"]}])
    pt, ipt = addressed(neutron, network, t)
    wait_dhcp(net_host, t["id"], "eth0", pt["mac_address"], ipt)
