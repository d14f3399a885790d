//! Virtual interfaces of the seam (`VifSpec`) as host devices
//! (`netdev::Vif`): the checks of a spec's interfaces, the names they get
//! inside the instance, and the mapping of device errors to driver errors.

use std::collections::BTreeSet;

use super::{DriverError, VifPlug, VifSpec};
use crate::netdev::{self, NetdevError, Switch};

/// A device error as frontends should see it: a bad value or a missing
/// bridge is the caller's, a name taken on the host a conflict.
pub fn vif_error(e: NetdevError) -> DriverError {
    match e {
        NetdevError::Invalid(_) | NetdevError::NoBridge { .. } => {
            DriverError::Invalid(e.to_string())
        }
        NetdevError::Exists(_) => DriverError::Conflict(e.to_string()),
        other => DriverError::Vif(other),
    }
}

/// The host device form of `vif`, named `inside` in the instance.
pub fn to_netdev(vif: &VifSpec, inside: String) -> netdev::Vif {
    let switch = match &vif.plug {
        VifPlug::Bridge { bridge } => Switch::Bridge {
            bridge: bridge.clone(),
        },
        VifPlug::Ovs {
            bridge,
            hybrid,
            iface_id,
            vm_uuid,
        } => {
            let (bridge, iface_id, vm_uuid) = (bridge.clone(), iface_id.clone(), vm_uuid.clone());
            if *hybrid {
                Switch::Hybrid {
                    bridge,
                    iface_id,
                    vm_uuid,
                }
            } else {
                Switch::Ovs {
                    bridge,
                    iface_id,
                    vm_uuid,
                }
            }
        }
        VifPlug::Tap => Switch::Tap,
    };
    netdev::Vif {
        id: vif.id.clone(),
        mac: vif.mac.to_ascii_lowercase(),
        mtu: vif.mtu,
        inside,
        switch,
    }
}

/// The interfaces of an instance as host devices, named inside as asked
/// or by position (`taken`: names the namespace already has).
pub fn plan(vifs: &[VifSpec], taken: &BTreeSet<String>) -> Result<Vec<netdev::Vif>, DriverError> {
    let wanted: Vec<Option<String>> = vifs.iter().map(|v| v.inside_name.clone()).collect();
    let names = netdev::inside_names(&wanted, taken).map_err(vif_error)?;
    Ok(vifs
        .iter()
        .zip(names)
        .map(|(v, n)| to_netdev(v, n))
        .collect())
}

/// Checks an instance's interfaces: each id, MAC, MTU, name and bridge
/// name well formed, ids (and the host device names made of them) unique,
/// names inside unique.
pub fn check(vifs: &[VifSpec]) -> Result<(), DriverError> {
    let mut ids = BTreeSet::new();
    let mut taps = BTreeSet::new();
    for v in plan(vifs, &BTreeSet::new())? {
        v.validate().map_err(vif_error)?;
        if !ids.insert(v.id.clone()) {
            return Err(DriverError::Invalid(format!(
                "interface {} is given twice",
                v.id
            )));
        }
        if !taps.insert(v.tap()) {
            return Err(DriverError::Invalid(format!(
                "interface {}: its host device {} would be another interface's (the first 11 characters of ids must differ)",
                v.id,
                v.tap()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, plug: VifPlug) -> VifSpec {
        VifSpec {
            id: id.into(),
            mac: "FA:16:3E:00:00:01".into(),
            mtu: Some(1450),
            inside_name: None,
            plug,
        }
    }

    #[test]
    fn plugs_map_to_switches() {
        let ovs = |hybrid| VifPlug::Ovs {
            bridge: "br-int".into(),
            hybrid,
            iface_id: "port-1".into(),
            vm_uuid: "vm-1".into(),
        };
        let v = plan(
            &[
                spec("port-1", ovs(false)),
                spec("port-2", ovs(true)),
                spec("port-3", VifPlug::Tap),
            ],
            &BTreeSet::new(),
        )
        .unwrap();
        assert!(matches!(v[0].switch, Switch::Ovs { .. }));
        assert!(matches!(v[1].switch, Switch::Hybrid { .. }));
        assert_eq!(v[2].switch, Switch::Tap);
        assert_eq!(v[0].mac, "fa:16:3e:00:00:01");
        assert_eq!(
            [&v[0].inside, &v[1].inside, &v[2].inside],
            ["eth0", "eth1", "eth2"]
        );
    }

    #[test]
    fn bad_interfaces_are_refused() {
        let br = || VifPlug::Bridge {
            bridge: "br0".into(),
        };
        check(&[spec("a", br()), spec("b", br())]).unwrap();
        let cases: Vec<Vec<VifSpec>> = vec![
            vec![spec("a", br()), spec("a", br())],
            // Same first 11 characters: the same tap.
            vec![spec("0123456789a-1", br()), spec("0123456789a-2", br())],
            vec![VifSpec {
                mac: "zz".into(),
                ..spec("a", br())
            }],
            vec![VifSpec {
                mtu: Some(40),
                ..spec("a", br())
            }],
            vec![spec("a b", br())],
            vec![VifSpec {
                inside_name: Some("x/y".into()),
                ..spec("a", br())
            }],
            vec![spec(
                "a",
                VifPlug::Ovs {
                    bridge: "br-int".into(),
                    hybrid: false,
                    iface_id: "x,y=z".into(),
                    vm_uuid: "u".into(),
                },
            )],
        ];
        for c in cases {
            assert!(matches!(check(&c), Err(DriverError::Invalid(_))), "{c:?}");
        }
    }
}
