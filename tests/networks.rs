//! Standalone networks for real: bridges, dnsmasq and nftables on this host,
//! a test-made network namespace on the bridge getting its address with
//! busybox udhcpc, and NAT checked against a listener in a second test-made
//! namespace. Traffic only ever goes to addresses these tests make.

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{Client, Daemon};
use serde_json::{json, Value};

/// Why these tests cannot run here, if they cannot.
fn net_skip_reason() -> Option<String> {
    if let Some(r) = common::skip_reason() {
        return Some(r);
    }
    for tool in ["ip", "nft", "dnsmasq"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

macro_rules! require_net {
    () => {
        if let Some(reason) = net_skip_reason() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("cannot run network tests in CI: {reason}");
            }
            eprintln!("SKIPPED: {reason}");
            return;
        }
    };
}

static N: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process and call: `{prefix}{pid}{n}`.
fn unique(prefix: &str) -> String {
    let n = N.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}{}{n}", std::process::id() % 100_000)
}

/// A /24 of the test ranges for this process: `10.2xx.y.0/24`, `k` < 10.
fn test_subnet(k: u32) -> (u8, u8) {
    let pid = std::process::id();
    ((200 + pid % 50) as u8, (((pid / 50) % 25) * 10 + k) as u8)
}

fn sh(args: &[&str]) -> std::process::Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap()
}

