//! `GET /1.0/resources`: what the host has and what its instances really
//! take of it (LXD has the same endpoint for its hardware): the disk
//! holding the state path, and per instance the sizes of its disk files and
//! the blocks they and its unbounded trees (copy roots, snapshots) hold.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::HttpResponse;

use super::{sync, ApiError, Data};
use crate::storage::usage::InstanceUsage;

#[derive(Debug, serde::Serialize)]
struct Resources {
    disk: Disk,
}

#[derive(Debug, serde::Serialize)]
struct Disk {
    path: String,
    total_bytes: u64,
    free_bytes: u64,
    provisioned_bytes: u64,
    allocated_bytes: u64,
    growth_bytes: u64,
    /// By instance name.
    instances: BTreeMap<String, InstanceUsage>,
}

pub(super) async fn get(data: Data) -> Result<HttpResponse, ApiError> {
    let state = data.settings.state_path.clone();
    let scanned = data.driver.disk_usage().await?;
    let names: BTreeMap<String, String> = data
        .driver
        .list()
        .await?
        .into_iter()
        .map(|v| (v.uuid, v.name))
        .collect();
    let instances = scanned
        .instances
        .into_iter()
        .filter_map(|(uuid, u)| names.get(&uuid).map(|n| (n.clone(), u)))
        .collect();
    Ok(sync(
        StatusCode::OK,
        Resources {
            disk: Disk {
                path: state.display().to_string(),
                total_bytes: scanned.total_bytes,
                free_bytes: scanned.free_bytes,
                provisioned_bytes: scanned.provisioned_bytes,
                allocated_bytes: scanned.allocated_bytes,
                growth_bytes: scanned.growth_bytes,
                instances,
            },
        },
    ))
}
