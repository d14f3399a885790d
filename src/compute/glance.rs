//! Glance: fetch an image's metadata and data into corral's image cache, with
//! its checksum checked. Cached under the alias `glance/<image id>`.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use openssl::hash::{Hasher, MessageDigest};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::ComputeError;
use crate::driver::{ContainerDriver, DriverError};

/// The cache alias of a Glance image.
pub fn alias(image_id: &str) -> String {
    format!("glance/{image_id}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Glance's image API, as the instance's user (their token).
pub struct Glance {
    http: reqwest::Client,
    endpoint: String,
    /// One download per image at a time: concurrent builds of the same image
    /// wait for the first and then find it cached.
    downloads: crate::locks::KeyedLocks,
}

impl Glance {
    pub fn new(endpoint: &str) -> Result<Glance, ComputeError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ComputeError::Glance(format!("cannot build the HTTP client: {e}")))?;
        Ok(Glance {
            http,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            downloads: crate::locks::KeyedLocks::new(),
        })
    }

    fn request(
        &self,
        path: &str,
        token: Option<&str>,
        request_id: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut r = self.http.get(format!("{}{path}", self.endpoint));
        if let Some(t) = token {
            r = r.header("X-Auth-Token", t);
        }
        if let Some(id) = request_id {
            r = r.header("X-Openstack-Request-Id", id);
        }
        r.header("User-Agent", "corral-compute")
    }

    /// `GET /v2/images/{id}`.
    pub async fn show(
        &self,
        id: &str,
        token: Option<&str>,
        request_id: Option<&str>,
    ) -> Result<Value, ComputeError> {
        let resp = self
            .request(&format!("/v2/images/{id}"), token, request_id)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| ComputeError::Glance(format!("GET image {id}: {e}")))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(ComputeError::Driver(DriverError::ImageNotFound(
                id.to_string(),
            )));
        }
        if !status.is_success() {
            return Err(ComputeError::Glance(format!(
                "GET image {id}: HTTP {status}"
            )));
        }
        resp.json()
            .await
            .map_err(|e| ComputeError::Glance(format!("image {id}: bad JSON: {e}")))
    }

    /// Makes sure the image is in the cache; returns its cache alias.
    pub async fn ensure_cached(
        &self,
        driver: &ContainerDriver,
        id: &str,
        token: Option<&str>,
        request_id: Option<&str>,
    ) -> Result<String, ComputeError> {
        let alias = alias(id);
        if driver.get_image(&alias).await.is_ok() {
            return Ok(alias);
        }
        let lock = self.downloads.handle(id);
        let _one_at_a_time = lock.lock().await;
        if driver.get_image(&alias).await.is_ok() {
            return Ok(alias);
        }
        let meta = self.show(id, token, request_id).await?;
        if meta.get("status").and_then(Value::as_str) != Some("active") {
            return Err(ComputeError::Glance(format!(
                "image {id} is not active (status {})",
                meta.get("status")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown")
            )));
        }
        let path = driver.image_upload_path();
        let guard = Cleanup(path.clone());
        self.download(id, token, request_id, &path, &meta).await?;
        driver.import_image(&path, Some(&alias)).await?;
        drop(guard);
        Ok(alias)
    }

    async fn download(
        &self,
        id: &str,
        token: Option<&str>,
        request_id: Option<&str>,
        dest: &Path,
        meta: &Value,
    ) -> Result<(), ComputeError> {
        let resp = self
            .request(&format!("/v2/images/{id}/file"), token, request_id)
            .send()
            .await
            .map_err(|e| ComputeError::Glance(format!("download of image {id}: {e}")))?;
        if !resp.status().is_success() {
            return Err(ComputeError::Glance(format!(
                "download of image {id}: HTTP {}",
                resp.status()
            )));
        }
        let io = |source| ComputeError::Io {
            path: dest.to_path_buf(),
            source,
        };
        let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
        let algo = meta
            .get("os_hash_algo")
            .and_then(Value::as_str)
            .unwrap_or("");
        let want_hash = meta.get("os_hash_value").and_then(Value::as_str);
        let want_md5 = meta.get("checksum").and_then(Value::as_str);
        let digest = match algo {
            "sha512" => Some(MessageDigest::sha512()),
            "sha256" => Some(MessageDigest::sha256()),
            _ => None,
        };
        let hasher_err =
            |e: openssl::error::ErrorStack| ComputeError::Glance(format!("hashing: {e}"));
        let mut hasher = digest.map(Hasher::new).transpose().map_err(hasher_err)?;
        let mut md5 = Hasher::new(MessageDigest::md5()).map_err(hasher_err)?;
        let mut stream = resp.bytes_stream();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| ComputeError::Glance(format!("download of image {id}: {e}")))?;
            size += chunk.len() as u64;
            if let Some(h) = hasher.as_mut() {
                h.update(&chunk).map_err(hasher_err)?;
            }
            md5.update(&chunk).map_err(hasher_err)?;
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        if let Some(want) = meta.get("size").and_then(Value::as_u64) {
            if want != size {
                return Err(ComputeError::Glance(format!(
                    "image {id}: got {size} bytes, Glance says {want}"
                )));
            }
        }
        if let (Some(h), Some(want)) = (hasher.as_mut(), want_hash) {
            let got = hex(&h.finish().map_err(hasher_err)?);
            if got != want {
                return Err(ComputeError::Glance(format!("image {id}: {algo} mismatch")));
            }
        } else if let Some(want) = want_md5 {
            let got = hex(&md5.finish().map_err(hasher_err)?);
            if got != want {
                return Err(ComputeError::Glance(format!(
                    "image {id}: checksum mismatch"
                )));
            }
        }
        Ok(())
    }
}

struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
