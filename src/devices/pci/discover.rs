//! What the host's sysfs says about its PCI functions: the functions under
//! `bus/pci/devices` as the libvirt driver describes them (`_get_pcidev_info`),
//! whether an address is an SR-IOV physical function, which function a
//! network interface sits on.

use std::path::Path;

use super::{DeviceIds, PciAddress, TYPE_PCI, TYPE_PF, TYPE_VF};

/// Reads `{sysfs}/bus/pci/devices/ADDR/sriov_totalvfs` > 0 (`is_physical_function`).
pub fn is_physical_function(sysfs: &Path, address: &str) -> bool {
    std::fs::read_to_string(
        sysfs
            .join("bus/pci/devices")
            .join(address)
            .join("sriov_totalvfs"),
    )
    .ok()
    .and_then(|t| t.trim().parse::<u64>().ok())
    .is_some_and(|n| n > 0)
}

/// The PCI address of a network interface and whether it is a PF
/// (`get_function_by_ifname`).
pub fn function_by_ifname(sysfs: &Path, ifname: &str) -> Option<(String, bool)> {
    let dev = sysfs.join("class/net").join(ifname).join("device");
    let target = std::fs::read_link(&dev).ok()?;
    let addr = target
        .to_string_lossy()
        .trim_matches(|c| c == '.' || c == '/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    if addr.is_empty() {
        return None;
    }
    let pf = std::fs::read_to_string(dev.join("sriov_totalvfs"))
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0);
    Some((addr, pf))
}

/// One host PCI function, as the libvirt driver reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostDevice {
    pub address: String,
    pub vendor_id: String,
    pub product_id: String,
    pub dev_type: String,
    pub parent_addr: Option<String>,
    pub numa_node: Option<i64>,
    pub dev_id: String,
    pub label: String,
    /// Keys that are not `PciDevice` fields: they go to `extra_info`
    /// (`mac_address` of a PF, `parent_ifname` of a VF, spec tags `managed`
    /// and `live_migratable`).
    pub extra: Vec<(String, String)>,
}

impl HostDevice {
    /// What a `device_spec` is matched against.
    pub fn ids(&self) -> DeviceIds<'_> {
        DeviceIds {
            vendor_id: &self.vendor_id,
            product_id: &self.product_id,
            address: &self.address,
            parent_addr: self.parent_addr.as_deref(),
            card_serial_number: None,
        }
    }
}

fn read_trim(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// `0x1af4` as `1af4`.
fn read_id(path: &Path) -> Option<String> {
    let t = read_trim(path)?;
    let t = t.strip_prefix("0x").unwrap_or(&t);
    u32::from_str_radix(t, 16)
        .ok()
        .filter(|v| *v <= 0xFFFF)
        .map(|v| format!("{v:04x}"))
}

fn link_name(path: &Path) -> Option<String> {
    let target = std::fs::read_link(path).ok()?;
    target.file_name().map(|n| n.to_string_lossy().to_string())
}

/// The first network interface under a device directory.
fn first_netdev(dev: &Path) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(dev.join("net"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names.into_iter().next()
}

/// The PCI functions under `{sysfs}/bus/pci/devices`, sorted by address;
/// addresses nova cannot parse (a 32-bit domain) are skipped as nova skips them.
pub fn discover(sysfs: &Path) -> Vec<HostDevice> {
    let root = sysfs.join("bus/pci/devices");
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(addr) = PciAddress::parse(&name) else {
            tracing::debug!(address = %name, "skipping a PCI device nova cannot address");
            continue;
        };
        let dir = root.join(&name);
        let (Some(vendor_id), Some(product_id)) =
            (read_id(&dir.join("vendor")), read_id(&dir.join("device")))
        else {
            continue;
        };
        let numa_node = read_trim(&dir.join("numa_node"))
            .and_then(|t| t.parse::<i64>().ok())
            .filter(|n| *n >= 0);
        let address = addr.to_string();
        let mut extra = Vec::new();
        let parent = link_name(&dir.join("physfn")).and_then(|p| PciAddress::parse(&p));
        let dev_type = if parent.is_some() {
            if dir.join("net").is_dir() {
                if let Some(ifname) = first_netdev(&dir.join("physfn")) {
                    extra.push(("parent_ifname".to_string(), ifname));
                }
            }
            TYPE_VF
        } else {
            let total = read_trim(&dir.join("sriov_totalvfs"))
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(0);
            let has_vfs = std::fs::read_dir(&dir).is_ok_and(|d| {
                d.filter_map(Result::ok)
                    .any(|e| e.file_name().to_string_lossy().starts_with("virtfn"))
            });
            if total > 0 || has_vfs {
                if let Some(ifname) = first_netdev(&dir) {
                    if let Some(mac) = read_trim(&dir.join("net").join(ifname).join("address")) {
                        extra.push(("mac_address".to_string(), mac));
                    }
                }
                TYPE_PF
            } else {
                TYPE_PCI
            }
        };
        out.push(HostDevice {
            dev_id: format!(
                "pci_{}_{}_{}_{}",
                addr.domain, addr.bus, addr.slot, addr.function
            ),
            label: format!("label_{vendor_id}_{product_id}"),
            address,
            vendor_id,
            product_id,
            dev_type: dev_type.to_string(),
            parent_addr: parent.map(|p| p.to_string()),
            numa_node,
            extra,
        });
    }
    out.sort_by(|a, b| a.address.cmp(&b.address));
    out
}
