//! Quotas shared by several nodes: request and byte quotas counted in Redis,
//! decided first from this node's view and replayed in batches, and decided
//! in Redis itself near a limit ("strict").
//!
//! A tenant's view (`SharedView`) holds, for each counted quota of its plan,
//! the total Redis last reported (`base`). The local ledger's usage is that
//! total plus what this node admitted (or refunded) since, so the difference
//! is what the next replay sends. Replays run every `quota_sync_interval`
//! for the tenants this node served, one script per tenant; each answers the
//! totals, which other nodes' replays raised (tenants far from every ceiling
//! every fifth replay). A decision is made in Redis instead, atomically with
//! every other node's, when the view is stale (not reported for twenty
//! replays), when the plan or add-ons changed, and when usage is within the
//! margin of a ceiling: the larger of `quota_strict_margin` of the limit and
//! eight times what other nodes added between the last two replays, times
//! one more for each replay the view missed since (a refused
//! request is always within it). Over-admission is what other nodes admit
//! from their own views within about one replay of the limit.
//!
//! Invariant: a node's local usage minus its view's `base` is exactly what it
//! has not yet told Redis; every path that learns a total from Redis sets
//! both in the same critical section of the tenant's ledger.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use tenantd_core::plan::{Metric, Period, Plan};
use tenantd_core::quota::{BillingDay, Ceiling, Demand, Ledger};
use tenantd_core::{Clock, TenantId};
use tenantd_store::health::Dependency;
use time::OffsetDateTime;
use tokio::sync::Mutex as AsyncMutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::ledgers::{Ledgers, TenantUsage};
use super::limiter::{RedisRates, Unavailable};
use crate::metrics::SharedQuotaLabels;

/// One script per tenant and call: replays what this node has not yet sent,
/// then, when asked, checks a request against each ceiling and charges it
/// only if it passes all. Per quota, ARGV holds: the delta to replay, the
/// total to start from if the key is missing (this node's view), the amount
/// to check, the amount to add if admitted, the ceiling, and how long the
/// key is kept (seconds: relative, so that no node's clock is compared with
/// Redis's). It answers every total, then 1 if admitted.
const QUOTA_LUA: &str = r#"
local n = #KEYS
local totals = {}
for i = 1, n do
  local a = 6 * (i - 1)
  local v = redis.call('GET', KEYS[i])
  if v then v = tonumber(v) else v = tonumber(ARGV[a + 2]) end
  v = v + tonumber(ARGV[a + 1])
  if v < 0 then v = 0 end
  totals[i] = v
end
local admitted = 1
for i = 1, n do
  local a = 6 * (i - 1)
  local check = tonumber(ARGV[a + 3])
  if check > 0 and totals[i] + check > tonumber(ARGV[a + 5]) then admitted = 0 end
end
for i = 1, n do
  local a = 6 * (i - 1)
  if admitted == 1 then totals[i] = totals[i] + tonumber(ARGV[a + 4]) end
  redis.call('SET', KEYS[i], string.format('%d', totals[i]))
  redis.call('EXPIRE', KEYS[i], ARGV[a + 6])
end
totals[n + 1] = admitted
return totals
"#;

/// The margin covers this many times what other nodes added between the
/// last two replays: their pace varies from one interval to the next.
const GROWTH_MARGIN: u64 = 8;

/// A tenant whose every quota has more than half its limit and more than
/// this many margins left is far from its ceilings: it is replayed every
/// `FAR_REPLAY_EVERY` intervals. (Half the limit, because the margin is
/// small until other nodes' pace has been seen.)
const FAR: u64 = 10;
const FAR_REPLAY_EVERY: u64 = 5;

/// How long after its window ends a counter is kept, for late replays.
const KEPT_AFTER_WINDOW: i64 = 86_400;

/// Tenants listed for the next replay, in shards so that requests of
/// different tenants seldom meet on one lock.
const SHARDS: usize = 16;

