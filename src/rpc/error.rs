//! What goes wrong in the RPC layer: transport and call errors, and the remote
//! failures (an oslo `failure` reply) that cross the wire in both directions.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::rpc::envelope::Failure;
use crate::rpc::options::OptionsError;
use crate::rpc::url::UrlError;

/// Errors of the RPC layer.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("invalid transport url")]
    Url(#[from] UrlError),
    #[error("invalid messaging options")]
    Options(#[from] OptionsError),
    #[error("amqp {op} failed")]
    Amqp {
        op: &'static str,
        #[source]
        source: lapin::Error,
    },
    #[error("amqp {op} timed out after {timeout:?}")]
    OperationTimeout { op: &'static str, timeout: Duration },
    #[error("cannot connect to {host}:{port}")]
    Connect {
        host: String,
        port: u16,
        #[source]
        source: Box<RpcError>,
    },
    #[error("tls setup failed")]
    Tls(#[source] openssl::error::ErrorStack),
    #[error("cannot read {path}")]
    ReadFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("message to exchange '{exchange}' with routing key '{routing_key}' was returned as unroutable")]
    Undeliverable {
        exchange: String,
        routing_key: String,
    },
    #[error("exchange '{0}' does not exist")]
    ExchangeNotFound(String),
    #[error("broker rejected the message (basic.nack)")]
    Nacked,
    /// oslo's `MessagingTimeout`.
    #[error("timed out waiting for a reply {reply_q} to message ID {msg_id}")]
    Timeout { msg_id: String, reply_q: String },
    /// The remote endpoint failed; oslo's `RemoteError` (or the rebuilt remote exception).
    #[error(transparent)]
    Remote(Box<RemoteError>),
    /// The reply consumer lost its broker connection while the call waited: the reply
    /// cannot arrive. The request may or may not have been handled.
    #[error("connection to the message broker lost while waiting for the reply {reply_q} to message ID {msg_id}")]
    ConnectionLost { msg_id: String, reply_q: String },
    #[error("invalid target: {0}")]
    InvalidTarget(String),
    #[error("cannot encode message")]
    Encode(#[source] serde_json::Error),
    #[error("giving up after {attempts} attempts")]
    RetriesExhausted {
        attempts: u32,
        #[source]
        source: Box<RpcError>,
    },
    #[error("the transport is shut down")]
    Shutdown,
}

impl From<RemoteError> for RpcError {
    fn from(e: RemoteError) -> Self {
        RpcError::Remote(Box::new(e))
    }
}

impl RpcError {
    pub(crate) fn amqp(op: &'static str, source: lapin::Error) -> Self {
        RpcError::Amqp { op, source }
    }

    /// The AMQP reply code of a broker-side channel or connection error, if any.
    pub fn amqp_code(&self) -> Option<u16> {
        match self {
            RpcError::Amqp { source, .. } => match source.kind() {
                lapin::ErrorKind::ProtocolError(e) => Some(e.get_id()),
                _ => None,
            },
            RpcError::Connect { source, .. } | RpcError::RetriesExhausted { source, .. } => {
                source.amqp_code()
            }
            _ => None,
        }
    }

    /// A failure of the connection to the broker rather than an answer: sending the
    /// call again (when that is safe) may work.
    pub fn is_connection_error(&self) -> bool {
        match self {
            RpcError::ConnectionLost { .. }
            | RpcError::Amqp { .. }
            | RpcError::OperationTimeout { .. }
            | RpcError::Connect { .. } => true,
            RpcError::RetriesExhausted { source, .. } => source.is_connection_error(),
            _ => false,
        }
    }

    /// The broker's error text, e.g. `PRECONDITION_FAILED - inequivalent arg 'durable' ...`.
    pub(crate) fn amqp_message(&self) -> Option<String> {
        match self {
            RpcError::Amqp { source, .. } => match source.kind() {
                lapin::ErrorKind::ProtocolError(e) => Some(e.get_message().to_string()),
                _ => None,
            },
            _ => None,
        }
    }

    /// True for `PRECONDITION_FAILED - inequivalent arg 'durable'`, which oslo answers
    /// by re-declaring non-durable.
    pub(crate) fn is_durable_mismatch(&self) -> bool {
        self.amqp_code() == Some(406)
            && self
                .amqp_message()
                .is_some_and(|m| m.contains("inequivalent arg 'durable'"))
    }
}

/// A failure raised by the remote endpoint, as oslo's `RemoteError` carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteError {
    /// Exception class name, e.g. `InstanceNotFound`.
    pub exc_type: String,
    /// Defining module, e.g. `nova.exception`.
    pub module: String,
    /// `str(exc)` on the remote side.
    pub value: String,
    /// Formatted traceback lines.
    pub traceback: Vec<String>,
    /// Positional exception arguments.
    pub args: Vec<Value>,
    /// Keyword arguments (`exc.kwargs`), e.g. `{"instance_id": ..., "code": 404}`.
    pub kwargs: Map<String, Value>,
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "remote error: {}.{} {}",
            self.module, self.exc_type, self.value
        )
    }
}

impl std::error::Error for RemoteError {}

impl From<Failure> for RemoteError {
    fn from(f: Failure) -> Self {
        RemoteError {
            exc_type: f.class,
            module: f.module,
            value: f.message,
            traceback: f.tb,
            args: f.args,
            kwargs: f.kwargs,
        }
    }
}

impl From<RemoteError> for Failure {
    fn from(r: RemoteError) -> Self {
        Failure {
            class: r.exc_type,
            module: r.module,
            message: r.value,
            tb: r.traceback,
            args: r.args,
            kwargs: r.kwargs,
        }
    }
}
