//! Workers calling each other without pause through the load balancer, counting answered
//! and failed calls: what a rolling restart, a partition or a killed node must not break.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinHandle;

use super::common::{call, eventually, wait_function};
use super::echo_worker;

/// The calls' counters, read while they run.
#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// `n` echo workers, each calling the next one's function in a loop (its task keeps the
/// worker connected).
pub struct Traffic {
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
    callers: Vec<JoinHandle<()>>,
}

impl Traffic {
    /// Connects `n` workers through `url`, waits until every function is visible, then
    /// starts the calls.
    pub async fn start(url: &str, n: usize) -> Traffic {
        let mut workers = Vec::new();
        for i in 0..n {
            workers.push(Arc::new(echo_worker(url, i).await));
        }
        for i in 0..n {
            wait_function(&workers[0], &format!("containers::w{i}"), true).await;
        }
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let callers = workers
            .iter()
            .enumerate()
            .map(|(i, client)| {
                let (client, counts, stop) = (client.clone(), counts.clone(), stop.clone());
                tokio::spawn(async move {
                    let target = format!("containers::w{}", (i + 1) % n);
                    let mut k = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        k += 1;
                        match call(&client, &target, json!({ "n": k })).await {
                            Ok(v) if v["n"] == k => counts.ok.fetch_add(1, Ordering::Relaxed),
                            other => {
                                // The first failures say why; the rest are counted.
                                if counts.failed.load(Ordering::Relaxed) < 10 {
                                    eprintln!("worker {i}: call {k} to {target} failed: {other:?}");
                                }
                                counts.failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                })
            })
            .collect();
        Traffic {
            counts,
            stop,
            callers,
        }
    }

    /// Calls answered and failed so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.counts.ok.load(Ordering::Relaxed),
            self.counts.failed.load(Ordering::Relaxed),
        )
    }

    /// Waits until `more` calls beyond the present count were answered.
    pub async fn flows(&self, more: u64) {
        let target = self.counts().0 + more;
        eventually("calls flow", Duration::from_secs(30), || async {
            (self.counts().0 >= target).then_some(())
        })
        .await
    }

    /// Stops the calls; the final (answered, failed).
    pub async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for caller in self.callers {
            caller.await.expect("caller task");
        }
        (
            self.counts.ok.load(Ordering::Relaxed),
            self.counts.failed.load(Ordering::Relaxed),
        )
    }
}
