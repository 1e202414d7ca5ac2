//! A circuit breaker for one caller's calls to one service: closed while the
//! calls mostly succeed, open (refusing at once) for a while after too many
//! fail, then half-open, letting one probe call decide whether to close.
//!
//! The gateway keeps one per (tenant, service), so one tenant's failing
//! calls open only its own circuit. Time is passed in, so every transition
//! is tested on a fake clock.

use std::time::{Duration, Instant};

/// When a circuit opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerPolicy {
    /// Calls are counted in tumbling windows of this length.
    pub window: Duration,
    /// A window with fewer calls than this never opens the circuit.
    pub min_calls: u32,
    /// Share of failed calls in a window, in percent, that opens the circuit.
    pub failure_percent: u8,
    /// How long the circuit stays open the first time.
    pub open_for: Duration,
    /// Each failed probe doubles the open time, up to this.
    pub max_open_for: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            min_calls: 5,
            failure_percent: 50,
            open_for: Duration::from_secs(5),
            max_open_for: Duration::from_secs(60),
        }
    }
}

/// What a call let through may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// An ordinary call of a closed circuit.
    Normal,
    /// The one call of a half-open circuit whose outcome closes or reopens it.
    Probe,
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    /// The caller went away before the call ended: no evidence either way.
    Abandoned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        window_start: Instant,
        calls: u32,
        failures: u32,
    },
    Open {
        until: Instant,
        /// Openings in a row without a successful probe, this one included.
        trips: u32,
    },
    HalfOpen {
        probing: bool,
        trips: u32,
    },
}

/// One circuit.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: State,
}

/// How long a call refused by a half-open circuit is told to wait: the probe
/// in flight will have decided by then in most cases.
const PROBE_WAIT: Duration = Duration::from_secs(1);

impl Breaker {
    pub fn new(now: Instant) -> Self {
        Self {
            state: State::Closed {
                window_start: now,
                calls: 0,
                failures: 0,
            },
        }
    }

    /// Lets a call through, or says how long until the circuit lets one.
    pub fn try_call(&mut self, now: Instant) -> Result<CallKind, Duration> {
        match self.state {
            State::Closed { .. } => Ok(CallKind::Normal),
            State::Open { until, trips } => {
                if now < until {
                    Err(until - now)
                } else {
                    self.state = State::HalfOpen {
                        probing: true,
                        trips,
                    };
                    Ok(CallKind::Probe)
                }
            }
            State::HalfOpen { probing: true, .. } => Err(PROBE_WAIT),
            State::HalfOpen {
                probing: false,
                trips,
            } => {
                self.state = State::HalfOpen {
                    probing: true,
                    trips,
                };
                Ok(CallKind::Probe)
            }
        }
    }

    /// Records how a call let through by `try_call` ended.
    pub fn record(
        &mut self,
        policy: &BreakerPolicy,
        kind: CallKind,
        outcome: Outcome,
        now: Instant,
    ) {
        match (kind, &mut self.state) {
            (CallKind::Probe, State::HalfOpen { trips, .. }) => {
                let trips = *trips;
                self.state = match outcome {
                    Outcome::Success => State::Closed {
                        window_start: now,
                        calls: 0,
                        failures: 0,
                    },
                    Outcome::Failure => Self::open(policy, trips + 1, now),
                    Outcome::Abandoned => State::HalfOpen {
                        probing: false,
                        trips,
                    },
                };
            }
            (
                CallKind::Normal,
                State::Closed {
                    window_start,
                    calls,
                    failures,
                },
            ) => {
                if now.saturating_duration_since(*window_start) >= policy.window {
                    *window_start = now;
                    *calls = 0;
                    *failures = 0;
                }
                match outcome {
                    Outcome::Abandoned => return,
                    Outcome::Success => *calls += 1,
                    Outcome::Failure => {
                        *calls += 1;
                        *failures += 1;
                    }
                }
                // Only a failure opens the circuit: a call that just
                // succeeded is no reason to refuse the next one.
                let tripped = outcome == Outcome::Failure
                    && *calls >= policy.min_calls
                    && u64::from(*failures) * 100
                        >= u64::from(*calls) * u64::from(policy.failure_percent);
                if tripped {
                    self.state = Self::open(policy, 1, now);
                }
            }
            // A call that started before the circuit changed state tells
            // nothing about the state it ends in.
            _ => {}
        }
    }

    /// Whether calls are refused now (open, or half-open with its probe out).
    pub fn is_open(&self, now: Instant) -> bool {
        match self.state {
            State::Closed { .. } => false,
            State::Open { until, .. } => now < until,
            State::HalfOpen { probing, .. } => probing,
        }
    }

    fn open(policy: &BreakerPolicy, trips: u32, now: Instant) -> State {
        let doublings = trips.saturating_sub(1).min(16);
        let open_for = policy
            .open_for
            .saturating_mul(1 << doublings)
            .min(policy.max_open_for);
        State::Open {
            until: now + open_for,
            trips,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            window: Duration::from_secs(10),
            min_calls: 4,
            failure_percent: 50,
            open_for: Duration::from_secs(5),
            max_open_for: Duration::from_secs(12),
        }
    }

    fn call(b: &mut Breaker, outcome: Outcome, now: Instant) {
        let kind = b.try_call(now).expect("the circuit lets the call through");
        b.record(&policy(), kind, outcome, now);
    }

