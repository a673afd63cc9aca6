//! Half-open doors of real nodes: the HTTP endpoint and the cluster port drop clients that
//! never finish their request or handshake, cap their connections, and keep serving others;
//! a taken port is named in the bind error with the way to reserve it.

mod common;

use common::stalled::{count_closed_within, open_stalled};
use common::{http, Cluster, Node, NodeOptions};
use std::time::{Duration, Instant};

/// Slack on top of a node's deadline for the close to reach the client on a busy machine.
const SLACK: Duration = Duration::from_secs(3);

/// A node with extra `args`, and its data directory (dropped after the node).
fn node_with(args: &[&str]) -> (Node, tempfile::TempDir) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let options = NodeOptions {
        args: args.iter().map(|a| a.to_string()).collect(),
        ..NodeOptions::default()
    };
    (Node::start_in(&tmp.path().join("node"), options), tmp)
}

#[tokio::test]
async fn http_clients_that_never_finish_headers_are_dropped_while_healthz_answers() {
    let (node, _dir) = node_with(&["--http-header-timeout-ms", "2000"]);
    let started = Instant::now();
    let mut stalled = open_stalled(&node.http, 100, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;

    let (status, body) = http::get(&node.http, "/healthz").await.expect("healthz");
    assert_eq!(
        (status, body.as_str()),
        (200, "ok\n"),
        "healthz while 100 are stalled"
    );

    let closed = count_closed_within(&mut stalled, Duration::from_secs(2) + SLACK).await;
    assert_eq!(closed, 100, "every stalled HTTP client is dropped");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "dropped by the header timeout, not at once"
    );
    let log = node.log();
    assert!(
        log.contains("file descriptor limit"),
        "the fd limit is logged at start"
    );
}

#[tokio::test]
async fn http_connections_over_the_cap_are_closed_at_once() {
    let (node, _dir) = node_with(&[
        "--http-max-connections",
        "16",
        "--http-header-timeout-ms",
        "20000",
    ]);
    let mut stalled = open_stalled(&node.http, 100, b"GET /").await;
    let closed = count_closed_within(&mut stalled, Duration::from_secs(3)).await;
    assert!(
        (84..100).contains(&closed),
        "the node holds at most 16 connections and not fewer: {closed} of 100 closed"
    );
}

#[tokio::test]
async fn cluster_port_drops_partial_http2_prefaces_and_the_cluster_keeps_working() {
    let cluster = Cluster::start_with(3, |_| NodeOptions {
        args: vec!["--cluster-handshake-timeout-ms".into(), "2000".into()],
        ..NodeOptions::default()
    });
    let addr = cluster.node(0).cluster.clone();
    let mut stalled = open_stalled(&addr, 200, b"PRI * HTTP/2.0\r\n").await;

    assert!(
        cluster.status(0).is_some(),
        "the flooded node answers a cluster command"
    );
    let closed = count_closed_within(&mut stalled, Duration::from_secs(2) + SLACK).await;
    assert_eq!(closed, 200, "every partial preface is dropped");
    cluster.wait_until("all three nodes still agree on a leader", |c| {
        c.live().iter().all(|i| {
            c.status(*i)
                .is_some_and(|s| s["leader_id"].as_u64().is_some())
        })
    });
}

#[tokio::test]
async fn tls_cluster_port_drops_connections_that_never_handshake() {
    let cluster = Cluster::start_secure_with(1, |_| NodeOptions {
        args: vec!["--cluster-handshake-timeout-ms".into(), "2000".into()],
        ..NodeOptions::default()
    });
    let addr = cluster.node(0).cluster.clone();
    let mut stalled = open_stalled(&addr, 200, b"\x16\x03\x01").await;
    assert!(
        cluster.status(0).is_some(),
        "the flooded node answers a cluster command over TLS"
    );
    let closed = count_closed_within(&mut stalled, Duration::from_secs(2) + SLACK).await;
    assert_eq!(closed, 200, "every stalled TLS handshake is dropped");
}

#[tokio::test]
async fn cluster_connections_over_the_cap_are_closed_at_once() {
    let cluster = Cluster::start_with(1, |_| NodeOptions {
        args: vec![
            "--cluster-max-connections".into(),
            "8".into(),
            "--cluster-handshake-timeout-ms".into(),
            "4000".into(),
        ],
        ..NodeOptions::default()
    });
    let addr = cluster.node(0).cluster.clone();
    let mut stalled = open_stalled(&addr, 50, b"").await;
    let closed = count_closed_within(&mut stalled, Duration::from_secs(2)).await;
    assert!(
        (42..50).contains(&closed),
        "at most 8 held: {closed} of 50 closed at once"
    );
    drop(stalled);
    cluster.wait_until("the node answers once the flood is gone", |c| {
        c.status(0).is_some()
    });
}

#[test]
fn a_taken_port_is_named_with_how_to_reserve_it() {
    // The OS picks a free port from its ephemeral range, like an outgoing connection would.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = holder.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("temp dir");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_quorum"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .args(["--cluster-listen", &format!("127.0.0.1:{port}")])
        .output()
        .expect("run quorum");
    assert!(!output.status.success(), "the node refuses to start");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("port {port} is already in use")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("net.ipv4.ip_local_reserved_ports={port}")),
        "{stderr}"
    );
}
