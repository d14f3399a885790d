//! Tests of `usb` and `nic` devices, parsing, inventory and setup against
//! fake sysfs, devfs, procfs and CDI trees, with the fake host they share;
//! the `gpu` tests (DRM, NVIDIA and CDI) are in `gpu`.

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::*;

mod gpu;
use gpu::{gpu_host, gpu_on};

struct Fake {
    _dir: tempfile::TempDir,
    host: HostPaths,
}

fn write(p: &Path, text: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn fake() -> Fake {
    let dir = tempfile::tempdir().unwrap();
    let host = HostPaths {
        sys: dir.path().join("sys"),
        dev: dir.path().join("dev"),
        proc: dir.path().join("proc"),
        cdi_dirs: vec![dir.path().join("etc-cdi"), dir.path().join("run-cdi")],
    };
    for d in [&host.sys, &host.dev, &host.proc] {
        std::fs::create_dir_all(d).unwrap();
    }
    Fake { _dir: dir, host }
}

impl Fake {
    fn usb(&self, busid: &str, vendor: &str, product: &str, bus: u32, dev: u32, num: &str) {
        let d = self.host.sys.join("bus/usb/devices").join(busid);
        write(&d.join("idVendor"), &format!("{vendor}\n"));
        write(&d.join("idProduct"), &format!("{product}\n"));
        write(&d.join("busnum"), &format!("{bus}\n"));
        write(&d.join("devnum"), &format!("{dev}\n"));
        write(&d.join("dev"), &format!("{num}\n"));
    }

    fn usb_interface(&self, busid: &str) {
        let d = self.host.sys.join("bus/usb/devices").join(busid);
        write(&d.join("bInterfaceNumber"), "00\n");
    }

    fn pci(&self, addr: &str, vendor: &str, device: &str, class: &str, drm: &[(&str, &str)]) {
        let d = self.host.sys.join("bus/pci/devices").join(addr);
        write(&d.join("vendor"), &format!("{vendor}\n"));
        write(&d.join("device"), &format!("{device}\n"));
        write(&d.join("class"), &format!("{class}\n"));
        for (name, num) in drm {
            write(&d.join("drm").join(name).join("dev"), &format!("{num}\n"));
        }
    }

    /// The NVIDIA driver's view of a GPU, with `/dev/nvidiaN` a link to
    /// `node` (a real character device, for its numbers).
    fn nvidia(&self, addr: &str, minor: u32, uuid: &str, node: &str) {
        write(
            &self
                .host
                .proc
                .join("driver/nvidia/gpus")
                .join(addr)
                .join("information"),
            &format!(
                "Model: \t\t NVIDIA H100\nIRQ:   \t\t 42\nGPU UUID: \t {uuid}\nVideo BIOS: \t 96.00.30.00.01\nBus Type: \t PCIe\nDevice Minor: \t {minor}\nBus Location: \t {addr}\n"
            ),
        );
        if !node.is_empty() {
            self.link(&format!("nvidia{minor}"), node);
        }
    }

    fn link(&self, rel: &str, to: &str) {
        let p = self.host.dev.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(to, p).unwrap();
    }

    fn nic(&self, name: &str) {
        std::fs::create_dir_all(self.host.sys.join("class/net").join(name)).unwrap();
    }

    fn cdi(&self, dir: usize, file: &str, text: &str) {
        write(&self.host.cdi_dirs[dir].join(file), text);
    }
}

fn allow(p: &[&str]) -> Allowlist {
    Allowlist::parse(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
}

fn none() -> BTreeSet<String> {
    BTreeSet::new()
}

fn taken(t: &[&str]) -> BTreeSet<String> {
    t.iter().map(|s| s.to_string()).collect()
}

fn char_dev(major: u64, minor: u64) -> DevNum {
    DevNum {
        block: false,
        major,
        minor,
    }
}

/// `(target, major, minor, mode)` of each node.
fn nodes_of(r: &Resolved) -> Vec<(String, u64, u64, u32)> {
    match r {
        Resolved::Nodes { nodes, .. } => nodes
            .iter()
            .map(|n| {
                assert!(!n.dev.block);
                (
                    n.target.display().to_string(),
                    n.dev.major,
                    n.dev.minor,
                    n.mode,
                )
            })
            .collect(),
        other => panic!("not nodes: {other:?}"),
    }
}

fn targets(r: &Resolved) -> Vec<String> {
    nodes_of(r).into_iter().map(|n| n.0).collect()
}

fn is_custom_class(c: &str) -> bool {
    c.len() <= 255
        && c.strip_prefix("CUSTOM_").is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
}

// ---- parsing ----

#[test]
fn parses_usb_gpu_nic() {
    assert_eq!(
        parse("u", "usb,vendorid=1D6B").unwrap(),
        DeviceConfig::Usb {
            vendorid: "1d6b".into(),
            productid: None,
            required: true,
            mode: None
        }
    );
    assert_eq!(
        parse(
            "u",
            "usb, vendorid=0781, productid=55aB, required=no, mode=0600"
        )
        .unwrap(),
        DeviceConfig::Usb {
            vendorid: "0781".into(),
            productid: Some("55ab".into()),
            required: false,
            mode: Some(0o600)
        }
    );
    assert_eq!(
        parse("g", "gpu").unwrap(),
        DeviceConfig::Gpu {
            vendorid: None,
            productid: None,
            pci: None,
            id: None,
            mode: None
        }
    );
    assert_eq!(
        parse("g", "gpu,gputype=physical,pci=C1:00.0").unwrap(),
        DeviceConfig::Gpu {
            vendorid: None,
            productid: None,
            pci: Some("0000:c1:00.0".into()),
            id: None,
            mode: None
        }
    );
    assert_eq!(
        parse(
            "g",
            "gpu,vendorid=10DE,productid=2330,pci=0001:02:1f.7,id=1,mode=0666"
        )
        .unwrap(),
        DeviceConfig::Gpu {
            vendorid: Some("10de".into()),
            productid: Some("2330".into()),
            pci: Some("0001:02:1f.7".into()),
            id: Some(1),
            mode: Some(0o666)
        }
    );
    assert_eq!(
        parse("eth0", "nic,parent=eth1").unwrap(),
        DeviceConfig::Nic {
            parent: Some("eth1".into()),
            name: None
        }
    );
    assert_eq!(
        parse("uplink", "nic,nictype=physical,parent=enp65s0f1,name=eth1").unwrap(),
        DeviceConfig::Nic {
            parent: Some("enp65s0f1".into()),
            name: Some("eth1".into())
        }
    );
    assert_eq!(
        parse("net0", "nic").unwrap(),
        DeviceConfig::Nic {
            parent: None,
            name: None
        }
    );
    assert_eq!(parse("u", "usb,vendorid=1d6b").unwrap().kind(), "usb");
    assert_eq!(parse("g", "gpu").unwrap().kind(), "gpu");
    assert_eq!(parse("n", "nic").unwrap().kind(), "nic");
    assert_eq!(
        parse("u", "usb,vendorid=1d6b").unwrap().describe(),
        "1d6b:*"
    );
    assert_eq!(parse("g", "gpu").unwrap().describe(), "any");
    assert_eq!(
        parse("n", "nic,parent=eth1,name=eth0").unwrap().describe(),
        "eth1 as eth0"
    );
}

#[test]
fn refuses_bad_usb_gpu_nic() {
    for (name, text) in [
        ("u", "usb"),
        ("u", "usb,vendorid="),
        ("u", "usb,productid=0002"),
        ("u", "usb,vendorid=1d6"),
        ("u", "usb,vendorid=01d6b"),
        ("u", "usb,vendorid=zzzz"),
        ("u", "usb,vendorid=0x1d"),
        ("u", "usb,vendorid=1d6b,productid="),
        ("u", "usb,vendorid=1d6b,productid=2"),
        ("u", "usb,vendorid=1d6b,required=maybe"),
        ("u", "usb,vendorid=1d6b,mode=999"),
        ("u", "usb,vendorid=1d6b,path=/dev/bus/usb/001/001"),
        ("u", "usb,vendorid=1d6b,vendorid=0781"),
        ("g", "gpu,gputype=mig"),
        ("g", "gpu,gputype=sriov"),
        ("g", "gpu,pci="),
        ("g", "gpu,pci=1:00.0"),
        ("g", "gpu,pci=0000:01:20.0"),
        ("g", "gpu,pci=0000:01:00.8"),
        ("g", "gpu,pci=00000:01:00.0"),
        ("g", "gpu,pci=0000:01:00"),
        ("g", "gpu,pci=/sys/bus/pci"),
        ("g", "gpu,id=-1"),
        ("g", "gpu,id=card0"),
        ("g", "gpu,vendorid=nvid"),
        ("g", "gpu,uuid=GPU-1"),
        ("g", "gpu,id=0,id=1"),
        ("n", "nic,parent=lo"),
        ("n", "nic,parent="),
        ("n", "nic,parent=a/b"),
        ("n", "nic,parent=.."),
        ("n", "nic,parent=."),
        ("n", "nic,parent=averyverylongname"),
        ("n", "nic,parent=eth 0"),
        ("n", "nic,parent=eth0:1"),
        ("n", "nic,parent=eth0,name=lo"),
        ("n", "nic,parent=eth0,name=a/b"),
        ("n", "nic,nictype=bridged,parent=br0"),
        ("n", "nic,nictype=macvlan,parent=eth0"),
        ("n", "nic,parent=eth1,parent=eth2"),
        ("n", "nic,parent=eth1,network=lxdbr0"),
        // The device name is the inside name when name= is not given.
        ("a-very-long-device-name", "nic,parent=eth1"),
        ("lo", "nic,parent=eth1"),
    ] {
        assert!(parse(name, text).is_err(), "{name} {text}");
    }
    assert!(parse("a-very-long-device-name", "nic,parent=eth1,name=eth1").is_ok());
    let e = parse("g", "gpu,gputype=mig").unwrap_err().to_string();
    assert!(e.contains("not supported"), "{e}");
    let e = parse("x", "floppy").unwrap_err().to_string();
    assert!(e.contains("usb, gpu, nic"), "{e}");
}

#[test]
fn new_types_round_trip_through_serde() {
    for (name, text) in [
        ("u", "usb,vendorid=1d6b"),
        (
            "u",
            "usb,vendorid=1d6b,productid=0002,required=false,mode=0600",
        ),
        ("g", "gpu"),
        ("g", "gpu,vendorid=10de,pci=01:00.0,id=2,mode=0666"),
        ("n", "nic"),
        ("n", "nic,parent=eth1,name=eth0"),
    ] {
        let d = parse(name, text).unwrap();
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(
            serde_json::from_str::<DeviceConfig>(&json).unwrap(),
            d,
            "{json}"
        );
    }
    let json = serde_json::to_value(parse("u", "usb,vendorid=1d6b").unwrap()).unwrap();
    assert_eq!(json, serde_json::json!({"type": "usb", "vendorid": "1d6b"}));
    let json = serde_json::to_value(parse("n", "nic,parent=eth1").unwrap()).unwrap();
    assert_eq!(json, serde_json::json!({"type": "nic", "parent": "eth1"}));
    assert!(serde_json::from_value::<DeviceConfig>(
        serde_json::json!({"type": "gpu", "colour": "green"})
    )
    .is_err());
}

// ---- usb ----

fn usb_host() -> Fake {
    let f = fake();
    f.usb("usb1", "1d6b", "0002", 1, 1, "189:0");
    f.usb("usb2", "1d6b", "0003", 2, 1, "189:128");
    f.usb("1-1", "0781", "5581", 1, 3, "189:2");
    f.usb_interface("1-1:1.0");
    f.usb("3-2", "0781", "5581", 3, 12, "189:267");
    f
}

#[test]
fn usb_gives_every_matching_device() {
    let f = usb_host();
    let a = allow(&["usb:0781:5581"]);
    let d = parse("stick", "usb,vendorid=0781,productid=5581").unwrap();
    let r = resolve_on("stick", &d, &a, &f.host, &none()).unwrap();
    assert_eq!(
        nodes_of(&r),
        vec![
            ("/dev/bus/usb/001/003".to_string(), 189, 2, 0o660),
            ("/dev/bus/usb/003/012".to_string(), 189, 267, 0o660),
        ]
    );
    let Resolved::Nodes {
        nodes,
        binds,
        env,
        kind,
        ..
    } = &r
    else {
        unreachable!()
    };
    assert_eq!(*kind, "usb");
    assert_eq!(nodes[0].host, f.host.dev.join("bus/usb/001/003"));
    assert!(binds.is_empty() && env.is_empty());
    // Shared: no claim, and taken keys do not matter.
    assert_eq!(r.claim(), None);
    assert_eq!(
        resolve_on("stick", &d, &a, &f.host, &taken(&["usb:0781:5581"])).unwrap(),
        r
    );
    assert_eq!(
        resource_class(&r).as_deref(),
        Some("CUSTOM_CORRAL_USB_0781_5581")
    );
    assert_eq!(
        resources(&r),
        BTreeMap::from([("CUSTOM_CORRAL_USB_0781_5581".to_string(), 2)])
    );
    // The mode given.
    let d = parse("stick", "usb,vendorid=0781,mode=0600").unwrap();
    let r = resolve_on("stick", &d, &a, &f.host, &none()).unwrap();
    assert!(nodes_of(&r).iter().all(|n| n.3 == 0o600));
}

#[test]
fn usb_by_vendor_only() {
    let f = usb_host();
    let d = parse("hubs", "usb,vendorid=1d6b").unwrap();
    let r = resolve_on("hubs", &d, &allow(&["usb:*"]), &f.host, &none()).unwrap();
    assert_eq!(
        nodes_of(&r),
        vec![
            ("/dev/bus/usb/001/001".to_string(), 189, 0, 0o660),
            ("/dev/bus/usb/002/001".to_string(), 189, 128, 0o660),
        ]
    );
    assert_eq!(
        resources(&r),
        BTreeMap::from([
            ("CUSTOM_CORRAL_USB_1D6B_0002".to_string(), 1),
            ("CUSTOM_CORRAL_USB_1D6B_0003".to_string(), 1)
        ])
    );
    // Only the allowed product of the vendor.
    let r = resolve_on("hubs", &d, &allow(&["usb:1d6b:0003"]), &f.host, &none()).unwrap();
    assert_eq!(targets(&r), vec!["/dev/bus/usb/002/001".to_string()]);
}

#[test]
fn usb_none_found() {
    let f = usb_host();
    let a = allow(&["usb:*"]);
    // required=false: nothing is fine, and sets nothing up.
    let d = parse("u", "usb,vendorid=dead,required=false").unwrap();
    let r = resolve_on("u", &d, &a, &f.host, &none()).unwrap();
    assert!(nodes_of(&r).is_empty());
    assert_eq!(resource_class(&r), None);
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(setup_on(dir.path(), &r, 0).unwrap(), Setup::default());
    // required (the default): an error naming the ids.
    let d = parse("u", "usb,vendorid=dead,productid=beef").unwrap();
    let e = resolve_on("u", &d, &a, &f.host, &none()).unwrap_err();
    assert!(matches!(e, DeviceError::NotPresent { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("vendorid=dead") && msg.contains("productid=beef"),
        "{msg}"
    );
    // No USB bus at all.
    let empty = fake();
    let d = parse("u", "usb,vendorid=1d6b").unwrap();
    assert!(matches!(
        resolve_on("u", &d, &a, &empty.host, &none()),
        Err(DeviceError::NotPresent { .. })
    ));
}

#[test]
fn usb_not_allowed() {
    let f = usb_host();
    let a = allow(&["usb:0781:*"]);
    for text in [
        "usb,vendorid=1d6b",
        "usb,vendorid=1d6b,productid=0002",
        // Refused before looking, present or not.
        "usb,vendorid=dead,required=false",
    ] {
        let d = parse("u", text).unwrap();
        let e = resolve_on("u", &d, &a, &f.host, &none());
        assert!(
            matches!(e, Err(DeviceError::NotAllowed { .. })),
            "{text}: {e:?}"
        );
    }
    // The vendor is allowed for another product than the ones present.
    let d = parse("u", "usb,vendorid=1d6b").unwrap();
    let e = resolve_on("u", &d, &allow(&["usb:1d6b:0001"]), &f.host, &none());
    assert!(matches!(e, Err(DeviceError::NotAllowed { .. })), "{e:?}");
    let e = resolve_on("u", &d, &Allowlist::default(), &f.host, &none()).unwrap_err();
    assert!(e.to_string().contains("not allowed"), "{e}");
}

// ---- nic ----

fn nic_host() -> Fake {
    let f = fake();
    for n in ["lo", "eth0", "dummy0", "dummy1"] {
        f.nic(n);
    }
    f
}

fn nic_on(
    f: &Fake,
    name: &str,
    text: &str,
    a: &Allowlist,
    t: &BTreeSet<String>,
) -> Result<Resolved, DeviceError> {
    resolve_on(name, &parse(name, text).unwrap(), a, &f.host, t)
}

#[test]
fn nic_present_absent_taken_not_allowed() {
    let f = nic_host();
    let a = allow(&["nic:dummy*"]);
    let r = nic_on(&f, "eth1", "nic,parent=dummy1", &a, &none()).unwrap();
    assert_eq!(
        r,
        Resolved::Nic {
            name: "eth1".into(),
            host_if: "dummy1".into(),
            inside: "eth1".into(),
            claim: "nic:dummy1".into()
        }
    );
    assert_eq!(r.claim(), Some("nic:dummy1"));
    assert_eq!(resource_class(&r).as_deref(), Some("CUSTOM_CORRAL_NIC"));
    let r = nic_on(&f, "up", "nic,parent=dummy0,name=eth0", &a, &none()).unwrap();
    assert!(matches!(&r, Resolved::Nic { inside, .. } if inside == "eth0"));
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        setup_on(dir.path(), &r, 0).unwrap(),
        Setup {
            mounts: vec![],
            env: vec![],
            nic: Some(NicMove {
                host_name: "dummy0".into(),
                inside_name: "eth0".into()
            })
        }
    );
    assert!(setup(dir.path(), &r, 0).is_err());
    // Absent.
    let e = nic_on(&f, "n", "nic,parent=dummy7", &a, &none()).unwrap_err();
    assert!(matches!(e, DeviceError::NotPresent { .. }), "{e:?}");
    // Taken.
    let e = nic_on(&f, "n", "nic,parent=dummy0", &a, &taken(&["nic:dummy0"])).unwrap_err();
    assert!(matches!(e, DeviceError::Busy { .. }), "{e:?}");
    assert!(e.to_string().contains("dummy0"), "{e}");
    // Not allowed, present or not.
    for text in ["nic,parent=eth0", "nic,parent=wlan0"] {
        let e = nic_on(&f, "n", text, &a, &none());
        assert!(
            matches!(e, Err(DeviceError::NotAllowed { .. })),
            "{text}: {e:?}"
        );
    }
}

#[test]
fn nic_without_parent_picks_a_free_allowed_one() {
    let f = nic_host();
    let a = allow(&["nic:dummy*"]);
    let pick = |t: &BTreeSet<String>| nic_on(&f, "net0", "nic", &a, t);
    assert_eq!(pick(&none()).unwrap().claim(), Some("nic:dummy0"));
    assert_eq!(
        pick(&taken(&["nic:dummy0"])).unwrap().claim(),
        Some("nic:dummy1")
    );
    let e = pick(&taken(&["nic:dummy0", "nic:dummy1"])).unwrap_err();
    assert!(matches!(e, DeviceError::Busy { .. }), "{e:?}");
    // lo is never picked, whatever the allowlist.
    let only_lo = fake();
    only_lo.nic("lo");
    let e = nic_on(&only_lo, "net0", "nic", &allow(&["nic:*"]), &none()).unwrap_err();
    assert!(matches!(e, DeviceError::NotPresent { .. }), "{e:?}");
    let e = nic_on(&f, "net0", "nic", &allow(&["nic:wlan*"]), &none()).unwrap_err();
    assert!(matches!(e, DeviceError::NotPresent { .. }), "{e:?}");
    let e = nic_on(&f, "net0", "nic", &allow(&["gpu:*"]), &none()).unwrap_err();
    assert!(matches!(e, DeviceError::NotAllowed { .. }), "{e:?}");
}

// ---- inventory, resource classes, setup ----

#[test]
fn inventory_counts_present_allowed_devices() {
    let f = gpu_host();
    f.pci("0000:04:00.0", "0x1002", "0x744c", "0x030000", &[]); // no nodes
    for n in ["lo", "eth0", "dummy0", "dummy1"] {
        f.nic(n);
    }
    f.usb("usb1", "1d6b", "0002", 1, 1, "189:0");
    f.usb("usb2", "1d6b", "0002", 2, 1, "189:128");
    f.usb("1-1", "0781", "5581", 1, 3, "189:2");
    f.usb_interface("1-1:1.0");
    let inv = inventory(&f.host, &allow(&["usb:*", "gpu:*", "nic:dummy*"]));
    let want: BTreeMap<String, u32> = [
        ("CUSTOM_CORRAL_GPU_1002_744C", 1),
        ("CUSTOM_CORRAL_GPU_10DE_2330", 2),
        ("CUSTOM_CORRAL_USB_1D6B_0002", 2),
        ("CUSTOM_CORRAL_USB_0781_5581", 1),
        ("CUSTOM_CORRAL_NIC", 2),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(inv, want);
    assert!(inv.keys().all(|k| is_custom_class(k)), "{inv:?}");
    let inv = inventory(
        &f.host,
        &allow(&["usb:0781:*", "gpu:0000:03:00.0", "nic:*"]),
    );
    let want: BTreeMap<String, u32> = [
        ("CUSTOM_CORRAL_GPU_10DE_2330", 1),
        ("CUSTOM_CORRAL_USB_0781_5581", 1),
        ("CUSTOM_CORRAL_NIC", 3),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(inv, want);
    assert!(inventory(&f.host, &Allowlist::default()).is_empty());
    assert!(inventory(&fake().host, &allow(&["usb:*", "gpu:*", "nic:*"])).is_empty());
}

#[test]
fn resource_class_names() {
    let f = usb_host();
    let a = allow(&["usb:*"]);
    let r = resolve_on(
        "u",
        &parse("u", "usb,vendorid=1d6b,productid=0003").unwrap(),
        &a,
        &f.host,
        &none(),
    )
    .unwrap();
    let c = resource_class(&r).unwrap();
    assert_eq!(c, "CUSTOM_CORRAL_USB_1D6B_0003");
    assert!(is_custom_class(&c));
    let g = gpu_host();
    let r = gpu_on(&g, "gpu", &allow(&["gpu:*"]), &none()).unwrap();
    assert!(is_custom_class(&resource_class(&r).unwrap()));
    let dir = Resolved::Dir {
        source: "/srv".into(),
        target: "/mnt".into(),
        readonly: false,
    };
    assert_eq!(resource_class(&dir), None);
    assert!(resources(&dir).is_empty());
    assert_eq!(dir.claim(), None);
    assert!(!is_custom_class("CUSTOM_corral"));
    assert!(!is_custom_class("CUSTOM_"));
}

#[test]
fn setup_on_makes_every_node_binds_and_env() {
    let dir = tempfile::tempdir().unwrap();
    let r = Resolved::Nodes {
        name: "gpu0".into(),
        kind: "gpu",
        nodes: vec![
            NodeSpec {
                dev: char_dev(1, 3),
                host: "/dev/null".into(),
                target: "/dev/dri/card0".into(),
                mode: 0o660,
            },
            NodeSpec {
                dev: char_dev(1, 5),
                host: "/dev/zero".into(),
                target: "/dev/nvidia0".into(),
                mode: 0o666,
            },
        ],
        binds: vec![BindSpec {
            source: "/usr/lib/libcuda.so.1".into(),
            target: "/usr/lib/libcuda.so.1".into(),
            readonly: true,
        }],
        env: vec!["A=1".into()],
        claim: Some("gpu:0000:01:00.0".into()),
        classes: vec![],
    };
    // The old entry point refuses, without making anything.
    assert!(setup(dir.path(), &r, 0).is_err());
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: mknod needs root");
        return;
    }
    let s = setup_on(dir.path(), &r, 1_000_000).unwrap();
    assert_eq!(s.env, vec!["A=1".to_string()]);
    assert_eq!(s.nic, None);
    assert_eq!(s.mounts.len(), 3);
    assert_eq!(s.mounts[0].source, dir.path().join("devices/gpu0.0"));
    assert_eq!(s.mounts[0].target, Path::new("/dev/dri/card0"));
    assert_eq!(s.mounts[0].allow, Some(char_dev(1, 3)));
    assert_eq!(s.mounts[1].source, dir.path().join("devices/gpu0.1"));
    assert_eq!(s.mounts[1].allow, Some(char_dev(1, 5)));
    assert_eq!(
        s.mounts[2],
        Prepared {
            source: "/usr/lib/libcuda.so.1".into(),
            target: "/usr/lib/libcuda.so.1".into(),
            readonly: true,
            allow: None
        }
    );
    for (p, mode, rdev) in [
        (&s.mounts[0].source, 0o660, libc::makedev(1, 3)),
        (&s.mounts[1].source, 0o666, libc::makedev(1, 5)),
    ] {
        let meta = std::fs::metadata(p).unwrap();
        assert!(meta.file_type().is_char_device());
        assert_eq!(meta.uid(), 1_000_000);
        assert_eq!(meta.gid(), 1_000_000);
        assert_eq!(meta.mode() & 0o777, mode);
        assert_eq!(meta.rdev(), rdev);
    }
    // Again (a restart) replaces the nodes.
    setup_on(dir.path(), &r, 1_000_000).unwrap();
    // The old types through setup_on: one mount.
    let old = Resolved::Node {
        name: "null".into(),
        dev: char_dev(1, 3),
        target: "/dev/null2".into(),
        mode: 0o666,
    };
    let s2 = setup_on(dir.path(), &old, 0).unwrap();
    assert_eq!(s2.mounts.len(), 1);
    assert_eq!(s2.mounts[0].source, dir.path().join("devices/null"));
    release(dir.path()).unwrap();
    assert!(!s.mounts[0].source.exists());
    assert!(!s.mounts[1].source.exists());
    assert!(!dir.path().join("devices").exists());
}

#[test]
fn host_paths_default() {
    let h = HostPaths::default();
    assert_eq!(h.sys, PathBuf::from("/sys"));
    assert_eq!(h.dev, PathBuf::from("/dev"));
    assert_eq!(h.proc, PathBuf::from("/proc"));
    assert_eq!(
        h.cdi_dirs,
        vec![PathBuf::from("/etc/cdi"), PathBuf::from("/var/run/cdi")]
    );
}
