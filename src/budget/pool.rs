//! The node-wide total of client-held bytes and the rule for who pays when it is reached.
//!
//! The rule: a charge that fits under the limit is always admitted. One that does not is
//! refused when the requesting connection would then hold more than its fair share (the
//! limit divided by the open connections); that connection is closed. Otherwise a
//! well-behaved connection is asking, so it is admitted and the connection holding the most
//! is closed instead (unless connections already being closed hold enough to cover the
//! excess). Either way only connections over their share are ever closed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tracing::warn;

use super::share::{Share, ShareState};
use super::CLOSE_POLICY;
use crate::ids::{NodeId, WorkerId};

/// At most one eviction line per this interval (with a count of the ones not logged).
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What to do with a charge that would take the total over the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// It fits under the limit.
    Admit,
    /// The requester would hold more than its fair share: refuse it (and close it).
    RefuseRequester,
    /// The requester is within its share: admit it, and close the largest holder.
    EvictLargest,
}

/// The rule in one place (see the module doc).
pub(super) fn verdict(limit: u64, total_after: u64, requester_after: u64, live: usize) -> Verdict {
    if total_after <= limit {
        return Verdict::Admit;
    }
    if requester_after > fair_share(limit, live) {
        Verdict::RefuseRequester
    } else {
        Verdict::EvictLargest
    }
}

/// Each open connection's share of the limit.
pub(super) fn fair_share(limit: u64, live: usize) -> u64 {
    limit / live.max(1) as u64
}

/// The bytes every worker connection of this node holds, together.
#[derive(Debug)]
pub struct Budget {
    /// The node, for the log lines.
    node: NodeId,
    limit: u64,
    used: AtomicU64,
    next_id: AtomicU64,
    /// Open connections, consulted only when the limit is reached.
    shares: Mutex<HashMap<u64, Weak<ShareState>>>,
    /// Evictions logged: when the next line may be written, and how many were not.
    log: Mutex<(Option<Instant>, u64)>,
}

impl Budget {
    /// A budget of `limit` bytes for all the client connections of `node`.
    pub fn new(node: NodeId, limit: u64) -> Arc<Budget> {
        Arc::new(Budget {
            node,
            limit,
            used: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            shares: Mutex::new(HashMap::new()),
            log: Mutex::new((None, 0)),
        })
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes held by all connections right now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Opens the account of a new connection from `peer`.
    pub fn open(self: &Arc<Self>, peer: SocketAddr) -> Share {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ShareState::new(id, peer, self.clone()));
        self.lock_shares().insert(id, Arc::downgrade(&state));
        Share(state)
    }

    /// Charges `n` bytes to `me`; false when `me` is the one that must pay (see the rule).
    pub(super) fn charge(&self, me: &ShareState, n: u64) -> bool {
        let total_after = self.used.fetch_add(n, Ordering::Relaxed) + n;
        if total_after <= self.limit {
            me.held.fetch_add(n, Ordering::Relaxed);
            return true;
        }
        // Copied out: the last handle of a connection may go while we look, and its drop
        // takes the lock.
        let shares: Vec<Arc<ShareState>> = {
            let shares = self.lock_shares();
            shares.values().filter_map(Weak::upgrade).collect()
        };
        let requester_after = me.held.load(Ordering::Relaxed) + n;
        match verdict(self.limit, total_after, requester_after, shares.len()) {
            Verdict::Admit => {
                me.held.fetch_add(n, Ordering::Relaxed);
                true
            }
            Verdict::RefuseRequester => {
                self.used.fetch_sub(n, Ordering::Relaxed);
                false
            }
            Verdict::EvictLargest => {
                me.held.fetch_add(n, Ordering::Relaxed);
                if let Some(victim) = largest_to_close(&shares, me.id, total_after - self.limit) {
                    Share(victim).doom(
                        CLOSE_POLICY,
                        "connection holds the most of the node's client memory budget",
                    );
                }
                true
            }
        }
    }

    /// Forces `n` bytes onto `me` (a close frame must always be queued).
    pub(super) fn charge_anyway(&self, me: &ShareState, n: u64) {
        self.used.fetch_add(n, Ordering::Relaxed);
        me.held.fetch_add(n, Ordering::Relaxed);
    }

    /// Gives back bytes `me` no longer holds.
    pub(super) fn release(&self, me: &ShareState, n: u64) {
        me.held.fetch_sub(n, Ordering::Relaxed);
        self.used.fetch_sub(n, Ordering::Relaxed);
    }

