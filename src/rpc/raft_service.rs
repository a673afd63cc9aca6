//! The receiving side of the Raft RPCs: decode openraft's request from JSON, hand it to this
//! node's Raft, and send back its response or its Raft error, both as JSON.

use openraft::raft::AppendEntriesRequest;
use openraft::raft::InstallSnapshotRequest;
use openraft::raft::VoteRequest;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::errors::ServiceError;
use super::pb::raft_reply;
use super::pb::RaftReply;
use super::pb::RaftRequest;
use crate::consensus::Consensus;
use crate::consensus::TypeConfig;

/// `AppendEntries`: log replication and heartbeats from the leader.
pub async fn append_entries(
    consensus: &Consensus,
    request: RaftRequest,
) -> Result<RaftReply, ServiceError> {
    let rpc: AppendEntriesRequest<TypeConfig> = decode("append_entries request", &request)?;
    reply(consensus.raft().append_entries(rpc).await)
}

/// `Vote`: a candidate asking for this node's vote.
pub async fn vote(consensus: &Consensus, request: RaftRequest) -> Result<RaftReply, ServiceError> {
    let rpc: VoteRequest<u64> = decode("vote request", &request)?;
    reply(consensus.raft().vote(rpc).await)
}

/// `InstallSnapshot`: one chunk of the leader's snapshot for a follower too far behind.
pub async fn install_snapshot(
    consensus: &Consensus,
    request: RaftRequest,
) -> Result<RaftReply, ServiceError> {
    let rpc: InstallSnapshotRequest<TypeConfig> = decode("install_snapshot request", &request)?;
    reply(consensus.raft().install_snapshot(rpc).await)
}

fn decode<T: DeserializeOwned>(
    what: &'static str,
    request: &RaftRequest,
) -> Result<T, ServiceError> {
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
