//! Broker connections: failover across hosts, TLS through openssl, oslo's reconnect
//! backoff, the topology oslo declares, and a confirmed publisher whose every broker
//! round trip is bounded by a timeout.
//!
//! Long because reconnecting, declaring and publishing share one connection
//! state machine; splitting it would spread oslo's reconnect rules over
//! several files.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::uri::{
    AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo, SASLMechanism,
};
use lapin::{
    AsyncTcpStream, BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
    ExchangeKind,
};
use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode, SslVersion};
use rand::seq::SliceRandom;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::rpc::error::RpcError;
use crate::rpc::options::{FailoverStrategy, LoginMethod, RabbitOptions, RpcOptions};
use crate::rpc::url::{BrokerAddress, TransportUrl};

/// How long TCP connect, TLS and the AMQP handshake may take together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest AMQP frame this side accepts (the lower of this and the broker's is
/// used). lapin keeps a receive and a send buffer of 32 frames per connection,
/// written through and so resident: with RabbitMQ's 128 KiB that was 8 MiB a
/// connection, most of the daemon's memory in Nova mode. 16 KiB frames make it
/// 1 MiB; a larger message is only split into more frames.
const FRAME_MAX: u32 = 16 * 1024;

/// Run one broker round trip under a timeout.
pub(crate) async fn op<T>(
    what: &'static str,
    timeout: Duration,
    fut: impl Future<Output = lapin::Result<T>>,
) -> Result<T, RpcError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(RpcError::amqp(what, e)),
        Err(_) => Err(RpcError::OperationTimeout { op: what, timeout }),
    }
}

/// An AMQP field value as py-amqp encodes a Python int (`I` when it fits 32 bits).
fn py_int(v: i64) -> AMQPValue {
    match i32::try_from(v) {
        Ok(i) => AMQPValue::LongInt(i),
        Err(_) => AMQPValue::LongLongInt(v),
    }
}

/// `_get_queue_arguments`, for the non-stream cases.
pub(crate) fn queue_arguments(rabbit: &RabbitOptions, ttl_secs: u32, quorum: bool) -> FieldTable {
    let mut args = FieldTable::default();
    if rabbit.rabbit_ha_queues {
        args.insert("x-ha-policy".into(), AMQPValue::LongString("all".into()));
    }
    if quorum {
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        if rabbit.rabbit_quorum_delivery_limit != 0 {
            args.insert(
                "x-delivery-limit".into(),
                py_int(rabbit.rabbit_quorum_delivery_limit),
            );
        }
        if rabbit.rabbit_quorum_max_memory_length != 0 {
            args.insert(
                "x-max-in-memory-length".into(),
                py_int(rabbit.rabbit_quorum_max_memory_length),
            );
        }
        if rabbit.rabbit_quorum_max_memory_bytes != 0 {
            args.insert(
                "x-max-in-memory-bytes".into(),
                py_int(rabbit.rabbit_quorum_max_memory_bytes),
            );
        }
    }
    if ttl_secs > 0 {
        args.insert("x-expires".into(), py_int(i64::from(ttl_secs) * 1000));
    }
    args
}

/// An exchange as oslo's kombu `Exchange` describes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ExchangeSpec {
    pub name: String,
    pub kind: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    /// Never declared (the default exchange of replies).
    pub passive: bool,
}

impl ExchangeSpec {
    /// The control exchange (`topic_send`, topic consumers).
    pub fn topic(rabbit: &RabbitOptions, name: &str) -> Self {
        ExchangeSpec {
            name: name.into(),
            kind: ExchangeKind::Topic,
            durable: rabbit.durable(),
            auto_delete: rabbit.amqp_auto_delete,
            passive: false,
        }
    }

    /// `<topic>_fanout` (`fanout_send`, fanout consumers).
    pub fn fanout(rabbit: &RabbitOptions, topic: &str) -> Self {
        ExchangeSpec {
            name: format!("{topic}_fanout"),
            kind: ExchangeKind::Fanout,
            durable: rabbit.rabbit_transient_quorum_queue,
            auto_delete: true,
            passive: false,
        }
    }

