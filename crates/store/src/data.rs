//! The tenant-isolated record store: collections of JSON records on every
//! configured storage pool, SQLite (pooled rows in a shared database file, or
//! a file per tenant) or PostgreSQL (pooled rows under row-level security, a
//! schema per tenant, or a database per tenant).
//!
//! Every call takes a `DataScope`, which only the identity stage can make,
//! and every statement is keyed by its tenant; values from requests are
//! always bound parameters. Storage usage is kept exactly, in the same
//! transaction as each write. The logic lives here once; `sqlite` and `pg`
//! hold each engine's statements behind the same functions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use moka::future::Cache;
use serde_json::Value;
use sqlx::pool::PoolConnection;
use sqlx::{
    PgConnection, Postgres, QueryBuilder, Sqlite, SqliteConnection, SqlitePool, Transaction,
};
use tenantd_core::filter::{CmpOp, FieldPath, Filter, Literal};
use tenantd_core::record::{check_body, merge_patch};
use tenantd_core::{
    CollectionName, DataScope, Isolation, OperatorScope, PoolName, RecordId, TenantId,
};
use time::OffsetDateTime;

use crate::cache::{CacheLimits, RecordCache, RecordKey};
use moves::WriteGates;
pub use moves::{CollectionDigest, CopyProgress, Freeze, Placement};

/// Calls the engine's version of a statement function on a session.
macro_rules! on_engine {
    ($session:expr, $f:ident($($arg:expr),* $(,)?)) => {
        match $session.conn() {
            Conn::Sqlite(c) => sqlite::$f(c, $($arg),*).await,
            Conn::Postgres(c) => pg::$f(c, $($arg),*).await,
        }
    };
}

mod moves;
mod pg;
mod sql;
mod sqlite;
mod writer;
use crate::codec::{from_nanos, parse, to_nanos};
use crate::health::{dependency_policy, Dependency};
use crate::StoreError;
use writer::{Done, Work, Writer};

/// Open dedicated databases kept at once; the least recently used closes
/// first. This bounds the file descriptors (SQLite: database, WAL and shared
/// memory per connection) and server connections (PostgreSQL) they hold.
const OPEN_DEDICATED: u64 = 128;
/// Connections per open dedicated SQLite database: one tenant's requests
/// rarely need more, and SQLite serializes its writers anyway.
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

impl DataError {
    /// The storage failure behind this error, also inside a batch.
    fn store_failure(&self) -> Option<&StoreError> {
        match self {
            DataError::Store(e) => Some(e),
            DataError::Batch { error, .. } => error.store_failure(),
            _ => None,
        }
    }
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

/// How the store waits on its databases.
#[derive(Debug, Clone, Copy)]
pub struct Connections {
    /// Longest a call waits for a pooled connection (or to open one) before
    /// it fails with `store_unavailable`; well below the operation
    /// deadlines, so that a database that cannot serve answers fast. On
    /// PostgreSQL it is also the `lock_timeout` of every statement, so a
    /// locked table fails fast too instead of holding its connection.
    pub acquire_timeout: std::time::Duration,
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            acquire_timeout: std::time::Duration::from_secs(2),
        }
    }
}

/// A configured storage pool: its name and where it keeps data.
#[derive(Debug, Clone)]
pub struct StoragePool {
    pub name: PoolName,
    pub location: PoolLocation,
}

#[derive(Debug, Clone)]
pub enum PoolLocation {
    /// A directory with the shared `pooled.db` and a `tenants/` directory
    /// of dedicated database files.
    Sqlite { dir: PathBuf },
    /// A PostgreSQL database: the application connects with `app_url` (a
    /// role that is neither owner, superuser nor BYPASSRLS); `owner_url`
    /// applies migrations, creates indexes, tenant schemas and databases.
    Postgres { app_url: String, owner_url: String },
}

impl StoragePool {
    pub fn sqlite(name: PoolName, dir: &Path) -> Self {
        Self {
            name,
            location: PoolLocation::Sqlite {
                dir: dir.to_owned(),
            },
        }
    }

    pub fn postgres(name: PoolName, app_url: &str, owner_url: &str) -> Self {
        Self {
            name,
            location: PoolLocation::Postgres {
                app_url: app_url.to_owned(),
                owner_url: owner_url.to_owned(),
            },
        }
    }
}

