//! The receiving side of the Raft RPCs: check the sender belongs to this node's cluster, decode
//! openraft's request from JSON, hand it to this node's Raft, and send back its response or its
//! Raft error, both as JSON.

use openraft::raft::AppendEntriesRequest;
use openraft::raft::InstallSnapshotRequest;
use openraft::raft::VoteRequest;
use openraft::Vote;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::errors::ServiceError;
use super::pb::raft_reply;
use super::pb::RaftReply;
use super::pb::RaftRequest;
use crate::auth::access::Caller;
use crate::cluster::identity::ClusterId;
use crate::consensus::Consensus;
use crate::consensus::TypeConfig;

/// `AppendEntries`: log replication and heartbeats from the leader.
pub async fn append_entries(
    consensus: &Consensus,
    cluster: &ClusterId,
    caller: &Caller,
    request: RaftRequest,
) -> Result<RaftReply, ServiceError> {
    let rpc: AppendEntriesRequest<TypeConfig> =
        decode(cluster, "append_entries request", &request)?;
    check_sender(caller, &rpc.vote, "append_entries")?;
    reply(consensus.raft().append_entries(rpc).await)
}

/// `Vote`: a candidate asking for this node's vote.
pub async fn vote(
    consensus: &Consensus,
    cluster: &ClusterId,
    caller: &Caller,
    request: RaftRequest,
) -> Result<RaftReply, ServiceError> {
    let rpc: VoteRequest<u64> = decode(cluster, "vote request", &request)?;
    check_sender(caller, &rpc.vote, "vote")?;
    reply(consensus.raft().vote(rpc).await)
}

/// `InstallSnapshot`: one chunk of the leader's snapshot for a follower too far behind.
pub async fn install_snapshot(
    consensus: &Consensus,
    cluster: &ClusterId,
    caller: &Caller,
    request: RaftRequest,
) -> Result<RaftReply, ServiceError> {
    let rpc: InstallSnapshotRequest<TypeConfig> =
        decode(cluster, "install_snapshot request", &request)?;
    check_sender(caller, &rpc.vote, "install_snapshot")?;
    reply(consensus.raft().install_snapshot(rpc).await)
}

/// Refuses a Raft message whose leader or candidate is not the member the caller's
/// certificate speaks for: a certificate of one node cannot forge another's heartbeats or
/// votes, nor invent a node id.
fn check_sender(caller: &Caller, vote: &Vote<u64>, what: &str) -> Result<(), ServiceError> {
    let sender = vote.leader_id().voted_for();
    match sender {
        Some(id) if caller.may_speak_as(id) => Ok(()),
        _ if *caller == Caller::Unauthenticated => Ok(()),
        _ => Err(ServiceError::Forbidden(format!(
            "{what} from node {sender:?}, but the caller's certificate is not that member's"
        ))),
    }
}

/// Refuses a request from another cluster (or any request before this node is admitted), then
/// decodes it.
fn decode<T: DeserializeOwned>(
    cluster: &ClusterId,
    what: &'static str,
    request: &RaftRequest,
) -> Result<T, ServiceError> {
    if !cluster.accepts(&request.cluster_id) {
        return Err(ServiceError::Unavailable(match cluster.get() {
            Some(mine) => format!(
                "raft request from cluster {:?}, but this node belongs to cluster {mine}",
                request.cluster_id
            ),
            None => "this node has not been admitted to a cluster yet".to_string(),
        }));
    }
    serde_json::from_slice(&request.json).map_err(|e| ServiceError::BadRequest {
        what,
        reason: e.to_string(),
    })
}

/// Encodes Raft's answer: a response as `ok_json`, a Raft error as `error_json`.
fn reply<T: Serialize, E: Serialize>(result: Result<T, E>) -> Result<RaftReply, ServiceError> {
    let encoded = match result {
        Ok(response) => serde_json::to_vec(&response).map(raft_reply::Result::OkJson),
        Err(err) => serde_json::to_vec(&err).map(raft_reply::Result::ErrorJson),
    };
    let result =
        encoded.map_err(|e| ServiceError::Internal(format!("encoding a raft reply: {e}")))?;
    Ok(RaftReply {
        result: Some(result),
    })
}
