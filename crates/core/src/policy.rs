//! Tenant policies: a tenant's overrides of its plan, the self-service
//! ranges within which a tenant admin may set them alone, the effective plan
//! they make, and the difference between two effective plans, setting by
//! setting.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::plan::{Metric, Period, Plan, Quota, QuotaFields, Rate};
use crate::whole;

/// What a tenant's policy changes of its plan. Absent fields keep the plan's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// Sustained requests per the plan's rate period.
    #[serde(
        default,
        deserialize_with = "whole::de_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub rate_requests: Option<u32>,
    /// Requests allowed at once.
    #[serde(
        default,
        deserialize_with = "whole::de_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub rate_burst: Option<u32>,
    /// Quotas replaced or added, by metric and period.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quotas: Vec<QuotaOverride>,
}

/// New limits for one quota. A plan's grace for it is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaOverride {
    pub metric: Metric,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

/// An inclusive range a tenant admin may choose a value from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    pub min: u64,
    pub max: u64,
}

impl Bounds {
    fn holds(&self, value: u64) -> bool {
        (self.min..=self.max).contains(&value)
    }
}

/// The range of one quota a tenant admin may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaBounds {
    pub metric: Metric,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Period>,
    pub min: u64,
    pub max: u64,
}

/// What a plan lets its tenants' admins change alone. Anything else, or a
/// value outside these ranges, waits for an operator's approval.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfService {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_requests: Option<Bounds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_burst: Option<Bounds>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quotas: Vec<QuotaBounds>,
}

impl SelfService {
    pub fn check(&self) -> Result<(), String> {
        let ranges = self
            .rate_requests
            .iter()
            .chain(&self.rate_burst)
            .copied()
            .chain(self.quotas.iter().map(|q| Bounds {
                min: q.min,
                max: q.max,
            }));
        for bounds in ranges {
            if bounds.min > bounds.max {
                return Err(format!(
                    "a self-service range has min {} above max {}",
                    bounds.min, bounds.max
                ));
            }
        }
        Ok(())
    }
}

/// The plan with `overrides` applied, or why they do not make a valid one.
pub fn effective(plan: &Plan, overrides: &Overrides) -> Result<Plan, String> {
    let mut out = plan.clone();
    if overrides.rate_requests.is_some() || overrides.rate_burst.is_some() {
        let spec = plan.rate.spec();
        out.rate = Rate::new(
            overrides.rate_requests.unwrap_or(spec.requests),
            spec.per,
            overrides.rate_burst.unwrap_or(spec.burst),
        )
        .map_err(|e| format!("rate: {e}"))?;
    }
    for (i, o) in overrides.quotas.iter().enumerate() {
        if overrides.quotas[..i]
            .iter()
            .any(|p| (p.metric, p.period) == (o.metric, o.period))
        {
            return Err(format!(
                "quotas: {} is overridden twice",
                setting_name(o.metric, o.period)
            ));
        }
        let existing = out
            .quotas
            .iter()
            .position(|q| q.key() == (o.metric, o.period));
        let quota = Quota::new(QuotaFields {
            metric: o.metric,
            period: o.period,
            soft: o.soft,
            hard: o.hard,
            grace: existing.and_then(|i| out.quotas[i].grace()),
        })
        .map_err(|e| format!("quotas: {e}"))?;
        match existing {
            Some(i) => out.quotas[i] = quota,
            None => out.quotas.push(quota),
        }
    }
    Ok(out)
}

/// Why `overrides` are not within the plan's self-service ranges; empty if
/// a tenant admin may apply them alone.
pub fn outside_self_service(plan: &Plan, overrides: &Overrides) -> Vec<String> {
    let ranges = &plan.self_service;
    let mut reasons = Vec::new();
    let mut check = |name: &str, value: u64, bounds: Option<Bounds>| match bounds {
        None => reasons.push(format!("{name} is not self-service on plan {}", plan.id)),
        Some(b) if !b.holds(value) => reasons.push(format!(
            "{name} {value} is outside the self-service range {}..={}",
            b.min, b.max
        )),
        Some(_) => {}
    };
    if let Some(requests) = overrides.rate_requests {
        check("rate.requests", u64::from(requests), ranges.rate_requests);
    }
    if let Some(burst) = overrides.rate_burst {
        check("rate.burst", u64::from(burst), ranges.rate_burst);
    }
    for o in &overrides.quotas {
        let bounds = ranges
            .quotas
            .iter()
            .find(|b| (b.metric, b.period) == (o.metric, o.period))
            .map(|b| Bounds {
                min: b.min,
                max: b.max,
            });
        let name = format!("quotas.{}", setting_name(o.metric, o.period));
        check(&format!("{name}.hard"), o.hard, bounds);
        if let Some(soft) = o.soft {
            check(&format!("{name}.soft"), soft, bounds);
        }
    }
    reasons
}

fn setting_name(metric: Metric, period: Option<Period>) -> String {
    match period {
        Some(p) => format!("{}-{}", metric.as_str(), p.as_str()),
        None => metric.as_str().to_owned(),
    }
}

