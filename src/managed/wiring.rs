//! Starts a node's managed-worker side once its worker port is bound: opens the managed
//! workers' door (`door.rs`), installs the supervisor (its workers connect through that door,
//! with a local token when the worker port asks for one), then commits the node's labels, which
//! tell the leader this node can run managed workers, and spawns the node agent and the
//! leader's placement loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::supervisor::{Supervisor, SupervisorSettings};
use super::{agent, door, leader};
use crate::auth::worker_gate::WorkerAuth;
use crate::node::Node;
use crate::registry::Command;

/// The longest wait between two attempts to commit this node's labels.
const LABELS_RETRY_MAX: Duration = Duration::from_secs(10);

/// Wires managed workers into a node that serves workers on `listen`.
pub async fn start(node: &Arc<Node>, listen: SocketAddr) {
    match install_supervisor(node, listen).await {
        Ok(supervisor) => {
            // Usually committed before the node says it is ready; else retried in the background.
            let announced = commit_labels(node).await;
            tokio::spawn(announce_then_run(node.clone(), supervisor, announced));
        }
        Err(err) => {
            warn!(node = node.id, error = %err, "cannot start the managed-worker supervisor; this node runs no managed workers")
        }
    }
    tokio::spawn(leader::run(node.clone()));
}

/// Why this node cannot run managed workers.
#[derive(Debug, thiserror::Error)]
enum WiringError {
    #[error("cannot open a loopback listener for managed workers: {0}")]
    Door(#[from] std::io::Error),
    #[error(transparent)]
    Supervisor(#[from] super::supervisor::SupervisorError),
}

/// Opens the door and installs the supervisor; the agent starts once the labels are committed.
async fn install_supervisor(
    node: &Arc<Node>,
    listen: SocketAddr,
) -> Result<Supervisor, WiringError> {
    let tls = node.config.worker_tls.is_some();
    let url = door::open(node, listen, tls).await?;
    let gate = &node.worker_gate;
    let local_tokens = (gate.mode() == WorkerAuth::Token).then(|| gate.local_tokens());
    let settings = SupervisorSettings::from_config(&node.config, url, local_tokens);
    Ok(node.managed.install(Supervisor::new(settings)?).clone())
}

/// Runs the node's agent once its labels are committed (retrying until they are): a node runs
/// managed workers only while the registry lists it as able to, so the leader may move the
/// workers of a node it has waited for in vain (`stranded.rs`) without risking two copies.
async fn announce_then_run(node: Arc<Node>, supervisor: Supervisor, mut announced: bool) {
    let mut delay = Duration::from_secs(1);
    while !announced {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = node.shutdown.cancelled() => return,
        }
        delay = (delay * 2).min(LABELS_RETRY_MAX);
        announced = commit_labels(&node).await;
    }
    agent::run(node, supervisor).await;
}

/// Commits this node's labels when the registry does not have them yet (empty labels too: an
/// entry is what makes the node a candidate for placement); says whether the registry has them.
async fn commit_labels(node: &Node) -> bool {
    let labels = node.config.node_labels.clone();
    let known = node.registry().node_labels().get(&node.id).cloned();
    if known.as_ref() == Some(&labels) {
        return true;
    }
    match node
        .commit(Command::NodeLabels {
            node: node.id,
            labels,
        })
        .await
    {
        Ok(_) => {
            info!(node = node.id, labels = ?node.config.node_labels, "node labels committed");
            true
        }
        Err(err) => {
            warn!(node = node.id, error = %err, "node labels not committed yet; this node runs no managed workers until they are");
            false
        }
    }
}
