//! The registry's data: what is registered, by whom, and which name leases are held.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

use crate::ids::{FunctionKey, NodeId, TriggerTypeKey, WorkerId};

/// The whole replicated registry. Everything in it belongs to a live worker, except
/// built-in trigger types and durable triggers made through `engine::register_trigger`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    pub(super) workers: BTreeMap<WorkerId, Worker>,
    #[serde(with = "super::serde_pairs")]
    pub(super) functions: BTreeMap<FunctionKey, Function>,
    #[serde(with = "super::serde_pairs")]
    pub(super) trigger_types: BTreeMap<TriggerTypeKey, TriggerType>,
    pub(super) triggers: BTreeMap<String, Trigger>,
    /// Worker-name leases: (namespace, name) → holder.
    #[serde(with = "super::serde_pairs")]
    pub(super) names: BTreeMap<(String, String), WorkerId>,
    pub(super) services: BTreeMap<String, Service>,
    /// Draining nodes (for a shutdown or a removal): calls to their workers wait for the
    /// workers to move.
    #[serde(default)]
    pub(super) draining_nodes: BTreeSet<NodeId>,
    /// Why each draining node drains, when not for its shutdown (see `drains.rs`); absent
    /// from snapshots written before causes existed, whose drains all read as shutdowns.
    #[serde(default, with = "super::serde_pairs")]
    pub(super) drain_causes: BTreeMap<NodeId, super::drains::DrainCause>,
    /// Functions whose worker left a draining node and has not registered them again, with
    /// that worker (each move has its own): a call for one waits a little for its worker to
    /// come back elsewhere.
    #[serde(default, with = "super::serde_pairs")]
    pub(super) moving: BTreeMap<FunctionKey, WorkerId>,
    /// Worker tokens made with `quorum token create`, by name (hashes only, never a token).
    #[serde(default)]
    pub(super) tokens: BTreeMap<String, WorkerToken>,
    /// Names revoked with `quorum token revoke`: refused for good, in the registry and in
    /// every node's tokens file alike.
    #[serde(default)]
    pub(super) revoked_tokens: BTreeSet<String>,
    /// Managed workers (`quorum worker add`), by name.
    #[serde(default)]
    pub(super) managed: BTreeMap<String, super::managed::ManagedWorker>,
    /// The labels each node committed at start, for the placement of managed workers.
    #[serde(default, with = "super::serde_pairs")]
    pub(super) node_labels: BTreeMap<NodeId, super::managed::NodeLabels>,
}

/// What a worker token lets its holder do on the worker port. The token itself is never
/// stored: only the SHA-256 of its UTF-8 bytes, so a leaked log or snapshot grants nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerToken {
    /// Unique; what refusals, logs and `quorum token list` name.
    pub name: String,
    /// Lowercase hex SHA-256 of the token.
    pub sha256: String,
    /// Namespaces the holder may use; empty means only `default`.
    pub namespaces: Vec<String>,
    /// Whether the holder may register functions and trigger types.
    pub register: bool,
    /// Globs (`*` = any run of characters) over the function ids it may call; empty = any.
    pub call: Vec<String>,
}

/// A live worker connection, on the node that holds its socket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Worker {
    pub id: WorkerId,
    pub node: NodeId,
    /// Hash of the reattach token: the token itself never enters the log.
    pub token_hash: String,
    pub connected_at_ms: u64,
    pub ip_address: Option<String>,
    /// Fixed once by the announcement or the grace timer; `None` while pending.
    pub namespace: Option<String>,
    /// What `engine::workers::register` told us; `None` until the worker announces.
    pub meta: Option<WorkerMeta>,
}

/// Self-description a worker sends in `engine::workers::register`, already sanitised.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerMeta {
    pub name: Option<String>,
    pub description: Option<String>,
    pub runtime: Option<String>,
    pub version: Option<String>,
    pub os: Option<String>,
    pub pid: Option<u64>,
    pub isolation: Option<String>,
    pub telemetry: Option<Value>,
}

/// A function and the worker that serves it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Function {
    pub owner: WorkerId,
    pub description: Option<String>,
    pub request_format: Option<Value>,
    pub response_format: Option<Value>,
    pub metadata: Option<Value>,
    pub invocation: Option<Value>,
}

/// A trigger type and its provider (`None` = built into the engine).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriggerType {
    pub owner: Option<WorkerId>,
    pub description: String,
    pub trigger_request_format: Option<Value>,
    pub call_request_format: Option<Value>,
}

/// A binding of a trigger type to a function.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    pub id: String,
    pub trigger_type: String,
    pub function_id: String,
    pub config: Value,
    pub metadata: Option<Value>,
    /// Namespace of the target function.
    pub target_namespace: String,
    /// Namespace of the registering connection (provider resolution looks here first).
    pub home_namespace: String,
    /// Explicit provider namespace, if the registration named one.
    pub trigger_namespace: Option<String>,
    /// The registering worker; `None` for durable bindings from `engine::register_trigger`.
    pub owner: Option<WorkerId>,
    /// The provider serving it; `None` while parked.
    pub provider: Option<TriggerTypeKey>,
}

/// A legacy `registerservice` grouping.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub owner: WorkerId,
    pub name: String,
    pub description: Option<String>,
    pub parent_service_id: Option<String>,
}

impl Default for Registry {
    fn default() -> Self {
        let trigger_types = super::reserved::BUILTIN_TRIGGER_TYPES
            .iter()
            .map(|(id, description)| {
                (
                    TriggerTypeKey::new(crate::ids::DEFAULT_NAMESPACE, *id),
                    TriggerType {
                        owner: None,
                        description: (*description).to_string(),
                        trigger_request_format: None,
                        call_request_format: None,
                    },
                )
            })
            .collect();
        Self {
            workers: BTreeMap::new(),
            functions: BTreeMap::new(),
            trigger_types,
            triggers: BTreeMap::new(),
            names: BTreeMap::new(),
            services: BTreeMap::new(),
            draining_nodes: BTreeSet::new(),
            drain_causes: BTreeMap::new(),
            moving: BTreeMap::new(),
            tokens: BTreeMap::new(),
            revoked_tokens: BTreeSet::new(),
            managed: BTreeMap::new(),
            node_labels: BTreeMap::new(),
        }
    }
}
