//! Raft consensus for quorum's registry, built on openraft 0.9 (storage-v2) and sled.
//!
//! Owns the openraft type configuration ([`TypeConfig`]), the Raft tuning ([`raft_config`]),
//! the error type ([`ConsensusError`]) and the [`Consensus`] handle that starts a node, proposes
//! [`Command`]s and exposes the replicated [`Registry`]. Storage lives in
//! [`log_store`] (durable log) and [`state_machine`] (registry + snapshots), both in the sled
//! database at `data_dir/raft`; peers are reached over gRPC ([`network`]). The log is
//! compacted by snapshots after a number of entries (openraft's policy) or a number of bytes
//! ([`size_trigger`]), whichever comes first.
//!
//! Invariants:
//! - the registry behind [`Consensus::registry`] only changes through the state machine, i.e. in
//!   log order, and each normal entry is reported once per apply on the [`Applied`] channel;
//! - a node whose storage is empty bootstraps a one-member cluster of itself only when told to
//!   ([`Bootstrap::Initialize`], or [`Consensus::found`] called by the designated founder); with
//!   [`Bootstrap::Join`] it does not initialize at start and waits to be added by a leader; a
//!   node with state only restarts from it (never re-initializes);
//! - after [`Consensus::shutdown`] returns `Ok`, the sled database is flushed and closed, so the
//!   same `data_dir` can be opened again (even in the same process).

pub mod log_store;
mod member;
pub mod network;
pub mod size_trigger;
mod sled_io;
pub mod state_machine;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::RwLock;
use std::time::Duration;

use openraft::error::ChangeMembershipError;
use openraft::error::ClientWriteError;
use openraft::error::Fatal;
use openraft::error::InitializeError;
use openraft::error::RaftError;
use openraft::metrics::WaitError;
use openraft::Config;
use openraft::LogIdOptionExt;
use openraft::Raft;
use openraft::ServerState;
use openraft::StorageError;

use self::log_store::SledLogStore;
pub use self::member::Member;
use self::network::GrpcNetwork;
use self::size_trigger::LogBytes;
use self::sled_io::StorageReleased;
use self::state_machine::SledStateMachine;
use crate::cluster::identity::ClusterId;
use crate::config::SnapshotPolicy;
use crate::registry::Command;
use crate::registry::Outcome;
use crate::registry::Registry;
use crate::rpc::client::PeerClients;

openraft::declare_raft_types!(
    /// openraft type configuration for quorum: registry commands in, outcomes out, `u64` node
    /// ids, nodes addressed by a plain cluster address, JSON snapshots held in memory.
    pub TypeConfig:
        D = crate::registry::Command,
        R = crate::registry::Outcome,
        NodeId = u64,
        Node = crate::consensus::Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// How long [`Consensus::start`] waits for a one-member cluster to elect itself.
const LEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`Consensus::shutdown`] waits for openraft's tasks to drop their storage handles.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long sending one snapshot chunk to a follower (and installing the last one there) may
/// take; snapshots can be large, so this is far longer than a heartbeat.
pub const INSTALL_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest election timeout; openraft also uses it as the leader lease: a follower that
/// heard from its leader more recently refuses to vote for anyone else.
pub const ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(600);

/// Entries in one AppendEntries. openraft gives an AppendEntries one heartbeat interval
/// (100 ms) to answer and sends the same entries again when it does not; its default of 300
/// entries, each a registration batch of up to 512 KiB, could make one request of 150 MB
/// that a busy follower never takes in time, so replication stalled and nodes fenced
/// themselves (100 workers registering in parallel on 3 nodes). 8 entries is 4 MiB at most.
pub const MAX_PAYLOAD_ENTRIES: u64 = 8;

