//! config: one `Config` for a node, filled from defaults, then the config file, then
//! `QUORUM_*` environment variables and flags (clap merges those two, flags winning).
//! Validated once at start-up; every default fits a single node on a laptop.

use clap::Args;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::auth::tokens::{read_tokens_file, TokensFileError};
use crate::auth::worker_gate::WorkerAuth;
use crate::budget::{choose_budget, BudgetChoice, ByteSize};
use crate::cluster::lease::LeaseTimings;
use crate::ids::NodeId;
use crate::registry::WorkerToken;

/// Default worker WebSocket address (the SDKs' default `III_URL` port).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:49134";
/// Default gRPC address for other nodes.
/// Loopback, so a node started with no flags never exposes a plaintext cluster port.
pub const DEFAULT_CLUSTER_LISTEN: &str = "127.0.0.1:50051";
/// Default HTTP address for health checks and metrics.
pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:49180";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./data";

/// Flags of `quorum serve`; each is also a `QUORUM_*` variable and a config-file key.
#[derive(Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// YAML config file; its keys are the flag names with underscores (data_dir, listen, ...).
    #[arg(long, env = "QUORUM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for the Raft log, snapshots and the node id [default: ./data].
    #[arg(long, env = "QUORUM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Worker WebSocket address [default: 0.0.0.0:49134].
    #[arg(long, env = "QUORUM_LISTEN")]
    pub listen: Option<String>,
    /// gRPC address other nodes connect to [default: 127.0.0.1:50051]. Any other than a
    /// loopback address needs --certs-dir (or --insecure).
    #[arg(long, env = "QUORUM_CLUSTER_LISTEN")]
    pub cluster_listen: Option<String>,
    /// Directory with ca.crt, node.crt and node.key (`quorum cert`): the cluster port then
    /// speaks TLS and admits only certificates signed by ca.crt.
    #[arg(long, env = "QUORUM_CERTS_DIR")]
    pub certs_dir: Option<PathBuf>,
    /// Serve the cluster port in plaintext on a non-loopback address: anyone who can reach
    /// it can then join, disrupt or read the cluster.
    #[arg(long, env = "QUORUM_INSECURE")]
    pub insecure: bool,
    /// HTTP address serving /healthz, /readyz and /metrics [default: 0.0.0.0:49180].
    #[arg(long, env = "QUORUM_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// gRPC address peers should use to reach this node [default: 127.0.0.1 and the cluster port].
    #[arg(long, env = "QUORUM_ADVERTISE")]
    pub advertise: Option<String>,
    /// Cluster addresses of existing members to join (comma-separated; used by clustering).
    #[arg(long, env = "QUORUM_JOIN", value_delimiter = ',')]
    pub join: Vec<String>,
    /// This node's id; generated once and kept in the data directory when omitted.
    #[arg(long, env = "QUORUM_NODE_ID")]
    pub node_id: Option<NodeId>,
    /// Derives the node id from a StatefulSet pod name: its trailing ordinal plus one
    /// (`quorum-0` is node 1), so pods started with identical arguments get stable ids.
    #[arg(long, env = "QUORUM_NODE_ID_FROM_POD_NAME")]
    pub node_id_from_pod_name: Option<String>,
    /// How long a new connection may take to announce itself before its namespace
    /// becomes `default` and its buffered registrations apply [default: 5000].
    #[arg(long, env = "QUORUM_REGISTRATION_GRACE_MS")]
    pub registration_grace_ms: Option<u64>,
    /// Calls one connection may have waiting for answers at once [default: 10000].
    #[arg(long, env = "QUORUM_MAX_PENDING_CALLS")]
    pub max_pending_calls: Option<usize>,
    /// Registrations one connection may buffer before it announces itself [default: 10000].
    #[arg(long, env = "QUORUM_MAX_BUFFERED_REGISTRATIONS")]
    pub max_buffered_registrations: Option<usize>,
    /// Built-in queries (lists and infos) one connection may have running at once; a
    /// connection over it is not read until one finishes [default: 4].
    #[arg(long, env = "QUORUM_MAX_BUILTIN_CALLS_PER_CONNECTION")]
    pub max_builtin_calls_per_connection: Option<usize>,
    /// Built-in queries running at once on the whole node, each on a blocking thread, so a
    /// flood of lists cannot take every core [default: 1].
    #[arg(long, env = "QUORUM_MAX_RUNNING_BUILTIN_QUERIES")]
    pub max_running_builtin_queries: Option<usize>,
    /// Log output: `text` or `json` [default: text].
    #[arg(long, env = "QUORUM_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// A node without quorum contact for this long fences itself: it closes its worker
    /// sockets so their SDKs reconnect to the majority [default: 2500].
    #[arg(long, env = "QUORUM_FENCE_AFTER_MS")]
    pub fence_after_ms: Option<u64>,
    /// The leader purges the workers of a node silent for this long; must exceed
    /// fence_after_ms by at least one second [default: 5000].
    #[arg(long, env = "QUORUM_PURGE_AFTER_MS")]
    pub purge_after_ms: Option<u64>,
    /// On SIGTERM, how long the node may take to let its workers finish their calls and
    /// move to other nodes before it exits anyway [default: 20000].
    #[arg(long, env = "QUORUM_DRAIN_GRACE_MS")]
    pub drain_grace_ms: Option<u64>,
    /// How long a call waits for a function whose worker is moving off a draining node
    /// to be registered again elsewhere [default: 5000].
    #[arg(long, env = "QUORUM_CALL_HOLD_MS")]
    pub call_hold_ms: Option<u64>,
    /// The leader removes a voter whose advertised DNS name has not resolved for this long
    /// while it is silent (a StatefulSet scaled down); 0 turns this off [default: 0].
    #[arg(long, env = "QUORUM_REMOVE_DEPARTED_AFTER_MS")]
    pub remove_departed_after_ms: Option<u64>,
    /// Threads running the node's async work [default: half the CPUs this process may
    /// use, at least 1]. Every extra thread costs cross-thread wake-ups on the call path;
    /// see docs/benchmarks.md.
    #[arg(long, env = "QUORUM_RUNTIME_THREADS")]
    pub runtime_threads: Option<usize>,
    /// PEM certificate chain for `wss://` on the worker port; needs --tls-key.
    #[arg(long, env = "QUORUM_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "QUORUM_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Whether workers must present a token: `off` or `token` [default: off]. With `token`,
    /// a worker sends `Authorization: Bearer <token>` or `?token=<token>` on the URL.
    #[arg(long, env = "QUORUM_WORKER_AUTH")]
    pub worker_auth: Option<WorkerAuth>,
    /// YAML file of worker tokens (names, SHA-256 hashes and rules) every node reads at start,
    /// next to the ones made with `quorum token create`; see docs/security.md.
    #[arg(long, env = "QUORUM_WORKER_TOKENS_FILE")]
    pub worker_tokens_file: Option<PathBuf>,
    /// A client of --http-listen that has not sent its request headers within this long is
    /// disconnected [default: 5000].
    #[arg(long, env = "QUORUM_HTTP_HEADER_TIMEOUT_MS")]
    pub http_header_timeout_ms: Option<u64>,
    /// Connections --http-listen holds at once; further ones are closed at once [default: 256].
    #[arg(long, env = "QUORUM_HTTP_MAX_CONNECTIONS")]
    pub http_max_connections: Option<usize>,
    /// A connection to the cluster port that has not finished its TLS handshake and sent the
    /// HTTP/2 preface within this long is disconnected [default: 5000].
    #[arg(long, env = "QUORUM_CLUSTER_HANDSHAKE_TIMEOUT_MS")]
    pub cluster_handshake_timeout_ms: Option<u64>,
    /// Connections the cluster port holds at once; further ones are closed at once
    /// [default: 1024].
    #[arg(long, env = "QUORUM_CLUSTER_MAX_CONNECTIONS")]
    pub cluster_max_connections: Option<usize>,
    /// The largest one registration (a function, trigger type or trigger with its formats,
    /// metadata and config) or one worker announcement (its metadata and telemetry) may be,
    /// in bytes of JSON; larger ones are refused and never reach the Raft log
    /// [default: 1048576].
    #[arg(long, env = "QUORUM_MAX_REGISTRATION_BYTES")]
    pub max_registration_bytes: Option<usize>,
    /// A snapshot of the registry is taken (and the Raft log before it purged) after this
    /// many log entries [default: 5000].
    #[arg(long, env = "QUORUM_SNAPSHOT_AFTER_ENTRIES")]
    pub snapshot_after_entries: Option<u64>,
    /// A snapshot is also taken once the log entries appended since the last one reach this
    /// many bytes [default: 67108864].
    #[arg(long, env = "QUORUM_SNAPSHOT_AFTER_LOG_BYTES")]
    pub snapshot_after_log_bytes: Option<u64>,
    /// Log entries kept behind a snapshot, so a follower slightly behind catches up from the
    /// log instead of a whole snapshot [default: 1000].
    #[arg(long, env = "QUORUM_SNAPSHOT_KEEP_ENTRIES")]
    pub snapshot_keep_entries: Option<u64>,
    /// Bytes of the Raft storage (sled) kept cached in memory; `64MiB`, `1G` [default:
    /// 64MiB]. sled's own default, 1 GiB, would let it hold up to that much of the log and
    /// snapshots in the node's memory.
    #[arg(long, env = "QUORUM_STORAGE_CACHE_BYTES", value_parser = crate::budget::parse_bytes)]
    pub storage_cache_bytes: Option<u64>,
    /// Bytes all worker connections together may make the node buffer (partial messages,
    /// outbound queues); `268435456`, `256M` or `256MiB` [default: a quarter of the cgroup
    /// memory limit, else 512MiB].
    #[arg(long, env = "QUORUM_CLIENT_MEMORY_BUDGET", value_parser = crate::budget::parse_bytes)]
    pub client_memory_budget: Option<u64>,
    /// Bytes queued for one worker before further frames for it are refused [default: 32MiB].
    #[arg(long, env = "QUORUM_MAX_OUTBOUND_QUEUE_BYTES", value_parser = crate::budget::parse_bytes)]
    pub max_outbound_queue_bytes: Option<u64>,
    /// A worker whose outbound queue stays full this long (it does not read) is
    /// disconnected [default: 10000].
    #[arg(long, env = "QUORUM_OUTBOUND_STALL_TIMEOUT_MS")]
    pub outbound_stall_timeout_ms: Option<u64>,
    /// Bytes one data channel may hold between its writer and its reader (one frame larger
    /// than this still passes, alone) [default: 8MiB].
    #[arg(long, env = "QUORUM_CHANNEL_BUFFER_BYTES", value_parser = crate::budget::parse_bytes)]
    pub channel_buffer_bytes: Option<u64>,
    /// A data channel with an end still unconnected this long after its creation is removed
    /// [default: 300].
    #[arg(long, env = "QUORUM_CHANNEL_UNCONNECTED_TIMEOUT_SECS")]
    pub channel_unconnected_timeout_secs: Option<u64>,
    /// Data channels living on this node at once; `engine::channels::create` fails beyond
    /// it [default: 100000].
    #[arg(long, env = "QUORUM_MAX_CHANNELS")]
    pub max_channels: Option<usize>,
    /// Data channels one worker connection may have created and not yet finished;
    /// `engine::channels::create` fails for it beyond this [default: 10000].
    #[arg(long, env = "QUORUM_MAX_CHANNELS_PER_CONNECTION")]
    pub max_channels_per_connection: Option<usize>,
    /// A channel reader to which nothing could be sent for this long (it does not read) is
    /// closed with 1008 and its channel torn down [default: 60].
    #[arg(long, env = "QUORUM_CHANNEL_READER_STALL_SECS")]
    pub channel_reader_stall_secs: Option<u64>,
    /// Channel ends this node serves at once through one home node, each on a connection of
    /// its own to that node's cluster port; an end beyond it is refused with 503 before the
    /// upgrade [default: 256].
    #[arg(long, env = "QUORUM_CHANNEL_CONNECTIONS_PER_PEER")]
    pub channel_connections_per_peer: Option<usize>,
    /// A cross-node channel stream that stays silent this long (no frame, no beat) is taken
    /// for a lost node and its ends closed with 1011; beats go every 250 ms, or a third of
    /// this when shorter. Set the same on every node [default: 750].
    #[arg(long, env = "QUORUM_CHANNEL_PEER_SILENCE_MS")]
    pub channel_peer_silence_ms: Option<u64>,
    /// Bytes of output kept per managed worker for `quorum worker logs`; older output is
    /// dropped [default: 1MiB].
    #[arg(long, env = "QUORUM_MANAGED_LOG_BYTES", value_parser = crate::budget::parse_bytes)]
    pub managed_log_bytes: Option<u64>,
    /// A managed worker whose process runs this long without a connection announcing its
    /// name counts as failed: it is killed and restarted by its policy [default: 60].
    #[arg(long, env = "QUORUM_MANAGED_READY_TIMEOUT_SECS")]
    pub managed_ready_timeout_secs: Option<u64>,
    /// A managed worker's `scripts.install` still running after this long is killed (its
    /// whole process group) and counts as a failed install, retried with backoff
    /// [default: 600].
    #[arg(long, env = "QUORUM_MANAGED_INSTALL_TIMEOUT_SECS")]
    pub managed_install_timeout_secs: Option<u64>,
    /// How long a stopped managed worker has between SIGTERM and SIGKILL [default: 10].
    #[arg(long, env = "QUORUM_MANAGED_STOP_GRACE_SECS")]
    pub managed_stop_grace_secs: Option<u64>,
    /// A label of this node, `KEY=VALUE` (repeatable; comma-separated in
    /// QUORUM_NODE_LABELS): a managed worker whose spec names labels runs only on a node that
    /// has all of them.
    #[arg(long = "node-label", env = "QUORUM_NODE_LABELS", value_delimiter = ',')]
    pub node_labels: Vec<String>,
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The config file: the same keys as the flags, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    cluster_listen: Option<String>,
    certs_dir: Option<PathBuf>,
    insecure: Option<bool>,
    http_listen: Option<String>,
    advertise: Option<String>,
    join: Option<Vec<String>>,
    node_id: Option<NodeId>,
    node_id_from_pod_name: Option<String>,
    registration_grace_ms: Option<u64>,
    max_pending_calls: Option<usize>,
    max_buffered_registrations: Option<usize>,
    max_builtin_calls_per_connection: Option<usize>,
    max_running_builtin_queries: Option<usize>,
    log_format: Option<LogFormat>,
    fence_after_ms: Option<u64>,
    purge_after_ms: Option<u64>,
    drain_grace_ms: Option<u64>,
    call_hold_ms: Option<u64>,
    remove_departed_after_ms: Option<u64>,
    runtime_threads: Option<usize>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    worker_auth: Option<WorkerAuth>,
    worker_tokens_file: Option<PathBuf>,
    http_header_timeout_ms: Option<u64>,
    http_max_connections: Option<usize>,
    cluster_handshake_timeout_ms: Option<u64>,
    cluster_max_connections: Option<usize>,
    max_registration_bytes: Option<usize>,
    snapshot_after_entries: Option<u64>,
    snapshot_after_log_bytes: Option<u64>,
    snapshot_keep_entries: Option<u64>,
    storage_cache_bytes: Option<ByteSize>,
    client_memory_budget: Option<ByteSize>,
    max_outbound_queue_bytes: Option<ByteSize>,
    outbound_stall_timeout_ms: Option<u64>,
    channel_buffer_bytes: Option<ByteSize>,
    channel_unconnected_timeout_secs: Option<u64>,
    max_channels: Option<usize>,
    max_channels_per_connection: Option<usize>,
    channel_reader_stall_secs: Option<u64>,
    channel_connections_per_peer: Option<usize>,
    channel_peer_silence_ms: Option<u64>,
    managed_log_bytes: Option<ByteSize>,
    managed_ready_timeout_secs: Option<u64>,
    managed_install_timeout_secs: Option<u64>,
    managed_stop_grace_secs: Option<u64>,
    node_labels: Option<BTreeMap<String, String>>,
    /// Managed workers this node reconciles at start (see `managed::config_list`). `Some(None)`
    /// is a `workers:` key with nothing under it: an empty list, not an absent key.
    #[serde(default, deserialize_with = "present")]
    workers: Option<Option<Vec<crate::managed::config_list::WorkerEntry>>>,
}