    /// Forgets a closed connection's account.
    pub(super) fn forget(&self, id: u64) {
        self.lock_shares().remove(&id);
    }

    /// Logs an eviction, at most one line per [`LOG_INTERVAL`] for the whole node.
    pub(super) fn log_eviction(
        &self,
        peer: SocketAddr,
        worker: Option<WorkerId>,
        held: u64,
        code: u16,
        reason: &str,
    ) {
        let suppressed = {
            let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if log.0.is_some_and(|next| now < next) {
                log.1 += 1;
                return;
            }
            log.0 = Some(now + LOG_INTERVAL);
            std::mem::take(&mut log.1)
        };
        let worker_id = worker.map(|w| w.to_string()).unwrap_or_default();
        warn!(node = self.node, worker_id, peer = %peer, held, code, reason, used = self.used(), limit = self.limit, suppressed,
            "connection closed by the client memory budget");
    }

    fn lock_shares(&self) -> MutexGuard<'_, HashMap<u64, Weak<ShareState>>> {
        self.shares.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The open connection (other than `requester`) holding the most, unless connections
/// already being closed hold at least `excess` (their bytes are on their way back).
fn largest_to_close(
    shares: &[Arc<ShareState>],
    requester: u64,
    excess: u64,
) -> Option<Arc<ShareState>> {
    let mut closing = 0;
    let mut largest: Option<&Arc<ShareState>> = None;
    for share in shares {
        let held = share.held.load(Ordering::Relaxed);
        if share.is_doomed() {
            closing += held;
        } else if share.id != requester
            && held > largest.map_or(0, |l| l.held.load(Ordering::Relaxed))
        {
            largest = Some(share);
        }
    }
    if closing >= excess {
        return None;
    }
    largest.cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    #[test]
    fn under_the_limit_everything_is_admitted() {
        assert_eq!(verdict(100, 100, 100, 1), Verdict::Admit);
        assert_eq!(verdict(100, 50, 50, 10), Verdict::Admit);
    }

    #[test]
    fn over_the_limit_the_requester_over_its_share_pays() {
        // 4 connections: a share is 25 bytes.
        assert_eq!(verdict(100, 101, 26, 4), Verdict::RefuseRequester);
        assert_eq!(verdict(100, 101, 25, 4), Verdict::EvictLargest);
        assert_eq!(fair_share(100, 0), 100);
    }

    #[test]
    fn charges_and_releases_add_up() {
        let budget = Budget::new(1, 1000);
        let a = budget.open(peer());
        let b = budget.open(peer());
        assert!(a.charge(300));
        assert!(b.charge(200));
        assert_eq!(budget.used(), 500);
        assert_eq!(a.held(), 300);
        a.release(100);
        assert_eq!(budget.used(), 400);
        drop(b);
        assert_eq!(
            budget.used(),
            200,
            "a closed connection gives back all it held"
        );
    }

    #[test]
    fn the_hog_is_refused_and_closed_not_the_small_one() {
        let budget = Budget::new(1, 1000);
        let hog = budget.open(peer());
        let small = budget.open(peer());
        assert!(hog.charge(990));
        // The hog asks for more: over the limit and over its share (500): refused, closed.
        assert!(!hog.charge(20));
        assert!(hog.eviction().is_some());
        assert!(small.eviction().is_none());
        assert_eq!(budget.used(), 990);
    }

    #[test]
    fn a_small_connection_reaching_the_limit_closes_the_largest() {
        let budget = Budget::new(1, 1000);
        let hog = budget.open(peer());
        let middle = budget.open(peer());
        let small = budget.open(peer());
        assert!(hog.charge(700));
        assert!(middle.charge(290));
        assert!(small.charge(20), "within its share (333), it is admitted");
        assert_eq!(hog.eviction().map(|e| e.code), Some(CLOSE_POLICY));
        assert!(middle.eviction().is_none());
        assert!(small.eviction().is_none());
        // The hog's bytes are on their way back: the next small charge closes nobody else.
        assert!(small.charge(20));
        assert!(middle.eviction().is_none());
    }

    #[test]
    fn a_forced_charge_is_counted() {
        let budget = Budget::new(1, 10);
        let a = budget.open(peer());
        a.charge_anyway(50);
        assert_eq!(budget.used(), 50);
        a.release(50);
        assert_eq!(budget.used(), 0);
    }
}
