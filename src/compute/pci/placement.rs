//! The Placement view of the tracked devices (`[pci] report_in_placement`,
//! `nova/compute/pci_placement_translator.py`): one child provider per device
//! or per PF, its resource class and traits.

use super::*;

/// Upper case, runs of other characters than `[A-Z0-9_]` as `_`.
pub(super) fn normalize_name(name: &str) -> String {
    let mut out = String::new();
    let mut sep = false;
    for c in name.to_uppercase().chars() {
        if c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' {
            out.push(c);
            sep = false;
        } else if !sep {
            out.push('_');
            sep = true;
        }
    }
    out
}

/// os-resource-classes 1.1's standard classes.
pub(super) const STANDARD_RCS: &[&str] = &[
    "VCPU",
    "MEMORY_MB",
    "DISK_GB",
    "PCI_DEVICE",
    "SRIOV_NET_VF",
    "NUMA_SOCKET",
    "NUMA_CORE",
    "NUMA_THREAD",
    "NUMA_MEMORY_MB",
    "IPV4_ADDRESS",
    "VGPU",
    "VGPU_DISPLAY_HEAD",
    "NET_BW_EGR_KILOBIT_PER_SEC",
    "NET_BW_IGR_KILOBIT_PER_SEC",
    "PCPU",
    "MEM_ENCRYPTION_CONTEXT",
    "FPGA",
    "PGPU",
    "NET_PACKET_RATE_KILOPACKET_PER_SEC",
    "NET_PACKET_RATE_EGR_KILOPACKET_PER_SEC",
    "NET_PACKET_RATE_IGR_KILOPACKET_PER_SEC",
];

/// `get_resource_class`: the `resource_class` tag, normalized, or
/// `CUSTOM_PCI_<VENDOR>_<PRODUCT>`.
pub fn resource_class(tag: Option<&str>, vendor_id: &str, product_id: &str) -> String {
    match tag.filter(|t| !t.is_empty()) {
        Some(rc) => {
            let up = rc.to_uppercase();
            if STANDARD_RCS.contains(&up.as_str()) || up.starts_with("CUSTOM_") {
                normalize_name(&up)
            } else {
                format!("CUSTOM_{}", normalize_name(&up))
            }
        }
        None => format!("CUSTOM_PCI_{vendor_id}_{product_id}").to_uppercase(),
    }
}

/// `get_traits`: the `traits` tag's names; names in os-traits' form
/// (`[A-Z0-9_]`) are kept, others become `CUSTOM_<NAME>`.
pub fn spec_traits(tag: Option<&str>) -> BTreeSet<String> {
    tag.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            let standard_form = t
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if standard_form {
                t.to_string()
            } else {
                let up = normalize_name(t);
                if up.starts_with("CUSTOM_") {
                    up
                } else {
                    format!("CUSTOM_{up}")
                }
            }
        })
        .collect()
}

/// One PCI resource provider of the view.
#[derive(Debug, Clone, PartialEq)]
pub struct PciProvider {
    pub name: String,
    pub resource_class: String,
    pub traits: BTreeSet<String>,
    pub total: u64,
    pub reserved: u64,
    /// Addresses of its devices.
    pub devices: Vec<String>,
    /// Instance -> devices of this provider it holds.
    pub consumers: BTreeMap<String, u64>,
    /// Whether it stands for one type-PCI or type-PF device (else VFs).
    pub has_parent: bool,
}

/// `PlacementView`: the providers the tracked devices make.
pub(super) fn placement_view(
    state: &State,
    env: &Env<'_>,
    nodename: &str,
) -> Result<BTreeMap<String, PciProvider>, String> {
    let mut rps: BTreeMap<String, PciProvider> = BTreeMap::new();
    let name_for = |a: &str| format!("{nodename}_{}", a.to_uppercase());
    for d in state.devs.iter().filter(|d| !d.is_gone()) {
        let Some(spec) = env.spec(d) else {
            if d.instance_uuid().is_some() {
                tracing::warn!(
                    address = d.address(),
                    "an allocated PCI device lost its device_spec: kept out of Placement"
                );
            }
            continue;
        };
        if spec.tag("physical_network").is_some_and(|p| !p.is_empty()) {
            continue;
        }
        let vendor = d.s("vendor_id").unwrap_or("");
        let product = d.s("product_id").unwrap_or("");
        let rc = resource_class(spec.tag("resource_class"), vendor, product);
        let mut traits = spec_traits(spec.tag("traits"));
        traits.insert(MANAGED_PCI_TRAIT.into());
        traits.insert("OWNER_NOVA".into());
        if spec
            .tag("live_migratable")
            .and_then(bool_from_string)
            .unwrap_or(false)
        {
            traits.insert("HW_PCI_LIVE_MIGRATABLE".into());
        }
        let parent = matches!(d.dev_type(), TYPE_PCI | TYPE_PF);
        let name = if parent {
            name_for(d.address())
        } else {
            let p = d.parent_addr().ok_or_else(|| {
                format!(
                    "Missing parent address for PCI device {} with type {}",
                    d.address(),
                    d.dev_type()
                )
            })?;
            name_for(p)
        };
        let otu = parent
            && spec
                .tag("one_time_use")
                .and_then(bool_from_string)
                .unwrap_or(false);
        if otu {
            traits.insert("HW_PCI_ONE_TIME_USE".into());
        }
        let fresh = !rps.contains_key(&name);
        let rp = rps.entry(name.clone()).or_insert_with(|| PciProvider {
            name: name.clone(),
            resource_class: rc.clone(),
            traits: traits.clone(),
            total: 0,
            reserved: 0,
            devices: Vec::new(),
            consumers: BTreeMap::new(),
            has_parent: parent,
        });
        if !fresh && (parent || rp.has_parent) {
            return Err(format!(
                "PCI devices {} and {} would share the provider {name}: a PF and its VFs cannot \
                 both be in [pci]device_spec",
                d.address(),
                rp.devices.join(",")
            ));
        }
        if rp.resource_class != rc || rp.traits != traits {
            return Err(format!(
                "the VFs of {name} have different resource classes or traits"
            ));
        }
        rp.devices.push(d.address().to_string());
        rp.total += 1;
        if let Some(u) = d.instance_uuid() {
            *rp.consumers.entry(u.to_string()).or_default() += 1;
            if otu {
                rp.reserved = rp.total;
            }
        }
    }
    Ok(rps)
}
