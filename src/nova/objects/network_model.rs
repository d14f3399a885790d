//! The network model of `InstanceInfoCache.network_info` (`nova/network/model.py`).
//!
//! These are plain dicts, not versioned objects. Keys are declared in the order nova's
//! constructors set them (`VIF(...)`, `Network(...)`, ...), which is the order
//! `network_info` JSON text has on the wire. nova folds unknown constructor keywords
//! into `meta`; anything else unexpected is kept in `extra`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::super::fields::Field;

/// `NetworkInfo`: the list of VIFs.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NetworkInfo(pub Vec<Vif>);

/// `nova.network.model.VIF`: one port of the instance.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Vif {
    /// Neutron port id.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub id: Field<String>,
    /// MAC address.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub address: Field<String>,
    /// Network with subnets and fixed IPs.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub network: Field<Network>,
    /// VIF type from the port binding (`ovs`, `bridge`, `tap`, ...).
    #[serde(default, skip_serializing_if = "Field::is_unset", rename = "type")]
    pub vif_type: Field<String>,
    /// Binding `vif_details` (`port_filter`, `ovs_hybrid_plug`, `bridge_name`, ...).
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub details: Field<Map<String, Value>>,
    /// Host-side device name (`tapXXXXXXXX-XX`).
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub devname: Field<String>,
    /// OVS interface id.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub ovs_interfaceid: Field<String>,
    /// 802.1Qbh parameters.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub qbh_params: Field<Value>,
    /// 802.1Qbg parameters.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub qbg_params: Field<Value>,
    /// Port is ACTIVE in Neutron.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub active: Field<bool>,
    /// `normal`, `direct`, ...
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub vnic_type: Field<String>,
    /// Binding profile.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub profile: Field<Value>,
    /// Port was passed in by the user: keep it on delete.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub preserve_on_delete: Field<bool>,
    /// Port was created by nova.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub delegate_create: Field<bool>,
    /// Extra keys (e.g. `mtu` lives in `network.meta`).
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub meta: Field<Map<String, Value>>,
    /// Unexpected keys, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Vif {
    /// Every fixed IP on every subnet.
    pub fn fixed_ips(&self) -> Vec<&FixedIp> {
        self.network
            .get()
            .and_then(|n| n.subnets.get())
            .map(|subnets| {
                subnets
                    .iter()
                    .filter_map(|s| s.ips.get())
                    .flatten()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `network.meta.mtu`, if present.
    pub fn mtu(&self) -> Option<i64> {
        self.network.get()?.meta.get()?.get("mtu")?.as_i64()
    }
}

/// `nova.network.model.Network`.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Network {
    /// Neutron network id.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub id: Field<String>,
    /// Bridge name, if any.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub bridge: Field<String>,
    /// Network name.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub label: Field<String>,
    /// Subnets.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub subnets: Field<Vec<Subnet>>,
    /// `injected`, `tenant_id`, `mtu`, `physical_network`, `tunneled`, ...
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub meta: Field<Map<String, Value>>,
    /// Unexpected keys, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `nova.network.model.Subnet`.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Subnet {
    /// CIDR.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub cidr: Field<String>,
    /// DNS servers.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub dns: Field<Vec<Ip>>,
    /// Gateway.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub gateway: Field<Ip>,
    /// Fixed IPs of the port on this subnet.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub ips: Field<Vec<FixedIp>>,
    /// Host routes.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub routes: Field<Vec<Route>>,
    /// 4 or 6.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub version: Field<i64>,
    /// `dhcp_server`, ...
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub meta: Field<Map<String, Value>>,
    /// Unexpected keys, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `nova.network.model.IP` (gateway, DNS server, floating IP).
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Ip {
    /// Address.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub address: Field<String>,
    /// `fixed`, `floating`, `gateway`, `dns`.
    #[serde(default, skip_serializing_if = "Field::is_unset", rename = "type")]
    pub ip_type: Field<String>,
    /// 4 or 6.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub version: Field<i64>,
    /// Extra keys.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub meta: Field<Map<String, Value>>,
    /// Unexpected keys, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `nova.network.model.FixedIP`: an [`Ip`] with floating IPs.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct FixedIp {
    /// Address.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub address: Field<String>,
    /// `fixed`.
    #[serde(default, skip_serializing_if = "Field::is_unset", rename = "type")]
    pub ip_type: Field<String>,
    /// 4 or 6.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub version: Field<i64>,
    /// Extra keys.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub meta: Field<Map<String, Value>>,
    /// Floating IPs mapped to it.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub floating_ips: Field<Vec<Ip>>,
    /// Unexpected keys, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `nova.network.model.Route`.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Route {
    /// Destination CIDR.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub cidr: Field<String>,
    /// Next hop.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub gateway: Field<Ip>,
    /// Never set by nova.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub interface: Field<String>,
    /// Extra keys.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub meta: Field<Map<String, Value>>,
    /// Unexpected keys, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::super::super::fields::JsonString;
    use super::*;
    use crate::pyjson;

    /// A `network_info` as nova writes it for one OVS port (key order of the model's
    /// constructors; shape from `nova/network/neutron.py:_build_network_info_model`).
    const NETWORK_INFO: &str = r#"[{"id": "3f8a3a47-4f2a-4f4b-9f3c-000000000001", "address": "fa:16:3e:11:22:33", "network": {"id": "9a1c0b8e-0000-4000-8000-000000000002", "bridge": "br-int", "label": "private", "subnets": [{"cidr": "10.0.0.0/24", "dns": [{"address": "10.0.0.2", "type": "dns", "version": 4, "meta": {}}], "gateway": {"address": "10.0.0.1", "type": "gateway", "version": 4, "meta": {}}, "ips": [{"address": "10.0.0.5", "type": "fixed", "version": 4, "meta": {}, "floating_ips": [{"address": "172.24.4.10", "type": "floating", "version": 4, "meta": {}}]}], "routes": [], "version": 4, "meta": {"dhcp_server": "10.0.0.2"}}], "meta": {"injected": false, "tenant_id": "admin", "mtu": 1442, "physical_network": null, "tunneled": true}}, "type": "ovs", "details": {"connectivity": "l2", "port_filter": true, "ovs_hybrid_plug": false, "datapath_type": "system", "bridge_name": "br-int"}, "devname": "tap3f8a3a47-4f", "ovs_interfaceid": "3f8a3a47-4f2a-4f4b-9f3c-000000000001", "qbh_params": null, "qbg_params": null, "active": true, "vnic_type": "normal", "profile": {}, "preserve_on_delete": false, "delegate_create": true, "meta": {}}]"#;

    #[test]
    fn network_info_string_round_trips_byte_identical() {
        let ni = JsonString::<NetworkInfo>::parse(NETWORK_INFO).unwrap();
        let vif = &ni.value.0[0];
        assert_eq!(vif.vif_type.as_str(), Some("ovs"));
        assert_eq!(vif.devname.as_str(), Some("tap3f8a3a47-4f"));
        assert_eq!(vif.mtu(), Some(1442));
        let ips = vif.fixed_ips();
        assert_eq!(ips[0].address.as_str(), Some("10.0.0.5"));
        assert_eq!(ni.to_json_text().unwrap(), NETWORK_INFO);
        let v: Value = serde_json::from_str(NETWORK_INFO).unwrap();
        assert_eq!(pyjson::to_string(&v), NETWORK_INFO);
    }
}
