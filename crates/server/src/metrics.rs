//! Prometheus metrics at `/metrics`: admissions, rejections by reason, queue
//! waits, seats in use. Per-tenant series exist only for the busiest
//! `metrics_tenants` tenants, the rest summed as `other`, so the number of
//! series stays bounded however many tenants there are.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tenantd_core::plan::OpClass;
use tenantd_core::ServiceName;
use tenantd_store::health::{Dependency, Health};

use crate::admit::ledgers::Ledgers;
use crate::admit::seats::Seats;

/// Why admission refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    RateLimited,
    QuotaExceeded,
    TenantQueueFull,
    Overloaded,
    DeadlineExceeded,
    LimiterUnavailable,
    BodyTooLarge,
    BodyTimeout,
    BodyUnreadable,
    StoreUnavailable,
}

impl Rejection {
    fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::QuotaExceeded => "quota_exceeded",
            Self::TenantQueueFull => "tenant_queue_full",
            Self::Overloaded => "overloaded",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::LimiterUnavailable => "limiter_unavailable",
            Self::BodyTooLarge => "payload_too_large",
            Self::BodyTimeout => "body_timeout",
            Self::BodyUnreadable => "body_unreadable",
            Self::StoreUnavailable => "store_unavailable",
        }
    }
}

type Labels = [(&'static str, &'static str); 1];

/// A gateway call's labels: the service (from the configuration, so a
/// bounded set; shared, so that counting a call allocates nothing) and how
/// the call ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct UpstreamLabels {
    service: ServiceLabel,
    outcome: &'static str,
}

/// A service's name as a label value, made once per service.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct ServiceLabel(Arc<str>);

impl ServiceLabel {
    pub fn new(service: &ServiceName) -> Self {
        Self(Arc::from(service.as_str()))
    }
}

impl prometheus_client::encoding::EncodeLabelValue for ServiceLabel {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        prometheus_client::encoding::EncodeLabelValue::encode(&&*self.0, encoder)
    }
}

pub struct Metrics {
    registry: Registry,
    admitted: Family<Labels, Counter>,
    rejected: Family<Labels, Counter>,
    queue_wait: Histogram,
    upstream: Family<UpstreamLabels, Counter>,
    purge_sweeps: Family<Labels, Counter>,
    shared_quota_calls: Family<SharedQuotaLabels, Counter>,
    tls_handshake_failures: Family<Labels, Counter>,
}

