//! `RateLimit-Policy` and `RateLimit` as structured fields (IETF httpapi
//! ratelimit-headers draft, -10 and later): one item per rate limit the
//! request was checked against, and one for the quota nearest its limit.
//! Quotas past their soft limit are named in `Tenantd-Quota-Warning`.

use std::fmt::Write;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use tenantd_core::gcra::Decision;
use tenantd_core::plan::{OpClass, Plan};
use tenantd_core::quota::Standing;

use crate::problem::retry_after_secs;

pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
pub static QUOTA_WARNING: HeaderName = HeaderName::from_static("tenantd-quota-warning");

/// The three headers, each built in one string: a handful of appends per
/// response rather than an allocation per item.
#[derive(Debug)]
pub struct RateHeaders {
    policy: String,
    current: String,
    warnings: String,
}

impl Default for RateHeaders {
    /// Room for a rate limit, a class limit and a quota without regrowing.
    fn default() -> Self {
        Self {
            policy: String::with_capacity(128),
            current: String::with_capacity(96),
            warnings: String::new(),
        }
    }
}

/// Seconds until `d` has passed, rounded up; zero stays zero.
fn secs_up(d: Duration) -> u64 {
    if d.is_zero() {
        0
    } else {
        retry_after_secs(d)
    }
}

/// Starts a new list member in `list`.
fn item(list: &mut String) -> &mut String {
    if !list.is_empty() {
        list.push_str(", ");
    }
    list
}

/// Writes the structured-field name of a quota: `requests-day`, `storage_bytes`.
fn quota_name(out: &mut String, standing: &Standing) {
    out.push_str(standing.quota.metric().as_str());
    if let Some(period) = standing.quota.period() {
        out.push('-');
        out.push_str(period.as_str());
    }
}

// Writing to a String cannot fail, so the `fmt::Result`s below are ignored.
impl RateHeaders {
    /// Items for the tenant's rate limit (`rate`) and its class limit, if any.
    pub fn rates(&mut self, plan: &Plan, class: OpClass, decisions: &[Decision]) {
        let limits = std::iter::once(("rate", &plan.rate))
            .chain(plan.class_rate(class).map(|r| (class.as_str(), r)));
        for ((name, rate), decision) in limits.zip(decisions) {
            let _ = write!(
                item(&mut self.policy),
                "\"{name}\";q={};w={}",
                rate.spec().burst,
                rate.window_secs()
            );
            let (remaining, reset) = match decision {
                Decision::Allowed {
                    remaining,
                    reset_after,
                    ..
                } => (*remaining, *reset_after),
                Decision::Denied { retry_after, .. } => (0, *retry_after),
            };
            let _ = write!(
                item(&mut self.current),
                "\"{name}\";r={remaining};t={}",
                secs_up(reset)
            );
        }
    }

    /// An item for one quota, at `now` (Unix seconds).
    pub fn quota(&mut self, standing: &Standing, now: i64) {
        let unit = standing.quota.metric().header_unit();
        let policy = item(&mut self.policy);
        policy.push('"');
        quota_name(policy, standing);
        let _ = write!(policy, "\";q={}", standing.hard);
        let current = item(&mut self.current);
        current.push('"');
        quota_name(current, standing);
        let _ = write!(current, "\";r={}", standing.remaining());
        if let Some((start, end)) = standing.window {
            let _ = write!(self.policy, ";w={}", end - start);
            let _ = write!(self.current, ";t={}", (end - now).max(0));
        }
        let _ = write!(self.policy, ";qu=\"{unit}\"");
    }

    pub fn soft_warnings(&mut self, over_soft: &[Standing]) {
        for s in over_soft {
            let warnings = item(&mut self.warnings);
            quota_name(warnings, s);
            let _ = write!(
                warnings,
                ": {} used, soft limit {}, hard limit {}",
                s.used,
                s.soft.unwrap_or(s.hard),
                s.hard
            );
        }
    }

    pub fn apply(self, headers: &mut HeaderMap) {
        for (name, value) in [
            (&RATELIMIT_POLICY, self.policy),
            (&RATELIMIT, self.current),
            (&QUOTA_WARNING, self.warnings),
        ] {
            if value.is_empty() {
                continue;
            }
            if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(value)) {
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
