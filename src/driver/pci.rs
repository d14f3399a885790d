//! Host PCI functions given to an instance (Nova's PCI passthrough,
//! `InstanceSpec::pci_devices`): the device nodes the container gets for each
//! claimed address, and the environment variable naming them. Walking sysfs
//! for the nodes is [`crate::devices::pci`]'s; this maps its error to the
//! driver's.

use std::path::Path;

use super::DriverError;
use crate::devices::pci;
pub use crate::devices::pci::PciNode;

/// The environment variable listing an instance's PCI addresses.
pub const ENV_VAR: &str = "CORRAL_PCI_DEVICES";

/// `CORRAL_PCI_DEVICES=addr,addr` for a non-empty list.
pub fn env(addresses: &[String]) -> Option<String> {
    (!addresses.is_empty()).then(|| format!("{ENV_VAR}={}", addresses.join(",")))
}

/// The device nodes of one PCI function (see
/// [`crate::devices::pci::device_nodes`]); a function not on this host is
/// an invalid request.
pub fn device_nodes(
    sysfs: &Path,
    dev_root: &Path,
    address: &str,
) -> Result<Vec<PciNode>, DriverError> {
    pci::device_nodes(sysfs, dev_root, address).map_err(|e| DriverError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

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
