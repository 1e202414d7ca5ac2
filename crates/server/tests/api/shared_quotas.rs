//! Quotas shared by several nodes through Redis: nodes decide from their own
//! views and replay what they admitted, decide in Redis near the limit, and
//! so admit a hard limit nearly exactly however requests are spread.
//!
//! The three nodes here each have their own catalog (one node serves a
//! PostgreSQL catalog until background work is shared too), each with the
//! same tenant: what they share is exactly what is under test, the tenant's
//! counters in Redis.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tenantd_core::plan::{Metric, Period, Plan};
use tenantd_core::TenantId;
use tenantd_server::config::{FailMode, RedisConfig};
use tenantd_testkit::Redis;

use crate::helpers::{spawn_app_with, TestApp};

/// A plan whose only limit that matters is `hard` requests a day.
fn plan(hard: u64) -> Plan {
    serde_json::from_value(json!({
        "id": "default",
        "rate": { "requests": 100000, "per": "1s", "burst": 100000 },
        "quotas": [{ "metric": "requests", "period": "day", "hard": hard }],
    }))
    .unwrap()
}

/// Three nodes on one Redis, each with tenant `acme` and a key for it.
async fn three_nodes(redis: &Redis, hard: u64) -> Vec<(TestApp, String)> {
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let url = redis.url();
        let app = spawn_app_with(move |c| {
            c.plans = vec![plan(hard)];
            c.admission.redis = Some(RedisConfig::new(url, FailMode::FailOpen));
        })
        .await;
        app.create_tenant("acme").await;
        let key = app.tenant_key("acme", tenantd_core::Role::Developer).await;
        nodes.push((app, key.token));
    }
    nodes
}

