//! The Raft network over gRPC: openraft's [`RaftNetworkFactory`] and [`RaftNetwork`] on top of
//! the shared peer pool ([`PeerClients`]).
//!
//! Each RPC sends the serde_json of openraft's request in a `RaftRequest` and reads back either
//! the response or the peer's Raft error (`RaftReply`). Failures are mapped the way openraft
//! expects: nothing answering (refused, reset) is [`Unreachable`], so openraft backs off; an
//! error the peer's Raft returned is a [`RemoteError`]; a timeout or a malformed reply is a
//! [`NetworkError`], retried soon. Deadlines come from openraft's [`RPCOption`]: a heartbeat's
//! interval for appends, the election timeout for votes, `install_snapshot_timeout` (10 s) for
//! snapshot chunks.

use std::time::Duration;

use crate::consensus::Member;
use openraft::error::InstallSnapshotError;
use openraft::error::NetworkError;
use openraft::error::RPCError;
use openraft::error::RaftError;
use openraft::error::RemoteError;
use openraft::error::Unreachable;
use openraft::network::RPCOption;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::InstallSnapshotRequest;
use openraft::raft::InstallSnapshotResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use openraft::RaftNetwork;
use openraft::RaftNetworkFactory;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::TypeConfig;
use crate::cluster::identity::ClusterId;
use crate::rpc::client::PeerClients;
use crate::rpc::errors::RpcError;
use crate::rpc::pb::raft_reply;
use crate::rpc::pb::RaftRequest;

/// Makes a [`PeerConnection`] per replication target, all sharing one channel pool.
#[derive(Debug, Clone)]
pub struct GrpcNetwork {
    peers: PeerClients,
    cluster_id: ClusterId,
}

impl GrpcNetwork {
    /// A network over the node's shared peer pool, stamping `cluster_id` on every request.
    pub fn new(peers: PeerClients, cluster_id: ClusterId) -> Self {
        Self { peers, cluster_id }
    }
}

/// openraft's handle on one peer: its id and address, and the pool to reach it through.
#[derive(Debug, Clone)]
pub struct PeerConnection {
    target: u64,
    node: Member,
    peers: PeerClients,
    cluster_id: ClusterId,
}

/// Which of the three Raft RPCs a request is.
#[derive(Debug, Clone, Copy)]
enum RaftRpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl RaftRpc {
    fn name(self) -> &'static str {
        match self {
            RaftRpc::AppendEntries => "append_entries",
            RaftRpc::Vote => "vote",
            RaftRpc::InstallSnapshot => "install_snapshot",
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: u64, node: &Member) -> Self::Network {
        PeerConnection {
            target,
            node: node.clone(),
            peers: self.peers.clone(),
            cluster_id: self.cluster_id.clone(),
        }
    }
}

impl PeerConnection {
    /// Sends one Raft RPC and decodes the peer's answer, mapping every failure for openraft.
    async fn send<Req, Resp, E>(
        &self,
        rpc: RaftRpc,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, RPCError<u64, Member, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let addr = self.node.addr.as_str();
        let json = serde_json::to_vec(request).map_err(|source| {
            network_error(RpcError::Codec {
                what: rpc.name(),
                addr: addr.to_string(),
                source,
            })
        })?;
        let request = RaftRequest {
            json,
            cluster_id: self.cluster_id.get().unwrap_or_default(),
        };
        let reply = self
            .peers
            .unary(addr, timeout, |mut client| async move {
                match rpc {
                    RaftRpc::AppendEntries => client.append_entries(request).await,
                    RaftRpc::Vote => client.vote(request).await,
                    RaftRpc::InstallSnapshot => client.install_snapshot(request).await,
                }
            })
            .await
            .map_err(|err| {
                tracing::debug!(target_node = self.target, %addr, rpc = rpc.name(), error = %err, "raft rpc failed");
                if err.never_delivered() {
                    RPCError::Unreachable(Unreachable::new(&err))
                } else {
                    network_error(err)
                }
            })?;
        let codec = |source| {
            network_error(RpcError::Codec {
                what: rpc.name(),
                addr: addr.to_string(),
                source,
            })
        };
        match reply.result {
            Some(raft_reply::Result::OkJson(bytes)) => {
                serde_json::from_slice(&bytes).map_err(codec)
            }
            Some(raft_reply::Result::ErrorJson(bytes)) => {
                let remote: RaftError<u64, E> = serde_json::from_slice(&bytes).map_err(codec)?;
                Err(RPCError::RemoteError(RemoteError::new_with_node(
                    self.target,
                    self.node.clone(),
                    remote,
                )))
            }
            None => Err(network_error(RpcError::Protocol {
                addr: addr.to_string(),
                message: format!(
                    "{} reply carries neither a response nor an error",
                    rpc.name()
                ),
            })),
        }
    }
}

fn network_error<E: std::error::Error>(err: RpcError) -> RPCError<u64, Member, E> {
    RPCError::Network(NetworkError::new(&err))
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        self.send(RaftRpc::AppendEntries, &rpc, option.hard_ttl())
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, Member, RaftError<u64, InstallSnapshotError>>,
    > {
        self.send(RaftRpc::InstallSnapshot, &rpc, option.hard_ttl())
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        self.send(RaftRpc::Vote, &rpc, option.hard_ttl()).await
    }
}
