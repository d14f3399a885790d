//! Tests of `gpu` devices against a fake host: DRM nodes, NVIDIA nodes and
//! what CDI specs add.

use super::*;

// ---- gpu ----

/// A: AMD at 01:00.0 (card0, renderD128); B: NVIDIA at 02:00.0 (card1,
/// renderD129, minor 0); C: NVIDIA at 03:00.0 without DRM (minor 1); an
/// audio device at 00:1f.3; control nodes nvidiactl and nvidia-uvm.
pub(super) fn gpu_host() -> Fake {
    let f = fake();
    f.pci(
        "0000:01:00.0",
        "0x1002",
        "0x744c",
        "0x030000",
        &[("card0", "226:0"), ("renderD128", "226:128")],
    );
    f.pci(
        "0000:02:00.0",
        "0x10de",
        "0x2330",
        "0x030200",
        &[("card1", "226:1"), ("renderD129", "226:129")],
    );
    f.pci("0000:03:00.0", "0x10de", "0x2330", "0x030200", &[]);
    f.pci("0000:00:1f.3", "0x8086", "0x51c8", "0x040380", &[]);
    f.nvidia("0000:02:00.0", 0, "GPU-b", "/dev/zero");
    f.nvidia("0000:03:00.0", 1, "GPU-c", "/dev/full");
    f.link("nvidiactl", "/dev/null");
    f.link("nvidia-uvm", "/dev/urandom");
    f
}

pub(super) fn gpu_on(
    f: &Fake,
    text: &str,
    a: &Allowlist,
    t: &BTreeSet<String>,
) -> Result<Resolved, DeviceError> {
    resolve_on("g", &parse("g", text).unwrap(), a, &f.host, t)
}

#[test]
fn gpu_drm_nodes_by_index() {
    let f = gpu_host();
    let a = allow(&["gpu:*"]);
    let r = gpu_on(&f, "gpu,id=0", &a, &none()).unwrap();
    assert_eq!(
        nodes_of(&r),
        vec![
            ("/dev/dri/card0".to_string(), 226, 0, 0o660),
            ("/dev/dri/renderD128".to_string(), 226, 128, 0o660),
        ]
    );
    let Resolved::Nodes { nodes, kind, .. } = &r else {
        unreachable!()
    };
    assert_eq!(*kind, "gpu");
    assert_eq!(nodes[0].host, f.host.dev.join("dri/card0"));
    assert_eq!(r.claim(), Some("gpu:0000:01:00.0"));
    assert_eq!(
        resource_class(&r).as_deref(),
        Some("CUSTOM_CORRAL_GPU_1002_744C")
    );
    // id=1 is the NVIDIA one: DRM, its own node and the control nodes.
    let r = gpu_on(&f, "gpu,id=1,mode=0666", &a, &none()).unwrap();
    assert_eq!(
        nodes_of(&r),
        vec![
            ("/dev/dri/card1".to_string(), 226, 1, 0o666),
            ("/dev/dri/renderD129".to_string(), 226, 129, 0o666),
            ("/dev/nvidia0".to_string(), 1, 5, 0o666),
            ("/dev/nvidiactl".to_string(), 1, 3, 0o666),
            ("/dev/nvidia-uvm".to_string(), 1, 9, 0o666),
        ]
    );
    assert_eq!(r.claim(), Some("gpu:0000:02:00.0"));
    // No card 7.
    let e = gpu_on(&f, "gpu,id=7", &a, &none()).unwrap_err();
    assert!(matches!(e, DeviceError::NotPresent { .. }), "{e:?}");
    assert!(e.to_string().contains("id=7"), "{e}");
}

