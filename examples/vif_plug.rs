//! The compute-side cost of plugging one virtual interface: `netdev::plug`
//! and `netdev::unplug` of one port, `count` times per plug kind, into a
//! network namespace of its own (`unshare -n sleep`), on a Linux bridge and,
//! where ovsdb answers, an OVS netdev bridge (plain and hybrid) that it makes
//! and removes. Prints one JSON object: seconds per plug and unplug, by kind.
//!
//! `cargo run --release --example vif_plug -- [--count 20]` (root). Used by
//! `benches/run.py` (figure `vifplug`).

use std::process::{Command, Stdio};
use std::time::Instant;

use corral::driver::vif::to_netdev;
use corral::driver::{VifPlug, VifSpec};
use corral::netdev;

#[path = "support/mod.rs"]
mod support;

fn sh(argv: &[&str]) -> bool {
    Command::new(argv[0])
        .args(&argv[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Removes what this run made, also when it fails midway.
struct Cleanup {
    ns: std::process::Child,
    linux: String,
    ovs: Option<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.ns.kill();
        let _ = self.ns.wait();
        sh(&["ip", "link", "del", &self.linux]);
        if let Some(b) = &self.ovs {
            sh(&["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", b]);
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = support::Args::parse()?;
    let count: usize = args.get("count").unwrap_or("20").parse()?;
    let tag = format!("{:05}", std::process::id() % 100_000);
    let ns = Command::new("unshare")
        .args(["-n", "sleep", "3600"])
        .spawn()?;
    let pid = ns.id() as i32;
    let mut c = Cleanup {
        ns,
        linux: format!("vpb{tag}"),
        ovs: None,
    };
    // The namespace exists once unshare has exec'd sleep.
    let own = std::fs::read_link("/proc/self/ns/net")?;
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    while std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .ok()
        .as_ref()
        == Some(&own)
    {
        if Instant::now() > deadline {
            return Err("the namespace was not made".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    if !(sh(&["ip", "link", "add", &c.linux, "type", "bridge"])
        && sh(&["ip", "link", "set", &c.linux, "up"]))
    {
        return Err("cannot make a Linux bridge (root?)".into());
    }
    let mut kinds = vec![(
        "bridge",
        VifPlug::Bridge {
            bridge: c.linux.clone(),
        },
    )];
    let ovs = format!("vpo{tag}");
    if sh(&[
        "ovs-vsctl",
        "--timeout=5",
        "add-br",
        &ovs,
        "--",
        "set",
        "bridge",
        &ovs,
        "datapath_type=netdev",
    ]) {
        c.ovs = Some(ovs.clone());
        for (kind, hybrid) in [("ovs", false), ("hybrid", true)] {
            kinds.push((
                kind,
                VifPlug::Ovs {
                    bridge: ovs.clone(),
                    hybrid,
                    iface_id: format!("port{tag}"),
                    vm_uuid: "vm".into(),
                },
            ));
        }
    }
    let mut out = serde_json::Map::new();
    out.insert("count".into(), count.into());
    for (kind, plug) in kinds {
        // The driver's own mapping from the seam's form to the host devices.
        let vif = to_netdev(
            &VifSpec {
                id: format!("{tag}b{}", &kind[..1]),
                mac: "fa:16:3e:7f:00:01".into(),
                mtu: Some(1450),
                inside_name: None,
                plug,
            },
            "eth0".into(),
        );
        let (mut plug, mut unplug) = (Vec::new(), Vec::new());
        for _ in 0..count {
            let t = Instant::now();
            netdev::plug(&vif, pid)?;
            plug.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            netdev::unplug(&vif)?;
            unplug.push(t.elapsed().as_secs_f64());
        }
        out.insert(
            kind.into(),
            serde_json::json!({ "plug_s": plug, "unplug_s": unplug }),
        );
    }
    drop(c);
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}
