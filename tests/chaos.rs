//! Chaos: continuous calls between workers on every node while nodes are killed with
//! SIGKILL and restarted, or cut off from the others (fault-injecting relays on the gRPC
//! links, no root needed) and healed. Bounded for CI (40 s of faults by default; set
//! `QUORUM_CHAOS_SECS` for longer, `QUORUM_CHAOS_SEED` to replay a run). It prints the counts
//! and checks that:
//! - no call is answered with another call's result;
//! - every call ends within its timeout with a result or `invocation_stopped` (or
//!   `function_not_found` while its callee is reconnecting), except calls whose own caller's
//!   node was SIGKILLed while they ran on that same node: no engine is left to answer those
//!   (a call the dead node had forwarded is answered after the caller reattaches), and calls
//!   the caller's SDK wrote in the instant the engine closed its socket (fencing), after the
//!   close frame where no engine can read them: both are counted apart;
//! - after the faults stop, every node's registry lists exactly the live workers
//!   within 5 s.

mod common;

use common::relay::{Faults, Relay};
use common::{call, free_address, unique_name, worker, Cluster, NodeOptions};
use iii_sdk::runtime::IIIConnectionState;
use iii_sdk::{Error, IIIClient, RegisterFunction};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NODES: usize = 3;
/// A call that takes longer than this counts as lost (the SDK times out at 30 s).
const CALL_BUDGET: Duration = Duration::from_secs(20);

#[derive(Default, Debug)]
struct Counts {
    ok: u64,
    stopped: u64,
    not_found: u64,
    caller_node_died: u64,
    /// Calls the caller's SDK sent as the engine closed its socket (see below).
    sent_into_closing_socket: u64,
    /// Calls answered `channel_send_failed`: the owner's socket closed as the call arrived.
    owner_closing: u64,
    /// Calls answered with their result although their caller's node died during them.
    answered_after_reattach: u64,
    misrouted: Vec<String>,
    lost: Vec<String>,
}

/// Small deterministic generator, so a failing run can be replayed by its seed.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

/// Three nodes, each with its cluster port on its own loopback IP behind a relay that can
/// cut it off, and a fixed worker port it keeps across restarts.
struct Net {
    cluster: Cluster,
    faults: Faults,
    _relays: Vec<Relay>,
    ips: Vec<IpAddr>,
    options: Vec<NodeOptions>,
}

