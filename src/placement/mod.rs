//! Placement REST client: what nova-compute's `SchedulerReportClient` sends, request for
//! request (paths, microversions, bodies, headers), so placement and the scheduler cannot
//! tell a corral compute from a nova one.
//!
//! The client is stateless apart from the auth session: it holds no provider-tree cache.
//! Generation conflicts are retried here by re-reading the generation, which is what
//! nova's resource tracker achieves by dropping its cache and redriving the update.

pub mod auth;
pub mod error;
pub mod types;

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod live_tests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

use auth::{Authenticator, Session};
pub use auth::{PlacementOptions, DEFAULT_TIMEOUT};
pub use error::{ApiError, PlacementError};
use types::microversion as mv;
pub use types::*;

/// Sent on every request; placement logs it, and operators grep for it.
pub const USER_AGENT: &str = concat!(
    "corral-compute keystoneauth1 corral/",
    env!("CARGO_PKG_VERSION")
);

/// Attempts for a write that meets a generation conflict: nova's resource tracker
/// redrives `_update_to_placement` with `stop_max_attempt_number=4`.
pub const CONFLICT_ATTEMPTS: u32 = 4;

/// Pause between allocation write attempts after a provider-side conflict; nova sleeps
/// a random 0..2n s, which is too long for a request path, so a short fixed step instead.
const ALLOCATION_RETRY_STEP: Duration = Duration::from_millis(100);

/// Substring by which nova tells a name clash from a concurrent create of the same uuid
/// (placement sends no error code at 1.20).
const NAME_CONFLICT: &str = "Conflicting resource provider name:";

/// Substring by which nova tells a consumer generation conflict from a provider one.
const CONSUMER_CONFLICT: &str = "consumer generation conflict";

/// Async client for one placement service; cheap to clone.
#[derive(Debug, Clone)]
pub struct PlacementClient {
    inner: Arc<Inner>,
    /// Sent as `X-Openstack-Request-Id` so placement's logs tie back to the nova request.
    request_id: Option<String>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    auth: Authenticator,
}

/// A placement answer, read in full.
struct Reply {
    method: Method,
    path: String,
    status: StatusCode,
    body: Vec<u8>,
    request_id: Option<String>,
}

/// Whether a request that failed with `e` may be sent once more: a read
/// (GET or HEAD) whose connection failed before any answer came (a pooled
/// keep-alive connection the server had just closed answers with a reset),
/// never one that timed out. A write is never sent twice.
pub(crate) fn resend_safe(method: &Method, e: &reqwest::Error) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
        && (e.is_connect() || e.is_request())
        && !e.is_timeout()
}

impl Reply {
    fn error(&self) -> Box<ApiError> {
        Box::new(api_error(
            self.method.as_str(),
            &self.path,
            self.status.as_u16(),
            &self.body,
            self.request_id.clone(),
        ))
    }

    fn into_error(self) -> PlacementError {
        PlacementError::Api(self.error())
    }

    fn decode<T: DeserializeOwned>(&self) -> Result<T, PlacementError> {
        serde_json::from_slice(&self.body).map_err(|source| PlacementError::Decode {
            method: self.method.to_string(),
            path: self.path.clone(),
            source,
        })
    }

    /// Decode a 2xx answer, or turn anything else into an error, mapping 404 on a
    /// provider sub-resource to [`PlacementError::ProviderNotFound`].
    fn ok_json<T: DeserializeOwned>(self, rp: Option<Uuid>) -> Result<T, PlacementError> {
        if self.status.is_success() {
            return self.decode();
        }
        match rp {
            Some(uuid) if self.status == StatusCode::NOT_FOUND => {
                Err(PlacementError::ProviderNotFound(uuid))
            }
            _ => Err(self.into_error()),
        }
    }
}

/// Build an [`ApiError`] from placement's (or keystone's) error document.
pub(crate) fn api_error(
    method: &str,
    path: &str,
    status: u16,
    body: &[u8],
    header_request_id: Option<String>,
) -> ApiError {
    let doc = serde_json::from_slice::<types::ErrorDoc>(body)
        .ok()
        .and_then(|d| d.errors.into_iter().next());
    let (code, title, message, request_id) = match doc {
        Some(e) => (e.code, e.title, e.detail.unwrap_or_default(), e.request_id),
        None => (None, None, String::from_utf8_lossy(body).into_owned(), None),
    };
    // placement's details are multi-line HTML-ish text; one line reads better in logs
    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    ApiError {
        method: method.to_owned(),
        path: path.to_owned(),
        status,
        code,
        title,
        message,
        request_id: request_id.or(header_request_id),
    }
}

