//! A node stopped and started again on the same data directory: workers reconnect
//! with their SDK's own backoff, replay their registrations, and calls work again.

mod common;

use common::{call, unique_name, wait_function, worker, Node, NodeOptions};
use iii_sdk::{Error, RegisterFunction};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_come_back_after_a_node_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start_in(dir.path(), NodeOptions::default());
    let listen = node.listen.clone();
    let callee_name = unique_name("callee");
    let callee = worker(&node.url, &callee_name, None).await;
    callee.register_function(
        "svc::ping",
        RegisterFunction::new_async(|_: Value| async move { Ok::<Value, Error>(json!("pong")) }),
    );
    let caller = worker(&node.url, &unique_name("caller"), None).await;
    wait_function(&caller, "svc::ping", true).await;
    assert_eq!(
        call(&caller, "svc::ping", json!({})).await.unwrap(),
        json!("pong")
    );

    node.kill();
    let node = Node::start_in(
        dir.path(),
        NodeOptions {
            listen: Some(listen),
            ..Default::default()
        },
    );
    // The SDKs reconnect on their own (Rust: every 2 s) and replay everything.
    let answer = common::eventually(
        "svc::ping callable again",
        std::time::Duration::from_secs(20),
        || async { call(&caller, "svc::ping", json!({})).await.ok() },
    )
    .await;
    assert_eq!(answer, json!("pong"));
    // Nothing of the previous process's connections is left: two workers, no ghosts.
    let rows = call(&caller, "engine::workers::list", json!({}))
        .await
        .unwrap();
    let names: Vec<&str> = rows["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["name"].as_str())
        .collect();
    assert_eq!(
        names.iter().filter(|n| **n == callee_name).count(),
        1,
        "{rows}"
    );
    assert_eq!(rows["workers"].as_array().unwrap().len(), 2, "{rows}");
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_workers_with_going_away_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start_in(dir.path(), NodeOptions::default());
    let mut raw = common::raw::RawClient::connect(&node.url).await;
    raw.announce(&unique_name("raw"), None).await;
    let code = node.terminate();
    assert_eq!(code, Some(0), "log:\n{}", node.log());
    loop {
        match raw.next().await {
            common::raw::Inbound::Closed(code) => {
                assert_eq!(code, Some(1001));
                break;
            }
            common::raw::Inbound::Frame(_) => continue,
        }
    }
}
