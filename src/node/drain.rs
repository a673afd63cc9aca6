//! The graceful shutdown a SIGTERM starts: move this node's workers to other nodes without
//! failing a call, then let the process exit.
//!
//! 1. Stop accepting worker connections (the listener closes; `/readyz` says no), and
//!    record in the registry that this node drains, so every node holds new calls for its
//!    workers instead of handing them over.
//! 2. If this node leads, ask an up-to-date follower to take over.
//! 3. Close each worker's socket with 1001 (going away) as soon as it executes no call. Its
//!    SDK reconnects to another node and registers again; calls held for its functions then
//!    go there. Calls the worker itself was waiting on stay here, and their answers follow it
//!    to its new connection once it reattaches. A managed worker's copy is the exception: it
//!    stays until its replacement on another node is registered (`managed::handover`).
//! 4. Wait until no worker is left, no answer is owed and no channel end is open (channels
//!    living here or relayed through here may finish), or until the drain grace ends.

use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{info, warn};

use super::Node;
use crate::cluster::membership;
use crate::managed;
use crate::registry::{Command, DrainCause};

/// How often the drain looks for workers it may close.
const POLL: Duration = Duration::from_millis(20);

/// How long the last frames to other nodes get to leave before the streams close.
const SETTLE: Duration = Duration::from_millis(200);

/// How long recording the drain may take before the node drains without it.
const RECORD_BUDGET: Duration = Duration::from_secs(5);

/// Drains this node; returns when it may exit.
pub async fn run(node: &Arc<Node>) {
    let started = Instant::now();
    let deadline = started + node.config.drain_grace;
    node.draining.cancel();
    info!(
        node = node.id,
        workers = node.connections.len(),
        grace_ms = node.config.drain_grace.as_millis() as u64,
        "draining: no new workers, moving the connected ones away"
    );
    if let Err(err) = node
        .commit_within(
            Command::NodeDraining {
                node: node.id,
                cause: Some(DrainCause::Shutdown),
            },
            RECORD_BUDGET,
        )
        .await
    {
        warn!(node = node.id, error = %err, "could not record the drain; calls to this node's workers are not held");
    } else {
        own_drain_applied(node, started + RECORD_BUDGET).await;
    }
    membership::hand_over_leadership(node).await;
    let mut closed = std::collections::HashSet::new();
    loop {
        for worker in node.connections.ids() {
            if closed.contains(&worker) {
                continue;
            }
            // A managed worker's copy stays until its replacement elsewhere is registered;
            // the node agent stops it then (see managed/handover.rs).
            let deciding = started.elapsed() < managed::handover::DECISION_WAIT;
            if managed::handover::holds_back(&node.registry(), node.id, worker, deciding) {
                continue;
            }
            let token_hash = node
                .registry()
                .worker(worker)
                .map(|w| w.token_hash.clone())
                .unwrap_or_default();
            if node.router.try_close(worker, token_hash) {
                if let Some(handle) = node.connections.get(worker) {
                    handle.cancel.cancel();
                }
                closed.insert(worker);
            }
        }
        let open = node.connections.len() + node.channels.ends_open() as usize;
        let owed = node.router.owed_to_closed_workers() + node.links.queued_frames();
        if open == 0 && owed == 0 {
            // Frames taken from the queues may still sit in the streams' buffers.
            tokio::time::sleep(SETTLE).await;
            info!(
                node = node.id,
                closed = closed.len(),
                took_ms = started.elapsed().as_millis() as u64,
                "drained"
            );
            return;
        }
        if Instant::now() >= deadline {
            warn!(
                node = node.id,
                open, owed, "drain grace over; exiting with work left"
            );
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until this node's own replica records the drain it committed. A write forwarded to
/// the leader returns once the leader applied it; until this replica applies it too, calls
/// routed here (by local callers, or handed back by [`crate::router::Router::deliver`]) are
/// not held, so a worker closed in that window would fail them with `invocation_stopped`.
async fn own_drain_applied(node: &Node, deadline: Instant) {
    let mut changes = node.managed.watch_changes();
    while !node.registry().is_draining(node.id) {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                warn!(node = node.id, "the drain is not applied here yet; closing workers anyway");
                return;
            }
        }
    }
}