    /// The default exchange `""` that replies go to (`direct_send`).
    pub fn default_exchange(rabbit: &RabbitOptions) -> Self {
        ExchangeSpec {
            name: String::new(),
            kind: ExchangeKind::Direct,
            durable: rabbit.rabbit_transient_quorum_queue,
            auto_delete: true,
            passive: true,
        }
    }

    async fn declare(&self, channel: &Channel, durable: bool, t: Duration) -> Result<(), RpcError> {
        op(
            "exchange.declare",
            t,
            channel.exchange_declare(
                self.name.as_str().into(),
                self.kind.clone(),
                ExchangeDeclareOptions {
                    passive: false,
                    durable,
                    auto_delete: self.auto_delete,
                    internal: false,
                    nowait: false,
                },
                FieldTable::default(),
            ),
        )
        .await
    }
}

/// One oslo `Consumer`: an exchange, a queue, the binding, and how to consume it.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerSpec {
    pub exchange: ExchangeSpec,
    pub queue: String,
    pub routing_key: String,
    pub queue_durable: bool,
    pub queue_auto_delete: bool,
    pub arguments: FieldTable,
    pub consumer_arguments: FieldTable,
    /// Set after `PRECONDITION_FAILED - inequivalent arg 'durable'`: oslo's
    /// `_declare_fallback_nondurable`.
    pub fallback_nondurable: bool,
}

fn consumer_arguments(rabbit: &RabbitOptions) -> FieldTable {
    let mut t = FieldTable::default();
    if rabbit.enable_cancel_on_failover {
        t.insert("x-cancel-on-ha-failover".into(), AMQPValue::Boolean(true));
    }
    t
}

impl ConsumerSpec {
    /// `declare_topic_consumer`: queue `topic` bound to the control exchange.
    pub fn topic(rabbit: &RabbitOptions, exchange: &str, topic: &str) -> Self {
        ConsumerSpec {
            exchange: ExchangeSpec::topic(rabbit, exchange),
            queue: topic.into(),
            routing_key: topic.into(),
            queue_durable: rabbit.durable(),
            queue_auto_delete: rabbit.amqp_auto_delete,
            arguments: queue_arguments(rabbit, 0, rabbit.rabbit_quorum_queue),
            consumer_arguments: consumer_arguments(rabbit),
            fallback_nondurable: false,
        }
    }

    /// `declare_fanout_consumer`: queue `<topic>_fanout_<unique>` on `<topic>_fanout`.
    pub fn fanout(rabbit: &RabbitOptions, topic: &str, unique: &str) -> Self {
        ConsumerSpec {
            exchange: ExchangeSpec::fanout(rabbit, topic),
            queue: format!("{topic}_fanout_{unique}"),
            routing_key: topic.into(),
            queue_durable: rabbit.rabbit_transient_quorum_queue,
            queue_auto_delete: false,
            arguments: queue_arguments(
                rabbit,
                rabbit.rabbit_transient_queues_ttl,
                rabbit.rabbit_transient_quorum_queue,
            ),
            consumer_arguments: consumer_arguments(rabbit),
            fallback_nondurable: false,
        }
    }

    /// `declare_direct_consumer`: the reply queue, on the default exchange, unbound.
    pub fn direct(rabbit: &RabbitOptions, queue: &str) -> Self {
        ConsumerSpec {
            exchange: ExchangeSpec {
                name: String::new(),
                kind: ExchangeKind::Direct,
                durable: rabbit.rabbit_transient_quorum_queue,
                auto_delete: false,
                passive: false,
            },
            queue: queue.into(),
            routing_key: String::new(),
            queue_durable: rabbit.rabbit_transient_quorum_queue,
            queue_auto_delete: false,
            arguments: queue_arguments(
                rabbit,
                rabbit.rabbit_transient_queues_ttl,
                rabbit.rabbit_transient_quorum_queue,
            ),
            consumer_arguments: consumer_arguments(rabbit),
            fallback_nondurable: false,
        }
    }

    pub fn is_fanout(&self) -> bool {
        self.exchange.kind == ExchangeKind::Fanout
    }

