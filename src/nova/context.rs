//! The request context carried as `_context_*` keys of every RPC request.
//!
//! oslo.messaging's `pack_context` prefixes each key of nova's
//! `RequestContext.to_dict()` with `_context_`. The 25 keys nova 34 sends are typed
//! here in the order nova writes them; anything else (`trace_info`, `traceparent`, ...)
//! is kept in [`RequestContext::extra`] and written back.
//!
//! Use the received context for every call made while handling a request (same
//! `request_id`), or `InstanceActionEvent` lookups fail with `InstanceActionNotFound`.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::fields::{Field, NovaDateTime};

/// Prefix of context keys in the request body (owned by the rpc envelope).
pub use crate::rpc::envelope::CONTEXT_PREFIX;

/// nova's `RequestContext.to_dict()`.
///
/// Every key is a [`Field`] so a context is re-encoded exactly as received (absent keys
/// stay absent). `timestamp` must be `%Y-%m-%dT%H:%M:%S.%f` (six digits, no zone):
/// nova parses it strictly.
#[derive(Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RequestContext {
    /// User id (oslo key).
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub user: Field<String>,
    /// Project id.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub project_id: Field<String>,
    /// `null` or `"all"`.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub system_scope: Field<String>,
    /// Project id (oslo key).
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub project: Field<String>,
    /// Domain id.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub domain: Field<String>,
    /// User domain id.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub user_domain: Field<String>,
    /// Project domain id.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub project_domain: Field<String>,
    /// Admin context.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub is_admin: Field<bool>,
    /// Read-only.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub read_only: Field<bool>,
    /// Show deleted rows.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub show_deleted: Field<bool>,
    /// The user's Keystone token; keep it for Neutron/Cinder/Glance calls. Never logged
    /// by this crate's `Debug`.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub auth_token: Field<String>,
    /// `req-<uuid>`.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub request_id: Field<String>,
    /// Cross-service request id.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub global_request_id: Field<String>,
    /// Always null from nova.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub resource_uuid: Field<String>,
    /// Role names.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub roles: Field<Vec<String>>,
    /// `"<user> <project> <domain> <user_domain> <project_domain>"`, `-` for null.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub user_identity: Field<String>,
    /// Admin project.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub is_admin_project: Field<bool>,
    /// User id (nova key).
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub user_id: Field<String>,
    /// `no`, `yes` or `only`.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub read_deleted: Field<String>,
    /// Client address.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub remote_address: Field<String>,
    /// Creation time, naive UTC with microseconds.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub timestamp: Field<NovaDateTime>,
    /// Always null from nova.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub quota_class: Field<String>,
    /// User name.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub user_name: Field<String>,
    /// Filtered Keystone catalog entries.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub service_catalog: Field<Vec<Value>>,
    /// Project name.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub project_name: Field<String>,
    /// Keys nova 34 does not send by default (tracing, osprofiler), kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl RequestContext {
    /// The context of `nova.context.get_admin_context()`, which nova-compute uses for
    /// its own periodic work and startup calls (captured from nova 34).
    pub fn admin(request_id: String, timestamp: OffsetDateTime) -> Self {
        RequestContext {
            user: Field::Null,
            project_id: Field::Null,
            system_scope: Field::Null,
            project: Field::Null,
            domain: Field::Null,
            user_domain: Field::Null,
            project_domain: Field::Null,
            is_admin: Field::Set(true),
            read_only: Field::Set(false),
            show_deleted: Field::Set(false),
            auth_token: Field::Null,
            request_id: Field::Set(request_id),
            global_request_id: Field::Null,
            resource_uuid: Field::Null,
            roles: Field::Set(Vec::new()),
            user_identity: Field::Set("- - - - -".to_string()),
            is_admin_project: Field::Set(true),
            user_id: Field::Null,
            read_deleted: Field::Set("no".to_string()),
            remote_address: Field::Null,
            timestamp: Field::Set(NovaDateTime::perfect(timestamp)),
            quota_class: Field::Null,
            user_name: Field::Null,
            service_catalog: Field::Set(Vec::new()),
            project_name: Field::Null,
            extra: Map::new(),
        }
    }

    /// A fresh `req-<uuid4>` request id, as oslo.context generates.
    pub fn new_request_id() -> String {
        format!("req-{}", uuid::Uuid::new_v4())
    }

    /// The request id, if any.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_str()
    }

    /// The global request id, if any.
    pub fn global_request_id(&self) -> Option<&str> {
        self.global_request_id.as_str()
    }

    /// The user id (`user_id`, else oslo's `user`).
    pub fn user_id(&self) -> Option<&str> {
        self.user_id.as_str().or_else(|| self.user.as_str())
    }

    /// The project id (`project_id`, else oslo's `project`).
    pub fn project_id(&self) -> Option<&str> {
        self.project_id.as_str().or_else(|| self.project.as_str())
    }

    /// Role names (empty when absent).
    pub fn roles(&self) -> &[String] {
        self.roles.get().map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether the context is admin (false when absent).
    pub fn is_admin(&self) -> bool {
        self.is_admin.get().copied().unwrap_or(false)
    }

    /// The Keystone token, if any.
    pub fn auth_token(&self) -> Option<&str> {
        self.auth_token.as_str()
    }

    /// Decodes the context from a request body's `_context_*` keys (prefix removed by
    /// the caller).
    pub fn from_map(map: Map<String, Value>) -> Result<Self, serde_json::Error> {
        serde_json::from_value(Value::Object(map))
    }

    /// The context as a map without the prefix, keys in nova's order.
    pub fn to_map(&self) -> Result<Map<String, Value>, serde_json::Error> {
        match serde_json::to_value(self)? {
            Value::Object(m) => Ok(m),
            _ => Ok(Map::new()),
        }
    }

    /// A copy with the token replaced by `***`, for printing.
    pub fn redacted(&self) -> Self {
        let mut out = self.clone();
        if out.auth_token.is_set() {
            out.auth_token = Field::Set("***".to_string());
        }
        out
    }
}

