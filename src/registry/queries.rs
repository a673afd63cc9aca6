//! Read-only questions other modules ask the registry.

use std::ops::Bound;

use super::model::{Function, Registry, Trigger, TriggerType, Worker};
use super::reserved;
use crate::ids::{FunctionKey, NodeId, TriggerTypeKey, WorkerId, DEFAULT_NAMESPACE};

/// Where a call to (namespace, function id) goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// An `engine::*` function served by every node itself.
    Builtin,
    /// A worker's function, and the node holding that worker's socket.
    Worker { owner: WorkerId, node: NodeId },
    /// Nobody serves it; the id exists in these other namespaces (sorted).
    NotFound { elsewhere: Vec<String> },
}

impl Registry {
    /// Whether `node` is draining, for a shutdown or a removal (its workers are about to move).
    pub fn is_draining(&self, node: NodeId) -> bool {
        self.draining_nodes.contains(&node)
    }

    /// Every node draining now (its workers are about to move).
    pub fn draining_nodes(&self) -> std::collections::BTreeSet<NodeId> {
        self.draining_nodes.clone()
    }

    /// The worker that took (namespace, id) off a draining node, while it has not been
    /// registered again.
    pub fn moving_from(&self, namespace: &str, id: &str) -> Option<WorkerId> {
        self.moving.get(&FunctionKey::new(namespace, id)).copied()
    }

    /// Routes a call: strict namespace match, no fallback.
    pub fn resolve_function(&self, namespace: &str, id: &str) -> Resolution {
        if namespace == DEFAULT_NAMESPACE && reserved::is_builtin_function(id) {
            return Resolution::Builtin;
        }
        let key = FunctionKey::new(namespace, id);
        if let Some(function) = self.functions.get(&key) {
            if let Some(worker) = self.workers.get(&function.owner) {
                return Resolution::Worker {
                    owner: function.owner,
                    node: worker.node,
                };
            }
        }
        let elsewhere: Vec<String> = self
            .functions_with_id(id)
            .filter(|(k, _)| k.namespace != namespace)
            .map(|(k, _)| k.namespace.clone())
            .collect();
        Resolution::NotFound { elsewhere }
    }

    /// Every live worker, by id.
    pub fn workers(&self) -> impl Iterator<Item = &Worker> {
        self.workers.values()
    }

    /// One live worker.
    pub fn worker(&self, id: WorkerId) -> Option<&Worker> {
        self.workers.get(&id)
    }

    /// Every registered function, sorted by (id, namespace).
    pub fn functions(&self) -> impl Iterator<Item = (&FunctionKey, &Function)> {
        self.functions.iter()
    }

    /// The registered functions from `start` on, sorted by (id, namespace): a page of a
    /// list costs the page, not the registry.
    pub fn functions_from(
        &self,
        start: Bound<&FunctionKey>,
    ) -> impl Iterator<Item = (&FunctionKey, &Function)> {
        self.functions.range((start, Bound::Unbounded))
    }

    /// The functions registered under `id`, one per namespace, sorted by namespace.
    pub fn functions_with_id(&self, id: &str) -> impl Iterator<Item = (&FunctionKey, &Function)> {
        // The empty namespace sorts first, so the range starts at the id's first entry.
        let first = FunctionKey::new("", id);
        let id = first.id.clone();
        self.functions
            .range((Bound::Included(first), Bound::Unbounded))
            .take_while(move |(key, _)| key.id == id)
    }

    /// One function.
    pub fn function(&self, key: &FunctionKey) -> Option<&Function> {
        self.functions.get(key)
    }

    /// Every trigger type (built-in ones included), sorted by (namespace, id).
    pub fn trigger_types(&self) -> impl Iterator<Item = (&TriggerTypeKey, &TriggerType)> {
        self.trigger_types.iter()
    }

    /// One trigger type.
    pub fn trigger_type(&self, key: &TriggerTypeKey) -> Option<&TriggerType> {
        self.trigger_types.get(key)
    }

    /// Every binding, live and parked, sorted by id.
    pub fn triggers(&self) -> impl Iterator<Item = &Trigger> {
        self.triggers.values()
    }

    /// One binding.
    pub fn trigger(&self, id: &str) -> Option<&Trigger> {
        self.triggers.get(id)
    }

    /// Live bindings served by a built-in trigger type.
    pub fn builtin_bindings<'a>(
        &'a self,
        trigger_type: &'a str,
    ) -> impl Iterator<Item = &'a Trigger> {
        self.triggers.values().filter(move |t| {
            t.trigger_type == trigger_type
                && t.provider
                    .as_ref()
                    .and_then(|k| self.trigger_types.get(k))
                    .is_some_and(|p| p.owner.is_none())
        })
    }

    /// Nodes that hold at least one worker, so a lost one can be purged.
    pub fn nodes_with_workers(&self) -> std::collections::BTreeSet<NodeId> {
        self.workers.values().map(|w| w.node).collect()
    }

    /// The announced name of a worker, if any.
    pub fn worker_name(&self, id: WorkerId) -> Option<&str> {
        self.workers
            .get(&id)
            .and_then(|w| w.meta.as_ref())
            .and_then(|m| m.name.as_deref())
    }

    /// Checks the registry's cross-references (the property tests and the `registry` fuzz
    /// target call it after every command).
    pub fn check_invariants(&self) -> Result<(), String> {
        if let Some(node) = self
            .drain_causes
            .keys()
            .find(|n| !self.draining_nodes.contains(*n))
        {
            return Err(format!("node {node} has a drain cause but is not draining"));
        }
        if let Some(key) = self.moving.keys().find(|k| self.functions.contains_key(*k)) {
            return Err(format!(
                "function {key} is registered and still marked moving"
            ));
        }
        for (key, f) in &self.functions {
            if !self.workers.contains_key(&f.owner) {
                return Err(format!("function {key} owned by a dead worker"));
            }
        }
        for (key, t) in &self.trigger_types {
            if let Some(owner) = t.owner {
                if !self.workers.contains_key(&owner) {
                    return Err(format!("trigger type {key} owned by a dead worker"));
                }
            }
        }
        for t in self.triggers.values() {
            if let Some(owner) = t.owner {
                if !self.workers.contains_key(&owner) {
                    return Err(format!("trigger {} owned by a dead worker", t.id));
                }
            }
            if let Some(p) = &t.provider {
                if !self.trigger_types.contains_key(p) {
                    return Err(format!("trigger {} bound to a missing provider {p}", t.id));
                }
            }
        }
        for ((ns, name), holder) in &self.names {
            let Some(worker) = self.workers.get(holder) else {
                return Err(format!("name lease {ns}/{name} held by a dead worker"));
            };
            let announced = worker.meta.as_ref().and_then(|m| m.name.as_deref());
            if announced != Some(name.as_str()) || worker.namespace.as_deref() != Some(ns.as_str())
            {
                return Err(format!("name lease {ns}/{name} does not match its holder"));
            }
        }
        Ok(())
    }
}
