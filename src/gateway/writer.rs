//! A session's writer task: owns the socket's sink, drains the session's byte-bounded
//! outbox, writes whatever is queued before one flush, pings the worker, and splits
//! messages over the frame limit into continuation frames. It also ends the connection
//! when the worker stops reading (the outbox stayed full for the stall timeout) and sends
//! the close frame of a connection the memory budget closed.

use futures_util::{Sink, SinkExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Frame};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::warn;

use super::connections::Outbound;
use crate::budget::{Eviction, OutboxReceiver, Queued, CLOSE_POLICY};
use crate::protocol::{FRAGMENT_BYTES, MAX_FRAME_BYTES, MAX_MESSAGE_BYTES};

/// Frames written before a flush when more are queued.
const BATCH: usize = 64;
/// How long an evicted connection's close frame may take to go out.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What ended one turn of the writer.
enum Turn {
    /// Wrote (or pinged); whether the connection is still open.
    Wrote(bool),
    /// The queue stayed full for the stall timeout: the worker does not read.
    Stalled,
    /// The budget closed the connection.
    Evicted(Eviction),
}

/// Writes until the outbox closes, a Close is sent, the socket fails, the worker stops
/// reading for `stall_timeout` while its queue is full, or the budget closes the connection.
pub async fn run<S>(
    mut sink: S,
    mut outbox: OutboxReceiver<Outbound>,
    ping_every: Duration,
    stall_timeout: Duration,
) where
    S: Sink<Message, Error = WsError> + Unpin,
{
    let watch = outbox.watch();
    let mut ping = tokio::time::interval(ping_every);
    ping.tick().await;
    loop {
        let work = async {
            tokio::select! {
                item = outbox.recv() => match item {
                    Some(first) => write_batch(&mut sink, &mut outbox, first).await,
                    None => false,
                },
                _ = ping.tick() => sink.send(Message::Ping(Default::default())).await.is_ok(),
            }
        };
        // Watched while writing too: a write to a worker that does not read never ends.
        // Work first: a turn that completes at once never looks at the watch.
        let turn = tokio::select! {
            biased;
            open = work => Turn::Wrote(open),
            eviction = watch.doomed() => Turn::Evicted(eviction),
            _ = watch.stalled(stall_timeout) => Turn::Stalled,
        };
        match turn {
            Turn::Wrote(true) => {}
            Turn::Wrote(false) => break,
            Turn::Stalled => {
                // Its session ends and cleans up as for any disconnect; the queue is dropped.
                let reason = format!("outbound queue full for {} ms", stall_timeout.as_millis());
                watch.share().doom(CLOSE_POLICY, &reason);
                return;
            }
            Turn::Evicted(Eviction { code, reason }) => {
                let close = async {
                    feed(&mut sink, Outbound::Close { code, reason }).await;
                    let _ = sink.flush().await;
                };
                let _ = tokio::time::timeout(CLOSE_GRACE, close).await;
                return;
            }
        }
    }
    let _ = sink.close().await;
}

/// Writes `first` and whatever else is queued (up to [`BATCH`]), then flushes once. Each
/// item's bytes go back to the budget once the sink has it.
async fn write_batch<S>(
    sink: &mut S,
    outbox: &mut OutboxReceiver<Outbound>,
    first: Queued<Outbound>,
) -> bool
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    let Queued { item, held } = first;
    let mut open = feed(sink, item).await;
    drop(held);
    let mut written = 1;
    while open && written < BATCH {
        let Some(Queued { item, held }) = outbox.try_recv() else {
            break;
        };
        open = feed(sink, item).await;
        drop(held);
        written += 1;
    }
    sink.flush().await.is_ok() && open
}

/// Queues one item on the sink; false when the connection is done.
async fn feed<S>(sink: &mut S, item: Outbound) -> bool
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    match item {
        Outbound::Text(text) if text.len() > MAX_MESSAGE_BYTES => {
            // No SDK accepts it: it would cost the worker its connection. The callers of
            // the outbox answer with `payload_too_large` before it comes to this.
            warn!(
                bytes = text.len(),
                limit = MAX_MESSAGE_BYTES,
                "message over the limit not sent"
            );
            true
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A sink that keeps what it is given.
    #[derive(Default)]
    struct Recorder(Vec<Message>);

    impl Sink<Message> for Recorder {
        type Error = WsError;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), WsError> {
            self.0.push(item);
            Ok(())
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_small_message_is_one_text_frame() {
        let mut sink = Recorder::default();
        assert!(feed(&mut sink, Outbound::Text("{\"type\":\"pong\"}".into())).await);
        assert_eq!(sink.0, vec![Message::Text("{\"type\":\"pong\"}".into())]);
    }

    #[tokio::test]
    async fn a_message_over_the_frame_limit_goes_out_in_continuation_frames() {
        let mut sink = Recorder::default();
        let text = "x".repeat(MAX_FRAME_BYTES + 1);
        assert!(feed(&mut sink, Outbound::Text(text)).await);
        let frames: Vec<&Frame> = sink
            .0
            .iter()
            .map(|m| match m {
                Message::Frame(f) => f,
                other => panic!("expected raw frames, got {other:?}"),
            })
            .collect();
        assert_eq!(frames.len(), MAX_FRAME_BYTES / FRAGMENT_BYTES + 1);
        assert_eq!(frames[0].header().opcode, OpCode::Data(Data::Text));
        assert!(frames[1..]
            .iter()
            .all(|f| f.header().opcode == OpCode::Data(Data::Continue)));
        assert!(frames[..frames.len() - 1]
            .iter()
            .all(|f| !f.header().is_final && f.payload().len() == FRAGMENT_BYTES));
        let last = frames[frames.len() - 1];
        assert!(last.header().is_final);
        assert_eq!(last.payload().len(), 1);
    }

    #[tokio::test]
    async fn a_message_no_sdk_accepts_is_not_sent_and_the_connection_stays() {
        let mut sink = Recorder::default();
        let text = "x".repeat(MAX_MESSAGE_BYTES + 1);
        assert!(feed(&mut sink, Outbound::Text(text)).await);
        assert!(sink.0.is_empty());
    }
}
