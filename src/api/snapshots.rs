//! The REST API of instance snapshots, shaped like LXD's:
//! `/1.0/instances/{name}/snapshots[/{snapshot}]` and the restore through
//! `PUT /1.0/instances/{name}` with `{"restore": "<snapshot>"}`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::types::{InstancePut, PublishPost, Snapshot, SnapshotTaken, SnapshotsPost};
use super::{accepted, instance_resources, recursion, sync, ApiError, Data};
use crate::store::SnapshotRecord;

fn to_snapshot(r: SnapshotRecord) -> Snapshot {
    Snapshot {
        name: r.name,
        created_at: r.created_at,
        size: r.size,
        image: r.image,
        storage: r.storage,
    }
}

fn snapshot_url(instance: &str, name: &str) -> String {
    format!("/1.0/instances/{instance}/snapshots/{name}")
}

pub(super) async fn list(
    path: web::Path<String>,
    req: HttpRequest,
    data: Data,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner();
    let uuid = data.driver.resolve(&name).await?;
    let snaps = data.driver.snapshot_list(&uuid).await?;
    if recursion(&req) {
        let full: Vec<Snapshot> = snaps.into_iter().map(to_snapshot).collect();
        return Ok(sync(StatusCode::OK, full));
    }
    let urls: Vec<String> = snaps.iter().map(|s| snapshot_url(&name, &s.name)).collect();
    Ok(sync(StatusCode::OK, urls))
}

pub(super) async fn create(
    path: web::Path<String>,
    data: Data,
    body: web::Json<SnapshotsPost>,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner();
    let snap = body.into_inner().name;
    crate::driver::validate_snapshot_name(&snap)?;
    let uuid = data.driver.resolve(&name).await?;
    if data.driver.snapshot_get(&uuid, &snap).await.is_ok() {
        return Err(crate::driver::DriverError::Conflict(format!(
            "instance {name} already has a snapshot {snap}"
        ))
        .into());
    }
    let driver = data.driver.clone();
    let op = data.ops.spawn(
        "Snapshotting instance",
        instance_resources(&name),
        async move {
            let made = driver
                .snapshot_create(&uuid, &snap)
                .await
                .map_err(|e| ApiError::from(e).message())?;
            let out = SnapshotTaken {
                snapshot: to_snapshot(made.snapshot),
                pause_ms: made.pause.map(|p| p.as_secs_f64() * 1000.0),
            };
            serde_json::to_value(out)
                .map(Some)
                .map_err(|e| e.to_string())
        },
    );
    Ok(accepted(op))
}

pub(super) async fn get(
    path: web::Path<(String, String)>,
    data: Data,
) -> Result<HttpResponse, ApiError> {
    let (name, snap) = path.into_inner();
    let uuid = data.driver.resolve(&name).await?;
    let s = data.driver.snapshot_get(&uuid, &snap).await?;
    Ok(sync(StatusCode::OK, to_snapshot(s)))
}

pub(super) async fn delete(
    path: web::Path<(String, String)>,
    data: Data,
) -> Result<HttpResponse, ApiError> {
    let (name, snap) = path.into_inner();
    let uuid = data.driver.resolve(&name).await?;
    // Refused now (400/404), not in the operation.
    data.driver.snapshot_get(&uuid, &snap).await?;
    let driver = data.driver.clone();
    let op = data
        .ops
        .spawn("Deleting snapshot", instance_resources(&name), async move {
            driver
                .snapshot_delete(&uuid, &snap)
                .await
                .map(|()| None)
                .map_err(|e| ApiError::from(e).message())
        });
    Ok(accepted(op))
}

/// `PUT /1.0/instances/{name}` with `{"restore": "<snapshot>"}`.
pub(super) async fn restore(
    path: web::Path<String>,
    data: Data,
    body: web::Json<InstancePut>,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner();
    let snap = body.into_inner().restore;
    let uuid = data.driver.resolve(&name).await?;
    data.driver.snapshot_get(&uuid, &snap).await?;
    if data.driver.get_info(&uuid).await?.pid.is_some() {
        return Err(crate::driver::DriverError::Conflict(format!(
            "instance {name} is running: stop it before restoring snapshot {snap}"
        ))
        .into());
    }
    let driver = data.driver.clone();
    let op = data.ops.spawn(
        "Restoring snapshot",
        instance_resources(&name),
        async move {
            driver
                .snapshot_restore(&uuid, &snap)
                .await
                .map(|()| None)
                .map_err(|e| ApiError::from(e).message())
        },
    );
    Ok(accepted(op))
}

/// `POST /1.0/instances/{name}/publish` `{"alias"}`: an image of the
/// instance as it is now; the operation's metadata is the image.
pub(super) async fn publish(
    path: web::Path<String>,
    data: Data,
    body: web::Json<PublishPost>,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner();
    let alias = body.into_inner().alias;
    let uuid = data.driver.resolve(&name).await?;
    let driver = data.driver.clone();
    let op = data.ops.spawn(
        "Publishing instance",
        instance_resources(&name),
        async move {
            let img = driver
                .publish(&uuid, alias.as_deref())
                .await
                .map_err(|e| ApiError::from(e).message())?;
            serde_json::to_value(img)
                .map(Some)
                .map_err(|e| e.to_string())
        },
    );
    Ok(accepted(op))
}
