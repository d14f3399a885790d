//! `corral nova decode FILE`: decode captured or live AMQP messages for reading.
//!
//! [`decode_file`] accepts
//!
//! 1. a raw AMQP body (the envelope JSON, or a legacy un-enveloped message);
//! 2. a capture record: a JSON object with `body_raw` (or `body`) holding the exact wire
//!    body, plus optional `amqp` / `exchange` / `routing_key(s)`; a nested record (the
//!    capture tap's `canned_reply_sent_by_capture_tap`) is decoded after it;
//! 3. a file whose top-level lists (`messages`, `run1`, ...) hold such records, or a
//!    JSON list of records or bodies;
//! 4. JSON lines of any of the above (the raw firehose and tap logs).
//!
//! Each message is decoded down to typed structs: envelope, context, typed call
//! arguments, reply result interpreted through the request it answers (matched by
//! `_msg_id` earlier in the same file), and every versioned object checked against the
//! nova 34 manifest. Anything not understood is a [`DecodeError`] naming the message.

use std::collections::HashMap;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use super::envelope::{self, CallKind, Envelope, EnvelopeError, RpcMessage};
use super::object::{self, NovaObject, ObjectError};
use super::rpc_methods::{CallError, ReplyResult, RpcCall};

/// Errors of [`decode_file`].
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The file is neither JSON nor JSON lines.
    #[error("malformed JSON")]
    MalformedJson(#[source] serde_json::Error),
    /// Valid JSON with no AMQP message in any accepted layout.
    #[error("no AMQP messages found (expected an oslo body, a record with body_raw, or lists of records)")]
    NoMessages,
    /// One message could not be decoded.
    #[error("message {index} ({label})")]
    Message {
        /// Position in the file, from 0.
        index: usize,
        /// Where it is (`messages[3]`, `line 7`, ...).
        label: String,
        /// Why.
        #[source]
        source: MessageError,
    },
}

/// Why one message could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// Envelope or inner message.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// A versioned object.
    #[error(transparent)]
    Object(#[from] ObjectError),
    /// Typed arguments or result.
    #[error(transparent)]
    Call(#[from] CallError),
}

/// What a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    /// Request expecting a reply.
    Call,
    /// Request without reply.
    Cast,
    /// Final (or legacy) reply.
    Reply,
    /// Call-monitor heartbeat (`ending: false`).
    Heartbeat,
}

/// AMQP routing details a capture record carries.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AmqpInfo {
    /// Exchange (`nova`, `""` for replies, `scheduler_fanout`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exchange: Option<String>,
    /// Routing key (`compute.<host>`, `conductor`, `reply_<uuid>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<String>,
}

/// A typed reply.
#[derive(Clone, Debug, PartialEq)]
pub struct TypedReply {
    /// Method of the request with the same `_msg_id` earlier in the file, if any.
    pub in_reply_to: Option<String>,
    /// The result interpreted for that method.
    pub result: ReplyResult,
}

/// One decoded message.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedMessage {
    /// Position in the file, from 0.
    pub index: usize,
    /// Where it is in the file.
    pub label: String,
    /// Routing details, when the input had them.
    pub amqp: AmqpInfo,
    /// The exact body as received.
    pub raw_body: String,
    /// The decoded envelope (re-encodes byte-identical).
    pub envelope: Envelope,
    /// Call, cast, reply or heartbeat.
    pub kind: MessageKind,
    /// Typed request (requests only).
    pub call: Option<RpcCall>,
    /// Typed reply (replies only).
    pub reply: Option<TypedReply>,
    /// Every versioned object in the message: JSON path, name, version.
    pub objects: Vec<ObjectRef>,
}

/// A versioned object found in a message.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ObjectRef {
    /// JSON path from the inner message (`args.instance.flavor`).
    pub path: String,
    /// Object name.
    pub name: String,
    /// Version received.
    pub version: String,
    /// `exact`, `older_minor` or `newer_minor` relative to nova 34.
    pub support: &'static str,
}

impl DecodedMessage {
    /// The method of the request, or of the request a reply answers.
    pub fn method(&self) -> Option<&str> {
        match (&self.call, &self.reply) {
            (Some(c), _) => Some(c.method()),
            (_, Some(r)) => r.in_reply_to.as_deref(),
            _ => None,
        }
    }

