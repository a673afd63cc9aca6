//! Issue 11, items 2 and 7: the node's attention. A client pipelining large discovery lists,
//! and one registering 100,000 functions, are served without the canary noticing; the list
//! built-ins page with `limit`/`cursor` and answer old SDKs exactly as before.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

use super::common::canary::Canary;
use super::common::footprint::peak_rss_bytes;
use super::common::raw::RawClient;
use super::common::{Node, NodeOptions};

/// Sends one `registerfunction` per id without waiting in between.
async fn register_all(client: &mut RawClient, ids: impl Iterator<Item = String>) {
    for id in ids {
        let frame = json!({"type": "registerfunction", "id": id, "description": "attention"});
        client
            .ws
            .feed(Message::Text(frame.to_string().into()))
            .await
            .expect("feed a registration");
    }
    client.ws.flush().await.expect("flush registrations");
}

/// Waits until `id` is registered, as `engine::functions::info` sees it (the raw client
/// cannot lend itself to `eventually`'s closure, so this polls the same way).
async fn wait_registered(client: &mut RawClient, id: &str, deadline: Duration) {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let answer = client
            .call("engine::functions::info", json!({"function_id": id}))
            .await;
        if answer["result"]["function_id"].is_string() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{id} not registered in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts the canary and waits until its calls flow, so the attack is measured by it.
async fn warm_canary(url: &str) -> Canary {
    let canary = Canary::start(url);
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    while canary.snapshot().latencies.len() < 20 {
        assert!(
            tokio::time::Instant::now() < until,
            "the canary never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    canary
}

/// The ids of a `functions` answer.
fn ids_of(answer: &Value) -> Vec<String> {
    answer["result"]["functions"]
        .as_array()
        .expect("a functions array")
        .iter()
        .map(|row| {
            row["function_id"]
                .as_str()
                .expect("function_id")
                .to_string()
        })
        .collect()
}

/// 20,000 functions registered; one client pipelines 300 full `engine::functions::list`
/// calls (about 3 MB each). Its connection is read only as its built-ins finish, it gets
/// every answer, and the canary beside it never notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_flood_of_function_lists_is_answered_and_the_canary_stays_healthy() {
    let _serial = super::serial();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_in(dir.path(), NodeOptions::default());
    let mut owner = RawClient::connect(&node.url).await;
    owner.announce("attention-owner", None).await;
    register_all(&mut owner, (0..20_000).map(|i| format!("flood::{i:05}"))).await;
    wait_registered(&mut owner, "flood::19999", Duration::from_secs(30)).await;

    let canary = warm_canary(&node.url).await;
    let mut flooder = RawClient::connect(&node.url).await;
    const CALLS: usize = 300;
    for i in 0..CALLS {
        let frame = json!({"type": "invokefunction", "invocation_id": format!("list-{i}"),
            "function_id": "engine::functions::list", "data": {}});
        flooder
            .ws
            .feed(Message::Text(frame.to_string().into()))
            .await
            .expect("feed a list call");
    }
    flooder.ws.flush().await.expect("flush the flood");

    // Only the head of each 3 MB answer is read: parsing them all would cost this process
    // the CPU the canary needs.
    let mut answered = 0;
    let mut largest = 0;
    while answered < CALLS {
        let message = tokio::time::timeout(Duration::from_secs(60), flooder.ws.next())
            .await
            .expect("the flooder's answers keep coming")
            .expect("the flooder's connection stays open")
            .expect("a readable frame");
        let Message::Text(text) = message else {
            continue;
        };
        let head: String = text.chars().take(300).collect();
        if !head.contains("\"type\":\"invocationresult\"") {
            continue;
        }
        assert!(
            head.contains("\"result\":{\"functions\":["),
            "a list answer failed: {head}"
        );
        largest = largest.max(text.len());
        answered += 1;
    }
    eprintln!("{CALLS} lists of {largest} bytes answered");
    let report = canary.stop();
    assert!(
        largest > 1_000_000,
        "answers carry 20,000 rows ({largest} bytes)"
    );
    report.assert_healthy(100);
    let peak = peak_rss_bytes(node.pid());
    assert!(peak < 1_000_000_000, "node peak RSS {peak} bytes");
    // The flooder was served, not cut off, and the owner of the functions is still there.
    let still = owner
        .call(
            "engine::functions::info",
            json!({"function_id": "flood::00000"}),
        )
        .await;
    assert_eq!(still["result"]["function_id"], "flood::00000");
}

/// 100,000 `registerfunction` frames on one connection are all visible, while the canary
/// keeps its latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_registrations_on_one_connection_are_all_visible() {
    let _serial = super::serial();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_in(dir.path(), NodeOptions::default());
    let canary = warm_canary(&node.url).await;
    let mut owner = RawClient::connect(&node.url).await;
    owner.announce("attention-bulk", None).await;
    const COUNT: usize = 100_000;
    let started = std::time::Instant::now();
    register_all(&mut owner, (0..COUNT).map(|i| format!("bulk::{i:06}"))).await;
    wait_registered(&mut owner, "bulk::099999", Duration::from_secs(50)).await;
    eprintln!(
        "{COUNT} registrations visible after {:?}",
        started.elapsed()
    );
    let report = canary.stop();

    let listed = owner
        .call("engine::functions::list", json!({"prefix": "bulk::"}))
        .await;
    let ids = ids_of(&listed);
    assert_eq!(ids.len(), COUNT, "every registration is visible");
    assert_eq!(ids.first().map(String::as_str), Some("bulk::000000"));
    assert_eq!(ids.last().map(String::as_str), Some("bulk::099999"));
    report.assert_healthy(30);
    let peak = peak_rss_bytes(node.pid());
    assert!(peak < 1_000_000_000, "node peak RSS {peak} bytes");
}

/// A `limit`/`cursor` walk returns every function exactly once, in the order of the full
/// list; without paging input the answer is the full list with no `next_cursor`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paged_walk_returns_every_function_once_and_no_input_answers_as_before() {
    let _serial = super::serial();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_in(dir.path(), NodeOptions::default());
    let canary = warm_canary(&node.url).await;
    let mut owner = RawClient::connect(&node.url).await;
    owner.announce("attention-pages", None).await;
    register_all(&mut owner, (0..2_500).map(|i| format!("page::{i:05}"))).await;
    wait_registered(&mut owner, "page::02499", Duration::from_secs(30)).await;

    let whole = owner.call("engine::functions::list", json!({})).await;
    assert!(
        whole["result"].get("next_cursor").is_none(),
        "no paging input, no cursor"
    );
    let all = ids_of(&whole);
    assert!(all.len() >= 2_500);

    let mut walked = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut input = json!({"limit": 300});
        if let Some(cursor) = cursor.take() {
            input["cursor"] = json!(cursor);
        }
        let page = owner.call("engine::functions::list", input).await;
        let rows = ids_of(&page);
        assert!(rows.len() <= 300, "a page holds at most its limit");
        walked.extend(rows);
        pages += 1;
        match page["result"]["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
        assert!(pages <= 20, "the walk ends");
    }
    assert_eq!(walked, all, "the walk is the full list, each function once");

    let types = owner
        .call(
            "engine::trigger-types::list",
            json!({"include_internal": true, "limit": 1}),
        )
        .await;
    assert_eq!(
        types["result"]["trigger_types"].as_array().map(Vec::len),
        Some(1)
    );
    assert!(
        types["result"]["next_cursor"].is_string(),
        "more types follow"
    );
    let forged = owner
        .call(
            "engine::functions::list",
            json!({"limit": 1, "cursor": "nonsense"}),
        )
        .await;
    assert_eq!(forged["error"]["code"], "INVALID_ARGUMENTS");

    canary.stop().assert_healthy(20);
    assert!(peak_rss_bytes(node.pid()) < 500_000_000);
}
