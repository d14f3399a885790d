//! nova-compute's side of Neutron (`nova/network/neutron.py`): ports made or
//! taken over for a build and bound to this host, the `NetworkInfo` built back
//! from them, the VIFs the driver plugs, the `network-vif-plugged` waiters, and
//! the ports released on delete.
//!
//! Boot binds with `binding:host_id` on the port itself, as nova 34 does; the
//! port-bindings extension is only for migrations, which corral does not do.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::driver::{VifPlug, VifSpec};
use crate::neutron::{NeutronApi, NeutronError};
use crate::nova::fields::Field;
use crate::nova::objects::network_model::{FixedIp, Ip, Network, NetworkInfo, Route, Subnet, Vif};

/// nova's `NIC_NAME_LEN`.
const NIC_NAME_LEN: usize = 14;

/// The network failures of a build or an interface attach, each reported as
/// the nova exception nova-compute raises for it.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Neutron(#[from] NeutronError),
    #[error("Binding failed for port {0}, please check neutron logs for more information.")]
    PortBindingFailed(String),
    #[error("Port {0} could not be found.")]
    PortNotFound(String),
    #[error("Port {port} not usable for instance {instance}.")]
    PortNotUsable { port: String, instance: String },
    #[error("Port {0} is still in use.")]
    PortInUse(String),
    #[error("Network {0} could not be found.")]
    NetworkNotFound(String),
    #[error("Multiple possible networks found, use a Network ID to be more specific.")]
    NetworkAmbiguous,
    #[error("No specific network was requested and none are available for project '{0}'.")]
    NoNetwork(String),
    #[error("Security group {0} not found.")]
    SecurityGroupNotFound(String),
    #[error("Multiple security groups found matching '{0}'. Use an ID to be more specific.")]
    SecurityGroupAmbiguous(String),
    #[error("Network requires port_security_enabled and subnet associated in order to apply security groups.")]
    SecurityGroupCannotBeApplied,
    /// A `vif_type` corral cannot plug into a container.
    #[error("port {port}: vif_type {vif_type} cannot be plugged into a container (supported: ovs, bridge, tap)")]
    UnsupportedVifType { port: String, vif_type: String },
    #[error("Virtual Interface creation failed")]
    VirtualInterfaceCreate,
    #[error("Failed to attach network adapter device to {0}")]
    InterfaceAttachFailed(String),
    #[error("Failed to detach network adapter device from {0}")]
    InterfaceDetachFailed(String),
    /// Detach of a port the instance does not have (`PortNotFound`).
    #[error("Port {0} is not attached")]
    PortNotAttached(String),
    #[error("{0}")]
    Invalid(String),
}

impl NetworkError {
    /// The nova exception class of this error.
    pub fn nova_class(&self) -> &'static str {
        use NetworkError as N;
        match self {
            N::Neutron(e) if e.is_not_found() => "NotFound",
            N::Neutron(_) => "NovaException",
            N::PortBindingFailed(_) => "PortBindingFailed",
            N::PortNotFound(_) => "PortNotFound",
            N::PortNotUsable { .. } => "PortNotUsable",
            N::PortInUse(_) => "PortInUse",
            N::NetworkNotFound(_) => "NetworkNotFound",
            N::NetworkAmbiguous => "NetworkAmbiguous",
            N::NoNetwork(_) => "InterfaceAttachFailedNoNetwork",
            N::SecurityGroupNotFound(_) => "SecurityGroupNotFound",
            N::SecurityGroupAmbiguous(_) => "NoUniqueMatch",
            N::SecurityGroupCannotBeApplied => "SecurityGroupCannotBeApplied",
            N::UnsupportedVifType { .. } => "VirtualInterfacePlugException",
            N::VirtualInterfaceCreate => "VirtualInterfaceCreateException",
            N::InterfaceAttachFailed(_) => "InterfaceAttachFailed",
            N::InterfaceDetachFailed(_) => "InterfaceDetachFailed",
            N::PortNotAttached(_) => "PortNotFound",
            N::Invalid(_) => "InvalidInput",
        }
    }
}

/// One requested network or port (`NetworkRequest`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetRequest {
    pub network_id: Option<String>,
    pub port_id: Option<String>,
    /// A fixed IP wanted on the network.
    pub address: Option<String>,
}

