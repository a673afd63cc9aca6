//! The idle deadline of one worker connection.
//!
//! Why: arming a fresh timeout per frame costs a timer-wheel lock on every call, so the
//! session keeps one timer and moves it on from the last frame seen.

use std::time::Duration;

/// A connection with no inbound frame (pongs count) for this long is dead.
pub const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// When the connection last showed a sign of life; the idle timer fires at the
/// original deadline and is moved on from here, instead of being re-armed per frame.
pub struct IdleTimer {
    last_frame: tokio::time::Instant,
}

impl IdleTimer {
    pub fn new() -> Self {
        Self {
            last_frame: tokio::time::Instant::now(),
        }
    }

    pub fn saw_frame(&mut self) {
        self.last_frame = tokio::time::Instant::now();
    }

    /// The next deadline, or `None` when the connection has been idle for the limit.
    pub fn deadline(&self) -> Option<tokio::time::Instant> {
        let due = self.last_frame + IDLE_LIMIT;
        (due > tokio::time::Instant::now()).then_some(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_frame_moves_the_idle_deadline_and_silence_ends_it() {
        let mut idle = IdleTimer::new();
        tokio::time::advance(IDLE_LIMIT / 2).await;
        idle.saw_frame();
        tokio::time::advance(IDLE_LIMIT / 2 + Duration::from_secs(1)).await;
        // A full limit has passed since the connection opened, but not since its frame.
        let due = idle.deadline().expect("still alive");
        assert_eq!(
            due - tokio::time::Instant::now(),
            IDLE_LIMIT / 2 - Duration::from_secs(1)
        );
        tokio::time::advance(IDLE_LIMIT / 2).await;
        assert!(idle.deadline().is_none(), "silent for the whole limit");
    }
}
