//! The quota ledger: one tenant's usage, counted per metric and period, and
//! the decisions made against the tenant's current quotas.
//!
//! The ledger counts every metric over every period whatever the plan says,
//! so that changing a plan or a limit mid-period keeps the usage exactly and
//! applies the new limits at the next decision. It belongs to the tenant, not
//! to a key: rotating keys never touches it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::{Date, Month, OffsetDateTime};

use crate::plan::{AddOn, Grace, Metric, Period, Quota};

/// The day of the month a tenant's monthly quotas reset (UTC midnight).
/// Days 29 to 31 are refused so that every month has the day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "u8")]
pub struct BillingDay(u8);

impl<'de> Deserialize<'de> for BillingDay {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let day: u8 = crate::whole::de(deserializer)?;
        Self::new(day).map_err(serde::de::Error::custom)
    }
}

impl BillingDay {
    pub fn new(day: u8) -> Result<Self, String> {
        if (1..=28).contains(&day) {
            Ok(Self(day))
        } else {
            Err(format!("billing day {day} is not from 1 to 28"))
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

impl Default for BillingDay {
    fn default() -> Self {
        Self(1)
    }
}

impl TryFrom<u8> for BillingDay {
    type Error = String;
    fn try_from(day: u8) -> Result<Self, String> {
        Self::new(day)
    }
}

impl From<BillingDay> for u8 {
    fn from(day: BillingDay) -> u8 {
        day.0
    }
}

/// The window of `period` holding `now`, as UTC Unix seconds `[start, end)`.
pub fn window(period: Period, billing_day: BillingDay, now: i64) -> (i64, i64) {
    let aligned = |length: i64| {
        let start = now - now.rem_euclid(length);
        (start, start + length)
    };
    match period {
        Period::Minute => aligned(60),
        Period::Hour => aligned(3600),
        Period::Day => aligned(86_400),
        Period::Month => {
            let date = OffsetDateTime::from_unix_timestamp(now)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH)
                .date();
            let this_month = anchor(date.year(), date.month(), billing_day);
            let (start, end) = if date.day() >= billing_day.get() {
                let (y, m) = next_month(date.year(), date.month());
                (this_month, anchor(y, m, billing_day))
            } else {
                let (y, m) = previous_month(date.year(), date.month());
                (anchor(y, m, billing_day), this_month)
            };
            (start, end)
        }
    }
}

fn anchor(year: i32, month: Month, day: BillingDay) -> i64 {
    Date::from_calendar_date(year, month, day.get())
        .map(|d| d.midnight().assume_utc().unix_timestamp())
        .unwrap_or(0)
}

fn next_month(year: i32, month: Month) -> (i32, Month) {
    match month {
        Month::December => (year + 1, Month::January),
        m => (year, m.next()),
    }
}

fn previous_month(year: i32, month: Month) -> (i32, Month) {
    match month {
        Month::January => (year - 1, Month::December),
        m => (year, m.previous()),
    }
}

/// Counted metrics, in ledger order.
const COUNTED: [Metric; 3] = [Metric::Requests, Metric::IngressBytes, Metric::EgressBytes];
/// Level metrics, in ledger order.
const LEVELS: [Metric; 3] = [
    Metric::StorageBytes,
    Metric::Records,
    Metric::ConcurrentRequests,
];

fn counted_index(metric: Metric) -> Option<usize> {
    COUNTED.iter().position(|&m| m == metric)
}

fn level_index(metric: Metric) -> Option<usize> {
    LEVELS.iter().position(|&m| m == metric)
}

/// One tenant's usage. Fixed-size, so a tenant costs the same few hundred
/// bytes however many quotas its plan has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    /// Start of each period's current window (Unix seconds), by `Period::index`.
    window_start: [i64; 4],
    /// Its end, kept so that the hot path compares instead of doing calendar
    /// arithmetic; 0 until computed.
    window_end: [i64; 4],
    /// Counted usage in the current windows: `[counted metric][period]`.
    used: [[u64; 4]; 3],
    /// When each counted quota first went over its hard limit in the
    /// current window (Unix seconds), or 0.
    grace_from: [[i64; 4]; 3],
    /// Soft limits already reported in the current window, as bits.
    soft_noted: [u8; 3],
    /// Current levels: storage bytes, records, requests in flight.
    level: [u64; 3],
    /// When each level first went over its hard limit, or 0; cleared when it
    /// falls back under.
    level_grace_from: [i64; 3],
    level_soft_noted: u8,
}

/// A ledger's state with every position named by its metric and period:
/// what storage keeps, so that the order of the ledger's arrays is never a
/// stored format. Counters and levels at zero with no mark are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerState {
    /// Each period's current window `[start, end)`, Unix seconds; an end of
    /// 0 is computed again on the next decision.
    pub windows: Vec<(Period, i64, i64)>,
    pub counted: Vec<CountedState>,
    pub levels: Vec<LevelState>,
}

/// One counted metric over one period, in its current window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountedState {
    pub metric: Metric,
    pub period: Period,
    pub used: u64,
    /// When it first went over its hard limit in the window (Unix seconds), or 0.
    pub grace_from: i64,
    /// Whether passing its soft limit was already reported in the window.
    pub soft_noted: bool,
}

/// One level metric now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelState {
    pub metric: Metric,
    pub value: u64,
    /// When it first went over its hard limit (Unix seconds), or 0.
    pub grace_from: i64,
    pub soft_noted: bool,
}

