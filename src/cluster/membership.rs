//! Membership: adding a node (on the leader), removing one without losing a quorum, the status
//! every member reports, and the watch that stops a node once it is no longer a voter.
//!
//! Adding is two steps (openraft's recommendation): `add_learner`, which waits until the new
//! node caught up, then `change_membership` to make it a voter. Removing is two steps too:
//! demote the voter to a learner (so it still receives the configuration that removes it and
//! stops itself), then remove the learner. Both run only on the leader; a member that is not the
//! leader forwards a removal to it, or answers a join with a leader hint.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::consensus::Member;
use futures_util::future::join_all;
use openraft::error::ChangeMembershipError;
use openraft::error::ClientWriteError;
use openraft::error::RaftError;
use openraft::ChangeMembers;
use openraft::Membership;
use openraft::RaftMetrics;
use openraft::ServerState;
use tokio::time::Instant;
use tracing::info;
use tracing::warn;

use crate::ids::NodeId;
use crate::node::Node;
use crate::registry::Command;
use crate::rpc::errors::RpcError;
use crate::rpc::errors::ServiceError;
use crate::rpc::pb;

/// How long the leader waits for a joining learner to catch up before making it a voter.
pub const LEARNER_CATCH_UP: Duration = Duration::from_secs(30);

/// How long a whole removal (both steps, following leader changes) may take.
pub const REMOVE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the leader waits for a peer's `Status` when checking that a removal keeps a quorum.
const LIVENESS_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a removed learner is given to receive the configuration that removes it.
const REMOVED_LEARNER_GRACE: Duration = Duration::from_secs(2);

/// How long one membership change may wait behind another one already in progress.
const IN_PROGRESS_RETRY: Duration = Duration::from_secs(5);

/// How long one proposed membership change may take to commit.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a membership change was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// A malformed request (node id 0, empty address).
    #[error("invalid join request: {0}")]
    InvalidRequest(String),
    /// The node to remove is not a member.
    #[error("node {0} is not a member of this cluster")]
    NotMember(NodeId),
    /// Removing the last voter would leave no cluster at all.
    #[error("node {0} is the only voter; removing it would leave no cluster")]
    LastVoter(NodeId),
    /// Removing the node would leave fewer reachable voters than a majority.
    #[error(
        "removing node {target} would leave {reachable} of {remaining} remaining voters reachable, \
         not a majority (unreachable: {unreachable:?}); bring nodes back or remove dead ones first"
    )]
    WouldLoseQuorum {
        target: NodeId,
        reachable: usize,
        remaining: usize,
        unreachable: Vec<NodeId>,
    },
    /// The joining node belongs to another cluster.
    #[error("the joining node belongs to cluster {theirs}, not to this cluster ({ours}); wipe its data directory to move it")]
    OtherCluster { theirs: String, ours: String },
    /// Another member already uses the joining node's address.
    #[error(
        "address {address} already belongs to member {owner}; remove node {owner} first, or \
         restart it with --node-id {owner}"
    )]
    AddressTaken { address: String, owner: NodeId },
    /// The joining node's certificate is not the one its node id is bound to.
    #[error("node id {0} belongs to a member with another certificate; a second process cannot take it over (remove node {0} first if it is gone for good)")]
    IdentityTaken(NodeId),
    /// No leader was known long enough to finish the change.
    #[error("no leader available to change the membership: {0}")]
    NoLeader(String),
    /// This node lost leadership in the middle of the change.
    #[error("leadership moved while changing the membership; retry")]
    LeadershipLost,
    /// Raft refused or failed the change.
    #[error("raft refused the membership change: {0}")]
    Raft(String),
    /// The leader could not be reached to forward the change.
    #[error("forwarding to the leader failed: {0}")]
    Forward(#[from] RpcError),
    /// The change did not finish in time.
    #[error("membership change did not finish within {0:?}")]
    Timeout(Duration),
}

