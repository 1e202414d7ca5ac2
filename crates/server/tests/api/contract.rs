//! The server keeps the contract of its OpenAPI document: schemathesis
//! generates requests from `/openapi.json` (valid ones and broken ones) and
//! runs every check it has against a live server, as a tenant admin and as an
//! operator. Its configuration, tests/contract/schemathesis.toml, names each
//! rule the document cannot state.
//!
//! scripts/test installs schemathesis; without it this test fails, it does
//! not skip.

use std::path::{Path, PathBuf};

use tenantd_client::api::CreateCollection;
use tenantd_core::{CollectionName, Role};

use crate::helpers::{spawn_app, TestApp};

/// The schemathesis this suite is checked with (scripts/test installs it).
const SCHEMATHESIS: &str = "4.32.5";

/// A fixed seed, so that a failure in CI is the same failure on a laptop.
/// Other seeds find other inputs: run `st` by hand with `--seed` to explore.
const SEED: &str = "20261201";

fn config_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/contract/schemathesis.toml")
}

/// One schemathesis run over the operations `selection` picks, with `key`.
/// Returns what it printed when it found anything.
async fn fuzz(app: &TestApp, key: &str, selection: &[&str]) -> Result<(), String> {
    let work = tempfile::tempdir().expect("a directory for schemathesis' files");
    let output = tokio::process::Command::new("st")
        .current_dir(work.path())
        .env("TENANTD_KEY", key)
        .env("NO_COLOR", "1")
        .arg("--config-file")
        .arg(config_file())
        .args(["run", &format!("{}/openapi.json", app.url)])
        .args(["--checks", "all", "--max-examples", "20", "--seed", SEED])
        .args(["--generation-database", "none"])
        .args(selection)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "schemathesis (`st`) could not start ({e}); install it with \
                 `pip install schemathesis=={SCHEMATHESIS}`, as scripts/test does"
            )
        });
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !printed.contains(&format!("Schemathesis v{SCHEMATHESIS}")) {
        return Err(format!(
            "expected schemathesis {SCHEMATHESIS}; it printed:\n{printed}"
        ));
    }
    if output.status.success() {
        Ok(())
    } else {
        Err(printed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_keeps_the_openapi_contract() {
    let app = spawn_app().await;
    // The document's examples name tenant `acme` and collection `orders`,
    // so the first requests reach real resources.
    app.create_tenant("acme").await;
    let admin = app.tenant_key("acme", Role::Admin).await.token;
    app.client(&admin)
        .create_collection(&CreateCollection {
            name: CollectionName::parse("orders").unwrap(),
            indexes: vec!["status".into()],
        })
        .await
        .unwrap();

    // The tenant's own routes first: the operator's run may suspend or
    // delete the tenant.
    let tenant = fuzz(
        &app,
        &admin,
        &[
            "--include-path-regex",
            r"^/v1/(me|collections|proxy/|tenants/\{tenant\}/(keys|audit|usage|policy|addons|proxy-cache))",
        ],
    )
    .await;
    let operator = fuzz(
        &app,
        &app.operator_token,
        &["--exclude-path-regex", r"^/v1/(collections|proxy/)"],
    )
    .await;
    let failures: Vec<String> = [("tenant admin", tenant), ("operator", operator)]
        .into_iter()
        .filter_map(|(who, result)| result.err().map(|out| format!("as {who}:\n{out}")))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Defects the contract run found, each pinned by a test of its own.
mod found {
    use reqwest::Method;
    use serde_json::{json, Value};
    use tenantd_core::Role;

    use crate::helpers::spawn_app;

    async fn post(
        app: &crate::helpers::TestApp,
        key: &str,
        path: &str,
        body: &str,
    ) -> (u16, Value) {
        let response = app
            .request(Method::POST, path)
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn a_struct_body_given_as_an_array_is_refused() {
        let app = spawn_app().await;
        let op = app.operator_token.clone();
        // serde would read this as `{"id": "acme", "name": "Acme"}`.
        let (status, body) = post(&app, &op, "/v1/tenants", r#"["acme", "Acme"]"#).await;
        assert_eq!((status, body["code"].as_str()), (422, Some("invalid_body")));
        app.create_tenant("acme").await;
        let (status, body) = post(
            &app,
            &op,
            "/v1/tenants/acme/policy/versions",
            r#"{"overrides": [null, null], "reason": "why"}"#,
        )
        .await;
        assert_eq!((status, body["code"].as_str()), (422, Some("invalid_body")));
    }

    #[tokio::test]
    async fn whole_numbers_written_as_floats_are_integers() {
        let app = spawn_app().await;
        app.create_tenant("acme").await;
        let op = app.operator_token.clone();
        let (status, body) = post(
            &app,
            &op,
            "/v1/tenants/acme/policy/versions",
            r#"{"overrides": {"rate_requests": 50.0, "rate_burst": 100.0,
                "quotas": [{"metric": "records", "hard": 1000.0}]}, "reason": "why"}"#,
        )
        .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(
            body["overrides"],
            json!({"rate_requests": 50, "rate_burst": 100,
                   "quotas": [{"metric": "records", "hard": 1000}]})
        );
        for bad in ["50.5", "9223372036854775808"] {
            let (status, _) = post(
                &app,
                &op,
                "/v1/tenants/acme/policy/versions",
                &format!(r#"{{"overrides": {{"rate_requests": {bad}}}, "reason": "why"}}"#),
            )
            .await;
            assert_eq!(status, 422, "{bad} should be refused");
        }
    }

    #[tokio::test]
    async fn a_null_rotation_body_is_no_settings() {
        let app = spawn_app().await;
        app.create_tenant("acme").await;
        let key = app.tenant_key("acme", Role::Reader).await;
        let path = format!("/v1/tenants/acme/keys/{}/rotate", key.key.id);
        let (status, body) = post(&app, &app.operator_token.clone(), &path, "null").await;
        assert_eq!(status, 201, "{body}");
    }

    #[tokio::test]
    async fn a_malformed_batch_is_refused_whatever_the_records_state() {
        let app = spawn_app().await;
        app.create_tenant("acme").await;
        let admin = app.tenant_key("acme", Role::Admin).await.token;
        post(&app, &admin, "/v1/collections", r#"{"name": "orders"}"#).await;
        // The record does not exist, so `if_match` would fail with 412; the
        // data that is not an object is the first thing wrong.
        let (status, body) = post(
            &app,
            &admin,
            "/v1/collections/orders/batch",
            r#"{"operations": [{"op": "put", "id": "r1", "data": 5, "if_match": 3}]}"#,
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_record"))
        );
    }
}
