//! A session's writer task: owns the socket's sink, drains the session's bounded
//! outbox, writes whatever is queued before one flush, pings the worker, and splits
//! messages over the frame limit into continuation frames.

use futures_util::{Sink, SinkExt};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Frame};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::connections::Outbound;
use crate::protocol::{FRAGMENT_BYTES, MAX_FRAME_BYTES};

/// Frames written before a flush when more are queued.
const BATCH: usize = 64;

/// Writes until the outbox closes, a Close is sent, or the socket fails.
pub async fn run<S>(mut sink: S, mut outbox: mpsc::Receiver<Outbound>, ping_every: Duration)
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    let mut ping = tokio::time::interval(ping_every);
    ping.tick().await;
    loop {
        tokio::select! {
            item = outbox.recv() => {
                let Some(item) = item else { break };
                let mut open = feed(&mut sink, item).await;
                let mut written = 1;
                while open && written < BATCH {
                    match outbox.try_recv() {
                        Ok(item) => {
                            open = feed(&mut sink, item).await;
                            written += 1;
                        }
                        Err(_) => break,
                    }
                }
                if sink.flush().await.is_err() || !open {
                    break;
                }
            }
            _ = ping.tick() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = sink.close().await;
}

/// Queues one item on the sink; false when the connection is done.
async fn feed<S>(sink: &mut S, item: Outbound) -> bool
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    match item {
        Outbound::Text(text) if text.len() > MAX_FRAME_BYTES => {
            let bytes = text.into_bytes();
            let chunks: Vec<&[u8]> = bytes.chunks(FRAGMENT_BYTES).collect();
            let last = chunks.len().saturating_sub(1);
            for (i, chunk) in chunks.into_iter().enumerate() {
                let opcode = if i == 0 {
                    OpCode::Data(Data::Text)
                } else {
                    OpCode::Data(Data::Continue)
                };
                let frame = Frame::message(chunk.to_vec(), opcode, i == last);
                if sink.feed(Message::Frame(frame)).await.is_err() {
                    return false;
                }
            }
            true
        }
        Outbound::Text(text) => sink.feed(Message::Text(text.into())).await.is_ok(),
        Outbound::Close { code, reason } => {
            let frame = CloseFrame {
                code: code.into(),
                reason: reason.into(),
            };
            let _ = sink.feed(Message::Close(Some(frame))).await;
            false
        }
    }
}
