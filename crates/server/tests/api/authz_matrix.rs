//! The authorization matrix, generated from the router's own route table:
//! every route is called by every kind of caller, each call asserts the exact
//! status and code, and every denied call leaves the control plane unchanged.
//! A route the matrix does not know fails the test.

use reqwest::Method;
use serde_json::{json, Value};
use tenantd_client::api::{CreateCollection, CreateKey, MoveTenant};
use tenantd_client::{KeysOf, PageRequest};
use tenantd_core::{CollectionName, Isolation, JobId, KeyId, Role, TenantId, TenantStatus};
use tenantd_server::{route_table, Access, RouteSpec};

use crate::gateway::service;
use crate::helpers::{spawn_app_with, TestApp, START};
use crate::upstream::Upstream;

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Caller {
    NoKey,
    MalformedKey,
    /// An acme admin key that was revoked.
    RevokedKey,
    /// An acme admin key past its expiry.
    ExpiredKey,
    /// The admin of a suspended tenant.
    SuspendedTenantKey,
    /// A key of acme, the tenant the tenant routes name.
    Acme(Role),
    /// A key of globex, another tenant.
    Globex(Role),
    Operator,
}

const CALLERS: [Caller; 12] = [
    Caller::NoKey,
    Caller::MalformedKey,
    Caller::RevokedKey,
    Caller::ExpiredKey,
    Caller::SuspendedTenantKey,
    Caller::Globex(Role::Admin),
    Caller::Globex(Role::Developer),
    Caller::Globex(Role::Reader),
    Caller::Acme(Role::Reader),
    Caller::Acme(Role::Developer),
    Caller::Acme(Role::Admin),
    Caller::Operator,
];

/// What a call must get: success, or exactly this status and code.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Allowed,
    Denied(u16, &'static str),
}

/// The rule the server must follow, written independently of its code.
fn expected(access: Access, caller: Caller) -> Expect {
    use Expect::{Allowed, Denied};
    if access == Access::Public {
        return Allowed;
    }
    match caller {
        Caller::NoKey => return Denied(401, "missing_api_key"),
        Caller::MalformedKey => return Denied(401, "malformed_api_key"),
        Caller::RevokedKey => return Denied(401, "key_revoked"),
        Caller::ExpiredKey => return Denied(401, "key_expired"),
        Caller::SuspendedTenantKey => return Denied(403, "tenant_suspended"),
        _ => {}
    }
    match (access, caller) {
        // Every tenant role may call the matrix's service; operators have no tenant.
        (Access::Proxy, Caller::Operator) => Denied(403, "forbidden"),
        (Access::Proxy, Caller::Acme(_) | Caller::Globex(_)) => Allowed,
        (Access::Data(_), Caller::Operator) => Denied(403, "forbidden"),
        (Access::Data(required), Caller::Acme(role) | Caller::Globex(role)) => {
            if role.satisfies_tenant(required) {
                Allowed
            } else {
                Denied(403, "forbidden")
            }
        }
        (Access::AnyKey, _) | (_, Caller::Operator) => Allowed,
        (Access::Operator | Access::OperatorOn, _) => Denied(403, "forbidden"),
        (Access::Tenant(_), Caller::Globex(_)) => Denied(404, "not_found"),
        (Access::Tenant(required), Caller::Acme(role)) if role.satisfies_tenant(required) => {
            Allowed
        }
        (Access::Tenant(_), Caller::Acme(_)) => Denied(403, "forbidden"),
        (access, caller) => panic!("no rule for {caller:?} on {access:?}"),
    }
}

/// A tenant and keys for every caller, on a fresh server.
struct World {
    app: TestApp,
    /// A finished move job of tenant hooli.
    job: JobId,
    tokens: Vec<(Caller, String)>,
    acme_key: KeyId,
    spare_operator_key: KeyId,
}

async fn key(
    app: &TestApp,
    tenant: &str,
    role: Role,
    expires_in: Option<time::Duration>,
) -> (KeyId, String) {
    let id = TenantId::parse(tenant).unwrap();
    let created = app
        .operator
        .create_key(
            KeysOf::Tenant(&id),
            &CreateKey {
                role,
                name: String::new(),
                expires_at: expires_in.map(|d| START + d),
            },
        )
        .await
        .unwrap();
    (created.key.id, created.token)
}

