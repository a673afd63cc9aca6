//! Start-up membership: which of the three ways a node comes up, and the join handshake.
//!
//! - Empty storage, no `--join`: `Consensus::start` founds a cluster of one (today's default).
//! - Empty storage, `--join`: Raft stays uninitialized and [`ensure_membership`] asks the listed
//!   members, one after another and following leader hints, to add this node. It never
//!   initializes, so a node whose data directory was wiped cannot found a second cluster. The
//!   leader admits it first (dropping a stale membership of the same id and handing over the
//!   cluster id, which this node stores before it accepts any Raft RPC), then adds it.
//! - Stored state: Raft restarts from it. Only a node that is not a voter (it crashed while
//!   joining) or whose address changed asks the leader again.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;
use tracing::info;
use tracing::warn;

use super::identity::ClusterId;
use super::membership;
use super::membership::LEARNER_CATCH_UP;
use crate::config::Config;
use crate::consensus::Bootstrap;
use crate::ids::NodeId;
use crate::node::Node;
use crate::rpc::client::PeerClients;
use crate::rpc::errors::RpcError;
use crate::rpc::pb::JoinReply;
use crate::rpc::pb::JoinRequest;

/// How long a node keeps trying to join through its `--join` members before giving up.
pub const JOIN_DEADLINE: Duration = Duration::from_secs(60);

/// How long one `Join` call may take: the leader waits for the learner to catch up first.
const JOIN_RPC_TIMEOUT: Duration = Duration::from_secs(LEARNER_CATCH_UP.as_secs() + 5);

/// How many leader hints one round follows before starting over from the listed members.
const MAX_HINTS: usize = 5;

/// Why a node could not become a member.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// `--join` names no member but this node itself.
    #[error("--join names no other member to join through")]
    NoSeeds,
    /// No member added this node before the deadline.
    #[error("could not join the cluster through {seeds:?} within {waited:?}; last error: {last}")]
    GaveUp {
        seeds: Vec<String>,
        waited: Duration,
        last: String,
    },
    /// A member refused this node for good (e.g. its address belongs to another member).
    #[error("the cluster refused this node: {0}")]
    Refused(String),
    /// This node's Raft stopped, or its cluster id could not be stored.
    #[error("cannot join: {0}")]
    Raft(String),
    /// The data directory holds Raft state of a multi-node cluster but no cluster id.
    #[error("the data directory holds cluster state but no cluster_id file; restore it, or wipe the directory and --join again")]
    NoClusterId,
}

/// The start-up rule for a node with empty storage: join when members are listed.
pub fn mode(config: &Config) -> Bootstrap {
    if config.join.is_empty() {
        Bootstrap::Initialize
    } else {
        Bootstrap::Join
    }
}

/// The address to advertise: the configured one, with port 0 replaced by the port the cluster
/// listener was actually bound to (so `--cluster-listen 127.0.0.1:0` works).
pub fn advertise_address(configured: &str, bound: SocketAddr) -> String {
    match configured.rsplit_once(':') {
        Some((host, "0")) => format!("{host}:{}", bound.port()),
        _ => configured.to_string(),
    }
}