/// A call to Redis for shared quotas: `strict` (a decision) or `replay`,
/// and whether it was answered (`ok`) or not (`failed`).
pub type SharedQuotaLabels = [(&'static str, &'static str); 2];

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new(
        seats: Arc<Seats>,
        ledgers: Arc<Ledgers>,
        dependencies: Vec<Arc<Dependency>>,
        top_tenants: usize,
    ) -> Self {
        let mut registry = Registry::with_prefix("tenantd");
        let admitted = Family::<Labels, Counter>::default();
        let rejected = Family::<Labels, Counter>::default();
        // From 100 µs to about 13 s.
        let queue_wait = Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        registry.register(
            "admitted_requests",
            "Requests admitted, by operation class",
            admitted.clone(),
        );
        registry.register(
            "rejected_requests",
            "Requests refused by admission, by reason",
            rejected.clone(),
        );
        registry.register(
            "queue_wait_seconds",
            "Time admitted requests waited for a seat",
            queue_wait.clone(),
        );
        let upstream = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "gateway_calls",
            "Calls to services behind the gateway, by service and outcome: ok, upstream_5xx, \
             cache_hit, or the refusal's error code (bulkhead_full, upstream_unavailable, \
             upstream_timeout, upstream_refused, upstream_error, payload_too_large)",
            upstream.clone(),
        );
        let purge_sweeps = Family::<Labels, Counter>::default();
        registry.register(
            "purge_sweeps",
            "Sweeps for soft-deleted tenants past their retention, by outcome: done or failed",
            purge_sweeps.clone(),
        );
        let shared_quota_calls = Family::<SharedQuotaLabels, Counter>::default();
        registry.register(
            "shared_quota_calls",
            "Calls to Redis for quotas shared by nodes, by kind (strict: a decision made in \
             Redis near a limit; replay: usage sent in a batch) and outcome (ok, failed)",
            shared_quota_calls.clone(),
        );
        let tls_handshake_failures = Family::<Labels, Counter>::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed, by reason: timeout, closed (the client went away), \
             certificate (a client certificate refused or missing) or protocol",
            tls_handshake_failures.clone(),
        );
        registry.register_collector(Box::new(Live {
            seats,
            ledgers,
            dependencies,
            top_tenants,
        }));
        Self {
            registry,
            admitted,
            rejected,
            queue_wait,
            upstream,
            purge_sweeps,
            shared_quota_calls,
            tls_handshake_failures,
        }
    }

    /// Counts a TLS handshake that failed for `reason`.
    pub fn tls_handshake_failed(&self, reason: &'static str) {
        self.tls_handshake_failures
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// Where shared quotas count their calls to Redis.
    pub fn shared_quota_calls(&self) -> Family<SharedQuotaLabels, Counter> {
        self.shared_quota_calls.clone()
    }

    /// Counts a sweep for tenants due to be purged, done or failed.
    pub fn purge_sweep(&self, done: bool) {
        let outcome = if done { "done" } else { "failed" };
        self.purge_sweeps
            .get_or_create(&[("outcome", outcome)])
            .inc();
    }

    /// Counts a gateway call to `service` that ended as `outcome`.
    pub fn gateway_call(&self, service: &ServiceLabel, outcome: &'static str) {
        self.upstream
            .get_or_create(&UpstreamLabels {
                service: service.clone(),
                outcome,
            })
            .inc();
    }

    pub fn admitted(&self, class: OpClass, waited: Duration) {
        self.admitted
            .get_or_create(&[("class", class.as_str())])
            .inc();
        self.queue_wait.observe(waited.as_secs_f64());
    }

    pub fn rejected(&self, reason: Rejection) {
        self.rejected
            .get_or_create(&[("reason", reason.as_str())])
            .inc();
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(error = %e, "could not encode metrics");
        }
        text
    }
}

/// Values read at scrape time: seats and queue, dependencies, and the
/// busiest tenants.
#[derive(Debug)]
struct Live {
    seats: Arc<Seats>,
    ledgers: Arc<Ledgers>,
    /// The catalog, each storage pool, Redis: a bounded set named by the
    /// configuration (a tenant's own database is not among them).
    dependencies: Vec<Arc<Dependency>>,
    top_tenants: usize,
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (in_use, queued, capacity) = self.seats.load();
        for (name, help, value) in [
            (
                "seats_in_use",
                "Seats held by requests being served",
                i64::from(in_use),
            ),
            ("seats", "Seats in all", i64::from(capacity)),
            (
                "queued_requests",
                "Requests waiting for a seat",
                i64::try_from(queued).unwrap_or(i64::MAX),
            ),
        ] {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let statuses: Vec<_> = self.dependencies.iter().map(|d| d.status()).collect();
        let mut up = encoder.encode_descriptor(
            "dependency_up",
            "1 while a dependency's circuit is closed, 0 while it is open (calls refused)",
            None,
            MetricType::Gauge,
        )?;
        for status in &statuses {
            let value = i64::from(status.health != Health::Down);
            ConstGauge::new(value)
                .encode(up.encode_family(&[("dependency", status.name.as_ref())])?)?;
        }
        let mut errors = encoder.encode_descriptor(
            "dependency_errors",
            "Calls to a dependency that failed since start",
            None,
            MetricType::Counter,
        )?;
        for status in &statuses {
            ConstCounter::new(status.errors_total)
                .encode(errors.encode_family(&[("dependency", status.name.as_ref())])?)?;
        }
        let (top, other) = self.ledgers.top(self.top_tenants);
        let mut family = encoder.encode_descriptor(
            "tenant_admitted_requests",
            "Requests admitted per tenant since start, for the busiest tenants; the rest as `other`",
            None,
            MetricType::Counter,
        )?;
        for (tenant, count) in &top {
            ConstCounter::new(*count)
                .encode(family.encode_family(&[("tenant", tenant.as_str())])?)?;
        }
        ConstCounter::new(other).encode(family.encode_family(&[("tenant", "other")])?)?;
        Ok(())
    }
}
