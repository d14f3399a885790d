//! The oslo.messaging message format: the `oslo.version` 2.0 envelope, the inner RPC
//! request with its `_context_*` keys, replies and the failure encoding.

use serde_json::{Map, Value};

use crate::pyjson;
use crate::rpc::Context;

/// `_RPC_ENVELOPE_VERSION`.
pub const ENVELOPE_VERSION: &str = "2.0";
/// The envelope key holding its version (`_VERSION_KEY`).
pub const VERSION_KEY: &str = "oslo.version";
/// The envelope key holding the inner message as a JSON string (`_MESSAGE_KEY`).
pub const MESSAGE_KEY: &str = "oslo.message";
/// The prefix of the request context keys in an inner request.
pub const CONTEXT_PREFIX: &str = "_context_";
/// How many `_unique_id`s a listener remembers (`_MsgIdCache.DUP_MSG_CHECK_SIZE`).
pub const DUP_MSG_CHECK_SIZE: usize = 16;

/// Why an incoming body could not be turned into a message.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EnvelopeError {
    #[error("body is not json: {0}")]
    NotJson(String),
    #[error("body is not a json object")]
    NotAnObject,
    #[error("specified rpc envelope version, {0}, not supported by this endpoint")]
    UnsupportedEnvelopeVersion(String),
    #[error("oslo.message is not a json object string: {0}")]
    BadInnerMessage(String),
}

/// A uuid4 as 32 lowercase hex digits, like `uuid.uuid4().hex`.
pub fn new_hex_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// `serialize_msg` + kombu's json body: the bytes published.
pub fn serialize_msg(inner: &Map<String, Value>) -> Vec<u8> {
    envelope_text(ENVELOPE_VERSION, inner).into_bytes()
}

/// The body text of an envelope of `version` around `inner`, encoded as Python's
/// `json.dumps` does (key order, separators, ASCII escapes).
pub fn envelope_text(version: &str, inner: &Map<String, Value>) -> String {
    let mut env = Map::new();
    env.insert(VERSION_KEY.into(), Value::String(version.into()));
    env.insert(
        MESSAGE_KEY.into(),
        Value::String(pyjson::to_string(&Value::Object(inner.clone()))),
    );
    pyjson::to_string(&Value::Object(env))
}

/// Whether this endpoint accepts an envelope of `version` (`deserialize_msg`'s check:
/// `version_is_compatible("2.0", version)`, a version Python cannot parse refused).
pub fn envelope_version_supported(version: &str) -> bool {
    matches!(version_is_compatible(ENVELOPE_VERSION, version), Ok(true))
}

/// Parse the body and undo the envelope (`deserialize_msg`). A JSON object without both
/// envelope keys is returned as is (un-enveloped 1.0 message).
pub fn deserialize_msg(body: &[u8]) -> Result<Map<String, Value>, EnvelopeError> {
    let outer: Value =
        serde_json::from_slice(body).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
    let Value::Object(outer) = outer else {
        return Err(EnvelopeError::NotAnObject);
    };
    match open_envelope(outer).map_err(|u| EnvelopeError::UnsupportedEnvelopeVersion(u.0))? {
        Opened::Bare(m) => Ok(m),
        Opened::Enveloped { outer, .. } => inner_message(&outer),
    }
}

/// An envelope whose `oslo.version` this endpoint refuses: the version as sent.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("specified rpc envelope version, {0}, not supported by this endpoint")]
pub struct UnsupportedEnvelope(pub String);

/// `unpack_context`: take the `_context_*` keys out of an inner request, in their
/// order, with the prefix removed.
pub fn unpack_context(msg: &mut Map<String, Value>) -> Context {
    let mut context = Context::new();
    let keys: Vec<String> = msg
        .keys()
        .filter(|k| k.starts_with(CONTEXT_PREFIX))
        .cloned()
        .collect();
    for k in keys {
        if let Some(v) = msg.shift_remove(&k) {
            context.insert(k[CONTEXT_PREFIX.len()..].to_string(), v);
        }
    }
    context
}

/// `pack_context`: add `context` to an inner request as `_context_*` keys.
pub fn pack_context(msg: &mut Map<String, Value>, context: &Context) {
    for (k, v) in context {
        msg.insert(format!("{CONTEXT_PREFIX}{k}"), v.clone());
    }
}

