//! The tenant-isolated record store on SQLite: collections of JSON records,
//! in the shared pooled database or in a database file of the tenant's own.
//!
//! Every call takes a `DataScope`, which only the identity stage can make,
//! and every statement is keyed by its tenant; values from requests are
//! always bound parameters. Storage usage is kept exactly, in the same
//! transaction as each write.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use moka::future::Cache;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Sqlite, SqlitePool, Transaction};
use tenantd_core::filter::{CmpOp, FieldPath, Filter, Literal};
use tenantd_core::record::{check_body, merge_patch};
use tenantd_core::{CollectionName, DataScope, Isolation, PoolName, RecordId, TenantId};
use time::OffsetDateTime;

use crate::cache::{CacheLimits, RecordCache, RecordKey};
use moves::WriteGates;
pub use moves::{CollectionDigest, Freeze, Placement};

mod moves;
use crate::codec::{from_nanos, parse, to_nanos};
use crate::StoreError;

/// Open dedicated databases kept at once; the least recently used closes
/// first. With `DEDICATED_CONNECTIONS` each and three files per connection
/// (database, WAL, shared memory), this bounds the descriptors they hold.
const OPEN_DEDICATED: u64 = 128;
/// Connections per open dedicated database: one tenant's requests rarely
/// need more, and SQLite serializes its writers anyway.
const DEDICATED_CONNECTIONS: u32 = 2;

#[derive(Debug, Clone, PartialEq)]
pub struct Collection {
    pub name: CollectionName,
    /// Fields with a real index; lists may sort on these.
    pub indexes: Vec<FieldPath>,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: RecordId,
    /// Starts at 1, grows by one with every change; the ETag.
    pub version: i64,
    pub body: Value,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// A tenant's stored bytes (record bodies and ids) and record count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub bytes: i64,
    pub records: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Ascending,
    Descending,
}

/// Where a page starts: after this sort value and id.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    /// The sort field's value in the last row (JSON null when absent);
    /// `None` when the list is not sorted by a field.
    pub sort_value: Option<Value>,
    pub id: RecordId,
}

#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub filter: Option<Filter>,
    pub sort: Option<(FieldPath, Direction)>,
    pub after: Option<Cursor>,
    pub limit: u32,
}

/// A page of records and, per record, its cursor position.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedRecord {
    pub record: Record,
    pub position: Cursor,
}

/// A write's precondition on the record's current state (`If-Match`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The record exists, whatever its version (`If-Match: *`).
    Exists,
    /// The record exists at this version.
    Version(i64),
}

/// One operation of an all-or-nothing batch.
#[derive(Debug, Clone)]
pub enum BatchOp {
    /// Insert; fails if the id exists.
    Create { id: RecordId, body: Value },
    /// Insert or replace.
    Put {
        id: RecordId,
        body: Value,
        expect: Option<Expect>,
    },
    /// Apply an RFC 7386 merge patch to an existing record.
    Patch {
        id: RecordId,
        patch: Value,
        expect: Option<Expect>,
    },
    Delete {
        id: RecordId,
        expect: Option<Expect>,
    },
}

/// What a batch operation did.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchResult {
    Written(Record),
    Deleted(RecordId),
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("no such collection")]
    CollectionNotFound,
    #[error("the collection already exists")]
    CollectionExists,
    #[error("no such record")]
    RecordNotFound,
    #[error("a record with this id already exists")]
    RecordExists,
    /// `If-Match` named another version; `current` is the stored one, if any.
    #[error("the record's version does not match")]
    VersionMismatch { current: Option<i64> },
    #[error("{0} is not an indexed field of this collection")]
    NotIndexed(FieldPath),
    #[error("invalid record: {0}")]
    InvalidBody(String),
    #[error("operation {index} of the batch failed: {error}")]
    Batch { index: usize, error: Box<DataError> },
    #[error("{0}")]
    Unsupported(String),
    /// The tenant's data is being moved; writes wait until it is done.
    #[error("the tenant's data is being moved; retry shortly")]
    Maintenance,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for DataError {
    fn from(e: sqlx::Error) -> Self {
        DataError::Store(StoreError::Database(e))
    }
}

type Result<T, E = DataError> = std::result::Result<T, E>;

