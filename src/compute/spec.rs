//! A Nova instance as corral's `InstanceSpec`: flavor and extra specs become
//! limits, strictly (a bad value fails the build before anything is made).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::metadata;
use crate::driver::extra_specs::{self, Mapped, Unknown};
use crate::driver::{ConfigDrive, InstanceSpec, Limits};
use crate::nova::objects::flavor::Flavor;
use crate::nova::objects::instance::Instance;
use crate::nova::objects::network_model::NetworkInfo;

/// Errors mapping a flavor.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error("the instance has no uuid")]
    NoUuid,
    #[error("the instance uuid {0} is not a UUID")]
    BadUuid(String),
    #[error("the instance has no flavor")]
    NoFlavor,
    #[error("config drive: {0}")]
    Metadata(#[from] super::metadata::MetadataError),
    #[error("flavor extra spec {key}={value:?} is invalid: {reason}")]
    BadExtraSpec {
        key: String,
        value: String,
        reason: String,
    },
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
        format!("instance-{}", uuid.chars().take(8).collect::<String>())
    } else {
        clean
    }
}

/// Everything a flavor says: `vcpus` is a CPU count (a hard cap, or shares
/// under `[corral] cpu_limit_mode = shares`), `memory_mb` the memory limit,
/// `swap` (MB) the swap on top of it (memory+swap = memory + swap; 0 = no
/// swap); the extra specs are mapped by [`extra_specs::apply`] (unknown keys
/// of other drivers ignored, `corral:` ones refused).
pub fn mapped(flavor: &Flavor) -> Result<Mapped, SpecError> {
    let mut l = Limits::default();
    if let Some(v) = flavor.vcpus.get() {
        if *v > 0 {
            l.cpus = Some(*v as f64);
        }
    }
    if let Some(m) = flavor.memory_mb.get() {
        if *m > 0 {
            l.memory_bytes = Some((*m as u64) << 20);
            if let Some(s) = flavor.swap.get() {
                l.swap_bytes = Some((*s).max(0) as u64 * (1 << 20));
            }
        }
    }
    if let Some(g) = flavor.root_gb.get() {
        if *g > 0 {
            l.root_disk_bytes = Some((*g as u64) << 30);
        }
    }
    let specs: BTreeMap<String, String> = flavor
        .extra_specs
        .get()
        .map(|d| d.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
        .unwrap_or_default();
    extra_specs::apply(&specs, l, Unknown::IgnoreForeign).map_err(|e| SpecError::BadExtraSpec {
        key: e.key,
        value: e.value,
        reason: e.reason,
    })
}

/// The limits of a flavor (checked before anything is made).
pub fn limits(flavor: &Flavor) -> Result<Limits, SpecError> {
    Ok(mapped(flavor)?.limits)
}

/// The spec of a Nova instance whose image is cached as `image_alias`.
pub fn from_instance(inst: &Instance, image_alias: &str) -> Result<InstanceSpec, SpecError> {
    let uuid = inst.uuid().ok_or(SpecError::NoUuid)?.to_string();
    if !crate::driver::is_uuid(&uuid) {
        // Shown escaped: it came off the wire.
        return Err(SpecError::BadUuid(format!("{uuid:?}")));
    }
    let flavor = inst.flavor.get().ok_or(SpecError::NoFlavor)?;
    let m = mapped(flavor)?;
    Ok(InstanceSpec {
        name: format!("nova-{uuid}"),
        hostname: Some(hostname(inst, &uuid)),
        uuid,
        image: image_alias.to_string(),
        limits: m.limits,
        privileged: m.privileged.unwrap_or(false),
        nesting: m.nesting.unwrap_or(false),
        devices: m.devices,
        pinned_cpus: None,
        command: None,
        environment: BTreeMap::new(),
        pci_devices: Vec::new(),
        vifs: Vec::new(),
        config_drive: None,
        network_interfaces: None,
    })
}

/// How this host gives guests their metadata and network configuration
/// (nova.conf: `[DEFAULT] force_config_drive`, `[api] dhcp_domain`,
/// `[corral] inject_network`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestDataOptions {
    pub force_config_drive: bool,
    pub dhcp_domain: String,
    pub inject_network: bool,
}

