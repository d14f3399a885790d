//! Host devices and paths given to instances (a leaf under the driver):
//! parsing `TYPE,KEY=VALUE,...` device strings, the operator's allowlist,
//! checking that a device is present, and setting it up on the host (device
//! nodes owned by the container's root, block devices mounted under the
//! instance directory) for the bundle to bind in.
//!
//! Types: `unix-char`, `unix-block` and `disk` name host paths; `usb`
//! (every device with the given ids), `gpu` (one physical GPU: its DRM nodes,
//! NVIDIA nodes and, for NVIDIA, what a CDI spec adds) and `nic` (a host
//! interface moved into the container) are looked up in sysfs under
//! [`HostPaths`], so that they can be tested against a fake tree. LXD's
//! `pci`, `infiniband`, `proxy`, `tpm` and `unix-hotplug` are refused.
//!
//! `gpu` and `nic` devices are exclusive: [`Resolved::claim`] names what an
//! instance holds, and [`resolve_on`] skips (`gpu`) or refuses (`nic`) what
//! other instances hold. `usb` devices are shared.
//!
//! This file holds the errors and the resolving of a request against the
//! allowlist and the host ([`Resolved`]); `request` parses what is asked for,
//! `setup` makes it on the host, `host` reads sysfs, devfs and procfs, `pci`
//! is the home of PCI addresses, specs and discovery.

mod allowlist;
mod cdi;
mod host;
pub mod pci;
mod request;
mod select;
mod setup;
#[cfg(test)]
mod tests_host;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

pub use allowlist::Allowlist;
pub use host::{inventory, HostPaths, NIC_CLASS};
use pci::pci_address;
use request::{invalid, is_clean_abs, valid_ifname};
pub use request::{parse, validate_name, DeviceConfig};
#[cfg(test)]
use setup::{disks_dir, is_mounted, mkdir};
pub use setup::{release, setup, setup_on, NicMove, Prepared, Setup};

/// Errors of device requests and their host setup.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("device {name}: {reason}")]
    Invalid { name: String, reason: String },
    #[error("device {name}: {kind} {path} is not allowed by [corral] device_allowlist")]
    NotAllowed {
        name: String,
        kind: &'static str,
        path: PathBuf,
    },
    #[error("device {name}: {path} is not present on this host: {reason}")]
    NotPresent {
        name: String,
        path: PathBuf,
        reason: String,
    },
    /// What was asked for exists but other instances hold it (`gpu`, `nic`).
    #[error("device {name}: {reason}")]
    Busy { name: String, reason: String },
    #[error("device {name}: setting up {path} failed: {reason}")]
    Setup {
        name: String,
        path: PathBuf,
        reason: String,
    },
}

/// A device node's kind and numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevNum {
    pub block: bool,
    pub major: u64,
    pub minor: u64,
}

/// A device node to make for an instance (numbers from sysfs, so the host
/// node itself need not be there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub dev: DevNum,
    /// The node on the host (`/dev/bus/usb/001/003`), for messages.
    pub host: PathBuf,
    /// Where it appears in the container.
    pub target: PathBuf,
    pub mode: u32,
}

/// A host file or directory bound into the container (from a CDI spec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindSpec {
    pub source: PathBuf,
    pub target: PathBuf,
    pub readonly: bool,
}

/// A device checked against the allowlist and the host, ready to set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// A device node made under the instance dir and bound at `target`.
    Node {
        name: String,
        dev: DevNum,
        target: PathBuf,
        mode: u32,
    },
    /// A host directory bound at `target`.
    Dir {
        source: PathBuf,
        target: PathBuf,
        readonly: bool,
    },
    /// A block device mounted under the instance dir, bound at `target`.
    BlockDisk {
        name: String,
        source: PathBuf,
        target: PathBuf,
        readonly: bool,
    },
    /// Device nodes, bind mounts and environment entries (`usb`: one node
    /// per device, maybe none; `gpu`: its nodes and CDI edits).
    Nodes {
        name: String,
        /// `usb` or `gpu`.
        kind: &'static str,
        nodes: Vec<NodeSpec>,
        binds: Vec<BindSpec>,
        env: Vec<String>,
        /// `gpu:<pci address>` for a GPU.
        claim: Option<String>,
        /// The Placement resource class of each device given, one entry per
        /// unit.
        classes: Vec<String>,
    },
    /// A host interface to move into the container's network namespace.
    Nic {
        name: String,
        host_if: String,
        inside: String,
        /// `nic:<host_if>`.
        claim: String,
    },
}