/// The record store over every configured storage pool.
#[derive(Debug, Clone)]
pub struct DataStore {
    cache: RecordCache,
    pools: BTreeMap<PoolName, Storage>,
    /// Open dedicated databases, by pool and tenant.
    dedicated: Cache<(PoolName, TenantId), Db>,
    /// One lock per dedicated database, held while it is opened.
    opening: moka::sync::Cache<(PoolName, TenantId), Arc<tokio::sync::Mutex<()>>>,
    /// Tenants whose writes are held while their data moves.
    gates: WriteGates,
    limits: DataLimits,
    connections: Connections,
    /// The circuit of each dedicated database, kept while it is closed too,
    /// so that one that fails to open is refused at once after a few tries.
    dedicated_health: moka::sync::Cache<(PoolName, TenantId), Arc<Dependency>>,
    /// A place per connection of each dedicated database: a request takes
    /// one (`reserve`) before it takes a shared seat, so requests waiting
    /// for a tenant's own database wait outside the seats.
    dedicated_places: moka::sync::Cache<(PoolName, TenantId), Arc<tokio::sync::Semaphore>>,
}

/// A request's place at a tenant's own database, held while it runs.
#[derive(Debug)]
pub struct Reservation {
    _place: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// One opened storage pool.
#[derive(Debug, Clone)]
enum Storage {
    Sqlite {
        pooled: SqliteDb,
        dedicated_dir: PathBuf,
    },
    Postgres {
        pg: Box<pg::PgStorage>,
        health: Arc<Dependency>,
    },
}

impl Storage {
    /// The circuit of the pool's shared database.
    fn health(&self) -> &Arc<Dependency> {
        match self {
            Storage::Sqlite { pooled, .. } => &pooled.health,
            Storage::Postgres { health, .. } => health,
        }
    }
}

/// One SQLite database: pooled connections for reads, its one writer for
/// writes, and its circuit.
#[derive(Debug, Clone)]
struct SqliteDb {
    pool: SqlitePool,
    writer: Writer,
    health: Arc<Dependency>,
}

/// The database (and on PostgreSQL, the schema) holding one tenant's data.
#[derive(Debug, Clone)]
enum Db {
    Sqlite(SqliteDb),
    Postgres(pg::PgDatabase, Arc<Dependency>),
}

/// A connection to a tenant's data: a pooled one for SQLite reads, the
/// writer's inside its transaction for SQLite writes, and a transaction for
/// every PostgreSQL access (which is how the tenant and schema are set).
enum Session<'a> {
    SqliteRead(PoolConnection<Sqlite>),
    /// The writer task's connection, in the transaction it steers.
    Writer(&'a mut SqliteConnection),
    Postgres(Transaction<'static, Postgres>),
}

enum Conn<'a> {
    Sqlite(&'a mut SqliteConnection),
    Postgres(&'a mut PgConnection),
}

impl Session<'_> {
    fn conn(&mut self) -> Conn<'_> {
        match self {
            Session::SqliteRead(c) => Conn::Sqlite(c),
            Session::Writer(c) => Conn::Sqlite(c),
            Session::Postgres(tx) => Conn::Postgres(tx),
        }
    }

    async fn commit(self) -> Result<()> {
        match self {
            // The writer commits its whole group.
            Session::SqliteRead(_) | Session::Writer(_) => {}
            Session::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }
}

impl SqliteDb {
    /// Opens (creating and migrating) the database file at `path`, with
    /// `max_connections` pooled readers and its writer.
    async fn open(
        path: &Path,
        max_connections: u32,
        connections: Connections,
        health: Arc<Dependency>,
    ) -> Result<Self, StoreError> {
        let pool = sqlite::open(path, max_connections, connections.acquire_timeout).await?;
        Ok(Self {
            pool,
            writer: Writer::start(sqlite::options(path)),
            health,
        })
    }
}

impl Db {
    fn health(&self) -> &Arc<Dependency> {
        match self {
            Db::Sqlite(db) => &db.health,
            Db::Postgres(_, health) => health,
        }
    }

    async fn read(&self, tenant: &TenantId) -> Result<Session<'static>> {
        Ok(match self {
            Db::Sqlite(db) => Session::SqliteRead(db.pool.acquire().await?),
            Db::Postgres(db, _) => Session::Postgres(db.begin(tenant).await?),
        })
    }

    /// Runs `work` as one write: on SQLite through the database's writer,
    /// on PostgreSQL in a transaction of the tenant's.
    async fn run(&self, tenant: &TenantId, work: Work) -> Result<Done> {
        match self {
            Db::Sqlite(db) => db.writer.write(work).await,
            Db::Postgres(db, _) => {
                let tx = if work.is_held_by_moves() {
                    db.begin_write(tenant).await?
                } else {
                    db.begin(tenant).await?
                };
                let mut session = Session::Postgres(tx);
                let done = writer::apply(&mut session, work).await?;
                session.commit().await?;
                Ok(done)
            }
        }
    }

    /// Runs `work` under the database's circuit: refused at once while it is
    /// open, and counted as a failure when the database (not the request)
    /// failed.
    async fn guard<T>(&self, work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        guarded(self.health(), work).await
    }

    /// Creates the indexes of declared fields; before the transaction that
    /// declares them, since on PostgreSQL only the tables' owner may.
    async fn create_indexes(&self, indexes: &[FieldPath]) -> Result<()> {
        match self {
            Db::Sqlite(db) => sqlite::create_indexes(&db.pool, indexes).await,
            Db::Postgres(db, _) => db.create_indexes(indexes).await,
        }
    }

    async fn close(&self) {
        match self {
            Db::Sqlite(db) => db.pool.close().await,
            Db::Postgres(db, _) => db.close().await,
        }
    }
}

/// Runs `work` under `health`'s circuit (see `Db::guard`).
async fn guarded<T>(
    health: &Dependency,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let call = health.enter().map_err(StoreError::from)?;
    let result = work.await;
    match result.as_ref().err().and_then(DataError::store_failure) {
        Some(e) if e.is_unavailability() => call.finish(Err(e)),
        _ => call.finish(Ok(())),
    }
    result
}

impl DataStore {
    /// Opens every pool: a SQLite pool's shared database under its directory
    /// (creating both); a PostgreSQL pool's database, migrated as its owner
    /// and refused if the application's role could bypass row-level security.
    pub async fn open(
        pools: &[StoragePool],
        limits: DataLimits,
        connections: Connections,
        cache: CacheLimits,
    ) -> Result<Self, StoreError> {
        let mut opened = BTreeMap::new();
        for spec in pools {
            let health = Dependency::new(format!("pool {}", spec.name), dependency_policy());
            let storage = match &spec.location {
                PoolLocation::Sqlite { dir } => {
                    let dedicated_dir = dir.join("tenants");
                    std::fs::create_dir_all(&dedicated_dir).map_err(|e| {
                        StoreError::Corrupt(format!("{}: {e}", dedicated_dir.display()))
                    })?;
                    let path = dir.join("pooled.db");
                    Storage::Sqlite {
                        pooled: SqliteDb::open(&path, 8, connections, health).await?,
                        dedicated_dir,
                    }
                }
                PoolLocation::Postgres { app_url, owner_url } => Storage::Postgres {
                    pg: Box::new(pg::PgStorage::open(app_url, owner_url, connections).await?),
                    health,
                },
            };
            opened.insert(spec.name.clone(), storage);
        }
        let dedicated = Cache::builder()
            .max_capacity(OPEN_DEDICATED)
            .eviction_listener(|_tenant, db: Db, _cause| {
                // Closing waits for connections in use; do it off the caller's path.
                tokio::spawn(async move { db.close().await });
            })
            .build();
        Ok(Self {
            cache: RecordCache::new(cache),
            pools: opened,
            dedicated,
            opening: moka::sync::Cache::new(OPEN_DEDICATED * 8),
            gates: WriteGates::default(),
            limits,
            connections,
            dedicated_health: moka::sync::Cache::new(OPEN_DEDICATED * 8),
            dedicated_places: moka::sync::Cache::new(OPEN_DEDICATED * 8),
        })
    }

