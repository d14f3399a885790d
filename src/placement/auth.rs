//! `[placement]` options and the keystoneauth-like auth plugins behind them.
//!
//! nova-compute reaches placement through a keystoneauth session built from the
//! `[placement]` group, so operators' existing nova.conf sections must keep working
//! unchanged: the option names and plugin names below are keystoneauth's.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::json;
use tokio::sync::Mutex;

use super::error::PlacementError;

/// keystoneauth re-authenticates when the token has less than this left
/// (`BaseIdentityPlugin.MIN_TOKEN_LIFE_SECONDS`).
const MIN_TOKEN_LIFE: Duration = Duration::from_secs(120);

/// keystoneauth has no timeout by default; a compute must not hang its periodic task on
/// a dead placement, so one is always set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The token keystoneauth's `none` plugin sends (`NoAuth.get_token`).
const NOAUTH_TOKEN: &str = "notused";

/// The `[placement]` group, keystoneauth option names.
///
/// Plain data so the config module can fill it from its INI parser and validate it once
/// at start-up through [`PlacementOptions::validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct PlacementOptions {
    /// `password`/`v3password`, `admin_token`, or `none`.
    pub auth_type: Option<String>,
    pub auth_url: Option<String>,
    pub username: Option<String>,
    pub user_id: Option<String>,
    pub password: Option<String>,
    pub user_domain_name: Option<String>,
    pub user_domain_id: Option<String>,
    pub project_name: Option<String>,
    pub project_id: Option<String>,
    pub project_domain_name: Option<String>,
    pub project_domain_id: Option<String>,
    /// Fallback for the user and project domain (keystoneauth's generic plugin).
    pub default_domain_id: Option<String>,
    pub default_domain_name: Option<String>,
    /// Adapter option: wins over the catalog and over `endpoint`.
    pub endpoint_override: Option<String>,
    /// Plugin option of `admin_token` and `none` (deprecated alias `url`).
    pub endpoint: Option<String>,
    /// Plugin option of `admin_token` (alias accepted here: `admin_token`).
    pub token: Option<String>,
    pub region_name: Option<String>,
    pub service_type: String,
    /// Catalog interfaces to try, in order.
    pub valid_interfaces: Vec<String>,
    pub cafile: Option<PathBuf>,
    pub insecure: bool,
    pub timeout: Option<Duration>,
}

impl Default for PlacementOptions {
    fn default() -> Self {
        Self {
            auth_type: None,
            auth_url: None,
            username: None,
            user_id: None,
            password: None,
            user_domain_name: None,
            user_domain_id: None,
            project_name: None,
            project_id: None,
            project_domain_name: None,
            project_domain_id: None,
            default_domain_id: None,
            default_domain_name: None,
            endpoint_override: None,
            endpoint: None,
            token: None,
            region_name: None,
            service_type: "placement".to_owned(),
            valid_interfaces: vec!["internal".to_owned(), "public".to_owned()],
            cafile: None,
            insecure: false,
            timeout: None,
        }
    }
}

/// Options of the `[placement]` group nova reads that do not change how we talk to it;
/// accepted silently so a nova.conf section can be reused as it is.
const IGNORED_KEYS: &[&str] = &[
    "service_name",
    "version",
    "min_version",
    "max_version",
    "connect_retries",
    "connect_retry_delay",
    "status_code_retries",
    "status_code_retry_delay",
    "retriable_status_codes",
    "collect_timing",
    "split_loggers",
    "auth_section",
    "system_scope",
    "trust_id",
];

