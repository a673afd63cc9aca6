//! Counters of the channel relay, read by `/metrics`.
//!
//! Why: operators need to see how many channels are open and how much they carry, and how
//! much of it crosses nodes. Plain atomics; nothing here locks or awaits.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where a relayed frame went: between two sockets of this node, or to or from another node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hop {
    Local,
    CrossNode,
}

/// The channel counters of one node.
#[derive(Debug, Default)]
pub struct ChannelMetrics {
    /// Channels created on this node since start.
    pub created: AtomicU64,
    frames_local: AtomicU64,
    bytes_local: AtomicU64,
    frames_cross: AtomicU64,
    bytes_cross: AtomicU64,
    /// Channel ends served by this node now: its sockets and the streams of peers.
    pub ends_open: AtomicU64,
    /// Writer sockets on this node held back now (see [`ChannelMetrics::holding_back`]).
    writers_held_back: AtomicU64,
}

impl ChannelMetrics {
    /// Counts one frame of `len` bytes delivered to a reader socket or a peer.
    pub fn relayed(&self, hop: Hop, len: usize) {
        self.relayed_batch(hop, 1, len);
    }

    /// Counts `count` frames of `len` bytes in all delivered at once.
    pub fn relayed_batch(&self, hop: Hop, count: usize, len: usize) {
        let (frames, bytes) = match hop {
            Hop::Local => (&self.frames_local, &self.bytes_local),
            Hop::CrossNode => (&self.frames_cross, &self.bytes_cross),
        };
        frames.fetch_add(count as u64, Ordering::Relaxed);
        bytes.fetch_add(len as u64, Ordering::Relaxed);
    }

    /// (frames, bytes) relayed over `hop` since start.
    pub fn totals(&self, hop: Hop) -> (u64, u64) {
        let (frames, bytes) = match hop {
            Hop::Local => (&self.frames_local, &self.bytes_local),
            Hop::CrossNode => (&self.frames_cross, &self.bytes_cross),
        };
        (
            frames.load(Ordering::Relaxed),
            bytes.load(Ordering::Relaxed),
        )
    }

    /// Runs a writer's `push`, counting the writer as held back while the push waits for
    /// room (in its channel, or on the stream to the channel's home node). Only the node
    /// holding the writer's socket calls it, so a writer is counted once in the cluster.
    ///
    /// Why: a writer held back is backpressure doing its job, but an operator (and a test)
    /// needs to see it happen without watching the writer's byte count stand still.
    pub async fn holding_back<F: Future>(&self, push: F) -> F::Output {
        let mut push = std::pin::pin!(push);
        if let Some(done) = futures_util::FutureExt::now_or_never(push.as_mut()) {
            return done;
        }
        self.writers_held_back.fetch_add(1, Ordering::Relaxed);
        let _counted = HeldBack(&self.writers_held_back);
        push.await
    }

    /// Channel writers held back now.
    pub fn writers_held_back(&self) -> u64 {
        self.writers_held_back.load(Ordering::Relaxed)
    }
}

/// Counts a held-back writer out again when its push is done or dropped.
struct HeldBack<'a>(&'a AtomicU64);

impl Drop for HeldBack<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_writer_counts_as_held_back_only_while_its_push_waits() {
        let metrics = ChannelMetrics::default();
        assert_eq!(metrics.holding_back(async { 1 }).await, 1);
        assert_eq!(metrics.writers_held_back(), 0);
        let room = tokio::sync::Notify::new();
        let waiting = metrics.holding_back(room.notified());
        tokio::pin!(waiting);
        assert!(futures_util::poll!(waiting.as_mut()).is_pending());
        assert_eq!(metrics.writers_held_back(), 1);
        room.notify_one();
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("the push goes on once there is room");
        assert_eq!(metrics.writers_held_back(), 0);
    }
}