    /// kombu `Queue.declare`: exchange (when named), queue, binding (when named).
    async fn declare(&self, channel: &Channel, t: Duration) -> Result<(), RpcError> {
        let (ex_durable, q_durable) = if self.fallback_nondurable {
            (false, false)
        } else {
            (self.exchange.durable, self.queue_durable)
        };
        if !self.exchange.name.is_empty() {
            let mut ex = self.exchange.clone();
            if self.fallback_nondurable {
                // oslo rebuilds the exchange with auto_delete = queue_auto_delete
                ex.auto_delete = self.queue_auto_delete;
            }
            ex.declare(channel, ex_durable, t).await?;
        }
        op(
            "queue.declare",
            t,
            channel.queue_declare(
                self.queue.as_str().into(),
                QueueDeclareOptions {
                    passive: false,
                    durable: q_durable,
                    exclusive: false,
                    auto_delete: self.queue_auto_delete,
                    nowait: false,
                },
                self.arguments.clone(),
            ),
        )
        .await?;
        if !self.exchange.name.is_empty() {
            op(
                "queue.bind",
                t,
                channel.queue_bind(
                    self.queue.as_str().into(),
                    self.exchange.name.as_str().into(),
                    self.routing_key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await?;
        }
        Ok(())
    }
}

/// Opens connections to the brokers of a transport url.
pub(crate) struct Connector {
    rabbit: RabbitOptions,
    brokers: Vec<BrokerAddress>,
    vhost: String,
    next: AtomicUsize,
    tls: Option<SslConnector>,
    verify_hostname: bool,
    op_timeout: Duration,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("brokers", &self.brokers)
            .field("vhost", &self.vhost)
            .field("ssl", &self.tls.is_some())
            .finish()
    }
}

fn build_tls(rabbit: &RabbitOptions) -> Result<SslConnector, RpcError> {
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(RpcError::Tls)?;
    if rabbit.ssl_ca_file.is_empty() {
        // py-amqp: PROTOCOL_TLS_CLIENT context, default CAs, no hostname check
        b.set_verify(SslVerifyMode::PEER);
    } else {
        // only the configured CA, as ssl.SSLContext.load_verify_locations
        let store = openssl::x509::store::X509StoreBuilder::new()
            .map_err(RpcError::Tls)?
            .build();
        b.set_cert_store(store);
        b.set_ca_file(&rabbit.ssl_ca_file).map_err(RpcError::Tls)?;
        b.set_verify(SslVerifyMode::PEER);
    }
    if !rabbit.ssl_cert_file.is_empty() {
        b.set_certificate_chain_file(&rabbit.ssl_cert_file)
            .map_err(RpcError::Tls)?;
        let key = if rabbit.ssl_key_file.is_empty() {
            &rabbit.ssl_cert_file
        } else {
            &rabbit.ssl_key_file
        };
        b.set_private_key_file(key, SslFiletype::PEM)
            .map_err(RpcError::Tls)?;
    }
    let version = match rabbit.ssl_version.to_ascii_lowercase().as_str() {
        "" | "sslv23" => None,
        "tlsv1" => Some(SslVersion::TLS1),
        "tlsv1_1" => Some(SslVersion::TLS1_1),
        "tlsv1_2" => Some(SslVersion::TLS1_2),
        _ => {
            return Err(RpcError::Options(crate::rpc::OptionsError::InvalidChoice {
                name: "ssl_version".into(),
                value: rabbit.ssl_version.clone(),
                choices: "TLSv1, TLSv1_1, TLSv1_2, SSLv23",
            }))
        }
    };
    if let Some(v) = version {
        b.set_min_proto_version(Some(v)).map_err(RpcError::Tls)?;
        b.set_max_proto_version(Some(v)).map_err(RpcError::Tls)?;
    }
    Ok(b.build())
}

fn connection_name() -> String {
    let argv0 = std::env::args()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "corral".into());
    format!(
        "{argv0}:{}:{}",
        std::process::id(),
        uuid::Uuid::new_v4().hyphenated()
    )
}

type TlsStream = AsyncTcpStream<<async_rs::Tokio as async_rs::traits::Reactor>::TcpStream>;

