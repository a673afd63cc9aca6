//! Worker tokens (`--worker-auth token`): who gets through the worker port's upgrade, what a
//! token allows once in, and what revoking one does, against real nodes, raw clients (to see
//! HTTP statuses, frames and close codes) and the Rust SDK.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::raw::RawClient;
use common::{
    eventually, token_cli, unique_name, wait_function, worker_token_args, Cluster, Node,
    NodeOptions,
};
use iii_sdk::runtime::WorkerMetadata;
use iii_sdk::{register_worker, Error, IIIClient, InitOptions, RegisterFunction};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};

/// The token of the tokens file's `bootstrap` entry (every right, namespace `default`).
const BOOTSTRAP: &str = "bootstrap-secret-token";

/// The `serve` arguments for worker auth with the bootstrap token in a tokens file in `dir`.
fn token_auth_args(dir: &Path) -> Vec<String> {
    worker_token_args(dir, BOOTSTRAP)
}

/// A node with worker auth on and the bootstrap token from its tokens file.
fn secured_node(dir: &tempfile::TempDir) -> Node {
    let options = NodeOptions {
        args: token_auth_args(dir.path()),
        ..NodeOptions::default()
    };
    Node::start_in(&dir.path().join("node"), options)
}

fn request(url: &str, headers: &[(&str, &str)]) -> Request {
    let mut request = url.into_client_request().expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    request
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The HTTP status an upgrade request gets: 101 when the WebSocket opened.
async fn upgrade_status(request: Request) -> u16 {
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("neither an upgrade nor an HTTP refusal: {other}"),
    }
}

/// A Rust SDK worker presenting `token` (if any) in `InitOptions.headers`.
fn sdk_worker(url: &str, token: Option<&str>) -> IIIClient {
    let headers = token.map(|t| HashMap::from([("Authorization".to_string(), bearer(t))]));
    register_worker(
        url,
        InitOptions {
            metadata: Some(WorkerMetadata {
                name: unique_name("token-worker"),
                ..WorkerMetadata::default()
            }),
            headers,
            ..InitOptions::default()
        },
    )
}

/// `quorum token create NAME ARGS` through `address`; the new token.
fn create_token(address: &str, name: &str, args: &[&str]) -> String {
    let mut all = vec!["create", name];
    all.extend_from_slice(args);
    let created = token_cli(address, &all).expect("token create");
    assert_eq!(created["name"], name);
    created["token"].as_str().expect("token").to_string()
}

/// The log without terminal colour codes (fields read `name=value` again).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte.
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Calls a function from a raw client and returns its `invocationresult` frame.
async fn raw_call(client: &mut RawClient, function_id: &str) -> Value {
    client.call(function_id, json!({})).await
}

