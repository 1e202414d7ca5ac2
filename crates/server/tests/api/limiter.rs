//! The shared rate limiter against a real Redis: the same decisions as the
//! in-memory store, scripts reloaded after a flush, and the configured
//! answer (fail open or closed) while Redis is away.

use std::time::Duration;

use proptest::prelude::*;
use reqwest::{Method, StatusCode};
use tenantd_core::gcra::{Decision, Limit};
use tenantd_core::plan::{Plan, Rate};
use tenantd_core::{PlanId, Role, TenantId};
use tenantd_server::admit::ledgers::Ledgers;
use tenantd_server::admit::limiter::{redis_key, RateCheck, RateStore, RedisRates};
use tenantd_server::config::{ClientTls, FailMode, RedisConfig};
use tenantd_testkit::certs::Authority;
use tenantd_testkit::Redis;

use crate::helpers::{spawn_app_with, TestApp};

/// Microseconds since the epoch of a day in 2026, as the server would pass.
const NOW: u64 = 1_780_000_000_000_000;

fn checks(limits: &[(u32, u64, u32)]) -> Vec<RateCheck> {
    limits
        .iter()
        .enumerate()
        .map(|(slot, &(rate, period_ms, burst))| RateCheck {
            slot,
            limit: Limit::new(rate, Duration::from_millis(period_ms), burst).unwrap(),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random limits and random arrivals (gaps, costs, tenants): Redis and
    /// memory allow, deny, and report remaining, retry and reset alike.
    #[test]
    fn redis_and_memory_decide_identically(
        limits in prop::collection::vec((1u32..50, 100u64..5_000, 1u32..20), 1..3),
        steps in prop::collection::vec((0u64..400_000, 1u32..25, 0usize..3), 1..60),
    ) {
        let redis = shared_redis();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let remote = redis_rates(&redis.url());
            let local = Ledgers::default();
            let checks = checks(&limits);
            // Tenants unique to this case, so cases do not share state.
            let case = rand::random::<u32>();
            let mut now = NOW;
            for (gap, cost, who) in steps {
                now += gap;
                let tenant = TenantId::parse(&format!("t{case}-{who}")).unwrap();
                let expected = local.decide(&tenant, &checks, now, cost).await.unwrap();
                let got = remote.decide(&tenant, &checks, now, cost).await.unwrap();
                prop_assert_eq!(&got, &expected, "at {} cost {}", now, cost);
            }
            Ok(())
        })?;
    }
}

/// The limiter's store on the Redis at `url`, waiting up to 2 s for it.
fn redis_rates(url: &str) -> RedisRates {
    let config = RedisConfig {
        timeout: Duration::from_secs(2),
        ..RedisConfig::new(url.to_owned(), FailMode::FailClosed)
    };
    RedisRates::new(&config).unwrap()
}

fn shared_redis() -> &'static Redis {
    static SHARED: std::sync::OnceLock<Redis> = std::sync::OnceLock::new();
    SHARED.get_or_init(Redis::start)
}

#[tokio::test]
async fn a_flushed_script_cache_is_reloaded_and_keys_carry_the_tenant_as_hash_tag() {
    let redis = Redis::start();
    let store = redis_rates(&redis.url());
    let tenant = TenantId::parse("acme").unwrap();
    let checks = checks(&[(10, 1000, 2)]);
    let first = store.decide(&tenant, &checks, NOW, 1).await.unwrap();
    assert!(matches!(first[0], Decision::Allowed { remaining: 1, .. }));
    assert_eq!(redis.command(&["SCRIPT", "FLUSH"]), "+OK");
    let second = store.decide(&tenant, &checks, NOW, 1).await.unwrap();
    assert!(matches!(second[0], Decision::Allowed { remaining: 0, .. }));
    let third = store.decide(&tenant, &checks, NOW, 1).await.unwrap();
    assert_eq!(
        third[0],
        Decision::Denied {
            retry_after: Duration::from_millis(100),
            reset_after: Duration::from_millis(200),
        }
    );
    assert_eq!(redis_key(&tenant), "tenantd:rate:{acme}");
    assert_eq!(redis.command(&["EXISTS", "tenantd:rate:{acme}"]), ":1");
    // The key expires once the limit is full again, leaving nothing behind.
    let ttl = redis.command(&["PTTL", "tenantd:rate:{acme}"]);
    let ttl: i64 = ttl.trim_start_matches(':').parse().unwrap();
    assert!((1..=201).contains(&ttl), "{ttl}");
}

/// A server sharing `redis`, whose plan allows a burst of 3 and then 1 a second.
async fn app_on_redis(redis: &Redis, on_unavailable: FailMode) -> (TestApp, String) {
    app_with_redis(RedisConfig {
        timeout: Duration::from_millis(200),
        ..RedisConfig::new(redis.url(), on_unavailable)
    })
    .await
}

