//! The gateway against real upstream servers on loopback: what the upstream
//! receives (the signed tenant context, never the caller's credentials),
//! per-tenant circuits and bulkheads, timeouts, retries, refusals, the
//! service's own seats, and the tenant-keyed cache.

use std::time::Duration;
use tenantd_server::config::NonZeroDuration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::Method;
use serde_json::{json, Value};
use tenantd_core::Role;
use tenantd_server::config::{Config, ServiceConfig};
use tokio::net::TcpListener;

use crate::helpers::{spawn_app_at, until, TestApp};
use crate::upstream::Upstream;

/// A service named `name` in front of `upstreams`, with the defaults a
/// config file gets.
pub fn service(name: &str, upstreams: &[&str]) -> ServiceConfig {
    let toml = format!(
        "name = {name:?}\nupstreams = [{}]\npath_prefix = \"/base\"",
        upstreams
            .iter()
            .map(|u| format!("{u:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    toml_service(&toml)
}

fn toml_service(toml: &str) -> ServiceConfig {
    use figment::providers::{Format, Toml};
    figment::Figment::from(Toml::string(toml))
        .extract()
        .expect("a valid service")
}

/// A server whose clock starts at the real time (upstreams check the
/// context's expiry against theirs), with `services`.
async fn gateway_app(services: Vec<ServiceConfig>, tweak: impl FnOnce(&mut Config)) -> TestApp {
    // The upstream's clock is the real one: so is the server's at the start.
    #[allow(clippy::disallowed_methods)]
    let now = time::OffsetDateTime::now_utc();
    spawn_app_at(now, |config| {
        config.gateway.services = services;
        tweak(config);
    })
    .await
}

/// A tenant with a developer key; returns the key's id and token.
async fn tenant(app: &TestApp, id: &str) -> (String, String) {
    app.create_tenant(id).await;
    let key = app.tenant_key(id, Role::Developer).await;
    (key.key.id.to_string(), key.token)
}

async fn call(app: &TestApp, token: &str, method: Method, path: &str) -> reqwest::Response {
    app.request(method, path)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// The JSON answer to an operator's request.
async fn operator_json(app: &TestApp, method: Method, path: &str) -> Value {
    let token = app.operator_token.clone();
    call(app, &token, method, path).await.json().await.unwrap()
}

async fn status_of(app: &TestApp, token: &str, method: Method, path: &str) -> u16 {
    call(app, token, method, path).await.status().as_u16()
}

async fn problem(response: reqwest::Response) -> (u16, String, Option<String>) {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let content_type = response.headers()["content-type"].clone();
    let body: Value = response.json().await.unwrap();
    assert_eq!(content_type, "application/problem+json", "{status} {body}");
    (
        status,
        body["code"].as_str().unwrap().to_owned(),
        retry_after,
    )
}

/// The published keys, as jsonwebtoken decoding keys by kid.
async fn published_keys(app: &TestApp) -> Vec<(String, DecodingKey)> {
    let response = app
        .request(Method::GET, "/.well-known/jwks.json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "public, max-age=300");
    let jwks: jsonwebtoken::jwk::JwkSet = response.json().await.unwrap();
    jwks.keys
        .iter()
        .map(|jwk| {
            (
                jwk.common.key_id.clone().unwrap(),
                DecodingKey::from_jwk(jwk).unwrap(),
            )
        })
        .collect()
}

/// Verifies a context as an upstream would: the published key named by its
/// `kid`, EdDSA only, this issuer and audience, unexpired by our clock.
async fn verify(
    app: &TestApp,
    token: &str,
    service: &str,
) -> Result<Value, jsonwebtoken::errors::Error> {
    let header = jsonwebtoken::decode_header(token)?;
    let keys = published_keys(app).await;
    let (_, key) = keys
        .iter()
        .find(|(kid, _)| Some(kid) == header.kid.as_ref())
        .expect("the kid is published");
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&["tenantd"]);
    validation.set_audience(&[service]);
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    Ok(jsonwebtoken::decode::<Value>(token, key, &validation)?.claims)
}

#[tokio::test]
async fn the_upstream_gets_a_verifiable_tenant_context_and_no_credentials() {
    let upstream = Upstream::start().await;
    // Signed for each request, with its id among the claims.
    let app = gateway_app(vec![service("billing", &[&upstream.url])], |config| {
        config.gateway.context.per_request = true;
    })
    .await;
    let (key_id, token) = tenant(&app, "acme").await;
    let response = app
        .request(Method::GET, "/v1/proxy/billing/echo/a%20b?x=1&y=2")
        .header("x-api-key", &token)
        .header("x-tenant-id", "globex")
        .header("x-tenant-context", "forged")
        .header("x-forwarded-for", "10.0.0.1")
        .header("cookie", "session=upstream-owned")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        response.headers().contains_key("ratelimit"),
        "admitted like any request"
    );
    let seen = upstream.seen().pop().unwrap();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.target, "/base/echo/a%20b?x=1&y=2");
    assert_eq!(seen.headers["x-tenant-id"], "acme");
    assert_eq!(seen.headers["cookie"], "session=upstream-owned");
    assert_eq!(seen.headers["x-request-id"], request_id.as_str());
    for credential in ["authorization", "x-api-key"] {
        assert!(
            !seen.headers.contains_key(credential),
            "{credential} reached the upstream"
        );
    }
    assert_eq!(
        seen.headers["x-forwarded-for"], "127.0.0.1",
        "the connection's address, not the client's 10.0.0.1"
    );
    let secret = token.rsplit('_').next().unwrap();
    for (name, value) in &seen.headers {
        assert!(
            !value.to_str().unwrap_or("").contains(secret),
            "the key's secret reached the upstream in {name}"
        );
    }

    let context = seen.headers["x-tenant-context"].to_str().unwrap();
    let claims = verify(&app, context, "billing").await.unwrap();
    assert_eq!(claims["tenant"], "acme");
    assert_eq!(claims["sub"], "acme");
    assert_eq!(claims["key_id"], key_id.as_str());
    assert_eq!(claims["role"], "developer");
    assert_eq!(claims["plan"], "default");
    assert_eq!(claims["request_id"], request_id.as_str());
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        60,
        "valid for the configured ttl"
    );
    // Meant for billing, not for another service.
    assert!(verify(&app, context, "search").await.is_err());

    // A Bearer key is stripped the same way.
    call(&app, &token, Method::DELETE, "/v1/proxy/billing/echo").await;
    let seen = upstream.seen().pop().unwrap();
    assert_eq!(
        (seen.method.as_str(), seen.target.as_str()),
        ("DELETE", "/base/echo")
    );
    assert!(!seen.headers.contains_key("authorization"));
}

/// By default a context is signed once per key and service and reused for
/// half its ttl: the request id travels beside it, not in it; a change of
/// plan or the passing of half the ttl signs a new one.
#[tokio::test]
async fn a_context_is_reused_for_half_its_ttl_and_resigned_when_its_subject_changes() {
    let upstream = Upstream::start().await;
    let app = gateway_app(vec![service("billing", &[&upstream.url])], |_| {}).await;
    let (_, token) = tenant(&app, "acme").await;
    let (_, other_token) = tenant(&app, "globex").await;
    let context_of = |token: String| {
        let app = &app;
        let upstream = &upstream;
        async move {
            let response = call(app, &token, Method::GET, "/v1/proxy/billing/echo").await;
            assert_eq!(response.status(), 200);
            let request_id = response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_owned();
            let seen = upstream.seen().pop().unwrap();
            assert_eq!(seen.headers["x-request-id"], request_id.as_str());
            seen.headers["x-tenant-context"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    let first = context_of(token.clone()).await;
    let claims = verify(&app, &first, "billing").await.unwrap();
    assert_eq!(claims["tenant"], "acme");
    assert!(claims.get("request_id").is_none(), "{claims}");
    assert_eq!(context_of(token.clone()).await, first, "reused");
    let other = context_of(other_token).await;
    assert_eq!(
        verify(&app, &other, "billing").await.unwrap()["tenant"],
        "globex"
    );

    // 29 s on, still the same; at 30 s (half the 60 s ttl) a new one.
    app.clock.advance(time::Duration::seconds(29));
    assert_eq!(context_of(token.clone()).await, first);
    app.clock.advance(time::Duration::seconds(1));
    let refreshed = context_of(token.clone()).await;
    assert_ne!(refreshed, first);
    let refreshed_claims = verify(&app, &refreshed, "billing").await;
    assert_eq!(
        refreshed_claims
            .map(|c| c["iat"].as_i64().unwrap() - claims["iat"].as_i64().unwrap())
            .ok(),
        Some(30)
    );

    // A new plan is in the next context at once.
    let plan = json!({
        "plan": { "id": "team", "rate": { "requests": 1000, "per": "1s", "burst": 1000 } },
        "reason": "pricing",
    });
    let op = app.operator_token.clone();
    let created = app
        .request(Method::POST, "/v1/plans")
        .bearer_auth(&op)
        .json(&plan)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let moved = app
        .request(Method::PATCH, "/v1/tenants/acme")
        .bearer_auth(&op)
        .json(&json!({ "plan": "team" }))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 200);
    let on_team = context_of(token).await;
    assert_eq!(
        verify(&app, &on_team, "billing").await.unwrap()["plan"],
        "team"
    );
}

#[tokio::test]
async fn a_context_cannot_be_forged_or_replayed_after_it_expires() {
    let upstream = Upstream::start().await;
    let app = gateway_app(vec![service("billing", &[&upstream.url])], |config| {
        config.gateway.context.ttl = Duration::from_secs(1);
    })
    .await;
    let (_, token) = tenant(&app, "acme").await;
    call(&app, &token, Method::GET, "/v1/proxy/billing/echo").await;
    let context = upstream.seen().pop().unwrap().headers["x-tenant-context"]
        .to_str()
        .unwrap()
        .to_owned();
    let claims = verify(&app, &context, "billing").await.unwrap();

    // Another tenant's name in the claims breaks the signature.
    let parts: Vec<&str> = context.split('.').collect();
    let mut forged_claims = claims.clone();
    forged_claims["tenant"] = "globex".into();
    forged_claims["sub"] = "globex".into();
    let forged_payload = URL_SAFE_NO_PAD.encode(forged_claims.to_string());
    let forged = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
    let error = verify(&app, &forged, "billing").await.unwrap_err();
    assert_eq!(
        *error.kind(),
        jsonwebtoken::errors::ErrorKind::InvalidSignature
    );

    // So does a later expiry.
    let mut extended = claims.clone();
    extended["exp"] = (claims["exp"].as_i64().unwrap() + 3600).into();
    let extended = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(extended.to_string()),
        parts[2]
    );
    assert!(verify(&app, &extended, "billing").await.is_err());

    // A key that is not published signs nothing that verifies, even under a published kid.
    let mut seed = [7u8; 32];
    seed[0] = 1;
    let stranger = ed25519_dalek::SigningKey::from_bytes(&seed);
    let input = format!("{}.{forged_payload}", parts[0]);
    use ed25519_dalek::Signer;
    let signature = URL_SAFE_NO_PAD.encode(stranger.sign(input.as_bytes()).to_bytes());
    let self_signed = format!("{input}.{signature}");
    let error = verify(&app, &self_signed, "billing").await.unwrap_err();
    assert_eq!(
        *error.kind(),
        jsonwebtoken::errors::ErrorKind::InvalidSignature
    );

    // Replayed once its second of validity has passed, the context is refused.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let error = verify(&app, &context, "billing").await.unwrap_err();
    assert_eq!(
        *error.kind(),
        jsonwebtoken::errors::ErrorKind::ExpiredSignature
    );
}

#[tokio::test]
async fn a_rotated_key_is_published_before_it_signs_and_the_old_one_until_its_contexts_expire() {
    let upstream = Upstream::start().await;
    let app = gateway_app(vec![service("billing", &[&upstream.url])], |_| {}).await;
    let (_, token) = tenant(&app, "acme").await;
    let kid_of = |context: &str| jsonwebtoken::decode_header(context).unwrap().kid.unwrap();
    let context_now = || async {
        call(&app, &token, Method::GET, "/v1/proxy/billing/echo").await;
        let seen = upstream.seen().pop().unwrap();
        seen.headers["x-tenant-context"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    let before = context_now().await;
    let old_kid = kid_of(&before);

    let rotated: Value =
        operator_json(&app, Method::POST, "/v1/platform/signing-keys/rotate").await;
    let new_kid = rotated["kid"].as_str().unwrap().to_owned();
    assert_eq!(rotated["signing"], false, "published ahead of signing");
    let kids =
        |keys: Vec<(String, DecodingKey)>| keys.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(
        kids(published_keys(&app).await),
        [old_kid.clone(), new_kid.clone()]
    );
    assert_eq!(
        kid_of(&context_now().await),
        old_kid,
        "the old key signs until publish_ahead passes"
    );

    // After publish_ahead (600 s), the new key signs; the old one stays
    // published for the ttl and clock skew (60 s + 60 s) more.
    app.clock.advance(time::Duration::seconds(600));
    let after = context_now().await;
    assert_eq!(kid_of(&after), new_kid);
    assert_eq!(
        kids(published_keys(&app).await),
        [old_kid.clone(), new_kid.clone()]
    );
    app.clock.advance(time::Duration::seconds(120));
    assert_eq!(
        kids(published_keys(&app).await),
        std::slice::from_ref(&new_kid)
    );

    // The rotation is in the platform's audit trail, without the secret.
    let audit: Value = operator_json(&app, Method::GET, "/v1/platform/audit").await;
    let entry = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "signing_key.rotate")
        .expect("an audit entry");
    assert_eq!(entry["target"], new_kid.as_str());
}

#[tokio::test]
async fn a_failing_upstream_for_one_tenant_opens_only_that_tenants_circuit() {
    let upstream = Upstream::start().await;
    let mut billing = service("billing", &[&upstream.url]);
    billing.retries = 0;
    billing.breaker.min_calls = 3;
    billing.breaker.open_for = Duration::from_millis(500);
    let app = gateway_app(vec![billing], |_| {}).await;
    let (_, acme) = tenant(&app, "acme").await;
    let (_, globex) = tenant(&app, "globex").await;
    let path = "/v1/proxy/billing/fail-for-acme";
    for _ in 0..3 {
        // The upstream's own 500 is passed through, and counted as a failure.
        assert_eq!(status_of(&app, &acme, Method::GET, path).await, 500);
    }
    let reached = upstream.count("/base/fail-for-acme");
    let (status, code, retry_after) = problem(call(&app, &acme, Method::GET, path).await).await;
    assert_eq!((status, code.as_str()), (503, "upstream_unavailable"));
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(
        upstream.count("/base/fail-for-acme"),
        reached,
        "an open circuit sends nothing"
    );
    // Globex calls the same service on the same path, untouched.
    for _ in 0..5 {
        assert_eq!(status_of(&app, &globex, Method::GET, path).await, 200);
    }
    // After open_for, one probe reaches the upstream again.
    app.clock.advance(time::Duration::milliseconds(600));
    assert_eq!(status_of(&app, &acme, Method::GET, path).await, 500);
    assert_eq!(upstream.count("/base/fail-for-acme"), reached + 5 + 1);
    let (status, code, _) = problem(call(&app, &acme, Method::GET, path).await).await;
    assert_eq!((status, code.as_str()), (503, "upstream_unavailable"));

    // Operators see each outcome counted per service.
    let metrics = call(&app, &app.operator_token, Method::GET, "/metrics")
        .await
        .text()
        .await
        .unwrap();
    for line in [
        r#"tenantd_gateway_calls_total{service="billing",outcome="upstream_5xx"} 4"#,
        r#"tenantd_gateway_calls_total{service="billing",outcome="upstream_unavailable"} 2"#,
        r#"tenantd_gateway_calls_total{service="billing",outcome="ok"} 5"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
}

#[tokio::test]
async fn a_slow_upstream_gets_504_and_a_full_bulkhead_429_for_that_tenant_only() {
    let upstream = Upstream::start().await;
    let mut billing = service("billing", &[&upstream.url]);
    billing.request_timeout = Duration::from_millis(300);
    billing.max_in_flight_per_tenant = 1;
    let app = gateway_app(vec![billing], |_| {}).await;
    let (_, acme) = tenant(&app, "acme").await;
    let (_, globex) = tenant(&app, "globex").await;
    let (status, code, retry_after) =
        problem(call(&app, &acme, Method::GET, "/v1/proxy/billing/slow").await).await;
    assert_eq!((status, code.as_str()), (504, "upstream_timeout"));
    assert!(retry_after.is_some());

    // A download in flight holds acme's one place until its body is read.
    // Large enough that loopback buffers cannot take it all before it is read.
    let held = call(
        &app,
        &acme,
        Method::GET,
        "/v1/proxy/billing/download?bytes=67108864",
    )
    .await;
    assert_eq!(held.status(), 200);
    let (status, code, _) =
        problem(call(&app, &acme, Method::GET, "/v1/proxy/billing/echo").await).await;
    assert_eq!((status, code.as_str()), (429, "bulkhead_full"));
    assert_eq!(
        status_of(&app, &globex, Method::GET, "/v1/proxy/billing/echo").await,
        200
    );
    assert_eq!(held.bytes().await.unwrap().len(), 67_108_864);
    assert_eq!(
        status_of(&app, &acme, Method::GET, "/v1/proxy/billing/echo").await,
        200
    );
}

#[tokio::test]
async fn only_idempotent_requests_are_retried_and_refusals_are_problems() {
    let upstream = Upstream::start().await;
    // A port nothing listens on.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    // A server that answers with something that is not HTTP.
    let garbage = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let garbage_url = format!("http://{}", garbage.local_addr().unwrap());
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = garbage.accept().await {
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await;
            let _ = socket.write_all(b"SMTP ready, not HTTP\r\n\r\n").await;
        }
    });
    let mut retried = service("retried", &[&upstream.url]);
    retried.retries = 2;
    let mut failover = service("failover", &[&closed, &upstream.url]);
    failover.retries = 1;
    let mut refused = service("refused", &[&closed]);
    refused.retries = 0;
    let mut broken = service("broken", &[&garbage_url]);
    broken.retries = 0;
    let app = gateway_app(vec![retried, failover, refused, broken], |_| {}).await;
    let (_, acme) = tenant(&app, "acme").await;

    // GET is tried three times (retries = 2); the last answer is passed on.
    let response = call(&app, &acme, Method::GET, "/v1/proxy/retried/unavailable").await;
    assert_eq!(response.status(), 503);
    assert_eq!(upstream.count("/base/unavailable"), 3);
    // POST and PATCH are not idempotent: tried once.
    for method in [Method::POST, Method::PATCH] {
        let before = upstream.count("/base/unavailable");
        let response = call(&app, &acme, method, "/v1/proxy/retried/unavailable").await;
        assert_eq!(response.status(), 503);
        assert_eq!(upstream.count("/base/unavailable"), before + 1);
    }
    // A PUT with a body cannot be sent twice unchanged: tried once.
    let before = upstream.count("/base/unavailable");
    let response = app
        .request(Method::PUT, "/v1/proxy/retried/unavailable")
        .bearer_auth(&acme)
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(upstream.count("/base/unavailable"), before + 1);

    // A refused first upstream: a GET fails over to the next one...
    for _ in 0..2 {
        assert_eq!(
            status_of(&app, &acme, Method::GET, "/v1/proxy/failover/echo").await,
            200
        );
    }
    // ...and with no upstream to take it, the refusal is a problem.
    let (status, code, _) =
        problem(call(&app, &acme, Method::GET, "/v1/proxy/refused/echo").await).await;
    assert_eq!((status, code.as_str()), (502, "upstream_refused"));
    let (status, code, _) =
        problem(call(&app, &acme, Method::POST, "/v1/proxy/broken/echo").await).await;
    assert_eq!((status, code.as_str()), (502, "upstream_error"));
}

#[tokio::test]
async fn services_names_roles_and_paths_are_checked_before_anything_is_sent() {
    let upstream = Upstream::start().await;
    let mut readers_not_allowed = service("billing", &[&upstream.url]);
    readers_not_allowed.allowed_roles = vec![Role::Admin, Role::Developer];
    let app = gateway_app(vec![readers_not_allowed], |_| {}).await;
    let (_, developer) = tenant(&app, "acme").await;
    let reader = app.tenant_key("acme", Role::Reader).await.token;

    let (status, code, _) =
        problem(call(&app, &developer, Method::GET, "/v1/proxy/nothing/echo").await).await;
    assert_eq!((status, code.as_str()), (404, "service_not_found"));
    let (status, code, _) =
        problem(call(&app, &developer, Method::GET, "/v1/proxy/Not_A_Name/x").await).await;
    assert_eq!((status, code.as_str()), (404, "service_not_found"));
    let (status, code, _) =
        problem(call(&app, &reader, Method::GET, "/v1/proxy/billing/echo").await).await;
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    let operator = app.operator_token.clone();
    let (status, code, _) =
        problem(call(&app, &operator, Method::GET, "/v1/proxy/billing/echo").await).await;
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    let (status, code, _) =
        problem(call(&app, &developer, Method::GET, "/v1/proxy/billing/a%2fb").await).await;
    assert_eq!((status, code.as_str()), (400, "invalid_parameter"));
    // HTTP clients resolve dot segments before sending; a raw request does not.
    for escape in [
        "/v1/proxy/billing/a/../admin",
        "/v1/proxy/billing/a/%2E%2e/admin",
    ] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut socket = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        let request = format!(
            "GET {escape} HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {developer}\r\nConnection: close\r\n\r\n"
        );
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        socket.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{escape}: {answer}");
        assert!(
            answer.contains("\"code\":\"invalid_parameter\""),
            "{answer}"
        );
    }
    assert!(upstream.seen().is_empty(), "nothing reached the upstream");
    // The root of the service is its path_prefix.
    assert_eq!(
        status_of(&app, &developer, Method::GET, "/v1/proxy/billing").await,
        200
    );
    assert_eq!(upstream.seen().pop().unwrap().target, "/base");
}

#[tokio::test]
async fn a_service_with_its_own_seats_queues_its_callers_and_not_the_data_api() {
    let upstream = Upstream::start().await;
    let mut billing = service("billing", &[&upstream.url]);
    billing.seats = Some(1);
    let app = gateway_app(vec![billing], |config| {
        config.admission.queue_wait = NonZeroDuration::from_millis(300);
    })
    .await;
    let (_, acme) = tenant(&app, "acme").await;
    let (_, globex) = tenant(&app, "globex").await;
    let slow = {
        let request = app
            .request(Method::GET, "/v1/proxy/billing/slow")
            .bearer_auth(&acme);
        tokio::spawn(async move { request.send().await.unwrap().status() })
    };
    until("the slow request reaching billing", || {
        upstream.count("/base/slow") == 1
    })
    .await;
    // Billing's one seat is taken: globex waits its budget, then gets 503.
    let (status, code, _) =
        problem(call(&app, &globex, Method::GET, "/v1/proxy/billing/echo").await).await;
    assert_eq!((status, code.as_str()), (503, "overloaded"));
    // The data API has its own seats.
    let me = call(&app, &globex, Method::GET, "/v1/collections").await;
    assert_eq!(me.status(), 200);
    assert_eq!(slow.await.unwrap(), 200);
    assert_eq!(
        status_of(&app, &globex, Method::GET, "/v1/proxy/billing/echo").await,
        200
    );
}

#[tokio::test]
async fn cached_responses_never_cross_tenants_and_private_or_no_store_are_not_kept() {
    let upstream = Upstream::start().await;
    let app = gateway_app(vec![service("billing", &[&upstream.url])], |_| {}).await;
    let (_, acme) = tenant(&app, "acme").await;
    let (_, globex) = tenant(&app, "globex").await;
    let get = |token: String, path: &'static str| {
        let app = &app;
        async move {
            let response = call(app, &token, Method::GET, path).await;
            assert_eq!(response.status(), 200);
            let cache = response.headers()["tenantd-cache"]
                .to_str()
                .unwrap()
                .to_owned();
            (cache, response.text().await.unwrap())
        }
    };
    let canary = "/v1/proxy/billing/cached/report";
    let (cache, first) = get(acme.clone(), canary).await;
    assert_eq!(cache, "miss");
    assert!(first.starts_with("acme:"), "{first}");
    let (cache, again) = get(acme.clone(), canary).await;
    assert_eq!((cache.as_str(), again.as_str()), ("hit", first.as_str()));
    // Globex asks for the same path and gets its own answer, never acme's.
    let (cache, theirs) = get(globex.clone(), canary).await;
    assert_eq!(cache, "miss");
    assert!(theirs.starts_with("globex:"), "{theirs}");
    let (cache, theirs_again) = get(globex.clone(), canary).await;
    assert_eq!(
        (cache.as_str(), theirs_again.as_str()),
        ("hit", theirs.as_str())
    );
    assert_eq!(upstream.count("/base/cached/report"), 2);

    // A different query is a different response.
    let (cache, _) = get(acme.clone(), "/v1/proxy/billing/cached/report?page=2").await;
    assert_eq!(cache, "miss");
    // private and no-store: every request reaches the upstream.
    for path in ["/v1/proxy/billing/private/x", "/v1/proxy/billing/nostore/x"] {
        let (_, one) = get(acme.clone(), path).await;
        let (cache, two) = get(acme.clone(), path).await;
        assert_eq!(cache, "miss");
        assert_ne!(one, two, "{path} was served from the cache");
    }
    // A client's no-cache goes to the upstream (and refreshes nothing it should not).
    let response = app
        .request(Method::GET, canary)
        .bearer_auth(&acme)
        .header("cache-control", "no-cache")
        .send()
        .await
        .unwrap();
    let fresh = response.text().await.unwrap();
    assert!(fresh.starts_with("acme:") && fresh != first, "{fresh}");
}

