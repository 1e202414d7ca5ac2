//! The source of "now". Production reads the system clock; tests drive a
//! `ManualClock` so that expiry, overlap and retention are exact and instant.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use time::{Duration, OffsetDateTime};

pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The wall-clock time: what is stored, shown and compared across nodes.
    fn now(&self) -> OffsetDateTime;
    /// A monotonic instant, for durations measured in memory (breakers,
    /// freshness): never stored, never moved back by a clock adjustment.
    fn instant(&self) -> Instant;
}

/// Wall-clock time in UTC.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // The one place that may read the wall clock.
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    #[allow(clippy::disallowed_methods)] // The one place that may read the monotonic clock.
    fn instant(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to. Clones share the same time; its
/// wall-clock time and its instants move together.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<(OffsetDateTime, Instant)>>,
}

impl ManualClock {
    #[allow(clippy::disallowed_methods)] // Where its instants start; they move only when told.
    pub fn new(start: OffsetDateTime) -> Self {
        Self {
            now: Arc::new(Mutex::new((start, Instant::now()))),
        }
    }

    /// Moves the clock by `by`; instants move forward only (a monotonic
    /// clock never goes back), so a negative `by` moves only the wall clock.
    pub fn advance(&self, by: Duration) {
        let mut now = self.lock();
        now.0 += by;
        if let Ok(forward) = std::time::Duration::try_from(by) {
            now.1 += forward;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (OffsetDateTime, Instant)> {
        self.now
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        self.lock().0
    }

    fn instant(&self) -> Instant {
        self.lock().1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn manual_clock_moves_only_when_advanced_and_clones_share_time() {
        let clock = ManualClock::new(datetime!(2026-01-01 00:00 UTC));
        let twin = clock.clone();
        assert_eq!(clock.now(), datetime!(2026-01-01 00:00 UTC));
        let started = clock.instant();
        twin.advance(Duration::seconds(90));
        assert_eq!(clock.now(), datetime!(2026-01-01 00:01:30 UTC));
        assert_eq!(
            clock.instant() - started,
            std::time::Duration::from_secs(90)
        );
        // Back in wall-clock time only: an instant never goes back.
        twin.advance(Duration::seconds(-30));
        assert_eq!(clock.now(), datetime!(2026-01-01 00:01:00 UTC));
        assert_eq!(
            clock.instant() - started,
            std::time::Duration::from_secs(90)
        );
    }
}