/// A body object after the envelope check of `deserialize_msg`.
#[derive(Debug, Clone, PartialEq)]
pub enum Opened {
    /// No envelope (an un-enveloped 1.0 message): the message itself.
    Bare(Map<String, Value>),
    /// An envelope of a supported `version`; `outer` still holds both keys.
    Enveloped {
        version: String,
        outer: Map<String, Value>,
    },
}

/// `deserialize_msg`'s rule: a body object with both envelope keys is an envelope and
/// its version must be supported; anything else is a bare message.
pub fn open_envelope(outer: Map<String, Value>) -> Result<Opened, UnsupportedEnvelope> {
    if !(outer.contains_key(VERSION_KEY) && outer.contains_key(MESSAGE_KEY)) {
        return Ok(Opened::Bare(outer));
    }
    let version = match outer.get(VERSION_KEY) {
        Some(Value::String(v)) => v.clone(),
        Some(other) => return Err(UnsupportedEnvelope(other.to_string())),
        None => String::new(),
    };
    if !envelope_version_supported(&version) {
        return Err(UnsupportedEnvelope(version));
    }
    Ok(Opened::Enveloped { version, outer })
}

/// The inner message of an envelope, ignoring its version; used to find a reply queue
/// for a message whose envelope version is not supported.
pub fn inner_message(outer: &Map<String, Value>) -> Result<Map<String, Value>, EnvelopeError> {
    let Some(Value::String(inner)) = outer.get(MESSAGE_KEY) else {
        return Err(EnvelopeError::BadInnerMessage("not a string".into()));
    };
    match serde_json::from_str::<Value>(inner) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(EnvelopeError::BadInnerMessage("not an object".into())),
        Err(e) => Err(EnvelopeError::BadInnerMessage(e.to_string())),
    }
}

/// Why a version string could not be compared; oslo raises the Python error named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionError {
    /// `int()` of a non-number: `ValueError`.
    Value(String),
    /// A version without a minor part: `IndexError`.
    Index,
}

impl VersionError {
    /// The failure oslo's dispatcher would send for this error.
    pub fn to_failure(&self) -> Failure {
        match self {
            VersionError::Value(part) => Failure::builtin(
                "ValueError",
                &format!("invalid literal for int() with base 10: '{part}'"),
            ),
            VersionError::Index => Failure::builtin("IndexError", "list index out of range"),
        }
    }
}

fn py_int(s: &str) -> Result<i64, VersionError> {
    let t = s.trim().replace('_', "");
    t.parse::<i64>()
        .map_err(|_| VersionError::Value(s.to_string()))
}

/// `oslo_messaging._utils.version_is_compatible(imp_version, version)`: same major,
/// minor not newer, revision not newer when minors are equal.
pub fn version_is_compatible(imp_version: &str, version: &str) -> Result<bool, VersionError> {
    let v: Vec<&str> = version.split('.').collect();
    let imp: Vec<&str> = imp_version.split('.').collect();
    let rev = v.get(2).copied().unwrap_or("0");
    let imp_rev = imp.get(2).copied().unwrap_or("0");
    if py_int(v[0])? != py_int(imp[0])? {
        return Ok(false);
    }
    let minor = py_int(v.get(1).ok_or(VersionError::Index)?)?;
    let imp_minor = py_int(imp.get(1).ok_or(VersionError::Index)?)?;
    if minor > imp_minor {
        return Ok(false);
    }
    if minor == imp_minor && py_int(rev)? > py_int(imp_rev)? {
        return Ok(false);
    }
    Ok(true)
}

/// An exception sent back to the caller (`serialize_remote_exception`).
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Class name, e.g. `InstanceNotFound`.
    pub class: String,
    /// Module, e.g. `nova.exception`, `builtins`.
    pub module: String,
    /// `str(exc)`.
    pub message: String,
    /// Traceback lines; filled with a short synthetic traceback when left empty.
    pub tb: Vec<String>,
    /// `exc.args`.
    pub args: Vec<Value>,
    /// `exc.kwargs`, `{}` when the class has none.
    pub kwargs: Map<String, Value>,
}

