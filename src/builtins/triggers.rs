//! Trigger types and bindings: listing, details, and durable bindings made by call.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

use super::paging::{self, Page};
use super::rows::{self, FunctionView};
use crate::ids::{FunctionKey, TriggerTypeKey, DEFAULT_NAMESPACE};
use crate::node::Node;
use crate::protocol::error::EngineError;
use crate::protocol::names::namespace_problem;
use crate::registry::{limits, Command};

/// How long `engine::register_trigger` waits for a worker provider's answer; silence
/// counts as success, as in the reference engine.
const PROVIDER_ANSWER_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Default, Deserialize)]
pub struct ListInput {
    #[serde(default)]
    search: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    worker: Option<String>,
    #[serde(default)]
    trigger_type: Option<String>,
    #[serde(default)]
    function_id: Option<String>,
    #[serde(default)]
    include_internal: Option<bool>,
    #[serde(flatten)]
    page: Page,
}

/// `engine::trigger-types::list`: every advertised trigger type.
pub fn list_types(node: &Arc<Node>, input: ListInput) -> Result<Value, EngineError> {
    let registry = node.registry();
    let include_internal = input.include_internal.unwrap_or(false);
    let needle = input.search.map(|s| s.to_lowercase());
    let mut types: Vec<_> = registry
        .trigger_types()
        .filter(|(k, _)| include_internal || !k.id.starts_with("engine::"))
        .filter(|(k, _)| input.prefix.as_deref().is_none_or(|p| k.id.starts_with(p)))
        .filter(|(k, t)| {
            input
                .worker
                .as_deref()
                .is_none_or(|w| rows::worker_name(&registry, t.owner, &k.id) == w)
        })
        .filter(|(k, t)| {
            needle.as_deref().is_none_or(|n| {
                k.id.to_lowercase().contains(n) || t.description.to_lowercase().contains(n)
            })
        })
        .collect();
    types.sort_by(|(a, _), (b, _)| (&a.id, &a.namespace).cmp(&(&b.id, &b.namespace)));
    let (types, next) = input
        .page
        .cut(types, |(k, _)| vec![k.id.clone(), k.namespace.clone()])?;
    let rows: Vec<Value> = types
        .into_iter()
        .map(|(k, t)| rows::trigger_type_summary(&registry, k, t))
        .collect();
    Ok(paging::answer("trigger_types", rows, next))
}

#[derive(Debug, Deserialize)]
pub struct TypeInfoInput {
    id: String,
    #[serde(default)]
    namespace: Option<String>,
}

/// `engine::triggers::info`: one trigger type in detail.
pub fn type_info(node: &Arc<Node>, input: TypeInfoInput) -> Result<Value, EngineError> {
    let registry = node.registry();
    let namespace = input.namespace.unwrap_or_else(|| DEFAULT_NAMESPACE.into());
    let key = TriggerTypeKey::new(namespace.clone(), input.id.clone());
    match registry.trigger_type(&key) {
        Some(t) => Ok(rows::trigger_type_detail(&registry, &key, t)),
        None => Err(EngineError::NotFound(format!(
            "Trigger type '{}' is not registered in namespace '{namespace}'.",
            input.id
        ))),
    }
}

/// `engine::triggers::list` and `engine::registered-triggers::list`: live bindings.
pub fn list_bindings(node: &Arc<Node>, input: ListInput, key: &str) -> Result<Value, EngineError> {
    let registry = node.registry();
    let include_internal = input.include_internal.unwrap_or(false);
    let needle = input.search.map(|s| s.to_lowercase());
    // `triggers()` is sorted by id, the order of the answer and of its cursor.
    let bindings: Vec<_> = registry
        .triggers()
        .filter(|t| t.provider.is_some())
        .filter(|t| include_internal || !t.function_id.starts_with("engine::"))
        .filter(|t| {
            input
                .trigger_type
                .as_deref()
                .is_none_or(|x| t.trigger_type == x)
        })
        .filter(|t| {
            input
                .function_id
                .as_deref()
                .is_none_or(|x| t.function_id == x)
        })
        .filter(|t| {
            input
                .worker
                .as_deref()
                .is_none_or(|w| rows::worker_name(&registry, t.owner, &t.function_id) == w)
        })
        .filter(|t| {
            needle.as_deref().is_none_or(|n| {
                [&t.id, &t.trigger_type, &t.function_id]
                    .iter()
                    .any(|field| field.to_lowercase().contains(n))
            })
        })
        .collect();
    let (bindings, next) = input.page.cut(bindings, |t| vec![t.id.clone()])?;
    let rows: Vec<Value> = bindings
        .into_iter()
        .map(|t| rows::registered_trigger(&registry, t))
        .collect();
    Ok(paging::answer(key, rows, next))
}

