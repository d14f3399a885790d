//! Host PCI functions given to an instance (Nova's PCI passthrough,
//! `InstanceSpec::pci_devices`): the device nodes the container gets for each
//! claimed address, and the environment variable naming them.

use std::path::{Path, PathBuf};

use super::DriverError;

/// The environment variable listing an instance's PCI addresses.
pub const ENV_VAR: &str = "CORRAL_PCI_DEVICES";

/// How deep below a PCI function's directory device nodes are looked for
/// (`0000:00:02.0/virtio1/block/vda/dev` is 4).
const MAX_DEPTH: usize = 8;

/// One host device node of a PCI function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciNode {
    /// The node under `/dev` (bound at the same path in the container).
    pub path: PathBuf,
    pub block: bool,
    pub major: u64,
    pub minor: u64,
}

/// `CORRAL_PCI_DEVICES=addr,addr` for a non-empty list.
pub fn env(addresses: &[String]) -> Option<String> {
    (!addresses.is_empty()).then(|| format!("{ENV_VAR}={}", addresses.join(",")))
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
) -> Result<Vec<PciNode>, DriverError> {
    let link = sysfs.join("bus/pci/devices").join(address);
    let dir = std::fs::canonicalize(&link)
        .map_err(|_| DriverError::Invalid(format!("PCI device {address} is not on this host")))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn nodes_under_the_function_and_its_vfio_group() {
        let d = tempfile::tempdir().unwrap();
        let sys = d.path();
        let real = sys.join("devices/pci0000:00/0000:00:02.0");
        write(&real.join("vendor"), "0x1af4\n");
        let disk = real.join("virtio1/block/vda");
        write(&disk.join("dev"), "253:0\n");
        write(
            &disk.join("uevent"),
            "MAJOR=253\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n",
        );
        std::fs::create_dir_all(sys.join("class/block")).unwrap();
        symlink(sys.join("class/block"), disk.join("subsystem")).unwrap();
        let part = disk.join("vda1");
        write(&part.join("dev"), "253:1\n");
        write(&part.join("uevent"), "DEVNAME=vda1\n");
        // a link back up the tree is not followed
        symlink(&real, real.join("virtio1/loop")).unwrap();
        std::fs::create_dir_all(sys.join("bus/pci/devices")).unwrap();
        symlink(&real, sys.join("bus/pci/devices/0000:00:02.0")).unwrap();
        let nodes = device_nodes(sys, Path::new("/dev"), "0000:00:02.0").unwrap();
        assert_eq!(
            nodes,
            vec![
                PciNode {
                    path: "/dev/vda".into(),
                    block: true,
                    major: 253,
                    minor: 0
                },
                PciNode {
                    path: "/dev/vda1".into(),
                    block: false,
                    major: 253,
                    minor: 1
                },
            ]
        );

        // bound to vfio-pci: the group node and the container node
        let f = sys.join("devices/pci0000:00/0000:00:05.0");
        write(&f.join("vendor"), "0x1af4\n");
        std::fs::create_dir_all(sys.join("bus/pci/drivers/vfio-pci")).unwrap();
        symlink(sys.join("bus/pci/drivers/vfio-pci"), f.join("driver")).unwrap();
        std::fs::create_dir_all(sys.join("kernel/iommu_groups/7")).unwrap();
        symlink(sys.join("kernel/iommu_groups/7"), f.join("iommu_group")).unwrap();
        write(&sys.join("class/vfio/7/dev"), "511:0\n");
        symlink(&f, sys.join("bus/pci/devices/0000:00:05.0")).unwrap();
        let nodes = device_nodes(sys, Path::new("/dev"), "0000:00:05.0").unwrap();
        let paths: Vec<_> = nodes.iter().map(|n| n.path.clone()).collect();
        assert_eq!(
            paths,
            vec![
                PathBuf::from("/dev/vfio/7"),
                PathBuf::from("/dev/vfio/vfio")
            ]
        );
        assert_eq!((nodes[0].major, nodes[0].minor), (511, 0));
        assert!(device_nodes(sys, Path::new("/dev"), "0000:00:09.0").is_err());
    }

    #[test]
    fn the_environment_variable() {
        assert_eq!(env(&[]), None);
        assert_eq!(
            env(&["0000:00:05.0".into(), "0000:81:00.1".into()]).as_deref(),
            Some("CORRAL_PCI_DEVICES=0000:00:05.0,0000:81:00.1")
        );
    }
}