impl Default for GuestDataOptions {
    fn default() -> Self {
        GuestDataOptions {
            force_config_drive: false,
            dhcp_domain: "novalocal".into(),
            inject_network: false,
        }
    }
}

/// What a build or rebuild message adds to the instance object.
#[derive(Debug, Clone, Default)]
pub struct GuestDataInputs<'a> {
    /// The instance's network (`network_info`; empty without networks).
    pub network_info: NetworkInfo,
    /// `admin_password` / `new_pass`.
    pub admin_pass: Option<&'a str>,
    /// `injected_files`: `[[path, base64 contents], ...]`.
    pub injected_files: &'a [Value],
    /// The image's properties (`img_config_drive`).
    pub image_props: Option<&'a Map<String, Value>>,
}

/// The config drive (when Nova's rules give the instance one) and the
/// network configuration to write into its root (`inject_network`, when it
/// has static addresses). Bad user data or injected files are refused.
pub fn guest_data(
    inst: &Instance,
    opts: &GuestDataOptions,
    inputs: &GuestDataInputs,
) -> Result<(Option<ConfigDrive>, Option<String>), SpecError> {
    let drive = if metadata::required(inst, opts.force_config_drive, inputs.image_props) {
        let drive = metadata::config_drive(
            inst,
            &metadata::DriveInputs {
                network_info: &inputs.network_info,
                admin_pass: inputs.admin_pass,
                injected_files: metadata::decode_injected_files(inputs.injected_files)?,
                dhcp_domain: &opts.dhcp_domain,
            },
        )?;
        Some(drive)
    } else {
        // Without a drive the user data still has to be what Nova accepts.
        metadata::user_data(inst)?;
        None
    };
    let interfaces = if opts.inject_network {
        metadata::interfaces(&inputs.network_info, true)
    } else {
        None
    };
    Ok((drive, interfaces))
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
        assert!(limits(&flavor(&[("corral:device:x", "usb,vendorid=1")])).is_err());
        // Other drivers' keys are not ours to refuse.
        assert!(limits(&flavor(&[("hw:mem_page_size", "large")])).is_ok());
    }

    #[test]
    fn flavor_swap_security_and_devices() {
        let mut f = flavor(&[
            ("hw:cpu_policy", "dedicated"),
            ("quota:disk_total_iops_sec", "200"),
            ("lxd:privileged_allowed", "1"),
            ("corral:nesting", "true"),
            ("corral:device:fuse", "unix-char,path=/dev/fuse"),
        ]);
        f.swap = Field::Set(128);
        let m = mapped(&f).unwrap();
        assert_eq!(m.limits.swap_bytes, Some(128 << 20));
        assert!(m.limits.cpu_dedicated);
        assert_eq!(m.limits.disk_read_iops_sec, Some(200));
        assert_eq!(m.limits.disk_write_iops_sec, Some(200));
        assert_eq!(m.privileged, Some(true));
        assert_eq!(m.nesting, Some(true));
        assert!(m.devices.contains_key("fuse"));
        f.swap = Field::Set(0);
        assert_eq!(mapped(&f).unwrap().limits.swap_bytes, Some(0));
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
        // Off the wire a uuid may be anything: never sliced inside a character.
        assert_eq!(hostname(&i, "abcdéf12-0000"), "instance-abcdéf12");
    }

    #[test]
    fn instance_uuids_must_be_uuids() {
        let mut i = Instance {
            flavor: Field::Set(flavor(&[])),
            ..Instance::default()
        };
        for bad in ["abcdéf12-0000", "../../etc", "", "x"] {
            i.uuid = Field::Set(bad.into());
            assert!(
                matches!(from_instance(&i, "img"), Err(SpecError::BadUuid(_))),
                "{bad}"
            );
        }
        i.uuid = Field::Set("0d5c4e4e-7a3b-4a57-9e0b-2f0c9a1d1c11".into());
        let spec = from_instance(&i, "img").unwrap();
        assert_eq!(spec.uuid, "0d5c4e4e-7a3b-4a57-9e0b-2f0c9a1d1c11");
    }

    /// The build message real nova-api sent (`tests/fixtures/nova-34`).
    fn captured_build() -> crate::nova::rpc_methods::BuildAndRunInstance {
        let text = include_str!(
            "../../tests/fixtures/nova-34/api-to-compute/02-build_and_run_instance.json"
        );
        let capture: Value = serde_json::from_str(text).unwrap();
        let body: Value = serde_json::from_str(capture["body_raw"].as_str().unwrap()).unwrap();
        let msg: Value = serde_json::from_str(body["oslo.message"].as_str().unwrap()).unwrap();
        serde_json::from_value(msg["args"].clone()).unwrap()
    }

    #[test]
    fn a_real_build_gets_a_drive_when_asked_or_forced() {
        let b = captured_build();
        let mut inst = b.instance.clone();
        let inputs = GuestDataInputs {
            admin_pass: b.admin_password.as_str(),
            injected_files: b.injected_files.get().map(Vec::as_slice).unwrap_or(&[]),
            ..GuestDataInputs::default()
        };
        // config_drive "" and no force: none.
        let opts = GuestDataOptions::default();
        assert_eq!(guest_data(&inst, &opts, &inputs).unwrap(), (None, None));
        // Forced for a new build.
        let forced = GuestDataOptions {
            force_config_drive: true,
            ..GuestDataOptions::default()
        };
        let (drive, ifaces) = guest_data(&inst, &forced, &inputs).unwrap();
        let drive = drive.unwrap();
        assert_eq!(ifaces, None);
        let md: Value =
            serde_json::from_slice(&drive.files["openstack/latest/meta_data.json"]).unwrap();
        assert_eq!(md["uuid"], inst.uuid().unwrap());
        assert_eq!(md["hostname"], "ct-vm-2.novalocal");
        assert_eq!(md["meta"], serde_json::json!({"purpose": "capture"}));
        assert_eq!(md["admin_pass"], "7Jg4LK6Aobtt");
        assert!(!drive.files.contains_key("openstack/latest/user_data"));
        // Asked for, with user data.
        inst.config_drive = Field::Set("True".into());
        inst.user_data = Field::Set("I2Nsb3VkLWNvbmZpZwo=".into());
        let (drive, _) = guest_data(&inst, &opts, &inputs).unwrap();
        assert_eq!(
            drive.unwrap().files["openstack/2012-08-10/user_data"],
            b"#cloud-config\n"
        );
        // Too much user data fails the build even without a drive.
        inst.config_drive = Field::Set(String::new());
        inst.user_data = Field::Set("A".repeat(65536));
        assert!(matches!(
            guest_data(&inst, &opts, &inputs),
            Err(SpecError::Metadata(_))
        ));
    }

    #[test]
    fn inject_network_writes_the_instance_network() {
        let fixture: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/configdrive/networks.json"
        ))
        .unwrap();
        let b = captured_build();
        let opts = GuestDataOptions {
            inject_network: true,
            ..GuestDataOptions::default()
        };
        let inputs = GuestDataInputs {
            network_info: serde_json::from_value(fixture["network_info"].clone()).unwrap(),
            ..GuestDataInputs::default()
        };
        let (drive, ifaces) = guest_data(&b.instance, &opts, &inputs).unwrap();
        assert!(drive.is_none());
        let text = ifaces.unwrap();
        assert!(
            text.contains("auto eth0\niface eth0 inet static\n"),
            "{text}"
        );
        assert!(text.contains("    address 10.211.0.9\n"), "{text}");
        // No networks: nothing to write, the image's file stays.
        let (_, ifaces) = guest_data(&b.instance, &opts, &GuestDataInputs::default()).unwrap();
        assert_eq!(ifaces, None);
    }
}
