//! PostgreSQL's safety rails for tenant data: migrations that give every
//! tenant table row-level security, transactions bound to one tenant, and
//! the catalog check that refuses a database where it could be bypassed.

use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, PgConnection, PgPool, Postgres, Transaction};
use tenantd_core::TenantId;

use crate::StoreError;

/// The schema holding pooled tenant tables (and, in a dedicated database,
/// the tenant's tables). Tenants on the schema model have their own schema
/// named `t_<tenant id>`.
pub const SCHEMA: &str = "tenantd";

/// The tables every tenant schema holds; the application may use these rows
/// and nothing else.
const TABLES: [&str; 4] = ["collections", "records", "usage", "departures"];

/// Checks that `url` is a PostgreSQL connection URL. The message never
/// repeats the URL, which may hold a password.
pub fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("it must start with postgres:// or postgresql://".into());
    }
    url.parse::<PgConnectOptions>()
        .map(drop)
        .map_err(|e| e.to_string().replace(url, "…"))
}

/// `name` as a quoted SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The tenant-data migrations, compiled in.
static MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Creates `schema` if needed and applies the tenant-data migrations to it,
/// connected with `owner` (who owns what it creates), then grants `app_role`
/// the row access it needs and nothing more: no ownership, so no way to turn
/// row-level security off. Each schema keeps its own migration history.
pub async fn migrate(
    owner: &PgConnectOptions,
    schema: &str,
    app_role: &str,
) -> Result<(), StoreError> {
    let mut conn = owner.connect().await?;
    let quoted = quote_ident(schema);
    // One migrator per schema at a time, across processes; the lock is the
    // session's and ends with the connection at the latest.
    sqlx::query("SELECT pg_advisory_lock(hashtext('tenantd.migrate.' || $1))")
        .bind(schema)
        .execute(&mut conn)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {quoted}"))
        .execute(&mut conn)
        .await?;
    // Session-wide, on a connection of its own that is closed below: the
    // migrations name no schema, and their history lands here too.
    sqlx::query(&format!("SET search_path TO {quoted}"))
        .execute(&mut conn)
        .await?;
    apply_migrations(&mut conn, schema).await?;
    let role = quote_ident(app_role);
    let tables: Vec<String> = TABLES.iter().map(|t| format!("{quoted}.{t}")).collect();
    for grant in [
        format!("GRANT USAGE ON SCHEMA {quoted} TO {role}"),
        format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {role}",
            tables.join(", ")
        ),
    ] {
        sqlx::query(&grant).execute(&mut conn).await?;
    }
    conn.close().await?;
    Ok(())
}

/// Applies each migration not yet in the schema's history, in its own
/// transaction. sqlx's runner is not used here: it is generic over
/// `Acquire` in a way that keeps rustc from proving the future `Send` when
/// a spawned task (a move job, a purge) creates a schema.
async fn apply_migrations(conn: &mut PgConnection, schema: &str) -> Result<(), StoreError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS _tenantd_migrations (
            version bigint PRIMARY KEY,
            description text NOT NULL,
            checksum bytea NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .execute(&mut *conn)
    .await?;
    for migration in MIGRATIONS.iter() {
        let applied: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT checksum FROM _tenantd_migrations WHERE version = $1")
                .bind(migration.version)
                .fetch_optional(&mut *conn)
                .await?;
        match applied {
            Some(checksum) if checksum == *migration.checksum => continue,
            Some(_) => {
                return Err(StoreError::Corrupt(format!(
                    "migration {} of schema {schema} changed after it was applied",
                    migration.version
                )))
            }
            None => {}
        }
        sqlx::query("BEGIN").execute(&mut *conn).await?;
        // A plain string runs as a simple query, which may hold many statements.
        let applied = match (&mut *conn).execute(&*migration.sql).await {
            Ok(_) => sqlx::query(
                "INSERT INTO _tenantd_migrations (version, description, checksum) VALUES ($1, $2, $3)",
            )
            .bind(migration.version)
            .bind(&*migration.description)
            .bind(&*migration.checksum)
            .execute(&mut *conn)
            .await
            .map(drop),
            Err(e) => Err(e),
        };
        let end = if applied.is_ok() {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        sqlx::query(end).execute(&mut *conn).await?;
        applied?;
    }
    Ok(())
}

/// Begins a transaction whose statements see and write only `tenant`'s rows
/// (row-level security) of the tables in `schema` (the search path). Both
/// settings are transaction-local (`set_config(…, true)`), so they end with
/// the transaction, committed, rolled back or cancelled, and never reach the
/// next user of the connection.
pub async fn begin_tenant(
    pool: &PgPool,
    tenant: &TenantId,
    schema: &str,
) -> Result<Transaction<'static, Postgres>, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "SELECT set_config('app.tenant_id', $1, true), set_config('search_path', $2, true)",
    )
    .bind(tenant.as_str())
    .bind(quote_ident(schema))
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

/// Checks, as the application's role, that every table of the tenant
/// schemas (`tenantd` and every `t_…`) has row-level security enabled and
/// forced with a policy, and that the role cannot bypass it (superuser,
/// BYPASSRLS, owner, or member of owner). Migration history is not tenant
/// data and the role has no access to it.
pub async fn check_catalog(app: &PgPool) -> Result<(), StoreError> {
    // On one connection: see `data::pg::PgStorage::dedicated`.
    let mut conn = app.acquire().await?;
    let mut problems = Vec::new();
    let (superuser, bypass, role): (bool, bool, String) = sqlx::query_as(
        "SELECT rolsuper, rolbypassrls, rolname::text FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut *conn)
    .await?;
    if superuser {
        problems.push(format!("role {role} is a superuser"));
    }
    if bypass {
        problems.push(format!("role {role} has BYPASSRLS"));
    }
    let tables: Vec<(String, bool, bool, bool, i64)> = sqlx::query_as(
        "SELECT n.nspname || '.' || c.relname, c.relrowsecurity, c.relforcerowsecurity,
                pg_has_role(current_user, c.relowner, 'MEMBER'),
                (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE (n.nspname = $1 OR n.nspname LIKE 't\\_%') AND c.relkind IN ('r', 'p')
           AND c.relname <> '_tenantd_migrations'
         ORDER BY 1",
    )
    .bind(SCHEMA)
    .fetch_all(&mut *conn)
    .await?;
    if tables.is_empty() {
        problems.push(format!("schema {SCHEMA} has no tables (not migrated?)"));
    }
    for (table, enabled, forced, owns, policies) in tables {
        if !enabled {
            problems.push(format!("{table} does not ENABLE ROW LEVEL SECURITY"));
        }
        if !forced {
            problems.push(format!("{table} does not FORCE ROW LEVEL SECURITY"));
        }
        if owns {
            problems.push(format!(
                "role {role} owns {table} (or is a member of its owner)"
            ));
        }
        if policies == 0 {
            problems.push(format!("{table} has no policy"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Catalog(CatalogProblems { problems }))
    }
}
