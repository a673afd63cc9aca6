//! The health and metrics endpoint of real nodes: probes answer by state, and the
//! Prometheus counters move with real SDK calls, locally and across nodes.

mod common;

use common::{call, eventually, http, unique_name, wait_function, worker, Cluster, Node};
use iii_sdk::{Error, RegisterFunction};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// One scrape: every sample by its series (`name{labels}` as written), plus the
/// families that declared a `# TYPE`.
struct Scrape {
    samples: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
}

impl Scrape {
    /// Parses the text format, checking every sample belongs to a declared family.
    fn parse(text: &str) -> Scrape {
        let mut samples = BTreeMap::new();
        let mut types = BTreeMap::new();
        let mut helped = BTreeSet::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split_whitespace().next().expect("HELP names a metric");
                helped.insert(name.to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                let name = parts.next().expect("TYPE names a metric").to_string();
                let kind = parts.next().expect("TYPE has a kind").to_string();
                assert!(helped.contains(&name), "{name} has TYPE without HELP");
                types.insert(name, kind);
            } else {
                assert!(!line.starts_with('#'), "unexpected comment {line:?}");
                let (series, value) = line.rsplit_once(' ').expect("sample has a value");
                let value: f64 = value.parse().expect("sample value is a number");
                let name = series.split('{').next().unwrap_or(series);
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| {
                        name.strip_suffix(suffix)
                            .filter(|base| types.get(*base).is_some_and(|t| t == "histogram"))
                    })
                    .unwrap_or(name);
                assert!(types.contains_key(family), "{name} has no # TYPE");
                samples.insert(series.to_string(), value);
            }
        }
        Scrape { samples, types }
    }

    /// The value of one series, exactly as written (`name` or `name{k="v"}`).
    fn get(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no series {series}"))
    }

    /// The sum of every series of metric `name`, whatever its labels.
    fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|(series, _)| series.split('{').next() == Some(name))
            .map(|(_, v)| v)
            .sum()
    }
}

