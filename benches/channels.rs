//! Data channel throughput: one stream of 1 GiB in 64 KiB binary frames, written by the
//! Rust SDK's writer in this process and read by the Rust SDK's reader in another, through
//! one node (both ends on the channel's home) and through two (writer on the home, reader on
//! another node), against a bare TCP copy between two processes as the floor, all in one
//! run, with the nodes' peak RSS during the stream. Two relay floors run beside them: the TCP
//! copy through a plain byte-copying middle process, and the SDK's ends through a minimal
//! WebSocket relay process (`channels/relays.rs`), so the report shows what one hop costs on
//! this machine by itself. Prints a report; asserts only that every byte arrived.
//!
//! Run with `cargo bench --bench channels` (release) or `cargo bench --profile dev --bench
//! channels`; `QUORUM_BENCH_CHANNEL_MIB` sets the stream size (default 1024).

mod common;
#[path = "channels/relays.rs"]
mod relays;
// Shared with the adversarial tests; this bench uses part of it.
#[allow(dead_code)]
#[path = "../tests/common/footprint.rs"]
mod footprint;

use common::{client, cpu_time, start_node_with, Guard, ROLE};
use footprint::{rss_bytes, MIB};
use iii_sdk::channel::{ChannelReader, ChannelWriter, StreamChannelRef};
use iii_sdk::channels::ChannelDirection;
use iii_sdk::helpers::create_channel;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The frame size every SDK writer uses.
const FRAME: usize = 64 * 1024;

/// One measured stream.
struct Run {
    seconds: f64,
    bytes: u64,
    /// Peak RSS of each node during the stream, and its RSS just before.
    rss: Vec<(u64, u64)>,
    /// CPU seconds each node spent on the stream.
    cpu: Vec<f64>,
    /// CPU seconds the writer (this process) and the reader spent on it.
    ends_cpu: (f64, f64),
}

impl Run {
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds
    }
}

fn stream_bytes() -> u64 {
    std::env::var("QUORUM_BENCH_CHANNEL_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(1024)
        * MIB
}

// ---------------------------------------------------------------------------
// Helper processes (this bench re-executed with `QUORUM_BENCH_ROLE`)

/// Re-executes this bench in `role` with `env`; returns it and its stdout lines.
fn spawn_role(
    role: &str,
    env: &[(&str, String)],
) -> (Guard, std::io::Lines<BufReader<std::process::ChildStdout>>) {
    let mut command = Command::new(std::env::current_exe().expect("bench path"));
    command
        .env(ROLE, role)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("start helper");
    let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    (Guard::new(child), lines)
}

/// The floor's receiving side: prints its address, reads until EOF, prints the count.
fn tcp_sink() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    println!("{}", listener.local_addr().expect("addr"));
    let (mut socket, _) = listener.accept().expect("accept");
    let mut buf = vec![0u8; FRAME];
    let mut total = 0u64;
    loop {
        match socket.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) => panic!("sink read: {e}"),
        }
    }
    println!("DONE {total}");
}

/// A channel's reader: reads the stream at `CHANNEL_URL` for `CHANNEL_REF` to its end
/// with the Rust SDK and prints the byte count.
async fn channel_reader() {
    let url = std::env::var("CHANNEL_URL").expect("CHANNEL_URL");
    let channel: StreamChannelRef =
        serde_json::from_str(&std::env::var("CHANNEL_REF").expect("CHANNEL_REF")).expect("ref");
    let reader = ChannelReader::new(&url, &channel);
    println!("READY");
    let mut total = 0u64;
    while let Some(frame) = reader.next_binary().await.expect("read") {
        total += frame.len() as u64;
    }
    println!("DONE {total}");
}

fn done_count(lines: &mut impl Iterator<Item = std::io::Result<String>>) -> u64 {
    let line = lines
        .next()
        .expect("helper ended early")
        .expect("helper stdout");
    line.strip_prefix("DONE ")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected helper line: {line}"))
}

// ---------------------------------------------------------------------------
// Measurements

/// A bare TCP copy of `total` bytes in 64 KiB writes between this process and another;
/// `through_relay` puts the TCP relay process between them.
fn tcp_copy(total: u64, through_relay: bool) -> Run {
    let (_sink, mut lines) = spawn_role("tcp-sink", &[]);
    let sink_addr = lines.next().expect("sink address").expect("stdout");
    // The relay, when there is one, lives (and is killed by its guard) until the end.
    let mut relay =
        through_relay.then(|| spawn_role("tcp-relay", &[("SINK_ADDR", sink_addr.clone())]));
    let addr = match &mut relay {
        Some((_, relay_lines)) => relay_lines.next().expect("relay address").expect("stdout"),
        None => sink_addr,
    };
    let mut socket = std::net::TcpStream::connect(addr.trim()).expect("connect sink");
    let _ = socket.set_nodelay(true);
    let frame = vec![7u8; FRAME];
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        socket.write_all(&frame).expect("write");
        sent += FRAME as u64;
    }
    drop(socket);
    let bytes = done_count(&mut lines);
    Run {
        seconds: started.elapsed().as_secs_f64(),
        bytes,
        rss: Vec::new(),
        cpu: Vec::new(),
        ends_cpu: (0.0, 0.0),
    }
}