#[test]
fn gpu_by_pci_and_ids() {
    let f = gpu_host();
    let a = allow(&["gpu:*"]);
    // Short and long address forms; NVIDIA without DRM.
    for text in ["gpu,pci=03:00.0", "gpu,pci=0000:03:00.0"] {
        let r = gpu_on(&f, text, &a, &none()).unwrap();
        assert_eq!(
            nodes_of(&r),
            vec![
                ("/dev/nvidia1".to_string(), 1, 7, 0o660),
                ("/dev/nvidiactl".to_string(), 1, 3, 0o660),
                ("/dev/nvidia-uvm".to_string(), 1, 9, 0o660),
            ]
        );
        assert_eq!(r.claim(), Some("gpu:0000:03:00.0"));
    }
    // By ids: the first by address.
    let r = gpu_on(&f, "gpu,vendorid=10de,productid=2330", &a, &none()).unwrap();
    assert_eq!(r.claim(), Some("gpu:0000:02:00.0"));
    assert_eq!(
        resource_class(&r).as_deref(),
        Some("CUSTOM_CORRAL_GPU_10DE_2330")
    );
    let r = gpu_on(&f, "gpu,vendorid=1002", &a, &none()).unwrap();
    assert_eq!(r.claim(), Some("gpu:0000:01:00.0"));
    // Any GPU: the first one; an audio device is not a GPU.
    let r = gpu_on(&f, "gpu", &a, &none()).unwrap();
    assert_eq!(r.claim(), Some("gpu:0000:01:00.0"));
    let e = gpu_on(&f, "gpu,vendorid=8086", &a, &none()).unwrap_err();
    assert!(matches!(e, DeviceError::NotPresent { .. }), "{e:?}");
    assert!(e.to_string().contains("vendorid=8086"), "{e}");
    let e = gpu_on(&f, "gpu,pci=00:1f.3", &a, &none()).unwrap_err();
    assert!(matches!(e, DeviceError::NotPresent { .. }), "{e:?}");
}

#[test]
fn gpu_taken_ones_are_skipped() {
    let f = gpu_host();
    let a = allow(&["gpu:*"]);
    let sel = "gpu,vendorid=10de";
    let first = gpu_on(&f, sel, &a, &none()).unwrap();
    let held = taken(&[first.claim().unwrap()]);
    let second = gpu_on(&f, sel, &a, &held).unwrap();
    assert_eq!(second.claim(), Some("gpu:0000:03:00.0"));
    let both = taken(&["gpu:0000:02:00.0", "gpu:0000:03:00.0"]);
    let e = gpu_on(&f, sel, &a, &both).unwrap_err();
    assert!(matches!(e, DeviceError::Busy { .. }), "{e:?}");
    assert!(
        e.to_string().contains("no free GPU matches vendorid=10de"),
        "{e}"
    );
    // Any GPU goes on to the next free one.
    let r = gpu_on(&f, "gpu", &a, &taken(&["gpu:0000:01:00.0"])).unwrap();
    assert_eq!(r.claim(), Some("gpu:0000:02:00.0"));
    // A named one that is taken.
    let e = gpu_on(&f, "gpu,pci=02:00.0", &a, &both).unwrap_err();
    assert!(matches!(e, DeviceError::Busy { .. }), "{e:?}");
    // Every GPU taken.
    let all = taken(&["gpu:0000:01:00.0", "gpu:0000:02:00.0", "gpu:0000:03:00.0"]);
    let e = gpu_on(&f, "gpu", &a, &all).unwrap_err();
    assert!(e.to_string().contains("no free GPU"), "{e}");
}

#[test]
fn gpu_not_allowed() {
    let f = gpu_host();
    let a = allow(&["gpu:0000:02:*", "usb:*"]);
    for text in [
        "gpu,pci=01:00.0",
        "gpu,vendorid=1002",
        "gpu,pci=0000:09:00.0",
    ] {
        let e = gpu_on(&f, text, &a, &none());
        assert!(
            matches!(e, Err(DeviceError::NotAllowed { .. })),
            "{text}: {e:?}"
        );
    }
    // Any GPU: only the allowed ones.
    let r = gpu_on(&f, "gpu", &a, &none()).unwrap();
    assert_eq!(r.claim(), Some("gpu:0000:02:00.0"));
    let e = gpu_on(&f, "gpu", &allow(&["usb:*"]), &none());
    assert!(matches!(e, Err(DeviceError::NotAllowed { .. })), "{e:?}");
}

