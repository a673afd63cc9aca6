//! The two ends of a channel as a socket sees them: where a writer's frames go and where a
//! reader's frames come from, whether the channel lives on this node or on another one.
//!
//! Why: the WebSocket relay ([`super::socket`]) is the same for both; only this seam knows
//! whether the channel is local or reached over a gRPC stream to its home node.

use futures_util::{FutureExt, StreamExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel as Connection;

use super::beat::{is_beat, Heard, Heartbeat, LastSent};
use super::buffer::{Channel, End, Item, Popped, PushError};
use super::metrics::{ChannelMetrics, Hop};
use super::pieces::{self, Joiner};
use super::table::Table;
use crate::rpc::pb;
use crate::rpc::pb::channel_frame::Kind;
use crate::rpc::pb::cluster_client::ClusterClient;

/// Where a writer's frames go.
pub enum Inlet {
    /// Into a channel living on this node.
    Local(Arc<Channel>),
    /// Onto the `ChannelWrite` stream to the home node; `gone` is cancelled when that call
    /// ends (the channel finished, its reader left, or the home node is unreachable).
    Remote {
        frames: mpsc::Sender<pb::ChannelFrame>,
        /// Marked with each piece sent, so the stream's beat loop beats only when it is quiet.
        sent: LastSent,
        gone: CancellationToken,
        /// Set when the home node refused the stream because the end was already taken.
        taken: Arc<AtomicBool>,
        metrics: Arc<ChannelMetrics>,
    },
}

impl Inlet {
    /// Passes one frame on, waiting while the channel (or the stream to it) is full.
    pub async fn push(&self, item: Item) -> Result<(), PushError> {
        match self {
            Inlet::Local(channel) => channel.push(item).await,
            Inlet::Remote {
                frames,
                sent,
                gone,
                metrics,
                ..
            } => {
                let len = item.len();
                for piece in pieces::split(item) {
                    // A home node cut off silently never makes room: its silence ends the wait.
                    tokio::select! {
                        queued = frames.send(piece) => queued.map_err(|_| PushError::Gone)?,
                        _ = gone.cancelled() => return Err(PushError::Gone),
                    }
                    sent.mark();
                }
                metrics.relayed(Hop::CrossNode, len);
                Ok(())
            }
        }
    }

    /// The writer is done, cleanly or not.
    pub async fn finish(&self, end: End) {
        match self {
            Inlet::Local(channel) => channel.finish_writer(end),
            Inlet::Remote { frames, gone, .. } => {
                tokio::select! {
                    _ = frames.send(end_frame(end)) => {}
                    _ = gone.cancelled() => {}
                }
            }
        }
    }

    /// Whether the home node refused this writer because the end was already connected.
    pub fn was_taken(&self) -> bool {
        match self {
            Inlet::Local(_) => false,
            Inlet::Remote { taken, .. } => taken.load(Ordering::Relaxed),
        }
    }

    /// Resolves once nobody will read what this writer sends.
    pub async fn gone(&self) {
        match self {
            Inlet::Local(channel) => channel.gone().await,
            Inlet::Remote { gone, .. } => gone.cancelled().await,
        }
    }
}

/// The most frames that go to a reader with one flush.
pub const BATCH_FRAMES: usize = 16;

/// The most bytes that go to a reader with one flush (a larger frame goes alone). Bounds what
/// a reader's node holds on the way out besides its channel: the channel counts a batch until
/// it is delivered, and a remote reader's node holds at most one batch.
pub const BATCH_BYTES: usize = 256 * 1024;

/// Frames that are ready for a reader, and how the stream ended if the end came with them.
#[derive(Debug, Default)]
pub struct Batch {
    pub items: Vec<Item>,
    /// The items' payload bytes.
    pub bytes: usize,
    pub ended: Option<End>,
}

impl Batch {
    fn push(&mut self, item: Item) {
        self.bytes += item.len();
        self.items.push(item);
    }
}

/// Where a reader's frames come from.
pub enum Outlet {
    /// A channel living on this node.
    Local {
        channel: Arc<Channel>,
        table: Arc<Table>,
    },
    /// The `ChannelRead` stream from the home node (boxed: it is much larger than an `Arc`).
    Remote {
        frames: Box<tonic::Streaming<pb::ChannelFrame>>,
        /// The pieces of a large frame received so far.
        joiner: Joiner,
        /// A frame received that did not fit into the last batch: the next one starts with it.
        waiting: Option<Item>,
        /// How long the home node may stay silent.
        heartbeat: Heartbeat,
        /// The stream of beats to the home node; dropping it ends the call.
        _to_home: mpsc::Sender<pb::ChannelFrame>,
        /// The stream's own connection, held as long as the stream.
        _connection: Box<ClusterClient<Connection>>,
    },
}

impl Outlet {
    /// The next frame, or how the stream ended. A remote stream that breaks, stops without
    /// its end marker or falls silent is a broken end.
    pub async fn next(&mut self) -> Popped {
        match self {
            Outlet::Local { channel, .. } => channel.pop().await,
            Outlet::Remote {
                frames,
                joiner,
                waiting,
                heartbeat,
                ..
            } => {
                if let Some(item) = waiting.take() {
                    return Popped::Item(item);
                }
                loop {
                    match heartbeat.next_frame(frames.as_mut()).await {
                        Heard::Frame(frame) => match joiner.join(frame) {
                            Some(whole) => return popped_of(whole),
                            None => continue,
                        },
                        Heard::Ended | Heard::Silent => return Popped::End(End::Broken),
                    }
                }
            }
        }
    }

    /// The next frame if one of at most `room` bytes is here now, or the end if it is;
    /// `None` when the reader would wait or the next frame is larger.
    fn try_next_within(&mut self, room: usize) -> Option<Popped> {
        match self {
            Outlet::Local { channel, .. } => channel.try_pop_within(room),
            Outlet::Remote {
                frames,
                joiner,
                waiting,
                ..
            } => {
                let popped = match waiting.take() {
                    Some(item) => Popped::Item(item),
                    None => loop {
                        match frames.next().now_or_never()? {
                            Some(Ok(frame)) if is_beat(&frame) => continue,
                            Some(Ok(frame)) => match joiner.join(frame) {
                                Some(whole) => break popped_of(whole),
                                None => continue,
                            },
                            Some(Err(_)) | None => break Popped::End(End::Broken),
                        }
                    },
                };
                match popped {
                    Popped::Item(item) if item.len() > room => {
                        *waiting = Some(item);
                        None
                    }
                    popped => Some(popped),
                }
            }
        }
    }

    /// The next frame and every other frame that is ready, up to [`BATCH_FRAMES`] frames and
    /// [`BATCH_BYTES`] (a larger first frame goes alone), so a reader gets them with one
    /// flush; or how the stream ended. The batch's bytes count in its channel until
    /// [`Outlet::delivered`].
    pub async fn next_batch(&mut self) -> Batch {
        let mut batch = Batch::default();
        match self.next().await {
            Popped::Item(item) => batch.push(item),
            Popped::End(end) => {
                batch.ended = Some(end);
                return batch;
            }
        }
        while batch.items.len() < BATCH_FRAMES {
            match self.try_next_within(BATCH_BYTES.saturating_sub(batch.bytes)) {
                Some(Popped::Item(item)) => batch.push(item),
                Some(Popped::End(end)) => {
                    batch.ended = Some(end);
                    break;
                }
                None => break,
            }
        }
        batch
    }

    /// The reader's socket took `bytes` of what this outlet gave: a local channel counts
    /// them no more and lets its writer fill their room.
    pub fn delivered(&self, bytes: usize) {
        match self {
            Outlet::Local { channel, .. } => channel.delivered(bytes),
            // The home node counts its own bytes; the stream's are bounded by flow control.
            Outlet::Remote { .. } => {}
        }
    }

    /// The reader is done (it got the end, or it left): the channel is removed at once.
    pub fn finish(self) {
        match self {
            Outlet::Local { channel, table } => {
                channel.finish_reader();
                table.remove(channel.id);
            }
            // Dropping the stream cancels the call; the home node then finishes the reader.
            Outlet::Remote { .. } => {}
        }
    }
}

/// The gRPC frame marking the end of a stream.
pub fn end_frame(end: End) -> pb::ChannelFrame {
    pb::ChannelFrame {
        kind: Some(Kind::End(pb::ChannelEnd {
            clean: end == End::Clean,
        })),
        more: false,
    }
}

/// What a received gRPC frame means for a reader; anything unexpected (text that is not
/// UTF-8 included: only a broken peer sends it) is a broken end.
pub fn popped_of(frame: pb::ChannelFrame) -> Popped {
    match frame.kind {
        Some(Kind::Text(text)) => match Utf8Bytes::try_from(text) {
            Ok(text) => Popped::Item(Item::Text(text)),
            Err(_) => Popped::End(End::Broken),
        },
        Some(Kind::Binary(data)) => Popped::Item(Item::Binary(data)),
        Some(Kind::End(end)) if end.clean => Popped::End(End::Clean),
        _ => Popped::End(End::Broken),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::id::{AccessKey, ChannelId};
    use crate::channels::table::Limits;
    use bytes::Bytes;
    use std::time::Duration;

    fn outlet(channel: &Arc<Channel>) -> Outlet {
        let limits = Limits {
            buffer_bytes: 1 << 30,
            unconnected_timeout: Duration::from_secs(60),
            max_channels: 1,
            max_per_connection: 1,
            reader_stall: Duration::from_secs(60),
        };
        Outlet::Local {
            channel: channel.clone(),
            table: Arc::new(Table::new(1, limits)),
        }
    }

    fn frame(len: usize) -> Item {
        Item::Binary(Bytes::from(vec![0u8; len]))
    }

    #[tokio::test]
    async fn a_batch_stops_at_256_kib_and_a_larger_frame_goes_alone() {
        let channel = Arc::new(Channel::new(
            ChannelId::new(1),
            AccessKey::new(),
            64,
            1 << 30,
        ));
        let mut outlet = outlet(&channel);
        channel.push(frame(1 << 20)).await.unwrap();
        for _ in 0..16 {
            channel.push(frame(64 * 1024)).await.unwrap();
        }
        channel.finish_writer(End::Clean);

        let alone = outlet.next_batch().await;
        assert_eq!((alone.items.len(), alone.bytes), (1, 1 << 20));
        let mut batches = Vec::new();
        loop {
            let batch = outlet.next_batch().await;
            assert!(batch.bytes <= BATCH_BYTES, "{} bytes", batch.bytes);
            batches.push(batch.items.len());
            outlet.delivered(batch.bytes);
            if let Some(end) = batch.ended {
                assert_eq!(end, End::Clean);
                break;
            }
        }
        // The end comes with the last frames.
        assert_eq!(batches, vec![4, 4, 4, 4]);
        // Only the first batch is still counted: it was never delivered.
        assert_eq!(channel.held(), (0, 1 << 20));
    }
}
