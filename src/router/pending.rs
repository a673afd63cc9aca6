//! The pending-call table and the per-worker in-flight sets it keeps in step.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::Caller;
use crate::ids::{InvocationId, NodeId, WorkerId};

/// A call handed to a worker, waiting for its answer.
#[derive(Debug)]
pub struct PendingCall {
    pub caller: Caller,
    pub function_id: String,
    pub owner: WorkerId,
    /// The node holding the owner's socket (this node for local calls).
    pub owner_node: NodeId,
    /// For a call forwarded here: the calling worker and its own invocation id, so the
    /// answer can still reach it if its node dies and it reconnects elsewhere.
    pub origin: Option<(WorkerId, String)>,
    started: Instant,
}

impl PendingCall {
    /// A call admitted now that its caller began at `started` (the answer's duration
    /// counts from there).
    pub fn new(
        caller: Caller,
        function_id: String,
        owner: WorkerId,
        owner_node: NodeId,
        started: Instant,
    ) -> Self {
        Self {
            caller,
            function_id,
            owner,
            owner_node,
            origin: None,
            started,
        }
    }

    /// When the call began.
    pub fn started(&self) -> Instant {
        self.started
    }

    fn caller_node(&self) -> Option<NodeId> {
        match self.caller {
            Caller::Remote { node, .. } => Some(node),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
struct InFlight {
    executing: HashSet<InvocationId>,
    waiting: HashSet<InvocationId>,
}

impl InFlight {
    fn is_empty(&self) -> bool {
        self.executing.is_empty() && self.waiting.is_empty()
    }
}

/// Pending calls plus, per worker, the calls it executes and the calls it waits on.
#[derive(Debug, Default)]
pub struct PendingTable {
    calls: HashMap<InvocationId, PendingCall>,
    by_worker: HashMap<WorkerId, InFlight>,
    /// Local workers a drain is closing: no new call may be handed to them.
    closing: HashSet<WorkerId>,
}

impl PendingTable {
    /// Adds a call unless its caller already waits on `limit` calls (then the caller
    /// is handed back to be answered with an error).
    pub fn insert(
        &mut self,
        id: InvocationId,
        call: PendingCall,
        limit: usize,
    ) -> Result<(), Caller> {
        if let Some(caller) = call.caller.worker() {
            let waiting = self.by_worker.entry(caller).or_default();
            if waiting.waiting.len() >= limit {
                return Err(call.caller);
            }
            waiting.waiting.insert(id);
        }
        self.by_worker
            .entry(call.owner)
            .or_default()
            .executing
            .insert(id);
        self.calls.insert(id, call);
        Ok(())
    }

    /// Marks a worker as closing if it executes no call; true when it was marked. Checked
    /// under the same lock as admissions, so no call slips in between.
    pub fn try_close(&mut self, worker: WorkerId) -> bool {
        if self.load(worker).executing > 0 {
            return false;
        }
        self.closing.insert(worker);
        true
    }

    /// Marks a worker as closing whatever it executes (the engine closes it now).
    pub fn mark_closing(&mut self, worker: WorkerId) {
        self.closing.insert(worker);
    }

    /// Whether a drain is closing this worker.
    pub fn is_closing(&self, worker: WorkerId) -> bool {
        self.closing.contains(&worker)
    }

    /// A closed worker's session ended: returns the calls it was still executing, and keeps
    /// the calls it waits on, whose answers are owed to its next connection.
    pub fn drop_closed_worker(&mut self, worker: WorkerId) -> Vec<PendingCall> {
        self.closing.remove(&worker);
        self.take_of_worker(worker, |f| &f.executing)
            .into_iter()
            .map(|(_, call)| call)
            .collect()
    }

    /// Takes out the calls a worker waits on (it is about to be disconnected by the engine).
    pub fn drop_waiting(&mut self, worker: WorkerId) -> Vec<(InvocationId, PendingCall)> {
        self.take_of_worker(worker, |f| &f.waiting)
    }

    /// Removes a call whatever answered it.
    pub fn remove(&mut self, id: InvocationId) -> Option<PendingCall> {
        let call = self.calls.remove(&id)?;
        self.forget(id, &call);
        Some(call)
    }

    /// Removes a call only when `from` is the worker it was sent to.
    pub fn remove_if_owned_by(&mut self, id: InvocationId, from: WorkerId) -> Option<PendingCall> {
        if self.calls.get(&id)?.owner != from {
            return None;
        }
        self.remove(id)
    }

    /// Removes a forwarded call only when `from` is the node it was forwarded to.
    pub fn remove_if_on_node(&mut self, id: InvocationId, from: NodeId) -> Option<PendingCall> {
        if self.calls.get(&id)?.owner_node != from {
            return None;
        }
        self.remove(id)
    }

    /// Removes a call forwarded here only when `from` is the node it came from.
    pub fn remove_if_caller_node(&mut self, id: InvocationId, from: NodeId) -> Option<PendingCall> {
        if self.calls.get(&id)?.caller_node() != Some(from) {
            return None;
        }
        self.remove(id)
    }

    /// Forgets everything about a worker but the calls it executes that `keep` picks
    /// (another node still answers those). Returns the other calls it was executing, whose
    /// callers must be told the call stopped, and the (node, id) of calls it waited on
    /// that other nodes are executing, so those nodes can forget them too.
    pub fn drop_worker(
        &mut self,
        worker: WorkerId,
        keep: impl Fn(&PendingCall) -> bool,
    ) -> (Vec<PendingCall>, Vec<(NodeId, InvocationId)>) {
        self.closing.remove(&worker);
        let Some(in_flight) = self.by_worker.remove(&worker) else {
            return (Vec::new(), Vec::new());
        };
        let mut abandoned = Vec::new();
        for id in &in_flight.waiting {
            if let Some(call) = self.calls.remove(id) {
                self.forget(*id, &call);
                abandoned.push((call.owner_node, *id));
            }
        }
        let (kept, dropped): (HashSet<InvocationId>, HashSet<InvocationId>) = in_flight
            .executing
            .into_iter()
            .partition(|id| self.calls.get(id).is_some_and(&keep));
        let stopped = dropped
            .into_iter()
            .filter_map(|id| self.remove(id))
            .collect();
        if !kept.is_empty() {
            let in_flight = InFlight {
                executing: kept,
                waiting: HashSet::new(),
            };
            self.by_worker.insert(worker, in_flight);
        }
        (stopped, abandoned)
    }

    /// Calls another node handed us that we sent on to a third node (a draining node
    /// routing calls again after their worker moved): we owe their callers the answer.
    pub fn relayed(&self, here: NodeId) -> usize {
        self.calls
            .values()
            .filter(|c| c.caller_node().is_some() && c.owner_node != here)
            .count()
    }

    /// Forgets the calls a lost node was executing for us and returns them: their callers
    /// must be told.
    pub fn drop_owner_node(&mut self, node: NodeId) -> Vec<PendingCall> {
        self.remove_where(|c| c.owner_node == node)
    }

    /// The node that handed us calls died: each call that names its calling worker now
    /// waits for that worker (who may reconnect elsewhere); the others are dropped. Returns
    /// the calling workers.
    pub fn orphan_callers(&mut self, node: NodeId) -> Vec<WorkerId> {
        let tied = self.ids_where(|c| c.caller_node() == Some(node));
        let mut orphaned = Vec::new();
        for id in tied {
            let Some(mut call) = self.remove(id) else {
                continue;
            };
            let Some((worker, invocation_id)) = call.origin.take() else {
                continue;
            };
            call.caller = Caller::Worker {
                worker,
                invocation_id,
            };
            self.by_worker.entry(worker).or_default().waiting.insert(id);
            self.by_worker
                .entry(call.owner)
                .or_default()
                .executing
                .insert(id);
            self.calls.insert(id, call);
            if !orphaned.contains(&worker) {
                orphaned.push(worker);
            }
        }
        orphaned
    }

    /// Removes and returns calls older than `age`.
    pub fn expire(&mut self, age: Duration) -> Vec<PendingCall> {
        self.remove_where(|c| c.started.elapsed() > age)
    }

    /// In-flight counts of one worker.
    pub fn load(&self, worker: WorkerId) -> super::Load {
        self.by_worker
            .get(&worker)
            .map(|f| super::Load {
                executing: f.executing.len(),
                waiting: f.waiting.len(),
            })
            .unwrap_or_default()
    }

    /// The ids of the calls `pick` selects, collected so the table can change afterwards.
    fn ids_where(&self, pick: impl Fn(&PendingCall) -> bool) -> Vec<InvocationId> {
        self.calls
            .iter()
            .filter(|(_, call)| pick(call))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Removes and returns the calls `pick` selects.
    fn remove_where(&mut self, pick: impl Fn(&PendingCall) -> bool) -> Vec<PendingCall> {
        self.ids_where(pick)
            .into_iter()
            .filter_map(|id| self.remove(id))
            .collect()
    }

    /// Removes and returns the calls in one of a worker's in-flight sets.
    fn take_of_worker(
        &mut self,
        worker: WorkerId,
        set: fn(&InFlight) -> &HashSet<InvocationId>,
    ) -> Vec<(InvocationId, PendingCall)> {
        let ids: Vec<InvocationId> = self
            .by_worker
            .get(&worker)
            .map(|f| set(f).iter().copied().collect())
            .unwrap_or_default();
        ids.into_iter()
            .filter_map(|id| self.remove(id).map(|call| (id, call)))
            .collect()
    }

    fn forget(&mut self, id: InvocationId, call: &PendingCall) {
        for (worker, executing) in [(Some(call.owner), true), (call.caller.worker(), false)] {
            let Some(worker) = worker else { continue };
            if let Some(in_flight) = self.by_worker.get_mut(&worker) {
                if executing {
                    in_flight.executing.remove(&id);
                } else {
                    in_flight.waiting.remove(&id);
                }
                if in_flight.is_empty() {
                    self.by_worker.remove(&worker);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(caller: WorkerId, owner: WorkerId) -> PendingCall {
        PendingCall::new(
            Caller::Worker {
                worker: caller,
                invocation_id: "x".into(),
            },
            "f".into(),
            owner,
            1,
            Instant::now(),
        )
    }

    #[test]
    fn owner_loss_returns_its_calls_and_clears_the_callers_counts() {
        let (a, b) = (WorkerId::new(), WorkerId::new());
        let mut table = PendingTable::default();
        table.insert(InvocationId::new(), call(a, b), 10).unwrap();
        assert_eq!(table.load(b).executing, 1);
        assert_eq!(table.load(a).waiting, 1);
        assert_eq!(table.drop_worker(b, |_| false).0.len(), 1);
        assert_eq!(table.load(a), super::super::Load::default());
        assert!(table.calls.is_empty());
    }

    #[test]
    fn calls_from_a_lost_node_wait_for_their_calling_worker() {
        let (caller, owner) = (WorkerId::new(), WorkerId::new());
        let mut table = PendingTable::default();
        let id = InvocationId::new();
        let mut incoming = PendingCall::new(
            Caller::Remote {
                node: 2,
                invocation_id: id,
            },
            "f".into(),
            owner,
            1,
            Instant::now(),
        );
        incoming.origin = Some((caller, "sdk-id".into()));
        table.insert(id, incoming, 10).unwrap();
        assert_eq!(table.orphan_callers(2), vec![caller]);
        assert_eq!(table.load(caller).waiting, 1);
        let answered = table.remove_if_owned_by(id, owner).expect("still pending");
        assert!(matches!(
            answered.caller,
            Caller::Worker { worker, ref invocation_id } if worker == caller && invocation_id == "sdk-id"
        ));
    }

    #[test]
    fn a_worker_closes_only_when_idle_and_keeps_the_calls_it_waits_on() {
        let (a, b) = (WorkerId::new(), WorkerId::new());
        let mut table = PendingTable::default();
        let id = InvocationId::new();
        table.insert(id, call(a, b), 10).unwrap();
        assert!(!table.try_close(b), "b executes a call");
        assert!(table.try_close(a), "a only waits");
        assert!(table.is_closing(a));
        assert!(table.drop_closed_worker(a).is_empty());
        assert_eq!(table.load(a).waiting, 1, "the answer is still owed to a");
        assert!(!table.is_closing(a));
        assert!(table.remove_if_owned_by(id, b).is_some());
    }

    #[test]
    fn a_worker_about_to_be_closed_gets_back_the_calls_it_waits_on() {
        let (a, b) = (WorkerId::new(), WorkerId::new());
        let mut table = PendingTable::default();
        table.insert(InvocationId::new(), call(a, b), 10).unwrap();
        table.insert(InvocationId::new(), call(b, a), 10).unwrap();
        let stopped = table.drop_waiting(a);
        assert_eq!(stopped.len(), 1);
        assert_eq!(table.load(a).waiting, 0);
        assert_eq!(
            table.load(a).executing,
            1,
            "calls it executes are untouched"
        );
    }

    #[test]
    fn caller_loss_drops_its_calls_without_answers() {
        let (a, b) = (WorkerId::new(), WorkerId::new());
        let mut table = PendingTable::default();
        let id = InvocationId::new();
        table.insert(id, call(a, b), 10).unwrap();
        assert!(table.drop_worker(a, |_| false).0.is_empty());
        assert!(table.remove_if_owned_by(id, b).is_none());
        assert_eq!(table.load(b), super::super::Load::default());
    }

    #[test]
    fn only_the_owner_can_answer_and_the_limit_holds() {
        let (a, b) = (WorkerId::new(), WorkerId::new());
        let mut table = PendingTable::default();
        let id = InvocationId::new();
        table.insert(id, call(a, b), 1).unwrap();
        assert!(table.insert(InvocationId::new(), call(a, b), 1).is_err());
        assert!(table.remove_if_owned_by(id, a).is_none());
        assert!(table.remove_if_owned_by(id, b).is_some());
    }

    #[test]
    fn a_self_call_counts_as_both_executing_and_waiting() {
        let a = WorkerId::new();
        let mut table = PendingTable::default();
        table.insert(InvocationId::new(), call(a, a), 10).unwrap();
        assert_eq!(
            table.load(a),
            super::super::Load {
                executing: 1,
                waiting: 1
            }
        );
        assert!(
            table.drop_worker(a, |_| false).0.is_empty(),
            "nobody is left to answer"
        );
        assert!(table.calls.is_empty());
    }

    #[test]
    fn a_lost_node_stops_its_calls_and_drops_the_ones_it_forwarded() {
        let (a, b) = (WorkerId::new(), WorkerId::new());
        let mut table = PendingTable::default();
        let forwarded_out = InvocationId::new();
        let mut out = call(a, b);
        out.owner_node = 2;
        table.insert(forwarded_out, out, 10).unwrap();
        let forwarded_in = InvocationId::new();
        let incoming = PendingCall::new(
            Caller::Remote {
                node: 2,
                invocation_id: forwarded_in,
            },
            "f".into(),
            a,
            1,
            Instant::now(),
        );
        table.insert(forwarded_in, incoming, 10).unwrap();
        let stopped = table.drop_owner_node(2);
        assert_eq!(
            stopped.len(),
            1,
            "the call node 2 was executing needs an answer"
        );
        assert_eq!(
            table.calls.len(),
            1,
            "the call node 2 handed us is untouched"
        );
        assert!(
            table.orphan_callers(2).is_empty(),
            "a call without a calling worker is dropped"
        );
        assert!(table.calls.is_empty());
        assert_eq!(table.load(a), super::super::Load::default());
    }

    #[test]
    fn remote_answers_and_cancels_only_come_from_the_right_node() {
        let (a, b) = (WorkerId::new(), WorkerId::new());
        let mut table = PendingTable::default();
        let id = InvocationId::new();
        let mut out = call(a, b);
        out.owner_node = 2;
        table.insert(id, out, 10).unwrap();
        assert!(table.remove_if_on_node(id, 3).is_none());
        assert!(table.remove_if_caller_node(id, 2).is_none());
        assert!(table.remove_if_on_node(id, 2).is_some());
        let (stopped, abandoned) = table.drop_worker(a, |_| false);
        assert!(stopped.is_empty() && abandoned.is_empty());
    }

    #[test]
    fn a_departing_caller_reports_calls_other_nodes_execute() {
        let (a, b) = (WorkerId::new(), WorkerId::new());
        let mut table = PendingTable::default();
        let id = InvocationId::new();
        let mut out = call(a, b);
        out.owner_node = 2;
        table.insert(id, out, 10).unwrap();
        let (_, abandoned) = table.drop_worker(a, |_| false);
        assert_eq!(abandoned, vec![(2, id)]);
    }
    #[test]
    fn a_gone_owner_keeps_the_calls_a_draining_node_routes_again_and_stops_the_rest() {
        let (a, b) = (WorkerId::new(), WorkerId::new());
        let mut table = PendingTable::default();
        let (kept, local) = (InvocationId::new(), InvocationId::new());
        let mut forwarded = call(a, b);
        forwarded.owner_node = 2;
        table.insert(kept, forwarded, 10).unwrap();
        table.insert(local, call(a, b), 10).unwrap();
        let (stopped, abandoned) = table.drop_worker(b, |c| c.owner_node == 2);
        assert_eq!(stopped.len(), 1, "the call executed here stops");
        assert!(abandoned.is_empty());
        assert_eq!(
            table.load(b).executing,
            1,
            "the forwarded call is still in flight"
        );
        assert_eq!(table.load(a).waiting, 1, "its caller still waits for it");
        assert!(
            table.remove_if_on_node(kept, 2).is_some(),
            "its answer is taken"
        );
        assert!(table.calls.is_empty());
        assert_eq!(table.load(a), super::super::Load::default());
    }

    #[test]
    fn relayed_counts_calls_other_nodes_handed_us_that_we_sent_elsewhere() {
        let (a, b) = (WorkerId::new(), WorkerId::new());
        let mut table = PendingTable::default();
        let remote_caller = |owner_node| {
            let caller = Caller::Remote {
                node: 3,
                invocation_id: InvocationId::new(),
            };
            PendingCall::new(caller, "f".into(), b, owner_node, Instant::now())
        };
        table
            .insert(InvocationId::new(), remote_caller(1), 10)
            .unwrap();
        assert_eq!(table.relayed(1), 0, "executed here: not relayed");
        let relayed = InvocationId::new();
        table.insert(relayed, remote_caller(2), 10).unwrap();
        table.insert(InvocationId::new(), call(a, b), 10).unwrap();
        assert_eq!(table.relayed(1), 1);
        table.remove(relayed);
        assert_eq!(table.relayed(1), 0);
    }
}