/// What a build asks of the network.
#[derive(Debug, Clone, Default)]
pub struct Allocation {
    pub uuid: String,
    pub project_id: String,
    pub availability_zone: Option<String>,
    /// Empty: the one network the project has, if it has one.
    pub requests: Vec<NetRequest>,
    /// `auto`: the one network available, as with no request.
    pub auto: bool,
    /// Security group names or ids.
    pub security_groups: Vec<String>,
    /// User ports the instance already has (kept on delete).
    pub preserved: Vec<String>,
}

/// Neutron as nova-compute uses it.
#[derive(Clone)]
pub struct NetworkApi {
    neutron: Arc<dyn NeutronApi>,
    /// `[neutron] ovs_bridge`.
    ovs_bridge: String,
    /// `binding:host_id`: this host.
    host: String,
}

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

fn q(k: &'static str, v: &str) -> (&'static str, String) {
    (k, v.to_string())
}

impl NetworkApi {
    pub fn new(neutron: Arc<dyn NeutronApi>, ovs_bridge: &str, host: &str) -> NetworkApi {
        NetworkApi {
            neutron,
            ovs_bridge: ovs_bridge.to_string(),
            host: host.to_string(),
        }
    }

    /// `allocate_for_instance`: ports created on requested networks, user
    /// ports taken over, all bound to this host, in request order. On failure
    /// nothing is left: created ports are deleted, user ports unbound.
    /// Returns the instance's whole `NetworkInfo` and the ids of this
    /// allocation's ports, in request order.
    pub async fn allocate(
        &self,
        a: &Allocation,
    ) -> Result<(NetworkInfo, Vec<String>), NetworkError> {
        if a.project_id.is_empty() {
            return Err(NetworkError::Invalid(format!(
                "empty project id for instance {}",
                a.uuid
            )));
        }
        // _validate_requested_port_ids
        let mut ordered: Vec<NetRequest> = Vec::new();
        let mut user_ports: HashMap<String, Value> = HashMap::new();
        if !a.auto {
            for r in &a.requests {
                let mut r = r.clone();
                if let Some(pid) = &r.port_id {
                    let port = self.neutron.show_port(pid).await.map_err(|e| {
                        if e.is_not_found() {
                            NetworkError::PortNotFound(pid.clone())
                        } else {
                            e.into()
                        }
                    })?;
                    let owner = s(&port, "tenant_id").or_else(|| s(&port, "project_id"));
                    if owner.as_deref() != Some(a.project_id.as_str()) {
                        return Err(NetworkError::PortNotUsable {
                            port: pid.clone(),
                            instance: a.uuid.clone(),
                        });
                    }
                    if s(&port, "device_id").is_some_and(|d| !d.is_empty()) {
                        return Err(NetworkError::PortInUse(pid.clone()));
                    }
                    ensure_bound(&port)?;
                    r.network_id = s(&port, "network_id");
                    user_ports.insert(pid.clone(), port);
                }
                if r.network_id.is_some() {
                    ordered.push(r);
                }
            }
        }
        // _validate_requested_network_ids
        let net_ids: Vec<String> = ordered
            .iter()
            .filter_map(|r| r.network_id.clone())
            .collect();
        let nets = self.available_networks(&a.project_id, &net_ids).await?;
        let unspecified = a.requests.is_empty()
            || a.auto
            || (a.requests.len() == 1
                && a.requests[0].network_id.is_none()
                && a.requests[0].port_id.is_none());
        if nets.is_empty() {
            // `auto` with nothing available: nova would have Neutron make a
            // topology (auto-allocated-topology); corral does not, it fails below.
            if a.requests.is_empty() && !a.auto {
                return Ok((NetworkInfo::default(), Vec::new()));
            }
            if !a.auto {
                for r in &a.requests {
                    if let (None, Some(n)) = (&r.port_id, &r.network_id) {
                        return Err(NetworkError::NetworkNotFound(n.clone()));
                    }
                }
            }
        }
        if unspecified {
            match nets.as_slice() {
                [] => return Err(NetworkError::NoNetwork(a.project_id.clone())),
                [one] => ordered.push(NetRequest {
                    network_id: s(one, "id"),
                    ..Default::default()
                }),
                _ => return Err(NetworkError::NetworkAmbiguous),
            }
        }
        let nets: BTreeMap<String, Value> = nets
            .into_iter()
            .filter_map(|n| s(&n, "id").map(|id| (id, n)))
            .collect();
        let sg_ids = self
            .security_group_ids(&a.project_id, &a.security_groups)
            .await?;
        // _create_ports_for_instance
        let mut created: Vec<String> = Vec::new();
        let mut order: Vec<(String, bool)> = Vec::new();
        let made = async {
            for r in &ordered {
                let Some(net) = r.network_id.as_ref().and_then(|n| nets.get(n)) else {
                    continue;
                };
                let port_security = net
                    .get("port_security_enabled")
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                let has_subnets = net
                    .get("subnets")
                    .and_then(Value::as_array)
                    .is_some_and(|s| !s.is_empty());
                if (port_security && !has_subnets) || (!port_security && !sg_ids.is_empty()) {
                    return Err(NetworkError::SecurityGroupCannotBeApplied);
                }
                match &r.port_id {
                    Some(p) => order.push((p.clone(), false)),
                    None => {
                        let mut body = json!({
                            "device_id": a.uuid,
                            "network_id": r.network_id,
                            "admin_state_up": true,
                            "tenant_id": a.project_id,
                        });
                        if let Some(ip) = &r.address {
                            body["fixed_ips"] = json!([{ "ip_address": ip }]);
                        }
                        if !sg_ids.is_empty() {
                            body["security_groups"] = json!(sg_ids);
                        }
                        let port = self.neutron.create_port(body).await?;
                        let id = s(&port, "id").ok_or_else(|| {
                            NetworkError::Invalid("neutron created a port without an id".into())
                        })?;
                        tracing::info!(uuid = %a.uuid, port = %id, "created a port");
                        created.push(id.clone());
                        order.push((id, true));
                    }
                }
            }
            // _update_ports_for_instance: bind to this host
            let zone = format!(
                "compute:{}",
                a.availability_zone.as_deref().unwrap_or("nova")
            );
            for (id, _) in &order {
                let mut body = json!({
                    "device_id": a.uuid,
                    "device_owner": zone,
                    "binding:host_id": self.host,
                });
                if let Some(profile) = user_ports
                    .get(id)
                    .and_then(|p| p.get("binding:profile"))
                    .filter(|p| p.as_object().is_some_and(|m| !m.is_empty()))
                {
                    body["binding:profile"] = profile.clone();
                }
                let port = self.neutron.update_port(id, body).await?;
                ensure_bound(&port)?;
            }
            Ok(())
        }
        .await;
        let preexisting: Vec<String> = order
            .iter()
            .filter(|(_, c)| !c)
            .map(|(id, _)| id.clone())
            .collect();
        if let Err(e) = made {
            self.unbind_ports(&preexisting).await;
            self.delete_ports(&created).await;
            return Err(e);
        }
        let ids: Vec<String> = order.into_iter().map(|(id, _)| id).collect();
        let mut keep = a.preserved.clone();
        keep.extend(preexisting.iter().cloned());
        match self.nw_info(&a.uuid, &ids, &keep).await {
            Ok(info) => Ok((info, ids)),
            Err(e) => {
                self.unbind_ports(&preexisting).await;
                self.delete_ports(&created).await;
                Err(e)
            }
        }
    }

