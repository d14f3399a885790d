//! Live test of the network part against a real Neutron, gated on
//! `CORRAL_NEUTRON_URL` (the test stack's: `auth_strategy = noauth`, ML2 with
//! no mechanism driver, so every binding fails).
//!
//! What the Nova scenarios cannot show while no agent binds ports: the
//! `NetworkInfo` built from Neutron's own port, network and subnet documents,
//! the queries with repeated keys, Neutron's error documents, and the clean-up
//! of a failed binding, port by port.

use std::sync::Arc;

use futures::FutureExt;
use serde_json::{json, Value};

use super::*;
use crate::neutron::{NeutronClient, NeutronOptions};

struct Stack {
    url: String,
    http: reqwest::Client,
}

impl Stack {
    async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .header("X-Auth-Token", "admin")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }

    async fn delete(&self, path: &str) {
        let _ = self
            .http
            .delete(format!("{}{path}", self.url))
            .header("X-Auth-Token", "admin")
            .send()
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_ports_against_a_real_neutron() {
    let Ok(url) = std::env::var("CORRAL_NEUTRON_URL") else {
        eprintln!("skipping live neutron test: CORRAL_NEUTRON_URL is not set");
        return;
    };
    let url = url.trim_end_matches('/').to_string();
    let pairs = [
        ("auth_type", "admin_token"),
        ("token", "admin"),
        ("endpoint", url.as_str()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let opts = NeutronOptions::from_pairs(&pairs).unwrap().unwrap();
    let client = Arc::new(NeutronClient::new(&opts).unwrap());
    let api = NetworkApi::new(client.clone(), "br-int", "corral-live-host");
    let stack = Stack {
        url,
        http: reqwest::Client::new(),
    };
    let project = format!("corral-live-{}", uuid::Uuid::new_v4().simple());
    let net = stack
        .post(
            "/v2.0/networks",
            json!({"network": {"name": "corral-live", "project_id": project, "mtu": 1400}}),
        )
        .await["network"]
        .clone();
    let net_id = net["id"].as_str().unwrap().to_string();
    let outcome = std::panic::AssertUnwindSafe(exercise(&api, &stack, &project, &net_id))
        .catch_unwind()
        .await;
    // everything the test made goes, whatever happened
    for p in client
        .list_ports(&[("network_id", net_id.clone())])
        .await
        .unwrap_or_default()
    {
        if let Some(id) = p["id"].as_str() {
            stack.delete(&format!("/v2.0/ports/{id}")).await;
        }
    }
    stack.delete(&format!("/v2.0/networks/{net_id}")).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn exercise(api: &NetworkApi, stack: &Stack, project: &str, net_id: &str) {
    let subnet = stack
        .post(
            "/v2.0/subnets",
            json!({"subnet": {"network_id": net_id, "project_id": project, "ip_version": 4,
                "cidr": "10.243.17.0/24", "dns_nameservers": ["10.243.17.2"],
                "host_routes": [{"destination": "10.244.0.0/16", "nexthop": "10.243.17.254"}]}}),
        )
        .await["subnet"]
        .clone();
    let uuid = uuid::Uuid::new_v4().to_string();

    // a port on the instance, as Neutron keeps it: the NetworkInfo built from it
    let port = stack
        .post(
            "/v2.0/ports",
            json!({"port": {"network_id": net_id, "project_id": project, "device_id": uuid,
                "fixed_ips": [{"ip_address": "10.243.17.40"}]}}),
        )
        .await["port"]
        .clone();
    let port_id = port["id"].as_str().unwrap().to_string();
    let info = api
        .nw_info(&uuid, &[], std::slice::from_ref(&port_id))
        .await
        .unwrap();
    let text = serde_json::to_value(&info).unwrap();
    let vif = &text[0];
    assert_eq!(vif["id"], json!(port_id));
    assert_eq!(vif["address"], port["mac_address"]);
    assert_eq!(vif["type"], json!("unbound"));
    assert_eq!(vif["active"], json!(false));
    assert_eq!(vif["preserve_on_delete"], json!(true));
    assert_eq!(vif["devname"], json!(format!("tap{}", &port_id[..11])));
    let network = &vif["network"];
    assert_eq!(network["label"], json!("corral-live"));
    assert_eq!(network["meta"]["mtu"], json!(1400));
    assert_eq!(network["meta"]["tenant_id"], json!(project));
    let sub = &network["subnets"][0];
    assert_eq!(sub["cidr"], subnet["cidr"]);
    assert_eq!(sub["gateway"]["address"], json!("10.243.17.1"));
    assert_eq!(sub["dns"][0]["address"], json!("10.243.17.2"));
    assert_eq!(sub["routes"][0]["cidr"], json!("10.244.0.0/16"));
    assert_eq!(
        sub["routes"][0]["gateway"]["address"],
        json!("10.243.17.254")
    );
    assert_eq!(sub["ips"][0]["address"], json!("10.243.17.40"));
    assert_eq!(sub["meta"]["enable_dhcp"], json!(true));
    // unbound: no VIF for the driver
    let e = api.vif_specs(&uuid, &info).unwrap_err();
    assert_eq!(e.nova_class(), "PortBindingFailed");
    // delete: the user's port unbound and kept
    api.deallocate(&uuid, std::slice::from_ref(&port_id))
        .await
        .unwrap();
    let ports = api.nw_info(&uuid, &[], &[]).await.unwrap();
    assert!(ports.0.is_empty());

    // a build on the network with that port and a fixed IP: ML2 has no
    // mechanism driver, the binding fails, nothing is left bound or made
    let alloc = Allocation {
        uuid: uuid.clone(),
        project_id: project.to_string(),
        availability_zone: Some("nova".into()),
        requests: vec![
            NetRequest {
                network_id: Some(net_id.to_string()),
                address: Some("10.243.17.50".into()),
                ..Default::default()
            },
            NetRequest {
                port_id: Some(port_id.clone()),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let e = api.allocate(&alloc).await.unwrap_err();
    assert_eq!(e.nova_class(), "PortBindingFailed", "{e}");
    let left = api.nw_info(&uuid, &[], &[]).await.unwrap();
    assert!(left.0.is_empty(), "{left:?}");

    // the checks of requested ports and networks, with Neutron's answers
    let mut other = alloc.clone();
    other.requests = vec![NetRequest {
        port_id: Some(uuid::Uuid::new_v4().to_string()),
        ..Default::default()
    }];
    assert_eq!(
        api.allocate(&other).await.unwrap_err().nova_class(),
        "PortNotFound"
    );
    other.project_id = "someone-else".into();
    other.requests = vec![NetRequest {
        port_id: Some(port_id.clone()),
        ..Default::default()
    }];
    assert_eq!(
        api.allocate(&other).await.unwrap_err().nova_class(),
        "PortNotUsable"
    );
    other.requests = vec![NetRequest {
        network_id: Some(uuid::Uuid::new_v4().to_string()),
        ..Default::default()
    }];
    assert_eq!(
        api.allocate(&other).await.unwrap_err().nova_class(),
        "NetworkNotFound"
    );
    // the project's one network is found when none is named
    let mut unnamed = alloc.clone();
    unnamed.requests.clear();
    unnamed.security_groups = vec!["no-such-group".into()];
    assert_eq!(
        api.allocate(&unnamed).await.unwrap_err().nova_class(),
        "SecurityGroupNotFound"
    );
}
