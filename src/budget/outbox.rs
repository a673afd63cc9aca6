//! A session's outbound queue, bounded in bytes and charged to its connection's share.
//!
//! Why: senders of a worker's frames include shared paths (the router relaying answers, the
//! invocation stream from another node carrying calls for many workers). They must never
//! wait on one worker that does not read. So pushing never waits: a frame that does not fit
//! is refused at once and the queue counts as full until the writer has drained it to half
//! its limit; the writer ends the connection when the queue stays full for the stall timeout
//! (see [`Watch::stalled`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::share::{Eviction, Share};

/// What one queued item costs beyond its payload (the queue node, the enum).
const ITEM_OVERHEAD: u64 = 64;

/// Something that can be queued: its size in bytes, and whether it must be queued even
/// when the queue is full (a close frame).
pub trait Weigh {
    fn weight(&self) -> usize;
    fn must_queue(&self) -> bool {
        false
    }
}

/// Why a frame was not queued.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("the connection's outbound queue is full")]
    Full,
    #[error("the connection is over its share of the node's client memory budget")]
    OverBudget,
    #[error("the connection is closed")]
    Closed,
}

/// The sending side; cheap to clone.
#[derive(Debug)]
pub struct Outbox<T> {
    tx: mpsc::UnboundedSender<Queued<T>>,
    queue: Arc<Queue>,
}

impl<T> Clone for Outbox<T> {
    fn clone(&self) -> Self {
        Outbox {
            tx: self.tx.clone(),
            queue: self.queue.clone(),
        }
    }
}

/// The receiving side, owned by the connection's writer.
#[derive(Debug)]
pub struct OutboxReceiver<T> {
    rx: mpsc::UnboundedReceiver<Queued<T>>,
    queue: Arc<Queue>,
}

/// One queued item and the bytes it holds; the writer keeps `held` until the item is
/// written, then drops it.
#[derive(Debug)]
pub struct Queued<T> {
    pub item: T,
    pub held: Held,
}

/// Bytes an item holds in the budget, given back (and the queue counted as moving) when
/// dropped.
#[derive(Debug)]
pub struct Held {
    bytes: u64,
    queue: Arc<Queue>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let left = self.queue.bytes.fetch_sub(self.bytes, Ordering::Relaxed) - self.bytes;
        self.queue.share.release(self.bytes);
        // The writer made room: the queue is no longer full. (A writer stuck behind a
        // socket that is not read leaves it full however many frames the kernel took.)
        if left <= self.queue.limit / 2 {
            self.queue.clear_full();
        }
    }
}

#[derive(Debug)]
struct Queue {
    share: Share,
    bytes: AtomicU64,
    limit: u64,
    /// Since when a frame has been refused for want of room, with no progress since.
    full_since: Mutex<Option<Instant>>,
    /// Whether `full_since` is set: the writer's path looks here and takes no lock.
    full: AtomicBool,
    became_full: Notify,
}

impl Queue {
    fn clear_full(&self) {
        if self.full.load(Ordering::Acquire) {
            let mut full = self.full_since.lock().unwrap_or_else(|p| p.into_inner());
            *full = None;
            self.full.store(false, Ordering::Release);
        }
    }

    fn mark_full(&self) {
        let mut full = self.full_since.lock().unwrap_or_else(|p| p.into_inner());
        if full.is_none() {
            *full = Some(Instant::now());
            self.full.store(true, Ordering::Release);
            drop(full);
            self.became_full.notify_waiters();
        }
    }