/// A server on the Redis `redis` configures, with the plan of `app_on_redis`.
async fn app_with_redis(redis: RedisConfig) -> (TestApp, String) {
    let app = spawn_app_with(move |config| {
        config.plans = vec![Plan {
            id: PlanId::default_plan(),
            rate: Rate::new(1, Duration::from_secs(1), 3).unwrap(),
            ..Plan::default_plan()
        }];
        config.admission.redis = Some(redis);
    })
    .await;
    app.create_tenant("acme").await;
    let token = app.tenant_key("acme", Role::Reader).await.token;
    (app, token)
}

async fn status(app: &TestApp, token: &str) -> (StatusCode, Option<String>) {
    let response = app
        .request(Method::GET, "/v1/collections")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    (status, body["code"].as_str().map(str::to_owned))
}

/// Retries until Redis answers again (the client reconnects by itself).
async fn until_redis_answers(app: &TestApp, token: &str) -> StatusCode {
    for _ in 0..100 {
        let (status, code) = status(app, token).await;
        if code.as_deref() != Some("limiter_unavailable") {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the limiter did not come back after Redis restarted");
}

#[tokio::test]
async fn rediss_verifies_the_server_and_presents_the_client_certificate() {
    let ca = Authority::new("Redis CA");
    let callers = Authority::new("callers CA");
    let redis = Redis::start_tls(&ca.server("localhost"), Some(&callers.pem));
    let files = tempfile::tempdir().unwrap();
    let write = |name: &str, pem: &str| {
        let path = files.path().join(name);
        std::fs::write(&path, pem).unwrap();
        Some(path)
    };
    let tenantd = callers.client("tenantd");
    let tls = ClientTls {
        ca_file: write("ca.pem", &ca.pem),
        client_cert_file: write("client.pem", &tenantd.cert),
        client_key_file: write("client.key", &tenantd.key),
    };
    let config = RedisConfig {
        tls: tls.clone(),
        timeout: Duration::from_secs(2),
        ..RedisConfig::new(redis.url(), FailMode::FailClosed)
    };
    assert!(
        config.url.starts_with("rediss://localhost:"),
        "{}",
        config.url
    );
    let (app, token) = app_with_redis(config.clone()).await;
    assert_eq!(status(&app, &token).await.0, StatusCode::OK);
    // Decided in Redis, over TLS: the tenant's limits are there.
    assert_eq!(redis.command(&["EXISTS", "tenantd:rate:{acme}"]), ":1");

    // Without the client certificate Redis refuses the handshake; without
    // the CA the system's roots do not know Redis's certificate. Failing
    // closed, both answer 503.
    for (what, config) in [
        (
            "no client certificate",
            RedisConfig {
                tls: ClientTls {
                    client_cert_file: None,
                    client_key_file: None,
                    ..tls.clone()
                },
                ..config.clone()
            },
        ),
        (
            "the system's roots",
            RedisConfig {
                tls: ClientTls {
                    ca_file: None,
                    ..tls.clone()
                },
                ..config.clone()
            },
        ),
    ] {
        let (app, token) = app_with_redis(config).await;
        assert_eq!(
            status(&app, &token).await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Some("limiter_unavailable".into())
            ),
            "{what}"
        );
    }
}

#[tokio::test]
async fn failing_closed_answers_503_while_redis_is_away_and_recovers() {
    let mut redis = Redis::start();
    let (app, token) = app_on_redis(&redis, FailMode::FailClosed).await;
    assert_eq!(status(&app, &token).await.0, StatusCode::OK);
    assert_eq!(redis.command(&["EXISTS", "tenantd:rate:{acme}"]), ":1");

    redis.stop();
    let response = app
        .request(Method::GET, "/v1/collections")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "limiter_unavailable");

    redis.resume();
    // Redis came back empty: the burst is whole again.
    assert_eq!(until_redis_answers(&app, &token).await, StatusCode::OK);
    assert_eq!(status(&app, &token).await.0, StatusCode::OK);
    assert_eq!(status(&app, &token).await.0, StatusCode::OK);
    assert_eq!(
        status(&app, &token).await,
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited".into()))
    );
}

#[tokio::test]
async fn failing_open_limits_on_this_node_while_redis_is_away() {
    let mut redis = Redis::start();
    let (app, token) = app_on_redis(&redis, FailMode::FailOpen).await;
    assert_eq!(status(&app, &token).await.0, StatusCode::OK);

    redis.stop();
    // The local limiter takes over with its own burst of 3, still limiting.
    for _ in 0..3 {
        assert_eq!(status(&app, &token).await.0, StatusCode::OK);
    }
    assert_eq!(
        status(&app, &token).await,
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited".into()))
    );

    // Back: decisions are shared again, as the key reappearing in Redis shows.
    redis.resume();
    app.clock.advance(time::Duration::seconds(10));
    for _ in 0..100 {
        assert_eq!(status(&app, &token).await.0, StatusCode::OK);
        if redis.command(&["EXISTS", "tenantd:rate:{acme}"]) == ":1" {
            return;
        }
        app.clock.advance(time::Duration::seconds(1));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the limiter did not go back to Redis after it restarted");
}