/// The Raft tuning used by every quorum node, validated: 100 ms heartbeats, 300–600 ms election
/// timeout, 10 s per snapshot chunk, a snapshot every `snapshots.after_entries` applied entries
/// (5000 by default), `snapshots.keep_entries` entries kept behind a snapshot so that slightly
/// lagging followers can catch up from the log. The size trigger is [`size_trigger`]'s.
pub fn raft_config(snapshots: &SnapshotPolicy) -> Result<Arc<Config>, ConsensusError> {
    let config = Config {
        cluster_name: "quorum".to_string(),
        heartbeat_interval: 100,
        election_timeout_min: 300,
        election_timeout_max: ELECTION_TIMEOUT_MAX.as_millis() as u64,
        install_snapshot_timeout: INSTALL_SNAPSHOT_TIMEOUT.as_millis() as u64,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshots.after_entries),
        max_in_snapshot_log_to_keep: snapshots.keep_entries,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        ..Default::default()
    };
    Ok(Arc::new(config.validate()?))
}

/// What a node with empty storage does at start-up. A node with stored Raft state ignores it
/// and restarts from that state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootstrap {
    /// Found a one-member cluster of this node (no `--join` given).
    Initialize,
    /// Never initialize: wait for a leader to add this node (`--join` given). This is what keeps
    /// a node whose data directory was wiped from founding a second cluster.
    Join,
}

/// Where and as whom a node runs.
#[derive(Debug, Clone)]
pub struct ConsensusConfig {
    /// This node's Raft id; must be stable across restarts.
    pub node_id: u64,
    /// Directory for persistent state; the sled database lives in `data_dir/raft`.
    pub data_dir: PathBuf,
    /// This node's cluster address, recorded as its [`Member`] in the membership.
    pub advertise: String,
    /// What to do when the storage is empty.
    pub bootstrap: Bootstrap,
    /// The gRPC clients Raft reaches its peers with (shared with the rest of the node).
    pub peers: PeerClients,
    /// The cluster id stamped on outgoing Raft RPCs.
    pub cluster_id: ClusterId,
    /// This node's certificate identity, recorded with it when it founds a cluster; `None`
    /// on a plaintext cluster port.
    pub identity: Option<String>,
    /// When the log is compacted into a snapshot (entries and bytes since the last one).
    pub snapshots: SnapshotPolicy,
    /// Bytes of the sled database kept cached in memory.
    pub cache_bytes: u64,
    /// An admission kept on disk says this node was catching up (it rejoined with a wiped data
    /// directory) when it stopped: its log may end at an old membership, e.g. one where it was
    /// the only voter. It must not elect itself from that membership: elections stay off until
    /// [`Consensus::allow_elections`] (once the log holds the admitted membership).
    pub catching_up: bool,
}

/// A command committed and applied on the node that proposed it (the leader).
#[derive(Debug, Clone)]
pub struct Written {
    /// What `Registry::apply` returned.
    pub outcome: Outcome,
    /// The Raft log index of the entry, for followers to wait until they applied it too.
    pub log_index: u64,
}

/// Every normal entry the state machine applies, in log order, after the shared registry was
/// updated.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Raft log index of the applied entry (strictly increasing within one run).
    pub log_index: u64,
    /// What `Registry::apply` returned for it.
    pub outcome: Outcome,
}

