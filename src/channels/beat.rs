//! Heartbeats on the cross-node channel streams (`ChannelWrite`, `ChannelRead`).
//!
//! Why: a node cut off without a connection reset (a partition, a dead link) is noticed by
//! HTTP/2 keep-alive only after about 10 s. Each side of a channel stream beats every
//! [`Heartbeat::every`], and a side that listens and hears nothing for
//! [`Heartbeat::silent_after`] (`--channel-peer-silence-ms`, 750 ms by default) gives up its
//! end, so both ends of a channel whose home node is cut off close within about a second.
//! A side that does not listen (it is held back by a slow reader or a full channel) does not
//! count the time: backpressure is not silence.

use futures_util::{Stream, StreamExt};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
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
    /// another sender of it lives. A full queue skips the beat: the frames waiting there say
    /// as much.
    pub async fn beat_into<T>(self, queue: mpsc::WeakSender<T>, make: impl Fn() -> T) {
        let mut every = self.ticker();
        loop {
            every.tick().await;
            let Some(sender) = queue.upgrade() else {
                return;
            };
            if let Err(mpsc::error::TrySendError::Closed(_)) = sender.try_send(make()) {
                return;
            }
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
        tokio::spawn(heart.beat_into(tx.downgrade(), || Ok(beat())));
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

    #[test]
    fn a_short_silence_limit_beats_three_times_within_it() {
        let heart = Heartbeat::new(Duration::from_millis(300));
        assert_eq!(heart.every, Duration::from_millis(100));
    }
}
