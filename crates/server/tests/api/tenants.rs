//! Tenants: creation, listing, renaming and the lifecycle as the tenant's
//! own keys feel it.

use std::time::Duration;
use tenantd_server::config::NonZeroDuration;

use tenantd_client::api::{CreateTenant, UpdateTenant};
use tenantd_client::{KeysOf, PageRequest};
use tenantd_core::{Role, TenantId, TenantStatus};

use crate::helpers::{assert_problem, metric, spawn_app, spawn_app_with, until_metric_at_least};

fn id(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

#[tokio::test]
async fn a_created_tenant_reads_back_with_defaults_and_its_id_is_unique() {
    let app = spawn_app().await;
    let created = app
        .operator
        .create_tenant(&CreateTenant::new(id("acme"), "Acme Corp"))
        .await
        .unwrap();
    assert_eq!(created.status, TenantStatus::Active);
    assert_eq!(created.plan.as_str(), "default");
    assert_eq!(created.region.as_str(), "default");
    assert_eq!(
        (created.isolation, created.pool.as_str()),
        (tenantd_core::Isolation::Pooled, "default")
    );
    assert_eq!(app.operator.tenant(&id("acme")).await.unwrap(), created);

    let again = app
        .operator
        .create_tenant(&CreateTenant::new(id("acme"), "Other"))
        .await;
    assert_problem(again, 409, "tenant_exists");
    assert_eq!(
        app.operator.tenant(&id("acme")).await.unwrap().name,
        "Acme Corp"
    );
}

#[tokio::test]
async fn names_are_validated() {
    let app = spawn_app().await;
    for name in ["", "   ", "a\u{0}b", &"x".repeat(201)] {
        let result = app
            .operator
            .create_tenant(&CreateTenant::new(id("acme"), name))
            .await;
        assert_problem(result, 422, "invalid_body");
    }
}

#[tokio::test]
async fn listing_walks_every_tenant_once_in_pages() {
    let app = spawn_app().await;
    let mut expected: Vec<String> = (0..7).map(|i| format!("tenant-{i}")).collect();
    for t in expected.iter().rev() {
        app.create_tenant(t).await;
    }
    expected.sort();
    let mut seen = Vec::new();
    let mut page = PageRequest {
        cursor: None,
        limit: Some(3),
    };
    loop {
        let got = app.operator.list_tenants(&page, None).await.unwrap();
        assert!(got.items.len() <= 3);
        seen.extend(got.items.into_iter().map(|t| t.id.to_string()));
        match got.next_cursor {
            Some(cursor) => page.cursor = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen, expected);

    app.operator.suspend_tenant(&id("tenant-3")).await.unwrap();
    let suspended = app
        .operator
        .list_tenants(&PageRequest::default(), Some(TenantStatus::Suspended))
        .await
        .unwrap();
    let ids: Vec<_> = suspended.items.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["tenant-3"]);
}

#[tokio::test]
async fn renaming_changes_the_name_only_and_is_audited() {
    let app = spawn_app().await;
    let before = app.create_tenant("acme").await;
    app.clock.advance(time::Duration::minutes(1));
    let after = app
        .operator
        .update_tenant(
            &id("acme"),
            &UpdateTenant {
                name: Some("Acme 2".into()),
                plan: None,
                billing_day: None,
                plan_version: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(after.name, "Acme 2");
    assert_eq!(
        (after.id.clone(), after.created_at),
        (before.id, before.created_at)
    );
    assert!(after.updated_at > before.updated_at);
    let trail = app
        .operator
        .audit(KeysOf::Tenant(&id("acme")), &PageRequest::default())
        .await
        .unwrap();
    let rename = trail
        .items
        .iter()
        .find(|e| e.action == "tenant.update")
        .expect("audited");
    assert_eq!(rename.details["name"]["from"], "Tenant acme");
    assert_eq!(rename.details["name"]["to"], "Acme 2");
}

#[tokio::test]
async fn suspension_locks_out_every_key_of_the_tenant_until_resumed() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    app.create_tenant("globex").await;
    let acme_admin = app.client(&app.tenant_key("acme", Role::Admin).await.token);
    let acme_reader = app.client(&app.tenant_key("acme", Role::Reader).await.token);
    let globex_admin = app.client(&app.tenant_key("globex", Role::Admin).await.token);
    // Warm the identity cache so that the test sees invalidation, not a miss.
    acme_admin.me().await.unwrap();

    app.operator.suspend_tenant(&id("acme")).await.unwrap();
    assert_problem(acme_admin.me().await, 403, "tenant_suspended");
    assert_problem(acme_reader.me().await, 403, "tenant_suspended");
    assert_problem(
        acme_admin
            .list_keys(KeysOf::Tenant(&id("acme")), &PageRequest::default())
            .await,
        403,
        "tenant_suspended",
    );
    assert!(
        globex_admin.me().await.is_ok(),
        "other tenants are not affected"
    );

    assert_problem(
        app.operator.suspend_tenant(&id("acme")).await,
        409,
        "invalid_transition",
    );
    app.operator.resume_tenant(&id("acme")).await.unwrap();
    assert!(acme_admin.me().await.is_ok());
    assert_problem(
        app.operator.resume_tenant(&id("acme")).await,
        409,
        "invalid_transition",
    );
}

#[tokio::test]
async fn soft_delete_restore_and_purge() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let admin = app.client(&app.tenant_key("acme", Role::Admin).await.token);
    admin.me().await.unwrap();

    assert_problem(
        app.operator.purge_tenant(&id("acme")).await,
        409,
        "invalid_transition",
    );
    let deleted = app.operator.delete_tenant(&id("acme")).await.unwrap();
    assert_eq!(deleted.status, TenantStatus::Deleted);
    assert!(deleted.deleted_at.is_some());
    assert_problem(admin.me().await, 403, "tenant_deleted");
    assert_problem(
        app.operator
            .create_tenant(&CreateTenant::new(id("acme"), "x"))
            .await,
        409,
        "tenant_exists",
    );
    assert_problem(
        app.operator
            .update_tenant(
                &id("acme"),
                &UpdateTenant {
                    name: Some("x".into()),
                    plan: None,
                    billing_day: None,
                    plan_version: None,
                },
            )
            .await,
        409,
        "invalid_transition",
    );

    let restored = app.operator.restore_tenant(&id("acme")).await.unwrap();
    assert_eq!(
        (restored.status, restored.deleted_at),
        (TenantStatus::Suspended, None)
    );
    assert_problem(admin.me().await, 403, "tenant_suspended");
    app.operator.resume_tenant(&id("acme")).await.unwrap();
    assert!(
        admin.me().await.is_ok(),
        "keys survive a delete and restore"
    );

    app.operator.delete_tenant(&id("acme")).await.unwrap();
    app.operator.purge_tenant(&id("acme")).await.unwrap();
    assert_problem(app.operator.tenant(&id("acme")).await, 404, "not_found");
    assert_problem(admin.me().await, 401, "invalid_api_key");
    let platform = app
        .operator
        .audit(KeysOf::Platform, &PageRequest::default())
        .await
        .unwrap();
    assert!(platform
        .items
        .iter()
        .any(|e| e.action == "tenant.purge" && e.target == "acme"));

    // The id is free again, and the new tenant inherits nothing.
    app.create_tenant("acme").await;
    let keys = app
        .operator
        .list_keys(KeysOf::Tenant(&id("acme")), &PageRequest::default())
        .await
        .unwrap();
    assert!(keys.items.is_empty());
    assert_problem(admin.me().await, 401, "invalid_api_key");
}

#[tokio::test]
async fn soft_deleted_tenants_are_purged_once_the_retention_has_passed() {
    let app = spawn_app_with(|c| {
        c.purge_after = Duration::from_secs(7 * 24 * 3600);
        c.purge_interval = NonZeroDuration::from_millis(50);
    })
    .await;
    app.create_tenant("acme").await;
    app.create_tenant("kept").await;
    app.operator.delete_tenant(&id("acme")).await.unwrap();
    app.clock.advance(time::Duration::days(6));
    app.operator.delete_tenant(&id("kept")).await.unwrap();
    // Two more sweeps: at least one whole sweep saw the clock as it is now.
    let sweeps = r#"tenantd_purge_sweeps_total{outcome="done"}"#;
    let swept = metric(&app, sweeps).await;
    until_metric_at_least(&app, sweeps, swept + 2.0).await;
    assert!(
        app.operator.tenant(&id("acme")).await.is_ok(),
        "not due yet"
    );

    app.clock.advance(time::Duration::days(1));
    let mut purged = false;
    for _ in 0..100 {
        if app.operator.tenant(&id("acme")).await.is_err() {
            purged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(purged, "acme was deleted 7 days ago and should be purged");
    assert!(
        app.operator.tenant(&id("kept")).await.is_ok(),
        "kept was deleted 1 day ago"
    );
}

#[tokio::test]
async fn tenants_are_placed_on_a_pool_of_their_region() {
    use tenantd_core::{Isolation, PoolName};
    use tenantd_server::config::{Engine, PoolConfig};
    let pool = |name: &str, region: &str, models: Vec<Isolation>| PoolConfig {
        name: name.parse().unwrap(),
        engine: Engine::Sqlite,
        location: format!("pools/{name}"),
        owner_location: None,
        region: Some(region.parse().unwrap()),
        models,
    };
    let app = spawn_app_with(|c| {
        c.default_region = "eu".parse().unwrap();
        c.pools = vec![
            pool("eu-1", "eu", vec![Isolation::Pooled]),
            pool("us-1", "us", vec![Isolation::Pooled, Isolation::Dedicated]),
        ];
    })
    .await;
    let create = |id: &str,
                  region: Option<&str>,
                  isolation: Option<Isolation>,
                  pool: Option<&str>| CreateTenant {
        region: region.map(|r| r.parse().unwrap()),
        isolation,
        pool: pool.map(|p| p.parse().unwrap()),
        ..CreateTenant::new(id.parse().unwrap(), id)
    };
    let acme = app
        .operator
        .create_tenant(&create("acme", None, None, None))
        .await
        .unwrap();
    assert_eq!((acme.region.as_str(), acme.pool.as_str()), ("eu", "eu-1"));

    // Data residency: an eu tenant never lands on a us pool.
    assert_problem(
        app.operator
            .create_tenant(&create("globex", None, None, Some("us-1")))
            .await,
        422,
        "placement_failed",
    );
    assert_problem(
        app.operator
            .create_tenant(&create("globex", None, Some(Isolation::Dedicated), None))
            .await,
        422,
        "placement_failed",
    );
    assert_problem(
        app.operator
            .create_tenant(&create("globex", Some("ap"), None, None))
            .await,
        422,
        "placement_failed",
    );
    let globex = app
        .operator
        .create_tenant(&create(
            "globex",
            Some("us"),
            Some(Isolation::Dedicated),
            None,
        ))
        .await
        .unwrap();
    assert_eq!(globex.pool, "us-1".parse::<PoolName>().unwrap());

    // Its data is written under its pool's directory.
    let client = app.client(&app.tenant_key("globex", Role::Developer).await.token);
    client
        .create_collection(&tenantd_client::api::CreateCollection {
            name: "orders".parse().unwrap(),
            indexes: vec![],
        })
        .await
        .unwrap();
    assert!(app
        .config
        .data_dir
        .join("pools/us-1/tenants/globex.db")
        .exists());
    assert!(!app
        .config
        .data_dir
        .join("pools/eu-1/tenants/globex.db")
        .exists());
}
