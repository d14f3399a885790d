//! Resolving `usb`, `gpu` and `nic` devices against the allowlist and the
//! host (under [`HostPaths`]), skipping what other instances hold.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::cdi;
use super::host::{self, HostPaths};
use super::{invalid, valid_ifname, Allowlist, DeviceError, Resolved};

/// Mode of `usb` and `gpu` nodes when `mode` is not given (as LXD).
const DEFAULT_MODE: u32 = 0o660;

pub(super) struct UsbWant<'a> {
    pub vendor: &'a str,
    pub product: Option<&'a str>,
    pub required: bool,
    pub mode: Option<u32>,
}

fn is_hex4(s: &str) -> bool {
    s.len() == 4 && s.chars().all(|c| c.is_ascii_hexdigit())
}

fn not_allowed(name: &str, kind: &'static str, what: &str) -> DeviceError {
    DeviceError::NotAllowed {
        name: name.to_string(),
        kind,
        path: PathBuf::from(what),
    }
}

fn not_present(name: &str, what: String, reason: String) -> DeviceError {
    DeviceError::NotPresent {
        name: name.to_string(),
        path: PathBuf::from(what),
        reason,
    }
}

/// Every USB device with the ids that the allowlist allows (one with the
/// ids that it does not allow is left out, and logged).
pub(super) fn usb(
    name: &str,
    want: &UsbWant,
    allow: &Allowlist,
    host: &HostPaths,
) -> Result<Resolved, DeviceError> {
    let vendor = want.vendor.to_ascii_lowercase();
    let product = want.product.map(str::to_ascii_lowercase);
    if !is_hex4(&vendor) || product.as_deref().is_some_and(|p| !is_hex4(p)) {
        return Err(invalid(name, "USB ids must be 4 hex digits"));
    }
    let wanted = format!("{vendor}:{}", product.as_deref().unwrap_or("*"));
    let may = match &product {
        Some(p) => allow.allows_str("usb", &format!("{vendor}:{p}")),
        None => allow.allows_usb_vendor(&vendor),
    };
    if !may {
        return Err(not_allowed(name, "usb", &wanted));
    }
    let matching: Vec<host::UsbDevice> = host::usb_devices(host)
        .into_iter()
        .filter(|u| u.vendor == vendor && product.as_deref().is_none_or(|p| u.product == p))
        .collect();
    let (allowed, refused): (Vec<_>, Vec<_>) = matching
        .into_iter()
        .partition(|u| allow.allows_str("usb", &u.ids()));
    if allowed.is_empty() {
        if let Some(u) = refused.first() {
            return Err(not_allowed(name, "usb", &u.ids()));
        }
        if want.required {
            let mut sel = format!("vendorid={vendor}");
            if let Some(p) = &product {
                sel.push_str(&format!(",productid={p}"));
            }
            return Err(not_present(
                name,
                format!("USB device {wanted}"),
                format!(
                    "nothing under {} matches {sel} (required=false allows none)",
                    host.usb_dir().display()
                ),
            ));
        }
    }
    for u in &refused {
        tracing::warn!(device = %name, usb = %u.busid, ids = %u.ids(), "USB device matches but is not allowed: left out");
    }
    let mode = want.mode.unwrap_or(DEFAULT_MODE);
    Ok(Resolved::Nodes {
        name: name.to_string(),
        kind: "usb",
        classes: allowed
            .iter()
            .map(|u| host::usb_class(&u.vendor, &u.product))
            .collect(),
        nodes: allowed
            .iter()
            .map(|u| {
                let target = u.target();
                super::NodeSpec {
                    dev: u.dev,
                    host: host.dev_path(&target),
                    target,
                    mode,
                }
            })
            .collect(),
        binds: Vec::new(),
        env: Vec::new(),
        claim: None,
    })
}

pub(super) struct GpuWant<'a> {
    pub vendor: Option<&'a str>,
    pub product: Option<&'a str>,
    pub pci: Option<&'a str>,
    pub id: Option<u32>,
    pub mode: Option<u32>,
}

