//! logs: a worker's output, kept as a bounded tail of bytes and streamed to followers.
//! A worker that prints gigabytes costs the node at most the ring plus the follow channel.

use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::broadcast;

/// Chunks a follower may fall behind by before it skips ahead (it then misses output).
const FOLLOW_CHUNKS: usize = 64;

/// One worker's output: the last `capacity` bytes, and a broadcast of each new chunk.
pub struct LogRing {
    capacity: usize,
    tail: Mutex<VecDeque<u8>>,
    follow: broadcast::Sender<Bytes>,
}

impl LogRing {
    /// An empty log keeping at most `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        LogRing {
            capacity,
            tail: Mutex::new(VecDeque::with_capacity(capacity.min(64 * 1024))),
            follow: broadcast::channel(FOLLOW_CHUNKS).0,
        }
    }

    /// Appends output, dropping the oldest bytes beyond the capacity.
    pub fn push(&self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        {
            let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
            let keep = &chunk[chunk.len().saturating_sub(self.capacity)..];
            let held = tail.len();
            let overflow = (held + keep.len()).saturating_sub(self.capacity);
            tail.drain(..overflow.min(held));
            tail.extend(keep);
        }
        // No follower is not an error.
        let _ = self.follow.send(Bytes::copy_from_slice(chunk));
    }

    /// A line of the supervisor's own (starts, exits, backoff), marked as such.
    pub fn note(&self, line: &str) {
        self.push(format!("[quorum] {line}\n").as_bytes());
    }

    /// The kept tail, and a receiver of everything pushed after it.
    pub fn snapshot(&self) -> (Vec<u8>, broadcast::Receiver<Bytes>) {
        let tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        // Subscribing under the lock: no chunk falls between the tail and the stream.
        let follow = self.follow.subscribe();
        (tail.iter().copied().collect(), follow)
    }

    /// Bytes held in the tail now.
    pub fn len(&self) -> usize {
        self.tail.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether nothing was kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_newest_bytes_within_the_capacity() {
        let log = LogRing::new(8);
        log.push(b"hello ");
        log.push(b"world");
        assert_eq!(log.snapshot().0, b"lo world");
        log.push(b"0123456789abcdef");
        assert_eq!(log.snapshot().0, b"89abcdef");
        assert_eq!(log.len(), 8);
    }

    #[tokio::test]
    async fn a_follower_gets_what_comes_after_its_snapshot() {
        let log = LogRing::new(1024);
        log.push(b"before\n");
        let (tail, mut follow) = log.snapshot();
        assert_eq!(tail, b"before\n");
        log.note("started");
        assert_eq!(&follow.recv().await.unwrap()[..], b"[quorum] started\n");
    }

    #[tokio::test]
    async fn a_lagging_follower_skips_ahead_instead_of_holding_output() {
        let log = LogRing::new(16);
        let (_, mut follow) = log.snapshot();
        for i in 0..(FOLLOW_CHUNKS * 4) {
            log.push(format!("{i}\n").as_bytes());
        }
        assert!(matches!(
            follow.recv().await,
            Err(broadcast::error::RecvError::Lagged(_))
        ));
        assert!(follow.recv().await.is_ok());
    }
}
