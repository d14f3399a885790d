//! The RPC client: `call` with one reply queue per process, `cast`, fanout casts.

use std::time::Duration;

use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::rpc::connection::{ExchangeSpec, Outgoing};
use crate::rpc::envelope::{self, new_hex_id, OutgoingRequest, ReplyPart};
use crate::rpc::error::{RemoteError, RpcError};
use crate::rpc::transport::Transport;
use crate::rpc::Context;

/// Where a message goes (oslo's `Target`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// Exchange; `None` means the control exchange (`nova`).
    pub exchange: Option<String>,
    pub topic: String,
    /// Server name: routing key `<topic>.<server>`.
    pub server: Option<String>,
    pub namespace: Option<String>,
    /// API version sent as `version`.
    pub version: Option<String>,
    /// Cast to every server of the topic through `<topic>_fanout`.
    pub fanout: bool,
}

impl Target {
    pub fn new(topic: &str) -> Self {
        Target {
            topic: topic.into(),
            ..Default::default()
        }
    }

    pub fn with_server(mut self, server: &str) -> Self {
        self.server = Some(server.into());
        self
    }

    pub fn with_version(mut self, version: &str) -> Self {
        self.version = Some(version.into());
        self
    }

    pub fn with_namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    pub fn with_exchange(mut self, exchange: &str) -> Self {
        self.exchange = Some(exchange.into());
        self
    }

    pub fn with_fanout(mut self, fanout: bool) -> Self {
        self.fanout = fanout;
        self
    }

    /// The routing key on the control exchange.
    pub fn routing_key(&self) -> String {
        match &self.server {
            Some(s) => format!("{}.{}", self.topic, s),
            None => self.topic.clone(),
        }
    }
}

/// Invokes methods on remote servers (oslo's `RPCClient`). Clone it and use the
/// `with_*` builders the way oslo code uses `prepare()`.
#[derive(Debug, Clone)]
pub struct RpcClient {
    transport: Transport,
    target: Target,
    timeout: Option<Duration>,
    call_monitor_timeout: Option<u64>,
    retry: Option<u32>,
    version_cap: Option<String>,
}

