//! Host devices and paths given to instances (a leaf under the driver):
//! parsing `TYPE,KEY=VALUE,...` device strings, the operator's allowlist,
//! checking that a device is present, and setting it up on the host (device
//! nodes owned by the container's root, block devices mounted under the
//! instance directory) for the bundle to bind in. USB, GPU, NIC and PCI
//! devices are not supported.

mod allowlist;

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

pub use allowlist::Allowlist;

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
    #[error("device {name}: setting up {path} failed: {reason}")]
    Setup {
        name: String,
        path: PathBuf,
        reason: String,
    },
}

/// One device of an instance, as asked for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DeviceConfig {
    /// A character device node (`/dev/fuse`).
    UnixChar {
        path: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<PathBuf>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<u32>,
    },
    /// A block device node (`/dev/loop3`).
    UnixBlock {
        path: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<PathBuf>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<u32>,
    },
    /// A host directory or a block device's filesystem, mounted at `path`.
    Disk {
        source: PathBuf,
        path: PathBuf,
        #[serde(default)]
        readonly: bool,
    },
}

impl DeviceConfig {
    /// The allowlist type name.
    pub fn kind(&self) -> &'static str {
        match self {
            DeviceConfig::UnixChar { .. } => "unix-char",
            DeviceConfig::UnixBlock { .. } => "unix-block",
            DeviceConfig::Disk { .. } => "disk",
        }
    }

    /// The host path the allowlist is matched against.
    pub fn host_path(&self) -> &Path {
        match self {
            DeviceConfig::UnixChar { path, .. } | DeviceConfig::UnixBlock { path, .. } => path,
            DeviceConfig::Disk { source, .. } => source,
        }
    }
}

fn invalid(name: &str, reason: impl Into<String>) -> DeviceError {
    DeviceError::Invalid {
        name: name.to_string(),
        reason: reason.into(),
    }
}

/// Device names: 1-64 letters, digits, `-` and `_`.
pub fn validate_name(name: &str) -> Result<(), DeviceError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            name,
            "invalid device name: use 1-64 letters, digits, - and _",
        ))
    }
}

/// An absolute path without `..`, `.` or empty components.
fn clean_abs(name: &str, key: &str, value: &str) -> Result<PathBuf, DeviceError> {
    let p = PathBuf::from(value);
    let ok = p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if ok {
        Ok(p)
    } else {
        Err(invalid(
            name,
            format!("{key}={value:?} must be an absolute path without . or .."),
        ))
    }
}

fn strict_bool(name: &str, key: &str, value: &str) -> Result<bool, DeviceError> {
    crate::config::parse_bool(value).ok_or_else(|| {
        invalid(
            name,
            format!("{key}={value:?} is not a boolean (true/false, yes/no, 1/0)"),
        )
    })
}

