//! A rolling restart fails no call: three nodes behind haproxy (a real TCP load balancer in
//! front of the worker ports) are restarted one by one (SIGTERM, restart, wait ready) while
//! workers connected through haproxy call each other without pause. Needs haproxy (CI
//! installs Debian's package); without it the test says so and is skipped, except under CI.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::haproxy::{self, Haproxy};
use common::{call, unique_name, wait_function, worker, worker_token_args, Cluster, NodeOptions};
use iii_sdk::{Error, IIIClient, RegisterFunction};
use serde_json::{json, Value};

/// Drain and hold timings short enough for a test, long enough for the Rust SDK's fixed
/// two-second reconnect delay.
const ARGS: [&str; 4] = ["--drain-grace-ms", "10000", "--call-hold-ms", "6000"];

/// How many workers call each other.
const WORKERS: usize = 3;

/// Worker `i` serves `rr::w{i}`: an echo that says who answered.
async fn start_worker(url: &str, i: usize) -> IIIClient {
    let client = worker(url, &unique_name(&format!("rolling{i}")), None).await;
    client.register_function(
        format!("rr::w{i}"),
        RegisterFunction::new_async(move |input: Value| async move {
            Ok::<Value, Error>(json!({ "n": input["n"], "by": i }))
        }),
    );
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_behind_haproxy_fails_no_call() {
    let Some(haproxy) = haproxy::find_or_skip() else {
        return;
    };
    // A secure cluster: certificates between nodes, and workers that show a token.
    let tokens = tempfile::tempdir().expect("temp dir");
    let token = "rolling-restart-token";
    let mut owned: Vec<String> = ARGS.iter().map(|a| a.to_string()).collect();
    owned.extend(worker_token_args(tokens.path(), token));
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    let (cluster, ports) = Cluster::start_secure_on_fixed_ports(3, &args);
    let balancer = Haproxy::start(&haproxy, &ports);
    let url = format!("{}/?token={token}", balancer.url);

    let mut workers = Vec::new();
    for i in 0..WORKERS {
        workers.push(Arc::new(start_worker(&url, i).await));
    }
    for i in 0..WORKERS {
        wait_function(&workers[0], &format!("rr::w{i}"), true).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut callers = Vec::new();
    for (i, client) in workers.iter().enumerate() {
        let (client, stop, ok, failed) = (client.clone(), stop.clone(), ok.clone(), failed.clone());
        callers.push(tokio::spawn(async move {
            let target = format!("rr::w{}", (i + 1) % WORKERS);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                match call(&client, &target, json!({ "n": n })).await {
                    Ok(v) if v["n"] == n => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("worker {i}: call {n} to {target} failed: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    let calls_flow = |at_least: u64| {
        let ok = ok.clone();
        async move {
            common::eventually("calls flow", Duration::from_secs(30), || async {
                (ok.load(Ordering::Relaxed) >= at_least).then_some(())
            })
            .await
        }
    };
    calls_flow(50).await;

    let mut cluster = cluster;
    for (i, port) in ports.iter().copied().enumerate() {
        let restart_args = owned.clone();
        let (back, code) = tokio::task::spawn_blocking(move || {
            let code = cluster.terminate(i);
            let args: Vec<&str> = restart_args.iter().map(String::as_str).collect();
            cluster.restart(i, &[], NodeOptions::on_port(&port.to_string(), &args));
            (cluster, code)
        })
        .await
        .expect("restart node");
        cluster = back;
        assert_eq!(code, Some(0), "node {} drained and exited 0", i + 1);
        for f in 0..WORKERS {
            wait_function(&workers[0], &format!("rr::w{f}"), true).await;
        }
        let now = ok.load(Ordering::Relaxed);
        calls_flow(now + 50).await;
        println!(
            "rolling restart: node {} restarted; {} calls answered, {} failed so far",
            i + 1,
            ok.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed)
        );
    }
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.expect("caller task");
    }
    println!(
        "rolling restart: 3 nodes restarted one by one; {} calls answered, {} failed",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    if failed.load(Ordering::Relaxed) > 0 {
        let logs: Vec<String> = (0..3)
            .map(|i| {
                std::fs::read_to_string(cluster.data_dir(i).with_extension("log"))
                    .unwrap_or_default()
            })
            .collect();
        for (i, log) in logs.iter().enumerate() {
            for line in log.lines().filter(|l| {
                ["drain", "owed", "reattach", "held", "WARN", "retired"]
                    .iter()
                    .any(|k| l.contains(k))
            }) {
                eprintln!("node {}: {line}", i + 1);
            }
        }
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "a rolling restart fails no call"
    );
    drop(balancer);
    drop(cluster);
}