impl Ledger {
    /// The ledger's state, by name.
    pub fn state(&self) -> LedgerState {
        let windows = Period::ALL
            .iter()
            .map(|&p| (p, self.window_start[p.index()], self.window_end[p.index()]))
            .collect();
        let mut counted = Vec::new();
        for (m, &metric) in COUNTED.iter().enumerate() {
            for &period in &Period::ALL {
                let p = period.index();
                let entry = CountedState {
                    metric,
                    period,
                    used: self.used[m][p],
                    grace_from: self.grace_from[m][p],
                    soft_noted: self.soft_noted[m] & (1 << p) != 0,
                };
                if entry.used != 0 || entry.grace_from != 0 || entry.soft_noted {
                    counted.push(entry);
                }
            }
        }
        let mut levels = Vec::new();
        for (l, &metric) in LEVELS.iter().enumerate() {
            let entry = LevelState {
                metric,
                value: self.level[l],
                grace_from: self.level_grace_from[l],
                soft_noted: self.level_soft_noted & (1 << l) != 0,
            };
            if entry.value != 0 || entry.grace_from != 0 || entry.soft_noted {
                levels.push(entry);
            }
        }
        LedgerState {
            windows,
            counted,
            levels,
        }
    }

    /// The ledger of `state`, or why it names something a ledger cannot
    /// hold (a level counted over a period, a counted metric as a level).
    pub fn from_state(state: &LedgerState) -> Result<Self, String> {
        let mut ledger = Ledger::default();
        for &(period, start, end) in &state.windows {
            ledger.window_start[period.index()] = start;
            ledger.window_end[period.index()] = end;
        }
        for c in &state.counted {
            let m = counted_index(c.metric)
                .ok_or_else(|| format!("{} is a level, not counted", c.metric.as_str()))?;
            let p = c.period.index();
            ledger.used[m][p] = c.used;
            ledger.grace_from[m][p] = c.grace_from;
            if c.soft_noted {
                ledger.soft_noted[m] |= 1 << p;
            }
        }
        for l in &state.levels {
            let i = level_index(l.metric)
                .ok_or_else(|| format!("{} is counted, not a level", l.metric.as_str()))?;
            ledger.level[i] = l.value;
            ledger.level_grace_from[i] = l.grace_from;
            if l.soft_noted {
                ledger.level_soft_noted |= 1 << i;
            }
        }
        Ok(ledger)
    }
}

/// What one request asks of the quotas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Demand {
    /// The request body's declared length, when known before it is read.
    pub ingress_bytes: Option<u64>,
    /// Whether the request may add records or storage.
    pub writes: bool,
}

/// A quota as it stands for one tenant now, with add-ons counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub quota: Quota,
    pub used: u64,
    pub soft: Option<u64>,
    /// The hard limit plus active add-ons.
    pub hard: u64,
    /// The current window `[start, end)` for counted quotas.
    pub window: Option<(i64, i64)>,
    /// Whether the grace allowance is being used now.
    pub in_grace: bool,
}

impl Standing {
    pub fn remaining(&self) -> u64 {
        self.hard.saturating_sub(self.used)
    }
}

/// Something worth recording: a soft limit passed, or a request refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaEvent {
    pub kind: QuotaEventKind,
    pub metric: Metric,
    pub period: Option<Period>,
    pub used: u64,
    pub limit: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaEventKind {
    SoftPassed,
    GraceStarted,
}

impl QuotaEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SoftPassed => "soft_limit_passed",
            Self::GraceStarted => "grace_started",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaDecision {
    /// Admitted and charged. `nearest` is the quota closest to its hard
    /// limit, for the `RateLimit` headers; `over_soft` those past soft.
    Allowed {
        nearest: Option<Standing>,
        over_soft: Vec<Standing>,
        events: Vec<QuotaEvent>,
    },
    /// Refused; nothing was charged. A counted quota resets after
    /// `retry_after`; a level only goes down when usage does.
    Exceeded {
        standing: Standing,
        retry_after: Option<Duration>,
    },
}

impl Ledger {
    /// Starts the windows holding `now` over, resetting what ended. Never
    /// goes back: an instant before the current windows changes nothing.
    /// A window, once started, runs to the end it had when it started, so a
    /// new billing day applies from the next monthly window.
    fn roll(&mut self, billing_day: BillingDay, now: i64) {
        for period in Period::ALL {
            let p = period.index();
            if now < self.window_end[p] {
                continue;
            }
            let (start, end) = window(period, billing_day, now);
            if start == self.window_start[p] {
                self.window_end[p] = end;
            }
            if start > self.window_start[p] {
                self.window_start[p] = start;
                self.window_end[p] = end;
                for m in 0..COUNTED.len() {
                    self.used[m][p] = 0;
                    self.grace_from[m][p] = 0;
                    self.soft_noted[m] &= !(1 << p);
                }
            }
        }
    }

    /// The standing of `quota` now, with `add_ons` counted.
    pub fn standing(
        &mut self,
        quota: &Quota,
        add_ons: &[AddOn],
        billing_day: BillingDay,
        now: OffsetDateTime,
    ) -> Standing {
        let secs = now.unix_timestamp();
        self.roll(billing_day, secs);
        let extra: u64 = add_ons
            .iter()
            .filter(|a| a.applies_to(quota, now))
            .map(|a| a.amount)
            .fold(0, u64::saturating_add);
        let (used, grace_from, window) = match (counted_index(quota.metric()), quota.period()) {
            (Some(m), Some(period)) => {
                let p = period.index();
                (
                    self.used[m][p],
                    self.grace_from[m][p],
                    Some((self.window_start[p], self.window_end[p])),
                )
            }
            _ => {
                let l = level_index(quota.metric()).unwrap_or(0);
                (self.level[l], self.level_grace_from[l], None)
            }
        };
        let hard = quota.hard().saturating_add(extra);
        // In grace only while over the hard limit in force now: a limit
        // raised (or an add-on granted) above the usage ends it.
        let in_grace = used > hard
            && quota.grace().is_some_and(|g| {
                grace_from != 0 && secs < grace_from + g.duration.as_secs() as i64
            });
        Standing {
            quota: *quota,
            used,
            soft: quota.soft().map(|s| s.saturating_add(extra)),
            hard,
            window,
            in_grace,
        }
    }