/// Limits the store enforces on what it writes.
#[derive(Debug, Clone, Copy)]
pub struct DataLimits {
    /// Largest record body, in bytes of compact JSON.
    pub max_record_bytes: usize,
}

/// The record store over every configured storage pool.
#[derive(Debug, Clone)]
pub struct DataStore {
    cache: RecordCache,
    pools: BTreeMap<PoolName, PoolStorage>,
    /// Open dedicated databases, by pool and tenant.
    dedicated: Cache<(PoolName, TenantId), SqlitePool>,
    /// Tenants whose writes are held while their data moves.
    gates: WriteGates,
    limits: DataLimits,
}

/// One SQLite storage pool: a directory with the shared `pooled.db` and a
/// `tenants/` directory of dedicated databases.
#[derive(Debug, Clone)]
struct PoolStorage {
    pooled: SqlitePool,
    dedicated_dir: PathBuf,
}

fn options(path: &Path) -> SqliteConnectOptions {
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

async fn open_pool(path: &Path, max_connections: u32) -> Result<SqlitePool, StoreError> {
    let pool = SqlitePoolOptions::new()
        .max_connections(max_connections)
        .idle_timeout(Duration::from_secs(60))
        .connect_with(options(path))
        .await?;
    sqlx::migrate!("./migrations/data").run(&pool).await?;
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
    format!("json_extract(body, '{}')", path.json_path())
}

fn field_type(path: &FieldPath) -> String {
    format!("json_type(body, '{}')", path.json_path())
}

/// Creates the indexes of declared fields: one per distinct field path,
/// led by tenant and collection so that each tenant's entries are contiguous.
async fn create_indexes(
    tx: &mut Transaction<'static, Sqlite>,
    indexes: &[FieldPath],
) -> Result<()> {
    for path in indexes {
        let ddl = format!(
            "CREATE INDEX IF NOT EXISTS {} ON records (tenant_id, collection, {}, id)",
            index_name(path),
            field_expr(path)
        );
        sqlx::query(&ddl).execute(&mut **tx).await?;
    }
    Ok(())
}

fn index_name(path: &FieldPath) -> String {
    format!("\"ix_field_{}\"", path.segments().join("__"))
}

fn now_nanos(now: OffsetDateTime) -> i64 {
    to_nanos(now)
}

impl DataStore {
    /// Opens every pool's shared database under its directory (creating it)
    /// and prepares its directory of dedicated databases.
    pub async fn open(
        pools: &[(PoolName, PathBuf)],
        limits: DataLimits,
        cache: CacheLimits,
    ) -> Result<Self, StoreError> {
        let mut opened = BTreeMap::new();
        for (name, dir) in pools {
            let dedicated_dir = dir.join("tenants");
            std::fs::create_dir_all(&dedicated_dir)
                .map_err(|e| StoreError::Corrupt(format!("{}: {e}", dedicated_dir.display())))?;
            let pooled = open_pool(&dir.join("pooled.db"), 8).await?;
            opened.insert(
                name.clone(),
                PoolStorage {
                    pooled,
                    dedicated_dir,
                },
            );
        }
        let dedicated = Cache::builder()
            .max_capacity(OPEN_DEDICATED)
            .eviction_listener(|_tenant, pool: SqlitePool, _cause| {
                // Closing waits for connections in use; do it off the caller's path.
                tokio::spawn(async move { pool.close().await });
            })
            .build();
        Ok(Self {
            cache: RecordCache::new(cache),
            pools: opened,
            dedicated,
            gates: WriteGates::default(),
            limits,
        })
    }

    fn storage(&self, pool: &PoolName) -> Result<&PoolStorage, StoreError> {
        self.pools.get(pool).ok_or_else(|| {
            StoreError::Corrupt(format!("no storage pool named {pool} is configured"))
        })
    }

    /// The database that holds `scope`'s data.
    async fn pool(&self, scope: &DataScope) -> Result<SqlitePool> {
        self.pool_at(scope.tenant(), scope.pool(), scope.isolation())
            .await
    }

    /// The database holding `tenant`'s data at a placement.
    async fn pool_at(
        &self,
        tenant: &TenantId,
        pool: &PoolName,
        isolation: Isolation,
    ) -> Result<SqlitePool> {
        let storage = self.storage(pool)?;
        match isolation {
            Isolation::Pooled => Ok(storage.pooled.clone()),
            Isolation::Dedicated => {
                let path = storage.dedicated_dir.join(format!("{tenant}.db"));
                self.dedicated
                    .try_get_with(
                        (pool.clone(), tenant.clone()),
                        open_pool(&path, DEDICATED_CONNECTIONS),
                    )
                    .await
                    .map_err(|e| {
                        DataError::Store(StoreError::Corrupt(format!(
                            "opening {}: {e}",
                            path.display()
                        )))
                    })
            }
            Isolation::Schema => Err(DataError::Unsupported(
                "the schema model needs a PostgreSQL storage pool".into(),
            )),
        }
    }

    async fn begin_write(&self, scope: &DataScope) -> Result<Transaction<'static, Sqlite>> {
        Ok(self
            .pool(scope)
            .await?
            .begin_with("BEGIN IMMEDIATE")
            .await?)
    }

    /// Answers when every pool's shared database serves queries.
    pub async fn ping(&self) -> Result<(), StoreError> {
        for storage in self.pools.values() {
            sqlx::query("SELECT 1").execute(&storage.pooled).await?;
        }
        Ok(())
    }

    /// Refreshes the planner's statistics where they are stale (SQLite's
    /// `PRAGMA optimize`), for long-lived connections that seldom close.
    pub async fn optimize(&self) -> Result<(), StoreError> {
        for storage in self.pools.values() {
            sqlx::query("PRAGMA optimize")
                .execute(&storage.pooled)
                .await?;
        }
        for (_, pool) in &self.dedicated {
            sqlx::query("PRAGMA optimize").execute(&pool).await?;
        }
        Ok(())
    }

    pub async fn close(&self) {
        for storage in self.pools.values() {
            storage.pooled.close().await;
        }
        for (_, pool) in &self.dedicated {
            pool.close().await;
        }
    }

    // ---- collections ----

    pub async fn create_collection(
        &self,
        scope: &DataScope,
        name: &CollectionName,
        indexes: &[FieldPath],
        now: OffsetDateTime,
    ) -> Result<Collection> {
        let _permit = self.gates.permit(scope).await?;
        let mut tx = self.begin_write(scope).await?;
        let paths: Vec<String> = indexes.iter().map(ToString::to_string).collect();
        let inserted = sqlx::query(
            "INSERT INTO collections (tenant_id, name, indexes, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(scope.tenant().as_str())
        .bind(name.as_str())
        .bind(serde_json::to_string(&paths).unwrap_or_default())
        .bind(now_nanos(now))
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if constraint(&e) == Some("unique") => return Err(DataError::CollectionExists),
            other => other?,
        };
        create_indexes(&mut tx, indexes).await?;
        tx.commit().await?;
        Ok(Collection {
            name: name.clone(),
            indexes: indexes.to_vec(),
            created_at: now,
        })
    }

    pub async fn collection(
        &self,
        scope: &DataScope,
        name: &CollectionName,
    ) -> Result<Option<Collection>> {
        let row: Option<(String, String, i64)> = sqlx::query_as(
            "SELECT name, indexes, created_at FROM collections WHERE tenant_id = ? AND name = ?",
        )
        .bind(scope.tenant().as_str())
        .bind(name.as_str())
        .fetch_optional(&self.pool(scope).await?)
        .await?;
        row.map(collection_from_row).transpose()
    }

    pub async fn collections(
        &self,
        scope: &DataScope,
        after: Option<&CollectionName>,
        limit: u32,
    ) -> Result<Vec<Collection>> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT name, indexes, created_at FROM collections WHERE tenant_id = ? AND name > ? ORDER BY name LIMIT ?",
        )
        .bind(scope.tenant().as_str())
        .bind(after.map_or("", CollectionName::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.pool(scope).await?)
        .await?;
        rows.into_iter().map(collection_from_row).collect()
    }

    /// Deletes a collection and its records; `false` if there was none.
    pub async fn delete_collection(
        &self,
        scope: &DataScope,
        name: &CollectionName,
    ) -> Result<bool> {
        let _permit = self.gates.permit(scope).await?;
        let mut tx = self.begin_write(scope).await?;
        let (bytes, records): (i64, i64) = sqlx::query_as(
            "SELECT coalesce(sum(size), 0), count(*) FROM records WHERE tenant_id = ? AND collection = ?",
        )
        .bind(scope.tenant().as_str())
        .bind(name.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let deleted = sqlx::query("DELETE FROM collections WHERE tenant_id = ? AND name = ?")
            .bind(scope.tenant().as_str())
            .bind(name.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Ok(false);
        }
        add_usage(&mut tx, scope, -bytes, -records).await?;
        tx.commit().await?;
        self.cache.invalidate_tenant(scope.tenant(), Some(name));
        Ok(true)
    }

    // ---- records ----

    /// One record, from the cache when it holds it.
    pub async fn record(
        &self,
        scope: &DataScope,
        collection: &CollectionName,
        id: &RecordId,
    ) -> Result<Option<Record>> {
        let key = RecordKey::new(scope, collection, id);
        if let Some(record) = self.cache.get(&key).await {
            return Ok(Some(record));
        }
        let started = self.cache.read_started();
        let pool = self.pool(scope).await?;
        let row: Option<RecordRow> = sqlx::query_as(
            "SELECT id, version, body, size, created_at, updated_at FROM records
             WHERE tenant_id = ? AND collection = ? AND id = ?",
        )
        .bind(scope.tenant().as_str())
        .bind(collection.as_str())
        .bind(id.as_str())
        .fetch_optional(&pool)
        .await?;
        let Some(row) = row else {
            self.require_collection(&pool, scope, collection).await?;
            return Ok(None);
        };
        let record = row.into_record()?;
        self.cache.fill(key, &record, started).await;
        Ok(Some(record))
    }

    async fn require_collection(
        &self,
        pool: &SqlitePool,
        scope: &DataScope,
        collection: &CollectionName,
    ) -> Result<()> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM collections WHERE tenant_id = ? AND name = ?")
                .bind(scope.tenant().as_str())
                .bind(collection.as_str())
                .fetch_optional(pool)
                .await?;
        found.map(drop).ok_or(DataError::CollectionNotFound)
    }

    /// Runs `ops` in one transaction: all succeed or none is applied.
    pub async fn write(
        &self,
        scope: &DataScope,
        collection: &CollectionName,
        ops: Vec<BatchOp>,
        now: OffsetDateTime,
    ) -> Result<Vec<BatchResult>> {
        let _permit = self.gates.permit(scope).await?;
        let single = ops.len() == 1;
        let touched: Vec<RecordKey> = ops
            .iter()
            .map(|op| match op {
                BatchOp::Create { id, .. }
                | BatchOp::Put { id, .. }
                | BatchOp::Patch { id, .. }
                | BatchOp::Delete { id, .. } => RecordKey::new(scope, collection, id),
            })
            .collect();
        let mut tx = self.begin_write(scope).await?;
        let mut results = Vec::with_capacity(ops.len());
        for (index, op) in ops.into_iter().enumerate() {
            match self.apply(&mut tx, scope, collection, op, now).await {
                Ok(result) => results.push(result),
                // A single write reports its own error; a batch says which one failed.
                Err(error) if single => return Err(error),
                Err(error) => {
                    return Err(DataError::Batch {
                        index,
                        error: Box::new(error),
                    })
                }
            }
        }
        tx.commit().await?;
        self.cache.invalidate(touched).await;
        Ok(results)
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        scope: &DataScope,
        collection: &CollectionName,
        op: BatchOp,
        now: OffsetDateTime,
    ) -> Result<BatchResult> {
        let current = match &op {
            BatchOp::Create { .. } => None,
            BatchOp::Put { id, .. } | BatchOp::Patch { id, .. } | BatchOp::Delete { id, .. } => {
                sqlx::query_as::<_, RecordRow>(
                    "SELECT id, version, body, size, created_at, updated_at FROM records
                     WHERE tenant_id = ? AND collection = ? AND id = ?",
                )
                .bind(scope.tenant().as_str())
                .bind(collection.as_str())
                .bind(id.as_str())
                .fetch_optional(&mut **tx)
                .await?
            }
        };
        let check_version =
            |expect: Option<Expect>, current: &Option<RecordRow>| match (expect, current) {
                (Some(Expect::Version(want)), Some(row)) if row.version != want => {
                    Err(DataError::VersionMismatch {
                        current: Some(row.version),
                    })
                }
                (Some(_), None) => Err(DataError::VersionMismatch { current: None }),
                _ => Ok(()),
            };
        match op {
            BatchOp::Create { id, body } => {
                self.insert(tx, scope, collection, &id, &body, now).await
            }
            BatchOp::Put { id, body, expect } => {
                check_version(expect, &current)?;
                match current {
                    None => self.insert(tx, scope, collection, &id, &body, now).await,
                    Some(row) => self.update(tx, scope, collection, row, body, now).await,
                }
            }
            BatchOp::Patch {
                id: _,
                patch,
                expect,
            } => {
                check_version(expect, &current)?;
                let row = current.ok_or(DataError::RecordNotFound)?;
                let mut body: Value = parse("records.body", &row.body, |b| {
                    serde_json::from_str::<Value>(b)
                })?;
                merge_patch(&mut body, &patch);
                self.update(tx, scope, collection, row, body, now).await
            }
            BatchOp::Delete { id, expect } => {
                check_version(expect, &current)?;
                let row = current.ok_or(DataError::RecordNotFound)?;
                sqlx::query(
                    "DELETE FROM records WHERE tenant_id = ? AND collection = ? AND id = ?",
                )
                .bind(scope.tenant().as_str())
                .bind(collection.as_str())
                .bind(id.as_str())
                .execute(&mut **tx)
                .await?;
                add_usage(tx, scope, -row.size, -1).await?;
                Ok(BatchResult::Deleted(id))
            }
        }
    }

    /// The stored text of a body, checked against the record rules.
    fn encode(&self, body: &Value) -> Result<String> {
        check_body(body).map_err(|e| DataError::InvalidBody(e.to_string()))?;
        let text = body.to_string();
        if text.len() > self.limits.max_record_bytes {
            return Err(DataError::InvalidBody(format!(
                "the record is {} bytes; the limit is {}",
                text.len(),
                self.limits.max_record_bytes
            )));
        }
        Ok(text)
    }

    async fn insert(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        scope: &DataScope,
        collection: &CollectionName,
        id: &RecordId,
        body: &Value,
        now: OffsetDateTime,
    ) -> Result<BatchResult> {
        let text = self.encode(body)?;
        let size = stored_size(id, &text);
        let inserted = sqlx::query(
            "INSERT INTO records (tenant_id, collection, id, version, body, size, created_at, updated_at)
             VALUES (?, ?, ?, 1, ?, ?, ?, ?)",
        )
        .bind(scope.tenant().as_str())
        .bind(collection.as_str())
        .bind(id.as_str())
        .bind(&text)
        .bind(size)
        .bind(now_nanos(now))
        .bind(now_nanos(now))
        .execute(&mut **tx)
        .await;
        match inserted {
            Err(e) if constraint(&e) == Some("unique") => return Err(DataError::RecordExists),
            Err(e) if constraint(&e) == Some("foreign_key") => {
                return Err(DataError::CollectionNotFound)
            }
            other => other?,
        };
        add_usage(tx, scope, size, 1).await?;
        Ok(BatchResult::Written(Record {
            id: id.clone(),
            version: 1,
            body: body.clone(),
            created_at: now,
            updated_at: now,
        }))
    }

    async fn update(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        scope: &DataScope,
        collection: &CollectionName,
        row: RecordRow,
        body: Value,
        now: OffsetDateTime,
    ) -> Result<BatchResult> {
        let text = self.encode(&body)?;
        let id = parse("records.id", &row.id, RecordId::parse)?;
        let size = stored_size(&id, &text);
        sqlx::query(
            "UPDATE records SET body = ?, size = ?, version = version + 1, updated_at = ?
             WHERE tenant_id = ? AND collection = ? AND id = ?",
        )
        .bind(&text)
        .bind(size)
        .bind(now_nanos(now))
        .bind(scope.tenant().as_str())
        .bind(collection.as_str())
        .bind(id.as_str())
        .execute(&mut **tx)
        .await?;
        add_usage(tx, scope, size - row.size, 0).await?;
        Ok(BatchResult::Written(Record {
            id,
            version: row.version + 1,
            body,
            created_at: from_nanos(row.created_at)?,
            updated_at: now,
        }))
    }

    /// A page of records matching `query`, in its order.
    pub async fn list(
        &self,
        scope: &DataScope,
        collection: &Collection,
        query: &ListQuery,
    ) -> Result<Vec<ListedRecord>> {
        if let Some((field, _)) = &query.sort {
            if !collection.indexes.contains(field) {
                return Err(DataError::NotIndexed(field.clone()));
            }
        }
        let mut sql = list_sql(scope, collection, query)?;
        let rows: Vec<ListRow> = sql
            .build_query_as()
            .fetch_all(&self.pool(scope).await?)
            .await?;
        rows.into_iter()
            .map(|row| {
                let sort_value = match (&query.sort, &row.sort_key) {
                    (None, _) => None,
                    (Some(_), None) => Some(Value::Null),
                    (Some(_), Some(text)) => Some(parse("sort key", text, |t| {
                        serde_json::from_str::<Value>(t)
                    })?),
                };
                let record = row.record.into_record()?;
                Ok(ListedRecord {
                    position: Cursor {
                        sort_value,
                        id: record.id.clone(),
                    },
                    record,
                })
            })
            .collect()
    }

    /// Bytes of `tenant`'s records in the read cache.
    pub async fn cache_bytes(&self, tenant: &TenantId) -> u64 {
        self.cache.tenant_bytes(tenant).await
    }

    pub async fn usage(&self, scope: &DataScope) -> Result<Usage> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT bytes, records FROM usage WHERE tenant_id = ?")
                .bind(scope.tenant().as_str())
                .fetch_optional(&self.pool(scope).await?)
                .await?;
        Ok(row.map_or_else(Usage::default, |(bytes, records)| Usage { bytes, records }))
    }

    /// Removes every trace of a tenant's data, whatever its model. Safe to
    /// repeat: a purge interrupted by a crash is finished by the next one.
    pub async fn purge(&self, tenant: &TenantId, pool: &PoolName) -> Result<(), StoreError> {
        self.remove_pooled(tenant, pool).await?;
        self.remove_dedicated(tenant, pool).await?;
        self.cache.invalidate_tenant(tenant, None);
        Ok(())
    }

    /// Deletes `tenant`'s rows from `pool`'s shared database.
    async fn remove_pooled(&self, tenant: &TenantId, pool: &PoolName) -> Result<(), StoreError> {
        let storage = self.storage(pool)?;
        let mut tx = storage.pooled.begin_with("BEGIN IMMEDIATE").await?;
        delete_tenant_rows(&mut tx, tenant).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Closes and deletes `tenant`'s dedicated database in `pool`, if any.
    async fn remove_dedicated(&self, tenant: &TenantId, pool: &PoolName) -> Result<(), StoreError> {
        let storage = self.storage(pool)?;
        if let Some(open) = self.dedicated.remove(&(pool.clone(), tenant.clone())).await {
            open.close().await;
        }
        let base = storage.dedicated_dir.join(format!("{tenant}.db"));
        for suffix in ["", "-wal", "-shm"] {
            let mut path = base.clone().into_os_string();
            path.push(suffix);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(StoreError::Corrupt(format!(
                        "removing {}: {e}",
                        PathBuf::from(path).display()
                    )))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The SELECT of a list: scoped to the tenant and collection, the filter
/// and keyset bound, ordered by the sort field (through its index) and id.
fn list_sql<'a>(
    scope: &'a DataScope,
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
    sql.push_bind(scope.tenant().as_str());
    sql.push(" AND collection = ");
    sql.push_bind(collection.name.as_str());
    if let Some(filter) = &query.filter {
        sql.push(" AND ");
        push_filter(&mut sql, filter);
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

/// Deletes every row of `tenant` in one database.
async fn delete_tenant_rows(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &TenantId,
) -> Result<(), StoreError> {
    for table in ["records", "collections", "usage"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = ?"))
            .bind(tenant.as_str())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Bytes a record counts for: its id and its stored body.
fn stored_size(id: &RecordId, text: &str) -> i64 {
    i64::try_from(id.as_str().len() + text.len()).unwrap_or(i64::MAX)
}

async fn add_usage(
    tx: &mut Transaction<'static, Sqlite>,
    scope: &DataScope,
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
    .bind(scope.tenant().as_str())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if updated == 0 {
        sqlx::query("INSERT INTO usage (tenant_id, bytes, records) VALUES (?, ?, ?)")
            .bind(scope.tenant().as_str())
            .bind(bytes)
            .bind(records)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Compiles a filter to SQL with every value bound. `!=` is the negation of
/// `=`, so records without the field match `field != value`.
fn push_filter(sql: &mut QueryBuilder<'_, Sqlite>, filter: &Filter) {
    match filter {
        Filter::And(terms) | Filter::Or(terms) => {
            let joiner = if matches!(filter, Filter::And(_)) {
                " AND "
            } else {
                " OR "
            };
            sql.push("(");
            for (i, term) in terms.iter().enumerate() {
                if i > 0 {
                    sql.push(joiner);
                }
                push_filter(sql, term);
            }
            sql.push(")");
        }
        Filter::In(field, values) => {
            sql.push("(");
            for (i, value) in values.iter().enumerate() {
                if i > 0 {
                    sql.push(" OR ");
                }
                push_comparison(sql, field, CmpOp::Eq, value);
            }
            sql.push(")");
        }
        Filter::Cmp(field, CmpOp::Ne, value) => {
            sql.push("NOT ");
            push_comparison(sql, field, CmpOp::Eq, value);
        }
        Filter::Cmp(field, op, value) => push_comparison(sql, field, *op, value),
    }
}

/// One typed comparison: a string never equals or orders against a number,
/// and `true` is not `1`, unlike in plain SQLite.
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
                op.as_sql()
            ));
            sql.push_bind(*n);
            sql.push(")");
        }
        Literal::String(s) => {
            sql.push(format!(
                "(coalesce({ty}, '') = 'text' AND {} {} ",
                field_expr(field),
                op.as_sql()
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

fn collection_from_row((name, indexes, created_at): (String, String, i64)) -> Result<Collection> {
    let paths: Vec<String> = parse("collections.indexes", &indexes, |t| {
        serde_json::from_str::<Vec<String>>(t)
    })?;
    Ok(Collection {
        name: parse("collections.name", &name, CollectionName::parse)?,
        indexes: paths
            .iter()
            .map(|p| parse("collections.indexes", p, FieldPath::parse))
            .collect::<Result<_, StoreError>>()?,
        created_at: from_nanos(created_at)?,
    })
}

#[derive(sqlx::FromRow)]
struct RecordRow {
    id: String,
    version: i64,
    body: String,
    size: i64,
    created_at: i64,
    updated_at: i64,
}

impl RecordRow {
    fn into_record(self) -> Result<Record> {
        Ok(Record {
            id: parse("records.id", &self.id, RecordId::parse)?,
            version: self.version,
            body: parse("records.body", &self.body, |b| {
                serde_json::from_str::<Value>(b)
            })?,
            created_at: from_nanos(self.created_at)?,
            updated_at: from_nanos(self.updated_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct ListRow {
    #[sqlx(flatten)]
    record: RecordRow,
    sort_key: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tenantd_core::testing::member;
    use tenantd_core::{PlanId, RegionId, Role, Tenant};

    /// SQLite's plan for a list, one line per step.
    async fn plan(
        pool: &SqlitePool,
        scope: &DataScope,
        collection: &Collection,
        query: &ListQuery,
    ) -> Vec<String> {
        let text = format!(
            "EXPLAIN QUERY PLAN {}",
            list_sql(scope, collection, query).unwrap().sql()
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
            tenant_share_percent: 100,
            ttl: Duration::from_secs(1),
        };
        let pools = [(PoolName::default_pool(), dir.path().to_owned())];
        let store = DataStore::open(
            &pools,
            DataLimits {
                max_record_bytes: 1024,
            },
            cache,
        )
        .await
        .unwrap();
        let now = OffsetDateTime::UNIX_EPOCH;
        let tenant = Tenant::new(
            "acme".parse().unwrap(),
            "Acme",
            PlanId::default_plan(),
            RegionId::default_region(),
            now,
        );
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
        let pool = store.pool(&scope).await.unwrap();
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
