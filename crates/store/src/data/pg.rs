//! The record store's statements on PostgreSQL, and where each model keeps a
//! tenant's tables: the shared schema `tenantd` (pooled, guarded by
//! row-level security), a schema of the tenant's own (schema), or the
//! `tenantd` schema of a database of its own (dedicated). The tables are the
//! same everywhere; every transaction sets the tenant and the search path,
//! so the statements here never name a schema.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder, Transaction};
use tenantd_core::filter::{CmpOp, FieldPath, Literal};
use tenantd_core::{CollectionName, RecordId, TenantId};

use super::{
    push_filter, Collection, CollectionRow, Cursor, DataError, Direction, ListQuery, ListRow,
    RecordRow, Result,
};
use crate::postgres::{begin_tenant, check_catalog, migrate, quote_ident, SCHEMA};
use crate::StoreError;

/// Connections of the application's pool on a pool's main database.
const MAIN_CONNECTIONS: u32 = 16;
/// Connections per dedicated database (application and owner each); also
/// the requests a tenant may have at its dedicated database at once
/// (`DataStore::reserve`).
pub(super) const DEDICATED_CONNECTIONS: u32 = 2;

/// Options of every pool here: bounded waits for a connection, idle ones
/// closed after a minute, and none handed out inside a transaction.
fn pool_options(max_connections: u32, acquire_timeout: Duration) -> PgPoolOptions {
    crate::hygiene(PgPoolOptions::new())
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .idle_timeout(Duration::from_secs(60))
}

/// One PostgreSQL storage pool: the main database (the pooled schema and the
/// tenants' own schemas) and the server on which dedicated databases are made.
#[derive(Debug, Clone)]
pub(super) struct PgStorage {
    app: PgPool,
    owner: PgPool,
    app_options: PgConnectOptions,
    owner_options: PgConnectOptions,
    app_role: String,
    database: String,
    acquire_timeout: Duration,
    /// Tenant schemas known to exist with their migrations applied.
    schemas: Cache<TenantId, ()>,
}

/// Where one tenant's tables are: a database and the schema within it.
#[derive(Debug, Clone)]
pub(crate) struct PgDatabase {
    app: PgPool,
    owner: PgPool,
    schema: Arc<str>,
}

/// A PostgreSQL identifier for one tenant's schema or database: `prefix`
/// and the tenant id, or, where that would pass PostgreSQL's 63-byte limit
/// (which silently truncates, and so could merge two tenants), a prefix of
/// it and a hash of the whole.
fn tenant_identifier(prefix: &str, tenant: &TenantId) -> String {
    let full = format!("{prefix}{tenant}");
    if full.len() <= 63 {
        return full;
    }
    let hash = Sha256::digest(full.as_bytes());
    let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}_{hex}", &full[..46])
}

/// The schema of a tenant on the schema model.
pub(crate) fn tenant_schema(tenant: &TenantId) -> String {
    tenant_identifier("t_", tenant)
}

impl PgStorage {
    /// Connects as the owner to apply migrations, then as the application,
    /// and refuses the pool if the application could bypass row-level security.
    pub(super) async fn open(
        app_url: &str,
        owner_url: &str,
        connections: super::Connections,
    ) -> Result<Self, StoreError> {
        let acquire_timeout = connections.acquire_timeout;
        // A statement waiting on a lock (another session holding a table)
        // fails after the acquire timeout too, instead of holding its
        // connection, and the tenant's request with it, to the deadline.
        let lock_timeout = format!("{}ms", acquire_timeout.as_millis());
        let app_options: PgConnectOptions = app_url
            .parse::<PgConnectOptions>()?
            .options([("lock_timeout", lock_timeout.as_str())]);
        let owner_options: PgConnectOptions = owner_url.parse()?;
        let app_role = app_options.get_username().to_owned();
        let database = app_options
            .get_database()
            .unwrap_or(app_options.get_username())
            .to_owned();
        migrate(&owner_options, SCHEMA, &app_role).await?;
        let app = pool_options(MAIN_CONNECTIONS, acquire_timeout)
            .connect_with(app_options.clone())
            .await?;
        check_catalog(&app).await?;
        let owner = pool_options(2, acquire_timeout).connect_lazy_with(owner_options.clone());
        Ok(Self {
            app,
            owner,
            app_options,
            owner_options,
            app_role,
            database,
            acquire_timeout,
            schemas: Cache::builder().max_capacity(100_000).build(),
        })
    }

