//! Holding calls while their function moves off a draining node: a call whose owner sits on a
//! draining node, or whose function left one and has not been registered again, waits (up to
//! the hold) and is routed once the function is back elsewhere.

use std::time::Instant;
use tracing::debug;

use super::{CallRequest, Router};
use crate::ids::{FunctionKey, WorkerId};
use crate::registry::Resolution;

impl Router {
    /// Waits while the call's function is moving off a draining node (its owner sits on a
    /// draining node, or it left one and has not been registered again), for at most the
    /// hold; then resolves it as it stands.
    pub(super) async fn resolve_holding(&self, request: &CallRequest) -> Resolution {
        let (resolution, hold) = self.resolve_now(request);
        if !hold {
            return resolution;
        }
        self.holding
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let resolution = self.hold_until_moved(request).await;
        self.holding
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        resolution
    }

    async fn hold_until_moved(&self, request: &CallRequest) -> Resolution {
        let deadline = tokio::time::Instant::now() + self.hold;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (resolution, hold) = self.resolve_now(request);
            if !hold || tokio::time::Instant::now() >= deadline {
                return resolution;
            }
            debug!(function_id = %request.function_id, "call held: its worker is moving off a draining node");
            tokio::select! {
                _ = &mut changed => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Whether routing this call would wait for its function to move; callers that must
    /// not block (a socket's reader) route such calls on a task of their own.
    pub fn would_hold(&self, request: &CallRequest) -> bool {
        self.resolve_now(request).1
    }

    /// Resolves a call from the local replica, and says whether it should wait for its
    /// function to move off a draining node.
    fn resolve_now(&self, request: &CallRequest) -> (Resolution, bool) {
        let Ok(registry) = self.registry.read() else {
            return (Resolution::NotFound { elsewhere: vec![] }, false);
        };
        let resolution = registry.resolve_function(&request.namespace, &request.function_id);
        let hold = match &resolution {
            Resolution::Worker { node, .. } => registry.is_draining(*node),
            Resolution::NotFound { .. } => {
                match registry.moving_from(&request.namespace, &request.function_id) {
                    // A function that left long ago and never came back is not worth a wait.
                    Some(from) => !self.moving_expired(request, from),
                    None => false,
                }
            }
            Resolution::Builtin => false,
        };
        (resolution, hold)
    }

    /// Whether this node has been holding calls for a moving function longer than the hold.
    fn moving_expired(&self, request: &CallRequest, from: WorkerId) -> bool {
        let key = (
            FunctionKey::new(request.namespace.as_str(), request.function_id.as_str()),
            from,
        );
        let mut since = self.moving_since.lock().unwrap_or_else(|p| p.into_inner());
        let first = *since.entry(key).or_insert_with(Instant::now);
        if since.len() > 10_000 {
            since.retain(|_, at| at.elapsed() < self.hold);
        }
        first.elapsed() >= self.hold
    }

    /// Wakes calls on hold: the registry changed.
    pub fn registry_changed(&self) {
        self.changed.notify_waiters();
    }
}
