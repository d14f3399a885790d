//! Neutron REST client: the calls nova-compute's `nova/network/neutron.py`
//! makes (networks, subnets, ports, security groups), over the same
//! keystoneauth-like session as the Placement client.
//!
//! The `[neutron]` section takes keystoneauth's option names, like
//! `[placement]`: the auth plugins (`admin_token`, `none`, `password`) and the
//! catalog lookup are the placement module's, with service type `network`.
//! Bodies are plain JSON: the compute side reads a few keys of each and keeps
//! the rest as Neutron sent it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::placement::auth::{Authenticator, PlacementOptions};
use crate::placement::error::PlacementError;

/// Sent on every request, as the Placement client does.
const USER_AGENT: &str = concat!(
    "corral-compute keystoneauth1 corral/",
    env!("CARGO_PKG_VERSION")
);

/// nova's `[neutron] ovs_bridge` default.
pub const DEFAULT_OVS_BRIDGE: &str = "br-int";

/// `[neutron]` options nova reads that change nothing here; accepted silently.
const NEUTRON_ONLY_KEYS: &[&str] = &[
    "ovs_bridge",
    "extension_sync_interval",
    "default_floating_pool",
    "service_metadata_proxy",
    "metadata_proxy_shared_secret",
    "physnets",
    "http_retries",
];

