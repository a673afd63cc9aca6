//! Where a managed worker runs: the leader's pure decision, from the registry and the set of
//! nodes it can reach. Spread by the count of managed workers each node already runs; a
//! spec's `node_labels` restrict the candidates; no candidate is a reason the status shows.
//! Only nodes that committed their labels are candidates: they are the ones whose supervisor
//! runs.
//!
//! Never moves a worker off a node that is merely silent: that node may still run its copy
//! until it fences, and only the purge (which frees its placements in the registry) says it
//! has. A draining node's workers move as soon as another node can take them (the drain
//! hands over, see `handover.rs`), and so do the workers of a node that has been without a
//! labels entry for too long (its supervisor is not running, so nothing runs there; see
//! `stranded.rs`).

use std::collections::{BTreeMap, BTreeSet};

use crate::ids::NodeId;
use crate::registry::{labels_fit, Command, ExpectedPlacement, NodeLabels, Registry};

/// A node that may receive a managed worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub node: NodeId,
    pub labels: NodeLabels,
    /// Managed workers already placed on it.
    pub placed: usize,
}

/// The leader's choice for one worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    On(NodeId),
    /// No candidate; the sentence says why.
    Unplaceable(String),
}

/// The candidate with all of `wanted`'s labels and the fewest managed workers (the lowest id
/// among equals, so every run decides alike).
pub fn choose(wanted: &BTreeMap<String, String>, candidates: &[Candidate]) -> Choice {
    if candidates.is_empty() {
        return Choice::Unplaceable("no live node can take it".into());
    }
    let fits = |c: &&Candidate| labels_fit(wanted, &c.labels);
    if let Some(best) = candidates
        .iter()
        .filter(fits)
        .min_by_key(|c| (c.placed, c.node))
    {
        return Choice::On(best.node);
    }
    let missing = wanted
        .iter()
        .find(|(k, v)| !candidates.iter().any(|c| c.labels.get(*k) == Some(*v)));
    Choice::Unplaceable(match missing {
        Some((k, v)) => format!("no live node has label {k}={v}"),
        None => format!(
            "no live node has all of the labels {}",
            wanted
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// The commands that bring placements in line: place each unplaced worker on a live node,
/// move each worker off a draining or `stranded` node when another can take it, report the
/// unplaceable ones (once per reason). `live` are the members the leader reaches (itself
/// included); `stranded` are nodes that hold placements but have had no labels entry for
/// longer than the leader waits for them.
pub fn decide(
    registry: &Registry,
    live: &BTreeSet<NodeId>,
    stranded: &BTreeSet<NodeId>,
) -> Vec<Command> {
    let mut placed: BTreeMap<NodeId, usize> = BTreeMap::new();
    for worker in registry.managed_workers() {
        if let Some(node) = worker.placement {
            *placed.entry(node).or_default() += 1;
        }
    }
    let takers: Vec<NodeId> = live
        .iter()
        .copied()
        .filter(|n| !registry.is_draining(*n) && registry.node_labels().contains_key(n))
        .collect();
    let mut commands = Vec::new();
    for worker in registry.managed_workers() {
        let leaving = worker
            .placement
            .filter(|n| registry.is_draining(*n) || stranded.contains(n));
        if worker.placement.is_some() && leaving.is_none() {
            continue;
        }
        let candidates: Vec<Candidate> = takers
            .iter()
            .map(|n| Candidate {
                node: *n,
                labels: registry.node_labels().get(n).cloned().unwrap_or_default(),
                placed: placed.get(n).copied().unwrap_or(0),
            })
            .collect();
        let name = worker.spec.name.clone();
        match choose(&worker.spec.node_labels, &candidates) {
            Choice::On(node) => {
                *placed.entry(node).or_default() += 1;
                if let Some(old) = leaving {
                    if let Some(count) = placed.get_mut(&old) {
                        *count = count.saturating_sub(1);
                    }
                }
                commands.push(Command::ManagedWorkerPlaced {
                    name,
                    node,
                    expected: ExpectedPlacement::Was(worker.placement),
                });
            }
            // A draining node keeps its copy when no other node can take it (and a stranded
            // node keeps the placement, ready for when it announces itself again).
            Choice::Unplaceable(_) if leaving.is_some() => {}
            Choice::Unplaceable(reason) => {
                if worker.status.unplaceable.as_deref() != Some(reason.as_str()) {
                    commands.push(Command::ManagedWorkerUnplaceable {
                        name,
                        reason,
                        expected: ExpectedPlacement::Was(worker.placement),
                    });
                }
            }
        }
    }
    commands
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::managed::spec::WorkerSpec;

    fn labels(pairs: &[(&str, &str)]) -> NodeLabels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn candidate(node: NodeId, placed: usize, pairs: &[(&str, &str)]) -> Candidate {
        Candidate {
            node,
            labels: labels(pairs),
            placed,
        }
    }

    fn spec(name: &str, pairs: &[(&str, &str)]) -> WorkerSpec {
        let mut spec: WorkerSpec = serde_json::from_value(serde_json::json!({
            "name": name,
            "command": "true",
        }))
        .expect("a minimal spec");
        spec.node_labels = labels(pairs);
        spec
    }

    #[test]
    fn the_least_loaded_node_with_the_labels_wins() {
        let nodes = [
            candidate(1, 2, &[("zone", "a")]),
            candidate(2, 0, &[("zone", "b")]),
            candidate(3, 1, &[("zone", "a")]),
        ];
        assert_eq!(choose(&BTreeMap::new(), &nodes), Choice::On(2));
        assert_eq!(choose(&labels(&[("zone", "a")]), &nodes), Choice::On(3));
    }

    #[test]
    fn a_label_no_node_has_is_named() {
        let nodes = [
            candidate(1, 0, &[("zone", "a")]),
            candidate(2, 0, &[("gpu", "yes")]),
        ];
        assert_eq!(
            choose(&labels(&[("zone", "x")]), &nodes),
            Choice::Unplaceable("no live node has label zone=x".into())
        );
        assert_eq!(
            choose(&labels(&[("gpu", "yes"), ("zone", "a")]), &nodes),
            Choice::Unplaceable("no live node has all of the labels gpu=yes, zone=a".into())
        );
        assert!(matches!(
            choose(&BTreeMap::new(), &[]),
            Choice::Unplaceable(_)
        ));
    }

    fn registry_with(specs: &[WorkerSpec]) -> Registry {
        let mut reg = Registry::default();
        for node in 1..=3 {
            reg.apply(&Command::NodeLabels {
                node,
                labels: NodeLabels::new(),
            });
        }
        for spec in specs {
            reg.apply(&Command::ManagedWorkerPut {
                spec: spec.clone(),
                at_ms: 1,
                origin: crate::registry::SpecOrigin::Cli,
            });
        }
        reg
    }

    #[test]
    fn unplaced_workers_spread_over_the_live_nodes() {
        let reg = registry_with(&[spec("a", &[]), spec("b", &[]), spec("c", &[])]);
        let live = BTreeSet::from([1, 2]);
        let commands = decide(&reg, &live, &BTreeSet::new());
        let nodes: Vec<NodeId> = commands
            .iter()
            .map(|c| match c {
                Command::ManagedWorkerPlaced { node, .. } => *node,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(nodes, [1, 2, 1]);
    }

    #[test]
    fn a_placed_worker_stays_on_a_silent_node_until_its_purge() {
        let mut reg = registry_with(&[spec("a", &[])]);
        reg.apply(&Command::ManagedWorkerPlaced {
            name: "a".into(),
            node: 3,
            expected: ExpectedPlacement::Any,
        });
        assert!(decide(&reg, &BTreeSet::from([1, 2]), &BTreeSet::new()).is_empty());
        reg.apply(&Command::NodePurged { node: 3 });
        assert_eq!(
            decide(&reg, &BTreeSet::from([1, 2]), &BTreeSet::new()),
            vec![Command::ManagedWorkerPlaced {
                name: "a".into(),
                node: 1,
                expected: ExpectedPlacement::Was(None),
            }]
        );
    }

    #[test]
    fn a_draining_node_hands_its_workers_over_when_another_can_take_them() {
        let mut reg = registry_with(&[spec("a", &[])]);
        reg.apply(&Command::ManagedWorkerPlaced {
            name: "a".into(),
            node: 1,
            expected: ExpectedPlacement::Any,
        });
        reg.apply(&Command::NodeDraining {
            node: 1,
            cause: None,
        });
        assert!(decide(&reg, &BTreeSet::from([1]), &BTreeSet::new()).is_empty());
        assert_eq!(
            decide(&reg, &BTreeSet::from([1, 2]), &BTreeSet::new()),
            vec![Command::ManagedWorkerPlaced {
                name: "a".into(),
                node: 2,
                expected: ExpectedPlacement::Was(Some(1)),
            }]
        );
    }

    #[test]
    fn a_node_without_committed_labels_is_never_chosen() {
        let mut reg = registry_with(&[spec("a", &[])]);
        // Node 1 restarted and its supervisor never came up: it commits no labels again.
        reg.apply(&Command::NodeRestarted { node: 1 });
        assert_eq!(
            decide(&reg, &BTreeSet::from([1, 4]), &BTreeSet::new()),
            vec![Command::ManagedWorkerUnplaceable {
                name: "a".into(),
                reason: "no live node can take it".into(),
                expected: ExpectedPlacement::Was(None),
            }]
        );
        assert_eq!(
            decide(&reg, &BTreeSet::from([1, 2]), &BTreeSet::new()),
            vec![Command::ManagedWorkerPlaced {
                name: "a".into(),
                node: 2,
                expected: ExpectedPlacement::Was(None),
            }]
        );
    }

    #[test]
    fn a_stranded_node_loses_its_workers_to_a_node_that_can_run_them() {
        let mut reg = registry_with(&[spec("a", &[])]);
        reg.apply(&Command::ManagedWorkerPlaced {
            name: "a".into(),
            node: 1,
            expected: ExpectedPlacement::Any,
        });
        // Node 1 restarted and has not announced itself again (or its supervisor failed).
        reg.apply(&Command::NodeRestarted { node: 1 });
        let live = BTreeSet::from([1, 2]);
        assert!(
            decide(&reg, &live, &BTreeSet::new()).is_empty(),
            "within the bound the placement waits for the node"
        );
        assert_eq!(
            decide(&reg, &live, &BTreeSet::from([1])),
            vec![Command::ManagedWorkerPlaced {
                name: "a".into(),
                node: 2,
                expected: ExpectedPlacement::Was(Some(1)),
            }]
        );
    }

    #[test]
    fn a_stranded_node_keeps_its_placement_when_no_other_node_can_take_it() {
        let mut reg = registry_with(&[spec("a", &[("zone", "x")])]);
        reg.apply(&Command::ManagedWorkerPlaced {
            name: "a".into(),
            node: 1,
            expected: ExpectedPlacement::Any,
        });
        reg.apply(&Command::NodeRestarted { node: 1 });
        assert!(decide(&reg, &BTreeSet::from([1, 2]), &BTreeSet::from([1])).is_empty());
    }

    #[test]
    fn unplaceable_is_reported_once_per_reason() {
        let mut reg = registry_with(&[spec("a", &[("zone", "x")])]);
        let commands = decide(&reg, &BTreeSet::from([1]), &BTreeSet::new());
        assert_eq!(
            commands,
            vec![Command::ManagedWorkerUnplaceable {
                name: "a".into(),
                reason: "no live node has label zone=x".into(),
                expected: ExpectedPlacement::Was(None),
            }]
        );
        reg.apply(&commands[0]);
        assert!(decide(&reg, &BTreeSet::from([1]), &BTreeSet::new()).is_empty());
    }
}
