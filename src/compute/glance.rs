//! Glance: fetch an image's metadata and data into corral's image cache. A download
//! is bounded (Glance's `size` and `[corral] max_image_bytes`), fails when the server
//! stalls, and is verified against `os_hash_algo`/`os_hash_value` (or the md5
//! `checksum`) while it streams; only a complete, verified file is imported, and a
//! failed one leaves nothing behind. Cached under the alias `glance/<image id>`.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use openssl::hash::{Hasher, MessageDigest};
use serde_json::Value;

use super::ComputeError;
use crate::driver::{DriverError, ImageStore};

/// How often a download in progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// How long a download may go without receiving a byte.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The cache alias of a Glance image.
pub fn alias(image_id: &str) -> String {
    format!("glance/{image_id}")
}

/// The properties of a Glance image (v2: top-level keys) the cached copy
/// keeps: `corral_stop_signal`, as the image property `stop_signal`.
pub fn given_properties(meta: &Value) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    if let Some(sig) = meta
        .get(crate::driver::sysinit::GLANCE_STOP_SIGNAL)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
    {
        out.insert(
            crate::driver::sysinit::IMAGE_STOP_SIGNAL.into(),
            Value::String(sig.trim().to_string()),
        );
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The digest of a Glance `os_hash_algo` (Python `hashlib` names; Glance's
/// `hashing_algorithm` may be any of them).
fn digest_of(algo: &str) -> Option<MessageDigest> {
    let name = match algo.to_ascii_lowercase().as_str() {
        "sha1" => "SHA1",
        "sha224" => "SHA224",
        "sha256" => "SHA256",
        "sha384" => "SHA384",
        "sha512" => "SHA512",
        "sha512_224" => "SHA512-224",
        "sha512_256" => "SHA512-256",
        "sha3_224" => "SHA3-224",
        "sha3_256" => "SHA3-256",
        "sha3_384" => "SHA3-384",
        "sha3_512" => "SHA3-512",
        "blake2b" => "BLAKE2b512",
        "blake2s" => "BLAKE2s256",
        "md5" => "MD5",
        "sm3" => "SM3",
        _ => return None,
    };
    MessageDigest::from_name(name)
}

/// What a download is checked against.
struct Expected {
    size: Option<u64>,
    max: u64,
    /// (algorithm name, digest, hex value)
    hash: Option<(String, MessageDigest, String)>,
}

impl Expected {
    fn from_meta(id: &str, meta: &Value, max: u64) -> Result<Expected, ComputeError> {
        let size = meta.get("size").and_then(Value::as_u64);
        if let Some(s) = size {
            if s > max {
                return Err(ComputeError::Glance(format!(
                    "image {id} is {s} bytes, more than [corral] max_image_bytes ({max})"
                )));
            }
        }
        let algo = meta
            .get("os_hash_algo")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let value = meta
            .get("os_hash_value")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let md5 = meta
            .get("checksum")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let hash = match (algo, value) {
            (Some(a), Some(v)) => match digest_of(a) {
                Some(d) => Some((a.to_string(), d, v.to_ascii_lowercase())),
                None => match md5 {
                    Some(m) => {
                        tracing::warn!(
                            image = id,
                            algo = a,
                            "unknown os_hash_algo, checking the md5 checksum instead"
                        );
                        Some(("md5".into(), MessageDigest::md5(), m.to_ascii_lowercase()))
                    }
                    None => {
                        return Err(ComputeError::Glance(format!(
                            "image {id}: cannot verify os_hash_algo {}",
                            crate::text::printable(a, 64)
                        )))
                    }
                },
            },
            _ => md5.map(|m| ("md5".into(), MessageDigest::md5(), m.to_ascii_lowercase())),
        };
        Ok(Expected { size, max, hash })
    }

    /// Most bytes the download may have.
    fn limit(&self) -> u64 {
        self.size.map_or(self.max, |s| s.min(self.max))
    }
}

/// Writes and hashes the chunks on a blocking thread, off the async workers.
fn write_and_hash<T: AsRef<[u8]>>(
    dest: &Path,
    digest: Option<MessageDigest>,
    mut chunks: tokio::sync::mpsc::Receiver<T>,
) -> Result<Option<String>, ComputeError> {
    let io = |source| ComputeError::Io {
        path: dest.to_path_buf(),
        source,
    };
    let hash_err = |e: openssl::error::ErrorStack| ComputeError::Glance(format!("hashing: {e}"));
    let mut file = std::fs::File::create(dest).map_err(io)?;
    let mut hasher = digest.map(Hasher::new).transpose().map_err(hash_err)?;
    while let Some(chunk) = chunks.blocking_recv() {
        let chunk = chunk.as_ref();
        if let Some(h) = hasher.as_mut() {
            h.update(chunk).map_err(hash_err)?;
        }
        file.write_all(chunk).map_err(io)?;
    }
    file.sync_all().map_err(io)?;
    hasher
        .map(|mut h| h.finish().map(|d| hex(&d)))
        .transpose()
        .map_err(hash_err)
}

/// Glance's image API, as the instance's user (their token).
pub struct Glance {
    http: reqwest::Client,
    endpoint: String,
    /// One download per image at a time: concurrent builds of the same image
    /// wait for the first and then find it cached.
    downloads: crate::locks::KeyedLocks,
    /// `[corral] max_image_bytes`: the largest image downloaded.
    max_bytes: u64,
    stall: Duration,
}

impl Glance {
    /// A client of the Glance at `endpoint` that downloads at most `max_bytes` per image.
    pub fn new(endpoint: &str, max_bytes: u64) -> Result<Glance, ComputeError> {
        let tls = crate::tls::connector(false, None)
            .map_err(|e| ComputeError::Glance(format!("cannot set up TLS: {e}")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .use_preconfigured_tls(tls)
            .build()
            .map_err(|e| ComputeError::Glance(format!("cannot build the HTTP client: {e}")))?;
        Ok(Glance {
            http,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            downloads: crate::locks::KeyedLocks::new(),
            max_bytes,
            stall: STALL_TIMEOUT,
        })
    }

    /// Fail a download that receives nothing for `stall` (default [`STALL_TIMEOUT`]).
    pub fn with_stall_timeout(mut self, stall: Duration) -> Glance {
        self.stall = stall;
        self
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
        images: &dyn ImageStore,
        id: &str,
        token: Option<&str>,
        request_id: Option<&str>,
    ) -> Result<String, ComputeError> {
        let alias = alias(id);
        if images.get_image(&alias).await.is_ok() {
            return Ok(alias);
        }
        let lock = self.downloads.handle(id);
        let _one_at_a_time = lock.lock().await;
        if images.get_image(&alias).await.is_ok() {
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
        let declared = crate::image::format::Declared::from_glance(
            meta.get("disk_format").and_then(Value::as_str),
            meta.get("container_format").and_then(Value::as_str),
        )
        .map_err(|e| ComputeError::Glance(format!("image {id}: {e}")))?;
        let path = images.image_upload_path();
        let guard = Cleanup(path.clone());
        self.download(id, token, request_id, &path, &meta).await?;
        // The same bytes under another Glance id (an image uploaded twice, a
        // copy): the cached image is that one, used by its fingerprint.
        let fp = crate::image::fingerprint_blocking(&path)
            .await
            .map_err(|e| ComputeError::Glance(format!("image {id}: {e}")))?;
        if let Ok(same) = images.get_image(&fp).await {
            tracing::info!(image = id, fingerprint = %fp, cached_as = ?same.alias, "image already cached under another id");
            return Ok(fp);
        }
        // only a complete, verified download reaches the cache, and only as
        // what Glance says it is
        images
            .import_image_with(&path, Some(&alias), declared, &given_properties(&meta))
            .await?;
        drop(guard);
        Ok(alias)
    }

    /// `GET /v2/images/{id}/file` into `dest`, checked against `meta`; on any error
    /// `dest` is removed.
    pub async fn download(
        &self,
        id: &str,
        token: Option<&str>,
        request_id: Option<&str>,
        dest: &Path,
        meta: &Value,
    ) -> Result<(), ComputeError> {
        let res = self.fetch(id, token, request_id, dest, meta).await;
        if res.is_err() {
            let _ = std::fs::remove_file(dest);
        }
        res
    }

    async fn fetch(
        &self,
        id: &str,
        token: Option<&str>,
        request_id: Option<&str>,
        dest: &Path,
        meta: &Value,
    ) -> Result<(), ComputeError> {
        let want = Expected::from_meta(id, meta, self.max_bytes)?;
        let limit = want.limit();
        let failed = |what: String| ComputeError::Glance(format!("download of image {id}: {what}"));
        let resp = tokio::time::timeout(
            self.stall,
            self.request(&format!("/v2/images/{id}/file"), token, request_id)
                .send(),
        )
        .await
        .map_err(|_| failed(format!("no answer in {:?}", self.stall)))?
        .map_err(|e| failed(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(failed(format!("HTTP {}", resp.status())));
        }
        if let Some(len) = resp.content_length() {
            if len > limit {
                return Err(failed(format!(
                    "{len} bytes announced, at most {limit} expected"
                )));
            }
        }
        // a bounded channel: the download waits when the disk is slower
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let path = dest.to_path_buf();
        let digest = want.hash.as_ref().map(|(_, d, _)| *d);
        let sink = tokio::task::spawn_blocking(move || write_and_hash(&path, digest, rx));
        let mut stream = resp.bytes_stream();
        let mut size = 0u64;
        let started = tokio::time::Instant::now();
        let mut told = started;
        tracing::info!(image = id, bytes = ?want.size, "image download started");
        let streamed: Result<(), ComputeError> = async {
            loop {
                if told.elapsed() >= PROGRESS_EVERY {
                    told = tokio::time::Instant::now();
                    let percent = want
                        .size
                        .filter(|s| *s > 0)
                        .map(|s| format!("{}%", size.saturating_mul(100) / s));
                    tracing::info!(image = id, received = size, total = ?want.size,
                        percent = percent.as_deref().unwrap_or("?"), "image download progress");
                }
                let next = tokio::time::timeout(self.stall, stream.next())
                    .await
                    .map_err(|_| failed(format!("nothing received for {:?}", self.stall)))?;
                let Some(chunk) = next else {
                    return Ok(());
                };
                let chunk = chunk.map_err(|e| failed(e.to_string()))?;
                size += chunk.len() as u64;
                if size > limit {
                    return Err(failed(format!("more than the {limit} bytes expected")));
                }
                tx.send(chunk)
                    .await
                    .map_err(|_| failed("the writer stopped".into()))?;
            }
        }
        .await;
        drop(tx);
        // the writer's own error (a full disk, say) first
        let got = sink.await.map_err(|e| failed(e.to_string()))??;
        streamed?;
        if let Some(w) = want.size {
            if w != size {
                return Err(failed(format!("got {size} bytes, Glance says {w}")));
            }
        }
        if let (Some((algo, _, value)), Some(got)) = (&want.hash, got) {
            if &got != value {
                return Err(failed(format!(
                    "{algo} mismatch: got {got}, Glance says {}",
                    crate::text::printable(value, 200)
                )));
            }
        }
        tracing::info!(
            image = id,
            bytes = size,
            seconds = started.elapsed().as_secs_f64(),
            verified = want
                .hash
                .as_ref()
                .map_or("size only", |(a, _, _)| a.as_str()),
            "image download complete"
        );
        Ok(())
    }

    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        request_id: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.endpoint));
        if let Some(t) = token {
            r = r.header("X-Auth-Token", t);
        }
        if let Some(id) = request_id {
            r = r.header("X-Openstack-Request-Id", id);
        }
        r.header("User-Agent", "corral-compute")
    }

    /// Sets an image's attributes and properties (`PATCH /v2/images/{id}`,
    /// JSON patch: `replace` what the image has, `add` what it lacks).
    pub async fn update(
        &self,
        id: &str,
        fields: &serde_json::Map<String, Value>,
        token: Option<&str>,
        request_id: Option<&str>,
    ) -> Result<Value, ComputeError> {
        let current = self.show(id, token, request_id).await?;
        let ops: Vec<Value> = fields
            .iter()
            .filter(|(k, v)| current.get(k.as_str()) != Some(v))
            .map(|(k, v)| {
                let op = if current.get(k.as_str()).is_some() {
                    "replace"
                } else {
                    "add"
                };
                serde_json::json!({"op": op, "path": format!("/{k}"), "value": v})
            })
            .collect();
        if ops.is_empty() {
            return Ok(current);
        }
        let resp = self
            .call(
                reqwest::Method::PATCH,
                &format!("/v2/images/{id}"),
                token,
                request_id,
            )
            .header(
                "Content-Type",
                "application/openstack-images-v2.1-json-patch",
            )
            .body(Value::Array(ops).to_string())
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| ComputeError::Glance(format!("PATCH image {id}: {e}")))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(ComputeError::Driver(DriverError::ImageNotFound(id.into())));
        }
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(ComputeError::Glance(format!(
                "PATCH image {id}: HTTP {status}: {}",
                crate::text::printable(&text, 500)
            )));
        }
        resp.json()
            .await
            .map_err(|e| ComputeError::Glance(format!("image {id}: bad JSON: {e}")))
    }

    /// Uploads the image's data from a stream (`PUT /v2/images/{id}/file`):
    /// nothing of it is kept here. An `Err` item from the stream aborts the
    /// upload, so Glance never takes a cut-short image as whole.
    /// `len` is sent as `Content-Length` (a Glance behind a WSGI server
    /// that drops chunked bodies would store an empty image otherwise).
    pub async fn upload<S>(
        &self,
        id: &str,
        len: u64,
        data: S,
        token: Option<&str>,
        request_id: Option<&str>,
    ) -> Result<(), ComputeError>
    where
        S: futures::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + Sync + 'static,
    {
        let resp = self
            .call(
                reqwest::Method::PUT,
                &format!("/v2/images/{id}/file"),
                token,
                request_id,
            )
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", len.to_string())
            .body(reqwest::Body::wrap_stream(data))
            .send()
            .await
            .map_err(|e| ComputeError::Glance(format!("upload of image {id}: {e}")))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(ComputeError::Driver(DriverError::ImageNotFound(id.into())));
        }
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(ComputeError::Glance(format!(
                "upload of image {id}: HTTP {status}: {}",
                crate::text::printable(&text, 500)
            )));
        }
        Ok(())
    }

    /// The images whose properties match `filters` (Glance v2 filters
    /// by property as a query parameter), newest first.
    pub async fn list(
        &self,
        filters: &[(&str, &str)],
        token: Option<&str>,
        request_id: Option<&str>,
    ) -> Result<Vec<Value>, ComputeError> {
        let mut path = String::from("/v2/images?sort_key=created_at&sort_dir=desc&limit=1000");
        for (k, v) in filters {
            path.push_str(&format!(
                "&{}={}",
                percent_encoding::utf8_percent_encode(k, percent_encoding::NON_ALPHANUMERIC),
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            ));
        }
        let resp = self
            .call(reqwest::Method::GET, &path, token, request_id)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| ComputeError::Glance(format!("GET images: {e}")))?;
        if !resp.status().is_success() {
            return Err(ComputeError::Glance(format!(
                "GET images: HTTP {}",
                resp.status()
            )));
        }
        let v: Value = resp
            .json()
            .await
            .map_err(|e| ComputeError::Glance(format!("images: bad JSON: {e}")))?;
        Ok(v.get("images")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    /// `DELETE /v2/images/{id}`; an image already gone is fine.
    pub async fn delete(
        &self,
        id: &str,
        token: Option<&str>,
        request_id: Option<&str>,
    ) -> Result<(), ComputeError> {
        let resp = self
            .call(
                reqwest::Method::DELETE,
                &format!("/v2/images/{id}"),
                token,
                request_id,
            )
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| ComputeError::Glance(format!("DELETE image {id}: {e}")))?;
        let status = resp.status();
        if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
            return Ok(());
        }
        Err(ComputeError::Glance(format!(
            "DELETE image {id}: HTTP {status}"
        )))
    }
}

struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn the_stop_signal_property_is_kept_and_nothing_else() {
        let meta = json!({"id": "x", "os_distro": "debian", "corral_stop_signal": " SIGRTMIN+3 "});
        let got = given_properties(&meta);
        assert_eq!(Value::Object(got), json!({"stop_signal": "SIGRTMIN+3"}));
        assert!(given_properties(&json!({"corral_stop_signal": ""})).is_empty());
        assert!(given_properties(&json!({"corral_stop_signal": 3})).is_empty());
    }

    /// How the test server misbehaves.
    #[derive(Clone, Copy)]
    enum Serve {
        Whole,
        /// announce the full length, send this many bytes, close
        Truncated(usize),
        /// send this many bytes, then nothing for an hour
        Stall(usize),
    }

    /// A local HTTP server answering every request with `body`.
    async fn server(body: Vec<u8>, how: Serve) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let body = body.clone();
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(head.as_bytes()).await;
                    let sent = match how {
                        Serve::Whole => body.len(),
                        Serve::Truncated(n) | Serve::Stall(n) => n,
                    };
                    let _ = conn.write_all(&body[..sent]).await;
                    let _ = conn.flush().await;
                    if let Serve::Stall(_) = how {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                });
            }
        });
        format!("http://{addr}")
    }

    fn image(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn digest_hex(d: MessageDigest, data: &[u8]) -> String {
        hex(&openssl::hash::hash(d, data).unwrap())
    }

    fn meta(data: &[u8]) -> Value {
        json!({
            "status": "active",
            "size": data.len(),
            "os_hash_algo": "sha512",
            "os_hash_value": digest_hex(MessageDigest::sha512(), data),
            "checksum": digest_hex(MessageDigest::md5(), data),
        })
    }

    async fn fetch(url: &str, max: u64, meta: &Value) -> (Result<(), ComputeError>, Vec<u8>, bool) {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("upload");
        let g = Glance::new(url, max)
            .unwrap()
            .with_stall_timeout(Duration::from_millis(500));
        let r = g.download("img", None, None, &dest, meta).await;
        let exists = dest.exists();
        let data = std::fs::read(&dest).unwrap_or_default();
        (r, data, exists)
    }

    #[tokio::test]
    async fn a_good_image_is_verified_and_kept() {
        let data = image(300_000);
        let url = server(data.clone(), Serve::Whole).await;
        let (r, got, _) = fetch(&url, 1 << 30, &meta(&data)).await;
        r.unwrap();
        assert!(got == data);
        // other algorithms Glance may be configured with, and md5 alone
        for (algo, d) in [
            ("sha256", MessageDigest::sha256()),
            ("sha3_256", MessageDigest::sha3_256()),
        ] {
            let m = json!({"size": data.len(), "os_hash_algo": algo,
                "os_hash_value": digest_hex(d, &data)});
            fetch(&url, 1 << 30, &m).await.0.unwrap();
        }
        let m = json!({"checksum": digest_hex(MessageDigest::md5(), &data)});
        fetch(&url, 1 << 30, &m).await.0.unwrap();
    }

    #[tokio::test]
    async fn a_mismatched_hash_is_refused_and_leaves_nothing() {
        let data = image(100_000);
        let url = server(data.clone(), Serve::Whole).await;
        let mut m = meta(&data);
        m["os_hash_value"] = json!(digest_hex(MessageDigest::sha512(), b"another image"));
        let (r, _, exists) = fetch(&url, 1 << 30, &m).await;
        let e = r.unwrap_err().to_string();
        assert!(e.contains("sha512 mismatch"), "{e}");
        assert!(!exists);
        // md5 only, wrong
        let m = json!({"size": data.len(), "checksum": digest_hex(MessageDigest::md5(), b"x")});
        let (r, _, exists) = fetch(&url, 1 << 30, &m).await;
        assert!(r.unwrap_err().to_string().contains("md5 mismatch"));
        assert!(!exists);
        // an algorithm that cannot be checked, and no md5 to fall back on
        let m = json!({"os_hash_algo": "shake_256", "os_hash_value": "00"});
        let (r, _, exists) = fetch(&url, 1 << 30, &m).await;
        assert!(r.is_err());
        assert!(!exists);
    }

    #[tokio::test]
    async fn a_truncated_body_is_refused_and_leaves_nothing() {
        let data = image(200_000);
        let url = server(data.clone(), Serve::Truncated(50_000)).await;
        let (r, _, exists) = fetch(&url, 1 << 30, &meta(&data)).await;
        assert!(r.is_err());
        assert!(!exists);
        // without any size or hash from Glance, the connection's end still tells
        let (r, _, exists) = fetch(&url, 1 << 30, &json!({})).await;
        assert!(r.is_err());
        assert!(!exists);
    }

    #[tokio::test]
    async fn oversized_images_are_refused() {
        let data = image(10_000);
        let url = server(data.clone(), Serve::Whole).await;
        // bigger than Glance said
        let mut m = meta(&data);
        m["size"] = json!(4_000);
        let (r, _, exists) = fetch(&url, 1 << 30, &m).await;
        assert!(r.unwrap_err().to_string().contains("at most 4000"));
        assert!(!exists);
        // bigger than the operator's cap, told up front
        let (r, _, exists) = fetch(&url, 5_000, &meta(&data)).await;
        assert!(r.unwrap_err().to_string().contains("max_image_bytes"));
        assert!(!exists);
        // bigger than the cap, Glance saying nothing
        let (r, _, exists) = fetch(&url, 5_000, &json!({})).await;
        assert!(r.is_err());
        assert!(!exists);
    }

    #[tokio::test]
    async fn a_stalled_download_times_out() {
        let data = image(100_000);
        let url = server(data.clone(), Serve::Stall(1_000)).await;
        let started = tokio::time::Instant::now();
        let (r, _, exists) = fetch(&url, 1 << 30, &meta(&data)).await;
        let e = r.unwrap_err().to_string();
        assert!(e.contains("nothing received"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(!exists);
    }
}
