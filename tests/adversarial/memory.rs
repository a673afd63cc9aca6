//! Issue 11, item 1: the client memory budget. Unfinished messages across many connections
//! stay within the node-wide budget; a worker that does not read is disconnected once its
//! outbound queue stays full for the stall timeout, and its calls end `invocation_stopped`
//! for their callers, as for any disconnect.

use futures_util::{SinkExt, StreamExt};
use iii_sdk::{Error, IIIClient, RegisterFunction};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

use super::amplifier::{Amplifier, BIG};
use super::common::canary::Canary;
use super::common::footprint::{assert_peak_within, cpu_time, peak_rss_bytes, rss_bytes, MIB};
use super::common::raw::RawClient;
use super::common::{call, eventually, unique_name, wait_function, worker, Node, NodeOptions};

/// The close code of a connection the budget ends.
const CLOSE_POLICY: u16 = 1008;
/// A node with `args` on a data directory that lives as long as the pair.
fn node_with(args: &[&str]) -> (Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let options = NodeOptions {
        args: args.iter().map(|a| a.to_string()).collect(),
        ..NodeOptions::default()
    };
    (Node::start_in(dir.path(), options), dir)
}

/// Whether `engine::workers::list` still shows `worker_id`.
async fn listed(observer: &IIIClient, worker_id: &str) -> bool {
    let rows = call(observer, "engine::workers::list", json!({}))
        .await
        .expect("workers list");
    rows["workers"]
        .as_array()
        .is_some_and(|rows| rows.iter().any(|w| w["id"] == worker_id))
}

/// Sends `n` calls of [`BIG`], each answered with `size` bytes, and never reads.
async fn ask_for_big_answers(client: &mut RawClient, n: usize, size: usize) {
    for _ in 0..n {
        let frame = json!({"type":"invokefunction","invocation_id":uuid::Uuid::new_v4().to_string(),
            "function_id":BIG,"data":{"size":size}});
        client
            .ws
            .feed(Message::Text(frame.to_string().into()))
            .await
            .expect("send call");
    }
    client.ws.flush().await.expect("flush calls");
}

/// 20 connections each send 60 MiB of a message they never finish. The node's budget
/// (256 MiB) holds: connections over their share are closed with 1008, RSS stays near the
/// budget, and the canary never notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_unfinished_messages_stay_within_the_budget() {
    let _serial = super::serial();
    let budget = 256 * MIB;
    let (node, _dir) = node_with(&["--client-memory-budget", "256MiB"]);
    let canary = Canary::start(&node.url);
    let idle = rss_bytes(node.pid());

    let mut offenders = Vec::new();
    for _ in 0..20 {
        let client = RawClient::connect(&node.url).await;
        offenders.push(tokio::spawn(async move {
            let (mut sink, mut stream) = client.ws.split();
            // Read while sending, so the close frame is seen before the socket goes.
            let closed = tokio::spawn(async move {
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(Message::Close(frame)) => return Some(frame.map(|f| u16::from(f.code))),
                        Ok(_) => continue,
                        Err(_) => return Some(None),
                    }
                }
                Some(None)
            });
            let chunk = vec![b'x'; MIB as usize];
            for i in 0..60 {
                let opcode = if i == 0 {
                    OpCode::Data(Data::Text)
                } else {
                    OpCode::Data(Data::Continue)
                };
                let frame = Frame::message(chunk.clone(), opcode, false);
                // Unpaced: as fast as loopback takes it (reads are taken in turns).
                if sink.send(Message::Frame(frame)).await.is_err() {
                    break;
                }
            }
            // Never finished. Closed by now, or held within the budget.
            tokio::time::timeout(Duration::from_secs(5), closed)
                .await
                .ok()
                .and_then(|joined| joined.ok().flatten())
        }));
    }
    let mut closed_by_policy = 0;
    let mut still_open = 0;
    for offender in offenders {
        match offender.await.unwrap() {
            Some(Some(CLOSE_POLICY)) => closed_by_policy += 1,
            None => still_open += 1,
            Some(other) => panic!("an offender ended with {other:?}, not {CLOSE_POLICY}"),
        }
    }
    let peak = peak_rss_bytes(node.pid());
    let report = canary.stop();
    eprintln!(
        "idle RSS {} MiB, peak {} MiB, closed with 1008: {closed_by_policy}, open: {still_open}; canary p99 {:?} max {:?} calls {}",
        idle / MIB,
        peak / MIB, report.p99(), report.max(), report.latencies.len()
    );
    // 60 MiB each: no more than 4 fit in 256 MiB.
    assert!(
        closed_by_policy >= 16,
        "{closed_by_policy} closed with {CLOSE_POLICY}, {still_open} open"
    );
    assert!(
        peak <= idle + budget + 150 * MIB,
        "peak RSS {} MiB over idle {} MiB + budget {} MiB + 150 MiB",
        peak / MIB,
        idle / MIB,
        budget / MIB
    );
    report.assert_healthy(100);
}

