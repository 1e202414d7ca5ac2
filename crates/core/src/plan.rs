//! Plans: what a tenant is promised and held to. A plan holds the rate
//! limit, the quotas, the fair-queuing weight and the concurrency cap; its
//! parts are parsed once (from config) into values that cannot be invalid.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::gcra::Limit;
use crate::ids::{PlanId, PoolName};
use crate::policy::SelfService;
use crate::record::Isolation;

/// What kind of work a request is; it picks the request's width in seats,
/// its deadline and, optionally, its own rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpClass {
    Read,
    Write,
    Admin,
    Proxy,
}

impl OpClass {
    pub const ALL: [OpClass; 4] = [Self::Read, Self::Write, Self::Admin, Self::Proxy];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
            Self::Proxy => "proxy",
        }
    }

    /// A dense index, for per-class arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What a quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Admitted requests, per period.
    Requests,
    /// Request body bytes, per period.
    IngressBytes,
    /// Response body bytes, per period.
    EgressBytes,
    /// Bytes of stored records, at any moment.
    StorageBytes,
    /// Stored records, at any moment.
    Records,
    /// Requests being served at once. Its hard limit is the tenant's
    /// concurrency cap: requests over it wait in the tenant's queue.
    ConcurrentRequests,
}

impl Metric {
    pub const ALL: [Metric; 6] = [
        Self::Requests,
        Self::IngressBytes,
        Self::EgressBytes,
        Self::StorageBytes,
        Self::Records,
        Self::ConcurrentRequests,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::IngressBytes => "ingress_bytes",
            Self::EgressBytes => "egress_bytes",
            Self::StorageBytes => "storage_bytes",
            Self::Records => "records",
            Self::ConcurrentRequests => "concurrent_requests",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// Counted over a period and reset at its end, rather than a level.
    pub fn is_counted(self) -> bool {
        matches!(
            self,
            Self::Requests | Self::IngressBytes | Self::EgressBytes
        )
    }

    /// The quota unit named in `RateLimit-Policy` (`qu`).
    pub fn header_unit(self) -> &'static str {
        match self {
            Self::Requests | Self::Records => "requests",
            Self::IngressBytes | Self::EgressBytes | Self::StorageBytes => "content-bytes",
            Self::ConcurrentRequests => "concurrent-requests",
        }
    }
}

/// The window a counted quota resets over, shortest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Minute,
    Hour,
    Day,
    /// From the tenant's billing day to the same day of the next month.
    Month,
}

impl Period {
    pub const ALL: [Period; 4] = [Self::Minute, Self::Hour, Self::Day, Self::Month];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Month => "month",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A rate limit as written in config: `requests` per `per`, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RateSpec", into = "RateSpec")]
pub struct Rate {
    spec: RateSpec,
    limit: Limit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateSpec {
    pub requests: u32,
    #[serde(with = "humantime_serde")]
    pub per: Duration,
    pub burst: u32,
}

impl TryFrom<RateSpec> for Rate {
    type Error = String;
    fn try_from(spec: RateSpec) -> Result<Self, String> {
        let limit = Limit::new(spec.requests, spec.per, spec.burst).map_err(|e| e.to_string())?;
        Ok(Self { spec, limit })
    }
}

impl From<Rate> for RateSpec {
    fn from(rate: Rate) -> Self {
        rate.spec
    }
}

impl Rate {
    pub fn new(requests: u32, per: Duration, burst: u32) -> Result<Self, String> {
        RateSpec {
            requests,
            per,
            burst,
        }
        .try_into()
    }

    pub fn limit(&self) -> &Limit {
        &self.limit
    }

    pub fn spec(&self) -> &RateSpec {
        &self.spec
    }

    /// The window `RateLimit-Policy` announces: the time a full burst takes
    /// to earn back, at least a second.
    pub fn window_secs(&self) -> u64 {
        self.limit.tolerance().div_ceil(1_000_000).max(1)
    }
}

/// A grace allowance: `percent` over the hard limit, for `duration` from
/// the moment the hard limit is first passed in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grace {
    pub percent: u32,
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
}

/// One quota of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "QuotaFields", into = "QuotaFields")]
pub struct Quota {
    metric: Metric,
    period: Option<Period>,
    soft: Option<u64>,
    hard: u64,
    grace: Option<Grace>,
}

/// The fields of a quota as written; `Quota` is the checked form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaFields {
    pub metric: Metric,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Period>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft: Option<u64>,
    pub hard: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<Grace>,
}

