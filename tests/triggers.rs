//! Trigger types and bindings forwarded between real SDK workers.
#![allow(deprecated)]

mod common;

use common::raw::RawClient;
use common::{call, next_trigger_request, unique_name, worker, Node, TriggerRecorder};
use iii_sdk::protocol::RegisterTriggerInput;
use iii_sdk::RegisterTriggerType;
use serde_json::{json, Value};
use tokio::sync::mpsc;

fn binding(trigger_type: &str, function_id: &str) -> RegisterTriggerInput {
    RegisterTriggerInput {
        trigger_type: trigger_type.into(),
        function_id: function_id.into(),
        config: json!({"every": "5m"}),
        metadata: Some(json!({"k": "v"})),
        namespace: None,
        trigger_namespace: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_reaches_its_provider_and_leaves_when_the_consumer_disconnects() {
    let node = Node::start();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let provider = worker(&node.url, &unique_name("provider"), None).await;
    provider.register_trigger_type(RegisterTriggerType::new(
        "cron",
        "Runs on a schedule",
        TriggerRecorder(tx),
    ));
    let consumer = worker(&node.url, &unique_name("consumer"), None).await;
    common::wait_trigger_type(&consumer, "cron").await;
    consumer
        .register_trigger(binding("cron", "jobs::tick"))
        .unwrap();
    let (kind, config) = next_trigger_request(&mut rx).await;
    assert_eq!(kind, "register");
    assert_eq!(config.function_id, "jobs::tick");
    assert_eq!(config.config, json!({"every": "5m"}));
    let id = config.id.clone();
    let listed = call(&consumer, "engine::triggers::list", json!({}))
        .await
        .unwrap();
    assert_eq!(listed["triggers"][0]["id"], id.as_str());
    assert_eq!(listed["triggers"][0]["trigger_type"], "cron");
    let info = call(&consumer, "engine::triggers::info", json!({"id": "cron"}))
        .await
        .unwrap();
    assert_eq!(info["instance_count"], 1);
    consumer.shutdown_async().await;
    let (kind, config) = next_trigger_request(&mut rx).await;
    assert_eq!(kind, "unregister");
    assert_eq!(config.id, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_bindings_are_resent_with_their_ids_when_a_provider_returns() {
    let node = Node::start();
    let consumer = worker(&node.url, &unique_name("consumer"), None).await;
    consumer
        .register_trigger(binding("webhook", "hooks::in"))
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let first = worker(&node.url, &unique_name("provider"), None).await;
    first.register_trigger_type(RegisterTriggerType::new(
        "webhook",
        "HTTP hook",
        TriggerRecorder(tx),
    ));
    let (_, config) = next_trigger_request(&mut rx).await;
    let id = config.id;
    first.shutdown_async().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let second = worker(&node.url, &unique_name("provider"), None).await;
    second.register_trigger_type(RegisterTriggerType::new(
        "webhook",
        "HTTP hook",
        TriggerRecorder(tx),
    ));
    let (kind, config) = next_trigger_request(&mut rx).await;
    assert_eq!(kind, "register");
    assert_eq!(
        config.id, id,
        "the original trigger id survives the provider's reconnect"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_refusal_is_relayed_to_the_registrant_and_parks_the_binding() {
    let node = Node::start();
    let mut provider = RawClient::connect(&node.url).await;
    provider.announce(&unique_name("raw-provider"), None).await;
    provider
        .send(json!({"type":"registertriggertype","id":"strict","description":"refuses"}))
        .await;
    let mut consumer = RawClient::connect(&node.url).await;
    consumer.announce(&unique_name("raw-consumer"), None).await;
    consumer
        .send(json!({"type":"registertrigger","id":"b1","trigger_type":"strict","function_id":"f","config":{"x":1}}))
        .await;
    let forwarded = provider.recv_type("registertrigger").await;
    assert_eq!(forwarded["id"], "b1");
    assert_eq!(forwarded["config"], json!({"x": 1}));
    provider
        .send(json!({"type":"triggerregistrationresult","id":"b1","trigger_type":"strict","function_id":"f",
            "error":{"code":"trigger_registration_failed","message":"bad config"}}))
        .await;
    let relayed = consumer.recv_type("triggerregistrationresult").await;
    assert_eq!(relayed["id"], "b1");
    assert_eq!(relayed["error"]["message"], "bad config");
    let live = consumer.call("engine::triggers::list", json!({})).await;
    assert_eq!(
        live["result"]["triggers"],
        json!([]),
        "a refused binding is parked, not live"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_trigger_by_call_waits_for_the_providers_verdict() {
    let node = Node::start();
    let mut provider = RawClient::connect(&node.url).await;
    provider.announce(&unique_name("raw-provider"), None).await;
    provider
        .send(json!({"type":"registertriggertype","id":"picky","description":"d"}))
        .await;
    let caller = worker(&node.url, &unique_name("caller"), None).await;
    common::wait_trigger_type(&caller, "picky").await;
    let pending = tokio::spawn({
        let caller = caller.clone();
        async move {
            call(
                &caller,
                "engine::register_trigger",
                json!({"trigger_type":"picky","function_id":"f"}),
            )
            .await
        }
    });
    provider.answer_next_trigger(true).await;
    let err = pending.await.unwrap().unwrap_err();
    assert!(common::raw::is_refusal(&err), "{err:?}");
    let parked: Value = call(
        &caller,
        "engine::register_trigger",
        json!({"trigger_type":"absent","function_id":"f"}),
    )
    .await
    .unwrap();
    assert!(
        parked["id"].as_str().is_some(),
        "an unknown type still returns an id"
    );
}