impl From<MembershipError> for ServiceError {
    fn from(err: MembershipError) -> Self {
        match err {
            MembershipError::InvalidRequest(reason) => ServiceError::BadRequest {
                what: "join request",
                reason,
            },
            MembershipError::IdentityTaken(_) => ServiceError::Forbidden(err.to_string()),
            MembershipError::NotMember(_)
            | MembershipError::LastVoter(_)
            | MembershipError::WouldLoseQuorum { .. }
            | MembershipError::OtherCluster { .. }
            | MembershipError::AddressTaken { .. } => ServiceError::Refused(err.to_string()),
            MembershipError::NoLeader(_)
            | MembershipError::LeadershipLost
            | MembershipError::Timeout(_) => ServiceError::Unavailable(err.to_string()),
            // A peer's refusal keeps its meaning when passed on.
            MembershipError::Forward(RpcError::Remote {
                code: tonic::Code::FailedPrecondition,
                message,
                ..
            }) => ServiceError::Refused(message),
            MembershipError::Forward(_) | MembershipError::Raft(_) => {
                ServiceError::Internal(err.to_string())
            }
        }
    }
}

/// A copy of this node's current Raft metrics (the watch guard is not kept).
pub fn metrics(node: &Node) -> RaftMetrics<u64, Member> {
    node.consensus.raft().metrics().borrow().clone()
}

/// The members of `membership`, with roles as this node sees them and the number of workers
/// the replicated registry records on each.
pub fn members(
    node: &Node,
    membership: &Membership<u64, Member>,
    leader: Option<NodeId>,
) -> Vec<pb::Member> {
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let mut workers: BTreeMap<NodeId, u64> = BTreeMap::new();
    for worker in node.registry().workers() {
        *workers.entry(worker.node).or_default() += 1;
    }
    membership
        .nodes()
        .map(|(id, basic)| pb::Member {
            node_id: *id,
            address: basic.addr.clone(),
            role: if Some(*id) == leader {
                "leader"
            } else if voters.contains(id) {
                "follower"
            } else {
                "learner"
            }
            .to_string(),
            workers: workers.get(id).copied().unwrap_or(0),
            identity: basic.identity.clone().unwrap_or_default(),
        })
        .collect()
}

/// The cluster address of `id` in this node's view of the membership.
pub fn address_of(node: &Node, id: NodeId) -> Option<String> {
    let metrics = node.consensus.raft().metrics();
    let metrics = metrics.borrow();
    metrics
        .membership_config
        .membership()
        .get_node(&id)
        .map(|n| n.addr.clone())
}

/// This node's answer to `Status`.
pub fn status(node: &Node) -> pb::StatusReply {
    let m = metrics(node);
    let initialized = m.membership_config.membership().nodes().next().is_some();
    pb::StatusReply {
        node_id: node.id,
        state: match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        }
        .to_string(),
        leader_id: m.current_leader.unwrap_or(0),
        term: m.current_term,
        last_applied: m.last_applied.map(|l| l.index).unwrap_or(0),
        last_log_index: m.last_log_index.unwrap_or(0),
        members: members(node, m.membership_config.membership(), m.current_leader),
        local_workers: node.connections.len() as u64,
        cluster_id: node.cluster_id.get().unwrap_or_default(),
        initialized,
        command_level: super::command_level::announced(),
    }
}

