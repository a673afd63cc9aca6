//! Calls, triggers, discovery and reattach with caller, callee and provider on
//! different nodes of a real 3-node cluster.
#![allow(deprecated)]

mod common;

use common::raw::{Inbound, RawClient};
use common::{call, unique_name, wait_function, worker, Cluster};
use iii_sdk::protocol::RegisterTriggerInput;
use iii_sdk::{Error, RegisterFunction};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

fn url(cluster: &Cluster, i: usize) -> String {
    cluster.node(i).url.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_crosses_nodes_with_results_errors_and_not_found() {
    let cluster = Cluster::start(3);
    let callee = worker(&url(&cluster, 0), &unique_name("callee"), None).await;
    callee.register_function(
        "math::double",
        RegisterFunction::new_async(|input: Value| async move {
            match input["n"].as_i64() {
                Some(n) => {
                    Ok::<Value, Error>(json!({"n": n * 2, "caller": input["_caller_worker_id"]}))
                }
                None => Err(Error::Remote {
                    code: "bad_input".into(),
                    message: "n is missing".into(),
                    stacktrace: None,
                }),
            }
        }),
    );
    let caller = worker(&url(&cluster, 2), &unique_name("caller"), None).await;
    wait_function(&caller, "math::double", true).await;
    let answer = call(&caller, "math::double", json!({"n": 21}))
        .await
        .unwrap();
    assert_eq!(answer["n"], 42);
    assert!(answer["caller"].as_str().is_some());
    let err = call(&caller, "math::double", json!({})).await.unwrap_err();
    assert!(
        matches!(err, Error::Remote { ref code, .. } if code == "bad_input"),
        "{err:?}"
    );
    let err = call(&caller, "math::nothing", json!({})).await.unwrap_err();
    assert!(
        matches!(err, Error::Remote { ref code, .. } if code == "function_not_found"),
        "{err:?}"
    );
    // Many calls in flight across nodes, each with its own answer.
    let mut pending = Vec::new();
    for n in 0..50 {
        let caller = caller.clone();
        pending.push(tokio::spawn(async move {
            call(&caller, "math::double", json!({"n": n})).await
        }));
    }
    for (n, task) in pending.into_iter().enumerate() {
        assert_eq!(task.await.unwrap().unwrap()["n"], json!(n as i64 * 2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_leaving_another_node_stops_the_call_at_once() {
    let cluster = Cluster::start(3);
    let callee = worker(&url(&cluster, 0), &unique_name("callee"), None).await;
    let started = common::register_never_answering(&callee, "slow::op");
    let caller = worker(&url(&cluster, 1), &unique_name("caller"), None).await;
    wait_function(&caller, "slow::op", true).await;
    let pending = tokio::spawn({
        let caller = caller.clone();
        async move { call(&caller, "slow::op", json!({})).await }
    });
    tokio::time::timeout(Duration::from_secs(10), started.notified())
        .await
        .unwrap();
    callee.shutdown_async().await;
    let err = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, Error::Remote { ref code, .. } if code == "invocation_stopped"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_owners_node_stops_calls_from_other_nodes_at_once() {
    let mut cluster = Cluster::start(3);
    let callee = worker(&url(&cluster, 0), &unique_name("callee"), None).await;
    let started = common::register_never_answering(&callee, "slow::op");
    let caller = worker(&url(&cluster, 1), &unique_name("caller"), None).await;
    wait_function(&caller, "slow::op", true).await;
    let pending = tokio::spawn({
        let caller = caller.clone();
        async move { call(&caller, "slow::op", json!({})).await }
    });
    tokio::time::timeout(Duration::from_secs(10), started.notified())
        .await
        .unwrap();
    let killed = Instant::now();
    cluster.kill(0);
    let err = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, Error::Remote { ref code, .. } if code == "invocation_stopped"),
        "{err:?}"
    );
    println!("invocation_stopped {:?} after SIGKILL", killed.elapsed());
    callee.shutdown_async().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_and_discovery_span_the_cluster() {
    let cluster = Cluster::start(3);
    let (_provider, mut rx) = common::recording_provider(&url(&cluster, 0), "cron").await;
    let consumer = worker(&url(&cluster, 2), &unique_name("consumer"), None).await;
    common::wait_trigger_type(&consumer, "cron").await;
    consumer
        .register_trigger(RegisterTriggerInput {
            trigger_type: "cron".into(),
            function_id: "jobs::tick".into(),
            config: json!({"every": "1m"}),
            metadata: None,
            namespace: None,
            trigger_namespace: None,
        })
        .unwrap();
    let (kind, forwarded) = common::next_trigger_request(&mut rx).await;
    assert_eq!(kind, "register");
    assert_eq!(forwarded.function_id, "jobs::tick");

    // A busy worker on node 1 shows as busy from node 3.
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (s, r) = (started.clone(), release.clone());
    let busy_name = unique_name("busy");
    let busy = worker(&url(&cluster, 0), &busy_name, None).await;
    busy.register_function(
        "hold::it",
        RegisterFunction::new_async(move |_: Value| {
            let (s, r) = (s.clone(), r.clone());
            async move {
                s.notify_one();
                r.notified().await;
                Ok::<Value, Error>(json!(null))
            }
        }),
    );
    wait_function(&consumer, "hold::it", true).await;
    let pending = tokio::spawn({
        let consumer = consumer.clone();
        async move { call(&consumer, "hold::it", json!({})).await }
    });
    tokio::time::timeout(Duration::from_secs(10), started.notified())
        .await
        .unwrap();
    let rows = call(&consumer, "engine::workers::list", json!({}))
        .await
        .unwrap();
    let row = rows["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == busy_name.as_str())
        .cloned()
        .unwrap();
    assert_eq!(row["status"], "busy", "{row}");
    release.notify_one();
    pending.await.unwrap().unwrap();
    let names: Vec<String> = rows["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["name"].as_str().map(String::from))
        .collect();
    assert!(
        names.len() >= 3,
        "workers of every node are listed: {names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reattach_onto_another_node_retires_the_old_connection() {
    let cluster = Cluster::start(3);
    let mut old = RawClient::connect(&url(&cluster, 0)).await;
    let name = unique_name("mover");
    old.announce(&name, None).await;
    old.send(json!({"type":"registerfunction","id":"mover::fn"}))
        .await;
    let observer = worker(&url(&cluster, 2), &unique_name("observer"), None).await;
    wait_function(&observer, "mover::fn", true).await;
    let mut new = RawClient::connect(&url(&cluster, 1)).await;
    new.send(
        json!({"type":"reattach","previous_worker_id":old.worker_id,"reattach_token":old.token}),
    )
    .await;
    new.announce(&name, None).await;
    new.send(json!({"type":"registerfunction","id":"mover::fn"}))
        .await;
    loop {
        if let Inbound::Closed(_) = old.next().await {
            break;
        }
    }
    let owner = common::wait_served_by(&observer, &new.worker_id, "mover::fn").await;
    assert_eq!(owner["name"], name.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_between_survivors_continue_while_the_leader_dies() {
    let mut cluster = Cluster::start(3);
    let leader = Cluster::index_of(cluster.wait_for_leader());
    let (a, b) = ((leader + 1) % 3, (leader + 2) % 3);
    let callee = worker(&url(&cluster, a), &unique_name("callee"), None).await;
    callee.register_function(
        "echo::it",
        RegisterFunction::new_async(|input: Value| async move { Ok::<Value, Error>(input) }),
    );
    let caller = worker(&url(&cluster, b), &unique_name("caller"), None).await;
    wait_function(&caller, "echo::it", true).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let load = tokio::spawn({
        let (caller, stop, answered) = (caller.clone(), stop.clone(), answered.clone());
        async move {
            let mut failed = Vec::new();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                match call(&caller, "echo::it", json!({"n": n})).await {
                    Ok(v) if v["n"] == n => {
                        answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    other => failed.push(format!("{other:?}")),
                }
            }
            failed
        }
    });
    // Let calls flow, kill the leader, and keep calling until a new leader is in place.
    common::eventually("calls flowing", Duration::from_secs(10), || async {
        (answered.load(std::sync::atomic::Ordering::Relaxed) >= 50).then_some(())
    })
    .await;
    let before_kill = answered.load(std::sync::atomic::Ordering::Relaxed);
    cluster.kill(leader);
    let new_leader = cluster.wait_for_leader();
    assert_ne!(Cluster::index_of(new_leader), leader);
    let after_election = answered.load(std::sync::atomic::Ordering::Relaxed);
    common::eventually(
        "calls continue after the election",
        Duration::from_secs(10),
        || async {
            (answered.load(std::sync::atomic::Ordering::Relaxed) >= after_election + 50)
                .then_some(())
        },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let failed = load.await.unwrap();
    let ok = answered.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "{ok} calls answered ({before_kill} before the kill), {} failed",
        failed.len()
    );
    assert!(failed.is_empty(), "failed calls: {failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_trigger_by_call_gets_the_verdict_of_a_provider_on_another_node() {
    let cluster = Cluster::start(3);
    let mut provider = RawClient::provider(&url(&cluster, 0), "picky").await;
    let caller = worker(&url(&cluster, 2), &unique_name("caller"), None).await;
    common::wait_trigger_type(&caller, "picky").await;
    let register = |caller: iii_sdk::IIIClient| {
        tokio::spawn(async move {
            call(
                &caller,
                "engine::register_trigger",
                json!({"trigger_type":"picky","function_id":"f"}),
            )
            .await
        })
    };

    // Refused on node 1: the caller on node 3 gets the provider's error.
    let pending = register(caller.clone());
    provider.answer_next_trigger(true).await;
    let err = pending.await.unwrap().unwrap_err();
    assert!(common::raw::is_refusal(&err), "{err:?}");

    // Accepted on node 1: the caller on node 3 gets the binding's id, the one the provider saw.
    let pending = register(caller.clone());
    let forwarded = provider.answer_next_trigger(false).await;
    let accepted = pending.await.unwrap().unwrap();
    assert_eq!(accepted["id"], forwarded["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_too_large_to_forward_is_refused_and_the_link_keeps_its_other_calls() {
    let cluster = Cluster::start(3);
    let callee_name = unique_name("callee");
    let callee = worker(&url(&cluster, 0), &callee_name, None).await;
    common::register_blob_size(&callee);
    let (release, gate) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (entered, waiting) = (gate.clone(), release.clone());
    callee.register_function(
        "gate::wait",
        RegisterFunction::new_async(move |_: Value| {
            let (entered, waiting) = (entered.clone(), waiting.clone());
            async move {
                entered.notify_one();
                waiting.notified().await;
                Ok::<Value, Error>(json!("done"))
            }
        }),
    );
    let caller = worker(&url(&cluster, 1), &unique_name("caller"), None).await;
    wait_function(&caller, "gate::wait", true).await;
    wait_function(&caller, "blob::size", true).await;
    let callee_id = common::worker_id_named(&caller, &callee_name).await;
    // A call in flight over the same link between the two nodes.
    let in_flight = tokio::spawn({
        let caller = caller.clone();
        async move { call(&caller, "gate::wait", json!({})).await }
    });
    tokio::time::timeout(Duration::from_secs(10), gate.notified())
        .await
        .expect("the gated call reached the callee");

    let mut raw = RawClient::connect(&url(&cluster, 1)).await;
    raw.announce(&unique_name("raw-caller"), None).await;
    raw.assert_near_limit_call_refused("blob::size").await;

    release.notify_one();
    assert_eq!(in_flight.await.unwrap().unwrap(), json!("done"));
    assert_eq!(
        call(&caller, "blob::size", json!({"blob": "abcd"}))
            .await
            .unwrap(),
        json!(4)
    );
    assert_eq!(
        common::worker_id_named(&caller, &callee_name).await,
        callee_id,
        "the callee did not reconnect"
    );
}

/// A result another node relays must be one valid JSON value: one that is not reaches its
/// caller as an `invocation_failed` error answer (it used to arrive as `null`), and a valid
/// one after it on the same stream is relayed as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_from_another_node_that_is_not_json_reaches_its_caller_as_an_error() {
    use common::cluster_rpc::{self, pb};
    use futures_util::StreamExt;
    let node = common::Node::start();
    let mut caller = RawClient::connect(&node.url).await;
    // As node 2 would, after the caller reattached here: answers owed to the worker.
    let answer = |invocation_id: &str, value_json: &[u8]| pb::InvocationFrame {
        kind: Some(pb::invocation_frame::Kind::WorkerAnswer(pb::WorkerAnswer {
            worker_id: caller.worker_id.clone(),
            invocation_id: invocation_id.into(),
            function_id: "peer::f".into(),
            ok: true,
            value_json: value_json.to_vec(),
            error_code: String::new(),
            error_message: String::new(),
        })),
    };
    // Nested deeper than serde_json's limit of 128: a worker's frame like it is refused.
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let frames = vec![
        answer("broken", b"{\"blob\": \"never closed"),
        answer("deep", deep.as_bytes()),
        answer("fine", b"{\"ok\": true}"),
    ];
    let mut request = tonic::Request::new(
        futures_util::stream::iter(frames).chain(futures_util::stream::pending()),
    );
    request
        .metadata_mut()
        .insert("x-quorum-node", "2".parse().expect("header"));
    let _stream = cluster_rpc::plaintext(&node.cluster)
        .invocations(request)
        .await
        .expect("the invocation stream opens");

    for id in ["broken", "deep"] {
        let result = caller.recv_type("invocationresult").await;
        assert_eq!(result["invocation_id"], id, "{result}");
        assert_eq!(result["error"]["code"], "invocation_failed", "{result}");
        let message = result["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("relayed by node 2 is not valid JSON"),
            "{message}"
        );
        assert!(result.get("result").is_none(), "{result}");
    }
    let result = caller.recv_type("invocationresult").await;
    assert_eq!(result["invocation_id"], "fine", "{result}");
    assert_eq!(result["result"], json!({"ok": true}), "{result}");
}
