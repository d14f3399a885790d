//! The RPC server: what `AMQPDriverBase.listen` declares, `RpcAMQPListener` (ack on
//! receipt, `_unique_id` dedup), `RPCDispatcher` (namespace/version/method selection,
//! call-monitor heartbeats) and `AMQPIncomingMessage.reply`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{select_all, StreamExt};
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicRejectOptions};
use serde_json::Value;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use crate::rpc::connection::{
    delete_queues, error_chain, setup_consumers, ConsumerSpec, ExchangeSpec, Outgoing, StopSignal,
};
use crate::rpc::envelope::{self, new_hex_id, EnvelopeError, Failure, Request, DUP_MSG_CHECK_SIZE};
use crate::rpc::error::RpcError;
use crate::rpc::transport::Transport;

/// An RPC endpoint: a set of methods with a namespace and a version, like an oslo
/// endpoint object with its `target`.
#[async_trait]
pub trait Endpoint: Send + Sync + 'static {
    /// `target.namespace`; `None` for the default namespace.
    fn namespace(&self) -> Option<&str> {
        None
    }

    /// `target.version`; `None` means `"1.0"`, as in oslo.
    fn version(&self) -> Option<&str> {
        None
    }

    /// `namespace in target.accepted_namespaces`.
    fn accepts_namespace(&self, namespace: Option<&str>) -> bool {
        namespace == self.namespace()
    }

    /// Whether the endpoint has `method` (`hasattr(endpoint, method)`). Methods starting
    /// with `_` are never dispatched.
    fn has_method(&self, method: &str) -> bool;

    /// Run the method; `request.method` is set. The returned value must already be in
    /// its serialized (primitive) form.
    async fn dispatch(&self, request: Request) -> Result<Value, Failure>;
}

/// `PingEndpoint` added by `rpc_ping_enabled`.
struct PingEndpoint;

#[async_trait]
impl Endpoint for PingEndpoint {
    fn has_method(&self, method: &str) -> bool {
        method == "oslo_rpc_server_ping"
    }

    async fn dispatch(&self, _request: Request) -> Result<Value, Failure> {
        Ok(Value::String("pong".into()))
    }
}

type Endpoints = Arc<Vec<Arc<dyn Endpoint>>>;

/// Builds an [`RpcServer`] for one server name and one or more topics.
pub struct RpcServerBuilder {
    transport: Transport,
    server: String,
    exchange: Option<String>,
    topics: Vec<(String, Vec<Arc<dyn Endpoint>>)>,
}

impl std::fmt::Debug for RpcServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcServerBuilder")
            .field("server", &self.server)
            .field(
                "topics",
                &self.topics.iter().map(|t| &t.0).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl RpcServerBuilder {
    /// Serve `topic` (queues `topic`, `topic.<server>`, and a fanout queue) with
    /// `endpoints`, tried in order as oslo's dispatcher does.
    pub fn topic(mut self, topic: &str, endpoints: Vec<Arc<dyn Endpoint>>) -> Self {
        self.topics.push((topic.into(), endpoints));
        self
    }

    /// Exchange of the topic queues; default `control_exchange`.
    pub fn exchange(mut self, exchange: &str) -> Self {
        self.exchange = Some(exchange.into());
        self
    }

    /// Declare and start consuming every topic; returns once all consume. Like oslo,
    /// waits for the broker as long as it takes (wrap in a timeout to bound it).
    pub async fn start(self) -> Result<RpcServer, RpcError> {
        if self.topics.is_empty() {
            return Err(RpcError::InvalidTarget(
                "a server needs at least one topic".into(),
            ));
        }
        let opts = self.transport.options().clone();
        let exchange = self
            .exchange
            .unwrap_or_else(|| opts.default.control_exchange.clone());
        let stop = StopSignal::default();
        let mut listeners = Vec::new();
        for (topic, mut endpoints) in self.topics {
            if opts.default.rpc_ping_enabled {
                endpoints.push(Arc::new(PingEndpoint));
            }
            let rabbit = self.transport.rabbit();
            let fanout_unique = new_hex_id();
            let specs = vec![
                ConsumerSpec::topic(rabbit, &exchange, &topic),
                ConsumerSpec::topic(rabbit, &exchange, &format!("{topic}.{}", self.server)),
                ConsumerSpec::fanout(rabbit, &topic, &fanout_unique),
            ];
            let fanout_queue = specs[2].queue.clone();
            let (ready_tx, ready_rx) = watch::channel(false);
            let listener = Listener {
                topic: topic.clone(),
                transport: self.transport.clone(),
                endpoints: Arc::new(endpoints),
                specs,
                dedup: VecDeque::with_capacity(DUP_MSG_CHECK_SIZE),
                obsolete: Arc::new(ObsoleteReplyQueues::default()),
                pool: Arc::new(Semaphore::new(opts.default.executor_thread_pool_size)),
                pool_size: opts.default.executor_thread_pool_size,
                stop: stop.clone(),
                ready: ready_tx,
            };
            let task = tokio::spawn(listener.run());
            listeners.push(ListenerHandle {
                topic,
                fanout_queue,
                ready: ready_rx,
                task,
            });
        }
        for l in &mut listeners {
            if l.ready.wait_for(|r| *r).await.is_err() {
                stop.stop();
                return Err(RpcError::Shutdown);
            }
        }
        Ok(RpcServer {
            server: self.server,
            listeners,
            stop,
        })
    }
}

struct ListenerHandle {
    topic: String,
    fanout_queue: String,
    ready: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

/// A running RPC server (oslo's `RPCServer` after `start()`), possibly for several
/// topics, each on its own connection.
pub struct RpcServer {
    server: String,
    listeners: Vec<ListenerHandle>,
    stop: StopSignal,
}

impl std::fmt::Debug for RpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcServer")
            .field("server", &self.server)
            .field("topics", &self.topics())
            .finish()
    }
}