    /// A place at the server database only `scope`'s tenant uses (its
    /// dedicated PostgreSQL database), one per connection of its pool,
    /// waiting at most the acquire timeout: a request takes it before a
    /// shared seat, so waiting for a tenant's own database never holds what
    /// other tenants need. Refused at once while that database's circuit is
    /// open. Shared databases (pooled, schema) need no place: their
    /// connections are shared capacity like the seats; nor does a dedicated
    /// SQLite file, local to this process, whose writes queue at its writer.
    pub async fn reserve(&self, scope: &DataScope) -> Result<Reservation, StoreError> {
        let on_server = matches!(self.storage(scope.pool())?, Storage::Postgres { .. });
        if scope.isolation() != Isolation::Dedicated || !on_server {
            return Ok(Reservation { _place: None });
        }
        let key = (scope.pool().clone(), scope.tenant().clone());
        if let Some(health) = self.dedicated_health.get(&key) {
            if health.is_down() {
                // Let a probe through when due; refuse meanwhile.
                drop(health.enter()?);
            }
        }
        let places = self.dedicated_places.get_with(key, || {
            Arc::new(tokio::sync::Semaphore::new(
                pg::DEDICATED_CONNECTIONS as usize,
            ))
        });
        match tokio::time::timeout(self.connections.acquire_timeout, places.acquire_owned()).await {
            Ok(Ok(place)) => Ok(Reservation {
                _place: Some(place),
            }),
            _ => Err(StoreError::Unavailable {
                dependency: format!("pool {}, tenant {}", scope.pool(), scope.tenant()).into(),
                retry_after: std::time::Duration::from_secs(1),
            }),
        }
    }

