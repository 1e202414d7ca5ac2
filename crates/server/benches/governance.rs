//! Governance at scale, through the HTTP API of a real server on its
//! embedded store: create 100 and then 100,000 tenants, then time one
//! tenant's policy change (a new version, applied and audited) and one
//! effective-policy lookup. The two sizes side by side show whether a change
//! to one tenant costs anything per other tenant. Also prints how long the
//! creation took, and how long the server then takes to start again once
//! every tenant has a usage ledger (start loads ledgers and policies).
//!
//! Run with `cargo bench -p tenantd-server --bench governance`
//! (`TENANTD_BENCH_TENANTS=20000` for a shorter large run).

// Set-up that cannot fail on a working machine; a panic would be the report.
#![allow(clippy::unwrap_used)]
// The creation figures are this benchmark's output.
#![allow(clippy::print_stderr)]

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rand::rngs::OsRng;
use serde_json::json;
use tenantd_core::plan::Plan;
use tenantd_core::quota::{BillingDay, Demand, Ledger};
use tenantd_core::{ApiKeyToken, Clock, SystemClock, TenantId};
use tenantd_server::config::Config;
use tenantd_server::{Server, CATALOG_FILE};
use tenantd_store::usage::UsageBatch;
use tenantd_store::Catalog;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Running {
    url: String,
    token: String,
    http: reqwest::Client,
    config: Config,
    stop: oneshot::Sender<()>,
    serving: JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

/// The plan every tenant is on: a rate and a daily and a monthly quota, so
/// each tenant's ledger has windows to keep.
fn plan() -> Plan {
    serde_json::from_value(json!({
        "id": "default",
        "rate": { "requests": 1000, "per": "1s", "burst": 2000 },
        "quotas": [
            { "metric": "requests", "period": "day", "hard": 1000000 },
            { "metric": "requests", "period": "month", "hard": 10000000 }
        ]
    }))
    .unwrap()
}

/// A server with `tenants` tenants, created through the API by 8 clients.
fn server_with(runtime: &Runtime, tenants: usize) -> Running {
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let token = ApiKeyToken::generate(&mut OsRng);
        let config = Config {
            data_dir: dir.path().join("data"),
            bootstrap_key: Some(token.clone()),
            log_level: "warn".into(),
            plans: vec![plan()],
            ..Config::default()
        };
        let server = Server::start(
            config.clone().check().expect("a valid configuration"),
            Arc::new(SystemClock),
        )
        .await
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(server.run(listener, async {
            let _ = stopped.await;
        }));
        let running = Running {
            url,
            token: token.expose(),
            http: reqwest::Client::new(),
            config,
            stop,
            serving,
            _dir: dir,
        };
        let started = SystemClock.instant();
        let mut clients = tokio::task::JoinSet::new();
        for client in 0..8 {
            let (http, url, token) = (
                running.http.clone(),
                running.url.clone(),
                running.token.clone(),
            );
            clients.spawn(async move {
                for i in (client..tenants).step_by(8) {
                    let response = http
                        .post(format!("{url}/v1/tenants"))
                        .bearer_auth(&token)
                        .json(&json!({ "id": format!("tenant-{i}"), "name": "bench" }))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 201);
                }
            });
        }
        while clients.join_next().await.is_some() {}
        let took = SystemClock.instant() - started;
        eprintln!(
            "created {tenants} tenants through the API in {:.1} s ({:.0} a second)",
            took.as_secs_f64(),
            tenants as f64 / took.as_secs_f64()
        );
        running
    })
}

/// Stops the server, gives each of its `tenants` tenants a ledger with a
/// day's and a month's window (one request each, as after a day of
/// traffic), and times a start on the same data.
fn restart_with_ledgers(runtime: &Runtime, server: Running, tenants: usize) {
    runtime.block_on(async {
        let _ = server.stop.send(());
        server.serving.await.unwrap().unwrap();
        let catalog_file = server.config.data_dir.join(CATALOG_FILE);
        let catalog = Catalog::open(&catalog_file, std::time::Duration::from_secs(2))
            .await
            .unwrap();
        let now = SystemClock.now();
        let quotas = plan().quotas;
        let ledgers = (0..tenants)
            .map(|i| {
                let mut ledger = Ledger::default();
                ledger.admit(&quotas, &[], BillingDay::default(), now, Demand::default());
                (TenantId::parse(&format!("tenant-{i}")).unwrap(), ledger)
            })
            .collect();
        let batch = UsageBatch {
            ledgers,
            ..UsageBatch::default()
        };
        catalog.write_usage(&batch, now).await.unwrap();
        catalog.close().await;

        let started = SystemClock.instant();
        let server = Server::start(
            server
                .config
                .clone()
                .check()
                .expect("a valid configuration"),
            Arc::new(SystemClock),
        )
        .await
        .unwrap();
        let took = SystemClock.instant() - started;
        eprintln!(
            "started again with {tenants} tenants, each with a ledger, in {:.2} s",
            took.as_secs_f64()
        );
        drop(server);
    });
}

fn governance(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // A knob of this benchmark, not of the server, so not in `Config`.
    #[allow(clippy::disallowed_methods)]
    let large: usize = std::env::var("TENANTD_BENCH_TENANTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let mut group = c.benchmark_group("governance");
    group.sample_size(30);
    for tenants in [100, large] {
        let server = server_with(&runtime, tenants);
        let tenant = format!("tenant-{}", tenants / 2);
        let versions = format!("{}/v1/tenants/{tenant}/policy/versions", server.url);
        let policy = format!("{}/v1/tenants/{tenant}/policy", server.url);
        let mut burst = 100u32;
        group.bench_function(BenchmarkId::new("policy_change", tenants), |b| {
            b.to_async(&runtime).iter(|| {
                burst = if burst == 100 { 101 } else { 100 };
                let request = server
                    .http
                    .post(&versions)
                    .bearer_auth(&server.token)
                    .json(&json!({ "overrides": { "rate_burst": burst }, "reason": "bench" }));
                async move {
                    let response = request.send().await.unwrap();
                    assert_eq!(response.status(), 201);
                }
            });
        });
        group.bench_function(BenchmarkId::new("effective_policy", tenants), |b| {
            b.to_async(&runtime).iter(|| {
                let request = server.http.get(&policy).bearer_auth(&server.token);
                async move {
                    let response = request.send().await.unwrap();
                    assert_eq!(response.status(), 200);
                }
            });
        });
        if tenants == large {
            restart_with_ledgers(&runtime, server, tenants);
        }
    }
    group.finish();
}

criterion_group!(benches, governance);
criterion_main!(benches);