/// `Join` on any member: the leader admits and adds the node; any other member answers
/// `joined: false` with the leader it knows.
///
/// A node with no Raft state (empty `cluster_id`) is first admitted: if its id is still a member
/// (its data was wiped), that stale membership is removed, because the leader must never see a
/// follower's log go backwards and a node that lost its log must not vote before it caught up.
/// The answer carries the cluster id and `joined: false`; the node then asks again with the id,
/// and is added as a learner (waiting until it caught up), then made a voter.
///
/// On a cluster with certificates, `identity` is the joining node's certificate identity: a
/// node id held by a member bound to another identity is refused before anything changes, so
/// a valid certificate never lets a second process take over a member's id; a member recorded
/// without an identity is bound to this one.
pub async fn join(
    node: &Node,
    request: pb::JoinRequest,
    identity: Option<String>,
) -> Result<pb::JoinReply, MembershipError> {
    let (id, address) = (request.node_id, request.address);
    if id == 0 || address.trim().is_empty() {
        return Err(MembershipError::InvalidRequest(
            "a node id above 0 and a cluster address are required".into(),
        ));
    }
    let m = metrics(node);
    if m.current_leader != Some(node.id) {
        return Ok(not_joined(node, &m));
    }
    if let (Some(presented), Some(member)) =
        (&identity, m.membership_config.membership().get_node(&id))
    {
        if !member.accepts(presented) {
            warn!(node = node.id, joining = id, %address, "refused a join: the node id is bound to another certificate");
            return Err(MembershipError::IdentityTaken(id));
        }
    }
    let cluster_id = node.cluster_id.get().unwrap_or_default();
    if request.cluster_id.is_empty() {
        if m.membership_config.membership().get_node(&id).is_some() {
            info!(
                node = node.id,
                joining = id,
                "node rejoins with no raft state; removing its stale membership first"
            );
            remove_here(node, id).await?;
        }
        let m = metrics(node);
        let mut reply = not_joined(node, &m);
        reply.cluster_id = cluster_id;
        reply.membership_index = membership_index(&m);
        return Ok(reply);
    }
    if request.cluster_id != cluster_id {
        return Err(MembershipError::OtherCluster {
            theirs: request.cluster_id,
            ours: cluster_id,
        });
    }
    let raft = node.consensus.raft();
    let membership = m.membership_config.membership().clone();
    if let Some((owner, _)) = membership
        .nodes()
        .find(|(other, n)| **other != id && n.addr == address)
    {
        return Err(MembershipError::AddressTaken {
            address,
            owner: *owner,
        });
    }
    let wanted = Member::new(&address, identity);
    match membership.get_node(&id) {
        Some(known) if *known == wanted || (known.addr == address && wanted.identity.is_none()) => {
        }
        Some(known) => {
            // Same node with its log, at a new address (a rescheduled pod), or a member
            // recorded before the cluster had certificates, now bound to its identity. Safe
            // because no other member has the new address (checked above), and a member
            // bound to another identity was refused above.
            info!(node = node.id, joining = id, old = %known.addr, new = %address, "member moved or got its identity; updating it");
            let nodes = BTreeMap::from([(id, wanted)]);
            change(node, ChangeMembers::SetNodes(nodes), true).await?;
        }
        None => {
            info!(node = node.id, joining = id, %address, "adding learner");
            let added =
                tokio::time::timeout(LEARNER_CATCH_UP, raft.add_learner(id, wanted, true)).await;
            match added {
                Ok(result) => result.map_err(client_write_error)?,
                Err(_) => {
                    warn!(
                        node = node.id,
                        joining = id,
                        "learner did not catch up in time; it will ask again"
                    );
                    return Err(MembershipError::Timeout(LEARNER_CATCH_UP));
                }
            };
        }
    }
    if !membership.voter_ids().any(|v| v == id) {
        info!(node = node.id, joining = id, "promoting learner to voter");
        change(node, ChangeMembers::AddVoterIds(BTreeSet::from([id])), true).await?;
    }
    let m = metrics(node);
    Ok(pb::JoinReply {
        joined: true,
        leader_id: node.id,
        leader_address: node.config.advertise.clone(),
        members: members(node, m.membership_config.membership(), m.current_leader),
        cluster_id,
        membership_index: membership_index(&m),
    })
}

/// The log index of the membership `m` shows (0 before any).
fn membership_index(m: &RaftMetrics<u64, Member>) -> u64 {
    m.membership_config.log_id().map(|id| id.index).unwrap_or(0)
}

/// Removes `target`, which is known to be down or without state, on this leader node.
async fn remove_here(node: &Node, target: NodeId) -> Result<(), MembershipError> {
    let deadline = Instant::now() + REMOVE_TIMEOUT;
    loop {
        let m = metrics(node);
        let membership = m.membership_config.membership().clone();
        if membership.get_node(&target).is_none() {
            return Ok(());
        }
        if m.current_leader != Some(node.id) {
            return Err(MembershipError::LeadershipLost);
        }
        if Instant::now() > deadline {
            return Err(MembershipError::Timeout(REMOVE_TIMEOUT));
        }
        remove_step(node, &membership, target, false).await?;
    }
}

fn not_joined(node: &Node, m: &RaftMetrics<u64, Member>) -> pb::JoinReply {
    let membership = m.membership_config.membership();
    let leader_address = m
        .current_leader
        .and_then(|l| membership.get_node(&l))
        .map(|n| n.addr.clone())
        .unwrap_or_default();
    pb::JoinReply {
        joined: false,
        leader_id: m.current_leader.unwrap_or(0),
        leader_address,
        members: members(node, membership, m.current_leader),
        cluster_id: String::new(),
        membership_index: 0,
    }
}

