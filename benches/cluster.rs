//! Cluster benchmark: three real quorum nodes on 127.0.0.1, Rust SDK workers in their
//! own processes. Every comparison is measured in one run and printed as a ratio.
//! Run with `cargo bench --bench cluster`; it asserts nothing.
//!
//! Figures: local vs cross-node call latency and throughput; registration commit
//! latency on the leader and through a follower; leader failover time after SIGKILL;
//! time from SIGKILL of the node holding a worker until that worker's function is
//! callable again through a survivor (SDK default reconnect, through a TCP proxy that
//! sends new connections to a live node), with the engine's share of it.

mod common;

use common::{call, callee, client, start_node_with, start_role, Guard, ROLE};
use hdrhistogram::Histogram;
use iii_sdk::IIIClient;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const IN_FLIGHT: usize = 64;
const KILL_ROUNDS: usize = 5;

/// One node of the benchmark cluster.
struct BenchNode {
    guard: Option<Guard>,
    dir: std::path::PathBuf,
    listen: String,
    cluster: String,
}

fn status(cluster_addr: &str) -> Option<Value> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_quorum"))
        .args(["cluster", "status", "--json", "--address", cluster_addr])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| serde_json::from_slice(&output.stdout).ok())
        .flatten()
}

fn leader_of(nodes: &[BenchNode], skip: Option<usize>) -> Option<u64> {
    nodes
        .iter()
        .enumerate()
        .filter(|(i, n)| Some(*i) != skip && n.guard.is_some())
        .find_map(|(_, n)| {
            status(&n.cluster)?["leader_id"]
                .as_u64()
                .filter(|id| *id != 0)
        })
}

fn start_cluster(root: &Path) -> Vec<BenchNode> {
    let mut nodes: Vec<BenchNode> = Vec::new();
    for i in 0..3 {
        let dir = root.join(format!("n{}", i + 1));
        std::fs::create_dir_all(&dir).expect("node dir");
        let id = (i + 1).to_string();
        let mut args = vec!["--node-id", id.as_str()];
        let seed = nodes.first().map(|n| n.cluster.clone());
        if let Some(seed) = seed.as_deref() {
            args.extend(["--join", seed]);
        }
        let (guard, ready) = start_node_with(&dir, "127.0.0.1:0", &args);
        nodes.push(BenchNode {
            guard: Some(guard),
            dir,
            listen: ready["listen"].as_str().expect("listen").to_string(),
            cluster: ready["cluster_listen"]
                .as_str()
                .expect("cluster_listen")
                .to_string(),
        });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !nodes.iter().all(|n| {
        status(&n.cluster).is_some_and(|s| s["members"].as_array().is_some_and(|m| m.len() == 3))
    }) {
        assert!(Instant::now() < deadline, "cluster did not form");
        std::thread::sleep(Duration::from_millis(50));
    }
    nodes
}

async fn wait_callable(caller: &IIIClient, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if call(caller).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

async fn sequential(caller: &IIIClient, n: usize) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..500 {
        let _ = call(caller).await;
    }
    for _ in 0..n {
        let start = Instant::now();
        call(caller).await.expect("call");
        h.record(start.elapsed().as_micros() as u64)
            .expect("record");
    }
    h
}

async fn throughput(caller: &IIIClient, total: u64) -> (f64, u64) {
    let issued = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let lanes: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (caller, issued, failed) = (caller.clone(), issued.clone(), failed.clone());
            tokio::spawn(async move {
                while issued.fetch_add(1, Ordering::Relaxed) < total {
                    if call(&caller).await.is_err() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for lane in lanes {
        lane.await.expect("lane");
    }
    (
        total as f64 / start.elapsed().as_secs_f64(),
        failed.load(Ordering::Relaxed),
    )
}

/// A TCP proxy for workers: each new connection goes to the first live node in `targets`.
/// `accepted` holds the time of the latest connection that reached a node.
async fn worker_proxy(
    targets: Arc<Mutex<Vec<String>>>,
    accepted: Arc<Mutex<Option<Instant>>>,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("proxy bind");
    let address = listener.local_addr().expect("proxy addr").to_string();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let candidates = targets.lock().expect("targets").clone();
            let accepted = accepted.clone();
            tokio::spawn(async move {
                for target in candidates {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        *accepted.lock().expect("accepted") = Some(Instant::now());
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        return;
                    }
                }
            });
        }
    });
    address
}

