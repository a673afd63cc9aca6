//! The agent's gate for a worker that moves here: it starts only once its previous copy on
//! another node has let go of the name. Started earlier, the new copy meets the name lease,
//! its SDK takes the refusal as fatal, and the restarts and backoff that follow made a
//! relabelled worker's move take about a minute instead of a few seconds.
//!
//! Bounded: a holder that never lets go (its node died and is not purged yet, or a worker that
//! is not managed took the name) holds the start back at most `bound`, counted from the first
//! time the agent found the name held; then the copy starts anyway. Pure: the caller passes
//! the holder (`ready::name_held_elsewhere`) and the time.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::ids::NodeId;

/// Whether a worker placed here may start now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Nothing elsewhere holds the name.
    Open,
    /// A connection on `holder` still holds the name; look again (at the latest at `until`).
    Wait { holder: NodeId, until: Instant },
    /// `holder` held the name longer than the bound: start anyway.
    Overdue { holder: NodeId },
}

/// The workers held back by a copy elsewhere, and since when.
#[derive(Debug)]
pub struct MoveGate {
    bound: Duration,
    waiting: BTreeMap<String, (NodeId, Instant)>,
}

impl MoveGate {
    /// A gate that holds a start back at most `bound` (the old copy's stop grace plus the time
    /// the cluster takes to purge a dead node, whose purge frees the name).
    pub fn new(bound: Duration) -> Self {
        Self {
            bound,
            waiting: BTreeMap::new(),
        }
    }

    /// Decides for `name`, given the node whose connection holds the name now (`None`: none).
    pub fn check(&mut self, name: &str, holder: Option<NodeId>, now: Instant) -> Gate {
        let Some(holder) = holder else {
            self.waiting.remove(name);
            return Gate::Open;
        };
        let since = self
            .waiting
            .entry(name.to_string())
            .and_modify(|(seen, _)| *seen = holder)
            .or_insert((holder, now))
            .1;
        let until = since + self.bound;
        if now >= until {
            self.waiting.remove(name);
            Gate::Overdue { holder }
        } else {
            Gate::Wait { holder, until }
        }
    }

    /// The node `name` waits for, while it waits.
    pub fn holder(&self, name: &str) -> Option<NodeId> {
        self.waiting.get(name).map(|(holder, _)| *holder)
    }

    /// Forgets the workers no longer placed here (a later move waits afresh).
    pub fn retain(&mut self, placed_here: impl Fn(&str) -> bool) {
        self.waiting.retain(|name, _| placed_here(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Duration = Duration::from_secs(10);

    #[test]
    fn a_name_nobody_else_holds_starts_at_once() {
        let mut gate = MoveGate::new(BOUND);
        assert_eq!(gate.check("w", None, Instant::now()), Gate::Open);
        assert_eq!(gate.holder("w"), None);
    }

    #[test]
    fn a_name_held_elsewhere_waits_until_the_holder_lets_go() {
        let mut gate = MoveGate::new(BOUND);
        let start = Instant::now();
        assert_eq!(
            gate.check("w", Some(2), start),
            Gate::Wait {
                holder: 2,
                until: start + BOUND
            }
        );
        assert_eq!(
            gate.holder("w"),
            Some(2),
            "the status can say whom it waits for"
        );
        // Still held a while later: the bound counts from the first look, not this one.
        let later = start + Duration::from_secs(4);
        assert_eq!(
            gate.check("w", Some(2), later),
            Gate::Wait {
                holder: 2,
                until: start + BOUND
            }
        );
        assert_eq!(gate.check("w", None, later), Gate::Open);
        assert_eq!(gate.holder("w"), None);
    }

    #[test]
    fn a_holder_that_never_lets_go_blocks_the_start_only_up_to_the_bound() {
        let mut gate = MoveGate::new(BOUND);
        let start = Instant::now();
        gate.check("w", Some(2), start);
        assert_eq!(
            gate.check("w", Some(2), start + BOUND),
            Gate::Overdue { holder: 2 }
        );
        assert_eq!(gate.holder("w"), None);
    }

    #[test]
    fn a_later_move_waits_afresh_and_other_names_keep_their_own_clock() {
        let mut gate = MoveGate::new(BOUND);
        let start = Instant::now();
        gate.check("w", Some(2), start);
        gate.check("v", Some(3), start + Duration::from_secs(5));
        gate.retain(|name| name != "w");
        assert_eq!(gate.holder("w"), None);
        let later = start + Duration::from_secs(12);
        assert_eq!(
            gate.check("w", Some(2), later),
            Gate::Wait {
                holder: 2,
                until: later + BOUND
            }
        );
        assert_eq!(
            gate.check("v", Some(3), later),
            Gate::Wait {
                holder: 3,
                until: start + Duration::from_secs(15)
            }
        );
    }
}
