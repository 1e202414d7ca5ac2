//! The record store's statements on SQLite: the shared `pooled.db` of a pool
//! and every dedicated database file have the same tables, all keyed by
//! tenant first, so the same statements serve both models.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection, SqlitePool};
use tenantd_core::filter::{CmpOp, FieldPath, Literal};
use tenantd_core::{CollectionName, RecordId, TenantId};

use super::{
    push_filter, Collection, CollectionRow, Cursor, DataError, Direction, ListQuery, ListRow,
    RecordRow, Result,
};
use crate::StoreError;

pub(super) fn options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // Acknowledged writes must survive a crash of the process; FULL also
        // survives power loss, at one fsync per commit.
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5))
        // Statistics let the planner prefer a declared field's index over the
        // primary key; they are refreshed as pooled connections close.
        .optimize_on_close(true, 1000)
}

/// Opens (creating) the database file at `path` and applies its migrations.
pub(super) async fn open(
    path: &Path,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<SqlitePool, StoreError> {
    let pool = crate::hygiene(SqlitePoolOptions::new())
        // A connection to a local file does not go stale; a ping before
        // each checkout would be one more hop to SQLite's thread per query.
        .test_before_acquire(false)
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .idle_timeout(Duration::from_secs(60))
        .connect_with(options(path))
        .await?;
    // On one connection rather than through the pool: the pool's `Acquire`
    // form keeps rustc from proving this future `Send` inside spawned tasks.
    let mut conn = pool.acquire().await?;
    sqlx::migrate!("./migrations/data")
        .run_direct(&mut *conn)
        .await?;
    drop(conn);
    Ok(pool)
}

/// SQLite's extended codes for a violated unique key and a violated foreign key.
fn constraint(e: &sqlx::Error) -> Option<&'static str> {
    match e {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("1555" | "2067") => Some("unique"),
            Some("787") => Some("foreign_key"),
            _ => None,
        },
        _ => None,
    }
}

/// The expression a field path is stored and indexed under. Paths are
/// identifiers joined by dots (checked by `FieldPath::parse`), so the JSON
/// path literal cannot hold a quote; it is written into the SQL text, like a
/// column name, because SQLite matches expression indexes only on identical
/// expressions. Values are always bound.
fn field_expr(path: &FieldPath) -> String {
    format!("json_extract(body, '{}')", super::sql::json_path(path))
}

fn field_type(path: &FieldPath) -> String {
    format!("json_type(body, '{}')", super::sql::json_path(path))
}

/// Creates the indexes of declared fields: one per distinct field path,
/// led by tenant and collection so that each tenant's entries are contiguous.
pub(super) async fn create_indexes(pool: &SqlitePool, indexes: &[FieldPath]) -> Result<()> {
    for path in indexes {
        let ddl = format!(
            "CREATE INDEX IF NOT EXISTS \"ix_field_{}\" ON records (tenant_id, collection, {}, id)",
            path.segments().join("__"),
            field_expr(path)
        );
        sqlx::query(&ddl).execute(pool).await?;
    }
    Ok(())
}

pub(super) async fn insert_collection(
    c: &mut SqliteConnection,
    tenant: &TenantId,
    row: &CollectionRow,
) -> Result<()> {
    let inserted = sqlx::query(
        "INSERT INTO collections (tenant_id, name, indexes, created_at) VALUES (?, ?, ?, ?)",
    )
    .bind(tenant.as_str())
    .bind(&row.name)
    .bind(&row.indexes)
    .bind(row.created_at)
    .execute(c)
    .await;
    match inserted {
        Err(e) if constraint(&e) == Some("unique") => Err(DataError::CollectionExists),
        other => other.map(drop).map_err(Into::into),
    }
}

pub(super) async fn collection(
    c: &mut SqliteConnection,
    tenant: &TenantId,
    name: &CollectionName,
) -> Result<Option<CollectionRow>> {
    Ok(sqlx::query_as(
        "SELECT name, indexes, created_at FROM collections WHERE tenant_id = ? AND name = ?",
    )
    .bind(tenant.as_str())
    .bind(name.as_str())
    .fetch_optional(c)
    .await?)
}

/// Up to `limit` collections named after `after` (all when it is empty), by name.
pub(super) async fn collections(
    c: &mut SqliteConnection,
    tenant: &TenantId,
    after: &str,
    limit: i64,
) -> Result<Vec<CollectionRow>> {
    Ok(sqlx::query_as(
        "SELECT name, indexes, created_at FROM collections WHERE tenant_id = ? AND name > ? ORDER BY name LIMIT ?",
    )
    .bind(tenant.as_str())
    .bind(after)
    .bind(limit)
    .fetch_all(c)
    .await?)
}

