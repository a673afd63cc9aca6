//! Disk benchmark: a node under steady worker churn (issue 11, item 3). Real SDK workers
//! connect, announce, register three functions and leave, at a steady rate, on one node with
//! its default snapshot settings; every 30 s the bench prints the data directory's size on
//! disk and the node's RSS. The size is what matters, not the timing.
//!
//! `cargo bench --bench churn`; `QUORUM_CHURN_MINUTES` (default 10) and
//! `QUORUM_CHURN_PER_MINUTE` (default 1000) change the run. It asserts nothing.

mod common;
// Shared with the adversarial tests; this bench uses part of it.
#[allow(dead_code)]
#[path = "../tests/common/footprint.rs"]
mod footprint;

use common::{client, start_node_with};
use footprint::{dir_bytes, rss_bytes};
use iii_sdk::{Error, RegisterFunction};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One worker's life: connect, announce, register three functions, wait until the engine
/// has them, leave.
async fn one_worker(url: String, n: u64, failures: Arc<AtomicU64>) {
    let worker = client(&url, &format!("churn-{n}"));
    for f in 0..3 {
        worker.register_function(
            format!("churn{n}::f{f}").as_str(),
            RegisterFunction::new_async(|input: Value| async move { Ok::<Value, Error>(input) }),
        );
    }
    if worker
        .wait_until_registered(Duration::from_secs(10))
        .await
        .is_err()
    {
        failures.fetch_add(1, Ordering::Relaxed);
    }
    worker.shutdown_async().await;
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[tokio::main]
async fn main() {
    let minutes = env_or("QUORUM_CHURN_MINUTES", 10);
    let per_minute = env_or("QUORUM_CHURN_PER_MINUTE", 1000).max(1);
    let tmp = tempfile::tempdir().expect("temp dir");
    let data_dir = tmp.path().to_path_buf();
    let (node, ready) = start_node_with(&data_dir, "127.0.0.1:0", &[]);
    let url = format!("ws://{}", ready["listen"].as_str().expect("listen"));
    let pid = node.0.id();
    println!(
        "churn: {per_minute} workers/min for {minutes} min on one node (default snapshot settings)"
    );
    println!("  t(s)  workers  failed  data dir (MiB)  RSS (MiB)");
    let failures = Arc::new(AtomicU64::new(0));
    let pace = Duration::from_micros(60_000_000 / per_minute);
    let started = Instant::now();
    let end = Duration::from_secs(minutes * 60);
    let mut ticker = tokio::time::interval(pace);
    let mut next_report = Duration::ZERO;
    let (mut n, mut peak_dir, mut peak_rss) = (0u64, 0u64, 0u64);
    while started.elapsed() < end {
        ticker.tick().await;
        tokio::spawn(one_worker(url.clone(), n, failures.clone()));
        n += 1;
        if started.elapsed() >= next_report {
            let (dir, rss) = (dir_bytes(&data_dir), rss_bytes(pid));
            peak_dir = peak_dir.max(dir);
            peak_rss = peak_rss.max(rss);
            println!(
                "{:>6}  {n:>7}  {:>6}  {:>13.1}  {:>9.0}",
                started.elapsed().as_secs(),
                failures.load(Ordering::Relaxed),
                mib(dir),
                mib(rss)
            );
            next_report += Duration::from_secs(30);
        }
    }
    tokio::time::sleep(Duration::from_secs(15)).await;
    let (dir, rss) = (dir_bytes(&data_dir), rss_bytes(pid));
    println!(
        "done: {n} workers, {} failed; data dir {:.1} MiB (peak {:.1}), RSS {:.0} MiB (peak {:.0})",
        failures.load(Ordering::Relaxed),
        mib(dir),
        mib(peak_dir.max(dir)),
        mib(rss),
        mib(peak_rss.max(rss))
    );
    drop(node);
}
