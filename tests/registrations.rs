//! Registration rules: conflicts, reserved ids, name leases, namespace buffering,
//! reattach. Protocol-level replies are read with a raw client.

mod common;

use common::raw::{Inbound, RawClient};
use common::{call, unique_name, wait_function, worker, Node, NodeOptions};
use iii_sdk::{Error, RegisterFunction};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_owned_by_a_live_worker_is_refused_to_another() {
    let node = Node::start();
    let owner = worker(&node.url, &unique_name("owner"), None).await;
    owner.register_function(
        "state::get",
        RegisterFunction::new_async(|_: Value| async move { Ok::<Value, Error>(json!("owner")) }),
    );
    wait_function(&owner, "state::get", true).await;
    let mut rival = RawClient::connect(&node.url).await;
    rival.announce(&unique_name("rival"), None).await;
    rival
        .send(json!({"type":"registerfunction","id":"state::get"}))
        .await;
    let rejected = rival.recv_type("registrationrejected").await;
    assert_eq!(rejected["code"], "FUNCTION_NAMESPACE_CONFLICT");
    assert_eq!(rejected["function_id"], "state::get");
    assert_eq!(rejected["namespace"], "default");
    assert!(rejected["owner_worker_id"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    // The rival stays connected and the owner keeps serving.
    let answer = rival.call("state::get", json!({})).await;
    assert_eq!(answer["result"], "owner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_engine_ids_are_refused_with_an_empty_owner() {
    let node = Node::start();
    let mut raw = RawClient::connect(&node.url).await;
    raw.announce(&unique_name("raw"), Some("orders")).await;
    raw.send(json!({"type":"registerfunction","id":"engine::mine"}))
        .await;
    let rejected = raw.recv_type("registrationrejected").await;
    assert_eq!(rejected["code"], "FUNCTION_NAMESPACE_CONFLICT");
    assert_eq!(rejected["namespace"], "orders");
    assert_eq!(rejected["owner_worker_id"], "");
    let mut other = RawClient::connect(&node.url).await;
    other.announce(&unique_name("raw"), None).await;
    other
        .send(json!({"type":"registerfunction","id":"engine::functions::list"}))
        .await;
    let rejected = other.recv_type("registrationrejected").await;
    assert_eq!(rejected["function_id"], "engine::functions::list");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_worker_name_is_a_fatal_conflict_closed_by_the_engine() {
    let node = Node::start();
    let name = unique_name("svc");
    let _holder = worker(&node.url, &name, None).await;
    let mut rival = RawClient::connect(&node.url).await;
    rival
        .send(json!({"type":"registerfunction","id":"never::applied"}))
        .await;
    rival.announce(&name, None).await;
    let rejected = rival.recv_type("registrationrejected").await;
    assert_eq!(rejected["code"], "WORKER_NAMESPACE_CONFLICT");
    assert_eq!(rejected["worker_name"], name.as_str());
    loop {
        if let Inbound::Closed(_) = rival.next().await {
            break;
        }
    }
    let observer = worker(&node.url, &unique_name("observer"), None).await;
    assert!(!common::function_ids(&observer)
        .await
        .contains(&"never::applied".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_sdk_stops_for_good_on_a_name_conflict() {
    let node = Node::start();
    let name = unique_name("twin");
    let _first = worker(&node.url, &name, None).await;
    let second = iii_sdk::register_worker(
        &node.url,
        iii_sdk::InitOptions {
            metadata: Some(iii_sdk::runtime::WorkerMetadata {
                name: name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    // The greeting can win the race; the rejection then arrives right after it.
    let err = second
        .wait_until_registered(std::time::Duration::from_secs(10))
        .await
        .err();
    let fatal = common::eventually(
        "fatal error on the twin",
        std::time::Duration::from_secs(10),
        || async { second.fatal_error() },
    )
    .await;
    assert!(
        matches!(fatal, Error::RegistrationRejected { ref code, .. } if code == "WORKER_NAMESPACE_CONFLICT"),
        "{fatal:?} {err:?}"
    );
    second.shutdown_async().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_before_the_announcement_land_in_the_announced_namespace() {
    let node = Node::start();
    let mut raw = RawClient::connect(&node.url).await;
    raw.send(json!({"type":"registerfunction","id":"early::fn"}))
        .await;
    raw.announce(&unique_name("raw"), Some("ns1")).await;
    let caller = worker(&node.url, &unique_name("caller"), None).await;
    let listed = common::eventually(
        "early::fn in ns1",
        std::time::Duration::from_secs(10),
        || async {
            let list = call(&caller, "engine::functions::list", json!({}))
                .await
                .ok()?;
            list["functions"]
                .as_array()?
                .iter()
                .find(|f| f["function_id"] == "early::fn")
                .cloned()
        },
    )
    .await;
    assert_eq!(listed["namespace"], "ns1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_announcement_the_grace_timer_applies_the_buffer_in_default() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_in(
        dir.path(),
        NodeOptions {
            args: vec!["--registration-grace-ms".into(), "200".into()],
            ..Default::default()
        },
    );
    let mut raw = RawClient::connect(&node.url).await;
    raw.send(json!({"type":"registerfunction","id":"late::fn"}))
        .await;
    let caller = worker(&node.url, &unique_name("caller"), None).await;
    wait_function(&caller, "late::fn", true).await;
    // A late announcement keeps `default`, whatever it declares.
    raw.announce(&unique_name("raw"), Some("elsewhere")).await;
    let answer = raw
        .call("engine::functions::info", json!({"function_id":"late::fn"}))
        .await;
    assert_eq!(answer["result"]["namespace"], "default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blank_namespaces_are_invalid_where_the_protocol_says_so() {
    let node = Node::start();
    let mut raw = RawClient::connect(&node.url).await;
    raw.announce(&unique_name("raw"), None).await;
    let id = uuid::Uuid::new_v4().to_string();
    raw.send(
        json!({"type":"invokefunction","invocation_id":id,"function_id":"x","namespace":"  "}),
    )
    .await;
    let result = raw.recv_type("invocationresult").await;
    assert_eq!(result["error"]["code"], "INVALID_NAMESPACE");
    assert_eq!(result["function_id"], "x");
    raw.send(
        json!({"type":"registertrigger","id":"t","trigger_type":"cron","function_id":"f",
        "config":{},"trigger_namespace":""}),
    )
    .await;
    let refused = raw.recv_type("triggerregistrationresult").await;
    assert_eq!(refused["error"]["code"], "INVALID_NAMESPACE");
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`trigger_namespace`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reattach_with_the_token_retires_the_previous_connection() {
    let node = Node::start();
    let mut old = RawClient::connect(&node.url).await;
    let name = unique_name("phoenix");
    old.announce(&name, None).await;
    old.send(json!({"type":"registerfunction","id":"phoenix::fn"}))
        .await;
    let observer = worker(&node.url, &unique_name("observer"), None).await;
    wait_function(&observer, "phoenix::fn", true).await;

    // A wrong token changes nothing.
    let mut impostor = RawClient::connect(&node.url).await;
    impostor
        .send(
            json!({"type":"reattach","previous_worker_id":old.worker_id,"reattach_token":"wrong"}),
        )
        .await;
    impostor.send(json!({"type":"ping"})).await;
    assert_eq!(impostor.recv_type("pong").await["type"], "pong");
    assert!(common::function_ids(&observer)
        .await
        .contains(&"phoenix::fn".to_string()));

    let mut new = RawClient::connect(&node.url).await;
    new.send(
        json!({"type":"reattach","previous_worker_id":old.worker_id,"reattach_token":old.token}),
    )
    .await;
    new.announce(&name, None).await;
    new.send(json!({"type":"registerfunction","id":"phoenix::fn"}))
        .await;
    loop {
        if let Inbound::Closed(_) = old.next().await {
            break;
        }
    }
    let rows = call(&observer, "engine::workers::list", json!({}))
        .await
        .unwrap();
    let ids: Vec<&str> = rows["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["id"].as_str())
        .collect();
    assert!(!ids.contains(&old.worker_id.as_str()));
    let served_by_new = common::wait_served_by(&observer, &new.worker_id, "phoenix::fn").await;
    assert_eq!(served_by_new["name"], name.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_function_is_not_found_and_free_for_another_worker() {
    let node = Node::start();
    let owner = worker(&node.url, &unique_name("owner"), None).await;
    let first = owner.register_function(
        "temp::fn",
        RegisterFunction::new_async(|_: Value| async move { Ok::<Value, Error>(json!("first")) }),
    );
    let caller = worker(&node.url, &unique_name("caller"), None).await;
    wait_function(&caller, "temp::fn", true).await;

    // Only the owner's unregistration counts. The stranger's own function, unregistered
    // right after, tells when the engine has handled both frames.
    let mut stranger = RawClient::connect(&node.url).await;
    stranger.announce(&unique_name("stranger"), None).await;
    stranger
        .send(json!({"type":"registerfunction","id":"stranger::fn"}))
        .await;
    wait_function(&caller, "stranger::fn", true).await;
    stranger
        .send(json!({"type":"unregisterfunction","id":"temp::fn"}))
        .await;
    stranger
        .send(json!({"type":"unregisterfunction","id":"stranger::fn"}))
        .await;
    wait_function(&caller, "stranger::fn", false).await;
    assert_eq!(
        call(&caller, "temp::fn", json!({})).await.unwrap(),
        json!("first")
    );

    first.unregister();
    wait_function(&caller, "temp::fn", false).await;
    match call(&caller, "temp::fn", json!({})).await {
        Err(Error::Remote { code, .. }) => assert_eq!(code, "function_not_found"),
        other => panic!("expected function_not_found, got {other:?}"),
    }

    let successor = worker(&node.url, &unique_name("successor"), None).await;
    successor.register_function(
        "temp::fn",
        RegisterFunction::new_async(|_: Value| async move { Ok::<Value, Error>(json!("second")) }),
    );
    wait_function(&caller, "temp::fn", true).await;
    assert_eq!(
        call(&caller, "temp::fn", json!({})).await.unwrap(),
        json!("second")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_message_resolves_its_namespace_as_the_protocol_table_says() {
    let node = Node::start();
    let mut raw = RawClient::connect(&node.url).await;
    raw.announce(&unique_name("raw"), Some("orders")).await;
    raw.send(json!({"type":"registerfunction","id":"orders::only"}))
        .await;
    raw.send(json!({"type":"registertriggertype","id":"home-type","description":"d"}))
        .await;
    raw.send(
        json!({"type":"registertriggertype","id":"other-type","description":"d",
        "namespace":"billing"}),
    )
    .await;
    raw.send(
        json!({"type":"registertriggertype","id":"blank-type","description":"d",
        "namespace":"  "}),
    )
    .await;
    // Registrations are handled in order: once the marker is listed, so are the others.
    raw.send(json!({"type":"registerfunction","id":"marker::fn"}))
        .await;
    let observer = worker(&node.url, &unique_name("observer"), None).await;
    wait_function(&observer, "marker::fn", true).await;

    let info = call(
        &observer,
        "engine::functions::info",
        json!({"function_id": "orders::only"}),
    )
    .await
    .unwrap();
    assert_eq!(
        info["namespace"], "orders",
        "functions take the connection's"
    );
    let types = call(&observer, "engine::trigger-types::list", json!({}))
        .await
        .unwrap();
    let namespace_of = |id: &str| {
        types["trigger_types"]
            .as_array()
            .and_then(|rows| rows.iter().find(|t| t["id"] == id))
            .map(|t| t["namespace"].clone())
    };
    assert_eq!(namespace_of("home-type"), Some(json!("orders")));
    assert_eq!(namespace_of("other-type"), Some(json!("billing")));
    assert_eq!(
        namespace_of("blank-type"),
        None,
        "a blank namespace is ignored"
    );

    // A call names its namespace or goes to `default`, never to the caller's.
    let missed = raw.call("orders::only", json!({})).await;
    assert_eq!(missed["error"]["code"], "function_not_found");
    assert_eq!(
        missed["error"]["message"],
        "Function orders::only not found in namespace default. It is registered in namespace(s): orders."
    );
    // A void call with a blank namespace is dropped without an answer.
    raw.send(
        json!({"type":"invokefunction","function_id":"orders::only","namespace":" ",
        "action":{"type":"void"}}),
    )
    .await;
    raw.send(json!({"type":"ping"})).await;
    assert_eq!(raw.recv().await, json!({"type":"pong"}));

    // A binding's target function is in `default` unless named; its provider is looked up
    // in the connection's namespace first.
    raw.send(
        json!({"type":"registertrigger","id":"b-default","trigger_type":"home-type",
        "function_id":"f","config":{}}),
    )
    .await;
    let forwarded = raw.answer_next_trigger(false).await;
    assert_eq!(forwarded["id"], "b-default");
    let rows = call(&observer, "engine::registered-triggers::list", json!({}))
        .await
        .unwrap();
    assert_eq!(rows["registered_triggers"][0]["namespace"], "default");
    // A blank target namespace is refused, naming the field.
    raw.send(
        json!({"type":"registertrigger","id":"b-blank","trigger_type":"home-type",
        "function_id":"f","config":{},"namespace":""}),
    )
    .await;
    let refused = raw.recv_type("triggerregistrationresult").await;
    assert_eq!(refused["id"], "b-blank");
    assert_eq!(refused["error"]["code"], "INVALID_NAMESPACE");
    assert_eq!(
        refused["error"]["message"],
        "`namespace` is empty: it was named and left blank. Give it a name, or omit it to use `default`."
    );
}
