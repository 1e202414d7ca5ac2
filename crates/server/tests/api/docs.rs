//! The documentation agrees with the server where it shows what the server
//! sends: docs/errors.md's example problem, docs/api.md's paging rule, and
//! times in the audit log.

use reqwest::Method;
use serde_json::Value;
use tenantd_client::api::RotateKey;
use tenantd_client::KeysOf;
use tenantd_core::{Role, TenantId};

use crate::helpers::spawn_app;

/// The first JSON block of docs/errors.md: the example problem.
fn documented_problem() -> Value {
    let doc = include_str!("../../../../docs/errors.md");
    let start = doc.find("```json").expect("an example") + "```json".len();
    let end = start + doc[start..].find("```").expect("its end");
    let text = doc[start..end].replace("\"3f1c…\"", "\"any\"");
    serde_json::from_str(&text).expect("the example is JSON")
}

#[tokio::test]
async fn the_documented_problem_is_what_a_suspended_tenant_gets() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let key = app.tenant_key("acme", Role::Admin).await.token;
    app.operator
        .suspend_tenant(&TenantId::parse("acme").unwrap())
        .await
        .unwrap();
    let response = app
        .request(Method::GET, "/v1/me")
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let mut answered: Value = response.json().await.unwrap();
    assert!(answered["request_id"].is_string());
    answered["request_id"] = "any".into();
    assert_eq!(answered, documented_problem());
}

#[tokio::test]
async fn the_last_page_has_no_next_cursor() {
    let app = spawn_app().await;
    for id in ["acme", "globex", "initech"] {
        app.create_tenant(id).await;
    }
    let page = |cursor: Option<String>| {
        let app = &app;
        async move {
            let path = match cursor {
                Some(c) => format!("/v1/tenants?limit=2&cursor={c}"),
                None => "/v1/tenants?limit=2".to_owned(),
            };
            let response = app
                .request(Method::GET, &path)
                .bearer_auth(&app.operator_token)
                .send()
                .await
                .unwrap();
            response.json::<Value>().await.unwrap()
        }
    };
    let first = page(None).await;
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let last = page(Some(cursor)).await;
    assert_eq!(last["items"].as_array().unwrap().len(), 1);
    assert!(
        last.as_object().unwrap().get("next_cursor").is_none(),
        "docs/api.md: `next_cursor` is absent on the last page: {last}"
    );
}

#[tokio::test]
async fn times_in_audit_details_are_rfc_3339() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let acme = TenantId::parse("acme").unwrap();
    let old = app.tenant_key("acme", Role::Developer).await;
    let rotated = app
        .operator
        .rotate_key(
            KeysOf::Tenant(&acme),
            &old.key.id,
            &RotateKey {
                overlap_seconds: Some(600),
                expires_at: None,
            },
        )
        .await
        .unwrap();
    let trail: Value = app
        .request(Method::GET, "/v1/tenants/acme/audit")
        .bearer_auth(&app.operator_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entry = trail["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "key.rotate")
        .expect("the rotation is audited");
    let old_expires_at = entry["details"]["old_expires_at"]
        .as_str()
        .expect("a string");
    let parsed = time::OffsetDateTime::parse(
        old_expires_at,
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339");
    assert_eq!(Some(parsed), rotated.previous.expires_at);
}