fn must(args: &[&str]) -> String {
    let out = sh(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The pids of every dnsmasq serving `bridge`.
fn dnsmasq_pids(bridge: &str) -> Vec<i32> {
    let want = format!("--interface={bridge}");
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        if args
            .first()
            .is_some_and(|a| String::from_utf8_lossy(a).ends_with("dnsmasq"))
            && args.contains(&want.as_bytes())
        {
            pids.push(pid);
        }
    }
    pids
}

fn nft_table_exists(bridge: &str) -> bool {
    must(&["nft", "list", "tables", "ip"])
        .lines()
        .any(|l| l.trim() == format!("table ip corral-{bridge}"))
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// What a test made on the host, removed however the test ends: network
/// namespaces, links, and the bridges of its networks with their dnsmasq
/// and nftables table.
#[derive(Default)]
struct HostCleanup {
    netns: Vec<String>,
    links: Vec<String>,
    bridges: Vec<String>,
}

impl Drop for HostCleanup {
    fn drop(&mut self) {
        for ns in &self.netns {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
        for l in &self.links {
            if link_exists(l) {
                let _ = sh(&["ip", "link", "del", l]);
            }
        }
        for b in &self.bridges {
            for pid in dnsmasq_pids(b) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::SIGKILL,
                );
            }
            let _ = sh(&["nft", "delete", "table", "ip", &format!("corral-{b}")]);
            if link_exists(b) {
                let _ = sh(&["ip", "link", "del", b]);
            }
        }
    }
}

/// A namespace with one end of a veth pair whose other end is on `bridge`.
fn netns_on_bridge(clean: &mut HostCleanup, bridge: &str) -> (String, String) {
    let ns = unique("corral-tns");
    let host_end = unique("tvh");
    let inner = "veth0".to_string();
    must(&["ip", "netns", "add", &ns]);
    clean.netns.push(ns.clone());
    must(&[
        "ip", "link", "add", &host_end, "type", "veth", "peer", "name", &inner, "netns", &ns,
    ]);
    clean.links.push(host_end.clone());
    must(&["ip", "link", "set", &host_end, "master", bridge, "up"]);
    must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
    must(&["ip", "-n", &ns, "link", "set", &inner, "up"]);
    (ns, inner)
}

/// Runs busybox udhcpc in `ns` on `iface`; its script sets the leased
/// address and the default route. Returns the address.
fn udhcpc(ns: &str, iface: &str, dir: &Path) -> Ipv4Addr {
    let script = dir.join("udhcpc.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ncase \"$1\" in\n bound|renew)\n  ip addr flush dev \"$interface\"\n  ip addr add \"$ip/${mask:-24}\" dev \"$interface\"\n  [ -n \"$router\" ] && ip route replace default via \"${router%% *}\" dev \"$interface\"\n  ;;\nesac\nexit 0\n",
    )
    .unwrap();
    must(&["chmod", "0755", script.to_str().unwrap()]);
    let out = sh(&[
        "ip",
        "netns",
        "exec",
        ns,
        "busybox",
        "udhcpc",
        "-i",
        iface,
        "-n",
        "-q",
        "-t",
        "10",
        "-T",
        "1",
        "-s",
        script.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "udhcpc failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let addr = must(&["ip", "-n", ns, "-4", "-o", "addr", "show", "dev", iface]);
    let cidr = addr
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap_or_else(|| panic!("no address on {iface} in {ns}: {addr}"));
    cidr.split('/').next().unwrap().parse().unwrap()
}

/// A namespace "outside" the host, reached through a veth from the host:
/// the host end gets `host_ip/24`, the inner end `inner_ip/24`.
fn outside_netns(clean: &mut HostCleanup, host_ip: Ipv4Addr, inner_ip: Ipv4Addr) -> String {
    let ns = unique("corral-tout");
    let host_end = unique("tvo");
    must(&["ip", "netns", "add", &ns]);
    clean.netns.push(ns.clone());
    must(&[
        "ip", "link", "add", &host_end, "type", "veth", "peer", "name", "out0", "netns", &ns,
    ]);
    clean.links.push(host_end.clone());
    must(&[
        "ip",
        "addr",
        "add",
        &format!("{host_ip}/24"),
        "dev",
        &host_end,
    ]);
    must(&["ip", "link", "set", &host_end, "up"]);
    must(&[
        "ip",
        "-n",
        &ns,
        "addr",
        "add",
        &format!("{inner_ip}/24"),
        "dev",
        "out0",
    ]);
    must(&["ip", "-n", &ns, "link", "set", "out0", "up"]);
    must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
    ns
}

/// Listens on `addr` inside `ns` and returns the peer of the first
/// connection (None when none comes within the timeout).
fn listen_in(ns: &str, addr: SocketAddr) -> std::thread::JoinHandle<Option<SocketAddr>> {
    let f = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let l = TcpListener::bind(addr).unwrap();
        l.set_nonblocking(true).unwrap();
        tx.send(()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            match l.accept() {
                Ok((_, peer)) => return Some(peer),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        None
    });
    rx.recv().unwrap();
    h
}

fn call(c: &Client, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let (status, body) = common::raw_call(c, method, path, body);
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[test]
fn dhcp_and_nat_on_a_network_and_nothing_left_after_delete() {
    require_net!();
    let mut clean = HostCleanup::default();
    let d = Daemon::start();
    let br = unique("tn");
    clean.bridges.push(br.clone());
    let (a, b) = test_subnet(0);
    let subnet = format!("10.{a}.{b}.0/24");
    let out = d.ok(&["network", "create", &br, "--subnet", &subnet]);
    assert!(out.contains(&format!("10.{a}.{b}.1/24")), "{out}");

    // The bridge with the gateway, the table, one dnsmasq.
    let addrs = must(&["ip", "-4", "-o", "addr", "show", "dev", &br]);
    assert!(addrs.contains(&format!("inet 10.{a}.{b}.1/24")), "{addrs}");
    assert!(nft_table_exists(&br));
    assert_eq!(dnsmasq_pids(&br).len(), 1);
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .unwrap()
            .trim(),
        "1"
    );
    let net: Value = d.client().get(&format!("/1.0/networks/{br}")).unwrap();
    assert_eq!(net["status"], "Created", "{net}");
    assert_eq!(net["subnet"], subnet.as_str());

    // DHCP: an address of the subnet, leased in the network's lease file.
    let (ns, iface) = netns_on_bridge(&mut clean, &br);
    let ip = udhcpc(&ns, &iface, d.dir.path());
    let range: corral::network::Ipv4Cidr = subnet.parse().unwrap();
    assert!(range.contains(ip) && ip != range.gateway(), "{ip}");
    let leases =
        std::fs::read_to_string(d.state.join("networks").join(&br).join("dnsmasq.leases")).unwrap();
    assert!(leases.contains(&ip.to_string()), "{leases}");
    let route = must(&["ip", "-n", &ns, "route", "show", "default"]);
    assert!(
        route.contains(&format!("via 10.{a}.{b}.1")),
        "default route from DHCP: {route}"
    );

    // NAT: the outside namespace has no route back to the subnet, so the
    // connection only works masqueraded, and arrives from the host's address.
    let (oa, ob) = test_subnet(1);
    let host_ip = Ipv4Addr::new(10, oa, ob, 1);
    let out_ip = Ipv4Addr::new(10, oa, ob, 2);
    let out_ns = outside_netns(&mut clean, host_ip, out_ip);
    let listener = listen_in(&out_ns, SocketAddr::from((out_ip, 8123)));
    let st = Command::new("ip")
        .args(["netns", "exec", &ns, "busybox", "nc", "-w", "3"])
        .arg(out_ip.to_string())
        .arg("8123")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let peer = listener.join().unwrap();
    assert_eq!(
        peer.map(|p| p.ip()),
        Some(std::net::IpAddr::V4(host_ip)),
        "connection from the network should arrive masqueraded (nc: {st:?})"
    );

    // Deleting it leaves no bridge, table or dnsmasq (the veth end on the
    // bridge is not an instance: it goes with the bridge).
    d.ok(&["network", "delete", &br]);
    assert!(!link_exists(&br));
    assert!(!nft_table_exists(&br));
    assert!(dnsmasq_pids(&br).is_empty());
    assert!(!d.state.join("networks").join(&br).exists());
    let list: Vec<Value> = d.client().get("/1.0/networks").unwrap();
    assert!(list.is_empty(), "{list:?}");
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    require_net!();
    let mut clean = HostCleanup::default();
    let d = Daemon::start();
    d.import_busybox();
    let c = d.client();
    let br = unique("tn");
    clean.bridges.push(br.clone());
    let (a, b) = test_subnet(2);
    let subnet = format!("10.{a}.{b}.0/24");
    let (st, v) = call(
        &c,
        "POST",
        "/1.0/networks",
        Some(json!({"name": br, "subnet": subnet, "mtu": 1400, "description": "t"})),
    );
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["metadata"]["mtu"], 1400);
    let before: Vec<Value> = c.get("/1.0/networks?recursion=1").unwrap();

    // A host route the test makes: a dummy link with an address.
    let (ha, hb) = test_subnet(3);
    let dummy = unique("tdm");
    must(&["ip", "link", "add", &dummy, "type", "bridge"]);
    clean.links.push(dummy.clone());
    must(&[
        "ip",
        "addr",
        "add",
        &format!("10.{ha}.{hb}.1/24"),
        "dev",
        &dummy,
    ]);
    must(&["ip", "link", "set", &dummy, "up"]);

    let other = unique("tn");
    clean.bridges.push(other.clone());
    let (fa, fb) = test_subnet(4);
    let free = format!("10.{fa}.{fb}.0/24");
    for (body, status, words) in [
        (
            json!({"name": other, "subnet": format!("10.{a}.{b}.128/25")}),
            409,
            "overlaps network",
        ),
        (
            json!({"name": other, "subnet": format!("10.{ha}.{hb}.0/25")}),
            409,
            "overlaps the host's route",
        ),
        (json!({"name": br, "subnet": free}), 409, "already exists"),
        (
            json!({"name": dummy, "subnet": free}),
            409,
            "host interface",
        ),
        (
            json!({"name": "Bad_Name", "subnet": free}),
            400,
            "invalid network name",
        ),
        (json!({"name": "none", "subnet": free}), 400, "reserved"),
        (
            json!({"name": "abcdefghijklmnop", "subnet": free}),
            400,
            "invalid network name",
        ),
        (
            json!({"name": other, "subnet": "10.1.2.3/24"}),
            400,
            "host bits",
        ),
        (
            json!({"name": other, "subnet": "10.1.2.0/33"}),
            400,
            "invalid subnet",
        ),
        (
            json!({"name": other, "subnet": "banana"}),
            400,
            "invalid subnet",
        ),
        (
            json!({"name": other, "subnet": "10.1.2.0/31"}),
            400,
            "too small",
        ),
        (
            json!({"name": other, "subnet": free, "mtu": 100}),
            400,
            "mtu",
        ),
        (
            json!({"name": other, "subnet": free, "bogus": 1}),
            400,
            "unknown field",
        ),
    ] {
        let (st, v) = call(&c, "POST", "/1.0/networks", Some(body.clone()));
        assert_eq!(st, status, "{body}: {v}");
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(msg.contains(words), "{body}: {msg}");
        let now: Vec<Value> = c.get("/1.0/networks?recursion=1").unwrap();
        assert_eq!(now.len(), before.len(), "{body} changed the networks");
    }
    assert!(!link_exists(&other), "a refused network left its bridge");
    assert!(!nft_table_exists(&other));

    // The CLI says why, and fails.
    let err = d.fails(&["network", "create", &other, "--subnet", &subnet]);
    assert!(err.contains("overlaps network"), "{err}");
    let err = d.fails(&["network", "delete", "nope"]);
    assert!(err.contains("network nope not found"), "{err}");
    let (st, _) = call(&c, "GET", "/1.0/networks/nope", None);
    assert_eq!(st, 404);

    // Launching on a network that does not exist, or none mixed with one.
    let (st, v) = call(
        &c,
        "POST",
        "/1.0/instances",
        Some(
            json!({"name": "n1", "source": {"alias": "busybox"}, "networks": ["nope"], "start": false}),
        ),
    );
    assert_eq!(st, 404, "{v}");
    let err = d.fails(&[
        "init",
        "busybox",
        "n1",
        "--network",
        "none",
        "--network",
        &br,
    ]);
    assert!(err.contains("cannot be combined"), "{err}");
    let list: Vec<Value> = c.get("/1.0/instances").unwrap();
    assert!(list.is_empty(), "{list:?}");

    // An instance on the network: it has eth0 there; the network cannot go.
    d.ok(&["init", "busybox", "n1", "--network", &br]);
    let inst = d.instance("n1");
    let nics = inst["nics"].as_array().unwrap();
    assert_eq!(nics.len(), 1, "{inst}");
    assert_eq!(nics[0]["name"], "eth0");
    assert_eq!(nics[0]["network"], br.as_str());
    assert_eq!(nics[0]["mtu"], 1400);
    assert!(nics[0]["mac"].as_str().unwrap().starts_with("00:16:3e:"));
    let (st, v) = call(&c, "DELETE", &format!("/1.0/networks/{br}"), None);
    assert_eq!(st, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("n1"), "{v}");
    assert!(link_exists(&br) && nft_table_exists(&br));
    let net: Value = c.get(&format!("/1.0/networks/{br}")).unwrap();
    assert_eq!(net["used_by"], json!(["/1.0/instances/n1"]));

    // No network: loopback only.
    d.ok(&["init", "busybox", "n2", "--network", "none"]);
    assert_eq!(d.instance("n2")["nics"], json!([]));
    // A daemon without a default network launches without one too.
    d.ok(&["init", "busybox", "n3"]);
    assert_eq!(d.instance("n3")["nics"], json!([]));

    d.ok(&["delete", "n1"]);
    d.ok(&["network", "delete", &br]);
    assert!(!link_exists(&br));
}

#[test]
fn restart_restores_networks_and_replaces_a_stale_dnsmasq() {
    require_net!();
    let mut clean = HostCleanup::default();
    let mut d = Daemon::start();
    let kept = unique("tn");
    let wiped = unique("tn");
    clean.bridges.push(kept.clone());
    clean.bridges.push(wiped.clone());
    let (a, b) = test_subnet(5);
    let (a2, b2) = test_subnet(6);
    d.ok(&[
        "network",
        "create",
        &kept,
        "--subnet",
        &format!("10.{a}.{b}.0/24"),
    ]);
    d.ok(&[
        "network",
        "create",
        &wiped,
        "--subnet",
        &format!("10.{a2}.{b2}.0/24"),
        "--no-nat",
    ]);
    let old = dnsmasq_pids(&kept);
    assert_eq!(old.len(), 1);

    // A crash, then what a reboot takes: one network's bridge, table and
    // dnsmasq; the other's dnsmasq is left running from the dead daemon.
    d.crash();
    for pid in dnsmasq_pids(&wiped) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    }
    must(&["ip", "link", "del", &wiped]);
    must(&["nft", "delete", "table", "ip", &format!("corral-{wiped}")]);
    d.spawn();

    for br in [&kept, &wiped] {
        assert!(link_exists(br), "{br} not restored:\n{}", d.log());
        assert!(nft_table_exists(br), "{br}'s table not restored");
        assert!(
            common::wait_until(Duration::from_secs(5), || dnsmasq_pids(br).len() == 1),
            "{br}: dnsmasq {:?}\n{}\ndnsmasq log: {}",
            dnsmasq_pids(br),
            d.log(),
            std::fs::read_to_string(d.state.join("networks").join(br).join("dnsmasq.log"))
                .unwrap_or_default()
        );
        let net: Value = d.client().get(&format!("/1.0/networks/{br}")).unwrap();
        assert_eq!(net["status"], "Created", "{net}");
    }
    assert_ne!(dnsmasq_pids(&kept), old, "the stale dnsmasq was kept");
    assert!(
        !dnsmasq_pids(&kept).contains(&old[0]),
        "the stale dnsmasq runs on"
    );
    let addrs = must(&["ip", "-4", "-o", "addr", "show", "dev", &wiped]);
    assert!(
        addrs.contains(&format!("inet 10.{a2}.{b2}.1/24")),
        "{addrs}"
    );
    let rules = must(&["nft", "list", "table", "ip", &format!("corral-{wiped}")]);
    assert!(!rules.contains("masquerade"), "nat = false: {rules}");

    d.ok(&["network", "delete", &kept]);
    d.ok(&["network", "delete", &wiped]);
    for br in [&kept, &wiped] {
        assert!(!link_exists(br) && !nft_table_exists(br) && dnsmasq_pids(br).is_empty());
    }
}

#[test]
fn the_default_network_is_made_at_start_and_used_by_launches() {
    require_net!();
    let mut clean = HostCleanup::default();
    let br = unique("tdef");
    clean.bridges.push(br.clone());
    let (a, b) = test_subnet(7);
    let mut d = Daemon::start_with(&format!(
        "default_network = {br}\ndefault_network_subnet = 10.{a}.{b}.0/24\n"
    ));
    d.import_busybox();
    let net: Value = d.client().get(&format!("/1.0/networks/{br}")).unwrap();
    assert_eq!(net["subnet"], format!("10.{a}.{b}.0/24"));
    assert_eq!(net["nat"], true);
    assert_eq!(net["status"], "Created", "{net}");
    d.ok(&["init", "busybox", "d1"]);
    let nics = d.instance("d1")["nics"].clone();
    assert_eq!(nics[0]["network"], br.as_str(), "{nics}");
    assert_eq!(nics[0]["name"], "eth0");
    d.ok(&["delete", "d1"]);

    // Deleted by the operator, made again at the next start.
    d.ok(&["network", "delete", &br]);
    assert!(!link_exists(&br));
    d.stop();
    d.spawn();
    assert!(link_exists(&br), "{}", d.log());
    d.ok(&["network", "delete", &br]);
}

/// The leased IPv4 address of an instance's eth0, once it has one.
fn wait_ipv4(d: &Daemon, name: &str) -> Ipv4Addr {
    let mut last = Value::Null;
    let ok = common::wait_until(Duration::from_secs(30), || {
        last = d.instance(name);
        last["nics"][0]["ipv4"].is_string()
    });
    assert!(
        ok,
        "{name} got no address: {last}\nconsole: {}",
        d.ok(&["console-log", name])
    );
    last["nics"][0]["ipv4"].as_str().unwrap().parse().unwrap()
}

#[test]
fn launched_containers_get_addresses_reach_each_other_and_the_outside_by_nat() {
    require_net!();
    let mut clean = HostCleanup::default();
    let br = unique("tdef");
    clean.bridges.push(br.clone());
    let (a, b) = test_subnet(8);
    let mut d = Daemon::start_with(&format!(
        "default_network = {br}\ndefault_network_subnet = 10.{a}.{b}.0/24\n"
    ));
    d.import_busybox();
    d.ok(&["launch", "busybox", "e1"]);
    d.ok(&["launch", "busybox", "e2"]);
    let ip1 = wait_ipv4(&d, "e1");
    let ip2 = wait_ipv4(&d, "e2");
    let range: corral::network::Ipv4Cidr = format!("10.{a}.{b}.0/24").parse().unwrap();
    assert!(range.contains(ip1) && range.contains(ip2) && ip1 != ip2);
    // Inside, eth0 has it, and the default route is the bridge.
    let inside = d.exec("e1", "ip -4 -o addr show dev eth0; ip route show default");
    assert!(inside.contains(&format!("inet {ip1}/24")), "{inside}");
    assert!(inside.contains(&format!("via 10.{a}.{b}.1")), "{inside}");
    // corral list shows the addresses.
    let list = d.ok(&["list"]);
    assert!(
        list.contains(&format!("{ip1} (eth0)")) && list.contains(&format!("{ip2} (eth0)")),
        "{list}"
    );

    // They reach each other.
    d.exec("e1", &format!("ping -c 2 -W 2 {ip2}"));
    d.exec("e2", &format!("ping -c 2 -W 2 {ip1}"));

    // And the outside, masqueraded behind the host's address.
    let (oa, ob) = test_subnet(9);
    let host_ip = Ipv4Addr::new(10, oa, ob, 1);
    let out_ip = Ipv4Addr::new(10, oa, ob, 2);
    let out_ns = outside_netns(&mut clean, host_ip, out_ip);
    let listener = listen_in(&out_ns, SocketAddr::from((out_ip, 8124)));
    let out = d.cli(&[
        "exec",
        "e2",
        "--",
        "sh",
        "-c",
        &format!("echo hi | nc -w 3 {out_ip} 8124"),
    ]);
    let peer = listener.join().unwrap();
    assert_eq!(
        peer.map(|p| p.ip()),
        Some(std::net::IpAddr::V4(host_ip)),
        "from a container, masqueraded: {out:?}"
    );

    // A daemon restart replaces dnsmasq, keeps the leases and the ports:
    // the containers still reach each other and show their addresses.
    let old = dnsmasq_pids(&br);
    d.stop();
    d.spawn();
    assert_eq!(dnsmasq_pids(&br).len(), 1);
    assert_ne!(dnsmasq_pids(&br), old);
    d.exec("e1", &format!("ping -c 1 -W 2 {ip2}"));
    assert_eq!(wait_ipv4(&d, "e1"), ip1);

    // Deleting them and the network leaves nothing: no ports (the hosts
    // ends of their interfaces), bridge, table or dnsmasq.
    let ports: Vec<String> = must(&["ip", "-o", "link", "show", "master", &br])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect();
    assert_eq!(ports.len(), 2, "{ports:?}");
    d.ok(&["delete", "--force", "e1"]);
    d.ok(&["delete", "--force", "e2"]);
    d.ok(&["network", "delete", &br]);
    assert!(!link_exists(&br));
    assert!(!nft_table_exists(&br));
    assert!(dnsmasq_pids(&br).is_empty());
    for p in ports {
        assert!(!link_exists(&p), "{p} is left");
    }
}