/// The counter of one quota's window: the tenant is the hash tag, so a
/// tenant's counters live on one cluster slot and one script reaches them.
pub fn quota_key(tenant: &TenantId, metric: Metric, period: Period, window_start: i64) -> String {
    format!(
        "tenantd:quota:{{{tenant}}}:{}:{}:{window_start}",
        metric.as_str(),
        period.as_str()
    )
}

/// One counted quota as this node sees it.
#[derive(Debug, Clone, Copy)]
struct Pair {
    ceiling: Ceiling,
    /// The total Redis last reported for the window.
    base: u64,
    /// What other nodes added between the last two reports.
    growth: u64,
}

/// A tenant's shared counters as this node last saw them.
#[derive(Debug)]
pub struct SharedView {
    /// The plan the ceilings were taken from: another plan means new ones.
    plan: Arc<Plan>,
    add_ons_through: i64,
    pairs: Vec<Pair>,
    /// The replay (counted by `SharedQuotas::replays`) at which Redis last
    /// reported the totals; `None` before it ever did. Counted in replays,
    /// not read from the clock: replays run on real time, and a node whose
    /// replays stopped has a stale view whatever its clock says.
    synced_at: Option<u64>,
    /// Listed for the next replay.
    listed: bool,
    /// Held by this node's one call to Redis for the tenant at a time, so
    /// that what it has not yet sent is sent exactly once.
    gate: Arc<AsyncMutex<()>>,
}

/// Where a tenant's next quota decision is made.
#[derive(Debug)]
pub enum Route {
    /// From this node's view.
    Local,
    /// In Redis, once this node's call for the tenant holds the gate.
    Strict(Arc<AsyncMutex<()>>),
}

/// A decision to make in Redis: the call's keys and arguments, and what
/// this node's usage was when it sent them.
#[derive(Debug)]
pub struct StrictAsk {
    keys: Vec<String>,
    args: Vec<i64>,
    sent: Vec<(Ceiling, u64)>,
    plan: Arc<Plan>,
    add_ons_through: i64,
}

/// Redis's answer to a strict decision.
#[derive(Debug)]
pub struct StrictAnswer {
    totals: Vec<u64>,
    admitted: bool,
}

#[derive(Debug)]
pub struct SharedQuotas {
    redis: Arc<RedisRates>,
    script: redis::Script,
    health: Arc<Dependency>,
    interval: Duration,
    margin_percent: u64,
    clock: Arc<dyn Clock>,
    listed: Box<[Mutex<Vec<TenantId>>]>,
    hasher: RandomState,
    replays: AtomicU64,
    calls: Family<SharedQuotaLabels, Counter>,
    /// The nodes serving the catalog, as the registry last said: while Redis
    /// cannot be reached, this node admits its share of what was left.
    nodes: AtomicU64,
}