impl Resolved {
    /// What this device holds exclusively (`gpu:0000:01:00.0`,
    /// `nic:eth1`): the `taken` keys of [`resolve_on`] for other instances.
    pub fn claim(&self) -> Option<&str> {
        match self {
            Resolved::Nodes { claim, .. } => claim.as_deref(),
            Resolved::Nic { claim, .. } => Some(claim),
            Resolved::Node { .. } | Resolved::Dir { .. } | Resolved::BlockDisk { .. } => None,
        }
    }
}

/// The Placement resource class a resolved `gpu`, `usb` or `nic` device
/// consumes (`CUSTOM_CORRAL_GPU_10DE_2330`, `CUSTOM_CORRAL_USB_1D6B_0002`,
/// `CUSTOM_CORRAL_NIC`); `None` for the path types and for a `usb` device
/// that found nothing. A `usb` device matching several products consumes
/// several classes: this is the first, [`resources`] has them all.
pub fn resource_class(resolved: &Resolved) -> Option<String> {
    match resolved {
        Resolved::Nodes { classes, .. } => classes.first().cloned(),
        Resolved::Nic { .. } => Some(host::NIC_CLASS.to_string()),
        Resolved::Node { .. } | Resolved::Dir { .. } | Resolved::BlockDisk { .. } => None,
    }
}

/// The Placement resources a resolved device consumes, by class.
pub fn resources(resolved: &Resolved) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    match resolved {
        Resolved::Nodes { classes, .. } => {
            for c in classes {
                *out.entry(c.clone()).or_insert(0) += 1;
            }
        }
        Resolved::Nic { .. } => {
            out.insert(host::NIC_CLASS.to_string(), 1);
        }
        Resolved::Node { .. } | Resolved::Dir { .. } | Resolved::BlockDisk { .. } => {}
    }
    out
}

fn dev_num(meta: &std::fs::Metadata) -> Option<DevNum> {
    let ft = meta.file_type();
    if !(ft.is_char_device() || ft.is_block_device()) {
        return None;
    }
    let rdev = meta.rdev();
    Some(DevNum {
        block: ft.is_block_device(),
        major: libc::major(rdev) as u64,
        minor: libc::minor(rdev) as u64,
    })
}

/// Checks one device against the allowlist and the real host, with nothing
/// taken by other instances: [`resolve_on`] with [`HostPaths::default`].
pub fn resolve(name: &str, dev: &DeviceConfig, allow: &Allowlist) -> Result<Resolved, DeviceError> {
    resolve_on(name, dev, allow, &HostPaths::default(), &BTreeSet::new())
}

/// Checks one device: allowed and present. Path types are checked by their
/// path as given and as resolved, so a symlink cannot lead out of an
/// allowed tree. `usb`, `gpu` and `nic` are looked up under `host`; `taken`
/// holds the [`Resolved::claim`]s of other instances: a `gpu` selection
/// skips them, a taken `nic` is refused ([`DeviceError::Busy`]).
pub fn resolve_on(
    name: &str,
    dev: &DeviceConfig,
    allow: &Allowlist,
    host: &HostPaths,
    taken: &BTreeSet<String>,
) -> Result<Resolved, DeviceError> {
    match dev {
        DeviceConfig::Usb {
            vendorid,
            productid,
            required,
            mode,
        } => select::usb(
            name,
            &select::UsbWant {
                vendor: vendorid,
                product: productid.as_deref(),
                required: *required,
                mode: *mode,
            },
            allow,
            host,
        ),
        DeviceConfig::Gpu {
            vendorid,
            productid,
            pci,
            id,
            mode,
        } => select::gpu(
            name,
            &select::GpuWant {
                vendor: vendorid.as_deref(),
                product: productid.as_deref(),
                pci: pci.as_deref(),
                id: *id,
                mode: *mode,
            },
            allow,
            host,
            taken,
        ),
        DeviceConfig::Nic {
            parent,
            name: inside,
        } => select::nic(
            name,
            parent.as_deref(),
            inside.as_deref(),
            allow,
            host,
            taken,
        ),
        DeviceConfig::UnixChar { path, .. }
        | DeviceConfig::UnixBlock { path, .. }
        | DeviceConfig::Disk { source: path, .. } => resolve_path(name, dev, path, allow),
    }
}

