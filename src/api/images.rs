//! The REST API of the image store: `/1.0/images[/{fingerprint or alias}]`, with
//! uploads streamed to a file (bounded by `[corral] max_image_bytes`) and imported
//! in an operation that reports its progress.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::types::Image;
use super::{accepted, progress, recursion, sync, ApiError, Data};
use crate::driver::DriverError;

async fn to_image(data: &Data, img: crate::store::ImageRecord) -> Result<Image, ApiError> {
    let used_by = data
        .driver
        .list()
        .await?
        .into_iter()
        .filter(|v| v.image == img.fingerprint)
        .map(|v| format!("/1.0/instances/{}", v.name))
        .collect();
    Ok(Image {
        fingerprint: img.fingerprint,
        alias: img.alias,
        size: img.size,
        created_at: img.created_at,
        properties: img.properties,
        used_by,
    })
}

pub(super) async fn list_images(req: HttpRequest, data: Data) -> Result<HttpResponse, ApiError> {
    let imgs = data.driver.images().list_images().await?;
    if recursion(&req) {
        let mut out = Vec::new();
        for i in imgs {
            out.push(to_image(&data, i).await?);
        }
        Ok(sync(StatusCode::OK, out))
    } else {
        let urls: Vec<String> = imgs
            .iter()
            .map(|i| format!("/1.0/images/{}", i.fingerprint))
            .collect();
        Ok(sync(StatusCode::OK, urls))
    }
}

/// Removes an upload file however the import ends.
struct UploadGuard(std::path::PathBuf);

impl Drop for UploadGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub(super) async fn import_image(
    req: HttpRequest,
    data: Data,
    mut body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let alias = req
        .headers()
        .get("X-Corral-Alias")
        .map(|v| {
            v.to_str()
                .map(str::to_string)
                .map_err(|_| ApiError::BadRequest("X-Corral-Alias is not valid text".into()))
        })
        .transpose()?
        .filter(|a| !a.is_empty());
    // The image's stop signal (`corral image import --stop-signal`).
    let mut given = serde_json::Map::new();
    if let Some(v) = req.headers().get("X-Corral-Stop-Signal") {
        let sig = v
            .to_str()
            .map_err(|_| ApiError::BadRequest("X-Corral-Stop-Signal is not valid text".into()))?
            .trim()
            .to_string();
        crate::driver::sysinit::validate(&sig)?;
        given.insert(
            crate::driver::sysinit::IMAGE_STOP_SIGNAL.into(),
            serde_json::Value::String(sig),
        );
    }
    if let Some(a) = &alias {
        if data.driver.images().get_image(a).await.is_ok() {
            return Err(DriverError::Conflict(format!("image alias {a} already exists")).into());
        }
    }
    let max = data.settings.max_image_bytes;
    let path = data.driver.images().image_upload_path();
    let guard = UploadGuard(path.clone());
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(|e| ApiError::Internal(format!("cannot create {}: {e}", path.display())))?;
    let mut written: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("upload interrupted: {e}")))?;
        written += chunk.len() as u64;
        if written > max {
            return Err(ApiError::TooLarge(format!(
                "image is larger than [corral] max_image_bytes ({max} bytes)"
            )));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| ApiError::Internal(format!("cannot write {}: {e}", path.display())))?;
    }
    file.flush()
        .await
        .map_err(|e| ApiError::Internal(format!("cannot write {}: {e}", path.display())))?;
    drop(file);
    if written == 0 {
        return Err(ApiError::BadRequest(
            "empty upload: send the image (root tarball, squashfs, raw or qcow2) as the body"
                .into(),
        ));
    }
    let driver = data.driver.clone();
    let progress_path = path.clone();
    let op = data
        .ops
        .spawn("Importing image", BTreeMap::new(), async move {
            let _guard = guard;
            driver
                .images()
                .import_image_with(&path, alias.as_deref(), None, &given)
                .await
                .map(|img| serde_json::to_value(&img).ok())
                .map_err(|e| ApiError::from(e).message())
        });
    progress::watch(data.ops.clone(), op.id.clone(), progress_path, written);
    Ok(accepted(op))
}

pub(super) async fn get_image(
    path: web::Path<String>,
    data: Data,
) -> Result<HttpResponse, ApiError> {
    let img = data.driver.images().get_image(&path).await?;
    Ok(sync(StatusCode::OK, to_image(&data, img).await?))
}

pub(super) async fn delete_image(
    path: web::Path<String>,
    data: Data,
) -> Result<HttpResponse, ApiError> {
    data.driver.images().delete_image(&path).await?;
    Ok(sync(StatusCode::OK, serde_json::json!({})))
}
