//! Placements the leader gives up waiting for. A node that holds managed workers but has no
//! labels entry runs none of them: its supervisor failed to start, or the node restarted
//! (which forgets its labels) and has not announced itself again. A restart is usually back
//! within seconds, so the leader waits [`STRANDED_AFTER`] before it moves such a node's
//! workers elsewhere.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::ids::NodeId;
use crate::registry::Registry;

/// How long a node may hold placements without a labels entry before its workers move.
pub const STRANDED_AFTER: Duration = Duration::from_secs(20);

/// When the leader first saw each node hold placements without a labels entry.
#[derive(Debug, Default)]
pub struct Stranded {
    since: BTreeMap<NodeId, Instant>,
}

impl Stranded {
    /// Looks at the registry at `now`; returns the nodes that have held placements without a
    /// labels entry for at least `after`. A node that announces itself, or holds no placement
    /// any more, starts over.
    pub fn update(
        &mut self,
        registry: &Registry,
        now: Instant,
        after: Duration,
    ) -> BTreeSet<NodeId> {
        let unannounced: BTreeSet<NodeId> = registry
            .managed_workers()
            .filter_map(|worker| worker.placement)
            .filter(|node| !registry.node_labels().contains_key(node))
            .collect();
        self.since.retain(|node, _| unannounced.contains(node));
        unannounced
            .into_iter()
            .filter(|node| {
                let since = *self.since.entry(*node).or_insert(now);
                now.duration_since(since) >= after
            })
            .collect()
    }

    /// Forgets everything (this node stopped leading: a new term waits afresh).
    pub fn clear(&mut self) {
        self.since.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::managed::spec::WorkerSpec;
    use crate::registry::{Command, ExpectedPlacement, NodeLabels};

    const AFTER: Duration = Duration::from_secs(20);

    fn registry_with_a_on(node: NodeId) -> Registry {
        let spec: WorkerSpec =
            serde_json::from_value(serde_json::json!({"name": "a", "command": "true"}))
                .expect("a minimal spec");
        let mut reg = Registry::default();
        for n in 1..=2 {
            reg.apply(&Command::NodeLabels {
                node: n,
                labels: NodeLabels::new(),
            });
        }
        reg.apply(&Command::ManagedWorkerPut {
            spec,
            at_ms: 1,
            origin: crate::registry::SpecOrigin::Cli,
        });
        reg.apply(&Command::ManagedWorkerPlaced {
            name: "a".into(),
            node,
            expected: ExpectedPlacement::Any,
        });
        reg
    }

    #[test]
    fn a_node_without_labels_is_given_up_on_only_after_the_bound() {
        let mut reg = registry_with_a_on(1);
        reg.apply(&Command::NodeRestarted { node: 1 });
        let mut stranded = Stranded::default();
        let start = Instant::now();
        assert!(stranded.update(&reg, start, AFTER).is_empty());
        assert!(stranded
            .update(&reg, start + AFTER - Duration::from_millis(1), AFTER)
            .is_empty());
        assert_eq!(
            stranded.update(&reg, start + AFTER, AFTER),
            BTreeSet::from([1])
        );
    }

    #[test]
    fn a_node_that_announces_itself_again_starts_over() {
        let mut reg = registry_with_a_on(1);
        reg.apply(&Command::NodeRestarted { node: 1 });
        let mut stranded = Stranded::default();
        let start = Instant::now();
        stranded.update(&reg, start, AFTER);
        reg.apply(&Command::NodeLabels {
            node: 1,
            labels: NodeLabels::new(),
        });
        assert!(stranded.update(&reg, start + AFTER, AFTER).is_empty());
        reg.apply(&Command::NodeRestarted { node: 1 });
        assert!(
            stranded.update(&reg, start + AFTER * 2, AFTER).is_empty(),
            "the wait counts from the second restart"
        );
    }

    #[test]
    fn a_node_with_labels_or_without_placements_is_never_stranded() {
        let reg = registry_with_a_on(1);
        let mut stranded = Stranded::default();
        let start = Instant::now();
        stranded.update(&reg, start, AFTER);
        assert!(stranded.update(&reg, start + AFTER, AFTER).is_empty());
        // Node 3 never announced itself, but nothing is placed on it.
        assert!(!stranded.update(&reg, start + AFTER * 2, AFTER).contains(&3));
    }
}