    /// The body re-encoded from the decoded envelope (byte-identical to `raw_body` for
    /// everything oslo writes).
    pub fn reencode(&self) -> Result<String, EnvelopeError> {
        self.envelope.encode()
    }

    /// The body re-encoded from the *typed* call or reply: proves the typed structs
    /// keep everything.
    pub fn reencode_typed(&self) -> Result<String, MessageError> {
        let mut env = self.envelope.clone();
        match (&mut env.message, &self.call, &self.reply) {
            (RpcMessage::Request(req), Some(call), _) => req.args = call.to_args()?,
            (RpcMessage::Reply(rep), _, Some(typed)) if rep.result.is_set() => {
                rep.result = super::fields::Field::Set(typed.result.to_value()?);
            }
            _ => {}
        }
        Ok(env.encode()?)
    }

    /// A JSON view for printing; with `redact`, the context token and password
    /// arguments are replaced by `***`.
    pub fn to_json(&self, redact: bool) -> Result<Value, serde_json::Error> {
        serde_json::to_value(DecodedView { msg: self, redact })
    }
}

impl Serialize for DecodedMessage {
    /// Serializes the redacted view (see [`DecodedMessage::to_json`]).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        DecodedView {
            msg: self,
            redact: true,
        }
        .serialize(serializer)
    }
}

struct DecodedView<'a> {
    msg: &'a DecodedMessage,
    redact: bool,
}

const SECRET_ARGS: &[&str] = &["admin_password", "new_pass", "rescue_password"];

impl Serialize for DecodedView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let m = self.msg;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("index", &m.index)?;
        map.serialize_entry("source", &m.label)?;
        if m.amqp.exchange.is_some() {
            map.serialize_entry("exchange", &m.amqp.exchange)?;
        }
        if m.amqp.routing_key.is_some() {
            map.serialize_entry("routing_key", &m.amqp.routing_key)?;
        }
        map.serialize_entry("kind", &m.kind)?;
        map.serialize_entry("oslo_version", &m.envelope.oslo_version)?;
        match &m.envelope.message {
            RpcMessage::Request(req) => {
                map.serialize_entry("method", &req.method)?;
                if let Some(call) = &m.call {
                    map.serialize_entry("target", &call.target())?;
                    map.serialize_entry("typed", &call.is_typed())?;
                }
                map.serialize_entry("version", &req.version)?;
                if !req.namespace.is_unset() {
                    map.serialize_entry("namespace", &req.namespace)?;
                }
                if !req.msg_id.is_unset() {
                    map.serialize_entry("msg_id", &req.msg_id)?;
                    map.serialize_entry("reply_q", &req.reply_q)?;
                    map.serialize_entry("timeout", &req.timeout)?;
                }
                map.serialize_entry("unique_id", &req.unique_id)?;
                let ctx = if self.redact {
                    req.context.redacted()
                } else {
                    req.context.clone()
                };
                map.serialize_entry("context", &ctx)?;
                let mut args = match &m.call {
                    Some(call) => call.to_args().map_err(S::Error::custom)?,
                    None => req.args.clone(),
                };
                if self.redact {
                    for key in SECRET_ARGS {
                        if let Some(v) = args.get_mut(*key) {
                            if v.is_string() {
                                *v = Value::String("***".into());
                            }
                        }
                    }
                }
                map.serialize_entry("args", &args)?;
                if !req.extra.is_empty() {
                    map.serialize_entry("extra", &req.extra)?;
                }
            }
            RpcMessage::Reply(rep) => {
                if let Some(typed) = &m.reply {
                    map.serialize_entry("in_reply_to", &typed.in_reply_to)?;
                }
                map.serialize_entry("msg_id", &rep.msg_id)?;
                map.serialize_entry("unique_id", &rep.unique_id)?;
                map.serialize_entry("ending", &rep.ending)?;
                map.serialize_entry("result", &rep.result)?;
                map.serialize_entry("failure", &rep.failure_info())?;
                if !rep.extra.is_empty() {
                    map.serialize_entry("extra", &rep.extra)?;
                }
            }
        }
        map.serialize_entry("objects", &m.objects)?;
        map.end()
    }
}

/// One message found in the input, not yet decoded.
struct RawItem {
    label: String,
    amqp: AmqpInfo,
    body: String,
}

