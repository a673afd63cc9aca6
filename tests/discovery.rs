//! Built-in discovery functions and the discovery trigger types.

mod common;

use common::{call, unique_name, wait_function, worker, Node};
use iii_sdk::protocol::RegisterTriggerInput;
use iii_sdk::{Error, RegisterFunction};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_list_shows_lifecycle_status_and_function_counts() {
    let node = Node::start();
    let name = unique_name("busy");
    let callee = worker(&node.url, &name, None).await;
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (s, r) = (started.clone(), release.clone());
    callee.register_function(
        "work::hold",
        RegisterFunction::new_async(move |_: Value| {
            let (s, r) = (s.clone(), r.clone());
            async move {
                s.notify_one();
                r.notified().await;
                Ok::<Value, Error>(json!("done"))
            }
        }),
    );
    let caller = worker(&node.url, &unique_name("caller"), None).await;
    wait_function(&caller, "work::hold", true).await;
    let row_of = |list: Value| {
        list["workers"]
            .as_array()
            .and_then(|rows| rows.iter().find(|w| w["name"] == name.as_str()).cloned())
            .expect("worker row")
    };
    let idle = row_of(
        call(&caller, "engine::workers::list", json!({}))
            .await
            .unwrap(),
    );
    assert_eq!(idle["status"], "available");
    assert_eq!(idle["function_count"], 1);
    assert_eq!(idle["functions"], json!(["work::hold"]));
    assert_eq!(idle["runtime"], "rust");
    assert_eq!(idle["active_invocations"], 0);
    assert!(idle["connected_at_ms"].as_u64().unwrap() > 0);

    let pending = tokio::spawn({
        let caller = caller.clone();
        async move { call(&caller, "work::hold", json!({})).await }
    });
    tokio::time::timeout(Duration::from_secs(10), started.notified())
        .await
        .unwrap();
    let busy = row_of(
        call(&caller, "engine::workers::list", json!({}))
            .await
            .unwrap(),
    );
    assert_eq!(busy["status"], "busy");
    assert_eq!(busy["active_invocations"], 1);
    let filtered = call(&caller, "engine::workers::list", json!({"status": "busy"}))
        .await
        .unwrap();
    assert_eq!(filtered["workers"].as_array().unwrap().len(), 1);
    release.notify_one();
    assert_eq!(pending.await.unwrap().unwrap(), json!("done"));

    let info = call(&caller, "engine::workers::info", json!({"name": name}))
        .await
        .unwrap();
    assert_eq!(info["worker"]["name"], name.as_str());
    assert!(info["worker"]["pid"].as_u64().is_some());
    assert_eq!(info["functions"][0]["function_id"], "work::hold");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_list_and_info_follow_the_reference_shapes() {
    let node = Node::start();
    let name = unique_name("shop");
    let w = worker(&node.url, &name, None).await;
    w.register_function(
        "shop::cart::add",
        RegisterFunction::new_async(|_: Value| async move { Ok::<Value, Error>(json!(null)) })
            .description("Add an item to the cart")
            .metadata(json!({"team": "cart"})),
    );
    w.register_function(
        "shop::hidden",
        RegisterFunction::new_async(|_: Value| async move { Ok::<Value, Error>(json!(null)) })
            .metadata(json!({"internal": true})),
    );
    wait_function(&w, "shop::hidden", true).await;
    let visible = call(&w, "engine::functions::list", json!({}))
        .await
        .unwrap();
    let ids: Vec<&str> = visible["functions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["function_id"].as_str())
        .collect();
    assert!(ids.contains(&"shop::cart::add"));
    assert!(
        !ids.contains(&"shop::hidden"),
        "metadata.internal hides a function"
    );
    assert!(
        !ids.iter().any(|id| id.starts_with("engine::")),
        "built-ins hidden by default"
    );
    let row = visible["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["function_id"] == "shop::cart::add")
        .unwrap();
    assert_eq!(row["worker_name"], name.as_str());
    assert_eq!(row["namespace"], "default");
    assert_eq!(row["description"], "Add an item to the cart");
    let searched = call(&w, "engine::functions::list", json!({"search": "CART"}))
        .await
        .unwrap();
    assert_eq!(searched["functions"].as_array().unwrap().len(), 1);
    let all = common::function_ids(&w).await;
    assert!(all.contains(&"engine::workers::list".to_string()));

    let info = call(
        &w,
        "engine::functions::info",
        json!({"function_id": "shop::cart::add"}),
    )
    .await
    .unwrap();
    assert_eq!(info["metadata"], json!({"team": "cart"}));
    assert_eq!(info["registered_triggers"], json!([]));
    let batch = call(
        &w,
        "engine::functions::info",
        json!({"function_ids": ["shop::cart::add", "nope"]}),
    )
    .await
    .unwrap();
    assert_eq!(
        batch["functions"][1],
        json!({"function_id": "nope", "error": "not_found"})
    );
    let missing = call(
        &w,
        "engine::functions::info",
        json!({"function_id": "nope"}),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(missing, Error::Remote { ref code, ref message, .. } if code == "NOT_FOUND" && message == "Function 'nope' is not registered.")
    );
    let bad = call(&w, "engine::functions::info", json!({}))
        .await
        .unwrap_err();
    assert!(matches!(bad, Error::Remote { ref code, .. } if code == "INVALID_ARGUMENTS"));
    let malformed = call(
        &w,
        "engine::functions::list",
        json!({"include_internal": "yes"}),
    )
    .await
    .unwrap_err();
    assert!(matches!(malformed, Error::Remote { ref code, .. } if code == "deserialization_error"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_available_fires_on_connect_announce_and_disconnect() {
    let node = Node::start();
    let watcher = worker(&node.url, &unique_name("watcher"), None).await;
    let (tx, mut rx) = mpsc::channel::<Value>(64);
    watcher.register_function(
        "watch::workers",
        RegisterFunction::new_async(move |event: Value| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(event).await;
                Ok::<Value, Error>(json!(null))
            }
        }),
    );
    #[allow(deprecated)]
    watcher
        .register_trigger(RegisterTriggerInput {
            trigger_type: "engine::workers-available".into(),
            function_id: "watch::workers".into(),
            config: json!({}),
            metadata: None,
            namespace: None,
            trigger_namespace: None,
        })
        .unwrap();
    common::eventually("binding listed", Duration::from_secs(10), || async {
        let list = call(&watcher, "engine::triggers::list", json!({}))
            .await
            .ok()?;
        (!list["triggers"].as_array()?.is_empty()).then_some(())
    })
    .await;
    let other = worker(&node.url, &unique_name("other"), None).await;
    let mut events = Vec::new();
    let other_id = loop {
        let event = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        events.push(event.clone());
        if event["event"] == "worker_metadata_updated" {
            let id = event["worker_id"].as_str().unwrap().to_string();
            if events
                .iter()
                .any(|e| e["event"] == "worker_connected" && e["worker_id"] == id.as_str())
            {
                break id;
            }
        }
    };
    other.shutdown_async().await;
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        if event["event"] == "worker_disconnected" && event["worker_id"] == other_id.as_str() {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_available_fires_when_the_set_of_ids_changes() {
    let node = Node::start();
    let watcher = worker(&node.url, &unique_name("watcher"), None).await;
    let (tx, mut rx) = mpsc::channel::<Value>(64);
    watcher.register_function(
        "watch::functions",
        RegisterFunction::new_async(move |event: Value| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(event).await;
                Ok::<Value, Error>(json!(null))
            }
        }),
    );
    let registered = call(
        &watcher,
        "engine::register_trigger",
        json!({"trigger_type": "engine::functions-available", "function_id": "watch::functions"}),
    )
    .await
    .unwrap();
    assert!(registered["id"].as_str().is_some());
    let other = worker(&node.url, &unique_name("other"), None).await;
    other.register_function(
        "fresh::fn",
        RegisterFunction::new_async(|_: Value| async move { Ok::<Value, Error>(json!(null)) }),
    );
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(event["event"], "functions_changed");
        let listed = event["functions"].as_array().unwrap();
        if listed.iter().any(|f| f["function_id"] == "fresh::fn") {
            assert!(
                listed
                    .iter()
                    .any(|f| f["function_id"] == "engine::functions::list"),
                "unfiltered list"
            );
            break;
        }
    }
    let removed = call(
        &watcher,
        "engine::unregister_trigger",
        json!({"id": registered["id"]}),
    )
    .await
    .unwrap();
    assert_eq!(removed, json!({"removed": true}));
    let again = call(
        &watcher,
        "engine::unregister_trigger",
        json!({"id": registered["id"]}),
    )
    .await
    .unwrap();
    assert_eq!(again, json!({"removed": false}));
}