async fn open_stream(
    runtime: async_rs::TokioRuntime,
    host: String,
    port: u16,
    tls: Option<(SslConnector, bool)>,
) -> lapin::Result<TlsStream> {
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .collect();
    let stream = AsyncTcpStream::connect(&runtime, addrs).await?;
    let Some((connector, verify_hostname)) = tls else {
        return Ok(stream);
    };
    let AsyncTcpStream::Plain(plain) = stream else {
        return Err(std::io::Error::other("unexpected stream kind before tls").into());
    };
    let mut cfg = connector.configure().map_err(std::io::Error::other)?;
    cfg.set_verify_hostname(verify_hostname);
    cfg.set_use_server_name_indication(verify_hostname);
    let ssl = cfg.into_ssl(&host).map_err(std::io::Error::other)?;
    let mut s = async_openssl::SslStream::new(ssl, plain).map_err(std::io::Error::other)?;
    Pin::new(&mut s)
        .connect()
        .await
        .map_err(std::io::Error::other)?;
    Ok(AsyncTcpStream::Openssl(s))
}

impl Connector {
    pub fn new(url: &TransportUrl, opts: &RpcOptions) -> Result<Self, RpcError> {
        let rabbit = opts.rabbit.with_url_query(url)?;
        let mut brokers = url.brokers();
        if brokers.len() > 1 {
            brokers.shuffle(&mut rand::rng());
        }
        let tls = if rabbit.ssl {
            Some(build_tls(&rabbit)?)
        } else {
            None
        };
        let verify_hostname = !rabbit.ssl_ca_file.is_empty() && url.hosts.len() == 1;
        let op_timeout = match rabbit.heartbeat_timeout_threshold {
            0 => Duration::from_secs(60),
            t => Duration::from_secs(u64::from(t)),
        };
        Ok(Connector {
            rabbit,
            brokers,
            vhost: url.vhost().to_string(),
            next: AtomicUsize::new(0),
            tls,
            verify_hostname,
            op_timeout,
        })
    }

    /// The effective `[oslo_messaging_rabbit]` options (config plus url query).
    pub fn rabbit(&self) -> &RabbitOptions {
        &self.rabbit
    }

    /// Upper bound of one broker round trip.
    pub fn op_timeout(&self) -> Duration {
        self.op_timeout
    }

    fn next_broker(&self) -> BrokerAddress {
        let n = self.brokers.len().max(1);
        let i = match self.rabbit.kombu_failover_strategy {
            FailoverStrategy::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % n,
            FailoverStrategy::Shuffle => rand::random_range(0..n),
        };
        self.brokers
            .get(i)
            .cloned()
            .unwrap_or_else(|| BrokerAddress {
                host: "localhost".into(),
                port: crate::rpc::url::DEFAULT_PORT,
                username: "guest".into(),
                password: "guest".into(),
            })
    }

