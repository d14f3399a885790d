//! The REST API of standalone networks: `/1.0/networks[/{name}]`, each a bridge
//! with its addresses, NAT and DHCP (`crate::network`).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::types::{Network, NetworkState, NetworksPost};
use super::{recursion, sync, ApiError, Data};
use crate::driver::VifPlug;

/// The instances plugged into the network `name`.
async fn network_users(data: &Data, name: &str) -> Result<Vec<String>, ApiError> {
    Ok(data
        .driver
        .list()
        .await?
        .into_iter()
        .filter(|v| {
            v.spec
                .vifs
                .iter()
                .any(|f| matches!(&f.plug, VifPlug::Bridge { bridge } if bridge == name))
        })
        .map(|v| v.name)
        .collect())
}

async fn to_network(data: &Data, net: crate::network::Network) -> Result<Network, ApiError> {
    let st = data.networks.state(&net).await;
    let used_by = network_users(data, &net.name)
        .await?
        .into_iter()
        .map(|n| format!("/1.0/instances/{n}"))
        .collect();
    Ok(Network {
        kind: "bridge".into(),
        subnet: net.subnet.to_string(),
        ipv4_address: net.gateway_cidr(),
        status: if st.bridge && st.dnsmasq_pid.is_some() && st.nft_table {
            "Created".into()
        } else {
            "Errored".into()
        },
        state: NetworkState {
            bridge: st.bridge,
            dnsmasq_pid: st.dnsmasq_pid,
            nft_table: st.nft_table,
        },
        name: net.name,
        nat: net.nat,
        mtu: net.mtu,
        description: net.description,
        created_at: net.created_at,
        used_by,
    })
}

pub(super) async fn list_networks(req: HttpRequest, data: Data) -> Result<HttpResponse, ApiError> {
    let nets = data.networks.list().await?;
    if recursion(&req) {
        let mut out = Vec::new();
        for n in nets {
            out.push(to_network(&data, n).await?);
        }
        Ok(sync(StatusCode::OK, out))
    } else {
        let urls: Vec<String> = nets
            .iter()
            .map(|n| format!("/1.0/networks/{}", n.name))
            .collect();
        Ok(sync(StatusCode::OK, urls))
    }
}

pub(super) async fn create_network(
    data: Data,
    body: web::Json<NetworksPost>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let net = data
        .networks
        .create(&crate::network::NetworkRequest {
            name: body.name,
            subnet: body.subnet,
            nat: body.nat,
            mtu: body.mtu,
            description: body.description,
        })
        .await?;
    Ok(sync(StatusCode::CREATED, to_network(&data, net).await?))
}

pub(super) async fn get_network(
    path: web::Path<String>,
    data: Data,
) -> Result<HttpResponse, ApiError> {
    let net = data.networks.get(&path).await?;
    Ok(sync(StatusCode::OK, to_network(&data, net).await?))
}

pub(super) async fn delete_network(
    path: web::Path<String>,
    data: Data,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner();
    let users = network_users(&data, &name).await?;
    data.networks.delete(&name, &users).await?;
    Ok(sync(StatusCode::OK, serde_json::json!({})))
}
