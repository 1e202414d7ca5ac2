//! The generic cell rate algorithm (GCRA): a rate limit with a burst, kept as
//! one number per key, the theoretical arrival time (TAT) of the next
//! request. Pure arithmetic on nanoseconds, so that the in-memory and Redis
//! limiters make the same decision from the same state and clock.
//!
//! Time is counted in microseconds: instants since the Unix epoch then stay
//! below 2^53, so Redis's Lua (whose numbers are doubles) computes exactly
//! what this module computes.
//!
//! A limit of `rate` requests per `period` spaces requests one emission
//! interval `T = period / rate` apart; `burst` requests may arrive at once.
//! A request of cost `n` is allowed at `now` when `TAT + n·T − burst·T ≤ now`.

use std::time::Duration;

/// A rate limit: `rate` requests per `period`, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Microseconds between requests at the sustained rate.
    interval: u64,
    burst: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("a rate limit needs a rate and a burst of at least 1")]
    Zero,
    #[error("the period is too long or the rate too high to represent")]
    OutOfRange,
}

impl Limit {
    pub fn new(rate: u32, period: Duration, burst: u32) -> Result<Self, LimitError> {
        if rate == 0 || burst == 0 {
            return Err(LimitError::Zero);
        }
        let period = u64::try_from(period.as_micros()).map_err(|_| LimitError::OutOfRange)?;
        let interval = period / u64::from(rate);
        // A burst's worth of time stays below 2^50 µs (35 years), so that
        // instants plus tolerances stay exact in a double, as Lua needs.
        let fits = interval
            .checked_mul(u64::from(burst))
            .is_some_and(|tolerance| tolerance < 1 << 50);
        if interval == 0 || !fits {
            return Err(LimitError::OutOfRange);
        }
        Ok(Self { interval, burst })
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Microseconds between requests at the sustained rate.
    pub fn interval(&self) -> u64 {
        self.interval
    }

    /// How far ahead of `now` the TAT may run: the burst's worth of intervals.
    pub fn tolerance(&self) -> u64 {
        self.interval.saturating_mul(u64::from(self.burst))
    }
}

/// The outcome of one decision, with the state to store when allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed {
        /// The new TAT to store for the key.
        tat: u64,
        /// Requests of cost 1 still allowed right now.
        remaining: u32,
        /// Time until the limit is fully replenished.
        reset_after: Duration,
    },
    Denied {
        /// Time until a request of this cost would be allowed.
        retry_after: Duration,
        /// Time until the limit is fully replenished.
        reset_after: Duration,
    },
}

