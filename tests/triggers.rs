//! Trigger types and bindings forwarded between real SDK workers.
#![allow(deprecated)]

mod common;

use common::raw::RawClient;
use common::{call, next_trigger_request, unique_name, worker, Node};
use iii_sdk::protocol::RegisterTriggerInput;
use iii_sdk::{Error, RegisterFunction};
use serde_json::{json, Value};

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
    let (_provider, mut rx) = common::recording_provider(&node.url, "cron").await;
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
    let (first, mut rx) = common::recording_provider(&node.url, "webhook").await;
    let (_, config) = next_trigger_request(&mut rx).await;
    let id = config.id;
    first.shutdown_async().await;
    let (_second, mut rx) = common::recording_provider(&node.url, "webhook").await;
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
    let mut provider = RawClient::provider(&node.url, "strict").await;
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
    let mut provider = RawClient::provider(&node.url, "picky").await;
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

/// The rows of `engine::registered-triggers::list` for `filter`.
async fn registered_triggers(client: &iii_sdk::IIIClient, filter: Value) -> Vec<Value> {
    let listed = call(client, "engine::registered-triggers::list", filter)
        .await
        .unwrap();
    listed["registered_triggers"]
        .as_array()
        .cloned()
        .expect("registered_triggers array")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_triggers_list_and_info_describe_live_bindings() {
    let node = Node::start();
    let (_provider, mut rx) = common::recording_provider(&node.url, "cron").await;
    let consumer_name = unique_name("consumer");
    let consumer = worker(&node.url, &consumer_name, None).await;
    consumer.register_function(
        "jobs::tick",
        RegisterFunction::new_async(|_: Value| async move { Ok::<Value, Error>(json!(null)) }),
    );
    common::wait_trigger_type(&consumer, "cron").await;
    common::wait_function(&consumer, "jobs::tick", true).await;
    consumer
        .register_trigger(binding("cron", "jobs::tick"))
        .unwrap();
    let (_, config) = next_trigger_request(&mut rx).await;
    let id = config.id;

    let rows = registered_triggers(&consumer, json!({})).await;
    assert_eq!(rows.len(), 1, "one live binding: {rows:?}");
    let row = &rows[0];
    assert_eq!(row["id"], id.as_str());
    assert_eq!(row["trigger_type"], "cron");
    assert_eq!(row["function_id"], "jobs::tick");
    assert_eq!(row["worker_name"], consumer_name.as_str());
    assert_eq!(row["config"], json!({"every": "5m"}));
    assert_eq!(row["metadata"], json!({"k": "v"}));

    for (filter, expected) in [
        (json!({"trigger_type": "cron"}), 1),
        (json!({"trigger_type": "webhook"}), 0),
        (json!({"function_id": "jobs::tick"}), 1),
        (json!({"function_id": "jobs::other"}), 0),
        (json!({"search": "TICK"}), 1),
        (json!({"search": "nothing-like-it"}), 0),
        (json!({"worker": consumer_name}), 1),
        (json!({"worker": "someone-else"}), 0),
    ] {
        assert_eq!(
            registered_triggers(&consumer, filter.clone()).await.len(),
            expected,
            "filter {filter}"
        );
    }

    let info = call(
        &consumer,
        "engine::registered-triggers::info",
        json!({"id": id}),
    )
    .await
    .unwrap();
    assert_eq!(info["id"], id.as_str());
    assert_eq!(info["worker_name"], consumer_name.as_str());
    assert_eq!(info["config"], json!({"every": "5m"}));
    assert_eq!(info["metadata"], json!({"k": "v"}));
    assert_eq!(info["trigger"]["id"], "cron");
    assert_eq!(info["trigger"]["instance_count"], 1);
    assert_eq!(info["function"]["function_id"], "jobs::tick");

    match call(
        &consumer,
        "engine::registered-triggers::info",
        json!({"id": "no-such-binding"}),
    )
    .await
    {
        Err(Error::Remote { code, message, .. }) => {
            assert_eq!(code, "NOT_FOUND");
            assert_eq!(
                message,
                "Registered trigger 'no-such-binding' was not found."
            );
        }
        other => panic!("expected NOT_FOUND, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistering_a_trigger_type_parks_its_bindings_until_it_is_provided_again() {
    let node = Node::start();
    let mut provider = RawClient::provider(&node.url, "ticker").await;
    let consumer = worker(&node.url, &unique_name("consumer"), None).await;
    common::wait_trigger_type(&consumer, "ticker").await;
    consumer
        .register_trigger(binding("ticker", "jobs::tick"))
        .unwrap();
    let forwarded = provider.answer_next_trigger(false).await;
    let id = forwarded["id"].as_str().expect("binding id").to_string();
    assert_eq!(registered_triggers(&consumer, json!({})).await.len(), 1);

    // A connection that does not provide the type cannot remove it. The stranger's own
    // type, removed right after, tells when the engine has handled both frames.
    let mut stranger = RawClient::connect(&node.url).await;
    stranger.announce(&unique_name("stranger"), None).await;
    stranger
        .send(json!({"type":"registertriggertype","id":"stranger-type","description":"d"}))
        .await;
    common::wait_trigger_type(&consumer, "stranger-type").await;
    stranger
        .send(json!({"type":"unregistertriggertype","id":"ticker"}))
        .await;
    stranger
        .send(json!({"type":"unregistertriggertype","id":"stranger-type"}))
        .await;
    common::wait_trigger_type_gone(&consumer, "stranger-type").await;
    assert!(common::trigger_type_ids(&consumer)
        .await
        .contains(&"ticker".into()));

    // The Node SDK sends the whole registration back; the extra fields are ignored.
    provider
        .send(
            json!({"type":"unregistertriggertype","id":"ticker","description":"ticks",
            "trigger_request_format":{"type":"object"}}),
        )
        .await;
    let withdrawn = provider.recv_type("unregistertrigger").await;
    assert_eq!(withdrawn["id"], id.as_str());
    common::wait_trigger_type_gone(&consumer, "ticker").await;
    assert_eq!(
        registered_triggers(&consumer, json!({})).await,
        Vec::<Value>::new(),
        "a binding without a provider is parked, not live"
    );
    let parked = call(
        &consumer,
        "engine::registered-triggers::info",
        json!({"id": id}),
    )
    .await
    .unwrap();
    assert_eq!(parked["trigger"], Value::Null, "its type is gone");

    provider.provide("ticker").await;
    let resent = provider.answer_next_trigger(false).await;
    assert_eq!(resent["id"], id.as_str(), "the parked binding keeps its id");
    assert_eq!(resent["config"], json!({"every": "5m"}));
    assert_eq!(registered_triggers(&consumer, json!({})).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_binding_leaves_its_provider_at_once() {
    let node = Node::start();
    let (_provider, mut rx) = common::recording_provider(&node.url, "cron").await;
    let consumer = worker(&node.url, &unique_name("consumer"), None).await;
    common::wait_trigger_type(&consumer, "cron").await;
    let trigger = consumer
        .register_trigger(binding("cron", "jobs::tick"))
        .unwrap();
    let (kind, config) = next_trigger_request(&mut rx).await;
    assert_eq!(kind, "register");
    trigger.unregister();
    let (kind, removed) = next_trigger_request(&mut rx).await;
    assert_eq!(kind, "unregister");
    assert_eq!(removed.id, config.id);
    assert_eq!(
        registered_triggers(&consumer, json!({})).await,
        Vec::<Value>::new()
    );
}