/// Parses `TYPE,KEY=VALUE,...` (the syntax of `--device NAME=...` and of the
/// `corral:device:NAME` extra spec).
pub fn parse(name: &str, text: &str) -> Result<DeviceConfig, DeviceError> {
    validate_name(name)?;
    let mut parts = text.split(',').map(str::trim);
    let kind = parts.next().unwrap_or("");
    let mut kv = BTreeMap::new();
    for p in parts {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| invalid(name, format!("{p:?} is not KEY=VALUE")))?;
        if kv.insert(k.trim(), v.trim()).is_some() {
            return Err(invalid(name, format!("{k} is given twice")));
        }
    }
    let allowed: &[&str] = match kind {
        "unix-char" | "unix-block" => &["path", "target", "mode"],
        "disk" => &["source", "path", "readonly", "shift"],
        "usb" | "gpu" | "nic" | "pci" | "infiniband" | "proxy" | "tpm" | "unix-hotplug" => {
            return Err(invalid(
                name,
                format!(
                    "device type {kind} is not supported (supported: unix-char, unix-block, disk)"
                ),
            ))
        }
        other => {
            return Err(invalid(
                name,
                format!("unknown device type {other:?} (supported: unix-char, unix-block, disk)"),
            ))
        }
    };
    if let Some(k) = kv.keys().find(|k| !allowed.contains(k)) {
        return Err(invalid(
            name,
            format!(
                "unknown key {k:?} for {kind} (keys: {})",
                allowed.join(", ")
            ),
        ));
    }
    let need = |k: &str| -> Result<&str, DeviceError> {
        kv.get(k)
            .copied()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| invalid(name, format!("{kind} needs {k}=")))
    };
    match kind {
        "disk" => {
            if let Some(v) = kv.get("shift") {
                if strict_bool(name, "shift", v)? {
                    return Err(invalid(
                        name,
                        "shift=true is not supported: the host's owners are kept",
                    ));
                }
            }
            let path = clean_abs(name, "path", need("path")?)?;
            if path == Path::new("/") {
                return Err(invalid(name, "path=/ would hide the root filesystem"));
            }
            Ok(DeviceConfig::Disk {
                source: clean_abs(name, "source", need("source")?)?,
                path,
                readonly: match kv.get("readonly") {
                    Some(v) => strict_bool(name, "readonly", v)?,
                    None => false,
                },
            })
        }
        _ => {
            let path = clean_abs(name, "path", need("path")?)?;
            let target = kv
                .get("target")
                .map(|t| clean_abs(name, "target", t))
                .transpose()?;
            if let Some(t) = &target {
                if !t.starts_with("/dev") {
                    return Err(invalid(name, "target must be under /dev"));
                }
            }
            let mode = kv
                .get("mode")
                .map(|m| {
                    u32::from_str_radix(m, 8)
                        .ok()
                        .filter(|m| *m <= 0o777)
                        .ok_or_else(|| invalid(name, format!("mode={m:?} is not an octal mode")))
                })
                .transpose()?;
            Ok(if kind == "unix-char" {
                DeviceConfig::UnixChar { path, target, mode }
            } else {
                DeviceConfig::UnixBlock { path, target, mode }
            })
        }
    }
}

/// A device node's kind and numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevNum {
    pub block: bool,
    pub major: u64,
    pub minor: u64,
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

/// Checks one device: allowed (by its path as given and as resolved, so a
/// symlink cannot lead out of an allowed tree) and present.
pub fn resolve(name: &str, dev: &DeviceConfig, allow: &Allowlist) -> Result<Resolved, DeviceError> {
    let kind = dev.kind();
    let path = dev.host_path();
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
    }
}

/// What the bundle needs for one set-up device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// Host path bound into the container.
    pub source: PathBuf,
    pub target: PathBuf,
    pub readonly: bool,
    /// The device cgroup rule to allow, for nodes.
    pub allow: Option<DevNum>,
}

fn nodes_dir(instance_dir: &Path) -> PathBuf {
    instance_dir.join("devices")
}

fn disks_dir(instance_dir: &Path) -> PathBuf {
    instance_dir.join("disks")
}

fn mkdir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(dir)
}

/// Whether `path` is a mount point (per /proc/self/mountinfo).
fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .any(|mp| mp == want)
}

/// The filesystem on a block device, by `blkid`.
fn fs_type(dev: &Path) -> Option<String> {
    let out = Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "TYPE"])
        .arg(dev)
        .output()
        .ok()?;
    let t = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !t.is_empty()).then_some(t)
}

