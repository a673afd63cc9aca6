//! The leader's reconcile loop: places unplaced managed workers, moves them off draining
//! nodes and off nodes stranded without a running supervisor, reports the unplaceable ones. Runs on every node and acts only while this node
//! leads, so there is one decision maker at a time; what it decides is committed, and every
//! node's agent acts on the committed placement only.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::placement;
use super::stranded::{Stranded, STRANDED_AFTER};
use crate::cluster::lease::LeaseTimings;
use crate::ids::NodeId;
use crate::node::Node;
use crate::registry::Command;

/// How often the leader looks again without being woken.
const TICK: Duration = Duration::from_millis(500);

/// Places managed workers while this node leads, until it shuts down. Looks again after each
/// batch of applied registry changes, and every [`TICK`] (membership and contact change
/// without a registry change).
pub async fn run(node: Arc<Node>) {
    let mut changes = node.managed.watch_changes();
    let mut stranded = Stranded::default();
    loop {
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep(TICK) => {}
            _ = node.shutdown.cancelled() => return,
        }
        if !node.is_leader() || node.is_fenced() {
            stranded.clear();
            continue;
        }
        let commands = {
            let live = live_members(&node);
            let registry = node.registry();
            let given_up = stranded.update(&registry, Instant::now(), STRANDED_AFTER);
            placement::decide(&registry, &live, &given_up)
        };
        for command in commands {
            log_decision(&node, &command);
            if let Err(err) = node.commit(command).await {
                warn!(node = node.id, error = %err, "managed worker placement not committed");
                break;
            }
        }
    }
}

/// The members that answered this leader's lease probe recently (within the fence lease, so
/// a node that has just died is not chosen), and the leader itself.
fn live_members(node: &Node) -> BTreeSet<NodeId> {
    let members: Vec<NodeId> = node
        .member_addresses()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let strict = LeaseTimings {
        fence_after: node.config.lease.fence_after,
        purge_after: node.config.lease.fence_after,
    };
    let silent = node
        .member_contact
        .silent(members.iter().copied(), Instant::now(), strict);
    members
        .into_iter()
        .filter(|m| *m == node.id || !silent.contains(m))
        .collect()
}

fn log_decision(node: &Node, command: &Command) {
    match command {
        Command::ManagedWorkerPlaced {
            name, node: target, ..
        } => {
            info!(node = node.id, worker_name = %name, placed_on = target, "managed worker placed")
        }
        Command::ManagedWorkerUnplaceable { name, reason, .. } => {
            warn!(node = node.id, worker_name = %name, reason = %reason, "managed worker unplaceable")
        }
        _ => {}
    }
}
