//! One `[pci] device_spec` entry (`nova/pci/devspec.py`): which host PCI
//! functions it selects (vendor, product, address or `devname`) and the tags
//! it gives them. Matching a function reads sysfs through [`super::discover`].

use std::path::Path;

use serde_json::{Map, Value};

use super::address::{spec_field, AddressSpec, PciAddress, MAX_PRODUCT_ID, MAX_VENDOR_ID};
use super::discover::{function_by_ifname, is_physical_function};
use crate::strutil::bool_from_string;

/// What a spec is matched against: the identity of one host PCI device.
#[derive(Debug, Clone, Default)]
pub struct DeviceIds<'a> {
    pub vendor_id: &'a str,
    pub product_id: &'a str,
    pub address: &'a str,
    /// The PF of a VF.
    pub parent_addr: Option<&'a str>,
    /// The card serial number from the PCI VPD, required for `remote_managed`.
    pub card_serial_number: Option<&'a str>,
}

/// One `[pci] device_spec` entry (`PciDeviceSpec`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceSpec {
    /// `None`: any vendor.
    pub vendor_id: Option<String>,
    /// `None`: any product.
    pub product_id: Option<String>,
    /// `None` when the spec names a `devname` instead.
    pub address: Option<AddressSpec>,
    /// A network interface whose PCI device (and, for a PF, its VFs) is meant.
    pub devname: Option<String>,
    /// Every other key, in the spec's order, values as strings (nullable).
    pub tags: Vec<(String, Option<String>)>,
    /// The entry as configured, for messages.
    pub source: String,
}

/// A tag value as nova stores it (`DictOfNullableStringsField`: `str(value)`).
fn tag_string(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(true) => Some("True".into()),
        Value::Bool(false) => Some("False".into()),
        other => Some(other.to_string()),
    }
}

impl DeviceSpec {
    /// One spec dict (`PciDeviceSpec.__init__`).
    pub fn parse(
        map: &Map<String, Value>,
        report_in_placement: bool,
    ) -> Result<DeviceSpec, String> {
        let source = Value::Object(map.clone()).to_string();
        let text = |k: &str| -> Result<Option<String>, String> {
            match map.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(format!("{k} must be a string, got {other}")),
            }
        };
        let vendor_id = match text("vendor_id")? {
            None => None,
            Some(v) => spec_field(&v, MAX_VENDOR_ID, 4).map_err(|e| format!("vendor_id {e}"))?,
        };
        let product_id = match text("product_id")? {
            None => None,
            Some(v) => spec_field(&v, MAX_PRODUCT_ID, 4).map_err(|e| format!("product_id {e}"))?,
        };
        let devname = text("devname")?;
        let address = match map.get("address") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(AddressSpec::glob(s)?),
            Some(Value::Object(m)) => Some(AddressSpec::regex(m)?),
            Some(other) => return Err(format!("address {other} is not a PCI address")),
        };
        if address.is_some() && devname.is_some() {
            return Err("address and devname are mutually exclusive".into());
        }
        let address = match (&devname, address) {
            (Some(_), _) => None,
            (None, Some(a)) => Some(a),
            (None, None) => Some(AddressSpec::glob("*:*:*.*")?),
        };
        let mut tags = Vec::new();
        for (k, v) in map {
            if matches!(
                k.as_str(),
                "vendor_id" | "product_id" | "address" | "devname"
            ) {
                continue;
            }
            let mut value = tag_string(v);
            if matches!(k.as_str(), "managed" | "live_migratable" | "one_time_use") {
                if let Some(t) = &value {
                    let b = bool_from_string(t)
                        .ok_or_else(|| format!("Cannot parse tag '{k}': {t:?} is not a boolean"))?;
                    value = Some(if b { "true" } else { "false" }.to_string());
                }
            }
            tags.push((k.clone(), value));
        }
        let spec = DeviceSpec {
            vendor_id,
            product_id,
            address,
            devname,
            tags,
            source,
        };
        if spec.tag("one_time_use") == Some("true") && !report_in_placement {
            return Err("one_time_use=true requires pci.report_in_placement to be enabled".into());
        }
        if report_in_placement && spec.devname.is_some() {
            return Err(
                "PCI Placement reporting does not support 'devname' based device specification; \
                 use the PCI address instead"
                    .into(),
            );
        }
        Ok(spec)
    }

    /// A tag's value.
    pub fn tag(&self, name: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// `remote_managed` (a VF managed by an off-path backend, e.g. a DPU).
    pub fn remote_managed(&self) -> bool {
        self.tag("remote_managed")
            .and_then(bool_from_string)
            .unwrap_or(false)
    }

    /// `PciDeviceSpec.match`: vendor, product, address (a PF named by a
    /// single address or a `devname` matches its VFs too), and for
    /// `remote_managed` a VPD card serial number. `sysfs` is `/sys` on a host.
    pub fn matches(&self, dev: &DeviceIds<'_>, sysfs: &Path) -> bool {
        if self
            .vendor_id
            .as_deref()
            .is_some_and(|v| v != dev.vendor_id)
            || self
                .product_id
                .as_deref()
                .is_some_and(|p| p != dev.product_id)
        {
            return false;
        }
        if self.remote_managed() && dev.card_serial_number.is_none_or(str::is_empty) {
            return false;
        }
        let Some(addr) = PciAddress::parse(dev.address) else {
            return false;
        };
        let parent = dev.parent_addr.and_then(PciAddress::parse);
        match (&self.devname, &self.address) {
            (Some(ifname), _) => {
                let Some((text, pf)) = function_by_ifname(sysfs, ifname) else {
                    return false;
                };
                let Some(named) = PciAddress::parse(&text) else {
                    return false;
                };
                (pf && parent.as_ref() == Some(&named)) || addr == named
            }
            (None, Some(spec)) => {
                let pf = spec
                    .single_address()
                    .is_some_and(|a| is_physical_function(sysfs, &a));
                (pf && parent.as_ref().is_some_and(|p| spec.matches(p))) || spec.matches(&addr)
            }
            (None, None) => false,
        }
    }
}
