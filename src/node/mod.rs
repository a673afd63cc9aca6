//! node: one quorum process, wired together.
//!
//! Owns start-up order (config → node id → cluster and HTTP listeners → consensus → gRPC
//! service and health/metrics endpoint → join or restart → stale-worker purge → event
//! reactions → worker listener), the shared
//! context every session and built-in uses, registry commits (forwarded to the leader when
//! this node is not it), and shutdown. A single node is a cluster of one: there is no other
//! code path.

mod drain;
pub mod events;
mod fd_limit;
pub mod ports;

use anyhow::Context;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLockReadGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::auth::cluster_tls::ClusterTls;
use crate::auth::worker_gate::{WorkerAuth, WorkerGate};
use crate::auth::worker_tls::WorkerTls;
use crate::budget::Budget;
use crate::builtins::fairness::QuerySlots;
use crate::channels::Channels;
use crate::cluster::forwarder::ForwardError;
use crate::cluster::identity::ClusterId;
use crate::cluster::{admission, bootstrap, command_level, forwarder, membership};
use crate::config::Config;
use crate::consensus::{Applied, Consensus, ConsensusConfig, ConsensusError};
use crate::gateway::{self, connections::Connections};
use crate::http;
use crate::ids::NodeId;
use crate::metrics::Metrics;
use crate::protocol::error::EngineError;
use crate::protocol::ErrorBody;
use crate::registry::{Command, Outcome, Registry};
use crate::router::Router;
use crate::rpc;
use crate::rpc::client::PeerClients;
use crate::rpc::invocations::InvocationLinks;

/// How long a pending call may wait for its owner before the engine gives up on it.
const CALL_EXPIRY: Duration = Duration::from_secs(15 * 60);

/// How long answers are kept for a worker that lost its connection and has not reattached
/// (SDK call timeouts are far shorter).
const PARKED_EXPIRY: Duration = Duration::from_secs(5 * 60);

/// How long [`Node::commit`] keeps retrying while there is no leader (an election, a leader
/// change): a few election timeouts plus the time to notice a dead leader.
pub const COMMIT_RETRY_BUDGET: Duration = Duration::from_secs(15);

/// How long the cluster service may take to finish its requests in flight at shutdown.
const RPC_DRAIN: Duration = Duration::from_secs(10);

/// How long the health/metrics endpoint may take to finish its requests at shutdown.
const HTTP_DRAIN: Duration = Duration::from_secs(2);

/// The context shared by sessions, built-ins and event reactions on one node.
pub struct Node {
    pub id: NodeId,
    /// The validated settings; `advertise` is the address peers actually reach this node at.
    pub config: Config,
    pub consensus: Consensus,
    /// gRPC channels to the other nodes (Raft, forwarding, membership, live facts).
    pub peers: PeerClients,
    /// The invocation streams to and from other nodes.
    pub links: Arc<InvocationLinks>,
    /// The cluster this node belongs to; Raft RPCs from any other are refused.
    pub cluster_id: ClusterId,
    /// The members the leader listed when it admitted this node with empty storage: trusted
    /// for Raft messages until this node's log has caught up to them.
    pub admitted: crate::cluster::admission::AdmittedMembers,
    pub connections: Arc<Connections>,
    pub router: Router,
    /// The node-wide cap on built-in queries running on the blocking pool.
    pub query_slots: QuerySlots,
    registry: Arc<std::sync::RwLock<Registry>>,
    /// `engine::register_trigger` calls waiting for a provider's answer, by trigger id.
    pub trigger_waiters: Mutex<HashMap<String, oneshot::Sender<Option<ErrorBody>>>>,
    /// Call and connection counters, scraped at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the node shuts down; every session is a child of it.
    pub shutdown: CancellationToken,
    /// Set while this node has no contact with a quorum: it serves no workers then.
    fenced: AtomicBool,
    /// Set while the worker listener accepts connections (readiness needs it).
    serving: AtomicBool,
    /// Cancelled when a SIGTERM starts the drain: no new workers from then on.
    pub draining: CancellationToken,
    /// When leading: each member's last answer to the lease probe (which members are silent).
    pub member_contact: crate::cluster::lease::MemberContact,
    /// The registry command level each member last reported to this node's lease probes.
    pub member_levels: crate::cluster::command_level::MemberLevels,
    /// When a leader's AppendEntries (a heartbeat) last reached this node.
    leader_contact: Mutex<Option<Instant>>,
    /// Who the worker port lets in (`--worker-auth`, the tokens file, the registry's tokens).
    pub worker_gate: Arc<WorkerGate>,
    /// The bytes worker connections may make this node buffer, all together.
    pub budget: Arc<Budget>,
    /// The data channels living on this node, and the relay counters.
    pub channels: Arc<Channels>,
    /// Managed workers on this node: the local supervisor (once the worker port is bound) and
    /// the wake-up the placement loop and the node agent wait on.
    pub managed: crate::managed::local::LocalManaged,
    /// Follows `fenced`, for whoever must act the moment this node fences (the node agent
    /// kills its managed workers then).
    fence_watch: tokio::sync::watch::Sender<bool>,
}

