//! Virtual interfaces with real devices: the container driver (in this
//! process, over real runc and the busybox test image) plugs veth pairs into
//! a Linux bridge, an Open vSwitch netdev bridge and os-vif's hybrid
//! `qbr`/`qvb`/`qvo` plug that the test makes; containers ping each other
//! over them (only addresses inside those bridges); stop/start, reboot,
//! a restart of the driver, live attach/detach, refusals, a failing gate
//! and a SIGKILL at each `plug.` crash point (in a child process) leave
//! nothing behind.
//!
//! The REST API does not take interfaces yet, so the driver is built here
//! the way the daemon builds it (same config file, same reconcile at start).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use corral::config::{Config, Overrides};
use corral::driver::{ContainerDriver, Driver, DriverError, InstanceSpec, VifPlug, VifSpec};
use corral::netdev;
use corral::runtime::cgroups;
use corral::runtime::Runtime;
use corral::storage::Storage;
use corral::store::Store;

/// The child's role: `<point> <state dir> <config> <op> <uuid>`.
const CHILD_ENV: &str = "CORRAL_VIF_CRASH_CHILD";

/// A short random tag for this test's device names.
fn tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..6].to_string()
}

fn sh(argv: &[&str]) -> std::process::Output {
    Command::new(argv[0]).args(&argv[1..]).output().unwrap()
}