    pub(super) fn pooled(&self) -> PgDatabase {
        PgDatabase {
            app: self.app.clone(),
            owner: self.owner.clone(),
            schema: SCHEMA.into(),
        }
    }

    /// The tenant's own schema, created and migrated on first use.
    pub(super) async fn schema(&self, tenant: &TenantId) -> Result<PgDatabase> {
        let schema = tenant_schema(tenant);
        if !self.schemas.contains_key(tenant) {
            // Concurrent first uses both migrate; the migration lock and its
            // history make the second a no-op.
            migrate(&self.owner_options, &schema, &self.app_role).await?;
            self.schemas.insert(tenant.clone(), ());
        }
        Ok(PgDatabase {
            app: self.app.clone(),
            owner: self.owner.clone(),
            schema: schema.into(),
        })
    }

    fn dedicated_name(&self, tenant: &TenantId) -> String {
        tenant_identifier(&format!("{}_", self.database), tenant)
    }

    /// Opens the tenant's own database, creating and migrating it on first
    /// use; the caller keeps it open.
    pub(super) async fn dedicated(&self, tenant: &TenantId) -> Result<PgDatabase, StoreError> {
        let name = self.dedicated_name(tenant);
        // Statements here run on a connection, not through the pool: this
        // future is polled inside the cache of open databases, where rustc
        // cannot prove the pool's executor `Send` for every lifetime.
        let mut conn = self.owner.acquire().await?;
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
                .bind(&name)
                .fetch_optional(&mut *conn)
                .await?;
        if exists.is_none() {
            let created = sqlx::query(&format!("CREATE DATABASE {}", quote_ident(&name)))
                .execute(&mut *conn)
                .await;
            match created {
                // Another process created it first.
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
                other => other.map(drop)?,
            }
        }
        let owner_options = self.owner_options.clone().database(&name);
        migrate(&owner_options, SCHEMA, &self.app_role).await?;
        let app = pool_options(DEDICATED_CONNECTIONS, self.acquire_timeout)
            .connect_with(self.app_options.clone().database(&name))
            .await?;
        check_catalog(&app).await?;
        let owner = pool_options(DEDICATED_CONNECTIONS, self.acquire_timeout)
            .connect_lazy_with(owner_options);
        Ok(PgDatabase {
            app,
            owner,
            schema: SCHEMA.into(),
        })
    }

    /// Drops the tenant's own schema, if any.
    pub(super) async fn drop_schema(&self, tenant: &TenantId) -> Result<(), StoreError> {
        let schema = tenant_schema(tenant);
        self.schemas.invalidate(tenant);
        sqlx::query(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote_ident(&schema)
        ))
        .execute(&self.owner)
        .await?;
        Ok(())
    }

    /// Drops the tenant's own database, if any, once `open` (its pools, if
    /// this process had them) is closed. Closed connections take a moment to
    /// leave the server, and the owner may not terminate the application's,
    /// so a busy database is retried for a while before the error is
    /// reported. Each retry closes `open` again: sqlx 0.8 lets a connection
    /// whose return to the pool was in flight when the pool closed land in
    /// the idle queue afterwards, where only another close finds it.
    pub(super) async fn drop_database(
        &self,
        tenant: &TenantId,
        open: Option<&PgDatabase>,
    ) -> Result<(), StoreError> {
        let statement = format!(
            "DROP DATABASE IF EXISTS {}",
            quote_ident(&self.dedicated_name(tenant))
        );
        let mut wait = Duration::from_millis(10);
        loop {
            match sqlx::query(&statement).execute(&self.owner).await {
                // 55006: the database is being accessed by other users.
                Err(sqlx::Error::Database(e))
                    if e.code().as_deref() == Some("55006") && wait < Duration::from_secs(5) =>
                {
                    tokio::time::sleep(wait).await;
                    if let Some(open) = open {
                        open.close().await;
                    }
                    wait *= 2;
                }
                other => return other.map(drop).map_err(Into::into),
            }
        }
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.app).await?;
        Ok(())
    }

    pub(super) async fn close(&self) {
        self.app.close().await;
        self.owner.close().await;
    }
}

