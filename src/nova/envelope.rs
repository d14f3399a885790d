//! The oslo.messaging 2.0 envelope, RPC requests, replies and failures.
//!
//! Body of every AMQP message (`_drivers/common.py:serialize_msg`):
//!
//! ```text
//! {"oslo.version": "2.0", "oslo.message": "<inner message as a JSON string>"}
//! ```
//!
//! Inner request: `method`, `args`, `namespace` (only if the target has one), `version`,
//! then for calls `_msg_id`, `_reply_q`, `_timeout`, then `_unique_id` and the
//! `_context_*` keys. Inner reply: `result`, `failure` (itself a JSON string), `ending`,
//! `_msg_id`, `_unique_id`. [`encode_body`] writes both exactly as Python does (key order,
//! separators, ASCII escapes), so a re-encoded captured body is byte-identical.

use serde_json::{Map, Number, Value};

use super::context::RequestContext;
use super::fields::{Field, JsonString};
use super::object::ObjectVersion;
use crate::pyjson;
use crate::rpc::envelope::{self, Failure, Opened, UnsupportedEnvelope};

pub use crate::rpc::envelope::{
    ENVELOPE_VERSION as RPC_ENVELOPE_VERSION, MESSAGE_KEY as OSLO_MESSAGE_KEY,
    VERSION_KEY as OSLO_VERSION_KEY,
};