impl Failure {
    /// An exception of `module.class` with `args = [message]` and no kwargs.
    pub fn new(module: &str, class: &str, message: &str) -> Self {
        Failure {
            class: class.into(),
            module: module.into(),
            message: message.into(),
            tb: Vec::new(),
            args: vec![Value::String(message.into())],
            kwargs: Map::new(),
        }
    }

    /// A Python built-in exception (`module: builtins`).
    pub fn builtin(class: &str, message: &str) -> Self {
        Failure::new("builtins", class, message)
    }

    /// `builtins.NotImplementedError`, which nova-api maps to HTTP 501.
    pub fn not_implemented(message: &str) -> Self {
        let mut f = Failure::builtin("NotImplementedError", message);
        if message.is_empty() {
            f.args.clear();
        }
        f
    }

    /// A `nova.exception.<class>`; `kwargs` must suit the class constructor and
    /// normally include `code`, as `NovaException` stores it there.
    pub fn nova(class: &str, message: &str, kwargs: Map<String, Value>) -> Self {
        Failure::new("nova.exception", class, message).with_kwargs(kwargs)
    }

    /// Escape what is not printable in the message, the string arguments and the
    /// traceback, and bound their lengths: an error may quote input bytes, and the
    /// failure ends up in front of people (faults, `openstack` output, logs).
    pub fn make_printable(&mut self) {
        use crate::text::printable;
        const MESSAGE: usize = 4096;
        const LINE: usize = 1024;
        const LINES: usize = 200;
        self.message = printable(&self.message, MESSAGE);
        let fix = |v: &mut Value| {
            if let Value::String(s) = v {
                *s = printable(s, MESSAGE);
            }
        };
        self.args.iter_mut().for_each(fix);
        self.kwargs.values_mut().for_each(fix);
        self.tb.truncate(LINES);
        for line in &mut self.tb {
            // traceback lines end in a newline, as Python formats them
            let (body, nl) = match line.strip_suffix('\n') {
                Some(b) => (b, "\n"),
                None => (line.as_str(), ""),
            };
            *line = format!("{}{nl}", printable(body, LINE));
        }
    }

    /// oslo's `NoSuchMethod` from the dispatcher.
    pub fn no_such_method(method: &str) -> Self {
        Failure::new(
            "oslo_messaging.rpc.dispatcher",
            "NoSuchMethod",
            &format!("Endpoint does not support RPC method {method}"),
        )
    }

    /// oslo's `UnsupportedVersion` from the dispatcher; `version` is `None` when the
    /// message carried `"version": null`.
    pub fn unsupported_version(version: Option<&str>, method: Option<&str>) -> Self {
        let mut msg = format!(
            "Endpoint does not support RPC version {}",
            version.unwrap_or("None")
        );
        if let Some(m) = method.filter(|m| !m.is_empty()) {
            msg.push_str(&format!(". Attempted method: {m}"));
        }
        Failure::new("oslo_messaging.rpc.dispatcher", "UnsupportedVersion", &msg)
    }

    /// oslo's `UnsupportedRpcEnvelopeVersion` (an `RPCException`, so it has kwargs).
    pub fn unsupported_envelope_version(version: &str) -> Self {
        let mut kwargs = Map::new();
        kwargs.insert("version".into(), Value::String(version.into()));
        Failure::new(
            "oslo_messaging._drivers.common",
            "UnsupportedRpcEnvelopeVersion",
            &format!("Specified RPC envelope version, {version}, not supported by this endpoint."),
        )
        .with_kwargs(kwargs)
    }

    pub fn with_kwargs(mut self, kwargs: Map<String, Value>) -> Self {
        self.kwargs = kwargs;
        self
    }

    pub fn with_args(mut self, args: Vec<Value>) -> Self {
        self.args = args;
        self
    }

    pub fn with_traceback(mut self, tb: Vec<String>) -> Self {
        self.tb = tb;
        self
    }

    /// The last traceback line Python prints for this exception.
    fn exception_line(&self) -> String {
        let name = if self.module == "builtins" || self.module == "__main__" {
            self.class.clone()
        } else {
            format!("{}.{}", self.module, self.class)
        };
        if self.message.is_empty() {
            format!("{name}\n")
        } else {
            format!("{name}: {}\n", self.message)
        }
    }