/// Errors of the Neutron client.
#[derive(Debug, thiserror::Error)]
pub enum NeutronError {
    /// The `[neutron]` auth options, or a failed Keystone round trip.
    #[error("[neutron] authentication")]
    Auth(#[source] PlacementError),
    #[error("invalid [neutron] option {option}: {reason}")]
    Config { option: String, reason: String },
    #[error("cannot build http client")]
    HttpClient(#[source] reqwest::Error),
    #[error("{method} {url} failed")]
    Transport {
        method: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// Neutron answered with an error status.
    #[error("neutron {method} {path} returned {status}: {message}")]
    Api {
        method: String,
        path: String,
        status: u16,
        /// `NeutronError.type` (`PortNotFound`, `IpAddressAlreadyAllocated` ...).
        kind: Option<String>,
        message: String,
    },
    #[error("neutron {method} {path}: cannot decode the answer")]
    Decode {
        method: String,
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

impl NeutronError {
    /// A 404 from Neutron.
    pub fn is_not_found(&self) -> bool {
        matches!(self, NeutronError::Api { status: 404, .. })
    }
}

/// The `[neutron]` section.
#[derive(Debug, Clone)]
pub struct NeutronOptions {
    /// keystoneauth options, service type `network`.
    pub auth: PlacementOptions,
    /// `ovs_bridge`: the integration bridge of `ovs` ports whose binding names none.
    pub ovs_bridge: String,
}

impl NeutronOptions {
    /// Build from the key/value pairs of the `[neutron]` section; `None` when
    /// the section sets no `auth_type` (no Neutron configured).
    pub fn from_pairs(pairs: &BTreeMap<String, String>) -> Result<Option<Self>, NeutronError> {
        if pairs
            .get("auth_type")
            .or_else(|| pairs.get("auth_plugin"))
            .is_none_or(|v| v.trim().is_empty())
        {
            return Ok(None);
        }
        let mut auth_pairs: BTreeMap<String, String> = pairs
            .iter()
            .filter(|(k, _)| !NEUTRON_ONLY_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        auth_pairs
            .entry("service_type".into())
            .or_insert_with(|| "network".into());
        let auth = PlacementOptions::from_pairs(&auth_pairs).map_err(NeutronError::Auth)?;
        let ovs_bridge = pairs
            .get("ovs_bridge")
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .unwrap_or(DEFAULT_OVS_BRIDGE)
            .to_string();
        if ovs_bridge.len() > 15 {
            return Err(NeutronError::Config {
                option: "ovs_bridge".into(),
                reason: format!("{ovs_bridge} is longer than 15 characters"),
            });
        }
        Ok(Some(NeutronOptions { auth, ovs_bridge }))
    }
}

/// What the compute manager asks of Neutron: a trait, so the manager's
/// network decisions can be tested against a double as well as a real Neutron.
#[async_trait::async_trait]
pub trait NeutronApi: Send + Sync {
    /// `GET /v2.0/networks?...` (repeated keys for lists).
    async fn list_networks(&self, query: &[(&str, String)]) -> Result<Vec<Value>, NeutronError>;
    /// `GET /v2.0/subnets?...`.
    async fn list_subnets(&self, query: &[(&str, String)]) -> Result<Vec<Value>, NeutronError>;
    /// `GET /v2.0/ports?...`.
    async fn list_ports(&self, query: &[(&str, String)]) -> Result<Vec<Value>, NeutronError>;
    /// `GET /v2.0/security-groups?...`.
    async fn list_security_groups(
        &self,
        query: &[(&str, String)],
    ) -> Result<Vec<Value>, NeutronError>;
    /// `GET /v2.0/ports/{id}`.
    async fn show_port(&self, id: &str) -> Result<Value, NeutronError>;
    /// `POST /v2.0/ports` with `{"port": port}`.
    async fn create_port(&self, port: Value) -> Result<Value, NeutronError>;
    /// `PUT /v2.0/ports/{id}` with `{"port": port}`.
    async fn update_port(&self, id: &str, port: Value) -> Result<Value, NeutronError>;
    /// `DELETE /v2.0/ports/{id}`.
    async fn delete_port(&self, id: &str) -> Result<(), NeutronError>;
}

/// Async client for one Neutron service; cheap to clone.
#[derive(Debug, Clone)]
pub struct NeutronClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    auth: Authenticator,
}

impl NeutronClient {
    /// Validate the options and build the HTTP client; no request is made yet.
    pub fn new(opts: &NeutronOptions) -> Result<Self, NeutronError> {
        let plugin = opts.auth.plugin().map_err(NeutronError::Auth)?;
        let timeout = opts
            .auth
            .timeout
            .unwrap_or(crate::placement::DEFAULT_TIMEOUT);
        let builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .use_preconfigured_tls(
                crate::tls::connector(opts.auth.insecure, opts.auth.cafile.as_deref())
                    .map_err(|e| NeutronError::Auth(e.into()))?,
            );
        let http = builder.build().map_err(NeutronError::HttpClient)?;
        Ok(NeutronClient {
            inner: Arc::new(Inner {
                http,
                auth: Authenticator::new(plugin),
            }),
        })
    }

    /// One request, re-authenticating once on 401 (keystoneauth's `allow_reauth`);
    /// the decoded answer, `Null` for an empty one.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, NeutronError> {
        let mut reauthenticated = false;
        let mut resent = false;
        loop {
            let session = self
                .inner
                .auth
                .session(&self.inner.http, USER_AGENT)
                .await
                .map_err(NeutronError::Auth)?;
            let url = format!("{}{}", session.endpoint, path);
            let mut req = self
                .inner
                .http
                .request(method.clone(), &url)
                .query(query)
                .header(ACCEPT, "application/json")
                .header("X-Auth-Token", &session.token);
            if let Some(b) = body {
                let bytes = serde_json::to_vec(b).map_err(|source| NeutronError::Decode {
                    method: method.to_string(),
                    path: path.to_string(),
                    source,
                })?;
                req = req.header(CONTENT_TYPE, "application/json").body(bytes);
            }
            let transport = |source| NeutronError::Transport {
                method: method.to_string(),
                url: url.clone(),
                source,
            };
            let resp = match req.send().await {
                Ok(resp) => resp,
                Err(e) if !resent && crate::placement::resend_safe(&method, &e) => {
                    tracing::warn!(method = %method, path, error = %e, "neutron request lost before an answer: sent once more");
                    resent = true;
                    continue;
                }
                Err(e) => return Err(transport(e)),
            };
            let status = resp.status();
            let bytes = resp.bytes().await.map_err(transport)?;
            tracing::debug!(method = %method, path, status = status.as_u16(), "neutron request");
            if status == StatusCode::UNAUTHORIZED
                && !reauthenticated
                && self.inner.auth.can_reauthenticate()
            {
                self.inner.auth.invalidate(&session.token).await;
                reauthenticated = true;
                continue;
            }
            if !status.is_success() {
                return Err(api_error(method.as_str(), path, status.as_u16(), &bytes));
            }
            if bytes.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&bytes).map_err(|source| NeutronError::Decode {
                method: method.to_string(),
                path: path.to_string(),
                source,
            });
        }
    }

    async fn list(
        &self,
        path: &str,
        key: &str,
        query: &[(&str, String)],
    ) -> Result<Vec<Value>, NeutronError> {
        let v = self.send(Method::GET, path, query, None).await?;
        Ok(take(v, key).as_array().cloned().unwrap_or_default())
    }
}

/// `doc[key]`, or `Null`.
fn take(mut doc: Value, key: &str) -> Value {
    doc.get_mut(key).map(Value::take).unwrap_or(Value::Null)
}

/// Neutron's error document: `{"NeutronError": {"type", "message", "detail"}}`.
fn api_error(method: &str, path: &str, status: u16, body: &[u8]) -> NeutronError {
    let doc: Option<Value> = serde_json::from_slice(body).ok();
    let err = doc.as_ref().and_then(|d| d.get("NeutronError"));
    let kind = err
        .and_then(|e| e.get("type"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let message = err
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| {
            String::from_utf8_lossy(body)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        });
    NeutronError::Api {
        method: method.to_string(),
        path: path.to_string(),
        status,
        kind,
        message: crate::text::printable(&message, 1024),
    }
}

#[async_trait::async_trait]
impl NeutronApi for NeutronClient {
    async fn list_networks(&self, query: &[(&str, String)]) -> Result<Vec<Value>, NeutronError> {
        self.list("/v2.0/networks", "networks", query).await
    }
    async fn list_subnets(&self, query: &[(&str, String)]) -> Result<Vec<Value>, NeutronError> {
        self.list("/v2.0/subnets", "subnets", query).await
    }
    async fn list_ports(&self, query: &[(&str, String)]) -> Result<Vec<Value>, NeutronError> {
        self.list("/v2.0/ports", "ports", query).await
    }
    async fn list_security_groups(
        &self,
        query: &[(&str, String)],
    ) -> Result<Vec<Value>, NeutronError> {
        self.list("/v2.0/security-groups", "security_groups", query)
            .await
    }
    async fn show_port(&self, id: &str) -> Result<Value, NeutronError> {
        let path = format!("/v2.0/ports/{id}");
        Ok(take(
            self.send(Method::GET, &path, &[], None).await?,
            "port",
        ))
    }
    async fn create_port(&self, port: Value) -> Result<Value, NeutronError> {
        let body = json!({ "port": port });
        let v = self
            .send(Method::POST, "/v2.0/ports", &[], Some(&body))
            .await?;
        Ok(take(v, "port"))
    }
    async fn update_port(&self, id: &str, port: Value) -> Result<Value, NeutronError> {
        let path = format!("/v2.0/ports/{id}");
        let body = json!({ "port": port });
        let v = self.send(Method::PUT, &path, &[], Some(&body)).await?;
        Ok(take(v, "port"))
    }
    async fn delete_port(&self, id: &str) -> Result<(), NeutronError> {
        let path = format!("/v2.0/ports/{id}");
        self.send(Method::DELETE, &path, &[], None)
            .await
            .map(|_| ())
    }
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
    fn the_test_stack_section() {
        let o = NeutronOptions::from_pairs(&pairs(&[
            ("auth_type", "admin_token"),
            ("token", "admin"),
            ("endpoint", "http://127.0.0.1:19696"),
            ("endpoint_override", "http://127.0.0.1:19696/"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(o.ovs_bridge, "br-int");
        assert_eq!(o.auth.service_type, "network");
        assert_eq!(o.auth.fixed_endpoint(), Some("http://127.0.0.1:19696/"));
        NeutronClient::new(&o).unwrap();
    }

    #[test]
    fn no_auth_type_is_no_neutron_and_bad_options_are_refused() {
        assert!(
            NeutronOptions::from_pairs(&pairs(&[("ovs_bridge", "br-x")]))
                .unwrap()
                .is_none()
        );
        let o = NeutronOptions::from_pairs(&pairs(&[
            ("auth_type", "none"),
            ("url", "http://n"),
            ("ovs_bridge", "br-ex"),
            ("service_metadata_proxy", "true"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(o.ovs_bridge, "br-ex");
        for kv in [
            vec![("auth_type", "admin_token"), ("token", "t")],
            vec![
                ("auth_type", "none"),
                ("url", "http://n"),
                ("ovs_bridge", "a-very-long-bridge"),
            ],
            vec![("auth_type", "password"), ("auth_url", "http://k")],
        ] {
            assert!(NeutronOptions::from_pairs(&pairs(&kv)).is_err(), "{kv:?}");
        }
    }

    #[test]
    fn neutron_error_documents_are_read() {
        let e = api_error(
            "GET",
            "/v2.0/ports/x",
            404,
            br#"{"NeutronError": {"type": "PortNotFound", "message": "Port x could not be found.", "detail": ""}}"#,
        );
        assert!(e.is_not_found());
        let NeutronError::Api { kind, message, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(kind.as_deref(), Some("PortNotFound"));
        assert_eq!(message, "Port x could not be found.");
        let e = api_error("POST", "/v2.0/ports", 500, b"<html>\n oops </html>");
        assert!(e.to_string().ends_with("500: <html> oops </html>"), "{e}");
    }
}