/// A client that never reads asks for 400 answers of 3 MB, which the amplifier (a process of
/// its own) sends as fast as the node takes them. Its outbound queue fills (it is
/// bounded in bytes), the node's memory stays bounded, and once the queue stayed full for
/// the stall timeout the client is disconnected; the worker producing the answers and the
/// canary are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_disconnected_after_the_stall_timeout() {
    let _serial = super::serial();
    let stall = Duration::from_secs(3);
    let (node, _dir) = node_with(&[
        "--client-memory-budget",
        "512MiB",
        "--outbound-stall-timeout-ms",
        "3000",
    ]);
    let canary = Canary::start(&node.url);
    let amp = Amplifier::start(&node.url).await;
    let observer = worker(&node.url, &unique_name("observer"), None).await;
    wait_function(&observer, BIG, true).await;
    let idle = rss_bytes(node.pid());

    let mut offender = RawClient::connect(&node.url).await;
    offender.announce(&unique_name("never-reads"), None).await;
    let offender_id = offender.worker_id.clone();
    eventually(
        "the offender is listed",
        Duration::from_secs(10),
        || async { listed(&observer, &offender_id).await.then_some(()) },
    )
    .await;
    let cpu_before = (cpu_time(node.pid()), cpu_time(amp.pid()));
    let asked = Instant::now();
    ask_for_big_answers(&mut offender, 400, 3_000_000).await;
    eventually(
        "the reader that never reads is disconnected",
        stall + Duration::from_secs(20),
        || async { (!listed(&observer, &offender_id).await).then_some(()) },
    )
    .await;
    let took = asked.elapsed();
    let cpu = (
        cpu_time(node.pid()) - cpu_before.0,
        cpu_time(amp.pid()) - cpu_before.1,
    );
    // 400 × 3 MB is 1.2 GB; the queue holds 32 MiB and one answer in writing.
    let peak = assert_peak_within(node.pid(), idle, 200 * MIB);
    let report = canary.stop();
    eprintln!(
        "disconnected after {took:?}; idle RSS {} MiB, peak {} MiB; CPU node {:?}, amplifier {:?}; \
         canary p99 {:?} max {:?} calls {}",
        idle / MIB,
        peak / MIB,
        cpu.0,
        cpu.1,
        report.p99(),
        report.max(),
        report.latencies.len()
    );
    assert!(
        took >= stall,
        "disconnected after {took:?}, before the stall timeout"
    );
    let amp_id = super::common::worker_id_named(&observer, &amp.name).await;
    assert!(
        listed(&observer, &amp_id).await,
        "the amplifier stays connected"
    );
    report.assert_healthy(100);
    let answers = amp.stop().await;
    eprintln!("the amplifier sent {answers} answers of 3 MB, unpaced");
    // The offender's 32 MiB queue holds 11 of them: it was filled, so it was the flood.
    assert!(answers > 10, "only {answers} answers were sent");
    observer.shutdown_async().await;
}

/// A worker holding a call stops reading and asks for 100 answers of 3 MB (sent unpaced);
/// once its queue stayed full for the stall timeout it is disconnected, and the caller on
/// another connection gets `invocation_stopped`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_readers_calls_end_invocation_stopped_for_their_callers() {
    let _serial = super::serial();
    let (node, _dir) = node_with(&["--outbound-stall-timeout-ms", "2000"]);
    let canary = Canary::start(&node.url);
    let amp = Amplifier::start(&node.url).await;
    let caller = worker(&node.url, &unique_name("caller"), None).await;
    wait_function(&caller, BIG, true).await;
    let idle = rss_bytes(node.pid());

    let function = format!("stalled::{}", unique_name("f").replace('-', "_"));
    let mut stalled = RawClient::connect(&node.url).await;
    stalled.announce(&unique_name("stalled"), None).await;
    stalled
        .send(json!({"type":"registerfunction","id":function}))
        .await;
    wait_function(&caller, &function, true).await;
    let pending = {
        let (caller, function) = (caller.clone(), function.clone());
        tokio::spawn(async move { call(&caller, &function, json!({})).await })
    };
    let invoke = stalled.recv_type("invokefunction").await;
    assert_eq!(invoke["function_id"], function.as_str());
    // It holds the call and stops reading; its queue fills with answers it asked for.
    ask_for_big_answers(&mut stalled, 100, 3_000_000).await;
    let started = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(30), pending)
        .await
        .expect("the held call ended")
        .unwrap();
    eprintln!(
        "the held call ended after {:?}: {outcome:?}",
        started.elapsed()
    );
    match outcome {
        Err(Error::Remote { code, .. }) => assert_eq!(code, "invocation_stopped"),
        other => panic!("expected invocation_stopped, got {other:?}"),
    }
    eventually(
        "the stalled reader is gone",
        Duration::from_secs(5),
        || async { (!listed(&caller, &stalled.worker_id).await).then_some(()) },
    )
    .await;
    assert_peak_within(node.pid(), idle, 200 * MIB);
    let report = canary.stop();
    eprintln!(
        "canary p99 {:?} max {:?} calls {}",
        report.p99(),
        report.max(),
        report.latencies.len()
    );
    report.assert_healthy(50);
    let answers = amp.stop().await;
    eprintln!("the amplifier sent {answers} answers of 3 MB, unpaced");
    assert!(answers > 10, "only {answers} answers were sent");
    caller.shutdown_async().await;
}

