//! Per-connection limits that protect the node from one worker.

mod common;

use common::raw::RawClient;
use common::{unique_name, wait_function, worker, Node, NodeOptions};
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