/// The advisory lock of one tenant's writes in one schema: every write
/// transaction holds it shared, a move holds it exclusively while it copies.
/// Per schema, because a move within one database (pooled to schema) writes
/// to the target while it holds the source.
fn write_lock(schema: &str, tenant: &TenantId) -> i64 {
    let hash = Sha256::digest(format!("{schema}/{tenant}").as_bytes());
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&hash[..8]);
    i64::from_be_bytes(bytes)
}

impl PgDatabase {
    /// Begins a transaction bound to `tenant` and this database's schema.
    pub(super) async fn begin(&self, tenant: &TenantId) -> Result<Transaction<'static, Postgres>> {
        Ok(begin_tenant(&self.app, tenant, &self.schema).await?)
    }

    /// Begins a transaction for a tenant's write, refused with
    /// `DataError::Maintenance` while a move holds the tenant's writes here
    /// (from any node) or after the tenant moved away from here. The shared
    /// lock is the transaction's, so it ends with the commit; a try, so a
    /// held tenant is answered at once instead of waiting out the move.
    pub(super) async fn begin_write(
        &self,
        tenant: &TenantId,
    ) -> Result<Transaction<'static, Postgres>> {
        let mut tx = self.begin(tenant).await?;
        let open: bool = sqlx::query_scalar(
            "SELECT pg_try_advisory_xact_lock_shared($1)
                    AND NOT EXISTS (SELECT 1 FROM departures WHERE tenant_id = $2)",
        )
        .bind(write_lock(&self.schema, tenant))
        .bind(tenant.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match &e {
            // The schema was dropped by a move's cleaning, which a node that
            // has not heard of the move yet learns here.
            sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => {
                DataError::Maintenance
            }
            _ => e.into(),
        })?;
        if !open {
            return Err(DataError::Maintenance);
        }
        Ok(tx)
    }

    /// Holds `tenant`'s writes to this schema on every node until the
    /// returned connection closes: waits (at most the pool's lock timeout)
    /// for writes in flight, while new ones are refused at once. The
    /// connection leaves the pool, so the lock lives exactly as long as it.
    pub(super) async fn hold_writes(&self, tenant: &TenantId) -> Result<PgConnection> {
        let mut conn = self.app.acquire().await?.detach();
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(write_lock(&self.schema, tenant))
            .execute(&mut conn)
            .await?;
        Ok(conn)
    }

    /// Creates the indexes of declared fields, as the tables' owner (the
    /// application's role may not). One index per distinct field path,
    /// shared by every tenant and collection in the schema.
    pub(super) async fn create_indexes(&self, indexes: &[FieldPath]) -> Result<()> {
        for path in indexes {
            let key = SortKey::new(path);
            let ddl = format!(
                "CREATE INDEX IF NOT EXISTS {} ON {}.records (tenant_id, collection, ({}), ({}), ({}), id)",
                quote_ident(&format!("ix_field_{}", path.segments().join("__"))),
                quote_ident(&self.schema),
                key.rank,
                key.num,
                key.txt,
            );
            sqlx::query(&ddl).execute(&self.owner).await?;
        }
        Ok(())
    }

    pub(super) async fn close(&self) {
        self.app.close().await;
        self.owner.close().await;
    }
}

/// Maps PostgreSQL's errors that a request caused to what they mean.
fn classify(e: sqlx::Error, unique: DataError) -> DataError {
    match &e {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("23505") => unique,
            Some("23503") => DataError::CollectionNotFound,
            // An index entry over btree's size limit (about 2.7 kB).
            Some("54000") => DataError::InvalidBody(
                "a value of an indexed field is too large to index (over about 2 kB)".into(),
            ),
            _ => e.into(),
        },
        _ => e.into(),
    }
}

/// The ordering key of a field, in the order SQLite gives `json_extract`
/// values, so that every engine lists in one order: missing and null first,
/// then numbers (with booleans as 0 and 1), then strings (and objects and
/// arrays as their JSON text) byte by byte. Each part is never NULL, so
/// keys compare as rows and an index on the three serves sorts and ranges.
struct SortKey {
    ty: String,
    rank: String,
    num: String,
    txt: String,
    /// The field's JSON value as the cursor carries it.
    cursor: String,
}

