//! Admission over real HTTP on a manual clock: rate limits with exact
//! retry times, quotas (hard, soft, grace, add-ons, plan changes, key
//! rotation, billing-day months), headers, and the queue and deadline
//! refusals a slow store provokes.

use std::time::Duration;
use tenantd_server::config::NonZeroDuration;

use reqwest::Method;
use serde_json::{json, Value};
use sqlx::{Connection, Executor, SqliteConnection};
use tenantd_client::api::{CreateAddOn, CreateTenant, RotateKey, UpdateTenant};
use tenantd_client::{KeysOf, PageRequest};
use tenantd_core::plan::{Metric, Period, Plan};
use tenantd_core::quota::BillingDay;
use tenantd_core::{Clock, Role, SystemClock, TenantId};
use time::macros::datetime;

use crate::helpers::{metric, spawn_app_with, until_metric, TestApp, START};

/// A plan from its JSON form (as in config), with a high rate limit unless given.
fn plan(value: Value) -> Plan {
    let mut value = value;
    if value.get("rate").is_none() {
        value["rate"] = json!({ "requests": 1000, "per": "1s", "burst": 1000 });
    }
    serde_json::from_value(value).unwrap()
}

async fn app_with_plans(plans: Vec<Plan>) -> TestApp {
    spawn_app_with(move |config| {
        config.plans = plans;
        config.admission.usage_flush_interval = NonZeroDuration::from_millis(20);
    })
    .await
}

/// `GET /v1/collections` as `token`: status, code, and the headers asked for.
async fn get(app: &TestApp, token: &str) -> (u16, String, reqwest::header::HeaderMap) {
    let response = app
        .request(Method::GET, "/v1/collections")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body: Value = response.json().await.unwrap_or_default();
    let code = body["code"].as_str().unwrap_or_default().to_owned();
    (status, code, headers)
}

fn header<'h>(headers: &'h reqwest::header::HeaderMap, name: &str) -> &'h str {
    headers
        .get(name)
        .map_or("", |v| v.to_str().unwrap_or_default())
}

async fn tenant_on(app: &TestApp, id: &str, plan: &str, billing_day: Option<u8>) -> String {
    app.operator
        .create_tenant(&CreateTenant {
            plan: Some(plan.parse().unwrap()),
            billing_day: billing_day.map(|d| BillingDay::new(d).unwrap()),
            ..CreateTenant::new(TenantId::parse(id).unwrap(), id)
        })
        .await
        .unwrap();
    app.tenant_key(id, Role::Admin).await.token
}

/// Admitted requests (status 200) out of `n`.
async fn admitted(app: &TestApp, token: &str, n: usize) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        if get(app, token).await.0 == 200 {
            ok += 1;
        }
    }
    ok
}

