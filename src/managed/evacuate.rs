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
use crate::registry::{Command, DrainCause};
use crate::rpc::pb::StatusRequest;

/// How long a removal waits for the node's managed workers to move before it goes on anyway.
pub const MOVE_BUDGET: Duration = Duration::from_secs(30);
/// How long the node to be removed may take to answer the liveness question.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The drain one removal attempt recorded: what its undo must name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemovalMark {
    /// The removal's unique id (the `DrainCause::Removal` it committed).
    pub id: u64,
}

/// Moves `target`'s managed workers to other nodes before it leaves the cluster; returns at
/// once when it runs none, or does not answer. A node already draining (for its shutdown or
/// another removal) is not marked again, but its removal still waits for the move. Returns the
/// mark this call recorded, if it marked the node draining (then [`undrain`] must follow with
/// it if the removal fails).
pub async fn move_workers_off(node: &Arc<Node>, target: NodeId) -> Option<RemovalMark> {
    if placed_on(node, target) == 0 {
        return None;
    }
    if target != node.id && !answers(node, target).await {
        info!(
            node = node.id,
            target, "the node to remove does not answer; its managed workers move after its purge"
        );
        return None;
    }
    let started = Instant::now();
    let marked = if node.registry().is_draining(target) {
        None
    } else {
        let mark = match new_mark() {
            Ok(mark) => mark,
            Err(err) => {
                warn!(node = node.id, target, error = %err, "cannot draw a removal id; removing the node without moving its managed workers first");
                return None;
            }
        };
        let cause = Some(DrainCause::Removal { id: mark.id });
        let draining = Command::NodeDraining {
            node: target,
            cause,
        };
        if let Err(err) = node.commit(draining).await {
            warn!(node = node.id, target, error = %err, "cannot record the node as draining; removing it without moving its managed workers first");
            return None;
        }
        Some(mark)
    };
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

/// The removal failed after [`move_workers_off`] marked `target` draining with `mark`: it
/// serves again (its names and functions are its own again, and the leader places on it
/// again), unless it drains for something else by now (its own shutdown, a newer removal).
pub async fn undrain(node: &Node, target: NodeId, mark: RemovalMark) {
    let undo = Command::NodeUndrained {
        node: target,
        removal: Some(mark.id),
    };
    match node.commit(undo).await {
        Ok(outcome) => match outcome.refusal {
            None => info!(
                node = node.id,
                target,
                removal = mark.id,
                "removal failed: the node serves again"
            ),
            Some(reason) => info!(
                node = node.id,
                target,
                removal = mark.id,
                reason,
                "removal failed; the node keeps draining"
            ),
        },
        Err(err) => {
            warn!(node = node.id, target, removal = mark.id, error = %err, "removal failed and the node could not be recorded as serving again")
        }
    }
}

/// A fresh removal mark: a random id, so two removal attempts (from any nodes) never share one.
fn new_mark() -> Result<RemovalMark, getrandom::Error> {
    Ok(RemovalMark {
        id: getrandom::u64()?,
    })
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