#[tokio::test]
async fn a_streamed_body_past_the_plans_limit_is_cut_with_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = Upstream::start().await;
    let app = gateway_app(vec![service("billing", &[&upstream.url])], |config| {
        for plan in &mut config.plans {
            plan.max_body_bytes = Some(1000);
        }
    })
    .await;
    let (_, acme) = tenant(&app, "acme").await;
    // A declared length over the limit is refused before anything is sent.
    let response = app
        .request(Method::POST, "/v1/proxy/billing/upload")
        .bearer_auth(&acme)
        .body(vec![b'x'; 5000])
        .send()
        .await
        .unwrap();
    let (status, code, _) = problem(response).await;
    assert_eq!((status, code.as_str()), (413, "payload_too_large"));
    // A chunked body is cut where it passes the limit.
    let mut socket = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /v1/proxy/billing/upload HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {acme}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..5 {
        let chunk = format!("3e8\r\n{}\r\n", "y".repeat(1000));
        if socket.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = socket.write_all(b"0\r\n\r\n").await;
    // The server may close before reading the rest: keep what was answered.
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("\"code\":\"payload_too_large\""),
        "{answer}"
    );
}

#[tokio::test]
async fn upstream_connections_are_pooled_and_kept_alive() {
    let upstream = Upstream::start().await;
    let app = gateway_app(vec![service("billing", &[&upstream.url])], |_| {}).await;
    let (_, acme) = tenant(&app, "acme").await;
    let (_, globex) = tenant(&app, "globex").await;
    for n in 0..20 {
        let token = if n % 2 == 0 { &acme } else { &globex };
        let response = call(&app, token, Method::GET, "/v1/proxy/billing/echo").await;
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
    }
    assert_eq!(upstream.count("/base/echo"), 20);
    // One after another, the requests share connections (a connection goes
    // back to the pool just after its response ends, so allow a second one).
    assert!(
        upstream.connections() <= 2,
        "{} connections for 20 requests",
        upstream.connections()
    );
}

