//! `[pci]`: Nova's PCI passthrough options, read and checked as nova-compute
//! reads them (`nova/conf/pci.py`, `nova/pci/whitelist.py`, `nova/pci/devspec.py`,
//! `nova/pci/request.py`).
//!
//! * `device_spec` (multi-valued; deprecated names `[pci] passthrough_whitelist`
//!   and `[DEFAULT] pci_passthrough_whitelist` are gathered too): each value a JSON
//!   dict or a JSON list of dicts. `vendor_id`, `product_id`, `address` (glob
//!   string or a dict of regular expressions) and `devname` select host devices;
//!   every other key is a tag (`physical_network`, `trusted`, `remote_managed`,
//!   `resource_class`, `traits`, ...), reported in the device pools.
//! * `alias` (multi-valued): only checked here, as nova-compute checks it at
//!   start-up; nova-api and the scheduler are the ones that use it.
//! * `report_in_placement`: PCI devices as child resource providers.

use std::path::Path;

use serde_json::{Map, Value};

use super::ConfigError;
use crate::strutil::{bool_from_string, parse_bool};

/// Wildcard of a spec field.
const ANY: &str = "*";
const MAX_VENDOR_ID: u32 = 0xFFFF;
const MAX_PRODUCT_ID: u32 = 0xFFFF;
const MAX_FUNC: u32 = 0x7;
const MAX_DOMAIN: u32 = 0xFFFF;
const MAX_BUS: u32 = 0xFF;
const MAX_SLOT: u32 = 0x1F;

/// The PCI device types of `PciDeviceType` (`nova/objects/fields.py`).
pub const TYPE_PCI: &str = "type-PCI";
pub const TYPE_PF: &str = "type-PF";
pub const TYPE_VF: &str = "type-VF";
pub const TYPE_VDPA: &str = "vdpa";

/// The `[pci]` section.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PciSection {
    /// `device_spec`: which host devices instances may be given.
    pub device_spec: Vec<DeviceSpec>,
    /// `alias`: checked only (nova-api and the scheduler use it).
    pub alias: Vec<PciAlias>,
    /// `report_in_placement`: devices as child resource providers.
    pub report_in_placement: bool,
}

/// A regular expression of the dict address form, kept with its source text.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    re: regex::Regex,
}

impl Pattern {
    /// Compiled to match at the start of the text, as Python's `re.match`.
    fn new(source: &str) -> Result<Pattern, String> {
        let re = regex::Regex::new(&format!("^(?:{source})"))
            .map_err(|e| format!("invalid regular expression {source:?}: {e}"))?;
        Ok(Pattern {
            source: source.to_string(),
            re,
        })
    }

    fn is_match(&self, text: &str) -> bool {
        self.re.is_match(text)
    }
}

impl serde::Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// A full PCI address, normalized: `0000:0a:00.1` (lowercase hex, fixed widths).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct PciAddress {
    pub domain: String,
    pub bus: String,
    pub slot: String,
    pub function: String,
}

impl PciAddress {
    /// Parses `dddd:bb:ss.f` (`PhysicalPciAddress`): each field hex within its
    /// maximum; `None` for anything else (a 32-bit domain, say).
    pub fn parse(text: &str) -> Option<PciAddress> {
        let (dbs, func) = text.split_once('.')?;
        let mut parts = dbs.split(':');
        let (domain, bus, slot) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        Some(PciAddress {
            domain: hex_field(domain, MAX_DOMAIN, 4).ok()?,
            bus: hex_field(bus, MAX_BUS, 2).ok()?,
            slot: hex_field(slot, MAX_SLOT, 2).ok()?,
            function: hex_field(func, MAX_FUNC, 1).ok()?,
        })
    }
}

impl std::fmt::Display for PciAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}.{}",
            self.domain, self.bus, self.slot, self.function
        )
    }
}

/// `int(text, 16)` within `max`, written back as `%0<width>x`.
fn hex_field(text: &str, max: u32, width: usize) -> Result<String, String> {
    let t = text.trim();
    let digits = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t)
        .replace('_', "");
    let v = u64::from_str_radix(&digits, 16)
        .map_err(|_| format!("{text:?} does not parse as a hex number"))?;
    if v > u64::from(max) {
        return Err(format!(
            "{text:?} is greater than the maximum allowable value ({max:X})"
        ));
    }
    Ok(format!("{v:0width$x}"))
}