/// Errors decoding or encoding a message body.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The body is not JSON.
    #[error("malformed JSON body")]
    MalformedJson(#[source] serde_json::Error),
    /// The body is JSON but not an object.
    #[error("message body is not a JSON object")]
    NotAnObject,
    /// `oslo.version` is not compatible with 2.0 (oslo `UnsupportedRpcEnvelopeVersion`).
    #[error("unsupported oslo.version {0}")]
    UnsupportedEnvelopeVersion(String),
    /// `oslo.message` is not a string.
    #[error("oslo.message is not a string")]
    MessageNotString,
    /// `oslo.message` is not JSON.
    #[error("malformed JSON in oslo.message")]
    MalformedInnerJson(#[source] serde_json::Error),
    /// The inner message is not a JSON object.
    #[error("inner message is not a JSON object")]
    InnerNotAnObject,
    /// Neither `method` (request) nor `result`/`failure`/`ending` (reply).
    #[error("message has no method and is not a reply")]
    MissingMethod,
    /// A key has the wrong JSON type.
    #[error("{key} must be {expected}")]
    BadKey {
        /// The key.
        key: String,
        /// What it must be.
        expected: &'static str,
    },
    /// The `_context_*` keys do not form a valid context.
    #[error("invalid request context")]
    Context(#[source] serde_json::Error),
    /// The `failure` of a reply is not oslo's failure serialization.
    #[error("malformed failure in reply")]
    Failure(#[source] serde_json::Error),
    /// Encoding failed (a value serde_json cannot represent).
    #[error("cannot encode message")]
    Encode(#[source] serde_json::Error),
}

/// Call (expects a reply) or cast.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CallKind {
    /// Has a non-empty `_msg_id`: the server must reply.
    Call,
    /// No `_msg_id`: fire and forget.
    Cast,
}

/// A decoded body: the envelope version (or none for a legacy un-enveloped body) and
/// the inner message.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    /// `oslo.version` as received; `None` for an un-enveloped (1.0) body.
    pub oslo_version: Option<String>,
    /// The inner message.
    pub message: RpcMessage,
}

/// An inner message.
#[derive(Clone, Debug, PartialEq)]
pub enum RpcMessage {
    /// A call or cast (boxed: the context alone is several hundred bytes).
    Request(Box<RpcRequest>),
    /// A reply (result, failure or heartbeat).
    Reply(Box<RpcReply>),
}

/// An RPC request (call or cast).
#[derive(Clone, Debug, PartialEq)]
pub struct RpcRequest {
    /// Endpoint method.
    pub method: String,
    /// Keyword arguments, serialized (objects as primitives).
    pub args: Map<String, Value>,
    /// Endpoint namespace (`baseapi`, `compute_task`); unset for compute and conductor.
    pub namespace: Field<String>,
    /// Requested API version, e.g. `6.0`; oslo treats absent as `1.0`.
    pub version: Field<String>,
    /// `_msg_id`: present on calls.
    pub msg_id: Field<String>,
    /// `_reply_q`: reply queue (routing key of the reply on the default exchange).
    pub reply_q: Field<String>,
    /// `_timeout`: call-monitor timeout in seconds; when set the server must send
    /// heartbeats every `timeout / 2` seconds.
    pub timeout: Field<Number>,
    /// `_unique_id`: for duplicate suppression.
    pub unique_id: Field<String>,
    /// The `_context_*` keys.
    pub context: RequestContext,
    /// Other keys, kept.
    pub extra: Map<String, Value>,
}

impl RpcRequest {
    /// A cast with a fresh `_unique_id`.
    pub fn cast(
        method: impl Into<String>,
        args: Map<String, Value>,
        version: impl Into<String>,
        context: RequestContext,
    ) -> Self {
        Self {
            method: method.into(),
            args,
            namespace: Field::Unset,
            version: Field::Set(version.into()),
            msg_id: Field::Unset,
            reply_q: Field::Unset,
            timeout: Field::Unset,
            unique_id: Field::Set(new_id()),
            context,
            extra: Map::new(),
        }
    }

    /// A call with fresh `_msg_id` and `_unique_id`, replying to `reply_q`, with an
    /// optional call-monitor timeout (`_timeout` is always present on calls).
    pub fn call(
        method: impl Into<String>,
        args: Map<String, Value>,
        version: impl Into<String>,
        context: RequestContext,
        reply_q: impl Into<String>,
        call_monitor_timeout: Option<u64>,
    ) -> Self {
        let mut req = Self::cast(method, args, version, context);
        req.msg_id = Field::Set(new_id());
        req.reply_q = Field::Set(reply_q.into());
        req.timeout = Field::from_option(call_monitor_timeout.map(Number::from));
        req
    }

    /// Call or cast, as oslo decides: a reply is sent only for a non-empty `_msg_id`.
    pub fn kind(&self) -> CallKind {
        match self.msg_id.as_str() {
            Some(id) if !id.is_empty() => CallKind::Call,
            _ => CallKind::Cast,
        }
    }

    /// The requested API version; absent means `1.0` (oslo dispatcher rule).
    pub fn api_version(&self) -> Result<ObjectVersion, EnvelopeError> {
        let raw = self.version.as_str().unwrap_or("1.0");
        raw.parse().map_err(|_| EnvelopeError::BadKey {
            key: "version".into(),
            expected: "a major.minor version",
        })
    }

    /// The call-monitor timeout in seconds, if any.
    pub fn call_monitor_timeout(&self) -> Option<f64> {
        self.timeout.get().and_then(Number::as_f64)
    }

    fn from_map(mut map: Map<String, Value>) -> Result<Self, EnvelopeError> {
        let mut method = None;
        let mut args = None;
        let mut req = RpcRequest {
            method: String::new(),
            args: Map::new(),
            namespace: Field::Unset,
            version: Field::Unset,
            msg_id: Field::Unset,
            reply_q: Field::Unset,
            timeout: Field::Unset,
            unique_id: Field::Unset,
            context: RequestContext::default(),
            extra: Map::new(),
        };
        let context = envelope::unpack_context(&mut map);
        for (key, value) in map {
            match key.as_str() {
                "method" => method = Some(value),
                "args" => args = Some(value),
                "namespace" => req.namespace = string_field(&key, value)?,
                "version" => req.version = string_field(&key, value)?,
                "_msg_id" => req.msg_id = string_field(&key, value)?,
                "_reply_q" => req.reply_q = string_field(&key, value)?,
                "_unique_id" => req.unique_id = string_field(&key, value)?,
                "_timeout" => {
                    req.timeout = match value {
                        Value::Null => Field::Null,
                        Value::Number(n) => Field::Set(n),
                        _ => return Err(bad_key(&key, "a number or null")),
                    }
                }
                _ => {
                    req.extra.insert(key, value);
                }
            }
        }
        req.method = match method {
            Some(Value::String(m)) => m,
            Some(_) => return Err(bad_key("method", "a string")),
            None => return Err(EnvelopeError::MissingMethod),
        };
        req.args = match args {
            Some(Value::Object(a)) => a,
            // oslo's dispatcher does `message.get('args', {})`.
            None => Map::new(),
            Some(_) => return Err(bad_key("args", "a JSON object")),
        };
        req.context = RequestContext::from_map(context).map_err(EnvelopeError::Context)?;
        Ok(req)
    }

    /// The inner message as oslo builds it (`_make_message`, `_send`, `pack_context`).
    pub fn to_map(&self) -> Result<Map<String, Value>, EnvelopeError> {
        let mut m = Map::new();
        m.insert("method".into(), Value::String(self.method.clone()));
        m.insert("args".into(), Value::Object(self.args.clone()));
        put_string(&mut m, "namespace", &self.namespace);
        put_string(&mut m, "version", &self.version);
        put_string(&mut m, "_msg_id", &self.msg_id);
        put_string(&mut m, "_reply_q", &self.reply_q);
        match &self.timeout {
            Field::Unset => {}
            Field::Null => {
                m.insert("_timeout".into(), Value::Null);
            }
            Field::Set(n) => {
                m.insert("_timeout".into(), Value::Number(n.clone()));
            }
        }
        put_string(&mut m, "_unique_id", &self.unique_id);
        let context = self.context.to_map().map_err(EnvelopeError::Encode)?;
        envelope::pack_context(&mut m, &context);
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        Ok(m)
    }
}

/// A reply: the current single-message form, a call-monitor heartbeat
/// (`ending: false`, null result) or a legacy two-part reply.
#[derive(Clone, Debug, PartialEq)]
pub struct RpcReply {
    /// `result`: the serialized return value.
    pub result: Field<Value>,
    /// `failure`: oslo's failure serialization, a JSON string on the wire.
    pub failure: Field<JsonString<RemoteFailure>>,
    /// `ending`: true on the final reply, false on heartbeats, absent on the first half
    /// of a legacy reply.
    pub ending: Field<bool>,
    /// `_msg_id` of the request.
    pub msg_id: Field<String>,
    /// `_unique_id` of this reply.
    pub unique_id: Field<String>,
    /// Other keys, kept.
    pub extra: Map<String, Value>,
}

impl RpcReply {
    /// A successful final reply to `msg_id`.
    pub fn success(msg_id: impl Into<String>, result: Value) -> Self {
        Self {
            result: Field::Set(result),
            failure: Field::Null,
            ending: Field::Set(true),
            msg_id: Field::Set(msg_id.into()),
            unique_id: Field::Set(new_id()),
            extra: Map::new(),
        }
    }

    /// A final reply carrying a failure.
    pub fn failure(msg_id: impl Into<String>, failure: RemoteFailure) -> Self {
        let mut r = Self::success(msg_id, Value::Null);
        r.result = Field::Null;
        r.failure = Field::Set(JsonString::new(failure));
        r
    }

    /// A call-monitor heartbeat (`ending: false`), sent every `_timeout / 2` s while the
    /// method runs.
    pub fn heartbeat(msg_id: impl Into<String>) -> Self {
        let mut r = Self::success(msg_id, Value::Null);
        r.result = Field::Null;
        r.ending = Field::Set(false);
        r
    }

    /// True for a call-monitor heartbeat.
    pub fn is_heartbeat(&self) -> bool {
        self.ending.get() == Some(&false)
            && self.failure.get().is_none()
            && self.result.get().is_none_or(Value::is_null)
    }

    /// The decoded failure, if any.
    pub fn failure_info(&self) -> Option<&RemoteFailure> {
        self.failure.get().map(|f| &f.value)
    }

    fn from_map(map: Map<String, Value>) -> Result<Self, EnvelopeError> {
        let mut reply = RpcReply {
            result: Field::Unset,
            failure: Field::Unset,
            ending: Field::Unset,
            msg_id: Field::Unset,
            unique_id: Field::Unset,
            extra: Map::new(),
        };
        for (key, value) in map {
            match key.as_str() {
                "result" => reply.result = Field::from_option(Some(value).filter(|v| !v.is_null())),
                "failure" => {
                    reply.failure = serde_json::from_value(value).map_err(EnvelopeError::Failure)?
                }
                "ending" => {
                    reply.ending = match value {
                        Value::Null => Field::Null,
                        Value::Bool(b) => Field::Set(b),
                        _ => return Err(bad_key(&key, "a boolean")),
                    }
                }
                "_msg_id" => reply.msg_id = string_field(&key, value)?,
                "_unique_id" => reply.unique_id = string_field(&key, value)?,
                _ => {
                    reply.extra.insert(key, value);
                }
            }
        }
        Ok(reply)
    }

    /// The inner message as oslo builds it (`AMQPIncomingMessage._send_reply`).
    pub fn to_map(&self) -> Result<Map<String, Value>, EnvelopeError> {
        let mut m = Map::new();
        match &self.result {
            Field::Unset => {}
            Field::Null => {
                m.insert("result".into(), Value::Null);
            }
            Field::Set(v) => {
                m.insert("result".into(), v.clone());
            }
        }
        if !self.failure.is_unset() {
            m.insert(
                "failure".into(),
                serde_json::to_value(&self.failure).map_err(EnvelopeError::Encode)?,
            );
        }
        match &self.ending {
            Field::Unset => {}
            Field::Null => {
                m.insert("ending".into(), Value::Null);
            }
            Field::Set(b) => {
                m.insert("ending".into(), Value::Bool(*b));
            }
        }
        put_string(&mut m, "_msg_id", &self.msg_id);
        put_string(&mut m, "_unique_id", &self.unique_id);
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        Ok(m)
    }
}

/// oslo's failure serialization (`serialize_remote_exception`).
///
/// The caller rebuilds `module.class(*args, **kwargs)` when the module is `builtins` or
/// allowed (`nova.exception` for nova); anything else arrives as `RemoteError`.
#[derive(Clone, Debug, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct RemoteFailure {
    /// Exception class name, e.g. `InstanceNotFound`.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub class: Field<String>,
    /// Module, e.g. `nova.exception`, `builtins`.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub module: Field<String>,
    /// `str(exc)`.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub message: Field<String>,
    /// Traceback lines.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub tb: Field<Vec<String>>,
    /// Positional constructor args; `[message]` for nova exceptions.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub args: Field<Vec<Value>>,
    /// Constructor kwargs; nova exceptions include `code`.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub kwargs: Field<Map<String, Value>>,
    /// Other keys, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl RemoteFailure {
    /// A `nova.exception.<class>` failure that nova-api can rebuild: `args = [message]`,
    /// `kwargs` must be accepted by the class constructor (include `code`).
    pub fn nova(class: &str, message: &str, kwargs: Map<String, Value>) -> Self {
        Failure::nova(class, message, kwargs).into()
    }

    /// `builtins.NotImplementedError`, which nova-api maps to HTTP 501 for optional
    /// operations (console output, set password, ...).
    pub fn not_implemented(message: &str) -> Self {
        Failure::not_implemented(message).into()
    }

    /// The class name, if any.
    pub fn class_name(&self) -> Option<&str> {
        self.class.as_str()
    }
}

/// The typed view of a failure the rpc layer builds: every key present.
impl From<Failure> for RemoteFailure {
    fn from(f: Failure) -> Self {
        Self {
            class: Field::Set(f.class),
            module: Field::Set(f.module),
            message: Field::Set(f.message),
            tb: Field::Set(f.tb),
            args: Field::Set(f.args),
            kwargs: Field::Set(f.kwargs),
            extra: Map::new(),
        }
    }
}

impl Envelope {
    /// An envelope of version 2.0 around `message`.
    pub fn new(message: RpcMessage) -> Self {
        Self {
            oslo_version: Some(RPC_ENVELOPE_VERSION.to_string()),
            message,
        }
    }

    /// The inner message as a JSON map, keys in oslo's order.
    pub fn inner_map(&self) -> Result<Map<String, Value>, EnvelopeError> {
        match &self.message {
            RpcMessage::Request(r) => r.to_map(),
            RpcMessage::Reply(r) => r.to_map(),
        }
    }

    /// The body text, byte-identical to what oslo.messaging/kombu send.
    pub fn encode(&self) -> Result<String, EnvelopeError> {
        let inner = Value::Object(self.inner_map()?);
        match &self.oslo_version {
            None => Ok(pyjson::to_string(&inner)),
            Some(v) => match &inner {
                Value::Object(m) => Ok(envelope::envelope_text(v, m)),
                _ => Ok(pyjson::to_string(&inner)),
            },
        }
    }
}

/// Decodes an AMQP body (the envelope JSON). A JSON object without both envelope keys
/// is taken as an un-enveloped 1.0 message, as oslo does.
pub fn decode_body(body: &str) -> Result<Envelope, EnvelopeError> {
    let value: Value = serde_json::from_str(body).map_err(EnvelopeError::MalformedJson)?;
    decode_body_value(value)
}

/// [`decode_body`] from already-parsed JSON.
pub fn decode_body_value(value: Value) -> Result<Envelope, EnvelopeError> {
    let Value::Object(outer) = value else {
        return Err(EnvelopeError::NotAnObject);
    };
    let (version, mut outer) = match envelope::open_envelope(outer) {
        Ok(Opened::Bare(inner)) => {
            return Ok(Envelope {
                oslo_version: None,
                message: decode_inner(inner)?,
            })
        }
        Ok(Opened::Enveloped { version, outer }) => (version, outer),
        Err(UnsupportedEnvelope(v)) => return Err(EnvelopeError::UnsupportedEnvelopeVersion(v)),
    };
    let inner_text = match outer.remove(OSLO_MESSAGE_KEY) {
        Some(Value::String(s)) => s,
        _ => return Err(EnvelopeError::MessageNotString),
    };
    let inner: Value =
        serde_json::from_str(&inner_text).map_err(EnvelopeError::MalformedInnerJson)?;
    let Value::Object(inner) = inner else {
        return Err(EnvelopeError::InnerNotAnObject);
    };
    Ok(Envelope {
        oslo_version: Some(version),
        message: decode_inner(inner)?,
    })
}

/// Decodes an inner message (the parsed `oslo.message`).
pub fn decode_inner(inner: Map<String, Value>) -> Result<RpcMessage, EnvelopeError> {
    if inner.contains_key("method") {
        return RpcRequest::from_map(inner).map(|r| RpcMessage::Request(Box::new(r)));
    }
    if ["result", "failure", "ending"]
        .iter()
        .any(|k| inner.contains_key(*k))
    {
        return RpcReply::from_map(inner).map(|r| RpcMessage::Reply(Box::new(r)));
    }
    Err(EnvelopeError::MissingMethod)
}

/// Encodes a message in a 2.0 envelope.
pub fn encode_body(message: &RpcMessage) -> Result<String, EnvelopeError> {
    Envelope::new(message.clone()).encode()
}

/// A fresh uuid4 hex id (`_msg_id`, `_unique_id`).
pub fn new_id() -> String {
    envelope::new_hex_id()
}

fn string_field(key: &str, value: Value) -> Result<Field<String>, EnvelopeError> {
    match value {
        Value::Null => Ok(Field::Null),
        Value::String(s) => Ok(Field::Set(s)),
        _ => Err(bad_key(key, "a string")),
    }
}

fn put_string(m: &mut Map<String, Value>, key: &str, value: &Field<String>) {
    match value {
        Field::Unset => {}
        Field::Null => {
            m.insert(key.into(), Value::Null);
        }
        Field::Set(s) => {
            m.insert(key.into(), Value::String(s.clone()));
        }
    }
}

fn bad_key(key: &str, expected: &'static str) -> EnvelopeError {
    EnvelopeError::BadKey {
        key: key.to_string(),
        expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PING: &str = r#"{"oslo.version": "2.0", "oslo.message": "{\"method\": \"ping\", \"args\": {\"arg\": \"1.21 GigaWatts\"}, \"namespace\": \"baseapi\", \"version\": \"1.0\", \"_msg_id\": \"a3a7e4771a7e42dfb73be72268f2fee5\", \"_reply_q\": \"reply_d2ce3476594a40eeb422364a5078a91f\", \"_timeout\": null, \"_unique_id\": \"5ad77bc988fe43cf91e652c19c38d956\", \"_context_user\": null, \"_context_project_id\": null, \"_context_system_scope\": null, \"_context_project\": null, \"_context_domain\": null, \"_context_user_domain\": null, \"_context_project_domain\": null, \"_context_is_admin\": true, \"_context_read_only\": false, \"_context_show_deleted\": false, \"_context_auth_token\": null, \"_context_request_id\": \"req-7d2b3ff7-9c95-4e56-b840-f1292f4cdea3\", \"_context_global_request_id\": null, \"_context_resource_uuid\": null, \"_context_roles\": [], \"_context_user_identity\": \"- - - - -\", \"_context_is_admin_project\": true, \"_context_user_id\": null, \"_context_read_deleted\": \"no\", \"_context_remote_address\": null, \"_context_timestamp\": \"2026-11-27T16:16:42.235402\", \"_context_quota_class\": null, \"_context_user_name\": null, \"_context_service_catalog\": [], \"_context_project_name\": null}"}"#;

    #[test]
    fn captured_ping_decodes_and_re_encodes_byte_identical() {
        let env = decode_body(PING).unwrap();
        let RpcMessage::Request(req) = &env.message else {
            panic!("not a request")
        };
        assert_eq!(req.method, "ping");
        assert_eq!(req.kind(), CallKind::Call);
        assert_eq!(req.namespace.as_str(), Some("baseapi"));
        assert_eq!(req.api_version().unwrap(), ObjectVersion::new(1, 0));
        assert_eq!(
            req.context.request_id(),
            Some("req-7d2b3ff7-9c95-4e56-b840-f1292f4cdea3")
        );
        assert!(req.context.is_admin());
        assert_eq!(env.encode().unwrap(), PING);
    }

    #[test]
    fn built_call_matches_oslo_layout() {
        let ctx = RequestContext::admin("req-1".into(), time::OffsetDateTime::UNIX_EPOCH);
        let mut args = Map::new();
        args.insert("arg".into(), json!("x"));
        let mut req = RpcRequest::call("ping", args, "1.0", ctx, "reply_q1", None);
        req.namespace = Field::Set("baseapi".into());
        let body = encode_body(&RpcMessage::Request(Box::new(req.clone()))).unwrap();
        let back = decode_body(&body).unwrap();
        assert_eq!(back.message, RpcMessage::Request(Box::new(req)));
        let outer: Value = serde_json::from_str(&body).unwrap();
        let inner: Value = serde_json::from_str(outer["oslo.message"].as_str().unwrap()).unwrap();
        let keys: Vec<&String> = inner.as_object().unwrap().keys().take(8).collect();
        assert_eq!(
            keys,
            [
                "method",
                "args",
                "namespace",
                "version",
                "_msg_id",
                "_reply_q",
                "_timeout",
                "_unique_id"
            ]
        );
        assert_eq!(
            inner["_context_timestamp"],
            json!("1970-01-01T00:00:00.000000")
        );
    }

    #[test]
    fn replies_failures_and_heartbeats() {
        let f = RemoteFailure::nova(
            "InstanceNotFound",
            "Instance x could not be found.",
            json!({"instance_id": "x", "code": 404})
                .as_object()
                .unwrap()
                .clone(),
        );
        let reply = RpcReply::failure("m1", f.clone());
        let body = encode_body(&RpcMessage::Reply(Box::new(reply))).unwrap();
        let env = decode_body(&body).unwrap();
        let RpcMessage::Reply(r) = env.message else {
            panic!()
        };
        assert_eq!(r.failure_info(), Some(&f));
        assert!(r.failure.get().unwrap().encoding.is_string());
        let inner: Value = serde_json::from_str(
            serde_json::from_str::<Value>(&body).unwrap()["oslo.message"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert!(inner["failure"].as_str().unwrap().starts_with(
            "{\"class\": \"InstanceNotFound\", \"module\": \"nova.exception\", \"message\": "
        ));
        assert!(RpcReply::heartbeat("m1").is_heartbeat());
        assert!(!RpcReply::success("m1", json!("pong")).is_heartbeat());
    }

    /// The typed view writes the same `failure` string as the rpc layer's encoder.
    #[test]
    fn failures_encode_as_rpc_does() {
        let kwargs = json!({"instance_id": "x", "code": 404})
            .as_object()
            .unwrap()
            .clone();
        for (typed, rpc) in [
            (
                RemoteFailure::nova("InstanceNotFound", "gone", kwargs.clone()),
                Failure::nova("InstanceNotFound", "gone", kwargs),
            ),
            (
                RemoteFailure::not_implemented(""),
                Failure::not_implemented(""),
            ),
        ] {
            let reply = RpcReply::failure("m1", typed).to_map().unwrap();
            assert_eq!(reply["failure"], json!(rpc.to_json_string()));
        }
    }

    /// oslo.messaging 17.x `version_is_compatible`: `int()` of each part (so spaces are
    /// allowed), parts past the revision ignored, a newer revision refused.
    #[test]
    fn envelope_version_follows_oslo() {
        let inner = r#"{\"method\": \"ping\", \"args\": {}}"#;
        let with = |v: &str| format!(r#"{{"oslo.version": "{v}", "oslo.message": "{inner}"}}"#);
        for v in ["2.0", "2.0.0", " 2.0", "2.0.0.7", "2.00"] {
            assert!(decode_body(&with(v)).is_ok(), "{v} refused");
        }
        for v in ["2.0.1", "2.1", "1.9", "3.0", "2", "2.x", ""] {
            assert!(
                matches!(
                    decode_body(&with(v)),
                    Err(EnvelopeError::UnsupportedEnvelopeVersion(_))
                ),
                "{v} accepted"
            );
        }
    }

    #[test]
    fn bad_bodies_are_typed_errors() {
        assert!(matches!(
            decode_body("{not json"),
            Err(EnvelopeError::MalformedJson(_))
        ));
        assert!(matches!(
            decode_body("[1]"),
            Err(EnvelopeError::NotAnObject)
        ));
        assert!(matches!(
            decode_body(r#"{"oslo.version": "3.0", "oslo.message": "{}"}"#),
            Err(EnvelopeError::UnsupportedEnvelopeVersion(_))
        ));
        assert!(matches!(
            decode_body(r#"{"oslo.version": "2.1", "oslo.message": "{}"}"#),
            Err(EnvelopeError::UnsupportedEnvelopeVersion(_))
        ));
        assert!(matches!(
            decode_body(r#"{"oslo.version": 2, "oslo.message": "{}"}"#),
            Err(EnvelopeError::UnsupportedEnvelopeVersion(_))
        ));
        assert!(matches!(
            decode_body(r#"{"oslo.version": "2.0", "oslo.message": {}}"#),
            Err(EnvelopeError::MessageNotString)
        ));
        assert!(matches!(
            decode_body(r#"{"oslo.version": "2.0", "oslo.message": "{"}"#),
            Err(EnvelopeError::MalformedInnerJson(_))
        ));
        assert!(matches!(
            decode_body(r#"{"oslo.version": "2.0", "oslo.message": "{\"args\": {}}"}"#),
            Err(EnvelopeError::MissingMethod)
        ));
        assert!(matches!(
            decode_body(r#"{"oslo.version": "2.0", "oslo.message": "{\"method\": 3}"}"#),
            Err(EnvelopeError::BadKey { .. })
        ));
        assert!(matches!(
            decode_body(
                r#"{"oslo.version": "2.0", "oslo.message": "{\"result\": 1, \"failure\": \"{\"}"}"#
            ),
            Err(EnvelopeError::Failure(_))
        ));
    }

    #[test]
    fn legacy_unenveloped_body_is_accepted() {
        let env = decode_body(r#"{"method": "ping", "args": {}}"#).unwrap();
        assert!(env.oslo_version.is_none());
        assert_eq!(env.encode().unwrap(), r#"{"method": "ping", "args": {}}"#);
    }
}