/// Deletes a collection with its records; returns the bytes and records it
/// held, or `None` when there was no such collection.
pub(super) async fn delete_collection(
    c: &mut SqliteConnection,
    tenant: &TenantId,
    name: &CollectionName,
) -> Result<Option<(i64, i64)>> {
    let held: (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(size), 0), count(*) FROM records WHERE tenant_id = ? AND collection = ?",
    )
    .bind(tenant.as_str())
    .bind(name.as_str())
    .fetch_one(&mut *c)
    .await?;
    let deleted = sqlx::query("DELETE FROM collections WHERE tenant_id = ? AND name = ?")
        .bind(tenant.as_str())
        .bind(name.as_str())
        .execute(c)
        .await?
        .rows_affected();
    Ok((deleted > 0).then_some(held))
}

/// One record; `for_update` matters only to engines with row locks.
pub(super) async fn record(
    c: &mut SqliteConnection,
    tenant: &TenantId,
    collection: &CollectionName,
    id: &RecordId,
    _for_update: bool,
) -> Result<Option<RecordRow>> {
    Ok(sqlx::query_as(
        "SELECT id, version, body, size, created_at, updated_at FROM records
         WHERE tenant_id = ? AND collection = ? AND id = ?",
    )
    .bind(tenant.as_str())
    .bind(collection.as_str())
    .bind(id.as_str())
    .fetch_optional(c)
    .await?)
}

/// Every record of a collection, by id.
pub(super) async fn records(
    c: &mut SqliteConnection,
    tenant: &TenantId,
    collection: &str,
) -> Result<Vec<RecordRow>> {
    Ok(sqlx::query_as(
        "SELECT id, version, body, size, created_at, updated_at FROM records
         WHERE tenant_id = ? AND collection = ? ORDER BY id",
    )
    .bind(tenant.as_str())
    .bind(collection)
    .fetch_all(c)
    .await?)
}

