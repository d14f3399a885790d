//! The one mapping from extra specs (a Nova flavor's, or the standalone API's
//! `extra_specs` / the CLI's `--limit`) to limits, security and devices.
//! Values are strict: a bad one is refused before anything is created.

use std::collections::BTreeMap;

use super::Limits;
use crate::devices::{self, DeviceConfig};
use crate::strutil::parse_bool;

/// A refused extra spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("extra spec {key}={value:?} is invalid: {reason}")]
pub struct ExtraSpecError {
    pub key: String,
    pub value: String,
    pub reason: String,
}

/// What to do with keys this mapping does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unknown {
    /// Nova flavors carry keys for other drivers and the scheduler
    /// (`hw:mem_page_size`, `aggregate_instance_extra_specs:...`): ignored,
    /// except in corral's own `corral:` namespace, where a typo is refused.
    IgnoreForeign,
    /// The standalone API: every key must be known.
    Refuse,
}

/// Limits, security and devices from extra specs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapped {
    pub limits: Limits,
    /// `corral:privileged` / `lxd:privileged_allowed`, when given.
    pub privileged: Option<bool>,
    /// `corral:nesting` / `lxd:nested_allowed`, when given.
    pub nesting: Option<bool>,
    /// `corral:device:NAME`.
    pub devices: BTreeMap<String, DeviceConfig>,
}

/// Every key read (besides `corral:device:NAME`).
pub const KEYS: &[&str] = &[
    "quota:cpu_shares",
    "quota:cpu_quota",
    "quota:cpu_period",
    "hw:cpu_policy",
    "quota:disk_read_bytes_sec",
    "quota:disk_write_bytes_sec",
    "quota:disk_total_bytes_sec",
    "quota:disk_read_iops_sec",
    "quota:disk_write_iops_sec",
    "quota:disk_total_iops_sec",
    "quota:vif_inbound_average",
    "quota:vif_inbound_burst",
    "quota:vif_outbound_average",
    "quota:vif_outbound_burst",
    "corral:max_processes",
    "corral:privileged",
    "lxd:privileged_allowed",
    "corral:nesting",
    "lxd:nested_allowed",
];

/// The prefix of device extra specs.
pub const DEVICE_PREFIX: &str = "corral:device:";