fn listed_functions(result: &Value) -> Vec<(String, String)> {
    result["result"]["functions"]
        .as_array()
        .expect("functions::list rows")
        .iter()
        .map(|row| {
            (
                row["namespace"].as_str().unwrap_or("").to_string(),
                row["function_id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The worker port refuses with 401, before any WebSocket, every request without the exact
/// token: none, a wrong one, one in the wrong header or without `Bearer`, one with trailing
/// whitespace; `/otel` alike. The bootstrap token of the tokens file works from the header
/// and from `?token=`, and none of the refused requests reached the registry. Revoking the
/// file's token closes its connection with 1008 and refuses it from then on.
#[tokio::test]
async fn the_upgrade_needs_the_exact_token_and_a_refusal_is_a_401() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = secured_node(&dir);
    let root = format!("{}/", node.url);
    let otel = format!("{}/otel", node.url);
    let wrong = bearer("not-the-token");
    let no_scheme = BOOTSTRAP.to_string();
    let trailing = format!("{root}?token={BOOTSTRAP}%20");
    let refused: Vec<(&str, Request)> = vec![
        ("no token", request(&root, &[])),
        (
            "a wrong token",
            request(&root, &[("Authorization", &wrong)]),
        ),
        (
            "a wrong ?token=",
            request(&format!("{root}?token=nope"), &[]),
        ),
        (
            "the token in X-Token",
            request(&root, &[("X-Token", BOOTSTRAP)]),
        ),
        (
            "Authorization without Bearer",
            request(&root, &[("Authorization", &no_scheme)]),
        ),
        ("?token= with a trailing space", request(&trailing, &[])),
        // HTTP drops whitespace around a header value before anyone sees it (RFC 9110), so
        // in a header only whitespace inside the value can be wrong.
        (
            "a bearer header with a space before the token",
            request(&root, &[("Authorization", &format!("Bearer  {BOOTSTRAP}"))]),
        ),
        ("/otel without a token", request(&otel, &[])),
        (
            "/otel with the token in X-Token",
            request(&otel, &[("X-Token", BOOTSTRAP)]),
        ),
    ];
    for (what, request) in refused {
        assert_eq!(upgrade_status(request).await, 401, "{what}");
    }
    let header = bearer(BOOTSTRAP);
    let otel_query = format!("{otel}?token={BOOTSTRAP}");
    assert_eq!(
        upgrade_status(request(&otel_query, &[])).await,
        101,
        "/otel with ?token="
    );

    let mut by_query = RawClient::connect(&format!("{root}?token={BOOTSTRAP}")).await;
    let mut by_header =
        RawClient::connect_request(request(&root, &[("Authorization", &header)])).await;
    // Only the two admitted connections were ever recorded.
    let worker_ids = |result: &Value| -> Vec<String> {
        let mut ids: Vec<String> = result["result"]["workers"]
            .as_array()
            .expect("workers::list rows")
            .iter()
            .filter_map(|w| w["id"].as_str().map(str::to_string))
            .collect();
        ids.sort();
        ids
    };
    by_query.announce(&unique_name("by-query"), None).await;
    by_header.announce(&unique_name("by-header"), None).await;
    let mut expected = vec![by_query.worker_id.clone(), by_header.worker_id.clone()];
    expected.sort();
    let mut listed = Value::Null;
    for _ in 0..200 {
        listed = raw_call(&mut by_query, "engine::workers::list").await;
        if worker_ids(&listed) == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(worker_ids(&listed), expected, "{listed}");

    token_cli(&node.cluster, &["revoke", "bootstrap"]).expect("revoke a file token");
    for client in [&mut by_query, &mut by_header] {
        assert_eq!(
            client.closed_within(Duration::from_secs(2)).await,
            Some(1008)
        );
    }
    assert_eq!(
        upgrade_status(request(&root, &[("Authorization", &header)])).await,
        401
    );
    let listed = token_cli(&node.cluster, &["list"]).expect("token list");
    assert_eq!(listed["revoked"], json!(["bootstrap"]), "{listed}");
    assert_eq!(listed["tokens"], json!([]), "{listed}");
}

/// A token's namespaces, register right and call globs decide what its connection may do;
/// refusals carry iii's codes and name the token and the rule, never the token; built-in
/// lists show only the token's namespaces; the Rust SDK connects with `InitOptions.headers`
/// and cannot connect without a token.
#[tokio::test]
async fn a_tokens_rules_decide_namespaces_registrations_and_calls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = secured_node(&dir);
    let reader = create_token(
        &node.cluster,
        "reader",
        &[
            "--no-register",
            "--call",
            "greet::*",
            "--call",
            "engine::functions::list",
        ],
    );
    let orders = create_token(&node.cluster, "orders", &["--namespace", "orders"]);

    let owner = sdk_worker(&node.url, Some(BOOTSTRAP));
    owner
        .wait_until_registered(Duration::from_secs(10))
        .await
        .expect("the Rust SDK connects with a bearer header");
    owner.register_function(
        "greet::hello",
        RegisterFunction::new_async(|input: Value| async move {
            Ok::<Value, Error>(json!({"hello": input}))
        }),
    );
    wait_function(&owner, "greet::hello", true).await;
    let anonymous = sdk_worker(&node.url, None);
    assert!(
        anonymous
            .wait_until_registered(Duration::from_secs(3))
            .await
            .is_err(),
        "the Rust SDK must not connect without a token"
    );
    anonymous.shutdown_async().await;

    // `reader` calls what its globs allow and registers nothing.
    let header = bearer(&reader);
    let mut client =
        RawClient::connect_request(request(&node.url, &[("Authorization", &header)])).await;
    client.announce(&unique_name("reader"), None).await;
    client
        .send(json!({"type": "registerfunction", "id": "reader::f"}))
        .await;
    let rejected = client.recv_type("registrationrejected").await;
    let text = rejected.to_string();
    assert_eq!(rejected["function_id"], "reader::f", "{text}");
    assert!(
        text.contains("'reader'") && text.contains("--no-register"),
        "{text}"
    );
    assert!(
        !text.contains(&reader),
        "a refusal must not carry the token: {text}"
    );
    let answer = raw_call(&mut client, "greet::hello").await;
    assert!(answer["result"]["hello"].is_object(), "{answer}");
    let forbidden = raw_call(&mut client, "billing::charge").await;
    assert_eq!(forbidden["error"]["code"], "FORBIDDEN", "{forbidden}");
    let message = forbidden["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("'reader'") && message.contains("greet::*"),
        "{message}"
    );
    assert!(!message.contains(&reader), "{message}");
    let listed = raw_call(&mut client, "engine::functions::list").await;
    assert_eq!(
        listed_functions(&listed),
        vec![("default".to_string(), "greet::hello".to_string())],
        "only what it may call: {listed}"
    );

    // `orders` works in its namespace only and sees only what that namespace holds.
    let mut client = RawClient::connect(&format!("{}/?token={orders}", node.url)).await;
    client
        .announce(&unique_name("orders"), Some("orders"))
        .await;
    client
        .send(json!({"type": "registerfunction", "id": "orders::create"}))
        .await;
    let listed = raw_call(&mut client, "engine::functions::list").await;
    assert_eq!(
        listed_functions(&listed),
        vec![("orders".to_string(), "orders::create".to_string())],
        "{listed}"
    );
    let forbidden = raw_call(&mut client, "greet::hello").await;
    assert_eq!(forbidden["error"]["code"], "FORBIDDEN", "{forbidden}");
    assert!(
        forbidden["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("'orders'") && m.contains("namespace 'default'")),
        "{forbidden}"
    );
    // The bootstrap token (namespace `default`) does not see the `orders` namespace.
    let ids = common::function_ids(&owner).await;
    assert!(ids.contains(&"greet::hello".to_string()), "{ids:?}");
    assert!(!ids.contains(&"orders::create".to_string()), "{ids:?}");
    owner.shutdown_async().await;
}

/// Revoking a token through one member closes its connections on all three nodes with 1008
/// within a second of the CLI's return, and their functions leave the registry.
#[tokio::test]
async fn revoking_a_token_closes_its_connections_on_every_node_within_a_second() {
    let dir = tempfile::tempdir().expect("temp dir");
    let args = token_auth_args(dir.path());
    let cluster = Cluster::start_with(3, |_| NodeOptions {
        args: args.clone(),
        ..NodeOptions::default()
    });
    let fleet = create_token(&cluster.node(0).cluster, "fleet", &[]);
    let watcher = sdk_worker(&cluster.node(0).url, Some(BOOTSTRAP));
    watcher
        .wait_until_registered(Duration::from_secs(10))
        .await
        .expect("watcher connects");
    let mut clients = Vec::new();
    for i in 0..3 {
        let url = format!("{}/?token={fleet}", cluster.node(i).url);
        let mut client = RawClient::connect(&url).await;
        client.announce(&unique_name("fleet"), None).await;
        let id = format!("fleet::n{i}");
        client
            .send(json!({"type": "registerfunction", "id": id}))
            .await;
        wait_function(&watcher, &id, true).await;
        clients.push(client);
    }

    token_cli(&cluster.node(1).cluster, &["revoke", "fleet"]).expect("revoke");
    let deadline = Instant::now() + Duration::from_secs(1);
    for (i, client) in clients.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        let code = client.closed_within(left).await;
        assert_eq!(code, Some(1008), "connection on node {}", i + 1);
    }
    for i in 0..3 {
        wait_function(&watcher, &format!("fleet::n{i}"), false).await;
    }
    let url = format!("{}/?token={fleet}", cluster.node(2).url);
    assert_eq!(upgrade_status(request(&url, &[])).await, 401);
    watcher.shutdown_async().await;
}

/// 10,000 wrong tokens in a loop: the node still answers a canary call at once, and its log
/// reports the refusals in a few counted lines instead of 10,000.
#[tokio::test]
async fn ten_thousand_wrong_tokens_leave_the_node_responsive_and_its_log_short() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = secured_node(&dir);
    let attempts = 10_000;
    let tasks = 4;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let root = format!("{}/", node.url);
        handles.push(tokio::spawn(async move {
            for n in 0..attempts / tasks {
                let url = format!("{root}?token=wrong-{t}-{n}");
                assert_eq!(upgrade_status(request(&url, &[])).await, 401);
            }
        }));
    }
    for handle in handles {
        handle.await.expect("attempts");
    }
    let started = Instant::now();
    let mut canary = RawClient::connect(&format!("{}/?token={BOOTSTRAP}", node.url)).await;
    let answer = raw_call(&mut canary, "engine::functions::list").await;
    assert!(answer["result"]["functions"].is_array(), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "canary took {:?}",
        started.elapsed()
    );
    let lines = eventually(
        "the refusals reported with a count",
        Duration::from_secs(20),
        || async {
            let log = strip_ansi(&node.log());
            let lines: Vec<String> = log
                .lines()
                .filter(|l| l.contains("worker token"))
                .map(str::to_string)
                .collect();
            lines
                .iter()
                .any(|l| l.contains("refused="))
                .then_some(lines)
        },
    )
    .await;
    assert!(
        lines.len() < 10,
        "{} lines about refusals:\n{}",
        lines.len(),
        lines.join("\n")
    );
}
