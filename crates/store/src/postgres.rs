//! PostgreSQL foundations for pooled tenant data: the schema with row-level
//! security, transactions bound to one tenant, and the catalog check that
//! refuses a database where row-level security could be bypassed.
//!
//! Not yet wired to the data API, which serves from SQLite pools today.

use sqlx::{PgPool, Postgres, Transaction};
use tenantd_core::DataScope;

use crate::StoreError;

/// The schema holding pooled tenant tables.
pub const SCHEMA: &str = "tenantd";

/// Applies the schema as its owner and grants `app_role` the row access it
/// needs and nothing more (no ownership, so no way to turn RLS off).
pub async fn migrate(owner: &PgPool, app_role: &str) -> Result<(), StoreError> {
    if app_role.is_empty()
        || !app_role
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(StoreError::Corrupt(format!(
            "{app_role:?} is not a plain role name"
        )));
    }
    sqlx::migrate!("./migrations/postgres").run(owner).await?;
    for grant in [
        format!("GRANT USAGE ON SCHEMA {SCHEMA} TO {app_role}"),
        format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {SCHEMA} TO {app_role}"
        ),
    ] {
        sqlx::query(&grant).execute(owner).await?;
    }
    Ok(())
}

/// Begins a transaction whose statements see and write only `scope`'s rows.
/// The setting is transaction-local (`set_config(…, true)`), so it ends with
/// the transaction and never leaks to the next user of the connection.
pub async fn begin_tenant(
    pool: &PgPool,
    scope: &DataScope,
) -> Result<Transaction<'static, Postgres>, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(scope.tenant().as_str())
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// What makes a database unsafe to serve tenants from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refusing to serve tenant data from this PostgreSQL database: {}", .problems.join("; "))]
pub struct CatalogProblems {
    pub problems: Vec<String>,
}

/// Checks, as the application's role, that every table of the tenant schema
/// has row-level security enabled and forced with a policy, and that the
/// role cannot bypass it (superuser, BYPASSRLS, owner, or member of owner).
pub async fn check_catalog(app: &PgPool) -> Result<(), StoreError> {
    let mut problems = Vec::new();
    let (superuser, bypass, role): (bool, bool, String) = sqlx::query_as(
        "SELECT rolsuper, rolbypassrls, rolname::text FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(app)
    .await?;
    if superuser {
        problems.push(format!("role {role} is a superuser"));
    }
    if bypass {
        problems.push(format!("role {role} has BYPASSRLS"));
    }
    let tables: Vec<(String, bool, bool, bool, i64)> = sqlx::query_as(
        "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity,
                pg_has_role(current_user, c.relowner, 'MEMBER'),
                (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')
         ORDER BY c.relname",
    )
    .bind(SCHEMA)
    .fetch_all(app)
    .await?;
    if tables.is_empty() {
        problems.push(format!("schema {SCHEMA} has no tables (not migrated?)"));
    }
    for (table, enabled, forced, owns, policies) in tables {
        if !enabled {
            problems.push(format!(
                "{SCHEMA}.{table} does not ENABLE ROW LEVEL SECURITY"
            ));
        }
        if !forced {
            problems.push(format!(
                "{SCHEMA}.{table} does not FORCE ROW LEVEL SECURITY"
            ));
        }
        if owns {
            problems.push(format!(
                "role {role} owns {SCHEMA}.{table} (or is a member of its owner)"
            ));
        }
        if policies == 0 {
            problems.push(format!("{SCHEMA}.{table} has no policy"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Catalog(CatalogProblems { problems }))
    }
}
