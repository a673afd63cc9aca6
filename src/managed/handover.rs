//! The drain's hand-over of a managed worker: the replacement starts on another node first,
//! and the local copy stops only once the replacement is registered and the local copy has
//! no call left in flight, so a rolling restart loses no call.
//!
//! The registry rule that makes it possible: a name lease, and the function ids, held by a
//! worker on a draining node pass to a newcomer that announces (registers) the same. From that
//! commit on, new calls go to the replacement; the calls the local copy is executing finish
//! here. Everything is bounded by the drain grace: past it the local copy is stopped anyway.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::ready::connections_named;
use super::supervisor::Supervisor;
use crate::ids::NodeId;
use crate::node::Node;
use crate::registry::Registry;

/// How often the hand-over looks at the router's load of the local copy.
const POLL: Duration = Duration::from_millis(50);

/// Calls routed just before the replacement took the functions over may still be on their way
/// to the local copy: it waits this long after the take-over before it counts its calls.
const SETTLE: Duration = Duration::from_millis(300);

/// How long a draining node waits for the leader to move a managed worker before it treats
/// the worker as having nowhere to go (and lets the drain close it like any worker).
pub const DECISION_WAIT: Duration = Duration::from_secs(3);

/// Whether the drain must leave `worker`'s connection open for now: it belongs to a managed
/// worker that is being handed over from this node (the agent stops it once the replacement is
/// ready), or whose move the leader may still decide (`deciding`).
pub fn holds_back(
    registry: &Registry,
    me: NodeId,
    worker: crate::ids::WorkerId,
    deciding: bool,
) -> bool {
    let Some(name) = super::ready::is_managed_connection(registry, worker) else {
        return false;
    };
    match registry.managed_worker(&name).and_then(|m| m.placement) {
        Some(placed) if placed != me => true,
        Some(_) => deciding,
        None => false,
    }
}

/// Waits until `name` is registered on `to` (or the placement moves elsewhere, or `deadline`),
/// then until the local copy executes no call, then stops it.
pub async fn hand_over(
    node: Arc<Node>,
    supervisor: Supervisor,
    name: String,
    to: NodeId,
    deadline: Instant,
) {
    let started = Instant::now();
    let mut replaced = false;
    let mut changes = node.managed.watch_changes();
    while Instant::now() < deadline && !node.shutdown.is_cancelled() {
        let seen = replacement(&node.registry(), &name, node.id);
        match seen {
            Replacement::Registered => {
                replaced = true;
                break;
            }
            Replacement::Moved => break,
            // Woken by the next applied registry change (a registration, a new placement).
            Replacement::Starting => tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = node.shutdown.cancelled() => {}
            },
        }
    }
    if replaced {
        info!(node = node.id, worker_name = %name, to, waited_ms = started.elapsed().as_millis() as u64,
            "managed worker's replacement is registered; letting the local copy finish its calls");
        tokio::time::sleep(SETTLE.min(deadline.saturating_duration_since(Instant::now()))).await;
        while Instant::now() < deadline && busy(&node, &name) {
            tokio::time::sleep(POLL).await;
        }
    } else {
        warn!(node = node.id, worker_name = %name, to, "managed worker's replacement did not register in time; stopping the local copy");
    }
    supervisor.stop(&name).await;
    info!(node = node.id, worker_name = %name, took_ms = started.elapsed().as_millis() as u64,
        "managed worker handed over");
}

enum Replacement {
    Starting,
    Registered,
    /// The worker is removed, unplaced or placed back here: nothing to wait for.
    Moved,
}

/// Where the replacement stands, wherever the worker is placed now (a move to a third node
/// is followed: the hand-over waits for that node's copy).
fn replacement(registry: &Registry, name: &str, me: NodeId) -> Replacement {
    match registry.managed_worker(name).and_then(|m| m.placement) {
        Some(to) if to != me => {
            if connections_named(registry, to, name).is_empty() {
                Replacement::Starting
            } else {
                Replacement::Registered
            }
        }
        _ => Replacement::Moved,
    }
}

/// Whether a local connection of `name` still executes or owes calls.
fn busy(node: &Node, name: &str) -> bool {
    let local = connections_named(&node.registry(), node.id, name);
    local.into_iter().any(|worker| {
        let load = node.router.load(worker);
        load.executing + load.waiting > 0
    })
}
