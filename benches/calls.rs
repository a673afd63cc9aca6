//! Call-path benchmark: a real quorum node, a callee worker in its own process and a
//! caller in this one, both with the published Rust SDK. Prints a report; asserts
//! nothing. Run with `cargo bench --bench calls`; set `QUORUM_BENCH_CALLS` for the
//! number of calls at 64 in flight (default 200000; 1000000 for the full check).

mod common;

use common::{call, callee, client, cpu_time, start_node, start_role, ROLE};
use hdrhistogram::Histogram;
use iii_sdk::protocol::{Dispatch, TriggerRequest};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const IN_FLIGHT: usize = 64;

/// A bare tokio-tungstenite echo server: the floor of one WebSocket round trip
/// between two processes on this machine, measured in the same run.
async fn echo_server() {
    use futures_util::{SinkExt, StreamExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    println!("{}", listener.local_addr().expect("addr"));
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            return;
        };
        let _ = socket.set_nodelay(true);
        tokio::spawn(async move {
            // The same read buffer as the node's, so the floor is not paying for a
            // bigger memset than the node does.
            let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                .read_buffer_size(16 * 1024);
            let Ok(mut ws) =
                tokio_tungstenite::accept_async_with_config(socket, Some(config)).await
            else {
                return;
            };
            while let Some(Ok(message)) = ws.next().await {
                if message.is_text() && ws.send(message).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Round trips of one small text frame, after 1,000 warm-up ones; `reply` says
/// which inbound text ends a round trip.
async fn raw_round_trips(
    url: &str,
    frame: &str,
    skip_greeting: bool,
    reply: &str,
) -> Histogram<u64> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("raw connect");
    if let Ok(socket) = match ws.get_ref() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => Ok(tcp),
        _ => Err(()),
    } {
        let _ = socket.set_nodelay(true);
    }
    if skip_greeting {
        let _ = ws.next().await;
    }
    let mut histogram = Histogram::<u64>::new(3).expect("histogram");
    for i in 0..6_000 {
        let start = Instant::now();
        ws.send(Message::Text(frame.to_string().into()))
            .await
            .expect("raw send");
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.contains(reply) => break,
                Some(Ok(_)) => continue,
                other => panic!("raw client lost its connection: {other:?}"),
            }
        }
        if i >= 1_000 {
            histogram
                .record(start.elapsed().as_micros() as u64)
                .expect("record");
        }
    }
    histogram
}

