//! Rate limits for the warnings a client can cause, per connection and per kind.
//!
//! Why: a worker that sends malformed frames, forged `reattach` frames or refused
//! registrations in a loop would otherwise write one log line per frame and fill the
//! node's disk. The first occurrence of each kind is logged; after that at most one
//! line per [`INTERVAL`], carrying how many were suppressed since the last line.

use std::time::Duration;
use tokio::time::Instant;

/// At most one line per kind and connection this often (after the first).
pub const INTERVAL: Duration = Duration::from_secs(10);

/// The kinds of client-caused warnings, each limited on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Noise {
    MalformedFrame,
    ForgedReattach,
    RefusedRegistration,
    ProtocolViolation,
}

const KINDS: usize = 4;

/// One connection's limiter; owned by its session, so it needs no lock.
#[derive(Debug, Default)]
pub struct LogLimit {
    kinds: [Window; KINDS],
}

#[derive(Debug, Default, Clone, Copy)]
struct Window {
    next_line: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    /// `Some(suppressed)` when this occurrence may be logged (with the count of those
    /// suppressed since the previous line); `None` when it must be counted silently.
    pub fn admit(&mut self, kind: Noise) -> Option<u64> {
        let window = &mut self.kinds[kind as usize];
        let now = Instant::now();
        if window.next_line.is_some_and(|at| now < at) {
            window.suppressed += 1;
            return None;
        }
        window.next_line = Some(now + INTERVAL);
        Some(std::mem::take(&mut window.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn first_is_logged_then_one_line_per_interval_with_the_count() {
        let mut limit = LogLimit::default();
        assert_eq!(limit.admit(Noise::MalformedFrame), Some(0));
        for _ in 0..1000 {
            assert_eq!(limit.admit(Noise::MalformedFrame), None);
        }
        tokio::time::advance(INTERVAL / 2).await;
        assert_eq!(limit.admit(Noise::MalformedFrame), None);
        tokio::time::advance(INTERVAL / 2).await;
        assert_eq!(limit.admit(Noise::MalformedFrame), Some(1001));
        assert_eq!(limit.admit(Noise::MalformedFrame), None);
    }

    #[tokio::test(start_paused = true)]
    async fn kinds_are_limited_independently() {
        let mut limit = LogLimit::default();
        assert_eq!(limit.admit(Noise::MalformedFrame), Some(0));
        assert_eq!(limit.admit(Noise::ForgedReattach), Some(0));
        assert_eq!(limit.admit(Noise::ForgedReattach), None);
        assert_eq!(limit.admit(Noise::RefusedRegistration), Some(0));
        assert_eq!(limit.admit(Noise::ProtocolViolation), Some(0));
        assert_eq!(limit.admit(Noise::MalformedFrame), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_interval_starts_over_with_no_count() {
        let mut limit = LogLimit::default();
        assert_eq!(limit.admit(Noise::ForgedReattach), Some(0));
        tokio::time::advance(INTERVAL * 3).await;
        assert_eq!(limit.admit(Noise::ForgedReattach), Some(0));
    }
}