impl SharedQuotas {
    pub fn new(
        redis: Arc<RedisRates>,
        health: Arc<Dependency>,
        interval: Duration,
        margin_percent: u8,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            redis,
            script: redis::Script::new(QUOTA_LUA),
            health,
            interval,
            margin_percent: u64::from(margin_percent),
            clock,
            listed: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            replays: AtomicU64::new(0),
            calls: Family::default(),
            nodes: AtomicU64::new(1),
        }
    }

    /// Tells how many nodes serve the catalog now (at least this one).
    pub fn set_nodes(&self, nodes: u64) {
        self.nodes.store(nodes.max(1), Ordering::Relaxed);
    }

    /// While Redis cannot be reached and the limiter fails open: the first
    /// counted quota whose share for this node the request would pass. A
    /// node's share is an equal part, among the nodes serving, of what its
    /// view said was left: `base + (ceiling - base) / nodes`, so that the
    /// nodes together admit at most about the ceiling until Redis is back.
    /// A window this node has no view of is decided by its ledger alone.
    pub fn past_share(&self, usage: &TenantUsage, demand: Demand) -> Option<(Metric, Period)> {
        let nodes = self.nodes.load(Ordering::Relaxed);
        let view = usage.shared.as_ref()?;
        view.pairs.iter().find_map(|pair| {
            let ceiling = &pair.ceiling;
            let (start, used) = usage.ledger.counted(ceiling.metric, ceiling.period);
            if start != ceiling.window.0 {
                return None;
            }
            let share = pair.base + ceiling.limit.saturating_sub(pair.base) / nodes;
            let asked = match ceiling.metric {
                Metric::IngressBytes => demand.ingress_bytes.unwrap_or(0).max(1),
                _ => 1,
            };
            (used.saturating_add(asked) > share).then_some((ceiling.metric, ceiling.period))
        })
    }

    /// Counts its calls to Redis in `calls` (the server's metrics).
    pub fn counting_calls(self, calls: Family<SharedQuotaLabels, Counter>) -> Self {
        Self { calls, ..self }
    }

    fn count(&self, kind: &'static str, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.calls
            .get_or_create(&[("kind", kind), ("outcome", outcome)])
            .inc();
    }

    /// How often replays run.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// A view older than this is stale: the tenant's next decision is made
    /// in Redis.
    fn stale_after(&self) -> u64 {
        FAR_REPLAY_EVERY * 4
    }

    /// Replays begun so far.
    fn replays(&self) -> u64 {
        self.replays.load(Ordering::Relaxed)
    }

    /// In the tenant's critical section, before its local decision: whether
    /// it may be made from this node's view.
    pub fn route(&self, usage: &mut TenantUsage, plan: &Arc<Plan>, now: OffsetDateTime) -> Route {
        let replays = self.replays();
        let secs = now.unix_timestamp();
        let through = usage.add_ons_through();
        let TenantUsage { ledger, shared, .. } = usage;
        let view = shared.get_or_insert_with(|| {
            Box::new(SharedView {
                plan: plan.clone(),
                add_ons_through: through,
                pairs: Vec::new(),
                synced_at: None,
                listed: false,
                gate: Arc::default(),
            })
        });
        // Other nodes went on adding since the view was reported: a view
        // some replays old (one skipped while a strict call held the gate,
        // replays delayed on a busy machine) widens the margin as many
        // times over.
        let age = view.synced_at.map(|at| replays.saturating_sub(at));
        let current = Arc::ptr_eq(&view.plan, plan)
            && view.add_ons_through == through
            && age.is_some_and(|age| age < self.stale_after())
            && view.pairs.iter().all(|pair| {
                let (start, used) = ledger.counted(pair.ceiling.metric, pair.ceiling.period);
                let margin = self.margin(pair).saturating_mul(1 + age.unwrap_or(0));
                start == pair.ceiling.window.0
                    && secs < pair.ceiling.window.1
                    && used.saturating_add(margin) < pair.ceiling.limit
            });
        if current {
            Route::Local
        } else {
            Route::Strict(view.gate.clone())
        }
    }

    /// In the tenant's critical section, holding its gate: the call to make
    /// in Redis, or `None` when the plan limits nothing counted (then there
    /// is nothing to share, and the view goes).
    pub fn strict_ask(
        &self,
        tenant: &TenantId,
        usage: &mut TenantUsage,
        plan: &Arc<Plan>,
        billing_day: BillingDay,
        now: OffsetDateTime,
        demand: Demand,
    ) -> Option<StrictAsk> {
        let secs = now.unix_timestamp();
        let ceilings = usage
            .ledger
            .ceilings(&plan.quotas, &usage.add_ons, billing_day, now);
        if ceilings.is_empty() {
            usage.shared = None;
            return None;
        }
        let mut ask = StrictAsk {
            keys: Vec::with_capacity(ceilings.len()),
            args: Vec::with_capacity(ceilings.len() * 6),
            sent: Vec::with_capacity(ceilings.len()),
            plan: plan.clone(),
            add_ons_through: usage.add_ons_through(),
        };
        for ceiling in ceilings {
            let (_, used) = usage.ledger.counted(ceiling.metric, ceiling.period);
            // The same window as before keeps its base; a new one (or a
            // first view) starts from this node's usage, which is then the
            // total a missing counter is seeded with.
            let known = usage.shared.as_ref().and_then(|view| {
                view.pairs.iter().find(|p| {
                    (p.ceiling.metric, p.ceiling.period, p.ceiling.window)
                        == (ceiling.metric, ceiling.period, ceiling.window)
                })
            });
            let base = known.map_or(used, |p| p.base);
            let (check, add) = match ceiling.metric {
                Metric::Requests => (1, 1),
                // Bytes are charged when measured; the check is on what the
                // request declares, as the local decision's is.
                Metric::IngressBytes => (demand.ingress_bytes.unwrap_or(0).max(1), 0),
                _ => (1, 0),
            };
            ask.keys.push(quota_key(
                tenant,
                ceiling.metric,
                ceiling.period,
                ceiling.window.0,
            ));
            ask.args
                .extend(script_args(used, base, (check, add), &ceiling, secs));
            ask.sent.push((ceiling, used));
        }
        Some(ask)
    }

    /// Asks Redis for a strict decision, through its circuit.
    pub async fn decide(&self, ask: &StrictAsk) -> Result<StrictAnswer, Unavailable> {
        let call = self
            .health
            .enter()
            .map_err(|_| Unavailable("Redis's circuit is open".into()))?;
        let answer = self.invoke(&ask.keys, &ask.args).await;
        self.count("strict", answer.is_ok());
        match &answer {
            Ok(_) => call.finish(Ok(())),
            Err(e) => call.finish(Err(e)),
        }
        let mut totals = answer?;
        let admitted = totals.pop() == Some(1);
        if totals.len() != ask.keys.len() {
            return Err(Unavailable(
                "the quota script answered the wrong count".into(),
            ));
        }
        Ok(StrictAnswer { totals, admitted })
    }

    async fn invoke(&self, keys: &[String], args: &[i64]) -> Result<Vec<u64>, Unavailable> {
        let mut connection = self.redis.connection().await?;
        let mut invocation = self.script.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        tokio::time::timeout(
            self.redis.timeout(),
            invocation.invoke_async(&mut connection),
        )
        .await
        .map_err(|_| Unavailable("Redis did not answer in time".into()))?
        .map_err(|e| Unavailable(e.to_string()))
    }

    /// Back in the tenant's critical section: the view as Redis answered,
    /// and the local usage set so that the local decision that follows
    /// decides on Redis's totals (charging the request once: Redis charged
    /// it already when it admitted it, so its add is taken off first).
    pub fn settle(&self, usage: &mut TenantUsage, ask: StrictAsk, answer: &StrictAnswer) {
        let TenantUsage { ledger, shared, .. } = usage;
        let Some(view) = shared.as_deref_mut() else {
            return;
        };
        let mut pairs = Vec::with_capacity(ask.sent.len());
        for ((ceiling, sent_used), &total) in ask.sent.into_iter().zip(&answer.totals) {
            let (start, used_now) = ledger.counted(ceiling.metric, ceiling.period);
            if start != ceiling.window.0 {
                continue;
            }
            // Redis charged an admitted request; the local decision that
            // follows charges it again, so it is taken off here first. A
            // request Redis admitted but the local decision refuses then
            // replays as -1.
            let added = u64::from(answer.admitted && ceiling.metric == Metric::Requests);
            let growth = learn(ledger, &ceiling, (sent_used, used_now), total, added);
            pairs.push(Pair {
                ceiling,
                base: total,
                growth,
            });
        }
        view.plan = ask.plan;
        view.add_ons_through = ask.add_ons_through;
        view.pairs = pairs;
        view.synced_at = Some(self.replays());
    }

    /// After a local decision: anything admitted or refunded lists the
    /// tenant for the next replay.
    pub fn decided(&self, tenant: &TenantId, usage: &mut TenantUsage) {
        if let Some(view) = usage.shared.as_deref_mut() {
            if !view.listed && !view.pairs.is_empty() {
                view.listed = true;
                self.list(tenant);
            }
        }
    }

    fn list(&self, tenant: &TenantId) {
        let shard = self.hasher.hash_one(tenant) as usize % SHARDS;
        lock(&self.listed[shard]).push(tenant.clone());
    }

    /// One replay: every listed tenant's unsent usage to Redis, and every
    /// total back into the views. A failed replay leaves the usage unsent,
    /// for the next (a reply lost after Redis applied it counts twice:
    /// replays are at least once).
    pub async fn replay(&self, ledgers: &Ledgers) {
        // Counted whether or not anything is listed: views age while idle.
        let now = self.replays.fetch_add(1, Ordering::Relaxed) + 1;
        let tenants: Vec<TenantId> = self
            .listed
            .iter()
            .flat_map(|shard| std::mem::take(&mut *lock(shard)))
            .collect();
        if tenants.is_empty() {
            return;
        }
        let Ok(call) = self.health.enter() else {
            // Redis is down: the tenants stay listed for the next replay.
            for tenant in &tenants {
                self.list(tenant);
            }
            return;
        };
        let now_secs = self.clock.now().unix_timestamp();
        let mut batch = Vec::with_capacity(tenants.len());
        for tenant in tenants {
            let built = ledgers.with(&tenant, |usage| {
                let TenantUsage { ledger, shared, .. } = usage;
                let view = shared.as_deref_mut()?;
                // A tenant far from every ceiling is replayed less often:
                // what other nodes add to it matters less, and it is most
                // of the calls when many tenants are active.
                let far = view.pairs.iter().all(|pair| {
                    let (_, used) = ledger.counted(pair.ceiling.metric, pair.ceiling.period);
                    let remaining = pair.ceiling.limit.saturating_sub(used);
                    remaining > pair.ceiling.limit / 2
                        && remaining > self.margin(pair).saturating_mul(FAR)
                });
                let since = view.synced_at.map(|at| now.saturating_sub(at));
                if far && since.is_some_and(|since| since < FAR_REPLAY_EVERY) {
                    return Some(Err(()));
                }
                // A strict call of this node for the tenant sends what is
                // unsent itself; the tenant is replayed next time.
                let Ok(gate) = view.gate.clone().try_lock_owned() else {
                    return Some(Err(()));
                };
                view.listed = false;
                let mut keys = Vec::with_capacity(view.pairs.len());
                let mut args = Vec::with_capacity(view.pairs.len() * 6);
                let mut sent = Vec::with_capacity(view.pairs.len());
                for pair in &view.pairs {
                    let c = pair.ceiling;
                    let (start, used) = ledger.counted(c.metric, c.period);
                    if start != c.window.0 {
                        // The window rolled: the next decision is strict and
                        // starts the new one; what the old one had not sent
                        // is lost with it.
                        continue;
                    }
                    keys.push(quota_key(&tenant, c.metric, c.period, start));
                    args.extend(script_args(used, pair.base, (0, 0), &c, now_secs));
                    sent.push((c.metric, c.period, start, used));
                }
                Some(Ok((gate, keys, args, sent)))
            });
            match built {
                Some(Ok((gate, keys, args, sent))) if !keys.is_empty() => {
                    batch.push((tenant, gate, keys, args, sent));
                }
                Some(Err(())) => self.list(&tenant),
                _ => {}
            }
        }
        // One connection carries every call; they are sent without waiting
        // for each other's answers.
        let answers = join_all(
            batch
                .iter()
                .map(|(_, _, keys, args, _)| self.invoke(keys, args)),
        )
        .await;
        let mut failure = None;
        for ((tenant, _gate, _, _, sent), answer) in batch.into_iter().zip(answers) {
            self.count("replay", answer.is_ok());
            let totals = match answer {
                Ok(mut totals) => {
                    totals.pop();
                    totals
                }
                Err(e) => {
                    failure.get_or_insert(e);
                    self.list(&tenant);
                    continue;
                }
            };
            ledgers.with(&tenant, |usage| {
                let TenantUsage { ledger, shared, .. } = usage;
                let Some(view) = shared.as_deref_mut() else {
                    return;
                };
                for ((metric, period, start, sent_used), total) in sent.into_iter().zip(totals) {
                    // The view may have been replaced meanwhile (a strict
                    // decision); only a quota it still has, in the same
                    // window, takes the total.
                    let Some(pair) = view.pairs.iter_mut().find(|p| {
                        (p.ceiling.metric, p.ceiling.period, p.ceiling.window.0)
                            == (metric, period, start)
                    }) else {
                        continue;
                    };
                    let (current, used_now) = ledger.counted(metric, period);
                    if current != start {
                        continue;
                    }
                    let ceiling = pair.ceiling;
                    pair.growth = learn(ledger, &ceiling, (sent_used, used_now), total, 0);
                    pair.base = total;
                }
                view.synced_at = Some(now);
            });
        }
        match failure {
            Some(e) => call.finish(Err(&e)),
            None => call.finish(Ok(())),
        }
    }

    /// The distance from a ceiling at which decisions go to Redis.
    fn margin(&self, pair: &Pair) -> u64 {
        let share = pair.ceiling.limit.saturating_mul(self.margin_percent) / 100;
        share.max(pair.growth.saturating_mul(GROWTH_MARGIN)).max(1)
    }
}