#[tokio::test]
async fn a_services_host_routes_every_path_to_it_through_the_same_checks() {
    let upstream = Upstream::start().await;
    let mut billing = service("billing", &[&upstream.url]);
    billing.hosts = vec!["billing.example.com".into()];
    let app = gateway_app(vec![billing], |_| {}).await;
    let (_, acme) = tenant(&app, "acme").await;
    let on_host = |path: &str| {
        app.request(Method::GET, path)
            .header("host", "Billing.Example.com:8080")
    };
    let response = on_host("/invoices/7?full=1")
        .bearer_auth(&acme)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = upstream.seen().pop().unwrap();
    assert_eq!(seen.target, "/base/invoices/7?full=1");
    assert_eq!(seen.headers["x-tenant-id"], "acme");
    assert!(
        !seen.headers.contains_key("x-forwarded-prefix"),
        "the client used no prefix"
    );
    assert_eq!(seen.headers["x-forwarded-host"], "Billing.Example.com:8080");
    on_host("/").bearer_auth(&acme).send().await.unwrap();
    assert_eq!(upstream.seen().pop().unwrap().target, "/base");
    // Identified like any request: no key, no call.
    let (status, code, _) = problem(on_host("/invoices").send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (401, "missing_api_key"));
    // Other hosts keep tenantd's own API.
    assert_eq!(status_of(&app, &acme, Method::GET, "/v1/me").await, 200);
}