    /// Decides one request against `quotas` and, if it is admitted, charges
    /// one request to every period. Bytes are charged when known, by `charge`.
    pub fn admit(
        &mut self,
        quotas: &[Quota],
        add_ons: &[AddOn],
        billing_day: BillingDay,
        now: OffsetDateTime,
        demand: Demand,
    ) -> QuotaDecision {
        let secs = now.unix_timestamp();
        let mut checked = Vec::with_capacity(quotas.len());
        let mut events = Vec::new();
        for quota in quotas {
            let metric = quota.metric();
            // The queue enforces the concurrency cap by making requests wait.
            let asked = match metric {
                Metric::ConcurrentRequests => continue,
                Metric::Requests => 1,
                Metric::IngressBytes => demand.ingress_bytes.unwrap_or(0).max(1),
                Metric::EgressBytes => 1,
                Metric::StorageBytes | Metric::Records if demand.writes => 1,
                Metric::StorageBytes | Metric::Records => continue,
            };
            let standing = self.standing(quota, add_ons, billing_day, now);
            let wanted = standing.used.saturating_add(asked);
            if wanted > standing.hard {
                let Some(grace) = quota.grace() else {
                    return exceeded(standing, secs);
                };
                let allowance = grace_allowance(standing.hard, grace);
                let started = self.grace_started(quota);
                if started == 0 {
                    self.set_grace_started(quota, secs);
                    events.push(QuotaEvent {
                        kind: QuotaEventKind::GraceStarted,
                        metric,
                        period: quota.period(),
                        used: standing.used,
                        limit: standing.hard,
                    });
                }
                let started = if started == 0 { secs } else { started };
                let grace_ends = started.saturating_add(grace.duration.as_secs() as i64);
                if secs >= grace_ends || wanted > allowance {
                    return exceeded(standing, secs);
                }
            }
            checked.push(standing);
        }
        for period in Period::ALL {
            self.used[0][period.index()] += 1;
        }
        let mut over_soft = Vec::new();
        let mut nearest: Option<Standing> = None;
        for mut standing in checked {
            if standing.quota.metric() == Metric::Requests {
                standing.used += 1;
            }
            if standing.soft.is_some_and(|soft| standing.used > soft) {
                over_soft.push(standing);
                if self.note_soft(&standing.quota) {
                    events.push(QuotaEvent {
                        kind: QuotaEventKind::SoftPassed,
                        metric: standing.quota.metric(),
                        period: standing.quota.period(),
                        used: standing.used,
                        limit: standing.soft.unwrap_or(standing.hard),
                    });
                }
            }
            let closer = nearest.is_none_or(|n| {
                u128::from(standing.remaining()) * u128::from(n.hard)
                    < u128::from(n.remaining()) * u128::from(standing.hard)
            });
            if closer {
                nearest = Some(standing);
            }
        }
        QuotaDecision::Allowed {
            nearest,
            over_soft,
            events,
        }
    }

    /// Adds `amount` of a counted metric (bytes measured after the fact) to
    /// every period's window holding `now`.
    pub fn charge(&mut self, metric: Metric, amount: u64, billing_day: BillingDay, now: i64) {
        let Some(m) = counted_index(metric) else {
            return;
        };
        self.roll(billing_day, now);
        for used in &mut self.used[m] {
            *used = used.saturating_add(amount);
        }
    }

    /// Takes back one request admitted at `admitted` (Unix seconds) that was
    /// then refused further on, from the windows that still hold it.
    pub fn refund_request(&mut self, billing_day: BillingDay, admitted: i64) {
        for period in Period::ALL {
            let p = period.index();
            if window(period, billing_day, admitted).0 == self.window_start[p] {
                self.used[0][p] = self.used[0][p].saturating_sub(1);
            }
        }
    }

    /// Sets a level (storage, records, requests in flight) to its measured value.
    pub fn set_level(&mut self, metric: Metric, value: u64) {
        if let Some(l) = level_index(metric) {
            self.level[l] = value;
        }
    }

    /// Usage of a counted metric in the window of `period` holding `now`.
    pub fn used(
        &mut self,
        metric: Metric,
        period: Period,
        billing_day: BillingDay,
        now: i64,
    ) -> u64 {
        self.roll(billing_day, now);
        counted_index(metric).map_or(0, |m| self.used[m][period.index()])
    }

    /// The current value of a level metric.
    pub fn level(&self, metric: Metric) -> u64 {
        level_index(metric).map_or(0, |l| self.level[l])
    }

    fn grace_started(&self, quota: &Quota) -> i64 {
        match (counted_index(quota.metric()), quota.period()) {
            (Some(m), Some(p)) => self.grace_from[m][p.index()],
            _ => level_index(quota.metric()).map_or(0, |l| self.level_grace_from[l]),
        }
    }

