//! Tenant policies over HTTP: self-service within the plan's ranges,
//! proposals outside them decided by operators, withdrawal, revert, history,
//! and each applied version taking effect at the next request with usage kept.

use reqwest::Method;
use serde_json::{json, Value};
use tenantd_core::plan::Plan;
use tenantd_core::Role;

use crate::helpers::{spawn_app_with, TestApp};

/// A plan allowing 3 requests a day, which tenant admins may set from 1 to 10.
fn plan() -> Plan {
    serde_json::from_value(json!({
        "id": "default",
        "rate": { "requests": 1000, "per": "1s", "burst": 1000 },
        "quotas": [{ "metric": "requests", "period": "day", "hard": 3 }],
        "self_service": {
            "quotas": [{ "metric": "requests", "period": "day", "min": 1, "max": 10 }]
        }
    }))
    .unwrap()
}

struct World {
    app: TestApp,
    admin: String,
    reader: String,
}

async fn world() -> World {
    let app = spawn_app_with(|config| config.plans = vec![plan()]).await;
    app.create_tenant("acme").await;
    app.create_tenant("globex").await;
    let admin = app.tenant_key("acme", Role::Admin).await.token;
    let reader = app.tenant_key("acme", Role::Reader).await.token;
    World { app, admin, reader }
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = app.request(method, path).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

fn daily(hard: u64, reason: &str) -> Value {
    json!({
        "overrides": { "quotas": [{ "metric": "requests", "period": "day", "hard": hard }] },
        "reason": reason
    })
}

const VERSIONS: &str = "/v1/tenants/acme/policy/versions";

/// Requests admitted out of `n` reads by `token`.
async fn admitted(app: &TestApp, token: &str, n: usize) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        if call(app, Method::GET, "/v1/collections", token, None)
            .await
            .0
            == 200
        {
            ok += 1;
        }
    }
    ok
}

#[tokio::test]
async fn a_change_within_the_range_applies_at_once_and_keeps_usage() {
    let w = world().await;
    assert_eq!(admitted(&w.app, &w.reader, 4).await, 3);
    let response = w
        .app
        .request(Method::POST, VERSIONS)
        .bearer_auth(&w.admin)
        .header("x-request-id", "launch-week-1")
        .json(&daily(5, "launch week"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let version: Value = response.json().await.unwrap();
    assert_eq!(version["status"], "applied");
    assert_eq!(version["current"], true);
    assert_eq!(
        version["diff"],
        json!([{ "setting": "quotas.requests-day.hard", "from": 3, "to": 5 }])
    );
    assert_eq!(version["actor_role"], "admin");
    // The next request sees the new limit; the three already used still count.
    assert_eq!(admitted(&w.app, &w.reader, 4).await, 2);

    let (_, policy) = call(
        &w.app,
        Method::GET,
        "/v1/tenants/acme/policy",
        &w.reader,
        None,
    )
    .await;
    assert_eq!(policy["version"], 1);
    assert_eq!(policy["effective"]["quotas"][0]["hard"], 5);
    assert_eq!(policy["proposal"], Value::Null);
    // The change is in the tenant's audit trail.
    let (_, audit) = call(
        &w.app,
        Method::GET,
        "/v1/tenants/acme/audit",
        &w.admin,
        None,
    )
    .await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"policy.apply"), "{actions:?}");
    let entry = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "policy.apply")
        .unwrap();
    assert_eq!(entry["request_id"], "launch-week-1", "the request is named");
    assert_eq!(entry["target"], "acme/policy/1");
    assert_eq!(entry["details"]["version"], 1);
    let (before, after) = (&entry["before_digest"], &entry["after_digest"]);
    assert!(before.as_str().is_some_and(|d| d.len() == 64), "{entry}");
    assert_ne!(before, after, "the effective plan changed");

    // A change's after-digest is the digest of the object as read after it.
    let response = w
        .app
        .request(Method::PATCH, "/v1/tenants/acme")
        .bearer_auth(&w.app.operator_token)
        .json(&json!({ "name": "Acme Inc" }))
        .send()
        .await
        .unwrap();
    let body = response.bytes().await.unwrap();
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(&body));
    let (_, audit) = call(
        &w.app,
        Method::GET,
        "/v1/tenants/acme/audit",
        &w.admin,
        None,
    )
    .await;
    let update = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "tenant.update")
        .unwrap();
    assert_eq!(update["after_digest"], digest.as_str());
}