fn resolve_path(
    name: &str,
    dev: &DeviceConfig,
    path: &Path,
    allow: &Allowlist,
) -> Result<Resolved, DeviceError> {
    let kind = dev.kind();
    let not_allowed = |p: &Path| DeviceError::NotAllowed {
        name: name.to_string(),
        kind,
        path: p.to_path_buf(),
    };
    if !allow.allows(kind, path) {
        return Err(not_allowed(path));
    }
    let not_present = |reason: String| DeviceError::NotPresent {
        name: name.to_string(),
        path: path.to_path_buf(),
        reason,
    };
    let real = std::fs::canonicalize(path).map_err(|e| not_present(e.to_string()))?;
    if !allow.allows(kind, &real) {
        return Err(not_allowed(&real));
    }
    let meta = std::fs::metadata(&real).map_err(|e| not_present(e.to_string()))?;
    match dev {
        DeviceConfig::UnixChar { target, mode, .. }
        | DeviceConfig::UnixBlock { target, mode, .. } => {
            let want_block = matches!(dev, DeviceConfig::UnixBlock { .. });
            let num = dev_num(&meta)
                .filter(|d| d.block == want_block)
                .ok_or_else(|| {
                    not_present(format!(
                        "not a {} device",
                        if want_block { "block" } else { "character" }
                    ))
                })?;
            Ok(Resolved::Node {
                name: name.to_string(),
                dev: num,
                target: target.clone().unwrap_or_else(|| path.to_path_buf()),
                mode: mode.unwrap_or(meta.mode() & 0o777),
            })
        }
        DeviceConfig::Disk {
            path: target,
            readonly,
            ..
        } => {
            if meta.is_dir() {
                Ok(Resolved::Dir {
                    source: real,
                    target: target.clone(),
                    readonly: *readonly,
                })
            } else if meta.file_type().is_block_device() {
                Ok(Resolved::BlockDisk {
                    name: name.to_string(),
                    source: real,
                    target: target.clone(),
                    readonly: *readonly,
                })
            } else {
                Err(not_present(
                    "a disk source must be a directory or a block device".into(),
                ))
            }
        }
        DeviceConfig::Usb { .. } | DeviceConfig::Gpu { .. } | DeviceConfig::Nic { .. } => {
            Err(invalid(name, format!("{kind} devices have no host path")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_type() {
        assert_eq!(
            parse("fuse", "unix-char,path=/dev/fuse").unwrap(),
            DeviceConfig::UnixChar {
                path: "/dev/fuse".into(),
                target: None,
                mode: None
            }
        );
        assert_eq!(
            parse(
                "lo",
                "unix-block, path=/dev/loop3, target=/dev/xvdb, mode=0660"
            )
            .unwrap(),
            DeviceConfig::UnixBlock {
                path: "/dev/loop3".into(),
                target: Some("/dev/xvdb".into()),
                mode: Some(0o660)
            }
        );
        assert_eq!(
            parse("data", "disk,source=/srv/data,path=/mnt/data,readonly=yes").unwrap(),
            DeviceConfig::Disk {
                source: "/srv/data".into(),
                path: "/mnt/data".into(),
                readonly: true
            }
        );
        assert!(matches!(
            parse("d", "disk,source=/srv,path=/mnt,shift=false").unwrap(),
            DeviceConfig::Disk {
                readonly: false,
                ..
            }
        ));
    }

    #[test]
    fn bad_devices_are_refused() {
        for (name, text) in [
            ("bad name", "unix-char,path=/dev/fuse"),
            ("", "unix-char,path=/dev/fuse"),
            ("p", "pci,address=0000:01:00.0"),
            ("t", "tpm,path=/dev/tpm0"),
            ("x", "floppy,path=/dev/fd0"),
            ("x", "unix-char"),
            ("x", "unix-char,path=dev/fuse"),
            ("x", "unix-char,path=/dev/../etc/shadow"),
            ("x", "unix-char,path=/dev/fuse,target=/etc/x"),
            ("x", "unix-char,path=/dev/fuse,mode=999"),
            ("x", "unix-char,path=/dev/fuse,colour=red"),
            ("x", "unix-char,path=/dev/fuse,path=/dev/null"),
            ("x", "unix-char,/dev/fuse"),
            ("x", "disk,source=/srv"),
            ("x", "disk,source=/srv,path=/"),
            ("x", "disk,source=/srv,path=/mnt,readonly=perhaps"),
            ("x", "disk,source=/srv,path=/mnt,shift=true"),
        ] {
            assert!(parse(name, text).is_err(), "{name} {text}");
        }
        for t in ["pci", "infiniband", "proxy", "tpm", "unix-hotplug"] {
            let e = parse("x", t).unwrap_err().to_string();
            assert!(e.contains("not supported"), "{e}");
            assert!(e.contains("usb, gpu, nic"), "{e}");
        }
    }

    #[test]
    fn resolve_checks_allowlist_then_presence() {
        let dir = tempfile::tempdir().unwrap();
        let allow = Allowlist::parse(&[
            "unix-char:/dev/null".to_string(),
            format!("disk:{}/*", dir.path().display()),
            "unix-block:/dev/nonexistent*".to_string(),
        ])
        .unwrap();
        // A present character device.
        let r = resolve(
            "n",
            &parse("n", "unix-char,path=/dev/null").unwrap(),
            &allow,
        )
        .unwrap();
        assert!(matches!(
            r,
            Resolved::Node {
                dev: DevNum {
                    block: false,
                    major: 1,
                    minor: 3
                },
                ..
            }
        ));
        // Not allowed.
        let e = resolve(
            "z",
            &parse("z", "unix-char,path=/dev/zero").unwrap(),
            &allow,
        );
        assert!(matches!(e, Err(DeviceError::NotAllowed { .. })), "{e:?}");
        // Allowed but not present.
        let e = resolve(
            "b",
            &parse("b", "unix-block,path=/dev/nonexistent0").unwrap(),
            &allow,
        );
        assert!(matches!(e, Err(DeviceError::NotPresent { .. })), "{e:?}");
        // A directory as a disk; a file is not a disk.
        let sub = dir.path().join("data");
        std::fs::create_dir(&sub).unwrap();
        let d = parse("d", &format!("disk,source={},path=/mnt", sub.display())).unwrap();
        assert!(matches!(
            resolve("d", &d, &allow).unwrap(),
            Resolved::Dir { .. }
        ));
        let f = dir.path().join("file");
        std::fs::write(&f, "x").unwrap();
        let d = parse("f", &format!("disk,source={},path=/mnt", f.display())).unwrap();
        assert!(matches!(
            resolve("f", &d, &allow),
            Err(DeviceError::NotPresent { .. })
        ));
        // A symlink inside the allowed tree that leads out of it.
        let link = dir.path().join("escape");
        std::os::unix::fs::symlink("/etc", &link).unwrap();
        let d = parse("e", &format!("disk,source={},path=/mnt", link.display())).unwrap();
        assert!(matches!(
            resolve("e", &d, &allow),
            Err(DeviceError::NotAllowed { .. })
        ));
        // Not a char device where one is asked for.
        let allow_all = Allowlist::parse(&["unix-char:*".to_string()]).unwrap();
        let d = parse("f", &format!("unix-char,path={}", f.display())).unwrap();
        assert!(matches!(
            resolve("f", &d, &allow_all),
            Err(DeviceError::NotPresent { .. })
        ));
    }

    #[test]
    fn setup_makes_nodes_and_release_removes_them() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: mknod needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let r = Resolved::Node {
            name: "null".into(),
            dev: DevNum {
                block: false,
                major: 1,
                minor: 3,
            },
            target: "/dev/null2".into(),
            mode: 0o666,
        };
        let p = setup(dir.path(), &r, 1_000_000).unwrap();
        let meta = std::fs::metadata(&p.source).unwrap();
        assert!(meta.file_type().is_char_device());
        assert_eq!(meta.uid(), 1_000_000);
        assert_eq!(meta.mode() & 0o777, 0o666);
        assert_eq!(meta.rdev(), libc::makedev(1, 3));
        release(dir.path()).unwrap();
        assert!(!p.source.exists());
    }

    /// A disk mounted into an instance whose state path has a space in it
    /// is unmounted by `release`, so removing the instance directory never
    /// reaches into the disk's files.
    #[test]
    fn release_unmounts_disks_under_a_path_with_a_space() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: mounting needs root");
            return;
        }
        let state = tempfile::Builder::new()
            .prefix("corral state ")
            .tempdir()
            .unwrap();
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("precious"), b"keep me").unwrap();
        let inst = state.path().join("instances/u 1");
        let mp = disks_dir(&inst).join("data");
        mkdir(&mp).unwrap();
        nix::mount::mount(
            Some(host.path()),
            &mp,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        assert!(is_mounted(&mp), "a mount point with a space is found");
        let released = release(&inst);
        if is_mounted(&mp) {
            let _ = nix::mount::umount2(&mp, nix::mount::MntFlags::MNT_DETACH);
            panic!("release left the disk mounted: {released:?}");
        }
        released.unwrap();
        crate::fsutil::remove_tree(&inst).unwrap();
        assert_eq!(
            std::fs::read(host.path().join("precious")).unwrap(),
            b"keep me"
        );
    }
}
