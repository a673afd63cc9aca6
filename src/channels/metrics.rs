//! Counters of the channel relay, read by `/metrics`.
//!
//! Why: operators need to see how many channels are open and how much they carry, and how
//! much of it crosses nodes. Plain atomics; nothing here locks or awaits.

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
}
