//! One `[pci] alias` entry (`nova/pci/request.py`), checked against nova's
//! alias schema, and the checks of the aliases together.

use serde_json::Value;

use super::{TYPE_PCI, TYPE_PF, TYPE_VF};
use crate::strutil::bool_from_string;

/// One `[pci] alias` entry.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PciAlias {
    pub name: String,
    pub vendor_id: Option<String>,
    pub product_id: Option<String>,
    pub device_type: Option<String>,
    /// `legacy` when not given.
    pub numa_policy: String,
    pub resource_class: Option<String>,
    pub traits: Option<String>,
    /// `true`/`false` when given.
    pub live_migratable: Option<String>,
}

impl PciAlias {
    /// One alias dict, checked against nova's `_ALIAS_SCHEMA`.
    pub fn parse(v: &Value) -> Result<PciAlias, String> {
        let map = v
            .as_object()
            .ok_or_else(|| format!("{v} is not a JSON dict"))?;
        let mut a = PciAlias {
            name: String::new(),
            vendor_id: None,
            product_id: None,
            device_type: None,
            numa_policy: "legacy".into(),
            resource_class: None,
            traits: None,
            live_migratable: None,
        };
        let hex4 = |s: &str| s.len() == 4 && s.chars().all(|c| c.is_ascii_hexdigit());
        for (k, val) in map {
            let s = val
                .as_str()
                .ok_or_else(|| format!("{val} is not of type 'string' ({k})"))?;
            match k.as_str() {
                "name" => {
                    let n = s.chars().count();
                    if !(1..=256).contains(&n) {
                        return Err(format!("name {s:?} must be 1 to 256 characters"));
                    }
                    a.name = s.trim().to_string();
                }
                "capability_type" if s == "pci" => {}
                "product_id" | "vendor_id" if !hex4(s) => {
                    return Err(format!("{s:?} does not match '^([\\da-fA-F]{{4}})$' ({k})"));
                }
                "product_id" => a.product_id = Some(s.to_string()),
                "vendor_id" => a.vendor_id = Some(s.to_string()),
                "device_type" if [TYPE_PCI, TYPE_PF, TYPE_VF].contains(&s) => {
                    a.device_type = Some(s.to_string())
                }
                "numa_policy" if ["required", "legacy", "preferred", "socket"].contains(&s) => {
                    a.numa_policy = s.to_string()
                }
                "resource_class" => a.resource_class = Some(s.to_string()),
                "traits" => a.traits = Some(s.to_string()),
                "live_migratable" => {
                    let b = bool_from_string(s)
                        .ok_or_else(|| format!("live_migratable {s:?} is not a boolean"))?;
                    a.live_migratable = Some(if b { "true" } else { "false" }.into());
                }
                "capability_type" | "device_type" | "numa_policy" => {
                    return Err(format!("{s:?} is not one of the allowed values of {k}"));
                }
                other => {
                    return Err(format!(
                        "Additional properties are not allowed ('{other}' was unexpected)"
                    ))
                }
            }
        }
        if !map.contains_key("name") {
            return Err("'name' is a required property".into());
        }
        Ok(a)
    }
}

/// Checks the aliases together (`get_alias_from_config`, `_validate_aliases`).
pub fn check_aliases(aliases: &[PciAlias], pci_in_placement: bool) -> Result<(), String> {
    let mut by_name: Vec<(&str, Vec<&PciAlias>)> = Vec::new();
    for a in aliases {
        match by_name.iter_mut().find(|(n, _)| *n == a.name) {
            Some((_, list)) => {
                let first = list[0];
                if first.numa_policy != a.numa_policy {
                    return Err(format!("NUMA policy mismatch for alias '{}'", a.name));
                }
                if first.device_type.is_none()
                    || a.device_type.is_none()
                    || first.device_type != a.device_type
                {
                    return Err(format!("Device type mismatch for alias '{}'", a.name));
                }
                list.push(a);
            }
            None => by_name.push((&a.name, vec![a])),
        }
    }
    if pci_in_placement {
        let multi: Vec<&str> = by_name
            .iter()
            .filter(|(_, l)| l.len() > 1)
            .map(|(n, _)| *n)
            .collect();
        if !multi.is_empty() {
            return Err(format!(
                "The PCI alias(es) {} have multiple specs but [filter_scheduler]pci_in_placement is True",
                multi.join(",")
            ));
        }
    }
    let mut missing: Vec<&str> = by_name
        .iter()
        .filter(|(_, l)| {
            l.iter().any(|a| {
                let ids = a.vendor_id.is_some() && a.product_id.is_some();
                !(ids || (pci_in_placement && a.resource_class.is_some()))
            })
        })
        .map(|(n, _)| *n)
        .collect();
    missing.sort_unstable();
    if !missing.is_empty() {
        return Err(format!(
            "The PCI alias(es) {} does not have vendor_id and product_id fields set{}.",
            missing.join(","),
            if pci_in_placement {
                " or resource_class field set"
            } else {
                ""
            }
        ));
    }
    Ok(())
}