impl fmt::Debug for RequestContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestContext")
            .field("request_id", &self.request_id)
            .field("global_request_id", &self.global_request_id)
            .field("user_id", &self.user_id)
            .field("project_id", &self.project_id)
            .field("roles", &self.roles)
            .field("is_admin", &self.is_admin)
            .field("auth_token", &self.auth_token.as_ref().get().map(|_| "***"))
            .field("timestamp", &self.timestamp)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn admin_context_matches_nova_get_admin_context() {
        let at = NovaDateTime::parse("2026-11-27T16:16:42.235402")
            .unwrap()
            .at();
        let ctx = RequestContext::admin("req-7d2b3ff7-9c95-4e56-b840-f1292f4cdea3".into(), at);
        let want = json!({"user": null, "project_id": null, "system_scope": null, "project": null,
            "domain": null, "user_domain": null, "project_domain": null, "is_admin": true,
            "read_only": false, "show_deleted": false, "auth_token": null,
            "request_id": "req-7d2b3ff7-9c95-4e56-b840-f1292f4cdea3", "global_request_id": null,
            "resource_uuid": null, "roles": [], "user_identity": "- - - - -",
            "is_admin_project": true, "user_id": null, "read_deleted": "no",
            "remote_address": null, "timestamp": "2026-11-27T16:16:42.235402",
            "quota_class": null, "user_name": null, "service_catalog": [], "project_name": null});
        let got = Value::Object(ctx.to_map().unwrap());
        assert_eq!(crate_pyjson(&got), crate_pyjson(&want));
        assert!(RequestContext::new_request_id().starts_with("req-"));
    }

    fn crate_pyjson(v: &Value) -> String {
        crate::pyjson::to_string(v)
    }

    #[test]
    fn unknown_keys_are_kept_and_token_is_not_debug_printed() {
        let ctx = RequestContext::from_map(
            json!({"request_id": "req-1", "auth_token": "secret", "traceparent": "00-abc"})
                .as_object()
                .unwrap()
                .clone(),
        )
        .unwrap();
        assert_eq!(ctx.extra["traceparent"], json!("00-abc"));
        assert!(!format!("{ctx:?}").contains("secret"));
        assert_eq!(ctx.redacted().auth_token(), Some("***"));
        assert_eq!(ctx.to_map().unwrap()["traceparent"], json!("00-abc"));
    }

    #[test]
    fn bad_timestamp_is_an_error() {
        let m = json!({"timestamp": "yesterday"})
            .as_object()
            .unwrap()
            .clone();
        assert!(RequestContext::from_map(m).is_err());
    }
}