    async fn connect_to(&self, broker: &BrokerAddress) -> Result<Connection, RpcError> {
        let mechanism = match self.rabbit.rabbit_login_method {
            LoginMethod::Plain => SASLMechanism::Plain,
            LoginMethod::AmqPlain => SASLMechanism::AMQPlain,
            LoginMethod::External => SASLMechanism::External,
            LoginMethod::RabbitCrDemo => SASLMechanism::RabbitCrDemo,
        };
        let uri = AMQPUri {
            scheme: if self.tls.is_some() {
                AMQPScheme::AMQPS
            } else {
                AMQPScheme::AMQP
            },
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: broker.username.clone(),
                    password: broker.password.clone(),
                },
                host: broker.host.clone(),
                port: broker.port,
            },
            vhost: self.vhost.clone(),
            query: AMQPQueryString {
                heartbeat: Some(self.rabbit.heartbeat_timeout_threshold),
                auth_mechanism: Some(mechanism),
                frame_max: Some(FRAME_MAX),
                ..Default::default()
            },
        };
        let props = ConnectionProperties::default().with_connection_name(connection_name().into());
        let tls = self.tls.clone().map(|c| (c, self.verify_hostname));
        let runtime = async_rs::Runtime::tokio_current();
        let fut = Connection::connector(
            uri,
            runtime,
            async move |uri: AMQPUri, runtime: async_rs::TokioRuntime| {
                open_stream(
                    runtime,
                    uri.authority.host.clone(),
                    uri.authority.port,
                    tls.clone(),
                )
                .await
            },
            props,
        );
        let wrap = |source: RpcError| RpcError::Connect {
            host: broker.host.clone(),
            port: broker.port,
            source: Box::new(source),
        };
        op("connect", CONNECT_TIMEOUT, fut).await.map_err(wrap)
    }

    /// One attempt on the next broker of the failover list.
    pub async fn connect_once(&self) -> Result<Connection, RpcError> {
        let broker = self.next_broker();
        let conn = self.connect_to(&broker).await?;
        tracing::info!(broker = ?broker, vhost = %self.vhost, "connected to amqp server");
        Ok(conn)
    }

    /// Connect with oslo's backoff (`ensure_connection`): intervals
    /// `rabbit_retry_interval`, `+rabbit_retry_backoff`, ... up to `rabbit_interval_max`,
    /// moving to the next broker on every attempt. `retry: None` retries forever.
    pub async fn connect(
        &self,
        retry: Option<u32>,
        stop: &StopSignal,
    ) -> Result<Connection, RpcError> {
        let mut intervals = self.rabbit.retry_intervals();
        let mut attempt: u32 = 0;
        loop {
            if stop.is_stopped() {
                return Err(RpcError::Shutdown);
            }
            match self.connect_once().await {
                Ok(c) => return Ok(c),
                Err(e) => {
                    if retry.is_some_and(|max| attempt >= max) {
                        return Err(RpcError::RetriesExhausted {
                            attempts: attempt + 1,
                            source: Box::new(e),
                        });
                    }
                    let wait = intervals.next().unwrap_or(Duration::from_secs(1));
                    tracing::error!(error = %error_chain(&e), retry_in = ?wait, "amqp server is unreachable");
                    if stop.sleep(wait).await {
                        return Err(RpcError::Shutdown);
                    }
                    attempt += 1;
                }
            }
        }
    }

    /// The pause before reconnecting after a lost connection (`kombu_reconnect_delay`
    /// plus a random `kombu_reconnect_splay`).
    pub fn reconnect_delay(&self) -> Duration {
        let mut d = self.rabbit.reconnect_delay();
        if self.rabbit.kombu_reconnect_splay > 0.0 {
            d +=
                Duration::from_secs_f64(rand::random_range(0.0..self.rabbit.kombu_reconnect_splay));
        }
        d
    }
}