/// Tells a key given as null (`Some(None)`) from an absent one (`None`, by `default`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// A node's validated settings.
#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub cluster_listen: SocketAddr,
    /// Where the cluster port's certificates are; `None` for a plaintext cluster port.
    pub certs_dir: Option<PathBuf>,
    /// The operator said out loud that a plaintext cluster port off loopback is fine.
    pub insecure: bool,
    /// Where health checks and Prometheus scrapes are answered.
    pub http_listen: SocketAddr,
    pub advertise: String,
    pub join: Vec<String>,
    pub node_id: Option<NodeId>,
    pub registration_grace: Duration,
    pub max_pending_calls: usize,
    pub max_buffered_registrations: usize,
    /// A connection's built-in queries running at once (its reader waits beyond it).
    pub max_builtin_calls_per_connection: usize,
    /// Built-in queries running at once on this node.
    pub max_running_builtin_queries: usize,
    pub log_format: LogFormat,
    /// When this node fences itself and when the leader purges a silent node.
    pub lease: LeaseTimings,
    /// The longest a SIGTERM drain may take.
    pub drain_grace: Duration,
    /// The longest a call waits for a function moving off a draining node.
    pub call_hold: Duration,
    /// How long a silent voter's DNS name must fail to resolve before the leader removes it;
    /// `None` when departed members are never removed automatically.
    pub remove_departed_after: Option<Duration>,
    /// Worker threads of the node's async runtime.
    pub runtime_threads: usize,
    /// The certificate the worker port serves `wss://` with; `None` for plain `ws://`.
    pub worker_tls: Option<WorkerTlsFiles>,
    /// Whether the worker port asks for a token.
    pub worker_auth: WorkerAuth,
    /// The tokens of `--worker-tokens-file`, checked (empty without one).
    pub worker_tokens: Vec<WorkerToken>,
    /// How long an HTTP client may take to send its request headers.
    pub http_header_timeout: Duration,
    /// Connections the HTTP endpoint holds at once.
    pub http_max_connections: usize,
    /// How long a cluster-port connection may take to say it speaks HTTP/2 (after TLS).
    pub cluster_handshake_timeout: Duration,
    /// Connections the cluster port holds at once.
    pub cluster_max_connections: usize,
    /// The largest registration or announcement, in bytes of JSON, the registry accepts.
    pub max_registration_bytes: usize,
    /// When the Raft log is compacted into a snapshot.
    pub snapshots: SnapshotPolicy,
    /// Bytes of the Raft storage kept cached in memory.
    pub storage_cache_bytes: u64,
    /// Bytes all worker connections may make the node buffer, and where that number came from.
    pub client_memory_budget: BudgetChoice,
    /// Bytes queued for one worker before frames for it are refused.
    pub max_outbound_queue_bytes: u64,
    /// How long a worker's outbound queue may stay full before it is disconnected.
    pub outbound_stall_timeout: Duration,
    /// Bytes one data channel may hold.
    pub channel_buffer_bytes: u64,
    /// How long a channel's end may stay unconnected before the channel is removed.
    pub channel_unconnected_timeout: Duration,
    /// Channels living on this node at once.
    pub max_channels: usize,
    /// Channels one connection may have created and not yet finished.
    pub max_channels_per_connection: usize,
    /// How long a send to a channel reader may make no progress.
    pub channel_reader_stall: Duration,
    /// Channel ends served at once through one home node (a connection each to it).
    pub channel_connections_per_peer: usize,
    /// How long a cross-node channel stream may stay silent before its ends are closed.
    pub channel_peer_silence: Duration,
    /// Bytes of output kept per managed worker.
    pub managed_log_bytes: usize,
    /// How long a managed worker may run without registering before it counts as failed.
    pub managed_ready_timeout: Duration,
    /// How long a managed worker's install may run before it is killed and counts as failed.
    pub managed_install_timeout: Duration,
    /// How long a stopped managed worker has between SIGTERM and SIGKILL.
    pub managed_stop_grace: Duration,
    /// This node's labels (`--node-label`), committed at start for managed-worker placement.
    pub node_labels: BTreeMap<String, String>,
    /// The config file's `workers:` list, checked; reconciled once the node serves. `None`
    /// when the file has no `workers:` key (the node then leaves managed workers alone).
    pub managed_workers: Option<Vec<crate::managed::spec::WorkerSpec>>,
}

