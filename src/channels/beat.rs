//! Heartbeats on the cross-node channel streams (`ChannelWrite`, `ChannelRead`).
//!
//! Why: a node cut off without a connection reset (a partition, a dead link) is noticed by
//! HTTP/2 keep-alive only after about 10 s. Each side of a channel stream sends a beat every
//! [`BEAT_EVERY`], and a side that listens and hears nothing for [`SILENT_AFTER`] gives up
//! its end, so both ends of a channel whose home node is cut off close within about a second.
//! A side that does not listen (it is held back by a slow reader or a full channel) does not
//! count the time: backpressure is not silence.

use futures_util::{Stream, StreamExt};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tonic::Status;

use crate::rpc::pb;
use crate::rpc::pb::channel_frame::Kind;

/// How often each side of a channel stream says it is still there.
pub const BEAT_EVERY: Duration = Duration::from_millis(250);

/// A side that listens and hears nothing (no frame, no beat) for this long gives up.
pub const SILENT_AFTER: Duration = Duration::from_millis(750);

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
    /// Nothing came for [`SILENT_AFTER`].
    Silent,
}

/// The next frame other than a beat, waiting at most [`SILENT_AFTER`] for each arrival.
pub async fn next_frame<S>(stream: &mut S) -> Heard
where
    S: Stream<Item = Result<pb::ChannelFrame, Status>> + Unpin,
{
    loop {
        match tokio::time::timeout(SILENT_AFTER, stream.next()).await {
            Err(_) => return Heard::Silent,
            Ok(Some(Ok(frame))) if is_beat(&frame) => continue,
            Ok(Some(Ok(frame))) => return Heard::Frame(frame),
            Ok(Some(Err(_)) | None) => return Heard::Ended,
        }
    }
}

/// Listens to a stream that carries only beats until it ends ([`Heard::Ended`]) or goes
/// silent ([`Heard::Silent`]); anything else on it is ignored.
pub async fn until_quiet<S>(stream: &mut S) -> Heard
where
    S: Stream<Item = Result<pb::ChannelFrame, Status>> + Unpin,
{
    loop {
        match next_frame(stream).await {
            Heard::Frame(_) => continue,
            quiet => return quiet,
        }
    }
}

/// A ticker of [`BEAT_EVERY`] that does not catch up on missed beats.
pub fn ticker() -> tokio::time::Interval {
    let mut every = tokio::time::interval(BEAT_EVERY);
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    every
}

/// Puts a beat made by `make` on `queue` every [`BEAT_EVERY`] for as long as another sender
/// of it lives. A full queue skips the beat: the frames waiting there say as much.
pub async fn beat_into<T>(queue: mpsc::WeakSender<T>, make: impl Fn() -> T) {
    let mut every = ticker();
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
        assert!(matches!(next_frame(&mut stream).await, Heard::Frame(_)));
        assert!(matches!(next_frame(&mut stream).await, Heard::Silent));
        drop(tx);
        assert!(matches!(next_frame(&mut stream).await, Heard::Ended));
    }

    #[tokio::test(start_paused = true)]
    async fn beats_keep_a_quiet_stream_alive_until_the_last_sender_goes() {
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(beat_into(tx.downgrade(), || Ok(beat())));
        let mut stream = std::pin::pin!(crate::rpc::receiver_stream(rx));
        let listening = tokio::time::timeout(SILENT_AFTER * 5, until_quiet(&mut stream)).await;
        assert!(
            listening.is_err(),
            "beats every {BEAT_EVERY:?} are never silence"
        );
        drop(tx);
        assert!(matches!(until_quiet(&mut stream).await, Heard::Ended));
    }
}