/// "a: b: c" for logs.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A shutdown flag that sleeping tasks can wait on.
#[derive(Debug, Clone)]
pub(crate) struct StopSignal {
    tx: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for StopSignal {
    fn default() -> Self {
        let (tx, _rx) = tokio::sync::watch::channel(false);
        StopSignal { tx: Arc::new(tx) }
    }
}

impl StopSignal {
    pub fn stop(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_stopped(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once stopped.
    pub async fn stopped(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }

    /// Sleep; true when interrupted by a stop.
    pub async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => self.is_stopped(),
            _ = self.stopped() => true,
        }
    }
}

/// Declare `specs` on a fresh channel (qos first, as oslo sets it on channel creation)
/// and start consuming them with tags `1`, `2`, ... Retries on a new channel after a
/// durable mismatch, with that consumer switched to non-durable.
pub(crate) async fn setup_consumers(
    conn: &Connection,
    specs: &mut [ConsumerSpec],
    prefetch: u16,
    t: Duration,
) -> Result<(Channel, Vec<lapin::Consumer>), RpcError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let channel = op("channel.open", t, conn.create_channel()).await?;
        if prefetch > 0 {
            op(
                "basic.qos",
                t,
                channel.basic_qos(prefetch, BasicQosOptions { global: false }),
            )
            .await?;
        }
        let mut failed = None;
        for (i, spec) in specs.iter().enumerate() {
            match spec.declare(&channel, t).await {
                Ok(()) => {}
                Err(e)
                    if e.is_durable_mismatch()
                        && !spec.fallback_nondurable
                        && attempts <= specs.len() =>
                {
                    tracing::warn!(queue = %spec.queue, error = %error_chain(&e),
                        "queue could not be declared probably because of conflicting configurations, retrying non durable");
                    failed = Some(i);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(i) = failed {
            if let Some(s) = specs.get_mut(i) {
                s.fallback_nondurable = true;
            }
            continue;
        }
        let mut consumers = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let tag: ShortString = (i + 1).to_string().into();
            let c = op(
                "basic.consume",
                t,
                channel.basic_consume(
                    spec.queue.as_str().into(),
                    tag,
                    BasicConsumeOptions {
                        no_local: false,
                        no_ack: false,
                        exclusive: false,
                        nowait: false,
                    },
                    spec.consumer_arguments.clone(),
                ),
            )
            .await?;
            consumers.push(c);
        }
        return Ok((channel, consumers));
    }
}

/// Delete queues on close, as oslo does for its fanout queues (`Connection.close`).
pub(crate) async fn delete_queues(channel: &Channel, queues: &[String], t: Duration) {
    for q in queues {
        if let Err(e) = op(
            "queue.delete",
            t,
            channel.queue_delete(q.as_str().into(), QueueDeleteOptions::default()),
        )
        .await
        {
            tracing::debug!(queue = %q, error = %error_chain(&e), "cannot delete queue");
        }
    }
}

/// A message to publish.
#[derive(Debug)]
pub(crate) struct Outgoing<'a> {
    pub exchange: &'a ExchangeSpec,
    pub routing_key: &'a str,
    pub body: &'a [u8],
    /// AMQP `expiration`, set on call requests to the call timeout.
    pub expiration: Option<Duration>,
    /// Set for replies (`direct_mandatory_flag`).
    pub mandatory: bool,
}

struct SendState {
    conn: Connection,
    channel: Channel,
    declared: HashSet<String>,
}

/// The sending side: one connection and one confirm-mode channel shared by all
/// publishers of a transport, re-established on failure.
pub(crate) struct Publisher {
    connector: Arc<Connector>,
    state: Mutex<Option<SendState>>,
    nondurable: std::sync::Mutex<HashSet<String>>,
    closed: AtomicBool,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

/// AMQP properties of every oslo message (kombu defaults + json serializer).
pub(crate) fn message_properties(expiration: Option<Duration>) -> BasicProperties {
    let mut p = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_headers(FieldTable::default())
        .with_delivery_mode(2)
        .with_priority(0);
    if let Some(e) = expiration {
        p = p.with_expiration(e.as_millis().to_string().into());
    }
    p
}

impl Publisher {
    pub fn new(connector: Arc<Connector>) -> Self {
        Publisher {
            connector,
            state: Mutex::new(None),
            nondurable: std::sync::Mutex::new(HashSet::new()),
            closed: AtomicBool::new(false),
        }
    }