    /// The circuit of every pool's shared database, for `/readyz` and
    /// `/metrics`.
    pub fn dependencies(&self) -> Vec<Arc<Dependency>> {
        self.pools.values().map(|s| s.health().clone()).collect()
    }

    /// Checks every pool's shared database whose circuit is open with a
    /// trivial query bounded by the acquire timeout, so that an idle pool's
    /// circuit closes (and `/readyz` says so) as soon as the database is
    /// back, without waiting for a tenant's request to probe it.
    pub async fn probe(&self) {
        for storage in self.pools.values().filter(|s| s.health().is_down()) {
            let ping = async {
                match storage {
                    Storage::Sqlite { pooled, .. } => {
                        sqlx::query("SELECT 1").execute(&pooled.pool).await?;
                    }
                    Storage::Postgres { pg, .. } => pg.ping().await?,
                }
                Ok::<_, DataError>(())
            };
            let bounded = async {
                tokio::time::timeout(self.connections.acquire_timeout, ping)
                    .await
                    .unwrap_or(Err(DataError::Store(StoreError::Database(
                        sqlx::Error::PoolTimedOut,
                    ))))
            };
            // Refused while open: the circuit lets the probe through when due.
            let _ = guarded(storage.health(), bounded).await;
        }
    }

    fn storage(&self, pool: &PoolName) -> Result<&Storage, StoreError> {
        self.pools.get(pool).ok_or_else(|| {
            StoreError::Corrupt(format!("no storage pool named {pool} is configured"))
        })
    }

    /// The database that holds `scope`'s data.
    async fn db(&self, scope: &DataScope) -> Result<Db> {
        self.db_at(scope.tenant(), scope.pool(), scope.isolation())
            .await
    }

    /// The database holding `tenant`'s data at a placement.
    async fn db_at(&self, tenant: &TenantId, pool: &PoolName, isolation: Isolation) -> Result<Db> {
        let storage = self.storage(pool)?;
        match (storage, isolation) {
            (Storage::Sqlite { pooled, .. }, Isolation::Pooled) => Ok(Db::Sqlite(pooled.clone())),
            (Storage::Postgres { pg, health }, Isolation::Pooled) => {
                Ok(Db::Postgres(pg.pooled(), health.clone()))
            }
            // Not under the circuit: a schema known to exist costs no call,
            // and would close an open circuit as a probe without trying it.
            (Storage::Postgres { pg, health }, Isolation::Schema) => {
                Ok(Db::Postgres(pg.schema(tenant).await?, health.clone()))
            }
            (Storage::Sqlite { .. }, Isolation::Schema) => Err(DataError::Unsupported(
                "the schema model needs a PostgreSQL storage pool".into(),
            )),
            (storage, Isolation::Dedicated) => {
                let key = (pool.clone(), tenant.clone());
                if let Some(db) = self.dedicated.get(&key).await {
                    return Ok(db);
                }
                // One open at a time per database, so that two first requests
                // of a tenant do not both create and migrate it, while another
                // tenant's slow open (a CREATE DATABASE) never holds this one.
                let lock = self.opening.get_with(key.clone(), Arc::default);
                let _opening = lock.lock().await;
                if let Some(db) = self.dedicated.get(&key).await {
                    return Ok(db);
                }
                let health = self.dedicated_health.get_with(key.clone(), || {
                    Dependency::new(format!("pool {pool}, tenant {tenant}"), dependency_policy())
                });
                let connections = self.connections;
                let db = guarded(&health.clone(), async move {
                    Ok(match storage {
                        Storage::Sqlite { dedicated_dir, .. } => {
                            let path = dedicated_dir.join(format!("{tenant}.db"));
                            Db::Sqlite(
                                SqliteDb::open(&path, DEDICATED_CONNECTIONS, connections, health)
                                    .await?,
                            )
                        }
                        Storage::Postgres { pg, .. } => {
                            Db::Postgres(pg.dedicated(tenant).await?, health)
                        }
                    })
                })
                .await?;
                self.dedicated.insert(key, db.clone()).await;
                Ok(db)
            }
        }
    }