/// When the Raft log is compacted into a snapshot: whichever trigger fires first. The log on
/// disk is bounded by what the triggers let accumulate plus the entries kept behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Log entries since the last snapshot.
    pub after_entries: u64,
    /// Bytes of log entries appended since the last snapshot.
    pub after_log_bytes: u64,
    /// Entries kept in the log behind a snapshot for lagging followers.
    pub keep_entries: u64,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        SnapshotPolicy {
            after_entries: 5_000,
            after_log_bytes: 64 << 20,
            keep_entries: 1_000,
        }
    }
}

/// The PEM files behind `--tls-cert` and `--tls-key`, given together or not at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Why the settings cannot start a node.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {source}")]
    ParseFile {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("`{field}` must be a socket address like 0.0.0.0:49134, got `{value}`")]
    Address { field: &'static str, value: String },
    #[error("`{field}` must be greater than zero")]
    Zero { field: &'static str },
    #[error("purge_after_ms ({purge_ms}) must exceed fence_after_ms ({fence_ms}) by at least 1000, so a node has fenced itself before the majority forgets its workers")]
    Lease { fence_ms: u64, purge_ms: u64 },
    #[error("node_id_from_pod_name `{name}` does not end in an ordinal like `quorum-2`")]
    PodName { name: String },
    #[error("node_id {node_id} conflicts with node_id_from_pod_name `{pod_name}`, which gives node id {derived}; give only one")]
    NodeIdConflict {
        node_id: NodeId,
        pod_name: String,
        derived: NodeId,
    },
    #[error("the cluster port would listen on {addr} in plaintext, where anyone who reaches it can join or disrupt the cluster: give --certs-dir DIR (make it with `quorum cert create-ca` and `quorum cert create-node`), or say --insecure to accept that")]
    PlaintextClusterPort { addr: SocketAddr },
    #[error("--insecure and --certs-dir contradict each other; give one")]
    InsecureWithCerts,
    #[error("--tls-cert and --tls-key (QUORUM_TLS_CERT/QUORUM_TLS_KEY, tls_cert/tls_key) go together: {given} was given without {missing}")]
    TlsPair {
        given: &'static str,
        missing: &'static str,
    },
    #[error("{0}")]
    TokensFile(#[from] TokensFileError),
    #[error("a node label must be KEY=VALUE with a non-empty KEY, got `{0}`")]
    NodeLabel(String),
    #[error("config file: {0}")]
    Workers(#[from] crate::managed::config_list::WorkerListError),
    #[error("node id file {path}: {source}")]
    NodeIdFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Parses `--node-label K=V` flags into a map (a later flag for the same key wins).
fn parse_node_labels(flags: &[String]) -> Result<BTreeMap<String, String>, ConfigError> {
    flags
        .iter()
        .map(|flag| match flag.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                Ok((key.trim().to_string(), value.trim().to_string()))
            }
            _ => Err(ConfigError::NodeLabel(flag.chars().take(128).collect())),
        })
        .collect()
}

impl Config {
    /// Layers defaults, the config file and flags/env into one validated `Config`.
    pub fn load(args: &ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let listen_text = args
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let cluster_text = args
            .cluster_listen
            .clone()
            .or(file.cluster_listen)
            .unwrap_or_else(|| DEFAULT_CLUSTER_LISTEN.to_string());
        let http_text = args
            .http_listen
            .clone()
            .or(file.http_listen)
            .unwrap_or_else(|| DEFAULT_HTTP_LISTEN.to_string());
        let listen = parse_addr("listen", &listen_text)?;
        let cluster_listen = parse_addr("cluster_listen", &cluster_text)?;
        let http_listen = parse_addr("http_listen", &http_text)?;
        let advertise = args
            .advertise
            .clone()
            .or(file.advertise)
            .unwrap_or_else(|| default_advertise(cluster_listen));
        let join = if args.join.is_empty() {
            file.join.unwrap_or_default()
        } else {
            args.join.clone()
        };
        let node_id = node_id(
            args.node_id.or(file.node_id),
            args.node_id_from_pod_name
                .clone()
                .or(file.node_id_from_pod_name)
                .as_deref(),
        )?;
        let managed_workers = match file.workers {
            Some(entries) => {
                let base = args
                    .config
                    .as_deref()
                    .and_then(Path::parent)
                    .unwrap_or(Path::new("."));
                Some(crate::managed::config_list::specs(
                    entries.unwrap_or_default(),
                    base,
                )?)
            }
            None => None,
        };
        let worker_tokens = match args.worker_tokens_file.clone().or(file.worker_tokens_file) {
            Some(path) => read_tokens_file(&path)?,
            None => Vec::new(),
        };
        let config = Self {
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            listen,
            cluster_listen,
            certs_dir: args.certs_dir.clone().or(file.certs_dir),
            insecure: args.insecure || file.insecure.unwrap_or(false),
            http_listen,
            advertise,
            join,
            node_id,
            registration_grace: Duration::from_millis(
                args.registration_grace_ms
                    .or(file.registration_grace_ms)
                    .unwrap_or(5_000),
            ),
            max_pending_calls: args
                .max_pending_calls
                .or(file.max_pending_calls)
                .unwrap_or(10_000),
            max_buffered_registrations: args
                .max_buffered_registrations
                .or(file.max_buffered_registrations)
                .unwrap_or(10_000),
            max_builtin_calls_per_connection: args
                .max_builtin_calls_per_connection
                .or(file.max_builtin_calls_per_connection)
                .unwrap_or(4),
            max_running_builtin_queries: args
                .max_running_builtin_queries
                .or(file.max_running_builtin_queries)
                .unwrap_or(1),
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            lease: {
                let defaults = LeaseTimings::default();
                LeaseTimings {
                    fence_after: args
                        .fence_after_ms
                        .or(file.fence_after_ms)
                        .map(Duration::from_millis)
                        .unwrap_or(defaults.fence_after),
                    purge_after: args
                        .purge_after_ms
                        .or(file.purge_after_ms)
                        .map(Duration::from_millis)
                        .unwrap_or(defaults.purge_after),
                }
            },
            drain_grace: Duration::from_millis(
                args.drain_grace_ms
                    .or(file.drain_grace_ms)
                    .unwrap_or(20_000),
            ),
            call_hold: Duration::from_millis(
                args.call_hold_ms.or(file.call_hold_ms).unwrap_or(5_000),
            ),
            remove_departed_after: args
                .remove_departed_after_ms
                .or(file.remove_departed_after_ms)
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis),
            runtime_threads: args
                .runtime_threads
                .or(file.runtime_threads)
                .unwrap_or_else(default_runtime_threads),
            worker_tls: worker_tls(
                args.tls_cert.clone().or(file.tls_cert),
                args.tls_key.clone().or(file.tls_key),
            )?,
            worker_auth: args.worker_auth.or(file.worker_auth).unwrap_or_default(),
            worker_tokens,
            http_header_timeout: Duration::from_millis(
                args.http_header_timeout_ms
                    .or(file.http_header_timeout_ms)
                    .unwrap_or(5_000),
            ),
            http_max_connections: args
                .http_max_connections
                .or(file.http_max_connections)
                .unwrap_or(256),
            cluster_handshake_timeout: Duration::from_millis(
                args.cluster_handshake_timeout_ms
                    .or(file.cluster_handshake_timeout_ms)
                    .unwrap_or(5_000),
            ),
            cluster_max_connections: args
                .cluster_max_connections
                .or(file.cluster_max_connections)
                .unwrap_or(1_024),
            max_registration_bytes: args
                .max_registration_bytes
                .or(file.max_registration_bytes)
                .unwrap_or(1 << 20),
            snapshots: {
                let defaults = SnapshotPolicy::default();
                SnapshotPolicy {
                    after_entries: args
                        .snapshot_after_entries
                        .or(file.snapshot_after_entries)
                        .unwrap_or(defaults.after_entries),
                    after_log_bytes: args
                        .snapshot_after_log_bytes
                        .or(file.snapshot_after_log_bytes)
                        .unwrap_or(defaults.after_log_bytes),
                    keep_entries: args
                        .snapshot_keep_entries
                        .or(file.snapshot_keep_entries)
                        .unwrap_or(defaults.keep_entries),
                }
            },
            storage_cache_bytes: args
                .storage_cache_bytes
                .or(file.storage_cache_bytes.map(|b| b.0))
                .unwrap_or(64 << 20),
            client_memory_budget: choose_budget(
                args.client_memory_budget
                    .or(file.client_memory_budget.map(|b| b.0)),
            ),
            max_outbound_queue_bytes: args
                .max_outbound_queue_bytes
                .or(file.max_outbound_queue_bytes.map(|b| b.0))
                .unwrap_or(32 << 20),
            outbound_stall_timeout: Duration::from_millis(
                args.outbound_stall_timeout_ms
                    .or(file.outbound_stall_timeout_ms)
                    .unwrap_or(10_000),
            ),
            channel_buffer_bytes: args
                .channel_buffer_bytes
                .or(file.channel_buffer_bytes.map(|b| b.0))
                .unwrap_or(8 << 20),
            channel_unconnected_timeout: Duration::from_secs(
                args.channel_unconnected_timeout_secs
                    .or(file.channel_unconnected_timeout_secs)
                    .unwrap_or(300),
            ),
            max_channels: args.max_channels.or(file.max_channels).unwrap_or(100_000),
            max_channels_per_connection: args
                .max_channels_per_connection
                .or(file.max_channels_per_connection)
                .unwrap_or(10_000),
            channel_reader_stall: Duration::from_secs(
                args.channel_reader_stall_secs
                    .or(file.channel_reader_stall_secs)
                    .unwrap_or(60),
            ),
            channel_connections_per_peer: args
                .channel_connections_per_peer
                .or(file.channel_connections_per_peer)
                .unwrap_or(256),
            channel_peer_silence: args
                .channel_peer_silence_ms
                .or(file.channel_peer_silence_ms)
                .map(Duration::from_millis)
                .unwrap_or(crate::channels::beat::SILENT_AFTER),
            managed_log_bytes: args
                .managed_log_bytes
                .or(file.managed_log_bytes.map(|b| b.0))
                .unwrap_or(1 << 20)
                .try_into()
                .unwrap_or(usize::MAX),
            managed_ready_timeout: Duration::from_secs(
                args.managed_ready_timeout_secs
                    .or(file.managed_ready_timeout_secs)
                    .unwrap_or(60),
            ),
            managed_install_timeout: Duration::from_secs(
                args.managed_install_timeout_secs
                    .or(file.managed_install_timeout_secs)
                    .unwrap_or(600),
            ),
            managed_stop_grace: Duration::from_secs(
                args.managed_stop_grace_secs
                    .or(file.managed_stop_grace_secs)
                    .unwrap_or(10),
            ),
            node_labels: if args.node_labels.is_empty() {
                file.node_labels.unwrap_or_default()
            } else {
                parse_node_labels(&args.node_labels)?
            },
            managed_workers,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.insecure && self.certs_dir.is_some() {
            return Err(ConfigError::InsecureWithCerts);
        }
        if self.certs_dir.is_none() && !self.insecure && !self.cluster_listen.ip().is_loopback() {
            return Err(ConfigError::PlaintextClusterPort {
                addr: self.cluster_listen,
            });
        }
        if self.node_id == Some(0) {
            return Err(ConfigError::Zero { field: "node_id" });
        }
        if self.max_pending_calls == 0 {
            return Err(ConfigError::Zero {
                field: "max_pending_calls",
            });
        }
        if self.lease.purge_after < self.lease.fence_after + Duration::from_secs(1) {
            return Err(ConfigError::Lease {
                fence_ms: self.lease.fence_after.as_millis() as u64,
                purge_ms: self.lease.purge_after.as_millis() as u64,
            });
        }
        if self.runtime_threads == 0 {
            return Err(ConfigError::Zero {
                field: "runtime_threads",
            });
        }
        if self.max_buffered_registrations == 0 {
            return Err(ConfigError::Zero {
                field: "max_buffered_registrations",
            });
        }
        if self.max_builtin_calls_per_connection == 0 || self.max_running_builtin_queries == 0 {
            return Err(ConfigError::Zero {
                field: "max_builtin_calls_per_connection / max_running_builtin_queries",
            });
        }
        let doors = [
            ("http_header_timeout_ms", self.http_header_timeout.is_zero()),
            ("http_max_connections", self.http_max_connections == 0),
            (
                "cluster_handshake_timeout_ms",
                self.cluster_handshake_timeout.is_zero(),
            ),
            ("cluster_max_connections", self.cluster_max_connections == 0),
            ("max_registration_bytes", self.max_registration_bytes == 0),
            ("snapshot_after_entries", self.snapshots.after_entries == 0),
            (
                "snapshot_after_log_bytes",
                self.snapshots.after_log_bytes == 0,
            ),
            ("storage_cache_bytes", self.storage_cache_bytes == 0),
            ("client_memory_budget", self.client_memory_budget.bytes == 0),
            (
                "max_outbound_queue_bytes",
                self.max_outbound_queue_bytes == 0,
            ),
            (
                "outbound_stall_timeout_ms",
                self.outbound_stall_timeout.is_zero(),
            ),
            ("channel_buffer_bytes", self.channel_buffer_bytes == 0),
            (
                "channel_unconnected_timeout_secs",
                self.channel_unconnected_timeout.is_zero(),
            ),
            ("max_channels", self.max_channels == 0),
            (
                "max_channels_per_connection",
                self.max_channels_per_connection == 0,
            ),
            (
                "channel_reader_stall_secs",
                self.channel_reader_stall.is_zero(),
            ),
            (
                "channel_connections_per_peer",
                self.channel_connections_per_peer == 0,
            ),
            (
                "channel_peer_silence_ms",
                self.channel_peer_silence.is_zero(),
            ),
            ("managed_log_bytes", self.managed_log_bytes == 0),
            (
                "managed_ready_timeout_secs",
                self.managed_ready_timeout.is_zero(),
            ),
            (
                "managed_install_timeout_secs",
                self.managed_install_timeout.is_zero(),
            ),
        ];
        if let Some((field, _)) = doors.into_iter().find(|(_, zero)| *zero) {
            return Err(ConfigError::Zero { field });
        }
        Ok(())
    }

    /// The limits of this node's data channels.
    pub fn channel_limits(&self) -> crate::channels::table::Limits {
        crate::channels::table::Limits {
            buffer_bytes: self.channel_buffer_bytes,
            unconnected_timeout: self.channel_unconnected_timeout,
            max_channels: self.max_channels,
            max_per_connection: self.max_channels_per_connection,
            reader_stall: self.channel_reader_stall,
        }
    }

    /// The node id: the configured one, else the one kept in the data directory, else a
    /// fresh one written there so it survives restarts.
    pub fn resolve_node_id(&self) -> Result<NodeId, ConfigError> {
        let path = self.data_dir.join("node_id");
        let io_err = |source| ConfigError::NodeIdFile {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.data_dir).map_err(io_err)?;
        if let Some(id) = self.node_id {
            std::fs::write(&path, id.to_string()).map_err(io_err)?;
            return Ok(id);
        }
        if let Ok(text) = std::fs::read_to_string(&path) {
            if let Ok(id) = text.trim().parse::<NodeId>() {
                if id != 0 {
                    return Ok(id);
                }
            }
        }
        let id = fresh_node_id();
        std::fs::write(&path, id.to_string()).map_err(io_err)?;
        Ok(id)
    }
}

/// The configured node id, or the one a pod name gives; both must agree when both are given.
fn node_id(
    explicit: Option<NodeId>,
    pod_name: Option<&str>,
) -> Result<Option<NodeId>, ConfigError> {
    let Some(name) = pod_name else {
        return Ok(explicit);
    };
    let derived = node_id_from_pod_name(name)?;
    match explicit {
        Some(node_id) if node_id != derived => Err(ConfigError::NodeIdConflict {
            node_id,
            pod_name: name.to_string(),
            derived,
        }),
        _ => Ok(Some(derived)),
    }
}

/// The worker port's certificate and key: both, or neither (plain `ws://`).
fn worker_tls(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<Option<WorkerTlsFiles>, ConfigError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(WorkerTlsFiles { cert, key })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::TlsPair {
            given: "--tls-cert",
            missing: "--tls-key",
        }),
        (None, Some(_)) => Err(ConfigError::TlsPair {
            given: "--tls-key",
            missing: "--tls-cert",
        }),
    }
}