impl SortKey {
    fn new(path: &FieldPath) -> Self {
        // Field paths are identifiers joined by dots (`FieldPath::parse`),
        // so the path literal cannot hold a quote or a brace; like SQLite's,
        // it is part of the SQL text because indexes match expressions only.
        let p = format!("'{{{}}}'", path.segments().join(","));
        let ty = format!("jsonb_typeof(body #> {p})");
        Self {
            rank: format!(
                "CASE {ty} WHEN 'number' THEN 1 WHEN 'boolean' THEN 1 \
                 WHEN 'string' THEN 2 WHEN 'object' THEN 2 WHEN 'array' THEN 2 ELSE 0 END"
            ),
            num: format!(
                "CASE {ty} WHEN 'number' THEN (body #>> {p})::numeric \
                 WHEN 'boolean' THEN CASE WHEN (body #>> {p}) = 'true' THEN 1 ELSE 0 END \
                 ELSE 0 END"
            ),
            txt: format!(
                "(CASE WHEN {ty} IN ('string', 'object', 'array') THEN body #>> {p} ELSE '' END) COLLATE \"C\""
            ),
            cursor: format!(
                "(CASE {ty} WHEN 'boolean' THEN to_jsonb(CASE WHEN (body #>> {p}) = 'true' THEN 1 ELSE 0 END) \
                 WHEN 'object' THEN to_jsonb(body #>> {p}) WHEN 'array' THEN to_jsonb(body #>> {p}) \
                 ELSE body #> {p} END)::text"
            ),
            ty,
        }
    }

    fn order(&self, dir: &str) -> String {
        format!(
            "({}) {dir}, ({}) {dir}, ({}) {dir}",
            self.rank, self.num, self.txt
        )
    }
}

pub(super) async fn insert_collection(
    c: &mut PgConnection,
    tenant: &TenantId,
    row: &CollectionRow,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO collections (tenant_id, name, indexes, created_at) VALUES ($1, $2, $3::jsonb, $4)",
    )
    .bind(tenant.as_str())
    .bind(&row.name)
    .bind(&row.indexes)
    .bind(row.created_at)
    .execute(c)
    .await
    .map(drop)
    .map_err(|e| classify(e, DataError::CollectionExists))
}

pub(super) async fn collection(
    c: &mut PgConnection,
    tenant: &TenantId,
    name: &CollectionName,
) -> Result<Option<CollectionRow>> {
    Ok(sqlx::query_as(
        "SELECT name, indexes::text AS indexes, created_at FROM collections WHERE tenant_id = $1 AND name = $2",
    )
    .bind(tenant.as_str())
    .bind(name.as_str())
    .fetch_optional(c)
    .await?)
}

pub(super) async fn collections(
    c: &mut PgConnection,
    tenant: &TenantId,
    after: &str,
    limit: i64,
) -> Result<Vec<CollectionRow>> {
    Ok(sqlx::query_as(
        "SELECT name, indexes::text AS indexes, created_at FROM collections
         WHERE tenant_id = $1 AND name > $2 ORDER BY name LIMIT $3",
    )
    .bind(tenant.as_str())
    .bind(after)
    .bind(limit)
    .fetch_all(c)
    .await?)
}

pub(super) async fn delete_collection(
    c: &mut PgConnection,
    tenant: &TenantId,
    name: &CollectionName,
) -> Result<Option<(i64, i64)>> {
    // Locking the collection first keeps a concurrent write from adding a
    // record between the count and the delete.
    let found: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM collections WHERE tenant_id = $1 AND name = $2 FOR UPDATE",
    )
    .bind(tenant.as_str())
    .bind(name.as_str())
    .fetch_optional(&mut *c)
    .await?;
    if found.is_none() {
        return Ok(None);
    }
    let held: (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(size), 0)::bigint, count(*) FROM records WHERE tenant_id = $1 AND collection = $2",
    )
    .bind(tenant.as_str())
    .bind(name.as_str())
    .fetch_one(&mut *c)
    .await?;
    sqlx::query("DELETE FROM collections WHERE tenant_id = $1 AND name = $2")
        .bind(tenant.as_str())
        .bind(name.as_str())
        .execute(c)
        .await?;
    Ok(Some(held))
}

