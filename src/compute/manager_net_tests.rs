//! The manager's network work against a Neutron double that keeps ports in
//! memory and binds them as told: what a build creates, binds, plugs and
//! waits for, what a failed build and a delete release, and the interface
//! calls and external events. The real Neutron's answers are checked by the
//! Nova harness scenarios.

use std::collections::BTreeMap;

use super::*;
use crate::driver::VifPlug;
use crate::neutron::{NeutronApi, NeutronError};

const NET: &str = "9a1c0b8e-0000-4000-8000-000000000002";
const USER_PORT: &str = "3f8a3a47-4f2a-4f4b-9f3c-0000000000aa";

/// One network (`10.250.0.0/24`, MTU 1450) of project `admin`; ports kept
/// in memory; a port given a host gets `bind_as` as its `vif_type`.
struct FakeNeutron {
    bind_as: Mutex<String>,
    ports: Mutex<BTreeMap<String, Value>>,
    log: Mutex<Vec<String>>,
}

impl FakeNeutron {
    fn binding(vif_type: &str) -> Arc<FakeNeutron> {
        let n = FakeNeutron {
            bind_as: Mutex::new(vif_type.into()),
            ports: Mutex::new(BTreeMap::new()),
            log: Mutex::new(Vec::new()),
        };
        Arc::new(n)
    }

