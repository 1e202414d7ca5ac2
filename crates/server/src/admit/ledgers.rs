//! Every tenant's admission state in memory: its GCRA state (when rate
//! limits are decided in this process), its quota ledger, its add-ons, its
//! cost estimates and the metering not yet written, all in one entry so that
//! a request finds them with one lookup. Tenants are spread over shards by
//! hash, each behind its own short lock, so the hot path costs one hash and
//! one uncontended lock whatever the number of tenants.
//!
//! Invariant: write-behind visits only the tenants with something to write.
//! Each shard lists them as they first get some, so a pass costs what
//! changed since the last one, not the number of tenants.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::BuildHasher;

// Tenant ids reach admission only after verification, so a fast keyed hash
// is enough; SipHash's flood resistance is not needed here.
use foldhash::fast::RandomState;
use std::sync::{Arc, Mutex, MutexGuard};

use tenantd_core::gcra::Decision;
use tenantd_core::plan::{AddOn, Metric, OpClass, Plan};
use tenantd_core::policy::Overrides;
use tenantd_core::quota::{Ledger, QuotaEvent};
use tenantd_core::{DataScope, TenantId};
use tenantd_store::usage::{HourUsage, UsageBatch};
use time::OffsetDateTime;

use super::limiter::{decide_slots, RateCheck, RateStore, Unavailable, LIMITS_PER_TENANT};
use super::shared_quotas::SharedView;

const SHARDS: usize = 64;

/// One tenant's admission and metering state.
#[derive(Debug, Default)]
pub struct TenantUsage {
    /// GCRA TATs by limit slot (µs since the epoch), 0 for none.
    rates: [u64; LIMITS_PER_TENANT],
    pub ledger: Ledger,
    /// Add-ons not known to have expired.
    pub add_ons: Vec<AddOn>,
    /// The highest catalog id among them when they were last replaced.
    add_ons_through: i64,
    /// Measured service time per operation class (µs), 0 until measured.
    pub estimates: [u32; 4],
    /// Metering not yet written: per hour (its start, Unix seconds).
    pending: Vec<(i64, HourUsage)>,
    events: Vec<(OffsetDateTime, QuotaEvent)>,
    /// The ledger changed since it was last written.
    ledger_changed: bool,
    /// Storage usage should be measured again, with this scope (boxed: it
    /// is rarely set, and every tenant carries the field).
    pub measure_storage: Option<Box<DataScope>>,
    /// Admitted requests since this process started, for the metrics' top-N.
    pub admitted_total: u64,
    /// The overrides of the tenant's policy in effect, if it has any.
    pub overrides: Option<Arc<Overrides>>,
    /// The effective plan last made from them, with the plan version it
    /// was made from (a new plan version makes it stale).
    pub effective: Option<(Arc<Plan>, Arc<Plan>)>,
    /// The tenant is in its shard's list of tenants to write.
    listed: bool,
    /// Its counters shared with other nodes, when quotas are shared.
    pub shared: Option<Box<SharedView>>,
}

impl TenantUsage {
    /// The highest catalog id among its add-ons when they were last set.
    pub fn add_ons_through(&self) -> i64 {
        self.add_ons_through
    }

    /// Puts `add_ons` in place of the tenant's, unless the ones it has were
    /// read after them (`through`, the highest catalog id among them, is
    /// lower than theirs): lists read at different times may arrive in any
    /// order, and a grant is never undone.
    pub fn replace_add_ons(&mut self, add_ons: Vec<AddOn>, through: i64) {
        if through >= self.add_ons_through {
            self.add_ons = add_ons;
            self.add_ons_through = through;
        }
    }

    /// Adds to the metering of the hour holding `now`.
    pub fn meter(&mut self, now: OffsetDateTime, f: impl FnOnce(&mut HourUsage)) {
        let secs = now.unix_timestamp();
        let hour = secs - secs.rem_euclid(3600);
        match self.pending.iter_mut().find(|(h, _)| *h == hour) {
            Some((_, usage)) => f(usage),
            None => {
                let mut usage = HourUsage::default();
                f(&mut usage);
                self.pending.push((hour, usage));
            }
        }
    }

    /// Whether anything waits to be written or measured.
    fn unwritten(&self) -> bool {
        self.ledger_changed
            || !self.pending.is_empty()
            || !self.events.is_empty()
            || self.measure_storage.is_some()
    }

    pub fn ledger_changed(&mut self) {
        self.ledger_changed = true;
    }