/// One record; with `for_update`, locked until the transaction ends so that
/// a version check and the write that follows it see the same row.
pub(super) async fn record(
    c: &mut PgConnection,
    tenant: &TenantId,
    collection: &CollectionName,
    id: &RecordId,
    for_update: bool,
) -> Result<Option<RecordRow>> {
    let lock = if for_update { " FOR UPDATE" } else { "" };
    Ok(sqlx::query_as(&format!(
        "SELECT id, version, body::text AS body, size, created_at, updated_at FROM records
         WHERE tenant_id = $1 AND collection = $2 AND id = $3{lock}"
    ))
    .bind(tenant.as_str())
    .bind(collection.as_str())
    .bind(id.as_str())
    .fetch_optional(c)
    .await?)
}

pub(super) async fn records(
    c: &mut PgConnection,
    tenant: &TenantId,
    collection: &str,
) -> Result<Vec<RecordRow>> {
    Ok(sqlx::query_as(
        "SELECT id, version, body::text AS body, size, created_at, updated_at FROM records
         WHERE tenant_id = $1 AND collection = $2 ORDER BY id",
    )
    .bind(tenant.as_str())
    .bind(collection)
    .fetch_all(c)
    .await?)
}

pub(super) async fn insert_record(
    c: &mut PgConnection,
    tenant: &TenantId,
    collection: &str,
    row: &RecordRow,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO records (tenant_id, collection, id, version, body, size, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8)",
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
    .await
    .map(drop)
    .map_err(|e| classify(e, DataError::RecordExists))
}

pub(super) async fn update_record(
    c: &mut PgConnection,
    tenant: &TenantId,
    collection: &CollectionName,
    row: &RecordRow,
) -> Result<()> {
    sqlx::query(
        "UPDATE records SET body = $1::jsonb, size = $2, version = $3, updated_at = $4
         WHERE tenant_id = $5 AND collection = $6 AND id = $7",
    )
    .bind(&row.body)
    .bind(row.size)
    .bind(row.version)
    .bind(row.updated_at)
    .bind(tenant.as_str())
    .bind(collection.as_str())
    .bind(&row.id)
    .execute(c)
    .await
    .map(drop)
    .map_err(|e| classify(e, DataError::RecordExists))
}

pub(super) async fn delete_record(
    c: &mut PgConnection,
    tenant: &TenantId,
    collection: &CollectionName,
    id: &RecordId,
) -> Result<()> {
    sqlx::query("DELETE FROM records WHERE tenant_id = $1 AND collection = $2 AND id = $3")
        .bind(tenant.as_str())
        .bind(collection.as_str())
        .bind(id.as_str())
        .execute(c)
        .await?;
    Ok(())
}

pub(super) async fn usage(c: &mut PgConnection, tenant: &TenantId) -> Result<Option<(i64, i64)>> {
    Ok(
        sqlx::query_as("SELECT bytes, records FROM usage WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_optional(c)
            .await?,
    )
}

pub(super) async fn add_usage(
    c: &mut PgConnection,
    tenant: &TenantId,
    bytes: i64,
    records: i64,
) -> Result<()> {
    let updated = sqlx::query(
        "UPDATE usage SET bytes = bytes + $1, records = records + $2 WHERE tenant_id = $3",
    )
    .bind(bytes)
    .bind(records)
    .bind(tenant.as_str())
    .execute(&mut *c)
    .await?
    .rows_affected();
    if updated == 0 {
        // The tenant's first write; another may be racing it.
        sqlx::query(
            "INSERT INTO usage (tenant_id, bytes, records) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id) DO UPDATE
             SET bytes = usage.bytes + EXCLUDED.bytes, records = usage.records + EXCLUDED.records",
        )
        .bind(tenant.as_str())
        .bind(bytes)
        .bind(records)
        .execute(c)
        .await?;
    }
    Ok(())
}

/// Records that `tenant` left this schema for `moved_to`: its writes here
/// are refused from now on.
pub(super) async fn depart(
    c: &mut PgConnection,
    tenant: &TenantId,
    moved_to: &str,
    at: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO departures (tenant_id, moved_to, at) VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id) DO UPDATE SET moved_to = EXCLUDED.moved_to, at = EXCLUDED.at",
    )
    .bind(tenant.as_str())
    .bind(moved_to)
    .bind(at)
    .execute(c)
    .await?;
    Ok(())
}

/// Forgets that `tenant` left this schema: a move back, or one undone.
pub(super) async fn clear_departure(c: &mut PgConnection, tenant: &TenantId) -> Result<()> {
    sqlx::query("DELETE FROM departures WHERE tenant_id = $1")
        .bind(tenant.as_str())
        .execute(c)
        .await?;
    Ok(())
}

