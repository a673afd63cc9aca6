//! Command levels: a leader never proposes a registry command some member cannot apply.
//!
//! Commands travel in the Raft log as JSON. An older binary refuses a variant it does not know
//! (the entry cannot be decoded, so that follower stops catching up), and silently ignores a
//! field it does not know, applying the command as it did before the field existed: its replica
//! then differs from the others' wherever the field changes the outcome (a compare-and-set, a
//! spec's origin, a drain's cause).
//!
//! Each binary has a command level ([`CURRENT`]), and each command the level it needs
//! ([`required`]). Nodes report theirs in the status reply the leader's lease probes already
//! ask every member for (an older binary sends none, which reads as 0); [`MemberLevels`] keeps
//! the last answer of each member, and forgets it when the member stops answering (it may come
//! back with another binary) and all of them when this node stops leading. Before it proposes a
//! command (its own or a forwarded one) the leader checks every member's level ([`admit`]),
//! asking a member it knows no level of right then: a command some member cannot apply, or a
//! member that does not answer, holds the write back with [`HeldBack`], which its caller
//! retries.
//!
//! Levels:
//! - 0: everything before levels existed;
//! - 1: `ManagedConfigRetained` and `NodeUndrained` exist, and `ManagedWorkerPut.origin`,
//!   `ManagedWorkerRestart.from` and `NodeDraining.cause` (a removal's) change the outcome.

use std::collections::HashMap;
use std::sync::Mutex;

use futures_util::future::join_all;
use tracing::info;

use crate::ids::NodeId;
use crate::node::Node;
use crate::registry::{Command, DrainCause, SpecOrigin};

/// What the log's commands need a node to understand: a number that only goes up.
pub type CommandLevel = u32;

/// The level of this binary.
pub const CURRENT: CommandLevel = 1;

/// Tests only: the level this node announces instead of [`CURRENT`], to play an older binary.
pub const ANNOUNCE_ENV: &str = "QUORUM_TEST_ANNOUNCE_COMMAND_LEVEL";

/// The level this node reports in its status reply (and checks for itself when it leads).
/// Read once: every lease probe asks for it.
pub fn announced() -> CommandLevel {
    static ANNOUNCED: std::sync::OnceLock<CommandLevel> = std::sync::OnceLock::new();
    *ANNOUNCED.get_or_init(|| {
        std::env::var(ANNOUNCE_ENV)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(CURRENT)
    })
}

/// The level a member must have for the leader to propose `command`.
pub fn required(command: &Command) -> CommandLevel {
    match command {
        Command::ManagedConfigRetained { .. } | Command::NodeUndrained { .. } => 1,
        // An older node would take a config's spec for one put with the CLI.
        Command::ManagedWorkerPut {
            origin: SpecOrigin::Config,
            ..
        } => 1,
        // An older node would count a retried restart twice.
        Command::ManagedWorkerRestart { from: Some(_), .. } => 1,
        // An older node would record a removal's drain as a shutdown, which no undo ends. A
        // shutdown is what it records anyway, so a shutdown drain needs nothing new.
        Command::NodeDraining {
            cause: Some(DrainCause::Removal { .. }),
            ..
        } => 1,
        _ => 0,
    }
}

/// Why the leader did not propose a command now: the caller may retry once every member runs a
/// binary of the command's level.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeldBack {
    /// A member reported a lower level.
    #[error("held back until every node runs a newer binary: node {node} understands registry commands up to level {level}, this one needs level {needed}")]
    OlderMember {
        node: NodeId,
        level: CommandLevel,
        needed: CommandLevel,
    },
    /// A member has not answered this node's status probe yet.
    #[error("held back: node {node}'s command level is not known yet (this command needs level {needed})")]
    Unknown { node: NodeId, needed: CommandLevel },
}

/// The command level each member reported to this node's last status probes (the lease loop
/// asks every member while this node leads).
#[derive(Debug, Default)]
pub struct MemberLevels {
    levels: Mutex<HashMap<NodeId, CommandLevel>>,
}

