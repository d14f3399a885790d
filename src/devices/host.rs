//! The host as seen through sysfs, devfs and procfs, under roots that tests
//! point at a fake tree: USB devices, display-class PCI devices (GPUs) and
//! their nodes, network interfaces, and the inventory of countable devices
//! for Placement.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{dev_num, Allowlist, DevNum, NodeSpec};

/// Where the host's sysfs, devfs, procfs and CDI specs are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPaths {
    /// `/sys`
    pub sys: PathBuf,
    /// `/dev`
    pub dev: PathBuf,
    /// `/proc` (for `/proc/driver/nvidia`)
    pub proc: PathBuf,
    /// CDI spec directories, lowest priority first: a spec in a later
    /// directory wins (`/etc/cdi`, `/var/run/cdi`).
    pub cdi_dirs: Vec<PathBuf>,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            sys: PathBuf::from("/sys"),
            dev: PathBuf::from("/dev"),
            proc: PathBuf::from("/proc"),
            cdi_dirs: vec![PathBuf::from("/etc/cdi"), PathBuf::from("/var/run/cdi")],
        }
    }
}

impl HostPaths {
    /// A host `/dev/...` path as found under `dev`; other paths unchanged.
    pub(super) fn dev_path(&self, p: &Path) -> PathBuf {
        match p.strip_prefix("/dev") {
            Ok(rest) if !rest.as_os_str().is_empty() => self.dev.join(rest),
            _ => p.to_path_buf(),
        }
    }

    pub(super) fn usb_dir(&self) -> PathBuf {
        self.sys.join("bus/usb/devices")
    }

    pub(super) fn pci_dir(&self) -> PathBuf {
        self.sys.join("bus/pci/devices")
    }

    pub(super) fn net_dir(&self) -> PathBuf {
        self.sys.join("class/net")
    }
}

/// The Placement class of host interfaces.
pub const NIC_CLASS: &str = "CUSTOM_CORRAL_NIC";

pub(super) fn usb_class(vendor: &str, product: &str) -> String {
    format!(
        "CUSTOM_CORRAL_USB_{}_{}",
        vendor.to_ascii_uppercase(),
        product.to_ascii_uppercase()
    )
}