/// Why starting, writing to, or stopping consensus failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    /// The data directory or the sled database in it could not be opened (e.g. another
    /// process, or a not yet shut down [`Consensus`], holds it).
    #[error("cannot open raft storage at {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    /// The Raft tuning is invalid (a programming error).
    #[error("invalid raft config: {0}")]
    Config(Box<openraft::ConfigError>),
    /// Reading or writing Raft storage failed.
    #[error("raft storage: {0}")]
    Storage(Box<StorageError<u64>>),
    /// The Raft core stopped (shut down, panicked, or hit a storage error).
    #[error("raft stopped: {0}")]
    Fatal(Box<Fatal<u64>>),
    /// Bootstrapping the one-member cluster was rejected.
    #[error("cannot initialize cluster: {0}")]
    Initialize(Box<InitializeError<u64, Member>>),
    /// The node did not become ready in time (or Raft shut down while waiting).
    #[error("waiting for raft: {0}")]
    Wait(#[from] WaitError),
    /// This node is not the leader; the write was not applied. Retry on `leader_id` (reachable
    /// at `leader_addr`) if known, else retry later.
    #[error("not the leader; forward to node {leader_id:?} at {leader_addr:?}")]
    ForwardToLeader {
        leader_id: Option<u64>,
        leader_addr: Option<String>,
    },
    /// A membership change was rejected (not produced by [`Consensus::write`] itself).
    #[error("membership change rejected: {0}")]
    ChangeMembership(Box<ChangeMembershipError<u64>>),
    /// Flushing sled on shutdown failed.
    #[error("flushing raft storage: {0}")]
    Flush(#[source] sled::Error),
    /// A background task (raft core or blocking storage work) panicked or was cancelled.
    #[error("task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// After raft stopped, some storage handle was still alive; the database stays open.
    #[error("raft storage still in use {0:?} after shutdown")]
    StorageStillInUse(Duration),
}

impl From<openraft::ConfigError> for ConsensusError {
    fn from(e: openraft::ConfigError) -> Self {
        ConsensusError::Config(Box::new(e))
    }
}

impl From<StorageError<u64>> for ConsensusError {
    fn from(e: StorageError<u64>) -> Self {
        ConsensusError::Storage(Box::new(e))
    }
}

impl From<Fatal<u64>> for ConsensusError {
    fn from(e: Fatal<u64>) -> Self {
        ConsensusError::Fatal(Box::new(e))
    }
}

impl From<InitializeError<u64, Member>> for ConsensusError {
    fn from(e: InitializeError<u64, Member>) -> Self {
        ConsensusError::Initialize(Box::new(e))
    }
}

impl From<ChangeMembershipError<u64>> for ConsensusError {
    fn from(e: ChangeMembershipError<u64>) -> Self {
        ConsensusError::ChangeMembership(Box::new(e))
    }
}

/// A running Raft node replicating the registry. Cheap to clone; all clones share one node.
#[derive(Clone)]
pub struct Consensus {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: u64,
    identity: Option<String>,
    raft: Raft<TypeConfig>,
    registry: Arc<RwLock<Registry>>,
    /// This handle's own reference to the database; taken, flushed and dropped by `shutdown`.
    db: Mutex<Option<sled::Db>>,
    /// Resolves once openraft dropped every storage component; taken by `shutdown`.
    storage_released: tokio::sync::Mutex<Option<StorageReleased>>,
}

impl std::fmt::Debug for Consensus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consensus")
            .field("node_id", &self.inner.node_id)
            .finish_non_exhaustive()
    }
}

impl Consensus {
    /// Opens (or creates) the sled db at `data_dir/raft` and starts openraft. If this node has
    /// never been initialized, [`Bootstrap::Initialize`] initializes a one-member cluster
    /// `{node_id: advertise}` and [`Bootstrap::Join`] leaves it uninitialized (a leader adds it
    /// later); otherwise restarts from the stored state (committed entries are re-applied,
    /// emitting [`Applied`] again). When the node is the only voter, waits (up to 10 s) until it
    /// is leader and has applied its whole log, so writes and reads work as soon as this returns.
    pub async fn start(
        cfg: ConsensusConfig,
        applied: tokio::sync::mpsc::UnboundedSender<Applied>,
    ) -> Result<Self, ConsensusError> {
        let mut config = raft_config(&cfg.snapshots)?;
        if cfg.catching_up {
            config = Arc::new(Config {
                enable_elect: false,
                ..(*config).clone()
            });
        }
        let db = open_db(cfg.data_dir.join("raft"), cfg.cache_bytes).await?;
        let registry = Arc::new(RwLock::new(Registry::default()));
        let (lease, released) = sled_io::storage_lease();
        let log_bytes = LogBytes::new(cfg.snapshots.after_log_bytes);
        let log_store = SledLogStore::open(&db)
            .await?
            .with_lease(lease.clone())
            .counting_into(log_bytes.clone());
        let state_machine = SledStateMachine::open(&db, registry.clone(), Some(applied))
            .await?
            .with_lease(lease);
        let network = GrpcNetwork::new(cfg.peers.clone(), cfg.cluster_id.clone());
        let raft = Raft::new(cfg.node_id, config, network, log_store, state_machine).await?;
        tokio::spawn(size_trigger::watch(log_bytes, raft.clone()));

        let consensus = Consensus {
            inner: Arc::new(Inner {
                node_id: cfg.node_id,
                identity: cfg.identity.clone(),
                raft,
                registry,
                db: Mutex::new(Some(db)),
                storage_released: tokio::sync::Mutex::new(Some(released)),
            }),
        };
        if let Err(e) = consensus.bring_up(&cfg).await {
            if let Err(stop_err) = consensus.shutdown().await {
                tracing::warn!(error = %stop_err, "shutting down after a failed start");
            }
            return Err(e);
        }
        Ok(consensus)
    }

