//! Host network interfaces given to an instance (`nic` devices): moved into
//! the container's network namespace after the runtime creates it and before
//! its init runs, renamed there, rate limited with `tc` when the instance has
//! `quota:vif_*` limits, and moved back to the host under their own name
//! before the container stops (a virtual interface would otherwise die with
//! the namespace). What was moved is kept in `nics.json` in the instance
//! directory, so a restarted daemon still brings the interfaces home.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::devices::NicMove;
use crate::driver::Limits;

/// Errors of moving interfaces.
#[derive(Debug, thiserror::Error)]
pub enum NicError {
    #[error("NIC {name}: `{command}` failed: {reason}")]
    Command {
        name: String,
        command: String,
        reason: String,
    },
    #[error("NIC record {path}: {reason}")]
    Record { path: PathBuf, reason: String },
    #[error("NIC {name}: {reason}; left in the container (a physical interface comes home when the container's namespace ends)")]
    NotTheOne { name: String, reason: String },
}

const RECORD: &str = "nics.json";
const SYS_CLASS_NET: &str = "/sys/class/net";

/// One interface given to an instance, as kept in `nics.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NicRecord {
    pub host_name: String,
    pub inside_name: String,
    /// Its MAC address when it was last on the host: how it is found again
    /// if the kernel hands it back under another name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// What it was in the container's namespace right after the move,
    /// before the container ran: how it is told apart from an interface
    /// the tenant made and named like it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inside: Option<Identity>,
}

/// An interface as the container's namespace shows it. Its index cannot
/// be taken by another interface there while it exists, and a tenant
/// cannot make an interface without a kind (a physical one has none).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub ifindex: u32,
    /// `veth`, `dummy`, ...; None for a physical interface.
    pub kind: Option<String>,
    pub address: Option<String>,
}

/// One entry of `ip -j -d link show`.
#[derive(Debug, serde::Deserialize)]
struct Link {
    ifindex: u32,
    ifname: String,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    linkinfo: Option<LinkInfo>,
}

#[derive(Debug, serde::Deserialize)]
struct LinkInfo {
    #[serde(default)]
    info_kind: Option<String>,
}

impl Link {
    fn identity(&self) -> Identity {
        Identity {
            ifindex: self.ifindex,
            kind: self.linkinfo.as_ref().and_then(|i| i.info_kind.clone()),
            address: self.address.clone(),
        }
    }
}

/// The interfaces of the network namespace of `pid`.
fn links_in(name: &str, pid: i32) -> Result<Vec<Link>, NicError> {
    let out = output(name, Some(pid), &["ip", "-j", "-d", "link", "show"])?;
    serde_json::from_str(&out).map_err(|e| NicError::Command {
        name: name.to_string(),
        command: format!("nsenter -t {pid} -n ip -j -d link show"),
        reason: format!("unreadable output: {e}"),
    })
}

/// The interface of `nics` a detach must move: the one with the recorded
/// index and the recorded kind and address. By name only for records
/// written before identities were kept.
fn the_one<'a>(links: &'a [Link], n: &NicRecord) -> Result<&'a Link, NicError> {
    let not = |reason: String| NicError::NotTheOne {
        name: n.host_name.clone(),
        reason,
    };
    let Some(id) = &n.inside else {
        return links
            .iter()
            .find(|l| l.ifname == n.inside_name)
            .ok_or_else(|| not(format!("no interface {} in the container", n.inside_name)));
    };
    let link = links
        .iter()
        .find(|l| l.ifindex == id.ifindex)
        .ok_or_else(|| {
            not(format!(
                "no interface with index {} in the container",
                id.ifindex
            ))
        })?;
    let found = link.identity();
    if found.kind != id.kind || (id.address.is_some() && found.address != id.address) {
        return Err(not(format!(
            "the interface with index {} ({}) is not the one moved in: kind {:?} and address {:?}, expected {:?} and {:?}",
            id.ifindex, link.ifname, found.kind, found.address, id.kind, id.address
        )));
    }
    Ok(link)
}

fn record_path(instance_dir: &Path) -> PathBuf {
    instance_dir.join(RECORD)
}

fn address_of(net: &Path, ifname: &str) -> Option<String> {
    std::fs::read_to_string(net.join(ifname).join("address"))
        .ok()
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
}