async fn world() -> World {
    let upstream = Upstream::start().await;
    let app = spawn_app_with(|config| {
        config.gateway.services = vec![service("echo", &[&upstream.url])];
    })
    .await;
    for t in ["acme", "globex", "initech", "umbrella"] {
        app.create_tenant(t).await;
    }
    let mut tokens = vec![(Caller::Operator, app.operator_token.clone())];
    for role in Role::TENANT_ROLES {
        tokens.push((Caller::Acme(role), key(&app, "acme", role, None).await.1));
        tokens.push((
            Caller::Globex(role),
            key(&app, "globex", role, None).await.1,
        ));
    }
    let (revoked, token) = key(&app, "acme", Role::Admin, None).await;
    app.operator
        .revoke_key(KeysOf::Tenant(&"acme".parse().unwrap()), &revoked)
        .await
        .unwrap();
    tokens.push((Caller::RevokedKey, token));
    let (_, token) = key(&app, "acme", Role::Admin, Some(time::Duration::seconds(1))).await;
    tokens.push((Caller::ExpiredKey, token));
    let (_, token) = key(&app, "initech", Role::Admin, None).await;
    app.operator
        .suspend_tenant(&"initech".parse().unwrap())
        .await
        .unwrap();
    tokens.push((Caller::SuspendedTenantKey, token));
    tokens.push((Caller::MalformedKey, "tk_not-a-key".to_owned()));
    app.clock.advance(time::Duration::seconds(2));

    let (acme_key, _) = key(&app, "acme", Role::Reader, None).await;
    let spare = app
        .operator
        .create_key(
            KeysOf::Platform,
            &CreateKey {
                role: Role::Operator,
                name: "spare".into(),
                expires_at: None,
            },
        )
        .await
        .unwrap();
    app.create_tenant("hooli").await;
    let hooli: TenantId = "hooli".parse().unwrap();
    let started = app
        .operator
        .move_tenant(
            &hooli,
            &MoveTenant {
                pool: None,
                isolation: Some(Isolation::Dedicated),
            },
        )
        .await
        .unwrap();
    crate::helpers::wait_for_job(&app, &started.id).await;
    let world = World {
        job: started.id,
        app,
        tokens,
        acme_key,
        spare_operator_key: spare.key.id,
    };
    reset_data(&world).await;
    // A first version of acme's policy, for the routes that name one.
    let applied: Value = world
        .app
        .request(Method::POST, "/v1/tenants/acme/policy/versions")
        .bearer_auth(&world.app.operator_token)
        .json(&json!({ "overrides": {}, "reason": "the matrix's first version" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(applied["version"], 1, "{applied}");
    // A plan for the route that writes a plan's next version.
    let created = world
        .app
        .request(Method::POST, "/v1/plans")
        .bearer_auth(&world.app.operator_token)
        .json(&json!({
            "plan": { "id": "spare", "rate": { "requests": 1, "per": "1s", "burst": 1 } },
            "reason": "the matrix's plan"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    world
}

/// A path naming acme's waiting policy proposal, made anew when the one
/// before was decided (see `waiting_proposal`).
const PROPOSAL: &str = "/v1/tenants/acme/policy/versions/{proposal}";

/// The version of acme's waiting proposal, proposing one if none waits.
async fn waiting_proposal(w: &World) -> i64 {
    let policy: Value = w
        .app
        .request(Method::GET, "/v1/tenants/acme/policy")
        .bearer_auth(&w.app.operator_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    if let Some(version) = policy["proposal"].as_i64() {
        return version;
    }
    // The default plan has no self-service range, so an admin's change waits.
    let proposed: Value = w
        .app
        .request(Method::POST, "/v1/tenants/acme/policy/versions")
        .bearer_auth(w.token(Caller::Acme(Role::Admin)))
        .json(&json!({ "overrides": { "rate_burst": 1500 }, "reason": "matrix" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(proposed["status"], "proposed", "{proposed}");
    proposed["version"].as_i64().unwrap()
}

/// The record every tenant of the world has in its `orders` collection.
const RECORD: &str = "/v1/collections/orders/records/r1";

/// Gives acme and globex each an `orders` collection holding one record
/// `r1`, and no other collection. Run before each allowed call on a data
/// route, so that every caller finds the same data.
async fn reset_data(w: &World) {
    for caller in [Caller::Acme(Role::Admin), Caller::Globex(Role::Admin)] {
        let client = w.app.client(w.token(caller));
        let orders: CollectionName = "orders".parse().unwrap();
        for name in ["orders", "scratch"] {
            let _ = client.delete_collection(&name.parse().unwrap()).await;
        }
        client
            .create_collection(&CreateCollection {
                name: orders.clone(),
                indexes: vec![],
            })
            .await
            .unwrap();
        client
            .put_record(&orders, &"r1".parse().unwrap(), &json!({ "x": 0 }), None)
            .await
            .unwrap();
    }
}

impl World {
    fn token(&self, caller: Caller) -> &str {
        self.tokens
            .iter()
            .find(|(c, _)| *c == caller)
            .map(|(_, t)| t.as_str())
            .unwrap()
    }
}

/// The concrete call for a route, the status it answers when allowed, and
/// what the world must look like before it.
struct Call {
    path: String,
    body: Option<Value>,
    ok: u16,
    umbrella_before: Option<TenantStatus>,
}

fn call(spec: &RouteSpec, w: &World) -> Call {
    let acme_key = format!("/v1/tenants/acme/keys/{}", w.acme_key);
    let platform_key = format!("/v1/platform/keys/{}", w.spare_operator_key);
    let plain = |path: &str, ok| Call {
        path: path.to_owned(),
        body: None,
        ok,
        umbrella_before: None,
    };
    let with_body = |path: &str, body: Value, ok| Call {
        path: path.to_owned(),
        body: Some(body),
        ok,
        umbrella_before: None,
    };
    let umbrella = |suffix: &str, before, ok| Call {
        path: format!("/v1/tenants/umbrella{suffix}"),
        body: None,
        ok,
        umbrella_before: Some(before),
    };
    let new_key = |role: &str| json!({ "role": role, "name": "matrix" });
    match (spec.method.as_str(), spec.path) {
        ("GET", "/healthz") => plain("/healthz", 200),
        ("GET", "/readyz") => plain("/readyz", 200),
        ("GET", "/openapi.json") => plain("/openapi.json", 200),
        ("GET", "/v1/me") => plain("/v1/me", 200),
        ("GET", "/metrics") => plain("/metrics", 200),
        ("GET", "/v1/tenants/{tenant}/usage") => plain("/v1/tenants/acme/usage", 200),
        ("GET", "/v1/tenants/{tenant}/usage/history") => {
            plain("/v1/tenants/acme/usage/history", 200)
        }
        ("GET", "/v1/tenants/{tenant}/usage/events") => plain("/v1/tenants/acme/usage/events", 200),
        ("POST", "/v1/tenants/{tenant}/addons") => with_body(
            "/v1/tenants/acme/addons",
            json!({
                "metric": "requests",
                "period": "day",
                "amount": 5,
                "expires_at": (START + time::Duration::days(30))
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap(),
            }),
            201,
        ),
        ("GET", "/v1/tenants/{tenant}/addons") => plain("/v1/tenants/acme/addons", 200),
        ("GET", "/v1/tenants/{tenant}/policy") => plain("/v1/tenants/acme/policy", 200),
        ("GET", "/v1/tenants/{tenant}/policy/versions") => {
            plain("/v1/tenants/acme/policy/versions", 200)
        }
        ("POST", "/v1/tenants/{tenant}/policy/versions") => with_body(
            "/v1/tenants/acme/policy/versions",
            json!({ "overrides": {}, "reason": "matrix" }),
            201,
        ),
        ("GET", "/v1/tenants/{tenant}/policy/versions/{version}") => {
            plain("/v1/tenants/acme/policy/versions/1", 200)
        }
        ("POST", "/v1/tenants/{tenant}/policy/versions/{version}/revert") => with_body(
            "/v1/tenants/acme/policy/versions/1/revert",
            json!({ "reason": "matrix" }),
            201,
        ),
        ("POST", "/v1/tenants/{tenant}/policy/versions/{version}/approve") => with_body(
            &format!("{PROPOSAL}/approve"),
            json!({ "reason": "matrix" }),
            200,
        ),
        ("POST", "/v1/tenants/{tenant}/policy/versions/{version}/reject") => with_body(
            &format!("{PROPOSAL}/reject"),
            json!({ "reason": "matrix" }),
            200,
        ),
        ("POST", "/v1/tenants/{tenant}/policy/versions/{version}/withdraw") => with_body(
            &format!("{PROPOSAL}/withdraw"),
            json!({ "reason": "matrix" }),
            200,
        ),
        ("POST", "/v1/tenants") => {
            with_body("/v1/tenants", json!({ "id": "matrix", "name": "M" }), 201)
        }
        ("GET", "/v1/tenants") => plain("/v1/tenants", 200),
        ("GET", "/v1/tenants/{tenant}") => umbrella("", TenantStatus::Active, 200),
        ("PATCH", "/v1/tenants/{tenant}") => Call {
            body: Some(json!({ "name": "Umbrella 2" })),
            ..umbrella("", TenantStatus::Active, 200)
        },
        ("DELETE", "/v1/tenants/{tenant}") => umbrella("", TenantStatus::Active, 200),
        ("POST", "/v1/tenants/{tenant}/suspend") => umbrella("/suspend", TenantStatus::Active, 200),
        ("POST", "/v1/tenants/{tenant}/resume") => {
            umbrella("/resume", TenantStatus::Suspended, 200)
        }
        ("POST", "/v1/tenants/{tenant}/restore") => {
            umbrella("/restore", TenantStatus::Deleted, 200)
        }
        ("POST", "/v1/tenants/{tenant}/purge") => umbrella("/purge", TenantStatus::Deleted, 204),
        ("POST", "/v1/tenants/{tenant}/keys") => {
            with_body("/v1/tenants/acme/keys", new_key("reader"), 201)
        }
        ("GET", "/v1/tenants/{tenant}/keys") => plain("/v1/tenants/acme/keys", 200),
        ("GET", "/v1/tenants/{tenant}/keys/{key_id}") => plain(&acme_key, 200),
        ("POST", "/v1/tenants/{tenant}/keys/{key_id}/rotate") => {
            with_body(&format!("{acme_key}/rotate"), json!({}), 201)
        }
        ("POST", "/v1/tenants/{tenant}/keys/{key_id}/revoke") => {
            plain(&format!("{acme_key}/revoke"), 200)
        }
        ("GET", "/v1/tenants/{tenant}/audit") => plain("/v1/tenants/acme/audit", 200),
        ("POST", "/v1/platform/keys") => with_body("/v1/platform/keys", new_key("operator"), 201),
        ("GET", "/v1/platform/keys") => plain("/v1/platform/keys", 200),
        ("GET", "/v1/platform/keys/{key_id}") => plain(&platform_key, 200),
        ("POST", "/v1/platform/keys/{key_id}/rotate") => {
            with_body(&format!("{platform_key}/rotate"), json!({}), 201)
        }
        ("POST", "/v1/platform/keys/{key_id}/revoke") => {
            plain(&format!("{platform_key}/revoke"), 200)
        }
        ("GET", "/v1/platform/audit") => plain("/v1/platform/audit", 200),
        ("GET", "/v1/proposals") => plain("/v1/proposals", 200),
        ("GET", "/v1/platform/audit/verify") => plain("/v1/platform/audit/verify", 200),
        ("GET", "/v1/tenants/{tenant}/audit/verify") => plain("/v1/tenants/acme/audit/verify", 200),
        ("POST", "/v1/tenants/{tenant}/move") => Call {
            body: Some(json!({ "isolation": "dedicated" })),
            ..umbrella("/move", TenantStatus::Active, 202)
        },
        ("GET", "/v1/jobs/{job_id}") => plain(&format!("/v1/jobs/{}", w.job.as_str()), 200),
        ("POST", "/v1/plans") => with_body(
            "/v1/plans",
            json!({
                "plan": { "id": "matrix", "rate": { "requests": 1, "per": "1s", "burst": 1 } },
                "reason": "matrix"
            }),
            201,
        ),
        ("GET", "/v1/plans") => plain("/v1/plans", 200),
        ("GET", "/v1/plans/{plan}") => plain("/v1/plans/default", 200),
        ("PUT", "/v1/plans/{plan}") => with_body(
            "/v1/plans/spare",
            json!({
                "plan": { "id": "spare", "rate": { "requests": 5, "per": "1s", "burst": 5 } },
                "reason": "matrix"
            }),
            200,
        ),
        ("GET", "/v1/plans/{plan}/versions") => plain("/v1/plans/default/versions", 200),
        ("POST", "/v1/collections") => {
            with_body("/v1/collections", json!({ "name": "scratch" }), 201)
        }
        ("GET", "/v1/collections") => plain("/v1/collections", 200),
        ("GET", "/v1/collections/{collection}") => plain("/v1/collections/orders", 200),
        ("DELETE", "/v1/collections/{collection}") => plain("/v1/collections/orders", 204),
        ("POST", "/v1/collections/{collection}/records") => {
            with_body("/v1/collections/orders/records", json!({ "x": 1 }), 201)
        }
        ("GET", "/v1/collections/{collection}/records") => {
            plain("/v1/collections/orders/records", 200)
        }
        ("POST", "/v1/collections/{collection}/batch") => with_body(
            "/v1/collections/orders/batch",
            json!({ "operations": [{ "op": "put", "id": "r2", "data": {} }] }),
            200,
        ),
        ("GET", "/v1/collections/{collection}/records/{id}") => plain(RECORD, 200),
        ("PUT", "/v1/collections/{collection}/records/{id}") => {
            with_body(RECORD, json!({ "x": 2 }), 200)
        }
        ("PATCH", "/v1/collections/{collection}/records/{id}") => {
            with_body(RECORD, json!({ "x": 3 }), 200)
        }
        ("DELETE", "/v1/collections/{collection}/records/{id}") => plain(RECORD, 204),
        ("GET", "/.well-known/jwks.json") => plain("/.well-known/jwks.json", 200),
        ("GET", "/v1/platform/signing-keys") => plain("/v1/platform/signing-keys", 200),
        ("POST", "/v1/platform/signing-keys/rotate") => {
            plain("/v1/platform/signing-keys/rotate", 201)
        }
        ("DELETE", "/v1/tenants/{tenant}/proxy-cache/{service}") => {
            plain("/v1/tenants/acme/proxy-cache/echo", 204)
        }
        ("GET", "/v1/jobs") => plain("/v1/jobs", 200),
        ("GET", "/v1/cluster") => plain("/v1/cluster", 200),
        (_, "/v1/proxy/{service}") => plain("/v1/proxy/echo", 200),
        (_, "/v1/proxy/{service}/{*path}") => plain("/v1/proxy/echo/any/path", 200),
        (method, path) => {
            panic!("route {method} {path} is not covered by the authorization matrix")
        }
    }
}

/// Everything the control plane holds, as the operator sees it, minus the
/// last-used times that every authenticated call moves.
async fn snapshot(w: &World) -> Value {
    let app = &w.app;
    let all = PageRequest {
        cursor: None,
        limit: Some(200),
    };
    let tenants = app.operator.list_tenants(&all, None).await.unwrap();
    let mut out = json!({
        "tenants": tenants,
        "platform_keys": app.operator.list_keys(KeysOf::Platform, &all).await.unwrap(),
        "platform_audit": app.operator.audit(KeysOf::Platform, &all).await.unwrap(),
    });
    // Both tenants' data, as their admins see it.
    for caller in [Caller::Acme(Role::Admin), Caller::Globex(Role::Admin)] {
        let client = w.app.client(w.token(caller));
        let collections = client.collections(&all).await.unwrap();
        for c in &collections.items {
            let records = client
                .list_records(&c.name, &Default::default())
                .await
                .unwrap();
            out[format!("records:{caller:?}:{}", c.name)] = json!(records);
        }
        out[format!("collections:{caller:?}")] = json!(collections);
    }
    for t in &tenants.items {
        out[format!("keys:{}", t.id)] = json!(app
            .operator
            .list_keys(KeysOf::Tenant(&t.id), &all)
            .await
            .unwrap());
        out[format!("audit:{}", t.id)] = json!(app
            .operator
            .audit(KeysOf::Tenant(&t.id), &all)
            .await
            .unwrap());
    }
    strip_last_used(&mut out);
    out
}

fn strip_last_used(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("last_used_at");
            map.values_mut().for_each(strip_last_used);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_last_used),
        _ => {}
    }
}

async fn prepare(w: &World, before: Option<TenantStatus>) {
    let umbrella: TenantId = "umbrella".parse().unwrap();
    match before {
        None | Some(TenantStatus::Active) => {}
        Some(TenantStatus::Suspended) => {
            w.app.operator.suspend_tenant(&umbrella).await.unwrap();
        }
        Some(TenantStatus::Deleted) => {
            w.app.operator.delete_tenant(&umbrella).await.unwrap();
        }
    }
}

#[tokio::test]
async fn every_route_answers_every_caller_exactly_and_denials_change_nothing() {
    let routes = route_table();
    assert!(
        routes.len() >= 36,
        "the table lost routes: {}",
        routes.len()
    );
    let mut checked = 0;
    for spec in &routes {
        let w = world().await;
        let call = call(spec, &w);
        prepare(&w, call.umbrella_before).await;
        let method = Method::from_bytes(spec.method.as_str().as_bytes()).unwrap();

        // Denials first, so that each one is checked against an untouched world.
        let mut order: Vec<Caller> = CALLERS.to_vec();
        order.sort_by_key(|c| expected(spec.access, *c) == Expect::Allowed);
        let mut allowed_seen = 0;
        for caller in order {
            let token = w
                .tokens
                .iter()
                .find(|(c, _)| *c == caller)
                .map(|(_, t)| t.clone());
            let path = if call.path.contains("{proposal}") {
                let version = waiting_proposal(&w).await;
                call.path.replace("{proposal}", &version.to_string())
            } else {
                call.path.clone()
            };
            let mut request = w.app.request(method.clone(), &path);
            if let (Some(token), false) = (token, caller == Caller::NoKey) {
                request = request.bearer_auth(token);
            }
            if let Some(body) = &call.body {
                request = request.json(body);
            }
            let expect = expected(spec.access, caller);
            if expect == Expect::Allowed && matches!(spec.access, Access::Data(_)) {
                reset_data(&w).await;
            }
            let before = match expect {
                Expect::Denied(..) => Some(snapshot(&w).await),
                Expect::Allowed => None,
            };
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            let context = format!(
                "{} {} by {caller:?}: {status} {text:.300}",
                spec.method, path
            );
            match expect {
                Expect::Allowed => {
                    allowed_seen += 1;
                    assert_eq!(status, call.ok, "{context}");
                }
                Expect::Denied(want_status, want_code) => {
                    if spec.method == Method::HEAD {
                        // A HEAD answer has no body to carry the problem's code.
                        assert_eq!(status, want_status, "{context}");
                    } else {
                        let problem: Value = serde_json::from_str(&text).expect(&context);
                        assert_eq!(
                            (status, problem["code"].as_str()),
                            (want_status, Some(want_code)),
                            "{context}"
                        );
                    }
                    assert_eq!(
                        snapshot(&w).await,
                        before.unwrap(),
                        "a denied call changed state: {context}"
                    );
                }
            }
            checked += 1;
        }
        assert!(
            allowed_seen > 0,
            "{} {} has no allowed control",
            spec.method,
            spec.path
        );
    }
    assert_eq!(checked, routes.len() * CALLERS.len());
}