async fn scrape(node: &Node) -> Scrape {
    let (status, body) = http::get(&node.http, "/metrics").await.expect("scrape");
    assert_eq!(status, 200, "{body}");
    Scrape::parse(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_is_alive_and_ready() {
    let node = Node::start();
    assert_eq!(http::get(&node.http, "/healthz").await.unwrap().0, 200);
    let (status, body) = http::get(&node.http, "/readyz").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(http::get(&node.http, "/nowhere").await.unwrap().0, 404);
    let metrics = scrape(&node).await;
    assert_eq!(
        metrics.types["iii_invocation_duration_seconds"],
        "histogram"
    );
    assert_eq!(metrics.get("quorum_raft_is_leader"), 1.0);
    assert_eq!(metrics.get("quorum_raft_leader_id"), node.node_id as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_between_two_workers_move_the_invocation_metrics() {
    let node = Node::start();
    let callee = worker(&node.url, &unique_name("callee"), None).await;
    callee.register_function(
        "math::half",
        RegisterFunction::new_async(|input: Value| async move {
            match input["n"].as_i64() {
                Some(n) if n % 2 == 0 => Ok::<Value, Error>(json!({"n": n / 2})),
                _ => Err(Error::Remote {
                    code: "odd".into(),
                    message: "n must be even".into(),
                    stacktrace: None,
                }),
            }
        }),
    );
    let caller = worker(&node.url, &unique_name("caller"), None).await;
    wait_function(&caller, "math::half", true).await;

    let before = scrape(&node).await;
    for n in [2, 4, 6, 8, 10] {
        call(&caller, "math::half", json!({"n": n})).await.unwrap();
    }
    for n in [1, 3] {
        call(&caller, "math::half", json!({"n": n}))
            .await
            .unwrap_err();
    }
    let after = scrape(&node).await;

    let moved = |series: &str| after.get(series) - before.get(series);
    assert_eq!(
        after.sum("iii_invocations_total") - before.sum("iii_invocations_total"),
        7.0
    );
    assert_eq!(moved("iii_invocations_total{result=\"ok\"}"), 5.0);
    assert_eq!(moved("iii_invocations_total{result=\"error\"}"), 2.0);
    assert_eq!(moved("iii_invocation_errors_total"), 2.0);
    assert_eq!(moved("iii_invocation_duration_seconds_count"), 7.0);
    assert_eq!(
        moved("iii_invocation_duration_seconds_bucket{le=\"+Inf\"}"),
        7.0
    );
    assert!(moved("iii_invocation_duration_seconds_sum") > 0.0);
    assert_eq!(after.get("iii_workers_active"), 2.0);
    assert!(after.get("iii_functions_registered") >= 1.0);
    assert_eq!(
        moved("quorum_forwarded_calls_total{direction=\"sent\"}"),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_another_node_counts_as_forwarded_on_both_sides() {
    let cluster = Cluster::start(2);
    let (owner_node, caller_node) = (cluster.node(0), cluster.node(1));
    let callee = worker(&owner_node.url, &unique_name("callee"), None).await;
    callee.register_function(
        "echo::back",
        RegisterFunction::new_async(|input: Value| async move { Ok::<Value, Error>(input) }),
    );
    let caller = worker(&caller_node.url, &unique_name("caller"), None).await;
    wait_function(&caller, "echo::back", true).await;

    let sent_before = scrape(caller_node).await;
    let received_before = scrape(owner_node).await;
    for n in 0..3 {
        call(&caller, "echo::back", json!({"n": n})).await.unwrap();
    }
    let sent_after = scrape(caller_node).await;
    let received_after = scrape(owner_node).await;

    let sent = "quorum_forwarded_calls_total{direction=\"sent\"}";
    let received = "quorum_forwarded_calls_total{direction=\"received\"}";
    assert_eq!(sent_after.get(sent) - sent_before.get(sent), 3.0);
    assert_eq!(
        received_after.get(received) - received_before.get(received),
        3.0
    );
    assert_eq!(
        sent_after.get("iii_invocations_total{result=\"ok\"}")
            - sent_before.get("iii_invocations_total{result=\"ok\"}"),
        3.0,
        "the caller's node counts the calls"
    );
    assert_eq!(
        received_after.sum("iii_invocations_total") - received_before.sum("iii_invocations_total"),
        0.0,
        "the owner's node does not count them again"
    );

    // Both nodes report the same leader; the leader reports its follower's lag.
    let leader = sent_after.get("quorum_raft_leader_id");
    assert!(leader >= 1.0);
    assert_eq!(received_after.get("quorum_raft_leader_id"), leader);
    assert!(sent_after.get("quorum_raft_term") >= 1.0);
    let (on_leader, follower) = if leader as u64 == owner_node.node_id {
        (&received_after, caller_node.node_id)
    } else {
        (&sent_after, owner_node.node_id)
    };
    let lag = format!("quorum_raft_replication_lag{{peer=\"{follower}\"}}");
    assert!(on_leader.get(&lag) >= 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_quorum_is_alive_but_not_ready() {
    let mut cluster = Cluster::start(2);
    let survivor = cluster.node(0).http.clone();
    assert_eq!(http::get(&survivor, "/readyz").await.unwrap().0, 200);
    cluster.kill(1);
    let reason = eventually("the survivor fences", Duration::from_secs(20), || {
        let survivor = survivor.clone();
        async move {
            let (status, body) = http::get(&survivor, "/readyz").await.ok()?;
            (status == 503 && body.contains("fenced")).then_some(body)
        }
    })
    .await;
    assert!(reason.starts_with("fenced"), "{reason}");
    assert_eq!(http::get(&survivor, "/healthz").await.unwrap().0, 200);
    let metrics = scrape(cluster.node(0)).await;
    assert_eq!(metrics.get("quorum_node_fenced"), 1.0);
}

/// Kills a node process that never printed its ready line.
struct Joining(std::process::Child);

impl Drop for Joining {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_is_alive_but_not_ready() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A port from the OS, released for the node to take (the ready line never comes).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let _node = Joining(
        std::process::Command::new(env!("CARGO_BIN_EXE_quorum"))
            .args(["serve", "--listen", "127.0.0.1:0", "--cluster-listen"])
            .args([
                "127.0.0.1:0",
                "--http-listen",
                &addr,
                "--join",
                "127.0.0.1:9",
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start quorum"),
    );
    let (status, _) = eventually("healthz answers", Duration::from_secs(15), || {
        let addr = addr.clone();
        async move { http::get(&addr, "/healthz").await.ok() }
    })
    .await;
    assert_eq!(status, 200);
    let (status, reason) = http::get(&addr, "/readyz").await.unwrap();
    assert_eq!(status, 503);
    assert_eq!(reason.trim(), "not serving workers yet");
}
