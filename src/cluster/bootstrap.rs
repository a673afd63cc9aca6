//! Start-up membership: which of the ways a node comes up, and the join handshake.
//!
//! - Empty storage, no `--join`: `Consensus::start` founds a cluster of one (today's default).
//! - Empty storage, `--join` whose FIRST entry is this node's own `--advertise` address: this
//!   node is the designated founder (the StatefulSet shape: every pod gets the same list, pod 0
//!   first). It tries to join like any other node; it founds a new cluster only once every other
//!   listed address has answered `Status` and none belongs to a cluster ([`founder_decision`]).
//!   A listed member that belongs to a cluster makes it join that cluster instead (a wiped pod 0
//!   rejoins); a member that does not answer makes it wait. It never founds on silence: a
//!   silent member may hold the cluster this node would otherwise split.
//! - Empty storage, any other `--join`: Raft stays uninitialized and [`ensure_membership`] asks
//!   the listed members, one after another and following leader hints, to add this node. It
//!   never initializes, so a node whose data directory was wiped cannot found a second cluster.
//!   The leader admits it first (dropping a stale membership of the same id and handing over the
//!   cluster id, which this node stores before it accepts any Raft RPC), then adds it. A node
//!   listed in `--join` itself waits for the founder without a deadline (pods may start in any
//!   order and slowly); an unlisted one gives up after [`JOIN_DEADLINE`].
//! - Stored state: Raft restarts from it. Only a node that is not a voter (it crashed while
//!   joining) or whose address changed asks the leader again.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::time::Instant;
use tracing::debug;
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
use crate::rpc::pb;
use crate::rpc::pb::JoinReply;
use crate::rpc::pb::JoinRequest;

/// How long a node keeps trying to join through its `--join` members before giving up.
pub const JOIN_DEADLINE: Duration = Duration::from_secs(60);

/// How long one `Join` call may take: the leader waits for the learner to catch up first.
const JOIN_RPC_TIMEOUT: Duration = Duration::from_secs(LEARNER_CATCH_UP.as_secs() + 5);

/// How many leader hints one round follows before starting over from the listed members.
const MAX_HINTS: usize = 5;

/// How long the designated founder waits for one listed member's `Status`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How often a node still waiting to join or found says why, at info level.
const WAITING_LOG_EVERY: Duration = Duration::from_secs(5);

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
    /// This node's Raft stopped or could not be initialized, or its cluster id could not be
    /// stored.
    #[error("cannot join: {0}")]
    Raft(String),
    /// The data directory holds Raft state of a multi-node cluster but no cluster id.
    #[error("the data directory holds cluster state but no cluster_id file; restore it, or wipe the directory and --join again")]
    NoClusterId,
}

/// The start-up rule for a node with empty storage: join when members are listed (the
/// designated founder too: it initializes later, once [`founder_decision`] says so).
pub fn mode(config: &Config) -> Bootstrap {
    if config.join.is_empty() {
        Bootstrap::Initialize
    } else {
        Bootstrap::Join
    }
}

/// This node's part in forming a cluster, from where its own address stands in `--join`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Listed first: may found a cluster once every other listed member answered empty.
    Founder,
    /// Listed, not first (a StatefulSet pod): only joins, waiting for the founder as long as
    /// it takes.
    Listed,
    /// Not listed (or no `--join`): joins within [`JOIN_DEADLINE`], or founds a cluster of one
    /// without `--join`.
    Unlisted,
}

/// Where `advertise` stands in `join` (entries compare as written, so list this node's
/// `--advertise` exactly).
pub fn role(join: &[String], advertise: &str) -> Role {
    match join.iter().position(|member| member == advertise) {
        Some(0) => Role::Founder,
        Some(_) => Role::Listed,
        None => Role::Unlisted,
    }
}

/// What one listed member answered to the founder's `Status` probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// It did not answer (not started, no DNS record yet, unreachable).
    Silent(String),
    /// It answered and holds no Raft state and no cluster id: it is waiting too.
    Empty,
    /// It answered and belongs to a cluster.
    Member { cluster_id: String },
}

impl Probe {
    /// Classifies a `Status` answer (an older node without `initialized` is judged by its
    /// cluster id alone).
    pub fn from_status(reply: &pb::StatusReply) -> Probe {
        if reply.initialized || !reply.cluster_id.is_empty() {
            Probe::Member {
                cluster_id: reply.cluster_id.clone(),
            }
        } else {
            Probe::Empty
        }
    }
}

/// What the designated founder does after one round of probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FounderDecision {
    /// Every other listed member answered and none belongs to a cluster: found one.
    Found,
    /// `member` belongs to a cluster: join it, never found a second one.
    Join { member: String },
    /// Some members did not answer: wait; silence is never taken as "no cluster".
    Wait { silent: Vec<String> },
}