/// Decodes every message in `contents` (see the module docs for accepted layouts).
pub fn decode_file(contents: &str) -> Result<Vec<DecodedMessage>, DecodeError> {
    let items = collect_items(contents)?;
    if items.is_empty() {
        return Err(DecodeError::NoMessages);
    }
    let mut requests: HashMap<String, String> = HashMap::new();
    let mut out = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let decoded = decode_item(index, item, &requests).map_err(|(label, source)| {
            DecodeError::Message {
                index,
                label,
                source,
            }
        })?;
        if let (RpcMessage::Request(req), Some(call)) = (&decoded.envelope.message, &decoded.call) {
            if let Some(id) = req.msg_id.as_str() {
                requests.insert(id.to_string(), call.method().to_string());
            }
        }
        out.push(decoded);
    }
    Ok(out)
}

/// Decodes one AMQP body (no pairing with a request).
pub fn decode_message(body: &str) -> Result<DecodedMessage, MessageError> {
    decode_item(
        0,
        RawItem {
            label: "body".into(),
            amqp: AmqpInfo::default(),
            body: body.to_string(),
        },
        &HashMap::new(),
    )
    .map_err(|(_, e)| e)
}

fn decode_item(
    index: usize,
    item: RawItem,
    requests: &HashMap<String, String>,
) -> Result<DecodedMessage, (String, MessageError)> {
    let RawItem { label, amqp, body } = item;
    let fail = |e: MessageError| (label.clone(), e);
    let envelope = envelope::decode_body(&body).map_err(|e| fail(e.into()))?;
    let inner = Value::Object(envelope.inner_map().map_err(|e| fail(e.into()))?);
    object::check_all_primitives(&inner).map_err(|e| fail(e.into()))?;
    let objects = object_refs(&inner);
    let (kind, call, reply) = match &envelope.message {
        RpcMessage::Request(req) => {
            let kind = match req.kind() {
                CallKind::Call => MessageKind::Call,
                CallKind::Cast => MessageKind::Cast,
            };
            let call = RpcCall::decode(req).map_err(|e| fail(e.into()))?;
            (kind, Some(call), None)
        }
        RpcMessage::Reply(rep) => {
            let kind = if rep.is_heartbeat() {
                MessageKind::Heartbeat
            } else {
                MessageKind::Reply
            };
            let in_reply_to = rep.msg_id.as_str().and_then(|id| requests.get(id)).cloned();
            let result_value = rep.result.get().cloned().unwrap_or(Value::Null);
            let result = ReplyResult::decode(in_reply_to.as_deref(), &result_value)
                .map_err(|e| fail(e.into()))?;
            (
                kind,
                None,
                Some(TypedReply {
                    in_reply_to,
                    result,
                }),
            )
        }
    };
    Ok(DecodedMessage {
        index,
        label,
        amqp,
        raw_body: body,
        envelope,
        kind,
        call,
        reply,
        objects,
    })
}

