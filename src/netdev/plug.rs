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

/// Runs `ip` in the network namespace of `pid`.
fn ip_in(dev: &str, pid: i32, args: &[&str]) -> Result<(), NetdevError> {
    let pid_s = pid.to_string();
    let mut argv = vec!["nsenter", "-t", &pid_s, "-n", "--", "ip"];
    argv.extend_from_slice(args);
    run(dev, &argv).map(|_| ())
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
    let pid_s = pid.to_string();
    let outer_mac = host_mac(&vif.mac);
    let mtu = vif.mtu.map(|m| m.to_string());
    let mut add = vec!["ip", "link", "add", tap.as_str()];
    if let Some(m) = &mtu {
        add.extend(["mtu", m.as_str()]);
    }
    add.extend([
        "address",
        outer_mac.as_str(),
        "type",
        "veth",
        "peer",
        "name",
        vif.inside.as_str(),
    ]);
    if let Some(m) = &mtu {
        add.extend(["mtu", m.as_str()]);
    }
    add.extend(["address", vif.mac.as_str(), "netns", pid_s.as_str()]);
    run(&tap, &add)?;
    ip_in(&vif.inside, pid, &["link", "set", "dev", "lo", "up"])?;
    ip_in(
        &vif.inside,
        pid,
        &["link", "set", "dev", vif.inside.as_str(), "up"],
    )?;
    match &vif.switch {
        Switch::Bridge { bridge } => {
            run(
                &tap,
                &["ip", "link", "set", "dev", &tap, "master", bridge, "up"],
            )?;
        }
        Switch::Ovs {
            bridge,
            iface_id,
            vm_uuid,
        } => {
            ovs_add_port(bridge, &tap, iface_id, &vif.mac, vm_uuid, vif.mtu)?;
            run(&tap, &["ip", "link", "set", "dev", &tap, "up"])?;
        }
        Switch::Hybrid {
            bridge,
            iface_id,
            vm_uuid,
        } => {
            let (qbr, qvb, qvo) = (qbr_name(&vif.id), qvb_name(&vif.id), qvo_name(&vif.id));
            // os-vif's ensure_bridge: no forward delay, no STP, no
            // multicast snooping, no IPv6 on the bridge itself.
            run(
                &qbr,
                &[
                    "ip",
                    "link",
                    "add",
                    &qbr,
                    "type",
                    "bridge",
                    "forward_delay",
                    "0",
                    "stp_state",
                    "0",
                    "mcast_snooping",
                    "0",
                ],
            )?;
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{qbr}/disable_ipv6"), "1");
            run(&qbr, &["ip", "link", "set", "dev", &qbr, "up"])?;
            let mut pair = vec!["ip", "link", "add", qvb.as_str()];
            if let Some(m) = &mtu {
                pair.extend(["mtu", m.as_str()]);
            }
            pair.extend(["type", "veth", "peer", "name", qvo.as_str()]);
            if let Some(m) = &mtu {
                pair.extend(["mtu", m.as_str()]);
            }
            run(&qvb, &pair)?;
            run(
                &qvb,
                &["ip", "link", "set", "dev", &qvb, "master", &qbr, "up"],
            )?;
            run(&qvo, &["ip", "link", "set", "dev", &qvo, "up"])?;
            ovs_add_port(bridge, &qvo, iface_id, &vif.mac, vm_uuid, vif.mtu)?;
            run(
                &tap,
                &["ip", "link", "set", "dev", &tap, "master", &qbr, "up"],
            )?;
        }
        Switch::Tap => {
            run(&tap, &["ip", "link", "set", "dev", &tap, "up"])?;
        }
    }
    Ok(())
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
    for dev in vif.host_devices() {
        if !host_has(&dev) {
            continue;
        }
        if let Err(e) = run(&dev, &["ip", "link", "del", "dev", &dev]) {
            // Gone meanwhile (a veth's peer taken with it): fine.
            if host_has(&dev) {
                first.get_or_insert(e);
            }
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
