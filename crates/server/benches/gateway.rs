//! The gateway's cost per request: a GET straight to a loopback upstream,
//! the same GET through tenantd (identify, admit, sign the context, forward,
//! meter), and one answered from the tenant's response cache; and signing
//! one tenant context alone. One client, one request at a time, keep-alive.
//!
//! Run with `cargo bench -p tenantd-server --bench gateway`.

// Set-up that cannot fail on a working machine; a panic would be the report.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::Router;
use criterion::{criterion_group, criterion_main, Criterion};
use rand::rngs::OsRng;
use serde_json::json;
use tenantd_core::{ApiKeyToken, KeyId, PlanId, Role, ServiceName, SystemClock, TenantId};
use tenantd_server::config::Config;
use tenantd_server::config::ContextConfig;
use tenantd_server::gateway::context::{ContextSubject, Keyring};
use tenantd_server::Server;
use tenantd_store::Catalog;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

struct Setup {
    direct: String,
    proxied: String,
    cached: String,
    token: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// An upstream answering `ok` (and `cached` with `max-age`), and tenantd in
/// front of it with a tenant whose plan never limits the benchmark.
fn setup(runtime: &Runtime) -> Setup {
    runtime.block_on(async {
        let upstream = Router::new()
            .route("/ok", axum::routing::get(|| async { "ok" }))
            .route(
                "/cached",
                axum::routing::get(|| async { ([("cache-control", "max-age=3600")], "cached") }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, upstream).await });

        let dir = tempfile::tempdir().unwrap();
        let token = ApiKeyToken::generate(&mut OsRng);
        let service = json!({ "name": "echo", "upstreams": [upstream_url] });
        let plan = json!({
            "id": "default",
            "rate": { "requests": 1_000_000, "per": "1s", "burst": 1_000_000 },
        });
        let mut config = Config {
            data_dir: dir.path().join("data"),
            bootstrap_key: Some(token.clone()),
            log_level: "warn".into(),
            ..Config::default()
        };
        config.gateway.services = vec![serde_json::from_value(service).unwrap()];
        config.plans = vec![serde_json::from_value(plan).unwrap()];
        let server = Server::start(
            config.check().expect("a valid configuration"),
            Arc::new(SystemClock),
        )
        .await
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(server.run(listener, std::future::pending()));

        let operator = tenantd_client::Client::new(&url, &token.expose()).unwrap();
        let tenant: TenantId = "acme".parse().unwrap();
        operator
            .create_tenant(&tenantd_client::api::CreateTenant::new(
                tenant.clone(),
                "Acme",
            ))
            .await
            .unwrap();
        let key = operator
            .create_key(
                tenantd_client::KeysOf::Tenant(&tenant),
                &tenantd_client::api::CreateKey {
                    role: Role::Developer,
                    name: "bench".into(),
                    expires_at: None,
                },
            )
            .await
            .unwrap();
        Setup {
            direct: format!("{upstream_url}/ok"),
            proxied: format!("{url}/v1/proxy/echo/ok"),
            cached: format!("{url}/v1/proxy/echo/cached"),
            token: key.token,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    })
}

fn gateway(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let setup = setup(&runtime);
    let mut group = c.benchmark_group("gateway");
    for (name, url, auth) in [
        ("direct", &setup.direct, false),
        ("proxied", &setup.proxied, true),
        ("proxied_cache_hit", &setup.cached, true),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| {
                let mut request = setup.http.get(url);
                if auth {
                    request = request.bearer_auth(&setup.token);
                }
                async move {
                    let response = request.send().await.unwrap();
                    assert_eq!(response.status(), 200);
                    response.bytes().await.unwrap();
                }
            });
        });
    }
    group.finish();

    let (reusing, per_request, _dir) = runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(
            &dir.path().join("catalog.db"),
            std::time::Duration::from_secs(2),
        )
        .await
        .unwrap();
        let now = tenantd_core::Clock::now(&SystemClock);
        let reusing = Keyring::load(&catalog, &Default::default(), now)
            .await
            .unwrap();
        let config = ContextConfig {
            per_request: true,
            ..Default::default()
        };
        let per_request = Keyring::load(&catalog, &config, now).await.unwrap();
        (reusing, per_request, dir)
    });
    let tenant: TenantId = "acme".parse().unwrap();
    let key_id = KeyId::parse("9f2c41d07b3e8a15").unwrap();
    let plan = PlanId::default_plan();
    let service: ServiceName = "billing".parse().unwrap();
    let subject = ContextSubject {
        service: &service,
        tenant: &tenant,
        key_id: &key_id,
        role: Role::Developer,
        plan: &plan,
    };
    let now = tenantd_core::Clock::now(&SystemClock);
    let request_id = "3f1c0a9e5b7d4c2a8e6f1b3d5c7a9e0f";
    c.bench_function("context/sign_per_request", |b| {
        b.iter(|| per_request.context(&subject, request_id, now).unwrap());
    });
    c.bench_function("context/reused", |b| {
        b.iter(|| reusing.context(&subject, request_id, now).unwrap());
    });
}

criterion_group!(benches, gateway);
criterion_main!(benches);