/// Makes sure this node is a voter of its cluster, per the start-up rules above, and that it
/// knows its cluster id. Fails when a node with empty storage could not join: it must not run
/// as a cluster of its own.
pub async fn ensure_membership(node: &Node) -> Result<(), JoinError> {
    let advertise = node.config.advertise.as_str();
    let initialized = node
        .consensus
        .raft()
        .is_initialized()
        .await
        .map_err(|e| JoinError::Raft(e.to_string()))?;
    if !initialized {
        let seeds = &node.config.join;
        // Step 1: be admitted (the leader drops a stale membership of this id, if any).
        let admitted = join(&node.peers, node.id, advertise, "", seeds, JOIN_DEADLINE).await?;
        node.cluster_id
            .adopt(&node.config.data_dir, &admitted.cluster_id)
            .map_err(|e| JoinError::Raft(e.to_string()))?;
        info!(node = node.id, cluster = %admitted.cluster_id, "admitted to the cluster");
        // Step 2: be added, as a learner that catches up, then as a voter.
        let reply = join(
            &node.peers,
            node.id,
            advertise,
            &admitted.cluster_id,
            seeds,
            JOIN_DEADLINE,
        )
        .await?;
        info!(
            node = node.id,
            leader = reply.leader_id,
            members = reply.members.len(),
            "joined the cluster"
        );
        return Ok(());
    }
    let m = membership::metrics(node);
    let membership = m.membership_config.membership();
    let is_voter = membership.voter_ids().any(|v| v == node.id);
    let cluster_id = match node.cluster_id.get() {
        Some(id) => id,
        // State from before cluster ids existed: only ever a cluster of one, so found its id.
        None if membership.voter_ids().eq([node.id]) => {
            let id = ClusterId::generate();
            node.cluster_id
                .adopt(&node.config.data_dir, &id)
                .map_err(|e| JoinError::Raft(e.to_string()))?;
            info!(node = node.id, cluster = %id, "founded cluster id");
            id
        }
        None => return Err(JoinError::NoClusterId),
    };
    let moved = membership
        .get_node(&node.id)
        .is_some_and(|me| me.addr != advertise);
    if is_voter && !moved {
        return Ok(());
    }
    if !moved && node.config.join.is_empty() {
        info!(
            node = node.id,
            "restarted as a non-voter; pass --join to ask to become a voter again"
        );
        return Ok(());
    }
    let mut seeds: Vec<String> = membership
        .nodes()
        .filter(|(id, _)| **id != node.id)
        .map(|(_, n)| n.addr.clone())
        .collect();
    seeds.extend(node.config.join.iter().cloned());
    match join(
        &node.peers,
        node.id,
        advertise,
        &cluster_id,
        &seeds,
        JOIN_DEADLINE,
    )
    .await
    {
        Ok(_) => info!(node = node.id, moved, "membership restored with the leader"),
        // The node still holds the cluster's state and can serve from it; keep going.
        Err(err) => warn!(node = node.id, error = %err, "could not update this node's membership"),
    }
    Ok(())
}

/// Asks `seeds` (in order, following leader hints) to admit or add node `id` at `address`,
/// retrying with backoff until `deadline` has passed. With an empty `cluster_id` it returns the
/// leader's admission (which carries the cluster id); otherwise once the node is a voter.
pub async fn join(
    peers: &PeerClients,
    id: NodeId,
    address: &str,
    cluster_id: &str,
    seeds: &[String],
    deadline: Duration,
) -> Result<JoinReply, JoinError> {
    let seeds: Vec<String> = seeds
        .iter()
        .filter(|s| s.as_str() != address)
        .cloned()
        .collect();
    if seeds.is_empty() {
        return Err(JoinError::NoSeeds);
    }
    let done = |reply: &JoinReply| {
        if cluster_id.is_empty() {
            !reply.cluster_id.is_empty()
        } else {
            reply.joined
        }
    };
    let started = Instant::now();
    let mut delay = Duration::from_millis(200);
    let mut last = String::from("no member answered");
    loop {
        let mut queue: VecDeque<String> = seeds.iter().cloned().collect();
        let mut hints = 0;
        while let Some(addr) = queue.pop_front() {
            let request = JoinRequest {
                node_id: id,
                address: address.to_string(),
                cluster_id: cluster_id.to_string(),
            };
            let answer = peers
                .unary(&addr, JOIN_RPC_TIMEOUT, |mut client| async move {
                    client.join(request).await
                })
                .await;
            match answer {
                Ok(reply) if done(&reply) => return Ok(reply),
                Ok(reply) => {
                    last = format!("{addr} is not the leader");
                    if !reply.leader_address.is_empty() && hints < MAX_HINTS {
                        hints += 1;
                        queue.push_front(reply.leader_address);
                    }
                }
                Err(RpcError::Remote {
                    code: tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument,
                    message,
                    ..
                }) => return Err(JoinError::Refused(message)),
                Err(err) => {
                    warn!(node = id, member = %addr, error = %err, "join attempt failed");
                    last = err.to_string();
                }
            }
        }
        if started.elapsed() + delay > deadline {
            return Err(JoinError::GaveUp {
                seeds,
                waited: started.elapsed(),
                last,
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_is_replaced_by_the_bound_port() {
        let bound: SocketAddr = "127.0.0.1:41234".parse().unwrap();
        assert_eq!(advertise_address("127.0.0.1:0", bound), "127.0.0.1:41234");
        assert_eq!(advertise_address("node-a.svc:0", bound), "node-a.svc:41234");
        assert_eq!(advertise_address("10.0.0.5:50051", bound), "10.0.0.5:50051");
    }

    #[tokio::test]
    async fn joining_through_only_oneself_is_refused_at_once() {
        let peers = PeerClients::default();
        let err = join(
            &peers,
            2,
            "127.0.0.1:1",
            "",
            &["127.0.0.1:1".into()],
            JOIN_DEADLINE,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, JoinError::NoSeeds), "{err}");
    }
}
