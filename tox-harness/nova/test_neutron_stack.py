"""Neutron of the stack doing its real work, without any compute host.

scripts/nova-stack.sh runs ML2/openvswitch with neutron-openvswitch-agent and
neutron-dhcp-agent on the host named `neutron_agent_host` in stack.json (the name a
corral host must report for its ports to bind). These tests bind ports to that host
through the Neutron API and plug them by hand the way os-vif does for vif_type ovs:
a veth pair whose host end is an OVS port on the integration bridge with the
external_ids iface-id / iface-status / attached-mac / vm-uuid, the other end in a
namespace the test makes, with the port's MAC. Then the OVS agent wires the port
(ACTIVE, Neutron tells nova-api network-vif-plugged), dnsmasq in qdhcp-<network>
hands out the port's address, and the openvswitch firewall driver applies the
port's security group. Traffic stays inside the namespaces the test made.
"""

import json
import os
import random
import shutil
import subprocess
import tempfile
import time
import uuid

import pytest

import novaharness as nh

PROJECT = "corral-neutron-test"
NEUTRON_HEADERS = {"X-Auth-Token": "admin", "Accept": "application/json"}
# iputils ping when installed, else busybox's (both exit 1 when no reply came)
PING = ("ping",) if shutil.which("ping") else ("busybox", "ping")

# udhcpc calls this on every lease event; it keeps the lease's variables for the test
UDHCPC_SCRIPT = """#!/bin/sh
[ "$1" = bound ] || exit 0
printf 'ip=%s\\nsubnet=%s\\ninterface=%s\\n' "$ip" "$subnet" "$interface" > "$LEASE_FILE"
"""


def sh(*cmd, check=True, ns=None, timeout=30):
    if ns:
        cmd = ("ip", "netns", "exec", ns) + cmd
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError("%s -> rc %d: %s%s" % (" ".join(cmd), p.returncode, p.stdout, p.stderr))
    return p


def netns_list():
    return {line.split()[0] for line in sh("ip", "netns", "list").stdout.splitlines() if line.strip()}


class Plugged:
    """One Neutron port plugged by hand: namespace `ns` with `eth0` (the port's MAC),
    veth host end `tap<port id[:11]>` on the integration bridge."""

    def __init__(self, port, ns, tap):
        self.port, self.ns, self.tap = port, ns, tap
        self.ip = None