    fn set_grace_started(&mut self, quota: &Quota, at: i64) {
        match (counted_index(quota.metric()), quota.period()) {
            (Some(m), Some(p)) => self.grace_from[m][p.index()] = at,
            _ => {
                if let Some(l) = level_index(quota.metric()) {
                    self.level_grace_from[l] = at;
                }
            }
        }
    }

    /// Marks the quota's soft limit reported; `true` the first time in a window.
    fn note_soft(&mut self, quota: &Quota) -> bool {
        let (bits, bit) = match (counted_index(quota.metric()), quota.period()) {
            (Some(m), Some(p)) => (&mut self.soft_noted[m], 1u8 << p.index()),
            _ => (
                &mut self.level_soft_noted,
                1u8 << level_index(quota.metric()).unwrap_or(0),
            ),
        };
        let first = *bits & bit == 0;
        *bits |= bit;
        first
    }
}

/// The most a counted quota's window may hold while its grace runs.
fn grace_allowance(hard: u64, grace: Grace) -> u64 {
    hard.saturating_add(hard.saturating_mul(u64::from(grace.percent)) / 100)
}

/// A counted quota's limit as it stands, for a decision made outside this
/// ledger (a counter shared by several nodes): usage in the window may
/// reach `limit`, and a request that would pass it is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ceiling {
    pub metric: Metric,
    pub period: Period,
    /// The window `[start, end)` it counts in, Unix seconds.
    pub window: (i64, i64),
    /// The hard limit with add-ons; the grace allowance while a grace runs
    /// or may still start.
    pub limit: u64,
}

impl Ledger {
    /// The ceiling of each counted quota among `quotas` now, exactly as
    /// `admit` would apply it.
    pub fn ceilings(
        &mut self,
        quotas: &[Quota],
        add_ons: &[AddOn],
        billing_day: BillingDay,
        now: OffsetDateTime,
    ) -> Vec<Ceiling> {
        let secs = now.unix_timestamp();
        quotas
            .iter()
            .filter(|q| counted_index(q.metric()).is_some())
            .filter_map(|quota| {
                let period = quota.period()?;
                let standing = self.standing(quota, add_ons, billing_day, now);
                let started = self.grace_started(quota);
                let limit = match quota.grace() {
                    Some(grace)
                        if started == 0
                            || secs < started.saturating_add(grace.duration.as_secs() as i64) =>
                    {
                        grace_allowance(standing.hard, grace)
                    }
                    _ => standing.hard,
                };
                Some(Ceiling {
                    metric: quota.metric(),
                    period,
                    window: standing.window?,
                    limit,
                })
            })
            .collect()
    }

    /// Sets a counted metric's usage in the window starting at
    /// `window_start`, as a counter shared with other nodes says it is; a
    /// window that is not the current one is left alone.
    pub fn set_counted(&mut self, metric: Metric, period: Period, window_start: i64, used: u64) {
        let p = period.index();
        if let Some(m) = counted_index(metric) {
            if self.window_start[p] == window_start {
                self.used[m][p] = used;
            }
        }
    }

    /// Takes in what another node stored for the same tenant, where every
    /// node counts one shared total (its view of the counters in Redis) and
    /// writes its view behind: per period, the later window wins whole; in
    /// the same window each counter keeps the larger view (a node's view is
    /// never above the total it saw, so the larger is the nearer), grace
    /// keeps its earlier start and a soft limit stays reported. Levels are
    /// this ledger's, the newer measurement.
    pub fn merge_stored(&mut self, stored: &Ledger) {
        for p in 0..Period::ALL.len() {
            if stored.window_start[p] > self.window_start[p] {
                self.window_start[p] = stored.window_start[p];
                self.window_end[p] = stored.window_end[p];
                for m in 0..COUNTED.len() {
                    self.used[m][p] = stored.used[m][p];
                    self.grace_from[m][p] = stored.grace_from[m][p];
                    let bit = 1 << p;
                    self.soft_noted[m] = (self.soft_noted[m] & !bit) | (stored.soft_noted[m] & bit);
                }
            } else if stored.window_start[p] == self.window_start[p] {
                for m in 0..COUNTED.len() {
                    self.used[m][p] = self.used[m][p].max(stored.used[m][p]);
                    let (mine, theirs) = (self.grace_from[m][p], stored.grace_from[m][p]);
                    if theirs != 0 && (mine == 0 || theirs < mine) {
                        self.grace_from[m][p] = theirs;
                    }
                    self.soft_noted[m] |= stored.soft_noted[m] & (1 << p);
                }
            }
        }
    }

    /// A counted metric's usage in the current window of `period` and the
    /// window's start, without rolling it over.
    pub fn counted(&self, metric: Metric, period: Period) -> (i64, u64) {
        let p = period.index();
        let used = counted_index(metric).map_or(0, |m| self.used[m][p]);
        (self.window_start[p], used)
    }
}

fn exceeded(standing: Standing, now: i64) -> QuotaDecision {
    let retry_after = standing
        .window
        .map(|(_, end)| Duration::from_secs(u64::try_from(end - now).unwrap_or(0)));
    QuotaDecision::Exceeded {
        standing,
        retry_after,
    }
}

/// How fast a counted quota is being used and when, at that pace, it runs out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Burn {
    /// Units per hour since the window started.
    pub per_hour: f64,
    /// When the hard limit is reached at that pace, if before the reset.
    pub exhausted_at: Option<i64>,
}