impl MemberLevels {
    fn book(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, CommandLevel>> {
        self.levels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `node` answered a status probe with `level`.
    pub fn record(&self, node: NodeId, level: CommandLevel) {
        let previous = self.book().insert(node, level);
        if previous != Some(level) {
            info!(
                member = node,
                level,
                ?previous,
                "member {node} reports command level {level}"
            );
        }
    }

    /// `node` did not answer: it may be restarting with another binary.
    pub fn forget(&self, node: NodeId) {
        self.book().remove(&node);
    }

    /// This node stopped leading: what it learned may be stale when it leads again.
    pub fn forget_all(&self) {
        self.book().clear();
    }

    /// The level `node` reported last, if it ever answered.
    pub fn of(&self, node: NodeId) -> Option<CommandLevel> {
        self.book().get(&node).copied()
    }
}

/// Whether `members` (this node, `me` at level `mine`, among them) may all apply a command of
/// level `needed`, by what `levels` knows.
pub fn check(
    needed: CommandLevel,
    me: NodeId,
    mine: CommandLevel,
    members: impl IntoIterator<Item = NodeId>,
    levels: &MemberLevels,
) -> Result<(), HeldBack> {
    if needed == 0 {
        return Ok(());
    }
    for node in members {
        let level = if node == me {
            Some(mine)
        } else {
            levels.of(node)
        };
        match level {
            None => return Err(HeldBack::Unknown { node, needed }),
            Some(level) if level < needed => {
                return Err(HeldBack::OlderMember {
                    node,
                    level,
                    needed,
                })
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Checked just before this node proposes `command` (Raft refuses the proposal anyway when it
/// does not lead, and the leader checks it then): every member, learners included, must
/// understand it. A member whose level this leader does not know yet is asked now.
pub async fn admit(node: &Node, command: &Command) -> Result<(), HeldBack> {
    let needed = required(command);
    if needed == 0 || !node.is_leader() {
        return Ok(());
    }
    let members = node.member_addresses();
    let unknown = members
        .iter()
        .filter(|(id, _)| *id != node.id && node.member_levels.of(*id).is_none());
    let asked = join_all(unknown.map(|(id, address)| async move {
        (
            *id,
            crate::cluster::lease::command_level_of(node, address).await,
        )
    }))
    .await;
    for (id, level) in asked {
        if let Some(level) = level {
            node.member_levels.record(id, level);
        }
    }
    let ids = members.into_iter().map(|(id, _)| id);
    check(needed, node.id, announced(), ids, &node.member_levels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn undrain() -> Command {
        Command::NodeUndrained {
            node: 2,
            removal: Some(1),
        }
    }

    #[test]
    fn commands_older_nodes_apply_alike_need_no_level() {
        assert_eq!(required(&Command::NodeRestarted { node: 1 }), 0);
        let shutdown = Command::NodeDraining {
            node: 1,
            cause: Some(DrainCause::Shutdown),
        };
        assert_eq!(required(&shutdown), 0);
        let restart = Command::ManagedWorkerRestart {
            name: "w".into(),
            from: None,
        };
        assert_eq!(required(&restart), 0);
    }

    #[test]
    fn commands_new_in_level_one_or_changed_by_its_fields_need_it() {
        assert_eq!(required(&undrain()), 1);
        let retained = Command::ManagedConfigRetained { names: vec![] };
        assert_eq!(required(&retained), 1);
        let removal = Command::NodeDraining {
            node: 1,
            cause: Some(DrainCause::Removal { id: 3 }),
        };
        assert_eq!(required(&removal), 1);
        let restart = Command::ManagedWorkerRestart {
            name: "w".into(),
            from: Some(0),
        };
        assert_eq!(required(&restart), 1);
    }

    #[test]
    fn a_member_reporting_an_older_level_holds_the_command_back() {
        let levels = MemberLevels::default();
        levels.record(2, 1);
        levels.record(3, 0);
        assert_eq!(
            check(1, 1, CURRENT, [1, 2, 3], &levels),
            Err(HeldBack::OlderMember {
                node: 3,
                level: 0,
                needed: 1
            })
        );
        // A level-0 command goes through all the same.
        assert_eq!(check(0, 1, CURRENT, [1, 2, 3], &levels), Ok(()));
    }

    #[test]
    fn a_member_never_heard_from_holds_the_command_back() {
        let levels = MemberLevels::default();
        levels.record(2, 1);
        assert_eq!(
            check(1, 1, CURRENT, [1, 2, 3], &levels),
            Err(HeldBack::Unknown { node: 3, needed: 1 })
        );
    }

    #[test]
    fn once_every_member_reports_the_level_the_command_goes_through() {
        let levels = MemberLevels::default();
        levels.record(2, 0);
        levels.record(2, 1);
        levels.record(3, 1);
        assert_eq!(check(1, 1, CURRENT, [1, 2, 3], &levels), Ok(()));
    }

    #[test]
    fn a_member_that_stopped_answering_is_not_known_until_it_answers_again() {
        let levels = MemberLevels::default();
        levels.record(2, 1);
        levels.forget(2);
        assert_eq!(
            check(1, 1, CURRENT, [1, 2], &levels),
            Err(HeldBack::Unknown { node: 2, needed: 1 })
        );
        levels.record(2, 1);
        levels.forget_all();
        assert_eq!(levels.of(2), None);
    }

    #[test]
    fn a_leader_announcing_an_older_level_holds_back_its_own_commands() {
        let levels = MemberLevels::default();
        levels.record(2, 1);
        assert_eq!(
            check(1, 1, 0, [1, 2], &levels),
            Err(HeldBack::OlderMember {
                node: 1,
                level: 0,
                needed: 1
            })
        );
    }
}
