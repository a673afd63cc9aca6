//! Starts a node's managed-worker side once its worker port is bound: commits the node's
//! labels, opens the managed workers' door (`door.rs`), installs the supervisor (its workers
//! connect through that door, with a local token when the worker port asks for one), and
//! spawns the node agent and the leader's placement loop.

use std::net::SocketAddr;
use std::sync::Arc;

use tracing::{info, warn};

use super::supervisor::{Supervisor, SupervisorSettings};
use super::{agent, door, leader};
use crate::auth::worker_gate::WorkerAuth;
use crate::node::Node;
use crate::registry::Command;

/// Wires managed workers into a node that serves workers on `listen`.
pub async fn start(node: &Arc<Node>, listen: SocketAddr) {
    commit_labels(node).await;
    if let Err(err) = install_supervisor(node, listen).await {
        warn!(node = node.id, error = %err, "cannot start the managed-worker supervisor; this node runs no managed workers");
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

async fn install_supervisor(node: &Arc<Node>, listen: SocketAddr) -> Result<(), WiringError> {
    let tls = node.config.worker_tls.is_some();
    let url = door::open(node, listen, tls).await?;
    let gate = &node.worker_gate;
    let local_tokens = (gate.mode() == WorkerAuth::Token).then(|| gate.local_tokens());
    let settings = SupervisorSettings::from_config(&node.config, url, local_tokens);
    let supervisor = node.managed.install(Supervisor::new(settings)?).clone();
    tokio::spawn(agent::run(node.clone(), supervisor));
    Ok(())
}

/// Commits this node's labels when the registry does not have them yet.
async fn commit_labels(node: &Node) {
    let labels = node.config.node_labels.clone();
    let known = node.registry().node_labels().get(&node.id).cloned();
    if known.unwrap_or_default() == labels {
        return;
    }
    match node
        .commit(Command::NodeLabels {
            node: node.id,
            labels,
        })
        .await
    {
        Ok(_) => info!(node = node.id, labels = ?node.config.node_labels, "node labels committed"),
        Err(err) => {
            warn!(node = node.id, error = %err, "node labels not committed; managed workers needing them are not placed here")
        }
    }
}
