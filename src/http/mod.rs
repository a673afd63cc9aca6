//! http: health checks and Prometheus metrics, on their own address (`--http-listen`).
//!
//! Owns the HTTP listener and its three endpoints: `/healthz` (is the process and its
//! Raft alive), `/readyz` (should a load balancer send workers here) and `/metrics`
//! (Prometheus text exposition). It starts before the node joins its cluster, so a
//! probe sees a joining node as alive but not ready, and it stops with the node.
//! It only reads node state: no handler commits, locks across an `.await` or blocks.

pub mod health;
pub mod metrics;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::node::ports::{self, BindError};
use crate::node::Node;
use crate::rpc::incoming::RefusalLog;

/// The content type of the Prometheus text format this endpoint writes.
const EXPOSITION_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds the HTTP address early, so a port clash stops the node before Raft starts.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    ports::bind(addr, "HTTP").await
}

/// Serves the endpoints on `listener` until `stop` is cancelled. A client that has not sent
/// its request headers within `--http-header-timeout-ms` is disconnected, and connections
/// over `--http-max-connections` are closed at once, so probes on a fresh connection keep
/// being answered while others hold connections open.
pub async fn serve(node: Arc<Node>, listener: TcpListener, stop: CancellationToken) {
    let node_id = node.id;
    if let Ok(addr) = listener.local_addr() {
        info!(node = node_id, http_listen = %addr, "health and metrics endpoint listening");
    }
    let header_timeout = node.config.http_header_timeout;
    let max_connections = node.config.http_max_connections;
    let routes = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(scrape))
        .with_state(node);
    let places = Arc::new(Semaphore::new(max_connections));
    let mut refusals = RefusalLog::new("HTTP");
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(node = node_id, error = %err, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let Ok(place) = places.clone().try_acquire_owned() else {
            drop(tcp);
            refusals.note(node_id, max_connections);
            continue;
        };
        let service = TowerToHyperService::new(routes.clone());
        let stop = stop.clone();
        tokio::spawn(async move {
            let _place = place;
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(tcp), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
}

async fn healthz(State(node): State<Arc<Node>>) -> impl IntoResponse {
    verdict(health::liveness(&node))
}

async fn readyz(State(node): State<Arc<Node>>) -> impl IntoResponse {
    verdict(health::readiness(&node))
}

async fn scrape(State(node): State<Arc<Node>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, EXPOSITION_CONTENT_TYPE)],
        metrics::render(&node),
    )
}

/// 200 `ok`, or 503 with the reason as plain text.
fn verdict(check: Result<(), &'static str>) -> (StatusCode, String) {
    match check {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}
