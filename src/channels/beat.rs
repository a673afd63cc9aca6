//! Heartbeats on the cross-node channel streams (`ChannelWrite`, `ChannelRead`).
//!
//! Why: a node cut off without a connection reset (a partition, a dead link) is noticed by
//! HTTP/2 keep-alive only after about 10 s. Each side of a channel stream beats every
//! [`Heartbeat::every`], and a side that listens and hears nothing for
//! [`Heartbeat::silent_after`] (`--channel-peer-silence-ms`, 750 ms by default) gives up its
//! end, so both ends of a channel whose home node is cut off close within about a second.
//! A side that does not listen (it is held back by a slow reader or a full channel) does not
//! count the time: backpressure is not silence. A side whose stream carries frames does not
//! beat between them ([`LastSent`]): each frame says as much as a beat.

use futures_util::{Stream, StreamExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tonic::Status;

use crate::rpc::pb;
use crate::rpc::pb::channel_frame::Kind;

/// How often each side of a channel stream says it is still there, at most.
pub const BEAT_EVERY: Duration = Duration::from_millis(250);

/// The default of `--channel-peer-silence-ms`: keeps the promise that a cut-off node's
/// channel ends close within a second.
pub const SILENT_AFTER: Duration = Duration::from_millis(750);

/// The beat rhythm of this node's channel streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// How often this side beats: every [`BEAT_EVERY`], or a third of `silent_after` when
    /// that is shorter, so a peer with the same setting hears at least two beats in time.
    pub every: Duration,
    /// A side that listens and hears nothing (no frame, no beat) for this long gives up.
    pub silent_after: Duration,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat::new(SILENT_AFTER)
    }
}

impl Heartbeat {
    /// Gives up after `silent_after` of silence, beating often enough for a peer that does.
    pub fn new(silent_after: Duration) -> Heartbeat {
        let every = BEAT_EVERY
            .min(silent_after / 3)
            .max(Duration::from_millis(1));
        Heartbeat {
            every,
            silent_after,
        }
    }

    /// The next frame other than a beat, waiting at most `silent_after` for each arrival.
    pub async fn next_frame<S>(&self, stream: &mut S) -> Heard
    where
        S: Stream<Item = Result<pb::ChannelFrame, Status>> + Unpin,
    {
        loop {
            match tokio::time::timeout(self.silent_after, stream.next()).await {
                Err(_) => return Heard::Silent,
                Ok(Some(Ok(frame))) if is_beat(&frame) => continue,
                Ok(Some(Ok(frame))) => return Heard::Frame(frame),
                Ok(Some(Err(_)) | None) => return Heard::Ended,
            }
        }
    }

    /// Listens to a stream that carries only beats until it ends ([`Heard::Ended`]) or goes
    /// silent ([`Heard::Silent`]); anything else on it is ignored.
    pub async fn until_quiet<S>(&self, stream: &mut S) -> Heard
    where
        S: Stream<Item = Result<pb::ChannelFrame, Status>> + Unpin,
    {
        loop {
            match self.next_frame(stream).await {
                Heard::Frame(_) => continue,
                quiet => return quiet,
            }
        }
    }

    /// A ticker of [`Heartbeat::every`] that does not catch up on missed beats.
    pub fn ticker(&self) -> tokio::time::Interval {
        let mut every = tokio::time::interval(self.every);
        every.set_missed_tick_behavior(MissedTickBehavior::Delay);
        every
    }

    /// Puts a beat made by `make` on `queue` every [`Heartbeat::every`] for as long as
    /// another sender of it lives, unless a frame went on it ([`LastSent`]) within the last
    /// beat period. A full queue skips the beat too: the frames waiting there say as much.
    pub async fn beat_into<T>(
        self,
        queue: mpsc::WeakSender<T>,
        make: impl Fn() -> T,
        sent: LastSent,
    ) {
        let mut every = self.ticker();
        loop {
            every.tick().await;
            let Some(sender) = queue.upgrade() else {
                return;
            };
            if sent.within(self.every) {
                continue;
            }
            if let Err(mpsc::error::TrySendError::Closed(_)) = sender.try_send(make()) {
                return;
            }
        }
    }
}

/// When a side last put a frame on its stream, so that its beat loop beats only into
/// silence instead of between frames. Cheap to clone; clones share the mark.
///
/// Why: a beat between frames of a busy stream is one more gRPC message that says nothing
/// the frames did not say already.
#[derive(Clone, Debug)]
pub struct LastSent {
    origin: Instant,
    /// Microseconds after `origin` plus one of the last frame; 0 while none was sent.
    micros: Arc<AtomicU64>,
}