#[tokio::test]
async fn a_change_outside_the_range_waits_for_an_operator() {
    let w = world().await;
    let operator = w.app.operator_token.clone();
    let (status, proposal) = call(
        &w.app,
        Method::POST,
        VERSIONS,
        &w.admin,
        Some(daily(50, "big import")),
    )
    .await;
    assert_eq!(status, 202, "{proposal}");
    assert_eq!(proposal["status"], "proposed");
    assert_eq!(proposal["current"], false);
    assert_eq!(
        proposal["outside_self_service"],
        json!(["quotas.requests-day.hard 50 is outside the self-service range 1..=10"])
    );
    assert_eq!(admitted(&w.app, &w.reader, 4).await, 3, "not in effect yet");

    // Only one proposal waits; the tenant cannot decide its own.
    let (status, body) = call(
        &w.app,
        Method::POST,
        VERSIONS,
        &w.admin,
        Some(daily(40, "again")),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("invalid_transition"))
    );
    let decision = json!({ "reason": "checked the import" });
    let approve = format!("{VERSIONS}/1/approve");
    let (status, body) = call(
        &w.app,
        Method::POST,
        &approve,
        &w.admin,
        Some(decision.clone()),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));

    let reject = format!("{VERSIONS}/1/reject");
    let (status, rejected) = call(
        &w.app,
        Method::POST,
        &reject,
        &operator,
        Some(json!({ "reason": "too much for this plan" })),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(rejected["status"], "rejected");
    assert_eq!(rejected["decision_reason"], "too much for this plan");
    let (status, _) = call(
        &w.app,
        Method::POST,
        &approve,
        &operator,
        Some(decision.clone()),
    )
    .await;
    assert_eq!(status, 409, "a rejected proposal cannot be approved");

    let (status, _) = call(
        &w.app,
        Method::POST,
        VERSIONS,
        &w.admin,
        Some(daily(50, "asked again")),
    )
    .await;
    assert_eq!(status, 202);
    let (status, approved) = call(
        &w.app,
        Method::POST,
        &format!("{VERSIONS}/2/approve"),
        &operator,
        Some(decision),
    )
    .await;
    assert_eq!(status, 200, "{approved}");
    assert_eq!(
        (approved["status"].as_str(), approved["current"].as_bool()),
        (Some("approved"), Some(true))
    );
    assert_eq!(
        admitted(&w.app, &w.reader, 10).await,
        10,
        "in effect at once"
    );
}

/// The tenant and version of each item of a page of policy versions, and
/// the page's cursor.
fn page_items(page: &Value) -> (Vec<(String, i64)>, Option<String>) {
    let items = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["tenant"].as_str().unwrap().to_owned(),
                v["version"].as_i64().unwrap(),
            )
        })
        .collect();
    (items, page["next_cursor"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn operators_find_every_waiting_proposal_oldest_first() {
    let w = world().await;
    let operator = w.app.operator_token.clone();
    w.app.create_tenant("initech").await;
    let admin_of = |tenant: &'static str| {
        let app = &w.app;
        async move { app.tenant_key(tenant, Role::Admin).await.token }
    };
    let propose = |tenant: &'static str, token: String, hard: u64| {
        let app = &w.app;
        async move {
            let path = format!("/v1/tenants/{tenant}/policy/versions");
            call(app, Method::POST, &path, &token, Some(daily(hard, "more"))).await
        }
    };
    // acme's change within the range applies at once and waits for nobody.
    assert_eq!(propose("acme", w.admin.clone(), 5).await.0, 201);
    // initech asks first; globex and acme a second later, at the same instant.
    assert_eq!(
        propose("initech", admin_of("initech").await, 50).await.0,
        202
    );
    w.app.clock.advance(time::Duration::seconds(1));
    assert_eq!(propose("globex", admin_of("globex").await, 60).await.0, 202);
    assert_eq!(propose("acme", w.admin.clone(), 70).await.0, 202);

    let (status, first) = call(
        &w.app,
        Method::GET,
        "/v1/proposals?limit=2",
        &operator,
        None,
    )
    .await;
    assert_eq!(status, 200, "{first}");
    let (items, cursor) = page_items(&first);
    // Oldest first; the same instant in tenant order, across the page's end.
    assert_eq!(items, [("initech".to_owned(), 1), ("acme".to_owned(), 2)]);
    assert_eq!(
        first["items"][1]["diff"],
        json!([{ "setting": "quotas.requests-day.hard", "from": 5, "to": 70 }])
    );
    let next = format!("/v1/proposals?limit=2&cursor={}", cursor.unwrap());
    let (_, second) = call(&w.app, Method::GET, &next, &operator, None).await;
    assert_eq!(page_items(&second), (vec![("globex".to_owned(), 1)], None));

    // A decided proposal leaves the queue; tenant admins have no queue.
    let approve = "/v1/tenants/acme/policy/versions/2/approve";
    let decision = json!({ "reason": "fine" });
    assert_eq!(
        call(&w.app, Method::POST, approve, &operator, Some(decision))
            .await
            .0,
        200
    );
    let (_, after) = call(&w.app, Method::GET, "/v1/proposals", &operator, None).await;
    assert_eq!(
        page_items(&after),
        (
            vec![("initech".to_owned(), 1), ("globex".to_owned(), 1)],
            None
        )
    );
    let (status, body) = call(&w.app, Method::GET, "/v1/proposals", &w.admin, None).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    let (status, body) = call(
        &w.app,
        Method::GET,
        "/v1/proposals?cursor=bm9wZQ",
        &operator,
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_parameter"))
    );
}

