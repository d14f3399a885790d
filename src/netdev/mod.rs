//! Host network devices of virtual interfaces, as os-vif plugs them for
//! libvirt: a veth pair per interface whose host end (`tap<id11>`) goes into
//! a Linux bridge, onto an Open vSwitch bridge (directly, or through a
//! per-interface `qbr` Linux bridge and a `qvb`/`qvo` veth pair: os-vif's
//! hybrid plug) or stays bare, and whose other end is made directly in the
//! instance's network namespace. A leaf: it knows nothing of instances, only
//! of devices, names and the record of what was plugged (`vifs.json`).
//!
//! Everything here blocks (it runs `ip`, `nsenter` and `ovs-vsctl`): callers
//! in async code run it on blocking threads.

mod names;
mod plug;

use std::path::{Path, PathBuf};

pub use names::{
    host_mac, inside_names, qbr_name, qvb_name, qvo_name, short_id, tap_name, validate_id,
    validate_ifname, validate_mac, validate_mtu,
};
pub use plug::{bridge_exists, ensure_free, host_has, links_in, plug, unplug, unplug_all};

/// Errors of plugging and unplugging host devices.
#[derive(Debug, thiserror::Error)]
pub enum NetdevError {
    #[error("{0}")]
    Invalid(String),
    #[error("{kind} bridge {name} does not exist")]
    NoBridge { kind: &'static str, name: String },
    #[error("{0} already exists on the host")]
    Exists(String),
    #[error("interface {dev}: `{command}` failed: {reason}")]
    Command {
        dev: String,
        command: String,
        reason: String,
    },
    #[error("interface record {path}: {reason}")]
    Record { path: PathBuf, reason: String },
}

/// Where the host end goes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Switch {
    /// A port of a Linux bridge.
    Bridge { bridge: String },
    /// A port of an Open vSwitch bridge with os-vif's `external_ids`.
    Ovs {
        bridge: String,
        iface_id: String,
        vm_uuid: String,
    },
    /// os-vif's hybrid plug: the tap in `qbr<id11>`, joined to the OVS
    /// bridge by the `qvb<id11>`/`qvo<id11>` veth pair (`qvo` carries the
    /// `external_ids`).
    Hybrid {
        bridge: String,
        iface_id: String,
        vm_uuid: String,
    },
    /// The bare host end, up.
    Tap,
}

/// One interface, to plug or as plugged: an entry of `vifs.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Vif {
    pub id: String,
    /// The instance end's MAC address.
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Its name in the instance.
    pub inside: String,
    pub switch: Switch,
}

impl Vif {
    /// The host end of the veth pair.
    pub fn tap(&self) -> String {
        tap_name(&self.id)
    }

    /// Every host device a plug of this interface makes.
    pub fn host_devices(&self) -> Vec<String> {
        match self.switch {
            Switch::Hybrid { .. } => vec![
                self.tap(),
                qbr_name(&self.id),
                qvb_name(&self.id),
                qvo_name(&self.id),
            ],
            _ => vec![self.tap()],
        }
    }

    /// The OVS port a plug of this interface makes, with its bridge.
    pub fn ovs_port(&self) -> Option<(&str, String)> {
        match &self.switch {
            Switch::Ovs { bridge, .. } => Some((bridge, self.tap())),
            Switch::Hybrid { bridge, .. } => Some((bridge, qvo_name(&self.id))),
            _ => None,
        }
    }

    /// Checks the id, MAC, MTU, names and bridge names (not the host).
    pub fn validate(&self) -> Result<(), NetdevError> {
        validate_id(&self.id)?;
        validate_mac(&self.mac)?;
        if let Some(m) = self.mtu {
            validate_mtu(m)?;
        }
        validate_ifname(&self.inside)?;
        match &self.switch {
            Switch::Bridge { bridge }
            | Switch::Ovs { bridge, .. }
            | Switch::Hybrid { bridge, .. } => validate_ifname(bridge)
                .map_err(|e| NetdevError::Invalid(format!("bridge name: {e}")))?,
            Switch::Tap => {}
        }
        if let Switch::Ovs {
            iface_id, vm_uuid, ..
        }
        | Switch::Hybrid {
            iface_id, vm_uuid, ..
        } = &self.switch
        {
            // Both go into ovsdb's external_ids as they are.
            validate_id(iface_id)?;
            validate_id(vm_uuid)?;
        }
        Ok(())
    }
}

/// The record of an instance's plugged interfaces, in its directory.
pub const RECORD: &str = "vifs.json";

/// Writes what is (or is about to be) plugged; an empty list removes the
/// record.
pub fn save(instance_dir: &Path, vifs: &[Vif]) -> Result<(), NetdevError> {
    let path = instance_dir.join(RECORD);
    if vifs.is_empty() {
        return match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(NetdevError::Record {
                path,
                reason: e.to_string(),
            }),
        };
    }
    let fail = |reason: String| NetdevError::Record {
        path: path.clone(),
        reason,
    };
    let text = serde_json::to_vec(vifs).map_err(|e| fail(e.to_string()))?;
    crate::fsutil::write_atomic(&path, &text, 0o600).map_err(|e| fail(e.to_string()))
}

/// The interfaces recorded for an instance (none without a record).
pub fn load(instance_dir: &Path) -> Result<Vec<Vif>, NetdevError> {
    let path = instance_dir.join(RECORD);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| NetdevError::Record {
            path: path.clone(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(NetdevError::Record {
            path,
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vif(id: &str, switch: Switch) -> Vif {
        Vif {
            id: id.into(),
            mac: "fa:16:3e:00:00:01".into(),
            mtu: Some(1400),
            inside: "eth0".into(),
            switch,
        }
    }

    #[test]
    fn devices_of_each_plug() {
        let id = "3f2a1b4c-5d6e-4f70-8192-a3b4c5d6e7f8";
        let v = vif(
            id,
            Switch::Hybrid {
                bridge: "br-int".into(),
                iface_id: id.into(),
                vm_uuid: "u".into(),
            },
        );
        assert_eq!(
            v.host_devices(),
            [
                "tap3f2a1b4c-5d",
                "qbr3f2a1b4c-5d",
                "qvb3f2a1b4c-5d",
                "qvo3f2a1b4c-5d"
            ]
        );
        assert_eq!(v.ovs_port(), Some(("br-int", "qvo3f2a1b4c-5d".into())));
        let t = vif(id, Switch::Tap);
        assert_eq!(t.host_devices(), ["tap3f2a1b4c-5d"]);
        assert_eq!(t.ovs_port(), None);
        v.validate().unwrap();
        let bad = vif(
            id,
            Switch::Bridge {
                bridge: "a/b".into(),
            },
        );
        assert!(bad.validate().is_err());
    }

    #[test]
    fn record_round_trip() {
        let d = tempfile::tempdir().unwrap();
        assert!(load(d.path()).unwrap().is_empty());
        let list = vec![
            vif(
                "port-1",
                Switch::Bridge {
                    bridge: "br0".into(),
                },
            ),
            vif("port-2", Switch::Tap),
        ];
        save(d.path(), &list).unwrap();
        assert_eq!(load(d.path()).unwrap(), list);
        save(d.path(), &[]).unwrap();
        assert!(!d.path().join(RECORD).exists());
        save(d.path(), &[]).unwrap();
        std::fs::write(d.path().join(RECORD), "[{").unwrap();
        assert!(matches!(load(d.path()), Err(NetdevError::Record { .. })));
    }
}