/// The founder rule, pure: join any cluster a listed member belongs to; otherwise found only
/// when every listed member answered that it is empty.
pub fn founder_decision(probes: &[(String, Probe)]) -> FounderDecision {
    if let Some((member, _)) = probes
        .iter()
        .find(|(_, probe)| matches!(probe, Probe::Member { .. }))
    {
        return FounderDecision::Join {
            member: member.clone(),
        };
    }
    let silent: Vec<String> = probes
        .iter()
        .filter(|(_, probe)| matches!(probe, Probe::Silent(_)))
        .map(|(member, _)| member.clone())
        .collect();
    if silent.is_empty() {
        FounderDecision::Found
    } else {
        FounderDecision::Wait { silent }
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
        let role = role(seeds, advertise);
        // A node listed in --join is a StatefulSet pod: its peers may start much later.
        let deadline = (role == Role::Unlisted).then_some(JOIN_DEADLINE);
        // Step 1: be admitted (the leader drops a stale membership of this id, if any), or, as
        // the designated founder, found the cluster.
        let admitted = if role == Role::Founder {
            match found_or_join(node, seeds).await? {
                Some(admitted) => admitted,
                None => return Ok(()),
            }
        } else {
            join(&node.peers, node.id, advertise, "", seeds, deadline).await?
        };
        // Before the cluster id lets any Raft message in: the leader's members are who may
        // replicate to this node while its log is still behind them.
        node.admitted
            .record(&node.config.data_dir, &admitted)
            .await
            .map_err(|e| JoinError::Raft(e.to_string()))?;
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
            deadline,
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
        Some(JOIN_DEADLINE),
    )
    .await
    {
        Ok(_) => info!(node = node.id, moved, "membership restored with the leader"),
        // The node still holds the cluster's state and can serve from it; keep going.
        Err(err) => warn!(node = node.id, error = %err, "could not update this node's membership"),
    }
    Ok(())
}

/// The designated founder with empty storage: tries to be admitted like any joining node and,
/// between attempts, probes every other listed member. Founds a cluster of one (then returns
/// `None`) once [`founder_decision`] says so; returns the admission when a leader admitted it.
/// Waits as long as it takes (until a signal), saying why every few seconds.
async fn found_or_join(node: &Node, seeds: &[String]) -> Result<Option<JoinReply>, JoinError> {
    let advertise = node.config.advertise.as_str();
    let others = other_seeds(seeds, advertise);
    let mut delay = Duration::from_millis(200);
    let mut last_said: Option<Instant> = None;
    loop {
        match join_round(&node.peers, node.id, advertise, "", &others).await {
            Round::Done(reply) => return Ok(Some(reply)),
            Round::Refused(message) => return Err(JoinError::Refused(message)),
            Round::NotYet(_) => {}
        }
        let probes = probe_all(&node.peers, &others).await;
        let decision = founder_decision(&probes);
        if decision == FounderDecision::Found {
            info!(
                node = node.id,
                members = ?others,
                "every listed member answered and none belongs to a cluster: founding one"
            );
            node.consensus
                .found(advertise)
                .await
                .map_err(|e| JoinError::Raft(e.to_string()))?;
            let id = ClusterId::generate();
            node.cluster_id
                .adopt(&node.config.data_dir, &id)
                .map_err(|e| JoinError::Raft(e.to_string()))?;
            info!(node = node.id, cluster = %id, "founded cluster id");
            return Ok(None);
        }
        if last_said.is_none_or(|at| at.elapsed() >= WAITING_LOG_EVERY) {
            last_said = Some(Instant::now());
            match &decision {
                FounderDecision::Join { member } => info!(
                    node = node.id,
                    %member,
                    "designated founder: a listed member belongs to a cluster; joining it"
                ),
                FounderDecision::Wait { .. } => {
                    let silent: Vec<String> = probes
                        .iter()
                        .filter_map(|(member, probe)| match probe {
                            Probe::Silent(why) => Some(format!("{member}: {why}")),
                            _ => None,
                        })
                        .collect();
                    info!(
                        node = node.id,
                        ?silent,
                        "designated founder: waiting for every listed member to answer before founding"
                    )
                }
                FounderDecision::Found => {}
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Asks every member for its `Status` at once.
async fn probe_all(peers: &PeerClients, members: &[String]) -> Vec<(String, Probe)> {
    let probes = members.iter().map(|member| async move {
        let answer = peers
            .unary(member, PROBE_TIMEOUT, |mut client| async move {
                client.status(pb::StatusRequest {}).await
            })
            .await;
        let probe = match answer {
            Ok(reply) => Probe::from_status(&reply),
            Err(err) => Probe::Silent(err.to_string()),
        };
        (member.clone(), probe)
    });
    join_all(probes).await
}

/// `seeds` without this node's own address.
fn other_seeds(seeds: &[String], address: &str) -> Vec<String> {
    seeds
        .iter()
        .filter(|s| s.as_str() != address)
        .cloned()
        .collect()
}

/// How one pass over the listed members ended.
enum Round {
    /// A leader answered what was asked.
    Done(JoinReply),
    /// A member refused this node for good.
    Refused(String),
    /// Nobody could do it yet; the last reason.
    NotYet(String),
}

/// One pass over `seeds` (in order, following leader hints) asking to admit or add node `id`.
async fn join_round(
    peers: &PeerClients,
    id: NodeId,
    address: &str,
    cluster_id: &str,
    seeds: &[String],
) -> Round {
    let done = |reply: &JoinReply| {
        if cluster_id.is_empty() {
            !reply.cluster_id.is_empty()
        } else {
            reply.joined
        }
    };
    let mut last = String::from("no member answered");
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
            Ok(reply) if done(&reply) => return Round::Done(reply),
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
            }) => return Round::Refused(message),
            Err(err) => {
                debug!(node = id, member = %addr, error = %err, "join attempt failed");
                last = format!("{addr}: {err}");
            }
        }
    }
    Round::NotYet(last)
}

