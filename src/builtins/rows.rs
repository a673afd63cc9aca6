//! The row shapes discovery answers with, built from the registry and live facts.

use serde::Serialize;
use serde_json::{json, Map, Value};
use std::borrow::Cow;
use std::ops::Bound;

use crate::ids::{FunctionKey, TriggerTypeKey, WorkerId, DEFAULT_NAMESPACE};
use crate::registry::{reserved, Function, Registry, Trigger, TriggerType, Worker};
use crate::router::Load;

/// The owner's announced name, else the first `::` segment of the id.
pub fn worker_name(registry: &Registry, owner: Option<WorkerId>, id: &str) -> String {
    worker_name_of(registry, owner, id).to_string()
}

/// [`worker_name`] borrowed from the registry or the id, for rows built by the thousand.
pub fn worker_name_of<'a>(registry: &'a Registry, owner: Option<WorkerId>, id: &'a str) -> &'a str {
    owner
        .and_then(|w| registry.worker_name(w))
        .unwrap_or_else(|| id.split("::").next().unwrap_or(id))
}

/// One function for listing: a built-in (`function == None`) or a worker's.
pub struct FunctionView<'a> {
    /// Borrowed from the registry; owned only for built-ins, which have no entry there.
    pub key: Cow<'a, FunctionKey>,
    pub function: Option<&'a Function>,
}

/// Every function, built-ins first-class, sorted by (id, namespace).
pub fn all_functions(registry: &Registry) -> Vec<FunctionView<'_>> {
    functions_from(registry, Bound::Unbounded).collect()
}

/// The functions from `start` on, built-ins first-class, in
/// (id, namespace) order, read lazily: the registry's map is kept in that order, so
/// taking a page reads only the page.
pub fn functions_from<'a>(
    registry: &'a Registry,
    start: Bound<&FunctionKey>,
) -> impl Iterator<Item = FunctionView<'a>> {
    let mut builtins: Vec<FunctionKey> = reserved::BUILTIN_FUNCTIONS
        .iter()
        .map(|id| FunctionKey::new(DEFAULT_NAMESPACE, *id))
        .filter(|key| match start {
            Bound::Included(start) => key >= start,
            Bound::Excluded(start) => key > start,
            Bound::Unbounded => true,
        })
        .collect();
    builtins.sort();
    let builtins = builtins.into_iter().map(|key| FunctionView {
        key: Cow::Owned(key),
        function: None,
    });
    let registered = registry.functions_from(start).map(|(key, f)| FunctionView {
        key: Cow::Borrowed(key),
        function: Some(f),
    });
    Merged {
        left: builtins.peekable(),
        right: registered.peekable(),
    }
}

/// Two iterators of views, each sorted by key, merged into one sorted stream.
struct Merged<L: Iterator, R: Iterator> {
    left: std::iter::Peekable<L>,
    right: std::iter::Peekable<R>,
}

impl<'a, L, R> Iterator for Merged<L, R>
where
    L: Iterator<Item = FunctionView<'a>>,
    R: Iterator<Item = FunctionView<'a>>,
{
    type Item = FunctionView<'a>;

    fn next(&mut self) -> Option<FunctionView<'a>> {
        match (self.left.peek(), self.right.peek()) {
            (Some(l), Some(r)) if r.key < l.key => self.right.next(),
            (Some(_), _) => self.left.next(),
            (None, _) => self.right.next(),
        }
    }
}

/// The functions (built-in or a worker's) with this id, sorted by namespace: a range of
/// the registry, for the `info` lookups.
pub fn functions_with_id<'a>(registry: &'a Registry, id: &str) -> Vec<FunctionView<'a>> {
    let builtin = reserved::BUILTIN_FUNCTIONS
        .iter()
        .filter(|b| **b == id)
        .map(|b| FunctionView {
            key: Cow::Owned(FunctionKey::new(DEFAULT_NAMESPACE, *b)),
            function: None,
        });
    let mut views: Vec<FunctionView<'a>> = builtin
        .chain(registry.functions_with_id(id).map(|(key, f)| FunctionView {
            key: Cow::Borrowed(key),
            function: Some(f),
        }))
        .collect();
    views.sort_by(|a, b| a.key.namespace.cmp(&b.key.namespace));
    views
}

/// `FunctionSummary`: copied out of the registry, so a list renders its rows to JSON text
/// after the registry's lock is released (a Raft apply waiting for the write lock would
/// otherwise hold up every reader behind it). Fields in the order a `Value` would sort
/// them, so both forms are the same text.
#[derive(Debug, Serialize)]
pub struct FunctionSummary {
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    function_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Value>,
    namespace: String,
    worker_name: String,
}

/// The summary row of one function.
pub fn summary(registry: &Registry, view: &FunctionView<'_>) -> FunctionSummary {
    let function = view.function;
    FunctionSummary {
        description: function.and_then(|f| f.description.clone()),
        function_id: view.key.id.clone(),
        metadata: function
            .and_then(|f| f.metadata.as_ref())
            .filter(|m| !m.is_null())
            .cloned(),
        namespace: view.key.namespace.clone(),
        worker_name: worker_name(registry, function.map(|f| f.owner), &view.key.id),
    }
}

