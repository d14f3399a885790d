//! One call or cast from the command line; prints one JSON line:
//! `{"result": ...}` or `{"error": {...}}`.
//!
//! `cargo run --example test_client -- --topic t --server h --method echo
//!  --args '{"value": 1}' [--version 1.0] [--namespace ns] [--timeout 5] [--cm-timeout 4]
//!  [--cast] [--fanout] [--context '{"request_id": "req-1"}'] [--opt k=v]`

use std::time::Duration;

use corral::rpc::{RpcClient, RpcError, Target, Transport};
use serde_json::{json, Map, Value};

#[path = "support/mod.rs"]
mod common;

fn parse_obj(s: Option<&str>) -> Result<Map<String, Value>, String> {
    match s {
        None => Ok(Map::new()),
        Some(s) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(format!("not a json object: {s}")),
        },
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_tracing();
    let args = common::Args::parse()?;
    let url = args
        .get("url")
        .unwrap_or("rabbit://guest:guest@127.0.0.1:5672/")
        .to_string();
    let transport = Transport::from_url(&url, args.options()?)?;
    let mut target = Target::new(args.get("topic").ok_or("--topic is required")?);
    target.server = args.get("server").map(str::to_string);
    target.version = args.get("version").map(str::to_string);
    target.namespace = args.get("namespace").map(str::to_string);
    target.fanout = args.get("fanout").is_some();
    let mut client = RpcClient::new(transport.clone(), target);
    if let Some(t) = args.get("timeout") {
        client = client.with_timeout(Duration::from_secs_f64(t.parse()?));
    }
    if let Some(t) = args.get("cm-timeout") {
        client = client.with_call_monitor_timeout(t.parse()?);
    }
    let method = args.get("method").ok_or("--method is required")?;
    let call_args = parse_obj(args.get("args"))?;
    let context = parse_obj(args.get("context"))?;
    let out = if args.get("cast").is_some() || args.get("fanout").is_some() {
        client
            .cast(&context, method, call_args)
            .await
            .map(|()| Value::Null)
    } else {
        client.call(&context, method, call_args).await
    };
    let line = match out {
        Ok(v) => json!({"result": v}),
        Err(RpcError::Remote(r)) => json!({"error": {
            "type": "remote", "exc_type": r.exc_type, "module": r.module, "value": r.value,
            "args": r.args, "kwargs": r.kwargs, "traceback": r.traceback}}),
        Err(RpcError::Timeout { msg_id, reply_q }) => {
            json!({"error": {"type": "timeout", "msg_id": msg_id, "reply_q": reply_q}})
        }
        Err(e) => json!({"error": {"type": "other", "message": e.to_string()}}),
    };
    println!("{line}");
    transport.shutdown().await;
    Ok(())
}
