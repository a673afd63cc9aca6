//! metrics: the counters this node keeps about the calls it handles.
//!
//! Plain atomics, bumped on the call path and read by the `/metrics` endpoint; nothing
//! here locks, awaits or allocates. Gauges that are facts of other modules (connected
//! workers, registry sizes, Raft state) are not kept here: the endpoint reads them from
//! their owners when it is scraped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the invocation duration buckets; `+Inf` is implied.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

/// Counters of one node, shared by the router, the gateway and the HTTP endpoint.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Calls started on this node that ended with a result.
    pub invocations_ok: AtomicU64,
    /// Calls started on this node that ended with an error (the handler's or the engine's).
    pub invocations_error: AtomicU64,
    /// How long calls started on this node took, from routing to answer.
    pub invocation_duration: Histogram,
    /// Calls handed to another node over the invocation stream.
    pub forwarded_sent: AtomicU64,
    /// Calls another node handed to this one.
    pub forwarded_received: AtomicU64,
    /// Worker connections accepted (recorded in the registry) since start.
    pub workers_connected: AtomicU64,
    /// Worker connections that ended since start.
    pub workers_disconnected: AtomicU64,
    /// Telemetry frames received (and dropped): OTLP export is not stored yet.
    pub telemetry_frames: AtomicU64,
}

impl Metrics {
    /// Counts a call that ended on the node where it started, with its duration.
    pub fn invocation_finished(&self, ok: bool, elapsed: Duration) {
        let counter = if ok {
            &self.invocations_ok
        } else {
            &self.invocations_error
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.invocation_duration.observe(elapsed);
    }

    /// Bumps a plain counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A fixed-bucket histogram of durations: a count per bucket, the total count and sum.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last slot is `+Inf`.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

/// A consistent-enough copy of a [`Histogram`] for one scrape.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// Cumulative counts, one per bound of [`DURATION_BUCKETS`], then `+Inf`.
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let slot = DURATION_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads the histogram. The `+Inf` bucket is the total count, so the exposition
    /// never shows a bucket above `_count` even while observations land concurrently.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let count = self.count.load(Ordering::Relaxed);
        let mut running = 0u64;
        let mut cumulative: Vec<u64> = self.buckets[..DURATION_BUCKETS.len()]
            .iter()
            .map(|b| {
                running += b.load(Ordering::Relaxed);
                running.min(count)
            })
            .collect();
        cumulative.push(count);
        HistogramSnapshot {
            cumulative,
            count,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_cumulative_buckets() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(100));
        histogram.observe(Duration::from_millis(30));
        histogram.observe(Duration::from_secs(120));
        let snap = histogram.snapshot();
        assert_eq!(snap.count, 3);
        assert_eq!(snap.cumulative.len(), DURATION_BUCKETS.len() + 1);
        assert_eq!(snap.cumulative[0], 1, "0.5 ms bucket");
        assert_eq!(snap.cumulative[6], 2, "50 ms bucket");
        assert_eq!(
            snap.cumulative[DURATION_BUCKETS.len() - 1],
            2,
            "60 s bucket"
        );
        assert_eq!(snap.cumulative[DURATION_BUCKETS.len()], 3, "+Inf");
        assert!((snap.sum_seconds - 120.0301).abs() < 1e-6);
    }

    #[test]
    fn outcomes_are_counted_apart() {
        let metrics = Metrics::default();
        metrics.invocation_finished(true, Duration::ZERO);
        metrics.invocation_finished(false, Duration::ZERO);
        metrics.invocation_finished(false, Duration::ZERO);
        assert_eq!(metrics.invocations_ok.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.invocations_error.load(Ordering::Relaxed), 2);
        assert_eq!(metrics.invocation_duration.snapshot().count, 3);
    }
}