#[tokio::test]
async fn a_proposal_can_be_withdrawn_and_a_revert_is_a_new_version() {
    let w = world().await;
    let operator = w.app.operator_token.clone();
    let reason = json!({ "reason": "changed my mind" });
    call(
        &w.app,
        Method::POST,
        VERSIONS,
        &w.admin,
        Some(daily(50, "maybe")),
    )
    .await;
    let (status, withdrawn) = call(
        &w.app,
        Method::POST,
        &format!("{VERSIONS}/1/withdraw"),
        &w.admin,
        Some(reason.clone()),
    )
    .await;
    assert_eq!(
        (status, withdrawn["status"].as_str()),
        (200, Some("withdrawn"))
    );

    // An operator may set anything; then the admin changes it within range.
    let (status, _) = call(
        &w.app,
        Method::POST,
        VERSIONS,
        &operator,
        Some(daily(100, "partner deal")),
    )
    .await;
    assert_eq!(status, 201, "operators apply at once");
    let (status, _) = call(
        &w.app,
        Method::POST,
        VERSIONS,
        &w.admin,
        Some(daily(8, "tidy up")),
    )
    .await;
    assert_eq!(status, 201);

    // Back to version 2: outside the admin's range, so it waits; an
    // operator's revert applies at once and marks version 3 reverted.
    let revert = format!("{VERSIONS}/2/revert");
    let (status, proposed) = call(
        &w.app,
        Method::POST,
        &revert,
        &w.admin,
        Some(reason.clone()),
    )
    .await;
    assert_eq!((status, proposed["reverts_to"].as_i64()), (202, Some(2)));
    call(
        &w.app,
        Method::POST,
        &format!("{VERSIONS}/4/withdraw"),
        &w.admin,
        Some(reason.clone()),
    )
    .await;
    let (status, reverted) = call(
        &w.app,
        Method::POST,
        &revert,
        &operator,
        Some(reason.clone()),
    )
    .await;
    assert_eq!(status, 201, "{reverted}");
    assert_eq!(reverted["version"], 5);
    assert_eq!(
        reverted["diff"],
        json!([{ "setting": "quotas.requests-day.hard", "from": 8, "to": 100 }])
    );
    let (_, page) = call(&w.app, Method::GET, VERSIONS, &w.reader, None).await;
    let statuses: Vec<(i64, &str)> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_i64().unwrap(),
                v["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            (5, "applied"),
            (4, "withdrawn"),
            (3, "reverted"),
            (2, "applied"),
            (1, "withdrawn")
        ]
    );
    // A version never in effect cannot be reverted to.
    let (status, _) = call(
        &w.app,
        Method::POST,
        &format!("{VERSIONS}/1/revert"),
        &operator,
        Some(reason),
    )
    .await;
    assert_eq!(status, 409);

    // The policy in effect survives a restart.
    let (dir, config, token) = w.app.stop().await;
    let app = crate::helpers::restart_app(dir, config, token).await;
    assert_eq!(admitted(&app, &w.reader, 100).await, 100);
}

