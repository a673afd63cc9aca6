//! Ending the connections of a revoked worker token on this node: each gets a WebSocket
//! Close with 1008 (policy violation), then its session ends through the normal disconnect
//! path, so its registrations leave the registry.

use std::sync::Arc;
use std::time::Duration;
use tracing::info;

use crate::gateway::connections::{Connections, Outbound};
use crate::ids::NodeId;

/// WebSocket close code for a connection whose token was revoked.
const CLOSE_POLICY: u16 = 1008;

/// A connection admitted just before the revocation applied here may register its handle
/// only after the first sweep (it was committing its own connection); a second sweep this
/// much later catches it.
const SECOND_SWEEP: Duration = Duration::from_secs(1);

/// Closes every local connection admitted with token `name`, now and once more shortly after.
pub async fn close_connections(node: NodeId, connections: Arc<Connections>, name: String) {
    let closed = sweep(&connections, &name);
    info!(node, token = %name, closed, "worker token revoked: closing its connections");
    tokio::time::sleep(SECOND_SWEEP).await;
    let late = sweep(&connections, &name);
    if late > 0 {
        info!(node, token = %name, closed = late, "closed late connections of a revoked worker token");
    }
}

fn sweep(connections: &Connections, name: &str) -> usize {
    let mut closed = 0;
    for handle in connections.handles() {
        if handle.grant.token_name() != Some(name) || handle.cancel.is_cancelled() {
            continue;
        }
        // Queued first (a close frame always fits), so the writer sends it before the
        // session's own close.
        let _ = handle.outbox.push(Outbound::Close {
            code: CLOSE_POLICY,
            reason: format!("worker token '{name}' was revoked"),
        });
        handle.cancel.cancel();
        closed += 1;
    }
    closed
}
