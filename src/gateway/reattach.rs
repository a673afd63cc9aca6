//! `reattach`: a reconnected SDK's claim on its previous connection. With the right token
//! the previous connection is retired wherever it lives, and answers owed to it follow
//! the new one; a wrong token against a live connection is ignored. The new connection
//! keeps its own identity either way.

use tracing::{info, warn};

use super::log_limit::{LogLimit, Noise};
use crate::auth::tokens::sha256_hex;
use crate::ids::WorkerId;
use crate::node::Node;
use crate::registry::Command;

/// What the `reattach` frame claimed.
pub struct Claim {
    pub previous: Option<String>,
    pub token: Option<String>,
}

impl Claim {
    /// Checks the claim made by `worker`'s connection and acts on it.
    pub async fn settle(self, node: &Node, worker: WorkerId, noise: &mut LogLimit) {
        let Some(previous) = self
            .previous
            .and_then(|p| uuid::Uuid::parse_str(&p).ok())
            .map(WorkerId)
        else {
            return;
        };
        if previous == worker {
            return;
        }
        let token = self.token;
        let (proven, live) = {
            let registry = node.registry();
            let old = registry.worker(previous);
            let proven = match (old, &token) {
                (Some(old), Some(token)) => old.token_hash == sha256_hex(token),
                _ => false,
            };
            (proven, old.is_some())
        };
        if !proven && live {
            if let Some(suppressed) = noise.admit(Noise::ForgedReattach) {
                warn!(node = node.id, worker_id = %worker, previous = %previous, suppressed, "reattach with a wrong token ignored");
            }
            return;
        }
        if proven {
            node.router.worker_gone(previous).await;
            let retired = Command::WorkerDisconnected { worker: previous };
            if let Err(err) = node.commit(retired).await {
                warn!(node = node.id, worker_id = %worker, error = %err, "could not retire the previous connection");
            }
            // The registry forgot it first: once the old socket closes, no list shows it.
            if let Some(old) = node.connections.get(previous) {
                old.cancel.cancel();
            }
        }
        // Nodes that keep answers for the previous connection (a drain closed it, or its
        // node died during its calls) check the token's hash and send them here.
        if let Some(token) = &token {
            let claim = Command::ReattachClaim {
                previous,
                token_hash: sha256_hex(token),
                successor: worker,
                node: node.id,
            };
            if let Err(err) = node.commit(claim).await {
                warn!(node = node.id, worker_id = %worker, previous = %previous, error = %err, "could not claim answers owed to the previous connection");
            }
        }
        if proven {
            info!(node = node.id, worker_id = %worker, previous = %previous, "previous connection retired by reattach");
        }
    }
}