#[test]
fn gpu_without_nodes_or_with_a_missing_nvidia_node() {
    let f = gpu_host();
    // An AMD GPU bound to vfio-pci: no DRM.
    f.pci("0000:04:00.0", "0x1002", "0x744c", "0x030000", &[]);
    // The NVIDIA driver knows minor 5, but /dev/nvidia5 is not there.
    f.pci("0000:05:00.0", "0x10de", "0x2330", "0x030200", &[]);
    f.nvidia("0000:05:00.0", 5, "GPU-e", "");
    let a = allow(&["gpu:*"]);
    let e = gpu_on(&f, "gpu,pci=04:00.0", &a, &none()).unwrap_err();
    assert!(matches!(e, DeviceError::NotPresent { .. }), "{e:?}");
    assert!(e.to_string().contains("no device nodes"), "{e}");
    let e = gpu_on(&f, "gpu,pci=05:00.0", &a, &none()).unwrap_err();
    assert!(e.to_string().contains("nvidia5"), "{e}");
    // A selection skips both.
    let held = taken(&["gpu:0000:02:00.0", "gpu:0000:03:00.0"]);
    let e = gpu_on(&f, "gpu,vendorid=10de", &a, &held).unwrap_err();
    assert!(e.to_string().contains("nvidia5"), "{e}");
    let r = gpu_on(&f, "gpu,vendorid=1002", &a, &none()).unwrap();
    assert_eq!(r.claim(), Some("gpu:0000:01:00.0"));
    let e = gpu_on(&f, "gpu,vendorid=1002", &a, &taken(&["gpu:0000:01:00.0"])).unwrap_err();
    assert!(matches!(e, DeviceError::NotPresent { .. }), "{e:?}");
}

const CDI_SPEC: &str = r#"{
  "cdiVersion": "0.5.0",
  "kind": "nvidia.com/gpu",
  "devices": [
    {"name": "0", "containerEdits": {
      "env": ["GPU_INDEX=0"],
      "deviceNodes": [{"path": "/dev/nvidia0"}, {"path": "/dev/dri/card1"}, {"path": "/dev/dri/renderD129"}]}},
    {"name": "1", "containerEdits": {"deviceNodes": [{"path": "/dev/nvidia1"}]}},
    {"name": "all", "containerEdits": {"deviceNodes": [{"path": "/dev/nvidia0"}, {"path": "/dev/nvidia1"}]}}
  ],
  "containerEdits": {
    "env": ["NVIDIA_VISIBLE_DEVICES=void"],
    "deviceNodes": [
      {"path": "/dev/nvidiactl"},
      {"path": "/dev/nvidia-caps/nvidia-cap1", "type": "c", "major": 238, "minor": 1, "fileMode": 292},
      {"path": "/dev/nvidia-uvm-tools", "hostPath": "/dev/host-uvm-tools"}
    ],
    "mounts": [
      {"hostPath": "/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15", "containerPath": "/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15", "options": ["ro", "nosuid", "nodev", "bind"]},
      {"hostPath": "/run/nvidia-persistenced/socket", "containerPath": "/run/nvidia-persistenced/socket", "options": ["nosuid", "nodev", "bind", "noexec"]},
      {"hostPath": "tmpfs", "containerPath": "/run/x", "type": "tmpfs"}
    ],
    "hooks": [{"hookName": "createContainer", "path": "/usr/bin/nvidia-ctk", "args": ["nvidia-ctk", "hook", "update-ldcache"]}]
  }
}"#;