#[tokio::test]
async fn the_rate_limit_admits_the_burst_and_says_exactly_when_to_retry() {
    let app = app_with_plans(vec![plan(json!({
        "id": "default", "rate": { "requests": 2, "per": "1s", "burst": 3 }
    }))])
    .await;
    let acme = tenant_on(&app, "acme", "default", None).await;
    let globex = tenant_on(&app, "globex", "default", None).await;
    // Each request moves the time the limit is full again by 500 ms:
    // 0.5 s, 1 s, 1.5 s, announced in whole seconds rounded up.
    for (remaining, reset) in [(2, 1), (1, 1), (0, 2)] {
        let (status, _, headers) = get(&app, &acme).await;
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "ratelimit-policy"), r#""rate";q=3;w=2"#);
        assert_eq!(
            header(&headers, "ratelimit"),
            format!(r#""rate";r={remaining};t={reset}"#)
        );
    }
    let (status, code, headers) = get(&app, &acme).await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"));
    assert_eq!(header(&headers, "retry-after"), "1");
    assert_eq!(header(&headers, "ratelimit"), r#""rate";r=0;t=1"#);
    // Exactly 500 ms later, not a microsecond before.
    app.clock.advance(time::Duration::microseconds(499_999));
    assert_eq!(get(&app, &acme).await.0, 429);
    app.clock.advance(time::Duration::microseconds(1));
    assert_eq!(get(&app, &acme).await.0, 200);
    // Another tenant's limit is its own.
    assert_eq!(admitted(&app, &globex, 3).await, 3);
}

#[tokio::test]
async fn a_hard_quota_is_exact_with_a_soft_warning_and_refusals_are_not_counted() {
    let app = app_with_plans(vec![plan(json!({
        "id": "default",
        "quotas": [{ "metric": "requests", "period": "day", "soft": 3, "hard": 5 }]
    }))])
    .await;
    let token = tenant_on(&app, "acme", "default", None).await;
    let acme = TenantId::parse("acme").unwrap();
    let mut warnings = Vec::new();
    for _ in 0..5 {
        let (status, _, headers) = get(&app, &token).await;
        assert_eq!(status, 200);
        warnings.push(header(&headers, "tenantd-quota-warning").to_owned());
    }
    assert_eq!(warnings[..3], ["", "", ""]);
    assert_eq!(
        warnings[3],
        "requests-day: 4 used, soft limit 3, hard limit 5"
    );
    let (status, code, headers) = get(&app, &token).await;
    assert_eq!((status, code.as_str()), (429, "quota_exceeded"));
    assert_eq!(header(&headers, "retry-after"), "86400");
    assert_eq!(
        header(&headers, "ratelimit-policy"),
        r#""rate";q=1000;w=1, "requests-day";q=5;w=86400;qu="requests""#
    );
    // The rate limit counts attempts (six so far at 1 ms each); the quota
    // only what was admitted.
    assert_eq!(
        header(&headers, "ratelimit"),
        r#""rate";r=994;t=1, "requests-day";r=0;t=86400"#
    );
    assert_eq!(get(&app, &token).await.0, 429);

    let usage = app.operator.usage(&acme).await.unwrap();
    let quota = &usage.quotas[0];
    assert_eq!((quota.used, quota.hard, quota.remaining), (5, 5, 0));
    assert_eq!(quota.resets_at, Some(START + time::Duration::days(1)));
    assert_eq!(quota.exhausted_at, Some(START));

    // The soft limit was recorded once, as an event.
    let all = PageRequest::default();
    let events =
        poll(|| async { app.operator.quota_events(&acme, &all).await.unwrap().items }).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].kind.as_str(), events[0].used),
        ("soft_limit_passed", 4)
    );

    app.clock.advance(time::Duration::days(1));
    assert_eq!(admitted(&app, &token, 4).await, 4);

    // The next day's soft limit is a second event; events page newest first.
    let one = PageRequest {
        cursor: None,
        limit: Some(1),
    };
    let first = poll(|| async {
        let page = app.operator.quota_events(&acme, &one).await.unwrap();
        if page.next_cursor.is_some() {
            vec![page]
        } else {
            Vec::new()
        }
    })
    .await
    .remove(0);
    assert_eq!(first.items[0].at, START + time::Duration::days(1));
    let next = PageRequest {
        cursor: first.next_cursor,
        limit: Some(1),
    };
    let second = app.operator.quota_events(&acme, &next).await.unwrap();
    assert_eq!((second.items[0].at, second.next_cursor), (START, None));
}

