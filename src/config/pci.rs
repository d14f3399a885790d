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
//!
//! This module only reads the options; the types they parse into (addresses,
//! specs, aliases) live in [`crate::devices::pci`].

use std::path::Path;

use serde_json::Value;

use super::ConfigError;
use crate::devices::pci::{check_aliases, DeviceIds, DeviceSpec, PciAlias};
use crate::strutil::parse_bool;

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
