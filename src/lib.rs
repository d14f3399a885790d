//! corral: a Nova compute host and standalone host for Linux system containers.

pub mod config;
pub mod runtime;
pub mod store;
pub mod fsutil;
pub mod image;
pub mod storage;
pub mod driver;