    /// Give an empty traceback the shape of `traceback.format_exception`.
    pub fn fill_traceback(&mut self, method: &str) {
        if self.tb.is_empty() {
            self.tb = vec![
                "Traceback (most recent call last):\n".to_string(),
                format!("  File \"corral\", line 0, in {method}\n"),
                self.exception_line(),
            ];
        }
    }

    /// The `failure` string of a reply: `jsonutils.dumps` of
    /// `{class, module, message, tb, args, kwargs}` in that order.
    pub fn to_json_string(&self) -> String {
        let mut m = Map::new();
        m.insert("class".into(), Value::String(self.class.clone()));
        m.insert("module".into(), Value::String(self.module.clone()));
        m.insert("message".into(), Value::String(self.message.clone()));
        m.insert(
            "tb".into(),
            Value::Array(self.tb.iter().cloned().map(Value::String).collect()),
        );
        m.insert("args".into(), Value::Array(self.args.clone()));
        m.insert("kwargs".into(), Value::Object(self.kwargs.clone()));
        pyjson::to_string(&Value::Object(m))
    }

    /// Parse a `failure` string (`deserialize_remote_exception` reads it leniently:
    /// every key may be missing). `class`/`module` `exceptions` is read as `builtins`.
    pub fn from_json_str(s: &str) -> Result<Self, serde_json::Error> {
        let v: Value = serde_json::from_str(s)?;
        let get_str = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_default()
        };
        let mut module = get_str("module");
        if module == "exceptions" {
            module = "builtins".into();
        }
        Ok(Failure {
            class: get_str("class"),
            module,
            message: get_str("message"),
            tb: v
                .get("tb")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|l| l.as_str().map_or_else(|| l.to_string(), str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            args: v
                .get("args")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            kwargs: v
                .get("kwargs")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        })
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}: {}", self.module, self.class, self.message)
    }
}

/// An RPC request as the server received it, after `unpack_context`.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// `method`; `None` when absent or not a string.
    pub method: Option<String>,
    /// `args`: keyword arguments, still in their serialized (primitive) form.
    pub args: Value,
    /// `namespace`, `None` when absent or null.
    pub namespace: Option<Value>,
    /// `version`: defaults to `"1.0"` when absent; `None` for an explicit null.
    pub version: Option<Value>,
    /// The `_context_*` keys without their prefix.
    pub context: Context,
    /// `_msg_id`: set for calls.
    pub msg_id: Option<String>,
    /// `_reply_q`: the caller's reply queue.
    pub reply_q: Option<String>,
    /// `_timeout`: the call-monitor timeout, as sent.
    pub client_timeout: Option<Value>,
    /// `_unique_id`.
    pub unique_id: Option<String>,
    /// The topic of the listener that received it (`compute`, `compute-alt`).
    pub topic: String,
}

impl Request {
    /// `unpack_context` + `check_duplicate_message`'s pop: split a decoded message.
    pub fn from_message(mut msg: Map<String, Value>, topic: &str) -> Self {
        let context = unpack_context(&mut msg);
        let as_string = |v: Option<Value>| match v {
            Some(Value::String(s)) => Some(s),
            Some(Value::Null) | None => None,
            Some(other) => Some(other.to_string()),
        };
        let msg_id = as_string(msg.shift_remove("_msg_id"));
        let reply_q = as_string(msg.shift_remove("_reply_q"));
        let client_timeout = msg.shift_remove("_timeout").filter(|v| !v.is_null());
        let unique_id = as_string(msg.shift_remove("_unique_id"));
        let method = match msg.get("method") {
            Some(Value::String(m)) => Some(m.clone()),
            _ => None,
        };
        let version = match msg.get("version") {
            None => Some(Value::String("1.0".into())),
            Some(Value::Null) => None,
            Some(v) => Some(v.clone()),
        };
        Request {
            method,
            args: msg
                .get("args")
                .cloned()
                .unwrap_or_else(|| Value::Object(Map::new())),
            namespace: msg.get("namespace").filter(|v| !v.is_null()).cloned(),
            version,
            context,
            msg_id: msg_id.filter(|m| !m.is_empty()),
            reply_q,
            client_timeout,
            unique_id,
            topic: topic.to_string(),
        }
    }

