//! An RPC server for interop tests: serves a test endpoint (version 1.3) and a
//! `baseapi` endpoint (1.1) on every `--topic`, prints `READY {...}` once consuming.
//!
//! `cargo run --example test_server -- --server host1 --topic compute --topic compute-alt
//!  [--url rabbit://...] [--opt rabbit_quorum_queue=true] [--default rpc_ping_enabled=true]`

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use corral::rpc::{Endpoint, Failure, Request, RpcServer, Transport};
use serde_json::{json, Map, Value};

#[path = "support/mod.rs"]
mod common;

struct TestEndpoint {
    server: String,
    records: Mutex<Vec<Value>>,
}

const METHODS: &[&str] = &[
    "echo",
    "add",
    "sleep",
    "fail_nova",
    "fail_value",
    "not_implemented",
    "record",
    "get_records",
    "get_context",
    "whoami",
];

#[async_trait]
impl Endpoint for TestEndpoint {
    fn version(&self) -> Option<&str> {
        Some("1.3")
    }

    fn has_method(&self, method: &str) -> bool {
        METHODS.contains(&method)
    }

    async fn dispatch(&self, request: Request) -> Result<Value, Failure> {
        let args = request.args_map();
        let arg = |k: &str| args.get(k).cloned().unwrap_or(Value::Null);
        match request.method.as_deref().unwrap_or_default() {
            "echo" => Ok(arg("value")),
            "add" => {
                let a = arg("a").as_i64().unwrap_or(0);
                let b = arg("b").as_i64().unwrap_or(0);
                Ok(json!(a + b))
            }
            "sleep" => {
                let secs = arg("seconds").as_f64().unwrap_or(0.0);
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                Ok(json!("slept"))
            }
            "fail_nova" => {
                let id = arg("instance_id").as_str().unwrap_or_default().to_string();
                let mut kwargs = Map::new();
                kwargs.insert("instance_id".into(), json!(id));
                kwargs.insert("code".into(), json!(404));
                Err(Failure::nova(
                    "InstanceNotFound",
                    &format!("Instance {id} could not be found."),
                    kwargs,
                ))
            }
            "fail_value" => Err(Failure::builtin(
                "ValueError",
                arg("message").as_str().unwrap_or("bad value"),
            )),
            "not_implemented" => Err(Failure::not_implemented("")),
            "record" => {
                if let Ok(mut r) = self.records.lock() {
                    r.push(arg("tag"));
                }
                Ok(Value::Null)
            }
            "get_records" => Ok(Value::Array(
                self.records.lock().map(|r| r.clone()).unwrap_or_default(),
            )),
            "get_context" => Ok(Value::Object(request.context.clone())),
            "whoami" => Ok(json!({"server": self.server, "topic": request.topic})),
            other => Err(Failure::no_such_method(other)),
        }
    }
}

struct BaseApi;

#[async_trait]
impl Endpoint for BaseApi {
    fn namespace(&self) -> Option<&str> {
        Some("baseapi")
    }

    fn version(&self) -> Option<&str> {
        Some("1.1")
    }

    fn has_method(&self, method: &str) -> bool {
        method == "ping"
    }

    async fn dispatch(&self, request: Request) -> Result<Value, Failure> {
        let arg = request
            .args_map()
            .get("arg")
            .cloned()
            .unwrap_or(Value::Null);
        Ok(json!({"service": "test_server", "arg": arg}))
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
    let server = args.get("server").unwrap_or("test-host").to_string();
    let topics = args.all("topic");
    let transport = Transport::from_url(&url, args.options()?)?;
    let endpoint = Arc::new(TestEndpoint {
        server: server.clone(),
        records: Mutex::new(Vec::new()),
    });
    let mut builder = RpcServer::builder(transport.clone(), &server);
    for t in &topics {
        builder = builder.topic(t, vec![endpoint.clone(), Arc::new(BaseApi)]);
    }
    let srv = builder.start().await?;
    let ready = json!({"server": server, "topics": topics, "fanout_queues": srv.fanout_queues()});
    println!("READY {ready}");
    std::io::stdout().flush()?;

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    srv.stop().await;
    transport.shutdown().await;
    Ok(())
}