/// One quota's arguments to the script (see `QUOTA_LUA`): the unsent
/// usage (`used` less `base`, what Redis last reported), the seed, what to
/// check and add for a request (`(0, 0)` for a replay), the ceiling and how
/// long the counter is kept.
fn script_args(used: u64, base: u64, (check, add): (u64, u64), c: &Ceiling, now: i64) -> [i64; 6] {
    [
        signed(used) - signed(base),
        signed(base),
        signed(check),
        signed(add),
        signed(c.limit),
        kept_for(c.window.1, now),
    ]
}

/// Takes in a `total` Redis answered for a call built when local usage was
/// `sent_used` (it is `used_now` now): local usage becomes the total plus
/// what was admitted here since, less `added` (Redis's own charge of the
/// request being decided). Returns what other nodes added meanwhile.
fn learn(
    ledger: &mut Ledger,
    c: &Ceiling,
    (sent_used, used_now): (u64, u64),
    total: u64,
    added: u64,
) -> u64 {
    let since = signed(used_now) - signed(sent_used);
    let local = signed(total) - signed(added) + since;
    ledger.set_counted(
        c.metric,
        c.period,
        c.window.0,
        u64::try_from(local).unwrap_or(0),
    );
    u64::try_from(signed(total) - signed(added) - signed(sent_used)).unwrap_or(0)
}

