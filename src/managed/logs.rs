//! `quorum worker logs` on the cluster port: any member answers. The node the worker is placed
//! on streams its bounded tail, then (with `follow`) new output until the reader goes away,
//! the worker moves elsewhere, or the node shuts down. A member that does not run the worker
//! relays the stream of the node that does (once: a relayed request is never relayed again).
//!
//! Every hop holds at most [`QUEUE_CHUNKS`] chunks: a slow reader holds back the sender, and a
//! follower that falls behind the worker's output skips what it missed (said in the stream).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::debug;

use super::supervisor::Supervisor;
use crate::ids::NodeId;
use crate::rpc::client::PeerClients;
use crate::rpc::pb;

/// The stream of output a node sends to the reader (the CLI, or a relaying member).
pub type LogStream = Pin<Box<dyn Stream<Item = Result<pb::ManagedWorkerLogChunk, Status>> + Send>>;

/// Chunks queued on one hop.
const QUEUE_CHUNKS: usize = 8;

/// The largest piece of output in one chunk.
const CHUNK_BYTES: usize = 64 * 1024;

/// How often a follow stream checks that the worker is still placed here.
const PLACEMENT_CHECK: Duration = Duration::from_secs(1);

/// How long the node running the worker may take to start answering a relayed request.
const RELAY_OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a managed worker runs, as this node's replica has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// No managed worker has that name.
    Unknown,
    /// The worker exists but no node runs it (yet).
    Unplaced,
    /// This node runs it.
    Here,
    /// Another member runs it; `address` is its cluster address when the membership knows it.
    Elsewhere {
        node: NodeId,
        address: Option<String>,
    },
}

/// What serving logs needs from the node: the local supervisor's logs, the clients to reach
/// other members, the current placement of a worker, and the node's shutdown.
#[derive(Clone)]
pub struct LogSources {
    pub node_id: NodeId,
    /// `None` while this node runs no managed workers (its supervisor is not started).
    pub supervisor: Option<Supervisor>,
    pub peers: PeerClients,
    /// Where the worker of this name is placed now.
    pub placement: Arc<dyn Fn(&str) -> Placement + Send + Sync>,
    /// Cancelled when the node shuts down: every follow stream ends then.
    pub stop: CancellationToken,
}

/// Answers one `ManagedWorkerLogs` request: from here, or relayed from the node running it.
pub async fn serve(
    sources: LogSources,
    request: pb::ManagedWorkerLogsRequest,
) -> Result<LogStream, Status> {
    let name = request.name.clone();
    match (sources.placement)(&name) {
        Placement::Unknown => Err(Status::failed_precondition(format!(
            "no managed worker named '{name}'"
        ))),
        Placement::Unplaced => Err(Status::failed_precondition(format!(
            "managed worker '{name}' is not placed on any node yet"
        ))),
        Placement::Here => local(sources, request),
        Placement::Elsewhere { node, .. } if request.relayed => Err(Status::unavailable(format!(
            "managed worker '{name}' is placed on node {node}, not on node {}; ask again",
            sources.node_id
        ))),
        Placement::Elsewhere { node, address } => relay(sources, request, node, address).await,
    }
}

/// The output of a worker this node runs.
#[allow(clippy::result_large_err)]
fn local(sources: LogSources, request: pb::ManagedWorkerLogsRequest) -> Result<LogStream, Status> {
    let name = request.name;
    let logs = sources.supervisor.as_ref().and_then(|s| s.logs(&name));
    let Some((tail, follow)) = logs else {
        return Err(Status::unavailable(format!(
            "node {} has not started managed worker '{name}' yet",
            sources.node_id
        )));
    };
    let (tx, rx) = mpsc::channel(QUEUE_CHUNKS);
    tokio::spawn(async move {
        if send_tail(&tx, sources.node_id, &tail).await.is_err() || !request.follow {
            return;
        }
        let notice = follow_output(&sources, &name, follow, &tx).await;
        if let Some(notice) = notice {
            let _ = tx.send(Ok(notice_chunk(notice))).await;
        }
    });
    Ok(Box::pin(crate::rpc::receiver_stream(rx)))
}

type ChunkSender = mpsc::Sender<Result<pb::ManagedWorkerLogChunk, Status>>;