impl RpcClient {
    pub fn new(transport: Transport, target: Target) -> Self {
        RpcClient {
            transport,
            target,
            timeout: None,
            call_monitor_timeout: None,
            retry: None,
            version_cap: None,
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    pub fn with_target(mut self, target: Target) -> Self {
        self.target = target;
        self
    }

    pub fn with_server(mut self, server: &str) -> Self {
        self.target.server = Some(server.into());
        self
    }

    pub fn with_version(mut self, version: &str) -> Self {
        self.target.version = Some(version.into());
        self
    }

    pub fn with_fanout(mut self, fanout: bool) -> Self {
        self.target.fanout = fanout;
        self
    }

    /// Call timeout; default `rpc_response_timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Seconds without a heartbeat after which a call fails; sent as `_timeout` and
    /// makes the server send call-monitor heartbeats every `seconds / 2`.
    pub fn with_call_monitor_timeout(mut self, seconds: u64) -> Self {
        self.call_monitor_timeout = Some(seconds);
        self
    }

    /// Publish retries on connection errors: `None` retries until it works (oslo's
    /// default), `Some(0)` never retries.
    pub fn with_retry(mut self, retry: Option<u32>) -> Self {
        self.retry = retry;
        self
    }

    pub fn with_version_cap(mut self, cap: &str) -> Self {
        self.version_cap = Some(cap.into());
        self
    }

    /// `can_send_version`: is `version` within the version cap?
    pub fn can_send_version(&self, version: &str) -> bool {
        match &self.version_cap {
            None => true,
            Some(cap) => envelope::version_is_compatible(cap, version).unwrap_or(false),
        }
    }

    fn check_version_cap(&self) -> Result<(), RpcError> {
        if let Some(v) = &self.target.version {
            if !self.can_send_version(v) {
                return Err(RpcError::InvalidTarget(format!(
                    "requested message version {v} is incompatible with the version cap {}",
                    self.version_cap.as_deref().unwrap_or_default()
                )));
            }
        }
        Ok(())
    }

    fn exchange(&self) -> ExchangeSpec {
        let name = self
            .target
            .exchange
            .clone()
            .unwrap_or_else(|| self.transport.options().default.control_exchange.clone());
        ExchangeSpec::topic(self.transport.rabbit(), &name)
    }

    /// Invoke `method` and return immediately; a fanout target goes to every server.
    pub async fn cast(
        &self,
        context: &Context,
        method: &str,
        args: Map<String, Value>,
    ) -> Result<(), RpcError> {
        self.check_version_cap()?;
        let req = OutgoingRequest {
            method,
            args: &args,
            namespace: self.target.namespace.as_deref(),
            version: self.target.version.as_deref(),
            call: None,
            context,
        };
        let body = envelope::serialize_msg(&req.to_message());
        let publisher = &self.transport.inner().publisher;
        if self.target.fanout {
            let ex = ExchangeSpec::fanout(self.transport.rabbit(), &self.target.topic);
            tracing::debug!(topic = %self.target.topic, method, "fanout cast");
            publisher
                .publish(
                    &Outgoing {
                        exchange: &ex,
                        routing_key: "",
                        body: &body,
                        expiration: None,
                        mandatory: false,
                    },
                    self.retry,
                    None,
                )
                .await
        } else {
            let ex = self.exchange();
            let rk = self.target.routing_key();
            tracing::debug!(exchange = %ex.name, routing_key = %rk, method, "cast");
            publisher
                .publish(
                    &Outgoing {
                        exchange: &ex,
                        routing_key: &rk,
                        body: &body,
                        expiration: None,
                        mandatory: false,
                    },
                    self.retry,
                    None,
                )
                .await
        }
    }

    /// Cast to every server listening on the topic.
    pub async fn fanout_cast(
        &self,
        context: &Context,
        method: &str,
        args: Map<String, Value>,
    ) -> Result<(), RpcError> {
        self.clone()
            .with_fanout(true)
            .cast(context, method, args)
            .await
    }

    /// Invoke `method` and wait for its result. Failures of the remote method come
    /// back as [`RpcError::Remote`]; no reply in time is [`RpcError::Timeout`].
    pub async fn call(
        &self,
        context: &Context,
        method: &str,
        args: Map<String, Value>,
    ) -> Result<Value, RpcError> {
        if self.target.fanout {
            return Err(RpcError::InvalidTarget(
                "a call cannot be used with fanout".into(),
            ));
        }
        self.check_version_cap()?;
        let timeout = self
            .timeout
            .unwrap_or_else(|| self.transport.options().default.response_timeout());
        let deadline = Instant::now() + timeout;
        let waiter = self.transport.reply_waiter().await;
        let reply_q = waiter.queue().to_string();
        let msg_id = new_hex_id();
        // The reply queue must be consumed (again, after a reconnect) before the
        // request leaves, or the reply has nowhere to go.
        let Some(generation) = waiter.wait_ready(deadline).await else {
            return Err(RpcError::Timeout { msg_id, reply_q });
        };
        let mut listening = waiter.listen(&msg_id);
        let mut state = waiter.state();

        let req = OutgoingRequest {
            method,
            args: &args,
            namespace: self.target.namespace.as_deref(),
            version: self.target.version.as_deref(),
            call: Some((&msg_id, &reply_q, self.call_monitor_timeout)),
            context,
        };
        let body = envelope::serialize_msg(&req.to_message());
        let ex = self.exchange();
        let rk = self.target.routing_key();
        tracing::debug!(exchange = %ex.name, routing_key = %rk, method, %msg_id, "call");
        // Published mandatory: while the servers' queues are not declared (yet, or
        // again after a broker restart) the broker returns the request instead of
        // dropping it, and it is sent again until the deadline.
        let mut pause = Duration::from_millis(100);
        loop {
            let res = self
                .transport
                .inner()
                .publisher
                .publish(
                    &Outgoing {
                        exchange: &ex,
                        routing_key: &rk,
                        body: &body,
                        expiration: Some(timeout),
                        mandatory: true,
                    },
                    self.retry,
                    Some(deadline),
                )
                .await;
            match res {
                Ok(()) => break,
                Err(RpcError::Undeliverable { .. }) => {
                    if Instant::now() + pause >= deadline {
                        tokio::time::sleep_until(deadline).await;
                        return Err(RpcError::Timeout { msg_id, reply_q });
                    }
                    tracing::debug!(routing_key = %rk, %msg_id, "no queue for the call yet, sending it again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
        if !state.borrow_and_update().is_current(generation) {
            return Err(RpcError::ConnectionLost { msg_id, reply_q });
        }

        // ReplyWaiter.wait: overall timer, call-monitor timer renewed by heartbeats
        let cm = self.call_monitor_timeout.map(Duration::from_secs);
        let mut cm_deadline = cm.map(|c| Instant::now() + c);
        let mut final_reply: Option<Result<Value, crate::rpc::Failure>> = None;
        loop {
            let wait_until = match cm_deadline {
                Some(c) if c < deadline => c,
                _ => deadline,
            };
            let msg = tokio::select! {
                biased;
                m = listening.rx.recv() => match m {
                    None => return Err(RpcError::Shutdown),
                    Some(m) => m,
                },
                // the reply consumer lost its connection: the reply cannot come
                changed = state.wait_for(|s| !s.is_current(generation)) => {
                    if changed.is_err() {
                        return Err(RpcError::Shutdown);
                    }
                    return Err(RpcError::ConnectionLost {
                        msg_id: msg_id.clone(),
                        reply_q,
                    });
                }
                _ = tokio::time::sleep_until(wait_until) => {
                    return Err(RpcError::Timeout {
                        msg_id: msg_id.clone(),
                        reply_q,
                    })
                }
            };
            match envelope::parse_reply(msg).1 {
                ReplyPart::Payload { result, ending } => {
                    final_reply = Some(result);
                    if ending {
                        break;
                    }
                }
                ReplyPart::Empty { ending: true } => break,
                ReplyPart::Empty { ending: false } => {
                    tracing::debug!(%msg_id, "call monitor heartbeat received; renewing timeout timer");
                    if let Some(c) = cm {
                        cm_deadline = Some(Instant::now() + c);
                    }
                }
            }
        }
        match final_reply {
            None => Ok(Value::Null),
            Some(Ok(v)) => Ok(v),
            Some(Err(f)) => Err(RemoteError::from(f).into()),
        }
    }
}
