//! Health of one dependency (the catalog, a storage pool, a tenant's own
//! database, Redis): a circuit breaker over its calls, the state `/readyz`
//! reports, and one log line per change of that state, never one per call.
//!
//! A dependency that keeps failing is refused at once while its circuit is
//! open, so its callers get a fast 503 instead of each waiting out a
//! timeout; after the open time one call goes through as a probe and closes
//! the circuit if it succeeds, so the dependency heals without a restart.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tenantd_core::breaker::{Breaker, BreakerPolicy, CallKind, Outcome};
use tenantd_core::{Clock, SystemClock};

/// What `/readyz` says of a dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Its last call succeeded.
    Ok,
    /// Its last call failed, but its circuit is still closed.
    Degraded,
    /// Its circuit is open: calls are refused until a probe succeeds.
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Degraded => "degraded",
            Health::Down => "down",
        }
    }
}

/// A dependency's state as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub name: Arc<str>,
    pub health: Health,
    /// The last failure's description, kept after the dependency heals.
    pub last_error: Option<String>,
    /// Failed calls since start.
    pub errors_total: u64,
}

/// The breaker policy of dependencies: three failures out of at most six
/// calls in a window open the circuit for half a second, doubling up to two
/// while probes fail. Short, because one probe costs one failed call, and a
/// dependency that heals should serve again within a couple of seconds.
pub fn dependency_policy() -> BreakerPolicy {
    BreakerPolicy {
        window: Duration::from_secs(5),
        min_calls: 3,
        failure_percent: 50,
        open_for: Duration::from_millis(500),
        max_open_for: Duration::from_secs(2),
    }
}

/// One dependency's circuit and state.
pub struct Dependency {
    name: Arc<str>,
    policy: BreakerPolicy,
    inner: Mutex<Inner>,
}

struct Inner {
    breaker: Breaker,
    health: Health,
    last_error: Option<String>,
    errors_total: u64,
    /// Calls refused while the circuit was open, since it last opened.
    refused: u64,
}

impl fmt::Debug for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dependency")
            .field("name", &self.name)
            .field("health", &self.lock().health)
            .finish_non_exhaustive()
    }
}

/// A call let through by `Dependency::enter`; say how it ended with
/// `Call::finish`. One dropped unfinished (its caller went away) counts as
/// abandoned, so a probe cut short lets the next call probe.
#[derive(Debug)]
#[must_use]
pub struct Call<'a> {
    dependency: &'a Dependency,
    kind: Option<CallKind>,
}

impl Call<'_> {
    /// Records how the call ended: `Err` with a description if the
    /// dependency failed (not the caller's request).
    pub fn finish(mut self, result: Result<(), &dyn fmt::Display>) {
        if let Some(kind) = self.kind.take() {
            self.dependency.record(kind, result);
        }
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if let Some(kind) = self.kind.take() {
            let mut inner = self.dependency.lock();
            inner.breaker.record(
                &self.dependency.policy,
                kind,
                Outcome::Abandoned,
                real_now(),
            );
        }
    }
}

/// Now, for a dependency's circuit. It follows real time, not a clock a
/// test drives: it opens and heals as the real dependency fails and comes
/// back.
fn real_now() -> Instant {
    SystemClock.instant()
}

/// The dependency's circuit is open.
#[derive(Debug, Clone)]
pub struct Refused {
    pub name: Arc<str>,
    /// When a call will be let through again.
    pub retry_after: Duration,
}

