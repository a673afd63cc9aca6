//! Closing workers without failing their calls: a worker the engine closes (a drain, fencing)
//! or whose node died while another node executed its calls is parked, and the answers owed to
//! it follow it to its next connection once it reattaches (see `parked`).

use std::time::Duration;
use tracing::{debug, info};

use super::parked::ParkedWorkers;
use super::{Caller, OwedAnswer, Router, Successor};
use crate::ids::{NodeId, WorkerId};

impl Router {
    /// The stream `node` opened to us broke: its calls here keep running, and their answers
    /// are kept for the calling workers, who may reconnect to another node and reattach.
    pub async fn caller_node_lost(&self, node: NodeId) {
        let orphaned = self.lock_table().orphan_callers(node);
        if orphaned.is_empty() {
            return;
        }
        let hashes: Vec<(WorkerId, String)> = match self.registry.read() {
            Ok(registry) => orphaned
                .iter()
                .filter_map(|w| registry.worker(*w).map(|r| (*w, r.token_hash.clone())))
                .collect(),
            Err(_) => Vec::new(),
        };
        let mut parked = self.lock_parked();
        for (worker, token_hash) in hashes {
            debug!(node = self.node, worker_id = %worker, caller_node = node, "caller's node lost: keeping its answers for a reattach");
            parked.park(worker, token_hash);
        }
    }

    /// Forgets answers kept for workers that never reattached.
    pub fn prune_parked(&self, age: Duration) {
        self.lock_parked().prune(age);
    }

    /// Marks a local worker as closing when it executes no call (true); from then on no
    /// call is handed to it, and the answers to calls it waits on are kept for it.
    pub fn try_close(&self, worker: WorkerId, token_hash: String) -> bool {
        if !self.lock_table().try_close(worker) {
            return false;
        }
        self.lock_parked().park(worker, token_hash);
        true
    }

    /// The engine closes a local worker now (fencing): no call is handed to it any more, and
    /// the answers to calls it waits on are kept for its next connection.
    pub fn close_now(&self, worker: WorkerId, token_hash: String) {
        self.lock_table().mark_closing(worker);
        self.lock_parked().park(worker, token_hash);
    }

    /// A reconnected worker proved it is `previous`: the answers kept for it, and those
    /// still to come, go to its new connection.
    pub async fn reattached(&self, previous: WorkerId, token_hash: &str, successor: Successor) {
        let owed = self.lock_parked().claim(previous, token_hash, successor);
        let Some(owed) = owed else { return };
        info!(node = self.node, worker_id = %previous, successor = %successor.worker,
            successor_node = successor.node, owed = owed.len(), "answers owed to a closed worker follow it");
        for answer in owed {
            self.send_owed(successor, answer).await;
        }
    }

    /// Calls that closed workers still wait on, answers kept for workers that have not
    /// reattached yet, calls on hold and calls routed again for other nodes: a draining
    /// node waits for all to reach zero.
    pub fn owed_to_closed_workers(&self) -> usize {
        let waiting = {
            let parked = self.lock_parked();
            let table = self.lock_table();
            parked.owed()
                + parked
                    .workers()
                    .map(|w| table.load(w).waiting)
                    .sum::<usize>()
        };
        waiting + self.relayed_calls() + self.holding.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Delivers an owed answer to the worker's new connection, here or on another node.
    pub(super) async fn send_owed(&self, successor: Successor, answer: OwedAnswer) {
        if successor.node == self.node {
            self.deliver_owed(successor.worker, answer).await;
        } else if let Some(link) = self.link.get() {
            link.answer_worker(successor.node, successor.worker, answer)
                .await;
        }
    }

    /// An answer owed to `worker` (its previous connection was counted already).
    pub async fn deliver_owed(&self, worker: WorkerId, answer: OwedAnswer) {
        let caller = Caller::Worker {
            worker,
            invocation_id: answer.invocation_id,
        };
        Box::pin(self.deliver_answer(caller, &answer.function_id, answer.outcome)).await;
    }

    pub(super) fn lock_parked(&self) -> std::sync::MutexGuard<'_, ParkedWorkers> {
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }
}
