//! API keys: shown once, stored only as a hash, rotated with overlap,
//! revoked at once, never escalating across roles or tenants.

use std::path::Path;

use tenantd_client::api::{CreateKey, RotateKey};
use tenantd_client::{KeysOf, PageRequest};
use tenantd_core::{KeyState, Role, TenantId};

use crate::helpers::{assert_problem, spawn_app, START};

fn acme() -> TenantId {
    TenantId::parse("acme").unwrap()
}

fn new_key(role: Role) -> CreateKey {
    CreateKey {
        role,
        name: "k".into(),
        expires_at: None,
    }
}

/// Every byte the server wrote under `dir`.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            out.extend(std::fs::read(&path).unwrap());
        }
    }
    out
}

#[tokio::test]
async fn the_secret_is_shown_once_and_never_stored() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let created = app.tenant_key("acme", Role::Developer).await;
    let secret = created.token.rsplit('_').next().unwrap().to_owned();
    assert_eq!(secret.len(), 48);

    let listed = app
        .operator
        .list_keys(KeysOf::Tenant(&acme()), &PageRequest::default())
        .await
        .unwrap();
    let fetched = app
        .operator
        .key(KeysOf::Tenant(&acme()), &created.key.id)
        .await
        .unwrap();
    for text in [
        serde_json::to_string(&listed).unwrap(),
        serde_json::to_string(&fetched).unwrap(),
    ] {
        assert!(
            !text.contains(&secret),
            "the secret leaked into a read: {text}"
        );
    }

    let (dir, _, _) = app.stop().await;
    let stored = all_bytes(&dir.path().join("data"));
    let needle = secret.as_bytes();
    assert!(
        !stored.windows(needle.len()).any(|w| w == needle),
        "secret found on disk (hex)"
    );
    let raw = (0..secret.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&secret[i..i + 2], 16).unwrap())
        .collect::<Vec<u8>>();
    assert!(
        !stored.windows(raw.len()).any(|w| w == raw),
        "secret found on disk (bytes)"
    );
}

#[tokio::test]
async fn a_revoked_key_stops_at_once() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let created = app.tenant_key("acme", Role::Reader).await;
    let reader = app.client(&created.token);
    reader.me().await.unwrap();
    let revoked = app
        .operator
        .revoke_key(KeysOf::Tenant(&acme()), &created.key.id)
        .await
        .unwrap();
    assert_eq!(revoked.state, KeyState::Revoked);
    assert_problem(reader.me().await, 401, "key_revoked");
    // Revoking again is harmless and keeps the first instant.
    let again = app
        .operator
        .revoke_key(KeysOf::Tenant(&acme()), &created.key.id)
        .await
        .unwrap();
    assert_eq!(again.revoked_at, revoked.revoked_at);
    assert_problem(
        app.operator
            .rotate_key(
                KeysOf::Tenant(&acme()),
                &created.key.id,
                &RotateKey::default(),
            )
            .await,
        409,
        "invalid_transition",
    );
}

#[tokio::test]
async fn keys_expire_at_their_instant() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let created = app
        .operator
        .create_key(
            KeysOf::Tenant(&acme()),
            &CreateKey {
                expires_at: Some(START + time::Duration::hours(1)),
                ..new_key(Role::Reader)
            },
        )
        .await
        .unwrap();
    let reader = app.client(&created.token);
    reader.me().await.unwrap();
    app.clock.advance(time::Duration::hours(1));
    assert_problem(reader.me().await, 401, "key_expired");

    let past = app
        .operator
        .create_key(
            KeysOf::Tenant(&acme()),
            &CreateKey {
                expires_at: Some(START),
                ..new_key(Role::Reader)
            },
        )
        .await;
    assert_problem(past, 422, "invalid_body");
}

#[tokio::test]
async fn rotation_keeps_the_old_key_for_the_overlap_only() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let old = app.tenant_key("acme", Role::Developer).await;
    let rotated = app
        .operator
        .rotate_key(
            KeysOf::Tenant(&acme()),
            &old.key.id,
            &RotateKey {
                overlap_seconds: Some(600),
                expires_at: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(rotated.key.role, Role::Developer);
    assert_eq!(rotated.key.rotated_from.as_ref(), Some(&old.key.id));
    assert_eq!(
        rotated.previous.expires_at,
        Some(START + time::Duration::seconds(600))
    );

    let old_client = app.client(&old.token);
    let new_client = app.client(&rotated.token);
    app.clock.advance(time::Duration::seconds(599));
    assert!(old_client.me().await.is_ok(), "inside the overlap");
    assert!(new_client.me().await.is_ok());
    app.clock.advance(time::Duration::seconds(1));
    assert_problem(old_client.me().await, 401, "key_expired");
    assert!(new_client.me().await.is_ok());

    let too_long = RotateKey {
        overlap_seconds: Some(31 * 24 * 3600),
        expires_at: None,
    };
    assert_problem(
        app.operator
            .rotate_key(KeysOf::Tenant(&acme()), &rotated.key.id, &too_long)
            .await,
        422,
        "invalid_body",
    );
}

#[tokio::test]
async fn an_admin_manages_its_own_tenant_without_escalating() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    app.create_tenant("globex").await;
    let admin = app.client(&app.tenant_key("acme", Role::Admin).await.token);
    let developer = app.client(&app.tenant_key("acme", Role::Developer).await.token);
    let globex = TenantId::parse("globex").unwrap();

    let made = admin
        .create_key(KeysOf::Tenant(&acme()), &new_key(Role::Admin))
        .await
        .unwrap();
    assert_eq!(made.key.tenant, Some(acme()));
    assert_problem(
        admin
            .create_key(KeysOf::Tenant(&acme()), &new_key(Role::Operator))
            .await,
        422,
        "invalid_body",
    );
    assert_problem(
        admin
            .create_key(KeysOf::Platform, &new_key(Role::Operator))
            .await,
        403,
        "forbidden",
    );
    assert_problem(
        admin
            .create_key(KeysOf::Tenant(&globex), &new_key(Role::Reader))
            .await,
        404,
        "not_found",
    );
    assert_problem(
        developer
            .create_key(KeysOf::Tenant(&acme()), &new_key(Role::Reader))
            .await,
        403,
        "forbidden",
    );
    let globex_key = app.tenant_key("globex", Role::Reader).await;
    assert_problem(
        admin
            .revoke_key(KeysOf::Tenant(&acme()), &globex_key.key.id)
            .await,
        404,
        "not_found",
    );
    assert!(
        app.client(&globex_key.token).me().await.is_ok(),
        "untouched"
    );
}

