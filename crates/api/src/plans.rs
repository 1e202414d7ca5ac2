//! Plans and policies on the wire: a plan as written (`PlanSpec`, the same
//! fields as the configuration's `[[plans]]`), a tenant's overrides of it, and
//! one setting's change, with their conversions to and from the domain.
//!
//! A plan read from a body is shaped here (serde, 422 `invalid_body` on an
//! unknown field or a wrong type) and made a domain plan by `TryFrom`, which
//! applies every rule the domain's constructors hold.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tenantd_core::plan::{self, Metric, OpClass, Period, QuotaFields};
use tenantd_core::policy;
use tenantd_core::whole;
use tenantd_core::{Isolation, PlanId, PoolName};
use utoipa::ToSchema;

use crate::schema;

/// A plan (tier): its rate limits, weight, quotas and self-service ranges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanSpec {
    #[schema(value_type = schema::PlanId)]
    pub id: PlanId,
    /// The tenant's rate limit over all its requests.
    pub rate: RateSpec,
    /// Further limits for one operation class, each on top of `rate`.
    #[serde(default)]
    pub class_rates: Vec<ClassRateSpec>,
    /// The tenant's share of contended capacity, relative to other
    /// tenants'; 1 to 1000 (default 1).
    #[serde(default = "default_weight", deserialize_with = "whole::de")]
    #[schema(minimum = 1, maximum = 1000, default = 1)]
    pub weight: u32,
    #[serde(default)]
    pub quotas: Vec<QuotaSpec>,
    /// What tenants' admins may change alone, and within which ranges.
    #[serde(default)]
    pub self_service: SelfServiceSpec,
    /// Largest request body of the plan's tenants, under the server's own
    /// limit; larger bodies get 413.
    #[serde(
        default,
        deserialize_with = "whole::de_opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 1)]
    pub max_body_bytes: Option<u64>,
    /// The isolation model of new tenants on the plan that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<schema::Isolation>)]
    pub isolation: Option<Isolation>,
    /// The storage pool of new tenants on the plan that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<schema::PoolName>)]
    pub pool: Option<PoolName>,
}

fn default_weight() -> u32 {
    1
}

/// `requests` per `per`, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateSpec {
    #[serde(deserialize_with = "whole::de")]
    #[schema(minimum = 1)]
    pub requests: u32,
    /// A duration such as `1s`, `1m` or `1h`.
    #[serde(with = "humantime_serde")]
    #[schema(value_type = String, example = "1s")]
    pub per: Duration,
    #[serde(deserialize_with = "whole::de")]
    #[schema(minimum = 1)]
    pub burst: u32,
}

/// A rate limit for one operation class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassRateSpec {
    #[schema(value_type = schema::OpClass)]
    pub class: OpClass,
    pub rate: RateSpec,
}

/// One quota: a soft and a hard limit on a metric over a period (none for
/// levels), with an optional grace allowance over the hard limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaSpec {
    #[schema(value_type = schema::Metric)]
    pub metric: Metric,
    /// Required for counted metrics; absent for levels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<schema::Period>)]
    pub period: Option<Period>,
    #[serde(
        default,
        deserialize_with = "whole::de_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub soft: Option<u64>,
    #[serde(deserialize_with = "whole::de")]
    #[schema(minimum = 1)]
    pub hard: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<GraceSpec>,
}

/// `percent` over the hard limit, for `duration` from the moment the hard
/// limit is first passed in a window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GraceSpec {
    #[serde(deserialize_with = "whole::de")]
    #[schema(minimum = 1, maximum = 1000)]
    pub percent: u32,
    #[serde(with = "humantime_serde")]
    #[schema(value_type = String, example = "1h")]
    pub duration: Duration,
}

/// The ranges within which a plan's tenant admins may set their overrides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SelfServiceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_requests: Option<BoundsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_burst: Option<BoundsSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quotas: Vec<QuotaBoundsSpec>,
}

/// An inclusive range.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BoundsSpec {
    #[serde(deserialize_with = "whole::de")]
    pub min: u64,
    #[serde(deserialize_with = "whole::de")]
    pub max: u64,
}

/// The range a tenant admin may set one quota's hard limit in.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaBoundsSpec {
    #[schema(value_type = schema::Metric)]
    pub metric: Metric,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<schema::Period>)]
    pub period: Option<Period>,
    #[serde(deserialize_with = "whole::de")]
    pub min: u64,
    #[serde(deserialize_with = "whole::de")]
    pub max: u64,
}