impl PlacementOptions {
    /// Build from the key/value pairs of the `[placement]` section.
    ///
    /// Unknown keys are logged and skipped rather than refused: nova's `[placement]`
    /// group carries options for other nova services that a compute ignores.
    pub fn from_pairs(pairs: &BTreeMap<String, String>) -> Result<Self, PlacementError> {
        let mut o = Self::default();
        for (key, raw) in pairs {
            let value = raw.trim();
            let some = || (!value.is_empty()).then(|| value.to_owned());
            match key.as_str() {
                "auth_type" | "auth_plugin" => o.auth_type = some(),
                "auth_url" => o.auth_url = some(),
                "username" | "user_name" => o.username = some(),
                "user_id" => o.user_id = some(),
                "password" => o.password = some(),
                "user_domain_name" => o.user_domain_name = some(),
                "user_domain_id" => o.user_domain_id = some(),
                "project_name" | "tenant_name" => o.project_name = some(),
                "project_id" | "tenant_id" => o.project_id = some(),
                "project_domain_name" => o.project_domain_name = some(),
                "project_domain_id" => o.project_domain_id = some(),
                "default_domain_id" => o.default_domain_id = some(),
                "default_domain_name" => o.default_domain_name = some(),
                "endpoint_override" => o.endpoint_override = some(),
                "endpoint" | "url" => o.endpoint = some(),
                "token" | "admin_token" => o.token = some(),
                "region_name" | "os_region_name" => o.region_name = some(),
                "service_type" => {
                    if let Some(v) = some() {
                        o.service_type = v;
                    }
                }
                "valid_interfaces" | "interface" => {
                    let list = parse_interfaces(value);
                    if list.is_empty() {
                        return Err(PlacementError::config(key, "empty interface list"));
                    }
                    o.valid_interfaces = list;
                }
                "cafile" => o.cafile = some().map(PathBuf::from),
                "insecure" => o.insecure = parse_bool(key, value)?,
                "timeout" => o.timeout = parse_timeout(key, value)?,
                "certfile" | "keyfile" => {
                    if !value.is_empty() {
                        return Err(PlacementError::config(
                            key,
                            "client certificates are not supported",
                        ));
                    }
                }
                k if IGNORED_KEYS.contains(&k) => {}
                k => tracing::debug!(option = k, "ignoring unknown [placement] option"),
            }
        }
        o.validate()?;
        Ok(o)
    }

    /// Check that the chosen plugin has what it needs, once, at start-up.
    pub fn validate(&self) -> Result<(), PlacementError> {
        self.plugin().map(|_| ())
    }

    /// The endpoint the operator pinned, if any (`endpoint_override` first, like keystoneauth).
    pub fn fixed_endpoint(&self) -> Option<&str> {
        self.endpoint_override
            .as_deref()
            .or(self.endpoint.as_deref())
    }

    pub(crate) fn plugin(&self) -> Result<Plugin, PlacementError> {
        let kind = self.auth_type.as_deref().ok_or_else(|| {
            PlacementError::config(
                "auth_type",
                "missing (supported: password, v3password, admin_token, none)",
            )
        })?;
        match kind {
            "admin_token" => {
                let token = self
                    .token
                    .clone()
                    .ok_or_else(|| PlacementError::config("token", "required by admin_token"))?;
                let endpoint = self
                    .fixed_endpoint()
                    .ok_or_else(|| PlacementError::config("endpoint", "required by admin_token"))?;
                Ok(Plugin::Static {
                    token,
                    endpoint: trim_url(endpoint),
                })
            }
            "none" => {
                let endpoint = self
                    .fixed_endpoint()
                    .ok_or_else(|| PlacementError::config("endpoint", "required by none"))?;
                Ok(Plugin::Static {
                    token: NOAUTH_TOKEN.to_owned(),
                    endpoint: trim_url(endpoint),
                })
            }
            "password" | "v3password" => Ok(Plugin::Password(Box::new(self.password_auth()?))),
            other => Err(PlacementError::config(
                "auth_type",
                format!(
                    "{other} is not supported (supported: password, v3password, admin_token, none)"
                ),
            )),
        }
    }

    fn password_auth(&self) -> Result<PasswordAuth, PlacementError> {
        let auth_url = self
            .auth_url
            .as_deref()
            .ok_or_else(|| PlacementError::config("auth_url", "required by password"))?;
        let password = self
            .password
            .clone()
            .ok_or_else(|| PlacementError::config("password", "required by password"))?;
        let default_domain = || {
            domain_ref(
                self.default_domain_id.as_deref(),
                self.default_domain_name.as_deref(),
            )
        };
        let user = if let Some(id) = &self.user_id {
            json!({"id": id, "password": password})
        } else if let Some(name) = &self.username {
            let domain = domain_ref(
                self.user_domain_id.as_deref(),
                self.user_domain_name.as_deref(),
            )
            .or_else(default_domain)
            .ok_or_else(|| {
                PlacementError::config("user_domain_name", "username needs a user domain")
            })?;
            json!({"name": name, "domain": domain, "password": password})
        } else {
            return Err(PlacementError::config(
                "username",
                "password needs username or user_id",
            ));
        };
        let scope = if let Some(id) = &self.project_id {
            Some(json!({"project": {"id": id}}))
        } else if let Some(name) = &self.project_name {
            let domain = domain_ref(
                self.project_domain_id.as_deref(),
                self.project_domain_name.as_deref(),
            )
            .or_else(default_domain)
            .ok_or_else(|| {
                PlacementError::config("project_domain_name", "project_name needs a domain")
            })?;
            Some(json!({"project": {"name": name, "domain": domain}}))
        } else {
            None
        };
        if scope.is_none() && self.fixed_endpoint().is_none() {
            return Err(PlacementError::config(
                "project_name",
                "an unscoped token has no catalog: set a project or endpoint_override",
            ));
        }
        let mut auth = json!({
            "identity": {"methods": ["password"], "password": {"user": user}},
        });
        if let (Some(scope), Some(map)) = (scope, auth.as_object_mut()) {
            map.insert("scope".to_owned(), scope);
        }
        Ok(PasswordAuth {
            tokens_url: tokens_url(auth_url),
            body: json!({ "auth": auth }),
            endpoint_override: self.fixed_endpoint().map(trim_url),
            service_type: self.service_type.clone(),
            interfaces: self.valid_interfaces.clone(),
            region: self.region_name.clone(),
        })
    }
}