pub(super) fn gpu_class(vendor: &str, product: &str) -> String {
    format!(
        "CUSTOM_CORRAL_GPU_{}_{}",
        vendor.to_ascii_uppercase(),
        product.to_ascii_uppercase()
    )
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// `189:3` as in sysfs `dev` files.
fn read_dev(p: &Path) -> Option<(u64, u64)> {
    let t = read_trim(p)?;
    let (a, b) = t.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// A hex id as in sysfs (`0x10de` or `1d6b`), as 4 lower-case digits.
fn read_id(p: &Path) -> Option<String> {
    let t = read_trim(p)?.to_ascii_lowercase();
    let t = t.strip_prefix("0x").unwrap_or(&t).to_string();
    (t.len() == 4 && t.chars().all(|c| c.is_ascii_hexdigit())).then_some(t)
}

/// Entry names of a directory, sorted; none when it cannot be read.
fn entries(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// One USB device (not an interface) in sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct UsbDevice {
    pub busid: String,
    pub vendor: String,
    pub product: String,
    pub busnum: u32,
    pub devnum: u32,
    pub dev: DevNum,
}

impl UsbDevice {
    /// `1d6b:0002`, as the allowlist matches it.
    pub fn ids(&self) -> String {
        format!("{}:{}", self.vendor, self.product)
    }

    /// `/dev/bus/usb/BBB/DDD`.
    pub fn target(&self) -> PathBuf {
        PathBuf::from(format!(
            "/dev/bus/usb/{:03}/{:03}",
            self.busnum, self.devnum
        ))
    }
}

/// The USB devices under `{sys}/bus/usb/devices`, by bus id; interfaces
/// (no `idVendor`) and entries that cannot be read are left out.
pub(super) fn usb_devices(host: &HostPaths) -> Vec<UsbDevice> {
    let dir = host.usb_dir();
    let mut out = Vec::new();
    for busid in entries(&dir) {
        let d = dir.join(&busid);
        let Some(vendor) = read_id(&d.join("idVendor")) else {
            continue;
        };
        let found = (|| {
            Some(UsbDevice {
                vendor: vendor.clone(),
                product: read_id(&d.join("idProduct"))?,
                busnum: read_trim(&d.join("busnum"))?.parse().ok()?,
                devnum: read_trim(&d.join("devnum"))?.parse().ok()?,
                dev: read_dev(&d.join("dev")).map(|(major, minor)| DevNum {
                    block: false,
                    major,
                    minor,
                })?,
                busid: busid.clone(),
            })
        })();
        match found {
            Some(u) => out.push(u),
            None => {
                tracing::debug!(path = %d.display(), "USB device without readable ids or numbers, skipped")
            }
        }
    }
    out
}

/// A display-class PCI device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PciGpu {
    /// `0000:01:00.0`
    pub addr: String,
    pub vendor: String,
    pub product: String,
}

pub(super) const NVIDIA: &str = "10de";

/// The PCI devices of class 0x03 (display) under `{sys}/bus/pci/devices`,
/// by address.
pub(super) fn pci_gpus(host: &HostPaths) -> Vec<PciGpu> {
    let dir = host.pci_dir();
    let mut out = Vec::new();
    for addr in entries(&dir) {
        let Some(addr_norm) = super::pci_address(&addr) else {
            continue;
        };
        let d = dir.join(&addr);
        let class = read_trim(&d.join("class")).and_then(|c| {
            u32::from_str_radix(c.trim_start_matches("0x").trim_start_matches("0X"), 16).ok()
        });
        if class.map(|c| c >> 16) != Some(0x03) {
            continue;
        }
        let (Some(vendor), Some(product)) =
            (read_id(&d.join("vendor")), read_id(&d.join("device")))
        else {
            continue;
        };
        out.push(PciGpu {
            addr: addr_norm,
            vendor,
            product,
        });
    }
    out
}

/// A GPU's DRM nodes (`card0`, `renderD128`) as `(name, numbers)`.
pub(super) fn drm_nodes(host: &HostPaths, addr: &str) -> Vec<(String, DevNum)> {
    let dir = host.pci_dir().join(addr).join("drm");
    let numbered = |n: &str, prefix: &str| {
        n.strip_prefix(prefix)
            .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
    };
    entries(&dir)
        .into_iter()
        .filter(|n| numbered(n, "card") || numbered(n, "renderD"))
        .filter_map(|n| {
            let (major, minor) = read_dev(&dir.join(&n).join("dev"))?;
            Some((
                n,
                DevNum {
                    block: false,
                    major,
                    minor,
                },
            ))
        })
        .collect()
}

/// What the NVIDIA driver says of a GPU in
/// `{proc}/driver/nvidia/gpus/ADDR/information`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NvidiaInfo {
    /// N of `/dev/nvidiaN`.
    pub minor: u32,
    /// `GPU-...`, as CDI device names may be.
    pub uuid: Option<String>,
}

pub(super) fn nvidia_info(host: &HostPaths, addr: &str) -> Option<NvidiaInfo> {
    let text = std::fs::read_to_string(
        host.proc
            .join("driver/nvidia/gpus")
            .join(addr)
            .join("information"),
    )
    .ok()?;
    let field = |key: &str| {
        text.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_string())
    };
    Some(NvidiaInfo {
        minor: field("Device Minor")?.parse().ok()?,
        uuid: field("GPU UUID").filter(|u| !u.is_empty()),
    })
}

/// The NVIDIA control nodes given with any NVIDIA GPU when present.
const NVIDIA_SHARED: [&str; 4] = [
    "nvidiactl",
    "nvidia-uvm",
    "nvidia-uvm-tools",
    "nvidia-modeset",
];

/// A character device node under `{dev}`, by `stat`.
fn char_node(host: &HostPaths, rel: &str) -> Option<DevNum> {
    std::fs::metadata(host.dev.join(rel))
        .ok()
        .as_ref()
        .and_then(dev_num)
        .filter(|d| !d.block)
}