impl TryFrom<QuotaFields> for Quota {
    type Error = String;
    fn try_from(f: QuotaFields) -> Result<Self, String> {
        let metric = f.metric.as_str();
        match (f.metric.is_counted(), f.period) {
            (true, None) => return Err(format!("a {metric} quota needs a period")),
            (false, Some(_)) => {
                return Err(format!("a {metric} quota is a level and takes no period"))
            }
            _ => {}
        }
        if f.hard == 0 {
            return Err(format!(
                "the {metric} quota's hard limit must be at least 1"
            ));
        }
        if f.soft.is_some_and(|soft| soft > f.hard) {
            return Err(format!(
                "the {metric} quota's soft limit is above its hard limit"
            ));
        }
        if let Some(grace) = f.grace {
            if grace.percent == 0 || grace.percent > 1000 || grace.duration.is_zero() {
                return Err(format!(
                    "the {metric} quota's grace needs a percent from 1 to 1000 and a duration"
                ));
            }
            if f.metric == Metric::ConcurrentRequests {
                return Err("the concurrency cap takes no grace".into());
            }
        }
        Ok(Self {
            metric: f.metric,
            period: f.period,
            soft: f.soft,
            hard: f.hard,
            grace: f.grace,
        })
    }
}

impl From<Quota> for QuotaFields {
    fn from(q: Quota) -> Self {
        Self {
            metric: q.metric,
            period: q.period,
            soft: q.soft,
            hard: q.hard,
            grace: q.grace,
        }
    }
}

impl Quota {
    pub fn new(fields: QuotaFields) -> Result<Self, String> {
        fields.try_into()
    }
    pub fn metric(&self) -> Metric {
        self.metric
    }
    pub fn period(&self) -> Option<Period> {
        self.period
    }
    pub fn soft(&self) -> Option<u64> {
        self.soft
    }
    pub fn hard(&self) -> u64 {
        self.hard
    }
    pub fn grace(&self) -> Option<Grace> {
        self.grace
    }
    /// The (metric, period) pair this quota limits; add-ons match on it.
    pub fn key(&self) -> (Metric, Option<Period>) {
        (self.metric, self.period)
    }
}

/// A temporary raise of one quota's soft and hard limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddOn {
    pub metric: Metric,
    pub period: Option<Period>,
    pub amount: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl AddOn {
    pub fn applies_to(&self, quota: &Quota, now: OffsetDateTime) -> bool {
        (self.metric, self.period) == quota.key() && now < self.expires_at
    }
}

/// A plan (tier). Tenants name their plan; the admission stage applies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub id: PlanId,
    /// The tenant's rate limit over all its requests.
    pub rate: Rate,
    /// Further limits for one operation class, each on top of `rate`.
    #[serde(default)]
    pub class_rates: Vec<ClassRate>,
    /// The tenant's share of contended capacity, relative to other tenants'.
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub quotas: Vec<Quota>,
    /// What tenants' admins may change alone, and within which ranges.
    #[serde(default)]
    pub self_service: SelfService,
    /// Largest request body of the plan's tenants, under the server's own
    /// limit; larger bodies get 413.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// The isolation model of new tenants on the plan that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<Isolation>,
    /// The storage pool of new tenants on the plan that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolName>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassRate {
    pub class: OpClass,
    pub rate: Rate,
}

fn default_weight() -> u32 {
    1
}

impl Plan {
    /// The plan every tenant is on until an operator says otherwise: a
    /// generous rate limit, weight 1 and no quotas.
    pub fn default_plan() -> Self {
        Self {
            id: PlanId::default_plan(),
            rate: Rate::new(1000, Duration::from_secs(1), 2000).expect("a valid rate"),
            class_rates: Vec::new(),
            weight: 1,
            quotas: Vec::new(),
            self_service: SelfService::default(),
            max_body_bytes: None,
            isolation: None,
            pool: None,
        }
    }