fn err(key: &str, value: &str, reason: impl Into<String>) -> ExtraSpecError {
    ExtraSpecError {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

fn unsigned(key: &str, value: &str) -> Result<u64, ExtraSpecError> {
    let v = value.trim();
    if v.is_empty() || !v.chars().all(|c| c.is_ascii_digit()) {
        return Err(err(key, value, "not a non-negative integer"));
    }
    v.parse()
        .map_err(|_| err(key, value, "not a non-negative integer"))
}

fn signed(key: &str, value: &str) -> Result<i64, ExtraSpecError> {
    value
        .trim()
        .parse()
        .map_err(|_| err(key, value, "not an integer"))
}

fn boolean(key: &str, value: &str) -> Result<bool, ExtraSpecError> {
    parse_bool(value.trim())
        .ok_or_else(|| err(key, value, "not a boolean (true/false, yes/no, 1/0)"))
}

/// 0 means "no throttle" (as for libvirt): unset.
fn throttle(key: &str, value: &str) -> Result<Option<u64>, ExtraSpecError> {
    Ok(Some(unsigned(key, value)?).filter(|v| *v > 0))
}

/// Checks one field's value on its own, so the error names its key.
fn check(key: &str, value: &str, one: Limits) -> Result<(), ExtraSpecError> {
    one.validate().map_err(|e| err(key, value, e.to_string()))
}

/// Maps `specs` over `base` (the flavor's vcpus and memory, or the API's
/// limits): extra specs win over `base` where both set a field.
pub fn apply(
    specs: &BTreeMap<String, String>,
    base: Limits,
    unknown: Unknown,
) -> Result<Mapped, ExtraSpecError> {
    let mut m = Mapped {
        limits: base,
        ..Mapped::default()
    };
    let mut bools: BTreeMap<&str, (&str, bool)> = BTreeMap::new();
    for (k, v) in specs {
        let key = k.as_str();
        match key {
            "quota:cpu_shares" => {
                let s = unsigned(key, v)?;
                check(
                    key,
                    v,
                    Limits {
                        cpu_shares: Some(s),
                        ..Limits::default()
                    },
                )?;
                m.limits.cpu_shares = Some(s);
            }
            "quota:cpu_quota" => {
                let q = signed(key, v)?;
                check(
                    key,
                    v,
                    Limits {
                        cpu_quota_us: Some(q),
                        ..Limits::default()
                    },
                )?;
                m.limits.cpu_quota_us = Some(q);
            }
            "quota:cpu_period" => {
                let p = unsigned(key, v)?;
                check(
                    key,
                    v,
                    Limits {
                        cpu_period_us: Some(p),
                        ..Limits::default()
                    },
                )?;
                m.limits.cpu_period_us = Some(p);
            }
            "hw:cpu_policy" => match v.trim() {
                "dedicated" => m.limits.cpu_dedicated = true,
                "shared" => m.limits.cpu_dedicated = false,
                "mixed" => return Err(err(key, v, "mixed CPU policy is not supported")),
                _ => return Err(err(key, v, "must be dedicated or shared")),
            },
            "quota:disk_read_bytes_sec" => m.limits.disk_read_bytes_sec = throttle(key, v)?,
            "quota:disk_write_bytes_sec" => m.limits.disk_write_bytes_sec = throttle(key, v)?,
            "quota:disk_read_iops_sec" => m.limits.disk_read_iops_sec = throttle(key, v)?,
            "quota:disk_write_iops_sec" => m.limits.disk_write_iops_sec = throttle(key, v)?,
            "quota:disk_total_bytes_sec" | "quota:disk_total_iops_sec" => {
                let (read, write) = if key.ends_with("bytes_sec") {
                    ("quota:disk_read_bytes_sec", "quota:disk_write_bytes_sec")
                } else {
                    ("quota:disk_read_iops_sec", "quota:disk_write_iops_sec")
                };
                if specs.contains_key(read) || specs.contains_key(write) {
                    return Err(err(
                        key,
                        v,
                        format!("cannot be combined with {read} or {write}"),
                    ));
                }
                let t = throttle(key, v)?;
                if key.ends_with("bytes_sec") {
                    m.limits.disk_read_bytes_sec = t;
                    m.limits.disk_write_bytes_sec = t;
                } else {
                    m.limits.disk_read_iops_sec = t;
                    m.limits.disk_write_iops_sec = t;
                }
            }
            "quota:vif_inbound_average" => m.limits.vif_inbound_average = throttle(key, v)?,
            "quota:vif_inbound_burst" => m.limits.vif_inbound_burst = throttle(key, v)?,
            "quota:vif_outbound_average" => m.limits.vif_outbound_average = throttle(key, v)?,
            "quota:vif_outbound_burst" => m.limits.vif_outbound_burst = throttle(key, v)?,
            "corral:max_processes" => {
                let p = unsigned(key, v)?;
                check(
                    key,
                    v,
                    Limits {
                        pids: Some(p),
                        ..Limits::default()
                    },
                )?;
                m.limits.pids = Some(p);
            }
            "corral:privileged" | "lxd:privileged_allowed" => {
                let b = boolean(key, v)?;
                if let Some((other, ob)) = bools.insert("privileged", (key, b)) {
                    if ob != b {
                        return Err(err(key, v, format!("contradicts {other}")));
                    }
                }
                m.privileged = Some(b);
            }
            "corral:nesting" | "lxd:nested_allowed" => {
                let b = boolean(key, v)?;
                if let Some((other, ob)) = bools.insert("nesting", (key, b)) {
                    if ob != b {
                        return Err(err(key, v, format!("contradicts {other}")));
                    }
                }
                m.nesting = Some(b);
            }
            _ => {
                if let Some(name) = key.strip_prefix(DEVICE_PREFIX) {
                    let dev = devices::parse(name, v).map_err(|e| err(key, v, e.to_string()))?;
                    m.devices.insert(name.to_string(), dev);
                } else if unknown == Unknown::Refuse || key.starts_with("corral:") {
                    return Err(err(key, v, "unknown key (see docs/flavors.md)"));
                } else {
                    tracing::debug!(key, "extra spec not read by corral");
                }
            }
        }
    }
    // The combination (dedicated needs whole cpus, swap needs memory).
    m.limits.validate().map_err(|e| {
        let key = if m.limits.cpu_dedicated
            && !matches!(m.limits.cpus, Some(c) if c >= 1.0 && c.fract() == 0.0)
        {
            "hw:cpu_policy"
        } else {
            "limits"
        };
        err(
            key,
            specs.get(key).map(String::as_str).unwrap_or(""),
            e.to_string(),
        )
    })?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn base() -> Limits {
        Limits {
            cpus: Some(2.0),
            memory_bytes: Some(256 << 20),
            ..Limits::default()
        }
    }

    #[test]
    fn every_key_maps() {
        let m = apply(
            &map(&[
                ("quota:cpu_shares", "512"),
                ("quota:cpu_quota", "50000"),
                ("quota:cpu_period", "100000"),
                ("hw:cpu_policy", "dedicated"),
                ("quota:disk_read_bytes_sec", "1000000"),
                ("quota:disk_write_bytes_sec", "5242880"),
                ("quota:disk_read_iops_sec", "100"),
                ("quota:disk_write_iops_sec", "0"),
                ("corral:max_processes", "64"),
                ("corral:privileged", "False"),
                ("lxd:nested_allowed", "yes"),
                ("corral:device:fuse", "unix-char,path=/dev/fuse"),
            ]),
            base(),
            Unknown::Refuse,
        )
        .unwrap();
        let l = &m.limits;
        assert_eq!(l.cpus, Some(2.0));
        assert_eq!(l.memory_bytes, Some(256 << 20));
        assert_eq!(l.cpu_shares, Some(512));
        assert_eq!(l.cpu_quota_us, Some(50_000));
        assert_eq!(l.cpu_period_us, Some(100_000));
        assert!(l.cpu_dedicated);
        assert_eq!(l.disk_read_bytes_sec, Some(1_000_000));
        assert_eq!(l.disk_write_bytes_sec, Some(5 << 20));
        assert_eq!(l.disk_read_iops_sec, Some(100));
        assert_eq!(l.disk_write_iops_sec, None);
        assert_eq!(l.pids, Some(64));
        assert_eq!(m.privileged, Some(false));
        assert_eq!(m.nesting, Some(true));
        assert_eq!(m.devices.len(), 1);
        assert_eq!(m.devices["fuse"].kind(), "unix-char");
    }

    #[test]
    fn totals_set_read_and_write() {
        let m = apply(
            &map(&[
                ("quota:disk_total_bytes_sec", "2000"),
                ("quota:disk_total_iops_sec", "30"),
            ]),
            Limits::default(),
            Unknown::Refuse,
        )
        .unwrap();
        assert_eq!(m.limits.disk_read_bytes_sec, Some(2000));
        assert_eq!(m.limits.disk_write_bytes_sec, Some(2000));
        assert_eq!(m.limits.disk_read_iops_sec, Some(30));
        assert_eq!(m.limits.disk_write_iops_sec, Some(30));
        assert!(m.limits.has_blkio());
    }

    #[test]
    fn bad_values_are_refused_with_their_key() {
        for (k, v) in [
            ("quota:cpu_shares", "lots"),
            ("quota:cpu_shares", "-5"),
            ("quota:cpu_shares", "1"),
            ("quota:cpu_quota", "5"),
            ("quota:cpu_quota", "x"),
            ("quota:cpu_period", "5"),
            ("hw:cpu_policy", "exclusive"),
            ("hw:cpu_policy", "mixed"),
            ("quota:disk_read_bytes_sec", "1.5"),
            ("quota:disk_write_iops_sec", "-1"),
            ("quota:disk_total_bytes_sec", "fast"),
            ("corral:max_processes", "0"),
            ("corral:max_processes", "many"),
            ("corral:privileged", "perhaps"),
            ("lxd:privileged_allowed", ""),
            ("corral:nesting", "2"),
            ("lxd:nested_allowed", "True!"),
            ("corral:device:fuse", "pci,address=0000:01:00.0"),
            ("corral:device:bad name", "unix-char,path=/dev/fuse"),
            ("corral:max_proceses", "10"),
        ] {
            let e = apply(&map(&[(k, v)]), base(), Unknown::IgnoreForeign)
                .expect_err(&format!("{k}={v} should fail"));
            assert_eq!(e.key, k, "{e}");
            assert!(e.to_string().contains(k), "{e}");
        }
    }

    #[test]
    fn combinations_are_checked() {
        // total with read/write.
        assert!(apply(
            &map(&[
                ("quota:disk_total_bytes_sec", "10"),
                ("quota:disk_read_bytes_sec", "10")
            ]),
            base(),
            Unknown::Refuse
        )
        .is_err());
        // Contradicting spellings.
        assert!(apply(
            &map(&[
                ("corral:privileged", "true"),
                ("lxd:privileged_allowed", "0")
            ]),
            base(),
            Unknown::Refuse
        )
        .is_err());
        // Dedicated without whole cpus.
        let e = apply(
            &map(&[("hw:cpu_policy", "dedicated")]),
            Limits {
                cpus: Some(0.5),
                ..Limits::default()
            },
            Unknown::Refuse,
        )
        .unwrap_err();
        assert_eq!(e.key, "hw:cpu_policy");
    }

    #[test]
    fn unknown_keys() {
        let specs = map(&[
            ("hw:mem_page_size", "large"),
            ("quota:vif_inbound_peak", "10"),
        ]);
        assert!(apply(&specs, base(), Unknown::IgnoreForeign).is_ok());
        assert!(apply(&specs, base(), Unknown::Refuse).is_err());
    }
}
