//! backoff: how long a worker waits before its next start. Pure arithmetic on durations, so
//! the schedule is tested without a clock.

use std::time::Duration;

/// The restart schedule: `initial`, doubling up to `max`; a run that lasted `reset_after`
/// starts the schedule over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

impl Default for BackoffPolicy {
    /// 1 s doubling to 30 s, reset after 60 s up.
    fn default() -> Self {
        BackoffPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        }
    }
}

/// One worker's place in its restart schedule.
#[derive(Clone, Debug)]
pub struct Backoff {
    policy: BackoffPolicy,
    failures: u32,
}

impl Backoff {
    /// A schedule at its start.
    pub fn new(policy: BackoffPolicy) -> Self {
        Backoff {
            policy,
            failures: 0,
        }
    }

    /// The wait before the next start, after a run that lasted `uptime`.
    pub fn next_delay(&mut self, uptime: Duration) -> Duration {
        if uptime >= self.policy.reset_after {
            self.failures = 0;
        }
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        self.failures = self.failures.saturating_add(1);
        self.policy
            .initial
            .checked_mul(factor)
            .unwrap_or(self.policy.max)
            .min(self.policy.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(delays: impl IntoIterator<Item = Duration>) -> Vec<u64> {
        delays.into_iter().map(|d| d.as_secs()).collect()
    }

    #[test]
    fn quick_failures_double_from_one_second_up_to_thirty() {
        let mut backoff = Backoff::new(BackoffPolicy::default());
        let delays = (0..8).map(|_| backoff.next_delay(Duration::from_millis(10)));
        assert_eq!(secs(delays), [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn a_minute_up_starts_the_schedule_over() {
        let mut backoff = Backoff::new(BackoffPolicy::default());
        for _ in 0..4 {
            backoff.next_delay(Duration::ZERO);
        }
        assert_eq!(backoff.next_delay(Duration::from_secs(59)).as_secs(), 16);
        assert_eq!(backoff.next_delay(Duration::from_secs(60)).as_secs(), 1);
        assert_eq!(backoff.next_delay(Duration::ZERO).as_secs(), 2);
    }

    #[test]
    fn the_schedule_never_overflows() {
        let mut backoff = Backoff::new(BackoffPolicy::default());
        for _ in 0..1_000 {
            assert!(backoff.next_delay(Duration::ZERO) <= Duration::from_secs(30));
        }
    }
}
