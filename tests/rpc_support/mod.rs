//! Helpers of the live tests: broker detection and a test endpoint.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use corral::rpc::{Endpoint, Failure, Request, RpcOptions, RpcServer, Transport};
use serde_json::{json, Map, Value};

pub fn broker_url() -> String {
    std::env::var("RABBIT_URL").unwrap_or_else(|_| "rabbit://guest:guest@127.0.0.1:5672/".into())
}

/// Whether the tests run in CI (`CI=true`), where a missing piece is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Skip the test with `reason` printed, or fail it in CI.
pub fn skip_or_fail(reason: &str, ci: bool) {
    if ci {
        panic!("cannot run the RabbitMQ tests in CI: {reason}");
    }
    eprintln!("skipping: {reason}");
}

/// The broker url, or `None` (with the reason printed) when nothing listens; in CI
/// (`CI=true`) a missing broker fails the test instead.
pub fn live_broker() -> Option<String> {
    live_broker_at(&broker_url(), in_ci())
}

pub fn live_broker_at(url: &str, ci: bool) -> Option<String> {
    let parsed = match corral::rpc::TransportUrl::parse(url) {
        Ok(p) => p,
        Err(e) => {
            skip_or_fail(&format!("bad RABBIT_URL {url}: {e}"), ci);
            return None;
        }
    };
    let Some(b) = parsed.brokers().into_iter().next() else {
        skip_or_fail(&format!("no broker in RABBIT_URL {url}"), ci);
        return None;
    };
    let addr = format!("{}:{}", b.host, b.port);
    let ok = std::net::ToSocketAddrs::to_socket_addrs(&addr)
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    if ok {
        Some(url.to_string())
    } else {
        skip_or_fail(
            &format!("no RabbitMQ at {addr} (start it with `rabbitmq-server -detached`)"),
            ci,
        );
        None
    }
}

pub fn uniq(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

pub fn transport(url: &str, rabbit: &[(&str, &str)], default: &[(&str, &str)]) -> Transport {
    let mut opts = RpcOptions::default();
    for (k, v) in rabbit {
        opts.rabbit.set(k, v).expect("valid rabbit option");
    }
    let d: std::collections::HashMap<String, String> = default
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut dflt = corral::rpc::DefaultOptions::from_pairs(&d).expect("valid default options");
    if !d.contains_key("control_exchange") {
        dflt.control_exchange = "nova".into();
    }
    opts.default = dflt;
    Transport::from_url(url, opts).expect("transport")
}

pub fn ctx() -> Map<String, Value> {
    json!({"request_id": "req-00000000-0000-0000-0000-000000000001", "is_admin": true})
        .as_object()
        .cloned()
        .unwrap_or_default()
}

pub fn args(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

#[derive(Default)]
pub struct TestEndpoint {
    pub records: Mutex<Vec<Value>>,
}

#[async_trait]
impl Endpoint for TestEndpoint {
    fn version(&self) -> Option<&str> {
        Some("6.4")
    }

    fn has_method(&self, method: &str) -> bool {
        matches!(
            method,
            "add"
                | "sleep"
                | "fail_nova"
                | "record"
                | "get_records"
                | "whoami"
                | "_private"
                | "panic"
        )
    }

    async fn dispatch(&self, request: Request) -> Result<Value, Failure> {
        let a = request.args_map();
        match request.method.as_deref().unwrap_or_default() {
            "add" => Ok(json!(
                a["a"].as_i64().unwrap_or(0) + a["b"].as_i64().unwrap_or(0)
            )),
            "sleep" => {
                tokio::time::sleep(Duration::from_secs_f64(
                    a["seconds"].as_f64().unwrap_or(0.0),
                ))
                .await;
                Ok(json!("slept"))
            }
            "fail_nova" => Err(Failure::nova(
                "InstanceNotFound",
                "Instance x could not be found.",
                args(json!({"instance_id": "x", "code": 404})),
            )),
            "record" => {
                self.records
                    .lock()
                    .unwrap()
                    .push(a.get("tag").cloned().unwrap_or(Value::Null));
                Ok(Value::Null)
            }
            "get_records" => Ok(Value::Array(self.records.lock().unwrap().clone())),
            "whoami" => Ok(json!(request.topic)),
            "panic" => panic!("endpoint bug"),
            _ => Ok(Value::Null),
        }
    }
}

pub async fn start_server(
    t: &Transport,
    server: &str,
    topics: &[&str],
) -> (RpcServer, Arc<TestEndpoint>) {
    let ep = Arc::new(TestEndpoint::default());
    let mut b = RpcServer::builder(t.clone(), server);
    for topic in topics {
        b = b.topic(topic, vec![ep.clone() as Arc<dyn Endpoint>]);
    }
    let srv = tokio::time::timeout(Duration::from_secs(30), b.start())
        .await
        .expect("server start timed out")
        .expect("server start");
    (srv, ep)
}

/// A raw lapin connection for tapping and injecting messages.
pub async fn raw_channel() -> (lapin::Connection, lapin::Channel) {
    let url = corral::rpc::TransportUrl::parse(&broker_url()).unwrap();
    let b = url.brokers().remove(0);
    let amqp = format!(
        "amqp://{}:{}@{}:{}/%2f",
        b.username, b.password, b.host, b.port
    );
    let conn = lapin::Connection::connect(&amqp, lapin::ConnectionProperties::default())
        .await
        .expect("raw connect");
    let ch = conn.create_channel().await.expect("raw channel");
    (conn, ch)
}

/// Topic queues outlive their servers (as with oslo); tests remove theirs.
pub async fn delete_topic_queues(topic: &str, servers: &[&str]) {
    let (conn, ch) = raw_channel().await;
    let mut names = vec![topic.to_string()];
    names.extend(servers.iter().map(|s| format!("{topic}.{s}")));
    for n in names {
        let _ = ch
            .queue_delete(
                n.as_str().into(),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await;
    }
    let _ = conn.close(200, "OK".into()).await;
}