/// Removes `target` from the cluster, from any member: runs the steps on the leader (forwarding
/// to it when this node is not the leader) until `target` is no longer a member. Refuses when
/// the remaining voters that answer would not be a majority. Once done, the removed node's
/// workers are purged from the registry.
pub async fn remove(
    node: &Arc<Node>,
    target: NodeId,
) -> Result<pb::MembershipReply, MembershipError> {
    let member = metrics(node)
        .membership_config
        .membership()
        .get_node(&target)
        .is_some();
    // Its managed workers move first, so their functions stay callable.
    let mark = if member {
        crate::managed::evacuate::move_workers_off(node, target).await
    } else {
        None
    };
    let result = remove_member(node, target).await;
    if let (Some(mark), Err(_)) = (mark, &result) {
        crate::managed::evacuate::undrain(node, target, mark).await;
    }
    result
}

/// The removal itself: on the leader, or forwarded to it.
async fn remove_member(
    node: &Arc<Node>,
    target: NodeId,
) -> Result<pb::MembershipReply, MembershipError> {
    let deadline = Instant::now() + REMOVE_TIMEOUT;
    let mut first = true;
    let mut handed_over = false;
    let mut delay = Duration::from_millis(100);
    loop {
        let m = metrics(node);
        let membership = m.membership_config.membership().clone();
        if membership.get_node(&target).is_none() {
            if first {
                return Err(MembershipError::NotMember(target));
            }
            if target != node.id {
                purge_workers(node, target).await;
            }
            return Ok(pb::MembershipReply {
                members: members(node, &membership, m.current_leader),
                leader_id: m.current_leader.unwrap_or(0),
            });
        }
        first = false;
        let demoted_self = target == node.id && !membership.voter_ids().any(|v| v == node.id);
        // A leader that demoted itself keeps leading (a change it proposes now may never be
        // answered) until it hands leadership to a remaining voter. It may never hear who
        // leads next (it stops serving as soon as it is no longer a voter), so it asks a
        // remaining voter, over its own connection, to finish the removal.
        if demoted_self && m.current_leader == Some(node.id) && !handed_over {
            hand_over_leadership(node).await;
            handed_over = true;
        }
        let ask = if demoted_self {
            membership.voter_ids().next()
        } else {
            m.current_leader
        };
        let retry = match ask {
            Some(leader) if leader == node.id => {
                match remove_step(node, &membership, target, true).await {
                    Ok(()) => continue,
                    Err(MembershipError::LeadershipLost) => "leadership moved".to_string(),
                    Err(err) => return Err(err),
                }
            }
            Some(leader) => {
                let Some(addr) = membership.get_node(&leader).map(|n| n.addr.clone()) else {
                    return Err(MembershipError::NoLeader(format!(
                        "leader {leader} has no address"
                    )));
                };
                let remaining = deadline.saturating_duration_since(Instant::now());
                let forwarded = node
                    .peers
                    .unary(&addr, remaining, |mut client| async move {
                        client.remove(pb::RemoveRequest { node_id: target }).await
                    })
                    .await;
                match forwarded {
                    Ok(reply) => return Ok(reply),
                    // Nothing changed: the leader may be gone; wait for the next one.
                    Err(err) if err.never_delivered() => err.to_string(),
                    // The leader being removed stops serving once it has demoted itself, often
                    // before it answers: look again (the removal may be done, or the next
                    // leader finishes it). Its refusals (e.g. quorum) still end the removal.
                    Err(err) if leader == target && !is_refusal(&err) => err.to_string(),
                    Err(err) => return Err(err.into()),
                }
            }
            None => "no leader elected".to_string(),
        };
        if Instant::now() + delay > deadline {
            return Err(MembershipError::NoLeader(retry));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

/// Whether a peer refused a request for good (as opposed to failing to answer it).
fn is_refusal(err: &RpcError) -> bool {
    matches!(
        err,
        RpcError::Remote {
            code: tonic::Code::FailedPrecondition
                | tonic::Code::InvalidArgument
                | tonic::Code::PermissionDenied
                | tonic::Code::Unauthenticated
                | tonic::Code::NotFound,
            ..
        }
    )
}

/// One step of a removal on the leader: demote a voter (keeping a quorum), or drop a learner.
/// `target_alive: false` means the target cannot take part (down, or it lost its state).
async fn remove_step(
    node: &Node,
    membership: &Membership<u64, Member>,
    target: NodeId,
    target_alive: bool,
) -> Result<(), MembershipError> {
    if membership.voter_ids().any(|v| v == target) {
        check_quorum(node, membership, target, target_alive).await?;
        info!(node = node.id, target, "demoting voter to learner");
        change(
            node,
            ChangeMembers::RemoveVoters(BTreeSet::from([target])),
            true,
        )
        .await
    } else {
        if target != node.id && target_alive {
            // Best effort: let the learner see the configuration that demoted it, so it
            // knows to stop. A dead one simply never does.
            let config_index = metrics(node).membership_config.log_id().map(|l| l.index);
            let _ = node
                .consensus
                .raft()
                .wait(Some(REMOVED_LEARNER_GRACE))
                .metrics(
                    |m| {
                        m.replication
                            .as_ref()
                            .and_then(|r| r.get(&target))
                            .is_some_and(|matched| matched.map(|l| l.index) >= config_index)
                    },
                    "removed learner received its demotion",
                )
                .await;
        }
        info!(node = node.id, target, "removing learner");
        change(
            node,
            ChangeMembers::RemoveNodes(BTreeSet::from([target])),
            false,
        )
        .await
    }
}

/// Refuses a removal after which the voters that answer would not be a majority, of the current
/// voters (needed to commit the change) and of the remaining ones (needed afterwards).
async fn check_quorum(
    node: &Node,
    membership: &Membership<u64, Member>,
    target: NodeId,
    target_alive: bool,
) -> Result<(), MembershipError> {
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let remaining: BTreeSet<u64> = voters.iter().copied().filter(|v| *v != target).collect();
    if remaining.is_empty() {
        return Err(MembershipError::LastVoter(target));
    }
    let probes = voters
        .iter()
        .filter(|v| **v != node.id && (target_alive || **v != target))
        .filter_map(|v| {
            let addr = membership.get_node(v)?.addr.clone();
            let peers = node.peers.clone();
            let id = *v;
            Some(async move {
                let answered = peers
                    .unary(&addr, LIVENESS_TIMEOUT, |mut client| async move {
                        client.status(pb::StatusRequest {}).await
                    })
                    .await
                    .is_ok();
                (id, answered)
            })
        });
    let mut alive: BTreeSet<u64> = BTreeSet::from([node.id]);
    for (id, answered) in join_all(probes).await {
        if answered {
            alive.insert(id);
        }
    }
    let reachable = remaining.intersection(&alive).count();
    let majority_now = voters.intersection(&alive).count() * 2 > voters.len();
    if reachable * 2 <= remaining.len() || !majority_now {
        return Err(MembershipError::WouldLoseQuorum {
            target,
            reachable,
            remaining: remaining.len(),
            unreachable: voters.difference(&alive).copied().collect(),
        });
    }
    Ok(())
}

/// Runs one membership change on this (leader) node, waiting behind a change in progress.
async fn change(
    node: &Node,
    changes: ChangeMembers<u64, Member>,
    retain: bool,
) -> Result<(), MembershipError> {
    let deadline = Instant::now() + IN_PROGRESS_RETRY;
    loop {
        let proposed = node
            .consensus
            .raft()
            .change_membership(changes.clone(), retain);
        match tokio::time::timeout(CHANGE_TIMEOUT, proposed).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                ChangeMembershipError::InProgress(_),
            )))) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Err(err)) => return Err(client_write_error(err)),
            // Not committed in time (e.g. leadership lost meanwhile); the caller re-checks.
            Err(_) => return Err(MembershipError::LeadershipLost),
        }
    }
}