#[test]
fn gpu_cdi_edits() {
    let f = gpu_host();
    f.link("host-uvm-tools", "/dev/random");
    f.cdi(0, "nvidia.json", CDI_SPEC);
    f.cdi(0, "broken.json", "{ not json");
    f.cdi(0, "other.json", r#"{"kind": "example.com/thing", "devices": [{"name": "all", "containerEdits": {"env": ["NO=1"]}}]}"#);
    let a = allow(&["gpu:*"]);
    let r = gpu_on(&f, "gpu,pci=02:00.0", &a, &none()).unwrap();
    assert_eq!(
        nodes_of(&r),
        vec![
            ("/dev/dri/card1".to_string(), 226, 1, 0o660),
            ("/dev/dri/renderD129".to_string(), 226, 129, 0o660),
            ("/dev/nvidia0".to_string(), 1, 5, 0o660),
            ("/dev/nvidiactl".to_string(), 1, 3, 0o660),
            ("/dev/nvidia-uvm".to_string(), 1, 9, 0o660),
            ("/dev/nvidia-caps/nvidia-cap1".to_string(), 238, 1, 0o444),
            ("/dev/nvidia-uvm-tools".to_string(), 1, 8, 0o660),
        ]
    );
    let Resolved::Nodes {
        nodes, binds, env, ..
    } = &r
    else {
        unreachable!()
    };
    assert_eq!(nodes[6].host, f.host.dev.join("host-uvm-tools"));
    assert_eq!(
        *binds,
        vec![
            BindSpec {
                source: "/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15".into(),
                target: "/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15".into(),
                readonly: true
            },
            BindSpec {
                source: "/run/nvidia-persistenced/socket".into(),
                target: "/run/nvidia-persistenced/socket".into(),
                readonly: false
            },
        ]
    );
    assert_eq!(
        *env,
        vec![
            "NVIDIA_VISIBLE_DEVICES=void".to_string(),
            "GPU_INDEX=0".to_string()
        ]
    );
    // The other NVIDIA GPU gets device "1".
    let r = gpu_on(&f, "gpu,pci=03:00.0", &a, &none()).unwrap();
    let t = targets(&r);
    assert!(t.contains(&"/dev/nvidia1".to_string()), "{t:?}");
    assert!(!t.contains(&"/dev/nvidia0".to_string()), "{t:?}");
    let Resolved::Nodes { env, .. } = &r else {
        unreachable!()
    };
    assert_eq!(*env, vec!["NVIDIA_VISIBLE_DEVICES=void".to_string()]);
    // Not for other vendors' GPUs.
    let r = gpu_on(&f, "gpu,pci=01:00.0", &a, &none()).unwrap();
    let Resolved::Nodes { binds, env, .. } = &r else {
        unreachable!()
    };
    assert!(binds.is_empty() && env.is_empty());
    assert_eq!(nodes_of(&r).len(), 2);
}

#[test]
fn gpu_cdi_all_by_mention_priority_and_yaml() {
    let f = gpu_host();
    f.cdi(0, "nvidia.json", CDI_SPEC);
    // Higher priority (the later directory): only "all", as YAML.
    f.cdi(
        1,
        "nvidia.yaml",
        "cdiVersion: 0.6.0\nkind: nvidia.com/gpu\ndevices:\n- name: all\n  containerEdits:\n    deviceNodes:\n    - path: /dev/nvidia0\n    - path: /dev/nvidia1\n    - path: /dev/dri/card1\n    - path: /dev/dri/renderD129\ncontainerEdits:\n  env:\n  - FROM=run\n",
    );
    let a = allow(&["gpu:*"]);
    // "all" minus the other GPU's nodes.
    let r = gpu_on(&f, "gpu,pci=03:00.0", &a, &none()).unwrap();
    assert_eq!(
        targets(&r),
        vec!["/dev/nvidia1", "/dev/nvidiactl", "/dev/nvidia-uvm"]
    );
    let Resolved::Nodes { env, .. } = &r else {
        unreachable!()
    };
    assert_eq!(*env, vec!["FROM=run".to_string()]);
    // A device by another name that lists the GPU's node.
    let g = fake();
    g.pci("0000:02:00.0", "0x10de", "0x2330", "0x030200", &[]);
    g.nvidia("0000:02:00.0", 0, "GPU-b", "/dev/zero");
    g.cdi(
        0,
        "gpu.yml",
        "kind: nvidia.com/gpu\ndevices:\n- name: first\n  containerEdits:\n    env: [WHICH=first]\n    deviceNodes: [{path: /dev/nvidia9}]\n- name: mine\n  containerEdits:\n    env: [WHICH=mine]\n    deviceNodes: [{path: /dev/nvidia0}]\n",
    );
    let r = resolve_on("g", &parse("g", "gpu").unwrap(), &a, &g.host, &none()).unwrap();
    let Resolved::Nodes { env, .. } = &r else {
        unreachable!()
    };
    assert_eq!(*env, vec!["WHICH=mine".to_string()]);
    // By UUID.
    g.cdi(
        1,
        "uuid.json",
        r#"{"kind": "nvidia.com/gpu", "devices": [{"name": "GPU-b", "containerEdits": {"env": ["WHICH=uuid"]}}]}"#,
    );
    let r = resolve_on("g", &parse("g", "gpu").unwrap(), &a, &g.host, &none()).unwrap();
    let Resolved::Nodes { env, .. } = &r else {
        unreachable!()
    };
    assert_eq!(*env, vec!["WHICH=uuid".to_string()]);
}

#[test]
fn gpu_bad_cdi_edits_are_errors() {
    let a = allow(&["gpu:*"]);
    for spec in [
        r#"{"kind": "nvidia.com/gpu", "devices": [{"name": "0", "containerEdits": {"env": ["NOEQUALS"]}}]}"#,
        r#"{"kind": "nvidia.com/gpu", "devices": [{"name": "0", "containerEdits": {"deviceNodes": [{"path": "/dev/nvidia-gone"}]}}]}"#,
        r#"{"kind": "nvidia.com/gpu", "devices": [{"name": "0", "containerEdits": {"mounts": [{"hostPath": "lib", "containerPath": "/lib/x"}]}}]}"#,
        r#"{"kind": "nvidia.com/gpu", "devices": [{"name": "0", "containerEdits": {"mounts": [{"hostPath": "/lib", "containerPath": "/"}]}}]}"#,
    ] {
        let f = gpu_host();
        f.cdi(0, "nvidia.json", spec);
        let e = gpu_on(&f, "gpu,pci=02:00.0", &a, &none()).unwrap_err();
        assert!(matches!(e, DeviceError::NotPresent { .. }), "{spec}: {e:?}");
        assert!(e.to_string().contains("CDI spec"), "{e}");
    }
}

#[test]
fn gpu_cdi_device_by_minor_and_only_for_matching_specs() {
    let f = fake();
    f.pci("0000:02:00.0", "0x10de", "0x2330", "0x030200", &[]);
    f.nvidia("0000:02:00.0", 3, "GPU-x", "/dev/zero");
    // Neither the UUID nor a node: the device named by the minor.
    f.cdi(
        0,
        "a.json",
        r#"{"kind": "nvidia.com/gpu", "devices": [{"name": "2", "containerEdits": {"env": ["WHICH=2"]}}, {"name": "3", "containerEdits": {"env": ["WHICH=3"]}}]}"#,
    );
    let a = allow(&["gpu:*"]);
    let r = resolve_on("g", &parse("g", "gpu").unwrap(), &a, &f.host, &none()).unwrap();
    let Resolved::Nodes { env, nodes, .. } = &r else {
        unreachable!()
    };
    assert_eq!(*env, vec!["WHICH=3".to_string()]);
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].target, Path::new("/dev/nvidia3"));
    // No spec with a device for it: no edits.
    let g = fake();
    g.pci("0000:02:00.0", "0x10de", "0x2330", "0x030200", &[]);
    g.nvidia("0000:02:00.0", 3, "GPU-x", "/dev/zero");
    g.cdi(
        0,
        "a.json",
        r#"{"kind": "nvidia.com/gpu", "devices": [{"name": "2", "containerEdits": {"env": ["WHICH=2"]}}]}"#,
    );
    let r = resolve_on("g", &parse("g", "gpu").unwrap(), &a, &g.host, &none()).unwrap();
    let Resolved::Nodes { env, binds, .. } = &r else {
        unreachable!()
    };
    assert!(env.is_empty() && binds.is_empty());
}