async fn start_net() -> Net {
    let faults = Faults::default();
    // A secure cluster: node certificates valid for every node and relay address.
    let mut cluster = Cluster::empty_secure();
    cluster.cert_hosts = (0..NODES as u8)
        .flat_map(|i| [format!("127.0.0.{}", 31 + i), format!("127.0.0.{}", 41 + i)])
        .collect();
    let (mut ips, mut relays, mut options) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..NODES as u8 {
        let ip: IpAddr = [127, 0, 0, 31 + i].into();
        let port = common::free_port_on(ip);
        let target = SocketAddr::new(ip, port);
        let relay = Relay::start([127, 0, 0, 41 + i].into(), target, &faults).await;
        let node = NodeOptions {
            listen: Some(free_address()),
            cluster_listen: Some(target.to_string()),
            args: vec!["--advertise".to_string(), relay.addr.to_string()],
            ..NodeOptions::default()
        };
        let mut first = node.clone();
        if i > 0 {
            let seed: &Relay = &relays[0];
            first
                .args
                .extend(["--join".to_string(), seed.addr.to_string()]);
        }
        tokio::task::block_in_place(|| cluster.spawn_node(first));
        ips.push(ip);
        relays.push(relay);
        options.push(node);
    }
    tokio::task::block_in_place(|| {
        cluster.wait_until("all three nodes are voters", |c| {
            c.status(0).is_some_and(|s| {
                let members = common::members(&s);
                s["leader_id"].as_u64().is_some()
                    && members.len() == NODES
                    && members.iter().all(|m| m.1 != "learner")
            })
        })
    });
    Net {
        cluster,
        faults,
        _relays: relays,
        ips,
        options,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_survive_random_node_kills_restarts_and_partitions() {
    let seconds: u64 = std::env::var("QUORUM_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let seed: u64 = std::env::var("QUORUM_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    println!("chaos: {seconds} s of faults, seed {seed}");
    let Net {
        mut cluster,
        faults,
        _relays,
        ips,
        options,
    } = start_net().await;
    let listens: Vec<String> = (0..NODES).map(|i| cluster.node(i).listen.clone()).collect();

    // One callee and one caller on every node.
    let mut callees = Vec::new();
    let mut names = Vec::new();
    for (i, listen) in listens.iter().enumerate() {
        let name = unique_name(&format!("callee{i}"));
        let callee = worker(&format!("ws://{listen}"), &name, None).await;
        callee.register_function(
            format!("chaos::echo{i}"),
            RegisterFunction::new_async(|input: Value| async move { Ok::<Value, Error>(input) }),
        );
        names.push(name);
        callees.push(callee);
    }
    let mut callers: Vec<(usize, IIIClient)> = Vec::new();
    for (i, listen) in listens.iter().enumerate() {
        let name = unique_name(&format!("caller{i}"));
        callers.push((i, worker(&format!("ws://{listen}"), &name, None).await));
        names.push(name);
    }
    for i in 0..NODES {
        common::wait_function(&callers[0].1, &format!("chaos::echo{i}"), true).await;
    }
    // Faults start once every worker's announcement has committed: a frame a worker sends
    // behind its own registration waits for that commit, which a partition holds up.
    let observer = &callers[0].1;
    common::eventually(
        "every worker is announced",
        Duration::from_secs(10),
        || async {
            let rows = call(observer, "engine::workers::list", json!({}))
                .await
                .ok()?;
            let listed: Vec<&str> = rows["workers"]
                .as_array()?
                .iter()
                .filter_map(|w| w["name"].as_str())
                .collect();
            names
                .iter()
                .all(|n| listed.contains(&n.as_str()))
                .then_some(())
        },
    )
    .await;

    // When each node was killed (to tell a call whose caller's node died under it).
    let epoch = Instant::now();
    let deaths: Arc<Mutex<Vec<Vec<Instant>>>> = Arc::new(Mutex::new(vec![Vec::new(); NODES]));
    let stop = Arc::new(AtomicBool::new(false));
    // When each caller's SDK saw its connection end (the engine fenced or drained it, or its
    // node died), watched every 2 ms.
    let drops: Arc<Mutex<Vec<Vec<Instant>>>> = Arc::new(Mutex::new(vec![Vec::new(); NODES]));
    let mut watchers = Vec::new();
    for (home, caller) in callers.iter().cloned() {
        let (drops, stop) = (drops.clone(), stop.clone());
        watchers.push(tokio::spawn(async move {
            let mut was_connected = true;
            while !stop.load(Ordering::Relaxed) {
                let connected = caller.get_connection_state() == IIIConnectionState::Connected;
                if was_connected && !connected {
                    drops.lock().unwrap()[home].push(Instant::now());
                }
                was_connected = connected;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    let counts = Arc::new(Mutex::new(Counts::default()));
    let mut lanes = Vec::new();
    for (home, caller) in callers.iter().cloned() {
        for lane in 0..4u64 {
            let (caller, stop, counts, deaths, drops) = (
                caller.clone(),
                stop.clone(),
                counts.clone(),
                deaths.clone(),
                drops.clone(),
            );
            lanes.push(tokio::spawn(async move {
                let mut n = lane;
                while !stop.load(Ordering::Relaxed) {
                    n += 4;
                    let target = format!("chaos::echo{}", n % NODES as u64);
                    let started = Instant::now();
                    let outcome = tokio::time::timeout(
                        CALL_BUDGET,
                        call(&caller, &target, json!({"n": n, "from": home})),
                    )
                    .await;
                    let caller_died = deaths.lock().unwrap()[home].iter().any(|d| *d >= started);
                    {
                        let mut c = counts.lock().unwrap();
                        match outcome {
                            Ok(Ok(v)) if v["n"] == n && v["from"] == home => {
                                c.ok += 1;
                                if caller_died {
                                    c.answered_after_reattach += 1;
                                }
                            }
                            Ok(Ok(v)) => c.misrouted.push(format!("{target} n={n}: {v}")),
                            Ok(Err(Error::Remote { code, .. })) if code == "invocation_stopped" => {
                                c.stopped += 1
                            }
                            Ok(Err(Error::Remote { code, .. })) if code == "function_not_found" => {
                                c.not_found += 1
                            }
                            // The reference engine's answer when the owner's connection closed
                            // just before the call reached it.
                            Ok(Err(Error::Remote { code, .. }))
                                if code == "channel_send_failed" =>
                            {
                                c.owner_closing += 1
                            }
                            _ if caller_died => c.caller_node_died += 1,
                            // Sent in the instant the engine closed the caller's socket: the SDK
                            // writes it after the engine's close frame, where no engine can read
                            // it, and keeps waiting for it.
                            Err(_)
                                if drops.lock().unwrap()[home].iter().any(|d| {
                                    *d + Duration::from_millis(5) >= started
                                        && *d <= started + Duration::from_millis(200)
                                }) =>
                            {
                                c.sent_into_closing_socket += 1
                            }
                            Ok(Err(Error::NotConnected)) => c.caller_node_died += 1,
                            other => c.lost.push(format!(
                                "{target} from node {} n={n} at {:?}: {other:?}",
                                home + 1,
                                started.duration_since(epoch)
                            )),
                        }
                    }
                    if caller_died {
                        // Give the SDK its reconnect before the next call.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }));
        }
    }

    let mut rng = Lcg(seed);
    let until = Instant::now() + Duration::from_secs(seconds);
    // What happened when, printed with the counts so a failure can be read against it.
    let mut timeline: Vec<String> = Vec::new();
    let at = || epoch.elapsed();
    let (mut kills, mut partitions) = (0u64, 0u64);
    while Instant::now() < until {
        let victim = rng.next(NODES as u64) as usize;
        if rng.next(2) == 0 {
            deaths.lock().unwrap()[victim].push(Instant::now());
            timeline.push(format!("{:?} kill node {}", at(), victim + 1));
            cluster.kill(victim);
            kills += 1;
            tokio::time::sleep(Duration::from_millis(500 + rng.next(2_000))).await;
            let options = options[victim].clone();
            tokio::task::block_in_place(|| cluster.restart_bare(victim, options));
            timeline.push(format!("{:?} node {} restarted", at(), victim + 1));
        } else {
            // Long enough to fence the node (2.5 s), sometimes to purge it (5 s).
            timeline.push(format!("{:?} cut node {}", at(), victim + 1));
            faults.cut(ips[victim]);
            partitions += 1;
            tokio::time::sleep(Duration::from_millis(3_000 + rng.next(3_000))).await;
            faults.heal(ips[victim]);
            timeline.push(format!("{:?} healed node {}", at(), victim + 1));
        }
        tokio::task::block_in_place(|| cluster.wait_for_leader());
        tokio::time::sleep(Duration::from_millis(1_000 + rng.next(2_000))).await;
    }
    stop.store(true, Ordering::Relaxed);
    for lane in lanes.into_iter().chain(watchers) {
        lane.await.unwrap();
    }

    // The registry converges on the live workers within 5 s once the faults stop.
    let faults_stopped = Instant::now();
    let mut expected: Vec<String> = names.clone();
    expected.sort();
    let mut observers = Vec::new();
    for listen in &listens {
        observers.push(worker(&format!("ws://{listen}"), &unique_name("observer"), None).await);
    }
    common::eventually(
        "every registry equals the live workers",
        Duration::from_secs(20),
        || async {
            for observer in &observers {
                let rows = call(observer, "engine::workers::list", json!({}))
                    .await
                    .ok()?;
                let mut listed: Vec<String> = rows["workers"]
                    .as_array()?
                    .iter()
                    .filter_map(|w| w["name"].as_str().map(String::from))
                    .filter(|n| !n.starts_with("observer"))
                    .collect();
                listed.sort();
                if listed != expected {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    let convergence = faults_stopped.elapsed();
    for observer in observers {
        observer.shutdown_async().await;
    }

    let c = counts.lock().unwrap();
    let mut summary = BTreeMap::new();
    summary.insert("kills", kills);
    summary.insert("partitions", partitions);
    summary.insert("channel_send_failed", c.owner_closing);
    summary.insert("sent_into_closing_socket", c.sent_into_closing_socket);
    summary.insert("answered_after_reattach", c.answered_after_reattach);
    summary.insert("ok", c.ok);
    summary.insert("invocation_stopped", c.stopped);
    summary.insert("function_not_found", c.not_found);
    summary.insert("caller_node_died", c.caller_node_died);
    summary.insert("misrouted", c.misrouted.len() as u64);
    summary.insert("lost", c.lost.len() as u64);
    println!("chaos timeline: {timeline:#?}");
    println!("chaos counts: {summary:?}; registry converged {convergence:?} after the faults");
    assert!(
        c.misrouted.is_empty(),
        "answered with another call's result: {:?}",
        c.misrouted
    );
    if let Some(dir) = std::env::var_os("QUORUM_CHAOS_KEEP_LOGS") {
        // For reading a failure afterwards: every node's full log.
        for i in 0..NODES {
            let from = cluster.data_dir(i).with_extension("log");
            let _ = std::fs::copy(
                from,
                std::path::Path::new(&dir).join(format!("node{}.log", i + 1)),
            );
        }
    }
    if !c.lost.is_empty() {
        for i in 0..NODES {
            let log = std::fs::read_to_string(cluster.data_dir(i).with_extension("log"))
                .unwrap_or_default();
            for line in log.lines().filter(|l| {
                !l.contains("openraft")
                    && [
                        "WARN",
                        "fenc",
                        "purg",
                        "worker connected",
                        "worker disconnected",
                    ]
                    .iter()
                    .any(|k| l.contains(k))
            }) {
                eprintln!("node {}: {line}", i + 1);
            }
        }
    }
    assert!(c.lost.is_empty(), "calls lost: {:?}", c.lost);
    assert!(c.ok > 100, "too few calls completed: {}", c.ok);
    assert!(
        convergence <= Duration::from_secs(5),
        "registry converged only after {convergence:?}"
    );
}
