//! rpc: everything quorum nodes say to each other over gRPC (`proto/cluster.proto`).
//!
//! Owns the generated protobuf types ([`pb`]), the tonic service every node serves on its
//! `--cluster-listen` address ([`server`]) behind its door ([`incoming`]: connection cap and
//! handshake deadline), the Raft RPC handlers ([`raft_service`]), the pool of
//! lazily connected channels to peers ([`client`]), the typed transport errors ([`errors`]) and
//! the invocation stream handler ([`invocations`]) with the check of the results it relays
//! ([`relayed`]).
//!
//! It never decides anything itself: handlers translate between protobuf and the modules that
//! own the answer (consensus, cluster, router). Invariants: no lock is held across an `.await`;
//! every outgoing call has a deadline; a peer's bytes are decoded with errors, never unwrapped.

pub mod client;
pub mod errors;
pub mod incoming;
pub mod invocations;
pub mod raft_service;
pub mod relayed;
pub mod server;

/// Types and service stubs generated from `proto/cluster.proto` by `build.rs`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("quorum.cluster.v1");
}

/// The largest gRPC message a node sends or accepts (a Raft snapshot chunk or a batch of log
/// entries, JSON-encoded, can be several megabytes). A call or an answer that reached a
/// worker's own limit still fits with its envelope, so the owner's node is the one that
/// decides (`payload_too_large`); a message over the limit would break the whole stream.
pub const MAX_MESSAGE_BYTES: usize = crate::protocol::MAX_MESSAGE_BYTES + ENVELOPE_ROOM;

/// Room for the ids and fields around a worker message's data.
const ENVELOPE_ROOM: usize = 1024 * 1024;

/// A bounded queue's receiving side as the stream a gRPC call sends: every streaming RPC
/// feeds its outbound half from such a queue, so a slow peer holds back the sender.
pub(crate) fn receiver_stream<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) })
}