    async fn open_channel(&self, conn: &Connection) -> Result<Channel, RpcError> {
        let t = self.connector.op_timeout();
        let channel = op("channel.open", t, conn.create_channel()).await?;
        op(
            "confirm.select",
            t,
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        Ok(channel)
    }

    fn is_nondurable(&self, name: &str) -> bool {
        self.nondurable
            .lock()
            .map(|s| s.contains(name))
            .unwrap_or(false)
    }

    fn mark_nondurable(&self, name: &str) {
        if let Ok(mut s) = self.nondurable.lock() {
            s.insert(name.to_string());
        }
    }

    async fn try_publish(&self, out: &Outgoing<'_>) -> Result<(), RpcError> {
        let t = self.connector.op_timeout();
        let channel = {
            let mut guard = self.state.lock().await;
            let usable = guard
                .as_ref()
                .is_some_and(|s| s.channel.status().connected() && s.conn.status().connected());
            if !usable {
                if let Some(old) = guard.take() {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        old.conn.close(200, "OK".into()),
                    )
                    .await;
                }
                let conn = self.connector.connect_once().await?;
                let channel = self.open_channel(&conn).await?;
                *guard = Some(SendState {
                    conn,
                    channel,
                    declared: HashSet::new(),
                });
            }
            let Some(st) = guard.as_mut() else {
                return Err(RpcError::Shutdown);
            };
            let ex = out.exchange;
            if !ex.passive && !ex.name.is_empty() && !st.declared.contains(&ex.name) {
                let durable = ex.durable && !self.is_nondurable(&ex.name);
                match ex.declare(&st.channel, durable, t).await {
                    Ok(()) => {}
                    Err(e) if durable && e.is_durable_mismatch() => {
                        tracing::warn!(exchange = %ex.name, "force creating a non durable exchange");
                        self.mark_nondurable(&ex.name);
                        st.channel = self.open_channel(&st.conn).await?;
                        st.declared.clear();
                        ex.declare(&st.channel, false, t).await?;
                    }
                    Err(e) => return Err(e),
                }
                st.declared.insert(ex.name.clone());
            }
            st.channel.clone()
        };
        let confirm = op(
            "basic.publish",
            t,
            channel.basic_publish(
                out.exchange.name.as_str().into(),
                out.routing_key.into(),
                BasicPublishOptions {
                    mandatory: out.mandatory,
                    immediate: false,
                },
                out.body,
                message_properties(out.expiration),
            ),
        )
        .await?;
        let confirmation = match op("publisher confirm", t, confirm).await {
            Ok(c) => c,
            Err(e) if out.exchange.passive && e.amqp_code() == Some(404) => {
                return Err(RpcError::ExchangeNotFound(out.exchange.name.clone()))
            }
            Err(e) => return Err(e),
        };
        match confirmation {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(_)) => Err(RpcError::Undeliverable {
                exchange: out.exchange.name.clone(),
                routing_key: out.routing_key.to_string(),
            }),
            Confirmation::Nack(_) => Err(RpcError::Nacked),
        }
    }

    async fn invalidate(&self) {
        let mut guard = self.state.lock().await;
        if let Some(st) = guard.as_ref() {
            if !st.channel.status().connected() || !st.conn.status().connected() {
                *guard = None;
            }
        }
    }

    /// Publish with oslo's `ensure` semantics: on a connection or channel error wait
    /// (`kombu_reconnect_delay`, then the retry intervals), reconnect and publish again;
    /// `retry: None` retries until `deadline`, or forever without one. Unroutable
    /// mandatory messages are not retried here.
    pub async fn publish(
        &self,
        out: &Outgoing<'_>,
        retry: Option<u32>,
        deadline: Option<Instant>,
    ) -> Result<(), RpcError> {
        let mut intervals = self.connector.rabbit().retry_intervals();
        let mut attempt: u32 = 0;
        loop {
            if self.closed.load(Ordering::Relaxed) {
                return Err(RpcError::Shutdown);
            }
            let res = match deadline {
                Some(d) => match tokio::time::timeout_at(d, self.try_publish(out)).await {
                    Ok(r) => r,
                    Err(_) => Err(RpcError::OperationTimeout {
                        op: "publish",
                        timeout: self.connector.op_timeout(),
                    }),
                },
                None => self.try_publish(out).await,
            };
            let err = match res {
                Ok(()) => return Ok(()),
                Err(e @ (RpcError::Undeliverable { .. } | RpcError::ExchangeNotFound(_))) => {
                    return Err(e)
                }
                Err(e) => e,
            };
            self.invalidate().await;
            if retry.is_some_and(|max| attempt >= max)
                || deadline.is_some_and(|d| Instant::now() >= d)
            {
                return Err(RpcError::RetriesExhausted {
                    attempts: attempt + 1,
                    source: Box::new(err),
                });
            }
            let wait = if attempt == 0 {
                self.connector.reconnect_delay()
            } else {
                intervals.next().unwrap_or(Duration::from_secs(1))
            };
            tracing::error!(exchange = %out.exchange.name, routing_key = %out.routing_key,
                error = %error_chain(&err), retry_in = ?wait, "failed to publish message");
            let sleep_until = Instant::now() + wait;
            match deadline {
                Some(d) if d < sleep_until => tokio::time::sleep_until(d).await,
                _ => tokio::time::sleep_until(sleep_until).await,
            }
            attempt += 1;
        }
    }