fn domain_ref(id: Option<&str>, name: Option<&str>) -> Option<serde_json::Value> {
    match (id, name) {
        (Some(id), _) => Some(json!({ "id": id })),
        (None, Some(name)) => Some(json!({ "name": name })),
        (None, None) => None,
    }
}

/// keystoneauth accepts the v2 catalog spellings too.
fn parse_interfaces(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.strip_suffix("URL").unwrap_or(s).to_owned())
        .collect()
}

/// oslo.config's boolean spellings; an empty value is false.
fn parse_bool(key: &str, value: &str) -> Result<bool, PlacementError> {
    if value.is_empty() {
        return Ok(false);
    }
    crate::strutil::parse_bool(value)
        .ok_or_else(|| PlacementError::config(key, format!("not a boolean: {value}")))
}

fn parse_timeout(key: &str, value: &str) -> Result<Option<Duration>, PlacementError> {
    if value.is_empty() {
        return Ok(None);
    }
    let secs: f64 = value
        .parse()
        .map_err(|_| PlacementError::config(key, format!("not a number of seconds: {value}")))?;
    if !secs.is_finite() || secs <= 0.0 {
        return Err(PlacementError::config(key, "must be positive"));
    }
    Ok(Some(Duration::from_secs_f64(secs)))
}

fn trim_url(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

/// keystoneauth's generic plugin discovers the v3 API under `auth_url`; deployments
/// write it with or without the `/v3` suffix, so accept both.
fn tokens_url(auth_url: &str) -> String {
    let base = auth_url.trim_end_matches('/');
    if base.ends_with("/v3") {
        format!("{base}/auth/tokens")
    } else {
        format!("{base}/v3/auth/tokens")
    }
}

/// A configured auth plugin.
#[derive(Debug, Clone)]
pub(crate) enum Plugin {
    /// `admin_token` (the operator's token) or `none` (keystoneauth sends `notused`);
    /// no Keystone, fixed endpoint.
    Static { token: String, endpoint: String },
    /// Keystone v3 password method; the endpoint comes from the catalog.
    Password(Box<PasswordAuth>),
}

#[derive(Debug, Clone)]
pub(crate) struct PasswordAuth {
    tokens_url: String,
    /// Ready `{"auth": ...}` document; holds the password, so never logged.
    body: serde_json::Value,
    endpoint_override: Option<String>,
    service_type: String,
    interfaces: Vec<String>,
    region: Option<String>,
}

/// A token and the endpoint found with it.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub token: String,
    pub endpoint: String,
    expires_at: Option<SystemTime>,
}

impl Session {
    fn fresh(&self, now: SystemTime) -> bool {
        match self.expires_at {
            None => true,
            Some(at) => at
                .duration_since(now)
                .map(|left| left > MIN_TOKEN_LIFE)
                .unwrap_or(false),
        }
    }
}

/// Hands out tokens, authenticating against Keystone when needed.
///
/// One lock around the session so that concurrent requests after expiry cause one
/// Keystone round trip, not one each.
#[derive(Debug)]
pub(crate) struct Authenticator {
    plugin: Plugin,
    session: Mutex<Option<Session>>,
}

impl Authenticator {
    pub fn new(plugin: Plugin) -> Self {
        Self {
            plugin,
            session: Mutex::new(None),
        }
    }

    /// Whether a 401 can be cured by fetching a new token (keystoneauth retries once).
    pub fn can_reauthenticate(&self) -> bool {
        matches!(self.plugin, Plugin::Password(_))
    }

