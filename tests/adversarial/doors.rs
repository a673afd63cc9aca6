//! Rows 6 and 7 of the issue, and point 5: thousands of clients that open the HTTP endpoint
//! and the cluster port and never finish a request or a handshake. They are dropped at the
//! deadlines, the node's memory stays flat, new workers still connect, and the canary never
//! notices.

use super::common::canary::Canary;
use super::common::footprint::rss_bytes;
use super::common::stalled::{count_closed_within, open_stalled};
use super::common::{unique_name, worker, Node, NodeOptions};
use std::time::Duration;

/// Lets this test process hold more sockets than the usual soft limit of 1,024.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_http_and_cluster_clients_are_dropped_and_workers_keep_connecting() {
    let _serial = super::serial();
    raise_fd_limit();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_in(
        dir.path(),
        NodeOptions {
            args: [
                "--http-header-timeout-ms",
                "2000",
                "--cluster-handshake-timeout-ms",
                "2000",
            ]
            .map(String::from)
            .to_vec(),
            ..NodeOptions::default()
        },
    );
    let canary = Canary::start(&node.url);
    let idle_rss = rss_bytes(node.pid());

    let mut http = open_stalled(&node.http, 2_000, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
    let mut grpc = open_stalled(&node.cluster, 1_000, b"PRI * HTTP/2.0\r\n").await;
    // While both floods are held, the worker port still takes a new real SDK worker.
    let newcomer = worker(&node.url, &unique_name("newcomer"), None).await;
    let flooded_rss = rss_bytes(node.pid());

    let http_closed = count_closed_within(&mut http, Duration::from_secs(2 + 5)).await;
    let grpc_closed = count_closed_within(&mut grpc, Duration::from_secs(5)).await;
    let report = canary.stop();
    newcomer.shutdown_async().await;

    assert_eq!(http_closed, 2_000, "stalled HTTP clients dropped");
    assert_eq!(grpc_closed, 1_000, "partial HTTP/2 prefaces dropped");
    let grew = flooded_rss.saturating_sub(idle_rss);
    assert!(
        grew < 64 << 20,
        "3,000 half-open clients cost {grew} bytes of RSS"
    );
    report.assert_healthy(100);
}
