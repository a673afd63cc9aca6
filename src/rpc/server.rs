//! The `Cluster` gRPC service every node serves on its `--cluster-listen` address.
//!
//! Each method only translates: Raft RPCs go to [`super::raft_service`], membership to
//! `cluster::membership`, forwarded writes to this node's Raft (which must be the leader),
//! live facts to the router, the invocation stream to [`super::invocations`], the data
//! channel RPCs to `crate::channels::remote`, and managed workers to `crate::managed`.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::Streaming;
use tracing::debug;

use super::errors::ServiceError;
use super::incoming::{self, DoorLimits};
use super::invocations;
use super::pb;
use super::pb::cluster_server::Cluster;
use super::pb::cluster_server::ClusterServer;
use super::raft_service;
use super::MAX_MESSAGE_BYTES;
use crate::auth::access::{self, Access, Caller};
use crate::auth::cluster_listener::{self, PeerInfo};
use crate::auth::cluster_tls::ClusterTls;
use crate::auth::token_admin;
use crate::channels;
use crate::cluster::{command_level, membership};
use crate::consensus::ConsensusError;
use crate::managed;
use crate::node::Node;
use crate::registry::Command;

/// What one cluster-port connection may make this node hold before the node reads it:
/// HTTP/2 flow control lets a peer send at most one window per stream and per connection
/// ahead of us, and at most this many streams at once (tonic's default is no limit). With
/// [`MAX_MESSAGE_BYTES`] per message and the connection cap, the port's memory is bounded;
/// see docs/operations.md, "Limits".
const STREAM_WINDOW_BYTES: u32 = 1024 * 1024;
const CONNECTION_WINDOW_BYTES: u32 = 2 * 1024 * 1024;
const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// How often the server pings an idle peer connection, and how long the answer may take
/// (the same as the client side's keep-alive in [`super::client`]).
const PEER_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(5);

/// The service, holding the node it answers for.
pub struct ClusterService {
    node: Arc<Node>,
    /// Whether the port requires certificates (every caller is then checked).
    secure: bool,
}

