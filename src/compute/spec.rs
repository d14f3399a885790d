//! A Nova instance as corral's `InstanceSpec`: flavor and extra specs become
//! limits, strictly (a bad value fails the build before anything is made).

use std::collections::BTreeMap;

use crate::config::parse_bool;
use crate::driver::{InstanceSpec, Limits};
use crate::nova::objects::flavor::Flavor;
use crate::nova::objects::instance::Instance;

/// Errors mapping a flavor.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error("the instance has no uuid")]
    NoUuid,
    #[error("the instance has no flavor")]
    NoFlavor,
    #[error("flavor extra spec {key}={value:?} is invalid: {reason}")]
    BadExtraSpec {
        key: String,
        value: String,
        reason: String,
    },
}

fn int(key: &str, value: &str) -> Result<i64, SpecError> {
    value.trim().parse().map_err(|_| SpecError::BadExtraSpec {
        key: key.into(),
        value: value.into(),
        reason: "not an integer".into(),
    })
}

/// A valid host name from the server's hostname (or its uuid).
fn hostname(inst: &Instance, uuid: &str) -> String {
    let raw = inst.hostname.get().map(String::as_str).unwrap_or("");
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let clean = clean.trim_matches('-').to_string();
    if clean.is_empty() {
        format!("instance-{}", &uuid[..uuid.len().min(8)])
    } else {
        clean
    }
}

/// Limits from a flavor: `vcpus` is a hard cap of that many CPUs, `memory_mb`
/// the memory limit; `quota:cpu_shares`, `quota:cpu_quota`, `quota:cpu_period`
/// and `corral:max_processes` refine them.
pub fn limits(flavor: &Flavor) -> Result<Limits, SpecError> {
    let mut l = Limits::default();
    if let Some(v) = flavor.vcpus.get() {
        if *v > 0 {
            l.cpus = Some(*v as f64);
        }
    }
    if let Some(m) = flavor.memory_mb.get() {
        if *m > 0 {
            l.memory_bytes = Some((*m as u64) << 20);
        }
    }
    let specs: BTreeMap<String, String> = flavor
        .extra_specs
        .get()
        .map(|d| d.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
        .unwrap_or_default();
    for (k, v) in &specs {
        match k.as_str() {
            "quota:cpu_shares" => l.cpu_shares = Some(int(k, v)?.max(0) as u64),
            "quota:cpu_quota" => l.cpu_quota_us = Some(int(k, v)?),
            "quota:cpu_period" => l.cpu_period_us = Some(int(k, v)?.max(0) as u64),
            "corral:max_processes" => l.pids = Some(int(k, v)?.max(0) as u64),
            "corral:privileged"
            | "lxd:privileged_allowed"
            | "corral:nesting"
            | "lxd:nested_allowed"
                if parse_bool(v).is_none() =>
            {
                return Err(SpecError::BadExtraSpec {
                    key: k.clone(),
                    value: v.clone(),
                    reason: "not a boolean (true/false, yes/no, 1/0)".into(),
                });
            }
            _ => {}
        }
    }
    l.validate().map_err(|e| SpecError::BadExtraSpec {
        key: "flavor".into(),
        value: String::new(),
        reason: e.to_string(),
    })?;
    Ok(l)
}

/// The spec of a Nova instance whose image is cached as `image_alias`.
pub fn from_instance(inst: &Instance, image_alias: &str) -> Result<InstanceSpec, SpecError> {
    let uuid = inst.uuid().ok_or(SpecError::NoUuid)?.to_string();
    let flavor = inst.flavor.get().ok_or(SpecError::NoFlavor)?;
    let limits = limits(flavor)?;
    let privileged = flavor
        .extra_spec("corral:privileged")
        .or_else(|| flavor.extra_spec("lxd:privileged_allowed"))
        .and_then(parse_bool)
        .unwrap_or(false);
    Ok(InstanceSpec {
        name: format!("nova-{uuid}"),
        hostname: Some(hostname(inst, &uuid)),
        uuid,
        image: image_alias.to_string(),
        limits,
        privileged,
        command: None,
        environment: BTreeMap::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nova::fields::{Dict, Field};

    fn flavor(specs: &[(&str, &str)]) -> Flavor {
        Flavor {
            vcpus: Field::Set(2),
            memory_mb: Field::Set(256),
            extra_specs: Field::Set(
                specs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<Dict<String>>(),
            ),
            ..Flavor::default()
        }
    }

    #[test]
    fn flavor_to_limits() {
        let l = limits(&flavor(&[
            ("quota:cpu_shares", "512"),
            ("corral:max_processes", "64"),
        ]))
        .unwrap();
        assert_eq!(l.cpus, Some(2.0));
        assert_eq!(l.memory_bytes, Some(256 << 20));
        assert_eq!(l.cpu_shares, Some(512));
        assert_eq!(l.pids, Some(64));
    }

    #[test]
    fn bad_extra_specs_fail() {
        assert!(limits(&flavor(&[("quota:cpu_shares", "lots")])).is_err());
        assert!(limits(&flavor(&[("corral:privileged", "perhaps")])).is_err());
        assert!(limits(&flavor(&[("corral:privileged", "False")])).is_ok());
        assert!(limits(&flavor(&[("quota:cpu_period", "5")])).is_err());
    }

    #[test]
    fn hostnames_are_clean() {
        let mut i = Instance {
            hostname: Field::Set("web_01.example".into()),
            ..Instance::default()
        };
        assert_eq!(hostname(&i, "abcdef12-0000"), "web-01-example");
        i.hostname = Field::Set("__".into());
        assert_eq!(hostname(&i, "abcdef12-0000"), "instance-abcdef12");
    }
}
