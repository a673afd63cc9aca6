//! Why each draining node drains, so an undo cannot outlive the drain it was meant for.
//!
//! A node drains for its own shutdown (SIGTERM) or because a removal (`quorum cluster
//! remove`/`leave`) moves its managed workers off first. A removal that fails undoes its own
//! mark with `NodeUndrained`, naming the removal's id: a compare-and-set. A retried or late undo
//! therefore never marks a node serving again once its own shutdown drain began, nor once a
//! newer removal marked it.
//!
//! Entries logged before causes existed replay as they did: a drain without a cause counts as a
//! shutdown (the drain older binaries record, and the one an older replica's snapshot holds,
//! since it had no causes), and an undo without an id undoes any drain.

use serde::{Deserialize, Serialize};

use super::command::Outcome;
use super::model::Registry;
use crate::ids::NodeId;

/// Why a node is draining.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DrainCause {
    /// The node's own graceful shutdown: only its restart or purge ends it.
    Shutdown,
    /// One removal attempt, named by its unique `id`: only an undo naming it ends it.
    Removal { id: u64 },
}

impl Registry {
    /// `NodeDraining`: marks `node` draining. A shutdown drain stays one (a removal marking it
    /// again must not make it undoable); otherwise the newest mark's cause is the node's.
    pub(super) fn mark_draining(&mut self, node: NodeId, cause: Option<DrainCause>) {
        let cause = cause.unwrap_or(DrainCause::Shutdown);
        let shutting_down = self.draining_nodes.contains(&node)
            && self.drain_cause(node) == Some(DrainCause::Shutdown);
        self.draining_nodes.insert(node);
        if shutting_down {
            return;
        }
        match cause {
            // No entry reads as a shutdown, as in a snapshot written before causes existed.
            DrainCause::Shutdown => self.drain_causes.remove(&node),
            DrainCause::Removal { .. } => self.drain_causes.insert(node, cause),
        };
    }

    /// `NodeUndrained`: `node` serves again, if it drains for the removal `removal` names.
    /// Without an id (entries logged before ids existed) any drain ends, as it did then.
    pub(super) fn undrain(&mut self, node: NodeId, removal: Option<u64>, out: &mut Outcome) {
        let Some(cause) = self.drain_cause(node) else {
            out.refusal = Some(format!("node {node} is not draining"));
            return;
        };
        let undoes = match removal {
            None => true,
            Some(id) => cause == DrainCause::Removal { id },
        };
        if undoes {
            self.forget_drain(node);
        } else {
            out.refusal = Some(format!(
                "node {node} drains for {}, not for removal {}",
                describe(cause),
                removal.unwrap_or_default()
            ));
        }
    }

    /// The node restarted or was purged: whatever it drained for is over.
    pub(super) fn forget_drain(&mut self, node: NodeId) {
        self.draining_nodes.remove(&node);
        self.drain_causes.remove(&node);
    }

    /// Why `node` is draining, or `None` when it is not.
    pub fn drain_cause(&self, node: NodeId) -> Option<DrainCause> {
        if !self.draining_nodes.contains(&node) {
            return None;
        }
        Some(
            self.drain_causes
                .get(&node)
                .copied()
                .unwrap_or(DrainCause::Shutdown),
        )
    }
}