    /// The string value of a `version` or `namespace`, as Python would `str()` it.
    pub fn namespace_str(&self) -> Option<String> {
        self.namespace.as_ref().map(value_str)
    }

    /// The version string, `None` for an explicit null.
    pub fn version_str(&self) -> Option<String> {
        self.version.as_ref().map(value_str)
    }

    /// True when this is a call (a reply is expected).
    pub fn is_call(&self) -> bool {
        self.msg_id.is_some()
    }

    /// The `args` object (empty when not an object).
    pub fn args_map(&self) -> Map<String, Value> {
        self.args.as_object().cloned().unwrap_or_default()
    }

    /// `request_id` of the context, for logs.
    pub fn request_id(&self) -> Option<&str> {
        self.context.get("request_id").and_then(Value::as_str)
    }

    /// The instance uuid of the request, if an `instance` object or `instance_uuid`
    /// argument carries one; for log spans.
    pub fn instance_uuid(&self) -> Option<&str> {
        let args = self.args.as_object()?;
        if let Some(u) = args.get("instance_uuid").and_then(Value::as_str) {
            return Some(u);
        }
        args.get("instance")?
            .get("nova_object.data")?
            .get("uuid")?
            .as_str()
    }

    /// The interval of call-monitor heartbeats (`RPCDispatcher._watchdog`):
    /// `int(_timeout) / 2` seconds when `_timeout` is truthy and that is at least 1.
    pub fn heartbeat_interval(&self) -> Option<std::time::Duration> {
        let secs: i64 = match self.client_timeout.as_ref()? {
            Value::Bool(false) => return None,
            Value::Bool(true) => 1,
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    i
                } else {
                    let f = n.as_f64()?;
                    if f == 0.0 {
                        return None;
                    }
                    f.trunc() as i64
                }
            }
            Value::String(s) if s.is_empty() => return None,
            Value::String(s) => s.trim().parse::<i64>().unwrap_or(0),
            _ => return None,
        };
        if secs == 0 {
            return None;
        }
        let interval = secs as f64 / 2.0;
        if interval < 1.0 {
            tracing::warn!(
                client_timeout = ?self.client_timeout,
                "client provided an invalid timeout value"
            );
            return None;
        }
        Some(std::time::Duration::from_secs_f64(
            interval.min(MAX_HEARTBEAT_INTERVAL.as_secs_f64()),
        ))
    }
}

/// The longest interval between call-monitor heartbeats. oslo beats every
/// `_timeout / 2` seconds; a peer may send any timeout, and one far in the
/// future would otherwise overflow the clock when the next beat is scheduled.
/// Beating more often than the caller asked is harmless.
pub const MAX_HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(86_400);

fn value_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "None".into(),
        other => other.to_string(),
    }
}

/// The inner message of a reply (`AMQPIncomingMessage._send_reply`).
pub fn reply_message(
    result: Value,
    failure: Option<&Failure>,
    ending: bool,
    msg_id: &str,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("result".into(), result);
    m.insert(
        "failure".into(),
        failure.map_or(Value::Null, |f| Value::String(f.to_json_string())),
    );
    m.insert("ending".into(), Value::Bool(ending));
    m.insert("_msg_id".into(), Value::String(msg_id.into()));
    m.insert("_unique_id".into(), Value::String(new_hex_id()));
    m
}

/// The parts of an outgoing request (`_make_message` then `_send`).
#[derive(Debug, Clone)]
pub struct OutgoingRequest<'a> {
    pub method: &'a str,
    pub args: &'a Map<String, Value>,
    pub namespace: Option<&'a str>,
    pub version: Option<&'a str>,
    /// `(msg_id, reply_q, call_monitor_timeout)` for a call.
    pub call: Option<(&'a str, &'a str, Option<u64>)>,
    pub context: &'a Context,
}

