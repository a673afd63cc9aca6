//! The size trigger of log compaction: openraft snapshots after a number of entries, which
//! says nothing about their size (a few big registrations can fill the disk long before 5000
//! entries). The log store reports the bytes of every append to [`LogBytes`]; once those since
//! the last snapshot reach the threshold, [`watch`] asks openraft for a snapshot, after which
//! openraft purges the log behind it.
//!
//! Invariant: the count restarts from zero whenever a snapshot is taken, whatever triggered it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::Raft;
use tokio::sync::Notify;

use super::TypeConfig;

/// Bytes appended to the Raft log since the last snapshot, shared by the log store (which
/// adds) and the [`watch`] task (which triggers and resets). Cheap to clone.
#[derive(Debug, Clone)]
pub struct LogBytes(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    appended: AtomicU64,
    threshold: u64,
    over: Notify,
}

impl LogBytes {
    /// A counter that wakes [`watch`] once `threshold` bytes were appended.
    pub fn new(threshold: u64) -> Self {
        LogBytes(Arc::new(Shared {
            appended: AtomicU64::new(0),
            threshold,
            over: Notify::new(),
        }))
    }

    /// Counts an append of `bytes`; wakes the watcher when the threshold is reached.
    pub fn appended(&self, bytes: u64) {
        let total = self.0.appended.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if total >= self.0.threshold {
            self.0.over.notify_one();
        }
    }

    /// Bytes appended since the last snapshot.
    #[cfg(test)]
    pub fn since_snapshot(&self) -> u64 {
        self.0.appended.load(Ordering::Relaxed)
    }

    /// Whether the threshold is reached; if so, restarts the count (a snapshot is coming).
    fn take_if_over(&self) -> bool {
        let shared = &self.0;
        shared
            .appended
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n >= shared.threshold).then_some(0)
            })
            .is_ok()
    }

    /// A snapshot was taken: what came before it is compacted away.
    fn reset(&self) {
        self.0.appended.store(0, Ordering::Relaxed);
    }
}

/// Asks `raft` for a snapshot whenever `bytes` crosses its threshold, and restarts the count on
/// every snapshot openraft takes on its own (the entry trigger). Ends when Raft shuts down.
pub async fn watch(bytes: LogBytes, raft: Raft<TypeConfig>) {
    let mut metrics = raft.metrics();
    let mut last_snapshot = metrics.borrow().snapshot;
    loop {
        tokio::select! {
            () = bytes.0.over.notified() => {
                if bytes.take_if_over() {
                    tracing::debug!(node = raft_id(&raft), "log bytes over the threshold: snapshot");
                    if raft.trigger().snapshot().await.is_err() {
                        return;
                    }
                }
            }
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
                let snapshot = metrics.borrow_and_update().snapshot;
                if snapshot != last_snapshot {
                    last_snapshot = snapshot;
                    bytes.reset();
                }
            }
        }
    }
}

fn raft_id(raft: &Raft<TypeConfig>) -> u64 {
    raft.metrics().borrow().id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_wakes_the_watcher_only_at_the_threshold_and_restarts_when_taken() {
        let bytes = LogBytes::new(1000);
        bytes.appended(600);
        assert!(
            !bytes.take_if_over(),
            "600 of 1000 bytes is under the threshold"
        );
        assert_eq!(bytes.since_snapshot(), 600);
        bytes.appended(400);
        assert!(bytes.take_if_over(), "1000 bytes reach the threshold");
        assert_eq!(bytes.since_snapshot(), 0, "a snapshot restarts the count");
        assert!(!bytes.take_if_over(), "one snapshot per threshold's worth");
    }

    #[tokio::test]
    async fn crossing_the_threshold_leaves_a_wake_up_for_the_watcher() {
        let bytes = LogBytes::new(10);
        bytes.appended(25);
        // The permit is stored even though nobody waited yet, so no crossing is missed.
        tokio::time::timeout(std::time::Duration::from_secs(1), bytes.0.over.notified())
            .await
            .expect("woken");
        assert!(bytes.take_if_over());
    }

    #[test]
    fn a_snapshot_from_the_entry_trigger_restarts_the_count_too() {
        let bytes = LogBytes::new(1000);
        bytes.appended(900);
        bytes.reset();
        bytes.appended(200);
        assert!(!bytes.take_if_over());
    }
}