impl RpcServer {
    /// Start building a server named `server` (nova's `CONF.host`).
    pub fn builder(transport: Transport, server: &str) -> RpcServerBuilder {
        RpcServerBuilder {
            transport,
            server: server.into(),
            exchange: None,
            topics: Vec::new(),
        }
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn topics(&self) -> Vec<&str> {
        self.listeners.iter().map(|l| l.topic.as_str()).collect()
    }

    /// The `<topic>_fanout_<uuid>` queue of each topic.
    pub fn fanout_queues(&self) -> Vec<&str> {
        self.listeners
            .iter()
            .map(|l| l.fanout_queue.as_str())
            .collect()
    }

    /// Whether every topic is consuming right now (false while reconnecting).
    pub fn is_consuming(&self) -> bool {
        self.listeners.iter().all(|l| *l.ready.borrow())
    }

    /// Wait until every topic consumes again (after a reconnect); false at the timeout.
    pub async fn wait_consuming(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        for l in &self.listeners {
            let mut rx = l.ready.clone();
            let res = tokio::time::timeout_at(deadline, rx.wait_for(|r| *r)).await;
            if !matches!(res, Ok(Ok(_))) {
                return false;
            }
        }
        true
    }

    /// Stop consuming, let running requests finish and reply, delete the fanout queues
    /// and close the connections.
    pub async fn stop(self) {
        self.stop.stop();
        for l in self.listeners {
            if let Err(e) = l.task.await {
                tracing::error!(topic = %l.topic, error = %e, "listener task failed");
            }
        }
    }
}

/// `ObsoleteReplyQueuesCache`: reply queues known gone (200 entries, 60 s).
#[derive(Default)]
struct ObsoleteReplyQueues {
    entries: Mutex<HashMap<String, Instant>>,
}

impl ObsoleteReplyQueues {
    const SIZE: usize = 200;
    const TTL: Duration = Duration::from_secs(60);

    fn is_valid(&self, reply_q: &str, msg_id: &str) -> bool {
        let Ok(mut e) = self.entries.lock() else {
            return true;
        };
        let now = Instant::now();
        e.retain(|_, t| now.duration_since(*t) < Self::TTL);
        if e.contains_key(reply_q) {
            tracing::warn!("{reply_q} doesn't exist, drop reply to {msg_id}");
            return false;
        }
        true
    }

    fn add(&self, reply_q: &str, msg_id: &str) {
        if let Ok(mut e) = self.entries.lock() {
            if e.len() >= Self::SIZE {
                if let Some(oldest) = e.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone()) {
                    e.remove(&oldest);
                }
            }
            e.insert(reply_q.to_string(), Instant::now());
        }
        tracing::warn!("{reply_q} doesn't exist, drop reply to {msg_id}");
    }
}

