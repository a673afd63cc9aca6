//! `engine::workers::list` and `engine::workers::info`.

use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

use super::rows;
use crate::ids::DEFAULT_NAMESPACE;
use crate::node::Node;
use crate::protocol::error::EngineError;

#[derive(Debug, Default, Deserialize)]
pub struct ListInput {
    #[serde(default)]
    search: Option<String>,
    #[serde(default)]
    runtime: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

pub fn list(node: &Arc<Node>, input: ListInput) -> Result<Value, EngineError> {
    let registry = node.registry();
    let search = input.search.map(|s| s.to_lowercase());
    let mut workers: Vec<_> = registry
        .workers()
        .filter(|w| w.meta.as_ref().is_some_and(|m| m.pid.is_some()))
        .map(|w| (w, node.router.load(w.id)))
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
    workers.sort_by_key(|(w, _)| {
        let name = w.meta.as_ref().and_then(|m| m.name.clone());
        (name.unwrap_or_else(|| w.id.to_string()), w.id)
    });
    let rows: Vec<Value> = workers
        .into_iter()
        .map(|(w, load)| rows::worker_row(&registry, w, load))
        .collect();
    Ok(json!({ "workers": rows }))
}

#[derive(Debug, Deserialize)]
pub struct InfoInput {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

pub fn info(node: &Arc<Node>, input: InfoInput) -> Result<Value, EngineError> {
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
    let load = node.router.load(worker.id);
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