/// `FunctionSummary` as a value, for answers that add to it.
pub fn function_summary(registry: &Registry, view: &FunctionView<'_>) -> Value {
    serde_json::to_value(summary(registry, view)).unwrap_or(Value::Null)
}

/// `FunctionDetail`: the summary plus schemas and the bindings that target it.
pub fn function_detail(registry: &Registry, view: &FunctionView<'_>) -> Value {
    let mut row = function_summary(registry, view);
    if let (Value::Object(map), Some(f)) = (&mut row, view.function) {
        insert_some(map, "request_schema", f.request_format.clone());
        insert_some(map, "response_schema", f.response_format.clone());
        insert_some(map, "request_format", f.request_format.clone());
        insert_some(map, "response_format", f.response_format.clone());
    }
    let bindings: Vec<Value> = registry
        .triggers()
        .filter(|t| t.function_id == view.key.id && t.target_namespace == view.key.namespace)
        .map(|t| json!({"id": t.id, "trigger_type": t.trigger_type, "config": t.config}))
        .collect();
    if let Value::Object(map) = &mut row {
        map.insert("registered_triggers".into(), Value::Array(bindings));
    }
    row
}

/// `TriggerTypeSummary`.
pub fn trigger_type_summary(registry: &Registry, key: &TriggerTypeKey, t: &TriggerType) -> Value {
    json!({
        "id": key.id,
        "namespace": key.namespace,
        "worker_name": worker_name(registry, t.owner, &key.id),
        "description": t.description,
    })
}

/// `TriggerTypeDetail`.
pub fn trigger_type_detail(registry: &Registry, key: &TriggerTypeKey, t: &TriggerType) -> Value {
    let mut row = trigger_type_summary(registry, key, t);
    if let Value::Object(map) = &mut row {
        insert_some(
            map,
            "configuration_schema",
            t.trigger_request_format.clone(),
        );
        insert_some(map, "request_schema", t.call_request_format.clone());
        let instances = registry
            .triggers()
            .filter(|b| b.trigger_type == key.id && b.provider.is_some())
            .count();
        map.insert("instance_count".into(), json!(instances));
    }
    row
}

/// `RegisteredTrigger` (plus `metadata` and `namespace`, which the SDK's `TriggerInfo` reads).
pub fn registered_trigger(registry: &Registry, t: &Trigger) -> Value {
    let config_text = t.config.to_string();
    let config_summary = if config_text.chars().count() > 80 {
        format!("{}…", config_text.chars().take(80).collect::<String>())
    } else {
        config_text
    };
    let mut row = json!({
        "id": t.id,
        "trigger_type": t.trigger_type,
        "function_id": t.function_id,
        "worker_name": worker_name(registry, t.owner, &t.function_id),
        "config": t.config,
        "config_summary": config_summary,
        "namespace": t.target_namespace,
    });
    if let (Value::Object(map), Some(meta)) = (&mut row, &t.metadata) {
        map.insert("metadata".into(), meta.clone());
    }
    row
}

/// Lifecycle status as the iii docs describe it.
pub fn status(load: Load) -> &'static str {
    if load.executing > 0 {
        "busy"
    } else {
        "available"
    }
}

/// Ids of the functions a worker serves, sorted.
pub fn worker_function_ids(registry: &Registry, worker: WorkerId) -> Vec<String> {
    let mut ids: Vec<String> = registry
        .functions()
        .filter(|(_, f)| f.owner == worker)
        .map(|(k, _)| k.id.clone())
        .collect();
    ids.sort();
    ids
}

/// `WorkerRow` (with `functions`, which the Rust SDK's `WorkerInfo` requires).
pub fn worker_row(registry: &Registry, w: &Worker, load: Load) -> Value {
    let meta = w.meta.clone().unwrap_or_default();
    let functions = worker_function_ids(registry, w.id);
    let mut row = json!({
        "id": w.id.to_string(),
        "name": meta.name,
        "description": meta.description,
        "version": meta.version,
        "namespace": w.namespace.clone().unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
        "runtime": meta.runtime,
        "os": meta.os,
        "status": status(load),
        "function_count": functions.len(),
        "functions": functions,
        "connected_at_ms": w.connected_at_ms,
        "active_invocations": load.executing + load.waiting,
        "isolation": meta.isolation,
        "ip_address": w.ip_address,
    });
    if let Value::Object(map) = &mut row {
        insert_managed(registry, w, map);
    }
    row
}

/// A managed worker's row (the connection on the node it is placed on) also says so, with
/// that node, its restart count and how its last run ended.
fn insert_managed(registry: &Registry, w: &Worker, map: &mut Map<String, Value>) {
    let Some(name) = w.meta.as_ref().and_then(|m| m.name.as_deref()) else {
        return;
    };
    let Some(managed) = registry
        .managed_worker(name)
        .filter(|m| m.placement == Some(w.node))
    else {
        return;
    };
    map.insert("managed".into(), json!(true));
    map.insert("node".into(), json!(w.node));
    map.insert("restarts".into(), json!(managed.status.restarts));
    map.insert("last_exit".into(), json!(managed.status.last_exit));
}

fn insert_some(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(value) = value.filter(|v| !v.is_null()) {
        map.insert(key.to_string(), value);
    }
}
