//! The discovery trigger types: `engine::workers-available` and
//! `engine::functions-available`, fired from committed registry changes.
//!
//! Exactly one node fires each binding: the node holding the binding's registering
//! worker, or, for durable bindings, the Raft leader. Each fire is an ordinary
//! engine-started call whose answer is thrown away.

use serde_json::{json, Value};
use std::sync::Arc;

use super::rows;
use crate::ids::WorkerId;
use crate::node::Node;
use crate::registry::{reserved, Registry, WorkerEventKind};
use crate::router::{CallRequest, Caller, Routed};

/// Fires `engine::workers-available` for one lifecycle event.
pub async fn workers_changed(node: &Arc<Node>, worker: WorkerId, kind: WorkerEventKind) {
    fire(
        node,
        reserved::WORKERS_AVAILABLE,
        |_| json!({"event": kind.as_str(), "worker_id": worker.to_string()}),
    )
    .await;
}

/// Fires `engine::functions-available` with the full current function list.
pub async fn functions_changed(node: &Arc<Node>) {
    fire(node, reserved::FUNCTIONS_AVAILABLE, |registry| {
        let functions: Vec<Value> = rows::all_functions(registry)
            .iter()
            .map(|v| rows::function_summary(registry, v))
            .collect();
        json!({"event": "functions_changed", "functions": functions})
    })
    .await;
}

/// Calls every binding of `trigger_type` this node fires. The payload is built only
/// when there is a binding to fire, so a change nobody watches costs nothing.
async fn fire(node: &Arc<Node>, trigger_type: &str, payload: impl FnOnce(&Registry) -> Value) {
    let is_leader = node.is_leader();
    let targets: Vec<CallRequest> = {
        let registry = node.registry();
        let bindings: Vec<&crate::registry::Trigger> = registry
            .builtin_bindings(trigger_type)
            .filter(|t| match t.owner {
                Some(owner) => node.connections.is_local(owner),
                None => is_leader,
            })
            .collect();
        if bindings.is_empty() {
            return;
        }
        let payload = payload(&registry);
        bindings
            .into_iter()
            .map(|t| CallRequest {
                function_id: t.function_id.clone(),
                namespace: t.target_namespace.clone(),
                data: payload.clone(),
                metadata: t.metadata.clone(),
                traceparent: None,
                baggage: None,
            })
            .collect()
    };
    for request in targets {
        if let Routed::Builtin(_, request) = node.router.route(Caller::Discard, request).await {
            // A discovery binding aimed at a built-in has nothing to deliver.
            tracing::debug!(function_id = %request.function_id, "discovery binding targets a built-in; skipped");
        }
    }
}