fn must(argv: &[&str]) -> String {
    let out = sh(argv);
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn on_host(dev: &str) -> bool {
    Path::new("/sys/class/net").join(dev).exists()
}

/// Why OVS tests cannot run here, if they cannot.
fn ovs_skip_reason() -> Option<String> {
    match Command::new("ovs-vsctl")
        .args(["--timeout=5", "show"])
        .output()
    {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "ovs-vsctl cannot reach ovsdb-server (run scripts/services.sh): {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("ovs-vsctl is not installed: {e}")),
    }
}

/// A device the test made, removed on drop (even when the test fails).
enum Made {
    Link(String),
    Ovs(String),
}

impl Drop for Made {
    fn drop(&mut self) {
        match self {
            Made::Link(n) => {
                let _ = sh(&["ip", "link", "del", n]);
            }
            Made::Ovs(n) => {
                let _ = sh(&["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", n]);
            }
        }
    }
}

fn linux_bridge(name: &str) -> Made {
    must(&["ip", "link", "add", name, "type", "bridge"]);
    let made = Made::Link(name.into());
    must(&["ip", "link", "set", name, "up"]);
    made
}

fn ovs_bridge(name: &str) -> Made {
    must(&[
        "ovs-vsctl",
        "--timeout=10",
        "add-br",
        name,
        "--",
        "set",
        "bridge",
        name,
        "datapath_type=netdev",
    ]);
    let made = Made::Ovs(name.into());
    must(&["ip", "link", "set", name, "up"]);
    made
}

/// The driver over the state directory of a real daemon (`common::Daemon`,
/// stopped while the driver is in use), built as the daemon builds it.
struct Host {
    driver: Option<Arc<ContainerDriver>>,
    daemon: common::Daemon,
    dir: PathBuf,
    config: PathBuf,
    runtime_root: PathBuf,
}

async fn build_driver(state: &Path, config: &Path) -> Arc<ContainerDriver> {
    let cfg = Config::load(
        &[config.to_path_buf()],
        &Overrides {
            state_dir: Some(state.to_path_buf()),
            socket: None,
        },
    )
    .unwrap();
    let cfg = Arc::new(cfg);
    std::fs::create_dir_all(&cfg.state_path).unwrap();
    std::fs::create_dir_all(&cfg.corral.runtime_root).unwrap();
    let cgroup_root = PathBuf::from(cgroups::DEFAULT_ROOT);
    let runtime = Runtime::select(
        cfg.corral.oci_runtime,
        &cfg.corral.runtime_root,
        &cgroup_root,
    )
    .unwrap();
    let storage = Storage::select(
        cfg.corral.storage,
        cfg.corral.idmapped_roots,
        &cfg.state_path,
        &cfg.state_path.join(".idmap-probe"),
    )
    .unwrap();
    let store = Store::open(&cfg.store_path()).await.unwrap();
    let driver = ContainerDriver::new(cfg, runtime, storage, store, cgroup_root).unwrap();
    driver.reconcile().await.unwrap();
    Arc::new(driver)
}

impl Host {
    async fn new() -> Host {
        let daemon = common::Daemon::start();
        daemon.import_busybox();
        let mut daemon = daemon;
        daemon.stop();
        let driver = build_driver(&daemon.state, &daemon.config).await;
        Host {
            driver: Some(driver),
            dir: daemon.dir.path().to_path_buf(),
            config: daemon.config.clone(),
            runtime_root: daemon.runtime_root.clone(),
            daemon,
        }
    }

    /// Runs the real daemon on the state (its start-up reconciles), hands
    /// it to `f`, stops it and takes the state back.
    async fn with_daemon(&mut self, f: impl FnOnce(&common::Daemon)) {
        self.driver = None;
        self.daemon.spawn();
        f(&self.daemon);
        self.daemon.stop();
        self.driver = Some(build_driver(&self.daemon.state, &self.config).await);
    }

    fn d(&self) -> &ContainerDriver {
        self.driver.as_ref().unwrap()
    }

    /// A new driver on the same state, as a daemon restart makes it.
    async fn restart(&mut self) {
        self.driver = None;
        self.driver = Some(build_driver(&self.dir.join("state"), &self.config).await);
    }

    fn spec(&self, name: &str, vifs: Vec<VifSpec>) -> InstanceSpec {
        InstanceSpec {
            vifs,
            ..common::spec(&uuid::Uuid::new_v4().to_string(), name, "busybox")
        }
    }

    async fn exec(&self, uuid: &str, cmd: &str) -> corral::runtime::ExecOutput {
        self.d()
            .exec(
                uuid,
                &["sh".into(), "-c".into(), cmd.into()],
                &[],
                None,
                Duration::from_secs(20),
            )
            .await
            .unwrap()
    }

    async fn ok(&self, uuid: &str, cmd: &str) -> String {
        let out = self.exec(uuid, cmd).await;
        assert_eq!(
            out.exit_code, 0,
            "{cmd} in {uuid}: {} {}",
            out.stdout, out.stderr
        );
        out.stdout
    }

    /// Gives the instance's `eth` an address (a new namespace has none).
    async fn address(&self, uuid: &str, eth: &str, cidr: &str) {
        self.ok(uuid, &format!("ip addr add {cidr} dev {eth}"))
            .await;
    }

    async fn pings(&self, uuid: &str, ip: &str) -> bool {
        // The first packets may go while a bridge port is still learning.
        for _ in 0..5 {
            if self
                .exec(uuid, &format!("ping -c 1 -W 2 {ip}"))
                .await
                .exit_code
                == 0
            {
                return true;
            }
        }
        false
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Devices of instances a failed test left (the daemon helper removes
        // their containers and mounts).
        let state = self.daemon.state.join("instances");
        if let Ok(rd) = std::fs::read_dir(&state) {
            for e in rd.flatten() {
                if let Ok(list) = netdev::load(&e.path()) {
                    let _ = netdev::unplug_all(&list);
                }
            }
        }
    }
}

fn vif(id: &str, mac: &str, plug: VifPlug) -> VifSpec {
    VifSpec {
        id: id.into(),
        mac: mac.into(),
        mtu: Some(1400),
        inside_name: None,
        plug,
    }
}

fn ovs_plug(bridge: &str, hybrid: bool, id: &str, vm: &str) -> VifPlug {
    VifPlug::Ovs {
        bridge: bridge.into(),
        hybrid,
        iface_id: id.into(),
        vm_uuid: vm.into(),
    }
}

/// The master of a host device (its bridge), if any.
fn master_of(dev: &str) -> Option<String> {
    std::fs::read_link(Path::new("/sys/class/net").join(dev).join("master"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
}

fn ovs_ports(bridge: &str) -> BTreeSet<String> {
    must(&["ovs-vsctl", "--timeout=10", "list-ports", bridge])
        .lines()
        .map(str::to_string)
        .collect()
}

/// Every host device a plug of `id` could make that is still there.
fn devices_left(id: &str) -> Vec<String> {
    ["tap", "qbr", "qvb", "qvo"]
        .iter()
        .map(|p| format!("{p}{}", netdev::short_id(id)))
        .filter(|d| on_host(d))
        .collect()
}

async fn check_inside(h: &Host, uuid: &str, eth: &str, mac: &str) {
    let link = h.ok(uuid, &format!("ip -o link show {eth}")).await;
    assert!(link.contains(mac), "{link}");
    assert!(link.contains("mtu 1400"), "{link}");
    assert!(link.contains("UP"), "{link}");
    let lo = h.ok(uuid, "ip -o link show lo").await;
    assert!(lo.contains("UP"), "{lo}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linux_bridge_life_cycle() {
    require_host!();
    let t = tag();
    let br = format!("vbr{t}");
    let _br = linux_bridge(&br);
    let mut h = Host::new().await;
    let (ida, idb) = (format!("{t}a-0"), format!("{t}b-0"));
    let (maca, macb) = ("fa:16:3e:10:00:01", "fa:16:3e:10:00:02");
    let plug = || VifPlug::Bridge { bridge: br.clone() };
    let a = h.spec(&format!("a{t}"), vec![vif(&ida, maca, plug())]);
    let b = h.spec(&format!("b{t}"), vec![vif(&idb, macb, plug())]);
    h.d().spawn(&a, true, None).await.unwrap();
    h.d().spawn(&b, true, None).await.unwrap();
    let (tapa, tapb) = (netdev::tap_name(&ida), netdev::tap_name(&idb));
    assert_eq!(master_of(&tapa).as_deref(), Some(br.as_str()));
    assert_eq!(master_of(&tapb).as_deref(), Some(br.as_str()));
    let host_link = must(&["ip", "-o", "link", "show", &tapa]);
    assert!(
        host_link.contains("mtu 1400") && host_link.contains("UP"),
        "{host_link}"
    );
    check_inside(&h, &a.uuid, "eth0", maca).await;
    check_inside(&h, &b.uuid, "eth0", macb).await;
    h.address(&a.uuid, "eth0", "10.231.7.1/24").await;
    h.address(&b.uuid, "eth0", "10.231.7.2/24").await;
    assert!(h.pings(&a.uuid, "10.231.7.2").await);
    assert!(h.pings(&b.uuid, "10.231.7.1").await);

    // A restart of the daemon keeps a running instance's interfaces: the
    // real binary's start-up, then the driver's again.
    let name_a = a.name.clone();
    h.with_daemon(|d| {
        let link = d.exec(&name_a, "ip -o link show eth0; ip -o addr show eth0");
        assert!(
            link.contains(maca) && link.contains("10.231.7.1/24"),
            "{link}"
        );
    })
    .await;
    h.restart().await;
    assert!(on_host(&tapa));
    assert!(h.pings(&a.uuid, "10.231.7.2").await);

    // Stop and start: a new namespace, plugged again.
    h.d()
        .power_off(&a.uuid, Duration::from_secs(0), true)
        .await
        .unwrap();
    assert!(!on_host(&tapa), "stopped instance kept its tap");
    assert!(!h
        .dir
        .join("state/instances")
        .join(&a.uuid)
        .join(netdev::RECORD)
        .exists());
    h.d().power_on(&a.uuid).await.unwrap();
    check_inside(&h, &a.uuid, "eth0", maca).await;
    h.address(&a.uuid, "eth0", "10.231.7.1/24").await;
    assert!(h.pings(&a.uuid, "10.231.7.2").await);
    // Reboot.
    h.d()
        .reboot(&b.uuid, true, Duration::from_secs(0))
        .await
        .unwrap();
    check_inside(&h, &b.uuid, "eth0", macb).await;
    h.address(&b.uuid, "eth0", "10.231.7.2/24").await;
    assert!(h.pings(&b.uuid, "10.231.7.1").await);

    // Live attach: the next free ethN; detach takes it away.
    let idc = format!("{t}a-1");
    let macc = "fa:16:3e:10:00:03";
    h.d()
        .attach_interface(&a.uuid, &vif(&idc, macc, plug()))
        .await
        .unwrap();
    check_inside(&h, &a.uuid, "eth1", macc).await;
    assert_eq!(
        master_of(&netdev::tap_name(&idc)).as_deref(),
        Some(br.as_str())
    );
    h.address(&a.uuid, "eth1", "10.231.8.1/24").await;
    h.address(&b.uuid, "eth0", "10.231.8.2/24").await;
    assert!(h.pings(&a.uuid, "10.231.8.2").await);
    let view = h.d().get(&a.uuid).await.unwrap();
    assert_eq!(view.spec.vifs.len(), 2);
    h.d().detach_interface(&a.uuid, &idc).await.unwrap();
    assert!(devices_left(&idc).is_empty());
    assert_ne!(h.exec(&a.uuid, "ip link show eth1").await.exit_code, 0);
    assert_eq!(h.d().get(&a.uuid).await.unwrap().spec.vifs.len(), 1);

    // Attach to a stopped instance: only the spec; plugged at its start.
    h.d()
        .power_off(&b.uuid, Duration::from_secs(0), true)
        .await
        .unwrap();
    let idd = format!("{t}b-1");
    let macd = "fa:16:3e:10:00:04";
    let mut named = vif(&idd, macd, plug());
    named.inside_name = Some("data0".into());
    h.d().attach_interface(&b.uuid, &named).await.unwrap();
    assert!(!on_host(&netdev::tap_name(&idd)));
    h.d().power_on(&b.uuid).await.unwrap();
    check_inside(&h, &b.uuid, "data0", macd).await;
    check_inside(&h, &b.uuid, "eth0", macb).await;

    // Delete: one by the driver, one by the real daemon.
    h.d().destroy(&a.uuid).await.unwrap();
    assert!(h.d().leftovers(&a.uuid).is_empty());
    let name_b = b.name.clone();
    h.with_daemon(|d| {
        d.ok(&["delete", "--force", &name_b]);
    })
    .await;
    assert!(h.d().leftovers(&b.uuid).is_empty());
    for id in [&ida, &idb, &idc, &idd] {
        assert!(devices_left(id).is_empty(), "{id}: {:?}", devices_left(id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ovs_and_hybrid_plugs() {
    require_host!();
    if let Some(reason) = ovs_skip_reason() {
        eprintln!("SKIPPED: {reason}");
        return;
    }
    let t = tag();
    let br = format!("vov{t}");
    let _br = ovs_bridge(&br);
    let h = Host::new().await;
    let (ida, idb) = (format!("{t}o-0"), format!("{t}h-0"));
    let (maca, macb) = ("fa:16:3e:20:00:01", "fa:16:3e:20:00:02");
    let a = h.spec(&format!("o{t}"), Vec::new());
    let b = h.spec(&format!("h{t}"), Vec::new());
    let a = InstanceSpec {
        vifs: vec![vif(&ida, maca, ovs_plug(&br, false, &ida, &a.uuid))],
        ..a
    };
    let b = InstanceSpec {
        vifs: vec![vif(&idb, macb, ovs_plug(&br, true, &idb, &b.uuid))],
        ..b
    };
    h.d().spawn(&a, true, None).await.unwrap();
    h.d().spawn(&b, true, None).await.unwrap();
    let tapa = netdev::tap_name(&ida);
    let (tapb, qbr, qvb, qvo) = (
        netdev::tap_name(&idb),
        netdev::qbr_name(&idb),
        netdev::qvb_name(&idb),
        netdev::qvo_name(&idb),
    );
    assert_eq!(ovs_ports(&br), BTreeSet::from([tapa.clone(), qvo.clone()]));
    for (port, id, mac, vm) in [(&tapa, &ida, maca, &a.uuid), (&qvo, &idb, macb, &b.uuid)] {
        // One key at a time: ovsdb quotes a value only where it must, and
        // prints a map's keys in its own order.
        for (key, want) in [
            ("iface-id", id.to_string()),
            ("iface-status", "active".to_string()),
            ("attached-mac", mac.to_string()),
            ("vm-uuid", vm.to_string()),
        ] {
            let got = must(&[
                "ovs-vsctl",
                "--timeout=10",
                "get",
                "Interface",
                port,
                &format!("external_ids:{key}"),
            ]);
            assert_eq!(
                got.trim().trim_matches('"'),
                want,
                "{port}: external_ids:{key}"
            );
        }
    }
    assert_eq!(master_of(&tapb).as_deref(), Some(qbr.as_str()));
    assert_eq!(master_of(&qvb).as_deref(), Some(qbr.as_str()));
    check_inside(&h, &a.uuid, "eth0", maca).await;
    check_inside(&h, &b.uuid, "eth0", macb).await;
    h.address(&a.uuid, "eth0", "10.232.7.1/24").await;
    h.address(&b.uuid, "eth0", "10.232.7.2/24").await;
    assert!(h.pings(&a.uuid, "10.232.7.2").await);

    // Stop: the OVS port, qbr and qvb/qvo go too; start plugs them again.
    h.d()
        .power_off(&b.uuid, Duration::from_secs(0), true)
        .await
        .unwrap();
    assert!(devices_left(&idb).is_empty(), "{:?}", devices_left(&idb));
    assert_eq!(ovs_ports(&br), BTreeSet::from([tapa.clone()]));
    h.d().power_on(&b.uuid).await.unwrap();
    h.address(&b.uuid, "eth0", "10.232.7.2/24").await;
    assert!(h.pings(&b.uuid, "10.232.7.1").await);
    h.d()
        .reboot(&a.uuid, true, Duration::from_secs(0))
        .await
        .unwrap();
    h.address(&a.uuid, "eth0", "10.232.7.1/24").await;
    assert!(h.pings(&a.uuid, "10.232.7.2").await);

    // Live attach of a hybrid port onto the running OVS instance.
    let idc = format!("{t}o-1");
    h.d()
        .attach_interface(
            &a.uuid,
            &vif(
                &idc,
                "fa:16:3e:20:00:03",
                ovs_plug(&br, true, &idc, &a.uuid),
            ),
        )
        .await
        .unwrap();
    check_inside(&h, &a.uuid, "eth1", "fa:16:3e:20:00:03").await;
    assert!(ovs_ports(&br).contains(&netdev::qvo_name(&idc)));
    h.d().detach_interface(&a.uuid, &idc).await.unwrap();
    assert!(devices_left(&idc).is_empty());
    assert!(!ovs_ports(&br).contains(&netdev::qvo_name(&idc)));

    for s in [&a, &b] {
        h.d().destroy(&s.uuid).await.unwrap();
    }
    assert!(ovs_ports(&br).is_empty(), "{:?}", ovs_ports(&br));
    for id in [&ida, &idb, &idc] {
        assert!(devices_left(id).is_empty(), "{id}: {:?}", devices_left(id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_the_gate() {
    require_host!();
    let t = tag();
    let br = format!("vbr{t}");
    let _br = linux_bridge(&br);
    let h = Host::new().await;
    let plug = || VifPlug::Bridge { bridge: br.clone() };
    let id = format!("{t}g-0");
    let mac = "fa:16:3e:30:00:01";

    // The gate runs after the plug and before the init: the tap is there,
    // the container only created. Its error rolls everything back.
    let s = h.spec(&format!("g{t}"), vec![vif(&id, mac, plug())]);
    let (tap, uuid, root) = (
        netdev::tap_name(&id),
        s.uuid.clone(),
        h.runtime_root.clone(),
    );
    let gate: corral::driver::StartGate = Box::pin(async move {
        assert!(on_host(&tap), "gate awaited before the plug");
        let st = must(&["runc", "--root", root.to_str().unwrap(), "state", &uuid]);
        assert!(
            st.contains("\"created\""),
            "init started before the gate: {st}"
        );
        Err(DriverError::Conflict(
            "network-vif-plugged timed out".into(),
        ))
    });
    let err = h.d().spawn(&s, true, Some(gate)).await.unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(devices_left(&id).is_empty());
    assert!(h.d().leftovers(&s.uuid).is_empty());
    assert!(matches!(
        h.d().get(&s.uuid).await,
        Err(DriverError::NotFound(_))
    ));

    // A gate that passes: it runs once, the instance starts.
    let s = h.spec(&format!("g{t}"), vec![vif(&id, mac, plug())]);
    let gate: corral::driver::StartGate = Box::pin(async { Ok(()) });
    h.d().spawn(&s, true, Some(gate)).await.unwrap();
    check_inside(&h, &s.uuid, "eth0", mac).await;

    // A missing bridge at spawn: refused, nothing left.
    let bad = h.spec(
        &format!("x{t}"),
        vec![vif(
            &format!("{t}x-0"),
            mac,
            VifPlug::Bridge {
                bridge: format!("nobr{t}"),
            },
        )],
    );
    let err = h.d().spawn(&bad, true, None).await.unwrap_err();
    assert!(matches!(err, DriverError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(devices_left(&format!("{t}x-0")).is_empty());
    // Bad values: refused by check before anything is made.
    for v in [
        VifSpec {
            mtu: Some(67),
            ..vif("m", mac, plug())
        },
        vif("m", "fa:16:3e:00:00", plug()),
        vif("bad/id", mac, plug()),
    ] {
        let spec = h.spec(&format!("y{t}"), vec![v]);
        assert!(matches!(h.d().check(&spec), Err(DriverError::Invalid(_))));
        assert!(h.d().spawn(&spec, true, None).await.is_err());
    }

    // attach/detach refusals leave the instance as it was.
    let before = h.d().get(&s.uuid).await.unwrap().spec;
    let dup = h
        .d()
        .attach_interface(&s.uuid, &vif(&id, mac, plug()))
        .await;
    assert!(matches!(dup, Err(DriverError::Conflict(_))), "{dup:?}");
    let badmac = h
        .d()
        .attach_interface(
            &s.uuid,
            &vif(&format!("{t}g-1"), "zz:16:3e:30:00:02", plug()),
        )
        .await;
    assert!(matches!(badmac, Err(DriverError::Invalid(_))), "{badmac:?}");
    let nobr = h
        .d()
        .attach_interface(
            &s.uuid,
            &vif(
                &format!("{t}g-1"),
                "fa:16:3e:30:00:02",
                VifPlug::Bridge {
                    bridge: format!("nobr{t}"),
                },
            ),
        )
        .await;
    assert!(matches!(nobr, Err(DriverError::Invalid(_))), "{nobr:?}");
    let unknown = h.d().detach_interface(&s.uuid, "no-such-port").await;
    assert!(
        matches!(unknown, Err(DriverError::Invalid(_))),
        "{unknown:?}"
    );
    assert_eq!(h.d().get(&s.uuid).await.unwrap().spec, before);
    assert!(devices_left(&format!("{t}g-1")).is_empty());
    assert_ne!(h.exec(&s.uuid, "ip link show eth1").await.exit_code, 0);

    // A bare tap, live, with the kernel's MTU: up on the host, in no bridge.
    let idt = format!("{t}t-0");
    let tap_vif = VifSpec {
        mtu: None,
        ..vif(&idt, "fa:16:3e:30:00:09", VifPlug::Tap)
    };
    h.d().attach_interface(&s.uuid, &tap_vif).await.unwrap();
    let tapt = netdev::tap_name(&idt);
    let host_link = must(&["ip", "-o", "link", "show", &tapt]);
    assert!(
        host_link.contains("UP") && host_link.contains("mtu 1500"),
        "{host_link}"
    );
    assert_eq!(master_of(&tapt), None);
    let inside = h.ok(&s.uuid, "ip -o link show eth1").await;
    assert!(inside.contains("fa:16:3e:30:00:09"), "{inside}");

    h.d().destroy(&s.uuid).await.unwrap();
    assert!(devices_left(&id).is_empty());
    assert!(devices_left(&idt).is_empty());
}

/// In the child: the driver on the parent's state, the crash point armed,
/// the operation run until the point kills the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of a_crash_while_plugging_leaves_no_stray_device"]
async fn crash_child() {
    let Ok(args) = std::env::var(CHILD_ENV) else {
        eprintln!("not started by a_crash_while_plugging_leaves_no_stray_device: nothing to do");
        return;
    };
    let a: Vec<&str> = args.split(' ').collect();
    let (state, config, op, spec_path) = (a[0], a[1], a[2], a[3]);
    corral::crashpoint::arm_from_env().unwrap();
    let d = build_driver(Path::new(state), Path::new(config)).await;
    let spec: InstanceSpec = serde_json::from_slice(&std::fs::read(spec_path).unwrap()).unwrap();
    let r = match op {
        "spawn" => d.spawn(&spec, true, None).await,
        _ => d.power_on(&spec.uuid).await,
    };
    panic!("the crash point was not reached: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_plugging_leaves_no_stray_device() {
    require_host!();
    let t = tag();
    let br = format!("vbr{t}");
    let _br = linux_bridge(&br);
    let ovs = ovs_skip_reason().is_none();
    let obr = format!("vov{t}");
    let _obr = ovs.then(|| ovs_bridge(&obr));
    if !ovs {
        eprintln!("OVS not reachable: the crash is checked with Linux bridge ports only");
    }
    let mut h = Host::new().await;
    let points = ["plug.after_record", "plug.after_first", "plug.before_gate"];
    for (n, point) in points.iter().enumerate() {
        for op in ["spawn", "power_on"] {
            let id0 = format!("{t}{n}{}-0", &op[..1]);
            let id1 = format!("{t}{n}{}-1", &op[..1]);
            let mut spec = h.spec(&format!("c{t}{n}"), Vec::new());
            let second = if ovs {
                ovs_plug(&obr, true, &id1, &spec.uuid)
            } else {
                VifPlug::Bridge { bridge: br.clone() }
            };
            spec.vifs = vec![
                vif(
                    &id0,
                    "fa:16:3e:40:00:01",
                    VifPlug::Bridge { bridge: br.clone() },
                ),
                vif(&id1, "fa:16:3e:40:00:02", second),
            ];
            if op == "power_on" {
                h.d().spawn(&spec, false, None).await.unwrap();
            }
            let spec_path = h.dir.join("crash-spec.json");
            std::fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
            // The child owns the state while it runs.
            h.driver = None;
            let out = Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "crash_child", "--ignored", "--nocapture"])
                .env(
                    CHILD_ENV,
                    format!(
                        "{} {} {op} {}",
                        h.dir.join("state").display(),
                        h.config.display(),
                        spec_path.display()
                    ),
                )
                .env(corral::crashpoint::ENV_VAR, point)
                .output()
                .unwrap();
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                out.status.signal(),
                Some(libc::SIGKILL),
                "{op} at {point}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // The real daemon's start-up after the crash: no stray device,
            // a consistent instance.
            h.with_daemon(|_| {}).await;
            for id in [&id0, &id1] {
                assert!(
                    devices_left(id).is_empty(),
                    "{op} at {point}: {id}: {:?}",
                    devices_left(id)
                );
            }
            if ovs {
                assert!(
                    ovs_ports(&obr).is_empty(),
                    "{op} at {point}: {:?}",
                    ovs_ports(&obr)
                );
            }
            match op {
                "spawn" => {
                    // The create is rolled back.
                    assert!(matches!(
                        h.d().get(&spec.uuid).await,
                        Err(DriverError::NotFound(_))
                    ));
                    assert!(h.d().leftovers(&spec.uuid).is_empty());
                }
                _ => {
                    // Stopped, and it starts with its interfaces.
                    let v = h.d().get(&spec.uuid).await.unwrap();
                    assert_eq!(v.info.status, "Stopped", "{op} at {point}");
                    h.d().power_on(&spec.uuid).await.unwrap();
                    check_inside(&h, &spec.uuid, "eth0", "fa:16:3e:40:00:01").await;
                    check_inside(&h, &spec.uuid, "eth1", "fa:16:3e:40:00:02").await;
                    h.d().destroy(&spec.uuid).await.unwrap();
                    for id in [&id0, &id1] {
                        assert!(devices_left(id).is_empty());
                    }
                }
            }
        }
    }
}