fn pct(h: &Histogram<u64>, q: f64) -> u64 {
    h.value_at_quantile(q)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::var(ROLE).as_deref() == Ok("callee") {
        return callee(std::env::var("III_URL").expect("III_URL")).await;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let calls: u64 = std::env::var("QUORUM_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let root = tempfile::tempdir().expect("temp dir");
    let mut nodes = start_cluster(root.path());
    let url = |i: usize, nodes: &[BenchNode]| format!("ws://{}", nodes[i].listen);

    // Local vs cross-node calls: the callee on node 1; one caller on node 1, one on node 2.
    let _callee = start_role("callee", &url(0, &nodes));
    let local = client(&url(0, &nodes), "bench-local-caller");
    let remote = client(&url(1, &nodes), "bench-remote-caller");
    for c in [&local, &remote] {
        c.wait_until_registered(Duration::from_secs(10))
            .await
            .expect("registered");
        assert!(
            wait_callable(c, Duration::from_secs(10)).await,
            "bench::echo not callable"
        );
    }
    let local_lat = sequential(&local, 10_000).await;
    let remote_lat = sequential(&remote, 10_000).await;
    let (local_tput, local_failed) = throughput(&local, calls).await;
    let (remote_tput, remote_failed) = throughput(&remote, calls).await;

    // Registration commit latency: `engine::register_trigger` commits one command and
    // answers once it is applied, on the leader and through a follower.
    let leader = leader_of(&nodes, None).expect("leader") as usize - 1;
    let follower = (leader + 1) % 3;
    let mut commit_leader = Histogram::<u64>::new(3).expect("histogram");
    let mut commit_follower = Histogram::<u64>::new(3).expect("histogram");
    for (index, histogram, name) in [
        (leader, &mut commit_leader, "bench-reg-l"),
        (follower, &mut commit_follower, "bench-reg-f"),
    ] {
        let registrar = client(&url(index, &nodes), name);
        registrar
            .wait_until_registered(Duration::from_secs(10))
            .await
            .expect("registered");
        for _ in 0..300 {
            let start = Instant::now();
            registrar
                .trigger(iii_sdk::protocol::TriggerRequest::new(
                    "engine::register_trigger",
                    json!({"trigger_type": "bench::none", "function_id": "bench::echo"}),
                ))
                .await
                .expect("register_trigger");
            histogram
                .record(start.elapsed().as_micros() as u64)
                .expect("record");
        }
        registrar.shutdown_async().await;
    }
    drop(_callee);
    local.shutdown_async().await;
    remote.shutdown_async().await;

    // Failover rounds: kill the leader, time the new election; kill the node holding the
    // callee, time until it is callable again through a survivor.
    let targets = Arc::new(Mutex::new(Vec::new()));
    let accepted = Arc::new(Mutex::new(None::<Instant>));
    let proxy = worker_proxy(targets.clone(), accepted.clone()).await;
    let mut failover = Histogram::<u64>::new(3).expect("histogram");
    let mut recovery = Histogram::<u64>::new(3).expect("histogram");
    let mut engine_share = Histogram::<u64>::new(3).expect("histogram");
    let mut node_recovery = Histogram::<u64>::new(3).expect("histogram");
    let mut node_engine_share = Histogram::<u64>::new(3).expect("histogram");
    let node_sdk = node_sdk_env();
    for round in 0..KILL_ROUNDS {
        // Leader failover.
        let leader = leader_of(&nodes, None).expect("leader") as usize - 1;
        let killed = Instant::now();
        nodes[leader].guard = None;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(new) = leader_of(&nodes, Some(leader)) {
                if new as usize - 1 != leader {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "no new leader");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        failover
            .record(killed.elapsed().as_micros() as u64)
            .expect("record");
        restart(&mut nodes, leader);

        // Worker recovery: the callee connects through the proxy to node `holder`.
        let holder = round % 3;
        let timer = Recovery {
            targets: &targets,
            accepted: &accepted,
        };
        let (total, share) = timer
            .measure(&mut nodes, holder, &format!("{round}-rust"), || {
                start_role("callee", &format!("ws://{proxy}")).0
            })
            .await;
        recovery.record(total).expect("record");
        if let Some(share) = share {
            engine_share.record(share).expect("record");
        }
        if let Some(env) = &node_sdk {
            let (total, share) = timer
                .measure(&mut nodes, holder, &format!("{round}-node"), || {
                    node_callee(env, &proxy)
                })
                .await;
            node_recovery.record(total).expect("record");
            if let Some(share) = share {
                node_engine_share.record(share).expect("record");
            }
        }
    }

    println!("quorum cluster benchmark (3 nodes on 127.0.0.1, Rust SDK 0.25 workers in separate processes)");
    println!(
        "SDK OpenTelemetry (OTEL_ENABLED): {}",
        std::env::var("OTEL_ENABLED").unwrap_or_else(|_| "SDK default (on)".into())
    );
    println!("sequential calls, 10000 each          local        cross-node   ratio");
    println!(
        "  p50                                 {:>6} us    {:>6} us    {:.2}",
        pct(&local_lat, 0.5),
        pct(&remote_lat, 0.5),
        pct(&remote_lat, 0.5) as f64 / pct(&local_lat, 0.5).max(1) as f64
    );
    println!(
        "  p99                                 {:>6} us    {:>6} us    {:.2}",
        pct(&local_lat, 0.99),
        pct(&remote_lat, 0.99),
        pct(&remote_lat, 0.99) as f64 / pct(&local_lat, 0.99).max(1) as f64
    );
    println!(
        "calls/s at {IN_FLIGHT} in flight, {calls} each   {:>8.0}     {:>8.0}     {:.2}",
        local_tput,
        remote_tput,
        remote_tput / local_tput
    );
    println!("  failed calls                        {local_failed:>6}       {remote_failed:>6}");
    println!("registration commit (register_trigger), 300 each: leader p50 {} us p99 {} us; via follower p50 {} us p99 {} us",
        pct(&commit_leader, 0.5), pct(&commit_leader, 0.99), pct(&commit_follower, 0.5), pct(&commit_follower, 0.99));
    println!(
        "leader failover after SIGKILL, {KILL_ROUNDS} rounds: p50 {} ms, max {} ms",
        pct(&failover, 0.5) / 1000,
        failover.max() / 1000
    );
    println!("worker callable again after SIGKILL of its node, {KILL_ROUNDS} rounds: p50 {} ms, max {} ms", pct(&recovery, 0.5) / 1000, recovery.max() / 1000);
    println!(
        "  engine's share (from the SDK's reconnect reaching a survivor to callable): p50 {} ms, max {} ms",
        pct(&engine_share, 0.5) / 1000,
        engine_share.max() / 1000
    );
    match &node_sdk {
        Some(_) => {
            println!(
                "  with a Node SDK 0.22 callee (default reconnect: 1 s, ±30 % jitter): p50 {} ms, p99 {} ms, max {} ms",
                pct(&node_recovery, 0.5) / 1000,
                pct(&node_recovery, 0.99) / 1000,
                node_recovery.max() / 1000
            );
            println!(
                "  engine's share with the Node SDK callee: p50 {} ms, max {} ms",
                pct(&node_engine_share, 0.5) / 1000,
                node_engine_share.max() / 1000
            );
        }
        None => println!(
            "  Node SDK callee: SKIPPED, no npm iii-sdk in target/sdk-envs/node (run `cargo test --test node_sdk` once)"
        ),
    }
}

/// The worker proxy and what it saw, for timing a callee's recovery.
struct Recovery<'a> {
    targets: &'a Arc<Mutex<Vec<String>>>,
    accepted: &'a Arc<Mutex<Option<Instant>>>,
}

impl Recovery<'_> {
    /// Starts a callee (through the proxy, on node `holder`), SIGKILLs `holder`, and returns
    /// the µs until `bench::echo` answers again through a survivor, and the engine's share
    /// (from the SDK's reconnect reaching a survivor). Restarts `holder` afterwards.
    async fn measure(
        &self,
        nodes: &mut [BenchNode],
        holder: usize,
        label: &str,
        start_callee: impl FnOnce() -> Guard,
    ) -> (u64, Option<u64>) {
        let order: Vec<String> = (0..3)
            .map(|k| nodes[(holder + k) % 3].listen.clone())
            .collect();
        *self.targets.lock().expect("targets") = order;
        let callee = start_callee();
        let watcher_node = (holder + 1) % 3;
        let url = format!("ws://{}", nodes[watcher_node].listen);
        let caller = client(&url, &format!("bench-watch-{label}"));
        caller
            .wait_until_registered(Duration::from_secs(10))
            .await
            .expect("registered");
        assert!(
            wait_callable(&caller, Duration::from_secs(15)).await,
            "callee not callable"
        );
        // New connections now go to a survivor first.
        let survivors: Vec<String> = (1..3)
            .map(|k| nodes[(holder + k) % 3].listen.clone())
            .collect();
        *self.targets.lock().expect("targets") = survivors;
        let killed = Instant::now();
        nodes[holder].guard = None;
        // The engine's share starts when the SDK's new connection reaches the proxy.
        *self.accepted.lock().expect("accepted") = None;
        assert!(
            wait_callable(&caller, Duration::from_secs(20)).await,
            "never callable again"
        );
        let callable = Instant::now();
        let total = callable.duration_since(killed).as_micros() as u64;
        let share =
            self.accepted.lock().expect("accepted").map(|reconnected| {
                callable.saturating_duration_since(reconnected).as_micros() as u64
            });
        caller.shutdown_async().await;
        drop(callee);
        restart(nodes, holder);
        (total, share)
    }
}

/// The npm SDK environment the Node SDK tests install, if it is there.
fn node_sdk_env() -> Option<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sdk-envs/node");
    let installed = dir.join("node_modules/iii-sdk/package.json").is_file();
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    (installed && node).then_some(dir)
}

/// A Node SDK callee serving `bench::echo` through the proxy; killed by PID when dropped.
fn node_callee(env: &Path, proxy: &str) -> Guard {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/node/callee.mjs");
    let child = std::process::Command::new("node")
        .arg(script)
        .env("III_URL", format!("ws://{proxy}"))
        .env("III_SDK_ENV", env)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the Node SDK callee");
    Guard::new(child)
}

/// Restarts a killed node on its data directory and worker port; it rejoins by itself.
fn restart(nodes: &mut [BenchNode], i: usize) {
    let (guard, ready) = start_node_with(&nodes[i].dir, &nodes[i].listen, &[]);
    nodes[i].guard = Some(guard);
    nodes[i].cluster = ready["cluster_listen"]
        .as_str()
        .expect("cluster_listen")
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(&nodes[i].cluster).is_none_or(|s| s["leader_id"].as_u64().is_none_or(|l| l == 0)) {
        assert!(Instant::now() < deadline, "restarted node did not rejoin");
        std::thread::sleep(Duration::from_millis(20));
    }
}
