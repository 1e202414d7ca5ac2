//! PostgreSQL row-level security for pooled tenants, on a real server that
//! the test starts and throws away.

// Helpers outside #[test] functions fail loudly too: a panic is the report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tenantd_core::testing::{member, tenant_at};
use tenantd_core::{DataScope, Isolation, Role};
use tenantd_store::postgres::{begin_tenant, check_catalog, migrate, SCHEMA};
use tenantd_store::StoreError;
use tenantd_testkit::Postgres;
use time::OffsetDateTime;

/// A cluster with an owner role that migrates and an application role that
/// only reads and writes rows, as an operator would set it up.
struct Db {
    server: Postgres,
    admin: PgPool,
    owner: PgPool,
}

async fn db() -> Db {
    let server = Postgres::start();
    let admin = PgPool::connect(&server.admin_url()).await.unwrap();
    for statement in [
        "CREATE ROLE tenantd_owner LOGIN",
        "CREATE ROLE tenantd_app LOGIN NOSUPERUSER NOBYPASSRLS",
        "CREATE DATABASE tenantd OWNER tenantd_owner",
    ] {
        sqlx::query(statement).execute(&admin).await.unwrap();
    }
    let owner_url = server.url("tenantd_owner", "tenantd");
    migrate(&owner_url.parse().unwrap(), SCHEMA, "tenantd_app")
        .await
        .unwrap();
    let owner = PgPool::connect(&owner_url).await.unwrap();
    Db {
        server,
        admin,
        owner,
    }
}

impl Db {
    async fn app(&self, connections: u32) -> PgPool {
        PgPoolOptions::new()
            .max_connections(connections)
            .connect(&self.server.url("tenantd_app", "tenantd"))
            .await
            .unwrap()
    }
}

fn scope(tenant: &str) -> DataScope {
    let now = OffsetDateTime::UNIX_EPOCH;
    member(
        &tenant_at(tenant, "default", Isolation::Pooled, now),
        Role::Developer,
        now,
    )
    .data_scope(Role::Developer)
    .unwrap()
}

async fn count(tx: &mut sqlx::Transaction<'static, sqlx::Postgres>) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM tenantd.records")
        .fetch_one(&mut **tx)
        .await
        .unwrap()
}

async fn insert(
    pool: &PgPool,
    scope: &DataScope,
    row_tenant: &str,
    id: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = begin_tenant(pool, scope.tenant(), SCHEMA).await.unwrap();
    sqlx::query("INSERT INTO tenantd.collections (tenant_id, name, indexes, created_at) VALUES ($1, 'orders', '[]', 0) ON CONFLICT DO NOTHING")
        .bind(row_tenant)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO tenantd.records (tenant_id, collection, id, version, body, size, created_at, updated_at) VALUES ($1, 'orders', $2, 1, '{\"canary\": 1}', 1, 0, 0)")
        .bind(row_tenant)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

#[tokio::test]
async fn row_level_security_isolates_tenants_and_fails_closed() {
    let db = db().await;
    let app = db.app(4).await;
    let (acme, globex) = (scope("acme"), scope("globex"));
    insert(&app, &acme, "acme", "a1").await.unwrap();
    insert(&app, &globex, "globex", "g1").await.unwrap();
    // The same id in another tenant is no conflict: keys lead with tenant_id.
    insert(&app, &globex, "globex", "a1").await.unwrap();

    let mut tx = begin_tenant(&app, acme.tenant(), SCHEMA).await.unwrap();
    assert_eq!(count(&mut tx).await, 1, "acme sees only its own row");
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT id FROM tenantd.records WHERE tenant_id = 'globex'")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
    assert!(
        ids.is_empty(),
        "naming another tenant in the query changes nothing"
    );
    tx.rollback().await.unwrap();

    let forged = insert(&app, &acme, "globex", "x").await.unwrap_err();
    assert!(
        forged.to_string().contains("row-level security"),
        "{forged}"
    );

    // No tenant set: nothing visible, nothing writable.
    let mut plain = app.begin().await.unwrap();
    assert_eq!(count(&mut plain).await, 0);
    let write =
        sqlx::query("INSERT INTO tenantd.usage (tenant_id, bytes, records) VALUES ('acme', 0, 0)")
            .execute(&mut *plain)
            .await;
    assert!(write.is_err(), "writes fail closed without a tenant");
}

#[tokio::test]
async fn the_catalog_check_refuses_a_database_where_rls_could_be_bypassed() {
    let db = db().await;
    let app = db.app(2).await;
    check_catalog(&app).await.unwrap();

    sqlx::query("ALTER TABLE tenantd.records NO FORCE ROW LEVEL SECURITY")
        .execute(&db.owner)
        .await
        .unwrap();
    let err = check_catalog(&app).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Catalog(p) if p.problems == ["tenantd.records does not FORCE ROW LEVEL SECURITY"]),
        "{err}"
    );
    sqlx::query("ALTER TABLE tenantd.records FORCE ROW LEVEL SECURITY")
        .execute(&db.owner)
        .await
        .unwrap();

    sqlx::query("ALTER TABLE tenantd.usage DISABLE ROW LEVEL SECURITY")
        .execute(&db.owner)
        .await
        .unwrap();
    let err = check_catalog(&app).await.unwrap_err().to_string();
    assert!(
        err.contains("tenantd.usage does not ENABLE ROW LEVEL SECURITY"),
        "{err}"
    );
    sqlx::query("ALTER TABLE tenantd.usage ENABLE ROW LEVEL SECURITY")
        .execute(&db.owner)
        .await
        .unwrap();
    check_catalog(&app).await.unwrap();

    sqlx::query("ALTER ROLE tenantd_app BYPASSRLS")
        .execute(&db.admin)
        .await
        .unwrap();
    let err = check_catalog(&app).await.unwrap_err().to_string();
    assert!(err.contains("has BYPASSRLS"), "{err}");
    sqlx::query("ALTER ROLE tenantd_app NOBYPASSRLS")
        .execute(&db.admin)
        .await
        .unwrap();

    sqlx::query("GRANT tenantd_owner TO tenantd_app")
        .execute(&db.admin)
        .await
        .unwrap();
    let err = check_catalog(&app).await.unwrap_err().to_string();
    assert!(err.contains("owns tenantd.records"), "{err}");
}

#[tokio::test]
async fn a_cancelled_request_leaves_no_tenant_on_the_connection() {
    let db = db().await;
    let app = db.app(1).await;
    let acme = scope("acme");
    insert(&app, &acme, "acme", "a1").await.unwrap();

    // A request that sets its tenant and is cancelled mid-transaction.
    let cancelled = tokio::time::timeout(Duration::from_millis(200), async {
        let mut tx = begin_tenant(&app, acme.tenant(), SCHEMA).await.unwrap();
        sqlx::query("SELECT pg_sleep(2)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    })
    .await;
    assert!(cancelled.is_err(), "the request was cancelled");

    // The pool has one connection: the next request gets it, or its replacement.
    let mut conn = tokio::time::timeout(Duration::from_secs(10), app.acquire())
        .await
        .unwrap()
        .unwrap();
    let setting: Option<String> =
        sqlx::query_scalar("SELECT current_setting('app.tenant_id', true)")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert!(
        setting.unwrap_or_default().is_empty(),
        "a tenant setting survived the cancelled request"
    );
    let visible: i64 = sqlx::query_scalar("SELECT count(*) FROM tenantd.records")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(visible, 0, "and nothing is visible through it");
}
