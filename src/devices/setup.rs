//! Setting resolved devices up on the host and taking them down: device
//! nodes made under the instance directory and owned by the container's
//! root, block devices mounted there, what the bundle binds in.

use super::*;

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

/// A host interface to move into the container's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicMove {
    pub host_name: String,
    pub inside_name: String,
}

/// What the bundle needs for one set-up device of any type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Setup {
    /// Bind mounts (device nodes carry their cgroup rule in `allow`).
    pub mounts: Vec<Prepared>,
    /// `KEY=VALUE` entries for the container's environment.
    pub env: Vec<String>,
    pub nic: Option<NicMove>,
}

pub(super) fn nodes_dir(instance_dir: &Path) -> PathBuf {
    instance_dir.join("devices")
}

pub(super) fn disks_dir(instance_dir: &Path) -> PathBuf {
    instance_dir.join("disks")
}

pub(super) fn mkdir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(dir)
}

/// Whether `path` is a mount point (per /proc/self/mountinfo, unescaped:
/// a state path with a space in it is found too).
pub(super) fn is_mounted(path: &Path) -> bool {
    crate::fsutil::is_mount_point(path)
}

/// The filesystem on a block device, by `blkid`.
pub(super) fn fs_type(dev: &Path) -> Option<String> {
    let out = Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "TYPE"])
        .arg(dev)
        .output()
        .ok()?;
    let t = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !t.is_empty()).then_some(t)
}

/// Makes the device node `node` (replacing what is there), owned by `root`
/// with `mode`.
pub(super) fn make_node(
    name: &str,
    node: &Path,
    num: DevNum,
    mode: u32,
    root: u32,
) -> Result<(), DeviceError> {
    let fail = |reason: String| DeviceError::Setup {
        name: name.to_string(),
        path: node.to_path_buf(),
        reason,
    };
    if let Some(dir) = node.parent() {
        mkdir(dir).map_err(|e| fail(e.to_string()))?;
    }
    let _ = std::fs::remove_file(node);
    let kind = if num.block {
        nix::sys::stat::SFlag::S_IFBLK
    } else {
        nix::sys::stat::SFlag::S_IFCHR
    };
    nix::sys::stat::mknod(
        node,
        kind,
        nix::sys::stat::Mode::from_bits_truncate(mode),
        nix::sys::stat::makedev(num.major, num.minor),
    )
    .map_err(|e| fail(e.to_string()))?;
    // mknod honours the umask: set the mode after it.
    nix::sys::stat::fchmodat(
        None,
        node,
        nix::sys::stat::Mode::from_bits_truncate(mode),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(|e| fail(e.to_string()))?;
    std::os::unix::fs::chown(node, Some(root), Some(root)).map_err(|e| fail(e.to_string()))
}

/// Sets one device of any type up on the host. `root` is the host uid/gid
/// of the container's root (0 when privileged): device nodes belong to it.
/// The nodes of a `usb` or `gpu` device are made as
/// `instance_dir/devices/<name>.<n>` (`.` is not in device names, so they
/// never meet another device's node); a `nic` needs nothing here, its move
/// is returned for the caller to make.
pub fn setup_on(instance_dir: &Path, dev: &Resolved, root: u32) -> Result<Setup, DeviceError> {
    match dev {
        Resolved::Nodes {
            name,
            nodes,
            binds,
            env,
            ..
        } => {
            let dir = nodes_dir(instance_dir);
            let mut mounts = Vec::with_capacity(nodes.len() + binds.len());
            for (i, n) in nodes.iter().enumerate() {
                let node = dir.join(format!("{name}.{i}"));
                make_node(name, &node, n.dev, n.mode, root)?;
                mounts.push(Prepared {
                    source: node,
                    target: n.target.clone(),
                    readonly: false,
                    allow: Some(n.dev),
                });
            }
            mounts.extend(binds.iter().map(|b| Prepared {
                source: b.source.clone(),
                target: b.target.clone(),
                readonly: b.readonly,
                allow: None,
            }));
            Ok(Setup {
                mounts,
                env: env.clone(),
                nic: None,
            })
        }
        Resolved::Nic {
            host_if, inside, ..
        } => Ok(Setup {
            mounts: Vec::new(),
            env: Vec::new(),
            nic: Some(NicMove {
                host_name: host_if.clone(),
                inside_name: inside.clone(),
            }),
        }),
        Resolved::Node { .. } | Resolved::Dir { .. } | Resolved::BlockDisk { .. } => Ok(Setup {
            mounts: vec![setup(instance_dir, dev, root)?],
            env: Vec::new(),
            nic: None,
        }),
    }
}

/// Sets one `unix-char`, `unix-block` or `disk` device up on the host (see
/// [`setup_on`] for every type). `root` is the host uid/gid of the
/// container's root (0 when privileged): device nodes belong to it.
pub fn setup(instance_dir: &Path, dev: &Resolved, root: u32) -> Result<Prepared, DeviceError> {
    match dev {
        Resolved::Node {
            name,
            dev: num,
            target,
            mode,
        } => {
            let node = nodes_dir(instance_dir).join(name);
            make_node(name, &node, *num, *mode, root)?;
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
        Resolved::Nodes { name, kind, .. } => Err(DeviceError::Setup {
            name: name.clone(),
            path: instance_dir.to_path_buf(),
            reason: format!("a {kind} device is set up by setup_on"),
        }),
        Resolved::Nic { name, .. } => Err(DeviceError::Setup {
            name: name.clone(),
            path: instance_dir.to_path_buf(),
            reason: "a nic device is set up by setup_on".into(),
        }),
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