pub(super) async fn delete_tenant_rows(c: &mut PgConnection, tenant: &TenantId) -> Result<()> {
    for table in ["records", "collections", "usage"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1"))
            .bind(tenant.as_str())
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

pub(super) async fn list(
    c: &mut PgConnection,
    tenant: &TenantId,
    collection: &Collection,
    query: &ListQuery,
) -> Result<Vec<ListRow>> {
    let mut sql = list_sql(tenant, collection, query)?;
    Ok(sql.build_query_as().fetch_all(c).await?)
}

fn list_sql<'a>(
    tenant: &'a TenantId,
    collection: &'a Collection,
    query: &ListQuery,
) -> Result<QueryBuilder<'a, Postgres>> {
    let key = query.sort.as_ref().map(|(field, _)| SortKey::new(field));
    let mut sql = QueryBuilder::<Postgres>::new(
        "SELECT id, version, body::text AS body, size, created_at, updated_at, ",
    );
    match &key {
        Some(key) => sql.push(format!("{} AS sort_key", key.cursor)),
        None => sql.push("NULL::text AS sort_key"),
    };
    sql.push(" FROM records WHERE tenant_id = ");
    sql.push_bind(tenant.as_str());
    sql.push(" AND collection = ");
    sql.push_bind(collection.name.as_str());
    if let Some(filter) = &query.filter {
        sql.push(" AND ");
        push_filter(&mut sql, filter, push_comparison);
    }
    let dir = match query.sort {
        Some((_, Direction::Descending)) => "DESC",
        _ => "ASC",
    };
    if let Some(after) = &query.after {
        let cmp = if dir == "DESC" { "<" } else { ">" };
        sql.push(" AND ");
        match &key {
            None => {
                sql.push(format!("id {cmp} "));
                sql.push_bind(after.id.as_str().to_owned());
            }
            Some(key) => push_keyset(&mut sql, key, cmp, after)?,
        }
    }
    sql.push(" ORDER BY ");
    if let Some(key) = &key {
        sql.push(key.order(dir));
        sql.push(", ");
    }
    sql.push(format!("id {dir} LIMIT "));
    sql.push_bind(i64::from(query.limit));
    Ok(sql)
}

/// Rows after the cursor in the list's order: the sort key and id compared
/// as one row, which the field's index serves.
fn push_keyset(
    sql: &mut QueryBuilder<'_, Postgres>,
    key: &SortKey,
    cmp: &str,
    after: &Cursor,
) -> Result<()> {
    let (rank, num, txt) = match after.sort_value.as_ref().unwrap_or(&Value::Null) {
        Value::Null => (0, "0".to_owned(), String::new()),
        Value::Bool(b) => (1, u8::from(*b).to_string(), String::new()),
        Value::Number(n) => (1, n.to_string(), String::new()),
        Value::String(s) => (2, "0".to_owned(), s.clone()),
        _ => return Err(DataError::InvalidBody("the cursor is not valid".into())),
    };
    sql.push(format!(
        "(({}), ({}), ({}), id) {cmp} (",
        key.rank, key.num, key.txt
    ));
    sql.push_bind(rank);
    sql.push(", ");
    sql.push_bind(num);
    sql.push("::numeric, ");
    sql.push_bind(txt);
    sql.push(", ");
    sql.push_bind(after.id.as_str().to_owned());
    sql.push(")");
    Ok(())
}

