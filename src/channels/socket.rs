//! The relay between a channel end's WebSocket and the channel: frames keep their kind and
//! boundaries, a full channel stops the reading of the writer's socket, and keepalive pings
//! never close a writer whose data flows.
//!
//! Why a relay of its own (not the worker session): channel sockets carry no iii protocol,
//! have no 60 s idle limit, and a Rust SDK writer never reads its socket, so it never
//! answers a Ping: a writer counts as alive while its frames arrive.

use futures_util::{Sink, SinkExt, StreamExt};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

use super::buffer::{End, Item, PushError};
use super::ends::{Inlet, Outlet};
use super::metrics::{ChannelMetrics, Hop};
use crate::budget::Metered;
use crate::ids::NodeId;

/// How often the engine pings a channel socket.
const PING_EVERY: Duration = Duration::from_secs(20);

/// A channel socket from which nothing arrived (no frame, no Pong) and to which nothing
/// could be delivered for this long is dead.
pub const DEAD_AFTER: Duration = Duration::from_secs(90);

/// How long a closing socket gets to flush its Close frame.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);

/// A channel socket: a WebSocket over a socket whose reads are charged to the client's
/// share of the memory budget.
pub type ChannelSocket<S> = WebSocketStream<Metered<S>>;

/// Counts an open channel end for as long as it lives (the drain waits for them).
pub struct OpenEnd(Arc<ChannelMetrics>);

impl OpenEnd {
    /// Counts one more open end.
    pub fn new(metrics: Arc<ChannelMetrics>) -> OpenEnd {
        metrics.ends_open.fetch_add(1, Ordering::Relaxed);
        OpenEnd(metrics)
    }
}