/// The node id of a StatefulSet pod: its trailing ordinal plus one, since ids must be
/// non-zero and ordinals start at 0 (`quorum-0` → 1, `db-12` → 13).
pub fn node_id_from_pod_name(name: &str) -> Result<NodeId, ConfigError> {
    let bad = || ConfigError::PodName {
        name: name.to_string(),
    };
    let name = name.trim();
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let ordinal = &name[name.len() - digits..];
    if ordinal.is_empty() {
        return Err(bad());
    }
    ordinal
        .parse::<NodeId>()
        .ok()
        .and_then(|n| n.checked_add(1))
        .ok_or_else(bad)
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    serde_yaml::from_str(&text).map_err(|source| ConfigError::ParseFile {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_addr(field: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| ConfigError::Address {
        field,
        value: value.to_string(),
    })
}

/// Half the CPUs this process may use (cgroup limits included), at least one. The
/// engine mostly relays small frames between sockets; on a machine it shares with its
/// workers, a second runtime thread mostly adds wake-ups between threads to every call.
fn default_runtime_threads() -> usize {
    std::thread::available_parallelism()
        .map(|cpus| cpus.get() / 2)
        .unwrap_or(1)
        .max(1)
}

fn default_advertise(cluster_listen: SocketAddr) -> String {
    if cluster_listen.ip().is_unspecified() {
        format!("127.0.0.1:{}", cluster_listen.port())
    } else {
        cluster_listen.to_string()
    }
}

/// A random non-zero id, kept below 2^53 so JSON readers of any language keep it exact.
fn fresh_node_id() -> NodeId {
    let bits = uuid::Uuid::new_v4().as_u128() as u64;
    (bits & ((1 << 53) - 1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fit_one_node() {
        let config = Config::load(&ServeArgs::default()).unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.http_listen.to_string(), DEFAULT_HTTP_LISTEN);
        assert_eq!(config.advertise, "127.0.0.1:50051");
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.registration_grace, Duration::from_secs(5));
        assert_eq!(config.cluster_listen.to_string(), DEFAULT_CLUSTER_LISTEN);
        assert_eq!(config.certs_dir, None);
    }

    #[test]
    fn a_plaintext_cluster_port_off_loopback_must_be_said_out_loud() {
        let exposed = ServeArgs {
            cluster_listen: Some("0.0.0.0:50051".into()),
            ..Default::default()
        };
        let err = Config::load(&exposed).unwrap_err().to_string();
        assert!(
            err.contains("--certs-dir") && err.contains("--insecure"),
            "{err}"
        );
        let insecure = ServeArgs {
            insecure: true,
            ..exposed.clone()
        };
        assert!(Config::load(&insecure).unwrap().insecure);
        let secure = ServeArgs {
            certs_dir: Some("certs".into()),
            ..exposed.clone()
        };
        assert_eq!(
            Config::load(&secure).unwrap().certs_dir,
            Some(PathBuf::from("certs"))
        );
        let both = ServeArgs {
            insecure: true,
            ..secure
        };
        assert!(matches!(
            Config::load(&both),
            Err(ConfigError::InsecureWithCerts)
        ));
    }

    #[test]
    fn flags_override_the_file_and_the_file_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quorum.yaml");
        std::fs::write(
            &path,
            "listen: 127.0.0.1:1000\ndata_dir: /x\njoin: [a:1, b:2]\nhttp_listen: 127.0.0.1:3000\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            listen: Some("127.0.0.1:2000".into()),
            ..Default::default()
        };
        let config = Config::load(&args).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:2000");
        assert_eq!(config.data_dir, PathBuf::from("/x"));
        assert_eq!(config.join, vec!["a:1", "b:2"]);
        assert_eq!(config.http_listen.to_string(), "127.0.0.1:3000");
        let args = ServeArgs {
            http_listen: Some("127.0.0.1:0".into()),
            ..args
        };
        assert_eq!(
            Config::load(&args).unwrap().http_listen.to_string(),
            "127.0.0.1:0"
        );
    }

    #[test]
    fn unknown_file_keys_and_bad_addresses_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quorum.yaml");
        std::fs::write(&path, "lisen: 1\n").unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..Default::default()
        };
        assert!(matches!(
            Config::load(&args),
            Err(ConfigError::ParseFile { .. })
        ));
        let args = ServeArgs {
            listen: Some("nowhere".into()),
            ..Default::default()
        };
        assert!(Config::load(&args)
            .unwrap_err()
            .to_string()
            .contains("listen"));
        let args = ServeArgs {
            http_listen: Some("nowhere".into()),
            ..Default::default()
        };
        assert!(matches!(
            Config::load(&args),
            Err(ConfigError::Address {
                field: "http_listen",
                ..
            })
        ));
    }

    #[test]
    fn lease_timings_are_settable_and_checked() {
        let args = ServeArgs {
            fence_after_ms: Some(1_000),
            purge_after_ms: Some(3_000),
            ..Default::default()
        };
        let config = Config::load(&args).unwrap();
        assert_eq!(config.lease.fence_after, Duration::from_secs(1));
        let args = ServeArgs {
            fence_after_ms: Some(3_000),
            purge_after_ms: Some(3_500),
            ..Default::default()
        };
        assert!(matches!(
            Config::load(&args),
            Err(ConfigError::Lease { .. })
        ));
    }

    #[test]
    fn a_pod_name_gives_its_ordinal_plus_one() {
        assert_eq!(node_id_from_pod_name("quorum-0").unwrap(), 1);
        assert_eq!(node_id_from_pod_name("quorum-2").unwrap(), 3);
        assert_eq!(node_id_from_pod_name("my-db-12").unwrap(), 13);
        for bad in ["quorum", "quorum-", "", "quorum-99999999999999999999"] {
            assert!(
                matches!(node_id_from_pod_name(bad), Err(ConfigError::PodName { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            node_id_from_pod_name("quorum-18446744073709551615"),
            Err(ConfigError::PodName { .. })
        ));
    }

    #[test]
    fn a_pod_name_sets_the_node_id_and_must_agree_with_an_explicit_one() {
        let args = ServeArgs {
            node_id_from_pod_name: Some("quorum-2".into()),
            ..Default::default()
        };
        assert_eq!(Config::load(&args).unwrap().node_id, Some(3));
        let args = ServeArgs {
            node_id: Some(3),
            node_id_from_pod_name: Some("quorum-2".into()),
            ..Default::default()
        };
        assert_eq!(Config::load(&args).unwrap().node_id, Some(3));
        let args = ServeArgs {
            node_id: Some(1),
            node_id_from_pod_name: Some("quorum-2".into()),
            ..Default::default()
        };
        let err = Config::load(&args).unwrap_err();
        assert!(
            matches!(err, ConfigError::NodeIdConflict { derived: 3, .. }),
            "{err}"
        );
    }

    #[test]
    fn departed_removal_is_off_by_default_and_zero_means_off() {
        assert_eq!(
            Config::load(&ServeArgs::default())
                .unwrap()
                .remove_departed_after,
            None
        );
        let args = ServeArgs {
            remove_departed_after_ms: Some(0),
            ..Default::default()
        };
        assert_eq!(Config::load(&args).unwrap().remove_departed_after, None);
        let args = ServeArgs {
            remove_departed_after_ms: Some(60_000),
            ..Default::default()
        };
        assert_eq!(
            Config::load(&args).unwrap().remove_departed_after,
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn runtime_threads_default_to_half_the_cpus_and_zero_is_refused() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let config = Config::load(&ServeArgs::default()).unwrap();
        assert_eq!(config.runtime_threads, (cpus / 2).max(1));
        let args = ServeArgs {
            runtime_threads: Some(3),
            ..Default::default()
        };
        assert_eq!(Config::load(&args).unwrap().runtime_threads, 3);
        let args = ServeArgs {
            runtime_threads: Some(0),
            ..Default::default()
        };
        assert!(matches!(
            Config::load(&args).unwrap_err(),
            ConfigError::Zero {
                field: "runtime_threads"
            }
        ));
    }

    #[test]
    fn door_limits_have_defaults_and_zero_is_refused() {
        let config = Config::load(&ServeArgs::default()).unwrap();
        assert_eq!(config.http_header_timeout, Duration::from_secs(5));
        assert_eq!(config.http_max_connections, 256);
        assert_eq!(config.cluster_handshake_timeout, Duration::from_secs(5));
        assert_eq!(config.cluster_max_connections, 1_024);
        let args = ServeArgs {
            http_max_connections: Some(7),
            cluster_handshake_timeout_ms: Some(900),
            ..Default::default()
        };
        let config = Config::load(&args).unwrap();
        assert_eq!(config.http_max_connections, 7);
        assert_eq!(config.cluster_handshake_timeout, Duration::from_millis(900));
        let args = ServeArgs {
            cluster_max_connections: Some(0),
            ..Default::default()
        };
        assert!(matches!(
            Config::load(&args).unwrap_err(),
            ConfigError::Zero {
                field: "cluster_max_connections"
            }
        ));
        let args = ServeArgs {
            http_header_timeout_ms: Some(0),
            ..Default::default()
        };
        assert!(matches!(
            Config::load(&args).unwrap_err(),
            ConfigError::Zero {
                field: "http_header_timeout_ms"
            }
        ));
    }

    #[test]
    fn the_channel_peer_silence_keeps_its_one_second_promise_by_default_and_is_settable() {
        let config = Config::load(&ServeArgs::default()).unwrap();
        assert_eq!(config.channel_peer_silence, Duration::from_millis(750));
        let args = ServeArgs {
            channel_peer_silence_ms: Some(3_000),
            ..Default::default()
        };
        assert_eq!(
            Config::load(&args).unwrap().channel_peer_silence,
            Duration::from_secs(3)
        );
        let args = ServeArgs {
            channel_peer_silence_ms: Some(0),
            ..Default::default()
        };
        assert!(matches!(
            Config::load(&args).unwrap_err(),
            ConfigError::Zero {
                field: "channel_peer_silence_ms"
            }
        ));
    }

    #[test]
    fn disk_limits_have_defaults_come_from_the_file_and_zero_is_refused() {
        let config = Config::load(&ServeArgs::default()).unwrap();
        assert_eq!(config.max_registration_bytes, 1 << 20);
        assert_eq!(config.snapshots, SnapshotPolicy::default());
        assert_eq!(config.snapshots.after_entries, 5_000);
        assert_eq!(config.snapshots.after_log_bytes, 64 << 20);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quorum.yaml");
        std::fs::write(
            &path,
            "max_registration_bytes: 4096\nsnapshot_after_entries: 50\nsnapshot_after_log_bytes: 1000\nsnapshot_keep_entries: 0\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            snapshot_after_entries: Some(70),
            ..Default::default()
        };
        let config = Config::load(&args).unwrap();
        assert_eq!(config.max_registration_bytes, 4096);
        assert_eq!(
            config.snapshots,
            SnapshotPolicy {
                after_entries: 70,
                after_log_bytes: 1000,
                keep_entries: 0
            }
        );
        for (args, field) in [
            (
                ServeArgs {
                    max_registration_bytes: Some(0),
                    ..Default::default()
                },
                "max_registration_bytes",
            ),
            (
                ServeArgs {
                    snapshot_after_log_bytes: Some(0),
                    ..Default::default()
                },
                "snapshot_after_log_bytes",
            ),
        ] {
            let err = Config::load(&args).unwrap_err();
            assert!(
                matches!(err, ConfigError::Zero { field: f } if f == field),
                "{err}"
            );
        }
    }

    #[test]
    fn the_worker_tls_files_come_together_or_not_at_all() {
        assert_eq!(
            Config::load(&ServeArgs::default()).unwrap().worker_tls,
            None
        );
        let both = ServeArgs {
            tls_cert: Some("w.crt".into()),
            tls_key: Some("w.key".into()),
            ..Default::default()
        };
        assert_eq!(
            Config::load(&both).unwrap().worker_tls,
            Some(WorkerTlsFiles {
                cert: "w.crt".into(),
                key: "w.key".into()
            })
        );
        let cert_only = ServeArgs {
            tls_key: None,
            ..both.clone()
        };
        let err = Config::load(&cert_only).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::TlsPair {
                    given: "--tls-cert",
                    missing: "--tls-key"
                }
            ),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quorum.yaml");
        std::fs::write(&path, "tls_key: w.key\n").unwrap();
        let key_in_file = ServeArgs {
            config: Some(path),
            ..Default::default()
        };
        let err = Config::load(&key_in_file).unwrap_err();
        assert!(
            err.to_string()
                .contains("--tls-key was given without --tls-cert"),
            "{err}"
        );
    }

    #[test]
    fn worker_auth_is_off_by_default_and_a_tokens_file_is_read_and_checked() {
        let config = Config::load(&ServeArgs::default()).unwrap();
        assert_eq!(config.worker_auth, WorkerAuth::Off);
        assert!(config.worker_tokens.is_empty());
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens.yaml");
        let hash = "a".repeat(64);
        std::fs::write(
            &tokens,
            format!("tokens:\n  - name: bootstrap\n    sha256: {hash}\n"),
        )
        .unwrap();
        let conf = dir.path().join("quorum.yaml");
        std::fs::write(
            &conf,
            format!(
                "worker_auth: token\nworker_tokens_file: {}\n",
                tokens.display()
            ),
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(conf),
            ..Default::default()
        };
        let config = Config::load(&args).unwrap();
        assert_eq!(config.worker_auth, WorkerAuth::Token);
        assert_eq!(config.worker_tokens[0].name, "bootstrap");
        std::fs::write(&tokens, "tokens:\n  - name: broken\n    sha256: nothex\n").unwrap();
        let err = Config::load(&ServeArgs {
            worker_tokens_file: Some(tokens.clone()),
            ..Default::default()
        })
        .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("tokens.yaml") && message.contains("`broken`"),
            "{message}"
        );
    }

    #[test]
    fn a_generated_node_id_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let args = ServeArgs {
            data_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let config = Config::load(&args).unwrap();
        let first = config.resolve_node_id().unwrap();
        assert_eq!(first, config.resolve_node_id().unwrap());
        assert_ne!(first, 0);
    }

    #[test]
    fn memory_settings_take_units_from_flags_and_yaml() {
        let config = Config::load(&ServeArgs::default()).unwrap();
        assert!(config.client_memory_budget.bytes > 0);
        assert_eq!(config.max_outbound_queue_bytes, 32 << 20);
        assert_eq!(config.outbound_stall_timeout, Duration::from_secs(10));
        assert_eq!(config.storage_cache_bytes, 64 << 20);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quorum.yaml");
        std::fs::write(
            &path,
            "client_memory_budget: 256MiB\nmax_outbound_queue_bytes: 1048576\noutbound_stall_timeout_ms: 500\nstorage_cache_bytes: 16MiB\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..Default::default()
        };
        let config = Config::load(&args).unwrap();
        assert_eq!(config.client_memory_budget.bytes, 256 << 20);
        assert_eq!(config.client_memory_budget.source, "configured");
        assert_eq!(config.max_outbound_queue_bytes, 1 << 20);
        assert_eq!(config.outbound_stall_timeout, Duration::from_millis(500));
        assert_eq!(config.storage_cache_bytes, 16 << 20);
        for zero in [
            ServeArgs {
                outbound_stall_timeout_ms: Some(0),
                ..Default::default()
            },
            ServeArgs {
                storage_cache_bytes: Some(0),
                ..Default::default()
            },
        ] {
            assert!(Config::load(&zero).is_err());
        }
    }

    #[test]
    fn node_labels_come_from_flags_or_yaml_and_a_bad_one_is_refused() {
        let args = ServeArgs {
            node_labels: vec!["zone=a".into(), "gpu=yes".into()],
            ..Default::default()
        };
        let labels = Config::load(&args).unwrap().node_labels;
        assert_eq!(labels.get("zone").map(String::as_str), Some("a"));
        assert_eq!(labels.len(), 2);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quorum.yaml");
        std::fs::write(&path, "node_labels:\n  zone: b\n").unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..Default::default()
        };
        let labels = Config::load(&args).unwrap().node_labels;
        assert_eq!(labels.get("zone").map(String::as_str), Some("b"));
        let bad = ServeArgs {
            node_labels: vec!["=a".into()],
            ..Default::default()
        };
        let err = Config::load(&bad).unwrap_err().to_string();
        assert!(err.contains("KEY=VALUE"), "{err}");
    }

    #[test]
    fn a_workers_key_even_empty_is_told_from_no_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quorum.yaml");
        let load = |text: &str| {
            std::fs::write(&path, text).unwrap();
            let args = ServeArgs {
                config: Some(path.clone()),
                ..Default::default()
            };
            Config::load(&args).unwrap().managed_workers
        };
        assert_eq!(load("node_labels: {}\n"), None);
        assert_eq!(load("workers:\n"), Some(Vec::new()));
        assert_eq!(load("workers: []\n"), Some(Vec::new()));
        let one = load("workers:\n  - name: a\n    command: sleep 1\n").unwrap();
        assert_eq!(one.len(), 1);
    }

    #[test]
    fn managed_worker_settings_have_defaults_units_and_reach_the_supervisor() {
        let config = Config::load(&ServeArgs::default()).unwrap();
        assert_eq!(config.managed_log_bytes, 1 << 20);
        assert_eq!(config.managed_ready_timeout, Duration::from_secs(60));
        assert_eq!(config.managed_install_timeout, Duration::from_secs(600));
        assert_eq!(config.managed_stop_grace, Duration::from_secs(10));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quorum.yaml");
        std::fs::write(
            &path,
            "managed_log_bytes: 64KiB\nmanaged_ready_timeout_secs: 5\nmanaged_stop_grace_secs: 0\nmanaged_install_timeout_secs: 90\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            listen: Some("0.0.0.0:4100".into()),
            data_dir: Some("/var/lib/quorum".into()),
            ..Default::default()
        };
        let url = "ws://127.0.0.1:4100".to_string();
        let settings = crate::managed::SupervisorSettings::from_config(
            &Config::load(&args).unwrap(),
            url,
            None,
        );
        assert_eq!(settings.log_bytes_per_worker, 64 << 10);
        assert_eq!(settings.ready_timeout, Duration::from_secs(5));
        assert_eq!(settings.stop_grace, Duration::ZERO);
        assert_eq!(settings.install_timeout, Duration::from_secs(90));
        assert_eq!(settings.data_dir, PathBuf::from("/var/lib/quorum/managed"));
        let zero = ServeArgs {
            managed_ready_timeout_secs: Some(0),
            ..Default::default()
        };
        assert!(matches!(
            Config::load(&zero).unwrap_err(),
            ConfigError::Zero {
                field: "managed_ready_timeout_secs"
            }
        ));
        let zero = ServeArgs {
            managed_install_timeout_secs: Some(0),
            ..Default::default()
        };
        assert!(matches!(
            Config::load(&zero).unwrap_err(),
            ConfigError::Zero {
                field: "managed_install_timeout_secs"
            }
        ));
    }
}
