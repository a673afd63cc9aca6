//! Leases: how long a node may go without contact before the rest stop trusting it.
//!
//! Two rules share one clock and must never disagree:
//! - a node that has not been in contact with a quorum for `fence_after` fences
//!   itself: it closes its worker sockets and refuses registrations;
//! - the leader purges a node it has not heard from for `purge_after`, which is
//!   longer than `fence_after` plus one election timeout, so by the time the
//!   majority forgets a node's workers, that node has surely closed their sockets.
//!
//! The bookkeeping ([`PeerContact`], [`must_fence`], [`is_silent`]) is pure: time is passed
//! in, so the decisions are unit-tested. [`run`] drives it on a node: when leading it probes
//! every member, purges lost ones, and records each member's last answer in
//! [`MemberContact`] (which the departed-member check reads) and the command level it reports
//! (which the leader's write check reads, see `command_level.rs`); it fences or unfences this node.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tracing::{info, warn};

use super::command_level::CommandLevel;
use crate::ids::NodeId;
use crate::node::Node;
use crate::registry::Command;
use crate::rpc::pb::StatusRequest;

/// The lease timings of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTimings {
    /// Without quorum contact for this long, a node fences itself.
    pub fence_after: Duration,
    /// Without contact for this long, the leader purges a node's workers.
    pub purge_after: Duration,
}

impl Default for LeaseTimings {
    /// Fencing waits well past an election (300–600 ms timeouts) so a leader change
    /// never fences the healthy side; purging waits for fencing plus a margin.
    fn default() -> Self {
        Self {
            fence_after: Duration::from_millis(2_500),
            purge_after: Duration::from_millis(5_000),
        }
    }
}

/// How often the lease task looks at the cluster.
const TICK: Duration = Duration::from_millis(200);
/// How long one liveness probe of a peer may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// A leader whose last quorum acknowledgement is older than this has no quorum.
const QUORUM_ACK_STALE: Duration = Duration::from_millis(1_000);
/// How long committing a purge may hold up the lease loop (which also fences this node).
const PURGE_COMMIT_TIMEOUT: Duration = Duration::from_secs(2);

/// Keeps this node's leases until it shuts down.
pub async fn run(node: Arc<Node>, timings: LeaseTimings) {
    let mut contact = PeerContact::default();
    let mut leading_since: Option<Instant> = None;
    let mut last_quorum_contact = Instant::now();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = node.shutdown.cancelled() => return,
        }
        let now = Instant::now();
        let metrics = node.consensus.raft().metrics().borrow().clone();
        let leading = metrics.current_leader == Some(node.id);
        let in_quorum = if leading {
            metrics
                .millis_since_quorum_ack
                .is_some_and(|ms| Duration::from_millis(ms) <= QUORUM_ACK_STALE)
        } else {
            // Knowing a leader is not enough: a follower cut off keeps its old leader until
            // an election it can win, which may take long. Its heartbeats must arrive too.
            metrics.current_leader.is_some() && node.heard_from_leader_within(QUORUM_ACK_STALE)
        };
        if in_quorum {
            last_quorum_contact = now;
        }
        let fence = must_fence(
            Some(now.saturating_duration_since(last_quorum_contact)),
            timings,
        );
        node.set_fenced(fence);

        // A leader cut off from its quorum keeps calling itself leader until it hears of a
        // newer term; it must not purge, since the members it cannot reach are the majority.
        // With its quorum back, it gives every member a full lease again.
        if !leading || !in_quorum {
            leading_since = None;
            node.member_contact.stop_leading();
            node.member_levels.forget_all();
            continue;
        }
        let since = *leading_since.get_or_insert(now);
        node.member_contact.lead(since);
        // A node with a managed worker placed on it is watched too, so one that dies while its
        // worker is down is purged (and the worker placed elsewhere) all the same.
        let holding = {
            let registry = node.registry();
            let mut holding = registry.nodes_with_workers();
            holding.extend(registry.nodes_with_placements());
            holding
        };
        contact.track_holders(&holding, now);
        let members: Vec<(NodeId, String)> = metrics
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != node.id)
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect();
        let answers = join_all(
            members
                .iter()
                .map(|(id, address)| async { (*id, command_level_of(&node, address).await) }),
        )
        .await;
        let answered_at = Instant::now();
        for (peer, answered) in answers {
            let Some(level) = answered else {
                node.member_levels.forget(peer);
                continue;
            };
            node.member_levels.record(peer, level);
            node.member_contact.record(peer, answered_at);
            if holding.contains(&peer) {
                contact.record(peer, answered_at);
            }
        }
        for lost in contact.to_purge(&holding, node.id, since, Instant::now(), timings) {
            warn!(
                node = node.id,
                lost_node = lost,
                "no contact for the lease; purging its workers"
            );
            match commit_as_leader(&node, Command::NodePurged { node: lost }).await {
                Ok(()) => info!(node = node.id, lost_node = lost, "lost node purged"),
                Err(err) => {
                    warn!(node = node.id, lost_node = lost, error = %err, "purge not committed")
                }
            }
        }
    }
}

