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
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::node::Node;

/// The content type of the Prometheus text format this endpoint writes.
const EXPOSITION_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Why the HTTP endpoint cannot run.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// Binds the HTTP address early, so a port clash stops the node before Raft starts.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

/// Serves the endpoints on `listener` until `stop` is cancelled.
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    stop: CancellationToken,
) -> Result<(), HttpError> {
    if let Ok(addr) = listener.local_addr() {
        info!(node = node.id, http_listen = %addr, "health and metrics endpoint listening");
    }
    let routes = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(scrape))
        .with_state(node);
    axum::serve(listener, routes)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
        .map_err(HttpError::Serve)
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