#[tokio::test]
async fn operator_keys_are_managed_and_the_last_one_cannot_be_revoked() {
    let app = spawn_app().await;
    let me = app.operator.me().await.unwrap();
    assert_eq!((me.role, me.tenant), (Role::Operator, None));
    assert_problem(
        app.operator.revoke_key(KeysOf::Platform, &me.key_id).await,
        409,
        "invalid_transition",
    );
    assert_problem(
        app.operator
            .create_key(KeysOf::Platform, &new_key(Role::Admin))
            .await,
        422,
        "invalid_body",
    );
    let second = app
        .operator
        .create_key(KeysOf::Platform, &new_key(Role::Operator))
        .await
        .unwrap();
    let second = app.client(&second.token);
    second
        .revoke_key(KeysOf::Platform, &me.key_id)
        .await
        .unwrap();
    assert_problem(app.operator.me().await, 401, "key_revoked");
    let platform = second
        .audit(KeysOf::Platform, &PageRequest::default())
        .await
        .unwrap();
    let actions: Vec<_> = platform.items.iter().map(|e| e.action.as_str()).collect();
    // The first start also seeded the configured default plan and made the
    // gateway's first signing key.
    assert_eq!(
        actions,
        [
            "key.bootstrap",
            "plan.create",
            "signing_key.create",
            "key.create",
            "key.revoke"
        ]
    );
}

#[tokio::test]
async fn last_use_is_visible_at_once_and_written_behind() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let created = app.tenant_key("acme", Role::Reader).await;
    assert_eq!(created.key.last_used_at, None);
    app.clock.advance(time::Duration::minutes(5));
    app.client(&created.token).me().await.unwrap();
    let seen = app
        .operator
        .key(KeysOf::Tenant(&acme()), &created.key.id)
        .await
        .unwrap();
    assert_eq!(seen.last_used_at, Some(START + time::Duration::minutes(5)));

    // The default flush interval is longer than this test: only the flush at
    // shutdown can have written it.
    let (dir, config, token) = app.stop().await;
    let app = crate::helpers::restart_app(dir, config, token).await;
    let after = app
        .operator
        .key(KeysOf::Tenant(&acme()), &created.key.id)
        .await
        .unwrap();
    assert_eq!(after.last_used_at, Some(START + time::Duration::minutes(5)));
}

/// Changes made elsewhere (another node, a restore, an edit in the
/// catalog) are seen within the identify cache's ttl: a key in use is read
/// again in the background once half the ttl has passed, and any entry
/// past the ttl is read again before it is used.
#[tokio::test]
async fn changes_made_elsewhere_are_seen_within_the_identify_ttl() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    app.create_tenant("globex").await;
    let busy = app.tenant_key("acme", Role::Developer).await;
    let idle = app.tenant_key("globex", Role::Developer).await;
    let status = |token: String| {
        let app = &app;
        async move {
            let response = app
                .request(reqwest::Method::GET, "/v1/me")
                .bearer_auth(token);
            response.send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(status(busy.token.clone()).await, 200);
    assert_eq!(status(idle.token.clone()).await, 200);

    let catalog = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        app.config.data_dir.join("catalog.db").display()
    ))
    .await
    .unwrap();
    sqlx::query("UPDATE api_keys SET revoked_at = 1 WHERE id = ?")
        .bind(busy.key.id.as_str())
        .execute(&catalog)
        .await
        .unwrap();
    sqlx::query("UPDATE tenants SET status = 'suspended' WHERE id = 'globex'")
        .execute(&catalog)
        .await
        .unwrap();
    catalog.close().await;
    assert_eq!(status(busy.token.clone()).await, 200, "cached");

    // Half the 30 s ttl on: the busy key still answers from the cache, and
    // is read again behind it.
    app.clock.advance(time::Duration::seconds(15));
    assert_eq!(status(busy.token.clone()).await, 200);
    let mut refreshed = false;
    for _ in 0..200 {
        if status(busy.token.clone()).await == 401 {
            refreshed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(refreshed, "the revocation was read behind the cache");

    // The idle tenant's entry is past the ttl at its next request: read first.
    app.clock.advance(time::Duration::seconds(16));
    assert_eq!(status(idle.token.clone()).await, 403);
}
