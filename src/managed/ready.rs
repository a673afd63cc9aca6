//! "Ready means registered": a managed worker is ready on a node when a connection on that
//! node announced the worker's name, whatever its process looks like. Read from the registry,
//! so every node agrees on it.

use std::collections::BTreeSet;

use crate::ids::{NodeId, WorkerId};
use crate::registry::Registry;

/// The live connections on `node` that announced `name`.
pub fn connections_named(registry: &Registry, node: NodeId, name: &str) -> Vec<WorkerId> {
    registry
        .workers()
        .filter(|w| w.node == node)
        .filter(|w| w.meta.as_ref().and_then(|m| m.name.as_deref()) == Some(name))
        .map(|w| w.id)
        .collect()
}

/// The managed workers that have a connection on `node` announcing their name.
pub fn ready_on(registry: &Registry, node: NodeId) -> BTreeSet<String> {
    let managed: BTreeSet<&str> = registry
        .managed_workers()
        .map(|m| m.spec.name.as_str())
        .collect();
    registry
        .workers()
        .filter(|w| w.node == node)
        .filter_map(|w| w.meta.as_ref().and_then(|m| m.name.as_deref()))
        .filter(|name| managed.contains(name))
        .map(str::to_string)
        .collect()
}

/// Whether `worker` is the connection of a managed worker (it announced a managed name).
pub fn is_managed_connection(registry: &Registry, worker: WorkerId) -> Option<String> {
    let name = registry.worker_name(worker)?;
    registry.managed_worker(name).map(|m| m.spec.name.clone())
}