struct Listener {
    topic: String,
    transport: Transport,
    endpoints: Endpoints,
    specs: Vec<ConsumerSpec>,
    dedup: VecDeque<String>,
    obsolete: Arc<ObsoleteReplyQueues>,
    pool: Arc<Semaphore>,
    pool_size: usize,
    stop: StopSignal,
    ready: watch::Sender<bool>,
}

impl Listener {
    async fn run(mut self) {
        let connector = self.transport.inner().connector.clone();
        let t = connector.op_timeout();
        let prefetch = self.transport.rabbit().rabbit_qos_prefetch_count;
        let mut first = true;
        let mut last: Option<(lapin::Connection, lapin::Channel)> = None;
        'reconnect: loop {
            if !first && self.stop.sleep(connector.reconnect_delay()).await {
                break;
            }
            first = false;
            let conn = match connector.connect(None, &self.stop).await {
                Ok(c) => c,
                Err(_) => break,
            };
            let (channel, consumers) = match setup_consumers(&conn, &mut self.specs, prefetch, t)
                .await
            {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(topic = %self.topic, error = %error_chain(&e), "failed to declare consumers");
                    let _ = tokio::time::timeout(t, conn.close(200, "OK".into())).await;
                    continue;
                }
            };
            tracing::info!(topic = %self.topic, queues = ?self.specs.iter().map(|s| &s.queue).collect::<Vec<_>>(), "consuming");
            let _ = self.ready.send_replace(true);
            let mut deliveries = select_all(consumers);
            loop {
                tokio::select! {
                    _ = self.stop.stopped() => {
                        for i in 0..self.specs.len() {
                            let tag = (i + 1).to_string();
                            let _ = tokio::time::timeout(t, channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default())).await;
                        }
                        last = Some((conn, channel));
                        break 'reconnect;
                    }
                    d = deliveries.next() => match d {
                        Some(Ok(delivery)) => self.on_delivery(delivery, t).await,
                        Some(Err(e)) => {
                            tracing::error!(topic = %self.topic, error = %error_chain(&e), "consumer failed, reconnecting");
                            break;
                        }
                        None => {
                            tracing::warn!(topic = %self.topic, "consumers cancelled, reconnecting");
                            break;
                        }
                    }
                }
            }
            let _ = self.ready.send_replace(false);
            let _ = tokio::time::timeout(t, conn.close(200, "OK".into())).await;
        }
        let _ = self.ready.send_replace(false);
        // finish in-flight requests before closing (oslo: stop, wait, cleanup)
        let permits = u32::try_from(self.pool_size).unwrap_or(u32::MAX);
        let wait = self.pool.acquire_many(permits);
        match self.transport.options().default.graceful_shutdown() {
            None => drop(wait.await),
            Some(limit) => {
                if tokio::time::timeout(limit, wait).await.is_err() {
                    tracing::warn!(topic = %self.topic, ?limit,
                        "requests still running at the end of graceful_shutdown_timeout are abandoned");
                }
            }
        }
        if let Some((conn, channel)) = last {
            let fanout: Vec<String> = self
                .specs
                .iter()
                .filter(|s| s.is_fanout())
                .map(|s| s.queue.clone())
                .collect();
            delete_queues(&channel, &fanout, t).await;
            let _ = tokio::time::timeout(t, conn.close(200, "OK".into())).await;
        }
    }

    async fn on_delivery(&mut self, delivery: lapin::message::Delivery, t: Duration) {
        let msg = match envelope::deserialize_msg(&delivery.data) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(topic = %self.topic, error = %e, "failed to process message, skipping it");
                if let EnvelopeError::UnsupportedEnvelopeVersion(version) = &e {
                    self.reply_to_unsupported_envelope(&delivery.data, version);
                }
                if let Err(e) = op_ack(
                    t,
                    delivery.acker.reject(BasicRejectOptions { requeue: false }),
                )
                .await
                {
                    tracing::warn!(error = %e, "cannot reject message");
                }
                return;
            }
        };
        // RpcAMQPListener: ack first, skip the message if the ack fails
        if let Err(e) = op_ack(t, delivery.acker.ack(BasicAckOptions::default())).await {
            tracing::warn!(error = %e, "discarding rpc request due to failed acknowledge");
            return;
        }
        let request = Request::from_message(msg, &self.topic);
        if let Some(uid) = &request.unique_id {
            if self.dedup.contains(uid) {
                tracing::error!(unique_id = %uid, "ignoring duplicate message");
                return;
            }
            if self.dedup.len() >= DUP_MSG_CHECK_SIZE {
                self.dedup.pop_front();
            }
            self.dedup.push_back(uid.clone());
        }
        let Ok(permit) = self.pool.clone().acquire_owned().await else {
            return;
        };
        let ctx = DispatchContext {
            transport: self.transport.clone(),
            endpoints: self.endpoints.clone(),
            obsolete: self.obsolete.clone(),
        };
        let span = tracing::info_span!(
            "rpc",
            topic = %self.topic,
            method = request.method.as_deref().unwrap_or_default(),
            request_id = request.request_id().unwrap_or_default(),
            instance_uuid = request.instance_uuid().unwrap_or_default(),
            msg_id = request.msg_id.as_deref().unwrap_or_default(),
        );
        tokio::spawn(
            async move {
                ctx.process(request).await;
                drop(permit);
            }
            .instrument(span),
        );
    }

    /// The envelope version is not ours: oslo drops such a message; corral also tells
    /// a waiting caller, when the message names a reply queue.
    fn reply_to_unsupported_envelope(&self, body: &[u8], version: &str) {
        let Ok(Value::Object(outer)) = serde_json::from_slice::<Value>(body) else {
            return;
        };
        let Ok(inner) = envelope::inner_message(&outer) else {
            return;
        };
        let request = Request::from_message(inner, &self.topic);
        let (Some(msg_id), Some(reply_q)) = (request.msg_id.clone(), request.reply_q.clone())
        else {
            return;
        };
        let ctx = DispatchContext {
            transport: self.transport.clone(),
            endpoints: self.endpoints.clone(),
            obsolete: self.obsolete.clone(),
        };
        let mut failure = Failure::unsupported_envelope_version(version);
        failure.fill_traceback("deserialize_msg");
        tokio::spawn(async move {
            ctx.send_reply(&reply_q, &msg_id, Err(failure)).await;
        });
    }
}