fn client_write_error(err: RaftError<u64, ClientWriteError<u64, Member>>) -> MembershipError {
    match err {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
            MembershipError::LeadershipLost
        }
        other => MembershipError::Raft(other.to_string()),
    }
}

/// After a removal: the removed node's workers cannot be served by the cluster any more.
async fn purge_workers(node: &Node, target: NodeId) {
    let has_workers = node.registry().workers().any(|w| w.node == target);
    if !has_workers {
        return;
    }
    if let Err(err) = node.commit(Command::NodeRestarted { node: target }).await {
        warn!(node = node.id, target, error = %err, "could not purge the removed node's workers");
    }
}

/// Stops this node once it has been a voter and no longer is (it was removed, or left): a node
/// outside the cluster cannot commit anything, so its workers are better served elsewhere.
/// Also stops it when its Raft stopped on its own (a storage error, a panic in openraft).
pub async fn watch_removal(node: Arc<Node>) {
    let mut rx = node.consensus.raft().metrics();
    let mut was_voter = false;
    loop {
        let (is_voter, running) = {
            let m = rx.borrow_and_update();
            (
                m.membership_config
                    .membership()
                    .voter_ids()
                    .any(|v| v == node.id),
                m.running_state.clone(),
            )
        };
        if let Err(fatal) = running {
            tracing::error!(node = node.id, error = %fatal, "raft stopped; shutting down");
            node.shutdown.cancel();
            return;
        }
        if is_voter {
            was_voter = true;
        } else if was_voter {
            info!(
                node = node.id,
                "no longer a voter of the cluster; shutting down"
            );
            node.shutdown.cancel();
            return;
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() {
                if !node.shutdown.is_cancelled() {
                    tracing::error!(node = node.id, "raft stopped; shutting down");
                    node.shutdown.cancel();
                }
                return;
            },
            _ = node.shutdown.cancelled() => return,
        }
    }
}