/// The guest kernel's idle halt-polling window, when the machine is a KVM guest that
/// has one: with 0 every wake-up of an idle vCPU goes through the hypervisor, which
/// dominates a loopback round trip (docs/benchmarks.md).
fn halt_poll_setting() -> String {
    match std::fs::read_to_string("/sys/module/haltpoll/parameters/guest_halt_poll_ns") {
        Ok(ns) => format!("guest_halt_poll_ns = {}", ns.trim()),
        Err(_) => "not a haltpoll guest".into(),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("callee") => return callee(std::env::var("III_URL").expect("III_URL")).await,
        Ok("echo") => return echo_server().await,
        _ => {}
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let total: u64 = std::env::var("QUORUM_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let (node, url) = start_node(dir.path());
    let callee_process = start_role("callee", &url);
    let caller = client(&url, "bench-caller");
    caller
        .wait_until_registered(Duration::from_secs(10))
        .await
        .expect("caller registered");
    // The callee said READY once its registration was sent; wait until it is callable.
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(&caller).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "bench::echo never became callable"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    for _ in 0..2_000 {
        let _ = call(&caller).await;
    }
    // The floor: one round trip to a bare echo server in another process.
    let echo = start_role("echo", &url);
    let floor = raw_round_trips(
        &format!("ws://{}", echo.1),
        "{\"type\":\"x\"}",
        false,
        "type",
    )
    .await;
    drop(echo);
    // A raw WebSocket client <-> node: the node's own share, without any SDK.
    let missing =
        json!({"type":"invokefunction","invocation_id":"9f3c1a2e-8b1d-4c1e-9a55-0c4b7a3f2e11",
        "function_id":"bench::missing","data":{"n":1}})
        .to_string();
    let raw_only = raw_round_trips(&url, &missing, true, "invocationresult").await;
    // Caller ↔ node only: the node answers `function_not_found` itself.
    let mut engine_only = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..5_000 {
        let start = Instant::now();
        let missing = caller
            .trigger(
                TriggerRequest::new("bench::missing", json!({"n": 1})).dispatch(Dispatch::Remote),
            )
            .await;
        assert!(missing.is_err());
        engine_only
            .record(start.elapsed().as_micros() as u64)
            .expect("record");
    }
    let mut latency = Histogram::<u64>::new(3).expect("histogram");
    let sequential = 20_000;
    for _ in 0..sequential {
        let start = Instant::now();
        call(&caller).await.expect("sequential call");
        latency
            .record(start.elapsed().as_micros() as u64)
            .expect("record");
    }

    let issued = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let pids = [node.0.id(), callee_process.0 .0.id(), std::process::id()];
    let cpu_before = pids.map(cpu_time);
    let start = Instant::now();
    let lanes: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (caller, issued, ok, failed) =
                (caller.clone(), issued.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                while issued.fetch_add(1, Ordering::Relaxed) < total {
                    match call(&caller).await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for lane in lanes {
        lane.await.expect("lane");
    }
    let elapsed = start.elapsed();
    let cpu_after = pids.map(cpu_time);
    let ok = ok.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);

    println!(
        "quorum call benchmark (one node, caller and callee in separate processes, Rust SDK 0.25)"
    );
    let otel = std::env::var("OTEL_ENABLED").unwrap_or_else(|_| "SDK default (on)".into());
    println!("SDK OpenTelemetry (OTEL_ENABLED): {otel}");
    println!(
        "node runtime threads: {}",
        std::env::var("QUORUM_RUNTIME_THREADS").unwrap_or_else(|_| "default".into())
    );
    println!("guest idle halt polling: {}", halt_poll_setting());
    println!("floor: raw client <-> bare echo server, 5000 round trips");
    println!(
        "  p50                   {} us",
        floor.value_at_quantile(0.50)
    );
    println!(
        "  p99                   {} us",
        floor.value_at_quantile(0.99)
    );
    println!("raw WebSocket client <-> node (function_not_found), 5000 calls");
    println!(
        "  p50                   {} us",
        raw_only.value_at_quantile(0.50)
    );
    println!(
        "  p99                   {} us",
        raw_only.value_at_quantile(0.99)
    );
    println!("SDK caller <-> node only (function_not_found), 5000 calls");
    println!(
        "  p50                   {} us",
        engine_only.value_at_quantile(0.50)
    );
    println!(
        "  p99                   {} us",
        engine_only.value_at_quantile(0.99)
    );
    println!("sequential calls        {sequential}");
    println!(
        "  p50                   {} us",
        latency.value_at_quantile(0.50)
    );
    println!(
        "  p99                   {} us",
        latency.value_at_quantile(0.99)
    );
    println!("  max                   {} us", latency.max());
    let floor_p50 = floor.value_at_quantile(0.50).max(1) as f64;
    println!(
        "  p50 / (2 x floor p50) {:.2}  (a call is two round trips)",
        latency.value_at_quantile(0.50) as f64 / (2.0 * floor_p50)
    );
    println!(
        "raw node round trip / floor, p50: {:.2}",
        raw_only.value_at_quantile(0.50) as f64 / floor_p50
    );
    println!("calls at {IN_FLIGHT} in flight    {total}");
    println!(
        "  throughput            {:.0} calls/s",
        ok as f64 / elapsed.as_secs_f64()
    );
    println!("  answered              {ok}");
    println!("  lost (error/timeout)  {failed}");
    println!("  CPU per call (user + system), by process:");
    let mut per_call_us = [0.0f64; 3];
    for (i, name) in ["node", "callee", "caller"].iter().enumerate() {
        if let (Some(before), Some(after)) = (cpu_before[i], cpu_after[i]) {
            let used = after.saturating_sub(before);
            per_call_us[i] = used.as_secs_f64() * 1e6 / total.max(1) as f64;
            println!(
                "    {name:<8}            {:.1} us  ({:.0} % of one core)",
                per_call_us[i],
                100.0 * used.as_secs_f64() / elapsed.as_secs_f64()
            );
        }
    }
    // What the two SDK processes alone allow: even an engine that cost nothing could not
    // go faster than the machine's cores can run the caller's and the callee's share.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let sdk_us = per_call_us[1] + per_call_us[2];
    if sdk_us > 0.0 {
        println!(
            "  ceiling with a zero-cost engine on {cores} cores: {:.0} calls/s",
            cores as f64 * 1e6 / sdk_us
        );
    }
    caller.shutdown_async().await;
}