pub(super) async fn insert_record(
    c: &mut SqliteConnection,
    tenant: &TenantId,
    collection: &str,
    row: &RecordRow,
) -> Result<()> {
    let inserted = sqlx::query(
        "INSERT INTO records (tenant_id, collection, id, version, body, size, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(tenant.as_str())
    .bind(collection)
    .bind(&row.id)
    .bind(row.version)
    .bind(&row.body)
    .bind(row.size)
    .bind(row.created_at)
    .bind(row.updated_at)
    .execute(c)
    .await;
    match inserted {
        Err(e) if constraint(&e) == Some("unique") => Err(DataError::RecordExists),
        Err(e) if constraint(&e) == Some("foreign_key") => Err(DataError::CollectionNotFound),
        other => other.map(drop).map_err(Into::into),
    }
}

/// Replaces a record's body, bumping its version.
pub(super) async fn update_record(
    c: &mut SqliteConnection,
    tenant: &TenantId,
    collection: &CollectionName,
    row: &RecordRow,
) -> Result<()> {
    sqlx::query(
        "UPDATE records SET body = ?, size = ?, version = ?, updated_at = ?
         WHERE tenant_id = ? AND collection = ? AND id = ?",
    )
    .bind(&row.body)
    .bind(row.size)
    .bind(row.version)
    .bind(row.updated_at)
    .bind(tenant.as_str())
    .bind(collection.as_str())
    .bind(&row.id)
    .execute(c)
    .await?;
    Ok(())
}

pub(super) async fn delete_record(
    c: &mut SqliteConnection,
    tenant: &TenantId,
    collection: &CollectionName,
    id: &RecordId,
) -> Result<()> {
    sqlx::query("DELETE FROM records WHERE tenant_id = ? AND collection = ? AND id = ?")
        .bind(tenant.as_str())
        .bind(collection.as_str())
        .bind(id.as_str())
        .execute(c)
        .await?;
    Ok(())
}

pub(super) async fn usage(
    c: &mut SqliteConnection,
    tenant: &TenantId,
) -> Result<Option<(i64, i64)>> {
    Ok(
        sqlx::query_as("SELECT bytes, records FROM usage WHERE tenant_id = ?")
            .bind(tenant.as_str())
            .fetch_optional(c)
            .await?,
    )
}

pub(super) async fn add_usage(
    c: &mut SqliteConnection,
    tenant: &TenantId,
    bytes: i64,
    records: i64,
) -> Result<()> {
    // An UPDATE first: an upsert would check the CHECK constraints against a
    // negative delta as if it were the new row.
    let updated = sqlx::query(
        "UPDATE usage SET bytes = bytes + ?, records = records + ? WHERE tenant_id = ?",
    )
    .bind(bytes)
    .bind(records)
    .bind(tenant.as_str())
    .execute(&mut *c)
    .await?
    .rows_affected();
    if updated == 0 {
        sqlx::query("INSERT INTO usage (tenant_id, bytes, records) VALUES (?, ?, ?)")
            .bind(tenant.as_str())
            .bind(bytes)
            .bind(records)
            .execute(c)
            .await?;
    }
    Ok(())
}

/// Deletes every row of `tenant` in one database.
pub(super) async fn delete_tenant_rows(c: &mut SqliteConnection, tenant: &TenantId) -> Result<()> {
    for table in ["records", "collections", "usage"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = ?"))
            .bind(tenant.as_str())
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

/// A page of records matching `query`, in its order.
pub(super) async fn list(
    c: &mut SqliteConnection,
    tenant: &TenantId,
    collection: &Collection,
    query: &ListQuery,
) -> Result<Vec<ListRow>> {
    let mut sql = list_sql(tenant, collection, query)?;
    Ok(sql.build_query_as().fetch_all(c).await?)
}

/// The SELECT of a list: scoped to the tenant and collection, the filter
/// and keyset bound, ordered by the sort field (through its index) and id.
fn list_sql<'a>(
    tenant: &'a TenantId,
    collection: &'a Collection,
    query: &ListQuery,
) -> Result<QueryBuilder<'a, Sqlite>> {
    let mut sql =
        QueryBuilder::<Sqlite>::new("SELECT id, version, body, size, created_at, updated_at, ");
    match &query.sort {
        Some((field, _)) => sql.push(format!("json_quote({}) AS sort_key", field_expr(field))),
        None => sql.push("NULL AS sort_key"),
    };
    sql.push(" FROM records WHERE tenant_id = ");
    sql.push_bind(tenant.as_str());
    sql.push(" AND collection = ");
    sql.push_bind(collection.name.as_str());
    if let Some(filter) = &query.filter {
        sql.push(" AND ");
        push_filter(&mut sql, filter, push_comparison);
    }
    if let Some(after) = &query.after {
        sql.push(" AND ");
        push_keyset(&mut sql, query.sort.as_ref(), after)?;
    }
    let dir = match query.sort {
        Some((_, Direction::Descending)) => "DESC",
        _ => "ASC",
    };
    sql.push(" ORDER BY ");
    if let Some((field, _)) = &query.sort {
        sql.push(format!("{} {dir}, ", field_expr(field)));
    }
    sql.push(format!("id {dir} LIMIT "));
    sql.push_bind(i64::from(query.limit));

    Ok(sql)
}

/// One typed comparison, with its value bound: a string never equals or
/// orders against a number, and `true` is not `1`, unlike in plain SQLite.
fn push_comparison(
    sql: &mut QueryBuilder<'_, Sqlite>,
    field: &FieldPath,
    op: CmpOp,
    value: &Literal,
) {
    let ty = field_type(field);
    match value {
        Literal::Null => {
            // Missing and JSON null both count as null.
            sql.push(format!("(coalesce({ty}, 'null') = 'null')"));
        }
        Literal::Bool(b) => {
            sql.push(format!(
                "(coalesce({ty}, '') = '{}')",
                if *b { "true" } else { "false" }
            ));
        }
        Literal::Number(n) => {
            sql.push(format!(
                "(coalesce({ty}, '') IN ('integer', 'real') AND {} {} ",
                field_expr(field),
                super::sql::operator(op)
            ));
            sql.push_bind(*n);
            sql.push(")");
        }
        Literal::String(s) => {
            sql.push(format!(
                "(coalesce({ty}, '') = 'text' AND {} {} ",
                field_expr(field),
                super::sql::operator(op)
            ));
            sql.push_bind(s.clone());
            sql.push(")");
        }
    }
}

/// Binds a sort value as the SQL value `json_extract` yields for it.
fn push_sort_value(sql: &mut QueryBuilder<'_, Sqlite>, value: &Value) -> Result<()> {
    match value {
        Value::Number(n) if n.is_i64() => sql.push_bind(n.as_i64()),
        Value::Number(n) => sql.push_bind(n.as_f64()),
        Value::String(s) => sql.push_bind(s.clone()),
        _ => return Err(DataError::InvalidBody("the cursor is not valid".into())),
    };
    Ok(())
}

/// The condition for rows after `after` in the list's order. SQLite sorts
/// NULL first ascending and last descending; the id breaks ties.
fn push_keyset(
    sql: &mut QueryBuilder<'_, Sqlite>,
    sort: Option<&(FieldPath, Direction)>,
    after: &Cursor,
) -> Result<()> {
    let Some((field, dir)) = sort else {
        sql.push("id > ");
        sql.push_bind(after.id.as_str().to_owned());
        return Ok(());
    };
    let x = field_expr(field);
    let (cmp, null_after) = match dir {
        Direction::Ascending => (">", false),
        Direction::Descending => ("<", true),
    };
    match after.sort_value.as_ref().unwrap_or(&Value::Null) {
        Value::Null => {
            if null_after {
                sql.push(format!("({x} IS NULL AND id {cmp} "));
                sql.push_bind(after.id.as_str().to_owned());
                sql.push(")");
            } else {
                sql.push(format!("(({x} IS NULL AND id {cmp} "));
                sql.push_bind(after.id.as_str().to_owned());
                sql.push(format!(") OR {x} IS NOT NULL)"));
            }
        }
        value => {
            sql.push(format!("({x} {cmp} "));
            push_sort_value(sql, value)?;
            sql.push(format!(" OR ({x} = "));
            push_sort_value(sql, value)?;
            sql.push(format!(" AND id {cmp} "));
            sql.push_bind(after.id.as_str().to_owned());
            sql.push(")");
            if null_after {
                sql.push(format!(" OR {x} IS NULL"));
            }
            sql.push(")");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{BatchOp, DataLimits, DataStore};
    use super::*;
    use crate::cache::CacheLimits;
    use serde_json::json;
    use tenantd_core::filter::Filter;
    use tenantd_core::testing::{member, tenant_at};
    use tenantd_core::{DataScope, Isolation, PoolName, Role};
    use time::OffsetDateTime;

    /// SQLite's plan for a list, one line per step.
    async fn plan(
        pool: &SqlitePool,
        scope: &DataScope,
        collection: &Collection,
        query: &ListQuery,
    ) -> Vec<String> {
        let text = format!(
            "EXPLAIN QUERY PLAN {}",
            list_sql(scope.tenant(), collection, query).unwrap().sql()
        );
        // Bind the list's own parameters to the EXPLAIN of its text.
        let mut explain = sqlx::query_as::<_, (i64, i64, i64, String)>(&text);
        explain = explain
            .bind(scope.tenant().as_str())
            .bind(collection.name.as_str());
        if query.filter.is_some() {
            explain = explain.bind("c042");
        }
        let rows = explain
            .bind(i64::from(query.limit))
            .fetch_all(pool)
            .await
            .unwrap();
        rows.into_iter().map(|r| r.3).collect()
    }

    #[tokio::test]
    async fn declared_fields_are_served_by_their_index() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CacheLimits {
            capacity_bytes: 0,
            tenant_share_percent: tenantd_core::share::Percent::ALL,
            ttl: Duration::from_secs(1),
        };
        let pools = [super::super::StoragePool::sqlite(
            PoolName::default_pool(),
            dir.path(),
        )];
        let store = DataStore::open(
            &pools,
            DataLimits {
                max_record_bytes: 1024,
            },
            super::super::Connections::default(),
            cache,
        )
        .await
        .unwrap();
        let now = OffsetDateTime::UNIX_EPOCH;
        let tenant = tenant_at("acme", "default", Isolation::Pooled, now);
        let scope = member(&tenant, Role::Developer, now)
            .data_scope(Role::Reader)
            .unwrap();
        let customer = FieldPath::parse("customer").unwrap();
        let name = CollectionName::parse("orders").unwrap();
        let collection = store
            .create_collection(&scope, &name, std::slice::from_ref(&customer), now)
            .await
            .unwrap();
        let ops = (0..2000)
            .map(|n| BatchOp::Create {
                id: RecordId::parse(&format!("r{n:05}")).unwrap(),
                body: json!({ "customer": format!("c{:03}", n % 100), "total": n }),
            })
            .collect();
        store.write(&scope, &name, ops, now).await.unwrap();
        // What `optimize_on_close` does as connections cycle: gather the
        // statistics the planner needs to prefer a selective index.
        let pool = store.sqlite_pool(&scope).await;
        sqlx::query("ANALYZE").execute(&pool).await.unwrap();

        let by_customer = ListQuery {
            filter: Some(Filter::parse("customer = \"c042\"").unwrap()),
            limit: 100,
            ..Default::default()
        };
        let steps = plan(&pool, &scope, &collection, &by_customer).await;
        assert!(
            steps.iter().any(|s| s.contains("ix_field_customer")),
            "the filter should use the index: {steps:?}"
        );

        let sorted = ListQuery {
            sort: Some((customer, Direction::Ascending)),
            limit: 100,
            ..Default::default()
        };
        let steps = plan(&pool, &scope, &collection, &sorted).await;
        assert!(
            steps.iter().any(|s| s.contains("ix_field_customer")),
            "the sort should use the index: {steps:?}"
        );
        assert!(
            !steps.iter().any(|s| s.contains("TEMP B-TREE")),
            "no separate sort step: {steps:?}"
        );
    }
}
