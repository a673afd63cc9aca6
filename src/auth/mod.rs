//! auth: who may reach this node.
//!
//! The cluster port admits only holders of a certificate signed by the cluster's CA, and binds
//! each node id to the certificate identity the leader admitted; the worker port admits only
//! holders of a worker token when `--worker-auth token` is set (or, from loopback, the local
//! token of one of this node's managed workers). Everything that decides "is
//! this caller let in, and to what" lives here, so the gateway and the gRPC service only ask.

pub mod access;
pub mod certs;
pub mod cluster_listener;
pub mod cluster_tls;
pub mod grant;
pub mod identity;
pub mod local;
pub mod revocation;
pub mod token_admin;
pub mod token_cli;
pub mod tokens;
pub mod worker_gate;
pub mod worker_tls;