    /// Checks what serde cannot: weights, and one quota per (metric, period).
    pub fn check(&self) -> Result<(), String> {
        if !(1..=1000).contains(&self.weight) {
            return Err(format!("plan {}: weight must be from 1 to 1000", self.id));
        }
        self.self_service
            .check()
            .map_err(|e| format!("plan {}: {e}", self.id))?;
        if self.max_body_bytes == Some(0) {
            return Err(format!(
                "plan {}: max_body_bytes must be at least 1",
                self.id
            ));
        }
        for (i, quota) in self.quotas.iter().enumerate() {
            if self.quotas[..i].iter().any(|q| q.key() == quota.key()) {
                return Err(format!(
                    "plan {}: two {} quotas for the same period",
                    self.id,
                    quota.metric.as_str()
                ));
            }
        }
        for (i, class) in self.class_rates.iter().enumerate() {
            if self.class_rates[..i].iter().any(|c| c.class == class.class) {
                return Err(format!(
                    "plan {}: two rates for the {} class",
                    self.id,
                    class.class.as_str()
                ));
            }
        }
        Ok(())
    }

    /// The rate limit for one class, if the plan sets one.
    pub fn class_rate(&self, class: OpClass) -> Option<&Rate> {
        self.class_rates
            .iter()
            .find(|c| c.class == class)
            .map(|c| &c.rate)
    }

    /// The concurrency cap: the hard limit of its `concurrent_requests` quota.
    pub fn concurrency_cap(&self) -> Option<u64> {
        self.quotas
            .iter()
            .find(|q| q.metric == Metric::ConcurrentRequests)
            .map(|q| q.hard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(metric: Metric, period: Option<Period>, soft: Option<u64>, hard: u64) -> QuotaFields {
        QuotaFields {
            metric,
            period,
            soft,
            hard,
            grace: None,
        }
    }

    #[test]
    fn quotas_are_checked_when_parsed() {
        let day = Some(Period::Day);
        assert!(Quota::new(quota(Metric::Requests, day, Some(5), 10)).is_ok());
        assert!(Quota::new(quota(Metric::Requests, None, None, 10)).is_err());
        assert!(Quota::new(quota(Metric::StorageBytes, day, None, 10)).is_err());
        assert!(Quota::new(quota(Metric::Requests, day, Some(11), 10)).is_err());
        assert!(Quota::new(quota(Metric::Requests, day, None, 0)).is_err());
        let mut graced = quota(Metric::Requests, day, None, 10);
        graced.grace = Some(Grace {
            percent: 0,
            duration: Duration::from_secs(60),
        });
        assert!(Quota::new(graced).is_err());
    }

    #[test]
    fn plans_parse_from_config_and_refuse_duplicates() {
        let text = r#"{
            "id": "pro",
            "rate": { "requests": 10, "per": "1s", "burst": 20 },
            "class_rates": [{ "class": "write", "rate": { "requests": 2, "per": "1s", "burst": 4 } }],
            "weight": 4,
            "quotas": [
                { "metric": "requests", "period": "day", "soft": 800, "hard": 1000,
                  "grace": { "percent": 10, "duration": "1h" } },
                { "metric": "concurrent_requests", "hard": 8 }
            ]
        }"#;
        let plan: Plan = serde_json::from_str(text).unwrap();
        plan.check().unwrap();
        assert_eq!(plan.concurrency_cap(), Some(8));
        assert_eq!(plan.class_rate(OpClass::Write).unwrap().spec().burst, 4);
        assert!(plan.class_rate(OpClass::Read).is_none());
        assert_eq!(plan.rate.window_secs(), 2);

        let mut twice = plan.clone();
        twice.quotas.push(plan.quotas[0]);
        assert!(twice.check().is_err());
        let bad_rate = text.replace(r#""burst": 20"#, r#""burst": 0"#);
        assert!(serde_json::from_str::<Plan>(&bad_rate).is_err());
        let unknown = text.replace(r#""weight": 4"#, r#""weight": 4, "wieght": 1"#);
        assert!(serde_json::from_str::<Plan>(&unknown).is_err());
    }

    #[test]
    fn add_ons_apply_to_their_quota_until_they_expire() {
        let q = Quota::new(quota(Metric::Requests, Some(Period::Day), None, 10)).unwrap();
        let t = time::macros::datetime!(2026-03-01 00:00 UTC);
        let add_on = AddOn {
            metric: Metric::Requests,
            period: Some(Period::Day),
            amount: 5,
            expires_at: t + time::Duration::hours(1),
        };
        assert!(add_on.applies_to(&q, t));
        assert!(!add_on.applies_to(&q, t + time::Duration::hours(1)));
        let monthly = AddOn {
            period: Some(Period::Month),
            ..add_on
        };
        assert!(!monthly.applies_to(&q, t));
    }
}