/// `clients` clients, each sending `each` requests in turn to the nodes
/// (round robin): how many were admitted, and whether anything but an
/// admission or a quota refusal came back.
async fn drive(nodes: &[(TestApp, String)], clients: usize, each: usize) -> u64 {
    let admitted = Arc::new(AtomicU64::new(0));
    let targets: Arc<Vec<(String, String)>> = Arc::new(
        nodes
            .iter()
            .map(|(app, token)| (format!("{}/v1/collections", app.url), token.clone()))
            .collect(),
    );
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (targets, admitted, http) = (targets.clone(), admitted.clone(), http.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..each {
                let (url, token) = &targets[(client + i) % targets.len()];
                let response = http.get(url).bearer_auth(token).send().await.unwrap();
                match response.status() {
                    StatusCode::OK => {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                    StatusCode::TOO_MANY_REQUESTS => {
                        let body: serde_json::Value = response.json().await.unwrap();
                        assert_eq!(body["code"], "quota_exceeded", "{body}");
                    }
                    other => panic!("{other}: {}", response.text().await.unwrap()),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    admitted.load(Ordering::Relaxed)
}

/// The requests-per-day count a node's usage API reports.
async fn used_today(app: &TestApp) -> u64 {
    let usage = app.operator.usage(&TenantId::parse("acme").unwrap()).await;
    let usage = usage.unwrap();
    let quota = usage
        .quotas
        .iter()
        .find(|q| q.metric == Metric::Requests && q.period == Some(Period::Day));
    quota.unwrap().used
}

#[tokio::test]
async fn three_nodes_admit_a_shared_hard_limit_within_one_percent() {
    let redis = Redis::start();
    let nodes = three_nodes(&redis, 1_000).await;
    let admitted = drive(&nodes, 32, 50).await;
    assert!(
        (1_000..=1_010).contains(&admitted),
        "1,600 requests over 3 nodes against a hard limit of 1,000 admitted {admitted}"
    );
    // Once the replays have run, every node's usage says the same.
    let mut counts = Vec::new();
    for _ in 0..200 {
        counts.clear();
        for (app, _) in &nodes {
            counts.push(used_today(app).await);
        }
        if counts.iter().all(|&c| c == counts[0]) && counts[0] >= admitted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        counts.iter().all(|&c| c == counts[0]),
        "the nodes disagree on the tenant's usage: {counts:?}"
    );
    assert_eq!(counts[0], admitted, "usage counts what was admitted");
}

#[tokio::test]
async fn a_node_alone_far_from_the_limit_decides_locally() {
    let redis = Redis::start();
    let nodes = three_nodes(&redis, 1_000_000).await;
    let (app, token) = &nodes[0];
    let client = app.client(token);
    let page = tenantd_client::PageRequest::default();
    for _ in 0..50 {
        client.collections(&page).await.unwrap();
    }
    // The first decision goes to Redis (this node had no view yet); the
    // next are local, replayed in batches: Redis saw far fewer calls than
    // requests were admitted.
    let calls = redis_commands(&redis, "evalsha") + redis_commands(&redis, "eval");
    // The shared rate limiter makes one call per request of its own.
    let quota_calls = calls - 50;
    assert!(
        quota_calls < 25,
        "{quota_calls} quota script calls for 50 requests"
    );
    // The node counts its calls too: one decision made in Redis.
    let strict = "tenantd_shared_quota_calls_total{kind=\"strict\",outcome=\"ok\"}";
    assert_eq!(crate::helpers::metric(app, strict).await, 1.0);
    let mut seen = 0;
    for _ in 0..200 {
        seen = used_today(&nodes[1].0).await;
        let other = nodes[1].0.client(&nodes[1].1);
        // A request on another node learns the shared total.
        other.collections(&page).await.unwrap();
        if seen >= 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(seen >= 50, "another node saw {seen} of the 50 requests");
}

/// How many times Redis ran `command`, from `INFO commandstats`.
fn redis_commands(redis: &Redis, command: &str) -> u64 {
    let stats = redis.command(&["INFO", "commandstats"]);
    stats
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(&format!("cmdstat_{command}:calls="))?;
            rest.split(',').next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// Redis away: failing open, a node goes on deciding from its own view
/// (the hard limit still holds for what it sees); failing closed, requests
/// are answered 503 `limiter_unavailable`. Both answer at once and go back
/// to Redis when it is back.
#[tokio::test]
async fn without_redis_a_node_decides_alone_or_refuses_as_configured() {
    for mode in [FailMode::FailOpen, FailMode::FailClosed] {
        let mut redis = Redis::start();
        let url = redis.url();
        let app = spawn_app_with(move |c| {
            c.plans = vec![plan(5)];
            c.admission.redis = Some(RedisConfig::new(url, mode));
        })
        .await;
        app.create_tenant("acme").await;
        let token = app
            .tenant_key("acme", tenantd_core::Role::Developer)
            .await
            .token;
        let get = || async {
            let response = app
                .request(reqwest::Method::GET, "/v1/collections")
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            (status, body["code"].as_str().unwrap_or_default().to_owned())
        };
        for _ in 0..2 {
            assert_eq!(get().await.0, StatusCode::OK, "{mode:?}");
        }

        redis.stop();
        let mut answers = Vec::new();
        for _ in 0..6 {
            answers.push(get().await);
        }
        let ok = (StatusCode::OK, String::new());
        let over = (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded".to_owned());
        let closed = (
            StatusCode::SERVICE_UNAVAILABLE,
            "limiter_unavailable".to_owned(),
        );
        let expected = match mode {
            FailMode::FailOpen => {
                vec![ok.clone(), ok.clone(), ok, over.clone(), over.clone(), over]
            }
            FailMode::FailClosed => vec![closed; 6],
        };
        assert_eq!(answers, expected, "{mode:?}");

        redis.resume();
        let up = "tenantd_dependency_up{dependency=\"redis\"}";
        let mut healed = false;
        for _ in 0..100 {
            let _ = get().await;
            if crate::helpers::metric(&app, up).await == 1.0 {
                healed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            healed,
            "{mode:?}: Redis was not used again after it came back"
        );
    }
}

/// Redis losing its data (a restart without persistence, a flush) does not
/// give the tenant its quota back: the next call seeds the counter from the
/// node's view.
#[tokio::test]
async fn a_flushed_redis_is_seeded_from_the_nodes_views() {
    let redis = Redis::start();
    let nodes = three_nodes(&redis, 10).await;
    let (app, token) = &nodes[0];
    let client = app.client(token);
    let page = tenantd_client::PageRequest::default();
    for _ in 0..6 {
        client.collections(&page).await.unwrap();
    }
    assert_eq!(redis.command(&["FLUSHALL"]), "+OK");
    let mut admitted = 0;
    for _ in 0..10 {
        if client.collections(&page).await.is_ok() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 4, "6 were used before the flush, of 10");
    // Another node learns the seeded total: it admits nothing more.
    let (other, other_token) = &nodes[1];
    let refused = other.client(other_token).collections(&page).await;
    assert_eq!(refused.unwrap_err().code(), Some("quota_exceeded"));
}