#[tokio::test]
async fn a_stalled_response_body_is_cut_and_frees_the_bulkhead() {
    let upstream = Upstream::start().await;
    let mut billing = service("billing", &[&upstream.url]);
    billing.body_idle_timeout = Duration::from_millis(300);
    billing.max_in_flight_per_tenant = 1;
    let app = gateway_app(vec![billing], |_| {}).await;
    let (_, acme) = tenant(&app, "acme").await;
    let stalled = call(&app, &acme, Method::GET, "/v1/proxy/billing/stall").await;
    assert_eq!(stalled.status(), 200, "the head came in time");
    // Without the idle limit the upstream's last 90 bytes would arrive after 3 s.
    assert!(
        stalled.bytes().await.is_err(),
        "the body was cut, not completed"
    );
    assert_eq!(
        status_of(&app, &acme, Method::GET, "/v1/proxy/billing/echo").await,
        200,
        "the place in the bulkhead came back"
    );
}

#[tokio::test]
async fn a_percent_encoded_service_segment_is_refused_and_never_shifts_the_path() {
    let upstream = Upstream::start().await;
    let app = gateway_app(
        vec![
            service("echo", &[&upstream.url]),
            service("svc-admin", &[&upstream.url]),
        ],
        |_| {},
    )
    .await;
    let (_, token) = tenant(&app, "acme").await;
    for path in [
        "/v1/proxy/ech%6f/x",
        "/v1/proxy/%65cho/x",
        "/v1/proxy/%65%63%68%6F/x",
        "/v1/proxy/%73%76%63-admin/x",
        "/v1/proxy/echo%2fx",
        "/v1/proxy/echo%2Fx",
        "/v1/proxy/%25echo/x",
        "/v1/proxy/ech%6f",
    ] {
        let response = call(&app, &token, Method::GET, path).await;
        assert_eq!(
            problem(response).await.0,
            400,
            "{path} must be refused, not routed"
        );
    }
    // In the rest of the path, encoded separators are refused in any case
    // (dot segments too: `check_path`'s own test, since the client here
    // resolves `%2e%2e` before sending); other encodings reach the upstream
    // as sent.
    for path in [
        "/v1/proxy/echo/x%2fy",
        "/v1/proxy/echo/x%2Fy",
        "/v1/proxy/echo/x%5cy",
        "/v1/proxy/echo/x%5Cy",
    ] {
        let response = call(&app, &token, Method::GET, path).await;
        assert_eq!(problem(response).await.0, 400, "{path}");
    }
    assert_eq!(upstream.seen().len(), 0, "nothing reached the upstream");
    let response = call(&app, &token, Method::GET, "/v1/proxy/echo/a%25b%20c").await;
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.seen().pop().unwrap().target, "/base/a%25b%20c");
    let response = call(&app, &token, Method::GET, "/v1/proxy/svc-admin/x").await;
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.seen().pop().unwrap().target, "/base/x");
}

