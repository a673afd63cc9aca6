//! gateway: the worker-facing WebSocket listener.
//!
//! Owns accepting TCP connections, the HTTP upgrade (paths `/`, `/otel` and the channel
//! sockets of `crate::channels`, the worker token check of `auth::worker_gate`, the
//! capabilities header, size limits) and one session task per worker connection. The request
//! head is read first (`head.rs`) so that a channel request can be decided, asking its home
//! node if need be, before the upgrade.
//! It never decides registry questions itself: sessions turn frames into registry
//! commands and calls into router requests.

mod batch;
pub mod connections;
mod decode;
mod frames;
mod head;
mod idle;
mod log_limit;
mod read_turn;
mod reattach;
mod session;
mod telemetry;
mod writer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::{debug, warn};

use crate::auth::grant::Grant;
use crate::auth::worker_tls::{self, WorkerStream, WorkerTls};
use crate::budget::Metered;
use crate::channels::{self, endpoint::Admitted};
use crate::node::Node;
use crate::protocol::{
    CAPABILITIES_HEADER, CAPABILITY_TCP_NODELAY, MAX_FRAME_BYTES, MAX_MESSAGE_BYTES,
};
use read_turn::ReadTurn;

/// A client that has not finished its TLS handshake (on a `wss://` port) and its upgrade
/// request by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A worker's WebSocket, over a socket whose reads are charged to the client memory budget.
/// Its reads take turns with the other connections (`read_turn.rs`).
type WorkerSocket =
    tokio_tungstenite::WebSocketStream<Metered<ReadTurn<head::Rewind<WorkerStream>>>>;

/// What an upgrade request was admitted to.
enum Route {
    Worker(Arc<Grant>),
    Telemetry,
    Channel(Admitted),
}

/// Accepts worker connections until the node shuts down; over TLS when `tls` is given.
pub async fn serve(node: Arc<Node>, listener: TcpListener, tls: Option<WorkerTls>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(accept(node.clone(), tls.clone(), stream, peer));
                }
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(node = node.id, error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = node.shutdown.cancelled() => return,
            // Draining: new workers go to other nodes (the listener closes here).
            _ = node.draining.cancelled() => return,
        }
    }
}

/// tungstenite zero-fills this much of its read buffer before every read, and
/// reads until the socket is empty, so its 128 KiB default costs two 128 KiB
/// memsets per small frame; a bigger frame still arrives whole, in more reads.
const READ_BUFFER_BYTES: usize = 16 * 1024;

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_frame_size(Some(MAX_FRAME_BYTES))
        .max_message_size(Some(MAX_MESSAGE_BYTES))
}

async fn accept(node: Arc<Node>, tls: Option<WorkerTls>, stream: TcpStream, peer: SocketAddr) {
    let nodelay = stream.set_nodelay(true).is_ok();
    let share = node.budget.open(peer);
    let upgrade = async {
        let stream = worker_tls::secure(tls.as_ref(), stream).await?;
        let (request, stream) = head::read(stream).await?;
        let mut decision = Some(decide(&node, &request, peer).await);
        let mut route = None;
        // The refusal type is tungstenite's own; its size is not ours to choose.
        #[allow(clippy::result_large_err)]
        let callback = |_: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
            let decided = decision
                .take()
                .unwrap_or_else(|| Err(refusal(StatusCode::BAD_REQUEST, "")));
            route = Some(decided?);
            if nodelay {
                response.headers_mut().insert(
                    CAPABILITIES_HEADER,
                    HeaderValue::from_static(CAPABILITY_TCP_NODELAY),
                );
            }
            Ok(response)
        };
        let stream = Metered::new(ReadTurn::new(stream), share);
        let ws =
            tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(ws_config()))
                .await?;
        Ok::<_, tokio_tungstenite::tungstenite::Error>((ws, route))
    };
    let (ws, route) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, upgrade).await {
        Ok(Ok(upgraded)) => upgraded,
        Ok(Err(err)) => {
            debug!(node = node.id, peer = %peer, error = %err, "upgrade refused");
            return;
        }
        Err(_) => {
            debug!(node = node.id, peer = %peer, "upgrade timed out");
            return;
        }
    };
    match route {
        Some(Route::Worker(grant)) => session::run(node, ws, peer, grant).await,
        Some(Route::Telemetry) => telemetry::run(node, ws).await,
        Some(Route::Channel(admitted)) => channels::serve(node, ws, admitted).await,
        None => {}
    }
}

/// Decides an upgrade request from `peer`: its path, the worker token, and for a channel
/// socket whether the channel exists (on this node or, asked over gRPC, on its home node).
///
/// A channel socket needs no worker token: its access key, handed out only to a connection
/// the gate admitted (`engine::channels::create`), is its credential. The Node SDK opens
/// channel sockets without the headers or the query its worker connection carries.
#[allow(clippy::result_large_err)]
async fn decide(
    node: &Arc<Node>,
    request: &Request,
    peer: SocketAddr,
) -> Result<Route, ErrorResponse> {
    let (path, query) =
        match channels::endpoint::hidden_in_query(request.uri().path(), request.uri().query()) {
            Some((path, query)) => (path, Some(query)),
            None => (request.uri().path(), request.uri().query()),
        };
    if channels::endpoint::is_channel_path(path) {
        return match channels::endpoint::admit(node, path, query).await {
            Ok(admitted) => Ok(Route::Channel(admitted)),
            Err(why) => {
                let status = StatusCode::from_u16(why.status()).unwrap_or(StatusCode::NOT_FOUND);
                Err(refusal(status, &why.to_string()))
            }
        };
    }
    if path != "/" && path != "/otel" {
        return Err(refusal(StatusCode::NOT_FOUND, "no such endpoint"));
    }
    let admitted = node.worker_gate.admit(request, peer.ip(), &node.registry());
    let grant = admitted.map_err(|_| unauthorized())?;
    Ok(if path == "/" {
        Route::Worker(grant)
    } else {
        Route::Telemetry
    })
}

/// An HTTP refusal before any WebSocket exists.
fn refusal(status: StatusCode, reason: &str) -> ErrorResponse {
    let mut refusal = ErrorResponse::new(Some(reason.to_string()));
    *refusal.status_mut() = status;
    refusal
}

/// The answer to an upgrade without a valid worker token: 401 before any WebSocket exists.
fn unauthorized() -> ErrorResponse {
    let mut refusal = ErrorResponse::new(Some("missing or invalid worker token".to_string()));
    *refusal.status_mut() = StatusCode::UNAUTHORIZED;
    refusal
        .headers_mut()
        .insert("www-authenticate", HeaderValue::from_static("Bearer"));
    refusal
}