/// Writes what is to be moved, before the first move, with the addresses
/// the interfaces have on the host now.
pub fn save(instance_dir: &Path, nics: &[NicMove]) -> Result<(), NicError> {
    let path = record_path(instance_dir);
    if nics.is_empty() {
        let _ = std::fs::remove_file(&path);
        return Ok(());
    }
    let fail = |reason: String| NicError::Record {
        path: path.clone(),
        reason,
    };
    let records: Vec<NicRecord> = nics
        .iter()
        .map(|n| NicRecord {
            host_name: n.host_name.clone(),
            inside_name: n.inside_name.clone(),
            address: address_of(Path::new(SYS_CLASS_NET), &n.host_name),
            inside: None,
        })
        .collect();
    let text = serde_json::to_vec(&records).map_err(|e| fail(e.to_string()))?;
    crate::fsutil::write_atomic(&path, &text, 0o600).map_err(|e| fail(e.to_string()))
}

/// The interfaces recorded for an instance (none when there is no record).
pub fn load(instance_dir: &Path) -> Result<Vec<NicRecord>, NicError> {
    let path = record_path(instance_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| NicError::Record {
            path: path.clone(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(NicError::Record {
            path,
            reason: e.to_string(),
        }),
    }
}

/// Runs `ip`/`tc` on the host (`pid` None) or in the network namespace of
/// `pid`.
fn run(name: &str, pid: Option<i32>, argv: &[&str]) -> Result<(), NicError> {
    output(name, pid, argv).map(|_| ())
}

/// Like [`run`], returning the command's stdout.
fn output(name: &str, pid: Option<i32>, argv: &[&str]) -> Result<String, NicError> {
    let mut cmd = match pid {
        Some(pid) => {
            let mut c = Command::new("nsenter");
            c.arg("-t").arg(pid.to_string()).arg("-n").arg("--");
            c.args(argv);
            c
        }
        None => {
            let mut c = Command::new(argv[0]);
            c.args(&argv[1..]);
            c
        }
    };
    let shown = match pid {
        Some(pid) => format!("nsenter -t {pid} -n {}", argv.join(" ")),
        None => argv.join(" "),
    };
    let out = cmd.output().map_err(|e| NicError::Command {
        name: name.to_string(),
        command: shown.clone(),
        reason: e.to_string(),
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NicError::Command {
            name: name.to_string(),
            command: shown,
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn host_has(ifname: &str) -> bool {
    Path::new(SYS_CLASS_NET).join(ifname).exists()
}

/// The host interface with MAC `address` under a name other than `not`.
fn renamed(net: &Path, address: &str, not: &str) -> Option<String> {
    std::fs::read_dir(net)
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .find(|name| name != not && address_of(net, name).as_deref() == Some(address))
}

/// Moves each interface into the namespace of `pid` (the container's init,
/// created but not started), names it, brings it up and applies the rate
/// limits. Returns the records with each interface's identity inside (see
/// [`Identity`]), taken before the container runs. On a failure the
/// interfaces already moved are brought back.
pub fn attach(pid: i32, nics: &[NicRecord], limits: &Limits) -> Result<Vec<NicRecord>, NicError> {
    let mut done: Vec<NicRecord> = Vec::new();
    for n in nics {
        match attach_one(pid, n, limits) {
            Ok(inside) => done.push(NicRecord {
                inside: Some(inside),
                ..n.clone()
            }),
            Err(e) => {
                // The one that failed is found by name: nothing ran yet.
                let failed = NicRecord {
                    inside: None,
                    ..n.clone()
                };
                for d in done.iter().chain(std::iter::once(&failed)).rev() {
                    if let Err(undo) = detach_one(pid, d) {
                        tracing::warn!(nic = %d.host_name, error = %undo, "cannot bring the interface back");
                    }
                }
                return Err(e);
            }
        }
    }
    Ok(done)
}

/// Records what was moved, with the identities `attach` took.
pub fn save_records(instance_dir: &Path, records: &[NicRecord]) -> Result<(), NicError> {
    let path = record_path(instance_dir);
    let fail = |reason: String| NicError::Record {
        path: path.clone(),
        reason,
    };
    let text = serde_json::to_vec(records).map_err(|e| fail(e.to_string()))?;
    crate::fsutil::write_atomic(&path, &text, 0o600).map_err(|e| fail(e.to_string()))
}

fn attach_one(pid: i32, n: &NicRecord, limits: &Limits) -> Result<Identity, NicError> {
    let name = n.inside_name.as_str();
    let pid_s = pid.to_string();
    run(
        name,
        None,
        &["ip", "link", "set", "dev", &n.host_name, "down"],
    )?;
    run(
        name,
        None,
        &["ip", "link", "set", "dev", &n.host_name, "netns", &pid_s],
    )?;
    if n.inside_name != n.host_name {
        run(
            name,
            Some(pid),
            &["ip", "link", "set", "dev", &n.host_name, "name", name],
        )?;
    }
    let identity = links_in(name, pid)?
        .iter()
        .find(|l| l.ifname == name)
        .map(Link::identity)
        .ok_or_else(|| NicError::NotTheOne {
            name: n.host_name.clone(),
            reason: format!("not found as {name} in the container after the move"),
        })?;
    run(name, Some(pid), &["ip", "link", "set", "dev", name, "up"])?;
    apply_limits(pid, name, limits)?;
    Ok(identity)
}

/// `tc` rate limits, as libvirt applies Nova's `quota:vif_*` (KB/s and KB):
/// outbound (what the instance sends: its interface's egress) by a token
/// bucket, inbound (what it receives: the ingress) by a policer.
fn apply_limits(pid: i32, ifname: &str, limits: &Limits) -> Result<(), NicError> {
    if let Some(avg) = limits.vif_outbound_average {
        let rate = format!("{avg}kbps");
        let burst = format!("{}kb", limits.vif_outbound_burst.unwrap_or(avg).max(2));
        run(
            ifname,
            Some(pid),
            &[
                "tc", "qdisc", "replace", "dev", ifname, "root", "tbf", "rate", &rate, "burst",
                &burst, "latency", "50ms",
            ],
        )?;
    }
    if let Some(avg) = limits.vif_inbound_average {
        let rate = format!("{avg}kbps");
        let burst = format!("{}kb", limits.vif_inbound_burst.unwrap_or(avg).max(2));
        run(
            ifname,
            Some(pid),
            &[
                "tc", "qdisc", "replace", "dev", ifname, "handle", "ffff:", "ingress",
            ],
        )?;
        run(
            ifname,
            Some(pid),
            &[
                "tc", "filter", "replace", "dev", ifname, "parent", "ffff:", "protocol", "all",
                "prio", "1", "u32", "match", "u32", "0", "0", "police", "rate", &rate, "burst",
                &burst, "drop", "flowid", ":1",
            ],
        )?;
    }
    Ok(())
}

/// Brings every interface of `nics` home under its host name: from the
/// namespace of `pid` while the container lives; else (a physical interface
/// the kernel handed back when the namespace died, maybe as `devN`) found by
/// its address and renamed. An interface already home is left as it is.
pub fn detach(pid: Option<i32>, nics: &[NicRecord]) -> Result<(), NicError> {
    let mut first_err = None;
    for n in nics.iter().filter(|n| !host_has(&n.host_name)) {
        let r = match (pid, &n.address) {
            (Some(pid), _) => detach_one(pid, n),
            (None, Some(address)) => match renamed(Path::new(SYS_CLASS_NET), address, &n.host_name)
            {
                Some(current) => {
                    let _ = run(
                        &current,
                        None,
                        &["ip", "link", "set", "dev", &current, "down"],
                    );
                    run(
                        &current,
                        None,
                        &["ip", "link", "set", "dev", &current, "name", &n.host_name],
                    )
                }
                None => Ok(()),
            },
            (None, None) => Ok(()),
        };
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn detach_one(pid: i32, n: &NicRecord) -> Result<(), NicError> {
    if host_has(&n.host_name) {
        return Ok(());
    }
    // Found by what the tenant cannot fake, never by the name it may have
    // given another interface.
    let links = links_in(&n.host_name, pid)?;
    let current = the_one(&links, n)?.ifname.clone();
    let name = current.as_str();
    // Rename inside first: the inside name may be taken on the host (eth0).
    let _ = run(name, Some(pid), &["ip", "link", "set", "dev", name, "down"]);
    if current != n.host_name {
        run(
            name,
            Some(pid),
            &["ip", "link", "set", "dev", name, "name", &n.host_name],
        )?;
    }
    let _ = run(
        &n.host_name,
        Some(pid),
        &["tc", "qdisc", "del", "dev", &n.host_name, "root"],
    );
    let _ = run(
        &n.host_name,
        Some(pid),
        &["tc", "qdisc", "del", "dev", &n.host_name, "ingress"],
    );
    // PID 1's namespace: the host's (nsenter enters only the network one).
    run(
        &n.host_name,
        Some(pid),
        &["ip", "link", "set", "dev", &n.host_name, "netns", "1"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip() {
        let d = tempfile::tempdir().unwrap();
        assert!(load(d.path()).unwrap().is_empty());
        let nics = vec![NicMove {
            host_name: "crl-none0".into(),
            inside_name: "eth1".into(),
        }];
        save(d.path(), &nics).unwrap();
        assert_eq!(
            load(d.path()).unwrap(),
            vec![NicRecord {
                host_name: "crl-none0".into(),
                inside_name: "eth1".into(),
                address: None,
                inside: None,
            }]
        );
        save(d.path(), &[]).unwrap();
        assert!(!d.path().join(RECORD).exists());
        std::fs::write(d.path().join(RECORD), "{").unwrap();
        assert!(load(d.path()).is_err());
    }

    #[test]
    fn the_interface_moved_in_is_told_from_one_named_like_it() {
        let links: Vec<Link> = serde_json::from_str(
            r#"[{"ifindex":1,"ifname":"lo","address":"00:00:00:00:00:00"},
                {"ifindex":7,"ifname":"real0","address":"52:54:00:00:00:07","linkinfo":{"info_kind":"veth"}},
                {"ifindex":9,"ifname":"eth1","address":"52:54:00:00:00:07","linkinfo":{"info_kind":"veth"}},
                {"ifindex":11,"ifname":"phys","address":"52:54:00:00:00:0b"}]"#,
        )
        .unwrap();
        let mut n = NicRecord {
            host_name: "crl0".into(),
            inside_name: "eth1".into(),
            address: Some("52:54:00:00:00:07".into()),
            inside: Some(Identity {
                ifindex: 7,
                kind: Some("veth".into()),
                address: Some("52:54:00:00:00:07".into()),
            }),
        };
        // Renamed by the tenant, with a look-alike under its name: the
        // recorded index wins.
        assert_eq!(the_one(&links, &n).unwrap().ifname, "real0");
        // Another kind, or address, under the recorded index: not moved.
        n.inside = Some(Identity {
            ifindex: 11,
            kind: Some("veth".into()),
            address: Some("52:54:00:00:00:0b".into()),
        });
        assert!(matches!(
            the_one(&links, &n),
            Err(NicError::NotTheOne { .. })
        ));
        n.inside = Some(Identity {
            ifindex: 7,
            kind: Some("veth".into()),
            address: Some("52:54:00:00:00:99".into()),
        });
        assert!(the_one(&links, &n).is_err());
        n.inside = Some(Identity {
            ifindex: 42,
            kind: None,
            address: None,
        });
        assert!(the_one(&links, &n).is_err());
        // A record from before identities: by name.
        n.inside = None;
        assert_eq!(the_one(&links, &n).unwrap().ifindex, 9);
    }

    #[test]
    fn an_interface_handed_back_is_found_by_its_address() {
        let net = tempfile::tempdir().unwrap();
        for (name, mac) in [("eth0", "52:54:00:00:00:01"), ("dev7", "52:54:00:00:00:02")] {
            std::fs::create_dir(net.path().join(name)).unwrap();
            std::fs::write(net.path().join(name).join("address"), format!("{mac}\n")).unwrap();
        }
        assert_eq!(
            renamed(net.path(), "52:54:00:00:00:02", "enp5s0").as_deref(),
            Some("dev7")
        );
        // The host's own eth0 is never taken for it.
        assert_eq!(renamed(net.path(), "52:54:00:00:00:09", "enp5s0"), None);
        assert_eq!(renamed(net.path(), "52:54:00:00:00:02", "dev7"), None);
    }
}