impl GpuWant<'_> {
    /// `vendorid=10de,pci=0000:01:00.0`; empty for any GPU.
    fn selector(&self) -> String {
        let mut s = Vec::new();
        if let Some(v) = self.vendor {
            s.push(format!("vendorid={v}"));
        }
        if let Some(p) = self.product {
            s.push(format!("productid={p}"));
        }
        if let Some(p) = self.pci {
            s.push(format!("pci={p}"));
        }
        if let Some(i) = self.id {
            s.push(format!("id={i}"));
        }
        s.join(",")
    }
}

fn claim_gpu(addr: &str) -> String {
    format!("gpu:{addr}")
}

/// The first GPU (by PCI address) that matches, is allowed, is not taken
/// and has device nodes, with its CDI edits for NVIDIA.
pub(super) fn gpu(
    name: &str,
    want: &GpuWant,
    allow: &Allowlist,
    host: &HostPaths,
    taken: &BTreeSet<String>,
) -> Result<Resolved, DeviceError> {
    let vendor = want.vendor.map(str::to_ascii_lowercase);
    let product = want.product.map(str::to_ascii_lowercase);
    let pci = match want.pci {
        Some(p) => Some(
            super::pci_address(p)
                .ok_or_else(|| invalid(name, format!("pci={p:?} is not a PCI address")))?,
        ),
        None => None,
    };
    if vendor.as_deref().is_some_and(|v| !is_hex4(v))
        || product.as_deref().is_some_and(|p| !is_hex4(p))
    {
        return Err(invalid(name, "PCI ids must be 4 hex digits"));
    }
    let sel = GpuWant {
        vendor: vendor.as_deref(),
        product: product.as_deref(),
        pci: pci.as_deref(),
        id: want.id,
        mode: want.mode,
    }
    .selector();
    let what = if sel.is_empty() {
        "GPU".to_string()
    } else {
        format!("GPU {sel}")
    };
    let matches_sel = if sel.is_empty() {
        "no free GPU".to_string()
    } else {
        format!("no free GPU matches {sel}")
    };
    if !allow.has_kind("gpu") {
        return Err(not_allowed(name, "gpu", pci.as_deref().unwrap_or("(any)")));
    }
    if let Some(p) = &pci {
        if !allow.allows_str("gpu", p) {
            return Err(not_allowed(name, "gpu", p));
        }
    }
    let all = host::pci_gpus(host);
    let matching: Vec<&host::PciGpu> = all
        .iter()
        .filter(|g| {
            vendor.as_deref().is_none_or(|v| g.vendor == v)
                && product.as_deref().is_none_or(|p| g.product == p)
                && pci.as_deref().is_none_or(|p| g.addr == p)
                && want.id.is_none_or(|i| {
                    let card = format!("card{i}");
                    host::drm_nodes(host, &g.addr)
                        .iter()
                        .any(|(n, _)| *n == card)
                })
        })
        .collect();
    if matching.is_empty() {
        return Err(not_present(
            name,
            what,
            format!(
                "no display-class PCI device under {} matches",
                host.pci_dir().display()
            ),
        ));
    }
    let allowed: Vec<&host::PciGpu> = matching
        .iter()
        .copied()
        .filter(|g| allow.allows_str("gpu", &g.addr))
        .collect();
    if allowed.is_empty() {
        return Err(not_allowed(name, "gpu", &matching[0].addr));
    }
    let (free, held): (Vec<&host::PciGpu>, Vec<&host::PciGpu>) = allowed
        .iter()
        .partition(|g| !taken.contains(&claim_gpu(&g.addr)));
    if free.is_empty() {
        let held: Vec<&str> = held.iter().map(|g| g.addr.as_str()).collect();
        return Err(DeviceError::Busy {
            name: name.to_string(),
            reason: format!(
                "{matches_sel}: {} in use by other instances",
                held.join(", ")
            ),
        });
    }
    let mode = want.mode.unwrap_or(DEFAULT_MODE);
    let mut skipped = Vec::new();
    for g in free {
        let (mut nodes, nvidia) = match host::gpu_nodes(host, g, mode) {
            Ok((nodes, _)) if nodes.is_empty() => {
                skipped.push(format!(
                    "{} has no device nodes (no DRM or NVIDIA driver bound)",
                    g.addr
                ));
                continue;
            }
            Ok(found) => found,
            Err(e) => {
                skipped.push(e);
                continue;
            }
        };
        let mut binds = Vec::new();
        let mut env = Vec::new();
        if g.vendor == host::NVIDIA {
            let have: Vec<PathBuf> = nodes.iter().map(|n| n.target.clone()).collect();
            let mine = host::gpu_targets(host, g);
            let foreign: BTreeSet<PathBuf> = all
                .iter()
                .filter(|o| o.addr != g.addr)
                .flat_map(|o| host::gpu_targets(host, o))
                .collect();
            let edits = cdi::gpu_edits(
                host,
                &cdi::ForGpu {
                    mine: &mine,
                    have: &have,
                    minor: nvidia.as_ref().map(|n| n.minor),
                    uuid: nvidia.as_ref().and_then(|n| n.uuid.as_deref()),
                    foreign: &foreign,
                    mode,
                },
            )
            .map_err(|e| not_present(name, format!("GPU {}", g.addr), e))?;
            if let Some(edits) = edits {
                for n in edits.nodes {
                    if !nodes.iter().any(|o| o.target == n.target) {
                        nodes.push(n);
                    }
                }
                binds = edits.binds;
                env = edits.env;
            }
        }
        return Ok(Resolved::Nodes {
            name: name.to_string(),
            kind: "gpu",
            nodes,
            binds,
            env,
            claim: Some(claim_gpu(&g.addr)),
            classes: vec![host::gpu_class(&g.vendor, &g.product)],
        });
    }
    Err(not_present(
        name,
        what,
        format!("{matches_sel}: {}", skipped.join("; ")),
    ))
}

