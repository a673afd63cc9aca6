//! `quorum cluster leave` and `remove NODE` move the node's managed workers first: the node is
//! recorded as draining, so the leader places its workers elsewhere and its agent hands each
//! over (the replacement registers, then the old copy stops; see `handover.rs`). Only a node
//! that answers is evacuated this way: a silent one may be cut off and still running its
//! copies, which must then wait for the purge, as after any node loss.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use crate::cluster::membership;
use crate::ids::NodeId;
use crate::node::Node;
use crate::registry::Command;
use crate::rpc::pb::StatusRequest;

/// How long a removal waits for the node's managed workers to move before it goes on anyway.
pub const MOVE_BUDGET: Duration = Duration::from_secs(30);
/// How long the node to be removed may take to answer the liveness question.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Moves `target`'s managed workers to other nodes before it leaves the cluster; returns at
/// once when it runs none, or does not answer. A node already draining for a shutdown is not
/// marked again, but its removal still waits for the move. Returns whether this call marked
/// the node draining (then [`undrain`] must follow if the removal fails).
pub async fn move_workers_off(node: &Arc<Node>, target: NodeId) -> bool {
    if placed_on(node, target) == 0 {
        return false;
    }
    if target != node.id && !answers(node, target).await {
        info!(
            node = node.id,
            target, "the node to remove does not answer; its managed workers move after its purge"
        );
        return false;
    }
    let started = Instant::now();
    let marked = !node.registry().is_draining(target);
    if marked {
        if let Err(err) = node.commit(Command::NodeDraining { node: target }).await {
            warn!(node = node.id, target, error = %err, "cannot record the node as draining; removing it without moving its managed workers first");
            return false;
        }
    }
    let deadline = started + MOVE_BUDGET;
    let mut changes = node.managed.watch_changes();
    while Instant::now() < deadline {
        if placed_on(node, target) == 0 && !still_running_on(node, target) {
            info!(
                node = node.id,
                target,
                took_ms = started.elapsed().as_millis() as u64,
                "managed workers moved off the node before its removal"
            );
            return marked;
        }
        // Woken by the next applied registry change (a placement, a registration, a close).
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
    warn!(
        node = node.id,
        target, "managed workers did not all move within the budget; removing the node anyway"
    );
    marked
}

/// The removal failed after [`move_workers_off`] marked `target` draining: it serves again
/// (its names and functions are its own again, and the leader places on it again).
pub async fn undrain(node: &Node, target: NodeId) {
    match node.commit(Command::NodeUndrained { node: target }).await {
        Ok(_) => info!(
            node = node.id,
            target, "removal failed: the node serves again"
        ),
        Err(err) => {
            warn!(node = node.id, target, error = %err, "removal failed and the node could not be recorded as serving again")
        }
    }
}

/// Managed workers placed on `target`.
fn placed_on(node: &Node, target: NodeId) -> usize {
    node.registry()
        .managed_workers()
        .filter(|m| m.placement == Some(target))
        .count()
}

/// Whether a connection on `target` still announces a managed worker's name (its old copy has
/// not stopped yet).
fn still_running_on(node: &Node, target: NodeId) -> bool {
    let registry = node.registry();
    !super::ready::ready_on(&registry, target).is_empty()
}

async fn answers(node: &Node, target: NodeId) -> bool {
    let Some(address) = membership::address_of(node, target) else {
        return false;
    };
    node.peers
        .unary(&address, PROBE_TIMEOUT, |mut client| async move {
            client.status(StatusRequest {}).await
        })
        .await
        .is_ok()
}
