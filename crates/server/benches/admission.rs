//! One admission decision, as the hot path makes it for an uncontended
//! request: the tenant's GCRA limit (in memory), its quota ledger (check and
//! charge), a seat by the fast path and its release; then the same with the
//! `RateLimit` headers formatted. With 1, 1,000 and 100,000 tenants holding
//! state, requests going round-robin over them. Also prints the memory the
//! state of 100,000 tenants takes (resident set growth per tenant).
//!
//! Run with `cargo bench -p tenantd-server --bench admission`.

// Set-up that cannot fail on these fixed inputs; a panic would be the report.
#![allow(clippy::unwrap_used)]
// The memory figure is this benchmark's output.
#![allow(clippy::print_stderr)]

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use tenantd_core::fair::{Ask, Discipline};
use tenantd_core::gcra::Decision;
use tenantd_core::plan::{OpClass, Plan};
use tenantd_core::quota::{BillingDay, Demand, QuotaDecision};
use tenantd_core::TenantId;
use tenantd_server::admit::headers::RateHeaders;
use tenantd_server::admit::ledgers::Ledgers;
use tenantd_server::admit::limiter::RateCheck;
use tenantd_server::admit::seats::Seats;
use time::macros::datetime;

/// A plan with a rate limit, a daily and a monthly quota and a concurrency cap.
fn plan() -> Plan {
    serde_json::from_value(serde_json::json!({
        "id": "pro",
        "rate": { "requests": 1000, "per": "1s", "burst": 2000 },
        "weight": 2,
        "quotas": [
            { "metric": "requests", "period": "day", "soft": 900000000, "hard": 1000000000 },
            { "metric": "requests", "period": "month", "hard": 10000000000u64 },
            { "metric": "concurrent_requests", "hard": 64 }
        ]
    }))
    .unwrap()
}

struct Stage {
    ledgers: Ledgers,
    seats: Arc<Seats>,
    plan: Plan,
    tenants: Vec<TenantId>,
}

fn tenant_ids(n: usize) -> Vec<TenantId> {
    (0..n)
        .map(|i| TenantId::parse(&format!("tenant-{i}")).unwrap())
        .collect()
}

fn stage(tenants: Vec<TenantId>) -> Stage {
    let stage = Stage {
        ledgers: Ledgers::default(),
        seats: Seats::new(64, Discipline::Fair),
        plan: plan(),
        tenants,
    };
    // Every tenant has state, as after it made requests.
    let now = datetime!(2026-06-01 12:00 UTC);
    for tenant in &stage.tenants {
        admit_once(&stage, tenant, now, 1_780_000_000_000_000, None);
    }
    stage
}

/// The rate limit and quota steps of one request, adding the `RateLimit`
/// items to `headers` when given; `true` if admitted.
fn admit_once(
    stage: &Stage,
    tenant: &TenantId,
    now: time::OffsetDateTime,
    now_us: u64,
    headers: Option<&mut RateHeaders>,
) -> bool {
    let checks = [RateCheck {
        slot: 0,
        limit: *stage.plan.rate.limit(),
    }];
    let decisions = stage.ledgers.decide_rates(tenant, &checks, now_us, 1);
    if !matches!(decisions[0], Decision::Allowed { .. }) {
        return false;
    }
    let decision = stage.ledgers.with(tenant, |usage| {
        let d = usage.ledger.admit(
            &stage.plan.quotas,
            &usage.add_ons,
            BillingDay::default(),
            now,
            Demand::default(),
        );
        usage.ledger_changed();
        usage.meter(now, |h| h.requests += 1);
        d
    });
    let QuotaDecision::Allowed { nearest, .. } = decision else {
        return false;
    };
    if let Some(headers) = headers {
        headers.rates(&stage.plan, OpClass::Read, &decisions);
        if let Some(nearest) = nearest {
            headers.quota(&nearest, now.unix_timestamp());
        }
    }
    true
}