/// A single frame over the 16 MiB limit closes its connection with 1009 (message too big),
/// and only that connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_is_closed_with_1009() {
    let _serial = super::serial();
    let (node, _dir) = node_with(&[]);
    let canary = Canary::start(&node.url);
    let client = RawClient::connect(&node.url).await;
    let (mut sink, mut stream) = client.ws.split();
    let closed = tokio::spawn(async move {
        while let Some(item) = stream.next().await {
            match item {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    });
    let frame = Frame::message(
        vec![b'x'; 17 * MIB as usize],
        OpCode::Data(Data::Text),
        true,
    );
    let _ = sink.send(Message::Frame(frame)).await;
    let code = tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .expect("closed within 10 s")
        .unwrap();
    assert_eq!(code, Some(1009));
    eventually(
        "the canary goes on calling",
        Duration::from_secs(10),
        || async { (canary.snapshot().latencies.len() >= 20).then_some(()) },
    )
    .await;
    canary.stop().assert_healthy(20);
}

/// A worker that does not read, on one node, is sent large calls from another node until
/// its queue is full. The invocation stream between the nodes carries everyone's calls, so
/// it must never wait on that one queue: a call to a healthy worker on the same node still
/// answers at once, and the worker that does not read is disconnected after the stall time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_does_not_read_holds_up_no_calls_from_another_node() {
    let _serial = super::serial();
    let cluster = super::common::Cluster::start_with(2, |_| NodeOptions {
        args: vec!["--outbound-stall-timeout-ms".into(), "3000".into()],
        ..NodeOptions::default()
    });
    let (here, there) = (cluster.node(0), cluster.node(1));
    let canary = Canary::start(&here.url);
    let idle = rss_bytes(here.pid());
    let healthy = worker(&here.url, &unique_name("healthy"), None).await;
    healthy.register_function(
        "memory::fine",
        RegisterFunction::new_async(|input: Value| async move { Ok::<Value, Error>(input) }),
    );
    let mut stuck = RawClient::connect(&here.url).await;
    stuck.announce(&unique_name("stuck"), None).await;
    stuck
        .send(json!({"type":"registerfunction","id":"memory::stuck"}))
        .await;
    let caller = worker(&there.url, &unique_name("caller"), None).await;
    wait_function(&caller, "memory::stuck", true).await;
    wait_function(&caller, "memory::fine", true).await;

    // 3,000 calls of 20 KB (60 MB) for a worker that reads none of them, from the other node.
    let mut flood = RawClient::connect(&there.url).await;
    let blob = "s".repeat(20_000);
    for _ in 0..3_000 {
        let frame = json!({"type":"invokefunction","invocation_id":uuid::Uuid::new_v4().to_string(),
            "function_id":"memory::stuck","data":{"blob":blob}});
        flood
            .ws
            .feed(Message::Text(frame.to_string().into()))
            .await
            .expect("send call");
    }
    flood.ws.flush().await.expect("flush calls");
    // Past the stuck worker's queue, calls from that node to this one still flow.
    for n in 0..20 {
        let started = Instant::now();
        let answer = tokio::time::timeout(
            Duration::from_secs(2),
            call(&caller, "memory::fine", json!({ "n": n })),
        )
        .await
        .expect("a call to a healthy worker answered within 2 s")
        .expect("answered");
        assert_eq!(answer["n"], n);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "call {n} took {:?}",
            started.elapsed()
        );
    }
    eventually(
        "the worker that does not read is disconnected",
        Duration::from_secs(20),
        || async { (!listed(&caller, &stuck.worker_id).await).then_some(()) },
    )
    .await;
    let peak = assert_peak_within(here.pid(), idle, 200 * MIB);
    let report = canary.stop();
    eprintln!(
        "cross-node: idle RSS {} MiB, peak {} MiB",
        idle / MIB,
        peak / MIB
    );
    report.assert_healthy(50);
    healthy.shutdown_async().await;
    caller.shutdown_async().await;
}
