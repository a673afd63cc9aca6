//! Disk (issue 11, item 3): what one worker can make the node write is capped, and the Raft
//! log is compacted by size as well as by entries, so the data directory stays bounded.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::common::canary::Canary;
use super::common::footprint::{dir_bytes, peak_rss_bytes, rss_bytes, MIB};
use super::common::raw::RawClient;
use super::common::{http, unique_name, Node, NodeOptions};

/// One gauge of the node's `/metrics`.
async fn gauge(node: &Node, name: &str) -> u64 {
    let (_, body) = http::get(&node.http, "/metrics").await.expect("scrape");
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no gauge {name}"))
}

fn node_with(args: &[&str]) -> (tempfile::TempDir, Node) {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_in(
        dir.path(),
        NodeOptions {
            args: args.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        },
    );
    (dir, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_announcements_with_15_mib_of_metadata_are_refused_and_the_data_dir_stays_small() {
    let _serial = super::serial();
    let (_dir, node) = node_with(&[]);
    let canary = Canary::start(&node.url);
    let before = dir_bytes(&node.data_dir);
    let blob = "m".repeat(15 * MIB as usize);
    for i in 0..30 {
        let mut offender = RawClient::connect(&node.url).await;
        let data = json!({"name": unique_name("heavy"), "runtime": "raw",
            "telemetry": {"blob": blob}});
        let answer = offender.call("engine::workers::register", data).await;
        assert_eq!(
            answer["error"]["code"], "payload_too_large",
            "{i}: {answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("--max-registration-bytes"), "{message}");
        if i % 10 == 0 {
            // A function registration of the same size gets the refusal the SDKs survive.
            offender
                .send(json!({"type":"registerfunction","id":"heavy::f","metadata":{"blob": blob}}))
                .await;
            let refused = offender.recv_type("registrationrejected").await;
            assert_eq!(refused["code"], "FUNCTION_NAMESPACE_CONFLICT");
            assert_eq!(refused["function_id"], "heavy::f");
            // Refused, not cut off: the same connection still gets answers.
            let listed = offender.call("engine::workers::list", json!({})).await;
            assert!(listed["error"].is_null(), "{listed}");
        }
    }
    let grown = dir_bytes(&node.data_dir).saturating_sub(before);
    let peak = peak_rss_bytes(node.pid());
    let report = canary.stop();
    println!(
        "data dir grew {:.1} MiB, peak RSS {:.0} MiB",
        grown as f64 / MIB as f64,
        peak as f64 / MIB as f64
    );
    assert!(grown < 16 * MIB, "data dir grew by {grown} bytes");
    assert!(peak < 256 * MIB, "peak RSS {peak} bytes");
    report.assert_healthy(100);
}

/// Connects, announces with 2 KiB of metadata, registers `functions` functions and leaves.
async fn churn_one(url: &str, functions: usize) {
    let mut worker = RawClient::connect(url).await;
    let name = unique_name("churn");
    let telemetry = json!({"pad": "t".repeat(2048)});
    for f in 0..functions {
        worker
            .send(
                json!({"type":"registerfunction","id":format!("{name}::f{f}"),
                "metadata":{"pad":"f".repeat(512)}}),
            )
            .await;
    }
    let data = json!({"name": name, "runtime": "raw", "telemetry": telemetry});
    let answer: Value = worker.call("engine::workers::register", data).await;
    assert!(answer["error"].is_null(), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_of_worker_churn_keeps_the_data_dir_under_its_bound() {
    let _serial = super::serial();
    let (_dir, node) = node_with(&[
        "--snapshot-after-entries",
        "2000",
        "--snapshot-after-log-bytes",
        "1048576",
        "--snapshot-keep-entries",
        "100",
    ]);
    let canary = Canary::start(&node.url);
    let started = Instant::now();
    let mut peak_dir = 0;
    let mut workers = 0u64;
    let mut sizes = Vec::new();
    while started.elapsed() < Duration::from_secs(40) {
        let batch: Vec<_> = (0..4)
            .map(|_| tokio::spawn(churn_one_owned(node.url.clone())))
            .collect();
        for task in batch {
            task.await.expect("churn task");
        }
        workers += 4;
        if workers.is_multiple_of(200) {
            let size = dir_bytes(&node.data_dir);
            let rss = rss_bytes(node.pid());
            sizes.push((started.elapsed().as_secs(), size / MIB, rss / MIB));
            peak_dir = peak_dir.max(size);
        }
    }
    let report = canary.stop();
    let snapshot = gauge(&node, "quorum_raft_snapshot_index").await;
    let purged = gauge(&node, "quorum_raft_purged_index").await;
    let last = gauge(&node, "quorum_raft_last_log_index").await;
    println!(
        "{workers} workers in {:?}; log {last}, snapshot {snapshot}, purged {purged}; (s, data dir MiB, RSS MiB) over time {sizes:?}",
        started.elapsed()
    );
    assert!(snapshot > 0 && purged > 0, "the log was compacted");
    assert!(
        last - purged < 3_000,
        "at most a trigger's worth of entries plus the kept ones stay"
    );
    assert!(peak_dir < 16 * MIB, "data dir peaked at {peak_dir} bytes");
    report.assert_healthy(100);
}

async fn churn_one_owned(url: String) {
    churn_one(&url, 3).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_just_under_the_cap_are_compacted_by_size_and_their_space_comes_back() {
    let _serial = super::serial();
    let (_dir, node) = node_with(&[
        "--snapshot-after-log-bytes",
        "4194304",
        "--snapshot-keep-entries",
        "2",
    ]);
    let canary = Canary::start(&node.url);
    let before = dir_bytes(&node.data_dir);
    let metadata = json!({"blob": "r".repeat(800 * 1024)});
    let mut peak = 0;
    // Four workers each register 10 functions of 800 KiB (under the 1 MiB cap) and leave:
    // 32 MiB of log, far from the 5000-entry trigger.
    for round in 0..4 {
        let mut worker = RawClient::connect(&node.url).await;
        worker.announce(&unique_name("big"), None).await;
        for f in 0..10 {
            worker
                .send(
                    json!({"type":"registerfunction","id":format!("big{round}::f{f}"),
                    "metadata": metadata}),
                )
                .await;
        }
        // Frames are handled in order: once this answers, all ten were committed.
        let listed = worker.call("engine::workers::list", json!({})).await;
        assert!(listed["error"].is_null(), "{listed}");
        peak = peak.max(dir_bytes(&node.data_dir));
    }
    let purged = gauge(&node, "quorum_raft_purged_index").await;
    assert!(purged > 0, "the size trigger compacted the log");
    // Entries this big live in files of their own, which sled deletes once the writes that
    // follow move its log past them: ordinary churn goes on, and the directory comes down.
    let settled = super::common::eventually(
        "the data dir comes back down",
        Duration::from_secs(40),
        || async {
            for _ in 0..20 {
                churn_one(&node.url, 3).await;
            }
            let now = dir_bytes(&node.data_dir);
            (now < peak / 2).then_some(now)
        },
    )
    .await;
    let report = canary.stop();
    println!(
        "data dir {:.1} MiB before, peak {:.1} MiB, settled at {:.1} MiB",
        before as f64 / MIB as f64,
        peak as f64 / MIB as f64,
        settled as f64 / MIB as f64
    );
    assert!(peak < 160 * MIB, "data dir peaked at {peak} bytes");
    report.assert_healthy(100);
}
