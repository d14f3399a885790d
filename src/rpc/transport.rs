//! A messaging transport: the broker url, the effective options, the shared sending
//! connection and (lazily) the process's reply queue.

use std::sync::Arc;

use tokio::sync::OnceCell;

use crate::rpc::connection::{Connector, Publisher, StopSignal};
use crate::rpc::error::RpcError;
use crate::rpc::options::{RabbitOptions, RpcOptions};
use crate::rpc::reply::ReplyWaiter;
use crate::rpc::url::TransportUrl;

/// A connection to the message bus, shared by RPC clients and servers of one process
/// (oslo's `get_rpc_transport`). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Transport {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub options: RpcOptions,
    pub connector: Arc<Connector>,
    pub publisher: Publisher,
    pub reply: OnceCell<Arc<ReplyWaiter>>,
    pub stop: StopSignal,
}

impl Transport {
    /// Build a transport. No I/O happens until the first call, cast or server start.
    /// The url's query options override `options.rabbit`, as in oslo.
    pub fn new(url: &TransportUrl, options: RpcOptions) -> Result<Self, RpcError> {
        let connector = Arc::new(Connector::new(url, &options)?);
        let mut options = options;
        options.rabbit = connector.rabbit().clone();
        Ok(Transport {
            inner: Arc::new(Inner {
                options,
                publisher: Publisher::new(connector.clone()),
                connector,
                reply: OnceCell::new(),
                stop: StopSignal::default(),
            }),
        })
    }

    /// Parse `transport_url` and build a transport.
    pub fn from_url(url: &str, options: RpcOptions) -> Result<Self, RpcError> {
        Transport::new(&TransportUrl::parse(url)?, options)
    }

    /// The effective options (configuration plus url query).
    pub fn options(&self) -> &RpcOptions {
        &self.inner.options
    }

    pub(crate) fn rabbit(&self) -> &RabbitOptions {
        &self.inner.options.rabbit
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The process's reply queue consumer, started on first use.
    pub(crate) async fn reply_waiter(&self) -> Arc<ReplyWaiter> {
        self.inner
            .reply
            .get_or_init(|| async {
                Arc::new(ReplyWaiter::start(
                    self.inner.connector.clone(),
                    self.inner.stop.clone(),
                ))
            })
            .await
            .clone()
    }

    /// The name of the reply queue once a call has created it.
    pub fn reply_queue(&self) -> Option<String> {
        self.inner.reply.get().map(|w| w.queue().to_string())
    }

    /// Stop the reply consumer and close the sending connection. Pending calls fail
    /// with [`RpcError::Shutdown`].
    pub async fn shutdown(&self) {
        self.inner.stop.stop();
        if let Some(w) = self.inner.reply.get() {
            w.join().await;
        }
        self.inner.publisher.close().await;
    }
}