/// The tail in chunks, the first naming this node (sent even when the tail is empty).
async fn send_tail(tx: &ChunkSender, node: NodeId, tail: &[u8]) -> Result<(), ()> {
    let mut pieces = tail.chunks(CHUNK_BYTES);
    let first = pieces.next().unwrap_or_default();
    let mut chunk = output_chunk(first.to_vec());
    chunk.node = node;
    tx.send(Ok(chunk)).await.map_err(|_| ())?;
    for piece in pieces {
        tx.send(Ok(output_chunk(piece.to_vec())))
            .await
            .map_err(|_| ())?;
    }
    Ok(())
}

/// New output until the reader leaves (`None`) or the stream must end for a reason the
/// operator should hear (`Some(notice)`).
async fn follow_output(
    sources: &LogSources,
    name: &str,
    mut follow: broadcast::Receiver<Bytes>,
    tx: &ChunkSender,
) -> Option<String> {
    let mut check = tokio::time::interval(PLACEMENT_CHECK);
    loop {
        let chunk = tokio::select! {
            output = follow.recv() => match output {
                Ok(bytes) => output_chunk(bytes.to_vec()),
                Err(RecvError::Lagged(skipped)) => output_chunk(
                    format!("\n[quorum: {skipped} pieces of output skipped; this reader fell behind]\n")
                        .into_bytes(),
                ),
                Err(RecvError::Closed) => {
                    return Some(format!("node {} no longer runs managed worker '{name}'", sources.node_id))
                }
            },
            _ = check.tick() => match (sources.placement)(name) {
                Placement::Here => continue,
                Placement::Elsewhere { node, .. } => {
                    return Some(format!("managed worker '{name}' moved to node {node}; run logs again to follow it there"))
                }
                Placement::Unplaced => {
                    return Some(format!("managed worker '{name}' is no longer placed on node {}", sources.node_id))
                }
                Placement::Unknown => return Some(format!("managed worker '{name}' was removed")),
            },
            _ = tx.closed() => return None,
            _ = sources.stop.cancelled() => {
                return Some(format!("node {} is shutting down", sources.node_id))
            }
        };
        if tx.send(Ok(chunk)).await.is_err() {
            return None;
        }
    }
}

/// The stream of the node running the worker, passed through this node.
async fn relay(
    sources: LogSources,
    request: pb::ManagedWorkerLogsRequest,
    node: NodeId,
    address: Option<String>,
) -> Result<LogStream, Status> {
    let name = request.name.clone();
    let address = address.ok_or_else(|| {
        Status::unavailable(format!(
            "managed worker '{name}' is placed on node {node}, whose address is unknown here"
        ))
    })?;
    let mut client = sources
        .peers
        .cluster(&address)
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let relayed = pb::ManagedWorkerLogsRequest {
        relayed: true,
        ..request
    };
    let opened = tokio::time::timeout(RELAY_OPEN_TIMEOUT, client.managed_worker_logs(relayed))
        .await
        .map_err(|_| {
            Status::unavailable(format!(
                "node {node}, which runs managed worker '{name}', did not answer within {RELAY_OPEN_TIMEOUT:?}"
            ))
        })??;
    debug!(node = sources.node_id, worker = %name, from = node, "relaying a managed worker's logs");
    let mut upstream = opened.into_inner();
    let (tx, rx) = mpsc::channel(QUEUE_CHUNKS);
    tokio::spawn(async move {
        loop {
            let item = tokio::select! {
                item = upstream.message() => item,
                _ = tx.closed() => return,
                _ = sources.stop.cancelled() => return,
            };
            let item = match item {
                Ok(Some(chunk)) => Ok(chunk),
                Ok(None) => return,
                Err(status) => Err(status),
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    });
    Ok(Box::pin(crate::rpc::receiver_stream(rx)))
}

fn output_chunk(output: Vec<u8>) -> pb::ManagedWorkerLogChunk {
    pb::ManagedWorkerLogChunk {
        output,
        node: 0,
        notice: String::new(),
    }
}

fn notice_chunk(notice: String) -> pb::ManagedWorkerLogChunk {
    pb::ManagedWorkerLogChunk {
        output: Vec::new(),
        node: 0,
        notice,
    }
}