    /// Close the sending connection.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let mut guard = self.state.lock().await;
        if let Some(st) = guard.take() {
            let _ =
                tokio::time::timeout(Duration::from_secs(2), st.conn.close(200, "OK".into())).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rabbit(kv: &[(&str, &str)]) -> RabbitOptions {
        let mut r = RabbitOptions::default();
        for (k, v) in kv {
            r.set(k, v).unwrap();
        }
        r
    }

    #[test]
    fn topic_consumer_defaults() {
        let c = ConsumerSpec::topic(&RabbitOptions::default(), "nova", "compute.host1");
        assert_eq!(c.exchange.name, "nova");
        assert_eq!(c.exchange.kind, ExchangeKind::Topic);
        assert!(!c.exchange.durable);
        assert!(!c.exchange.auto_delete);
        assert_eq!(c.queue, "compute.host1");
        assert_eq!(c.routing_key, "compute.host1");
        assert!(!c.queue_durable);
        assert!(!c.queue_auto_delete);
        assert!(c.arguments.inner().is_empty());
    }

    #[test]
    fn fanout_consumer_defaults() {
        let c = ConsumerSpec::fanout(&RabbitOptions::default(), "compute", "abc");
        assert_eq!(c.exchange.name, "compute_fanout");
        assert_eq!(c.exchange.kind, ExchangeKind::Fanout);
        assert!(c.exchange.auto_delete);
        assert!(!c.exchange.durable);
        assert_eq!(c.queue, "compute_fanout_abc");
        assert_eq!(c.routing_key, "compute");
        assert!(!c.queue_durable);
        assert!(!c.queue_auto_delete);
        assert_eq!(
            c.arguments.inner().get("x-expires"),
            Some(&AMQPValue::LongInt(1_800_000))
        );
    }

    #[test]
    fn quorum_arguments() {
        let r = rabbit(&[
            ("rabbit_quorum_queue", "true"),
            ("rabbit_transient_quorum_queue", "true"),
            ("rabbit_quorum_delivery_limit", "3"),
        ]);
        let t = ConsumerSpec::topic(&r, "nova", "compute");
        assert!(t.queue_durable && t.exchange.durable);
        assert_eq!(
            t.arguments.inner().get("x-queue-type"),
            Some(&AMQPValue::LongString("quorum".into()))
        );
        assert_eq!(
            t.arguments.inner().get("x-delivery-limit"),
            Some(&AMQPValue::LongInt(3))
        );
        assert!(t.arguments.inner().get("x-expires").is_none());
        let f = ConsumerSpec::fanout(&r, "compute", "u");
        assert!(f.queue_durable && f.exchange.durable && f.exchange.auto_delete);
        assert_eq!(f.arguments.inner().len(), 3);
        let d = ConsumerSpec::direct(&r, "reply_x");
        assert!(d.queue_durable);
        assert_eq!(d.exchange.name, "");
        assert_eq!(
            d.arguments.inner().get("x-expires"),
            Some(&AMQPValue::LongInt(1_800_000))
        );
    }

    #[test]
    fn ttl_zero_omits_expires_and_ha_policy() {
        let r = rabbit(&[
            ("rabbit_transient_queues_ttl", "0"),
            ("rabbit_ha_queues", "true"),
        ]);
        let d = ConsumerSpec::direct(&r, "reply_x");
        assert!(d.arguments.inner().get("x-expires").is_none());
        assert_eq!(
            d.arguments.inner().get("x-ha-policy"),
            Some(&AMQPValue::LongString("all".into()))
        );
    }

    #[test]
    fn properties_like_kombu() {
        let p = message_properties(Some(Duration::from_secs(60)));
        assert_eq!(
            p.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        assert_eq!(
            p.content_encoding().as_ref().map(|s| s.as_str()),
            Some("utf-8")
        );
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(*p.priority(), Some(0));
        assert_eq!(p.expiration().as_ref().map(|s| s.as_str()), Some("60000"));
        assert!(message_properties(None).expiration().is_none());
    }

    #[test]
    fn default_exchange_is_never_declared() {
        let d = ExchangeSpec::default_exchange(&RabbitOptions::default());
        assert!(d.passive);
        assert_eq!(d.name, "");
    }
}
