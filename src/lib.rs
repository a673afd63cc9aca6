//! quorum: a clustered, highly available engine for iii workers.
//!
//! The library holds the whole engine; `main.rs` is only its command line. It is a library so
//! that the fuzz targets in `fuzz/` reach the code that reads untrusted input (frame
//! decoding, the registry's command application) exactly as the node runs it.

pub mod auth;
pub mod budget;
pub mod builtins;
pub mod channels;
pub mod cluster;
pub mod config;
pub mod consensus;
pub mod gateway;
pub mod http;
pub mod ids;
pub mod managed;
pub mod metrics;
pub mod node;
pub mod protocol;
pub mod registry;
pub mod router;
pub mod rpc;
mod write_through;