impl Default for LastSent {
    fn default() -> Self {
        LastSent {
            origin: Instant::now(),
            micros: Arc::default(),
        }
    }
}

impl LastSent {
    /// A frame went on the stream now.
    pub fn mark(&self) {
        let micros = u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX - 1);
        self.micros.store(micros + 1, Ordering::Relaxed);
    }

    /// Whether a frame went on the stream within the last `period`.
    fn within(&self, period: Duration) -> bool {
        match self.micros.load(Ordering::Relaxed) {
            0 => false,
            micros => self.origin.elapsed() < Duration::from_micros(micros - 1) + period,
        }
    }
}

/// The beat frame.
pub fn beat() -> pb::ChannelFrame {
    pb::ChannelFrame {
        kind: Some(Kind::Beat(pb::ChannelBeat {})),
        more: false,
    }
}

/// Whether `frame` is a beat.
pub fn is_beat(frame: &pb::ChannelFrame) -> bool {
    matches!(frame.kind, Some(Kind::Beat(_)))
}

/// What listening to a peer's channel stream gave.
#[derive(Debug)]
pub enum Heard {
    /// A frame other than a beat.
    Frame(pb::ChannelFrame),
    /// The stream ended or broke.
    Ended,
    /// Nothing came for [`Heartbeat::silent_after`].
    Silent,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn beats_are_skipped_and_silence_is_noticed() {
        let (tx, rx) = mpsc::channel(4);
        let mut stream = std::pin::pin!(crate::rpc::receiver_stream(rx));
        tx.send(Ok(beat())).await.unwrap();
        tx.send(Ok(crate::channels::ends::end_frame(
            crate::channels::buffer::End::Clean,
        )))
        .await
        .unwrap();
        let heart = Heartbeat::default();
        assert!(matches!(
            heart.next_frame(&mut stream).await,
            Heard::Frame(_)
        ));
        assert!(matches!(heart.next_frame(&mut stream).await, Heard::Silent));
        drop(tx);
        assert!(matches!(heart.next_frame(&mut stream).await, Heard::Ended));
    }

    #[tokio::test(start_paused = true)]
    async fn beats_keep_a_quiet_stream_alive_until_the_last_sender_goes() {
        // A longer silence limit than the default, as on a loaded node.
        let heart = Heartbeat::new(Duration::from_secs(3));
        assert_eq!(heart.every, BEAT_EVERY);
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(heart.beat_into(tx.downgrade(), || Ok(beat()), LastSent::default()));
        let mut stream = std::pin::pin!(crate::rpc::receiver_stream(rx));
        let listening = tokio::time::timeout(
            heart.silent_after * 5,
            Heartbeat::default().until_quiet(&mut stream),
        )
        .await;
        assert!(
            listening.is_err(),
            "beats every {:?} are never silence",
            heart.every
        );
        drop(tx);
        assert!(matches!(heart.until_quiet(&mut stream).await, Heard::Ended));
    }

    #[tokio::test(start_paused = true)]
    async fn a_side_whose_frames_flow_does_not_beat_between_them_and_beats_once_quiet() {
        let heart = Heartbeat::default();
        let sent = LastSent::default();
        let (tx, mut rx) = mpsc::channel(256);
        let data = || pb::ChannelFrame {
            kind: Some(Kind::Binary(bytes::Bytes::from_static(b"data"))),
            more: false,
        };
        sent.mark();
        tokio::spawn(heart.beat_into(tx.downgrade(), beat, sent.clone()));
        let beats_queued = |rx: &mut mpsc::Receiver<pb::ChannelFrame>| {
            std::iter::from_fn(|| rx.try_recv().ok())
                .filter(is_beat)
                .count()
        };
        // A frame every half beat period for 20 periods: no beat among them.
        for _ in 0..40 {
            tx.send(data()).await.unwrap();
            sent.mark();
            tokio::time::sleep(heart.every / 2).await;
        }
        assert_eq!(beats_queued(&mut rx), 0, "beats between flowing frames");
        // Quiet for four periods: it beats again, once a period.
        tokio::time::sleep(heart.every * 4).await;
        let beats = beats_queued(&mut rx);
        assert!(
            (3..=4).contains(&beats),
            "{beats} beats in four quiet periods"
        );
    }

    #[test]
    fn a_short_silence_limit_beats_three_times_within_it() {
        let heart = Heartbeat::new(Duration::from_millis(300));
        assert_eq!(heart.every, Duration::from_millis(100));
    }
}