#[derive(Debug, Deserialize)]
pub struct BindingInfoInput {
    id: String,
}

/// `engine::registered-triggers::info`.
pub fn binding_info(node: &Arc<Node>, input: BindingInfoInput) -> Result<Value, EngineError> {
    let registry = node.registry();
    let Some(t) = registry.trigger(&input.id) else {
        return Err(EngineError::NotFound(format!(
            "Registered trigger '{}' was not found.",
            input.id
        )));
    };
    let trigger = t
        .provider
        .as_ref()
        .and_then(|k| {
            registry
                .trigger_type(k)
                .map(|tt| rows::trigger_type_detail(&registry, k, tt))
        })
        .unwrap_or(Value::Null);
    let key = FunctionKey::new(t.target_namespace.clone(), t.function_id.clone());
    let function = registry
        .function(&key)
        .map(|f| {
            rows::function_detail(
                &registry,
                &FunctionView {
                    key: std::borrow::Cow::Borrowed(&key),
                    function: Some(f),
                },
            )
        })
        .unwrap_or(Value::Null);
    let mut row = json!({
        "id": t.id,
        "trigger_type": t.trigger_type,
        "function_id": t.function_id,
        "worker_name": rows::worker_name(&registry, t.owner, &t.function_id),
        "config": t.config,
        "trigger": trigger,
        "function": function,
    });
    if let (Value::Object(map), Some(meta)) = (&mut row, &t.metadata) {
        map.insert("metadata".into(), meta.clone());
    }
    Ok(row)
}

#[derive(Debug, Deserialize, Serialize)]
pub struct RegisterInput {
    trigger_type: String,
    function_id: String,
    #[serde(default)]
    config: Option<Value>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    trigger_namespace: Option<String>,
}

/// `engine::register_trigger`: a binding that belongs to no connection.
pub async fn register(node: &Arc<Node>, input: RegisterInput) -> Result<Value, EngineError> {
    let what = "the trigger of engine::register_trigger";
    limits::check(what, &input, node.config.max_registration_bytes)?;
    if let Some(problem) = namespace_problem("trigger_namespace", &input.trigger_namespace) {
        return Err(EngineError::InvalidNamespace(problem));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let (answer_tx, answer_rx) = oneshot::channel();
    node.lock_trigger_waiters().insert(id.clone(), answer_tx);
    let committed = node
        .commit(Command::DurableTriggerRegistered {
            id: id.clone(),
            trigger_type: input.trigger_type,
            function_id: input.function_id,
            config: input.config.unwrap_or(Value::Null),
            metadata: input.metadata,
            trigger_namespace: input.trigger_namespace,
        })
        .await;
    let outcome = match committed {
        Ok(outcome) if outcome.refusal.is_none() => outcome,
        Ok(outcome) => {
            // The registry applies the name rule itself (for commands from any source).
            node.lock_trigger_waiters().remove(&id);
            let problem = outcome.refusal.unwrap_or_default();
            return Err(EngineError::InvalidNamespace(problem));
        }
        Err(err) => {
            node.lock_trigger_waiters().remove(&id);
            return Err(err);
        }
    };
    if outcome.awaiting_provider.is_some() {
        if let Ok(Ok(Some(error))) = tokio::time::timeout(PROVIDER_ANSWER_WAIT, answer_rx).await {
            return Err(EngineError::TriggerRegistrationFailed(format!(
                "{}: {}",
                error.code, error.message
            )));
        }
    }
    node.lock_trigger_waiters().remove(&id);
    Ok(json!({ "id": id }))
}

#[derive(Debug, Deserialize)]
pub struct UnregisterInput {
    id: String,
}

/// `engine::unregister_trigger`: idempotent removal of any binding by id.
pub async fn unregister(node: &Arc<Node>, input: UnregisterInput) -> Result<Value, EngineError> {
    let outcome = node
        .commit(Command::TriggerRemoved { id: input.id })
        .await?;
    Ok(json!({ "removed": outcome.removed }))
}