    pub fn note(&mut self, at: OffsetDateTime, events: impl IntoIterator<Item = QuotaEvent>) {
        self.events.extend(events.into_iter().map(|e| (at, e)));
    }

    /// The cost estimate for `class`, or `default` before any measurement.
    pub fn estimate(&self, class: OpClass, default: u64) -> u64 {
        match self.estimates[class.index()] {
            0 => default,
            measured => u64::from(measured),
        }
    }

    /// Folds one measured service time into the class's estimate (a moving
    /// average with weight 1/4 on the new value).
    pub fn measured(&mut self, class: OpClass, micros: u64, default: u64) {
        let old = self.estimate(class, default);
        let new = (3 * old + micros.max(1)) / 4;
        self.estimates[class.index()] = u32::try_from(new).unwrap_or(u32::MAX).max(1);
    }
}

#[derive(Debug, Default)]
struct Shard {
    tenants: HashMap<TenantId, TenantUsage, RandomState>,
    /// Tenants with something to write, each once.
    unwritten: Vec<TenantId>,
}

#[derive(Debug)]
pub struct Ledgers {
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
}

impl Default for Ledgers {
    fn default() -> Self {
        Self {
            hasher: RandomState::default(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Ledgers {
    fn shard(&self, tenant: &TenantId) -> MutexGuard<'_, Shard> {
        lock(&self.shards[self.hasher.hash_one(tenant) as usize % SHARDS])
    }

    /// Runs `f` on the tenant's state, creating it on first use.
    pub fn with<R>(&self, tenant: &TenantId, f: impl FnOnce(&mut TenantUsage) -> R) -> R {
        /// Runs `f`; `true` when it left the first thing to write.
        fn run<R>(usage: &mut TenantUsage, f: impl FnOnce(&mut TenantUsage) -> R) -> (R, bool) {
            let result = f(usage);
            let newly = !usage.listed && usage.unwritten();
            usage.listed |= newly;
            (result, newly)
        }
        let mut shard = self.shard(tenant);
        let (result, newly) = match shard.tenants.get_mut(tenant) {
            Some(usage) => run(usage, f),
            None => run(shard.tenants.entry(tenant.clone()).or_default(), f),
        };
        if newly {
            shard.unwritten.push(tenant.clone());
        }
        result
    }

    /// Decides a request against the tenant's rate limits, charging all of
    /// them or none.
    pub fn decide_rates(
        &self,
        tenant: &TenantId,
        checks: &[RateCheck],
        now: u64,
        cost: u32,
    ) -> Vec<Decision> {
        self.with(tenant, |usage| {
            decide_slots(&mut usage.rates, checks, now, cost)
        })
    }

    /// Loads what the store holds, at start: ledgers, and add-ons with
    /// their catalog ids.
    pub fn load(&self, ledgers: Vec<(TenantId, Ledger)>, add_ons: Vec<(i64, TenantId, AddOn)>) {
        for (tenant, mut ledger) in ledgers {
            // Whatever was in flight when the ledger was written is not now.
            ledger.set_level(Metric::ConcurrentRequests, 0);
            self.with(&tenant, |usage| usage.ledger = ledger);
        }
        for (id, tenant, add_on) in add_ons {
            self.with(&tenant, |usage| {
                usage.add_ons.push(add_on);
                usage.add_ons_through = usage.add_ons_through.max(id);
            });
        }
    }

    /// Takes everything not yet written, and the tenants whose storage
    /// should be measured. Expired add-ons of the tenants visited are
    /// dropped on the way (an expired add-on raises nothing; this only
    /// frees its memory).
    pub fn drain(&self, now: OffsetDateTime) -> (UsageBatch, Vec<DataScope>) {
        let mut batch = UsageBatch::default();
        let mut measure = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            let Shard { tenants, unwritten } = &mut *shard;
            // Taken, not drained: a pass after a burst of activity keeps no
            // list sized for it.
            for tenant in std::mem::take(unwritten) {
                // A tenant forgotten since it was listed has nothing to write.
                let Some(usage) = tenants.get_mut(&tenant) else {
                    continue;
                };
                usage.listed = false;
                if usage.ledger_changed {
                    usage.ledger_changed = false;
                    batch.ledgers.push((tenant.clone(), usage.ledger.clone()));
                }
                for (hour, delta) in usage.pending.drain(..) {
                    batch.hours.push((tenant.clone(), hour, delta));
                }
                for (at, event) in usage.events.drain(..) {
                    batch.events.push((tenant.clone(), at, event));
                }
                measure.extend(usage.measure_storage.take().map(|scope| *scope));
                usage.add_ons.retain(|a| a.expires_at > now);
            }
        }
        (batch, measure)
    }

    /// Puts back a batch whose write failed, to be written with the next.
    pub fn restore(&self, batch: UsageBatch) {
        for (tenant, _) in batch.ledgers {
            self.with(&tenant, TenantUsage::ledger_changed);
        }
        for (tenant, hour, delta) in batch.hours {
            self.with(&tenant, |usage| {
                match usage.pending.iter_mut().find(|(h, _)| *h == hour) {
                    Some((_, pending)) => pending.add(&delta),
                    None => usage.pending.push((hour, delta)),
                }
            });
        }
        for (tenant, at, event) in batch.events {
            self.with(&tenant, |usage| usage.events.push((at, event)));
        }
    }

    /// Forgets a purged tenant.
    pub fn forget(&self, tenant: &TenantId) {
        self.shard(tenant).tenants.remove(tenant);
    }

    /// The `n` tenants with the most admitted requests (ties by id), and
    /// the sum of the rest. One pass keeping the best `n` so far, so an id
    /// is copied only when it enters them, not once per tenant.
    pub fn top(&self, n: usize) -> (Vec<(TenantId, u64)>, u64) {
        // A min-heap of the best so far: its top is the first to give way.
        let mut best: BinaryHeap<Reverse<(u64, Reverse<TenantId>)>> = BinaryHeap::new();
        let mut total = 0u64;
        for shard in self.shards.iter() {
            let shard = lock(shard);
            for (tenant, usage) in &shard.tenants {
                let count = usage.admitted_total;
                total = total.saturating_add(count);
                let beats = |Reverse((c, Reverse(t))): &Reverse<(u64, Reverse<TenantId>)>| {
                    count > *c || (count == *c && tenant < t)
                };
                if count == 0 || n == 0 {
                    continue;
                }
                if best.len() == n {
                    if !best.peek().is_some_and(beats) {
                        continue;
                    }
                    best.pop();
                }
                best.push(Reverse((count, Reverse(tenant.clone()))));
            }
        }
        let mut top: Vec<(TenantId, u64)> = best
            .into_iter()
            .map(|Reverse((count, Reverse(tenant)))| (tenant, count))
            .collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let other = total - top.iter().map(|(_, c)| c).sum::<u64>();
        (top, other)
    }

    /// Tenants with state.
    pub fn tenants(&self) -> usize {
        self.shards.iter().map(|s| lock(s).tenants.len()).sum()
    }
}

/// The in-memory rate store: TATs beside the tenant's ledger.
impl RateStore for Ledgers {
    async fn decide(
        &self,
        tenant: &TenantId,
        checks: &[RateCheck],
        now: u64,
        cost: u32,
    ) -> Result<Vec<Decision>, Unavailable> {
        Ok(self.decide_rates(tenant, checks, now, cost))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tenantd_core::gcra::Limit;
    use time::macros::datetime;

    fn check(slot: usize, rate: u32, burst: u32) -> RateCheck {
        RateCheck {
            slot,
            limit: Limit::new(rate, Duration::from_secs(1), burst).unwrap(),
        }
    }

    #[test]
    fn a_request_is_charged_to_all_its_limits_or_to_none() {
        let ledgers = Ledgers::default();
        let tenant = TenantId::parse("acme").unwrap();
        let checks = [check(0, 10, 5), check(1, 1, 2)];
        let allowed = |d: &[Decision]| d.iter().all(|d| matches!(d, Decision::Allowed { .. }));
        assert!(allowed(
            &ledgers.decide_rates(&tenant, &checks, 1_000_000, 1)
        ));
        assert!(allowed(
            &ledgers.decide_rates(&tenant, &checks, 1_000_000, 1)
        ));
        // The class limit (burst 2) is spent; the tenant limit is not charged.
        let third = ledgers.decide_rates(&tenant, &checks, 1_000_000, 1);
        assert!(matches!(third[1], Decision::Denied { .. }));
        let tenant_only = ledgers.decide_rates(&tenant, &checks[..1], 1_000_000, 1);
        match tenant_only[0] {
            Decision::Allowed { remaining, .. } => assert_eq!(remaining, 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn metering_is_drained_once_and_restored_after_a_failed_write() {
        let ledgers = Ledgers::default();
        let acme = TenantId::parse("acme").unwrap();
        let t = datetime!(2026-03-20 10:59:59 UTC);
        ledgers.with(&acme, |u| {
            u.meter(t, |h| h.requests += 2);
            u.meter(t + time::Duration::seconds(1), |h| h.requests += 1);
            u.ledger_changed();
        });
        let (batch, _) = ledgers.drain(t);
        assert_eq!(batch.hours.len(), 2, "two hours");
        assert_eq!(batch.ledgers.len(), 1);
        let (empty, _) = ledgers.drain(t);
        assert!(empty.is_empty());
        ledgers.restore(batch);
        ledgers.with(&acme, |u| u.meter(t, |h| h.requests += 1));
        let (again, _) = ledgers.drain(t);
        let first_hour = again
            .hours
            .iter()
            .find(|(_, h, _)| *h == t.unix_timestamp() - 3599)
            .unwrap();
        assert_eq!(first_hour.2.requests, 3);
        assert_eq!(again.ledgers.len(), 1);
    }

    #[test]
    fn a_pass_writes_exactly_the_tenants_that_changed_since_the_last() {
        let ledgers = Ledgers::default();
        let t = datetime!(2026-03-20 10:00 UTC);
        let ids: Vec<TenantId> = (0..200)
            .map(|i| TenantId::parse(&format!("t-{i}")).unwrap())
            .collect();
        for id in &ids {
            ledgers.with(id, |u| u.meter(t, |h| h.requests += 1));
        }
        assert_eq!(ledgers.drain(t).0.hours.len(), 200);
        // Reading state or charging a rate leaves nothing to write.
        ledgers.with(&ids[0], |u| u.admitted_total);
        ledgers.decide_rates(&ids[1], &[check(0, 10, 5)], 1_000_000, 1);
        assert!(ledgers.drain(t).0.is_empty());

        // Three tenants change, one of them twice; one is then forgotten.
        for i in [5, 17, 5, 99] {
            ledgers.with(&ids[i], |u| {
                u.meter(t, |h| h.requests += 1);
                u.ledger_changed();
            });
        }
        ledgers.forget(&ids[99]);
        let (batch, _) = ledgers.drain(t);
        let mut written: Vec<(&str, u64)> = batch
            .hours
            .iter()
            .map(|(tenant, _, h)| (tenant.as_str(), h.requests))
            .collect();
        written.sort_unstable();
        assert_eq!(written, [("t-17", 1), ("t-5", 2)]);
        assert_eq!(batch.ledgers.len(), 2);
        assert!(ledgers.drain(t).0.is_empty(), "written once");
    }

    #[test]
    fn top_tenants_and_the_rest() {
        let ledgers = Ledgers::default();
        for (name, n) in [("a-1", 5), ("b-1", 9), ("c-1", 1), ("d-1", 0)] {
            ledgers.with(&TenantId::parse(name).unwrap(), |u| u.admitted_total = n);
        }
        let (top, other) = ledgers.top(2);
        let names: Vec<&str> = top.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(names, ["b-1", "a-1"]);
        assert_eq!(other, 1);
    }

    proptest::proptest! {
        /// The one-pass top-N equals sorting every tenant (count down, id up)
        /// and cutting, ties and idle tenants included.
        #[test]
        fn top_is_the_head_of_the_full_order(
            counts in proptest::collection::vec(0u64..6, 0..80),
            n in 0usize..12,
        ) {
            let ledgers = Ledgers::default();
            let mut all = Vec::new();
            for (i, &count) in counts.iter().enumerate() {
                let tenant = TenantId::parse(&format!("t-{i}")).unwrap();
                ledgers.with(&tenant, |u| u.admitted_total = count);
                if count > 0 {
                    all.push((tenant, count));
                }
            }
            all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let rest: u64 = all.iter().skip(n).map(|(_, c)| c).sum();
            all.truncate(n);
            proptest::prop_assert_eq!(ledgers.top(n), (all, rest));
        }
    }

    #[test]
    fn estimates_start_at_the_default_and_follow_measurements() {
        let mut u = TenantUsage::default();
        assert_eq!(u.estimate(OpClass::Read, 2000), 2000);
        u.measured(OpClass::Read, 10_000, 2000);
        assert_eq!(u.estimate(OpClass::Read, 2000), 4000);
        assert_eq!(u.estimate(OpClass::Write, 5000), 5000);
    }
}
