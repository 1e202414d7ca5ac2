//! `RateLimit-Policy` and `RateLimit` as structured fields (IETF httpapi
//! ratelimit-headers draft, -10 and later): one item per rate limit the
//! request was checked against, and one for the quota nearest its limit.
//! Quotas past their soft limit are named in `Tenantd-Quota-Warning`.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use tenantd_core::gcra::Decision;
use tenantd_core::plan::{OpClass, Plan};
use tenantd_core::quota::Standing;

use crate::problem::retry_after_secs;

pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
pub static QUOTA_WARNING: HeaderName = HeaderName::from_static("tenantd-quota-warning");

#[derive(Debug, Default)]
pub struct RateHeaders {
    policy: Vec<String>,
    current: Vec<String>,
    warnings: Vec<String>,
}

/// Seconds until `d` has passed, rounded up; zero stays zero.
fn secs_up(d: Duration) -> u64 {
    if d.is_zero() {
        0
    } else {
        retry_after_secs(d)
    }
}

/// The structured-field name of a quota: `requests-day`, `storage_bytes`.
fn quota_name(standing: &Standing) -> String {
    let metric = standing.quota.metric().as_str();
    match standing.quota.period() {
        Some(period) => format!("{metric}-{}", period.as_str()),
        None => metric.to_owned(),
    }
}

impl RateHeaders {
    /// Items for the tenant's rate limit (`rate`) and its class limit, if any.
    pub fn rates(&mut self, plan: &Plan, class: OpClass, decisions: &[Decision]) {
        let limits = std::iter::once(("rate", &plan.rate))
            .chain(plan.class_rate(class).map(|r| (class.as_str(), r)));
        for ((name, rate), decision) in limits.zip(decisions) {
            self.policy.push(format!(
                "\"{name}\";q={};w={}",
                rate.spec().burst,
                rate.window_secs()
            ));
            let (remaining, reset) = match decision {
                Decision::Allowed {
                    remaining,
                    reset_after,
                    ..
                } => (*remaining, *reset_after),
                Decision::Denied { retry_after, .. } => (0, *retry_after),
            };
            self.current
                .push(format!("\"{name}\";r={remaining};t={}", secs_up(reset)));
        }
    }

    /// An item for one quota, at `now` (Unix seconds).
    pub fn quota(&mut self, standing: &Standing, now: i64) {
        let name = quota_name(standing);
        let unit = standing.quota.metric().header_unit();
        match standing.window {
            Some((start, end)) => {
                self.policy.push(format!(
                    "\"{name}\";q={};w={};qu=\"{unit}\"",
                    standing.hard,
                    end - start
                ));
                self.current.push(format!(
                    "\"{name}\";r={};t={}",
                    standing.remaining(),
                    (end - now).max(0)
                ));
            }
            None => {
                self.policy
                    .push(format!("\"{name}\";q={};qu=\"{unit}\"", standing.hard));
                self.current
                    .push(format!("\"{name}\";r={}", standing.remaining()));
            }
        }
    }

    pub fn soft_warnings(&mut self, over_soft: &[Standing]) {
        for s in over_soft {
            self.warnings.push(format!(
                "{}: {} used, soft limit {}, hard limit {}",
                quota_name(s),
                s.used,
                s.soft.unwrap_or(s.hard),
                s.hard
            ));
        }
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, items) in [
            (&RATELIMIT_POLICY, &self.policy),
            (&RATELIMIT, &self.current),
            (&QUOTA_WARNING, &self.warnings),
        ] {
            if items.is_empty() {
                continue;
            }
            if let Ok(value) = HeaderValue::from_str(&items.join(", ")) {
                headers.insert(name.clone(), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenantd_core::plan::{Metric, Period, Quota, QuotaFields, Rate};

    #[test]
    fn items_follow_the_draft_syntax() {
        let plan = Plan {
            rate: Rate::new(10, Duration::from_secs(1), 20).unwrap(),
            ..Plan::default_plan()
        };
        let mut h = RateHeaders::default();
        h.rates(
            &plan,
            OpClass::Read,
            &[Decision::Allowed {
                tat: 0,
                remaining: 19,
                reset_after: Duration::from_millis(100),
            }],
        );
        let quota = Quota::new(QuotaFields {
            metric: Metric::Requests,
            period: Some(Period::Day),
            soft: Some(800),
            hard: 1000,
            grace: None,
        })
        .unwrap();
        let standing = Standing {
            quota,
            used: 900,
            soft: Some(800),
            hard: 1000,
            window: Some((86_400, 2 * 86_400)),
            in_grace: false,
        };
        h.quota(&standing, 86_400 + 3600);
        h.soft_warnings(&[standing]);
        let mut headers = HeaderMap::new();
        h.apply(&mut headers);
        assert_eq!(
            headers[&RATELIMIT_POLICY],
            r#""rate";q=20;w=2, "requests-day";q=1000;w=86400;qu="requests""#
        );
        assert_eq!(
            headers[&RATELIMIT],
            r#""rate";r=19;t=1, "requests-day";r=100;t=82800"#
        );
        assert_eq!(
            headers[&QUOTA_WARNING],
            "requests-day: 900 used, soft limit 800, hard limit 1000"
        );
    }
}