/// Samples each pid's RSS every 10 ms until stopped; the peak per pid.
fn watch_rss(pids: Vec<u32>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        let peaks: Vec<AtomicU64> = pids.iter().map(|_| AtomicU64::new(0)).collect();
        while !stop.load(Ordering::Relaxed) {
            for (pid, peak) in pids.iter().zip(&peaks) {
                peak.fetch_max(rss_bytes(*pid), Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        peaks.iter().map(|p| p.load(Ordering::Relaxed)).collect()
    })
}

/// Streams `total` bytes through a channel created on and written to `writer_url`, read
/// from `reader_url` by a helper process; `nodes` are the node processes to watch.
async fn channel_run(writer_url: &str, reader_url: &str, nodes: &[u32], total: u64) -> Run {
    let creator = client(writer_url, "bench-channel-creator");
    creator
        .wait_until_registered(Duration::from_secs(10))
        .await
        .expect("creator registered");
    let channel = create_channel(&creator, None)
        .await
        .expect("create channel");
    let ends = (&channel.writer_ref, &channel.reader_ref);
    stream_run((writer_url, reader_url), ends, nodes, total).await
}

/// Streams `total` bytes through the WebSocket relay process, which is watched like a node.
async fn ws_relay_run(total: u64) -> Run {
    let (relay, mut lines) = spawn_role("ws-relay", &[]);
    let url = lines.next().expect("relay url").expect("stdout");
    let end = |direction| StreamChannelRef {
        channel_id: "relayed".to_string(),
        access_key: "unused".to_string(),
        direction,
    };
    let ends = (&end(ChannelDirection::Write), &end(ChannelDirection::Read));
    let run = stream_run((&url, &url), ends, &[relay.0.id()], total).await;
    drop(relay);
    run
}

/// Streams `total` bytes from the SDK writer in this process at `urls.0` to the SDK reader
/// in a helper process at `urls.1`; `nodes` are the processes in between, watched.
async fn stream_run(
    urls: (&str, &str),
    ends: (&StreamChannelRef, &StreamChannelRef),
    nodes: &[u32],
    total: u64,
) -> Run {
    let (writer_url, reader_url) = urls;
    let (reader_process, mut lines) = spawn_role(
        "channel-reader",
        &[
            ("CHANNEL_URL", reader_url.to_string()),
            ("CHANNEL_REF", serde_json::to_string(ends.1).expect("ref")),
        ],
    );
    assert_eq!(lines.next().expect("reader").expect("stdout"), "READY");
    let writer = ChannelWriter::new(writer_url, ends.0);

    let before: Vec<u64> = nodes.iter().map(|pid| rss_bytes(*pid)).collect();
    let cpu_before: Vec<Duration> = nodes
        .iter()
        .map(|pid| cpu_time(*pid).unwrap_or_default())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_rss(nodes.to_vec(), stop.clone());
    let me = std::process::id();
    let reader_pid = reader_process.0.id();
    let ends_before = (
        cpu_time(me).unwrap_or_default(),
        cpu_time(reader_pid).unwrap_or_default(),
    );
    let frame = vec![7u8; FRAME];
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        writer.write(&frame).await.expect("write");
        sent += FRAME as u64;
    }
    writer.close().await.expect("close");
    let bytes = tokio::task::spawn_blocking(move || done_count(&mut lines))
        .await
        .expect("reader");
    let seconds = started.elapsed().as_secs_f64();
    // The reader has printed its count; it is not reaped before `reader_process` drops.
    let ends_cpu = (
        (cpu_time(me).unwrap_or_default() - ends_before.0).as_secs_f64(),
        (cpu_time(reader_pid).unwrap_or_default() - ends_before.1).as_secs_f64(),
    );
    stop.store(true, Ordering::Relaxed);
    let peaks = watcher.join().expect("rss watcher");
    let cpu = nodes
        .iter()
        .zip(&cpu_before)
        .map(|(pid, before)| (cpu_time(*pid).unwrap_or_default() - *before).as_secs_f64())
        .collect();
    Run {
        seconds,
        bytes,
        rss: peaks.into_iter().zip(before).collect(),
        cpu,
        ends_cpu,
    }
}

fn status(cluster_addr: &str) -> Option<Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_quorum"))
        .args(["cluster", "status", "--json", "--address", cluster_addr])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| serde_json::from_slice(&output.stdout).ok())
        .flatten()
}

