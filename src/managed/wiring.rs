//! Starts a node's managed-worker side once its worker port is bound: installs the supervisor
//! (its workers connect to that port), then commits the node's labels, which tell the leader
//! this node can run managed workers, and spawns the node agent and the leader's placement loop.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tracing::{info, warn};

use super::supervisor::{Supervisor, SupervisorSettings};
use super::{agent, leader};
use crate::node::Node;
use crate::registry::Command;

/// Wires managed workers into a node that serves workers on `listen`.
pub async fn start(node: &Arc<Node>, listen: SocketAddr) {
    let mut settings = SupervisorSettings::from_config(&node.config);
    settings.worker_url = worker_url(node, listen);
    match Supervisor::new(settings) {
        Ok(supervisor) => {
            let supervisor = node.managed.install(supervisor).clone();
            commit_labels(node).await;
            tokio::spawn(agent::run(node.clone(), supervisor));
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

/// Commits this node's labels when the registry does not have them yet (empty labels too: an
/// entry is what makes the node a candidate for placement).
async fn commit_labels(node: &Node) {
    let labels = node.config.node_labels.clone();
    let known = node.registry().node_labels().get(&node.id).cloned();
    if known.as_ref() == Some(&labels) {
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