/// Polls until `f` gives a non-empty list (usage is written behind).
async fn poll<T, F, Fut>(f: F) -> Vec<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Vec<T>>,
{
    for _ in 0..250 {
        let items = f().await;
        if !items.is_empty() {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("nothing was written behind within 5 s");
}

#[tokio::test]
async fn grace_allows_a_percentage_over_hard_for_its_duration_only() {
    let app = app_with_plans(vec![plan(json!({
        "id": "default",
        "quotas": [{ "metric": "requests", "period": "day", "hard": 5,
                     "grace": { "percent": 40, "duration": "10m" } }]
    }))])
    .await;
    let token = tenant_on(&app, "acme", "default", None).await;
    let acme = TenantId::parse("acme").unwrap();
    assert_eq!(admitted(&app, &token, 6).await, 6, "hard 5, one into grace");
    let usage = app.operator.usage(&acme).await.unwrap();
    assert!(usage.quotas[0].in_grace);
    app.clock.advance(time::Duration::minutes(10));
    // Within the 40 % allowance (7), but the grace period is over.
    let (status, code, _) = get(&app, &token).await;
    assert_eq!((status, code.as_str()), (429, "quota_exceeded"));

    // A fresh tenant uses the whole allowance, then no more.
    let other = tenant_on(&app, "globex", "default", None).await;
    assert_eq!(admitted(&app, &other, 9).await, 7);
}

#[tokio::test]
async fn an_add_on_raises_a_quota_until_it_expires() {
    let app = app_with_plans(vec![plan(json!({
        "id": "default",
        "quotas": [{ "metric": "requests", "period": "day", "hard": 3 }]
    }))])
    .await;
    let token = tenant_on(&app, "acme", "default", None).await;
    let acme = TenantId::parse("acme").unwrap();
    assert_eq!(admitted(&app, &token, 4).await, 3);
    app.operator
        .create_add_on(
            &acme,
            &CreateAddOn {
                metric: Metric::Requests,
                period: Some(Period::Day),
                amount: 2,
                expires_at: START + time::Duration::hours(1),
            },
        )
        .await
        .unwrap();
    assert_eq!(admitted(&app, &token, 3).await, 2);
    let all = PageRequest::default();
    assert_eq!(
        app.operator.add_ons(&acme, &all).await.unwrap().items.len(),
        1
    );
    app.clock.advance(time::Duration::hours(1));
    assert!(app
        .operator
        .add_ons(&acme, &all)
        .await
        .unwrap()
        .items
        .is_empty());
    assert_eq!(
        admitted(&app, &token, 1).await,
        0,
        "5 used, 3 allowed again"
    );
    let usage = app.operator.usage(&acme).await.unwrap();
    assert_eq!((usage.quotas[0].used, usage.quotas[0].hard), (5, 3));

    // Active add-ons page oldest first.
    let mut granted = Vec::new();
    for amount in [10, 20, 30] {
        let add_on = CreateAddOn {
            metric: Metric::IngressBytes,
            period: Some(Period::Day),
            amount,
            expires_at: START + time::Duration::days(2),
        };
        granted.push(app.operator.create_add_on(&acme, &add_on).await.unwrap().id);
    }
    let two = PageRequest {
        cursor: None,
        limit: Some(2),
    };
    let first = app.operator.add_ons(&acme, &two).await.unwrap();
    let next = PageRequest {
        cursor: first.next_cursor.clone(),
        limit: Some(2),
    };
    let second = app.operator.add_ons(&acme, &next).await.unwrap();
    let ids =
        |page: &tenantd_client::api::AddOnPage| page.items.iter().map(|a| a.id).collect::<Vec<_>>();
    assert_eq!(
        (ids(&first), ids(&second)),
        (granted[..2].to_vec(), granted[2..].to_vec())
    );
    assert_eq!(second.next_cursor, None);

    // Add-ons are checked: a level takes no period, a counted metric needs one.
    let bad = app
        .operator
        .create_add_on(
            &acme,
            &CreateAddOn {
                metric: Metric::StorageBytes,
                period: Some(Period::Day),
                amount: 1,
                expires_at: START + time::Duration::days(2),
            },
        )
        .await;
    crate::helpers::assert_problem(bad, 422, "invalid_body");
}

#[tokio::test]
async fn a_plan_change_mid_period_keeps_usage_and_applies_at_the_next_request() {
    let app = app_with_plans(vec![
        plan(json!({ "id": "default",
            "quotas": [{ "metric": "requests", "period": "day", "hard": 3 }] })),
        plan(json!({ "id": "pro",
            "quotas": [{ "metric": "requests", "period": "day", "hard": 5 }] })),
    ])
    .await;
    let token = tenant_on(&app, "acme", "default", None).await;
    let acme = TenantId::parse("acme").unwrap();
    assert_eq!(admitted(&app, &token, 4).await, 3);
    let change = |plan: &str| UpdateTenant {
        name: None,
        plan: Some(plan.parse().unwrap()),
        billing_day: None,
        plan_version: None,
    };
    app.operator
        .update_tenant(&acme, &change("pro"))
        .await
        .unwrap();
    assert_eq!(admitted(&app, &token, 4).await, 2, "5 in all, not 3 + 5");
    app.operator
        .update_tenant(&acme, &change("default"))
        .await
        .unwrap();
    assert_eq!(admitted(&app, &token, 1).await, 0);
    let usage = app.operator.usage(&acme).await.unwrap();
    assert_eq!((usage.plan.as_str(), usage.quotas[0].used), ("default", 5));
    // An unknown plan is refused.
    let unknown = app.operator.update_tenant(&acme, &change("gold")).await;
    crate::helpers::assert_problem(unknown, 422, "invalid_body");
}

#[tokio::test]
async fn rotating_keys_never_resets_the_tenants_usage() {
    let app = app_with_plans(vec![plan(json!({
        "id": "default",
        "quotas": [{ "metric": "requests", "period": "day", "hard": 4 }]
    }))])
    .await;
    app.create_tenant("acme").await;
    let acme = TenantId::parse("acme").unwrap();
    let key = app.tenant_key("acme", Role::Admin).await;
    assert_eq!(admitted(&app, &key.token, 2).await, 2);
    let rotated = app
        .operator
        .rotate_key(
            KeysOf::Tenant(&acme),
            &key.key.id,
            &RotateKey {
                overlap_seconds: Some(0),
                expires_at: None,
            },
        )
        .await
        .unwrap();
    let other = app.tenant_key("acme", Role::Reader).await;
    assert_eq!(admitted(&app, &rotated.token, 1).await, 1);
    assert_eq!(
        admitted(&app, &other.token, 2).await,
        1,
        "one left for the tenant"
    );
}

#[tokio::test]
async fn months_are_anchored_at_the_tenants_billing_day() {
    let app = app_with_plans(vec![plan(json!({
        "id": "default",
        "quotas": [{ "metric": "requests", "period": "month", "hard": 2 }]
    }))])
    .await;
    // START is 2026-01-01, so the month runs from 15 December to 15 January.
    let token = tenant_on(&app, "acme", "default", Some(15)).await;
    let acme = TenantId::parse("acme").unwrap();
    assert_eq!(admitted(&app, &token, 2).await, 2);
    let (status, code, headers) = get(&app, &token).await;
    assert_eq!((status, code.as_str()), (429, "quota_exceeded"));
    assert_eq!(header(&headers, "retry-after"), (14 * 86_400).to_string());
    let usage = app.operator.usage(&acme).await.unwrap();
    assert_eq!(
        usage.quotas[0].resets_at,
        Some(datetime!(2026-01-15 00:00 UTC))
    );
    app.clock
        .advance(time::Duration::days(14) - time::Duration::seconds(1));
    assert_eq!(get(&app, &token).await.0, 429);
    app.clock.advance(time::Duration::seconds(1));
    assert_eq!(get(&app, &token).await.0, 200);
    let usage = app.operator.usage(&acme).await.unwrap();
    assert_eq!(
        usage.quotas[0].resets_at,
        Some(datetime!(2026-02-15 00:00 UTC))
    );
}

/// The value of an unlabelled metric, or of one labelled series.
async fn send(app: &TestApp, method: Method, path: &str, token: &str) -> (u16, String, String) {
    let mut request = app.request(method.clone(), path).bearer_auth(token);
    if method == Method::PUT {
        request = request.json(&json!({ "x": 1 }));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let retry = header(response.headers(), "retry-after").to_owned();
    let body: Value = response.json().await.unwrap_or_default();
    (
        status,
        body["code"].as_str().unwrap_or_default().to_owned(),
        retry,
    )
}

#[tokio::test]
async fn a_stuck_store_meets_deadlines_bounded_queues_and_wait_budgets() {
    let app = spawn_app_with(|config| {
        // A write takes both seats; each tenant may have one request waiting.
        config.admission.seats = 2;
        config.admission.classes.write.width = 2;
        config.admission.classes.write.deadline = Duration::from_secs(4);
        config.admission.max_queue = 1;
        config.admission.queue_wait = NonZeroDuration::from_secs(1);
    })
    .await;
    let acme = tenant_on(&app, "acme", "default", None).await;
    let globex = tenant_on(&app, "globex", "default", None).await;
    let orders = "/v1/collections/orders";
    app.request(Method::POST, "/v1/collections")
        .bearer_auth(&acme)
        .json(&json!({ "name": "orders" }))
        .send()
        .await
        .unwrap();

    // Another process holds the pooled database's write lock.
    let db = app.config.data_dir.join("data").join("pooled.db");
    let mut blocker = SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    blocker.execute("BEGIN IMMEDIATE").await.unwrap();

    let stuck_write = {
        let (url, token) = (app.url.clone(), acme.clone());
        tokio::spawn(async move {
            let response = reqwest::Client::new()
                .put(format!("{url}/v1/collections/orders/records/r1"))
                .bearer_auth(token)
                .json(&json!({ "x": 1 }))
                .send()
                .await
                .unwrap();
            let retry = header(response.headers(), "retry-after").to_owned();
            let body: Value = response.json().await.unwrap();
            (body["code"].as_str().unwrap_or_default().to_owned(), retry)
        })
    };
    until_metric(&app, "tenantd_seats_in_use", 2.0).await;

    // acme's next request waits; the one after finds its queue full.
    let waiting_read = {
        let (url, token) = (app.url.clone(), acme.clone());
        tokio::spawn(async move {
            let started = SystemClock.instant();
            let response = reqwest::Client::new()
                .get(format!("{url}/v1/collections"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                (SystemClock.instant() - started),
            )
        })
    };
    until_metric(&app, "tenantd_queued_requests", 1.0).await;
    assert_eq!(
        send(&app, Method::GET, orders, &acme).await,
        (429, "tenant_queue_full".into(), "1".into())
    );

    // A globex request waits too, and leaves the queue when its client goes.
    let abandoned = {
        let (url, token) = (app.url.clone(), globex.clone());
        tokio::spawn(async move {
            let _ = reqwest::Client::new()
                .get(format!("{url}/v1/collections"))
                .bearer_auth(token)
                .send()
                .await;
        })
    };
    until_metric(&app, "tenantd_queued_requests", 2.0).await;
    abandoned.abort();
    until_metric(&app, "tenantd_queued_requests", 1.0).await;
    // It never ran, so it does not count against globex's requests.
    let globex_id = TenantId::parse("globex").unwrap();
    let requests_today = |usage: &tenantd_client::api::UsageView| {
        usage
            .counters
            .iter()
            .find(|c| c.metric == Metric::Requests && c.period == Some(Period::Day))
            .map(|c| c.value)
    };
    let usage = app.operator.usage(&globex_id).await.unwrap();
    assert_eq!(requests_today(&usage), Some(0), "{:?}", usage.counters);

    // The waiting read gives up after its budget, the write at its deadline.
    let (status, waited) = waiting_read.await.unwrap();
    assert_eq!(status, 503);
    assert!(waited >= Duration::from_secs(1), "{waited:?}");
    assert_eq!(
        stuck_write.await.unwrap(),
        ("deadline_exceeded".into(), "1".into())
    );
    blocker.execute("ROLLBACK").await.unwrap();

    // Everything was given back: both tenants are served again.
    until_metric(&app, "tenantd_seats_in_use", 0.0).await;
    // 201: the write cut off by its deadline never applied.
    assert_eq!(
        send(
            &app,
            Method::PUT,
            "/v1/collections/orders/records/r1",
            &acme
        )
        .await
        .0,
        201
    );
    assert_eq!(
        send(&app, Method::GET, "/v1/collections", &globex).await.0,
        200
    );
    let usage = app.operator.usage(&globex_id).await.unwrap();
    assert_eq!(requests_today(&usage), Some(1), "{:?}", usage.counters);
    for (reason, count) in [
        ("tenant_queue_full", 1.0),
        ("overloaded", 1.0),
        ("deadline_exceeded", 1.0),
    ] {
        let series = format!("tenantd_rejected_requests_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&app, &series).await, count, "{reason}");
    }
}

#[tokio::test]
async fn a_storage_quota_stops_writes_not_reads_and_usage_survives_a_restart() {
    let app = app_with_plans(vec![plan(json!({
        "id": "default",
        "quotas": [
            { "metric": "storage_bytes", "hard": 300 },
            { "metric": "requests", "period": "day", "hard": 1000 }
        ]
    }))])
    .await;
    let token = tenant_on(&app, "acme", "default", None).await;
    let acme = TenantId::parse("acme").unwrap();
    app.request(Method::POST, "/v1/collections")
        .bearer_auth(&token)
        .json(&json!({ "name": "docs" }))
        .send()
        .await
        .unwrap();
    let put = |id: &str| {
        app.request(Method::PUT, &format!("/v1/collections/docs/records/{id}"))
            .bearer_auth(&token)
            .json(&json!({ "text": "x".repeat(200) }))
            .send()
    };
    assert_eq!(put("a").await.unwrap().status(), 201);
    assert_eq!(put("b").await.unwrap().status(), 201);
    // Storage is measured behind the writes; once measured, writes stop.
    let level = |usage: &tenantd_client::api::UsageView| usage.quotas[0].used;
    for _ in 0..250 {
        if level(&app.operator.usage(&acme).await.unwrap()) > 300 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let response = put("c").await.unwrap();
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "quota_exceeded");
    assert_eq!(get(&app, &token).await.0, 200, "reads go on");

    // Metering is written behind: the hour's history and the ledger
    // survive a restart.
    let history = poll(|| async {
        app.operator
            .usage_history(&acme, Some(24))
            .await
            .unwrap()
            .hours
            .into_iter()
            .filter(|h| h.requests + h.rejected >= 5)
            .collect()
    })
    .await;
    assert_eq!(history[0].hour, START);
    // The collection, two writes and a read; the refused write is counted apart.
    assert_eq!((history[0].requests, history[0].rejected), (4, 1));
    assert!(history[0].ingress_bytes > 400, "{history:?}");
    assert!(history[0].egress_bytes > 0);
    assert!(history[0].seat_seconds > 0.0);
    let before = app.operator.usage(&acme).await.unwrap();
    let (dir, config, operator) = app.stop().await;
    let app = crate::helpers::restart_app(dir, config, operator).await;
    let after = app.operator.usage(&acme).await.unwrap();
    assert_eq!(before.counters, after.counters);
    let response = app
        .request(Method::PUT, "/v1/collections/docs/records/d")
        .bearer_auth(&token)
        .json(&json!({ "text": "y" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429, "still over the storage quota");
}

#[tokio::test]
async fn stored_records_and_bytes_are_exact_right_after_a_restart() {
    let app = spawn_app_with(|_| {}).await;
    let token = tenant_on(&app, "acme", "default", None).await;
    let acme = TenantId::parse("acme").unwrap();
    app.request(Method::POST, "/v1/collections")
        .bearer_auth(&token)
        .json(&json!({ "name": "docs" }))
        .send()
        .await
        .unwrap();
    for id in ["a", "b", "c"] {
        let response = app
            .request(Method::PUT, &format!("/v1/collections/docs/records/{id}"))
            .bearer_auth(&token)
            .json(&json!({ "text": "x".repeat(100) }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    // Stopped at once: the last writes are measured by the shutdown's
    // write-behind, which must write what it measured.
    let (dir, config, operator) = app.stop().await;
    let app = crate::helpers::restart_app(dir, config, operator).await;
    let usage = app.operator.usage(&acme).await.unwrap();
    let level = |metric: Metric| {
        usage
            .counters
            .iter()
            .find(|c| c.metric == metric && c.period.is_none())
            .map(|c| c.value)
    };
    assert_eq!(level(Metric::Records), Some(3), "{:?}", usage.counters);
    assert!(
        level(Metric::StorageBytes).unwrap_or(0) > 300,
        "{:?}",
        usage.counters
    );
}
