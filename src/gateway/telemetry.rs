//! The `/otel` endpoint: accepts the SDKs' telemetry socket and drops what it sends
//! (counted), so SDKs do not log reconnect warnings forever. It is never a worker.

use futures_util::StreamExt;
use std::sync::Arc;
use tokio_tungstenite::tungstenite::Message;

use super::WorkerSocket;
use crate::metrics::Metrics;
use crate::node::Node;
use crate::protocol::is_telemetry_frame;

/// Reads telemetry frames until the SDK or the node closes the socket.
pub async fn run(node: Arc<Node>, mut ws: WorkerSocket) {
    loop {
        tokio::select! {
            frame = ws.next() => {
                // A whole message came out: its bytes are no longer held for the client.
                ws.get_ref().share().settle_inbound();
                match frame {
                    Some(Ok(Message::Binary(bytes))) if is_telemetry_frame(&bytes) => Metrics::bump(&node.metrics.telemetry_frames),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                    Some(Ok(_)) => {}
                }
            }
            _ = node.shutdown.cancelled() => {
                let _ = ws.close(None).await;
                return;
            }
        }
    }
}