    /// Initializes a pristine node (unless it is to join), then waits for a one-member cluster to
    /// be ready.
    async fn bring_up(&self, cfg: &ConsensusConfig) -> Result<(), ConsensusError> {
        let raft = &self.inner.raft;
        let id = cfg.node_id;
        let sole_voter = if raft.is_initialized().await? {
            let (voters, me) = raft
                .with_raft_state(move |st| {
                    let membership = st.membership_state.effective();
                    (
                        membership.voter_ids().collect::<Vec<_>>(),
                        membership.get_node(&id).cloned(),
                    )
                })
                .await?;
            if let Some(me) = me.filter(|me| me.addr != cfg.advertise) {
                tracing::warn!(
                    node_id = id,
                    stored = %me.addr,
                    advertise = %cfg.advertise,
                    "advertise address differs from the one in the stored membership; the leader is asked to update it"
                );
            }
            tracing::info!(node_id = id, ?voters, "restarting from existing raft state");
            if cfg.catching_up {
                tracing::info!(
                    node_id = id,
                    "restarted during a catch-up: no election until the log holds the admitted membership"
                );
                return Ok(());
            }
            voters == [id]
        } else if cfg.bootstrap == Bootstrap::Join {
            tracing::info!(
                node = id,
                "empty storage and peers to join: waiting for a leader to add this node"
            );
            return Ok(());
        } else {
            return self.found(&cfg.advertise).await;
        };
        if !sole_voter {
            // Part of a multi-node cluster: leadership depends on peers; do not block start-up.
            return Ok(());
        }
        self.wait_sole_leader().await
    }

    /// Lets this node stand for election again (after a start with
    /// [`ConsensusConfig::catching_up`], once its log holds the cluster's membership).
    pub fn allow_elections(&self) {
        self.inner.raft.runtime_config().elect(true);
    }

    /// Founds a one-member cluster of this pristine node at `advertise` (Raft `initialize` with
    /// only itself as voter) and waits until it leads and has applied its log. Used at start-up
    /// without `--join`, and later by the designated founder of a StatefulSet once every listed
    /// member answered that it belongs to no cluster; the others then join as usual.
    pub async fn found(&self, advertise: &str) -> Result<(), ConsensusError> {
        let id = self.inner.node_id;
        let members = BTreeMap::from([(id, Member::new(advertise, self.inner.identity.clone()))]);
        match self.inner.raft.initialize(members).await {
            Ok(()) => tracing::info!(node_id = id, "initialized one-member cluster"),
            // Raced with something that initialized it meanwhile: fine, it is initialized.
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(RaftError::APIError(e)) => return Err(e.into()),
            Err(RaftError::Fatal(e)) => return Err(e.into()),
        }
        self.wait_sole_leader().await
    }