#[tokio::test]
async fn bad_changes_are_refused_and_readers_cannot_change_anything() {
    let w = world().await;
    let bad = [
        json!({ "overrides": { "quotas": [{ "metric": "requests", "period": "day", "soft": 9, "hard": 5 }] }, "reason": "x" }),
        json!({ "overrides": { "rate_burst": 0 }, "reason": "x" }),
        json!({ "overrides": { "weight": 9 }, "reason": "x" }),
        json!({ "overrides": {}, "reason": "" }),
        json!({ "overrides": {}, "reason": "line one\nforged line" }),
    ];
    for body in bad {
        let (status, problem) =
            call(&w.app, Method::POST, VERSIONS, &w.admin, Some(body.clone())).await;
        assert_eq!(status, 422, "{body}: {problem}");
        assert_eq!(problem["code"], "invalid_body");
    }
    let (status, _) = call(
        &w.app,
        Method::POST,
        VERSIONS,
        &w.reader,
        Some(daily(5, "x")),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(
        &w.app,
        Method::GET,
        &format!("{VERSIONS}/99"),
        &w.reader,
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &w.app,
        Method::GET,
        &format!("{VERSIONS}/x"),
        &w.reader,
        None,
    )
    .await;
    assert_eq!(status, 400);
    // Another tenant's policy does not exist for acme's admin.
    let (status, _) = call(
        &w.app,
        Method::POST,
        "/v1/tenants/globex/policy/versions",
        &w.admin,
        Some(daily(5, "x")),
    )
    .await;
    assert_eq!(status, 404);
}

/// A plan body as `POST /v1/plans` and `PUT /v1/plans/{plan}` take it.
fn plan_body(id: &str, daily: u64, replaces: Option<i64>) -> Value {
    json!({
        "plan": {
            "id": id,
            "rate": { "requests": 1000, "per": "1s", "burst": 1000 },
            "quotas": [{ "metric": "requests", "period": "day", "hard": daily }]
        },
        "reason": "pricing",
        "replaces": replaces
    })
}

#[tokio::test]
async fn plans_are_versioned_and_tenants_follow_the_latest_unless_pinned() {
    let w = world().await;
    let op = w.app.operator_token.clone();
    let (status, created) = call(
        &w.app,
        Method::POST,
        "/v1/plans",
        &op,
        Some(plan_body("team", 2, None)),
    )
    .await;
    assert_eq!(
        (status, created["version"].as_i64()),
        (201, Some(1)),
        "{created}"
    );
    let (status, again) = call(
        &w.app,
        Method::POST,
        "/v1/plans",
        &op,
        Some(plan_body("team", 2, None)),
    )
    .await;
    assert_eq!((status, again["code"].as_str()), (409, Some("plan_exists")));

    // acme follows team; globex is pinned to version 1.
    let follow = json!({ "plan": "team" });
    assert_eq!(
        call(&w.app, Method::PATCH, "/v1/tenants/acme", &op, Some(follow))
            .await
            .0,
        200
    );
    let pin = json!({ "plan": "team", "plan_version": 1 });
    assert_eq!(
        call(&w.app, Method::PATCH, "/v1/tenants/globex", &op, Some(pin))
            .await
            .0,
        200
    );
    let globex = w.app.tenant_key("globex", Role::Reader).await.token;
    assert_eq!(admitted(&w.app, &w.reader, 3).await, 2);

    let (status, v2) = call(
        &w.app,
        Method::PUT,
        "/v1/plans/team",
        &op,
        Some(plan_body("team", 4, Some(1))),
    )
    .await;
    assert_eq!(status, 200, "{v2}");
    assert_eq!(v2["version"], 2);
    assert_eq!(
        v2["diff"],
        json!([{ "setting": "quotas.requests-day.hard", "from": 2, "to": 4 }])
    );
    // An edit based on a stale version is refused, not applied over this one.
    let (status, stale) = call(
        &w.app,
        Method::PUT,
        "/v1/plans/team",
        &op,
        Some(plan_body("team", 9, Some(1))),
    )
    .await;
    assert_eq!(
        (status, stale["code"].as_str()),
        (409, Some("invalid_transition"))
    );

    // acme got version 2 at its next request, usage kept; globex keeps 1.
    assert_eq!(admitted(&w.app, &w.reader, 3).await, 2);
    assert_eq!(admitted(&w.app, &globex, 3).await, 2);
    let unpin = json!({ "plan_version": null });
    assert_eq!(
        call(
            &w.app,
            Method::PATCH,
            "/v1/tenants/globex",
            &op,
            Some(unpin)
        )
        .await
        .0,
        200
    );
    assert_eq!(
        admitted(&w.app, &globex, 3).await,
        2,
        "now on version 2: 4 a day"
    );

    let (_, versions) = call(&w.app, Method::GET, "/v1/plans/team/versions", &op, None).await;
    let numbers: Vec<i64> = versions["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [2, 1]);
    let bad_pin = json!({ "plan_version": 7 });
    let (status, _) = call(
        &w.app,
        Method::PATCH,
        "/v1/tenants/acme",
        &op,
        Some(bad_pin),
    )
    .await;
    assert_eq!(status, 422);
    let (status, _) = call(&w.app, Method::GET, "/v1/plans/gold", &op, None).await;
    assert_eq!(status, 404);
    let mismatched = plan_body("other", 4, None);
    let (status, _) = call(&w.app, Method::PUT, "/v1/plans/team", &op, Some(mismatched)).await;
    assert_eq!(status, 422);
    let invalid = json!({ "plan": { "id": "x", "rate": { "requests": 0, "per": "1s", "burst": 1 } }, "reason": "r" });
    let (status, _) = call(&w.app, Method::POST, "/v1/plans", &op, Some(invalid)).await;
    assert_eq!(status, 422);

    // Plans and their versions survive a restart; the configured default is
    // seeded once and not duplicated.
    let (dir, config, token) = w.app.stop().await;
    let app = crate::helpers::restart_app(dir, config, token).await;
    let (_, list) = call(&app, Method::GET, "/v1/plans", &op, None).await;
    let ids: Vec<(&str, i64)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["version"].as_i64().unwrap()))
        .collect();
    assert_eq!(ids, [("default", 1), ("team", 2)]);
    assert_eq!(admitted(&app, &globex, 1).await, 0, "usage and plan kept");
}