/// Sets one device up on the host. `root` is the host uid/gid of the
/// container's root (0 when privileged): device nodes belong to it.
pub fn setup(instance_dir: &Path, dev: &Resolved, root: u32) -> Result<Prepared, DeviceError> {
    match dev {
        Resolved::Node {
            name,
            dev: num,
            target,
            mode,
        } => {
            let dir = nodes_dir(instance_dir);
            let node = dir.join(name);
            let fail = |reason: String| DeviceError::Setup {
                name: name.clone(),
                path: node.clone(),
                reason,
            };
            mkdir(&dir).map_err(|e| fail(e.to_string()))?;
            let _ = std::fs::remove_file(&node);
            let kind = if num.block {
                nix::sys::stat::SFlag::S_IFBLK
            } else {
                nix::sys::stat::SFlag::S_IFCHR
            };
            nix::sys::stat::mknod(
                &node,
                kind,
                nix::sys::stat::Mode::from_bits_truncate(*mode),
                nix::sys::stat::makedev(num.major, num.minor),
            )
            .map_err(|e| fail(e.to_string()))?;
            // mknod honours the umask: set the mode after it.
            nix::sys::stat::fchmodat(
                None,
                &node,
                nix::sys::stat::Mode::from_bits_truncate(*mode),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| fail(e.to_string()))?;
            std::os::unix::fs::chown(&node, Some(root), Some(root))
                .map_err(|e| fail(e.to_string()))?;
            Ok(Prepared {
                source: node,
                target: target.clone(),
                readonly: false,
                allow: Some(*num),
            })
        }
        Resolved::Dir {
            source,
            target,
            readonly,
        } => Ok(Prepared {
            source: source.clone(),
            target: target.clone(),
            readonly: *readonly,
            allow: None,
        }),
        Resolved::BlockDisk {
            name,
            source,
            target,
            readonly,
        } => {
            let mp = disks_dir(instance_dir).join(name);
            let fail = |reason: String| DeviceError::Setup {
                name: name.clone(),
                path: source.clone(),
                reason,
            };
            mkdir(&mp).map_err(|e| fail(e.to_string()))?;
            if !is_mounted(&mp) {
                let mut flags = nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV;
                if *readonly {
                    flags |= nix::mount::MsFlags::MS_RDONLY;
                }
                let candidates = match fs_type(source) {
                    Some(t) => vec![t],
                    None => vec!["ext4".to_string(), "xfs".to_string()],
                };
                let mut last = String::from("no filesystem found");
                let mut mounted = false;
                for t in &candidates {
                    match nix::mount::mount(
                        Some(source.as_path()),
                        &mp,
                        Some(t.as_str()),
                        flags,
                        None::<&str>,
                    ) {
                        Ok(()) => {
                            mounted = true;
                            break;
                        }
                        Err(e) => last = format!("mount as {t}: {e}"),
                    }
                }
                if !mounted {
                    let _ = std::fs::remove_dir(&mp);
                    return Err(fail(last));
                }
                tracing::debug!(device = %name, source = %source.display(), mountpoint = %mp.display(), "block device mounted");
            }
            Ok(Prepared {
                source: mp,
                target: target.clone(),
                readonly: *readonly,
                allow: None,
            })
        }
    }
}

/// Undoes every `setup` of an instance: unmounts its block devices and
/// removes its device nodes. An unmount that fails stops here, so that the
/// caller never removes the instance directory with a filesystem in it.
pub fn release(instance_dir: &Path) -> Result<(), DeviceError> {
    let disks = disks_dir(instance_dir);
    if let Ok(rd) = std::fs::read_dir(&disks) {
        for e in rd.flatten() {
            let mp = e.path();
            if is_mounted(&mp) {
                if let Err(err) = nix::mount::umount(&mp) {
                    tracing::debug!(mountpoint = %mp.display(), error = %err, "busy, detaching");
                    nix::mount::umount2(&mp, nix::mount::MntFlags::MNT_DETACH).map_err(|e| {
                        DeviceError::Setup {
                            name: e.to_string(),
                            path: mp.clone(),
                            reason: format!("unmount failed: {e}"),
                        }
                    })?;
                }
            }
            if is_mounted(&mp) {
                return Err(DeviceError::Setup {
                    name: mp
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    path: mp.clone(),
                    reason: "still mounted".into(),
                });
            }
            let _ = std::fs::remove_dir(&mp);
        }
        let _ = std::fs::remove_dir(&disks);
    }
    let nodes = nodes_dir(instance_dir);
    if nodes.exists() {
        crate::fsutil::remove_tree(&nodes).map_err(|e| DeviceError::Setup {
            name: "devices".into(),
            path: nodes.clone(),
            reason: e.to_string(),
        })?;
    }
    Ok(())
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
            ("g", "gpu,id=0"),
            ("u", "usb,vendorid=1d6b"),
            ("n", "nic,parent=br0"),
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
        let e = parse("g", "gpu,id=0").unwrap_err().to_string();
        assert!(e.contains("not supported"), "{e}");
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
}