/// A cause as the refusal names it.
fn describe(cause: DrainCause) -> String {
    match cause {
        DrainCause::Shutdown => "its shutdown".to_string(),
        DrainCause::Removal { id } => format!("removal {id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Command;

    fn removal(id: u64) -> Command {
        Command::NodeDraining {
            node: 1,
            cause: Some(DrainCause::Removal { id }),
        }
    }

    fn shutdown() -> Command {
        Command::NodeDraining {
            node: 1,
            cause: Some(DrainCause::Shutdown),
        }
    }

    fn undrain(id: u64) -> Command {
        Command::NodeUndrained {
            node: 1,
            removal: Some(id),
        }
    }

    #[test]
    fn an_undo_naming_the_removal_that_marked_the_node_ends_its_drain() {
        let mut reg = Registry::default();
        reg.apply(&removal(7));
        assert_eq!(reg.drain_cause(1), Some(DrainCause::Removal { id: 7 }));
        let out = reg.apply(&undrain(7));
        assert_eq!(out.refusal, None);
        assert!(!reg.is_draining(1));
        assert_eq!(reg.drain_cause(1), None);
    }

    #[test]
    fn a_stale_undo_after_the_nodes_own_shutdown_began_changes_nothing() {
        let mut reg = Registry::default();
        reg.apply(&removal(7));
        reg.apply(&shutdown());
        let out = reg.apply(&undrain(7));
        assert!(out.refusal.is_some());
        assert!(reg.is_draining(1));
        assert_eq!(reg.drain_cause(1), Some(DrainCause::Shutdown));
    }

    #[test]
    fn a_removal_marking_a_node_that_shuts_down_leaves_it_a_shutdown() {
        let mut reg = Registry::default();
        reg.apply(&shutdown());
        reg.apply(&removal(7));
        assert_eq!(reg.drain_cause(1), Some(DrainCause::Shutdown));
        let out = reg.apply(&undrain(7));
        assert!(out.refusal.is_some());
        assert!(reg.is_draining(1));
    }

    #[test]
    fn an_undo_of_an_older_removal_leaves_a_newer_removals_drain() {
        let mut reg = Registry::default();
        reg.apply(&removal(7));
        reg.apply(&removal(8));
        let out = reg.apply(&undrain(7));
        assert!(out.refusal.is_some());
        assert_eq!(reg.drain_cause(1), Some(DrainCause::Removal { id: 8 }));
        reg.apply(&undrain(8));
        assert!(!reg.is_draining(1));
    }

    #[test]
    fn an_undo_of_a_node_that_is_not_draining_is_refused_and_changes_nothing() {
        let mut reg = Registry::default();
        let before = reg.clone();
        let out = reg.apply(&undrain(7));
        assert!(out.refusal.is_some());
        assert_eq!(reg, before);
    }

    #[test]
    fn a_restart_ends_any_drain_and_forgets_its_cause() {
        let mut reg = Registry::default();
        reg.apply(&removal(7));
        reg.apply(&Command::NodeRestarted { node: 1 });
        assert_eq!(reg.drain_cause(1), None);
        // A later mark starts afresh: the old removal's id means nothing any more.
        reg.apply(&shutdown());
        assert_eq!(reg.drain_cause(1), Some(DrainCause::Shutdown));
    }

    #[test]
    fn entries_logged_before_causes_existed_decode_and_replay_as_they_did() {
        let draining: Command = serde_json::from_str(r#"{"NodeDraining":{"node":1}}"#)
            .expect("an old NodeDraining decodes");
        assert_eq!(
            draining,
            Command::NodeDraining {
                node: 1,
                cause: None
            }
        );
        let undrained: Command = serde_json::from_str(r#"{"NodeUndrained":{"node":1}}"#)
            .expect("an old NodeUndrained decodes");
        assert_eq!(
            undrained,
            Command::NodeUndrained {
                node: 1,
                removal: None
            }
        );
        let mut reg = Registry::default();
        reg.apply(&draining);
        assert_eq!(reg.drain_cause(1), Some(DrainCause::Shutdown));
        // An undo without an id undid any drain when it was logged; it still does.
        let out = reg.apply(&undrained);
        assert_eq!(out.refusal, None);
        assert!(!reg.is_draining(1));
    }

    #[test]
    fn a_snapshot_written_before_causes_existed_reads_its_drains_as_shutdowns() {
        let mut reg = Registry::default();
        reg.apply(&removal(7));
        let mut json = serde_json::to_value(&reg).expect("a registry encodes");
        json.as_object_mut()
            .expect("a registry is an object")
            .remove("drain_causes");
        let old: Registry = serde_json::from_value(json).expect("an old snapshot decodes");
        assert_eq!(old.drain_cause(1), Some(DrainCause::Shutdown));
        let mut old = old;
        assert!(old.apply(&undrain(7)).refusal.is_some());
    }

    #[test]
    fn a_registry_with_causes_survives_a_snapshot_round_trip() {
        let mut reg = Registry::default();
        reg.apply(&removal(7));
        let text = serde_json::to_string(&reg).expect("a registry encodes");
        let back: Registry = serde_json::from_str(&text).expect("it decodes");
        assert_eq!(back.drain_cause(1), Some(DrainCause::Removal { id: 7 }));
    }
}