/// The addresses a started node actually listens on (ports may have been 0), printed as one
/// JSON line on stdout once the node serves workers.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Ready {
    pub node_id: NodeId,
    /// The worker WebSocket address.
    pub listen: String,
    /// The gRPC address the cluster service is bound to.
    pub cluster_listen: String,
    /// The gRPC address peers were told to use.
    pub advertise: String,
    /// The address `/healthz`, `/readyz` and `/metrics` are served on.
    pub http_listen: String,
    pub data_dir: String,
}

impl Node {
    /// The local registry replica; never hold the guard across an `.await`.
    pub fn registry(&self) -> RwLockReadGuard<'_, Registry> {
        // A poisoned lock means a panic inside `apply`; what is there is still the best
        // answer a discovery call can give.
        self.registry.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The cluster address of a member, from the replicated membership.
    pub fn peer_address(&self, node: NodeId) -> Option<String> {
        let metrics = self.consensus.raft().metrics().borrow().clone();
        let address = metrics
            .membership_config
            .membership()
            .get_node(&node)
            .map(|n| n.addr.clone());
        address
    }

    /// Every member (voter or learner) of the replicated membership with its cluster address.
    pub fn member_addresses(&self) -> Vec<(NodeId, String)> {
        self.consensus
            .raft()
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, member)| (*id, member.addr.clone()))
            .collect()
    }

    /// Whether this node is fenced (cut off from a quorum for longer than its lease).
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Relaxed)
    }

    /// Whether the worker listener is up (false while joining and once shutting down).
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
    }

    /// Fences or unfences this node. Fencing kills its managed workers and closes every
    /// worker socket with a going-away code, so the SDKs reconnect to the healthy side of the
    /// cluster.
    pub fn set_fenced(&self, fenced: bool) {
        let was = self.fenced.swap(fenced, Ordering::Relaxed);
        if was != fenced {
            self.fence_watch.send_replace(fenced);
        }
        if fenced && !was {
            warn!(
                node = self.id,
                "no quorum for the lease: fencing, closing worker sockets"
            );
            // Before the majority may purge this node and start them elsewhere.
            if let Some(supervisor) = self.managed.supervisor() {
                supervisor.kill_all();
            }
            for handle in self.connections.handles() {
                handle.cancel.cancel();
            }
        } else if was && !fenced {
            info!(
                node = self.id,
                "quorum contact restored: serving workers again"
            );
        }
    }

    /// Follows whether this node is fenced (see [`Node::set_fenced`]).
    pub fn watch_fenced(&self) -> tokio::sync::watch::Receiver<bool> {
        self.fence_watch.subscribe()
    }

    /// Records that a leader's AppendEntries reached this node just now.
    pub fn note_leader_contact(&self) {
        *self
            .leader_contact
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Whether a leader's AppendEntries reached this node within `window`.
    pub fn heard_from_leader_within(&self, window: Duration) -> bool {
        self.leader_contact
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| at.elapsed() <= window)
    }

    /// Whether a SIGTERM drain has started on this node.
    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Whether this node leads the Raft cluster (it fires durable discovery bindings).
    pub fn is_leader(&self) -> bool {
        self.consensus.raft().metrics().borrow().current_leader == Some(self.id)
    }

    /// The waiters of `engine::register_trigger`; never held across an `.await`.
    pub fn lock_trigger_waiters(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Option<ErrorBody>>>> {
        self.trigger_waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Commits a registry change through Raft and returns its outcome once applied here.
    ///
    /// On a follower the command is forwarded to the leader, and this returns once the local
    /// replica has applied it too. While there is no leader (an election, a leader change) it
    /// retries with backoff for up to [`COMMIT_RETRY_BUDGET`], so a registration in flight
    /// survives a leader change. A command the leader holds back (some member's binary cannot
    /// apply it yet, see `cluster::command_level`) fails at once with [`EngineError::HeldBack`].
    pub async fn commit(&self, command: Command) -> Result<Outcome, EngineError> {
        self.commit_within(command, COMMIT_RETRY_BUDGET).await
    }

    /// [`Node::commit`] with its own retry budget.
    pub async fn commit_within(
        &self,
        command: Command,
        budget: Duration,
    ) -> Result<Outcome, EngineError> {
        let deadline = Instant::now() + budget;
        let mut delay = Duration::from_millis(50);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            // Held back: retrying soon cannot help; the caller retries on its own schedule.
            command_level::admit(self, &command)
                .await
                .map_err(|held| EngineError::HeldBack(held.to_string()))?;
            let failure = match self.consensus.write(command.clone()).await {
                Ok(outcome) => return Ok(outcome),
                Err(ConsensusError::ForwardToLeader {
                    leader_id: Some(leader),
                    leader_addr,
                }) => match leader_addr.or_else(|| membership::address_of(self, leader)) {
                    Some(addr) => match forwarder::forward(self, leader, &addr, &command).await {
                        Ok(outcome) => return Ok(outcome),
                        Err(ForwardError::HeldBack(reason)) => {
                            return Err(EngineError::HeldBack(reason))
                        }
                        Err(err) if err.is_retryable() => err.to_string(),
                        Err(err) => return Err(EngineError::Unavailable(err.to_string())),
                    },
                    None => format!("leader {leader} has no known address"),
                },
                Err(ConsensusError::ForwardToLeader {
                    leader_id: None, ..
                }) => "no leader elected yet".to_string(),
                Err(err @ ConsensusError::Fatal(_)) => {
                    return Err(EngineError::Unavailable(err.to_string()))
                }
                Err(err) => err.to_string(),
            };
            if Instant::now() + delay > deadline {
                warn!(node = self.id, attempt, error = %failure, "registry write not committed; giving up");
                return Err(EngineError::Unavailable(failure));
            }
            debug!(node = self.id, attempt, error = %failure, "registry write not committed yet; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }
}

/// The cluster port's certificates, or `None` (said in the log) for a plaintext port.
fn cluster_tls(config: &Config, node_id: NodeId) -> anyhow::Result<Option<ClusterTls>> {
    let Some(dir) = &config.certs_dir else {
        warn!(node = node_id, cluster_listen = %config.cluster_listen, insecure = config.insecure,
            "the cluster port is plaintext: anyone who can reach it can join or disrupt the cluster; give --certs-dir to require certificates");
        return Ok(None);
    };
    let tls = ClusterTls::load(dir)
        .with_context(|| format!("cannot use the certificates in {}", dir.display()))?;
    info!(node = node_id, certs_dir = %dir.display(), identity = %tls.identity,
        "the cluster port requires certificates signed by the cluster's CA");
    Ok(Some(tls))
}

/// Starts a node and serves until SIGINT or SIGTERM (or until it is removed from its cluster).
pub async fn run(mut config: Config) -> anyhow::Result<()> {
    let node_id = config.resolve_node_id()?;
    fd_limit::raise_to_hard_limit(node_id);
    let cluster_tls = cluster_tls(&config, node_id)?;
    // A bad worker certificate stops the node here, before it joins its cluster.
    let worker_tls = WorkerTls::from_config(config.worker_tls.as_ref())?;
    let cluster_listener = ports::bind(config.cluster_listen, "peers").await?;
    let cluster_addr = cluster_listener.local_addr()?;
    config.cluster_listen = cluster_addr;
    let http_listener = http::bind(config.http_listen).await?;
    config.http_listen = http_listener.local_addr()?;
    config.advertise = bootstrap::advertise_address(&config.advertise, cluster_addr);
    let peers = PeerClients::bound_to(cluster_addr.ip())
        .with_tls(cluster_tls.as_ref().map(|tls| tls.client.clone()));
    let cluster_id = ClusterId::load(&config.data_dir)?;
    // Loaded before Raft starts: a catch-up cut short by a restart keeps elections off.
    let admitted = crate::cluster::admission::AdmittedMembers::load(
        &config.data_dir,
        cluster_id.get().as_deref(),
    );
    let (applied_tx, applied_rx) = mpsc::unbounded_channel();
    let consensus = Consensus::start(
        ConsensusConfig {
            node_id,
            data_dir: config.data_dir.clone(),
            advertise: config.advertise.clone(),
            bootstrap: bootstrap::mode(&config),
            peers: peers.clone(),
            cluster_id: cluster_id.clone(),
            identity: cluster_tls.as_ref().map(|tls| tls.identity.clone()),
            snapshots: config.snapshots,
            cache_bytes: config.storage_cache_bytes,
            catching_up: admitted.index().is_some(),
        },
        applied_tx,
    )
    .await?;
    let connections = Arc::new(Connections::default());
    let budget = Budget::new(node_id, config.client_memory_budget.bytes);
    info!(
        node = node_id,
        bytes = budget.limit(),
        source = config.client_memory_budget.source,
        outbound_queue_bytes = config.max_outbound_queue_bytes,
        outbound_stall_timeout_ms = config.outbound_stall_timeout.as_millis() as u64,
        "client memory budget chosen"
    );
    let links = Arc::new(InvocationLinks::new(node_id, peers.clone()));
    let registry = consensus.registry();
    let metrics = Arc::new(Metrics::default());
    let router = Router::new(
        node_id,
        registry.clone(),
        connections.clone(),
        config.max_pending_calls,
        config.call_hold,
        metrics.clone(),
    );
    let node = Arc::new(Node {
        id: node_id,
        config: config.clone(),
        consensus,
        peers: peers.clone(),
        links: links.clone(),
        cluster_id,
        admitted,
        connections,
        router,
        query_slots: QuerySlots::new(config.max_running_builtin_queries),
        registry,
        trigger_waiters: Mutex::new(HashMap::new()),
        metrics,
        shutdown: CancellationToken::new(),
        fenced: AtomicBool::new(false),
        serving: AtomicBool::new(false),
        draining: CancellationToken::new(),
        member_contact: Default::default(),
        member_levels: Default::default(),
        leader_contact: Mutex::new(None),
        worker_gate: Arc::new(WorkerGate::new(
            config.worker_auth,
            config.worker_tokens.clone(),
        )),
        budget,
        channels: Arc::new(Channels::new(
            node_id,
            config.channel_limits(),
            config.channel_connections_per_peer,
            crate::channels::beat::Heartbeat::new(config.channel_peer_silence),
        )),
        managed: Default::default(),
        fence_watch: tokio::sync::watch::Sender::new(false),
    });
    links.attach(&node);
    node.router.set_link(links);
    // Probes must see a joining node as alive (and not ready) from the start.
    let http_stop = CancellationToken::new();
    let http_server = tokio::spawn(http::serve(node.clone(), http_listener, http_stop.clone()));
    // Peers must reach this node's Raft before it can be added to (or rejoin) a cluster.
    let rpc_stop = CancellationToken::new();
    let rpc_server = tokio::spawn(rpc::server::serve(
        node.clone(),
        cluster_listener,
        cluster_tls,
        rpc_stop.clone(),
    ));
    info!(node = node_id, cluster_listen = %cluster_addr, advertise = %config.advertise,
        join = ?config.join, "cluster service listening");

    let signal = wait_for_signal();
    tokio::pin!(signal);
    let started = tokio::select! {
        started = join_and_register(&node) => Some(started),
        _ = &mut signal => None,
    };
    let result = match started {
        Some(Ok(())) => serve_workers(&node, applied_rx, worker_tls, signal.as_mut()).await,
        Some(Err(err)) => Err(err),
        None => {
            info!(node = node_id, "signal received during start-up");
            Ok(())
        }
    };

    info!(node = node_id, "shutting down");
    node.shutdown.cancel();
    node.serving.store(false, Ordering::Relaxed);
    let raft_state = node
        .consensus
        .raft()
        .metrics()
        .borrow()
        .running_state
        .clone();
    let result = match raft_state {
        Err(fatal) => result.and(Err(anyhow::anyhow!("raft stopped: {fatal}"))),
        Ok(()) => result,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !node.connections.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rpc_stop.cancel();
    match tokio::time::timeout(RPC_DRAIN, rpc_server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => warn!(node = node_id, error = %err, "cluster service failed"),
        Ok(Err(err)) => warn!(node = node_id, error = %err, "cluster service task failed"),
        Err(_) => warn!(node = node_id, "cluster service did not drain in time"),
    }
    http_stop.cancel();
    match tokio::time::timeout(HTTP_DRAIN, http_server).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => warn!(node = node_id, error = %err, "health and metrics task failed"),
        Err(_) => warn!(
            node = node_id,
            "health and metrics endpoint did not drain in time"
        ),
    }
    node.consensus.shutdown().await?;
    result
}

/// Joins (or rejoins) the cluster, then records that this node's previous workers are gone.
/// Waits for a leader as long as it takes (until a signal): a node that cannot commit must not
/// accept workers.
async fn join_and_register(node: &Arc<Node>) -> anyhow::Result<()> {
    bootstrap::ensure_membership(node).await?;
    // Workers recorded on this node belong to a previous process: their sockets are gone.
    loop {
        match node
            .commit_within(
                Command::NodeRestarted { node: node.id },
                COMMIT_RETRY_BUDGET,
            )
            .await
        {
            Ok(_) => return Ok(()),
            Err(err) => {
                warn!(node = node.id, error = %err, "cannot record the restart yet; still waiting for the cluster")
            }
        }
    }
}

/// Serves workers until a signal arrives or the node is shut down from inside (removed from
/// its cluster). The gateway is stopped by the caller through `node.shutdown`.
async fn serve_workers(
    node: &Arc<Node>,
    mut applied_rx: mpsc::UnboundedReceiver<Applied>,
    worker_tls: Option<WorkerTls>,
    signal: Pin<&mut impl Future<Output = ()>>,
) -> anyhow::Result<()> {
    // Entries applied during start-up (replayed or replicated) describe the past; nothing
    // must react to them.
    while applied_rx.try_recv().is_ok() {}
    tokio::spawn(events::run(node.clone(), applied_rx));
    tokio::spawn(expire_calls(node.clone()));
    tokio::spawn(crate::cluster::lease::run(node.clone(), node.config.lease));
    tokio::spawn(membership::watch_removal(node.clone()));
    let caught_up = node.clone();
    tokio::spawn(async move {
        let metrics = caught_up.consensus.raft().metrics();
        let node = &*caught_up;
        let forget = admission::forget_when_caught_up(
            node.id,
            &node.admitted,
            &node.config.data_dir,
            metrics,
        );
        tokio::select! {
            // Caught up (or there was nothing to catch up): its log's membership is current.
            () = forget => node.consensus.allow_elections(),
            () = node.shutdown.cancelled() => {}
        }
    });
    tokio::spawn(
        node.channels
            .table
            .clone()
            .sweep_until(node.shutdown.clone()),
    );
    crate::managed::config_list::submit_at_start(node);
    if let Some(after) = node.config.remove_departed_after {
        tokio::spawn(crate::cluster::departed::run(node.clone(), after));
    }
    if node.config.worker_auth == WorkerAuth::Token {
        let gate = node.worker_gate.clone();
        tokio::spawn(gate.report_refusals(node.id, node.shutdown.clone()));
    } else if !node.config.worker_tokens.is_empty() {
        warn!(
            node = node.id,
            "a worker tokens file is given but --worker-auth is off: workers need no token"
        );
    }

    let listener = ports::bind(node.config.listen, "workers").await?;
    crate::managed::start(node, listener.local_addr()?).await;
    let ready = Ready {
        node_id: node.consensus.node_id(),
        listen: listener.local_addr()?.to_string(),
        cluster_listen: node.config.cluster_listen.to_string(),
        advertise: node.config.advertise.clone(),
        http_listen: node.config.http_listen.to_string(),
        data_dir: node.config.data_dir.display().to_string(),
    };
    info!(node = node.id, listen = %ready.listen, advertise = %ready.advertise, "quorum node serving");
    // Bound: connections queue until the gateway accepts them, so the node is ready now.
    node.serving.store(true, Ordering::Relaxed);
    // One machine-readable line on stdout tells scripts and tests the node is ready.
    println!("{}", serde_json::to_string(&ready)?);
    let server = tokio::spawn(gateway::serve(node.clone(), listener, worker_tls));

    tokio::select! {
        _ = signal => drain::run(node).await,
        _ = node.shutdown.cancelled() => {}
    }
    node.shutdown.cancel();
    node.serving.store(false, Ordering::Relaxed);
    stop_managed_workers(node).await;
    let _ = server.await;
    Ok(())
}

/// Gives the managed workers their SIGTERM and grace before the node exits (past it they are
/// SIGKILLed, and would die with the node anyway).
async fn stop_managed_workers(node: &Node) {
    let Some(supervisor) = node.managed.supervisor() else {
        return;
    };
    let bound = node.config.managed_stop_grace + Duration::from_secs(1);
    if tokio::time::timeout(bound, supervisor.shut_down())
        .await
        .is_err()
    {
        warn!(
            node = node.id,
            "managed workers still stopping at exit; they die with the node"
        );
    }
}

async fn expire_calls(node: Arc<Node>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                node.router.expire(CALL_EXPIRY).await;
                node.router.prune_parked(PARKED_EXPIRY);
            }
            _ = node.shutdown.cancelled() => return,
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