    /// Where each test's time starts; the breaker is given every instant.
    fn start() -> Instant {
        use crate::Clock;
        crate::ManualClock::new(time::OffsetDateTime::UNIX_EPOCH).instant()
    }

    /// A breaker that `n` failed calls at `t0` went through.
    fn failed(n: usize, t0: Instant) -> Breaker {
        let mut b = Breaker::new(t0);
        for _ in 0..n {
            call(&mut b, Outcome::Failure, t0);
        }
        b
    }

    #[test]
    fn a_success_never_opens_the_circuit() {
        // Two calls that started together both fail, then two succeed: the
        // third call (a success) reaches min_calls with half failed, and the
        // circuit still stays closed; only a failure can open it.
        let t0 = start();
        let mut b = Breaker::new(t0);
        let (one, two) = (b.try_call(t0).unwrap(), b.try_call(t0).unwrap());
        b.record(&policy(), one, Outcome::Failure, t0);
        b.record(&policy(), two, Outcome::Failure, t0);
        call(&mut b, Outcome::Success, t0);
        call(&mut b, Outcome::Success, t0);
        assert!(!b.is_open(t0));
        call(&mut b, Outcome::Failure, t0);
        assert!(b.is_open(t0), "3 of 5 failed, the last a failure");
    }

    #[test]
    fn opens_at_the_failure_share_once_enough_calls_were_made() {
        let t0 = start();
        let mut b = Breaker::new(t0);
        // Three failures alone are below min_calls: still closed.
        for _ in 0..3 {
            call(&mut b, Outcome::Failure, t0);
        }
        assert!(!b.is_open(t0));
        // The fourth call makes 4 calls, 4 failures: open for open_for.
        call(&mut b, Outcome::Failure, t0);
        assert_eq!(b.try_call(t0), Err(Duration::from_secs(5)));
        let later = t0 + Duration::from_secs(2);
        assert_eq!(b.try_call(later), Err(Duration::from_secs(3)));
    }

    #[test]
    fn stays_closed_below_the_failure_share() {
        let t0 = start();
        let mut b = Breaker::new(t0);
        // 1 failure in 3 calls is 33 %, below 50 %, however many calls.
        for _ in 0..10 {
            call(&mut b, Outcome::Success, t0);
            call(&mut b, Outcome::Success, t0);
            call(&mut b, Outcome::Failure, t0);
        }
        assert!(!b.is_open(t0));
    }

    #[test]
    fn a_new_window_forgets_the_old_failures() {
        let t0 = start();
        let mut b = failed(3, t0);
        // Past the window, the count starts again: 1 failure of 1 call.
        let t1 = t0 + Duration::from_secs(10);
        call(&mut b, Outcome::Failure, t1);
        assert!(!b.is_open(t1));
    }

    #[test]
    fn one_probe_after_the_open_time_closes_or_reopens_longer() {
        let t0 = start();
        let mut b = failed(4, t0);
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(b.try_call(t1), Ok(CallKind::Probe));
        // While the probe is out, others wait.
        assert_eq!(b.try_call(t1), Err(PROBE_WAIT));
        // A failed probe reopens for twice as long...
        b.record(&policy(), CallKind::Probe, Outcome::Failure, t1);
        assert_eq!(b.try_call(t1), Err(Duration::from_secs(10)));
        // ...and again, capped at max_open_for.
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(b.try_call(t2), Ok(CallKind::Probe));
        b.record(&policy(), CallKind::Probe, Outcome::Failure, t2);
        assert_eq!(b.try_call(t2), Err(Duration::from_secs(12)));
        // A successful probe closes it, with a fresh count.
        let t3 = t2 + Duration::from_secs(12);
        assert_eq!(b.try_call(t3), Ok(CallKind::Probe));
        b.record(&policy(), CallKind::Probe, Outcome::Success, t3);
        assert_eq!(b.try_call(t3), Ok(CallKind::Normal));
        for _ in 0..3 {
            call(&mut b, Outcome::Failure, t3);
        }
        assert!(!b.is_open(t3), "the old failures do not count");
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_call_probe() {
        let t0 = start();
        let mut b = failed(4, t0);
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(b.try_call(t1), Ok(CallKind::Probe));
        b.record(&policy(), CallKind::Probe, Outcome::Abandoned, t1);
        assert_eq!(b.try_call(t1), Ok(CallKind::Probe));
    }

    #[test]
    fn calls_that_end_after_the_circuit_opened_change_nothing() {
        let t0 = start();
        let mut b = Breaker::new(t0);
        // Two calls in flight; enough failures open the circuit meanwhile.
        let late = [b.try_call(t0).unwrap(), b.try_call(t0).unwrap()];
        for _ in 0..4 {
            call(&mut b, Outcome::Failure, t0);
        }
        for kind in late {
            b.record(&policy(), kind, Outcome::Success, t0);
        }
        assert!(b.is_open(t0));
        // Abandoned calls are not counted either way.
        let mut fresh = Breaker::new(t0);
        for _ in 0..10 {
            call(&mut fresh, Outcome::Abandoned, t0);
        }
        call(&mut fresh, Outcome::Failure, t0);
        assert!(
            !fresh.is_open(t0),
            "one failure in one counted call is under min_calls"
        );
    }
}
