//! oslo.messaging's rabbit driver, spoken by corral on lapin.
//!
//! The wire format follows oslo.messaging 18.3.1 (`impl_rabbit.py`, `amqpdriver.py`,
//! `common.py`, `rpc/*.py`) byte for byte where that is observable: exchange and queue
//! declarations, AMQP properties, the `oslo.version` 2.0 envelope, `_context_*` keys,
//! single-message replies with `ending: true`, call-monitor heartbeats and the failure
//! encoding. See `docs-rpc.md`.

mod client;
mod connection;
pub mod envelope;
mod error;
pub mod options;
mod reply;
mod server;
mod transport;
pub mod url;

pub use client::{RpcClient, Target};
pub use envelope::{Failure, Request};
pub use error::{RemoteError, RpcError};
pub use options::{DefaultOptions, LoginMethod, OptionsError, RabbitOptions, RpcOptions};
pub use server::{Endpoint, RpcServer, RpcServerBuilder};
pub use transport::Transport;
pub use url::{TransportHost, TransportUrl, UrlError};

/// A request context: the `_context_*` keys of a message with the prefix removed.
pub type Context = serde_json::Map<String, serde_json::Value>;