/// Commits a decision of this leadership on this node only: never forwarded and never retried,
/// so a deposed leader's decision, made on its stale view, dies with its term instead of being
/// handed to the next leader (which once purged a healthy node after a partition healed).
async fn commit_as_leader(node: &Node, command: Command) -> Result<(), String> {
    match tokio::time::timeout(PURGE_COMMIT_TIMEOUT, node.consensus.write(command)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!(
            "not committed within {PURGE_COMMIT_TIMEOUT:?}; this node may have lost its quorum"
        )),
    }
}

/// The registry command level the member at `address` reports, if it answers a status request
/// in time (an older binary reports none: 0).
pub async fn command_level_of(node: &Node, address: &str) -> Option<CommandLevel> {
    node.peers
        .unary(address, PROBE_TIMEOUT, |mut client| async move {
            client.status(StatusRequest {}).await
        })
        .await
        .ok()
        .map(|reply| reply.command_level)
}

/// Whether a node last heard from at `last` (never: `None`) is silent at `now`: no answer for
/// `purge_after`, counting from `since` (when this node started leading) at the earliest, so a
/// fresh leader gives every peer a full lease.
pub fn is_silent(
    last: Option<Instant>,
    since: Instant,
    now: Instant,
    timings: LeaseTimings,
) -> bool {
    let last = last.unwrap_or(since).max(since);
    now.saturating_duration_since(last) > timings.purge_after
}

/// When each member last answered this (leading) node's probe, shared with the departed-member
/// check so that both agree on which members are silent. Knows nothing while not leading.
#[derive(Debug, Default)]
pub struct MemberContact {
    book: Mutex<ContactBook>,
}

#[derive(Debug, Default)]
struct ContactBook {
    leading_since: Option<Instant>,
    last_ok: HashMap<NodeId, Instant>,
}

impl MemberContact {
    fn book(&self) -> std::sync::MutexGuard<'_, ContactBook> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This node leads since `since` (a new term of leadership starts a new book).
    pub fn lead(&self, since: Instant) {
        let mut book = self.book();
        if book.leading_since != Some(since) {
            book.leading_since = Some(since);
            book.last_ok.clear();
        }
    }

    /// This node does not lead: forget everything.
    pub fn stop_leading(&self) {
        *self.book() = ContactBook::default();
    }

    /// `node` answered at `at`.
    pub fn record(&self, node: NodeId, at: Instant) {
        self.book().last_ok.insert(node, at);
    }

    /// The members in `members` that are silent at `now` (see [`is_silent`]); none while
    /// this node does not lead.
    pub fn silent(
        &self,
        members: impl IntoIterator<Item = NodeId>,
        now: Instant,
        timings: LeaseTimings,
    ) -> BTreeSet<NodeId> {
        let book = self.book();
        let Some(since) = book.leading_since else {
            return BTreeSet::new();
        };
        members
            .into_iter()
            .filter(|id| is_silent(book.last_ok.get(id).copied(), since, now, timings))
            .collect()
    }
}

/// The last time each peer answered this node.
#[derive(Debug, Default)]
pub struct PeerContact {
    last_ok: HashMap<NodeId, Instant>,
}

impl PeerContact {
    /// Records a successful exchange with `node`.
    pub fn record(&mut self, node: NodeId, at: Instant) {
        self.last_ok.insert(node, at);
    }

    /// Starts a full lease for every node that newly holds workers: its registration just
    /// reached the leader, so it was in contact. Forgets nodes that hold none, so a node that
    /// holds workers again later is not judged by contact from before.
    pub fn track_holders(&mut self, holding_workers: &BTreeSet<NodeId>, now: Instant) {
        self.last_ok
            .retain(|node, _| holding_workers.contains(node));
        for node in holding_workers {
            self.last_ok.entry(*node).or_insert(now);
        }
    }

