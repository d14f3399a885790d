//! Nova wire model: the oslo.messaging envelope, nova versioned objects and compute
//! RPC calls exactly as nova 34.0.0 (compute RPC 6.5, oslo.messaging 18.3.1) puts them
//! on AMQP. Pure serde, no I/O: the AMQP client, dispatcher and driver live elsewhere.
//!
//! Layers, outermost first:
//!
//! * [`envelope`]: body `{"oslo.version": "2.0", "oslo.message": "<json>"}`, requests,
//!   replies, heartbeats and failures; [`context`]: the `_context_*` keys.
//! * [`rpc_methods`]: typed arguments of compute 6.x, conductor 3.0, scheduler 4.x and
//!   `baseapi` calls, typed reply results; any other method stays generic.
//! * [`object`]: the versioned-object primitive, versions, change tracking;
//!   [`objects`]: typed structs for what a compute touches and the nova 34 manifest.
//! * [`fields`]: field encodings (two datetime layouts, JSON-in-JSON, unset vs null);
//!   [`crate::pyjson`]: Python `json.dumps` output, so encoded bodies are byte-identical to
//!   what nova sends.
//! * [`decode`]: `corral nova decode FILE`.
//!

pub mod capture;
pub mod context;
pub mod decode;
pub mod envelope;
pub mod fields;
pub mod object;
pub mod objects;
pub mod rpc_methods;

pub use self::context::RequestContext;
pub use self::decode::{decode_file, decode_message, DecodeError, DecodedMessage, MessageKind};
pub use self::envelope::{
    decode_body, encode_body, CallKind, Envelope, EnvelopeError, RemoteFailure, RpcMessage,
    RpcReply, RpcRequest,
};
pub use self::fields::{Dict, Field, JsonString, NovaDateTime};
pub use self::object::{NovaObject, ObjectError, ObjectVersion, VersionedObject};
pub use self::rpc_methods::{CallError, ComputeCall, ConductorCall, ReplyResult, RpcCall};
