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
        move |_| json!({"event": kind.as_str(), "worker_id": worker.to_string()}),
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

/// Where one fire of a binding goes: everything of the binding the call needs, copied so
/// the registry's lock is not held while the payload is built.
struct Target {
    function_id: String,
    namespace: String,
    metadata: Option<Value>,
}

/// Calls every binding of `trigger_type` this node fires. The payload is built only
/// when there is a binding to fire, so a change nobody watches costs nothing, and it is
/// built on the blocking pool: a full function list can be large, and the runtime threads
/// carry everyone's calls. (The events loop awaits it, so one is built at a time; it takes
/// no built-in query slot, so a client flooding lists cannot hold up the events loop.)
async fn fire(
    node: &Arc<Node>,
    trigger_type: &str,
    payload: impl FnOnce(&Registry) -> Value + Send + 'static,
) {
    let is_leader = node.is_leader();
    let targets: Vec<Target> = node
        .registry()
        .builtin_bindings(trigger_type)
        .filter(|t| match t.owner {
            Some(owner) => node.connections.is_local(owner),
            None => is_leader,
        })
        .map(|t| Target {
            function_id: t.function_id.clone(),
            namespace: t.target_namespace.clone(),
            metadata: t.metadata.clone(),
        })
        .collect();
    if targets.is_empty() {
        return;
    }
    let Some(payload) = build_on_pool(node, payload).await else {
        return;
    };
    for target in targets {
        let request = CallRequest {
            function_id: target.function_id,
            namespace: target.namespace,
            data: payload.clone(),
            metadata: target.metadata,
            traceparent: None,
            baggage: None,
        };
        if let Routed::Builtin(_, request) = node.router.route(Caller::Discard, request).await {
            // A discovery binding aimed at a built-in has nothing to deliver.
            tracing::debug!(function_id = %request.function_id, "discovery binding targets a built-in; skipped");
        }
    }
}

/// Runs `payload` over the registry on the blocking pool; `None` if the build panicked.
async fn build_on_pool(
    node: &Arc<Node>,
    payload: impl FnOnce(&Registry) -> Value + Send + 'static,
) -> Option<Value> {
    let on_pool = node.clone();
    match tokio::task::spawn_blocking(move || payload(&on_pool.registry())).await {
        Ok(value) => Some(value),
        Err(err) => {
            tracing::warn!(node = node.id, error = %err, "building a discovery event failed");
            None
        }
    }
}