    fn full_since(&self) -> Option<Instant> {
        *self.full_since.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A queue holding at most `limit` bytes (one item of any size fits into an empty queue),
/// charged to `share`.
pub fn outbox<T>(share: Share, limit: u64) -> (Outbox<T>, OutboxReceiver<T>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queue = Arc::new(Queue {
        share,
        bytes: AtomicU64::new(0),
        limit,
        full_since: Mutex::new(None),
        full: AtomicBool::new(false),
        became_full: Notify::new(),
    });
    (
        Outbox {
            tx,
            queue: queue.clone(),
        },
        OutboxReceiver { rx, queue },
    )
}

impl<T: Weigh> Outbox<T> {
    /// Queues `item` without waiting, or says why not. A refusal for room marks the queue
    /// full; one over the budget closes the connection (see [`Share::charge`]).
    pub fn push(&self, item: T) -> Result<(), Refusal> {
        if self.tx.is_closed() {
            return Err(Refusal::Closed);
        }
        let bytes = item.weight() as u64 + ITEM_OVERHEAD;
        let queue = &self.queue;
        if item.must_queue() {
            queue.share.charge_anyway(bytes);
        } else {
            let before = queue.bytes.load(Ordering::Relaxed);
            if before > 0 && before + bytes > queue.limit {
                queue.mark_full();
                return Err(Refusal::Full);
            }
            if !queue.share.charge(bytes) {
                return Err(Refusal::OverBudget);
            }
        }
        queue.bytes.fetch_add(bytes, Ordering::Relaxed);
        let held = Held {
            bytes,
            queue: queue.clone(),
        };
        self.tx
            .send(Queued { item, held })
            .map_err(|_| Refusal::Closed)
    }

    /// Bytes queued now.
    #[cfg(test)]
    pub fn queued_bytes(&self) -> u64 {
        self.queue.bytes.load(Ordering::Relaxed)
    }
}

impl<T> OutboxReceiver<T> {
    /// The next item, once there is one; `None` when every sender is gone.
    pub async fn recv(&mut self) -> Option<Queued<T>> {
        self.rx.recv().await
    }

    /// The next item if one is queued.
    pub fn try_recv(&mut self) -> Option<Queued<T>> {
        self.rx.try_recv().ok()
    }

    /// A handle to wait on the queue's stall or its connection's doom while the receiver
    /// is busy writing.
    pub fn watch(&self) -> Watch {
        Watch {
            queue: self.queue.clone(),
        }
    }
}

/// See [`OutboxReceiver::watch`].
#[derive(Debug, Clone)]
pub struct Watch {
    queue: Arc<Queue>,
}

impl Watch {
    /// The connection's account.
    pub fn share(&self) -> &Share {
        &self.queue.share
    }

    /// Resolves once frames have been refused for want of room and the queue has not been
    /// drained to half its limit for `timeout` since. Arms no timer while the queue has room.
    pub async fn stalled(&self, timeout: Duration) {
        loop {
            let notified = self.queue.became_full.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.queue.full_since() {
                None => notified.await,
                Some(since) if since.elapsed() >= timeout => return,
                Some(since) => tokio::time::sleep_until(since + timeout).await,
            }
        }
    }

    /// Resolves once the connection is doomed.
    pub async fn doomed(&self) -> Eviction {
        self.queue.share.doomed().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Budget;

    struct Bytes(usize, bool);
    impl Weigh for Bytes {
        fn weight(&self) -> usize {
            self.0
        }
        fn must_queue(&self) -> bool {
            self.1
        }
    }

    fn share(budget: &Arc<crate::budget::Budget>) -> Share {
        budget.open("127.0.0.1:1".parse().unwrap())
    }

    #[tokio::test]
    async fn the_queue_is_bounded_in_bytes_and_gives_them_back() {
        let budget = Budget::new(1, 1 << 30);
        let (tx, mut rx) = outbox(share(&budget), 1000);
        // One item of any size fits into an empty queue.
        tx.push(Bytes(5000, false)).unwrap();
        assert_eq!(tx.push(Bytes(10, false)), Err(Refusal::Full));
        // A close frame always goes in.
        tx.push(Bytes(10, true)).unwrap();
        assert_eq!(budget.used(), 5000 + 10 + 2 * ITEM_OVERHEAD);
        drop(rx.recv().await);
        tx.push(Bytes(10, false)).unwrap();
        drop(rx);
        assert_eq!(tx.queued_bytes(), 0);
        assert_eq!(budget.used(), 0, "a dropped queue gives back what it held");
        assert_eq!(tx.push(Bytes(1, false)), Err(Refusal::Closed));
    }

    #[tokio::test(start_paused = true)]
    async fn a_queue_full_without_progress_stalls_after_the_timeout() {
        let budget = Budget::new(1, 1 << 30);
        let (tx, mut rx) = outbox(share(&budget), 100);
        let watch = rx.watch();
        tx.push(Bytes(100, false)).unwrap();
        tx.push(Bytes(100, false)).unwrap_err();
        let started = Instant::now();
        watch.stalled(Duration::from_secs(10)).await;
        assert!(started.elapsed() >= Duration::from_secs(10));
        // Progress clears it: after a write the queue is not stalled.
        drop(rx.recv().await);
        let wait = tokio::time::timeout(
            Duration::from_secs(60),
            watch.stalled(Duration::from_secs(10)),
        );
        assert!(wait.await.is_err());
    }

    #[tokio::test]
    async fn a_push_over_the_budget_closes_the_connection() {
        let budget = Budget::new(1, 100);
        let hog = share(&budget);
        let (tx, _rx) = outbox::<Bytes>(hog.clone(), 1 << 20);
        assert_eq!(tx.push(Bytes(500, false)), Err(Refusal::OverBudget));
        assert!(hog.eviction().is_some());
    }
}
