//! Starts a node's managed-worker side once its worker port is bound: installs the supervisor
//! (its workers connect to that port), then commits the node's labels, which tell the leader
//! this node can run managed workers, and spawns the node agent and the leader's placement loop.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::supervisor::{Supervisor, SupervisorSettings};
use super::{agent, leader};
use crate::node::Node;
use crate::registry::Command;

/// The longest wait between two attempts to commit this node's labels.
const LABELS_RETRY_MAX: Duration = Duration::from_secs(10);

/// Wires managed workers into a node that serves workers on `listen`.
pub async fn start(node: &Arc<Node>, listen: SocketAddr) {
    let mut settings = SupervisorSettings::from_config(&node.config);
    settings.worker_url = worker_url(node, listen);
    match Supervisor::new(settings) {
        Ok(supervisor) => {
            let supervisor = node.managed.install(supervisor).clone();
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

/// `III_URL` of this node's managed workers: its own worker port, on loopback when the port
/// listens on every address.
fn worker_url(node: &Node, listen: SocketAddr) -> String {
    let scheme = if node.config.worker_tls.is_some() {
        "wss"
    } else {
        "ws"
    };
    let ip = match listen.ip() {
        ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    format!("{scheme}://{}", SocketAddr::new(ip, listen.port()))
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