/// Every node of one GPU: its DRM nodes, and for NVIDIA with the driver
/// loaded `/dev/nvidiaN` and the control nodes. An NVIDIA GPU the driver
/// knows whose `/dev/nvidiaN` is missing is an error.
pub(super) fn gpu_nodes(
    host: &HostPaths,
    gpu: &PciGpu,
    mode: u32,
) -> Result<(Vec<NodeSpec>, Option<NvidiaInfo>), String> {
    let mut nodes: Vec<NodeSpec> = drm_nodes(host, &gpu.addr)
        .into_iter()
        .map(|(n, dev)| NodeSpec {
            dev,
            host: host.dev.join("dri").join(&n),
            target: PathBuf::from("/dev/dri").join(&n),
            mode,
        })
        .collect();
    let nvidia = if gpu.vendor == NVIDIA {
        nvidia_info(host, &gpu.addr)
    } else {
        None
    };
    if let Some(info) = &nvidia {
        let own = format!("nvidia{}", info.minor);
        let dev = char_node(host, &own).ok_or_else(|| {
            format!(
                "the NVIDIA driver has GPU {} as minor {} but {} is not a character device (nvidia-modprobe -c {} makes it)",
                gpu.addr,
                info.minor,
                host.dev.join(&own).display(),
                info.minor
            )
        })?;
        nodes.push(NodeSpec {
            dev,
            host: host.dev.join(&own),
            target: PathBuf::from("/dev").join(&own),
            mode,
        });
        for shared in NVIDIA_SHARED {
            if let Some(dev) = char_node(host, shared) {
                nodes.push(NodeSpec {
                    dev,
                    host: host.dev.join(shared),
                    target: PathBuf::from("/dev").join(shared),
                    mode,
                });
            }
        }
    }
    Ok((nodes, nvidia))
}

/// The container paths of a GPU's own nodes (DRM and `/dev/nvidiaN`),
/// without checking them: what CDI device nodes of other GPUs look like.
pub(super) fn gpu_targets(host: &HostPaths, gpu: &PciGpu) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = drm_nodes(host, &gpu.addr)
        .into_iter()
        .map(|(n, _)| PathBuf::from("/dev/dri").join(n))
        .collect();
    if gpu.vendor == NVIDIA {
        if let Some(info) = nvidia_info(host, &gpu.addr) {
            out.push(PathBuf::from(format!("/dev/nvidia{}", info.minor)));
        }
    }
    out
}

/// The network interfaces under `{sys}/class/net`, by name.
pub(super) fn interfaces(host: &HostPaths) -> Vec<String> {
    entries(&host.net_dir())
        .into_iter()
        .filter(|n| super::valid_ifname(n))
        .collect()
}

/// Countable devices present and allowed, by Placement resource class:
/// `CUSTOM_CORRAL_GPU_<VENDOR>_<PRODUCT>` per GPU with device nodes,
/// `CUSTOM_CORRAL_USB_<VENDOR>_<PRODUCT>` per USB device and
/// `CUSTOM_CORRAL_NIC` per host interface (`lo` left out). Classes with
/// nothing are absent. Devices held by instances are counted: Placement
/// tracks their use.
pub fn inventory(host: &HostPaths, allow: &Allowlist) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    if allow.has_kind("gpu") {
        for g in pci_gpus(host) {
            if !allow.allows_str("gpu", &g.addr) {
                continue;
            }
            match gpu_nodes(host, &g, 0o660) {
                Ok((nodes, _)) if !nodes.is_empty() => {
                    *out.entry(gpu_class(&g.vendor, &g.product)).or_insert(0) += 1;
                }
                Ok(_) => {
                    tracing::debug!(gpu = %g.addr, "GPU without device nodes, not counted")
                }
                Err(e) => tracing::warn!(gpu = %g.addr, error = %e, "GPU not counted"),
            }
        }
    }
    if allow.has_kind("usb") {
        for u in usb_devices(host) {
            if allow.allows_str("usb", &u.ids()) {
                *out.entry(usb_class(&u.vendor, &u.product)).or_insert(0) += 1;
            }
        }
    }
    if allow.has_kind("nic") {
        let n = interfaces(host)
            .iter()
            .filter(|i| *i != "lo" && allow.allows_str("nic", i))
            .count();
        if n > 0 {
            out.insert(NIC_CLASS.to_string(), n as u32);
        }
    }
    out
}
