//! Calls a draining node routes again: another node forwarded a call for a worker that is
//! moving off this node (or already left it), so this node hands the call back to itself,
//! waits for the worker to be registered elsewhere, and forwards it there. The answer comes
//! back through this node, so its drain waits for such calls, and the caller's node keeps
//! them when the worker's old connection goes (see `Router::worker_gone`).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{CallRequest, Caller, Routed, Router};
use crate::ids::NodeId;
use crate::protocol::error::EngineError;

/// A forwarded call handed back to be routed again from here, on a task of its own (it
/// may wait for its worker to move). It counts as held from the moment it is handed back,
/// so a drain never ends between the hand-back and the call being forwarded again.
#[must_use = "a handed-back call is routed with Router::reroute"]
pub struct Reroute {
    caller: Caller,
    request: CallRequest,
}

impl Router {
    /// Hands a forwarded call back to be routed again; counted until [`Router::reroute`].
    pub(super) fn hand_back(&self, caller: Caller, request: CallRequest) -> Reroute {
        self.holding.fetch_add(1, Ordering::Relaxed);
        Reroute { caller, request }
    }

    /// Routes a forwarded call again, from here, once its owner has moved (or the hold ran
    /// out); see [`Router::deliver`].
    pub async fn reroute(&self, call: Reroute) {
        let Reroute { caller, request } = call;
        let routed = self.route(caller, request).await;
        // From here on a forwarded call is counted by `relayed_calls`, an answer by the links.
        self.holding.fetch_sub(1, Ordering::Relaxed);
        if let Routed::Builtin(caller, request) = routed {
            // Forwarded calls are never built-ins; answer rather than run one here.
            let err = EngineError::FunctionNotFound {
                id: request.function_id.clone(),
                namespace: request.namespace.clone(),
                elsewhere: String::new(),
            };
            self.answer(
                caller,
                &request.function_id,
                Err(err.body()),
                Instant::now(),
            )
            .await;
        }
    }

    /// Calls routed again from here whose answers other nodes still wait for.
    pub(super) fn relayed_calls(&self) -> usize {
        self.lock_table().relayed(self.node)
    }

    /// The other nodes that drain now: calls forwarded to them are routed again there.
    pub(super) fn draining_elsewhere(&self) -> BTreeSet<NodeId> {
        let mut draining = self
            .registry
            .read()
            .map(|r| r.draining_nodes())
            .unwrap_or_default();
        draining.remove(&self.node);
        draining
    }
}
