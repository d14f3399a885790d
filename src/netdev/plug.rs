//! Plugging and unplugging: `ip` on the host and (by `nsenter`) in the
//! instance's network namespace, `ovs-vsctl` for Open vSwitch ports.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use super::{host_mac, qbr_name, qvb_name, qvo_name, NetdevError, Switch, Vif};

const SYS_CLASS_NET: &str = "/sys/class/net";
/// How long `ovs-vsctl` waits for ovsdb-server before it gives up.
const OVS_TIMEOUT: &str = "--timeout=30";

/// Whether the host's network namespace has an interface `name`.
pub fn host_has(name: &str) -> bool {
    Path::new(SYS_CLASS_NET).join(name).exists()
}

/// The interface names of the network namespace of process `pid`.
pub fn links_in(pid: i32) -> Result<BTreeSet<String>, NetdevError> {
    let path = format!("/proc/{pid}/net/dev");
    let text = std::fs::read_to_string(&path).map_err(|e| NetdevError::Command {
        dev: format!("namespace of {pid}"),
        command: format!("read {path}"),
        reason: e.to_string(),
    })?;
    Ok(text
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim().to_string()))
        .filter(|n| !n.is_empty())
        .collect())
}

/// Runs a command; its stdout, or the failure with its stderr.
fn run(dev: &str, argv: &[&str]) -> Result<String, NetdevError> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map_err(|e| NetdevError::Command {
            dev: dev.to_string(),
            command: argv.join(" "),
            reason: e.to_string(),
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetdevError::Command {
            dev: dev.to_string(),
            command: argv.join(" "),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Runs `ip -batch` with `lines` on the host (`pid` None) or in the
/// network namespace of `pid`: one process for many changes. `force` goes on
/// past a failed line.
fn ip_batch(dev: &str, pid: Option<i32>, lines: &[String], force: bool) -> Result<(), NetdevError> {
    use std::io::Write;
    let pid_s = pid.map(|p| p.to_string());
    let mut argv: Vec<&str> = Vec::new();
    if let Some(p) = &pid_s {
        argv.extend(["nsenter", "-t", p, "-n", "--"]);
    }
    argv.push("ip");
    if force {
        argv.push("-force");
    }
    argv.extend(["-batch", "-"]);
    let shown = format!("{} <<< {}", argv.join(" "), lines.join("; "));
    let fail = |reason: String| NetdevError::Command {
        dev: dev.to_string(),
        command: shown.clone(),
        reason,
    };
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    let mut text = lines.join("\n");
    text.push('\n');
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Checks that the bridge a plug needs is there: a Linux bridge, or an
/// Open vSwitch bridge known to ovsdb.
pub fn bridge_exists(switch: &Switch) -> Result<(), NetdevError> {
    match switch {
        Switch::Bridge { bridge } => {
            if Path::new(SYS_CLASS_NET)
                .join(bridge)
                .join("bridge")
                .is_dir()
            {
                Ok(())
            } else {
                Err(NetdevError::NoBridge {
                    kind: "Linux",
                    name: bridge.clone(),
                })
            }
        }
        Switch::Ovs { bridge, .. } | Switch::Hybrid { bridge, .. } => {
            let argv = ["ovs-vsctl", OVS_TIMEOUT, "br-exists", bridge.as_str()];
            let out = Command::new(argv[0])
                .args(&argv[1..])
                .output()
                .map_err(|e| NetdevError::Command {
                    dev: bridge.clone(),
                    command: argv.join(" "),
                    reason: e.to_string(),
                })?;
            match out.status.code() {
                Some(0) => Ok(()),
                Some(2) => Err(NetdevError::NoBridge {
                    kind: "Open vSwitch",
                    name: bridge.clone(),
                }),
                _ => Err(NetdevError::Command {
                    dev: bridge.clone(),
                    command: argv.join(" "),
                    reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                }),
            }
        }
        Switch::Tap => Ok(()),
    }
}

/// Checks that none of the host devices a plug of `vif` makes exists (they
/// would be another's, or a stray to remove first).
pub fn ensure_free(vif: &Vif) -> Result<(), NetdevError> {
    match vif.host_devices().into_iter().find(|d| host_has(d)) {
        Some(d) => Err(NetdevError::Exists(d)),
        None => Ok(()),
    }
}

/// Plugs `vif`: the veth pair with its inside end made directly in the
/// network namespace of `pid` (named, addressed, sized and up there, `lo`
/// up too), the host end plugged as its switch says. On a failure what
/// this plug made is removed again.
pub fn plug(vif: &Vif, pid: i32) -> Result<(), NetdevError> {
    vif.validate()?;
    ensure_free(vif)?;
    let r = plug_steps(vif, pid);
    if let Err(e) = &r {
        if let Err(undo) = unplug(vif) {
            tracing::warn!(vif = %vif.id, error = %e, undo = %undo, "a failed plug left devices behind");
        }
    }
    r
}

fn plug_steps(vif: &Vif, pid: i32) -> Result<(), NetdevError> {
    let tap = vif.tap();
    let mtu = vif.mtu.map(|m| format!(" mtu {m}")).unwrap_or_default();
    // The pair, its inside end made in the namespace: the host never sees
    // it. Then the host side in the same `ip` process.
    let mut host = vec![format!(
        "link add {tap}{mtu} address {} type veth peer name {}{mtu} address {} netns {pid}",
        host_mac(&vif.mac),
        vif.inside,
        vif.mac
    )];
    let mut qbr = None;
    match &vif.switch {
        Switch::Bridge { bridge } => host.push(format!("link set dev {tap} master {bridge} up")),
        Switch::Ovs { .. } | Switch::Tap => host.push(format!("link set dev {tap} up")),
        Switch::Hybrid { .. } => {
            let (br, qvb, qvo) = (qbr_name(&vif.id), qvb_name(&vif.id), qvo_name(&vif.id));
            // os-vif's ensure_bridge: no forward delay, no STP, no
            // multicast snooping (and no IPv6, below).
            host.extend([
                format!("link add {br} type bridge forward_delay 0 stp_state 0 mcast_snooping 0"),
                format!("link set dev {br} up"),
                format!("link add {qvb}{mtu} type veth peer name {qvo}{mtu}"),
                format!("link set dev {qvb} master {br} up"),
                format!("link set dev {qvo} up"),
                format!("link set dev {tap} master {br} up"),
            ]);
            qbr = Some(br);
        }
    }
    ip_batch(&tap, None, &host, false)?;
    if let Some(br) = qbr {
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{br}/disable_ipv6"), "1");
    }
    ip_batch(
        &vif.inside,
        Some(pid),
        &[
            "link set dev lo up".to_string(),
            format!("link set dev {} up", vif.inside),
        ],
        false,
    )?;
    match &vif.switch {
        Switch::Ovs {
            bridge,
            iface_id,
            vm_uuid,
        } => ovs_add_port(bridge, &tap, iface_id, &vif.mac, vm_uuid, vif.mtu),
        Switch::Hybrid {
            bridge,
            iface_id,
            vm_uuid,
        } => ovs_add_port(
            bridge,
            &qvo_name(&vif.id),
            iface_id,
            &vif.mac,
            vm_uuid,
            vif.mtu,
        ),
        Switch::Bridge { .. } | Switch::Tap => Ok(()),
    }
}

/// os-vif's `create_ovs_vif_port`: one transaction adding the port (or
/// finding it there) and setting the `external_ids` the agents look for.
fn ovs_add_port(
    bridge: &str,
    port: &str,
    iface_id: &str,
    mac: &str,
    vm_uuid: &str,
    mtu: Option<u32>,
) -> Result<(), NetdevError> {
    let ids = [
        format!("external_ids:iface-id={iface_id}"),
        "external_ids:iface-status=active".to_string(),
        format!("external_ids:attached-mac=\"{mac}\""),
        format!("external_ids:vm-uuid={vm_uuid}"),
    ];
    let mut argv = vec![
        "ovs-vsctl",
        OVS_TIMEOUT,
        "--",
        "--may-exist",
        "add-port",
        bridge,
        port,
        "--",
        "set",
        "Interface",
        port,
    ];
    argv.extend(ids.iter().map(String::as_str));
    let mtu_request = mtu.map(|m| format!("mtu_request={m}"));
    if let Some(m) = &mtu_request {
        argv.push(m);
    }
    run(port, &argv).map(|_| ())
}

/// Removes what a plug of `vif` made on the host: its OVS port, then its
/// devices (the inside end dies with the tap). What is already gone is not
/// an error; the first failure is returned after every step was tried.
pub fn unplug(vif: &Vif) -> Result<(), NetdevError> {
    let mut first = None;
    if let Some((bridge, port)) = vif.ovs_port() {
        if let Err(e) = run(
            &port,
            &[
                "ovs-vsctl",
                OVS_TIMEOUT,
                "--",
                "--if-exists",
                "del-port",
                bridge,
                &port,
            ],
        ) {
            first.get_or_insert(e);
        }
    }
    let there: Vec<String> = vif
        .host_devices()
        .into_iter()
        .filter(|d| host_has(d))
        .collect();
    if !there.is_empty() {
        let lines: Vec<String> = there.iter().map(|d| format!("link del dev {d}")).collect();
        // A line for a device gone meanwhile (a veth's peer taken with its
        // other end) fails: what counts is what is still there after.
        let r = ip_batch(&vif.tap(), None, &lines, true);
        if let Some(left) = there.iter().find(|d| host_has(d)) {
            first.get_or_insert(match r {
                Err(e) => e,
                Ok(()) => NetdevError::Command {
                    dev: left.clone(),
                    command: "ip link del".into(),
                    reason: "still there".into(),
                },
            });
        }
    }
    match first {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Unplugs every interface of `vifs`; the first failure after all were tried.
pub fn unplug_all(vifs: &[Vif]) -> Result<(), NetdevError> {
    let mut first = None;
    for v in vifs {
        if let Err(e) = unplug(v) {
            tracing::warn!(vif = %v.id, error = %e, "interface not fully unplugged");
            first.get_or_insert(e);
        }
    }
    match first {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
