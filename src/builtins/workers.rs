//! `engine::workers::list` and `engine::workers::info`.
//!
//! The registry says which workers exist and where; whether one is busy lives only on the node
//! holding its socket. Local facts come from the router; workers on other nodes get theirs
//! from that node's `LiveFacts`, asked with a short deadline ([`remote_loads`]).

use futures_util::future::join_all;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tracing::debug;

use super::rows;
use crate::cluster::membership;
use crate::ids::{NodeId, WorkerId, DEFAULT_NAMESPACE};
use crate::node::Node;
use crate::protocol::error::EngineError;
use crate::router::Load;
use crate::rpc::pb::LiveFactsRequest;

/// How long discovery waits for another node's live facts before showing its workers as
/// `available` with nothing in flight.
pub const LIVE_FACTS_TIMEOUT: Duration = Duration::from_millis(500);

/// In-flight counts of workers held by other nodes, asked of those nodes in parallel. A node
/// that does not answer in [`LIVE_FACTS_TIMEOUT`] contributes nothing, so its workers read as
/// available with 0 in flight.
pub async fn remote_loads(node: &Arc<Node>) -> HashMap<WorkerId, Load> {
    let nodes: BTreeSet<NodeId> = node
        .registry()
        .workers()
        .map(|w| w.node)
        .filter(|n| *n != node.id)
        .collect();
    let asks = nodes.into_iter().filter_map(|peer| {
        let addr = membership::address_of(node, peer)?;
        Some(async move {
            let reply = node
                .peers
                .unary(&addr, LIVE_FACTS_TIMEOUT, |mut client| async move {
                    client.live_facts(LiveFactsRequest {}).await
                })
                .await;
            (peer, reply)
        })
    });
    let mut loads = HashMap::new();
    for (peer, reply) in join_all(asks).await {
        match reply {
            Ok(reply) => {
                for facts in reply.workers {
                    let Ok(id) = facts.worker_id.parse::<uuid::Uuid>() else {
                        continue;
                    };
                    loads.insert(
                        WorkerId(id),
                        Load {
                            executing: usize::try_from(facts.executing).unwrap_or(usize::MAX),
                            waiting: usize::try_from(facts.waiting).unwrap_or(usize::MAX),
                        },
                    );
                }
            }
            Err(err) => {
                debug!(node = node.id, peer, error = %err, "no live facts from peer; its workers read as available")
            }
        }
    }
    loads
}

/// A worker's in-flight counts: the router's for a local one, the gathered ones otherwise.
fn load_of(
    node: &Node,
    remote: &HashMap<WorkerId, Load>,
    worker: &crate::registry::Worker,
) -> Load {
    if worker.node == node.id {
        node.router.load(worker.id)
    } else {
        remote.get(&worker.id).copied().unwrap_or_default()
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ListInput {
    #[serde(default)]
    search: Option<String>,
    #[serde(default)]
    runtime: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(flatten)]
    page: super::paging::Page,
}

pub async fn list(node: &Arc<Node>, input: ListInput) -> Result<Value, EngineError> {
    let remote = remote_loads(node).await;
    let registry = node.registry();
    let search = input.search.map(|s| s.to_lowercase());
    let mut workers: Vec<_> = registry
        .workers()
        .filter(|w| w.meta.as_ref().is_some_and(|m| m.pid.is_some()))
        .map(|w| (w, load_of(node, &remote, w)))
        .filter(|(w, load)| {
            let meta = w.meta.as_ref();
            let name = meta.and_then(|m| m.name.as_deref()).unwrap_or("");
            input
                .runtime
                .as_deref()
                .is_none_or(|r| meta.and_then(|m| m.runtime.as_deref()) == Some(r))
                && input
                    .status
                    .as_deref()
                    .is_none_or(|s| s == "connected" || s == rows::status(*load))
                && search
                    .as_deref()
                    .is_none_or(|s| name.to_lowercase().contains(s))
        })
        .collect();
    let sort_key = |w: &crate::registry::Worker| {
        let name = w.meta.as_ref().and_then(|m| m.name.clone());
        vec![name.unwrap_or_else(|| w.id.to_string()), w.id.to_string()]
    };
    workers.sort_by_cached_key(|(w, _)| sort_key(w));
    let (workers, next) = input.page.cut(workers, |(w, _)| sort_key(w))?;
    let rows: Vec<Value> = workers
        .into_iter()
        .map(|(w, load)| rows::worker_row(&registry, w, load))
        .collect();
    Ok(super::paging::answer("workers", rows, next))
}

#[derive(Debug, Deserialize)]
pub struct InfoInput {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

pub async fn info(node: &Arc<Node>, input: InfoInput) -> Result<Value, EngineError> {
    let remote = remote_loads(node).await;
    let registry = node.registry();
    let named: Vec<_> = registry
        .workers()
        .filter(|w| w.meta.as_ref().and_then(|m| m.name.as_deref()) == Some(input.name.as_str()))
        .collect();
    let ns_of = |w: &crate::registry::Worker| {
        w.namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.into())
    };
    let mut namespaces: Vec<String> = named.iter().map(|w| ns_of(w)).collect();
    namespaces.sort();
    let chosen = match &input.namespace {
        Some(ns) => named.iter().find(|w| &ns_of(w) == ns),
        None => named
            .iter()
            .find(|w| ns_of(w) == DEFAULT_NAMESPACE)
            .or(if named.len() == 1 {
                named.first()
            } else {
                None
            }),
    };
    let Some(worker) = chosen.copied() else {
        let message = if named.is_empty() {
            format!("Worker '{}' is not connected.", input.name)
        } else if input.namespace.is_some() {
            format!(
                "Worker '{}' is not connected in the requested namespace; it is connected in namespace(s): {}.",
                input.name,
                namespaces.join(", ")
            )
        } else {
            format!(
                "Worker '{}' is ambiguous: it is connected in namespace(s): {}. Pass `namespace` to disambiguate.",
                input.name,
                namespaces.join(", ")
            )
        };
        return Err(EngineError::NotFound(message));
    };
    let load = load_of(node, &remote, worker);
    let mut detail = rows::worker_row(&registry, worker, load);
    if let Value::Object(map) = &mut detail {
        if let Some(pid) = worker.meta.as_ref().and_then(|m| m.pid) {
            map.insert("pid".into(), json!(pid));
        }
        map.insert("internal".into(), json!(false));
    }
    let functions: Vec<Value> = rows::all_functions(&registry)
        .iter()
        .filter(|v| v.function.is_some_and(|f| f.owner == worker.id))
        .map(|v| rows::function_summary(&registry, v))
        .collect();
    let trigger_types: Vec<Value> = registry
        .trigger_types()
        .filter(|(_, t)| t.owner == Some(worker.id))
        .map(|(k, t)| rows::trigger_type_summary(&registry, k, t))
        .collect();
    let worker_ns = ns_of(worker);
    let served: Vec<String> = rows::worker_function_ids(&registry, worker.id);
    let registered_triggers: Vec<Value> = registry
        .triggers()
        .filter(|t| {
            t.provider.is_some()
                && t.target_namespace == worker_ns
                && served.contains(&t.function_id)
        })
        .map(|t| rows::registered_trigger(&registry, t))
        .collect();
    Ok(json!({
        "worker": detail,
        "functions": functions,
        "trigger_types": trigger_types,
        "registered_triggers": registered_triggers,
    }))
}
