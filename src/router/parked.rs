//! Answers owed to workers whose connection ended while they waited on calls: closed by this
//! node's drain, or held by a node that died while this node executed their calls.
//!
//! An SDK keeps its pending calls across a reconnect, so such calls need not fail: the node
//! executing them keeps them, and their answers wait here until the worker reconnects
//! somewhere and proves with `reattach` that it is the same worker. Then every owed answer
//! goes to the new connection, wherever it lives.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::ids::{NodeId, WorkerId};
use crate::protocol::{ErrorBody, Payload};

/// One answer the worker has not received yet.
#[derive(Debug)]
pub struct OwedAnswer {
    /// The worker's own invocation id for the call.
    pub invocation_id: String,
    pub function_id: String,
    pub outcome: Result<Payload, ErrorBody>,
}

/// Where a closed worker's answers go now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Successor {
    pub node: NodeId,
    pub worker: WorkerId,
}

#[derive(Debug)]
struct Parked {
    token_hash: String,
    successor: Option<Successor>,
    owed: Vec<OwedAnswer>,
    since: Instant,
}

/// A claim that arrived before this node parked the worker it names.
#[derive(Debug)]
struct EarlyClaim {
    token_hash: String,
    successor: Successor,
    at: Instant,
}

/// Closed workers and what they are owed, by their old worker id.
#[derive(Debug, Default)]
pub struct ParkedWorkers {
    workers: HashMap<WorkerId, Parked>,
    early_claims: HashMap<WorkerId, EarlyClaim>,
}

/// What to do with an answer for a worker.
#[derive(Debug)]
pub enum Redirect {
    /// Not a closed worker: deliver on its own connection as usual.
    NotParked(OwedAnswer),
    /// Kept until the worker reattaches.
    Kept,
    /// Send it to the worker's new connection.
    To(Successor, OwedAnswer),
}

impl ParkedWorkers {
    /// Starts keeping the answers of `worker`; `token_hash` is what its reattach must match.
    /// Keeps an entry already there (its successor may be known).
    pub fn park(&mut self, worker: WorkerId, token_hash: String) {
        if self.workers.contains_key(&worker) {
            return;
        }
        let successor = self
            .early_claims
            .remove(&worker)
            .filter(|claim| claim.token_hash == token_hash)
            .map(|claim| claim.successor);
        self.workers.insert(
            worker,
            Parked {
                token_hash,
                successor,
                owed: Vec::new(),
                since: Instant::now(),
            },
        );
    }

    /// Forgets entries (and claims) older than `age`: a worker that has not reattached by
    /// then has given up on its calls (SDK timeouts are far shorter).
    pub fn prune(&mut self, age: Duration) {
        self.workers.retain(|_, p| p.since.elapsed() < age);
        self.early_claims.retain(|_, c| c.at.elapsed() < age);
    }

    /// Whether answers for `worker` are kept or redirected here.
    pub fn is_parked(&self, worker: WorkerId) -> bool {
        self.workers.contains_key(&worker)
    }

    /// Decides where an answer for `worker` goes.
    pub fn redirect(&mut self, worker: WorkerId, answer: OwedAnswer) -> Redirect {
        match self.workers.get_mut(&worker) {
            None => Redirect::NotParked(answer),
            Some(Parked {
                successor: Some(successor),
                ..
            }) => Redirect::To(*successor, answer),
            Some(parked) => {
                parked.owed.push(answer);
                Redirect::Kept
            }
        }
    }

    /// A reconnected worker claims `previous`: when the token matches, returns its new
    /// address and the answers kept so far (later ones are redirected as they come).
    pub fn claim(
        &mut self,
        previous: WorkerId,
        token_hash: &str,
        successor: Successor,
    ) -> Option<Vec<OwedAnswer>> {
        let Some(parked) = self.workers.get_mut(&previous) else {
            // This node may park the worker a moment later (its caller's node just died).
            self.early_claims.insert(
                previous,
                EarlyClaim {
                    token_hash: token_hash.to_string(),
                    successor,
                    at: Instant::now(),
                },
            );
            return None;
        };
        if parked.token_hash != token_hash || parked.successor.is_some() {
            return None;
        }
        parked.successor = Some(successor);
        Some(std::mem::take(&mut parked.owed))
    }

    /// Answers still kept for workers that have not reattached.
    pub fn owed(&self) -> usize {
        self.workers.values().map(|p| p.owed.len()).sum()
    }

    /// The workers kept here.
    pub fn workers(&self) -> impl Iterator<Item = WorkerId> + '_ {
        self.workers.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(id: &str) -> OwedAnswer {
        OwedAnswer {
            invocation_id: id.into(),
            function_id: "f".into(),
            outcome: Ok(Payload::default()),
        }
    }

    #[test]
    fn answers_are_kept_until_the_right_token_claims_them() {
        let (old, new) = (WorkerId::new(), WorkerId::new());
        let mut parked = ParkedWorkers::default();
        assert!(matches!(
            parked.redirect(old, answer("1")),
            Redirect::NotParked(_)
        ));
        parked.park(old, "hash".into());
        assert!(matches!(parked.redirect(old, answer("1")), Redirect::Kept));
        assert_eq!(parked.owed(), 1);
        let successor = Successor {
            node: 2,
            worker: new,
        };
        assert!(parked.claim(old, "wrong", successor).is_none());
        let kept = parked.claim(old, "hash", successor).expect("claimed");
        assert_eq!(kept.len(), 1);
        assert_eq!(parked.owed(), 0);
        assert!(
            parked.claim(old, "hash", successor).is_none(),
            "claimed only once"
        );
        match parked.redirect(old, answer("2")) {
            Redirect::To(to, owed) => {
                assert_eq!(to, successor);
                assert_eq!(owed.invocation_id, "2");
            }
            other => panic!("expected a redirect, got {other:?}"),
        }
    }

    #[test]
    fn a_claim_that_comes_first_is_used_when_the_worker_is_parked() {
        let (old, new) = (WorkerId::new(), WorkerId::new());
        let successor = Successor {
            node: 3,
            worker: new,
        };
        let mut parked = ParkedWorkers::default();
        assert!(parked.claim(old, "hash", successor).is_none());
        parked.park(old, "hash".into());
        assert!(matches!(
            parked.redirect(old, answer("1")),
            Redirect::To(to, _) if to == successor
        ));
        parked.prune(Duration::ZERO);
        assert!(!parked.is_parked(old), "old entries are forgotten");
    }
}