pub(crate) fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn json_body<T: Serialize>(body: &T) -> Result<Vec<u8>, PlacementError> {
    serde_json::to_vec(body).map_err(|source| PlacementError::Decode {
        method: "encode".to_owned(),
        path: String::new(),
        source,
    })
}

impl PlacementClient {
    /// Validate the options and build the HTTP client; no request is made yet, so a
    /// placement or keystone that is still starting does not stop the compute starting.
    pub fn new(opts: PlacementOptions) -> Result<Self, PlacementError> {
        let plugin = opts.plugin()?;
        let timeout = opts.timeout.unwrap_or(DEFAULT_TIMEOUT);
        let builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            // keystoneauth (requests) writes header names in title case; match the
            // captured traffic byte for byte where it costs nothing
            .http1_title_case_headers()
            .use_preconfigured_tls(crate::tls::connector(
                opts.insecure,
                opts.cafile.as_deref(),
            )?);
        let http = builder.build().map_err(PlacementError::HttpClient)?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                auth: Authenticator::new(plugin),
            }),
            request_id: None,
        })
    }

    /// A handle that sends `X-Openstack-Request-Id: <id>`; nova passes the RPC
    /// context's `global_request_id` (or `request_id`) here.
    pub fn with_request_id(&self, id: impl Into<String>) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            request_id: Some(id.into()),
        }
    }

    async fn session(&self) -> Result<Session, PlacementError> {
        self.inner.auth.session(&self.inner.http, USER_AGENT).await
    }

    /// Send one request, re-authenticating and resending once on 401 (keystoneauth's
    /// `allow_reauth`), and read the whole answer.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: Option<&str>,
        microversion: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<Reply, PlacementError> {
        self.send(method, path, query, microversion, body, true)
            .await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        query: Option<&str>,
        microversion: Option<&str>,
        body: Option<Vec<u8>>,
        authenticated: bool,
    ) -> Result<Reply, PlacementError> {
        let mut reauthenticated = false;
        let mut resent = false;
        loop {
            let session = self.session().await?;
            let mut url = format!("{}{}", session.endpoint, path);
            if let Some(q) = query {
                url.push('?');
                url.push_str(q);
            }
            let mut req = self
                .inner
                .http
                .request(method.clone(), &url)
                .header(ACCEPT, "application/json");
            if let Some(v) = microversion {
                req = req.header("OpenStack-API-Version", format!("placement {v}"));
            }
            if authenticated {
                req = req.header("X-Auth-Token", &session.token);
            }
            if let Some(id) = &self.request_id {
                req = req.header("X-Openstack-Request-Id", id);
            }
            if let Some(b) = &body {
                req = req.header(CONTENT_TYPE, "application/json").body(b.clone());
            }
            let started = Instant::now();
            let transport = |source| PlacementError::Transport {
                method: method.to_string(),
                url: url.clone(),
                source,
            };
            let resp = match req.send().await {
                Ok(resp) => resp,
                Err(e) if !resent && resend_safe(&method, &e) => {
                    tracing::warn!(method = %method, path, error = %e, "placement request lost before an answer: sent once more");
                    resent = true;
                    continue;
                }
                Err(e) => return Err(transport(e)),
            };
            let status = resp.status();
            let request_id = header_str(resp.headers(), "x-openstack-request-id");
            let bytes = resp.bytes().await.map_err(transport)?;
            tracing::debug!(
                method = %method,
                path,
                microversion,
                status = status.as_u16(),
                placement_request_id = request_id.as_deref(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "placement request"
            );
            if status == StatusCode::UNAUTHORIZED
                && authenticated
                && !reauthenticated
                && self.inner.auth.can_reauthenticate()
            {
                tracing::info!(path, "placement answered 401, re-authenticating once");
                self.inner.auth.invalidate(&session.token).await;
                reauthenticated = true;
                continue;
            }
            return Ok(Reply {
                method,
                path: path.to_owned(),
                status,
                body: bytes.to_vec(),
                request_id,
            });
        }
    }

    /// `GET /`: the version document, fetched unauthenticated like the SDK's discovery
    /// that nova-compute does once at start-up; lets the caller check `max_version`.
    pub async fn get_version(&self) -> Result<ApiVersion, PlacementError> {
        // the SDK's discovery carries neither token nor request id (captured traffic)
        let anonymous = Self {
            inner: Arc::clone(&self.inner),
            request_id: None,
        };
        let reply = anonymous
            .send(Method::GET, "/", None, None, None, false)
            .await?;
        let doc: VersionsDoc = reply.ok_json(None)?;
        doc.versions.into_iter().next().ok_or_else(|| {
            PlacementError::Api(Box::new(ApiError {
                method: "GET".to_owned(),
                path: "/".to_owned(),
                status: 200,
                code: None,
                title: None,
                message: "no versions in the root document".to_owned(),
                request_id: None,
            }))
        })
    }

    /// `GET /resource_providers/{uuid}` (1.14); `None` when placement has no such provider.
    pub async fn get_resource_provider(
        &self,
        uuid: Uuid,
    ) -> Result<Option<ResourceProvider>, PlacementError> {
        let path = format!("/resource_providers/{uuid}");
        let reply = self
            .call(Method::GET, &path, None, Some(mv::NESTED_PROVIDER), None)
            .await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        reply.ok_json(None).map(Some)
    }

    /// `GET /resource_providers?in_tree={uuid}` (1.14): the whole tree, root first.
    pub async fn get_providers_in_tree(
        &self,
        uuid: Uuid,
    ) -> Result<Vec<ResourceProvider>, PlacementError> {
        let query = format!("in_tree={uuid}");
        let reply = self
            .call(
                Method::GET,
                "/resource_providers",
                Some(&query),
                Some(mv::NESTED_PROVIDER),
                None,
            )
            .await?;
        let list: ProviderList = reply.ok_json(None)?;
        Ok(list.resource_providers)
    }

    /// `POST /resource_providers` (1.20).
    ///
    /// A 409 that is not a name clash means another thread created the same uuid: the
    /// existing record is returned, as nova does. A name clash (a stale provider of a
    /// re-installed host, typically) is [`PlacementError::ProviderNameConflict`].
    pub async fn create_resource_provider(
        &self,
        uuid: Uuid,
        name: &str,
        parent: Option<Uuid>,
    ) -> Result<ResourceProvider, PlacementError> {
        let body = json_body(&CreateProvider {
            uuid,
            name,
            parent_provider_uuid: parent,
        })?;
        let reply = self
            .call(
                Method::POST,
                "/resource_providers",
                None,
                Some(mv::POST_RPS_RETURNS_PAYLOAD),
                Some(body),
            )
            .await?;
        if reply.status.is_success() {
            tracing::info!(%uuid, name, "created resource provider");
            return reply.decode();
        }
        if reply.status == StatusCode::CONFLICT {
            let error = reply.error();
            let name_clash = error.message.contains(NAME_CONFLICT)
                || error.code.as_deref() == Some(error_code::DUPLICATE_NAME);
            if name_clash {
                return Err(PlacementError::ProviderNameConflict {
                    name: name.to_owned(),
                    error,
                });
            }
            tracing::info!(%uuid, "resource provider created concurrently, reading it");
            return self
                .get_resource_provider(uuid)
                .await?
                .ok_or(PlacementError::Api(error));
        }
        Err(reply.into_error())
    }

    /// Make sure the provider exists: `GET ?in_tree` and `POST` if the tree is empty,
    /// the same two calls nova's `_ensure_resource_provider` makes.
    pub async fn ensure_resource_provider(
        &self,
        uuid: Uuid,
        name: &str,
    ) -> Result<ResourceProvider, PlacementError> {
        let tree = self.get_providers_in_tree(uuid).await?;
        if let Some(rp) = tree.into_iter().find(|rp| rp.uuid == uuid) {
            return Ok(rp);
        }
        self.create_resource_provider(uuid, name, None).await
    }

    /// `DELETE /resource_providers/{uuid}` (no microversion). `Ok(false)` if it was
    /// already gone; [`PlacementError::ProviderInUse`] if it still has allocations.
    pub async fn delete_resource_provider(&self, uuid: Uuid) -> Result<bool, PlacementError> {
        let path = format!("/resource_providers/{uuid}");
        let reply = self.call(Method::DELETE, &path, None, None, None).await?;
        match reply.status {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            StatusCode::CONFLICT => Err(PlacementError::ProviderInUse {
                uuid,
                error: reply.error(),
            }),
            _ => Err(reply.into_error()),
        }
    }

    /// `GET /resource_providers/{uuid}/inventories` (no microversion, like nova).
    pub async fn get_inventories(&self, uuid: Uuid) -> Result<ProviderInventories, PlacementError> {
        let path = format!("/resource_providers/{uuid}/inventories");
        self.call(Method::GET, &path, None, None, None)
            .await?
            .ok_json(Some(uuid))
    }

    /// `PUT /resource_providers/{uuid}/inventories` (1.26), creating `CUSTOM_*` classes
    /// first like nova.
    ///
    /// On 409 other than `placement.inventory.inuse` the generation is re-read and the
    /// same inventory is sent again, up to [`CONFLICT_ATTEMPTS`] times: the compute is the
    /// only writer of its inventory, so the newest generation is all that is missing.
    pub async fn set_inventories(
        &self,
        uuid: Uuid,
        generation: u64,
        inventories: &BTreeMap<String, Inventory>,
    ) -> Result<ProviderInventories, PlacementError> {
        for rc in inventories.keys().filter(|rc| is_custom(rc)) {
            self.ensure_resource_class(rc).await?;
        }
        let path = format!("/resource_providers/{uuid}/inventories");
        let mut generation = generation;
        let mut attempt = 1;
        loop {
            let body = json_body(&PutInventories {
                resource_provider_generation: generation,
                inventories,
            })?;
            let reply = self
                .call(
                    Method::PUT,
                    &path,
                    None,
                    Some(mv::ALLOW_RESERVED_EQUAL_TOTAL),
                    Some(body),
                )
                .await?;
            if reply.status != StatusCode::CONFLICT {
                return reply.ok_json(Some(uuid));
            }
            let error = reply.error();
            if error.code.as_deref() == Some(error_code::INVENTORY_IN_USE) {
                return Err(PlacementError::InventoryInUse { uuid, error });
            }
            if attempt >= CONFLICT_ATTEMPTS {
                return Err(PlacementError::GenerationConflict {
                    uuid,
                    attempts: attempt,
                    last: error,
                });
            }
            tracing::warn!(%uuid, generation, attempt, code = error.code.as_deref(),
                "inventory update conflict, refreshing generation");
            generation = self
                .get_inventories(uuid)
                .await?
                .resource_provider_generation;
            attempt += 1;
        }
    }

    /// `GET /resource_providers/{uuid}/traits` (1.6).
    pub async fn get_traits(&self, uuid: Uuid) -> Result<ProviderTraits, PlacementError> {
        let path = format!("/resource_providers/{uuid}/traits");
        self.call(Method::GET, &path, None, Some(mv::TRAITS), None)
            .await?
            .ok_json(Some(uuid))
    }

    /// Replace the provider's traits: ensure they exist, then `PUT .../traits` (1.6),
    /// retrying generation conflicts with the same list.
    ///
    /// Traits set by others (operators' `CUSTOM_*`, nova-api) since the caller read them
    /// are overwritten; [`PlacementClient::update_traits`] merges instead.
    pub async fn set_traits(
        &self,
        uuid: Uuid,
        generation: u64,
        traits: &BTreeSet<String>,
    ) -> Result<ProviderTraits, PlacementError> {
        self.ensure_custom_traits(traits).await?;
        let mut generation = generation;
        let mut attempt = 1;
        loop {
            match self.put_traits(uuid, generation, traits).await? {
                Ok(done) => return Ok(done),
                Err(error) if attempt >= CONFLICT_ATTEMPTS => {
                    return Err(PlacementError::GenerationConflict {
                        uuid,
                        attempts: attempt,
                        last: error,
                    })
                }
                Err(error) => {
                    tracing::warn!(%uuid, generation, attempt, code = error.code.as_deref(),
                        "traits update conflict, refreshing generation");
                    generation = self.get_traits(uuid).await?.resource_provider_generation;
                    attempt += 1;
                }
            }
        }
    }

    /// Add and remove traits while keeping everyone else's, the way nova's provider tree
    /// starts from placement's current list: read, merge, write; on a conflict read and
    /// merge again. Skips the write when nothing changes.
    pub async fn update_traits(
        &self,
        uuid: Uuid,
        add: &BTreeSet<String>,
        remove: &BTreeSet<String>,
    ) -> Result<ProviderTraits, PlacementError> {
        self.ensure_custom_traits(add).await?;
        let mut attempt = 1;
        loop {
            let current = self.get_traits(uuid).await?;
            let wanted: BTreeSet<String> = current
                .traits
                .union(add)
                .filter(|t| !remove.contains(*t))
                .cloned()
                .collect();
            if wanted == current.traits {
                return Ok(current);
            }
            match self
                .put_traits(uuid, current.resource_provider_generation, &wanted)
                .await?
            {
                Ok(done) => return Ok(done),
                Err(error) if attempt >= CONFLICT_ATTEMPTS => {
                    return Err(PlacementError::GenerationConflict {
                        uuid,
                        attempts: attempt,
                        last: error,
                    })
                }
                Err(error) => {
                    tracing::warn!(%uuid, attempt, code = error.code.as_deref(),
                        "traits update conflict, re-reading traits");
                    attempt += 1;
                }
            }
        }
    }

    /// One traits PUT; the inner `Err` is a 409 for the caller's retry loop.
    async fn put_traits(
        &self,
        uuid: Uuid,
        generation: u64,
        traits: &BTreeSet<String>,
    ) -> Result<Result<ProviderTraits, Box<ApiError>>, PlacementError> {
        let path = format!("/resource_providers/{uuid}/traits");
        let body = json_body(&PutTraits {
            resource_provider_generation: generation,
            traits: traits.iter().map(String::as_str).collect(),
        })?;
        let reply = self
            .call(Method::PUT, &path, None, Some(mv::TRAITS), Some(body))
            .await?;
        if reply.status == StatusCode::CONFLICT {
            return Ok(Err(reply.error()));
        }
        reply.ok_json(Some(uuid)).map(Ok)
    }

    /// Make sure every trait exists: `GET /traits?name=in:...` then `PUT /traits/{name}`
    /// (1.6) for each one placement lacks. Only `CUSTOM_*` can be created, so a standard
    /// trait unknown to placement's os-traits fails with
    /// [`PlacementError::TraitCreationFailed`], exactly as in nova.
    pub async fn ensure_custom_traits<I, S>(&self, traits: I) -> Result<(), PlacementError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let wanted: BTreeSet<String> = traits.into_iter().map(|t| t.as_ref().to_owned()).collect();
        if wanted.is_empty() {
            return Ok(());
        }
        // trait names are [A-Z0-9_]; nova sends the list unencoded and so do we
        let names: Vec<&str> = wanted.iter().map(String::as_str).collect();
        let query = format!("name=in:{}", names.join(","));
        let reply = self
            .call(Method::GET, "/traits", Some(&query), Some(mv::TRAITS), None)
            .await?;
        let known: TraitList = reply.ok_json(None)?;
        let known: BTreeSet<String> = known.traits.into_iter().collect();
        for name in wanted.difference(&known) {
            let path = format!("/traits/{name}");
            let reply = self
                .call(Method::PUT, &path, None, Some(mv::TRAITS), None)
                .await?;
            if !reply.status.is_success() {
                return Err(PlacementError::TraitCreationFailed {
                    name: name.clone(),
                    error: reply.error(),
                });
            }
            tracing::info!(trait_name = %name, "created trait");
        }
        Ok(())
    }

    /// `PUT /resource_classes/{name}` (1.7, no body) for a `CUSTOM_*` class; standard
    /// classes are skipped because placement already has them, as in nova.
    pub async fn ensure_resource_class(&self, name: &str) -> Result<(), PlacementError> {
        if !is_custom(name) {
            return Ok(());
        }
        let path = format!("/resource_classes/{name}");
        let reply = self
            .call(Method::PUT, &path, None, Some(mv::RESOURCE_CLASS_PUT), None)
            .await?;
        if reply.status.is_success() {
            return Ok(());
        }
        Err(PlacementError::InvalidResourceClass {
            name: name.to_owned(),
            error: reply.error(),
        })
    }

    /// `GET /resource_providers/{uuid}/aggregates` (1.19). nova-api writes these from
    /// host aggregates; the compute only carries them, never clears them.
    pub async fn get_aggregates(&self, uuid: Uuid) -> Result<ProviderAggregates, PlacementError> {
        let path = format!("/resource_providers/{uuid}/aggregates");
        self.call(
            Method::GET,
            &path,
            None,
            Some(mv::AGGREGATE_GENERATION),
            None,
        )
        .await?
        .ok_json(Some(uuid))
    }

    /// `GET /allocations/{consumer}` (1.28). Placement answers an empty document rather
    /// than 404 for an unknown consumer.
    pub async fn get_allocations_for_consumer(
        &self,
        consumer: Uuid,
    ) -> Result<ConsumerAllocations, PlacementError> {
        let path = format!("/allocations/{consumer}");
        self.call(
            Method::GET,
            &path,
            None,
            Some(mv::CONSUMER_GENERATION),
            None,
        )
        .await?
        .ok_json(None)
    }

    /// `GET /resource_providers/{uuid}/allocations` (no microversion, like nova).
    pub async fn get_allocations_for_provider(
        &self,
        rp: Uuid,
    ) -> Result<ProviderAllocations, PlacementError> {
        let path = format!("/resource_providers/{rp}/allocations");
        self.call(Method::GET, &path, None, None, None)
            .await?
            .ok_json(Some(rp))
    }

    /// `PUT /allocations/{consumer}` (1.28), expecting 204.
    ///
    /// A consumer generation conflict is returned to the caller (the allocations changed
    /// under it); a provider generation conflict is placement-internal and retried, like
    /// nova's `@retries` on `put_allocations`.
    pub async fn put_allocations(
        &self,
        consumer: Uuid,
        body: &AllocationRequest,
    ) -> Result<(), PlacementError> {
        let path = format!("/allocations/{consumer}");
        let bytes = json_body(body)?;
        let mut attempt = 1;
        loop {
            let reply = self
                .call(
                    Method::PUT,
                    &path,
                    None,
                    Some(mv::CONSUMER_GENERATION),
                    Some(bytes.clone()),
                )
                .await?;
            if reply.status.is_success() {
                return Ok(());
            }
            let error = reply.error();
            if reply.status != StatusCode::CONFLICT
                || error.code.as_deref() != Some(error_code::CONCURRENT_UPDATE)
            {
                return Err(PlacementError::Api(error));
            }
            if error.message.contains(CONSUMER_CONFLICT) {
                return Err(PlacementError::ConsumerGenerationConflict { consumer, error });
            }
            if attempt >= CONFLICT_ATTEMPTS {
                return Err(PlacementError::AllocationConflict {
                    consumer,
                    attempts: attempt,
                    last: error,
                });
            }
            tracing::warn!(%consumer, attempt, "provider conflict while writing allocations, retrying");
            tokio::time::sleep(ALLOCATION_RETRY_STEP * attempt).await;
            attempt += 1;
        }
    }

    /// `DELETE /allocations/{consumer}` (no microversion): nova's `force=True` path, used
    /// on instance delete and failed builds. `Ok(false)` when there was nothing to delete.
    pub async fn delete_allocations(&self, consumer: Uuid) -> Result<bool, PlacementError> {
        let path = format!("/allocations/{consumer}");
        let reply = self.call(Method::DELETE, &path, None, None, None).await?;
        match reply.status {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(reply.into_error()),
        }
    }

    /// Delete allocations only if nobody changed them since read: `GET` then `PUT` of
    /// empty allocations with the consumer generation (both 1.28), nova's `force=False`
    /// path (deferred delete, migration records).
    pub async fn remove_allocations(&self, consumer: Uuid) -> Result<bool, PlacementError> {
        let current = self.get_allocations_for_consumer(consumer).await?;
        if current.allocations.is_empty() {
            return Ok(false);
        }
        let body = AllocationRequest {
            allocations: BTreeMap::new(),
            project_id: current.project_id.unwrap_or_default(),
            user_id: current.user_id.unwrap_or_default(),
            consumer_generation: current.consumer_generation,
        };
        let path = format!("/allocations/{consumer}");
        let reply = self
            .call(
                Method::PUT,
                &path,
                None,
                Some(mv::CONSUMER_GENERATION),
                Some(json_body(&body)?),
            )
            .await?;
        match reply.status {
            s if s.is_success() => Ok(true),
            StatusCode::CONFLICT => Err(PlacementError::ConsumerGenerationConflict {
                consumer,
                error: reply.error(),
            }),
            _ => Err(reply.into_error()),
        }
    }
}