    /// A valid token and the placement endpoint, authenticating if the cached token is
    /// missing or close to expiry.
    pub async fn session(
        &self,
        http: &reqwest::Client,
        user_agent: &str,
    ) -> Result<Session, PlacementError> {
        match &self.plugin {
            Plugin::Static { token, endpoint } => Ok(Session {
                token: token.clone(),
                endpoint: endpoint.clone(),
                expires_at: None,
            }),
            Plugin::Password(p) => {
                let mut guard = self.session.lock().await;
                if let Some(s) = guard.as_ref() {
                    if s.fresh(SystemTime::now()) {
                        return Ok(s.clone());
                    }
                    tracing::debug!("keystone token near expiry, re-authenticating");
                }
                let s = p.authenticate(http, user_agent).await?;
                *guard = Some(s.clone());
                Ok(s)
            }
        }
    }

    /// Drop the cached token after a 401 if it is still the one that failed.
    pub async fn invalidate(&self, failed_token: &str) {
        let mut guard = self.session.lock().await;
        if guard.as_ref().is_some_and(|s| s.token == failed_token) {
            *guard = None;
        }
    }
}

#[derive(Debug, Deserialize)]
struct TokenDoc {
    token: TokenBody,
}

#[derive(Debug, Deserialize)]
struct TokenBody {
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    catalog: Vec<CatalogService>,
}

#[derive(Debug, Deserialize)]
struct CatalogService {
    #[serde(rename = "type")]
    service_type: String,
    #[serde(default)]
    endpoints: Vec<CatalogEndpoint>,
}

#[derive(Debug, Deserialize)]
struct CatalogEndpoint {
    interface: String,
    url: String,
    #[serde(default)]
    region_id: Option<String>,
    #[serde(default)]
    region: Option<String>,
}

impl PasswordAuth {
    async fn authenticate(
        &self,
        http: &reqwest::Client,
        user_agent: &str,
    ) -> Result<Session, PlacementError> {
        tracing::debug!(url = %self.tokens_url, "authenticating with keystone");
        let transport = |source| PlacementError::Transport {
            method: "POST".to_owned(),
            url: self.tokens_url.clone(),
            source,
        };
        let resp = http
            .post(&self.tokens_url)
            .header(reqwest::header::USER_AGENT, user_agent)
            .header(reqwest::header::ACCEPT, "application/json")
            .json(&self.body)
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status();
        let subject = resp
            .headers()
            .get("X-Subject-Token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let request_id = super::header_str(resp.headers(), "x-openstack-request-id");
        let body = resp.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(PlacementError::Auth(Box::new(super::api_error(
                "POST",
                &self.tokens_url,
                status.as_u16(),
                &body,
                request_id,
            ))));
        }
        let token = subject.ok_or(PlacementError::MissingSubjectToken)?;
        let doc: TokenDoc =
            serde_json::from_slice(&body).map_err(|source| PlacementError::Decode {
                method: "POST".to_owned(),
                path: self.tokens_url.clone(),
                source,
            })?;
        let endpoint = match &self.endpoint_override {
            Some(e) => e.clone(),
            None => self.pick_endpoint(&doc.token.catalog)?,
        };
        let expires_at = doc.token.expires_at.as_deref().and_then(parse_iso8601);
        Ok(Session {
            token,
            endpoint,
            expires_at,
        })
    }

    /// keystoneauth's catalog lookup: first service of the type, interfaces in the
    /// configured order, region if one is configured.
    fn pick_endpoint(&self, catalog: &[CatalogService]) -> Result<String, PlacementError> {
        let endpoints: Vec<&CatalogEndpoint> = catalog
            .iter()
            .filter(|s| s.service_type == self.service_type)
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| match &self.region {
                None => true,
                Some(r) => {
                    e.region_id.as_deref() == Some(r.as_str())
                        || e.region.as_deref() == Some(r.as_str())
                }
            })
            .collect();
        self.interfaces
            .iter()
            .find_map(|want| endpoints.iter().find(|e| &e.interface == want))
            .map(|e| trim_url(&e.url))
            .ok_or_else(|| PlacementError::EndpointNotFound {
                service_type: self.service_type.clone(),
                interfaces: self.interfaces.clone(),
                region: self.region.clone().unwrap_or_else(|| "any".to_owned()),
            })
    }
}