/// The burn of a standing at `now` (Unix seconds); `None` for levels.
pub fn burn(standing: &Standing, now: i64) -> Option<Burn> {
    let (start, end) = standing.window?;
    // At least a minute elapsed, so that the first seconds of a window do
    // not project wild rates.
    let elapsed = (now - start).max(60) as f64;
    let per_second = standing.used as f64 / elapsed;
    let exhausted_at = if standing.remaining() == 0 {
        Some(now)
    } else if per_second > 0.0 {
        let at = now + (standing.remaining() as f64 / per_second).ceil() as i64;
        (at < end).then_some(at)
    } else {
        None
    };
    Some(Burn {
        per_hour: per_second * 3600.0,
        exhausted_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Grace, QuotaFields};
    use time::macros::datetime;

    fn secs(t: OffsetDateTime) -> i64 {
        t.unix_timestamp()
    }

    fn quota(metric: Metric, period: Option<Period>, soft: Option<u64>, hard: u64) -> Quota {
        Quota::new(QuotaFields {
            metric,
            period,
            soft,
            hard,
            grace: None,
        })
        .unwrap()
    }

    /// 10 requests a day, with 20 % more allowed for 10 minutes.
    fn ten_a_day_with_grace() -> Quota {
        Quota::new(QuotaFields {
            metric: Metric::Requests,
            period: Some(Period::Day),
            soft: None,
            hard: 10,
            grace: Some(Grace {
                percent: 20,
                duration: Duration::from_secs(600),
            }),
        })
        .unwrap()
    }

    fn allowed(d: &QuotaDecision) -> bool {
        matches!(d, QuotaDecision::Allowed { .. })
    }

    #[test]
    fn months_are_anchored_at_the_billing_day() {
        let day15 = BillingDay::new(15).unwrap();
        let cases = [
            // (now, start, end)
            (
                datetime!(2026-03-20 10:00 UTC),
                datetime!(2026-03-15 00:00 UTC),
                datetime!(2026-04-15 00:00 UTC),
            ),
            (
                datetime!(2026-03-14 23:59:59 UTC),
                datetime!(2026-02-15 00:00 UTC),
                datetime!(2026-03-15 00:00 UTC),
            ),
            (
                datetime!(2026-03-15 00:00 UTC),
                datetime!(2026-03-15 00:00 UTC),
                datetime!(2026-04-15 00:00 UTC),
            ),
            (
                datetime!(2026-12-31 12:00 UTC),
                datetime!(2026-12-15 00:00 UTC),
                datetime!(2027-01-15 00:00 UTC),
            ),
            (
                datetime!(2027-01-02 12:00 UTC),
                datetime!(2026-12-15 00:00 UTC),
                datetime!(2027-01-15 00:00 UTC),
            ),
        ];
        for (now, start, end) in cases {
            assert_eq!(
                window(Period::Month, day15, secs(now)),
                (secs(start), secs(end)),
                "{now}"
            );
        }
        let now = secs(datetime!(2026-03-20 10:17:42 UTC));
        assert_eq!(
            window(Period::Minute, day15, now),
            (
                secs(datetime!(2026-03-20 10:17 UTC)),
                secs(datetime!(2026-03-20 10:18 UTC))
            )
        );
        assert_eq!(
            window(Period::Day, day15, now).0,
            secs(datetime!(2026-03-20 00:00 UTC))
        );
        assert!(BillingDay::new(29).is_err());
        assert!(BillingDay::new(0).is_err());
    }

    #[test]
    fn a_ledger_comes_back_from_its_named_state_unchanged() {
        let q = [
            quota(Metric::Requests, Some(Period::Hour), Some(2), 3),
            quota(Metric::Records, None, Some(1), 5),
        ];
        let mut ledger = Ledger::default();
        let day = BillingDay::default();
        let now = datetime!(2026-03-20 10:59:00 UTC);
        for _ in 0..4 {
            ledger.admit(&q, &[], day, now, Demand::default());
        }
        ledger.charge(Metric::EgressBytes, 700, day, secs(now));
        ledger.set_level(Metric::Records, 4);
        ledger.admit(
            &q,
            &[],
            day,
            now,
            Demand {
                ingress_bytes: None,
                writes: true,
            },
        );
        let state = ledger.state();
        assert!(state
            .counted
            .iter()
            .any(|c| (c.metric, c.period, c.used, c.soft_noted)
                == (Metric::Requests, Period::Hour, 3, true)));
        assert!(state
            .levels
            .iter()
            .any(|l| (l.metric, l.value) == (Metric::Records, 4)));
        assert_eq!(Ledger::from_state(&state), Ok(ledger));
        assert_eq!(
            Ledger::from_state(&Ledger::default().state()),
            Ok(Ledger::default())
        );
    }

    #[test]
    fn a_state_naming_a_level_as_counted_is_refused() {
        let state = LedgerState {
            counted: vec![CountedState {
                metric: Metric::Records,
                period: Period::Day,
                used: 1,
                grace_from: 0,
                soft_noted: false,
            }],
            ..LedgerState::default()
        };
        assert!(Ledger::from_state(&state).is_err());
    }

    #[test]
    fn the_hard_limit_is_exact_and_refusal_says_when_it_resets() {
        let q = [quota(Metric::Requests, Some(Period::Hour), Some(3), 5)];
        let mut ledger = Ledger::default();
        let day = BillingDay::default();
        let now = datetime!(2026-03-20 10:59:00 UTC);
        for i in 0..5 {
            let d = ledger.admit(&q, &[], day, now, Demand::default());
            assert!(allowed(&d), "request {i}");
        }
        match ledger.admit(&q, &[], day, now, Demand::default()) {
            QuotaDecision::Exceeded {
                standing,
                retry_after,
            } => {
                assert_eq!(standing.used, 5);
                assert_eq!(retry_after, Some(Duration::from_secs(60)));
            }
            other => panic!("{other:?}"),
        }
        // The refusal charged nothing, and the next hour starts afresh.
        assert_eq!(
            ledger.used(Metric::Requests, Period::Hour, day, secs(now)),
            5
        );
        let next = datetime!(2026-03-20 11:00:00 UTC);
        assert!(allowed(&ledger.admit(
            &q,
            &[],
            day,
            next,
            Demand::default()
        )));
        assert_eq!(
            ledger.used(Metric::Requests, Period::Hour, day, secs(next)),
            1
        );
        // The day kept counting across the hour.
        assert_eq!(
            ledger.used(Metric::Requests, Period::Day, day, secs(next)),
            6
        );
    }

    /// Two nodes' views of one tenant's shared counters, stored one after
    /// the other: the larger view of the current window stays, a newer
    /// window replaces an older one whatever its count, and levels are the
    /// newer write's.
    #[test]
    fn a_stored_ledger_merges_with_another_nodes_view_never_backwards() {
        let q = [quota(Metric::Requests, Some(Period::Day), None, 1000)];
        let day = BillingDay::default();
        let today = datetime!(2026-03-20 10:00 UTC);
        let ahead = |n: u64| {
            let mut ledger = Ledger::default();
            for _ in 0..n {
                ledger.admit(&q, &[], day, today, Demand::default());
            }
            ledger
        };
        // This node saw 30 when it wrote; the stored view, from another, 50.
        let mut mine = ahead(30);
        mine.set_level(Metric::StorageBytes, 7);
        let mut theirs = ahead(50);
        theirs.set_level(Metric::StorageBytes, 99);
        mine.merge_stored(&theirs);
        assert_eq!(
            mine.used(Metric::Requests, Period::Day, day, secs(today)),
            50
        );
        assert_eq!(mine.level(Metric::StorageBytes), 7);
        // And the other way round: the larger view stays.
        let mut later = ahead(60);
        later.merge_stored(&mine);
        assert_eq!(
            later.used(Metric::Requests, Period::Day, day, secs(today)),
            60
        );

        // A node still on yesterday's window never brings it back.
        let yesterday = datetime!(2026-03-19 23:00 UTC);
        let mut stale = Ledger::default();
        for _ in 0..900 {
            stale.admit(&q, &[], day, yesterday, Demand::default());
        }
        stale.merge_stored(&later);
        assert_eq!(
            stale.used(Metric::Requests, Period::Day, day, secs(today)),
            60
        );
        let mut fresh = ahead(1);
        fresh.merge_stored(&stale);
        assert_eq!(
            fresh.used(Metric::Requests, Period::Day, day, secs(today)),
            60
        );
    }

    #[test]
    fn a_refund_leaves_windows_that_started_since_untouched() {
        let q = [quota(Metric::Requests, Some(Period::Minute), None, 10)];
        let mut ledger = Ledger::default();
        let day = BillingDay::default();
        let t0 = datetime!(2026-03-20 10:00:59 UTC);
        ledger.admit(&q, &[], day, t0, Demand::default());
        let t1 = datetime!(2026-03-20 10:01:00 UTC);
        ledger.admit(&q, &[], day, t1, Demand::default());
        // The first request is refunded after the minute turned: only the
        // hour, day and month still hold it.
        ledger.refund_request(day, secs(t0));
        assert_eq!(
            ledger.used(Metric::Requests, Period::Minute, day, secs(t1)),
            1
        );
        assert_eq!(
            ledger.used(Metric::Requests, Period::Hour, day, secs(t1)),
            1
        );
        // An instant before the current window does not reset it.
        assert_eq!(
            ledger.used(Metric::Requests, Period::Minute, day, secs(t0)),
            1
        );
    }

    #[test]
    fn a_new_billing_day_applies_from_the_next_monthly_window() {
        let q = [quota(Metric::Requests, Some(Period::Month), None, 10)];
        let mut ledger = Ledger::default();
        let day15 = BillingDay::new(15).unwrap();
        let day1 = BillingDay::new(1).unwrap();
        ledger.admit(
            &q,
            &[],
            day15,
            datetime!(2026-03-20 00:00 UTC),
            Demand::default(),
        );
        let later = datetime!(2026-03-25 00:00 UTC);
        ledger.admit(&q, &[], day1, later, Demand::default());
        let standing = ledger.standing(&q[0], &[], day1, later);
        assert_eq!(standing.used, 2, "the usage of the running month is kept");
        assert_eq!(
            standing.window,
            Some((
                secs(datetime!(2026-03-15 00:00 UTC)),
                secs(datetime!(2026-04-15 00:00 UTC))
            ))
        );
        let next = datetime!(2026-04-15 00:00 UTC);
        let standing = ledger.standing(&q[0], &[], day1, next);
        assert_eq!(standing.used, 0);
        assert_eq!(
            standing.window,
            Some((
                secs(datetime!(2026-04-01 00:00 UTC)),
                secs(datetime!(2026-05-01 00:00 UTC))
            ))
        );
    }

    #[test]
    fn passing_the_soft_limit_is_reported_once_per_window() {
        let q = [quota(Metric::Requests, Some(Period::Day), Some(2), 10)];
        let mut ledger = Ledger::default();
        let day = BillingDay::default();
        let now = datetime!(2026-03-20 10:00 UTC);
        let mut reported = Vec::new();
        for _ in 0..4 {
            match ledger.admit(&q, &[], day, now, Demand::default()) {
                QuotaDecision::Allowed {
                    over_soft, events, ..
                } => reported.push((over_soft.len(), events.len())),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(reported, [(0, 0), (0, 0), (1, 1), (1, 0)]);
    }

    #[test]
    fn grace_allows_a_percentage_over_hard_for_a_while() {
        let q = [ten_a_day_with_grace()];
        let mut ledger = Ledger::default();
        let day = BillingDay::default();
        let t0 = datetime!(2026-03-20 10:00 UTC);
        let admit =
            |ledger: &mut Ledger, at| allowed(&ledger.admit(&q, &[], day, at, Demand::default()));
        let first: Vec<bool> = (0..13).map(|_| admit(&mut ledger, t0)).collect();
        // 10 within hard, 2 more within the 20 % grace, then refused.
        assert_eq!(first.iter().filter(|&&ok| ok).count(), 12);
        assert!(!first[12]);
        // The grace runs 10 minutes from the first request over hard; after
        // that, hard applies even though the allowance is not used up.
        let mut relaxed = Ledger::default();
        for _ in 0..11 {
            admit(&mut relaxed, t0);
        }
        assert!(admit(&mut relaxed, t0 + time::Duration::seconds(599)));
        assert!(!admit(&mut relaxed, t0 + time::Duration::seconds(600)));
        // A new window starts without grace used.
        let tomorrow = datetime!(2026-03-21 00:00 UTC);
        assert!(admit(&mut relaxed, tomorrow));
        let standing = relaxed.standing(&q[0], &[], day, tomorrow);
        assert!(!standing.in_grace);
    }

    /// A decision made elsewhere against `ceilings` refuses exactly where
    /// `admit` does: at the hard limit with add-ons, within the grace
    /// allowance while the grace may run, and at hard once it ran out.
    #[test]
    fn a_ceiling_is_the_usage_at_which_admit_refuses() {
        let graced = ten_a_day_with_grace();
        let bytes = quota(Metric::IngressBytes, Some(Period::Month), None, 5_000);
        let storage = quota(Metric::StorageBytes, None, None, 1_000);
        let quotas = [graced, bytes, storage];
        let day = BillingDay::default();
        let t0 = datetime!(2026-03-20 10:00 UTC);
        let add_on = AddOn {
            metric: Metric::IngressBytes,
            period: Some(Period::Month),
            amount: 500,
            expires_at: t0 + time::Duration::days(1),
        };
        let mut ledger = Ledger::default();
        let ceilings = ledger.ceilings(&quotas, &[add_on], day, t0);
        let (day_start, day_end) = window(Period::Day, day, secs(t0));
        assert_eq!(
            ceilings,
            [
                Ceiling {
                    metric: Metric::Requests,
                    period: Period::Day,
                    window: (day_start, day_end),
                    limit: 12,
                },
                Ceiling {
                    metric: Metric::IngressBytes,
                    period: Period::Month,
                    window: window(Period::Month, day, secs(t0)),
                    limit: 5_500,
                },
            ],
            "levels have no ceiling; the grace allowance and the add-on count"
        );
        let requests = [graced];
        let admitted = (0..20)
            .take_while(|_| allowed(&ledger.admit(&requests, &[], day, t0, Demand::default())))
            .count();
        assert_eq!(admitted as u64, ceilings[0].limit);
        assert_eq!(
            ledger.counted(Metric::Requests, Period::Day),
            (day_start, 12)
        );
        // Once the grace ran out, the ceiling is the hard limit.
        let later = t0 + time::Duration::seconds(600);
        assert_eq!(ledger.ceilings(&requests, &[], day, later)[0].limit, 10);

        // Usage set from elsewhere is what admit decides on; for another
        // window it is ignored.
        let mut shared = Ledger::default();
        shared.ceilings(&requests, &[], day, t0);
        shared.set_counted(Metric::Requests, Period::Day, day_start - 86_400, 3);
        assert_eq!(
            shared.counted(Metric::Requests, Period::Day),
            (day_start, 0)
        );
        shared.set_counted(Metric::Requests, Period::Day, day_start, 11);
        assert!(allowed(&shared.admit(
            &requests,
            &[],
            day,
            t0,
            Demand::default()
        )));
        assert!(!allowed(&shared.admit(
            &requests,
            &[],
            day,
            t0,
            Demand::default()
        )));
    }

    #[test]
    fn raising_the_limit_above_the_usage_ends_the_grace() {
        let grace = Some(Grace {
            percent: 20,
            duration: Duration::from_secs(600),
        });
        let quota = |hard| {
            Quota::new(QuotaFields {
                metric: Metric::Requests,
                period: Some(Period::Day),
                soft: None,
                hard,
                grace,
            })
            .unwrap()
        };
        let mut ledger = Ledger::default();
        let day = BillingDay::default();
        let t0 = datetime!(2026-03-20 10:00 UTC);
        for _ in 0..12 {
            assert!(allowed(&ledger.admit(
                &[quota(10)],
                &[],
                day,
                t0,
                Demand::default()
            )));
        }
        assert!(ledger.standing(&quota(10), &[], day, t0).in_grace);
        let raised = ledger.standing(&quota(100), &[], day, t0);
        assert_eq!(raised.used, 12);
        assert!(!raised.in_grace, "12 used of 100: not in grace");
    }

    #[test]
    fn add_ons_raise_a_quota_until_they_expire() {
        let q = [quota(Metric::Requests, Some(Period::Month), Some(4), 5)];
        let day = BillingDay::default();
        let t0 = datetime!(2026-03-20 10:00 UTC);
        let add_ons = [AddOn {
            metric: Metric::Requests,
            period: Some(Period::Month),
            amount: 3,
            expires_at: t0 + time::Duration::hours(1),
        }];
        let mut ledger = Ledger::default();
        let admitted = (0..10)
            .filter(|_| allowed(&ledger.admit(&q, &add_ons, day, t0, Demand::default())))
            .count();
        assert_eq!(admitted, 8);
        let standing = ledger.standing(&q[0], &add_ons, day, t0);
        assert_eq!((standing.soft, standing.hard), (Some(7), 8));
        // Once it expires the plain hard limit applies to the usage so far.
        let later = t0 + time::Duration::hours(1);
        assert!(!allowed(&ledger.admit(
            &q,
            &add_ons,
            day,
            later,
            Demand::default()
        )));
    }

    #[test]
    fn a_limit_changed_mid_period_applies_to_the_usage_kept() {
        let day = BillingDay::default();
        let now = datetime!(2026-03-20 10:00 UTC);
        let small = [quota(Metric::Requests, Some(Period::Day), None, 3)];
        let large = [quota(Metric::Requests, Some(Period::Day), None, 5)];
        let mut ledger = Ledger::default();
        for _ in 0..3 {
            assert!(allowed(&ledger.admit(
                &small,
                &[],
                day,
                now,
                Demand::default()
            )));
        }
        assert!(!allowed(&ledger.admit(
            &small,
            &[],
            day,
            now,
            Demand::default()
        )));
        // Raised: two more, not five. Lowered again: none.
        assert!(allowed(&ledger.admit(
            &large,
            &[],
            day,
            now,
            Demand::default()
        )));
        assert!(allowed(&ledger.admit(
            &large,
            &[],
            day,
            now,
            Demand::default()
        )));
        assert!(!allowed(&ledger.admit(
            &large,
            &[],
            day,
            now,
            Demand::default()
        )));
        assert!(!allowed(&ledger.admit(
            &small,
            &[],
            day,
            now,
            Demand::default()
        )));
        // A plan with no quota at all still counts, for the next plan.
        assert!(allowed(&ledger.admit(
            &[],
            &[],
            day,
            now,
            Demand::default()
        )));
        assert_eq!(
            ledger.used(Metric::Requests, Period::Day, day, secs(now)),
            6
        );
    }

    #[test]
    fn byte_and_level_quotas() {
        let day = BillingDay::default();
        let now = datetime!(2026-03-20 10:00 UTC);
        let q = [
            quota(Metric::IngressBytes, Some(Period::Day), None, 100),
            quota(Metric::StorageBytes, None, None, 1000),
        ];
        let mut ledger = Ledger::default();
        let body = |len| Demand {
            ingress_bytes: Some(len),
            writes: true,
        };
        assert!(allowed(&ledger.admit(&q, &[], day, now, body(60))));
        ledger.charge(Metric::IngressBytes, 60, day, secs(now));
        // A declared body that would pass the limit is refused up front.
        assert!(!allowed(&ledger.admit(&q, &[], day, now, body(41))));
        assert!(allowed(&ledger.admit(&q, &[], day, now, body(40))));
        ledger.set_level(Metric::StorageBytes, 1000);
        match ledger.admit(&q, &[], day, now, body(0)) {
            QuotaDecision::Exceeded {
                standing,
                retry_after,
            } => {
                assert_eq!(standing.quota.metric(), Metric::StorageBytes);
                assert_eq!(retry_after, None, "a level does not reset by itself");
            }
            other => panic!("{other:?}"),
        }
        // Reads are not held back by storage.
        let read = Demand::default();
        assert!(allowed(&ledger.admit(&q[1..], &[], day, now, read)));
    }

    #[test]
    fn the_nearest_quota_is_the_one_with_least_left_in_proportion() {
        let day = BillingDay::default();
        let now = datetime!(2026-03-20 10:00 UTC);
        let q = [
            quota(Metric::Requests, Some(Period::Minute), None, 100),
            quota(Metric::Requests, Some(Period::Day), None, 1000),
        ];
        let mut ledger = Ledger::default();
        ledger.charge(
            Metric::Requests,
            900,
            day,
            secs(now - time::Duration::hours(1)),
        );
        match ledger.admit(&q, &[], day, now, Demand::default()) {
            QuotaDecision::Allowed {
                nearest: Some(n), ..
            } => {
                assert_eq!(n.quota.period(), Some(Period::Day));
                assert_eq!(n.remaining(), 99);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn burn_rate_projects_exhaustion_within_the_window() {
        let day = BillingDay::default();
        let q = quota(Metric::Requests, Some(Period::Day), None, 1000);
        let mut ledger = Ledger::default();
        let noon = datetime!(2026-03-20 12:00 UTC);
        ledger.charge(Metric::Requests, 240, day, secs(noon));
        let standing = ledger.standing(&q, &[], day, noon);
        let b = burn(&standing, secs(noon)).unwrap();
        assert!((b.per_hour - 20.0).abs() < 1e-9, "{}", b.per_hour);
        // 760 left at 20 an hour is 38 hours: after the reset, so no projection.
        assert_eq!(b.exhausted_at, None);
        ledger.charge(Metric::Requests, 360, day, secs(noon));
        let standing = ledger.standing(&q, &[], day, noon);
        let b = burn(&standing, secs(noon)).unwrap();
        // 600 in 12 h is 50 an hour; 400 left takes 8 hours.
        assert_eq!(b.exhausted_at, Some(secs(datetime!(2026-03-20 20:00 UTC))));
    }
}