async fn op_ack(
    t: Duration,
    fut: impl std::future::Future<Output = lapin::Result<bool>>,
) -> Result<(), String> {
    match tokio::time::timeout(t, fut).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// Python's type name of a JSON value, for `AttributeError` messages.
fn py_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// Pick the endpoint as `RPCDispatcher.dispatch` does.
// Failure is the value sent on the wire, built once per failed request: no gain in boxing
#[allow(clippy::result_large_err)]
fn select_endpoint(
    endpoints: &[Arc<dyn Endpoint>],
    request: &Request,
) -> Result<Arc<dyn Endpoint>, Failure> {
    let namespace = request.namespace_str();
    let version = request.version_str();
    let method = request.method.as_deref();
    let mut found_compatible = false;
    for ep in endpoints {
        if !ep.accepts_namespace(namespace.as_deref()) {
            continue;
        }
        let compatible = match &version {
            None => false,
            Some(v) => envelope::version_is_compatible(ep.version().unwrap_or("1.0"), v)
                .map_err(|e| e.to_failure())?,
        };
        if !compatible {
            continue;
        }
        let Some(m) = method else {
            return Err(Failure::builtin(
                "TypeError",
                "attribute name must be string, not 'NoneType'",
            ));
        };
        if ep.has_method(m) && !m.starts_with('_') {
            return Ok(ep.clone());
        }
        found_compatible = true;
    }
    match method {
        Some(m) if found_compatible => Err(Failure::no_such_method(m)),
        _ => Err(Failure::unsupported_version(version.as_deref(), method)),
    }
}

struct DispatchContext {
    transport: Transport,
    endpoints: Endpoints,
    obsolete: Arc<ObsoleteReplyQueues>,
}

impl DispatchContext {
    async fn process(&self, request: Request) {
        let started = Instant::now();
        let method = request.method.clone().unwrap_or_default();
        let msg_id = request.msg_id.clone();
        let reply_q = request.reply_q.clone();
        let heartbeat = match (&msg_id, &reply_q) {
            (Some(_), Some(_)) => request.heartbeat_interval(),
            _ => None,
        };
        tracing::debug!(method = %method, msg_id = ?msg_id, "received incoming message");

        let endpoints = self.endpoints.clone();
        let handler = tokio::spawn(async move {
            if !request.args.is_object() {
                return Err(Failure::builtin(
                    "AttributeError",
                    &format!(
                        "'{}' object has no attribute 'items'",
                        py_type(&request.args)
                    ),
                ));
            }
            let ep = select_endpoint(&endpoints, &request)?;
            ep.dispatch(request).await
        });
        tokio::pin!(handler);

        // RPCDispatcher._watchdog: heartbeats every interval while the method runs
        let mut next_beat = heartbeat.map(|i| Instant::now() + i);
        let joined = loop {
            tokio::select! {
                r = &mut handler => break r,
                _ = sleep_until_opt(next_beat) => {
                    let (Some(interval), Some(id), Some(q)) = (heartbeat, &msg_id, &reply_q) else {
                        next_beat = None;
                        continue;
                    };
                    tracing::debug!(method = %method, interval = ?interval, "sending call-monitor heartbeat for active call");
                    match self.send_heartbeat(q, id).await {
                        Ok(()) => next_beat = Some(Instant::now() + interval),
                        Err(e) => {
                            tracing::debug!(error = %error_chain(&e), "call-monitor heartbeat failed");
                            next_beat = None;
                        }
                    }
                }
            }
        };
        let result = match joined {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "endpoint task failed");
                Err(Failure::builtin("RuntimeError", "endpoint task failed"))
            }
        };
        let result = result.map_err(|mut f| {
            if f.module == "oslo_messaging.rpc.dispatcher" && method.ends_with("_ignore_errors") {
                tracing::debug!(method = %method, "method not found");
            } else {
                tracing::error!(failure = %f, "exception during message handling");
            }
            f.fill_traceback(&method);
            f.make_printable();
            f
        });
        if let (Some(id), Some(q)) = (&msg_id, &reply_q) {
            self.send_reply(q, id, result).await;
            tracing::debug!(msg_id = %id, method = %method, elapsed = ?started.elapsed(), "replied");
        }
    }

    fn publisher(&self) -> &crate::rpc::connection::Publisher {
        &self.transport.inner().publisher
    }

    async fn send_heartbeat(&self, reply_q: &str, msg_id: &str) -> Result<(), RpcError> {
        if !self.obsolete.is_valid(reply_q, msg_id) {
            return Ok(());
        }
        let body =
            envelope::serialize_msg(&envelope::reply_message(Value::Null, None, false, msg_id));
        let ex = ExchangeSpec::default_exchange(self.transport.rabbit());
        self.publisher()
            .publish(
                &Outgoing {
                    exchange: &ex,
                    routing_key: reply_q,
                    body: &body,
                    expiration: None,
                    mandatory: true,
                },
                None,
                None,
            )
            .await
    }

    /// `AMQPIncomingMessage.reply`: retry an unroutable reply every 0.25 s for
    /// `kombu_missing_consumer_retry_timeout`, then remember the queue as gone.
    async fn send_reply(&self, reply_q: &str, msg_id: &str, result: Result<Value, Failure>) {
        if !self.obsolete.is_valid(reply_q, msg_id) {
            return;
        }
        let (value, failure) = match result {
            Ok(v) => (v, None),
            Err(f) => (Value::Null, Some(f)),
        };
        let duration =
            Duration::from_secs(self.transport.rabbit().kombu_missing_consumer_retry_timeout);
        let start = Instant::now();
        let ex = ExchangeSpec::default_exchange(self.transport.rabbit());
        loop {
            if !self.obsolete.is_valid(reply_q, msg_id) {
                return;
            }
            let body = envelope::serialize_msg(&envelope::reply_message(
                value.clone(),
                failure.as_ref(),
                true,
                msg_id,
            ));
            let res = self
                .publisher()
                .publish(
                    &Outgoing {
                        exchange: &ex,
                        routing_key: reply_q,
                        body: &body,
                        expiration: None,
                        mandatory: true,
                    },
                    None,
                    None,
                )
                .await;
            match res {
                Ok(()) => return,
                Err(e @ (RpcError::Undeliverable { .. } | RpcError::ExchangeNotFound(_))) => {
                    if start.elapsed() >= duration {
                        self.obsolete.add(reply_q, msg_id);
                        tracing::error!(
                            "the reply {msg_id} failed to send after {} seconds due to a missing queue ({reply_q}), abandoning",
                            duration.as_secs()
                        );
                        return;
                    }
                    tracing::debug!(error = %e, "the reply {msg_id} could not be sent due to a missing queue ({reply_q}), retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => {
                    tracing::error!(error = %error_chain(&e), "can not send reply for message");
                    return;
                }
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending::<()>().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Ep {
        ns: Option<&'static str>,
        version: Option<&'static str>,
        methods: &'static [&'static str],
    }

    #[async_trait]
    impl Endpoint for Ep {
        fn namespace(&self) -> Option<&str> {
            self.ns
        }
        fn version(&self) -> Option<&str> {
            self.version
        }
        fn has_method(&self, method: &str) -> bool {
            self.methods.contains(&method)
        }
        async fn dispatch(&self, _request: Request) -> Result<Value, Failure> {
            Ok(json!(self.version))
        }
    }

    fn eps() -> Vec<Arc<dyn Endpoint>> {
        vec![
            Arc::new(Ep {
                ns: None,
                version: Some("6.4"),
                methods: &["pause_instance", "_private"],
            }),
            Arc::new(Ep {
                ns: Some("baseapi"),
                version: Some("1.1"),
                methods: &["ping"],
            }),
        ]
    }

    fn req(v: Value) -> Request {
        Request::from_message(v.as_object().cloned().unwrap(), "compute")
    }

    #[test]
    fn selects_by_namespace_and_version() {
        let e = eps();
        let r = req(json!({"method": "pause_instance", "version": "6.0", "args": {}}));
        assert_eq!(select_endpoint(&e, &r).unwrap().version(), Some("6.4"));
        let r = req(json!({"method": "ping", "namespace": "baseapi", "version": "1.0"}));
        assert_eq!(select_endpoint(&e, &r).unwrap().version(), Some("1.1"));
    }

    #[test]
    fn no_such_method_and_unsupported_version() {
        let e = eps();
        let f = select_endpoint(&e, &req(json!({"method": "nope", "version": "6.0"})))
            .err()
            .unwrap();
        assert_eq!(f.class, "NoSuchMethod");
        // private methods are refused like missing ones
        let f = select_endpoint(&e, &req(json!({"method": "_private", "version": "6.0"})))
            .err()
            .unwrap();
        assert_eq!(f.class, "NoSuchMethod");
        let f = select_endpoint(
            &e,
            &req(json!({"method": "pause_instance", "version": "7.0"})),
        )
        .err()
        .unwrap();
        assert_eq!(f.class, "UnsupportedVersion");
        assert_eq!(
            f.message,
            "Endpoint does not support RPC version 7.0. Attempted method: pause_instance"
        );
        // unknown namespace
        let f = select_endpoint(
            &e,
            &req(json!({"method": "ping", "namespace": "x", "version": "1.0"})),
        )
        .err()
        .unwrap();
        assert_eq!(f.class, "UnsupportedVersion");
        // absent version is 1.0: incompatible with 6.4
        let f = select_endpoint(&e, &req(json!({"method": "pause_instance"})))
            .err()
            .unwrap();
        assert_eq!(
            f.message,
            "Endpoint does not support RPC version 1.0. Attempted method: pause_instance"
        );
        let f = select_endpoint(
            &e,
            &req(json!({"method": "pause_instance", "version": null})),
        )
        .err()
        .unwrap();
        assert_eq!(
            f.message,
            "Endpoint does not support RPC version None. Attempted method: pause_instance"
        );
        let f = select_endpoint(
            &e,
            &req(json!({"method": "pause_instance", "version": "x.0"})),
        )
        .err()
        .unwrap();
        assert_eq!(
            (f.module.as_str(), f.class.as_str()),
            ("builtins", "ValueError")
        );
    }

    #[test]
    fn obsolete_cache() {
        let c = ObsoleteReplyQueues::default();
        assert!(c.is_valid("reply_a", "m"));
        c.add("reply_a", "m");
        assert!(!c.is_valid("reply_a", "m"));
        for i in 0..250 {
            c.add(&format!("q{i}"), "m");
        }
        assert!(c.entries.lock().unwrap().len() <= ObsoleteReplyQueues::SIZE);
    }
}
