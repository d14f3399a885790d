//! The process's reply queue: consumes `reply_<id>` and hands each reply to the call
//! waiting on its `_msg_id` (oslo's `ReplyWaiter`). A leaf under the client and the
//! transport, so neither has to import the other for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicRejectOptions};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::rpc::connection::{error_chain, setup_consumers, Connector, ConsumerSpec, StopSignal};
use crate::rpc::envelope::{self, new_hex_id};

type Waiters = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Map<String, Value>>>>>;

/// Consumes the process's reply queue and hands replies to the calls waiting on their
/// `_msg_id` (oslo's `ReplyWaiter`).
#[derive(Debug)]
pub(crate) struct ReplyWaiter {
    queue: String,
    waiters: Waiters,
    ready: watch::Receiver<ReplyState>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// Whether the reply queue is consumed, and on which connection: `generation` grows
/// with every (re)connection of the reply consumer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ReplyState {
    pub consuming: bool,
    pub generation: u64,
}

impl ReplyState {
    /// Still consuming on the connection of `generation`.
    pub fn is_current(&self, generation: u64) -> bool {
        self.consuming && self.generation == generation
    }
}

/// Unregisters a waiting call when dropped.
pub(crate) struct Listening {
    pub rx: mpsc::UnboundedReceiver<Map<String, Value>>,
    msg_id: String,
    waiters: Waiters,
}

impl Drop for Listening {
    fn drop(&mut self) {
        if let Ok(mut w) = self.waiters.lock() {
            w.remove(&self.msg_id);
        }
    }
}

impl ReplyWaiter {
    pub fn start(connector: Arc<Connector>, stop: StopSignal) -> Self {
        let queue = format!("reply_{}", new_hex_id());
        tracing::debug!(reply_q = %queue, "creating reply queue");
        let waiters: Waiters = Arc::new(Mutex::new(HashMap::new()));
        let (ready_tx, ready) = watch::channel(ReplyState::default());
        let task = tokio::spawn(reply_loop(
            connector,
            queue.clone(),
            waiters.clone(),
            ready_tx,
            stop,
        ));
        ReplyWaiter {
            queue,
            waiters,
            ready,
            task: Mutex::new(Some(task)),
        }
    }

    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Wait until the reply queue is declared and consumed; the generation of its
    /// connection, or `None` at the deadline.
    pub async fn wait_ready(&self, deadline: Instant) -> Option<u64> {
        let mut rx = self.ready.clone();
        let res = match tokio::time::timeout_at(deadline, rx.wait_for(|r| r.consuming)).await {
            Ok(Ok(s)) => Some(s.generation),
            _ => None,
        };
        res
    }

    /// Follows the consumer's state.
    pub fn state(&self) -> watch::Receiver<ReplyState> {
        self.ready.clone()
    }

    pub fn listen(&self, msg_id: &str) -> Listening {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut w) = self.waiters.lock() {
            w.insert(msg_id.to_string(), tx);
        }
        Listening {
            rx,
            msg_id: msg_id.to_string(),
            waiters: self.waiters.clone(),
        }
    }

    pub async fn join(&self) {
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

async fn reply_loop(
    connector: Arc<Connector>,
    queue: String,
    waiters: Waiters,
    ready: watch::Sender<ReplyState>,
    stop: StopSignal,
) {
    let rabbit = connector.rabbit().clone();
    let t = connector.op_timeout();
    let mut specs = vec![ConsumerSpec::direct(&rabbit, &queue)];
    let mut first = true;
    loop {
        if !first && stop.sleep(connector.reconnect_delay()).await {
            break;
        }
        first = false;
        let conn = match connector.connect(None, &stop).await {
            Ok(c) => c,
            Err(_) => break,
        };
        let (channel, mut consumers) = match setup_consumers(
            &conn,
            &mut specs,
            rabbit.rabbit_qos_prefetch_count,
            t,
        )
        .await
        {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(reply_q = %queue, error = %error_chain(&e), "cannot declare reply queue");
                let _ = tokio::time::timeout(t, conn.close(200, "OK".into())).await;
                continue;
            }
        };
        let Some(mut consumer) = consumers.pop() else {
            continue;
        };
        ready.send_modify(|s| {
            s.consuming = true;
            s.generation += 1;
        });
        loop {
            tokio::select! {
                _ = stop.stopped() => {
                    let _ = tokio::time::timeout(t, channel.close(200, "OK".into())).await;
                    let _ = tokio::time::timeout(t, conn.close(200, "OK".into())).await;
                    return;
                }
                d = consumer.next() => match d {
                    Some(Ok(delivery)) => on_reply(delivery, &waiters, t).await,
                    Some(Err(e)) => {
                        tracing::warn!(reply_q = %queue, error = %error_chain(&e), "reply consumer failed, reconnecting");
                        break;
                    }
                    None => {
                        tracing::warn!(reply_q = %queue, "reply consumer cancelled, reconnecting");
                        break;
                    }
                }
            }
        }
        // calls waiting on this connection fail now instead of at their timeout
        ready.send_modify(|s| s.consuming = false);
        let _ = tokio::time::timeout(t, conn.close(200, "OK".into())).await;
    }
}

async fn on_reply(delivery: lapin::message::Delivery, waiters: &Waiters, t: Duration) {
    let msg = match envelope::deserialize_msg(&delivery.data) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "failed to process reply message, skipping it");
            let _ = tokio::time::timeout(
                t,
                delivery.acker.reject(BasicRejectOptions { requeue: false }),
            )
            .await;
            return;
        }
    };
    if let Err(e) = tokio::time::timeout(t, delivery.acker.ack(BasicAckOptions::default())).await {
        tracing::warn!(error = %e, "cannot acknowledge reply");
    }
    let msg_id = msg
        .get("_msg_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    let sender = msg_id
        .as_ref()
        .and_then(|id| waiters.lock().ok().and_then(|w| w.get(id).cloned()));
    match sender {
        Some(tx) => {
            let _ = tx.send(msg);
        }
        None => tracing::info!(msg_id = ?msg_id, "no calling threads waiting for msg_id"),
    }
}
