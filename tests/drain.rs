//! SIGTERM drains a node: its workers move to other nodes through a load balancer, calls for
//! them wait until they are back instead of failing, answers owed to a worker it closed follow
//! the worker to its new connection, leadership moves first, and the process exits 0.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::balancer::{Balancer, Door, Policy};
use common::channel_ends::metric;
use common::relay::RelayedCluster;
use common::{call, unique_name, wait_function, worker, Cluster};
use iii_sdk::{Error, RegisterFunction};
use serde_json::{json, Value};

/// Test timings: drains and holds short enough for a test, long enough for the Rust SDK's
/// fixed two-second reconnect delay.
const DRAIN_ARGS: [&str; 4] = ["--drain-grace-ms", "10000", "--call-hold-ms", "6000"];

/// The worker id serving `function_id`, from `engine::workers::list` as `observer` sees it.
async fn owner_of(observer: &iii_sdk::IIIClient, function_id: &str) -> Option<String> {
    let workers = call(observer, "engine::workers::list", json!({}))
        .await
        .ok()?;
    workers["workers"].as_array()?.iter().find(|w| {
        w["functions"]
            .as_array()
            .is_some_and(|f| f.iter().any(|id| id == function_id))
    })?["id"]
        .as_str()
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_to_a_draining_nodes_worker_wait_for_it_to_move_and_none_fails() {
    let (mut cluster, addrs) = Cluster::start_on_fixed_ports(3, &DRAIN_ARGS);
    // The callee lands on node 1 (the first backend); the balancer sends its reconnect on.
    let balancer = Balancer::start(addrs.clone(), Policy::FirstAvailable).await;
    let callee = worker(&balancer.url(), &unique_name("mover"), None).await;
    callee.register_function(
        "drain::echo",
        RegisterFunction::new_async(|input: Value| async move { Ok::<Value, Error>(input) }),
    );
    let caller = worker(&cluster.node(2).url, &unique_name("caller"), None).await;
    wait_function(&caller, "drain::echo", true).await;
    let first_owner = owner_of(&caller, "drain::echo").await.expect("served");

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let calling = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                match call(&caller, "drain::echo", json!({ "n": n })).await {
                    Ok(v) if v["n"] == n => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("call {n} failed: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            caller
        })
    };
    common::eventually("calls flow", Duration::from_secs(10), || async {
        (ok.load(Ordering::Relaxed) > 20).then_some(())
    })
    .await;

    let code = tokio::task::spawn_blocking(move || {
        let code = cluster.terminate(0);
        (cluster, code)
    })
    .await
    .expect("terminate");
    let (cluster, code) = code;
    assert_eq!(code, Some(0), "a drained node exits 0");

    let before = ok.load(Ordering::Relaxed);
    common::eventually(
        "calls flow after the move",
        Duration::from_secs(20),
        || async { (ok.load(Ordering::Relaxed) > before + 20).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let caller = calling.await.expect("caller task");
    let owner = owner_of(&caller, "drain::echo").await;
    println!(
        "drain: {} calls answered, {} failed; drain::echo served by {owner:?} (was {first_owner})",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no call failed");
    assert!(
        owner.is_some_and(|o| o != first_owner),
        "the worker reconnected to a surviving node and serves the function from there"
    );
    drop(cluster);
}

/// A caller's node that forwarded a call before it heard of the owner's drain: the draining
/// node routes the call again once the worker has moved, and the caller's node must not end
/// it when the worker's old connection leaves its replica in the meantime.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_forwarded_before_the_drain_was_known_is_answered_after_the_move() {
    // Long fences and purges: the caller's node is held off the cluster for a few seconds.
    let args = [
        "--call-hold-ms",
        "15000",
        "--drain-grace-ms",
        "20000",
        "--fence-after-ms",
        "20000",
        "--purge-after-ms",
        "21000",
    ];
    let net = RelayedCluster::start(3, 91, 101, &args).await;
    let leader = net.cluster.status(0).expect("status")["leader_id"]
        .as_u64()
        .expect("a leader");
    let leader = Cluster::index_of(leader);
    // The caller's node (held back below) and the owner's node (drained) are the followers.
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let (callers_node, owners_node) = (followers[0], followers[1]);
    let worker_addr = |i: usize| net.cluster.node(i).listen.parse().expect("worker address");

    let door = Door::start(Some(worker_addr(owners_node))).await;
    let mover = worker(&door.url(), &unique_name("mover"), None).await;
    // The held call (n = 2) answers only when the test lets it.
    let (reached, answer) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    let (reached_tx, answer_rx) = (reached.clone(), answer.clone());
    mover.register_function(
        "drain::moved",
        RegisterFunction::new_async(move |input: Value| {
            let (reached, answer) = (reached_tx.clone(), answer_rx.clone());
            async move {
                if input["n"] == 2 {
                    reached.notify_one();
                    answer.notified().await;
                }
                Ok::<Value, Error>(input)
            }
        }),
    );
    // A busy worker keeps the owner's node draining until the test lets it go.
    let release = Arc::new(tokio::sync::Notify::new());
    let busy = worker(
        &net.cluster.node(owners_node).url,
        &unique_name("busy"),
        None,
    )
    .await;
    let released = release.clone();
    busy.register_function(
        "drain::busy",
        RegisterFunction::new_async(move |_: Value| {
            let released = released.clone();
            async move {
                released.notified().await;
                Ok::<Value, Error>(json!("done"))
            }
        }),
    );
    let observer = worker(
        &net.cluster.node(leader).url,
        &unique_name("observer"),
        None,
    )
    .await;
    let caller = worker(
        &net.cluster.node(callers_node).url,
        &unique_name("caller"),
        None,
    )
    .await;
    wait_function(&caller, "drain::moved", true).await;
    wait_function(&observer, "drain::busy", true).await;
    let old_owner = owner_of(&caller, "drain::moved").await.expect("served");
    assert_eq!(
        call(&caller, "drain::moved", json!({ "n": 1 }))
            .await
            .expect("first call")["n"],
        1,
        "the call stream between the two nodes is open"
    );
    let busy_call = tokio::spawn(async move {
        let result = call(&observer, "drain::busy", json!({})).await;
        (observer, result)
    });

    // The caller's node hears nothing more from the cluster; its call to the owner's node
    // waits in the relay.
    let callers_node_metrics = net.cluster.node(callers_node);
    let sent = r#"quorum_forwarded_calls_total{direction="sent"}"#;
    let sent_before = metric(callers_node_metrics, sent).await;
    net.faults.hold(net.ips[callers_node]);
    let pending = tokio::spawn(async move {
        let result = call(&caller, "drain::moved", json!({ "n": 2 })).await;
        (caller, result)
    });
    common::eventually("the call is forwarded", Duration::from_secs(10), || async {
        (metric(callers_node_metrics, sent).await > sent_before).then_some(())
    })
    .await;

    // The owner's node drains; the mover's reconnects find the door shut.
    door.point(None);
    net.cluster.node(owners_node).sigterm();
    let leaders_view = worker(&net.cluster.node(leader).url, &unique_name("view"), None).await;
    common::eventually(
        "the old connection is gone",
        Duration::from_secs(10),
        || async {
            owner_of(&leaders_view, "drain::moved")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;

    // The call reaches the draining node, which holds it; the caller's node learns of the
    // drain and of the old connection's departure.
    net.faults.heal(net.ips[callers_node]);
    let callers_view = worker(
        &net.cluster.node(callers_node).url,
        &unique_name("view"),
        None,
    )
    .await;
    common::eventually(
        "the caller's node saw the departure",
        Duration::from_secs(10),
        || async {
            owner_of(&callers_view, "drain::moved")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
    assert!(
        !pending.is_finished(),
        "the call still waits for the moved worker: {:?}",
        pending.await.map(|(_, r)| r)
    );

    // The mover comes back on the leader's node; the held call goes there.
    door.point(Some(worker_addr(leader)));
    reached.notified().await;
    let new_owner = owner_of(&callers_view, "drain::moved").await;
    assert!(new_owner.is_some_and(|o| o != old_owner), "the mover moved");

    // The busy worker finishes and leaves: the draining node now owes only the relayed
    // answer, and must stay for it.
    release.notify_one();
    let (_observer, busy) = busy_call.await.expect("busy task");
    assert_eq!(busy.expect("the busy call finished"), "done");
    common::eventually("the busy worker left", Duration::from_secs(10), || async {
        owner_of(&callers_view, "drain::busy")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    let mut net = net;
    let stayed = tokio::time::timeout(Duration::from_secs(1), async {
        while net.cluster.nodes[owners_node]
            .as_mut()
            .is_some_and(|n| n.is_running())
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .is_err();
    assert!(stayed, "the draining node waits for the answer it relays");
    answer.notify_one();
    let (_caller, result) = pending.await.expect("caller task");
    assert_eq!(result.expect("answered after the move")["n"], 2);
    let code = tokio::task::block_in_place(|| net.cluster.nodes[owners_node].as_mut()?.wait_exit());
    assert_eq!(
        code,
        Some(0),
        "the drained node exits 0 once its calls are answered"
    );
    drop(mover);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_in_flight_from_a_drained_worker_is_answered_on_its_new_connection() {
    let (mut cluster, addrs) = Cluster::start_on_fixed_ports(3, &DRAIN_ARGS);
    // A slow callee on node 3, a caller that lands on node 1 through the balancer.
    let callee = worker(&cluster.node(2).url, &unique_name("slow"), None).await;
    let started = Arc::new(tokio::sync::Notify::new());
    let signal = started.clone();
    callee.register_function(
        "drain::slow",
        RegisterFunction::new_async(move |input: Value| {
            let signal = signal.clone();
            async move {
                signal.notify_one();
                tokio::time::sleep(Duration::from_secs(4)).await;
                Ok::<Value, Error>(json!({ "echo": input["n"] }))
            }
        }),
    );
    let balancer = Balancer::start(addrs.clone(), Policy::FirstAvailable).await;
    let caller = worker(&balancer.url(), &unique_name("waiter"), None).await;
    wait_function(&caller, "drain::slow", true).await;

    let pending = tokio::spawn(async move {
        let result = call(&caller, "drain::slow", json!({ "n": 7 })).await;
        (caller, result)
    });
    started.notified().await;
    // The caller's node drains while the call is in flight: the caller's socket closes.
    let (cluster, code) = tokio::task::spawn_blocking(move || {
        let code = cluster.terminate(0);
        (cluster, code)
    })
    .await
    .expect("terminate");
    assert_eq!(code, Some(0), "a drained node exits 0");
    let (_caller, result) = pending.await.expect("caller task");
    let result = result.expect("the answer follows the caller to its new connection");
    assert_eq!(result["echo"], 7);
    let log =
        std::fs::read_to_string(cluster.data_dir(0).with_extension("log")).unwrap_or_default();
    assert!(
        log.contains("answers owed to a closed worker follow it"),
        "the drained node redirected the answer; log:\n{log}"
    );
}

#[test]
fn a_draining_leader_hands_leadership_over_before_it_exits() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader();
    let index = Cluster::index_of(leader);
    let log_path = cluster.data_dir(index).with_extension("log");
    assert_eq!(
        cluster.terminate(index),
        Some(0),
        "a drained leader exits 0"
    );
    let log = std::fs::read_to_string(log_path).unwrap_or_default();
    assert!(
        log.contains("leadership handed over"),
        "the leader handed over before exiting; log:\n{log}"
    );
    let new_leader = cluster.wait_for_leader();
    assert_ne!(new_leader, leader);
}