/// A wildcard-or-hex spec field: `None` is any.
fn spec_field(text: &str, max: u32, width: usize) -> Result<Option<String>, String> {
    let t = text.trim();
    if t.is_empty() || t == ANY {
        return Ok(None);
    }
    hex_field(t, max, width).map(Some)
}

/// The address part of a device spec.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "form", rename_all = "lowercase")]
pub enum AddressSpec {
    /// `[[[[domain]:]bus]:][slot][.[function]]`; a missing or `*` field is any.
    Glob {
        domain: Option<String>,
        bus: Option<String>,
        slot: Option<String>,
        function: Option<String>,
    },
    /// `{"domain": RE, "bus": RE, "slot": RE, "function": RE}`; a missing field is `.*`.
    Regex {
        domain: Pattern,
        bus: Pattern,
        slot: Pattern,
        function: Pattern,
        /// The four texts are plain hex (one address): a PF there also matches its VFs.
        single: Option<String>,
    },
}

impl AddressSpec {
    /// `PciAddressGlobSpec`.
    fn glob(text: &str) -> Result<AddressSpec, String> {
        let (dbs, func) = match text.split_once('.') {
            Some((d, f)) => (d, f),
            None => (text, ""),
        };
        let function = spec_field(func, MAX_FUNC, 1)?;
        let (mut domain, mut bus, mut slot) = (None, None, None);
        if !dbs.is_empty() {
            let fields: Vec<&str> = dbs.split(':').collect();
            if fields.len() > 3 {
                return Err(format!("{text:?} is not a PCI address"));
            }
            let mut all = vec![ANY; 3 - fields.len()];
            all.extend(fields);
            domain = spec_field(all[0], MAX_DOMAIN, 4)?;
            bus = spec_field(all[1], MAX_BUS, 2)?;
            slot = spec_field(all[2], MAX_SLOT, 2)?;
        }
        Ok(AddressSpec::Glob {
            domain,
            bus,
            slot,
            function,
        })
    }