fn claim_nic(ifname: &str) -> String {
    format!("nic:{ifname}")
}

/// The host interface `parent` (or the first free allowed one), to appear
/// as `inside` (or the device name).
pub(super) fn nic(
    name: &str,
    parent: Option<&str>,
    inside: Option<&str>,
    allow: &Allowlist,
    host: &HostPaths,
    taken: &BTreeSet<String>,
) -> Result<Resolved, DeviceError> {
    let inside = inside.unwrap_or(name);
    if !valid_ifname(inside) || inside == "lo" {
        return Err(invalid(
            name,
            format!("{inside:?} is not a usable interface name inside the container"),
        ));
    }
    let host_if = match parent {
        Some(p) => {
            if !valid_ifname(p) || p == "lo" {
                return Err(invalid(
                    name,
                    format!("parent={p:?} is not a usable host interface"),
                ));
            }
            if !allow.allows_str("nic", p) {
                return Err(not_allowed(name, "nic", p));
            }
            let path = host.net_dir().join(p);
            if !path.exists() {
                return Err(DeviceError::NotPresent {
                    name: name.to_string(),
                    path,
                    reason: "no such network interface".into(),
                });
            }
            if taken.contains(&claim_nic(p)) {
                return Err(DeviceError::Busy {
                    name: name.to_string(),
                    reason: format!("host interface {p} is in use by another instance"),
                });
            }
            p.to_string()
        }
        None => {
            if !allow.has_kind("nic") {
                return Err(not_allowed(name, "nic", "(any)"));
            }
            let allowed: Vec<String> = host::interfaces(host)
                .into_iter()
                .filter(|i| i != "lo" && allow.allows_str("nic", i))
                .collect();
            if allowed.is_empty() {
                return Err(not_present(
                    name,
                    "a host interface".into(),
                    format!(
                        "nothing under {} matches the nic patterns of [corral] device_allowlist",
                        host.net_dir().display()
                    ),
                ));
            }
            match allowed.iter().find(|i| !taken.contains(&claim_nic(i))) {
                Some(i) => i.clone(),
                None => {
                    return Err(DeviceError::Busy {
                        name: name.to_string(),
                        reason: format!(
                            "no free host interface: {} in use by other instances",
                            allowed.join(", ")
                        ),
                    })
                }
            }
        }
    };
    Ok(Resolved::Nic {
        name: name.to_string(),
        claim: claim_nic(&host_if),
        host_if,
        inside: inside.to_string(),
    })
}