/// Two nodes in one cluster; their guards, worker URLs and pids.
fn start_pair(root: &Path) -> Vec<(Guard, String, u32)> {
    let mut nodes: Vec<(Guard, String, u32)> = Vec::new();
    let mut seed = String::new();
    for i in 0..2 {
        let dir = root.join(format!("n{}", i + 1));
        std::fs::create_dir_all(&dir).expect("node dir");
        let id = (i + 1).to_string();
        let mut args = vec!["--node-id", id.as_str()];
        if i > 0 {
            args.extend(["--join", seed.as_str()]);
        }
        let (guard, ready) = start_node_with(&dir, "127.0.0.1:0", &args);
        if i == 0 {
            seed = ready["cluster_listen"]
                .as_str()
                .expect("cluster_listen")
                .to_string();
        }
        let pid = guard.0.id();
        let url = format!("ws://{}", ready["listen"].as_str().expect("listen"));
        nodes.push((guard, url, pid));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !status(&seed).is_some_and(|s| {
        s["members"].as_array().is_some_and(|m| m.len() == 2) && s["leader_id"].as_u64().is_some()
    }) {
        assert!(Instant::now() < deadline, "cluster did not form");
        std::thread::sleep(Duration::from_millis(50));
    }
    nodes
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

/// The load average over the last minute, from `/proc/loadavg` (empty where there is none):
/// the report says how busy the machine was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

/// Prints one row of the throughput table.
fn row(what: &str, run: &Run, against: &str) {
    println!("{what:<42} {:>8.1} MB/s  {against}", run.mb_per_s());
}

/// Prints the RSS and CPU of the processes watched during `run`.
fn footprint_lines(what: &str, run: &Run, names: &[&str]) {
    for (i, name) in names.iter().enumerate() {
        let (peak, before) = run.rss[i];
        println!(
            "{what}: {name} RSS {:.1} MiB before, peak {:.1} MiB during the stream; {:.1} s CPU",
            mib(before),
            mib(peak),
            run.cpu[i]
        );
    }
    println!(
        "{what}: writer process {:.1} s CPU, reader process {:.1} s CPU, over {:.1} s",
        run.ends_cpu.0, run.ends_cpu.1, run.seconds
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("tcp-sink") => return tcp_sink(),
        Ok("tcp-relay") => return relays::tcp_relay(),
        Ok("ws-relay") => return relays::ws_relay().await,
        Ok("channel-reader") => return channel_reader().await,
        _ => {}
    }
    let total = stream_bytes();
    let profile = if cfg!(debug_assertions) {
        "dev"
    } else {
        "release"
    };
    println!(
        "channel throughput: {} MiB in 64 KiB frames, Rust SDK writer -> node(s) -> Rust SDK reader in another process ({profile} profile); load average {} at the start",
        total / MIB,
        load_average()
    );

    let floor = tcp_copy(total, false);
    let ratio = |run: &Run, of: &Run| run.mb_per_s() / of.mb_per_s();
    row("bare TCP copy between two processes", &floor, "1.00x floor");
    let tcp_relay = tcp_copy(total, true);
    row(
        "TCP copy through a relay process",
        &tcp_relay,
        &format!("{:.2}x floor", ratio(&tcp_relay, &floor)),
    );
    let ws_relay = ws_relay_run(total).await;
    row(
        "SDK ends through a WebSocket relay process",
        &ws_relay,
        &format!("{:.2}x floor", ratio(&ws_relay, &floor)),
    );

    let root = tempfile::tempdir().expect("temp dir");
    let same = {
        let dir = root.path().join("single");
        std::fs::create_dir_all(&dir).expect("dir");
        let (guard, ready) = start_node_with(&dir, "127.0.0.1:0", &[]);
        let url = format!("ws://{}", ready["listen"].as_str().expect("listen"));
        let run = channel_run(&url, &url, &[guard.0.id()], total).await;
        drop(guard);
        run
    };
    row(
        "quorum, ends on the same node",
        &same,
        &format!(
            "{:.2}x floor (target >= 0.5), {:.2}x WebSocket relay",
            ratio(&same, &floor),
            ratio(&same, &ws_relay)
        ),
    );

    let cross = {
        let nodes = start_pair(root.path());
        let pids: Vec<u32> = nodes.iter().map(|n| n.2).collect();
        channel_run(&nodes[0].1, &nodes[1].1, &pids, total).await
    };
    row(
        "quorum, ends on different nodes",
        &cross,
        &format!(
            "{:.2}x same node (target >= 0.7), {:.2}x floor",
            ratio(&cross, &same),
            ratio(&cross, &floor)
        ),
    );
    footprint_lines("WebSocket relay", &ws_relay, &["relay process"]);
    footprint_lines("same node", &same, &["node"]);
    footprint_lines(
        "cross-node",
        &cross,
        &["home (writer's) node", "reader's node"],
    );
    println!("load average {} at the end", load_average());
    for (what, run) in [
        ("floor", &floor),
        ("TCP relay", &tcp_relay),
        ("WebSocket relay", &ws_relay),
        ("same node", &same),
        ("cross-node", &cross),
    ] {
        assert_eq!(
            run.bytes, total,
            "{what}: the reader got {} of {total} bytes",
            run.bytes
        );
    }
}