#[tokio::test]
async fn forwarding_and_tenant_headers_are_withheld_in_every_spelling() {
    let upstream = Upstream::start().await;
    let app = gateway_app(vec![service("echo", &[&upstream.url])], |_| {}).await;
    let (_, token) = tenant(&app, "acme").await;
    let withheld = [
        "x-forwarded-port",
        "x-forwarded-server",
        "x-forwarded-user",
        "x-forwarded-for",
        "x-real-ip",
        "x_tenant_id",
        "x-tenant_id",
        "x_tenant_context",
        "x_forwarded_host",
        "x_forwarded_for",
        "x-tenant-role",
        "x_api_key",
        "x_request_id",
    ];
    let mut request = app
        .request(Method::GET, "/v1/proxy/echo/x")
        .bearer_auth(&token);
    for name in withheld {
        request = request.header(name, "forged");
    }
    let response = request
        .header("x-custom_header", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = upstream.seen().pop().unwrap();
    for (name, value) in &seen.headers {
        assert_ne!(value, "forged", "{name} reached the upstream");
    }
    assert_eq!(seen.headers["x-custom_header"], "kept");
    assert_eq!(seen.headers["x-tenant-id"], "acme", "tenantd's own");
    // The client's address is tenantd's to say: the connection's.
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-real-ip"], "127.0.0.1");
}

#[tokio::test]
async fn proxied_bodies_are_held_to_the_servers_body_limit() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = Upstream::start().await;
    let app = gateway_app(vec![service("echo", &[&upstream.url])], |c| {
        c.max_body_bytes = 64 * 1024;
    })
    .await;
    let (_, token) = tenant(&app, "acme").await;
    // Declared: refused before a byte of the body is sent.
    let declared = app
        .request(Method::POST, "/v1/proxy/echo/upload")
        .bearer_auth(&token)
        .body(vec![b'x'; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(problem(declared).await.0, 413);
    // Streamed without a length: cut at the limit, answered 413.
    let mut socket = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /v1/proxy/echo/upload HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'x'; 16 * 1024];
    for _ in 0..8 {
        let framed = [
            format!("{:x}\r\n", chunk.len()).into_bytes(),
            chunk.clone(),
            b"\r\n".to_vec(),
        ]
        .concat();
        if socket.write_all(&framed).await.is_err() {
            break;
        }
    }
    let _ = socket.write_all(b"0\r\n\r\n").await;
    let mut answer = vec![0u8; 4096];
    let n = socket.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
}

#[tokio::test]
async fn a_successful_write_drops_the_cached_responses_it_makes_stale_and_admins_can_purge() {
    let upstream = Upstream::start().await;
    let app = gateway_app(vec![service("billing", &[&upstream.url])], |_| {}).await;
    let (_, acme) = tenant(&app, "acme").await;
    let (_, globex) = tenant(&app, "globex").await;
    let cache_status = |token: String, path: String| {
        let app = &app;
        async move {
            let response = call(app, &token, Method::GET, &path).await;
            assert_eq!(response.status(), 200);
            response.headers()["tenantd-cache"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    let warm = |token: &str, path: &str| {
        let (token, path) = (token.to_owned(), path.to_owned());
        async {
            cache_status(token.clone(), path.clone()).await;
            assert_eq!(cache_status(token, path).await, "hit");
        }
    };
    let report = "/v1/proxy/billing/cached/report";
    let page = "/v1/proxy/billing/cached/report?page=2";
    warm(&acme, report).await;
    warm(&acme, page).await;
    warm(&globex, report).await;
    // A write to the path drops every query of it, for the writer's tenant only.
    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        assert_eq!(
            call(&app, &acme, method.clone(), report).await.status(),
            200
        );
        assert_eq!(
            cache_status(acme.clone(), report.into()).await,
            "miss",
            "{method}"
        );
        assert_eq!(
            cache_status(acme.clone(), page.into()).await,
            "miss",
            "{method}"
        );
        warm(&acme, report).await;
        warm(&acme, page).await;
    }
    assert_eq!(cache_status(globex.clone(), report.into()).await, "hit");
    // A failed write changes nothing: the cache keeps its entries.
    let failed = call(&app, &acme, Method::POST, "/v1/proxy/billing/unavailable").await;
    assert_eq!(failed.status(), 503);
    assert_eq!(cache_status(acme.clone(), report.into()).await, "hit");
    // The path a write's answer names is dropped too.
    let created = "/v1/proxy/billing/cached/created";
    warm(&acme, created).await;
    assert_eq!(
        call(&app, &acme, Method::POST, "/v1/proxy/billing/create")
            .await
            .status(),
        201
    );
    assert_eq!(cache_status(acme.clone(), created.into()).await, "miss");

    // A tenant admin purges its own responses of a service, by prefix or all.
    warm(&acme, created).await;
    let admin = app.tenant_key("acme", Role::Admin).await.token;
    let purge = |token: String, path: String| {
        let app = &app;
        async move {
            call(app, &token, Method::DELETE, &path)
                .await
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        purge(
            admin.clone(),
            "/v1/tenants/acme/proxy-cache/billing?prefix=/cached/created".into()
        )
        .await,
        204
    );
    assert_eq!(cache_status(acme.clone(), created.into()).await, "miss");
    assert_eq!(cache_status(acme.clone(), report.into()).await, "hit");
    assert_eq!(
        purge(admin.clone(), "/v1/tenants/acme/proxy-cache/billing".into()).await,
        204
    );
    assert_eq!(cache_status(acme.clone(), report.into()).await, "miss");
    assert_eq!(
        cache_status(globex.clone(), report.into()).await,
        "hit",
        "not another tenant's"
    );
    // Another tenant's, or an unknown service: 404 as for anything missing.
    assert_eq!(
        purge(
            admin.clone(),
            "/v1/tenants/globex/proxy-cache/billing".into()
        )
        .await,
        404
    );
    assert_eq!(
        purge(admin, "/v1/tenants/acme/proxy-cache/nothing".into()).await,
        404
    );
    // An operator may purge any tenant's; every purge is audited.
    let operator = app.operator_token.clone();
    assert_eq!(
        purge(operator, "/v1/tenants/globex/proxy-cache/billing".into()).await,
        204
    );
    assert_eq!(cache_status(globex.clone(), report.into()).await, "miss");
    let trail = operator_json(&app, Method::GET, "/v1/tenants/acme/audit").await;
    let purges = trail["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "proxy_cache.purge")
        .count();
    assert_eq!(purges, 2);
}

#[tokio::test]
async fn a_stale_response_answers_while_the_upstream_fails_if_the_service_allows_it() {
    let upstream = Upstream::start().await;
    let mut lenient = service("lenient", &[&upstream.url]);
    lenient.stale_if_error = Some(Duration::from_secs(300));
    let strict = service("strict", &[&upstream.url]);
    let app = gateway_app(vec![lenient, strict], |_| {}).await;
    let (_, acme) = tenant(&app, "acme").await;
    for name in ["lenient", "strict"] {
        let response = call(&app, &acme, Method::GET, &format!("/v1/proxy/{name}/brief")).await;
        assert_eq!(response.headers()["tenantd-cache"], "miss");
    }
    // Past the responses' one second of freshness, with the upstream failing.
    app.clock.advance(time::Duration::milliseconds(1100));
    upstream.fail(true);
    for _ in 0..8 {
        let response = call(&app, &acme, Method::GET, "/v1/proxy/lenient/brief").await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["tenantd-cache"], "stale");
        assert_eq!(response.text().await.unwrap(), "acme:1");
    }
    // Without stale_if_error the failure shows: the upstream's 500s, then
    // the open circuit's 503.
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(status_of(&app, &acme, Method::GET, "/v1/proxy/strict/brief").await);
    }
    assert_eq!(statuses.first(), Some(&500));
    assert_eq!(statuses.last(), Some(&503), "{statuses:?}");
    // Another tenant has nothing cached to fall back on.
    let (_, globex) = tenant(&app, "globex").await;
    let response = call(&app, &globex, Method::GET, "/v1/proxy/lenient/brief").await;
    assert_eq!(response.status(), 500);
}

/// With the response cache off, every GET reaches the upstream and no
/// answer claims a cache status.
#[tokio::test]
async fn with_the_cache_off_every_request_reaches_the_upstream() {
    let upstream = Upstream::start().await;
    let app = gateway_app(vec![service("billing", &[&upstream.url])], |config| {
        config.gateway.cache.bytes = 0;
    })
    .await;
    let (_, acme) = tenant(&app, "acme").await;
    for _ in 0..2 {
        let response = call(&app, &acme, Method::GET, "/v1/proxy/billing/cached").await;
        assert_eq!(response.status(), 200);
        assert!(!response.headers().contains_key("tenantd-cache"));
    }
    assert_eq!(upstream.count("/base/cached"), 2);
}