impl From<&plan::Plan> for PlanSpec {
    fn from(plan: &plan::Plan) -> Self {
        Self {
            id: plan.id.clone(),
            rate: plan.rate.into(),
            class_rates: plan
                .class_rates
                .iter()
                .map(|c| ClassRateSpec {
                    class: c.class,
                    rate: c.rate.into(),
                })
                .collect(),
            weight: plan.weight,
            quotas: plan.quotas.iter().map(|&q| q.into()).collect(),
            self_service: (&plan.self_service).into(),
            max_body_bytes: plan.max_body_bytes,
            isolation: plan.isolation,
            pool: plan.pool.clone(),
        }
    }
}

impl From<plan::Rate> for RateSpec {
    fn from(rate: plan::Rate) -> Self {
        let spec = rate.spec();
        Self {
            requests: spec.requests,
            per: spec.per,
            burst: spec.burst,
        }
    }
}

impl From<plan::Quota> for QuotaSpec {
    fn from(quota: plan::Quota) -> Self {
        Self {
            metric: quota.metric(),
            period: quota.period(),
            soft: quota.soft(),
            hard: quota.hard(),
            grace: quota.grace().map(|g| GraceSpec {
                percent: g.percent,
                duration: g.duration,
            }),
        }
    }
}

impl From<&policy::SelfService> for SelfServiceSpec {
    fn from(ranges: &policy::SelfService) -> Self {
        let bounds = |b: policy::Bounds| BoundsSpec {
            min: b.min,
            max: b.max,
        };
        Self {
            rate_requests: ranges.rate_requests.map(bounds),
            rate_burst: ranges.rate_burst.map(bounds),
            quotas: ranges
                .quotas
                .iter()
                .map(|q| QuotaBoundsSpec {
                    metric: q.metric,
                    period: q.period,
                    min: q.min,
                    max: q.max,
                })
                .collect(),
        }
    }
}

impl TryFrom<RateSpec> for plan::Rate {
    type Error = String;
    fn try_from(spec: RateSpec) -> Result<Self, String> {
        plan::Rate::new(spec.requests, spec.per, spec.burst)
    }
}

impl TryFrom<PlanSpec> for plan::Plan {
    type Error = String;

    /// The domain plan, or the first rule it breaks, named by its field.
    /// Rules across fields (weights, duplicate quotas) are `Plan::check`'s.
    fn try_from(spec: PlanSpec) -> Result<Self, String> {
        let rate = spec.rate.try_into().map_err(|e| format!("rate: {e}"))?;
        let class_rates = spec
            .class_rates
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let rate = c
                    .rate
                    .try_into()
                    .map_err(|e| format!("class_rates[{i}].rate: {e}"))?;
                Ok(plan::ClassRate {
                    class: c.class,
                    rate,
                })
            })
            .collect::<Result<_, String>>()?;
        let quotas = spec
            .quotas
            .into_iter()
            .enumerate()
            .map(|(i, q)| {
                plan::Quota::new(QuotaFields {
                    metric: q.metric,
                    period: q.period,
                    soft: q.soft,
                    hard: q.hard,
                    grace: q.grace.map(|g| plan::Grace {
                        percent: g.percent,
                        duration: g.duration,
                    }),
                })
                .map_err(|e| format!("quotas[{i}]: {e}"))
            })
            .collect::<Result<_, String>>()?;
        let bounds = |b: BoundsSpec| policy::Bounds {
            min: b.min,
            max: b.max,
        };
        let self_service = policy::SelfService {
            rate_requests: spec.self_service.rate_requests.map(bounds),
            rate_burst: spec.self_service.rate_burst.map(bounds),
            quotas: spec
                .self_service
                .quotas
                .into_iter()
                .map(|q| policy::QuotaBounds {
                    metric: q.metric,
                    period: q.period,
                    min: q.min,
                    max: q.max,
                })
                .collect(),
        };
        Ok(plan::Plan {
            id: spec.id,
            rate,
            class_rates,
            weight: spec.weight,
            quotas,
            self_service,
            max_body_bytes: spec.max_body_bytes,
            isolation: spec.isolation,
            pool: spec.pool,
        })
    }
}

/// What a tenant's policy changes of its plan. Absent fields keep the plan's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// Sustained requests per the plan's rate period.
    #[serde(
        default,
        deserialize_with = "whole::de_opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 1)]
    pub rate_requests: Option<u32>,
    /// Requests allowed at once.
    #[serde(
        default,
        deserialize_with = "whole::de_opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 1)]
    pub rate_burst: Option<u32>,
    /// Quotas replaced or added, by metric and period.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quotas: Vec<QuotaOverride>,
}

