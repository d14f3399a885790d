//! The host side of a network, done with the host's own tools: `ip` for the
//! bridge and the routes, `nft` for NAT, `dnsmasq` for DHCP and DNS. Every
//! call names exactly the objects of one network, so nothing else on the
//! host (other bridges, tables, dnsmasq instances) is ever touched.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::cidr::Ipv4Cidr;
use super::NetworkError;

/// Runs a host tool; its stderr becomes the error.
async fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, NetworkError> {
    use tokio::io::AsyncWriteExt;
    let what = format!("{program} {}", args.join(" "));
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| NetworkError::Command {
        what: what.clone(),
        detail: format!("cannot run {program}: {e}"),
    })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .map_err(|e| NetworkError::Command {
                what: what.clone(),
                detail: format!("cannot write to {program}: {e}"),
            })?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| NetworkError::Command {
            what: what.clone(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(NetworkError::Command {
            what,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether a network interface of that name exists.
pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Whether the interface is a Linux bridge.
pub fn is_bridge(name: &str) -> bool {
    Path::new("/sys/class/net")
        .join(name)
        .join("bridge")
        .is_dir()
}

/// Makes the bridge (if missing) with its gateway address and MTU, and sets it up.
pub async fn ensure_bridge(
    name: &str,
    subnet: &Ipv4Cidr,
    mtu: Option<u32>,
) -> Result<(), NetworkError> {
    if !link_exists(name) {
        run("ip", &["link", "add", name, "type", "bridge"], None).await?;
    } else if !is_bridge(name) {
        return Err(NetworkError::Conflict(format!(
            "host interface {name} exists and is not a bridge"
        )));
    }
    if let Some(m) = mtu {
        run("ip", &["link", "set", name, "mtu", &m.to_string()], None).await?;
    }
    let gw = format!("{}/{}", subnet.gateway(), subnet.prefix());
    run("ip", &["-4", "addr", "replace", &gw, "dev", name], None).await?;
    run("ip", &["link", "set", name, "up"], None).await?;
    Ok(())
}

/// Removes the bridge if it is there.
pub async fn delete_bridge(name: &str) -> Result<(), NetworkError> {
    if link_exists(name) {
        run("ip", &["link", "del", name], None).await?;
    }
    Ok(())
}

/// One IPv4 route or local address of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoute {
    pub dst: Ipv4Cidr,
    pub dev: String,
}

/// The host's IPv4 routes in every table (local addresses included), but the
/// default routes and those of the devices in `skip`.
pub async fn host_routes(skip: &[&str]) -> Result<Vec<HostRoute>, NetworkError> {
    let out = run("ip", &["-j", "-4", "route", "show", "table", "all"], None).await?;
    let routes: Vec<serde_json::Value> =
        serde_json::from_str(&out).map_err(|e| NetworkError::Command {
            what: "ip -j -4 route show table all".into(),
            detail: format!("unreadable output: {e}"),
        })?;
    Ok(parse_routes(&routes, skip))
}

fn parse_routes(routes: &[serde_json::Value], skip: &[&str]) -> Vec<HostRoute> {
    let mut out = Vec::new();
    for r in routes {
        let dst = r["dst"].as_str().unwrap_or("default");
        let dev = r["dev"].as_str().unwrap_or("").to_string();
        if dst == "default" || skip.contains(&dev.as_str()) {
            continue;
        }
        // Multicast and broadcast entries say nothing of where a subnet lives.
        if matches!(r["type"].as_str(), Some("broadcast" | "multicast")) {
            continue;
        }
        let (addr, prefix) = match dst.split_once('/') {
            Some((a, p)) => (a, p.parse::<u8>().ok()),
            None => (dst, Some(32)),
        };
        if let (Ok(a), Some(p)) = (addr.parse::<Ipv4Addr>(), prefix) {
            if p <= 32 {
                out.push(HostRoute {
                    dst: Ipv4Cidr::containing(a, p),
                    dev,
                });
            }
        }
    }
    out
}

/// The nftables table of a network.
pub fn nft_table(name: &str) -> String {
    format!("corral-{name}")
}

/// The ruleset of a network's table: DHCP and DNS from the bridge accepted,
/// forwarding to and from the bridge accepted, and with NAT the subnet's
/// traffic leaving by any other interface masqueraded.
pub fn nft_ruleset(name: &str, subnet: &Ipv4Cidr, nat: bool) -> String {
    let table = nft_table(name);
    let masquerade = if nat {
        format!("\t\tip saddr {subnet} oifname != \"{name}\" masquerade\n")
    } else {
        String::new()
    };
    format!(
        "add table ip {table}\n\
         flush table ip {table}\n\
         table ip {table} {{\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\tiifname \"{name}\" udp dport {{ 53, 67 }} accept\n\
         \t\tiifname \"{name}\" tcp dport 53 accept\n\
         \t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tiifname \"{name}\" accept\n\
         \t\toifname \"{name}\" accept\n\
         \t}}\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         {masquerade}\
         \t}}\n\
         }}\n"
    )
}

/// Replaces the network's table in one transaction (made when missing).
pub async fn apply_nft(name: &str, subnet: &Ipv4Cidr, nat: bool) -> Result<(), NetworkError> {
    run("nft", &["-f", "-"], Some(&nft_ruleset(name, subnet, nat))).await?;
    Ok(())
}

/// Removes the network's table if it is there.
pub async fn delete_nft(name: &str) -> Result<(), NetworkError> {
    let table = nft_table(name);
    if nft_table_exists(name).await? {
        run("nft", &["delete", "table", "ip", &table], None).await?;
    }
    Ok(())
}

/// Whether the network's table is loaded.
pub async fn nft_table_exists(name: &str) -> Result<bool, NetworkError> {
    let out = run("nft", &["list", "tables", "ip"], None).await?;
    let want = format!("table ip {}", nft_table(name));
    Ok(out.lines().any(|l| l.trim() == want))
}

/// Turns on IPv4 forwarding (never turned off again: other things on the
/// host may rely on it).
pub fn enable_forwarding() -> Result<(), NetworkError> {
    let path = Path::new("/proc/sys/net/ipv4/ip_forward");
    if std::fs::read_to_string(path)
        .map(|v| v.trim() == "1")
        .unwrap_or(false)
    {
        return Ok(());
    }
    std::fs::write(path, "1").map_err(|source| NetworkError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The files of a network's dnsmasq, all under the network's directory.
#[derive(Debug, Clone)]
pub struct DnsmasqFiles {
    pub pid: PathBuf,
    pub leases: PathBuf,
    pub hosts: PathBuf,
    pub log: PathBuf,
}

impl DnsmasqFiles {
    pub fn in_dir(dir: &Path) -> DnsmasqFiles {
        DnsmasqFiles {
            pid: dir.join("dnsmasq.pid"),
            leases: dir.join("dnsmasq.leases"),
            hosts: dir.join("dnsmasq.hosts"),
            log: dir.join("dnsmasq.log"),
        }
    }
}

/// dnsmasq's arguments for a network.
pub fn dnsmasq_args(
    name: &str,
    subnet: &Ipv4Cidr,
    mtu: Option<u32>,
    files: &DnsmasqFiles,
) -> Vec<String> {
    let (start, end) = subnet.dhcp_range();
    let mut args = vec![
        // Nothing from /etc/dnsmasq.conf or /etc/dnsmasq.d.
        "--conf-file=/dev/null".to_string(),
        format!("--pid-file={}", files.pid.display()),
        format!("--dhcp-leasefile={}", files.leases.display()),
        format!("--dhcp-hostsfile={}", files.hosts.display()),
        "--strict-order".into(),
        // Only the bridge's address: other dnsmasq instances and resolvers
        // on the host keep theirs.
        "--bind-interfaces".into(),
        "--except-interface=lo".into(),
        format!("--interface={name}"),
        format!("--listen-address={}", subnet.gateway()),
        format!("--dhcp-range={start},{end},{},1h", subnet.netmask()),
        "--dhcp-no-override".into(),
        "--dhcp-authoritative".into(),
        "--no-ping".into(),
        "--no-hosts".into(),
        format!("--log-facility={}", files.log.display()),
    ];
    if let Some(m) = mtu {
        args.push(format!("--dhcp-option=option:mtu,{m}"));
    }
    args
}

/// The pid of the network's dnsmasq when it runs: the pid file names it
/// and the process is a dnsmasq started with this very pid file.
pub fn dnsmasq_pid(files: &DnsmasqFiles) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(&files.pid)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if pid <= 1 {
        return None;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let mut parts = cmdline.split(|b| *b == 0);
    let prog = parts.next()?;
    if !String::from_utf8_lossy(prog).ends_with("dnsmasq") {
        return None;
    }
    let want = format!("--pid-file={}", files.pid.display());
    cmdline
        .split(|b| *b == 0)
        .any(|a| a == want.as_bytes())
        .then_some(pid)
}

/// Whether `pid` has exited: gone, or a zombie. A process on its way out
/// has an empty command line before it closes its sockets, so only its
/// state says when its ports are free again.
fn process_gone(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    // `pid (comm) S ...`: the state follows the last parenthesis.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_none_or(|state| matches!(state, "Z" | "X" | "x"))
}

/// Stops the network's dnsmasq if it runs (SIGTERM, then SIGKILL).
pub async fn stop_dnsmasq(files: &DnsmasqFiles) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let Some(pid) = dnsmasq_pid(files) else {
        let _ = std::fs::remove_file(&files.pid);
        return;
    };
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    for i in 0..150 {
        if process_gone(pid) {
            break;
        }
        if i == 50 {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = std::fs::remove_file(&files.pid);
}

/// Starts the network's dnsmasq, replacing the one a previous daemon left.
/// dnsmasq puts itself in the background once it has bound its sockets,
/// so the instance outlives a daemon restart as containers do.
pub async fn start_dnsmasq(
    name: &str,
    subnet: &Ipv4Cidr,
    mtu: Option<u32>,
    files: &DnsmasqFiles,
) -> Result<i32, NetworkError> {
    stop_dnsmasq(files).await;
    if !files.hosts.exists() {
        std::fs::write(&files.hosts, "").map_err(|source| NetworkError::Io {
            path: files.hosts.clone(),
            source,
        })?;
    }
    let args = dnsmasq_args(name, subnet, mtu, files);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    // A dnsmasq of this network that was just stopped may hold its ports a
    // moment longer: try again a few times before giving up.
    let mut tries = 0;
    loop {
        match run("dnsmasq", &argv, None).await {
            Ok(_) => break,
            Err(e) if tries < 5 => {
                tracing::debug!(network = name, error = %e, "dnsmasq did not start; trying again");
                tries += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
    for _ in 0..100 {
        if let Some(pid) = dnsmasq_pid(files) {
            return Ok(pid);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(NetworkError::Command {
        what: format!("dnsmasq for {name}"),
        detail: format!(
            "it did not write its pid file {}; see {}",
            files.pid.display(),
            files.log.display()
        ),
    })
}

/// The address dnsmasq leased to `mac`, from its lease file
/// (`expiry mac ip hostname client-id` a line).
pub fn lease_of(leases: &Path, mac: &str) -> Option<Ipv4Addr> {
    let text = std::fs::read_to_string(leases).ok()?;
    parse_lease(&text, mac)
}

fn parse_lease(text: &str, mac: &str) -> Option<Ipv4Addr> {
    text.lines().rev().find_map(|l| {
        let mut f = l.split_whitespace();
        let _expiry = f.next()?;
        let m = f.next()?;
        let ip = f.next()?;
        if m.eq_ignore_ascii_case(mac) {
            ip.parse().ok()
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_from_ip_json() {
        let v: Vec<serde_json::Value> = serde_json::from_str(
            r#"[{"dst":"default","gateway":"192.0.2.1","dev":"eth0"},
                {"dst":"192.0.2.0/24","dev":"eth0","protocol":"kernel"},
                {"type":"local","dst":"192.0.2.2","dev":"eth0","table":"local"},
                {"type":"broadcast","dst":"192.0.2.255","dev":"eth0","table":"local"},
                {"dst":"10.9.0.0/16","dev":"br9"}]"#,
        )
        .unwrap();
        let r = parse_routes(&v, &["br9"]);
        let dsts: Vec<String> = r.iter().map(|r| r.dst.to_string()).collect();
        assert_eq!(dsts, vec!["192.0.2.0/24", "192.0.2.2/32"]);
    }

    #[test]
    fn leases_by_mac() {
        let text = "1700000000 00:16:3e:aa:bb:cc 10.148.0.23 c1 01:00:16:3e:aa:bb:cc\n\
                    1700000001 00:16:3e:aa:bb:dd 10.148.0.24 * *\n";
        assert_eq!(
            parse_lease(text, "00:16:3E:AA:BB:CC"),
            Some(Ipv4Addr::new(10, 148, 0, 23))
        );
        assert_eq!(parse_lease(text, "00:16:3e:00:00:00"), None);
    }

    #[test]
    fn ruleset_names_only_its_own_table() {
        let s: Ipv4Cidr = "10.210.0.0/24".parse().unwrap();
        let r = nft_ruleset("tbr1", &s, true);
        assert!(r.starts_with("add table ip corral-tbr1\nflush table ip corral-tbr1\n"));
        assert!(r.contains("ip saddr 10.210.0.0/24 oifname != \"tbr1\" masquerade"));
        assert!(!nft_ruleset("tbr1", &s, false).contains("masquerade"));
        let files = DnsmasqFiles::in_dir(Path::new("/s/networks/tbr1"));
        let a = dnsmasq_args("tbr1", &s, Some(1400), &files);
        assert_eq!(a[0], "--conf-file=/dev/null");
        for want in [
            "--bind-interfaces",
            "--dhcp-authoritative",
            "--interface=tbr1",
            "--listen-address=10.210.0.1",
            "--dhcp-range=10.210.0.2,10.210.0.254,255.255.255.0,1h",
            "--pid-file=/s/networks/tbr1/dnsmasq.pid",
            "--dhcp-option=option:mtu,1400",
        ] {
            assert!(a.iter().any(|x| x == want), "{want} in {a:?}");
        }
    }
}
