//! The `/otel` endpoint: accepts the SDKs' telemetry socket and drops what it sends
//! (counted), so SDKs do not log reconnect warnings forever. It is never a worker.

use futures_util::StreamExt;
use std::sync::Arc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::auth::worker_tls::WorkerStream;
use crate::metrics::Metrics;
use crate::node::Node;
use crate::protocol::is_telemetry_frame;

/// Reads telemetry frames until the SDK or the node closes the socket.
pub async fn run(node: Arc<Node>, mut ws: WebSocketStream<WorkerStream>) {
    loop {
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(Message::Binary(bytes))) if is_telemetry_frame(&bytes) => Metrics::bump(&node.metrics.telemetry_frames),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            _ = node.shutdown.cancelled() => {
                let _ = ws.close(None).await;
                return;
            }
        }
    }
}
