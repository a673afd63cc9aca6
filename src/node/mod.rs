//! node: one quorum process, wired together.
//!
//! Owns start-up order (config → node id → consensus → stale-worker purge → event
//! reactions → worker listener), the shared context every session and built-in uses,
//! and shutdown. A single node is a cluster of one: there is no other code path.

pub mod events;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLockReadGuard};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::consensus::{Consensus, ConsensusConfig};
use crate::gateway::{self, connections::Connections};
use crate::ids::NodeId;
use crate::protocol::error::EngineError;
use crate::protocol::ErrorBody;
use crate::registry::{Command, Outcome, Registry};
use crate::router::Router;

/// How long a pending call may wait for its owner before the engine gives up on it.
const CALL_EXPIRY: Duration = Duration::from_secs(15 * 60);

/// The context shared by sessions, built-ins and event reactions on one node.
pub struct Node {
    pub id: NodeId,
    pub config: Config,
    pub consensus: Consensus,
    pub connections: Arc<Connections>,
    pub router: Router,
    registry: Arc<std::sync::RwLock<Registry>>,
    /// `engine::register_trigger` calls waiting for a provider's answer, by trigger id.
    pub trigger_waiters: Mutex<HashMap<String, oneshot::Sender<Option<ErrorBody>>>>,
    /// Telemetry frames received (and dropped): OTLP export is not stored yet.
    pub telemetry_frames: AtomicU64,
    /// Cancelled when the node shuts down; every session is a child of it.
    pub shutdown: CancellationToken,
}

/// The addresses a started node actually listens on (ports may have been 0).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Ready {
    pub node_id: NodeId,
    pub listen: String,
    pub data_dir: String,
}

impl Node {
    /// The local registry replica; never hold the guard across an `.await`.
    pub fn registry(&self) -> RwLockReadGuard<'_, Registry> {
        // A poisoned lock means a panic inside `apply`; what is there is still the best
        // answer a discovery call can give.
        self.registry.read().unwrap_or_else(|p| p.into_inner())
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
    /// Transient failures (an election in progress) are retried with backoff.
    pub async fn commit(&self, command: Command) -> Result<Outcome, EngineError> {
        let mut delay = Duration::from_millis(50);
        let mut attempts = 0;
        loop {
            match self.consensus.write(command.clone()).await {
                Ok(outcome) => return Ok(outcome),
                Err(err) if attempts < 6 => {
                    attempts += 1;
                    warn!(node = self.id, error = %err, attempt = attempts, "registry write failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(err) => return Err(EngineError::Unavailable(err.to_string())),
            }
        }
    }
}

/// Starts a node and serves until SIGINT or SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let node_id = config.resolve_node_id()?;
    let (applied_tx, mut applied_rx) = mpsc::unbounded_channel();
    let consensus = Consensus::start(
        ConsensusConfig {
            node_id,
            data_dir: config.data_dir.clone(),
            advertise: config.advertise.clone(),
        },
        applied_tx,
    )
    .await?;
    let connections = Arc::new(Connections::default());
    let registry = consensus.registry();
    let router = Router::new(
        node_id,
        registry.clone(),
        connections.clone(),
        config.max_pending_calls,
    );
    let node = Arc::new(Node {
        id: node_id,
        config: config.clone(),
        consensus,
        connections,
        router,
        registry,
        trigger_waiters: Mutex::new(HashMap::new()),
        telemetry_frames: AtomicU64::new(0),
        shutdown: CancellationToken::new(),
    });

    // Workers recorded on this node belong to a previous process: their sockets are gone.
    node.commit(Command::NodeRestarted { node: node_id })
        .await
        .map_err(|e| anyhow::anyhow!("cannot purge workers of the previous run: {e}"))?;
    // Entries re-applied from the log at start-up describe the past; nothing must react.
    while applied_rx.try_recv().is_ok() {}
    tokio::spawn(events::run(node.clone(), applied_rx));
    tokio::spawn(expire_calls(node.clone()));

    let listener = TcpListener::bind(config.listen).await?;
    let ready = Ready {
        node_id: node.consensus.node_id(),
        listen: listener.local_addr()?.to_string(),
        data_dir: config.data_dir.display().to_string(),
    };
    info!(node = node_id, listen = %ready.listen, cluster_listen = %config.cluster_listen,
        advertise = %config.advertise, join = ?config.join, "quorum node serving (cluster of one; peers arrive with clustering)");
    // One machine-readable line on stdout tells scripts and tests the node is ready.
    println!("{}", serde_json::to_string(&ready)?);
    let server = tokio::spawn(gateway::serve(node.clone(), listener));

    wait_for_signal().await;
    info!(node = node_id, "shutting down");
    node.shutdown.cancel();
    let _ = server.await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while node.connections.len() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.consensus.shutdown().await?;
    Ok(())
}

async fn expire_calls(node: Arc<Node>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tick.tick() => node.router.expire(CALL_EXPIRY).await,
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

/// Counts a dropped telemetry frame.
pub fn count_telemetry(node: &Node) {
    node.telemetry_frames.fetch_add(1, Ordering::Relaxed);
}
