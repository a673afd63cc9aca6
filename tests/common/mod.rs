//! Test harness: real quorum processes on 127.0.0.1 ports chosen by the OS, a temp
//! data directory each, real SDK workers, and helpers that wait on events with
//! deadlines. Every process a test starts is killed by PID when its handle drops,
//! even when the test fails.

#![allow(dead_code)]

pub mod balancer;
pub mod canary;
pub mod certs;
pub mod channel_ends;
pub mod cluster_rpc;
pub mod footprint;
pub mod haproxy;
pub mod http;
pub mod netns;
pub mod processes;
pub mod raw;
pub mod relay;
pub mod rng;
pub mod script;
pub mod sdk_env;
pub mod sdks;
pub mod stalled;
pub mod worker_pki;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use iii_sdk::runtime::WorkerMetadata;
use iii_sdk::{register_worker, IIIClient, InitOptions};
use serde_json::Value;

/// How long a node may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One running quorum node process.
pub struct Node {
    child: Option<Child>,
    /// The worker WebSocket URL (`ws://127.0.0.1:PORT`).
    pub url: String,
    /// The `host:port` the worker listener is bound to.
    pub listen: String,
    /// The `host:port` the cluster (gRPC) service is bound to.
    pub cluster: String,
    /// The `host:port` of the health and metrics endpoint (`/healthz`, `/readyz`, `/metrics`).
    pub http: String,
    /// The node's Raft id.
    pub node_id: u64,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

/// Extra arguments and environment for a node.
#[derive(Default, Clone)]
pub struct NodeOptions {
    pub listen: Option<String>,
    /// The cluster (gRPC) address to bind; `127.0.0.1:0` when not given.
    pub cluster_listen: Option<String>,
    /// The health and metrics address to bind; `127.0.0.1:0` when not given, so parallel
    /// tests never meet on the default port.
    pub http_listen: Option<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// A command that runs the binary, e.g. `ip netns exec NS`; it must exec the binary so
    /// the child's PID stays the quorum process's. Empty: the binary is spawned directly.
    pub wrapper: Vec<String>,
}

impl NodeOptions {
    /// Only extra `args` (flags and their values), everything else as by default.
    pub fn with_args(args: &[&str]) -> NodeOptions {
        NodeOptions {
            args: args.iter().map(|a| a.to_string()).collect(),
            ..NodeOptions::default()
        }
    }

    /// A fixed worker address (kept across restarts) and extra `args`.
    pub fn on_port(listen: &str, args: &[&str]) -> NodeOptions {
        NodeOptions {
            listen: Some(listen.to_string()),
            ..NodeOptions::with_args(args)
        }
    }
}

/// The command that runs the quorum binary, behind `wrapper` when one is given.
fn quorum_command(wrapper: &[String]) -> Command {
    match wrapper.split_first() {
        Some((program, rest)) => {
            let mut command = Command::new(program);
            command.args(rest).arg(env!("CARGO_BIN_EXE_quorum"));
            command
        }
        None => Command::new(env!("CARGO_BIN_EXE_quorum")),
    }
}

impl Node {
    /// Starts a node with its own temp data directory and an OS-chosen port.
    pub fn start() -> Node {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut node = Node::start_in(&dir, NodeOptions::default());
        node._tmp = Some(tmp);
        node
    }

    /// Starts a node on a given data directory and waits for its ready line.
    pub fn start_in(dir: &Path, options: NodeOptions) -> Node {
        Node::spawn_in(dir, options).ready()
    }

    /// Starts a node on a given data directory without waiting for it to be ready, for tests
    /// that start several nodes which only become ready together.
    pub fn spawn_in(dir: &Path, options: NodeOptions) -> Starting {
        let listen = options
            .listen
            .clone()
            .unwrap_or_else(|| "127.0.0.1:0".into());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.with_extension("log"))
            .expect("node log file");
        let mut command = quorum_command(&options.wrapper);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(dir)
            .arg("--listen")
            .arg(&listen)
            .arg("--cluster-listen")
            .arg(
                options
                    .cluster_listen
                    .clone()
                    .unwrap_or_else(|| "127.0.0.1:0".into()),
            )
            .arg("--http-listen")
            .arg(
                options
                    .http_listen
                    .clone()
                    .unwrap_or_else(|| "127.0.0.1:0".into()),
            )
            .args(&options.args)
            .env("QUORUM_LOG", "info,quorum=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        for (k, v) in &options.env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start quorum");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        Starting {
            child: Some(child),
            ready_line: rx,
            data_dir: dir.to_path_buf(),
        }
    }

