// Each example uses a part of this module.
#![allow(dead_code)]
// Shared argument handling of the example binaries.
use std::collections::HashMap;

pub struct Args {
    pub values: HashMap<String, Vec<String>>,
}

impl Args {
    pub fn parse() -> Result<Self, String> {
        let mut values: HashMap<String, Vec<String>> = HashMap::new();
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            let Some(key) = a.strip_prefix("--") else {
                return Err(format!("unexpected argument {a}"));
            };
            if let Some((k, v)) = key.split_once('=') {
                values.entry(k.into()).or_default().push(v.into());
                continue;
            }
            let flag_only = matches!(key, "cast" | "fanout");
            let v = if flag_only {
                "1".to_string()
            } else {
                it.next().ok_or(format!("--{key} needs a value"))?
            };
            values.entry(key.into()).or_default().push(v);
        }
        Ok(Args { values })
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.values
            .get(k)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    pub fn all(&self, k: &str) -> Vec<String> {
        self.values.get(k).cloned().unwrap_or_default()
    }

    pub fn pairs(&self, k: &str) -> HashMap<String, String> {
        self.all(k)
            .iter()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            })
            .collect()
    }

    pub fn options(&self) -> Result<corral::rpc::RpcOptions, corral::rpc::OptionsError> {
        corral::rpc::RpcOptions::from_sections(&self.pairs("default"), &self.pairs("opt"))
    }
}

pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Human-readable view of an oslo message body: the envelope, the inner message with
/// the context folded, and a decoded failure.
#[allow(dead_code)]
pub fn describe(body: &[u8]) -> String {
    use serde_json::{Map, Value};
    let text = String::from_utf8_lossy(body);
    let outer: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return format!("not json ({e}): {text}"),
    };
    let version = outer.get("oslo.version").cloned().unwrap_or(Value::Null);
    let inner = match corral::rpc::envelope::deserialize_msg(body) {
        Ok(m) => m,
        Err(e) => return format!("undecodable ({e}): {text}"),
    };
    let mut context = Map::new();
    let mut rest = Map::new();
    for (k, v) in inner {
        match k.strip_prefix("_context_") {
            Some(c) => {
                context.insert(c.to_string(), v);
            }
            None => {
                rest.insert(k, v);
            }
        }
    }
    if let Some(Value::String(f)) = rest.get("failure").cloned() {
        if let Ok(v) = serde_json::from_str::<Value>(&f) {
            rest.insert("failure".into(), v);
        }
    }
    if !context.is_empty() {
        rest.insert("_context".into(), Value::Object(context));
    }
    let pretty = serde_json::to_string_pretty(&Value::Object(rest)).unwrap_or_default();
    format!("oslo.version {version}\n{pretty}")
}