    /// `_get_available_networks`: the requested ones, or the project's own
    /// plus the shared ones.
    async fn available_networks(
        &self,
        project: &str,
        ids: &[String],
    ) -> Result<Vec<Value>, NetworkError> {
        if !ids.is_empty() {
            let query: Vec<_> = ids.iter().map(|i| q("id", i)).collect();
            let mut nets = self.neutron.list_networks(&query).await?;
            // in the order requested
            nets.sort_by_key(|n| {
                ids.iter()
                    .position(|i| Some(i.as_str()) == n.get("id").and_then(Value::as_str))
            });
            return Ok(nets);
        }
        let mut nets = self
            .neutron
            .list_networks(&[q("tenant_id", project), q("shared", "False")])
            .await?;
        nets.extend(self.neutron.list_networks(&[q("shared", "True")]).await?);
        Ok(nets)
    }

    /// `_process_security_groups`; `default` alone is Neutron's own default.
    async fn security_group_ids(
        &self,
        project: &str,
        groups: &[String],
    ) -> Result<Vec<String>, NetworkError> {
        if groups.is_empty() || groups == ["default"] {
            return Ok(Vec::new());
        }
        let found = self
            .neutron
            .list_security_groups(&[
                q("tenant_id", project),
                q("fields", "id"),
                q("fields", "name"),
            ])
            .await?;
        let mut ids = Vec::new();
        for g in groups {
            if found.iter().any(|f| s(f, "id").as_deref() == Some(g)) {
                ids.push(g.clone());
                continue;
            }
            let named: Vec<String> = found
                .iter()
                .filter(|f| s(f, "name").as_deref() == Some(g))
                .filter_map(|f| s(f, "id"))
                .collect();
            match named.as_slice() {
                [one] => ids.push(one.clone()),
                [] => return Err(NetworkError::SecurityGroupNotFound(g.clone())),
                _ => return Err(NetworkError::SecurityGroupAmbiguous(g.clone())),
            }
        }
        Ok(ids)
    }