impl Drop for OpenEnd {
    fn drop(&mut self) {
        self.0.ends_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The close reason of a second connection to an end already taken.
pub const TAKEN: &str = "this end of the channel is already connected";

/// Closes a socket whose end was already taken (upgraded, then closed at once with 1008).
pub async fn refuse<S>(mut ws: ChannelSocket<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = ws.close(Some(close_frame(CloseCode::Policy, TAKEN))).await;
}

/// Relays a writer's socket into `inlet` until the writer closes (a clean end), vanishes
/// (a broken end) or nobody reads any more.
pub async fn run_writer<S>(
    node: NodeId,
    ws: ChannelSocket<S>,
    inlet: Inlet,
    metrics: Arc<ChannelMetrics>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _open = OpenEnd::new(metrics.clone());
    let share = ws.get_ref().share().clone();
    let (mut sink, mut stream) = ws.split();
    let mut ping = keepalive();
    let mut heard = Instant::now();
    let outcome = loop {
        tokio::select! {
            message = stream.next() => {
                let item = match message {
                    Some(Ok(Message::Text(text))) => Item::Text(text),
                    Some(Ok(Message::Binary(data))) => Item::Binary(data),
                    Some(Ok(Message::Close(_))) => break Some(End::Clean),
                    Some(Ok(_)) => {
                        share.settle_inbound();
                        heard = Instant::now();
                        continue;
                    }
                    Some(Err(err)) => {
                        debug!(node, error = %err, "channel writer socket failed");
                        break Some(End::Broken);
                    }
                    None => break Some(End::Broken),
                };
                share.settle_inbound();
                match metrics.holding_back(inlet.push(item)).await {
                    Ok(()) => {}
                    Err(PushError::Gone) => break None,
                    Err(PushError::OverBudget) => break Some(End::Broken),
                }
                // After the push: a writer held back by a full channel is alive, however
                // long the reader took.
                heard = Instant::now();
            }
            _ = inlet.gone() => break None,
            _ = ping.tick() => {
                if heard.elapsed() >= DEAD_AFTER {
                    break Some(End::Broken);
                }
                let _ = sink.send(Message::Ping(Default::default())).await;
            }
        }
    };
    match outcome {
        Some(end) => {
            inlet.finish(end).await;
            if end == End::Clean {
                // Let tungstenite flush its reply to the writer's Close.
                let _ = tokio::time::timeout(CLOSE_FLUSH, stream.next()).await;
            }
        }
        None => {
            let frame = if inlet.was_taken() {
                close_frame(CloseCode::Policy, TAKEN)
            } else {
                close_frame(CloseCode::Error, "the channel's reader is gone")
            };
            let _ = tokio::time::timeout(CLOSE_FLUSH, sink.send(Message::Close(Some(frame)))).await;
        }
    }
    // A writer the budget cut off hears why (1008), if it still reads.
    if let Some(eviction) = share.eviction() {
        let frame = CloseFrame {
            code: CloseCode::from(eviction.code),
            reason: Utf8Bytes::from(eviction.reason),
        };
        let _ = tokio::time::timeout(CLOSE_FLUSH, sink.send(Message::Close(Some(frame)))).await;
    }
}

/// How a reader's relay stopped.
enum ReaderStop {
    /// The stream ended: the reader gets Close 1000 (clean) or 1011 (broken).
    Ended(End),
    /// The reader left, or its socket failed.
    Left,
    /// Nothing could be sent to the reader for the stall limit: it does not read.
    Stalled,
}

/// The close reason of a reader cut off because it does not read.
pub const STALLED: &str = "the reader made no progress reading the channel";

/// Relays `outlet` to a reader's socket: every item, then Close 1000 after a clean end or
/// Close 1011 after a broken one. A reader whose socket makes no progress for `stall` while
/// frames wait for it (see [`send_batch`]) is cut off with 1008 and its channel finished, so
/// its writer is told nobody reads.
pub async fn run_reader<S>(
    node: NodeId,
    ws: ChannelSocket<S>,
    mut outlet: Outlet,
    metrics: Arc<ChannelMetrics>,
    stall: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _open = OpenEnd::new(metrics.clone());
    let share = ws.get_ref().share().clone();
    let (mut sink, mut stream) = ws.split();
    let mut ping = keepalive();
    let mut heard = Instant::now();
    let end = loop {
        tokio::select! {
            batch = outlet.next_batch() => {
                if !batch.items.is_empty() {
                    let (frames, bytes) = (batch.items.len(), batch.bytes);
                    if let Err(stop) = send_batch(&mut sink, batch.items, stall).await {
                        break stop;
                    }
                    outlet.delivered(bytes);
                    heard = Instant::now();
                    metrics.relayed_batch(Hop::Local, frames, bytes);
                }
                if let Some(end) = batch.ended {
                    if end == End::Broken {
                        debug!(node, "channel ended broken: the reader gets 1011");
                    }
                    break ReaderStop::Ended(end);
                }
            },
            message = stream.next() => match message {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break ReaderStop::Left,
                Some(Ok(_)) => {
                    share.settle_inbound();
                    heard = Instant::now();
                }
            },
            _ = ping.tick() => {
                if heard.elapsed() >= DEAD_AFTER {
                    break ReaderStop::Left;
                }
                let ping = sink.send(Message::Ping(Default::default()));
                if tokio::time::timeout(stall, ping).await.is_err() {
                    break ReaderStop::Stalled;
                }
            }
        }
    };
    outlet.finish();
    let frame = match end {
        ReaderStop::Ended(End::Clean) => close_frame(CloseCode::Normal, ""),
        ReaderStop::Ended(End::Broken) => {
            close_frame(CloseCode::Error, "the channel's writer vanished")
        }
        ReaderStop::Left => return,
        ReaderStop::Stalled => {
            debug!(
                node,
                stall_secs = stall.as_secs(),
                "channel reader cut off: it does not read"
            );
            // Its socket is full: the Close gets the flush time, then the socket is dropped.
            let closing = sink.send(Message::Close(Some(close_frame(
                CloseCode::Policy,
                STALLED,
            ))));
            let _ = tokio::time::timeout(CLOSE_FLUSH, closing).await;
            return;
        }
    };
    let closing = async {
        sink.send(Message::Close(Some(frame))).await?;
        // Wait for the reader's answering Close, so the frame is not lost in a reset.
        while let Some(Ok(_)) = stream.next().await {}
        Ok::<_, tokio_tungstenite::tungstenite::Error>(())
    };
    let _ = tokio::time::timeout(CLOSE_FLUSH, closing).await;
}

/// Sends `items` to a reader's socket with one flush. Each frame the socket accepts, and the
/// flush, is progress: the reader counts as stalled only when one of them waits `stall`, so a
/// slow but steady reader is never cut off, however long the whole batch takes.
async fn send_batch<K>(sink: &mut K, items: Vec<Item>, stall: Duration) -> Result<(), ReaderStop>
where
    K: Sink<Message, Error = WsError> + Unpin,
{
    for item in items {
        progress(stall, sink.feed(message_of(item))).await?;
    }
    progress(stall, sink.flush()).await
}

/// One step of a send to a reader: its socket failed (the reader left), or made no progress
/// within `stall`.
async fn progress<F>(stall: Duration, step: F) -> Result<(), ReaderStop>
where
    F: std::future::Future<Output = Result<(), WsError>>,
{
    match tokio::time::timeout(stall, step).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(ReaderStop::Left),
        Err(_) => Err(ReaderStop::Stalled),
    }
}

/// The WebSocket frame carrying `item`.
fn message_of(item: Item) -> Message {
    match item {
        Item::Binary(data) => Message::Binary(data),
        Item::Text(text) => Message::Text(text),
    }
}

fn keepalive() -> tokio::time::Interval {
    let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ping
}

fn close_frame(code: CloseCode, reason: &'static str) -> CloseFrame {
    CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }
}