/// Serves the `Cluster` service on `listener` until `stop` is cancelled, then lets requests in
/// flight finish. The node cancels `stop` after its own shutdown, once its worker sessions have
/// drained (their last registry writes still need the peers).
/// With `tls`, only connections that completed a TLS handshake with a certificate signed by
/// the cluster's CA reach the service. Either way a connection must send the HTTP/2 preface
/// within the node's handshake deadline, under its connection cap ([`incoming`]).
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    tls: Option<ClusterTls>,
    stop: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let node_id = node.id;
    let limits = DoorLimits {
        handshake_timeout: node.config.cluster_handshake_timeout,
        max_connections: node.config.cluster_max_connections,
    };
    let service = ClusterServer::new(ClusterService {
        node,
        secure: tls.is_some(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let server = Server::builder()
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        // The same as the client side: a channel's 256 KiB piece travels in one frame.
        .max_frame_size(super::client::MAX_FRAME_BYTES)
        // A peer that vanishes without closing its connections (cut off, not killed) is
        // noticed here too, so the streams it opened (channel ends) end instead of waiting.
        .http2_keepalive_interval(Some(PEER_KEEP_ALIVE))
        .http2_keepalive_timeout(Some(PEER_KEEP_ALIVE))
        .add_service(service);
    match tls {
        Some(tls) => {
            let acceptor = TlsAcceptor::from(tls.server.clone());
            let incoming = incoming::incoming(listener, limits, node_id, move |tcp, remote| {
                cluster_listener::handshake(acceptor.clone(), tcp, remote)
            });
            server
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                .await
        }
        None => {
            let incoming = incoming::incoming(listener, limits, node_id, |tcp, _| async {
                Ok::<_, String>((tcp, ()))
            });
            server
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                .await
        }
    }
}

impl ClusterService {
    /// Refuses a request whose caller is not let in for `access` (see [`Access`]), and says
    /// who the caller is.
    #[allow(clippy::result_large_err)]
    fn authorize<T>(&self, request: &Request<T>, access: Access) -> Result<Caller, Status> {
        let peer = request.extensions().get::<PeerInfo>();
        let metrics = self.node.consensus.raft().metrics();
        let metrics = metrics.borrow();
        let local = &metrics.membership_config;
        let index = local.log_id().map(|id| id.index);
        // A wiped node catching up also trusts the members its admitting leader listed; in
        // the steady state the log's members are checked as they are, without a copy.
        let admitted = if self.node.admitted.pending(index) {
            let members = self
                .node
                .admitted
                .check_against(local.membership().nodes(), index);
            access::admit(peer, access, &members, self.secure)
        } else {
            access::admit(peer, access, local.membership().nodes(), self.secure)
        };
        drop(metrics);
        if let Err(refusal) = &admitted {
            debug!(node = self.node.id, remote = ?peer.map(|p| p.remote), reason = refusal.message(), "cluster request refused");
        }
        admitted
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn append_entries(
        &self,
        request: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let caller = self.authorize(&request, Access::Member)?;
        let reply = raft_service::append_entries(
            &self.node.consensus,
            &self.node.cluster_id,
            &caller,
            request.into_inner(),
        )
        .await?;
        // A follower's evidence that a leader reaches it (the lease's fencing rule).
        self.node.note_leader_contact();
        Ok(Response::new(reply))
    }

    async fn vote(
        &self,
        request: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let caller = self.authorize(&request, Access::Member)?;
        let reply = raft_service::vote(
            &self.node.consensus,
            &self.node.cluster_id,
            &caller,
            request.into_inner(),
        )
        .await?;
        Ok(Response::new(reply))
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let caller = self.authorize(&request, Access::Member)?;
        let reply = raft_service::install_snapshot(
            &self.node.consensus,
            &self.node.cluster_id,
            &caller,
            request.into_inner(),
        )
        .await?;
        Ok(Response::new(reply))
    }

    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinReply>, Status> {
        let caller = self.authorize(&request, Access::Certified)?;
        let identity = caller.identity().map(str::to_string);
        let reply = membership::join(&self.node, request.into_inner(), identity)
            .await
            .map_err(ServiceError::from)?;
        Ok(Response::new(reply))
    }

    async fn leave(
        &self,
        request: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        self.authorize(&request, Access::Operator)?;
        let reply = membership::remove(&self.node, self.node.id)
            .await
            .map_err(ServiceError::from)?;
        Ok(Response::new(reply))
    }

    async fn remove(
        &self,
        request: Request<pb::RemoveRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        self.authorize(&request, Access::Operator)?;
        let reply = membership::remove(&self.node, request.into_inner().node_id)
            .await
            .map_err(ServiceError::from)?;
        Ok(Response::new(reply))
    }

    async fn take_leadership(
        &self,
        request: Request<pb::TakeLeadershipRequest>,
    ) -> Result<Response<pb::TakeLeadershipReply>, Status> {
        self.authorize(&request, Access::Member)?;
        membership::take_leadership(&self.node)
            .await
            .map_err(ServiceError::from)?;
        Ok(Response::new(pb::TakeLeadershipReply {}))
    }

    async fn write(
        &self,
        request: Request<pb::WriteRequest>,
    ) -> Result<Response<pb::WriteReply>, Status> {
        self.authorize(&request, Access::Member)?;
        Ok(Response::new(
            write(&self.node, request.into_inner()).await?,
        ))
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::TokenReply>, Status> {
        self.authorize(&request, Access::Operator)?;
        let reply = token_admin::create(&self.node, request.into_inner()).await?;
        Ok(Response::new(reply))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensReply>, Status> {
        self.authorize(&request, Access::Operator)?;
        Ok(Response::new(token_admin::list(&self.node)))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::TokenReply>, Status> {
        self.authorize(&request, Access::Operator)?;
        let reply = token_admin::revoke(&self.node, request.into_inner()).await?;
        Ok(Response::new(reply))
    }

    async fn add_managed_worker(
        &self,
        request: Request<pb::AddManagedWorkerRequest>,
    ) -> Result<Response<pb::ManagedWorkerReply>, Status> {
        self.authorize(&request, Access::Operator)?;
        let reply = managed::admin::add(&self.node, request.into_inner()).await?;
        Ok(Response::new(reply))
    }

    async fn list_managed_workers(
        &self,
        request: Request<pb::ListManagedWorkersRequest>,
    ) -> Result<Response<pb::ListManagedWorkersReply>, Status> {
        self.authorize(&request, Access::Operator)?;
        Ok(Response::new(managed::admin::list(&self.node)))
    }

    async fn managed_worker_status(
        &self,
        request: Request<pb::ManagedWorkerStatusRequest>,
    ) -> Result<Response<pb::ManagedWorkerInfo>, Status> {
        self.authorize(&request, Access::Operator)?;
        let reply = managed::admin::status(&self.node, request.into_inner())?;
        Ok(Response::new(reply))
    }

    async fn restart_managed_worker(
        &self,
        request: Request<pb::RestartManagedWorkerRequest>,
    ) -> Result<Response<pb::ManagedWorkerReply>, Status> {
        self.authorize(&request, Access::Operator)?;
        let reply = managed::admin::restart(&self.node, request.into_inner()).await?;
        Ok(Response::new(reply))
    }

    async fn remove_managed_worker(
        &self,
        request: Request<pb::RemoveManagedWorkerRequest>,
    ) -> Result<Response<pb::ManagedWorkerReply>, Status> {
        self.authorize(&request, Access::Operator)?;
        let reply = managed::admin::remove(&self.node, request.into_inner()).await?;
        Ok(Response::new(reply))
    }

    type ManagedWorkerLogsStream = managed::logs::LogStream;

    async fn managed_worker_logs(
        &self,
        request: Request<pb::ManagedWorkerLogsRequest>,
    ) -> Result<Response<Self::ManagedWorkerLogsStream>, Status> {
        self.authorize(&request, Access::Operator)?;
        let sources = managed::admin::log_sources(&self.node);
        let stream = managed::logs::serve(sources, request.into_inner()).await?;
        Ok(Response::new(stream))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        self.authorize(&request, Access::Certified)?;
        Ok(Response::new(membership::status(&self.node)))
    }

    async fn live_facts(
        &self,
        request: Request<pb::LiveFactsRequest>,
    ) -> Result<Response<pb::LiveFactsReply>, Status> {
        self.authorize(&request, Access::Member)?;
        Ok(Response::new(live_facts(&self.node)))
    }

    type InvocationsStream = invocations::InvocationStream;

    async fn invocations(
        &self,
        request: Request<Streaming<pb::InvocationFrame>>,
    ) -> Result<Response<Self::InvocationsStream>, Status> {
        let caller = self.authorize(&request, Access::Member)?;
        invocations::serve(self.node.clone(), &caller, request).await
    }

    async fn channel_check(
        &self,
        request: Request<pb::ChannelCheckRequest>,
    ) -> Result<Response<pb::ChannelCheckReply>, Status> {
        self.authorize(&request, Access::Member)?;
        let draining = self.node.is_draining();
        let reply = channels::remote::check(&self.node.channels, draining, request.into_inner())?;
        Ok(Response::new(reply))
    }

    type ChannelWriteStream = channels::remote::FrameStream;

    async fn channel_write(
        &self,
        request: Request<Streaming<pb::ChannelFrame>>,
    ) -> Result<Response<Self::ChannelWriteStream>, Status> {
        self.authorize(&request, Access::Member)?;
        let node = &self.node;
        let answer = channels::remote::serve_write(
            node.channels.clone(),
            node.budget.clone(),
            node.is_draining(),
            request,
        );
        Ok(Response::new(answer.await?))
    }

    type ChannelReadStream = channels::remote::FrameStream;

    async fn channel_read(
        &self,
        request: Request<Streaming<pb::ChannelFrame>>,
    ) -> Result<Response<Self::ChannelReadStream>, Status> {
        self.authorize(&request, Access::Member)?;
        let node = &self.node;
        let stream =
            channels::remote::serve_read(node.channels.clone(), node.is_draining(), request);
        Ok(Response::new(stream.await?))
    }
}

/// A write forwarded by a follower: propose it here (once) and report the outcome and where it
/// sits in the log, or say who the leader is when this node is not.
async fn write(node: &Node, request: pb::WriteRequest) -> Result<pb::WriteReply, ServiceError> {
    let command: Command =
        serde_json::from_slice(&request.command_json).map_err(|e| ServiceError::BadRequest {
            what: "registry command",
            reason: e.to_string(),
        })?;
    if let Err(held) = command_level::admit(node, &command).await {
        debug!(node = node.id, reason = %held, "forwarded write held back");
        return Ok(pb::WriteReply {
            held_back: held.to_string(),
            ..pb::WriteReply::default()
        });
    }
    match node.consensus.propose(command).await {
        Ok(written) => {
            let outcome_json = serde_json::to_vec(&written.outcome)
                .map_err(|e| ServiceError::Internal(format!("encoding an outcome: {e}")))?;
            Ok(pb::WriteReply {
                outcome_json,
                log_index: written.log_index,
                not_leader: None,
                held_back: String::new(),
            })
        }
        Err(ConsensusError::ForwardToLeader {
            leader_id,
            leader_addr,
        }) => {
            debug!(
                node = node.id,
                ?leader_id,
                "forwarded write reached a non-leader"
            );
            Ok(pb::WriteReply {
                outcome_json: Vec::new(),
                log_index: 0,
                not_leader: Some(pb::LeaderHint {
                    leader_id: leader_id.unwrap_or(0),
                    leader_address: leader_addr.unwrap_or_default(),
                }),
                held_back: String::new(),
            })
        }
        Err(err) => Err(ServiceError::Unavailable(format!(
            "node {} cannot commit: {err}",
            node.id
        ))),
    }
}

/// In-flight counts of every worker connected to this node.
fn live_facts(node: &Node) -> pb::LiveFactsReply {
    let workers = node
        .connections
        .ids()
        .into_iter()
        .map(|worker| {
            let load = node.router.load(worker);
            pb::WorkerFacts {
                worker_id: worker.to_string(),
                executing: load.executing as u64,
                waiting: load.waiting as u64,
            }
        })
        .collect();
    pb::LiveFactsReply {
        node_id: node.id,
        workers,
    }
}