/// Decides a request of `cost` at `now` (microseconds on a scale shared by
/// all callers, normally since the Unix epoch) given the key's stored TAT, if any.
/// A cost above the burst is never allowed, whatever the state: its
/// `retry_after` is when it would fit were the burst large enough, so a
/// caller must not ask for more than the burst (HTTP requests cost 1).
pub fn decide(limit: &Limit, stored_tat: Option<u64>, now: u64, cost: u32) -> Decision {
    let tat = stored_tat.map_or(now, |t| t.max(now));
    let new_tat = tat.saturating_add(limit.interval.saturating_mul(u64::from(cost)));
    let reset_after = |tat: u64| Duration::from_micros(tat.saturating_sub(now));
    // The earliest instant at which the request fits within the burst; in
    // i128, since it lies before the scale's zero early on.
    let allow_at = i128::from(new_tat) - i128::from(limit.tolerance());
    let early = allow_at - i128::from(now);
    if cost > limit.burst || early > 0 {
        return Decision::Denied {
            retry_after: Duration::from_micros(u64::try_from(early.max(0)).unwrap_or(u64::MAX)),
            reset_after: reset_after(tat),
        };
    }
    let remaining = -early / i128::from(limit.interval);
    Decision::Allowed {
        tat: new_tat,
        remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        reset_after: reset_after(new_tat),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECOND: u64 = 1_000_000;

    fn ten_per_second_burst_5() -> Limit {
        Limit::new(10, Duration::from_secs(1), 5).unwrap()
    }

    /// Runs requests of cost 1 at the given instants; returns which were allowed.
    fn run(limit: &Limit, instants: &[u64]) -> Vec<bool> {
        let mut tat = None;
        instants
            .iter()
            .map(|&now| match decide(limit, tat, now, 1) {
                Decision::Allowed { tat: t, .. } => {
                    tat = Some(t);
                    true
                }
                Decision::Denied { .. } => false,
            })
            .collect()
    }

    /// What `decide` must answer, in milliseconds (all exact multiples of
    /// the limits' intervals, so none is rounded).
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Want {
        Allowed { remaining: u32, reset_ms: u64 },
        Denied { retry_ms: u64, reset_ms: u64 },
    }

    /// A row of the table: its name, a limit (rate per period in ms,
    /// burst), the instants (ms) of earlier requests of cost 1, then one
    /// request (instant, cost) and its decision.
    type Row = (
        &'static str,
        (u32, u64, u32),
        &'static [u64],
        (u64, u32),
        Want,
    );

    /// Decisions worked out by hand from the definition.
    #[test]
    fn decisions_from_a_table() {
        use Want::{Allowed, Denied};
        let ms = |n: u64| n * SECOND / 1000;
        #[rustfmt::skip]
        let table: &[Row] = &[
            ("first request of a fresh key", (10, 1000, 5), &[], (0, 1),
                Allowed { remaining: 4, reset_ms: 100 }),
            ("the burst's last request", (10, 1000, 5), &[0, 0, 0, 0], (0, 1),
                Allowed { remaining: 0, reset_ms: 500 }),
            ("one past the burst waits one interval", (10, 1000, 5), &[0, 0, 0, 0, 0], (0, 1),
                Denied { retry_ms: 100, reset_ms: 500 }),
            ("part of the interval gone", (10, 1000, 5), &[0, 0, 0, 0, 0], (30, 1),
                Denied { retry_ms: 70, reset_ms: 470 }),
            ("exactly one interval later", (10, 1000, 5), &[0, 0, 0, 0, 0], (100, 1),
                Allowed { remaining: 0, reset_ms: 500 }),
            ("idle time refills no more than the burst", (10, 1000, 5), &[0, 0, 0, 0, 0], (60_000, 1),
                Allowed { remaining: 4, reset_ms: 100 }),
            ("a cost of 3 within the burst", (10, 1000, 5), &[0], (0, 3),
                Allowed { remaining: 1, reset_ms: 400 }),
            ("a cost of 3 with 2 left waits for the third", (10, 1000, 5), &[0, 0, 0], (0, 3),
                Denied { retry_ms: 100, reset_ms: 300 }),
            ("a cost of the whole burst on a full limit", (10, 1000, 5), &[], (0, 5),
                Allowed { remaining: 0, reset_ms: 500 }),
            ("wider than the burst, fresh key", (10, 1000, 5), &[], (0, 6),
                Denied { retry_ms: 100, reset_ms: 0 }),
            ("wider than the burst, long idle", (10, 1000, 5), &[0], (3_600_000, 6),
                Denied { retry_ms: 100, reset_ms: 0 }),
            ("burst of 1 is a plain rate", (2, 1000, 1), &[0], (499, 1),
                Denied { retry_ms: 1, reset_ms: 1 }),
            ("burst of 1, on time", (2, 1000, 1), &[0], (500, 1),
                Allowed { remaining: 0, reset_ms: 500 }),
            ("a daily limit", (1000, 86_400_000, 1000), &[0; 3], (0, 1),
                Allowed { remaining: 996, reset_ms: 4 * 86_400 }),
        ];
        for &(name, (rate, period, burst), history, (at, cost), want) in table {
            let limit = Limit::new(rate, Duration::from_millis(period), burst).unwrap();
            let mut tat = None;
            for &t in history {
                match decide(&limit, tat, ms(t), 1) {
                    Decision::Allowed { tat: next, .. } => tat = Some(next),
                    denied => panic!("{name}: history request at {t} ms: {denied:?}"),
                }
            }
            let got = match decide(&limit, tat, ms(at), cost) {
                Decision::Allowed {
                    remaining,
                    reset_after,
                    ..
                } => Allowed {
                    remaining,
                    reset_ms: u64::try_from(reset_after.as_millis()).unwrap(),
                },
                Decision::Denied {
                    retry_after,
                    reset_after,
                } => Denied {
                    retry_ms: u64::try_from(retry_after.as_millis()).unwrap(),
                    reset_ms: u64::try_from(reset_after.as_millis()).unwrap(),
                },
            };
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn a_burst_is_allowed_at_once_and_then_the_rate() {
        let limit = ten_per_second_burst_5();
        let allowed = run(&limit, &[0; 7]);
        assert_eq!(allowed, [true, true, true, true, true, false, false]);
        // One interval (100 ms) later, exactly one more fits.
        let mut tat = None;
        for _ in 0..5 {
            if let Decision::Allowed { tat: t, .. } = decide(&limit, tat, 0, 1) {
                tat = Some(t);
            }
        }
        assert!(matches!(
            decide(&limit, tat, SECOND / 10 - 1, 1),
            Decision::Denied { .. }
        ));
        assert!(matches!(
            decide(&limit, tat, SECOND / 10, 1),
            Decision::Allowed { remaining: 0, .. }
        ));
    }

    #[test]
    fn denial_says_exactly_when_to_retry_and_when_the_limit_is_full() {
        let limit = ten_per_second_burst_5();
        // The TAT after five requests at 0 is 500 ms.
        let tat = Some(SECOND / 2);
        match decide(&limit, tat, SECOND / 20, 1) {
            Decision::Denied {
                retry_after,
                reset_after,
            } => {
                assert_eq!(retry_after, Duration::from_millis(50));
                assert_eq!(reset_after, Duration::from_millis(450));
            }
            other => panic!("{other:?}"),
        }
        match decide(&limit, None, 0, 1) {
            Decision::Allowed {
                remaining,
                reset_after,
                ..
            } => {
                assert_eq!(remaining, 4);
                assert_eq!(reset_after, Duration::from_millis(100));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_cost_above_the_burst_never_fits() {
        let limit = ten_per_second_burst_5();
        assert!(matches!(
            decide(&limit, None, 1_000 * SECOND, 6),
            Decision::Denied { .. }
        ));
        assert!(matches!(
            decide(&limit, None, 0, 5),
            Decision::Allowed { remaining: 0, .. }
        ));
    }

    #[test]
    fn limits_must_be_representable() {
        assert_eq!(
            Limit::new(0, Duration::from_secs(1), 1),
            Err(LimitError::Zero)
        );
        assert_eq!(
            Limit::new(1, Duration::from_secs(1), 0),
            Err(LimitError::Zero)
        );
        assert_eq!(
            Limit::new(u32::MAX, Duration::from_micros(1), 1),
            Err(LimitError::OutOfRange)
        );
        let forty_years = Duration::from_secs(40 * 365 * 86_400);
        assert_eq!(Limit::new(1, forty_years, 1), Err(LimitError::OutOfRange));
    }

    proptest! {
        /// Whatever the arrival pattern, no window of length W admits more
        /// than burst + W / T requests, and a client that waits out its
        /// `retry_after` is then allowed.
        #[test]
        fn no_window_admits_more_than_burst_plus_rate(
            gaps in prop::collection::vec(0u64..300_000, 1..200),
            window in 1u64..3 * SECOND,
        ) {
            let limit = ten_per_second_burst_5();
            let mut instants = Vec::with_capacity(gaps.len());
            let mut now = 0;
            for gap in gaps {
                now += gap;
                instants.push(now);
            }
            let allowed: Vec<u64> = instants
                .iter()
                .zip(run(&limit, &instants))
                .filter_map(|(&t, ok)| ok.then_some(t))
                .collect();
            let cap = u64::from(limit.burst()) + window / limit.interval;
            for (i, &start) in allowed.iter().enumerate() {
                let within = allowed[i..].iter().take_while(|&&t| t < start + window).count();
                prop_assert!(within as u64 <= cap, "{within} in {window} µs from {start}");
            }

            let mut tat = None;
            for &t in &instants {
                match decide(&limit, tat, t, 1) {
                    Decision::Allowed { tat: next, .. } => tat = Some(next),
                    Decision::Denied { retry_after, .. } => {
                        let later = t + u64::try_from(retry_after.as_micros()).unwrap();
                        let retried = matches!(decide(&limit, tat, later, 1), Decision::Allowed { .. });
                        prop_assert!(retried, "denied again after waiting {:?}", retry_after);
                    }
                }
            }
        }
    }
}