/// Every setting of a plan by a stable name, for diffs: `rate.requests`,
/// `quotas.requests-day.hard`, `class_rates.write.burst`, …
pub fn settings(plan: &Plan) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let rate = plan.rate.spec();
    out.insert("rate.requests".into(), json!(rate.requests));
    out.insert(
        "rate.per".into(),
        json!(humantime::format_duration(rate.per).to_string()),
    );
    out.insert("rate.burst".into(), json!(rate.burst));
    out.insert("weight".into(), json!(plan.weight));
    if let Some(limit) = plan.max_body_bytes {
        out.insert("max_body_bytes".into(), json!(limit));
    }
    if let Some(isolation) = plan.isolation {
        out.insert("isolation".into(), json!(isolation.as_str()));
    }
    if let Some(pool) = &plan.pool {
        out.insert("pool".into(), json!(pool.as_str()));
    }
    for c in &plan.class_rates {
        let spec = c.rate.spec();
        let class = c.class.as_str();
        out.insert(
            format!("class_rates.{class}.requests"),
            json!(spec.requests),
        );
        out.insert(
            format!("class_rates.{class}.per"),
            json!(humantime::format_duration(spec.per).to_string()),
        );
        out.insert(format!("class_rates.{class}.burst"), json!(spec.burst));
    }
    for q in &plan.quotas {
        let name = setting_name(q.metric(), q.period());
        out.insert(format!("quotas.{name}.hard"), json!(q.hard()));
        if let Some(soft) = q.soft() {
            out.insert(format!("quotas.{name}.soft"), json!(soft));
        }
        if let Some(grace) = q.grace() {
            out.insert(format!("quotas.{name}.grace.percent"), json!(grace.percent));
            out.insert(
                format!("quotas.{name}.grace.duration"),
                json!(humantime::format_duration(grace.duration).to_string()),
            );
        }
    }
    out
}

/// One setting that differs between two effective plans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub setting: String,
    /// Absent when the setting is new.
    pub from: Option<Value>,
    /// Absent when the setting is gone.
    pub to: Option<Value>,
}

/// The settings that differ from `before` to `after`, in name order.
pub fn diff(before: &Plan, after: &Plan) -> Vec<Change> {
    let (a, b) = (settings(before), settings(after));
    let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|name| a.get(*name) != b.get(*name))
        .map(|name| Change {
            setting: name.clone(),
            from: a.get(name).cloned(),
            to: b.get(name).cloned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        serde_json::from_value(json!({
            "id": "pro",
            "rate": { "requests": 10, "per": "1s", "burst": 20 },
            "quotas": [
                { "metric": "requests", "period": "day", "soft": 800, "hard": 1000,
                  "grace": { "percent": 10, "duration": "1h" } }
            ],
            "self_service": {
                "rate_requests": { "min": 5, "max": 50 },
                "quotas": [{ "metric": "requests", "period": "day", "min": 100, "max": 5000 }]
            }
        }))
        .unwrap()
    }

    fn overrides(value: Value) -> Overrides {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn overrides_replace_or_add_settings_and_keep_the_plans_grace() {
        let o = overrides(json!({
            "rate_requests": 40,
            "quotas": [
                { "metric": "requests", "period": "day", "hard": 3000 },
                { "metric": "storage_bytes", "hard": 1000000 }
            ]
        }));
        let e = effective(&plan(), &o).unwrap();
        assert_eq!(e.rate.spec().requests, 40);
        assert_eq!(e.rate.spec().burst, 20, "burst kept");
        assert_eq!(e.quotas.len(), 2);
        assert_eq!(e.quotas[0].hard(), 3000);
        assert_eq!(e.quotas[0].soft(), None);
        assert!(e.quotas[0].grace().is_some(), "grace kept");
        let changes: Vec<String> = diff(&plan(), &e).into_iter().map(|c| c.setting).collect();
        assert_eq!(
            changes,
            [
                "quotas.requests-day.hard",
                "quotas.requests-day.soft",
                "quotas.storage_bytes.hard",
                "rate.requests"
            ]
        );
    }

    #[test]
    fn invalid_overrides_are_refused_with_the_setting_named() {
        let bad = [
            json!({ "rate_burst": 0 }),
            json!({ "quotas": [{ "metric": "requests", "hard": 5 }] }),
            json!({ "quotas": [{ "metric": "requests", "period": "day", "soft": 9, "hard": 5 }] }),
            json!({ "quotas": [
                { "metric": "records", "hard": 5 }, { "metric": "records", "hard": 6 }
            ] }),
        ];
        for value in bad {
            let err = effective(&plan(), &overrides(value.clone())).unwrap_err();
            assert!(
                err.starts_with("rate") || err.starts_with("quotas"),
                "{value}: {err}"
            );
        }
        assert!(serde_json::from_value::<Overrides>(json!({ "weight": 3 })).is_err());
    }

    #[test]
    fn self_service_ranges_decide_what_needs_approval() {
        let p = plan();
        let inside = overrides(json!({
            "rate_requests": 50,
            "quotas": [{ "metric": "requests", "period": "day", "soft": 100, "hard": 5000 }]
        }));
        assert!(outside_self_service(&p, &inside).is_empty());
        let cases = [
            (
                json!({ "rate_requests": 51 }),
                "rate.requests 51 is outside the self-service range 5..=50",
            ),
            (
                json!({ "rate_burst": 30 }),
                "rate.burst is not self-service on plan pro",
            ),
            (
                json!({ "quotas": [{ "metric": "requests", "period": "day", "hard": 99 }] }),
                "quotas.requests-day.hard 99 is outside the self-service range 100..=5000",
            ),
            (
                json!({ "quotas": [{ "metric": "requests", "period": "hour", "hard": 500 }] }),
                "quotas.requests-hour.hard is not self-service on plan pro",
            ),
        ];
        for (value, reason) in cases {
            assert_eq!(outside_self_service(&p, &overrides(value)), [reason]);
        }
        // An empty change is always within range.
        assert!(outside_self_service(&p, &Overrides::default()).is_empty());
    }
}
