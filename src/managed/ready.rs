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

/// The node, other than `me`, where a connection announcing `name` still holds it, when that
/// node is not draining: a copy started here now would meet the name lease and fail (the
/// SDK treats that as fatal). A holder on a draining node yields its name to a newcomer
/// (`Registry::yields_to_newcomer`), so it does not count.
pub fn name_held_elsewhere(registry: &Registry, me: NodeId, name: &str) -> Option<NodeId> {
    registry
        .workers()
        .filter(|w| w.node != me && !registry.is_draining(w.node))
        .find(|w| w.meta.as_ref().and_then(|m| m.name.as_deref()) == Some(name))
        .map(|w| w.node)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::test_support::{announce_and_register, connect_on};
    use crate::registry::Command;

    fn connect_named(reg: &mut Registry, n: u8, node: NodeId, name: &str) -> WorkerId {
        let worker = connect_on(reg, n, node);
        announce_and_register(reg, worker, name);
        worker
    }

    #[test]
    fn a_name_held_on_another_serving_node_is_held_elsewhere_until_it_disconnects() {
        let mut reg = Registry::default();
        let old = connect_named(&mut reg, 1, 1, "w");
        connect_named(&mut reg, 2, 2, "other");
        assert_eq!(name_held_elsewhere(&reg, 2, "w"), Some(1));
        assert_eq!(name_held_elsewhere(&reg, 1, "w"), None, "not by itself");
        assert_eq!(name_held_elsewhere(&reg, 2, "unknown"), None);
        reg.apply(&Command::WorkerDisconnected { worker: old });
        assert_eq!(name_held_elsewhere(&reg, 2, "w"), None);
    }

    #[test]
    fn a_holder_on_a_draining_node_does_not_hold_the_name_back() {
        let mut reg = Registry::default();
        connect_named(&mut reg, 1, 1, "w");
        reg.apply(&Command::NodeDraining {
            node: 1,
            cause: Some(crate::registry::DrainCause::Shutdown),
        });
        assert_eq!(
            name_held_elsewhere(&reg, 2, "w"),
            None,
            "a drain hands the name over to the new copy"
        );
    }
}
