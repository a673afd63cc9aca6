//! Security benchmark: what mutual TLS on the cluster port and worker tokens cost a call.
//! Two 3-node clusters on 127.0.0.1 run side by side: one plaintext with worker auth off,
//! one with `--certs-dir` (certificates from `quorum cert`) and `--worker-auth token`, its
//! workers presenting a token. Local and cross-node calls are measured on both, alternating
//! (plain, secure, plain, secure) so host drift hits both alike, and printed as ratios.
//! Run with `cargo bench --bench security`; it asserts nothing.

mod common;

use common::{call, start_node_with, Guard, ROLE};
use hdrhistogram::Histogram;
use iii_sdk::runtime::WorkerMetadata;
use iii_sdk::{register_worker, Error, IIIClient, InitOptions, RegisterFunction};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const IN_FLIGHT: usize = 64;
const TOKEN_ENV: &str = "QUORUM_BENCH_TOKEN";

/// A cluster under test: its nodes (kept alive), worker URLs and the token its workers show.
struct Setup {
    name: &'static str,
    _nodes: Vec<Guard>,
    urls: Vec<String>,
    token: Option<String>,
}

fn quorum(args: &[&str]) {
    let status = Command::new(env!("CARGO_BIN_EXE_quorum"))
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("run quorum");
    assert!(status.success(), "quorum {args:?} failed");
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Starts node `i` of a cluster in `root`; returns it with its worker and cluster addresses.
fn node(root: &Path, i: usize, seed: Option<&str>, extra: &[String]) -> (Guard, String, String) {
    let dir = root.join(format!("n{i}"));
    std::fs::create_dir_all(&dir).expect("node dir");
    let id = (i + 1).to_string();
    let mut args = vec!["--node-id", id.as_str()];
    if let Some(seed) = seed {
        args.extend(["--join", seed]);
    }
    args.extend(extra.iter().map(String::as_str));
    let (guard, ready) = start_node_with(&dir, "127.0.0.1:0", &args);
    (
        guard,
        format!("ws://{}", ready["listen"].as_str().expect("listen")),
        ready["cluster_listen"]
            .as_str()
            .expect("cluster")
            .to_string(),
    )
}

/// Three nodes; `secure` gives each its own node certificate and turns worker tokens on.
fn start(root: &Path, secure: bool) -> Setup {
    let mut extra: Vec<Vec<String>> = vec![Vec::new(); 3];
    let mut token = None;
    if secure {
        let ca = root.join("ca");
        quorum(&["cert", "create-ca", "--certs-dir", path(&ca)]);
        let secret = format!("{:032x}", uuid::Uuid::new_v4().as_u128());
        let hash: String = Sha256::digest(secret.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let tokens = root.join("tokens.yaml");
        std::fs::write(
            &tokens,
            format!("tokens:\n  - name: bench\n    sha256: \"{hash}\"\n"),
        )
        .expect("tokens file");
        for (i, args) in extra.iter_mut().enumerate() {
            let dir: PathBuf = root.join(format!("certs{i}"));
            std::fs::create_dir_all(&dir).expect("certs dir");
            std::fs::copy(ca.join("ca.crt"), dir.join("ca.crt")).expect("ca.crt");
            let ca_key = ca.join("ca.key");
            quorum(&[
                "cert",
                "create-node",
                "--certs-dir",
                path(&dir),
                "--ca-key",
                path(&ca_key),
                "127.0.0.1",
                "localhost",
            ]);
            args.extend(
                [
                    "--certs-dir",
                    path(&dir),
                    "--worker-auth",
                    "token",
                    "--worker-tokens-file",
                ]
                .iter()
                .map(|a| a.to_string()),
            );
            args.push(path(&tokens).to_string());
        }
        token = Some(secret);
    }
    let (first, url, seed) = node(root, 0, None, &extra[0]);
    let (mut nodes, mut urls) = (vec![first], vec![url]);
    for (i, args) in extra.iter().enumerate().skip(1) {
        let (guard, url, _) = node(root, i, Some(&seed), args);
        nodes.push(guard);
        urls.push(url);
    }
    Setup {
        name: if secure { "mTLS + tokens" } else { "plaintext" },
        _nodes: nodes,
        urls,
        token,
    }
}

/// A worker on `url` presenting `token` (as `Authorization: Bearer`, as the SDKs send it).
fn client(url: &str, name: &str, token: Option<&str>) -> IIIClient {
    let headers = token.map(|t| HashMap::from([("Authorization".into(), format!("Bearer {t}"))]));
    register_worker(
        url,
        InitOptions {
            metadata: Some(WorkerMetadata {
                name: name.into(),
                ..Default::default()
            }),
            headers,
            ..Default::default()
        },
    )
}

/// The callee role: serves `bench::echo` on `III_URL` until killed.
async fn callee() {
    let url = std::env::var("III_URL").expect("III_URL");
    let token = std::env::var(TOKEN_ENV).ok();
    let worker = client(&url, "bench-callee", token.as_deref());
    worker.register_function(
        "bench::echo",
        RegisterFunction::new_async(|input: Value| async move { Ok::<Value, Error>(input) }),
    );
    worker
        .wait_until_registered(Duration::from_secs(10))
        .await
        .expect("callee registered");
    println!("READY");
    std::future::pending::<()>().await;
}

fn start_callee(url: &str, token: Option<&str>) -> Guard {
    let mut command = Command::new(std::env::current_exe().expect("bench path"));
    command.env(ROLE, "callee").env("III_URL", url);
    if let Some(token) = token {
        command.env(TOKEN_ENV, token);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start callee");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("callee ready");
    Guard::new(child)
}

async fn ready(caller: &IIIClient) {
    caller
        .wait_until_registered(Duration::from_secs(10))
        .await
        .expect("registered");
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(caller).await.is_err() {
        assert!(Instant::now() < deadline, "bench::echo not callable");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn sequential(caller: &IIIClient, n: usize, into: &mut Histogram<u64>) {
    for _ in 0..n / 10 {
        let _ = call(caller).await;
    }
    for _ in 0..n {
        let start = Instant::now();
        call(caller).await.expect("call");
        into.record(start.elapsed().as_micros() as u64)
            .expect("record");
    }
}

async fn throughput(caller: &IIIClient, total: u64) -> f64 {
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let lanes: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (caller, issued) = (caller.clone(), issued.clone());
            tokio::spawn(async move {
                while issued.fetch_add(1, Ordering::Relaxed) < total {
                    call(&caller).await.expect("call");
                }
            })
        })
        .collect();
    for lane in lanes {
        lane.await.expect("lane");
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// One cluster's figures: latency histograms and the best throughput of the rounds.
struct Figures {
    local: Histogram<u64>,
    cross: Histogram<u64>,
    local_tput: f64,
    cross_tput: f64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::var(ROLE).as_deref() == Ok("callee") {
        return callee().await;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let calls: usize = std::env::var("QUORUM_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let root = tempfile::tempdir().expect("temp dir");
    let setups = [
        start(&root.path().join("plain"), false),
        start(&root.path().join("secure"), true),
    ];
    let mut peers = Vec::new();
    for setup in &setups {
        let token = setup.token.as_deref();
        let guard = start_callee(&setup.urls[0], token);
        let local = client(&setup.urls[0], "bench-local", token);
        let cross = client(&setup.urls[1], "bench-cross", token);
        ready(&local).await;
        ready(&cross).await;
        peers.push((guard, local, cross));
    }
    let mut figures: Vec<Figures> = (0..2)
        .map(|_| Figures {
            local: Histogram::new(3).expect("histogram"),
            cross: Histogram::new(3).expect("histogram"),
            local_tput: 0.0,
            cross_tput: 0.0,
        })
        .collect();
    for _round in 0..2 {
        for (i, (_, local, cross)) in peers.iter().enumerate() {
            let f = &mut figures[i];
            sequential(local, calls / 2, &mut f.local).await;
            sequential(cross, calls / 2, &mut f.cross).await;
            f.local_tput = f.local_tput.max(throughput(local, calls as u64 * 2).await);
            f.cross_tput = f.cross_tput.max(throughput(cross, calls as u64 * 2).await);
        }
    }
    println!("security benchmark: {calls} sequential calls and 2 x {} calls at {IN_FLIGHT} in flight per figure, two rounds alternating", calls * 2);
    println!(
        "{:<15} {:>10} {:>10} {:>12} {:>10} {:>10} {:>12}",
        "", "local p50", "local p99", "local c/s", "cross p50", "cross p99", "cross c/s"
    );
    for (setup, f) in setups.iter().zip(&figures) {
        println!(
            "{:<15} {:>8}us {:>8}us {:>12.0} {:>8}us {:>8}us {:>12.0}",
            setup.name,
            f.local.value_at_quantile(0.5),
            f.local.value_at_quantile(0.99),
            f.local_tput,
            f.cross.value_at_quantile(0.5),
            f.cross.value_at_quantile(0.99),
            f.cross_tput,
        );
    }
    let ratio = |a: u64, b: u64| a as f64 / b.max(1) as f64;
    let (plain, secure) = (&figures[0], &figures[1]);
    println!(
        "secure/plaintext: local p50 {:.2}, cross-node p50 {:.2} (target <= 1.10), cross-node p99 {:.2}, local throughput {:.2}, cross-node throughput {:.2}",
        ratio(secure.local.value_at_quantile(0.5), plain.local.value_at_quantile(0.5)),
        ratio(secure.cross.value_at_quantile(0.5), plain.cross.value_at_quantile(0.5)),
        ratio(secure.cross.value_at_quantile(0.99), plain.cross.value_at_quantile(0.99)),
        secure.local_tput / plain.local_tput,
        secure.cross_tput / plain.cross_tput,
    );
    for (guard, local, cross) in peers {
        local.shutdown_async().await;
        cross.shutdown_async().await;
        drop(guard);
    }
}
