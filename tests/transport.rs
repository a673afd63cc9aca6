//! Transport and bad input: every kind of malformed frame is dropped without harm,
//! limits hold, large messages travel fragmented, the side endpoints behave.

mod common;

use common::raw::{Inbound, RawClient};
use common::{call, unique_name, wait_function, worker, Node, NodeOptions};
use futures_util::SinkExt;
use iii_sdk::{Error, RegisterFunction};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_are_dropped_and_the_connection_keeps_working() {
    let node = Node::start();
    let mut raw = RawClient::connect(&node.url).await;
    raw.announce(&unique_name("raw"), None).await;
    for bad in [
        "not json at all",
        "{\"type\":\"nosuchtype\"}",
        "{\"type\":\"registerfunction\"}",
        "{\"type\":\"invokefunction\",\"function_id\":42}",
        "[1,2,3]",
        "   ",
        "{\"no_type\":true}",
    ] {
        raw.send_text(bad).await;
    }
    raw.ws
        .send(Message::Binary(
            b"OTLP{\"resourceSpans\":[]}".to_vec().into(),
        ))
        .await
        .unwrap();
    raw.ws
        .send(Message::Binary(vec![0xff, 0xfe, 0x00].into()))
        .await
        .unwrap();
    // A protocol message in a binary frame is accepted like text.
    raw.ws
        .send(Message::Binary(
            json!({"type":"ping"}).to_string().into_bytes().into(),
        ))
        .await
        .unwrap();
    assert_eq!(raw.recv_type("pong").await["type"], "pong");
    let listed = raw.call("engine::workers::list", json!({})).await;
    assert!(listed["result"]["workers"].is_array());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_closes_only_its_own_connection() {
    let node = Node::start();
    let bystander = worker(&node.url, &unique_name("bystander"), None).await;
    bystander.register_function(
        "still::here",
        RegisterFunction::new_async(|_: Value| async move { Ok::<Value, Error>(json!("yes")) }),
    );
    wait_function(&bystander, "still::here", true).await;
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(
        node.url.as_str(),
        Some(
            tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                .max_frame_size(None)
                .max_message_size(None),
        ),
        false,
    )
    .await
    .unwrap();
    let huge = "x".repeat(17 * 1024 * 1024);
    let _ = ws.send(Message::Text(huge.into())).await;
    let mut closed = false;
    while let Ok(Some(frame)) = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        futures_util::StreamExt::next(&mut ws),
    )
    .await
    {
        if matches!(frame, Ok(Message::Close(_)) | Err(_)) {
            closed = true;
            break;
        }
    }
    assert!(closed, "the oversized sender is disconnected");
    assert_eq!(
        call(&bystander, "still::here", json!({})).await.unwrap(),
        json!("yes")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_larger_than_one_frame_travel_both_ways() {
    let node = Node::start();
    let callee = worker(&node.url, &unique_name("callee"), None).await;
    callee.register_function(
        "blob::echo",
        RegisterFunction::new_async(|input: Value| async move {
            let len = input["blob"].as_str().map(str::len).unwrap_or(0);
            Ok::<Value, Error>(json!({"len": len, "blob": input["blob"]}))
        }),
    );
    let caller = worker(&node.url, &unique_name("caller"), None).await;
    wait_function(&caller, "blob::echo", true).await;
    let blob = "y".repeat(20 * 1024 * 1024);
    let answer = call(&caller, "blob::echo", json!({"blob": blob}))
        .await
        .unwrap();
    assert_eq!(answer["len"], 20 * 1024 * 1024);
    assert_eq!(
        answer["blob"].as_str().map(str::len),
        Some(20 * 1024 * 1024)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_cannot_exceed_its_pending_call_limit() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_in(
        dir.path(),
        NodeOptions {
            args: vec!["--max-pending-calls".into(), "2".into()],
            ..Default::default()
        },
    );
    let mut owner = RawClient::connect(&node.url).await;
    owner.announce(&unique_name("silent"), None).await;
    owner
        .send(json!({"type":"registerfunction","id":"never::answers"}))
        .await;
    let mut caller = RawClient::connect(&node.url).await;
    caller.announce(&unique_name("caller"), None).await;
    let observer = worker(&node.url, &unique_name("observer"), None).await;
    wait_function(&observer, "never::answers", true).await;
    for _ in 0..2 {
        caller
            .send(
                json!({"type":"invokefunction","invocation_id":uuid::Uuid::new_v4().to_string(),
                "function_id":"never::answers","data":{}}),
            )
            .await;
        owner.recv_type("invokefunction").await;
    }
    let third = caller.call("never::answers", json!({})).await;
    assert_eq!(third["error"]["code"], "too_many_pending_calls");
    // The caller goes away: its pending calls are dropped; the owner's late answer is ignored.
    drop(caller);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn side_endpoints_otel_and_unknown_paths() {
    let node = Node::start();
    let (mut otel, _) = tokio_tungstenite::connect_async(format!("{}/otel", node.url))
        .await
        .unwrap();
    otel.send(Message::Binary(b"MTRC{}".to_vec().into()))
        .await
        .unwrap();
    let listed = {
        let mut raw = RawClient::connect(&node.url).await;
        raw.announce(&unique_name("raw"), None).await;
        raw.call("engine::workers::list", json!({})).await
    };
    assert_eq!(
        listed["result"]["workers"].as_array().unwrap().len(),
        1,
        "otel is never a worker"
    );
    let refused = tokio_tungstenite::connect_async(format!("{}/elsewhere", node.url)).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 404)
        }
        other => panic!("expected 404, got {other:?}"),
    }
    let (_ws, response) = tokio_tungstenite::connect_async(node.url.as_str())
        .await
        .unwrap();
    assert_eq!(
        response
            .headers()
            .get("x-iii-capabilities")
            .and_then(|v| v.to_str().ok()),
        Some("tcp-nodelay")
    );
    let _ = otel.close(None).await;
    let mut closer = RawClient::connect(&node.url).await;
    closer.ws.close(None).await.unwrap();
    assert!(matches!(closer.next().await, Inbound::Closed(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_pings_get_pongs_and_tolerated_frames_get_no_answer() {
    let node = Node::start();
    let mut raw = RawClient::connect(&node.url).await;
    // Legacy service groupings are accepted before the announcement (buffered) and after.
    raw.send(
        json!({"type":"registerservice","id":"billing","name":"","description":null,
        "parent_service_id":null}),
    )
    .await;
    raw.announce(&unique_name("raw"), None).await;

    raw.ws
        .send(Message::Ping(b"are-you-there".to_vec().into()))
        .await
        .unwrap();
    loop {
        let frame = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            futures_util::StreamExt::next(&mut raw.ws),
        )
        .await
        .expect("a pong within 10 s");
        match frame {
            Some(Ok(Message::Pong(payload))) => {
                assert_eq!(&payload[..], b"are-you-there", "the pong echoes the ping");
                break;
            }
            Some(Ok(_)) => continue,
            other => panic!("connection lost while waiting for a pong: {other:?}"),
        }
    }

    for tolerated in [
        json!({"type":"registerservice","id":"audit","name":"Audit","parent_service_id":"billing"}),
        json!({"type":"pong"}),
        json!({"type":"workerregistered","worker_id":"someone","reattach_token":"t"}),
        json!({"type":"registrationrejected","code":"FUNCTION_NAMESPACE_CONFLICT"}),
        json!({"type":"triggerregistrationresult","id":"unknown","trigger_type":"t","function_id":"f"}),
        json!({"type":"invocationresult","invocation_id":uuid::Uuid::new_v4().to_string(),
            "function_id":"f","result":1}),
    ] {
        raw.send(tolerated).await;
    }
    raw.send(json!({"type":"ping"})).await;
    assert_eq!(
        raw.recv().await,
        json!({"type":"pong"}),
        "the tolerated frames got no answer and the connection still works"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_too_large_to_forward_is_refused_and_the_callee_keeps_its_connection() {
    let node = Node::start();
    let callee_name = unique_name("callee");
    let callee = worker(&node.url, &callee_name, None).await;
    common::register_blob_size(&callee);
    let observer = worker(&node.url, &unique_name("observer"), None).await;
    wait_function(&observer, "blob::size", true).await;
    let callee_id = common::worker_id_named(&observer, &callee_name).await;

    // A call just under the 64 MiB limit: once the engine adds the caller's id to its data
    // it would be over, and no SDK accepts such a message.
    let mut caller = RawClient::connect(&node.url).await;
    caller.announce(&unique_name("caller"), None).await;
    caller.assert_near_limit_call_refused("blob::size").await;

    // The callee was never sent the oversized frame: same connection, still serving.
    assert_eq!(
        call(&observer, "blob::size", json!({"blob": "abc"}))
            .await
            .unwrap(),
        json!(3)
    );
    assert_eq!(
        common::worker_id_named(&observer, &callee_name).await,
        callee_id,
        "the callee did not reconnect"
    );
}