    /// `PciAddressRegexSpec`.
    fn regex(map: &Map<String, Value>) -> Result<AddressSpec, String> {
        let field = |k: &str| -> Result<String, String> {
            match map.get(k) {
                None => Ok(".*".to_string()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(format!("address {k} must be a string, got {other}")),
            }
        };
        let (d, b, s, f) = (
            field("domain")?,
            field("bus")?,
            field("slot")?,
            field("function")?,
        );
        let hex = |t: &str| t.chars().all(|c| c.is_ascii_hexdigit());
        let single = (hex(&d) && hex(&b) && hex(&s) && hex(&f)).then(|| format!("{d}:{b}:{s}.{f}"));
        Ok(AddressSpec::Regex {
            domain: Pattern::new(&d)?,
            bus: Pattern::new(&b)?,
            slot: Pattern::new(&s)?,
            function: Pattern::new(&f)?,
            single,
        })
    }

    fn matches(&self, a: &PciAddress) -> bool {
        match self {
            AddressSpec::Glob {
                domain,
                bus,
                slot,
                function,
            } => {
                let ok = |spec: &Option<String>, v: &str| spec.as_deref().is_none_or(|s| s == v);
                ok(domain, &a.domain)
                    && ok(bus, &a.bus)
                    && ok(slot, &a.slot)
                    && ok(function, &a.function)
            }
            AddressSpec::Regex {
                domain,
                bus,
                slot,
                function,
                ..
            } => {
                domain.is_match(&a.domain)
                    && bus.is_match(&a.bus)
                    && slot.is_match(&a.slot)
                    && function.is_match(&a.function)
            }
        }
    }

    /// The one address this spec names, when it names exactly one (its PF
    /// status is then looked up in sysfs, as nova's `_check_physical_function`).
    fn single_address(&self) -> Option<String> {
        match self {
            AddressSpec::Glob {
                domain: Some(d),
                bus: Some(b),
                slot: Some(s),
                function: Some(f),
            } => Some(format!("{d}:{b}:{s}.{f}")),
            AddressSpec::Glob { .. } => None,
            AddressSpec::Regex { single, .. } => single.clone(),
        }
    }
}

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
fn function_by_ifname(sysfs: &Path, ifname: &str) -> Option<(String, bool)> {
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

impl DeviceSpec {
    /// One spec dict (`PciDeviceSpec.__init__`).
    fn parse(map: &Map<String, Value>, report_in_placement: bool) -> Result<DeviceSpec, String> {
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
    fn parse(v: &Value) -> Result<PciAlias, String> {
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
fn check_aliases(aliases: &[PciAlias], pci_in_placement: bool) -> Result<(), String> {
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

fn invalid(key: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        section: "pci",
        key,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

impl PciSection {
    /// Reads `[pci]` (and the deprecated names of `device_spec` and `alias`).
    pub fn from_ini(ini: &super::Ini) -> Result<PciSection, ConfigError> {
        let report_in_placement = match ini.get("pci", "report_in_placement") {
            None | Some("") => false,
            Some(v) => parse_bool(v.trim())
                .ok_or_else(|| invalid("report_in_placement", v, "not a boolean"))?,
        };
        let pci_in_placement = ini
            .get("filter_scheduler", "pci_in_placement")
            .and_then(|v| parse_bool(v.trim()))
            .unwrap_or(false);
        let mut specs_text = ini.get_all("pci", "device_spec");
        specs_text.extend(ini.get_all("pci", "passthrough_whitelist"));
        specs_text.extend(ini.get_all("DEFAULT", "pci_passthrough_whitelist"));
        let mut device_spec = Vec::new();
        for text in specs_text {
            if text.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(text)
                .map_err(|_| invalid("device_spec", text, "Invalid entry: not JSON"))?;
            let items = match v {
                Value::Object(m) => vec![m],
                Value::Array(items) => items
                    .into_iter()
                    .map(|i| match i {
                        Value::Object(m) => Ok(m),
                        other => Err(invalid(
                            "device_spec",
                            &other.to_string(),
                            "Invalid entry: Expecting dict",
                        )),
                    })
                    .collect::<Result<_, _>>()?,
                _ => {
                    return Err(invalid(
                        "device_spec",
                        text,
                        "Invalid entry: Expecting list or dict",
                    ))
                }
            };
            for m in &items {
                device_spec.push(
                    DeviceSpec::parse(m, report_in_placement)
                        .map_err(|r| invalid("device_spec", text, &r))?,
                );
            }
        }
        let mut alias_text = ini.get_all("pci", "alias");
        alias_text.extend(ini.get_all("DEFAULT", "pci_alias"));
        let mut alias = Vec::new();
        for text in alias_text {
            if text.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(text)
                .map_err(|e| invalid("alias", text, &format!("not JSON: {e}")))?;
            alias.push(PciAlias::parse(&v).map_err(|r| invalid("alias", text, &r))?);
        }
        check_aliases(&alias, pci_in_placement).map_err(|r| invalid("alias", "", &r))?;
        Ok(PciSection {
            device_spec,
            alias,
            report_in_placement,
        })
    }

    /// The first spec a device matches (`Whitelist.device_assignable`).
    pub fn spec_for(&self, dev: &DeviceIds<'_>, sysfs: &Path) -> Option<&DeviceSpec> {
        self.device_spec.iter().find(|s| s.matches(dev, sysfs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Ini;

    fn section(text: &str) -> Result<PciSection, ConfigError> {
        let mut ini = Ini::default();
        ini.merge_str(text, "t").unwrap();
        PciSection::from_ini(&ini)
    }

    fn ids<'a>(vendor: &'a str, product: &'a str, address: &'a str) -> DeviceIds<'a> {
        DeviceIds {
            vendor_id: vendor,
            product_id: product,
            address,
            ..DeviceIds::default()
        }
    }

    #[test]
    fn vendor_product_and_tags() {
        let s = section(
            "[pci]\ndevice_spec = {\"vendor_id\":\"1AF4\", \"product_id\":\"0x1044\", \
             \"physical_network\": \"net1\", \"trusted\": true, \"managed\": \"yes\"}\n",
        )
        .unwrap();
        let spec = &s.device_spec[0];
        assert_eq!(spec.vendor_id.as_deref(), Some("1af4"));
        assert_eq!(spec.product_id.as_deref(), Some("1044"));
        assert_eq!(spec.tag("physical_network"), Some("net1"));
        assert_eq!(spec.tag("trusted"), Some("True"));
        assert_eq!(spec.tag("managed"), Some("true"));
        let sys = Path::new("/nonexistent");
        assert!(spec.matches(&ids("1af4", "1044", "0000:00:05.0"), sys));
        assert!(!spec.matches(&ids("1af4", "1045", "0000:00:05.0"), sys));
        assert!(!spec.matches(&ids("8086", "1044", "0000:00:05.0"), sys));
        // a 32-bit domain does not parse: never matched
        assert!(!spec.matches(&ids("1af4", "1044", "10000:00:05.0"), sys));
    }

    #[test]
    fn glob_addresses() {
        let sys = Path::new("/nonexistent");
        let m = |spec: &str, addr: &str| {
            let s = section(&format!(
                "[pci]\ndevice_spec = {{\"address\": \"{spec}\"}}\n"
            ))
            .unwrap();
            s.device_spec[0].matches(&ids("1af4", "1044", addr), sys)
        };
        assert!(m("0000:00:05.*", "0000:00:05.0"));
        assert!(m("0000:00:05.*", "0000:00:05.7"));
        assert!(!m("0000:00:05.*", "0000:00:06.0"));
        assert!(m("*:0a:00.*", "0001:0a:00.3"));
        assert!(m(":0a:00.", "0000:0a:00.1"));
        assert!(m("05.0", "0000:00:05.0"));
        assert!(m("0:0:5.0", "0000:00:05.0"));
        assert!(!m("0:0:5.1", "0000:00:05.0"));
        for bad in [
            "0000:00:05.8",
            "0000:00:20.0",
            "1:2:3:4.0",
            "zz:00.0",
            "0000:0*:05.0",
        ] {
            assert!(
                section(&format!(
                    "[pci]\ndevice_spec = {{\"address\": \"{bad}\"}}\n"
                ))
                .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn regex_addresses() {
        let s = section(
            "[pci]\ndevice_spec = {\"address\": {\"domain\": \".*\", \"bus\": \"02\", \
             \"slot\": \"01\", \"function\": \"[2-7]\"}, \"physical_network\": \"net1\"}\n",
        )
        .unwrap();
        let sys = Path::new("/nonexistent");
        let spec = &s.device_spec[0];
        assert!(spec.matches(&ids("8086", "10ed", "0000:02:01.2"), sys));
        assert!(spec.matches(&ids("8086", "10ed", "0003:02:01.7"), sys));
        assert!(!spec.matches(&ids("8086", "10ed", "0000:02:01.1"), sys));
        assert!(!spec.matches(&ids("8086", "10ed", "0000:03:01.2"), sys));
        assert!(section("[pci]\ndevice_spec = {\"address\": {\"bus\": \"(\"}}\n").is_err());
    }

    #[test]
    fn a_pf_address_matches_its_vfs() {
        let d = tempfile::tempdir().unwrap();
        let pf = d.path().join("bus/pci/devices/0000:81:00.0");
        std::fs::create_dir_all(&pf).unwrap();
        std::fs::write(pf.join("sriov_totalvfs"), "8\n").unwrap();
        let s = section("[pci]\ndevice_spec = {\"address\": \"0000:81:00.0\"}\n").unwrap();
        let vf = DeviceIds {
            parent_addr: Some("0000:81:00.0"),
            ..ids("8086", "154c", "0000:81:10.0")
        };
        assert!(s.device_spec[0].matches(&vf, d.path()));
        assert!(s.device_spec[0].matches(&ids("8086", "1572", "0000:81:00.0"), d.path()));
        // not a PF (no sriov_totalvfs): only the address itself
        assert!(!s.device_spec[0].matches(&vf, Path::new("/nonexistent")));
    }

    #[test]
    fn devname_names_the_interface_device() {
        let d = tempfile::tempdir().unwrap();
        let dev = d.path().join("devices/pci0000:00/0000:00:03.0");
        std::fs::create_dir_all(&dev).unwrap();
        let net = d.path().join("class/net/eth0");
        std::fs::create_dir_all(&net).unwrap();
        std::os::unix::fs::symlink(
            "../../../devices/pci0000:00/0000:00:03.0",
            net.join("device"),
        )
        .unwrap();
        let s = section("[pci]\ndevice_spec = {\"devname\": \"eth0\"}\n").unwrap();
        assert!(s.device_spec[0].matches(&ids("1af4", "1041", "0000:00:03.0"), d.path()));
        assert!(!s.device_spec[0].matches(&ids("1af4", "1041", "0000:00:04.0"), d.path()));
        let s = section("[pci]\ndevice_spec = {\"devname\": \"eth9\"}\n").unwrap();
        assert!(!s.device_spec[0].matches(&ids("1af4", "1041", "0000:00:03.0"), d.path()));
        assert!(section(
            "[pci]\ndevice_spec = {\"devname\": \"eth0\", \"address\": \"0:0:3.0\"}\n"
        )
        .is_err());
    }

    #[test]
    fn lists_repeats_and_deprecated_names() {
        let s = section(
            "[DEFAULT]\npci_passthrough_whitelist = {\"vendor_id\": \"8086\"}\n\
             [pci]\ndevice_spec = [{\"vendor_id\": \"1af4\"}, {\"address\": \"*:00:05.0\"}]\n\
             device_spec = {\"product_id\": \"1044\"}\n",
        )
        .unwrap();
        assert_eq!(s.device_spec.len(), 4);
        assert!(!s.report_in_placement);
        for bad in [
            "[pci]\ndevice_spec = nope\n",
            "[pci]\ndevice_spec = 5\n",
            "[pci]\ndevice_spec = [5]\n",
            "[pci]\ndevice_spec = {\"vendor_id\": \"10000\"}\n",
            "[pci]\ndevice_spec = {\"managed\": \"perhaps\"}\n",
            "[pci]\ndevice_spec = {\"one_time_use\": \"true\"}\n",
            "[pci]\nreport_in_placement = true\ndevice_spec = {\"devname\": \"eth0\"}\n",
            "[pci]\nreport_in_placement = maybe\n",
        ] {
            assert!(section(bad).is_err(), "{bad}");
        }
        assert!(
            section(
                "[pci]\nreport_in_placement = true\ndevice_spec = {\"one_time_use\": \"yes\"}\n"
            )
            .unwrap()
            .report_in_placement
        );
    }

    #[test]
    fn remote_managed_needs_a_serial_number() {
        let s = section(
            "[pci]\ndevice_spec = {\"vendor_id\": \"15b3\", \"remote_managed\": \"true\"}\n",
        )
        .unwrap();
        let sys = Path::new("/nonexistent");
        assert!(!s.device_spec[0].matches(&ids("15b3", "101e", "0000:82:00.2"), sys));
        let with = DeviceIds {
            card_serial_number: Some("MT2113X00000"),
            ..ids("15b3", "101e", "0000:82:00.2")
        };
        assert!(s.device_spec[0].matches(&with, sys));
    }

    #[test]
    fn aliases_are_checked_like_nova() {
        let s = section(
            "[pci]\nalias = {\"name\": \"rng\", \"vendor_id\": \"1af4\", \"product_id\": \"1044\"}\n\
             alias = {\"name\": \"qat\", \"vendor_id\": \"8086\", \"product_id\": \"0443\", \
             \"device_type\": \"type-PCI\", \"numa_policy\": \"required\"}\n\
             alias = {\"name\": \"qat\", \"vendor_id\": \"8086\", \"product_id\": \"0442\", \
             \"device_type\": \"type-PCI\", \"numa_policy\": \"required\"}\n",
        )
        .unwrap();
        assert_eq!(s.alias.len(), 3);
        assert_eq!(s.alias[0].numa_policy, "legacy");
        for bad in [
            "{\"vendor_id\": \"1af4\", \"product_id\": \"1044\"}",
            "{\"name\": \"x\", \"vendor_id\": \"1af4\"}",
            "{\"name\": \"x\", \"vendor_id\": \"1af4x\", \"product_id\": \"1044\"}",
            "{\"name\": \"x\", \"vendor_id\": \"1af4\", \"product_id\": \"1044\", \"colour\": \"red\"}",
            "{\"name\": \"x\", \"vendor_id\": \"1af4\", \"product_id\": \"1044\", \"device_type\": \"vdpa\"}",
            "{\"name\": \"x\", \"vendor_id\": \"1af4\", \"product_id\": \"1044\", \"numa_policy\": \"any\"}",
            "[1]",
        ] {
            assert!(section(&format!("[pci]\nalias = {bad}\n")).is_err(), "{bad}");
        }
        // same name: the NUMA policy and the device type must agree
        assert!(section(
            "[pci]\nalias = {\"name\": \"a\", \"vendor_id\": \"1af4\", \"product_id\": \"1044\"}\n\
             alias = {\"name\": \"a\", \"vendor_id\": \"1af4\", \"product_id\": \"1045\"}\n"
        )
        .is_err());
    }
}