fn decision(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("admission_decision");
    for tenants in [1usize, 1_000, 100_000] {
        let stage = stage(tenant_ids(tenants));
        let now = datetime!(2026-06-01 12:00 UTC);
        // Written behind, as the server does within a second.
        stage.ledgers.drain(now);
        let ask = Ask {
            width: 1,
            cost: 2000,
            weight: stage.plan.weight,
            cap: 64,
            max_queue: 64,
        };
        // Time moves 1 ms per request, so the rate limit never bites.
        let mut now_us = 1_780_000_000_000_000u64;
        let mut next = 0usize;
        group.bench_function(BenchmarkId::new("rate_quota_seat", tenants), |b| {
            b.to_async(&runtime).iter(|| {
                now_us += 1000;
                next = (next + 1) % stage.tenants.len();
                let tenant = &stage.tenants[next];
                let admitted = admit_once(&stage, tenant, now, now_us, None);
                let seats = stage.seats.clone();
                async move {
                    let seat = seats
                        .acquire(tenant, ask, Duration::from_secs(1))
                        .await
                        .unwrap();
                    black_box((admitted, seat));
                }
            });
        });
        let mut now_us = 1_800_000_000_000_000u64;
        let response_headers = std::cell::RefCell::new(HeaderMap::new());
        let response_headers = &response_headers;
        group.bench_function(BenchmarkId::new("with_headers", tenants), |b| {
            b.to_async(&runtime).iter(|| {
                now_us += 1000;
                next = (next + 1) % stage.tenants.len();
                let tenant = &stage.tenants[next];
                let mut headers = RateHeaders::default();
                let admitted = admit_once(&stage, tenant, now, now_us, Some(&mut headers));
                let seats = stage.seats.clone();
                async move {
                    let seat = seats
                        .acquire(tenant, ask, Duration::from_secs(1))
                        .await
                        .unwrap();
                    // A response's header map exists already; reuse one.
                    let mut map = response_headers.borrow_mut();
                    map.clear();
                    headers.apply(&mut map);
                    black_box((admitted, &*map, seat));
                }
            });
        });
    }
    group.finish();
}

/// One write-behind pass (taking what is to be written, as `meter` does
/// every second) when 100 tenants made a request since the last pass, among
/// 1,000 and 100,000 tenants with state. Each shard's lock is held for its
/// part of the pass, so this also bounds how long a request can wait for it.
fn write_behind(c: &mut Criterion) {
    const ACTIVE: usize = 100;
    let mut group = c.benchmark_group("write_behind");
    for tenants in [1_000usize, 100_000] {
        let stage = stage(tenant_ids(tenants));
        let now = datetime!(2026-06-01 12:00 UTC);
        stage.ledgers.drain(now);
        let mut next = 0usize;
        group.bench_function(BenchmarkId::new("drain_100_active", tenants), |b| {
            b.iter_batched(
                || {
                    for _ in 0..ACTIVE {
                        next = (next + 7919) % stage.tenants.len();
                        stage.ledgers.with(&stage.tenants[next], |usage| {
                            usage.ledger_changed();
                            usage.meter(now, |h| h.requests += 1);
                        });
                    }
                },
                |()| {
                    let (batch, _) = stage.ledgers.drain(now);
                    black_box(batch)
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

/// The busiest 20 tenants and the sum of the rest, as each `/metrics`
/// scrape reads them, among 100,000 tenants with state.
fn metrics_top(c: &mut Criterion) {
    let stage = stage(tenant_ids(100_000));
    // Skewed traffic: tenant i made about 100,000 / (i + 1) requests.
    for (i, tenant) in stage.tenants.iter().enumerate() {
        stage
            .ledgers
            .with(tenant, |u| u.admitted_total = 100_000 / (i as u64 + 1));
    }
    c.bench_function("metrics_top_20_of_100000", |b| {
        b.iter(|| black_box(stage.ledgers.top(20)));
    });
}

/// Resident memory in bytes, from /proc.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn memory_per_tenant(_: &mut Criterion) {
    // The ids exist before, as they would in identify's cache.
    let ids = tenant_ids(100_000);
    let before = resident_bytes();
    let stage = stage(ids);
    let after = resident_bytes();
    let per_tenant = (after.saturating_sub(before)) as f64 / 100_000.0;
    eprintln!(
        "admission state: {per_tenant:.0} bytes per tenant ({} tenants)",
        stage.ledgers.tenants()
    );
}

criterion_group!(
    benches,
    memory_per_tenant,
    decision,
    write_behind,
    metrics_top
);
criterion_main!(benches);
