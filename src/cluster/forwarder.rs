//! The forwarder: its only job is sending a registry write to the leader, and waiting until
//! this node has applied it too, so the proposer acts on its own replica exactly as the leader
//! did. Retrying (and deciding when to) is the caller's job (`Node::commit`).

use std::time::Duration;

use crate::consensus::ConsensusError;
use crate::ids::NodeId;
use crate::node::Node;
use crate::registry::Command;
use crate::registry::Outcome;
use crate::rpc::errors::RpcError;
use crate::rpc::pb::WriteRequest;

/// How long the leader may take to commit and apply a forwarded write.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long this node may take to apply a write the leader already committed.
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a forwarded write failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The command could not be encoded (a bug).
    #[error("cannot encode the command: {0}")]
    Encode(#[source] serde_json::Error),
    /// The leader could not be asked, or failed to answer.
    #[error("forwarding to the leader: {0}")]
    Rpc(#[from] RpcError),
    /// The node asked is not (or no longer) the leader; nothing was written.
    #[error(
        "node at {asked} is not the leader (it knows leader {leader_id:?} at {leader_address:?})"
    )]
    NotLeader {
        asked: String,
        leader_id: Option<u64>,
        leader_address: Option<String>,
    },
    /// This node learned of another leader before this one answered; the outcome is unknown.
    #[error("leader {was} was replaced while the write was on its way")]
    LeaderReplaced { was: NodeId },
    /// The leader held the write back: a member cannot apply it yet; nothing was written.
    #[error("{0}")]
    HeldBack(String),
    /// The leader's outcome could not be decoded.
    #[error("the leader's outcome is malformed: {0}")]
    Decode(#[source] serde_json::Error),
    /// The leader committed the write but this node did not apply it in time.
    #[error("committed at log index {log_index} but not applied here: {source}")]
    NotApplied {
        log_index: u64,
        #[source]
        source: ConsensusError,
    },
}

impl ForwardError {
    /// Whether proposing the command again is the right reaction. True when nothing was written
    /// (no leader there, nobody answered) and when the outcome is unknown (a timeout): commands
    /// are registrations that applying twice leaves as they were, and losing one is worse.
    /// False when retrying cannot help (malformed data) or the write is known to be committed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ForwardError::NotLeader { .. } | ForwardError::LeaderReplaced { .. } => true,
            // A connection that breaks mid-call (the leader was killed) surfaces as `Unknown`.
            ForwardError::Rpc(RpcError::Remote { code, .. }) => matches!(
                code,
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Cancelled
                    | tonic::Code::Unknown
            ),
            ForwardError::Rpc(RpcError::BadAddress { .. } | RpcError::Codec { .. }) => false,
            ForwardError::Rpc(_) => true,
            // The caller retries on its own schedule: soon would not help.
            ForwardError::HeldBack(_) => false,
            ForwardError::Encode(_) | ForwardError::Decode(_) | ForwardError::NotApplied { .. } => {
                false
            }
        }
    }
}

/// Sends `command` to `leader` at `leader_addr`; once the leader committed and applied it,
/// waits until this node applied the same log entry, then returns the leader's outcome.
///
/// The wait for the leader's answer ends early ([`ForwardError::LeaderReplaced`]) once this
/// node knows of another leader: a write sent to a leader that was just cut off then goes to
/// its successor after the election instead of waiting out [`WRITE_TIMEOUT`], with its
/// caller (a worker's registration, say) held up all that time. Once the leader answered,
/// nothing cuts the wait short, so a committed write is not proposed again.
pub async fn forward(
    node: &Node,
    leader: NodeId,
    leader_addr: &str,
    command: &Command,
) -> Result<Outcome, ForwardError> {
    let command_json = serde_json::to_vec(command).map_err(ForwardError::Encode)?;
    let ask = node
        .peers
        .unary(leader_addr, WRITE_TIMEOUT, |mut client| async move {
            client.write(WriteRequest { command_json }).await
        });
    let reply = tokio::select! {
        reply = ask => reply?,
        () = leader_replaced(node, leader) => {
            return Err(ForwardError::LeaderReplaced { was: leader });
        }
    };
    if let Some(hint) = reply.not_leader {
        return Err(ForwardError::NotLeader {
            asked: leader_addr.to_string(),
            leader_id: (hint.leader_id != 0).then_some(hint.leader_id),
            leader_address: (!hint.leader_address.is_empty()).then_some(hint.leader_address),
        });
    }
    if !reply.held_back.is_empty() {
        return Err(ForwardError::HeldBack(reply.held_back));
    }
    let outcome: Outcome =
        serde_json::from_slice(&reply.outcome_json).map_err(ForwardError::Decode)?;
    node.consensus
        .wait_applied(reply.log_index, APPLY_TIMEOUT)
        .await
        .map_err(|source| ForwardError::NotApplied {
            log_index: reply.log_index,
            source,
        })?;
    Ok(outcome)
}

/// Resolves once this node knows of a leader other than `leader`; never if Raft stopped.
async fn leader_replaced(node: &Node, leader: NodeId) {
    let mut metrics = node.consensus.raft().metrics();
    let newer = metrics.wait_for(|m| m.current_leader.is_some_and(|id| id != leader));
    if newer.await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(code: tonic::Code) -> ForwardError {
        ForwardError::Rpc(RpcError::Remote {
            addr: "127.0.0.1:1".into(),
            code,
            message: "m".into(),
        })
    }

    #[test]
    fn a_connection_lost_mid_call_is_retried_and_a_refusal_is_not() {
        assert!(remote(tonic::Code::Unknown).is_retryable());
        assert!(remote(tonic::Code::Unavailable).is_retryable());
        assert!(!remote(tonic::Code::InvalidArgument).is_retryable());
    }
}