#[tokio::test]
async fn a_plan_sets_its_tenants_body_limit_and_default_placement() {
    let w = world().await;
    let op = w.app.operator_token.clone();
    let small = json!({
        "plan": {
            "id": "small",
            "rate": { "requests": 1000, "per": "1s", "burst": 1000 },
            "max_body_bytes": 100,
            "isolation": "dedicated"
        },
        "reason": "tiny tier"
    });
    assert_eq!(
        call(&w.app, Method::POST, "/v1/plans", &op, Some(small))
            .await
            .0,
        201
    );
    let tenant = json!({ "id": "tiny", "name": "Tiny", "plan": "small" });
    let (status, created) = call(&w.app, Method::POST, "/v1/tenants", &op, Some(tenant)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        created["isolation"], "dedicated",
        "the plan's default model"
    );
    let dev = w.app.tenant_key("tiny", Role::Developer).await.token;
    let collection = json!({ "name": "docs" });
    assert_eq!(
        call(
            &w.app,
            Method::POST,
            "/v1/collections",
            &dev,
            Some(collection)
        )
        .await
        .0,
        201
    );
    let small_record = json!({ "x": 1 });
    let (status, _) = call(
        &w.app,
        Method::PUT,
        "/v1/collections/docs/records/a",
        &dev,
        Some(small_record),
    )
    .await;
    assert_eq!(status, 201);
    let big = json!({ "x": "y".repeat(200) });
    let (status, problem) = call(
        &w.app,
        Method::PUT,
        "/v1/collections/docs/records/b",
        &dev,
        Some(big.clone()),
    )
    .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (413, Some("payload_too_large"))
    );

    // Without a Content-Length, the body is cut at the limit as it streams.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = big.to_string();
    let mut stream = tokio::net::TcpStream::connect(w.app.addr).await.unwrap();
    let request = format!(
        "PUT /v1/collections/docs/records/c HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {dev}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         {:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    // Other tenants keep the server's own limit.
    let (status, _) = call(
        &w.app,
        Method::PUT,
        "/v1/collections/docs/records/b",
        &w.admin,
        Some(big),
    )
    .await;
    assert_ne!(status, 413);
}
