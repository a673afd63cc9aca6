//! The Raft network for a node that has no peers yet.
//!
//! Owns nothing but the placeholder [`NoPeersNetwork`]: every RPC to another node fails with
//! [`Unreachable`], so openraft backs off and retries. A one-member cluster never sends RPCs, so
//! this is never exercised there. It is replaced by the gRPC network in the cluster issue.

use openraft::error::InstallSnapshotError;
use openraft::error::RPCError;
use openraft::error::RaftError;
use openraft::error::Unreachable;
use openraft::network::RPCOption;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::InstallSnapshotRequest;
use openraft::raft::InstallSnapshotResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use openraft::BasicNode;
use openraft::RaftNetwork;
use openraft::RaftNetworkFactory;

use super::TypeConfig;

/// Network factory for a single-node deployment: connections to peers always report the peer
/// unreachable. Replaced by the gRPC network when clustering lands.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPeersNetwork;

/// A "connection" produced by [`NoPeersNetwork`]; every RPC fails with [`Unreachable`].
#[derive(Debug, Clone)]
pub struct NoPeerConnection {
    target: u64,
    addr: String,
}

/// Why every RPC of [`NoPeerConnection`] fails.
#[derive(Debug, thiserror::Error)]
#[error("no network to reach node {target} at {addr:?}: this build has no peer transport")]
pub struct NoPeerTransport {
    target: u64,
    addr: String,
}

impl NoPeerConnection {
    fn unreachable<E: std::error::Error>(&self) -> RPCError<u64, BasicNode, E> {
        RPCError::Unreachable(Unreachable::new(&NoPeerTransport {
            target: self.target,
            addr: self.addr.clone(),
        }))
    }
}

impl RaftNetworkFactory<TypeConfig> for NoPeersNetwork {
    type Network = NoPeerConnection;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Self::Network {
        NoPeerConnection {
            target,
            addr: node.addr.clone(),
        }
    }
}

impl RaftNetwork<TypeConfig> for NoPeerConnection {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(self.unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        Err(self.unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(self.unreachable())
    }
}