/// Asks `seeds` (in order, following leader hints) to admit or add node `id` at `address`,
/// retrying with backoff until `deadline` has passed (`None`: until the task is dropped, for a
/// StatefulSet pod waiting for its founder). With an empty `cluster_id` it returns the leader's
/// admission (which carries the cluster id); otherwise once the node is a voter.
pub async fn join(
    peers: &PeerClients,
    id: NodeId,
    address: &str,
    cluster_id: &str,
    seeds: &[String],
    deadline: Option<Duration>,
) -> Result<JoinReply, JoinError> {
    let seeds = other_seeds(seeds, address);
    if seeds.is_empty() {
        return Err(JoinError::NoSeeds);
    }
    let started = Instant::now();
    let mut delay = Duration::from_millis(200);
    let mut last_said = Instant::now();
    loop {
        let last = match join_round(peers, id, address, cluster_id, &seeds).await {
            Round::Done(reply) => return Ok(reply),
            Round::Refused(message) => return Err(JoinError::Refused(message)),
            Round::NotYet(last) => last,
        };
        if deadline.is_some_and(|deadline| started.elapsed() + delay > deadline) {
            return Err(JoinError::GaveUp {
                seeds,
                waited: started.elapsed(),
                last,
            });
        }
        if last_said.elapsed() >= WAITING_LOG_EVERY {
            last_said = Instant::now();
            info!(node = id, waited = ?started.elapsed(), reason = %last, "still waiting to join");
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
            Some(JOIN_DEADLINE),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, JoinError::NoSeeds), "{err}");
    }

    fn list(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn only_the_first_listed_address_is_the_founder() {
        let join = list(&["q-0.h:50051", "q-1.h:50051", "q-2.h:50051"]);
        assert_eq!(role(&join, "q-0.h:50051"), Role::Founder);
        assert_eq!(role(&join, "q-2.h:50051"), Role::Listed);
        assert_eq!(role(&join, "q-9.h:50051"), Role::Unlisted);
        assert_eq!(role(&[], "q-0.h:50051"), Role::Unlisted);
    }

    fn empty(member: &str) -> (String, Probe) {
        (member.into(), Probe::Empty)
    }

    #[test]
    fn the_founder_founds_only_when_every_member_answered_empty() {
        assert_eq!(
            founder_decision(&[empty("a"), empty("b")]),
            FounderDecision::Found
        );
        assert_eq!(
            founder_decision(&[]),
            FounderDecision::Found,
            "a set of one"
        );
        assert_eq!(
            founder_decision(&[empty("a"), ("b".into(), Probe::Silent("refused".into()))]),
            FounderDecision::Wait {
                silent: vec!["b".into()]
            },
            "silence is never taken for an empty member"
        );
    }

    #[test]
    fn a_member_of_a_cluster_makes_the_founder_join_even_if_others_are_silent() {
        let probes = [
            ("a".into(), Probe::Silent("no DNS record".into())),
            (
                "b".into(),
                Probe::Member {
                    cluster_id: "c1".into(),
                },
            ),
            empty("c"),
        ];
        assert_eq!(
            founder_decision(&probes),
            FounderDecision::Join { member: "b".into() }
        );
    }

    #[test]
    fn a_status_with_state_or_a_cluster_id_is_a_member() {
        let mut reply = pb::StatusReply::default();
        assert_eq!(Probe::from_status(&reply), Probe::Empty);
        reply.cluster_id = "c1".into();
        assert!(matches!(Probe::from_status(&reply), Probe::Member { .. }));
        let reply = pb::StatusReply {
            initialized: true,
            ..Default::default()
        };
        assert!(matches!(Probe::from_status(&reply), Probe::Member { .. }));
    }
}