/// Seconds a counter of a window ending at `end` is kept from `now` on.
fn kept_for(end: i64, now: i64) -> i64 {
    (end - now).max(0) + KEPT_AFTER_WINDOW
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FailMode, RedisConfig};
    use serde_json::json;
    use tenantd_core::quota::QuotaDecision;
    use tenantd_core::ManualClock;
    use tenantd_store::health::dependency_policy;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-03-20 10:00 UTC);

    fn shared() -> SharedQuotas {
        // Never connected: these tests hand the answers in themselves.
        let config = RedisConfig {
            timeout: Duration::from_millis(10),
            ..RedisConfig::new("redis://127.0.0.1:1/0".into(), FailMode::FailOpen)
        };
        let redis = RedisRates::new(&config).unwrap();
        let clock = Arc::new(ManualClock::new(NOW));
        let health = Dependency::new("redis", dependency_policy());
        SharedQuotas::new(Arc::new(redis), health, Duration::from_millis(10), 1, clock)
    }

    fn plan(hard: u64) -> Arc<Plan> {
        Arc::new(
            serde_json::from_value(json!({
                "id": "default",
                "rate": { "requests": 1000, "per": "1s", "burst": 1000 },
                "quotas": [{ "metric": "requests", "period": "day", "hard": hard }],
            }))
            .unwrap(),
        )
    }

    fn admit(usage: &mut TenantUsage, plan: &Plan) -> bool {
        let decision = usage.ledger.admit(
            &plan.quotas,
            &[],
            BillingDay::default(),
            NOW,
            Demand::default(),
        );
        matches!(decision, QuotaDecision::Allowed { .. })
    }

    fn used(usage: &TenantUsage) -> u64 {
        usage.ledger.counted(Metric::Requests, Period::Day).1
    }

    /// Asks, answers as Redis would, and decides locally after it.
    fn strict(
        shared: &SharedQuotas,
        usage: &mut TenantUsage,
        plan: &Arc<Plan>,
        answer: impl FnOnce(&[i64]) -> StrictAnswer,
    ) -> bool {
        let tenant = TenantId::parse("acme").unwrap();
        let day = BillingDay::default();
        let demand = Demand::default();
        let ask = shared
            .strict_ask(&tenant, usage, plan, day, NOW, demand)
            .unwrap();
        let answer = answer(&ask.args);
        shared.settle(usage, ask, &answer);
        admit(usage, plan)
    }

    #[test]
    fn a_request_is_counted_once_whichever_side_decides() {
        let shared = shared();
        let plan = plan(1_000);
        let mut usage = TenantUsage::default();
        // No view yet: the first decision goes to Redis, which other nodes
        // have brought to 40 and which admits this request (41).
        assert!(matches!(
            shared.route(&mut usage, &plan, NOW),
            Route::Strict(_)
        ));
        let admitted = strict(&shared, &mut usage, &plan, |args| {
            assert_eq!(args[..4], [0, 0, 1, 1], "nothing unsent; check and add one");
            StrictAnswer {
                totals: vec![41],
                admitted: true,
            }
        });
        assert!(admitted);
        assert_eq!(used(&usage), 41, "Redis's total, the request in it once");
        // Far from the ceiling (41 plus a margin of eight times the 40
        // others added): local decisions, replayed later as +3.
        assert!(matches!(shared.route(&mut usage, &plan, NOW), Route::Local));
        for _ in 0..3 {
            assert!(admit(&mut usage, &plan));
        }
        let tenant = TenantId::parse("acme").unwrap();
        let ask = shared
            .strict_ask(
                &tenant,
                &mut usage,
                &plan,
                BillingDay::default(),
                NOW,
                Demand::default(),
            )
            .unwrap();
        assert_eq!(ask.args[..2], [3, 41], "unsent 3 on a base of 41");
    }

    #[test]
    fn a_request_redis_admits_but_this_node_refuses_is_replayed_back() {
        let shared = shared();
        let ten = plan(10);
        let tenant = TenantId::parse("acme").unwrap();
        let day = BillingDay::default();
        let mut usage = TenantUsage::default();
        let _ = shared.route(&mut usage, &ten, NOW);
        // Redis admitted the request (11), but this node's own decision,
        // from the same total less the request, refuses it (10 used of 10):
        // the charge Redis made is sent back with the next call.
        let ask = shared
            .strict_ask(&tenant, &mut usage, &ten, day, NOW, Demand::default())
            .unwrap();
        let answer = StrictAnswer {
            totals: vec![11],
            admitted: true,
        };
        shared.settle(&mut usage, ask, &answer);
        assert!(!admit(&mut usage, &ten));
        let again = shared
            .strict_ask(&tenant, &mut usage, &ten, day, NOW, Demand::default())
            .unwrap();
        assert_eq!(again.args[..2], [-1, 11]);
    }

    #[test]
    fn a_refusal_by_redis_is_a_refusal_here_and_near_the_ceiling_stays_strict() {
        let shared = shared();
        let ten = plan(10);
        let mut usage = TenantUsage::default();
        let _ = shared.route(&mut usage, &ten, NOW);
        let admitted = strict(&shared, &mut usage, &ten, |_| StrictAnswer {
            totals: vec![10],
            admitted: false,
        });
        assert!(!admitted);
        assert_eq!(used(&usage), 10);
        assert!(matches!(
            shared.route(&mut usage, &ten, NOW),
            Route::Strict(_)
        ));
        // Another plan (a policy, a new version) means new ceilings: strict.
        let mut fresh = TenantUsage::default();
        let _ = shared.route(&mut fresh, &ten, NOW);
        strict(&shared, &mut fresh, &ten, |_| StrictAnswer {
            totals: vec![1],
            admitted: true,
        });
        assert!(matches!(shared.route(&mut fresh, &ten, NOW), Route::Local));
        assert!(matches!(
            shared.route(&mut fresh, &plan(20), NOW),
            Route::Strict(_)
        ));
    }

    /// Redis away, three nodes serving: from a view of 400 used of 1,000,
    /// this node admits a third of the 600 left (to 600) and refuses the
    /// next; alone, it would admit up to the whole limit.
    #[test]
    fn deciding_alone_a_node_admits_its_share_of_what_was_left() {
        let shared = shared();
        let plan = plan(1_000);
        let mut usage = TenantUsage::default();
        let _ = shared.route(&mut usage, &plan, NOW);
        strict(&shared, &mut usage, &plan, |_| StrictAnswer {
            totals: vec![400],
            admitted: true,
        });
        assert_eq!(used(&usage), 400);
        shared.set_nodes(3);
        let mut admitted = 0;
        while shared.past_share(&usage, Demand::default()).is_none() {
            assert!(admit(&mut usage, &plan));
            admitted += 1;
        }
        assert_eq!((admitted, used(&usage)), (200, 600));
        assert_eq!(
            shared.past_share(&usage, Demand::default()),
            Some((Metric::Requests, Period::Day))
        );
        shared.set_nodes(1);
        assert_eq!(shared.past_share(&usage, Demand::default()), None);
        // A node never counts fewer than itself.
        shared.set_nodes(0);
        assert_eq!(shared.past_share(&usage, Demand::default()), None);
    }

    /// Replays count time for views, whatever the clock says: a view no
    /// replay has reported for twenty of them decides in Redis again.
    #[tokio::test]
    async fn a_view_not_reported_for_twenty_replays_is_stale() {
        let shared = shared();
        let plan = plan(1_000_000);
        let ledgers = Ledgers::default();
        let mut usage = TenantUsage::default();
        let _ = shared.route(&mut usage, &plan, NOW);
        strict(&shared, &mut usage, &plan, |_| StrictAnswer {
            totals: vec![1],
            admitted: true,
        });
        for _ in 0..19 {
            // Nothing is listed: nothing is sent, but the replay counts.
            shared.replay(&ledgers).await;
        }
        assert!(matches!(shared.route(&mut usage, &plan, NOW), Route::Local));
        shared.replay(&ledgers).await;
        assert!(matches!(
            shared.route(&mut usage, &plan, NOW),
            Route::Strict(_)
        ));
    }

    #[test]
    fn other_nodes_growth_widens_the_margin() {
        let shared = shared();
        let plan = plan(1_000);
        let mut usage = TenantUsage::default();
        let _ = shared.route(&mut usage, &plan, NOW);
        strict(&shared, &mut usage, &plan, |_| StrictAnswer {
            totals: vec![900],
            admitted: true,
        });
        // 899 came from elsewhere since the base of 0: a margin of 1,798,
        // so even far below the ceiling this view decides in Redis.
        assert!(matches!(
            shared.route(&mut usage, &plan, NOW),
            Route::Strict(_)
        ));
        let mut quiet = TenantUsage::default();
        let _ = shared.route(&mut quiet, &plan, NOW);
        strict(&shared, &mut quiet, &plan, |_| StrictAnswer {
            totals: vec![1],
            admitted: true,
        });
        assert!(matches!(shared.route(&mut quiet, &plan, NOW), Route::Local));
    }
}