    /// Refreshes SQLite's planner statistics where they are stale (`PRAGMA
    /// optimize`), for long-lived connections that seldom close. PostgreSQL's
    /// autovacuum does this on its own.
    pub async fn optimize(&self) -> Result<(), StoreError> {
        for storage in self.pools.values() {
            if let Storage::Sqlite { pooled, .. } = storage {
                sqlx::query("PRAGMA optimize").execute(&pooled.pool).await?;
            }
        }
        for (_, db) in &self.dedicated {
            if let Db::Sqlite(db) = db {
                sqlx::query("PRAGMA optimize").execute(&db.pool).await?;
            }
        }
        Ok(())
    }

    pub async fn close(&self) {
        for storage in self.pools.values() {
            match storage {
                Storage::Sqlite { pooled, .. } => pooled.pool.close().await,
                Storage::Postgres { pg, .. } => pg.close().await,
            }
        }
        for (_, db) in &self.dedicated {
            db.close().await;
        }
    }

    /// The SQLite database behind `scope`, for tests of query plans.
    #[cfg(test)]
    async fn sqlite_pool(&self, scope: &DataScope) -> SqlitePool {
        match self.db(scope).await {
            Ok(Db::Sqlite(db)) => db.pool,
            other => panic!("not a SQLite placement: {other:?}"),
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
        let db = self.db(scope).await?;
        let paths: Vec<String> = indexes.iter().map(ToString::to_string).collect();
        let row = CollectionRow {
            name: name.to_string(),
            indexes: serde_json::to_string(&paths).unwrap_or_default(),
            created_at: to_nanos(now),
        };
        let work = Work::CreateCollection {
            tenant: scope.tenant().clone(),
            row,
        };
        db.guard(async {
            db.create_indexes(indexes).await?;
            db.run(scope.tenant(), work).await
        })
        .await?;
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
        let db = self.db(scope).await?;
        let row = db
            .guard(async {
                let mut session = db.read(scope.tenant()).await?;
                let row = on_engine!(session, collection(scope.tenant(), name))?;
                session.commit().await?;
                Ok(row)
            })
            .await?;
        row.map(CollectionRow::into_collection).transpose()
    }

    pub async fn collections(
        &self,
        scope: &DataScope,
        after: Option<&CollectionName>,
        limit: u32,
    ) -> Result<Vec<Collection>> {
        let db = self.db(scope).await?;
        let after = after.map_or("", CollectionName::as_str);
        let rows = db
            .guard(async {
                let mut session = db.read(scope.tenant()).await?;
                let rows = on_engine!(
                    session,
                    collections(scope.tenant(), after, i64::from(limit))
                )?;
                session.commit().await?;
                Ok(rows)
            })
            .await?;
        rows.into_iter()
            .map(CollectionRow::into_collection)
            .collect()
    }

    /// Deletes a collection and its records; `false` if there was none.
    pub async fn delete_collection(
        &self,
        scope: &DataScope,
        name: &CollectionName,
    ) -> Result<bool> {
        let _permit = self.gates.permit(scope).await?;
        let db = self.db(scope).await?;
        let work = Work::DeleteCollection {
            tenant: scope.tenant().clone(),
            name: name.clone(),
        };
        let deleted = db.guard(db.run(scope.tenant(), work)).await?;
        if !matches!(deleted, Done::Deleted(true)) {
            return Ok(false);
        }
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
        let db = self.db(scope).await?;
        let found = db
            .guard(async {
                let mut session = db.read(scope.tenant()).await?;
                let row = on_engine!(session, record(scope.tenant(), collection, id, false))?;
                let collection_found = match row {
                    Some(_) => true,
                    None => on_engine!(session, collection(scope.tenant(), collection))?.is_some(),
                };
                session.commit().await?;
                Ok((row, collection_found))
            })
            .await?;
        let row = match found {
            (Some(row), _) => row,
            (None, true) => return Ok(None),
            (None, false) => return Err(DataError::CollectionNotFound),
        };
        let record = row.into_record()?;
        self.cache.fill(key, &record, started).await;
        Ok(Some(record))
    }

    /// Runs `ops` in one transaction: all succeed or none is applied.
    pub async fn write(
        &self,
        scope: &DataScope,
        collection: &CollectionName,
        ops: Vec<BatchOp>,
        now: OffsetDateTime,
    ) -> Result<Vec<BatchResult>> {
        check_shapes(&ops)?;
        let _permit = self.gates.permit(scope).await?;
        let touched: Vec<RecordKey> = ops
            .iter()
            .map(|op| match op {
                BatchOp::Create { id, .. }
                | BatchOp::Put { id, .. }
                | BatchOp::Patch { id, .. }
                | BatchOp::Delete { id, .. } => RecordKey::new(scope, collection, id),
            })
            .collect();
        let db = self.db(scope).await?;
        let work = Work::Batch {
            tenant: scope.tenant().clone(),
            collection: collection.clone(),
            ops,
            now,
            limits: self.limits,
        };
        let Done::Batch(results) = db.guard(db.run(scope.tenant(), work)).await? else {
            return Err(DataError::Unsupported(
                "a batch answered as another write".into(),
            ));
        };
        self.cache.invalidate(touched).await;
        Ok(results)
    }

    /// One operation of a batch, in the batch's transaction.
    async fn apply(
        limits: &DataLimits,
        session: &mut Session<'_>,
        tenant: &TenantId,
        collection: &CollectionName,
        op: BatchOp,
        now: OffsetDateTime,
    ) -> Result<BatchResult> {
        let current = match &op {
            BatchOp::Create { .. } => None,
            BatchOp::Put { id, .. } | BatchOp::Patch { id, .. } | BatchOp::Delete { id, .. } => {
                on_engine!(session, record(tenant, collection, id, true))?
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
                Self::insert(limits, session, tenant, collection, &id, body, now).await
            }
            BatchOp::Put { id, body, expect } => {
                check_version(expect, &current)?;
                match current {
                    None => Self::insert(limits, session, tenant, collection, &id, body, now).await,
                    Some(row) => {
                        Self::update(limits, session, tenant, collection, row, body, now).await
                    }
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
                Self::update(limits, session, tenant, collection, row, body, now).await
            }
            BatchOp::Delete { id, expect } => {
                check_version(expect, &current)?;
                let row = current.ok_or(DataError::RecordNotFound)?;
                on_engine!(session, delete_record(tenant, collection, &id))?;
                on_engine!(session, add_usage(tenant, -row.size, -1))?;
                Ok(BatchResult::Deleted(id))
            }
        }
    }

    /// The stored text of a body, checked against the record rules.
    fn encode(limits: &DataLimits, body: &Value) -> Result<String> {
        check_body(body).map_err(|e| DataError::InvalidBody(e.to_string()))?;
        let text = body.to_string();
        if text.len() > limits.max_record_bytes {
            return Err(DataError::InvalidBody(format!(
                "the record is {} bytes; the limit is {}",
                text.len(),
                limits.max_record_bytes
            )));
        }
        Ok(text)
    }

    async fn insert(
        limits: &DataLimits,
        session: &mut Session<'_>,
        tenant: &TenantId,
        collection: &CollectionName,
        id: &RecordId,
        body: Value,
        now: OffsetDateTime,
    ) -> Result<BatchResult> {
        let text = Self::encode(limits, &body)?;
        let row = RecordRow {
            id: id.to_string(),
            version: 1,
            size: stored_size(id, &text),
            body: text,
            created_at: to_nanos(now),
            updated_at: to_nanos(now),
        };
        on_engine!(session, insert_record(tenant, collection.as_str(), &row))?;
        on_engine!(session, add_usage(tenant, row.size, 1))?;
        Ok(BatchResult::Written(Record {
            id: id.clone(),
            version: 1,
            body,
            created_at: now,
            updated_at: now,
        }))
    }

    async fn update(
        limits: &DataLimits,
        session: &mut Session<'_>,
        tenant: &TenantId,
        collection: &CollectionName,
        current: RecordRow,
        body: Value,
        now: OffsetDateTime,
    ) -> Result<BatchResult> {
        let text = Self::encode(limits, &body)?;
        let id = parse("records.id", &current.id, RecordId::parse)?;
        let row = RecordRow {
            size: stored_size(&id, &text),
            body: text,
            version: current.version + 1,
            updated_at: to_nanos(now),
            ..current
        };
        on_engine!(session, update_record(tenant, collection, &row))?;
        on_engine!(session, add_usage(tenant, row.size - current.size, 0))?;
        Ok(BatchResult::Written(Record {
            id,
            version: row.version,
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
        let db = self.db(scope).await?;
        let rows = db
            .guard(async {
                let mut session = db.read(scope.tenant()).await?;
                let rows = on_engine!(session, list(scope.tenant(), collection, query))?;
                session.commit().await?;
                Ok(rows)
            })
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

    /// Bytes of the scope's tenant's records in the read cache.
    pub async fn cache_bytes(&self, scope: &DataScope) -> u64 {
        self.cache.tenant_bytes(scope.tenant()).await
    }

    pub async fn usage(&self, scope: &DataScope) -> Result<Usage> {
        let db = self.db(scope).await?;
        let row = db
            .guard(async {
                let mut session = db.read(scope.tenant()).await?;
                let row = on_engine!(session, usage(scope.tenant()))?;
                session.commit().await?;
                Ok(row)
            })
            .await?;
        Ok(row.map_or_else(Usage::default, |(bytes, records)| Usage { bytes, records }))
    }

    /// Removes every trace of a tenant's data in `pool`, whatever its model.
    /// Safe to repeat: a purge interrupted by a crash is finished by the next
    /// one. Only the platform purges (`_operator`).
    pub async fn purge(
        &self,
        _operator: &OperatorScope,
        tenant: &TenantId,
        pool: &PoolName,
    ) -> Result<(), StoreError> {
        self.remove_pooled(tenant, pool).await?;
        self.remove_schema(tenant, pool).await?;
        self.remove_dedicated(tenant, pool).await?;
        self.cache.invalidate_tenant(tenant, None);
        Ok(())
    }

    /// Deletes `tenant`'s rows from `pool`'s shared tables.
    async fn remove_pooled(&self, tenant: &TenantId, pool: &PoolName) -> Result<(), StoreError> {
        let db = self
            .db_at(tenant, pool, Isolation::Pooled)
            .await
            .map_err(store_error)?;
        let work = Work::DeleteTenantRows {
            tenant: tenant.clone(),
        };
        db.guard(db.run(tenant, work))
            .await
            .map(drop)
            .map_err(store_error)
    }

    /// Drops `tenant`'s own schema in `pool`, if it is PostgreSQL.
    async fn remove_schema(&self, tenant: &TenantId, pool: &PoolName) -> Result<(), StoreError> {
        match self.storage(pool)? {
            Storage::Postgres { pg, .. } => pg.drop_schema(tenant).await,
            Storage::Sqlite { .. } => Ok(()),
        }
    }

    /// Closes and deletes `tenant`'s dedicated database in `pool`, if any.
    async fn remove_dedicated(&self, tenant: &TenantId, pool: &PoolName) -> Result<(), StoreError> {
        let storage = self.storage(pool)?;
        let open = self.dedicated.remove(&(pool.clone(), tenant.clone())).await;
        if let Some(open) = &open {
            open.close().await;
        }
        let dedicated_dir = match storage {
            Storage::Postgres { pg, .. } => {
                let open = match &open {
                    Some(Db::Postgres(db, _)) => Some(db),
                    _ => None,
                };
                return pg.drop_database(tenant, open).await;
            }
            Storage::Sqlite { dedicated_dir, .. } => dedicated_dir,
        };
        let base = dedicated_dir.join(format!("{tenant}.db"));
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

/// Runs a batch's operations in order in one transaction; the first that
/// fails fails the batch (a single write reports its own error, a batch
/// says which one failed).
async fn apply_batch(
    limits: &DataLimits,
    session: &mut Session<'_>,
    tenant: &TenantId,
    collection: &CollectionName,
    ops: Vec<BatchOp>,
    now: OffsetDateTime,
) -> Result<Vec<BatchResult>> {
    let single = ops.len() == 1;
    let mut results = Vec::with_capacity(ops.len());
    for (index, op) in ops.into_iter().enumerate() {
        match DataStore::apply(limits, session, tenant, collection, op, now).await {
            Ok(result) => results.push(result),
            Err(error) if single => return Err(error),
            Err(error) => {
                return Err(DataError::Batch {
                    index,
                    error: Box::new(error),
                })
            }
        }
    }
    Ok(results)
}

/// Checks every operation's body against the record rules before any record
/// is read, so a malformed write is refused as such whatever the records'
/// state (a version check would otherwise answer first), and takes no place
/// at the tenant's database.
/// A patch is a JSON object too: a merge patch of another kind replaces the
/// whole record with something that is not one.
fn check_shapes(ops: &[BatchOp]) -> Result<()> {
    let single = ops.len() == 1;
    for (index, op) in ops.iter().enumerate() {
        let body = match op {
            BatchOp::Create { body, .. } | BatchOp::Put { body, .. } => body,
            BatchOp::Patch { patch, .. } => patch,
            BatchOp::Delete { .. } => continue,
        };
        if let Err(e) = check_body(body) {
            let error = DataError::InvalidBody(e.to_string());
            return Err(if single {
                error
            } else {
                DataError::Batch {
                    index,
                    error: Box::new(error),
                }
            });
        }
    }
    Ok(())
}

/// A failure of a step that no request caused, as the storage error it is.
fn store_error(e: DataError) -> StoreError {
    match e {
        DataError::Store(e) => e,
        other => StoreError::Corrupt(other.to_string()),
    }
}

/// Compiles a filter to SQL: its structure (`and`, `or`, `in`, `!=` as the
/// negation of `=`, so that records without the field match `field != v`)
/// around typed comparisons, which each engine writes with `comparison`
/// and which must never be NULL.
fn push_filter<'a, DB: sqlx::Database>(
    sql: &mut QueryBuilder<'a, DB>,
    filter: &Filter,
    comparison: fn(&mut QueryBuilder<'a, DB>, &FieldPath, CmpOp, &Literal),
) {
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
                push_filter(sql, term, comparison);
            }
            sql.push(")");
        }
        Filter::In(field, values) => {
            sql.push("(");
            for (i, value) in values.iter().enumerate() {
                if i > 0 {
                    sql.push(" OR ");
                }
                comparison(sql, field, CmpOp::Eq, value);
            }
            sql.push(")");
        }
        Filter::Cmp(field, CmpOp::Ne, value) => {
            sql.push("NOT ");
            comparison(sql, field, CmpOp::Eq, value);
        }
        Filter::Cmp(field, op, value) => comparison(sql, field, *op, value),
    }
}

/// Bytes a record counts for: its id and its stored body.
fn stored_size(id: &RecordId, text: &str) -> i64 {
    i64::try_from(id.as_str().len() + text.len()).unwrap_or(i64::MAX)
}

/// A collection as stored: its declared index paths as a JSON array.
#[derive(Debug, Clone, sqlx::FromRow)]
struct CollectionRow {
    name: String,
    indexes: String,
    created_at: i64,
}

impl CollectionRow {
    /// The declared index paths.
    fn index_paths(&self) -> Result<Vec<FieldPath>> {
        let paths: Vec<String> = parse("collections.indexes", &self.indexes, |t| {
            serde_json::from_str::<Vec<String>>(t)
        })?;
        Ok(paths
            .iter()
            .map(|p| parse("collections.indexes", p, FieldPath::parse))
            .collect::<Result<_, StoreError>>()?)
    }

    fn into_collection(self) -> Result<Collection> {
        Ok(Collection {
            indexes: self.index_paths()?,
            name: parse("collections.name", &self.name, CollectionName::parse)?,
            created_at: from_nanos(self.created_at)?,
        })
    }
}

/// A record as stored; the body is JSON text on every engine.
#[derive(Debug, sqlx::FromRow)]
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
    /// The sort field's value as JSON text, when the list is sorted.
    sort_key: Option<String>,
}