    /// Nodes that hold workers but have not answered for `purge_after`. A node never
    /// heard from counts from `since` (when this node started leading), so a fresh
    /// leader gives every peer a full lease before purging it.
    pub fn to_purge(
        &self,
        holding_workers: &BTreeSet<NodeId>,
        me: NodeId,
        since: Instant,
        now: Instant,
        timings: LeaseTimings,
    ) -> Vec<NodeId> {
        holding_workers
            .iter()
            .copied()
            .filter(|node| *node != me)
            .filter(|node| is_silent(self.last_ok.get(node).copied(), since, now, timings))
            .collect()
    }
}

/// Whether this node must fence itself: it is not in contact with a quorum.
/// `quorum_contact_age` is how long ago this node last knew a leader with quorum
/// (itself as leader: its last quorum acknowledgement).
pub fn must_fence(quorum_contact_age: Option<Duration>, timings: LeaseTimings) -> bool {
    match quorum_contact_age {
        Some(age) => age > timings.fence_after,
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_waits_a_full_lease_and_spares_the_leader_itself() {
        let timings = LeaseTimings::default();
        let start = Instant::now();
        let mut contact = PeerContact::default();
        contact.record(2, start);
        let holding: BTreeSet<NodeId> = [1, 2, 3].into_iter().collect();
        let soon = start + timings.purge_after / 2;
        assert!(contact
            .to_purge(&holding, 1, start, soon, timings)
            .is_empty());
        let later = start + timings.purge_after + Duration::from_millis(500);
        assert_eq!(
            contact.to_purge(&holding, 1, start, later, timings),
            vec![2, 3]
        );
        contact.record(3, later);
        assert_eq!(
            contact.to_purge(&holding, 1, start, later, timings),
            vec![2]
        );
    }

    #[test]
    fn a_new_leader_gives_every_peer_a_full_lease() {
        let timings = LeaseTimings::default();
        let old = Instant::now();
        let mut contact = PeerContact::default();
        contact.record(2, old);
        let elected = old + Duration::from_secs(10);
        let holding: BTreeSet<NodeId> = [2].into_iter().collect();
        assert!(contact
            .to_purge(
                &holding,
                1,
                elected,
                elected + timings.purge_after / 2,
                timings
            )
            .is_empty());
    }

    #[test]
    fn a_node_that_newly_holds_workers_gets_a_full_lease() {
        let timings = LeaseTimings::default();
        let elected = Instant::now();
        let mut contact = PeerContact::default();
        let registered = elected + Duration::from_secs(10);
        let holding: BTreeSet<NodeId> = [2].into_iter().collect();
        contact.track_holders(&holding, registered);
        let just_before = registered + timings.purge_after - Duration::from_millis(100);
        assert!(contact
            .to_purge(&holding, 1, elected, just_before, timings)
            .is_empty());
        contact.track_holders(&BTreeSet::new(), just_before);
        let much_later = registered + timings.purge_after * 3;
        contact.track_holders(&holding, much_later);
        assert!(
            contact
                .to_purge(
                    &holding,
                    1,
                    elected,
                    much_later + Duration::from_secs(1),
                    timings
                )
                .is_empty(),
            "holding workers again starts a new lease"
        );
        assert_eq!(
            contact.to_purge(
                &holding,
                1,
                elected,
                much_later + timings.purge_after + Duration::from_millis(100),
                timings
            ),
            vec![2]
        );
    }

    #[test]
    fn member_contact_knows_silence_only_while_leading() {
        let timings = LeaseTimings::default();
        let contact = MemberContact::default();
        let start = Instant::now();
        let late = start + timings.purge_after * 2;
        assert!(contact.silent([2, 3], late, timings).is_empty());
        contact.lead(start);
        contact.record(2, late - Duration::from_millis(100));
        assert_eq!(contact.silent([2, 3], late, timings), BTreeSet::from([3]));
        contact.stop_leading();
        assert!(contact.silent([2, 3], late, timings).is_empty());
    }

    #[test]
    fn fencing_starts_after_the_fence_lease_and_purging_after_more() {
        let timings = LeaseTimings::default();
        assert!(!must_fence(Some(Duration::from_millis(100)), timings));
        assert!(must_fence(
            Some(timings.fence_after + Duration::from_millis(100)),
            timings
        ));
        assert!(must_fence(None, timings));
        assert!(timings.purge_after > timings.fence_after);
    }
}
