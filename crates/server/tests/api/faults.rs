//! Isolation under faults, against real parts: a tenant's slow bodies, its
//! hung database, PostgreSQL stopped, a full disk, Redis gone. A request
//! holds shared capacity only while it does work that needs it; a failing
//! dependency answers fast, shows in `/readyz`, and heals without a restart.

use std::process::Command;
use std::time::Duration;
use tenantd_server::config::NonZeroDuration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::{Connection, Executor, PgConnection};
use tenantd_client::api::CreateTenant;
use tenantd_core::{Clock, Isolation, Role, SystemClock, TenantId};
use tenantd_server::config::{Engine, FailMode, PoolConfig, RedisConfig};
use tenantd_testkit::{Postgres, Redis};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{metric, restart_app, spawn_app_with, until_metric, TestApp};

/// A tenant on `pool` with `isolation`, with a developer key and an
/// `orders` collection. Returns the key.
async fn tenant(app: &TestApp, id: &str, pool: &str, isolation: Isolation) -> String {
    app.operator
        .create_tenant(&CreateTenant {
            pool: Some(pool.parse().unwrap()),
            isolation: Some(isolation),
            ..CreateTenant::new(TenantId::parse(id).unwrap(), id)
        })
        .await
        .unwrap();
    let token = app.tenant_key(id, Role::Developer).await.token;
    let response = app
        .request(Method::POST, "/v1/collections")
        .bearer_auth(&token)
        .json(&json!({ "name": "orders" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    token
}

/// One write and one read of `token`'s tenant: their statuses and codes.
async fn write_and_read(app: &TestApp, token: &str, id: usize) -> Vec<(u16, String)> {
    let mut outcomes = Vec::new();
    for request in [
        app.request(
            Method::PUT,
            &format!("/v1/collections/orders/records/r{id}"),
        )
        .json(&json!({ "n": id })),
        app.request(Method::GET, "/v1/collections/orders/records"),
    ] {
        let response = request.bearer_auth(token).send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or_default();
        outcomes.push((status, body["code"].as_str().unwrap_or("").to_owned()));
    }
    outcomes
}

/// Waits until a write and a read of `token`'s tenant succeed again, for at
/// most ten seconds.
async fn until_served(app: &TestApp, token: &str, failure: &str) {
    for i in 0..100 {
        let outcomes = write_and_read(app, token, 10_000 + i).await;
        if outcomes.iter().all(|(status, _)| *status < 300) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{failure}");
}

/// Sends a request's head and `body` on a raw connection and leaves it open.
async fn send_head(app: &TestApp, head: &str, body: &[u8]) -> TcpStream {
    let mut socket = TcpStream::connect(app.addr).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(body).await.unwrap();
    socket
}

/// Reads the response's status line from a raw connection.
async fn status_line(socket: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 4096];
    let n = socket.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn slow_bodies_hold_no_seats_and_time_out_alone() {
    let app = spawn_app_with(|c| {
        c.body_read_timeout = NonZeroDuration::from_secs(3);
        c.admission.max_queue = 128;
    })
    .await;
    let slow = tenant(&app, "slow", "default", Isolation::Pooled).await;
    let other = tenant(&app, "other", "default", Isolation::Pooled).await;

    // 64 writes (two seats wide: 128 seats' worth, twice the capacity) send
    // their headers and 10 of 100,000 declared bytes, then stall.
    let mut stalled = Vec::new();
    for i in 0..64 {
        let head = format!(
            "PUT /v1/collections/orders/records/s{i} HTTP/1.1\r\nHost: t\r\n\
             Authorization: Bearer {slow}\r\nContent-Type: application/json\r\n\
             Content-Length: 100000\r\n\r\n"
        );
        stalled.push(send_head(&app, &head, b"{\"pad\": \"x").await);
    }
    // Every one of them passed the rate limit and quota (65 with the
    // collection's creation) and waits for its body, not for a seat.
    until_metric(
        &app,
        "tenantd_tenant_admitted_requests_total{tenant=\"slow\"}",
        65.0,
    )
    .await;
    assert_eq!(metric(&app, "tenantd_seats_in_use").await, 0.0);
    assert_eq!(metric(&app, "tenantd_queued_requests").await, 0.0);

    // Another tenant's writes and reads go through meanwhile.
    for i in 0..20 {
        for (status, code) in write_and_read(&app, &other, i).await {
            assert!(status < 300, "{status} {code}");
        }
    }

    // The stalled writes get 408 body_timeout; nothing of them was stored.
    for socket in &mut stalled {
        let line = status_line(socket).await;
        assert!(line.contains(" 408 "), "{line}");
    }
    let listed: Value = app
        .request(Method::GET, "/v1/collections/orders/records")
        .bearer_auth(&slow)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_refused_before_it_is_sent() {
    let app = spawn_app_with(|_| {}).await;
    let token = tenant(&app, "acme", "default", Isolation::Pooled).await;
    for path in [
        "/v1/collections/orders/records",
        "/v1/collections/orders/batch",
        "/v1/proxy/anything/x",
        "/v1/tenants",
    ] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n"
        );
        // Not a byte of the body is sent: the answer comes anyway.
        let mut socket = send_head(&app, &head, b"").await;
        let line = tokio::time::timeout(Duration::from_secs(5), status_line(&mut socket))
            .await
            .expect("an answer without the body");
        assert!(line.contains(" 413 "), "{path}: {line}");
    }
}

/// A server with the default SQLite pool and pool `pg` on a fresh database
/// of `server`, and a short acquire timeout.
async fn with_postgres(server: &Postgres) -> (TestApp, String) {
    let database = server.tenantd_database().await;
    let (app_url, owner_url) = (server.app_url(&database), server.owner_url(&database));
    let app = spawn_app_with(move |c| {
        c.acquire_timeout = NonZeroDuration::from_secs(1);
        c.pools.push(PoolConfig {
            name: "pg".parse().unwrap(),
            engine: Engine::Postgres,
            location: app_url,
            owner_location: Some(owner_url),
            region: None,
            models: vec![Isolation::Pooled, Isolation::Dedicated],
        });
    })
    .await;
    (app, database)
}

#[tokio::test]
async fn a_tenants_hung_database_fails_fast_for_it_alone() {
    let server = Postgres::shared();
    let (app, database) = with_postgres(server).await;
    let hung = tenant(&app, "hung", "pg", Isolation::Dedicated).await;
    let pooled = tenant(&app, "pooled", "pg", Isolation::Pooled).await;
    let local = tenant(&app, "local", "default", Isolation::Pooled).await;

    // Another session locks the hung tenant's table and keeps it.
    let mut locker = PgConnection::connect(&server.url("postgres", &format!("{database}_hung")))
        .await
        .unwrap();
    locker.execute("BEGIN").await.unwrap();
    locker
        .execute("LOCK TABLE tenantd.records IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    // 48 clients hammer the hung tenant...
    let load: Vec<_> = (0..48)
        .map(|i| {
            let (url, token) = (app.url.clone(), hung.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut answers = Vec::new();
                for j in 0..4 {
                    let started = SystemClock.instant();
                    let response = client
                        .put(format!("{url}/v1/collections/orders/records/h{i}-{j}"))
                        .bearer_auth(&token)
                        .json(&json!({ "n": j }))
                        .send()
                        .await
                        .unwrap();
                    let status = response.status().as_u16();
                    let body: Value = response.json().await.unwrap_or_default();
                    answers.push((
                        status,
                        body["code"].as_str().unwrap_or("").to_owned(),
                        (SystemClock.instant() - started),
                    ));
                }
                answers
            })
        })
        .collect();
    // ...while the others, on the same PostgreSQL and on SQLite, are served.
    // The hung tenant's requests wait for their places at its database, not
    // in seats: at most its two places' writes (two seats each) hold seats,
    // beside the one request of the others in flight.
    let mut most_seats = 0.0f64;
    for i in 0..15 {
        for token in [&pooled, &local] {
            for (status, code) in write_and_read(&app, token, i).await {
                assert!(status < 300, "{status} {code}");
            }
            most_seats = most_seats.max(metric(&app, "tenantd_seats_in_use").await);
        }
    }
    assert!(most_seats <= 4.0, "{most_seats} seats were in use");
    let mut store_unavailable = 0;
    for task in load {
        for (status, code, took) in task.await.unwrap() {
            // Refused within its queue wait (2 s) plus the acquire and lock
            // timeouts (1 s each), with room for a loaded machine; never at
            // the write deadline (15 s). Past its seat ceiling, a request may
            // also be shed from the tenant's own queue.
            assert_eq!(status, 503, "{code}");
            assert!(
                ["store_unavailable", "overloaded"].contains(&code.as_str()),
                "{code}"
            );
            assert!(took < Duration::from_secs(8), "{took:?}");
            store_unavailable += usize::from(code == "store_unavailable");
        }
    }
    assert!(store_unavailable > 0);

    // Unlocked, the tenant's database serves again without a restart.
    locker.execute("ROLLBACK").await.unwrap();
    until_served(
        &app,
        &hung,
        "the hung tenant's database did not serve again",
    )
    .await;
}

/// `/readyz`, which must answer within a second, and its body.
async fn readyz(app: &TestApp) -> (u16, Value) {
    let response = app
        .request(Method::GET, "/readyz")
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .expect("/readyz answers within a second");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn dependency_state<'v>(body: &'v Value, name: &str) -> &'v str {
    body["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .and_then(|d| d["state"].as_str())
        .unwrap_or_else(|| panic!("{name} is not in {body}"))
}

#[tokio::test]
async fn postgresql_stopped_answers_fast_and_heals_without_a_restart() {
    let server = Postgres::start();
    let (app, _) = with_postgres(&server).await;
    let token = tenant(&app, "acme", "pg", Isolation::Pooled).await;
    assert!(write_and_read(&app, &token, 0)
        .await
        .iter()
        .all(|(s, _)| *s < 300));
    let (status, body) = readyz(&app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(dependency_state(&body, "pool pg"), "ok");
    assert_eq!(dependency_state(&body, "catalog"), "ok");

    server.stop();
    for i in 1..20 {
        let started = SystemClock.instant();
        for (status, code) in write_and_read(&app, &token, i).await {
            assert_eq!((status, code.as_str()), (503, "store_unavailable"));
        }
        assert!(
            (SystemClock.instant() - started) < Duration::from_secs(6),
            "{:?}",
            (SystemClock.instant() - started)
        );
        let (status, body) = readyz(&app).await;
        if i > 5 {
            // Past a few failures the circuit is open and /readyz says so.
            assert_eq!(status, 503, "{body}");
            assert_eq!(dependency_state(&body, "pool pg"), "down");
            assert_eq!(body["status"], "unavailable");
        }
    }
    assert_eq!(
        metric(&app, "tenantd_dependency_up{dependency=\"pool pg\"}").await,
        0.0
    );

    server.resume();
    until_served(
        &app,
        &token,
        "writes did not succeed again after PostgreSQL restarted",
    )
    .await;
    let (status, body) = readyz(&app).await;
    assert_eq!(
        (status, dependency_state(&body, "pool pg")),
        (200, "ok"),
        "{body}"
    );
}

/// A small filesystem of its own (tmpfs), unmounted when dropped. Mounting
/// needs root, which the test suite runs as (scripts/test installs as root).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(bytes: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a {bytes}-byte tmpfs failed: this test fills a real disk and needs root"
        );
        Self { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_refuses_writes_and_recovers_when_room_is_made() {
    let disk = SmallDisk::mount(24 * 1024 * 1024);
    // Room to give back later.
    let filler = disk.dir.path().join("filler");
    std::fs::write(&filler, vec![0u8; 6 * 1024 * 1024]).unwrap();
    let data_dir = disk.dir.path().join("data");
    let app = spawn_app_with(|c| {
        c.data_dir = data_dir.clone();
        c.last_used_flush_interval = NonZeroDuration::from_secs(1);
    })
    .await;
    let token = tenant(&app, "acme", "default", Isolation::Pooled).await;

    // Write 100 KB records until the disk is full.
    let record = json!({ "pad": "x".repeat(100_000) });
    let mut acknowledged = Vec::new();
    let mut refused = None;
    for i in 0..400 {
        let response = app
            .request(Method::PUT, &format!("/v1/collections/orders/records/r{i}"))
            .bearer_auth(&token)
            .json(&record)
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            200 | 201 => acknowledged.push(i),
            status => {
                let body: Value = response.json().await.unwrap();
                refused = Some((status, body["code"].as_str().unwrap_or("").to_owned()));
                break;
            }
        }
    }
    assert_eq!(
        refused,
        Some((503, "store_unavailable".into())),
        "after {} writes",
        acknowledged.len()
    );
    assert!(acknowledged.len() > 10, "the disk filled too early");

    // Room again: writes, and the catalog's write-behind, succeed within 5 s.
    std::fs::remove_file(&filler).unwrap();
    let started = SystemClock.instant();
    let mut next = 1000;
    loop {
        let response = app
            .request(
                Method::PUT,
                &format!("/v1/collections/orders/records/r{next}"),
            )
            .bearer_auth(&token)
            .json(&json!({ "small": true }))
            .send()
            .await
            .unwrap();
        if response.status().is_success() {
            acknowledged.push(next);
            break;
        }
        next += 1;
        assert!(
            (SystemClock.instant() - started) < Duration::from_secs(5),
            "writes did not recover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        let (status, body) = readyz(&app).await;
        if status == 200 && dependency_state(&body, "catalog") == "ok" {
            break;
        }
        assert!(
            (SystemClock.instant() - started) < Duration::from_secs(5),
            "the catalog did not recover: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every acknowledged write is there after a restart.
    let (dir, config, operator) = app.stop().await;
    let app = restart_app(dir, config, operator).await;
    for i in &acknowledged {
        let response = app
            .request(Method::GET, &format!("/v1/collections/orders/records/r{i}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "record r{i}");
    }
    drop(app);
    drop(disk);
}

#[tokio::test]
async fn redis_gone_stops_being_called_and_comes_back() {
    let mut redis = Redis::start();
    let url = redis.url();
    let app = spawn_app_with(move |c| {
        c.admission.redis = Some(RedisConfig::new(url, FailMode::FailOpen));
    })
    .await;
    let token = tenant(&app, "acme", "default", Isolation::Pooled).await;
    let up = "tenantd_dependency_up{dependency=\"redis\"}";
    let errors = "tenantd_dependency_errors_total{dependency=\"redis\"}";
    assert_eq!(metric(&app, up).await, 1.0);

    redis.stop();
    // Failing open, every request is served; after the first few failures
    // the circuit opens, and Redis is tried only by one probe now and then.
    for _ in 0..60 {
        let response = app
            .request(Method::GET, "/v1/collections")
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(metric(&app, up).await, 0.0);
    let failed = metric(&app, errors).await;
    assert!(
        (1.0..=10.0).contains(&failed),
        "Redis was called {failed} times"
    );

    redis.resume();
    for _ in 0..100 {
        let _ = app
            .request(Method::GET, "/v1/collections")
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        if metric(&app, up).await == 1.0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the limiter did not go back to Redis after it restarted");
}