    /// `_build_network_info_model`: the instance's ports (`device_id`), in
    /// `order` first, then any others Neutron holds for it.
    pub async fn nw_info(
        &self,
        uuid: &str,
        order: &[String],
        preexisting: &[String],
    ) -> Result<NetworkInfo, NetworkError> {
        let mut ports = self.neutron.list_ports(&[q("device_id", uuid)]).await?;
        ports.sort_by_key(|p| {
            let id = s(p, "id").unwrap_or_default();
            order.iter().position(|o| *o == id).unwrap_or(usize::MAX)
        });
        let net_ids: Vec<String> = ports.iter().filter_map(|p| s(p, "network_id")).collect();
        let nets = if net_ids.is_empty() {
            Vec::new()
        } else {
            let query: Vec<_> = net_ids.iter().map(|i| q("id", i)).collect();
            self.neutron.list_networks(&query).await?
        };
        let mut vifs = Vec::new();
        for port in &ports {
            vifs.push(self.vif_model(port, &nets, preexisting).await?);
        }
        Ok(NetworkInfo(vifs))
    }

    /// `_build_vif_model`.
    async fn vif_model(
        &self,
        port: &Value,
        nets: &[Value],
        preexisting: &[String],
    ) -> Result<Vif, NetworkError> {
        let id = s(port, "id").unwrap_or_default();
        let active = port.get("admin_state_up") == Some(&json!(false))
            || s(port, "status").as_deref() == Some("ACTIVE");
        let subnets = self.subnets_of(port).await?;
        let net_id = s(port, "network_id").unwrap_or_default();
        let net = nets.iter().find(|n| s(n, "id").as_deref() == Some(&net_id));
        let vif_type = s(port, "binding:vif_type");
        let details = port
            .get("binding:vif_details")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let (bridge, ovs_interfaceid) = match vif_type.as_deref() {
            Some("ovs") => (
                Some(
                    details
                        .get("bridge_name")
                        .and_then(Value::as_str)
                        .unwrap_or(&self.ovs_bridge)
                        .to_string(),
                ),
                Some(id.clone()),
            ),
            Some("bridge") => (
                Some(
                    details
                        .get("bridge_name")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("brq{net_id}")),
                ),
                None,
            ),
            _ => (None, None),
        };
        let bridge = bridge.map(|b| b.chars().take(NIC_NAME_LEN).collect::<String>());
        let mut meta = Map::new();
        meta.insert("injected".into(), json!(false));
        meta.insert(
            "tenant_id".into(),
            json!(net
                .and_then(|n| s(n, "tenant_id"))
                .or_else(|| s(port, "tenant_id"))),
        );
        meta.insert(
            "mtu".into(),
            net.and_then(|n| n.get("mtu"))
                .cloned()
                .unwrap_or(Value::Null),
        );
        meta.insert(
            "physical_network".into(),
            net.and_then(|n| n.get("provider:physical_network"))
                .cloned()
                .unwrap_or(Value::Null),
        );
        let tunneled = net
            .and_then(|n| s(n, "provider:network_type"))
            .is_some_and(|t| matches!(t.as_str(), "vxlan" | "gre" | "geneve"));
        meta.insert("tunneled".into(), json!(tunneled));
        let network = Network {
            id: Field::Set(net_id.clone()),
            bridge: bridge.map(Field::Set).unwrap_or(Field::Null),
            label: net
                .and_then(|n| s(n, "name"))
                .map(Field::Set)
                .unwrap_or(Field::Null),
            subnets: Field::Set(subnets),
            meta: Field::Set(meta),
            extra: Map::new(),
        };
        let devname: String = format!("tap{id}").chars().take(NIC_NAME_LEN).collect();
        Ok(Vif {
            id: Field::Set(id.clone()),
            address: s(port, "mac_address")
                .map(Field::Set)
                .unwrap_or(Field::Null),
            network: Field::Set(network),
            vif_type: vif_type.map(Field::Set).unwrap_or(Field::Null),
            details: Field::Set(details),
            devname: Field::Set(devname),
            ovs_interfaceid: ovs_interfaceid.map(Field::Set).unwrap_or(Field::Null),
            qbh_params: Field::Null,
            qbg_params: Field::Null,
            active: Field::Set(active),
            vnic_type: Field::Set(s(port, "binding:vnic_type").unwrap_or_else(|| "normal".into())),
            profile: Field::Set(
                port.get("binding:profile")
                    .filter(|p| p.is_object())
                    .cloned()
                    .unwrap_or_else(|| json!({})),
            ),
            preserve_on_delete: Field::Set(preexisting.contains(&id)),
            delegate_create: Field::Set(true),
            meta: Field::Set(Map::new()),
            extra: Map::new(),
        })
    }

    /// `_get_subnets_from_port`, with the port's fixed IPs in each.
    async fn subnets_of(&self, port: &Value) -> Result<Vec<Subnet>, NetworkError> {
        let fixed: Vec<(String, String)> = port
            .get("fixed_ips")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|f| Some((s(f, "subnet_id")?, s(f, "ip_address")?)))
                    .collect()
            })
            .unwrap_or_default();
        if fixed.is_empty() {
            return Ok(Vec::new());
        }
        let mut ids: Vec<String> = fixed.iter().map(|(s, _)| s.clone()).collect();
        ids.dedup();
        let query: Vec<_> = ids.iter().map(|i| q("id", i)).collect();
        let found = self.neutron.list_subnets(&query).await?;
        let mut out = Vec::new();
        for sub in &found {
            let sid = s(sub, "id").unwrap_or_default();
            let version = sub.get("ip_version").and_then(Value::as_i64).unwrap_or(4);
            let ip = |address: Option<String>, kind: &str| Ip {
                address: address.map(Field::Set).unwrap_or(Field::Null),
                ip_type: Field::Set(kind.into()),
                version: Field::Set(version),
                meta: Field::Set(Map::new()),
                extra: Map::new(),
            };
            let mut meta = Map::new();
            let dhcp_ports = self
                .neutron
                .list_ports(&[
                    q("network_id", &s(sub, "network_id").unwrap_or_default()),
                    q("device_owner", "network:dhcp"),
                ])
                .await?;
            if let Some(server) = dhcp_ports.iter().find_map(|p| {
                p.get("fixed_ips")?
                    .as_array()?
                    .iter()
                    .find(|f| s(f, "subnet_id").as_deref() == Some(&sid))
                    .and_then(|f| s(f, "ip_address"))
            }) {
                meta.insert("dhcp_server".into(), json!(server));
            }
            meta.insert(
                "enable_dhcp".into(),
                json!(sub
                    .get("enable_dhcp")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)),
            );
            if let Some(mode) = s(sub, "ipv6_address_mode") {
                meta.insert("ipv6_address_mode".into(), json!(mode));
            }
            let dns = sub
                .get("dns_nameservers")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(|d| ip(Some(d.to_string()), "dns"))
                        .collect()
                })
                .unwrap_or_default();
            let routes = sub
                .get("host_routes")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|r| Route {
                            cidr: s(r, "destination").map(Field::Set).unwrap_or(Field::Null),
                            gateway: Field::Set(ip(s(r, "nexthop"), "gateway")),
                            interface: Field::Null,
                            meta: Field::Set(Map::new()),
                            extra: Map::new(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let ips = fixed
                .iter()
                .filter(|(s, _)| *s == sid)
                .map(|(_, addr)| FixedIp {
                    address: Field::Set(addr.clone()),
                    ip_type: Field::Set("fixed".into()),
                    version: Field::Set(version),
                    meta: Field::Set(Map::new()),
                    floating_ips: Field::Set(Vec::new()),
                    extra: Map::new(),
                })
                .collect();
            out.push(Subnet {
                cidr: s(sub, "cidr").map(Field::Set).unwrap_or(Field::Null),
                dns: Field::Set(dns),
                gateway: Field::Set(ip(s(sub, "gateway_ip"), "gateway")),
                ips: Field::Set(ips),
                routes: Field::Set(routes),
                version: Field::Set(version),
                meta: Field::Set(meta),
                extra: Map::new(),
            });
        }
        Ok(out)
    }

    /// `deallocate_for_instance`: the instance's ports Nova made are deleted,
    /// the ones the user passed in (`preserve_on_delete`, or named in the
    /// request) are unbound and kept.
    pub async fn deallocate(&self, uuid: &str, keep: &[String]) -> Result<(), NetworkError> {
        let ports = self.neutron.list_ports(&[q("device_id", uuid)]).await?;
        let ids: Vec<String> = ports.iter().filter_map(|p| s(p, "id")).collect();
        let (kept, gone): (Vec<String>, Vec<String>) =
            ids.into_iter().partition(|id| keep.contains(id));
        self.unbind_ports(&kept).await;
        // user ports the instance no longer holds are unbound all the same
        let stray: Vec<String> = keep.iter().filter(|k| !kept.contains(k)).cloned().collect();
        self.unbind_ports(&stray).await;
        let mut first = None;
        for id in &gone {
            match self.neutron.delete_port(id).await {
                Ok(()) => tracing::info!(uuid, port = %id, "deleted a port"),
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::warn!(uuid, port = %id, error = %e, "cannot delete a port");
                    first.get_or_insert(e);
                }
            }
        }
        match first {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// `_unbind_ports`: no host, no device (errors logged).
    pub async fn unbind_ports(&self, ids: &[String]) {
        for id in ids {
            let body = json!({"binding:host_id": null, "device_id": "", "device_owner": ""});
            match self.neutron.update_port(id, body).await {
                Ok(_) => tracing::info!(port = %id, "unbound a port"),
                Err(e) if e.is_not_found() => {}
                Err(e) => tracing::warn!(port = %id, error = %e, "cannot unbind a port"),
            }
        }
    }

    /// `unbind_ports(detach=False)` of a shelve offload: the ports leave this
    /// host (no `binding:host_id`, no profile) but stay the instance's
    /// (`device_id` kept), for the host that unshelves it (errors logged).
    pub async fn unbind_host(&self, ids: &[String]) {
        for id in ids {
            let body = json!({"binding:host_id": null, "binding:profile": {}});
            match self.neutron.update_port(id, body).await {
                Ok(_) => tracing::info!(port = %id, "port unbound from this host"),
                Err(e) if e.is_not_found() => {}
                Err(e) => tracing::warn!(port = %id, error = %e, "cannot unbind a port"),
            }
        }
    }

    /// `setup_instance_network_on_host` of an unshelve: every port of the
    /// instance (`device_id`) bound to this host, then its `NetworkInfo` in
    /// `order` (the cached one), `preserved` ones kept on delete.
    pub async fn bind_host(
        &self,
        uuid: &str,
        order: &[String],
        preserved: &[String],
    ) -> Result<NetworkInfo, NetworkError> {
        let ports = self.neutron.list_ports(&[q("device_id", uuid)]).await?;
        for id in ports.iter().filter_map(|p| s(p, "id")) {
            let body = json!({"binding:host_id": self.host});
            let port = self.neutron.update_port(&id, body).await?;
            ensure_bound(&port)?;
        }
        self.nw_info(uuid, order, preserved).await
    }

    /// `deallocate_port_for_instance`: a user port unbound, one Nova made deleted.
    pub async fn deallocate_port(&self, id: &str, preserved: bool) -> Result<(), NetworkError> {
        if preserved {
            self.unbind_ports(&[id.to_string()]).await;
            return Ok(());
        }
        match self.neutron.delete_port(id).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// `_delete_ports` of a failed allocation (errors logged).
    async fn delete_ports(&self, ids: &[String]) {
        for id in ids {
            match self.neutron.delete_port(id).await {
                Ok(()) => tracing::info!(port = %id, "deleted a port"),
                Err(e) if e.is_not_found() => {}
                Err(e) => tracing::warn!(port = %id, error = %e, "cannot delete a port"),
            }
        }
    }

    /// The VIF the driver plugs for each port of `info`.
    pub fn vif_specs(&self, uuid: &str, info: &NetworkInfo) -> Result<Vec<VifSpec>, NetworkError> {
        info.0.iter().map(|v| self.vif_spec(uuid, v)).collect()
    }

    /// One VIF: `ovs` => an OVS port (hybrid from `ovs_hybrid_plug`),
    /// `bridge` => a Linux bridge, `tap` => a bare tap; a failed or missing
    /// binding is PortBindingFailed, any other type refused.
    pub fn vif_spec(&self, uuid: &str, v: &Vif) -> Result<VifSpec, NetworkError> {
        let id = v.id.as_str().unwrap_or_default().to_string();
        let vif_type = v.vif_type.as_str().unwrap_or("unbound");
        let details = v.details.get().cloned().unwrap_or_default();
        let bridge_detail = details
            .get("bridge_name")
            .and_then(Value::as_str)
            .map(str::to_string);
        let net_bridge = v
            .network
            .get()
            .and_then(|n| n.bridge.as_str())
            .map(str::to_string);
        let plug = match vif_type {
            "ovs" => VifPlug::Ovs {
                bridge: bridge_detail.unwrap_or_else(|| self.ovs_bridge.clone()),
                hybrid: details
                    .get("ovs_hybrid_plug")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                iface_id: id.clone(),
                vm_uuid: uuid.to_string(),
            },
            "bridge" => VifPlug::Bridge {
                bridge: bridge_detail.or(net_bridge).ok_or_else(|| {
                    NetworkError::UnsupportedVifType {
                        port: id.clone(),
                        vif_type: "bridge without a bridge name".into(),
                    }
                })?,
            },
            "tap" => VifPlug::Tap,
            "binding_failed" | "unbound" => return Err(NetworkError::PortBindingFailed(id)),
            other => {
                return Err(NetworkError::UnsupportedVifType {
                    port: id,
                    vif_type: other.to_string(),
                })
            }
        };
        let mac = v
            .address
            .as_str()
            .ok_or_else(|| NetworkError::Invalid(format!("port {id} has no MAC address")))?
            .to_string();
        Ok(VifSpec {
            id,
            mac,
            mtu: v.mtu().and_then(|m| u32::try_from(m).ok()),
            inside_name: None,
            plug,
        })
    }
}

/// `_ensure_no_port_binding_failure`.
fn ensure_bound(port: &Value) -> Result<(), NetworkError> {
    if s(port, "binding:vif_type").as_deref() == Some("binding_failed") {
        return Err(NetworkError::PortBindingFailed(
            s(port, "id").unwrap_or_default(),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[path = "network_live_tests.rs"]
mod live_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nova::fields::JsonString;

    struct Nothing;

    #[async_trait::async_trait]
    impl NeutronApi for Nothing {
        async fn list_networks(&self, _: &[(&str, String)]) -> Result<Vec<Value>, NeutronError> {
            Ok(vec![])
        }
        async fn list_subnets(&self, _: &[(&str, String)]) -> Result<Vec<Value>, NeutronError> {
            Ok(vec![])
        }
        async fn list_ports(&self, _: &[(&str, String)]) -> Result<Vec<Value>, NeutronError> {
            Ok(vec![])
        }
        async fn list_security_groups(
            &self,
            _: &[(&str, String)],
        ) -> Result<Vec<Value>, NeutronError> {
            Ok(vec![])
        }
        async fn show_port(&self, id: &str) -> Result<Value, NeutronError> {
            Err(NeutronError::Api {
                method: "GET".into(),
                path: id.into(),
                status: 404,
                kind: None,
                message: String::new(),
            })
        }
        async fn create_port(&self, port: Value) -> Result<Value, NeutronError> {
            Ok(port)
        }
        async fn update_port(&self, _: &str, port: Value) -> Result<Value, NeutronError> {
            Ok(port)
        }
        async fn delete_port(&self, _: &str) -> Result<(), NeutronError> {
            Ok(())
        }
    }

    fn api() -> NetworkApi {
        NetworkApi::new(Arc::new(Nothing), "br-int", "h1")
    }

    fn vif(vif_type: &str, details: Value) -> Vif {
        let text = json!([{"id": "3f8a3a47-4f2a-4f4b-9f3c-000000000001",
            "address": "fa:16:3e:11:22:33", "type": vif_type, "details": details,
            "network": {"id": "n1", "bridge": "brq-from-net", "meta": {"mtu": 1442}}}]);
        JsonString::<NetworkInfo>::parse(&text.to_string())
            .unwrap()
            .value
            .0
            .remove(0)
    }

    #[test]
    fn each_vif_type_maps_to_its_plug_or_is_refused() {
        let a = api();
        let spec = a.vif_spec("u1", &vif("ovs", json!({}))).unwrap();
        assert_eq!(spec.mtu, Some(1442));
        assert_eq!(spec.mac, "fa:16:3e:11:22:33");
        assert_eq!(
            spec.plug,
            VifPlug::Ovs {
                bridge: "br-int".into(),
                hybrid: false,
                iface_id: "3f8a3a47-4f2a-4f4b-9f3c-000000000001".into(),
                vm_uuid: "u1".into()
            }
        );
        let spec = a
            .vif_spec(
                "u1",
                &vif(
                    "ovs",
                    json!({"bridge_name": "br-x", "ovs_hybrid_plug": true}),
                ),
            )
            .unwrap();
        assert!(
            matches!(spec.plug, VifPlug::Ovs { ref bridge, hybrid: true, .. } if bridge == "br-x")
        );
        let spec = a.vif_spec("u1", &vif("bridge", json!({}))).unwrap();
        assert_eq!(
            spec.plug,
            VifPlug::Bridge {
                bridge: "brq-from-net".into()
            }
        );
        let spec = a
            .vif_spec("u1", &vif("bridge", json!({"bridge_name": "brq1"})))
            .unwrap();
        assert_eq!(
            spec.plug,
            VifPlug::Bridge {
                bridge: "brq1".into()
            }
        );
        assert_eq!(
            a.vif_spec("u1", &vif("tap", json!({}))).unwrap().plug,
            VifPlug::Tap
        );
        for failed in ["binding_failed", "unbound"] {
            let e = a.vif_spec("u1", &vif(failed, json!({}))).unwrap_err();
            assert_eq!(e.nova_class(), "PortBindingFailed");
        }
        let e = a.vif_spec("u1", &vif("vhostuser", json!({}))).unwrap_err();
        assert_eq!(e.nova_class(), "VirtualInterfacePlugException");
        assert!(
            e.to_string()
                .contains("vif_type vhostuser cannot be plugged"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn requests_are_checked_against_neutron() {
        let a = api();
        let mut alloc = Allocation {
            uuid: "u1".into(),
            project_id: "p1".into(),
            ..Default::default()
        };
        // no request and no network: no interface
        let (info, ids) = a.allocate(&alloc).await.unwrap();
        assert!(info.0.is_empty() && ids.is_empty());
        alloc.auto = true;
        let e = a.allocate(&alloc).await.unwrap_err();
        assert_eq!(e.nova_class(), "InterfaceAttachFailedNoNetwork");
        alloc.auto = false;
        alloc.requests = vec![NetRequest {
            network_id: Some("n9".into()),
            ..Default::default()
        }];
        let e = a.allocate(&alloc).await.unwrap_err();
        assert_eq!(e.to_string(), "Network n9 could not be found.");
        alloc.requests = vec![NetRequest {
            port_id: Some("p9".into()),
            ..Default::default()
        }];
        let e = a.allocate(&alloc).await.unwrap_err();
        assert_eq!(e.nova_class(), "PortNotFound");
        alloc.project_id.clear();
        assert_eq!(
            a.allocate(&alloc).await.unwrap_err().nova_class(),
            "InvalidInput"
        );
    }
}