    /// A port the user made beforehand.
    fn with_user_port(self: Arc<Self>) -> Arc<Self> {
        self.ports.lock().unwrap().insert(
            USER_PORT.into(),
            json!({"id": USER_PORT, "network_id": NET, "tenant_id": "admin",
                   "mac_address": "fa:16:3e:00:00:aa", "device_id": "", "device_owner": "",
                   "status": "DOWN", "admin_state_up": true, "binding:vif_type": "unbound",
                   "fixed_ips": [{"subnet_id": "sub-1", "ip_address": "10.250.0.200"}]}),
        );
        self
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn port(&self, id: &str) -> Option<Value> {
        self.ports.lock().unwrap().get(id).cloned()
    }

    fn not_found(path: &str) -> NeutronError {
        NeutronError::Api {
            method: "GET".into(),
            path: path.into(),
            status: 404,
            kind: Some("PortNotFound".into()),
            message: "not found".into(),
        }
    }
}

fn has(query: &[(&str, String)], k: &str) -> Vec<String> {
    query
        .iter()
        .filter(|(q, _)| *q == k)
        .map(|(_, v)| v.clone())
        .collect()
}

#[async_trait::async_trait]
impl NeutronApi for FakeNeutron {
    async fn list_networks(&self, query: &[(&str, String)]) -> Result<Vec<Value>, NeutronError> {
        let net = json!({"id": NET, "name": "private", "tenant_id": "admin", "shared": false,
                         "subnets": ["sub-1"], "mtu": 1450, "port_security_enabled": true,
                         "provider:network_type": "vxlan"});
        let ids = has(query, "id");
        let mine = has(query, "tenant_id") == ["admin"];
        Ok(
            if ids.iter().any(|i| i == NET) || (ids.is_empty() && mine) {
                vec![net]
            } else {
                vec![]
            },
        )
    }
    async fn list_subnets(&self, _query: &[(&str, String)]) -> Result<Vec<Value>, NeutronError> {
        Ok(vec![
            json!({"id": "sub-1", "network_id": NET, "cidr": "10.250.0.0/24",
            "gateway_ip": "10.250.0.1", "ip_version": 4, "dns_nameservers": ["10.250.0.2"],
            "host_routes": [{"destination": "10.251.0.0/24", "nexthop": "10.250.0.254"}],
            "enable_dhcp": true}),
        ])
    }
    async fn list_ports(&self, query: &[(&str, String)]) -> Result<Vec<Value>, NeutronError> {
        let device = has(query, "device_id");
        Ok(self
            .ports
            .lock()
            .unwrap()
            .values()
            .filter(|p| {
                device.is_empty()
                    || device.contains(&p["device_id"].as_str().unwrap_or("").to_string())
            })
            .filter(|p| {
                has(query, "device_owner").is_empty()
                    || has(query, "device_owner") == [p["device_owner"].as_str().unwrap_or("")]
            })
            .cloned()
            .collect())
    }
    async fn list_security_groups(
        &self,
        _query: &[(&str, String)],
    ) -> Result<Vec<Value>, NeutronError> {
        Ok(vec![json!({"id": "sg-1", "name": "web"})])
    }
    async fn show_port(&self, id: &str) -> Result<Value, NeutronError> {
        self.port(id).ok_or_else(|| FakeNeutron::not_found(id))
    }
    async fn create_port(&self, port: Value) -> Result<Value, NeutronError> {
        let mut ports = self.ports.lock().unwrap();
        let n = ports.len() + 1;
        let id = format!("aaaaaaaa-0000-4000-8000-{n:012}");
        let ip = port["fixed_ips"][0]["ip_address"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("10.250.0.{}", 10 + n));
        let mut p = port.clone();
        p["id"] = json!(id);
        p["mac_address"] = json!(format!("fa:16:3e:00:00:{n:02x}"));
        p["fixed_ips"] = json!([{"subnet_id": "sub-1", "ip_address": ip}]);
        p["status"] = json!("DOWN");
        p["binding:vif_type"] = json!("unbound");
        self.log.lock().unwrap().push(format!(
            "create {} sg={}",
            port["network_id"].as_str().unwrap_or(""),
            port["security_groups"]
        ));
        ports.insert(id, p.clone());
        Ok(p)
    }
    async fn update_port(&self, id: &str, body: Value) -> Result<Value, NeutronError> {
        let mut ports = self.ports.lock().unwrap();
        let p = ports
            .get_mut(id)
            .ok_or_else(|| FakeNeutron::not_found(id))?;
        for (k, v) in body.as_object().unwrap() {
            p[k] = v.clone();
        }
        let host = body.get("binding:host_id").cloned().unwrap_or(Value::Null);
        if host.is_null() {
            p["binding:vif_type"] = json!("unbound");
        } else {
            p["binding:vif_type"] = json!(*self.bind_as.lock().unwrap());
            p["binding:vif_details"] =
                json!({"bridge_name": "br-int", "ovs_hybrid_plug": false, "port_filter": true});
        }
        self.log
            .lock()
            .unwrap()
            .push(format!("update {id} host={host}"));
        Ok(p.clone())
    }
    async fn delete_port(&self, id: &str) -> Result<(), NeutronError> {
        self.log.lock().unwrap().push(format!("delete {id}"));
        self.ports
            .lock()
            .unwrap()
            .remove(id)
            .map(|_| ())
            .ok_or_else(|| FakeNeutron::not_found(id))
    }
}

/// A captured call, its arguments edited first.
fn captured_edit(name: &str, edit: impl FnOnce(&mut Map<String, Value>)) -> ComputeCall {
    captured_as(name, None, edit)
}

/// A captured call's arguments, edited, sent as `method` (the capture's own when None).
fn captured_as(
    name: &str,
    method: Option<&str>,
    edit: impl FnOnce(&mut Map<String, Value>),
) -> ComputeCall {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/nova-34/api-to-compute")
        .join(name);
    let capture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let body: Value = serde_json::from_str(capture["body_raw"].as_str().unwrap()).unwrap();
    let msg: Value = serde_json::from_str(body["oslo.message"].as_str().unwrap()).unwrap();
    let mut args = msg["args"].as_object().cloned().unwrap_or_default();
    edit(&mut args);
    let method = method.unwrap_or_else(|| msg["method"].as_str().unwrap());
    ComputeCall::decode(method, &args).unwrap().unwrap()
}

fn request(network_id: Option<&str>, port_id: Option<&str>) -> Value {
    json!({"nova_object.name": "NetworkRequest", "nova_object.namespace": "nova",
           "nova_object.version": "1.3",
           "nova_object.data": {"network_id": network_id, "port_id": port_id},
           "nova_object.changes": ["network_id", "port_id"]})
}

/// `build_and_run_instance` of the capture, asking for `requests`.
fn build_on(requests: Vec<Value>, groups: &[&str]) -> ComputeCall {
    captured_edit("02-build_and_run_instance.json", |a| {
        a["requested_networks"]["nova_object.data"]["objects"] = json!(requests);
        a.insert("security_groups".into(), json!(groups));
    })
}

/// An instance's `info_cache` holding `vifs`.
fn with_cache(a: &mut Map<String, Value>, vifs: Value) {
    let inst = &mut a["instance"]["nova_object.data"];
    inst["info_cache"] = json!({"nova_object.name": "InstanceInfoCache",
        "nova_object.namespace": "nova", "nova_object.version": "1.5",
        "nova_object.data": {"network_info": vifs.to_string()}});
}

struct Net {
    m: Arc<Manager>,
    driver: Arc<FakeDriver>,
    conductor: Arc<FakeConductor>,
    neutron: Arc<FakeNeutron>,
    _dir: tempfile::TempDir,
}

fn net_manager(neutron: Arc<FakeNeutron>, defaults: &str) -> Net {
    let dir = tempfile::tempdir().unwrap();
    let driver = FakeDriver::running();
    *driver.cached_images.lock().unwrap() = true;
    let conductor = FakeConductor::answering();
    let extra = format!("{defaults}\n[glance]\nendpoint_override = http://127.0.0.1:1/\n");
    let m = manager_conf(driver.clone(), conductor.clone(), dir.path(), &extra)
        .with_neutron(neutron.clone(), "br-int");
    Net {
        m: Arc::new(m),
        driver,
        conductor,
        neutron,
        _dir: dir,
    }
}

/// The info caches saved, as their `network_info` text.
fn caches(c: &FakeConductor) -> Vec<String> {
    c.log()
        .into_iter()
        .filter(|e| e["object"] == "InstanceInfoCache")
        .map(|e| {
            e["fields"]["network_info"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

fn last_vm_state(c: &FakeConductor) -> Option<Value> {
    c.saves()
        .into_iter()
        .rev()
        .find_map(|s| s.get("vm_state").cloned())
}

/// Sends `network-vif-plugged` for `port` as soon as the driver is spawning.
fn plug_when_spawning(n: &Net, uuid: &str, port: &str) -> tokio::task::JoinHandle<()> {
    let (m, driver) = (n.m.clone(), n.driver.clone());
    let (uuid, port) = (uuid.to_string(), port.to_string());
    tokio::spawn(async move {
        while !driver.calls().iter().any(|c| c.starts_with("spawn ")) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let event = captured_edit("20-external_instance_event.json", |a| {
            a["instances"][0]["nova_object.data"]["uuid"] = json!(uuid);
            a["events"] = json!([{"nova_object.name": "InstanceExternalEvent",
                "nova_object.namespace": "nova", "nova_object.version": "1.5",
                "nova_object.data": {"instance_uuid": uuid, "name": "network-vif-plugged",
                    "status": "completed", "tag": port}}]);
        });
        m.cast(ctx(), event).await;
    })
}

#[tokio::test]
async fn a_build_on_a_network_binds_a_port_waits_for_it_and_plugs_it() {
    let n = net_manager(FakeNeutron::binding("ovs"), "vif_plugging_timeout = 20");
    let call = build_on(vec![request(Some(NET), None)], &["web"]);
    let uuid = uuid_of(&call);
    let port = "aaaaaaaa-0000-4000-8000-000000000001";
    let plugger = plug_when_spawning(&n, &uuid, port);
    n.m.cast(ctx(), call).await;
    plugger.await.unwrap();
    assert_eq!(
        n.neutron.log(),
        [
            format!("create {NET} sg=[\"sg-1\"]"),
            format!("update {port} host=\"ct-host-1\""),
        ]
    );
    let p = n.neutron.port(port).unwrap();
    assert_eq!(p["device_id"], json!(uuid));
    assert_eq!(p["device_owner"], json!("compute:nova"));
    let specs = n.driver.specs.lock().unwrap().clone();
    assert_eq!(
        specs[0].vifs,
        [VifSpec {
            id: port.into(),
            mac: "fa:16:3e:00:00:01".into(),
            mtu: Some(1450),
            inside_name: None,
            plug: VifPlug::Ovs {
                bridge: "br-int".into(),
                hybrid: false,
                iface_id: port.into(),
                vm_uuid: uuid.clone(),
            },
        }]
    );
    let cache = caches(&n.conductor);
    assert_eq!(cache.len(), 1, "{cache:?}");
    let info: Value = serde_json::from_str(&cache[0]).unwrap();
    let vif = &info[0];
    assert_eq!(vif["devname"], json!("tapaaaaaaaa-00"));
    assert_eq!(vif["type"], json!("ovs"));
    assert_eq!(vif["preserve_on_delete"], json!(false));
    let subnet = &vif["network"]["subnets"][0];
    assert_eq!(subnet["ips"][0]["address"], json!("10.250.0.11"));
    assert_eq!(subnet["gateway"]["address"], json!("10.250.0.1"));
    assert_eq!(subnet["dns"][0]["address"], json!("10.250.0.2"));
    assert_eq!(subnet["routes"][0]["cidr"], json!("10.251.0.0/24"));
    assert_eq!(vif["network"]["meta"]["mtu"], json!(1450));
    assert_eq!(vif["network"]["meta"]["tunneled"], json!(true));
    assert_eq!(last_vm_state(&n.conductor), Some(json!("active")));
    assert!(n.conductor.faults().is_empty());
}

#[tokio::test]
async fn a_failed_binding_fails_the_build_deletes_its_port_and_unbinds_the_users() {
    let n = net_manager(FakeNeutron::binding("binding_failed").with_user_port(), "");
    let call = build_on(
        vec![request(Some(NET), None), request(None, Some(USER_PORT))],
        &["default"],
    );
    let uuid = uuid_of(&call);
    n.m.cast(ctx(), call).await;
    let made = "aaaaaaaa-0000-4000-8000-000000000002";
    let log = n.neutron.log();
    assert!(log.contains(&format!("delete {made}")), "{log:?}");
    assert!(n.neutron.port(made).is_none());
    // the user's port is kept, free again
    let user = n.neutron.port(USER_PORT).unwrap();
    assert_eq!(user["device_id"], json!(""));
    assert_eq!(user["binding:host_id"], Value::Null);
    assert!(!n.driver.calls().iter().any(|c| c.starts_with("spawn")));
    let faults = n.conductor.faults();
    assert_eq!(faults.len(), 1, "{faults:?}");
    let details = faults[0]["details"].as_str().unwrap();
    assert!(
        details.starts_with("PortBindingFailed: Binding failed for port "),
        "{details}"
    );
    assert_eq!(last_vm_state(&n.conductor), Some(json!("error")));
    // the cache is left empty
    assert_eq!(caches(&n.conductor).last().map(String::as_str), Some("[]"));
    let _ = uuid;
}

#[tokio::test]
async fn no_vif_plugged_event_in_time_fails_the_build_and_releases_the_port() {
    let n = net_manager(FakeNeutron::binding("ovs"), "vif_plugging_timeout = 1");
    let call = build_on(vec![request(Some(NET), None)], &[]);
    n.m.cast(ctx(), call).await;
    assert!(n.neutron.ports.lock().unwrap().is_empty());
    let faults = n.conductor.faults();
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert_eq!(
        faults[0]["details"],
        json!("VirtualInterfaceCreateException: Virtual Interface creation failed")
    );
    assert_eq!(last_vm_state(&n.conductor), Some(json!("error")));
    // not rescheduled, though the capture carries a retry
    assert!(!n.conductor.log().iter().any(|e| e["op"] == "reschedule"));
}

#[tokio::test]
async fn a_late_event_is_no_failure_when_vif_plugging_is_not_fatal() {
    let n = net_manager(
        FakeNeutron::binding("ovs"),
        "vif_plugging_timeout = 1\nvif_plugging_is_fatal = false",
    );
    n.m.cast(ctx(), build_on(vec![request(Some(NET), None)], &[]))
        .await;
    assert_eq!(last_vm_state(&n.conductor), Some(json!("active")));
    assert_eq!(n.neutron.ports.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn networks_none_asks_nothing_of_neutron() {
    let n = net_manager(FakeNeutron::binding("ovs"), "");
    n.m.cast(ctx(), captured("02-build_and_run_instance.json"))
        .await;
    assert!(n.neutron.log().is_empty());
    assert!(n.driver.specs.lock().unwrap()[0].vifs.is_empty());
    assert_eq!(last_vm_state(&n.conductor), Some(json!("active")));
}

#[tokio::test]
async fn networks_without_a_neutron_section_are_refused_before_anything_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let driver = FakeDriver::running();
    let conductor = FakeConductor::answering();
    let m = manager_with(driver.clone(), conductor.clone(), dir.path());
    m.cast(ctx(), build_on(vec![request(Some(NET), None)], &[]))
        .await;
    let faults = conductor.faults();
    assert!(
        faults[0]["message"]
            .as_str()
            .unwrap()
            .contains("no [neutron] section"),
        "{faults:?}"
    );
    assert!(driver.specs.lock().unwrap().is_empty());
}

#[tokio::test]
async fn delete_removes_the_ports_nova_made_and_unbinds_the_users() {
    let neutron = FakeNeutron::binding("ovs").with_user_port();
    let n = net_manager(neutron.clone(), "");
    let uuid = uuid_of(&captured("21-terminate_instance.json"));
    let made = "bbbbbbbb-0000-4000-8000-000000000001";
    {
        let mut ports = neutron.ports.lock().unwrap();
        ports.insert(made.into(), json!({"id": made, "device_id": uuid}));
        ports.get_mut(USER_PORT).unwrap()["device_id"] = json!(uuid);
    }
    let call = captured_edit("21-terminate_instance.json", |a| {
        with_cache(
            a,
            json!([{"id": made, "preserve_on_delete": false},
                   {"id": USER_PORT, "preserve_on_delete": true}]),
        )
    });
    n.m.cast(ctx(), call).await;
    assert!(neutron.port(made).is_none());
    let user = neutron.port(USER_PORT).unwrap();
    assert_eq!(user["device_id"], json!(""));
    assert_eq!(
        neutron.log(),
        [
            format!("update {USER_PORT} host=null"),
            format!("delete {made}")
        ]
    );
}

fn attach_call(network: Option<&str>, port: Option<&str>) -> ComputeCall {
    captured_as("04-start_instance.json", Some("attach_interface"), |a| {
        a.insert("network_id".into(), json!(network));
        a.insert("port_id".into(), json!(port));
        a.insert("requested_ip".into(), Value::Null);
        a.insert("tag".into(), Value::Null);
    })
}

#[tokio::test]
async fn attach_interface_binds_a_new_port_plugs_it_and_answers_its_vif() {
    let n = net_manager(FakeNeutron::binding("ovs"), "");
    let call = attach_call(Some(NET), None);
    let uuid = uuid_of(&call);
    let vif = n.m.call(ctx(), call).await.unwrap();
    let port = "aaaaaaaa-0000-4000-8000-000000000001";
    assert_eq!(vif["id"], json!(port));
    assert_eq!(vif["type"], json!("ovs"));
    assert_eq!(
        n.driver.calls(),
        [format!("attach_interface {uuid} {port}")]
    );
    assert_eq!(n.neutron.port(port).unwrap()["device_id"], json!(uuid));
    assert!(caches(&n.conductor)[0].contains(port));
    assert_eq!(
        n.conductor.events(),
        [
            json!(["start", "compute_attach_interface"]),
            json!(["finish", "compute_attach_interface", false])
        ]
    );
}

#[tokio::test]
async fn an_attach_the_driver_refuses_releases_the_port() {
    let n = net_manager(FakeNeutron::binding("ovs").with_user_port(), "");
    n.driver.failing.lock().unwrap().push("attach_interface");
    let f =
        n.m.call(ctx(), attach_call(Some(NET), None))
            .await
            .unwrap_err();
    assert_eq!(f.class, "InterfaceAttachFailed");
    assert_eq!(n.neutron.ports.lock().unwrap().len(), 1);
    // a user port is unbound and kept
    let f =
        n.m.call(ctx(), attach_call(None, Some(USER_PORT)))
            .await
            .unwrap_err();
    assert_eq!(f.class, "InterfaceAttachFailed");
    assert_eq!(n.neutron.port(USER_PORT).unwrap()["device_id"], json!(""));
}

#[tokio::test]
async fn attach_of_a_port_in_use_is_port_in_use() {
    let neutron = FakeNeutron::binding("ovs").with_user_port();
    neutron.ports.lock().unwrap().get_mut(USER_PORT).unwrap()["device_id"] = json!("other");
    let n = net_manager(neutron, "");
    let f =
        n.m.call(ctx(), attach_call(None, Some(USER_PORT)))
            .await
            .unwrap_err();
    assert_eq!(f.class, "PortInUse");
    assert!(n.driver.calls().is_empty());
}

fn detach_call(port: &str, cached: Value) -> ComputeCall {
    captured_as("04-start_instance.json", Some("detach_interface"), |a| {
        a.insert("port_id".into(), json!(port));
        with_cache(a, cached);
    })
}

#[tokio::test]
async fn detach_interface_unplugs_then_deletes_the_port() {
    let neutron = FakeNeutron::binding("ovs");
    let made = "bbbbbbbb-0000-4000-8000-000000000001";
    neutron
        .ports
        .lock()
        .unwrap()
        .insert(made.into(), json!({"id": made}));
    let n = net_manager(neutron.clone(), "");
    let call = detach_call(made, json!([{"id": made, "preserve_on_delete": false}]));
    let uuid = uuid_of(&call);
    // a cast in nova 34's compute RPC API
    n.m.cast(ctx(), call).await;
    assert_eq!(
        n.driver.calls(),
        [format!("detach_interface {uuid} {made}")]
    );
    assert!(neutron.port(made).is_none());
    assert_eq!(caches(&n.conductor), ["[]"]);
    assert!(n.conductor.faults().is_empty());
    assert_eq!(
        n.conductor.events(),
        [
            json!(["start", "compute_detach_interface"]),
            json!(["finish", "compute_detach_interface", false])
        ]
    );
}

#[tokio::test]
async fn detach_of_a_port_the_server_lacks_is_a_port_not_found_fault() {
    let n = net_manager(FakeNeutron::binding("ovs"), "");
    n.m.cast(ctx(), detach_call("nope", json!([]))).await;
    assert!(n.driver.calls().is_empty());
    let faults = n.conductor.faults();
    assert_eq!(
        faults[0]["details"],
        json!("PortNotFound: Port nope is not attached")
    );
}

#[tokio::test]
async fn a_user_port_detached_is_unbound_and_kept() {
    let neutron = FakeNeutron::binding("ovs").with_user_port();
    let n = net_manager(neutron.clone(), "");
    n.driver.failing.lock().unwrap().push("detach_interface");
    let cache = json!([{"id": USER_PORT, "preserve_on_delete": true}]);
    n.m.cast(ctx(), detach_call(USER_PORT, cache.clone())).await;
    // the driver could not unplug it: the port stays as it was
    let faults = n.conductor.faults();
    assert!(
        faults[0]["details"]
            .as_str()
            .unwrap()
            .starts_with("InterfaceDetachFailed: Failed to detach network adapter device from "),
        "{faults:?}"
    );
    assert!(n.neutron.log().is_empty());
    n.driver.failing.lock().unwrap().clear();
    n.m.cast(ctx(), detach_call(USER_PORT, cache)).await;
    assert_eq!(neutron.log(), [format!("update {USER_PORT} host=null")]);
    assert!(neutron.port(USER_PORT).is_some());
}

#[tokio::test]
async fn a_user_port_attached_stays_the_users_through_a_network_changed_event() {
    let neutron = FakeNeutron::binding("ovs").with_user_port();
    let n = net_manager(neutron.clone(), "");
    let call = attach_call(None, Some(USER_PORT));
    let uuid = uuid_of(&call);
    n.m.call(ctx(), call).await.unwrap();
    // Neutron's network-changed for the binding: its instance was read
    // before the attach, with no interface in its info cache
    let event = captured_edit("20-external_instance_event.json", |a| {
        let inst = &mut a["instances"][0]["nova_object.data"];
        inst["uuid"] = json!(uuid);
        inst["info_cache"] = json!({"nova_object.name": "InstanceInfoCache",
            "nova_object.namespace": "nova", "nova_object.version": "1.5",
            "nova_object.data": {"network_info": "[]"}});
        a["events"] = json!([{"nova_object.name": "InstanceExternalEvent",
            "nova_object.namespace": "nova", "nova_object.version": "1.5",
            "nova_object.data": {"instance_uuid": uuid, "name": "network-changed",
                "status": "completed", "tag": USER_PORT}}]);
    });
    n.m.cast(ctx(), event).await;
    let saved = caches(&n.conductor);
    assert_eq!(saved.len(), 2, "{saved:?}");
    let vifs: Value = serde_json::from_str(&saved[1]).unwrap();
    assert_eq!(vifs[0]["id"], json!(USER_PORT));
    assert_eq!(vifs[0]["preserve_on_delete"], json!(true), "{vifs}");
    // detached: unbound and kept, as the user passed it
    n.m.cast(ctx(), detach_call(USER_PORT, json!([]))).await;
    assert!(neutron.port(USER_PORT).is_some());
    assert_eq!(neutron.port(USER_PORT).unwrap()["device_id"], json!(""));
}

#[tokio::test]
async fn a_deleted_port_event_detaches_and_unknown_instances_are_ignored() {
    let n = net_manager(FakeNeutron::binding("ovs"), "");
    let port = "bbbbbbbb-0000-4000-8000-000000000001";
    let event = |instance_uuid: &str| {
        let instance_uuid = instance_uuid.to_string();
        captured_edit("20-external_instance_event.json", move |a| {
            a["events"] = json!([{"nova_object.name": "InstanceExternalEvent",
                "nova_object.namespace": "nova", "nova_object.version": "1.5",
                "nova_object.data": {"instance_uuid": instance_uuid,
                    "name": "network-vif-deleted", "status": "completed", "tag": port}}]);
        })
    };
    n.m.cast(ctx(), event("00000000-0000-4000-8000-00000000dead"))
        .await;
    assert!(n.driver.calls().is_empty());
    let uuid = "fa144a2d-fb7a-4a9d-af75-6a9617d5ecb4";
    n.m.cast(ctx(), event(uuid)).await;
    assert_eq!(
        n.driver.calls(),
        [format!("detach_interface {uuid} {port}")]
    );
}

#[tokio::test]
async fn a_failed_binding_is_rescheduled_when_alternates_exist() {
    let n = net_manager(FakeNeutron::binding("binding_failed"), "");
    let call = captured_as("02-build_and_run_instance.json", None, |a| {
        a["requested_networks"]["nova_object.data"]["objects"] = json!([request(Some(NET), None)]);
        a["host_list"] = json!([{"nova_object.name": "Selection", "nova_object.namespace": "nova",
            "nova_object.version": "1.1", "nova_object.data": {
                "service_host": "ct-host-2", "nodename": "ct-host-2",
                "compute_node_uuid": "00000000-0000-4000-8000-000000000002",
                "cell_uuid": "00000000-0000-4000-8000-000000000003", "limits": null,
                "allocation_request": "{}", "allocation_request_version": "1.36",
                "availability_zone": "nova"}}]);
    });
    n.m.cast(ctx(), call).await;
    assert!(n.neutron.ports.lock().unwrap().is_empty());
    assert!(n.conductor.log().iter().any(|e| e["op"] == "reschedule"));
    assert!(n.conductor.faults().is_empty());
    assert_ne!(last_vm_state(&n.conductor), Some(json!("error")));
}

/// A Neutron that refuses to delete ports.
struct Refusing(Arc<FakeNeutron>);

#[async_trait::async_trait]
impl NeutronApi for Refusing {
    async fn list_networks(&self, q: &[(&str, String)]) -> Result<Vec<Value>, NeutronError> {
        self.0.list_networks(q).await
    }
    async fn list_subnets(&self, q: &[(&str, String)]) -> Result<Vec<Value>, NeutronError> {
        self.0.list_subnets(q).await
    }
    async fn list_ports(&self, q: &[(&str, String)]) -> Result<Vec<Value>, NeutronError> {
        self.0.list_ports(q).await
    }
    async fn list_security_groups(&self, q: &[(&str, String)]) -> Result<Vec<Value>, NeutronError> {
        self.0.list_security_groups(q).await
    }
    async fn show_port(&self, id: &str) -> Result<Value, NeutronError> {
        self.0.show_port(id).await
    }
    async fn create_port(&self, port: Value) -> Result<Value, NeutronError> {
        self.0.create_port(port).await
    }
    async fn update_port(&self, id: &str, port: Value) -> Result<Value, NeutronError> {
        self.0.update_port(id, port).await
    }
    async fn delete_port(&self, id: &str) -> Result<(), NeutronError> {
        Err(NeutronError::Api {
            method: "DELETE".into(),
            path: id.into(),
            status: 500,
            kind: None,
            message: "neutron is unwell".into(),
        })
    }
}

#[tokio::test]
async fn a_delete_whose_ports_cannot_go_leaves_the_server_in_error() {
    let neutron = FakeNeutron::binding("ovs");
    let uuid = uuid_of(&captured("21-terminate_instance.json"));
    let made = "bbbbbbbb-0000-4000-8000-000000000001";
    neutron
        .ports
        .lock()
        .unwrap()
        .insert(made.into(), json!({"id": made, "device_id": uuid}));
    let dir = tempfile::tempdir().unwrap();
    let driver = FakeDriver::running();
    let conductor = FakeConductor::answering();
    let m = manager_with(driver.clone(), conductor.clone(), dir.path())
        .with_neutron(Arc::new(Refusing(neutron.clone())), "br-int");
    m.cast(ctx(), captured("21-terminate_instance.json")).await;
    assert!(neutron.port(made).is_some());
    assert_eq!(last_vm_state(&conductor), Some(json!("error")));
    assert!(!conductor.log().iter().any(|e| e["op"] == "destroy"));
    let faults = conductor.faults();
    assert!(
        faults[0]["message"]
            .as_str()
            .unwrap()
            .contains("neutron is unwell"),
        "{faults:?}"
    );
}