impl OutgoingRequest<'_> {
    /// The inner message, keys in oslo's order: method, args, namespace, version,
    /// `_msg_id`, `_reply_q`, `_timeout`, `_unique_id`, `_context_*`.
    pub fn to_message(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("method".into(), Value::String(self.method.into()));
        m.insert("args".into(), Value::Object(self.args.clone()));
        if let Some(ns) = self.namespace {
            m.insert("namespace".into(), Value::String(ns.into()));
        }
        if let Some(v) = self.version {
            m.insert("version".into(), Value::String(v.into()));
        }
        if let Some((msg_id, reply_q, cm)) = self.call {
            m.insert("_msg_id".into(), Value::String(msg_id.into()));
            m.insert("_reply_q".into(), Value::String(reply_q.into()));
            m.insert("_timeout".into(), cm.map_or(Value::Null, Value::from));
        }
        m.insert("_unique_id".into(), Value::String(new_hex_id()));
        pack_context(&mut m, self.context);
        m
    }
}

/// A decoded reply as the client sees it (`ReplyWaiter._process_reply`).
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyPart {
    /// A result or a failure; `ending` tells whether more will follow.
    Payload {
        result: Result<Value, Failure>,
        ending: bool,
    },
    /// `result` and `failure` both null: a heartbeat (`ending: false`) or the legacy
    /// closing message (`ending: true`).
    Empty { ending: bool },
}

