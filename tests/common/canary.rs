//! The canary of the adversarial tests: two real SDK workers on a node, one calling the
//! other every few milliseconds while a hostile client does its worst, and the node's
//! memory read from `/proc`.
//!
//! The canary runs on a thread with its own tokio runtime, so the flood a test drives from
//! its own runtime does not delay the canary's timers: what it measures is the node.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iii_sdk::runtime::IIIConnectionState;
use iii_sdk::{Error, RegisterFunction};
use serde_json::{json, Value};

use super::{call, unique_name, wait_function, worker};

/// Pause between two canary calls.
const CALL_EVERY: Duration = Duration::from_millis(10);
/// A call that has not answered by then counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What the canary saw while it ran.
#[derive(Debug, Clone)]
pub struct CanaryReport {
    /// Latency of every call that answered, in call order.
    pub latencies: Vec<Duration>,
    /// Calls that failed or timed out, with the reason.
    pub failures: Vec<String>,
    /// Whether either canary worker was ever seen not connected.
    pub dropped: bool,
}

impl CanaryReport {
    /// The 99th percentile latency (zero when nothing answered).
    pub fn p99(&self) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let at = ((sorted.len() as f64) * 0.99).ceil() as usize;
        sorted[at.saturating_sub(1).min(sorted.len() - 1)]
    }

    /// The slowest call that answered.
    pub fn max(&self) -> Duration {
        self.latencies.iter().copied().max().unwrap_or_default()
    }

    /// The bar of the issue on this 2-core machine: calls kept answering (at least
    /// `min_calls`), none failed, p99 under 100 ms, none over 1 s, no connection dropped.
    pub fn assert_healthy(&self, min_calls: usize) {
        assert!(
            self.failures.is_empty(),
            "canary calls failed: {:?}",
            self.failures
        );
        assert!(!self.dropped, "a canary worker lost its connection");
        assert!(
            self.latencies.len() >= min_calls,
            "only {} canary calls answered (wanted at least {min_calls})",
            self.latencies.len()
        );
        assert!(
            self.p99() < Duration::from_millis(100),
            "canary p99 {:?} (max {:?}, {} calls)",
            self.p99(),
            self.max(),
            self.latencies.len()
        );
        assert!(
            self.max() < Duration::from_secs(1),
            "slowest canary call {:?}",
            self.max()
        );
    }
}

/// A caller and a callee worker exchanging calls until [`Canary::stop`].
pub struct Canary {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<CanaryReport>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Canary {
    /// Connects both workers to `url` (the callee's function is visible to the caller
    /// before this returns) and starts calling.
    pub fn start(url: &str) -> Canary {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(CanaryReport {
            latencies: Vec::new(),
            failures: Vec::new(),
            dropped: false,
        }));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let (url, stop, report) = (url.to_string(), stop.clone(), report.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("canary runtime");
                runtime.block_on(run(url, stop, report, ready_tx));
            })
        };
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("canary workers connected");
        Canary {
            stop,
            report,
            thread: Some(thread),
        }
    }

    /// What the canary has seen so far, without stopping it.
    pub fn snapshot(&self) -> CanaryReport {
        self.report.lock().unwrap().clone()
    }

    /// Stops calling and returns everything the canary saw.
    pub fn stop(mut self) -> CanaryReport {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.report.lock().unwrap().clone()
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

async fn run(
    url: String,
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<CanaryReport>>,
    ready: std::sync::mpsc::Sender<()>,
) {
    let function = format!("canary::{}", unique_name("echo").replace(['-', ':'], "_"));
    let callee = worker(&url, &unique_name("canary-callee"), None).await;
    callee.register_function(
        function.clone(),
        RegisterFunction::new_async(|input: Value| async move { Ok::<Value, Error>(input) }),
    );
    let caller = worker(&url, &unique_name("canary-caller"), None).await;
    wait_function(&caller, &function, true).await;
    let _ = ready.send(());
    let mut n: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let started = Instant::now();
        let answered =
            tokio::time::timeout(CALL_TIMEOUT, call(&caller, &function, json!({ "n": n }))).await;
        let took = started.elapsed();
        let connected = [&caller, &callee]
            .iter()
            .all(|c| c.get_connection_state() == IIIConnectionState::Connected);
        {
            let mut report = report.lock().unwrap();
            match answered {
                Ok(Ok(value)) if value["n"] == n => report.latencies.push(took),
                Ok(Ok(value)) => report
                    .failures
                    .push(format!("call {n}: wrong answer {value}")),
                Ok(Err(err)) => report.failures.push(format!("call {n}: {err}")),
                Err(_) => report
                    .failures
                    .push(format!("call {n}: no answer in {CALL_TIMEOUT:?}")),
            }
            report.dropped |= !connected;
        }
        tokio::time::sleep(CALL_EVERY).await;
    }
    callee.shutdown_async().await;
    caller.shutdown_async().await;
}