    /// Waits (up to 10 s) until this node, the only voter, leads and has applied its log.
    async fn wait_sole_leader(&self) -> Result<(), ConsensusError> {
        let id = self.inner.node_id;
        self.inner
            .raft
            .wait(Some(LEADER_TIMEOUT))
            .metrics(
                |m| {
                    m.state == ServerState::Leader
                        && m.current_leader == Some(id)
                        && m.last_applied.index() >= m.last_log_index
                },
                "one-member cluster elects itself and applies its log",
            )
            .await?;
        Ok(())
    }

    /// Proposes a command and returns its Outcome once committed and applied locally.
    ///
    /// On a non-leader this fails with [`ConsensusError::ForwardToLeader`] without applying.
    pub async fn write(&self, cmd: Command) -> Result<Outcome, ConsensusError> {
        self.propose(cmd).await.map(|written| written.outcome)
    }

    /// Like [`Consensus::write`], also telling the log index of the entry, which a forwarded
    /// write reports back to the follower that proposed it.
    pub async fn propose(&self, cmd: Command) -> Result<Written, ConsensusError> {
        match self.inner.raft.client_write(cmd).await {
            Ok(resp) => Ok(Written {
                outcome: resp.data,
                log_index: resp.log_id.index,
            }),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(fwd))) => {
                Err(ConsensusError::ForwardToLeader {
                    leader_id: fwd.leader_id,
                    leader_addr: fwd.leader_node.map(|node| node.addr),
                })
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => Err(e.into()),
            Err(RaftError::Fatal(e)) => Err(e.into()),
        }
    }

    /// Waits until this node's state machine has applied the entry at `log_index` (or a later
    /// one), so a forwarded write can be acted on against the local replica.
    pub async fn wait_applied(
        &self,
        log_index: u64,
        timeout: Duration,
    ) -> Result<(), ConsensusError> {
        self.inner
            .raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(log_index), "forwarded write applied locally")
            .await?;
        Ok(())
    }

    /// Read view of the replicated registry, updated by apply (never hold the guard across
    /// `.await`: apply blocks while it is held).
    pub fn registry(&self) -> Arc<RwLock<Registry>> {
        self.inner.registry.clone()
    }

    /// The underlying openraft handle, for metrics, waits, triggers and (later) RPC handlers.
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.inner.raft
    }

    /// This node's Raft id.
    pub fn node_id(&self) -> u64 {
        self.inner.node_id
    }

    /// Stops raft and flushes sled. Waits until openraft's tasks have dropped their storage
    /// handles, then flushes and closes the database. Idempotent; other clones become unusable
    /// (their calls fail with [`ConsensusError::Fatal`]).
    pub async fn shutdown(&self) -> Result<(), ConsensusError> {
        self.inner.raft.shutdown().await?;

        let released = self.inner.storage_released.lock().await.take();
        let mut result = Ok(());
        if let Some(mut released) = released {
            if tokio::time::timeout(RELEASE_TIMEOUT, released.wait())
                .await
                .is_err()
            {
                result = Err(ConsensusError::StorageStillInUse(RELEASE_TIMEOUT));
            }
        }

        let db = self
            .inner
            .db
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(db) = db {
            // Dropping the last handle closes sled (joining its flusher thread): keep it off the
            // async runtime too.
            tokio::task::spawn_blocking(move || db.flush().map(drop))
                .await?
                .map_err(ConsensusError::Flush)?;
        }
        result
    }
}

/// Creates `path` and opens the sled database there with a page cache of `cache_bytes`, off
/// the async runtime. sled's default cache is 1 GiB: bounded by a setting instead, so the
/// node's memory has a documented ceiling whatever the size of its log and snapshots.
async fn open_db(path: PathBuf, cache_bytes: u64) -> Result<sled::Db, ConsensusError> {
    tokio::task::spawn_blocking(move || {
        let opened = sled::Config::new()
            .path(&path)
            .cache_capacity(cache_bytes)
            .open();
        opened.map_err(|source| ConsensusError::Open { path, source })
    })
    .await?
}
