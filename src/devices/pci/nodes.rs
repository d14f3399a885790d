//! The host device nodes of one PCI function: what a container needs bound in
//! for a function passed through to it (the nodes below its sysfs directory,
//! and for a `vfio-pci` function its IOMMU group's VFIO nodes).

use std::path::{Path, PathBuf};

/// How deep below a PCI function's directory device nodes are looked for
/// (`0000:00:02.0/virtio1/block/vda/dev` is 4).
const MAX_DEPTH: usize = 8;

/// The PCI function is not on this host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("PCI device {address} is not on this host")]
pub struct NotOnHost {
    pub address: String,
}

/// One host device node of a PCI function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciNode {
    /// The node under `/dev` (bound at the same path in the container).
    pub path: PathBuf,
    pub block: bool,
    pub major: u64,
    pub minor: u64,
}

fn link_name(path: &Path) -> Option<String> {
    std::fs::read_link(path)
        .ok()?
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
}

/// `MAJ:MIN` of a sysfs `dev` file.
fn read_dev(path: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let (ma, mi) = text.trim().split_once(':')?;
    Some((ma.parse().ok()?, mi.parse().ok()?))
}

/// `DEVNAME=` of a sysfs `uevent` file.
fn devname(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join("uevent"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME=").map(str::to_string))
        .filter(|n| !n.is_empty() && !n.split('/').any(|c| c == ".."))
}

fn walk(dir: &Path, dev_root: &Path, depth: usize, out: &mut Vec<PciNode>) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        // links (subsystem, driver, physfn, iommu_group...) lead out of the tree
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            walk(&path, dev_root, depth + 1, out);
        } else if meta.is_file() && e.file_name() == "dev" {
            let (Some((major, minor)), Some(name)) = (read_dev(&path), devname(dir)) else {
                continue;
            };
            out.push(PciNode {
                path: dev_root.join(name),
                block: link_name(&dir.join("subsystem")).as_deref() == Some("block"),
                major,
                minor,
            });
        }
    }
}

/// The device nodes of one PCI function: every `dev` below
/// `{sysfs}/bus/pci/devices/ADDR` (its `uevent` `DEVNAME` under `dev_root`, a
/// block node when its subsystem is `block`), and for a function bound to
/// `vfio-pci` its IOMMU group `/dev/vfio/<group>` with `/dev/vfio/vfio`.
pub fn device_nodes(
    sysfs: &Path,
    dev_root: &Path,
    address: &str,
) -> Result<Vec<PciNode>, NotOnHost> {
    let link = sysfs.join("bus/pci/devices").join(address);
    let dir = std::fs::canonicalize(&link).map_err(|_| NotOnHost {
        address: address.to_string(),
    })?;
    let mut out = Vec::new();
    walk(&dir, dev_root, 0, &mut out);
    if link_name(&dir.join("driver")).as_deref() == Some("vfio-pci") {
        if let Some(group) = link_name(&dir.join("iommu_group")) {
            if let Some((major, minor)) =
                read_dev(&sysfs.join("class/vfio").join(&group).join("dev"))
            {
                out.push(PciNode {
                    path: dev_root.join("vfio").join(&group),
                    block: false,
                    major,
                    minor,
                });
            }
            // the VFIO container device (misc 10:196)
            out.push(PciNode {
                path: dev_root.join("vfio/vfio"),
                block: false,
                major: 10,
                minor: 196,
            });
        }
    }
    Ok(out)
}