/// Parse Keystone's `expires_at` (`2026-11-27T17:16:40.000000Z`, UTC).
///
/// Written by hand to avoid a date crate for one field; anything unparsable means
/// "no known expiry", and a 401 still triggers re-authentication.
pub(crate) fn parse_iso8601(s: &str) -> Option<SystemTime> {
    let s = s.trim().trim_end_matches('Z');
    let s = s.strip_suffix("+00:00").unwrap_or(s);
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let time = time.split('.').next()?;
    let mut t = time.split(':').map(|p| p.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // days_from_civil (Howard Hinnant)
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn as_used_test_stack_section() {
        // the test stack's nova-compute.conf [placement] (novastack recipe, as used)
        let o = PlacementOptions::from_pairs(&pairs(&[
            ("auth_type", "admin_token"),
            ("token", "admin"),
            ("endpoint", "http://127.0.0.1:8778"),
            ("region_name", "RegionOne"),
        ]))
        .unwrap();
        match o.plugin().unwrap() {
            Plugin::Static { token, endpoint } => {
                assert_eq!(token, "admin");
                assert_eq!(endpoint, "http://127.0.0.1:8778");
            }
            Plugin::Password(_) => panic!("wrong plugin"),
        }
    }

    #[test]
    fn endpoint_override_wins_and_aliases() {
        let o = PlacementOptions::from_pairs(&pairs(&[
            ("auth_type", "admin_token"),
            ("admin_token", "secret"),
            ("endpoint", "http://a:1/"),
            ("endpoint_override", "http://b:2/placement/"),
            ("valid_interfaces", "internalURL, public"),
            ("insecure", "True"),
            ("timeout", "2.5"),
        ]))
        .unwrap();
        assert_eq!(o.token.as_deref(), Some("secret"));
        assert_eq!(o.valid_interfaces, ["internal", "public"]);
        assert!(o.insecure);
        assert_eq!(o.timeout, Some(Duration::from_millis(2500)));
        match o.plugin().unwrap() {
            Plugin::Static { endpoint, .. } => assert_eq!(endpoint, "http://b:2/placement"),
            Plugin::Password(_) => panic!("wrong plugin"),
        }
    }

    #[test]
    fn none_plugin_sends_notused() {
        let o = PlacementOptions::from_pairs(&pairs(&[
            ("auth_type", "none"),
            ("endpoint_override", "http://x"),
        ]))
        .unwrap();
        match o.plugin().unwrap() {
            Plugin::Static { token, .. } => assert_eq!(token, "notused"),
            Plugin::Password(_) => panic!("wrong plugin"),
        }
    }

    #[test]
    fn rejects_incomplete_or_unknown() {
        for kv in [
            vec![("endpoint", "http://x")],
            vec![("auth_type", "admin_token"), ("token", "t")],
            vec![("auth_type", "admin_token"), ("endpoint", "http://x")],
            vec![("auth_type", "noauth2"), ("endpoint", "http://x")],
            vec![("auth_type", "password"), ("auth_url", "http://k")],
            vec![
                ("auth_type", "password"),
                ("auth_url", "http://k"),
                ("password", "p"),
                ("username", "nova"),
            ],
            vec![("auth_type", "none"), ("timeout", "abc")],
        ] {
            let err = PlacementOptions::from_pairs(&pairs(&kv)).unwrap_err();
            assert!(
                matches!(err, PlacementError::Config { .. }),
                "{kv:?}: {err}"
            );
        }
    }

    #[test]
    fn password_body_like_keystoneauth() {
        let o = PlacementOptions::from_pairs(&pairs(&[
            ("auth_type", "password"),
            ("auth_url", "http://keystone:5000/v3/"),
            ("username", "nova"),
            ("password", "pw"),
            ("user_domain_name", "Default"),
            ("project_name", "service"),
            ("project_domain_name", "Default"),
        ]))
        .unwrap();
        let Plugin::Password(p) = o.plugin().unwrap() else {
            panic!("wrong plugin")
        };
        assert_eq!(p.tokens_url, "http://keystone:5000/v3/auth/tokens");
        assert_eq!(
            p.body,
            json!({"auth": {"identity": {"methods": ["password"],
                "password": {"user": {"name": "nova", "domain": {"name": "Default"}, "password": "pw"}}},
                "scope": {"project": {"name": "service", "domain": {"name": "Default"}}}}})
        );
        assert_eq!(tokens_url("http://k:5000"), "http://k:5000/v3/auth/tokens");
    }

    #[test]
    fn iso8601() {
        let t = parse_iso8601("2026-11-27T17:16:40.000000Z").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_795_799_800
        );
        assert_eq!(parse_iso8601("1970-01-01T00:00:00Z"), Some(UNIX_EPOCH));
        assert!(parse_iso8601("garbage").is_none());
    }
}