class NeutronRig:
    """Everything one test makes in Neutron, OVS and the kernel; cleanup() removes it all
    (also after a failure) and checks that nothing is left."""

    def __init__(self, stack):
        self.stack = stack
        self.neutron = nh.RestClient(stack.neutron_url + "/v2.0", NEUTRON_HEADERS)
        self.suffix = "%04x" % random.randrange(0x10000)
        self.tmp = tempfile.mkdtemp(prefix="corral-neutron-")
        self.ports, self.plugged, self.sgs, self.networks = [], [], [], []

    # -- neutron objects
    def network(self):
        net = self.neutron.post("/networks", {"network": {
            "name": "corral-nt-" + self.suffix, "project_id": PROJECT}}, expect=201).json()["network"]
        self.networks.append(net["id"])
        # a private range no other test uses at the same time
        cidr = "10.%d.%d.0/24" % (random.randrange(200, 250), random.randrange(1, 255))
        subnet = self.neutron.post("/subnets", {"subnet": {
            "network_id": net["id"], "cidr": cidr, "ip_version": 4, "enable_dhcp": True,
            "gateway_ip": None, "project_id": PROJECT}}, expect=201).json()["subnet"]
        return net, subnet

    def security_group(self, name):
        """A group whose only rules are Neutron's default egress ones: no ingress at all."""
        sg = self.neutron.post("/security-groups", {"security_group": {
            "name": "%s-%s" % (name, self.suffix), "project_id": PROJECT}}, expect=201).json()["security_group"]
        self.sgs.append(sg["id"])
        assert not [r for r in sg["security_group_rules"] if r["direction"] == "ingress"], sg
        return sg

    def port(self, net, sg):
        p = self.neutron.post("/ports", {"port": {
            "network_id": net["id"], "project_id": PROJECT, "name": "corral-nt-%s-%d" % (self.suffix, len(self.ports)),
            "binding:host_id": self.stack.neutron_agent_host, "device_owner": "compute:nova",
            "device_id": str(uuid.uuid4()), "security_groups": [sg["id"]]}}, expect=201).json()["port"]
        self.ports.append(p["id"])
        return p

    def get_port(self, pid):
        return self.neutron.get("/ports/" + pid, expect=200).json()["port"]

    # -- plugging as os-vif does
    def plug(self, port, mtu):
        i = len(self.plugged)
        ns = "corral-nt-%s-%d" % (self.suffix, i)
        tap = "tap" + port["id"][:11]
        peer = "ntp%s%d" % (self.suffix, i)
        pl = Plugged(port, ns, tap)
        self.plugged.append(pl)
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", tap, "mtu", str(mtu), "type", "veth", "peer", "name", peer, "mtu", str(mtu))
        sh("ip", "link", "set", peer, "netns", ns)
        sh("ip", "link", "set", peer, "name", "eth0", ns=ns)
        sh("ip", "link", "set", "eth0", "address", port["mac_address"], ns=ns)
        sh("ip", "link", "set", "eth0", "up", ns=ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
        sh("ip", "link", "set", tap, "up")
        sh("ovs-vsctl", "--timeout=10", "--", "--may-exist", "add-port", self.stack.br_int, tap,
           "--", "set", "Interface", tap,
           "external_ids:iface-id=" + port["id"], "external_ids:iface-status=active",
           "external_ids:attached-mac=" + port["mac_address"], "external_ids:vm-uuid=" + port["device_id"])
        return pl

    def dhcp(self, pl, timeout=40):
        """busybox udhcpc in the namespace; configures the leased address on eth0."""
        lease = os.path.join(self.tmp, "lease-%s" % pl.ns)
        script = os.path.join(self.tmp, "udhcpc.sh")
        with open(script, "w") as f:
            f.write(UDHCPC_SCRIPT)
        os.chmod(script, 0o755)
        env = dict(os.environ, LEASE_FILE=lease)
        p = subprocess.run(["ip", "netns", "exec", pl.ns, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f",
                            "-t", str(timeout // 2), "-T", "2", "-s", script],
                           capture_output=True, text=True, env=env, timeout=timeout + 10)
        assert p.returncode == 0 and os.path.exists(lease), \
            "no DHCP lease in %s: %s%s" % (pl.ns, p.stdout, p.stderr)
        kv = dict(line.split("=", 1) for line in open(lease).read().split())
        sh("ip", "addr", "add", "%s/%s" % (kv["ip"], kv["subnet"]), "dev", "eth0", ns=pl.ns)
        pl.ip = kv["ip"]
        return kv["ip"]

    def ping(self, src, dst, tries=3):
        """True once one echo request of `tries` gets its reply; False when none does
        (exit status 1). Anything else (no ping binary, a bad namespace) fails the test."""
        for _ in range(tries):
            p = sh(*PING, "-c", "1", "-W", "1", dst.ip, ns=src.ns, check=False)
            if p.returncode == 0:
                return True
            assert p.returncode == 1, "%s in %s: rc %d: %s%s" % (PING, src.ns, p.returncode, p.stdout, p.stderr)
        return False

    # -- cleanup
    def cleanup(self):
        errors = []

        def attempt(f, *a, **kw):
            try:
                f(*a, **kw)
            except Exception as e:  # noqa: BLE001 - best effort, reported below
                errors.append(str(e))

        for pl in self.plugged:
            attempt(sh, "ovs-vsctl", "--timeout=10", "--if-exists", "del-port", self.stack.br_int, pl.tap)
            if pl.ns in netns_list():
                attempt(sh, "ip", "netns", "delete", pl.ns)     # takes the veth pair with it
            # the pair goes with the namespace, asynchronously: delete only what stays
            if not nh.wait_for(lambda: not os.path.exists("/sys/class/net/" + pl.tap), 5):
                attempt(sh, "ip", "link", "delete", pl.tap)
        for pid in self.ports:
            attempt(self.neutron.delete, "/ports/" + pid, expect=(204, 404))
        for sid in self.sgs:
            attempt(self.neutron.delete, "/security-groups/" + sid, expect=(204, 404))
        for nid in self.networks:
            attempt(self.neutron.delete, "/networks/" + nid, expect=(204, 404))
        shutil.rmtree(self.tmp, ignore_errors=True)
        # nothing left: our namespaces, links and OVS ports, and the DHCP agent's
        # namespace of each network (it removes qdhcp-<id> once the network is gone)
        left = []
        deadline = time.time() + 30
        while True:
            nss = netns_list()
            left = [pl.ns for pl in self.plugged if pl.ns in nss]
            left += ["qdhcp-" + n for n in self.networks if "qdhcp-" + n in nss]
            left += [pl.tap for pl in self.plugged if os.path.exists("/sys/class/net/" + pl.tap)]
            ovs_ports = set(sh("ovs-vsctl", "--timeout=10", "list-ports", self.stack.br_int, check=False)
                            .stdout.split())
            left += ["OVS port " + pl.tap for pl in self.plugged if pl.tap in ovs_ports]
            if not left or time.time() > deadline:
                break
            time.sleep(0.5)
        if left:
            errors.append("left behind: " + ", ".join(left))
        return errors


@pytest.fixture
def rig(stack):
    if not getattr(stack, "neutron_agent_host", None):
        pytest.fail("stack.json has no neutron_agent_host: nova-stack.sh runs no Neutron agents", pytrace=False)
    r = NeutronRig(stack)
    yield r
    errors = r.cleanup()
    assert not errors, "cleanup: " + "; ".join(errors)


def wait_port_status(rig, pid, status, timeout=60):
    p = {}

    def ok():
        p.update(rig.get_port(pid))
        return p["status"] == status

    if not nh.wait_for(ok, timeout):
        pytest.fail("port %s is %s, not %s, after %d s; see %s/neutron-ovs-agent.log"
                    % (pid, p.get("status"), status, timeout, rig.stack.logs), pytrace=False)
    return p


def vif_plugged_events(stack, device_id):
    """The os-server-external-events requests nova-api received for that server."""
    out = []
    path = os.path.join(stack.logs, "nova-api-requests.jsonl")
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            if "os-server-external-events" not in line or device_id not in line:
                continue
            rec = json.loads(line)
            for ev in json.loads(rec["req_body"] or "{}").get("events", []):
                if ev.get("server_uuid") == device_id:
                    out.append(ev)
    return out


def test_neutron_agents_bind_dhcp_and_security_groups(stack, rig, timer):
    # the agents of the stack's host are alive
    agents = rig.neutron.get("/agents?host=" + stack.neutron_agent_host, expect=200).json()["agents"]
    alive = {a["agent_type"] for a in agents if a["alive"]}
    assert {"Open vSwitch agent", "DHCP agent"} <= alive, agents

    net, subnet = rig.network()
    sg = rig.security_group("corral-nt-noicmp")
    ports = [rig.port(net, sg) for _ in range(2)]
    for p in ports:
        assert p["binding:vif_type"] == "ovs", p
        assert p["binding:vif_details"].get("bridge_name") == stack.br_int, p
        assert p["binding:vif_details"].get("datapath_type") == "netdev", p
        assert p["status"] == "DOWN", p
    timer("network, subnet, group, 2 bound ports")

    mtu = net.get("mtu") or 1450
    plugged = [rig.plug(p, mtu) for p in ports]
    for p in ports:
        wait_port_status(rig, p["id"], "ACTIVE")
    timer("ports ACTIVE")

    # neutron told nova-api: network-vif-plugged for each port's server (the servers do
    # not exist in nova, so nova answers 404, but the event arrived)
    for p in ports:
        assert nh.wait_for(lambda: any(
            e.get("name") == "network-vif-plugged" and e.get("tag") == p["id"] and e.get("status") == "completed"
            for e in vif_plugged_events(stack, p["device_id"])), 30), \
            "nova-api got no network-vif-plugged for port %s (see %s/nova-api-requests.jsonl, neutron-rpc.log)" \
            % (p["id"], stack.logs)
    timer("network-vif-plugged at nova-api")

    for pl in plugged:
        got = rig.dhcp(pl)
        assert got == pl.port["fixed_ips"][0]["ip_address"], (got, pl.port["fixed_ips"])
    timer("DHCP leases")

    a, b = plugged
    # no ingress rule: the openvswitch firewall drops the echo requests
    assert not rig.ping(a, b), "ping %s -> %s passed a group without ICMP" % (a.ip, b.ip)
    assert not rig.ping(b, a), "ping %s -> %s passed a group without ICMP" % (b.ip, a.ip)
    timer("blocked pings")

    rig.neutron.post("/security-group-rules", {"security_group_rule": {
        "security_group_id": sg["id"], "direction": "ingress", "ethertype": "IPv4", "protocol": "icmp",
        "project_id": PROJECT}}, expect=201)
    assert nh.wait_for(lambda: rig.ping(a, b, tries=1), 30), "ping %s -> %s blocked after the ICMP rule" % (a.ip, b.ip)
    assert rig.ping(b, a), "ping %s -> %s blocked after the ICMP rule" % (b.ip, a.ip)
    timer("pings with the ICMP rule")


@pytest.mark.kinds("corral")
def test_corral_host_is_the_agents_host(stack, nova, hosts, rig, kind):
    """A corral host started as the stack's Neutron host reports the agents' host name
    to Nova, and Neutron binds a port to it as vif_type ovs on the stack's bridge."""
    h = hosts.start_neutron_host(kind)
    try:
        assert h.name == stack.neutron_agent_host
        assert [sv["host"] for sv in nova.services(host=h.name)] == [h.name]
        net, _subnet = rig.network()
        sg = rig.security_group("corral-nt-host")
        p = rig.port(net, sg)
        assert p["binding:host_id"] == h.name, p
        assert p["binding:vif_type"] == "ovs", p
        assert p["binding:vif_details"].get("bridge_name") == stack.br_int, p
    finally:
        hosts.teardown(h)