impl Dependency {
    pub fn new(name: impl Into<Arc<str>>, policy: BreakerPolicy) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            policy,
            inner: Mutex::new(Inner {
                breaker: Breaker::new(real_now()),
                health: Health::Ok,
                last_error: None,
                errors_total: 0,
                refused: 0,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A few fields updated in one step: a poisoned lock holds no torn state.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Lets a call through, or refuses it while the circuit is open.
    pub fn enter(&self) -> Result<Call<'_>, Refused> {
        let mut inner = self.lock();
        match inner.breaker.try_call(real_now()) {
            Ok(kind) => Ok(Call {
                dependency: self,
                kind: Some(kind),
            }),
            Err(retry_after) => {
                inner.refused += 1;
                Err(Refused {
                    name: self.name.clone(),
                    retry_after,
                })
            }
        }
    }

    fn record(&self, kind: CallKind, result: Result<(), &dyn fmt::Display>) {
        let now = real_now();
        let mut inner = self.lock();
        let outcome = match result {
            Ok(()) => Outcome::Success,
            Err(error) => {
                inner.errors_total += 1;
                inner.last_error = Some(error.to_string());
                Outcome::Failure
            }
        };
        inner.breaker.record(&self.policy, kind, outcome, now);
        let health = if inner.breaker.is_open(now) {
            Health::Down
        } else if outcome == Outcome::Failure {
            Health::Degraded
        } else {
            Health::Ok
        };
        self.change(&mut inner, health);
    }

    /// Moves to `health`, logging the change once.
    fn change(&self, inner: &mut Inner, health: Health) {
        let was = inner.health;
        if was == health {
            return;
        }
        inner.health = health;
        let error = inner.last_error.as_deref().unwrap_or("");
        // Only going down and coming back up are logged: a failed call
        // beside successful ones (a full disk fails writes, not reads)
        // shows in `/readyz` and the error count, not a line each time.
        match (was, health) {
            (_, Health::Down) => {
                inner.refused = 0;
                tracing::error!(dependency = %self.name, %error, "dependency is down; refusing its calls until a probe succeeds");
            }
            (Health::Down, _) => tracing::warn!(
                dependency = %self.name,
                refused = inner.refused,
                "dependency is up again"
            ),
            _ => {}
        }
    }

    /// Whether the circuit is open now (or its probe is out).
    pub fn is_down(&self) -> bool {
        self.lock().health == Health::Down
    }

    /// The dependency's state now.
    pub fn status(&self) -> Status {
        // An open circuit whose time ran out stays down until its probe
        // succeeds: nothing has shown that the dependency healed.
        let inner = self.lock();
        Status {
            name: self.name.clone(),
            health: inner.health,
            last_error: inner.last_error.clone(),
            errors_total: inner.errors_total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Failure;
    impl fmt::Display for Failure {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("disk full")
        }
    }

    #[test]
    fn failures_open_the_circuit_and_a_good_probe_closes_it() {
        let policy = BreakerPolicy {
            open_for: Duration::from_millis(1),
            max_open_for: Duration::from_millis(1),
            ..dependency_policy()
        };
        let dep = Dependency::new("pool default", policy);
        assert_eq!(dep.status().health, Health::Ok);
        dep.enter().unwrap().finish(Err(&Failure));
        let status = dep.status();
        assert_eq!(status.health, Health::Degraded);
        assert_eq!(status.last_error.as_deref(), Some("disk full"));
        for _ in 0..2 {
            dep.enter().unwrap().finish(Err(&Failure));
        }
        assert_eq!(dep.status().health, Health::Down);
        assert_eq!(dep.status().errors_total, 3);
        assert!(dep.enter().is_err(), "refused while open");
        // Wait out the open time (1 ms) without sleeping on a clock the
        // breaker does not read: it reads `Instant`, so spin until it passes.
        let until = real_now() + Duration::from_millis(2);
        while real_now() < until {
            std::hint::spin_loop();
        }
        let probe = dep.enter().expect("the probe");
        assert!(dep.enter().is_err(), "one probe at a time");
        drop(probe);
        // A probe whose caller left decides nothing; the next call probes.
        let probe = dep.enter().expect("another probe");
        probe.finish(Ok(()));
        let status = dep.status();
        assert_eq!(status.health, Health::Ok);
        assert_eq!(status.last_error.as_deref(), Some("disk full"), "kept");
        assert!(dep.enter().is_ok());
    }
}