/// One typed comparison, with its value bound, in the same semantics as on
/// SQLite. It is written over the field's sort key, which is never NULL (so
/// `!=`, a negation, is exact) and is what the field's index holds.
fn push_comparison(
    sql: &mut QueryBuilder<'_, Postgres>,
    field: &FieldPath,
    op: CmpOp,
    value: &Literal,
) {
    let key = SortKey::new(field);
    let SortKey {
        ty, rank, num, txt, ..
    } = &key;
    match value {
        Literal::Null => {
            sql.push(format!("(({rank}) = 0)"));
        }
        Literal::Bool(b) => {
            sql.push(format!(
                "(({rank}) = 1 AND ({num}) = {} AND {ty} = 'boolean')",
                u8::from(*b)
            ));
        }
        Literal::Number(n) => {
            sql.push(format!(
                "(({rank}) = 1 AND ({num}) {} ",
                super::sql::operator(op)
            ));
            // Bound as text: JSON numbers are exact decimals, and a float
            // parameter would round through float8 on the way to numeric.
            sql.push_bind(n.to_string());
            sql.push(format!("::numeric AND {ty} = 'number')"));
        }
        Literal::String(s) => {
            // A string's number part is always 0; saying so lets the
            // index seek on the text instead of scanning every string.
            sql.push(format!(
                "(({rank}) = 2 AND ({num}) = 0 AND ({txt}) {} ",
                super::sql::operator(op)
            ));
            sql.push_bind(s.clone());
            sql.push(format!(" AND {ty} = 'string')"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{BatchOp, DataLimits, DataStore, StoragePool};
    use super::*;
    use crate::cache::CacheLimits;
    use serde_json::json;
    use tenantd_core::testing::{member, tenant_at};
    use tenantd_core::{DataScope, Isolation, PoolName, Role};
    use tenantd_testkit::Postgres;
    use time::OffsetDateTime;

    /// PostgreSQL's plan for an unfiltered list, one line per step.
    async fn plan(
        db: &PgDatabase,
        scope: &DataScope,
        collection: &Collection,
        query: &ListQuery,
    ) -> Vec<String> {
        let text = format!(
            "EXPLAIN {}",
            list_sql(scope.tenant(), collection, query).unwrap().sql()
        );
        let explain = sqlx::query_scalar::<_, String>(&text)
            .bind(scope.tenant().as_str())
            .bind(collection.name.as_str());
        let mut tx = db.begin(scope.tenant()).await.unwrap();
        let rows = explain
            .bind(i64::from(query.limit))
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        rows
    }

    /// Sorting on a declared field reads its index in order. (Filters on it
    /// cannot seek in that index under row-level security: PostgreSQL
    /// applies a user's condition before the policy's only if its functions
    /// are LEAKPROOF, and the JSON functions are not; they scan the tenant's
    /// collection through the index prefix instead.)
    #[tokio::test]
    async fn sorts_on_declared_fields_are_served_by_their_index() {
        let server = Postgres::shared();
        let database = server.tenantd_database().await;
        let pg = PoolName::parse("pg").unwrap();
        let pools = [StoragePool::postgres(
            pg.clone(),
            &server.app_url(&database),
            &server.owner_url(&database),
        )];
        let cache = CacheLimits {
            capacity_bytes: 0,
            tenant_share_percent: tenantd_core::share::Percent::ALL,
            ttl: Duration::from_secs(1),
        };
        let limits = DataLimits {
            max_record_bytes: 1024,
        };
        let store = DataStore::open(&pools, limits, super::super::Connections::default(), cache)
            .await
            .unwrap();
        let now = OffsetDateTime::UNIX_EPOCH;
        let tenant = tenant_at("acme", pg.as_str(), Isolation::Pooled, now);
        let scope = member(&tenant, Role::Developer, now)
            .data_scope(Role::Reader)
            .unwrap();
        let customer = FieldPath::parse("customer").unwrap();
        let name = CollectionName::parse("orders").unwrap();
        let collection = store
            .create_collection(&scope, &name, std::slice::from_ref(&customer), now)
            .await
            .unwrap();
        let ops = (0..5000)
            .map(|n| BatchOp::Create {
                id: RecordId::parse(&format!("r{n:05}")).unwrap(),
                body: json!({ "customer": format!("c{:03}", n % 500), "total": n }),
            })
            .collect();
        store.write(&scope, &name, ops, now).await.unwrap();
        let db = match store.db(&scope).await.unwrap() {
            super::super::Db::Postgres(db, _) => db,
            other => panic!("{other:?}"),
        };
        // What autovacuum does after a load: statistics for the planner.
        sqlx::query("ANALYZE tenantd.records")
            .execute(&db.owner)
            .await
            .unwrap();

        let sorted = ListQuery {
            sort: Some((customer, Direction::Ascending)),
            limit: 100,
            ..Default::default()
        };
        let steps = plan(&db, &scope, &collection, &sorted).await;
        assert!(
            steps.iter().any(|s| s.contains("ix_field_customer")),
            "the sort should use the index: {steps:#?}"
        );
        assert!(
            !steps.iter().any(|s| s.trim_start().starts_with("Sort")),
            "no separate sort step: {steps:#?}"
        );
    }
}
