//! corral: a Nova compute host and standalone host for Linux system containers.

pub mod api;
pub mod cli;
pub mod compute;
pub mod config;
pub mod cpuset;
pub mod crashpoint;
pub mod daemon;
pub mod devices;
pub mod driver;
pub mod fsutil;
pub mod host;
pub mod image;
pub mod locks;
pub mod netdev;
pub mod network;
pub mod neutron;
pub mod nova;
pub mod placement;
pub mod pyjson;
pub mod rpc;
pub mod runtime;
pub mod storage;
pub mod store;
pub mod strutil;
pub mod text;
pub mod tls;
