//! Calls between real Rust SDK workers through one real quorum node.

mod common;

use common::raw::RawClient;
use common::{call, unique_name, wait_function, worker, Node};
use iii_sdk::{Error, RegisterFunction};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::mpsc;

fn remote_code(err: Error) -> (String, String) {
    match err {
        Error::Remote { code, message, .. } => (code, message),
        other => panic!("expected a remote error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_call_returns_the_callee_result_with_caller_id_injected() {
    let node = Node::start();
    let callee = worker(&node.url, &unique_name("callee"), None).await;
    callee.register_function(
        "math::add",
        RegisterFunction::new_async(|input: Value| async move {
            let sum = input["a"].as_i64().unwrap_or(0) + input["b"].as_i64().unwrap_or(0);
            Ok::<Value, Error>(json!({"c": sum, "caller": input["_caller_worker_id"]}))
        }),
    );
    let caller = worker(&node.url, &unique_name("caller"), None).await;
    wait_function(&caller, "math::add", true).await;
    let result = call(&caller, "math::add", json!({"a": 2, "b": 3}))
        .await
        .unwrap();
    assert_eq!(result["c"], 5);
    assert!(result["caller"]
        .as_str()
        .is_some_and(|s| uuid::Uuid::parse_str(s).is_ok()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn void_call_runs_the_function_and_answers_nothing() {
    let node = Node::start();
    let (tx, mut rx) = mpsc::channel(4);
    let callee = worker(&node.url, &unique_name("callee"), None).await;
    callee.register_function(
        "audit::write",
        RegisterFunction::new_async(move |input: Value| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(input).await;
                Ok::<Value, Error>(json!("ignored"))
            }
        }),
    );
    let caller = worker(&node.url, &unique_name("caller"), None).await;
    wait_function(&caller, "audit::write", true).await;
    let answered = caller
        .trigger(iii_sdk::protocol::TriggerRequest {
            function_id: "audit::write".into(),
            payload: json!({"event": "x"}),
            action: Some(iii_sdk::TriggerAction::Void),
            timeout_ms: None,
        })
        .await
        .unwrap();
    assert_eq!(answered, Value::Null);
    let seen = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen["event"], "x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_errors_reach_the_caller_with_their_code() {
    let node = Node::start();
    let callee = worker(&node.url, &unique_name("callee"), None).await;
    callee.register_function(
        "fails",
        RegisterFunction::new_async(|_: Value| async move {
            Err::<Value, Error>(Error::Remote {
                code: "out_of_stock".into(),
                message: "no more".into(),
                stacktrace: None,
            })
        }),
    );
    let caller = worker(&node.url, &unique_name("caller"), None).await;
    wait_function(&caller, "fails", true).await;
    let (code, message) = remote_code(call(&caller, "fails", json!({})).await.unwrap_err());
    assert_eq!(code, "out_of_stock");
    assert_eq!(message, "no more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_function_is_not_found_and_names_other_namespaces() {
    let node = Node::start();
    let orders = worker(&node.url, &unique_name("orders"), Some("orders")).await;
    orders.register_function(
        "state::get",
        RegisterFunction::new_async(|_: Value| async move { Ok::<Value, Error>(json!(1)) }),
    );
    let caller = worker(&node.url, &unique_name("caller"), None).await;
    wait_function(&caller, "state::get", true).await;
    let (code, message) = remote_code(call(&caller, "nope::missing", json!({})).await.unwrap_err());
    assert_eq!(code, "function_not_found");
    assert_eq!(
        message,
        "Function nope::missing not found in namespace default."
    );
    let (code, message) = remote_code(call(&caller, "state::get", json!({})).await.unwrap_err());
    assert_eq!(code, "function_not_found");
    assert_eq!(
        message,
        "Function state::get not found in namespace default. It is registered in namespace(s): orders."
    );
    let in_orders = caller
        .trigger(
            iii_sdk::protocol::TriggerRequest::new("state::get", json!({})).namespace("orders"),
        )
        .await
        .unwrap();
    assert_eq!(in_orders, json!(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_can_call_its_own_function_through_the_engine_without_deadlock() {
    let node = Node::start();
    let me = worker(&node.url, &unique_name("self"), None).await;
    let inner = me.clone();
    me.register_function(
        "outer",
        RegisterFunction::new_async(move |_: Value| {
            let inner = inner.clone();
            async move {
                let v = common::call(&inner, "inner", json!({})).await?;
                Ok::<Value, Error>(json!({"inner": v}))
            }
        }),
    );
    me.register_function(
        "inner",
        RegisterFunction::new_async(|_: Value| async move { Ok::<Value, Error>(json!("deep")) }),
    );
    wait_function(&me, "inner", true).await;
    let result = call(&me, "outer", json!({})).await.unwrap();
    assert_eq!(result, json!({"inner": "deep"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_disconnect_stops_in_flight_calls_at_once() {
    let node = Node::start();
    let callee = worker(&node.url, &unique_name("callee"), None).await;
    let started = common::register_never_answering(&callee, "slow");
    let caller = worker(&node.url, &unique_name("caller"), None).await;
    wait_function(&caller, "slow", true).await;
    let pending = tokio::spawn({
        let caller = caller.clone();
        async move { call(&caller, "slow", json!({})).await }
    });
    tokio::time::timeout(Duration::from_secs(10), started.notified())
        .await
        .unwrap();
    let began = std::time::Instant::now();
    callee.shutdown_async().await;
    let outcome = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .unwrap()
        .unwrap();
    let (code, _) = remote_code(outcome.unwrap_err());
    assert_eq!(code, "invocation_stopped");
    assert!(began.elapsed() < Duration::from_secs(10));
    wait_function(&caller, "slow", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_without_a_queue_provider_is_a_clear_error() {
    let node = Node::start();
    let caller = worker(&node.url, &unique_name("caller"), None).await;
    let err = caller
        .trigger(iii_sdk::protocol::TriggerRequest {
            function_id: "jobs::run".into(),
            payload: json!({}),
            action: Some(iii_sdk::TriggerAction::Enqueue { queue: "q".into() }),
            timeout_ms: None,
        })
        .await
        .unwrap_err();
    let (code, message) = remote_code(err);
    assert_eq!(code, "enqueue_error");
    assert!(message.contains("queue"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_gets_data_metadata_and_trace_context_but_not_routing_fields() {
    let node = Node::start();
    let mut owner = RawClient::connect(&node.url).await;
    owner.announce(&unique_name("owner"), None).await;
    owner
        .send(json!({"type":"registerfunction","id":"ctx::probe"}))
        .await;
    let observer = worker(&node.url, &unique_name("observer"), None).await;
    wait_function(&observer, "ctx::probe", true).await;
    let mut caller = RawClient::connect(&node.url).await;
    caller.announce(&unique_name("caller"), None).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let caller_id = uuid::Uuid::new_v4().to_string();
    caller
        .send(
            json!({"type":"invokefunction","invocation_id":caller_id,"function_id":"ctx::probe",
            "data":{"n":1,"_caller_worker_id":"forged"},"metadata":{"m":"v"},
            "traceparent":traceparent,"baggage":"k=v",
            "namespace":"default"}),
        )
        .await;
    let forwarded = owner.recv_type("invokefunction").await;
    assert_eq!(
        forwarded["data"],
        json!({"n": 1, "_caller_worker_id": caller.worker_id}),
        "the engine names the real caller"
    );
    assert_eq!(forwarded["metadata"], json!({"m": "v"}));
    assert_eq!(forwarded["traceparent"], traceparent);
    assert_eq!(forwarded["baggage"], "k=v");
    assert!(forwarded.get("namespace").is_none() && forwarded.get("action").is_none());
    let engine_id = forwarded["invocation_id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(engine_id).is_ok());
    assert_ne!(engine_id, caller_id, "the owner sees an engine-made id");

    owner
        .send(json!({"type":"invocationresult","invocation_id":engine_id,
            "function_id":"ctx::probe","result":{"ok":true}}))
        .await;
    let relayed = caller.recv_type("invocationresult").await;
    assert_eq!(relayed["invocation_id"], caller_id.as_str());
    assert_eq!(relayed["function_id"], "ctx::probe");
    assert_eq!(relayed["result"], json!({"ok": true}));

    // A payload that is not an object travels untouched.
    let list_id = uuid::Uuid::new_v4().to_string();
    caller
        .send(
            json!({"type":"invokefunction","invocation_id":list_id,"function_id":"ctx::probe",
            "data":[1,2,3]}),
        )
        .await;
    let forwarded = owner.recv_type("invokefunction").await;
    assert_eq!(forwarded["data"], json!([1, 2, 3]));
}