/// New limits for one quota. A plan's grace for it is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaOverride {
    #[schema(value_type = schema::Metric)]
    pub metric: Metric,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<schema::Period>)]
    pub period: Option<Period>,
    #[serde(
        default,
        deserialize_with = "whole::de_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub soft: Option<u64>,
    #[serde(deserialize_with = "whole::de")]
    pub hard: u64,
}

impl From<Overrides> for policy::Overrides {
    fn from(o: Overrides) -> Self {
        Self {
            rate_requests: o.rate_requests,
            rate_burst: o.rate_burst,
            quotas: o
                .quotas
                .into_iter()
                .map(|q| policy::QuotaOverride {
                    metric: q.metric,
                    period: q.period,
                    soft: q.soft,
                    hard: q.hard,
                })
                .collect(),
        }
    }
}

impl From<&policy::Overrides> for Overrides {
    fn from(o: &policy::Overrides) -> Self {
        Self {
            rate_requests: o.rate_requests,
            rate_burst: o.rate_burst,
            quotas: o
                .quotas
                .iter()
                .map(|q| QuotaOverride {
                    metric: q.metric,
                    period: q.period,
                    soft: q.soft,
                    hard: q.hard,
                })
                .collect(),
        }
    }
}

/// One setting that differs between two effective plans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Change {
    pub setting: String,
    /// Absent when the setting is new.
    pub from: Option<Value>,
    /// Absent when the setting is gone.
    pub to: Option<Value>,
}

impl From<policy::Change> for Change {
    fn from(c: policy::Change) -> Self {
        Self {
            setting: c.setting,
            from: c.from,
            to: c.to,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: Value) -> PlanSpec {
        serde_json::from_value(json).expect("a plan's shape")
    }

    #[test]
    fn a_plan_reads_and_writes_as_the_configuration_writes_it() {
        let json = serde_json::json!({
            "id": "pro",
            "rate": {"requests": 100, "per": "1s", "burst": 200},
            "class_rates": [{"class": "write", "rate": {"requests": 10, "per": "1s", "burst": 10}}],
            "weight": 4,
            "quotas": [
                {"metric": "requests", "period": "day", "soft": 900, "hard": 1000,
                 "grace": {"percent": 10, "duration": "1h"}},
                {"metric": "records", "hard": 50}
            ],
            "self_service": {"rate_burst": {"min": 1, "max": 400},
                             "quotas": [{"metric": "records", "min": 1, "max": 100}]},
            "max_body_bytes": 1024,
            "isolation": "dedicated"
        });
        let plan = plan::Plan::try_from(spec(json.clone())).expect("a valid plan");
        assert_eq!(plan.weight, 4);
        assert_eq!(plan.rate.spec().burst, 200);
        assert_eq!(plan.quotas[0].grace().map(|g| g.percent), Some(10));
        assert_eq!(serde_json::to_value(PlanSpec::from(&plan)).unwrap(), json);
        // The domain's own format (configuration, storage) says the same.
        assert_eq!(
            serde_json::from_value::<plan::Plan>(json).expect("the domain reads it"),
            plan
        );
    }

    #[test]
    fn a_plan_breaking_a_domain_rule_names_the_field() {
        let no_period = spec(serde_json::json!({
            "id": "p", "rate": {"requests": 1, "per": "1s", "burst": 1},
            "quotas": [{"metric": "records", "hard": 1}, {"metric": "requests", "hard": 5}]
        }));
        let err = plan::Plan::try_from(no_period).unwrap_err();
        assert_eq!(err, "quotas[1]: a requests quota needs a period");
        let zero_rate = spec(serde_json::json!({
            "id": "p", "rate": {"requests": 0, "per": "1s", "burst": 1}
        }));
        assert!(plan::Plan::try_from(zero_rate)
            .unwrap_err()
            .starts_with("rate: "));
    }

    #[test]
    fn a_plan_refuses_fields_it_does_not_know() {
        let err = serde_json::from_value::<PlanSpec>(serde_json::json!({
            "id": "p", "rate": {"requests": 1, "per": "1s", "burst": 1}, "weigth": 2
        }))
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `weigth`"), "{err}");
    }

    #[test]
    fn overrides_convert_both_ways_unchanged() {
        let wire: Overrides = serde_json::from_value(serde_json::json!({
            "rate_burst": 5, "quotas": [{"metric": "requests", "period": "day", "hard": 9}]
        }))
        .unwrap();
        let domain = policy::Overrides::from(wire.clone());
        assert_eq!(domain.rate_burst, Some(5));
        assert_eq!(domain.quotas[0].hard, 9);
        assert_eq!(Overrides::from(&domain), wire);
    }
}