fn object_refs(inner: &Value) -> Vec<ObjectRef> {
    fn walk(value: &Value, path: &str, out: &mut Vec<ObjectRef>) {
        match value {
            Value::Object(map) => {
                if let Ok(obj) = NovaObject::from_primitive(value) {
                    let support = match obj.check_supported() {
                        Ok(object::VersionSupport::Exact) => "exact",
                        Ok(object::VersionSupport::OlderMinor) => "older_minor",
                        Ok(object::VersionSupport::NewerMinor) => "newer_minor",
                        Err(_) => "unsupported",
                    };
                    out.push(ObjectRef {
                        path: path.to_string(),
                        name: obj.name.clone(),
                        version: obj.version.to_string(),
                        support,
                    });
                    for (k, v) in &obj.data {
                        walk(v, &join(path, k), out);
                    }
                    return;
                }
                for (k, v) in map {
                    walk(v, &join(path, k), out);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    fn join(path: &str, key: &str) -> String {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    }
    let mut out = Vec::new();
    walk(inner, "", &mut out);
    out
}

fn collect_items(contents: &str) -> Result<Vec<RawItem>, DecodeError> {
    let trimmed = contents.trim();
    let mut items = Vec::new();
    match serde_json::from_str::<Value>(trimmed) {
        Ok(value) => collect_value(&value, Some(trimmed), "", &mut items),
        Err(whole_err) => {
            let lines: Vec<(usize, &str)> = trimmed
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .collect();
            if lines.len() < 2 {
                return Err(DecodeError::MalformedJson(whole_err));
            }
            for (n, line) in lines {
                let line = line.trim();
                let value: Value =
                    serde_json::from_str(line).map_err(DecodeError::MalformedJson)?;
                collect_value(&value, Some(line), &format!("line {}", n + 1), &mut items);
            }
        }
    }
    Ok(items)
}

/// A record's body: `body_raw` (per-file captures) or `body` (raw logs), as a string.
fn record_body(map: &Map<String, Value>) -> Option<&str> {
    map.get("body_raw")
        .or_else(|| map.get("body"))
        .and_then(Value::as_str)
}

/// An oslo body: an envelope, or a legacy un-enveloped request (`method` and `args`,
/// which oslo always writes) or reply. HTTP logs with a `method` key are not bodies.
fn looks_like_body(map: &Map<String, Value>) -> bool {
    map.contains_key(envelope::OSLO_VERSION_KEY)
        || map.contains_key(envelope::OSLO_MESSAGE_KEY)
        || (map.get("method").is_some_and(Value::is_string)
            && map.get("args").is_some_and(Value::is_object))
        || (map.contains_key("result")
            && (map.contains_key("ending") || map.contains_key("failure")))
}

fn is_body_text(text: &str) -> bool {
    text.trim_start().starts_with('{')
        && serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| v.as_object().map(looks_like_body))
            .unwrap_or(false)
}

fn record_amqp(map: &Map<String, Value>) -> AmqpInfo {
    let src = map.get("amqp").and_then(Value::as_object).unwrap_or(map);
    let s = |k: &str| src.get(k).and_then(Value::as_str).map(str::to_string);
    AmqpInfo {
        exchange: s("exchange"),
        routing_key: s("routing_key").or_else(|| {
            src.get("routing_keys")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(Value::as_str)
                .map(str::to_string)
        }),
    }
}

fn label_of(prefix: &str, default: &str) -> String {
    if prefix.is_empty() {
        default.to_string()
    } else {
        prefix.to_string()
    }
}

fn collect_value(value: &Value, raw_text: Option<&str>, prefix: &str, out: &mut Vec<RawItem>) {
    match value {
        Value::Object(map) => {
            if let Some(body) = record_body(map) {
                out.push(RawItem {
                    label: label_of(prefix, "record"),
                    amqp: record_amqp(map),
                    body: body.to_string(),
                });
                // A record may carry the reply it got: a nested record (per-file
                // captures' `canned_reply_sent_by_capture_tap`) or a body string (the
                // tap log's `replied_with`).
                for (k, v) in map {
                    if k == "body" || k == "body_raw" {
                        continue;
                    }
                    let nested = match v {
                        Value::Object(sub) => record_body(sub).map(|b| (record_amqp(sub), b)),
                        Value::String(text) if is_body_text(text) => {
                            Some((AmqpInfo::default(), text.as_str()))
                        }
                        _ => None,
                    };
                    if let Some((amqp, body)) = nested {
                        out.push(RawItem {
                            label: join_label(&label_of(prefix, "record"), k),
                            amqp,
                            body: body.to_string(),
                        });
                    }
                }
                return;
            }
            if looks_like_body(map) {
                out.push(RawItem {
                    label: label_of(prefix, "body"),
                    amqp: AmqpInfo::default(),
                    body: raw_text
                        .map(str::to_string)
                        .unwrap_or_else(|| crate::pyjson::to_string(value)),
                });
                return;
            }
            for (k, v) in map {
                if let Value::Array(items) = v {
                    for (i, item) in items.iter().enumerate() {
                        if item.as_object().is_some_and(|m| record_body(m).is_some()) {
                            collect_value(
                                item,
                                None,
                                &format!("{}[{i}]", join_label(prefix, k)),
                                out,
                            );
                        }
                    }
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if let Some(m) = item.as_object() {
                    if record_body(m).is_some() || looks_like_body(m) {
                        collect_value(item, None, &format!("{}[{i}]", label_of(prefix, "")), out);
                    }
                }
            }
        }
        _ => {}
    }
}

fn join_label(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(inner: &str) -> String {
        let mut outer = Map::new();
        outer.insert("oslo.version".into(), Value::String("2.0".into()));
        outer.insert("oslo.message".into(), Value::String(inner.into()));
        crate::pyjson::to_string(&Value::Object(outer))
    }

    fn message_error(contents: &str) -> MessageError {
        match decode_file(contents) {
            Err(DecodeError::Message { source, .. }) => source,
            other => panic!("expected a message error, got {other:?}"),
        }
    }

    #[test]
    fn malformed_json_is_a_typed_error() {
        assert!(matches!(
            decode_file("{\"oslo.version\": "),
            Err(DecodeError::MalformedJson(_))
        ));
        assert!(matches!(
            decode_file("not json\nat all"),
            Err(DecodeError::MalformedJson(_))
        ));
        assert!(matches!(
            decode_file(""),
            Err(DecodeError::MalformedJson(_))
        ));
    }

    #[test]
    fn wrong_oslo_version_is_a_typed_error() {
        let b =
            r#"{"oslo.version": "1.0", "oslo.message": "{\"method\": \"ping\", \"args\": {}}"}"#;
        assert!(matches!(
            message_error(b),
            MessageError::Envelope(EnvelopeError::UnsupportedEnvelopeVersion(_))
        ));
    }

    #[test]
    fn missing_method_is_a_typed_error() {
        let b = body(r#"{"args": {}, "version": "6.0"}"#);
        assert!(matches!(
            message_error(&b),
            MessageError::Envelope(EnvelopeError::MissingMethod)
        ));
    }

    #[test]
    fn unknown_object_name_is_a_typed_error() {
        let b = body(
            r#"{"method": "start_instance", "args": {"instance": {"nova_object.name": "Gizmo", "nova_object.namespace": "nova", "nova_object.version": "1.0", "nova_object.data": {}}}, "version": "6.0"}"#,
        );
        assert!(matches!(
            message_error(&b),
            MessageError::Object(ObjectError::UnknownObject(name)) if name == "Gizmo"
        ));
    }

    #[test]
    fn newer_major_object_version_is_a_typed_error() {
        let b = body(
            r#"{"method": "start_instance", "args": {"instance": {"nova_object.name": "Instance", "nova_object.namespace": "nova", "nova_object.version": "3.0", "nova_object.data": {}}}, "version": "6.0"}"#,
        );
        assert!(matches!(
            message_error(&b),
            MessageError::Object(ObjectError::NewerMajorVersion { .. })
        ));
    }

    #[test]
    fn newer_minor_object_version_keeps_unknown_fields() {
        let b = body(
            r#"{"method": "start_instance", "args": {"instance": {"nova_object.name": "Instance", "nova_object.namespace": "nova", "nova_object.version": "2.9", "nova_object.data": {"uuid": "u", "shiny_new_field": [1]}}}, "version": "6.0"}"#,
        );
        let msgs = decode_file(&b).unwrap();
        assert_eq!(msgs[0].objects[0].support, "newer_minor");
        let Some(RpcCall::Compute(super::super::rpc_methods::ComputeCall::StartInstance(a))) =
            &msgs[0].call
        else {
            panic!()
        };
        assert_eq!(a.instance.extra["shiny_new_field"], serde_json::json!([1]));
        assert_eq!(msgs[0].reencode_typed().unwrap(), msgs[0].raw_body);
    }

    #[test]
    fn json_without_messages_is_a_typed_error() {
        assert!(matches!(
            decode_file(r#"{"requests": [{"t": 1}]}"#),
            Err(DecodeError::NoMessages)
        ));
        assert!(matches!(
            decode_file("[1, 2]"),
            Err(DecodeError::NoMessages)
        ));
    }

    #[test]
    fn replies_are_paired_with_their_request() {
        let call = body(
            r#"{"method": "ping", "args": {"arg": "x"}, "namespace": "baseapi", "version": "1.0", "_msg_id": "m1", "_reply_q": "reply_q", "_timeout": null, "_unique_id": "u1"}"#,
        );
        let reply = body(
            r#"{"result": {"service": "conductor", "arg": "x"}, "failure": null, "ending": true, "_msg_id": "m1", "_unique_id": "u2"}"#,
        );
        let file = format!("{call}\n{reply}\n");
        let msgs = decode_file(&file).unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].kind, MessageKind::Call);
        assert_eq!(msgs[1].kind, MessageKind::Reply);
        assert_eq!(msgs[1].method(), Some("ping"));
        assert_eq!(msgs[1].label, "line 2");
        let view = msgs[1].to_json(true).unwrap();
        assert_eq!(view["in_reply_to"], "ping");
    }
}