    /// Whether the process is still running (false once killed or exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        self.sigterm();
        self.wait_exit()
    }

    /// Starts the node's drain (SIGTERM) and returns at once.
    pub fn sigterm(&self) {
        if let Some(child) = &self.child {
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
        }
    }

    /// Waits up to 15 s for the node to exit (SIGKILL then); returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The node's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A node process that has been started but has not printed its ready line yet. Killed by
/// PID when dropped before [`Starting::ready`].
pub struct Starting {
    child: Option<Child>,
    ready_line: std::sync::mpsc::Receiver<String>,
    data_dir: PathBuf,
}

impl Starting {
    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The node's log so far (its log file is shared with its earlier runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.with_extension("log")).unwrap_or_default()
    }

    /// SIGKILLs the node before it was ready, and reaps it.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits (up to 30 s) for the ready line; panics with the node's log otherwise.
    pub fn ready(mut self) -> Node {
        let mut child = self.child.take().expect("not waited for yet");
        let dir = self.data_dir.clone();
        let line = match self.ready_line.recv_timeout(START_TIMEOUT) {
            Ok(line) if !line.trim().is_empty() => line,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "quorum did not become ready ({other:?}); log:\n{}",
                    std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default()
                );
            }
        };
        let ready: Value = serde_json::from_str(line.trim()).expect("ready line is JSON");
        let listen = ready["listen"].as_str().expect("listen").to_string();
        let cluster = ready["cluster_listen"]
            .as_str()
            .expect("cluster_listen")
            .to_string();
        let http = ready["http_listen"]
            .as_str()
            .expect("http_listen")
            .to_string();
        Node {
            child: Some(child),
            url: format!("ws://{listen}"),
            listen,
            cluster,
            http,
            node_id: ready["node_id"].as_u64().expect("node_id"),
            data_dir: dir,
            _tmp: None,
        }
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A free TCP port on `127.0.0.1`, chosen by the OS (for addresses that must be known before
/// a node starts, such as a `--join` list).
pub fn free_port() -> u16 {
    free_port_on([127, 0, 0, 1].into())
}

/// A port free on `ip` right now, for a process started later. Taken at random below the
/// kernel's ephemeral range (32768 and up), where the ports that other tests' nodes get from
/// binding port 0 come from, so one of them cannot take it in between.
pub fn free_port_on(ip: std::net::IpAddr) -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    let mut state = nanos ^ (u64::from(std::process::id()) << 20);
    loop {
        state = state
            .wrapping_add(DRAWS.fetch_add(1, Ordering::Relaxed))
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let port = 20_000 + ((state >> 33) % 12_000) as u16;
        if std::net::TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
}

/// A loopback address with a port that was free a moment ago, for a node that must come
/// back on the same worker port after a restart (a load balancer points at it).
pub fn free_address() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// The ids `engine::trigger-types::list` shows (none when the call fails).
pub async fn trigger_type_ids(client: &IIIClient) -> Vec<String> {
    let Ok(list) = call(client, "engine::trigger-types::list", serde_json::json!({})).await else {
        return Vec::new();
    };
    list["trigger_types"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|t| t["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `client` sees trigger type `id` in `engine::trigger-types::list`.
pub async fn wait_trigger_type(client: &IIIClient, id: &str) {
    wait_trigger_type_listed(client, id, true).await
}

/// Waits until `engine::trigger-types::list` no longer shows `id`.
pub async fn wait_trigger_type_gone(client: &IIIClient, id: &str) {
    wait_trigger_type_listed(client, id, false).await
}

async fn wait_trigger_type_listed(client: &IIIClient, id: &str, listed: bool) {
    eventually(
        &format!("trigger type {id} listed={listed}"),
        Duration::from_secs(10),
        || async {
            (trigger_type_ids(client).await.iter().any(|t| t == id) == listed).then_some(())
        },
    )
    .await
}

/// A unique worker name, so two clients in one test process never share a lease.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A real Rust SDK worker with a unique name (and namespace if given), already
/// acknowledged by the engine.
pub async fn worker(url: &str, name: &str, namespace: Option<&str>) -> IIIClient {
    let metadata = WorkerMetadata {
        name: name.to_string(),
        namespace: namespace.map(str::to_string),
        ..WorkerMetadata::default()
    };
    let client = register_worker(
        url,
        InitOptions {
            metadata: Some(metadata),
            namespace: namespace.map(str::to_string),
            ..InitOptions::default()
        },
    );
    client
        .wait_until_registered(Duration::from_secs(10))
        .await
        .expect("worker registered");
    client
}

/// Calls a function through the engine (never in-process), returning the SDK result.
pub async fn call(
    client: &IIIClient,
    function_id: &str,
    payload: Value,
) -> Result<Value, iii_sdk::Error> {
    use iii_sdk::protocol::{Dispatch, TriggerRequest};
    client
        .trigger(TriggerRequest::new(function_id, payload).dispatch(Dispatch::Remote))
        .await
}

/// Polls `check` until it returns `Some`, or panics after `deadline`. Used where the
/// observable event is the engine's state (discovery lists), which has no push.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > until {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls `check` from a test without a runtime until it returns `Some`, or panics with
/// `logs()` after [`CLUSTER_TIMEOUT`].
pub fn wait_for<T>(
    what: &str,
    logs: impl Fn() -> String,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + CLUSTER_TIMEOUT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if std::time::Instant::now() > deadline {
            panic!("timed out waiting until {what}; logs:\n{}", logs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The ids of every function `engine::functions::list` shows (internal ones included).
pub async fn function_ids(client: &IIIClient) -> Vec<String> {
    let listed = call(
        client,
        "engine::functions::list",
        serde_json::json!({"include_internal": true}),
    )
    .await
    .expect("functions::list");
    listed["functions"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| r["function_id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `function_id` is (or is not) registered.
pub async fn wait_function(client: &IIIClient, function_id: &str, present: bool) {
    eventually(
        &format!("{function_id} present={present}"),
        Duration::from_secs(15),
        || async {
            (function_ids(client)
                .await
                .iter()
                .any(|id| id == function_id)
                == present)
                .then_some(())
        },
    )
    .await
}

/// `quorum worker ARGS --address ADDRESS --json` with `credentials` (the managed-worker
/// commands).
pub fn worker_cli(credentials: &[String], address: &str, args: &[&str]) -> Result<Value, String> {
    cli_json(&[], "worker", credentials, address, args)
}

/// Runs `quorum cluster ARGS --address ADDRESS --json`; the parsed JSON on success, else the
/// error text the command printed.
pub fn cluster_cli(address: &str, args: &[&str]) -> Result<Value, String> {
    cluster_cli_in(&[], address, args)
}

/// Writes a worker tokens file into `dir` with one entry, `bootstrap` (every right, namespace
/// `default`) for `token`, and returns the `serve` arguments that turn worker auth on with it.
pub fn worker_token_args(dir: &Path, token: &str) -> Vec<String> {
    use sha2::{Digest, Sha256};
    let hash: String = Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let file = dir.join("tokens.yaml");
    std::fs::write(
        &file,
        format!("tokens:\n  - name: bootstrap\n    sha256: \"{hash}\"\n"),
    )
    .expect("tokens file");
    vec![
        "--worker-auth".into(),
        "token".into(),
        "--worker-tokens-file".into(),
        file.display().to_string(),
    ]
}

/// Runs `quorum token ARGS --address ADDRESS --json`; the parsed JSON on success, else the
/// error text the command printed.
pub fn token_cli(address: &str, args: &[&str]) -> Result<Value, String> {
    cli_json(&[], "token", &[], address, args)
}

/// [`cluster_cli`] run behind `wrapper` (for example inside a network namespace).
pub fn cluster_cli_in(wrapper: &[String], address: &str, args: &[&str]) -> Result<Value, String> {
    cluster_cli_as(wrapper, &[], address, args)
}

/// [`cluster_cli_in`] presenting `credentials` (e.g. `--certs-dir DIR`).
pub fn cluster_cli_as(
    wrapper: &[String],
    credentials: &[String],
    address: &str,
    args: &[&str],
) -> Result<Value, String> {
    cli_json(wrapper, "cluster", credentials, address, args)
}

/// Runs `quorum GROUP ARGS CREDENTIALS --address ADDRESS --json` behind `wrapper`.
pub fn cli_json(
    wrapper: &[String],
    group: &str,
    credentials: &[String],
    address: &str,
    args: &[&str],
) -> Result<Value, String> {
    let stdout = run_cli(wrapper, group, credentials, address, args, true)?;
    serde_json::from_str(&stdout).map_err(|e| format!("not JSON: {e}"))
}

/// Runs `quorum GROUP ARGS CREDENTIALS --address ADDRESS` behind `wrapper`: what it printed
/// on success, else the error text it printed.
pub fn cli_text(
    wrapper: &[String],
    group: &str,
    credentials: &[String],
    address: &str,
    args: &[&str],
) -> Result<String, String> {
    run_cli(wrapper, group, credentials, address, args, false)
}

fn run_cli(
    wrapper: &[String],
    group: &str,
    credentials: &[String],
    address: &str,
    args: &[&str],
    json: bool,
) -> Result<String, String> {
    let mut command = quorum_command(wrapper);
    command
        .arg(group)
        .args(args)
        .args(credentials)
        .arg("--address")
        .arg(address);
    if json {
        command.arg("--json");
    }
    let output = command.stdin(Stdio::null()).output().expect("run quorum");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}

/// `quorum cluster status --json` of the member at `address`, if it answers.
pub fn cluster_status(address: &str) -> Option<Value> {
    cluster_cli(address, &["status"]).ok()
}

/// The member ids and roles in a status or membership answer, sorted by id.
pub fn members(status: &Value) -> Vec<(u64, String)> {
    let mut members: Vec<(u64, String)> = status["members"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|m| {
                    (
                        m["node_id"].as_u64().unwrap_or(0),
                        m["role"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    members.sort();
    members
}

/// Several quorum processes forming one Raft cluster, each with its own data directory under
/// one temp dir. Node `i` (0-based) has Raft id `i + 1`. Every process is killed on drop.
pub struct Cluster {
    /// `None` while a node is down (killed or not restarted yet).
    pub nodes: Vec<Option<Node>>,
    root: tempfile::TempDir,
    /// Set for a secure cluster: every node runs with `--certs-dir`, and the harness's
    /// `quorum cluster` commands present the admin certificate.
    pub certs: Option<certs::Certs>,
    /// Names and IPs node certificates are valid for besides 127.0.0.1 and localhost.
    pub cert_hosts: Vec<String>,
}

/// How long a cluster may take to form, or to recover from a change.
pub const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);

impl Cluster {
    /// Starts node 1 as a new cluster, then the others with `--join` node 1, and waits until
    /// every member's status shows all `n` nodes as voters under one leader.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, |_| NodeOptions::default())
    }

    /// [`Cluster::start`] with options for each node (by index), e.g. fixed worker ports.
    pub fn start_with(n: usize, options: impl Fn(usize) -> NodeOptions) -> Cluster {
        Cluster::form(Cluster::empty(), n, options)
    }

    /// [`Cluster::start_with`] on a secure cluster port: certificates made with `quorum
    /// cert`, one node certificate (and key) per node.
    pub fn start_secure_with(n: usize, options: impl Fn(usize) -> NodeOptions) -> Cluster {
        Cluster::form(Cluster::empty_secure(), n, options)
    }

    fn form(mut cluster: Cluster, n: usize, options: impl Fn(usize) -> NodeOptions) -> Cluster {
        let first = cluster.spawn_with(0, &[], options(0));
        let seed = first.cluster.clone();
        cluster.nodes.push(Some(first));
        for i in 1..n {
            let node = cluster.spawn_with(i, &["--join", &seed], options(i));
            cluster.nodes.push(Some(node));
        }
        let expected: Vec<u64> = (1..=n as u64).collect();
        cluster.wait_until("every node sees all members as voters", |c| {
            c.live().iter().all(|i| {
                c.status(*i).is_some_and(|s| {
                    let members = members(&s);
                    s["leader_id"].as_u64().is_some()
                        && members.iter().map(|m| m.0).collect::<Vec<_>>() == expected
                        && members.iter().all(|m| m.1 != "learner")
                })
            })
        });
        cluster
    }

    /// [`Cluster::start`] with each node on a fixed worker port that it keeps across
    /// restarts (a load balancer points at them) and extra `args`; returns the ports too.
    pub fn start_on_fixed_ports(n: usize, args: &[&str]) -> (Cluster, Vec<std::net::SocketAddr>) {
        Cluster::on_fixed_ports(Cluster::empty(), n, args)
    }

    /// [`Cluster::start_on_fixed_ports`] with certificates on the cluster port.
    pub fn start_secure_on_fixed_ports(
        n: usize,
        args: &[&str],
    ) -> (Cluster, Vec<std::net::SocketAddr>) {
        Cluster::on_fixed_ports(Cluster::empty_secure(), n, args)
    }

    fn on_fixed_ports(
        cluster: Cluster,
        n: usize,
        args: &[&str],
    ) -> (Cluster, Vec<std::net::SocketAddr>) {
        let listens: Vec<String> = (0..n).map(|_| free_address()).collect();
        let cluster = Cluster::form(cluster, n, |i| NodeOptions::on_port(&listens[i], args));
        let addrs = listens
            .iter()
            .map(|a| a.parse().expect("socket address"))
            .collect();
        (cluster, addrs)
    }

    /// A cluster with no node yet; add nodes with [`Cluster::spawn_node`].
    pub fn empty() -> Cluster {
        Cluster {
            nodes: Vec::new(),
            root: tempfile::tempdir().expect("temp dir"),
            certs: None,
            cert_hosts: Vec::new(),
        }
    }

    /// An empty cluster whose nodes will run with certificates (see [`Cluster::certs`]).
    pub fn empty_secure() -> Cluster {
        let mut cluster = Cluster::empty();
        cluster.certs = Some(certs::Certs::new());
        cluster
    }

    /// What a `quorum cluster` command needs to be let in: the admin certificate on a secure
    /// cluster, nothing on a plaintext one.
    pub fn credentials(&self) -> Vec<String> {
        self.certs
            .as_ref()
            .map(certs::Certs::admin_args)
            .unwrap_or_default()
    }

    /// `--certs-dir` with node `i`'s own certificate on a secure cluster; nothing otherwise.
    fn certs_args(&self, i: usize) -> Vec<String> {
        match &self.certs {
            Some(certs) => {
                let dir = certs.node_dir_for(&(i + 1).to_string(), &self.cert_hosts);
                vec!["--certs-dir".to_string(), dir.display().to_string()]
            }
            None => Vec::new(),
        }
    }

    /// `quorum cluster ARGS` against node `i`, presenting [`Cluster::credentials`].
    pub fn cli(&self, i: usize, args: &[&str]) -> Result<Value, String> {
        cluster_cli_as(&[], &self.credentials(), &self.node(i).cluster, args)
    }

    /// `quorum worker ARGS --json` against node `i`, presenting [`Cluster::credentials`].
    pub fn worker_cli(&self, i: usize, args: &[&str]) -> Result<Value, String> {
        worker_cli(&self.credentials(), &self.node(i).cluster, args)
    }

    /// Starts one more node (Raft id = its index + 1) with `options`; returns its index.
    pub fn spawn_node(&mut self, options: NodeOptions) -> usize {
        let i = self.nodes.len();
        let node = self.spawn_with(i, &[], options);
        self.nodes.push(Some(node));
        i
    }

    /// Starts one more node, joining through node 1 (or the first live node), with extra
    /// `args`; returns its index.
    pub fn add(&mut self, args: &[&str]) -> usize {
        let seed = self.node(self.live()[0]).cluster.clone();
        let i = self.nodes.len();
        let mut all = vec!["--join", seed.as_str()];
        all.extend_from_slice(args);
        let node = self.spawn(i, &all);
        self.nodes.push(Some(node));
        i
    }

    /// The data directory of node `i`.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.root.path().join(format!("node{}", i + 1))
    }

    fn spawn(&self, i: usize, args: &[&str]) -> Node {
        self.spawn_with(i, args, NodeOptions::default())
    }

    fn spawn_with(&self, i: usize, args: &[&str], options: NodeOptions) -> Node {
        self.spawn_starting(i, args, options).ready()
    }

    fn spawn_starting(&self, i: usize, args: &[&str], mut options: NodeOptions) -> Starting {
        let dir = self.data_dir(i);
        std::fs::create_dir_all(&dir).expect("node data dir");
        options
            .args
            .extend(["--node-id".to_string(), (i + 1).to_string()]);
        options.args.extend(self.certs_args(i));
        options.args.extend(args.iter().map(|a| a.to_string()));
        Node::spawn_in(&dir, options)
    }

    /// Node `i`, which must be running.
    pub fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("node is running")
    }

    /// Indexes of the nodes this test has not killed.
    pub fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .collect()
    }

    /// Index of the node with Raft id `id`.
    pub fn index_of(id: u64) -> usize {
        (id - 1) as usize
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut node) = self.nodes[i].take() {
            node.kill();
        }
    }

    /// SIGTERMs node `i` (a graceful drain) and returns its exit code once it exited.
    pub fn terminate(&mut self, i: usize) -> Option<i32> {
        self.nodes[i].take().and_then(|mut node| node.terminate())
    }

    /// Starts node `i` again on its data directory with extra `args` (after `kill`).
    pub fn restart(&mut self, i: usize, args: &[&str], options: NodeOptions) {
        assert!(self.nodes[i].is_none(), "node {i} is still running");
        let node = self.spawn_with(i, args, options);
        self.nodes[i] = Some(node);
    }

    /// Starts node `i` again like [`Cluster::restart`], but returns at once, before it is
    /// ready (a test acting during its start-up, e.g. its catch-up); hand the node back with
    /// `cluster.nodes[i] = Some(starting.ready())`.
    pub fn restart_starting(&self, i: usize, args: &[&str], options: NodeOptions) -> Starting {
        assert!(self.nodes[i].is_none(), "node {i} is still running");
        self.spawn_starting(i, args, options)
    }

    /// Starts node `i` again with `args` but without the `--node-id` flag the harness adds.
    pub fn restart_bare(&mut self, i: usize, mut options: NodeOptions) {
        assert!(self.nodes[i].is_none(), "node {i} is still running");
        options.args.extend(self.certs_args(i));
        let node = Node::start_in(&self.data_dir(i), options);
        self.nodes[i] = Some(node);
    }

    /// The status of node `i`, if it answers.
    pub fn status(&self, i: usize) -> Option<Value> {
        self.cli(i, &["status"]).ok()
    }

    /// The leader id every live node agrees on, once they all do.
    pub fn wait_for_leader(&self) -> u64 {
        let mut leader = 0;
        self.wait_until("all live nodes agree on one leader", |c| {
            let seen: Vec<Option<u64>> = c
                .live()
                .iter()
                .map(|i| c.status(*i).and_then(|s| s["leader_id"].as_u64()))
                .collect();
            match seen.first() {
                Some(Some(first))
                    if seen.iter().all(|s| *s == Some(*first))
                        && c.nodes[Cluster::index_of(*first)].is_some() =>
                {
                    leader = *first;
                    true
                }
                _ => false,
            }
        });
        leader
    }

    /// Index of some live node that is not the leader.
    pub fn a_follower(&self, leader: u64) -> usize {
        self.live()
            .into_iter()
            .find(|i| *i != Cluster::index_of(leader))
            .expect("a live follower")
    }

    /// Polls `check` until it holds, or panics (with every node's log) after
    /// [`CLUSTER_TIMEOUT`].
    pub fn wait_until(&self, what: &str, mut check: impl FnMut(&Cluster) -> bool) {
        wait_for(what, || self.logs(), || check(self).then_some(()))
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        log_tails((0..self.nodes.len()).map(|i| self.data_dir(i)), 60)
    }
}

/// The last `lines` lines of the log of each node whose data directory `dirs` yields (node 1
/// first), for failure messages.
pub fn log_tails(dirs: impl Iterator<Item = PathBuf>, lines: usize) -> String {
    dirs.enumerate()
        .map(|(i, dir)| {
            let log = std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(lines).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("--- node {} ---\n{}", i + 1, tail.join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Registers `function_id` as a handler that never answers (it sleeps for ten minutes),
/// for tests that end calls from outside. The returned `Notify` fires as each call starts.
pub fn register_never_answering(
    client: &IIIClient,
    function_id: &str,
) -> std::sync::Arc<tokio::sync::Notify> {
    let started = std::sync::Arc::new(tokio::sync::Notify::new());
    let signal = started.clone();
    client.register_function(
        function_id,
        iii_sdk::RegisterFunction::new_async(move |_: Value| {
            let signal = signal.clone();
            async move {
                signal.notify_one();
                tokio::time::sleep(Duration::from_secs(600)).await;
                Ok::<Value, iii_sdk::Error>(Value::Null)
            }
        }),
    );
    started
}

/// A trigger-type provider that reports what the engine asks of it, as
/// ("register" | "unregister", config), on a channel.
pub struct TriggerRecorder(
    pub tokio::sync::mpsc::UnboundedSender<(String, iii_sdk::trigger::TriggerConfig)>,
);

#[async_trait::async_trait]
impl iii_sdk::trigger::TriggerHandler for TriggerRecorder {
    async fn register_trigger(
        &self,
        config: iii_sdk::trigger::TriggerConfig,
    ) -> Result<(), iii_sdk::Error> {
        let _ = self.0.send(("register".into(), config));
        Ok(())
    }
    async fn unregister_trigger(
        &self,
        config: iii_sdk::trigger::TriggerConfig,
    ) -> Result<(), iii_sdk::Error> {
        let _ = self.0.send(("unregister".into(), config));
        Ok(())
    }
}

/// What a [`TriggerRecorder`] reports: ("register" | "unregister", config).
pub type TriggerRequests =
    tokio::sync::mpsc::UnboundedReceiver<(String, iii_sdk::trigger::TriggerConfig)>;

/// A worker at `url` providing trigger type `id`, with a [`TriggerRecorder`] as its handler:
/// what the engine asks of it arrives on the returned receiver.
#[allow(deprecated)]
pub async fn recording_provider(url: &str, id: &str) -> (IIIClient, TriggerRequests) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let provider = worker(url, &unique_name("provider"), None).await;
    provider.register_trigger_type(iii_sdk::RegisterTriggerType::new(
        id,
        "recorded by the test",
        TriggerRecorder(tx),
    ));
    (provider, rx)
}

/// The next request a `TriggerRecorder` saw, within 10 s.
pub async fn next_trigger_request(
    rx: &mut TriggerRequests,
) -> (String, iii_sdk::trigger::TriggerConfig) {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("provider notified")
        .expect("open")
}

/// Waits until `engine::workers::list` shows `function_id` served by the connection
/// `worker_id`, and returns that worker's row.
pub async fn wait_served_by(observer: &IIIClient, worker_id: &str, function_id: &str) -> Value {
    eventually(
        &format!("{function_id} served by {worker_id}"),
        Duration::from_secs(10),
        || async {
            let rows = call(observer, "engine::workers::list", serde_json::json!({}))
                .await
                .ok()?;
            rows["workers"]
                .as_array()?
                .iter()
                .find(|w| {
                    w["id"] == worker_id
                        && w["functions"]
                            .as_array()
                            .is_some_and(|f| f.iter().any(|id| id == function_id))
                })
                .cloned()
        },
    )
    .await
}

/// Registers `blob::size` on `client`: answers the length of its input's `blob` string.
pub fn register_blob_size(client: &IIIClient) {
    client.register_function(
        "blob::size",
        iii_sdk::RegisterFunction::new_async(|input: Value| async move {
            Ok::<Value, iii_sdk::Error>(serde_json::json!(input["blob"]
                .as_str()
                .map_or(0, str::len)))
        }),
    );
}

/// The connection id `engine::workers::list` shows for the worker called `name`.
pub async fn worker_id_named(observer: &IIIClient, name: &str) -> String {
    let rows = call(observer, "engine::workers::list", serde_json::json!({}))
        .await
        .unwrap();
    rows["workers"]
        .as_array()
        .and_then(|rows| rows.iter().find(|w| w["name"] == name))
        .and_then(|w| w["id"].as_str())
        .map(str::to_string)
        .expect("worker listed")
}
