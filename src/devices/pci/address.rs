//! PCI addresses: the normalized `dddd:bb:ss.f` form nova uses
//! (`PhysicalPciAddress`), and the address part of a `[pci] device_spec`
//! entry, as a glob (`0000:0a:*.*`) or as a dict of regular expressions.

use serde_json::{Map, Value};

/// Wildcard of a spec field.
pub(super) const ANY: &str = "*";
pub(super) const MAX_VENDOR_ID: u32 = 0xFFFF;
pub(super) const MAX_PRODUCT_ID: u32 = 0xFFFF;
pub(super) const MAX_FUNC: u32 = 0x7;
pub(super) const MAX_DOMAIN: u32 = 0xFFFF;
pub(super) const MAX_BUS: u32 = 0xFF;
pub(super) const MAX_SLOT: u32 = 0x1F;

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
pub(super) fn spec_field(text: &str, max: u32, width: usize) -> Result<Option<String>, String> {
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
    pub(super) fn glob(text: &str) -> Result<AddressSpec, String> {
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
    pub(super) fn regex(map: &Map<String, Value>) -> Result<AddressSpec, String> {
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

    pub(super) fn matches(&self, a: &PciAddress) -> bool {
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
    pub(super) fn single_address(&self) -> Option<String> {
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

/// A PCI address `DDDD:BB:DD.F` (or `BB:DD.F`, domain 0000), lower-cased
/// in its 4-digit domain form.
pub fn pci_address(text: &str) -> Option<String> {
    let t = text.to_ascii_lowercase();
    let full = if t.matches(':').count() == 1 {
        format!("0000:{t}")
    } else {
        t
    };
    let hex = |s: &str, n: usize| s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit());
    let (domain, rest) = full.split_once(':')?;
    let (bus, rest) = rest.split_once(':')?;
    let (slot, func) = rest.split_once('.')?;
    let ok = hex(domain, 4)
        && hex(bus, 2)
        && hex(slot, 2)
        && u8::from_str_radix(slot, 16).is_ok_and(|s| s <= 0x1f)
        && func.len() == 1
        && func.chars().all(|c| ('0'..='7').contains(&c));
    ok.then_some(full)
}
