//! Registration throughput and list latency (issue 11, item 7), measured in one run.
//! Run with `cargo bench --bench registrations`; it asserts nothing.
//!
//! Figures: functions/s for one worker pipelining `registerfunction` frames to one node;
//! functions/s for 100 workers in parallel spread over a 3-node cluster; and the latency of
//! a full `engine::functions::list` at that many functions, next to the time this process
//! takes to serialise the same JSON (the floor any engine pays).
//!
//! Sizes come from the environment: `QUORUM_BENCH_FUNCTIONS` (one worker, default 100,000),
//! `QUORUM_BENCH_WORKERS` (default 100) × `QUORUM_BENCH_FUNCTIONS_PER_WORKER` (default
//! 1,000), `QUORUM_BENCH_LISTS` (list calls timed, default 20).
//!
//! A registration is visible once a call sent after it on the same connection is answered:
//! the engine commits a connection's registrations before it handles its next call.

mod common;

use common::start_node_with;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A raw worker connection, announced under `name`.
async fn connect(url: &str, name: &str) -> Socket {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    let _greeting = ws.next().await;
    let announce = json!({"type": "invokefunction", "function_id": "engine::workers::register",
        "data": {"runtime": "bench", "name": name, "pid": std::process::id()},
        "action": {"type": "void"}});
    send(&mut ws, &announce).await;
    ws
}

async fn send(ws: &mut Socket, frame: &Value) {
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .expect("send");
}

/// Calls `function_id` and returns the answer's text.
async fn call(ws: &mut Socket, function_id: &str, data: Value) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    send(
        ws,
        &json!({"type": "invokefunction", "invocation_id": id, "function_id": function_id, "data": data}),
    )
    .await;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(120), ws.next())
            .await
            .expect("an answer in time")
            .expect("open")
            .expect("frame");
        match message {
            Message::Text(text) => {
                let head: String = text.chars().take(200).collect();
                if head.contains(&id) {
                    return text.to_string();
                }
            }
            Message::Close(frame) => panic!("closed by the node while waiting: {frame:?}"),
            _ => {}
        }
    }
}

/// Pipelines `ids` as `registerfunction` frames, then waits until the last is visible.
async fn register(ws: &mut Socket, ids: &[String]) {
    for id in ids {
        let frame = json!({"type": "registerfunction", "id": id, "description": "bench"});
        ws.feed(Message::Text(frame.to_string().into()))
            .await
            .expect("feed");
    }
    ws.flush().await.expect("flush");
    let last = ids.last().expect("at least one id");
    let answer = call(ws, "engine::functions::info", json!({"function_id": last})).await;
    assert!(
        answer.contains("\"result\""),
        "{last} visible: {answer:.200}"
    );
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}::{i:06}")).collect()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Starts three joined nodes; returns their guards and worker URLs.
fn three_nodes(root: &std::path::Path) -> (Vec<common::Guard>, Vec<String>) {
    let mut guards = Vec::new();
    let mut urls = Vec::new();
    let mut seed: Option<String> = None;
    for i in 1..=3 {
        let dir = root.join(format!("n{i}"));
        std::fs::create_dir_all(&dir).expect("node dir");
        let id = i.to_string();
        let mut args = vec!["--node-id", id.as_str()];
        if let Some(seed) = seed.as_deref() {
            args.extend(["--join", seed]);
        }
        let (guard, ready) = start_node_with(&dir, "127.0.0.1:0", &args);
        seed.get_or_insert_with(|| ready["cluster_listen"].as_str().expect("cluster").into());
        urls.push(format!(
            "ws://{}",
            ready["listen"].as_str().expect("listen")
        ));
        guards.push(guard);
    }
    (guards, urls)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let functions = env_or("QUORUM_BENCH_FUNCTIONS", 100_000);
    let workers = env_or("QUORUM_BENCH_WORKERS", 100);
    let per_worker = env_or("QUORUM_BENCH_FUNCTIONS_PER_WORKER", 1_000);
    let lists = env_or("QUORUM_BENCH_LISTS", 20).max(1);
    let root = tempfile::tempdir().expect("temp dir");

    // One worker, one node.
    let single = root.path().join("single");
    std::fs::create_dir_all(&single).expect("dir");
    let (_node, ready) = start_node_with(&single, "127.0.0.1:0", &[]);
    let url = format!("ws://{}", ready["listen"].as_str().expect("listen"));
    let mut ws = connect(&url, "bench-bulk").await;
    let names = ids("bulk", functions);
    let started = Instant::now();
    register(&mut ws, &names).await;
    let one_worker = started.elapsed();

    // List latency at that size, against serialising the same JSON here.
    let mut list_times = Vec::new();
    let mut text = String::new();
    for _ in 0..lists {
        let started = Instant::now();
        text = call(&mut ws, "engine::functions::list", json!({})).await;
        list_times.push(started.elapsed());
    }
    let list = median(list_times);
    let frame: Value = serde_json::from_str(&text).expect("list JSON");
    let rows = frame["result"]["functions"].as_array().map_or(0, Vec::len);
    let mut serialise_times = Vec::new();
    for _ in 0..lists {
        let started = Instant::now();
        let again = serde_json::to_string(&frame).expect("serialise");
        serialise_times.push(started.elapsed());
        std::hint::black_box(again);
    }
    let serialise = median(serialise_times);
    let page_started = Instant::now();
    let _page = call(&mut ws, "engine::functions::list", json!({"limit": 1000})).await;
    let page = page_started.elapsed();
    drop(ws);

    // 100 workers in parallel over three nodes.
    let (_cluster, urls) = three_nodes(root.path());
    // The cluster has formed once a worker of each node can register and see its function.
    for (i, url) in urls.iter().enumerate() {
        let mut probe = connect(url, &format!("bench-probe-{i}")).await;
        register(&mut probe, &ids(&format!("probe{i}"), 1)).await;
    }
    let started = Instant::now();
    let lanes: Vec<_> = (0..workers)
        .map(|w| {
            let url = urls[w % urls.len()].clone();
            tokio::spawn(async move {
                let mut ws = connect(&url, &format!("bench-parallel-{w}")).await;
                register(&mut ws, &ids(&format!("w{w}"), per_worker)).await;
                ws
            })
        })
        .collect();
    let mut sockets = Vec::new();
    for lane in lanes {
        sockets.push(lane.await.expect("lane"));
    }
    let parallel = started.elapsed();
    let parallel_total = workers * per_worker;

    println!("registrations (one run, release build, loopback)");
    println!(
        "  one worker, one node:        {functions} functions visible in {:.2} s = {:.0} functions/s",
        one_worker.as_secs_f64(),
        functions as f64 / one_worker.as_secs_f64()
    );
    println!(
        "  {workers} workers, 3 nodes:        {parallel_total} functions visible in {:.2} s = {:.0} functions/s",
        parallel.as_secs_f64(),
        parallel_total as f64 / parallel.as_secs_f64()
    );
    println!(
        "  engine::functions::list:     {rows} rows, {} bytes, median of {lists}: {:.1} ms",
        text.len(),
        list.as_secs_f64() * 1e3
    );
    println!(
        "  serialising that JSON here:  {:.1} ms; list / serialise = {:.2}",
        serialise.as_secs_f64() * 1e3,
        list.as_secs_f64() / serialise.as_secs_f64()
    );
    println!(
        "  one page (limit 1000):       {:.2} ms",
        page.as_secs_f64() * 1e3
    );
}