/// Split a reply message; returns its `_msg_id` and the part.
pub fn parse_reply(mut msg: Map<String, Value>) -> (Option<String>, ReplyPart) {
    let msg_id = match msg.shift_remove("_msg_id") {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    let ending = msg.get("ending").map(truthy).unwrap_or(false);
    let failure = msg.get("failure").filter(|f| truthy(f));
    if let Some(f) = failure {
        let failure = match f {
            Value::String(s) => Failure::from_json_str(s)
                .unwrap_or_else(|_| Failure::builtin("RemoteError", s).with_traceback(Vec::new())),
            other => Failure::builtin("RemoteError", &other.to_string()),
        };
        return (
            msg_id,
            ReplyPart::Payload {
                result: Err(failure),
                ending,
            },
        );
    }
    match msg.shift_remove("result") {
        Some(v) if !v.is_null() => (
            msg_id,
            ReplyPart::Payload {
                result: Ok(v),
                ending,
            },
        ),
        _ => (msg_id, ReplyPart::Empty { ending }),
    }
}

/// Python truthiness of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn envelope_bytes_match_python() {
        let inner = obj(json!({"result": "a\nb", "failure": null, "ending": true,
                               "_msg_id": "m", "_unique_id": "u"}));
        let body = String::from_utf8(serialize_msg(&inner)).unwrap();
        // bytes as captured from nova-compute (replies-from-real-compute/get_console_output)
        assert_eq!(
            body,
            r#"{"oslo.version": "2.0", "oslo.message": "{\"result\": \"a\\nb\", \"failure\": null, \"ending\": true, \"_msg_id\": \"m\", \"_unique_id\": \"u\"}"}"#
        );
        assert_eq!(deserialize_msg(body.as_bytes()).unwrap(), inner);
    }

    #[test]
    fn envelope_errors() {
        assert!(matches!(
            deserialize_msg(b"{nope"),
            Err(EnvelopeError::NotJson(_))
        ));
        assert_eq!(deserialize_msg(b"[1]"), Err(EnvelopeError::NotAnObject));
        let bad = br#"{"oslo.version": "3.0", "oslo.message": "{}"}"#;
        assert_eq!(
            deserialize_msg(bad),
            Err(EnvelopeError::UnsupportedEnvelopeVersion("3.0".into()))
        );
        // 2.x with a newer minor is also refused (minor must be <= 0)
        let bad = br#"{"oslo.version": "2.1", "oslo.message": "{}"}"#;
        assert!(deserialize_msg(bad).is_err());
        let bad = br#"{"oslo.version": "2.0", "oslo.message": "{oops"}"#;
        assert!(matches!(
            deserialize_msg(bad),
            Err(EnvelopeError::BadInnerMessage(_))
        ));
        // no envelope: the 1.0 format is passed through
        let legacy = br#"{"method": "x", "args": {}}"#;
        assert_eq!(
            deserialize_msg(legacy).unwrap().get("method"),
            Some(&json!("x"))
        );
    }

    #[test]
    fn version_compat_like_oslo() {
        assert_eq!(version_is_compatible("6.4", "6.0"), Ok(true));
        assert_eq!(version_is_compatible("6.4", "6.4"), Ok(true));
        assert_eq!(version_is_compatible("6.4", "6.5"), Ok(false));
        assert_eq!(version_is_compatible("6.4", "5.0"), Ok(false));
        assert_eq!(version_is_compatible("6.4", "6.4.1"), Ok(false));
        assert_eq!(version_is_compatible("6.4.2", "6.4.1"), Ok(true));
        assert_eq!(version_is_compatible("1.0", "1"), Err(VersionError::Index));
        assert_eq!(
            version_is_compatible("1.0", "a.b"),
            Err(VersionError::Value("a".into()))
        );
    }

    #[test]
    fn failure_encoding_matches_oslo_layout() {
        let mut kwargs = Map::new();
        kwargs.insert("instance_id".into(), json!("0001"));
        kwargs.insert("code".into(), json!(404));
        let f = Failure::nova(
            "InstanceNotFound",
            "Instance 0001 could not be found.",
            kwargs,
        )
        .with_traceback(vec!["Traceback (most recent call last):\n".into()]);
        assert_eq!(
            f.to_json_string(),
            r#"{"class": "InstanceNotFound", "module": "nova.exception", "message": "Instance 0001 could not be found.", "tb": ["Traceback (most recent call last):\n"], "args": ["Instance 0001 could not be found."], "kwargs": {"instance_id": "0001", "code": 404}}"#
        );
        assert_eq!(Failure::from_json_str(&f.to_json_string()).unwrap(), f);
    }

    #[test]
    fn failures_sent_are_printable() {
        let raw = String::from_utf8_lossy(b"bad \x00\x1b[31m\xff\xfe tar header");
        let mut f = Failure::nova("ImageUnacceptable", &raw, Map::new());
        f.fill_traceback("build\u{7}");
        f.make_printable();
        let wire = f.to_json_string();
        assert_eq!(f.message, "bad \\x00\\x1b[31m\\u{fffd}\\u{fffd} tar header");
        assert_eq!(f.args, vec![Value::String(f.message.clone())]);
        assert!(f.tb.iter().all(|l| l.ends_with('\n')));
        assert!(
            f.tb.iter()
                .all(|l| l.trim_end_matches('\n').chars().all(|c| !c.is_control())),
            "{:?}",
            f.tb
        );
        assert!(
            !wire.contains("\\u0000") && !wire.contains("\\u001b"),
            "{wire}"
        );
        let mut long = Failure::builtin("ValueError", &"x".repeat(1 << 20));
        long.make_printable();
        assert_eq!(long.message.chars().count(), 4096);
    }

    #[test]
    fn dispatcher_failures() {
        let f = Failure::no_such_method("frobnicate");
        assert_eq!(f.module, "oslo_messaging.rpc.dispatcher");
        assert_eq!(f.class, "NoSuchMethod");
        assert_eq!(f.message, "Endpoint does not support RPC method frobnicate");
        assert_eq!(f.args, vec![json!(f.message)]);
        assert!(f.kwargs.is_empty());
        let f = Failure::unsupported_version(Some("7.0"), Some("pause_instance"));
        assert_eq!(f.class, "UnsupportedVersion");
        assert_eq!(
            f.message,
            "Endpoint does not support RPC version 7.0. Attempted method: pause_instance"
        );
        let f = Failure::unsupported_envelope_version("3.0");
        assert_eq!(f.kwargs.get("version"), Some(&json!("3.0")));
    }

    #[test]
    fn filled_traceback_ends_like_python() {
        let mut f = Failure::nova("InstanceNotFound", "gone", Map::new());
        f.fill_traceback("stop_instance");
        assert_eq!(
            f.tb.last().unwrap(),
            "nova.exception.InstanceNotFound: gone\n"
        );
        let mut f = Failure::not_implemented("");
        f.fill_traceback("x");
        assert_eq!(f.tb.last().unwrap(), "NotImplementedError\n");
        assert!(f.args.is_empty());
    }

    #[test]
    fn request_unpacks_context_and_control_keys() {
        let m = obj(json!({
            "method": "pause_instance", "args": {"instance": {"nova_object.data": {"uuid": "u-1"}}},
            "version": "6.0", "_msg_id": "m1", "_reply_q": "reply_x", "_timeout": null,
            "_unique_id": "uid", "_context_request_id": "req-1", "_context_roles": ["admin"]
        }));
        let r = Request::from_message(m, "compute");
        assert_eq!(r.method.as_deref(), Some("pause_instance"));
        assert_eq!(r.version_str().as_deref(), Some("6.0"));
        assert_eq!(r.msg_id.as_deref(), Some("m1"));
        assert_eq!(r.reply_q.as_deref(), Some("reply_x"));
        assert_eq!(r.client_timeout, None);
        assert_eq!(r.unique_id.as_deref(), Some("uid"));
        assert_eq!(r.request_id(), Some("req-1"));
        assert_eq!(r.instance_uuid(), Some("u-1"));
        assert_eq!(r.context.get("roles"), Some(&json!(["admin"])));
        assert!(r.namespace.is_none());
        // absent version means 1.0, explicit null stays None
        let r = Request::from_message(obj(json!({"method": "m"})), "t");
        assert_eq!(r.version_str().as_deref(), Some("1.0"));
        let r = Request::from_message(obj(json!({"method": "m", "version": null})), "t");
        assert_eq!(r.version_str(), None);
    }

    #[test]
    fn heartbeat_interval_like_watchdog() {
        let with = |t: Value| {
            Request::from_message(obj(json!({"method": "m", "_timeout": t})), "t")
                .heartbeat_interval()
        };
        assert_eq!(with(json!(60)), Some(std::time::Duration::from_secs(30)));
        assert_eq!(with(json!(3)), Some(std::time::Duration::from_millis(1500)));
        assert_eq!(with(json!(2.9)), Some(std::time::Duration::from_secs(1)));
        assert_eq!(with(json!(1)), None);
        assert_eq!(with(json!(0)), None);
        assert_eq!(with(json!(null)), None);
        assert_eq!(with(json!("10")), Some(std::time::Duration::from_secs(5)));
        assert_eq!(with(json!("x")), None);
        // A peer's absurd timeout must not become an instant past the clock's end.
        let cap = Some(MAX_HEARTBEAT_INTERVAL);
        assert_eq!(with(json!(i64::MAX)), cap);
        assert_eq!(with(json!(1e300)), cap);
        assert_eq!(with(json!(u64::MAX)), cap);
    }

    #[test]
    fn outgoing_request_key_order() {
        let args = obj(json!({"a": 1}));
        let ctx = obj(json!({"request_id": "req-1"}));
        let req = OutgoingRequest {
            method: "ping",
            args: &args,
            namespace: Some("baseapi"),
            version: Some("1.0"),
            call: Some(("mid", "reply_q", None)),
            context: &ctx,
        };
        let keys: Vec<String> = req.to_message().keys().cloned().collect();
        assert_eq!(
            keys,
            vec![
                "method",
                "args",
                "namespace",
                "version",
                "_msg_id",
                "_reply_q",
                "_timeout",
                "_unique_id",
                "_context_request_id"
            ]
        );
    }

    #[test]
    fn reply_shapes() {
        let (id, part) = parse_reply(reply_message(json!("ok"), None, true, "m"));
        assert_eq!(id.as_deref(), Some("m"));
        assert_eq!(
            part,
            ReplyPart::Payload {
                result: Ok(json!("ok")),
                ending: true
            }
        );
        let (_, part) = parse_reply(reply_message(Value::Null, None, false, "m"));
        assert_eq!(part, ReplyPart::Empty { ending: false });
        let f = Failure::builtin("ValueError", "bad");
        let (_, part) = parse_reply(reply_message(Value::Null, Some(&f), true, "m"));
        assert_eq!(
            part,
            ReplyPart::Payload {
                result: Err(f),
                ending: true
            }
        );
        // legacy first half: result without ending
        let (_, part) = parse_reply(obj(json!({"result": 1, "failure": null, "_msg_id": "m"})));
        assert_eq!(
            part,
            ReplyPart::Payload {
                result: Ok(json!(1)),
                ending: false
            }
        );
        let keys: Vec<String> = reply_message(Value::Null, None, true, "m")
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            keys,
            vec!["result", "failure", "ending", "_msg_id", "_unique_id"]
        );
    }
}
