//! Departed members: the leader removes a voter that is gone for good, as a StatefulSet
//! scale-down leaves it (the pod is deleted, and with it the DNS record of its address).
//!
//! A voter is removed only when all of these hold, on the leader, with
//! `--remove-departed-after-ms` set: it is not the leader itself; its advertised host is a DNS
//! name (an IP literal says nothing about departure); that name has failed to resolve
//! continuously for the configured time; and the lease module counts it silent (no `Status`
//! answer for `purge_after`). The removal itself goes through `membership::remove`, with its
//! quorum guards. A name that resolves again, or a leadership change, starts the clock over.
//!
//! The bookkeeping ([`DepartedWatch`]) is pure: resolution results and time are passed in.

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use futures_util::future::join_all;
use tracing::info;
use tracing::warn;

use super::membership;
use crate::ids::NodeId;
use crate::node::Node;

/// How often the leader looks for departed voters.
const TICK: Duration = Duration::from_secs(1);

/// How long one DNS lookup may take; a lookup that times out counts as a failure.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// The DNS name in a `host:port` cluster address, or `None` when the host is an IP literal
/// (`10.0.0.5:50051`, `[::1]:50051`) or the address has no port.
pub fn dns_host(address: &str) -> Option<&str> {
    let (host, _port) = address.rsplit_once(':')?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.is_empty() || bare.parse::<IpAddr>().is_ok() {
        None
    } else {
        Some(host)
    }
}

/// Since when each voter's DNS name has failed to resolve, without a success in between.
#[derive(Debug, Default)]
pub struct DepartedWatch {
    unresolved_since: HashMap<NodeId, Instant>,
}

impl DepartedWatch {
    /// Records one lookup of `node`'s address at `now`: a success starts its clock over.
    pub fn observe(&mut self, node: NodeId, resolved: bool, now: Instant) {
        if resolved {
            self.unresolved_since.remove(&node);
        } else {
            self.unresolved_since.entry(node).or_insert(now);
        }
    }

    /// Forgets every node not in `voters`, and everything when this node stops leading.
    pub fn retain(&mut self, voters: &BTreeSet<NodeId>) {
        self.unresolved_since.retain(|id, _| voters.contains(id));
    }

    /// Starts `node`'s clock over (after a removal attempt that did not go through).
    pub fn restart(&mut self, node: NodeId, now: Instant) {
        self.unresolved_since.insert(node, now);
    }

    /// The voters to remove at `now`: not `me`, unresolved for at least `after`, and silent
    /// per the lease module.
    pub fn departed(
        &self,
        me: NodeId,
        silent: &BTreeSet<NodeId>,
        now: Instant,
        after: Duration,
    ) -> Vec<NodeId> {
        let mut due: Vec<NodeId> = self
            .unresolved_since
            .iter()
            .filter(|(id, since)| {
                **id != me && silent.contains(id) && now.saturating_duration_since(**since) >= after
            })
            .map(|(id, _)| *id)
            .collect();
        due.sort_unstable();
        due
    }
}

/// Whether `address` resolves to at least one socket address in time.
async fn resolves(address: &str) -> bool {
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(address)).await {
        Ok(Ok(mut addrs)) => addrs.next().is_some(),
        _ => false,
    }
}

/// Removes departed voters while this node leads, until it shuts down.
pub async fn run(node: Arc<Node>, after: Duration) {
    let mut watch = DepartedWatch::default();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = node.shutdown.cancelled() => return,
        }
        let metrics = membership::metrics(&node);
        if metrics.current_leader != Some(node.id) {
            watch.retain(&BTreeSet::new());
            continue;
        }
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        watch.retain(&voters);
        let named: Vec<(NodeId, String)> = voters
            .iter()
            .filter(|id| **id != node.id)
            .filter_map(|id| {
                let address = membership.get_node(id)?.addr.clone();
                dns_host(&address)?;
                Some((*id, address))
            })
            .collect();
        let lookups = join_all(
            named
                .iter()
                .map(|(id, address)| async { (*id, resolves(address).await) }),
        )
        .await;
        let now = Instant::now();
        for (id, resolved) in lookups {
            watch.observe(id, resolved, now);
        }
        let silent = node
            .member_contact
            .silent(voters.iter().copied(), now, node.config.lease);
        for target in watch.departed(node.id, &silent, now, after) {
            let address = membership
                .get_node(&target)
                .map(|n| n.addr.clone())
                .unwrap_or_default();
            warn!(
                node = node.id,
                departed_node = target,
                %address,
                after_ms = after.as_millis() as u64,
                "voter's DNS name no longer resolves and it is silent; removing it"
            );
            match membership::remove(&node, target).await {
                Ok(_) => info!(
                    node = node.id,
                    departed_node = target,
                    "departed voter removed"
                ),
                Err(err) => {
                    warn!(node = node.id, departed_node = target, error = %err, "could not remove the departed voter; trying again later");
                    watch.restart(target, Instant::now());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dns_names_are_watched() {
        assert_eq!(
            dns_host("quorum-2.quorum-headless.ns.svc.cluster.local:50051"),
            Some("quorum-2.quorum-headless.ns.svc.cluster.local")
        );
        assert_eq!(dns_host("localhost:1"), Some("localhost"));
        assert_eq!(dns_host("10.0.0.5:50051"), None);
        assert_eq!(dns_host("[::1]:50051"), None);
        assert_eq!(dns_host("no-port"), None);
    }

    #[test]
    fn a_voter_is_departed_only_when_unresolved_long_enough_and_silent() {
        let after = Duration::from_secs(60);
        let start = Instant::now();
        let mut watch = DepartedWatch::default();
        watch.observe(3, false, start);
        let silent = BTreeSet::from([3]);
        let early = start + after / 2;
        watch.observe(3, false, early);
        assert!(watch.departed(1, &silent, early, after).is_empty());
        let late = start + after;
        assert_eq!(watch.departed(1, &silent, late, after), vec![3]);
        assert!(
            watch.departed(1, &BTreeSet::new(), late, after).is_empty(),
            "a voter that still answers is not departed, whatever DNS says"
        );
    }

    #[test]
    fn one_successful_lookup_starts_the_clock_over() {
        let after = Duration::from_secs(60);
        let start = Instant::now();
        let silent = BTreeSet::from([3]);
        let mut watch = DepartedWatch::default();
        watch.observe(3, false, start);
        watch.observe(3, true, start + after / 2);
        watch.observe(3, false, start + after / 2);
        assert!(watch.departed(1, &silent, start + after, after).is_empty());
        assert_eq!(
            watch.departed(1, &silent, start + after + after / 2, after),
            vec![3]
        );
    }

    #[test]
    fn the_leader_itself_and_former_voters_are_never_departed() {
        let after = Duration::from_secs(1);
        let start = Instant::now();
        let silent = BTreeSet::from([1, 3]);
        let mut watch = DepartedWatch::default();
        watch.observe(1, false, start);
        watch.observe(3, false, start);
        assert_eq!(watch.departed(1, &silent, start + after, after), vec![3]);
        watch.retain(&BTreeSet::from([1, 2]));
        assert!(watch.departed(1, &silent, start + after, after).is_empty());
    }
}