/// Starts an election on this node now, at a draining leader's request. A follower whose
/// log is as long as the leader's wins it, so leadership moves without waiting for an
/// election timeout after the leader exits.
pub async fn take_leadership(node: &Node) -> Result<(), MembershipError> {
    info!(
        node = node.id,
        "asked to take over leadership: starting an election"
    );
    node.consensus
        .raft()
        .trigger()
        .elect()
        .await
        .map_err(|e| MembershipError::Raft(e.to_string()))
}

/// How long a draining leader waits for another node to take over.
const HANDOVER_WAIT: Duration = Duration::from_secs(3);

/// If this node leads, asks the most up-to-date voter to take over and waits (bounded) until
/// another node leads. Best effort: on failure the others elect a leader after it exits.
///
/// Followers refuse to vote while their leader's lease runs (they heard from it within the
/// longest election timeout), so the leader first stops its heartbeats and its own
/// candidacy, lets the lease run out, then asks the follower to stand.
pub async fn hand_over_leadership(node: &Node) {
    let m = metrics(node);
    if m.current_leader != Some(node.id) {
        return;
    }
    let voters: Vec<NodeId> = m
        .membership_config
        .membership()
        .voter_ids()
        .filter(|id| *id != node.id)
        .collect();
    let matched = |id: &NodeId| {
        m.replication
            .as_ref()
            .and_then(|r| r.get(id).cloned().flatten())
            .map(|log_id| log_id.index)
    };
    let Some(target) = voters.iter().copied().max_by_key(|id| matched(id)) else {
        return;
    };
    let Some(address) = address_of(node, target) else {
        return;
    };
    let runtime = node.consensus.raft().runtime_config();
    runtime.heartbeat(false);
    runtime.elect(false);
    tokio::time::sleep(crate::consensus::ELECTION_TIMEOUT_MAX + Duration::from_millis(100)).await;
    let asked = node
        .peers
        .unary(&address, HANDOVER_WAIT, |mut client| async move {
            client.take_leadership(pb::TakeLeadershipRequest {}).await
        })
        .await;
    if let Err(err) = asked {
        warn!(node = node.id, target, error = %err, "leadership handover not accepted");
        return;
    }
    let mut watch = node.consensus.raft().metrics();
    let moved = tokio::time::timeout(
        HANDOVER_WAIT,
        watch.wait_for(|m| m.current_leader.is_some_and(|l| l != node.id)),
    )
    .await;
    match moved {
        Ok(Ok(m)) => info!(node = node.id, leader = ?m.current_leader, "leadership handed over"),
        _ => warn!(
            node = node.id,
            target, "leadership did not move in time; the others elect after this node exits"
        ),
    }
}
