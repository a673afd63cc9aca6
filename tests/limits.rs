//! Per-connection limits that protect the node from one worker.

mod common;

use common::raw::RawClient;
use common::{call, unique_name, wait_function, worker, Node, NodeOptions};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_past_the_buffer_limit_are_dropped_before_the_announcement() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_in(
        dir.path(),
        NodeOptions {
            args: vec!["--max-buffered-registrations".into(), "2".into()],
            ..Default::default()
        },
    );
    let mut raw = RawClient::connect(&node.url).await;
    for id in ["kept::one", "kept::two", "dropped::three"] {
        raw.send(json!({"type":"registerfunction","id":id})).await;
    }
    raw.announce(&unique_name("raw"), None).await;
    // After the announcement registrations apply directly, whatever the buffer held.
    raw.send(json!({"type":"registerfunction","id":"after::announce"}))
        .await;
    let observer = worker(&node.url, &unique_name("observer"), None).await;
    wait_function(&observer, "after::announce", true).await;
    let ids = common::function_ids(&observer).await;
    assert!(ids.contains(&"kept::one".to_string()));
    assert!(ids.contains(&"kept::two".to_string()));
    assert!(!ids.contains(&"dropped::three".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_or_worker_name_with_controls_or_bidi_is_refused_and_never_stored() {
    let node = Node::start();
    let hostile = "\u{202e}../../etc\0";
    let mut raw = RawClient::connect(&node.url).await;
    let bad_namespace = json!({"runtime":"raw","name":unique_name("raw"),"namespace":hostile});
    let answer = raw.call("engine::workers::register", bad_namespace).await;
    assert_eq!(answer["error"]["code"], "INVALID_NAMESPACE", "{answer}");
    let bad_name = json!({"runtime":"raw","name":hostile});
    let answer = raw.call("engine::workers::register", bad_name).await;
    assert_eq!(answer["error"]["code"], "INVALID_ARGUMENTS", "{answer}");
    let id = uuid::Uuid::new_v4().to_string();
    raw.send(json!({"type":"invokefunction","invocation_id":id,
        "function_id":"engine::workers::list","namespace":hostile,"data":{}}))
        .await;
    let answer = raw.recv_type("invocationresult").await;
    assert_eq!(answer["error"]["code"], "INVALID_NAMESPACE", "{answer}");
    let text = answer.to_string();
    assert!(!text.contains('\u{202e}') && !text.contains('\0'), "{text}");

    // A durable binding names the provider's namespace in `trigger_namespace`.
    let bad_binding = json!({"trigger_type":"cron","function_id":"f","trigger_namespace":hostile});
    let answer = raw.call("engine::register_trigger", bad_binding).await;
    assert_eq!(answer["error"]["code"], "INVALID_NAMESPACE", "{answer}");
    let text = answer.to_string();
    assert!(!text.contains('\u{202e}') && !text.contains('\0'), "{text}");

    let observer = worker(&node.url, &unique_name("observer"), None).await;
    let workers = call(&observer, "engine::workers::list", json!({}))
        .await
        .expect("workers list")
        .to_string();
    assert!(!workers.contains("../../etc"), "{workers}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_a_10_mb_function_id_gets_a_small_answer() {
    let node = Node::start();
    let mut raw = RawClient::connect(&node.url).await;
    let huge = "f".repeat(10 * 1024 * 1024);
    let answer = raw.call(&huge, json!({})).await;
    let size = answer.to_string().len();
    assert!(size < 1024, "answer of {size} bytes");
    assert_eq!(answer["error"]["code"], "function_not_found", "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("10485760 bytes"), "{message}");
}

/// The Raft log's last index, as `quorum cluster status` reports it.
fn last_log_index(node: &Node) -> u64 {
    common::cluster_status(&node.cluster).expect("status")["last_log_index"]
        .as_u64()
        .expect("last_log_index")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_first_reattach_of_a_connection_is_acted_on_so_a_flood_writes_nothing() {
    let node = Node::start();
    let mut flood = RawClient::connect(&node.url).await;
    // Settle the connection's own entries (connected, announced) before counting.
    flood.announce(&unique_name("flood"), None).await;
    let before = last_log_index(&node);
    // A token for an unknown previous connection is a claim the node would record in the
    // log (answers owed to that connection follow its successor).
    for i in 0..5_000 {
        let previous = uuid_like(i);
        flood
            .send(json!({"type":"reattach","previous_worker_id":previous,"reattach_token":"t"}))
            .await;
    }
    // Frames of one connection are handled in order: this answer comes after all of them.
    let answer = flood.call("engine::workers::list", json!({})).await;
    assert!(answer.get("error").is_none(), "{answer}");
    let written = last_log_index(&node) - before;
    assert!(
        written <= 2,
        "{written} log entries for 5,000 reattach frames"
    );
    let lines = node
        .log()
        .lines()
        .filter(|l| l.contains("second reattach on a connection ignored"))
        .count();
    assert!((1..5).contains(&lines), "{lines} lines about the flood");
}

fn uuid_like(i: u32) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}
