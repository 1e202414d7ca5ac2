//! The control-plane catalog: tenants and API keys, with every change written
//! together with its audit entry in one transaction.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyPool, Executor, Transaction};
use tenantd_core::quota::BillingDay;
use tenantd_core::{
    Isolation, JobId, KeyId, KeyOwner, KeyRecord, NodeId, OperatorScope, PlanId, PoolName,
    RegionId, Role, SecretHash, Tenant, TenantId, TenantScope, TenantStatus,
};
use time::OffsetDateTime;

use crate::audit::{append, AuditEntry, AuditRow, NewAuditEntry, Verification};
use crate::codec::{
    from_nanos, opt_from_nanos, parse, placeholder_list, placeholder_rows, to_nanos,
};
use crate::health::{dependency_policy, Dependency};
use crate::{Result, StoreError};

/// Whose keys or audit trail a call concerns. The tenant side needs a
/// `TenantScope`, which only the identity stage hands out; the platform side
/// is operator business, and the server's route table lets only operators
/// reach it.
#[derive(Debug, Clone, Copy)]
pub enum Owner<'a> {
    /// The platform's own: operator keys, the platform's trail.
    Platform(&'a OperatorScope),
    Tenant(&'a TenantScope),
}

impl Owner<'_> {
    /// The `tenant_id` column value, compared with `IS` so NULL matches NULL.
    fn column(&self) -> Option<&str> {
        match self {
            Owner::Platform(_) => None,
            Owner::Tenant(scope) => Some(scope.tenant().as_str()),
        }
    }
}

/// `sqlite://` URL of the catalog file at `path`, created if missing.
fn sqlite_url(path: &Path) -> Result<String> {
    let text = path.to_str().ok_or_else(|| {
        StoreError::Corrupt(format!("catalog path {} is not UTF-8", path.display()))
    })?;
    // The file name is percent-decoded from the URL.
    let mut url = String::from("sqlite://");
    for c in text.chars() {
        match c {
            '%' => url.push_str("%25"),
            '?' => url.push_str("%3F"),
            '#' => url.push_str("%23"),
            c => url.push(c),
        }
    }
    url.push_str("?mode=rwc");
    Ok(url)
}

/// The engine a catalog runs on: its SQL is written once for both, and
/// differs only in how a write transaction begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogEngine {
    /// One SQLite file in the data directory: one node.
    Sqlite,
    /// A PostgreSQL database that several nodes may share.
    Postgres,
}

/// The session lock of the one node serving a PostgreSQL catalog ("tenantd1"
/// in ASCII), distinct from the write lock.
pub(crate) const POSTGRES_NODE_LOCK: i64 = i64::from_be_bytes(*b"tenantd1");

/// Held by the one node that serves a PostgreSQL catalog, on a connection
/// of its own: PostgreSQL releases it when the node stops or dies, however
/// it ends. Until a tenant's move holds its writes on every node (it holds
/// them on the node running it) and jobs belong to their node, a second
/// node on the same catalog is refused.
#[derive(Debug)]
pub struct CatalogLease {
    /// Holds the lock for as long as it is open.
    connection: sqlx::PgConnection,
}

/// Work one node at a time does for the whole catalog, each under a lease
/// of its own, so that it runs once however many nodes there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackgroundTask {
    /// Purging tenants whose retention ended.
    PurgeSweep,
    /// Rotating the gateway's signing keys and forgetting retired ones.
    SigningKeys,
}

impl BackgroundTask {
    /// Its session lock: "tenantd" and a letter, apart from the node's and
    /// the write lock.
    pub(crate) fn lock(self) -> i64 {
        let letter = match self {
            Self::PurgeSweep => b'P',
            Self::SigningKeys => b'K',
        };
        i64::from_be_bytes([b't', b'e', b'n', b'a', b'n', b't', b'd', letter])
    }
}

/// The right to run one job. On PostgreSQL a session lock of the job's own,
/// held on a connection of its own and lost with it, so that when the node
/// running a job dies another node finds the job's lease free and takes the
/// job over. On SQLite the one node's: it runs every job of its catalog.
#[derive(Debug)]
pub struct JobLease {
    _lock: Option<CatalogLease>,
}

/// A job's session lock: the first eight bytes of a hash of its id, apart
/// from the fixed locks above but for a chance of one in 2^64.
pub(crate) fn job_lock(id: &JobId) -> i64 {
    let hash = Sha256::digest(format!("tenantd job {id}").as_bytes());
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&hash[..8]);
    i64::from_be_bytes(bytes)
}

impl CatalogLease {
    /// Takes the lease of the catalog at `url`, or `None` while another
    /// node holds it. A PostgreSQL that does not answer within `timeout` is
    /// an unavailable store, never a wait without end.
    /// The lease is held for `node`, which the cluster's view names as its
    /// holder.
    pub async fn take(url: &str, node: &NodeId, timeout: Duration) -> Result<Option<Self>> {
        Self::take_lock(url, POSTGRES_NODE_LOCK, node, timeout).await
    }

    /// Takes the lease of `task` on the catalog at `url` for `node`, or
    /// `None` while another node holds it; bounded by `timeout` as `take` is.
    pub async fn take_task(
        url: &str,
        task: BackgroundTask,
        node: &NodeId,
        timeout: Duration,
    ) -> Result<Option<Self>> {
        Self::take_lock(url, task.lock(), node, timeout).await
    }

    async fn take_lock(
        url: &str,
        lock: i64,
        node: &NodeId,
        timeout: Duration,
    ) -> Result<Option<Self>> {
        use sqlx::ConnectOptions;
        let attempt = async {
            let options = url
                .parse::<sqlx::postgres::PgConnectOptions>()?
                .application_name(&crate::nodes::holder_name(node));
            let mut conn = options.connect().await?;
            let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(lock)
                .fetch_one(&mut conn)
                .await?;
            Ok::<_, StoreError>(taken.then_some(Self { connection: conn }))
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .unwrap_or(Err(StoreError::Database(sqlx::Error::PoolTimedOut)))
    }

    /// Whether the lease is still held: `Some(false)` when its connection
    /// failed (a connection that dropped took the lock with it), `None` when
    /// PostgreSQL did not answer within `timeout` (hung: the lease stands
    /// until its connection drops).
    pub async fn held(&mut self, timeout: Duration) -> Option<bool> {
        let check = sqlx::query("SELECT 1").execute(&mut self.connection);
        tokio::time::timeout(timeout, check)
            .await
            .ok()
            .map(|answer| answer.is_ok())
    }
}

impl Catalog {
    /// Takes the lease of job `id`, or `None` while another node holds it;
    /// bounded by `timeout`. On SQLite it is always free: call it for jobs
    /// this process does not run already (those it starts, and at start
    /// those a previous run left running).
    pub async fn lease_job(
        &self,
        id: &JobId,
        node: &NodeId,
        timeout: Duration,
    ) -> Result<Option<JobLease>> {
        match &self.postgres_url {
            None => Ok(Some(JobLease { _lock: None })),
            Some(url) => Ok(CatalogLease::take_lock(url, job_lock(id), node, timeout)
                .await?
                .map(|lock| JobLease { _lock: Some(lock) })),
        }
    }
}

/// The control-plane catalog, on SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub(crate) pool: AnyPool,
    engine: CatalogEngine,
    /// Where a change listener connects, on PostgreSQL.
    pub(crate) postgres_url: Option<Arc<str>>,
    /// The catalog's circuit, fed by the write-behind's writes.
    health: Arc<Dependency>,
}

/// A violated PRIMARY KEY or UNIQUE constraint: SQLite's extended result
/// codes, or PostgreSQL's SQLSTATE.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("1555" | "2067" | "23505")))
}

/// The advisory lock every PostgreSQL catalog write takes first ("tenantd"
/// in ASCII): writers queue on it as SQLite's writers queue on its write
/// lock, so a read-then-write (the audit chain's head, a version number) is
/// never interleaved with another node's.
const POSTGRES_WRITE_LOCK: i64 = i64::from_be_bytes(*b"\0tenantd");

impl Catalog {
    /// Opens (creating if needed) the catalog at `path` and applies migrations.
    /// Waits for a connection at most `acquire_timeout`.
    pub async fn open(path: &Path, acquire_timeout: Duration) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let url = sqlite_url(path)?;
        let pool = crate::hygiene(AnyPoolOptions::new())
            // A connection to a local file does not go stale; a ping before
            // each checkout would be one more hop to SQLite's thread per query.
            .test_before_acquire(false)
            .max_connections(8)
            .acquire_timeout(acquire_timeout)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // Control-plane writes are rare and must survive power
                    // loss, so each commit is synced rather than trusting
                    // the OS cache. (Foreign keys and a 5 s busy timeout are
                    // sqlx's defaults for SQLite.)
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        sqlx::migrate!("./migrations/catalog").run(&pool).await?;
        Self::opened(pool, CatalogEngine::Sqlite, None).await
    }

    /// Connects to the catalog on PostgreSQL at `url` and applies its
    /// migrations (`migrations/catalog_postgres/`).
    pub async fn open_postgres(url: &str, acquire_timeout: Duration) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let pool = crate::hygiene(AnyPoolOptions::new())
            .max_connections(8)
            .acquire_timeout(acquire_timeout)
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/catalog_postgres")
            .run(&pool)
            .await?;
        Self::opened(pool, CatalogEngine::Postgres, Some(url.into())).await
    }

    /// The catalog on `pool`, once its audit entries written before chaining
    /// (on catalogs that old) are chained.
    async fn opened(
        pool: AnyPool,
        engine: CatalogEngine,
        postgres_url: Option<Arc<str>>,
    ) -> Result<Self> {
        let catalog = Self {
            pool,
            engine,
            postgres_url,
            health: Dependency::new("catalog", dependency_policy()),
        };
        let mut tx = catalog.begin_write().await?;
        let adopted = crate::audit::adopt_unchained(&mut tx).await?;
        tx.commit().await?;
        if adopted > 0 {
            tracing::info!(
                entries = adopted,
                "chained the audit entries written before chaining"
            );
        }
        Ok(catalog)
    }

    /// The catalog's circuit. The write-behind runs its writes through it,
    /// so `/readyz` knows whether the catalog can write, and a catalog that
    /// keeps failing is not retried every second by every writer.
    pub fn dependency(&self) -> &Arc<Dependency> {
        &self.health
    }

    /// While the catalog's circuit is open, tries one small write through
    /// it, so that a catalog that can write again is seen as such (and
    /// `/readyz` says so) even when nothing else writes.
    pub async fn probe(&self, now: OffsetDateTime) {
        if !self.health.is_down() {
            return;
        }
        // Refused while open: the circuit lets this probe through when due.
        let Ok(call) = self.health.enter() else {
            return;
        };
        let write = async {
            let mut tx = self.begin_write().await?;
            sqlx::query(
                "INSERT INTO health_probe (id, at) VALUES (1, $1)
                 ON CONFLICT (id) DO UPDATE SET at = excluded.at",
            )
            .bind(to_nanos(now))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok::<_, StoreError>(())
        };
        match write.await {
            Ok(()) => call.finish(Ok(())),
            Err(e) => call.finish(Err(&e)),
        }
    }

    /// The server secret's fingerprint this catalog was first opened with,
    /// recorded now if it has none (a new catalog, or one from before the
    /// fingerprint was kept, whose keys are taken to be made with `current`).
    pub async fn secret_fingerprint(&self, current: &str, now: OffsetDateTime) -> Result<String> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO server_secret (id, fingerprint, recorded_at) VALUES (1, $1, $2)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(current)
        .bind(to_nanos(now))
        .execute(&mut *tx)
        .await?;
        let recorded: String =
            sqlx::query_scalar("SELECT fingerprint FROM server_secret WHERE id = 1")
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(recorded)
    }

    /// Closes every connection, waiting for those in use.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The engine it runs on.
    pub fn engine(&self) -> CatalogEngine {
        self.engine
    }

    /// Starts a write transaction that holds the catalog's write lock from
    /// its first statement: SQLite's (`BEGIN IMMEDIATE`), so that two
    /// writers queue on the busy timeout instead of failing on upgrade; on
    /// PostgreSQL, the catalog's advisory lock, so that writers from every
    /// node take turns.
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Any>> {
        match self.engine {
            CatalogEngine::Sqlite => Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?),
            CatalogEngine::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT 1 FROM pg_advisory_xact_lock($1)")
                    .bind(POSTGRES_WRITE_LOCK)
                    .execute(&mut *tx)
                    .await?;
                Ok(tx)
            }
        }
    }

    // ---- tenants ----

    /// Inserts a new tenant; `Conflict` if the id is taken, even by a
    /// soft-deleted tenant (ids are never reused before purge).
    pub async fn create_tenant(&self, tenant: &Tenant, audit: &NewAuditEntry) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO tenants (id, name, plan, plan_version, region, isolation, pool, status,
                                  billing_day, created_at, updated_at, deleted_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(tenant.id.as_str())
        .bind(&tenant.name)
        .bind(tenant.plan.as_str())
        .bind(tenant.plan_version)
        .bind(tenant.region.as_str())
        .bind(tenant.isolation.as_str())
        .bind(tenant.pool.as_str())
        .bind(tenant.status.as_str())
        .bind(i64::from(tenant.billing_day.get()))
        .bind(to_nanos(tenant.created_at))
        .bind(to_nanos(tenant.updated_at))
        .bind(tenant.deleted_at.map(to_nanos))
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => return Err(StoreError::Conflict),
            other => other?,
        };
        append(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The tenant of `scope`, whatever its status.
    pub async fn tenant(&self, scope: &TenantScope) -> Result<Option<Tenant>> {
        self.tenant_row(scope.tenant()).await
    }

    /// Any tenant, for the platform: operators manage every tenant.
    pub async fn tenant_for(
        &self,
        _operator: &OperatorScope,
        id: &TenantId,
    ) -> Result<Option<Tenant>> {
        self.tenant_row(id).await
    }

    async fn tenant_row(&self, id: &TenantId) -> Result<Option<Tenant>> {
        sqlx::query_as::<_, TenantRow>("SELECT * FROM tenants WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(TenantRow::into_tenant)
            .transpose()
    }

    /// Tenants in id order after `after`, at most `limit`, optionally of one status.
    pub async fn list_tenants(
        &self,
        after: Option<&TenantId>,
        limit: u32,
        status: Option<TenantStatus>,
    ) -> Result<Vec<Tenant>> {
        sqlx::query_as::<_, TenantRow>(
            "SELECT * FROM tenants
             WHERE id > $1 AND ($2 IS NULL OR status = $3)
             ORDER BY id LIMIT $4",
        )
        .bind(after.map_or("", TenantId::as_str))
        .bind(status.map(TenantStatus::as_str))
        .bind(status.map(TenantStatus::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(TenantRow::into_tenant)
        .collect()
    }

    /// Replaces a tenant's mutable fields if its status is still
    /// `expected_status`; `Ok(false)` when a concurrent change got there first.
    pub async fn update_tenant(
        &self,
        _operator: &OperatorScope,
        tenant: &Tenant,
        expected_status: TenantStatus,
        audit: &NewAuditEntry,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE tenants SET name = $1, plan = $2, plan_version = $3, region = $4, status = $5, billing_day = $6,
                                updated_at = $7, deleted_at = $8
             WHERE id = $9 AND status = $10",
        )
        .bind(&tenant.name)
        .bind(tenant.plan.as_str())
        .bind(tenant.plan_version)
        .bind(tenant.region.as_str())
        .bind(tenant.status.as_str())
        .bind(i64::from(tenant.billing_day.get()))
        .bind(to_nanos(tenant.updated_at))
        .bind(tenant.deleted_at.map(to_nanos))
        .bind(tenant.id.as_str())
        .bind(expected_status.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            return Ok(false);
        }
        append(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Removes a soft-deleted tenant with its keys and its own audit trail,
    /// leaving a platform-level audit entry that names the keys removed.
    /// Returns their ids, so that caches can forget them, or `None` if the
    /// tenant is not deleted.
    pub async fn purge_tenant(
        &self,
        _operator: &OperatorScope,
        id: &TenantId,
        audit: &NewAuditEntry,
    ) -> Result<Option<Vec<KeyId>>> {
        let mut tx = self.begin_write().await?;
        let keys: Vec<String> = sqlx::query_scalar("SELECT id FROM api_keys WHERE tenant_id = $1")
            .bind(id.as_str())
            .fetch_all(&mut *tx)
            .await?;
        let purged = sqlx::query("DELETE FROM tenants WHERE id = $1 AND status = 'deleted'")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if purged == 0 {
            return Ok(None);
        }
        for table in [
            "audit_log",
            "usage_ledgers",
            "usage_hours",
            "quota_events",
            "tenant_addons",
            "policy_versions",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1"))
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        // Other nodes learn from the entry which cached keys to forget.
        let mut audit = audit.clone();
        if let serde_json::Value::Object(details) = &mut audit.details {
            details.insert("keys".to_owned(), serde_json::json!(keys));
        } else {
            audit.details = serde_json::json!({ "keys": keys });
        }
        append(&mut tx, &audit).await?;
        tx.commit().await?;
        let keys = keys
            .iter()
            .map(|k| parse("api_keys.id", k, KeyId::parse))
            .collect::<Result<_>>()?;
        Ok(Some(keys))
    }

    /// Ids of tenants soft-deleted at or before `deleted_by`, oldest first.
    pub async fn tenants_deleted_by(
        &self,
        deleted_by: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<TenantId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM tenants WHERE deleted_at IS NOT NULL AND deleted_at <= $1
             ORDER BY deleted_at LIMIT $2",
        )
        .bind(to_nanos(deleted_by))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        ids.iter()
            .map(|id| parse("tenants.id", id, TenantId::parse))
            .collect()
    }

    /// Records an action that changes nothing in the catalog (a purge of a
    /// cache) in the audit log, in a transaction of its own.
    pub async fn record_action(&self, audit: &NewAuditEntry) -> Result<()> {
        let mut tx = self.begin_write().await?;
        append(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- keys ----

    /// Stores a new key of `owner`, whose proof (an operator's scope for a
    /// platform key, the tenant's scope for one of its keys) the caller holds.
    pub async fn insert_key(
        &self,
        owner: Owner<'_>,
        key: &KeyRecord,
        audit: &NewAuditEntry,
    ) -> Result<()> {
        if owner.column() != key.owner.tenant().map(TenantId::as_str) {
            return Err(StoreError::WrongOwner(format!(
                "key {} belongs to {:?}, not to the owner whose scope was given",
                key.id, key.owner
            )));
        }
        let mut tx = self.begin_write().await?;
        insert_key(&mut tx, key).await?;
        append(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Keys by id alone, with their tenants (`None` for platform keys), in
    /// one joined query: identify's misses and its refreshes ahead of
    /// expiry. Only the identity stage calls this: it runs before any tenant
    /// is known, and its result is checked against the presented secret
    /// before anything else uses it.
    pub async fn keys_with_tenants(
        &self,
        ids: &[KeyId],
    ) -> Result<Vec<(KeyRecord, Option<Tenant>)>> {
        let mut found = Vec::with_capacity(ids.len());
        for part in ids.chunks(crate::usage::ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT k.*, t.id AS t_id, t.name AS t_name, t.plan AS t_plan,
                        t.plan_version AS t_plan_version, t.region AS t_region,
                        t.isolation AS t_isolation, t.pool AS t_pool, t.status AS t_status,
                        t.billing_day AS t_billing_day, t.created_at AS t_created_at,
                        t.updated_at AS t_updated_at, t.deleted_at AS t_deleted_at
                 FROM api_keys k LEFT JOIN tenants t ON t.id = k.tenant_id
                 WHERE k.id IN ({})",
                placeholder_list(self.engine(), part.len(), 1)
            );
            let mut query = sqlx::query_as::<_, KeyAndTenantRow>(&sql);
            for id in part {
                query = query.bind(id.as_str());
            }
            for row in query.fetch_all(&self.pool).await? {
                let tenant = row
                    .tenant
                    .into_row()
                    .map(TenantRow::into_tenant)
                    .transpose()?;
                found.push((row.key.into_record()?, tenant));
            }
        }
        Ok(found)
    }

    pub async fn key(&self, owner: Owner<'_>, id: &KeyId) -> Result<Option<KeyRecord>> {
        sqlx::query_as::<_, KeyRow>(
            "SELECT * FROM api_keys WHERE id = $1 AND tenant_id IS NOT DISTINCT FROM $2",
        )
        .bind(id.as_str())
        .bind(owner.column())
        .fetch_optional(&self.pool)
        .await?
        .map(KeyRow::into_record)
        .transpose()
    }

    /// Keys of one owner in id order after `after`, at most `limit`.
    pub async fn keys(
        &self,
        owner: Owner<'_>,
        after: Option<&KeyId>,
        limit: u32,
    ) -> Result<Vec<KeyRecord>> {
        sqlx::query_as::<_, KeyRow>(
            "SELECT * FROM api_keys WHERE tenant_id IS NOT DISTINCT FROM $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(owner.column())
        .bind(after.map_or("", KeyId::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(KeyRow::into_record)
        .collect()
    }

    /// Revokes a key at `at`. Revoking a revoked key changes nothing and
    /// records nothing. `None` if the owner has no such key.
    pub async fn revoke_key(
        &self,
        owner: Owner<'_>,
        id: &KeyId,
        at: OffsetDateTime,
        audit: &NewAuditEntry,
    ) -> Result<Option<KeyRecord>> {
        let mut tx = self.begin_write().await?;
        let changed = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND tenant_id IS NOT DISTINCT FROM $3 AND revoked_at IS NULL",
        )
        .bind(to_nanos(at))
        .bind(id.as_str())
        .bind(owner.column())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed > 0 {
            append(&mut tx, audit).await?;
        }
        let key = sqlx::query_as::<_, KeyRow>(
            "SELECT * FROM api_keys WHERE id = $1 AND tenant_id IS NOT DISTINCT FROM $2",
        )
        .bind(id.as_str())
        .bind(owner.column())
        .fetch_optional(&mut *tx)
        .await?
        .map(KeyRow::into_record)
        .transpose()?;
        tx.commit().await?;
        Ok(key)
    }

    /// Replaces `old` by `new`: `old` now expires at `old_expires_at` (the end
    /// of the overlap) and `new` is stored, atomically. `Ok(false)` if `old`
    /// is gone or revoked meanwhile.
    pub async fn rotate_key(
        &self,
        owner: Owner<'_>,
        old: &KeyId,
        old_expires_at: OffsetDateTime,
        new: &KeyRecord,
        audit: &NewAuditEntry,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let changed = sqlx::query(
            "UPDATE api_keys SET expires_at = $1
             WHERE id = $2 AND tenant_id IS NOT DISTINCT FROM $3 AND revoked_at IS NULL",
        )
        .bind(to_nanos(old_expires_at))
        .bind(old.as_str())
        .bind(owner.column())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Ok(false);
        }
        insert_key(&mut tx, new).await?;
        append(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records last-used instants gathered in memory, in one transaction.
    /// An instant never moves a key's last use backwards.
    pub async fn record_key_use(&self, uses: &[(KeyId, OffsetDateTime)]) -> Result<()> {
        if uses.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for part in uses.chunks(crate::usage::ROWS_PER_STATEMENT) {
            // The latest use of each key in the part; a use never moves a
            // key's last use backwards.
            let sql = format!(
                "WITH used (id, at) AS (VALUES {})
                 UPDATE api_keys SET last_used_at = latest.at
                 FROM (SELECT id, max(at) AS at FROM used GROUP BY id) AS latest
                 WHERE api_keys.id = latest.id
                   AND (api_keys.last_used_at IS NULL OR api_keys.last_used_at < latest.at)",
                placeholder_rows(self.engine(), part.len(), 2, 1)
            );
            let mut update = sqlx::query(&sql);
            for (id, at) in part {
                update = update.bind(id.as_str()).bind(to_nanos(*at));
            }
            update.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Stores `key`, the platform's first operator key, only if the catalog
    /// has never had an operator key (revoked ones count): the check and the
    /// insert are one write transaction, so of nodes starting on an empty
    /// catalog at once exactly one makes it. `false` when one existed.
    pub async fn insert_first_operator_key(
        &self,
        _operator: &OperatorScope,
        key: &KeyRecord,
        audit: &NewAuditEntry,
    ) -> Result<bool> {
        if key.owner.tenant().is_some() || key.role != Role::Operator {
            return Err(StoreError::WrongOwner(format!(
                "key {} is not a platform operator key",
                key.id
            )));
        }
        let mut tx = self.begin_write().await?;
        let existing: i64 =
            sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE role = 'operator'")
                .fetch_one(&mut *tx)
                .await?;
        if existing > 0 {
            return Ok(false);
        }
        insert_key(&mut tx, key).await?;
        append(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Operator keys that are neither revoked nor expired at `now`.
    pub async fn active_operator_keys(&self, now: OffsetDateTime) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM api_keys WHERE role = 'operator' AND revoked_at IS NULL
               AND (expires_at IS NULL OR expires_at > $1)",
        )
        .bind(to_nanos(now))
        .fetch_one(&self.pool)
        .await?)
    }

    // ---- audit ----

    /// One owner's audit trail after sequence `after`, oldest first.
    /// Verifies the platform's whole chain (every entry, all tenants
    /// included: operators only) or one tenant's own chain.
    pub async fn verify_audit(&self, owner: Owner<'_>) -> Result<Verification> {
        // A read transaction, so that the chain and the log are one snapshot.
        let mut tx = self.pool.begin().await?;
        let tenant = match owner {
            Owner::Platform(_) => None,
            Owner::Tenant(scope) => Some(scope.tenant().clone()),
        };
        let verification = crate::audit::verify(&mut tx, tenant.as_ref()).await?;
        tx.commit().await?;
        Ok(verification)
    }

    pub async fn audit(&self, owner: Owner<'_>, after: i64, limit: u32) -> Result<Vec<AuditEntry>> {
        sqlx::query_as::<_, AuditRow>(
            "SELECT * FROM audit_log WHERE tenant_id IS NOT DISTINCT FROM $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(owner.column())
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(AuditRow::into_entry)
        .collect()
    }
}

async fn insert_key(tx: &mut Transaction<'_, Any>, key: &KeyRecord) -> Result<()> {
    let inserted = sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, role, name, secret_hash, created_at, expires_at,
                               revoked_at, last_used_at, rotated_from)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(key.id.as_str())
    .bind(key.owner.tenant().map(TenantId::as_str))
    .bind(key.role.as_str())
    .bind(&key.name)
    .bind(&key.hash.0[..])
    .bind(to_nanos(key.created_at))
    .bind(key.expires_at.map(to_nanos))
    .bind(key.revoked_at.map(to_nanos))
    .bind(key.last_used_at.map(to_nanos))
    .bind(key.rotated_from.as_ref().map(KeyId::as_str))
    .execute(&mut **tx)
    .await;
    match inserted {
        // 64 random bits make a clash practically impossible; if one happens
        // the caller retries with a fresh id rather than overwriting a key.
        Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict),
        other => other.map(drop).map_err(StoreError::from),
    }
}

#[derive(sqlx::FromRow)]
struct TenantRow {
    id: String,
    name: String,
    plan: String,
    plan_version: Option<i64>,
    region: String,
    isolation: String,
    pool: String,
    status: String,
    billing_day: i64,
    created_at: i64,
    updated_at: i64,
    deleted_at: Option<i64>,
}

impl TenantRow {
    fn into_tenant(self) -> Result<Tenant> {
        Ok(Tenant {
            id: parse("tenants.id", &self.id, TenantId::parse)?,
            name: self.name,
            plan: parse("tenants.plan", &self.plan, PlanId::parse)?,
            plan_version: self.plan_version,
            region: parse("tenants.region", &self.region, RegionId::parse)?,
            isolation: parse("tenants.isolation", &self.isolation, |s| {
                Isolation::parse(s).ok_or("unknown isolation model")
            })?,
            pool: parse("tenants.pool", &self.pool, PoolName::parse)?,
            status: parse("tenants.status", &self.status, |s| {
                TenantStatus::parse(s).ok_or("unknown status")
            })?,
            billing_day: u8::try_from(self.billing_day)
                .map_err(|e| e.to_string())
                .and_then(BillingDay::new)
                .map_err(|e| StoreError::Corrupt(format!("tenants.billing_day: {e}")))?,
            created_at: from_nanos(self.created_at)?,
            updated_at: from_nanos(self.updated_at)?,
            deleted_at: opt_from_nanos(self.deleted_at)?,
        })
    }
}

/// A key and, joined, its tenant's columns (all `NULL` for a platform key).
#[derive(sqlx::FromRow)]
struct KeyAndTenantRow {
    #[sqlx(flatten)]
    key: KeyRow,
    #[sqlx(flatten)]
    tenant: JoinedTenantRow,
}

#[derive(sqlx::FromRow)]
struct JoinedTenantRow {
    t_id: Option<String>,
    t_name: Option<String>,
    t_plan: Option<String>,
    t_plan_version: Option<i64>,
    t_region: Option<String>,
    t_isolation: Option<String>,
    t_pool: Option<String>,
    t_status: Option<String>,
    t_billing_day: Option<i64>,
    t_created_at: Option<i64>,
    t_updated_at: Option<i64>,
    t_deleted_at: Option<i64>,
}

impl JoinedTenantRow {
    /// The tenant's row, if the key has a tenant (its columns are not null).
    fn into_row(self) -> Option<TenantRow> {
        Some(TenantRow {
            id: self.t_id?,
            name: self.t_name?,
            plan: self.t_plan?,
            plan_version: self.t_plan_version,
            region: self.t_region?,
            isolation: self.t_isolation?,
            pool: self.t_pool?,
            status: self.t_status?,
            billing_day: self.t_billing_day?,
            created_at: self.t_created_at?,
            updated_at: self.t_updated_at?,
            deleted_at: self.t_deleted_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: String,
    tenant_id: Option<String>,
    role: String,
    name: String,
    secret_hash: Vec<u8>,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    last_used_at: Option<i64>,
    rotated_from: Option<String>,
}

impl KeyRow {
    fn into_record(self) -> Result<KeyRecord> {
        let owner = match self.tenant_id {
            None => KeyOwner::Platform,
            Some(t) => KeyOwner::Tenant(parse("api_keys.tenant_id", &t, TenantId::parse)?),
        };
        let hash: [u8; 32] = self
            .secret_hash
            .try_into()
            .map_err(|_| StoreError::Corrupt("api_keys.secret_hash is not 32 bytes".into()))?;
        Ok(KeyRecord {
            id: parse("api_keys.id", &self.id, KeyId::parse)?,
            owner,
            role: parse("api_keys.role", &self.role, |r| {
                Role::parse(r).ok_or("unknown role")
            })?,
            name: self.name,
            hash: SecretHash(hash),
            created_at: from_nanos(self.created_at)?,
            expires_at: opt_from_nanos(self.expires_at)?,
            revoked_at: opt_from_nanos(self.revoked_at)?,
            last_used_at: opt_from_nanos(self.last_used_at)?,
            rotated_from: self
                .rotated_from
                .map(|k| parse("api_keys.rotated_from", &k, KeyId::parse))
                .transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AuditAction;
    use rand::rngs::OsRng;
    use serde_json::json;
    use tenantd_core::identity::verify;
    use tenantd_core::{ApiKeyToken, KeyHasher, ServerSecret};
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-06-01 00:00 UTC);

    /// Every engine the catalog runs on: each test runs on each.
    const ENGINES: [CatalogEngine; 2] = [CatalogEngine::Sqlite, CatalogEngine::Postgres];

    struct Fixture {
        _dir: tempfile::TempDir,
        catalog: Catalog,
        hasher: KeyHasher,
        /// Where the catalog is: its SQLite file, or its PostgreSQL URL.
        location: String,
    }

    impl Fixture {
        /// The same catalog, opened again as a restarted server opens it.
        async fn reopen(&self) -> Catalog {
            let timeout = Duration::from_secs(2);
            match self.catalog.engine() {
                CatalogEngine::Sqlite => Catalog::open(Path::new(&self.location), timeout).await,
                CatalogEngine::Postgres => Catalog::open_postgres(&self.location, timeout).await,
            }
            .unwrap()
        }
    }

    /// A key as identify reads it.
    async fn stored_key(catalog: &Catalog, id: &KeyId) -> Option<KeyRecord> {
        let found = catalog.keys_with_tenants(std::slice::from_ref(id)).await;
        found.unwrap().pop().map(|(key, _)| key)
    }

    /// A new, empty catalog on `engine`: a file in a temporary directory,
    /// or a database of its own on the test binary's PostgreSQL cluster.
    async fn fixture(engine: CatalogEngine) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let timeout = Duration::from_secs(2);
        let (catalog, location) = match engine {
            CatalogEngine::Sqlite => {
                let path = dir.path().join("catalog.db");
                let catalog = Catalog::open(&path, timeout).await.unwrap();
                (catalog, path.display().to_string())
            }
            CatalogEngine::Postgres => {
                let server = tenantd_testkit::Postgres::shared();
                let url = server.owner_url(&server.tenantd_database().await);
                (Catalog::open_postgres(&url, timeout).await.unwrap(), url)
            }
        };
        Fixture {
            _dir: dir,
            catalog,
            hasher: KeyHasher::new(ServerSecret::generate(&mut OsRng)),
            location,
        }
    }

    fn audit(tenant: Option<&TenantId>, action: AuditAction) -> NewAuditEntry {
        NewAuditEntry {
            tenant: tenant.cloned(),
            at: NOW,
            actor: None,
            action,
            target: "t".into(),
            details: json!({}),
            request_id: None,
            before: None,
            after: None,
        }
    }

    fn tenant(id: &str) -> Tenant {
        Tenant::new(
            TenantId::parse(id).unwrap(),
            id.to_uppercase(),
            PlanId::default_plan(),
            RegionId::default_region(),
            NOW,
        )
    }

    impl Fixture {
        /// Soft-deletes the active tenant `t`, as the lifecycle does.
        async fn delete(&self, t: &mut Tenant) {
            t.status = TenantStatus::Deleted;
            t.deleted_at = Some(NOW);
            let delete = audit(Some(&t.id), AuditAction::TenantDelete);
            let server = OperatorScope::server();
            let updated = self
                .catalog
                .update_tenant(&server, t, TenantStatus::Active, &delete);
            assert!(updated.await.unwrap());
        }

        /// Revokes `key` of `t` with an audit entry naming it.
        async fn revoke(&self, t: &Tenant, scope: &TenantScope, key: &KeyRecord) {
            let revoke = NewAuditEntry {
                target: key.id.as_str().into(),
                ..audit(Some(&t.id), AuditAction::KeyRevoke)
            };
            let revoked = self
                .catalog
                .revoke_key(Owner::Tenant(scope), &key.id, NOW, &revoke);
            revoked.await.unwrap().unwrap();
        }

        /// Creates a tenant with an admin key and returns the admin's scope.
        async fn tenant_with_scope(&self, id: &str) -> (Tenant, TenantScope, KeyRecord) {
            let t = tenant(id);
            self.catalog
                .create_tenant(&t, &audit(Some(&t.id), AuditAction::TenantCreate))
                .await
                .unwrap();
            let token = ApiKeyToken::generate(&mut OsRng);
            let key = KeyRecord::issue(
                &token,
                KeyOwner::Tenant(t.id.clone()),
                Role::Admin,
                "admin",
                &self.hasher,
                NOW,
            );
            // The tenant's first key is stored under the scope of a key
            // verified for it the only way there is (`testing::member`).
            let founder = tenantd_core::testing::member(&t, Role::Admin, NOW);
            let founding = founder.scope_for(&t.id, Role::Admin).unwrap();
            self.catalog
                .insert_key(
                    Owner::Tenant(&founding),
                    &key,
                    &audit(Some(&t.id), AuditAction::KeyCreate),
                )
                .await
                .unwrap();
            let stored = stored_key(&self.catalog, &token.id).await.unwrap();
            let principal = verify(&token, &stored, Some(&t), &self.hasher, NOW).unwrap();
            let scope = principal.scope_for(&t.id, Role::Admin).unwrap();
            (t, scope, stored)
        }
    }

    #[tokio::test]
    async fn a_key_is_stored_only_under_its_own_owners_proof() {
        for engine in ENGINES {
            let f = fixture(engine).await;
            let (_, acme, _) = f.tenant_with_scope("acme").await;
            let (globex, _, _) = f.tenant_with_scope("globex").await;
            let token = ApiKeyToken::generate(&mut OsRng);
            let globex_key = KeyRecord::issue(
                &token,
                KeyOwner::Tenant(globex.id.clone()),
                Role::Reader,
                "reader",
                &f.hasher,
                NOW,
            );
            let entry = audit(Some(&globex.id), AuditAction::KeyCreate);
            for wrong in [
                Owner::Tenant(&acme),
                Owner::Platform(&OperatorScope::server()),
            ] {
                let refused = f.catalog.insert_key(wrong, &globex_key, &entry).await;
                assert!(
                    matches!(refused, Err(StoreError::WrongOwner(_))),
                    "{refused:?}"
                );
            }
            assert_eq!(stored_key(&f.catalog, &token.id).await, None);
        }
    }

    #[tokio::test]
    async fn of_first_operator_keys_made_at_once_exactly_one_is_stored() {
        for engine in ENGINES {
            let f = fixture(engine).await;
            let attempts: Vec<_> = (0..4)
                .map(|_| {
                    let key = KeyRecord::issue(
                        &ApiKeyToken::generate(&mut OsRng),
                        KeyOwner::Platform,
                        Role::Operator,
                        "bootstrap",
                        &f.hasher,
                        NOW,
                    );
                    let catalog = f.catalog.clone();
                    tokio::spawn(async move {
                        catalog
                            .insert_first_operator_key(
                                &OperatorScope::server(),
                                &key,
                                &audit(None, AuditAction::KeyBootstrap),
                            )
                            .await
                            .unwrap()
                    })
                })
                .collect();
            let mut made = Vec::new();
            for attempt in attempts {
                made.push(attempt.await.unwrap());
            }
            assert_eq!(
                made.iter().filter(|&&m| m).count(),
                1,
                "{engine:?}: {made:?}"
            );
            assert_eq!(f.catalog.active_operator_keys(NOW).await.unwrap(), 1);
        }
    }

    /// A write whose transaction was never ended (a failed COMMIT, a lost
    /// ROLLBACK) holds the catalog's write lock, SQLite's or the advisory
    /// one: its connection must be closed, never handed to the next writer.
    #[tokio::test]
    async fn a_write_left_inside_its_transaction_blocks_no_later_write() {
        for engine in ENGINES {
            let f = fixture(engine).await;
            // As a failed COMMIT leaves it: the write lock taken, the
            // transaction neither committed nor rolled back, the connection
            // given back to the pool.
            use sqlx::Connection;
            let mut conn = f.catalog.pool.acquire().await.unwrap();
            let mut tx = match engine {
                CatalogEngine::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await.unwrap(),
                CatalogEngine::Postgres => {
                    let mut tx = conn.begin().await.unwrap();
                    sqlx::query("SELECT 1 FROM pg_advisory_xact_lock($1)")
                        .bind(POSTGRES_WRITE_LOCK)
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    tx
                }
            };
            append(&mut tx, &audit(None, AuditAction::KeyCreate))
                .await
                .unwrap();
            std::mem::forget(tx);
            drop(conn);
            let (t, ..) = f.tenant_with_scope("acme").await;
            assert_eq!(
                f.catalog
                    .tenant_for(&OperatorScope::server(), &t.id)
                    .await
                    .unwrap()
                    .map(|t| t.id),
                Some(t.id),
                "{engine:?}"
            );
        }
    }

    #[tokio::test]
    async fn tenants_round_trip_and_ids_are_unique() {
        for engine in ENGINES {
            let f = fixture(engine).await;
            let t = tenant("acme");
            f.catalog
                .create_tenant(&t, &audit(None, AuditAction::TenantCreate))
                .await
                .unwrap();
            assert_eq!(
                f.catalog
                    .tenant_for(&OperatorScope::server(), &t.id)
                    .await
                    .unwrap(),
                Some(t.clone())
            );
            let again = f
                .catalog
                .create_tenant(&t, &audit(None, AuditAction::TenantCreate))
                .await;
            assert!(matches!(again, Err(StoreError::Conflict)));
        }
    }

    #[tokio::test]
    async fn listing_pages_in_id_order_and_filters_by_status() {
        for engine in ENGINES {
            let f = fixture(engine).await;
            for id in ["delta", "alpha", "charlie", "bravo"] {
                f.catalog
                    .create_tenant(&tenant(id), &audit(None, AuditAction::TenantCreate))
                    .await
                    .unwrap();
            }
            let first = f.catalog.list_tenants(None, 2, None).await.unwrap();
            let ids: Vec<_> = first.iter().map(|t| t.id.as_str()).collect();
            assert_eq!(ids, ["alpha", "bravo"]);
            let rest = f
                .catalog
                .list_tenants(Some(&first[1].id), 10, None)
                .await
                .unwrap();
            let ids: Vec<_> = rest.iter().map(|t| t.id.as_str()).collect();
            assert_eq!(ids, ["charlie", "delta"]);

            let mut suspended = tenant("charlie");
            suspended.status = TenantStatus::Suspended;
            assert!(f
                .catalog
                .update_tenant(
                    &OperatorScope::server(),
                    &suspended,
                    TenantStatus::Active,
                    &audit(None, AuditAction::TenantSuspend)
                )
                .await
                .unwrap());
            let only = f
                .catalog
                .list_tenants(None, 10, Some(TenantStatus::Suspended))
                .await
                .unwrap();
            assert_eq!(only, vec![suspended]);
        }
    }

    #[tokio::test]
    async fn update_refuses_a_stale_expected_status() {
        for engine in ENGINES {
            let f = fixture(engine).await;
            let mut t = tenant("acme");
            f.catalog
                .create_tenant(&t, &audit(None, AuditAction::TenantCreate))
                .await
                .unwrap();
            t.name = "Renamed".into();
            let applied = f
                .catalog
                .update_tenant(
                    &OperatorScope::server(),
                    &t,
                    TenantStatus::Suspended,
                    &audit(None, AuditAction::TenantUpdate),
                )
                .await
                .unwrap();
            assert!(!applied);
            assert_eq!(
                f.catalog
                    .tenant_for(&OperatorScope::server(), &t.id)
                    .await
                    .unwrap()
                    .unwrap()
                    .name,
                "ACME"
            );
        }
    }

    #[tokio::test]
    async fn keys_are_scoped_to_their_tenant() {
        for engine in ENGINES {
            let f = fixture(engine).await;
            let (_, acme, acme_key) = f.tenant_with_scope("acme").await;
            let (_, globex, _) = f.tenant_with_scope("globex").await;
            assert_eq!(
                f.catalog
                    .key(Owner::Tenant(&acme), &acme_key.id)
                    .await
                    .unwrap(),
                Some(acme_key.clone())
            );
            assert_eq!(
                f.catalog
                    .key(Owner::Tenant(&globex), &acme_key.id)
                    .await
                    .unwrap(),
                None
            );
            assert_eq!(
                f.catalog
                    .key(Owner::Platform(&OperatorScope::server()), &acme_key.id)
                    .await
                    .unwrap(),
                None
            );
            let revoked = f
                .catalog
                .revoke_key(
                    Owner::Tenant(&globex),
                    &acme_key.id,
                    NOW,
                    &audit(None, AuditAction::KeyRevoke),
                )
                .await
                .unwrap();
            assert_eq!(revoked, None, "another tenant cannot revoke the key");
            let listed = f
                .catalog
                .keys(Owner::Tenant(&globex), None, 100)
                .await
                .unwrap();
            assert!(listed
                .iter()
                .all(|k| k.owner == KeyOwner::Tenant(globex.tenant().clone())));
            assert_eq!(listed.len(), 1);
        }
    }

    #[tokio::test]
    async fn revoking_twice_records_one_audit_entry() {
        for engine in ENGINES {
            let f = fixture(engine).await;
            let (t, scope, key) = f.tenant_with_scope("acme").await;
            for _ in 0..2 {
                let k = f
                    .catalog
                    .revoke_key(
                        Owner::Tenant(&scope),
                        &key.id,
                        NOW,
                        &audit(Some(&t.id), AuditAction::KeyRevoke),
                    )
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(k.revoked_at, Some(NOW));
            }
            let trail = f
                .catalog
                .audit(Owner::Tenant(&scope), 0, 100)
                .await
                .unwrap();
            let actions: Vec<_> = trail.iter().map(|e| e.action.as_str()).collect();
            assert_eq!(actions, ["tenant.create", "key.create", "key.revoke"]);
        }
    }

    /// Identify's one query: each key with its tenant, however many ids,
    /// unknown ones left out.
    #[tokio::test]
    async fn keys_are_read_with_their_tenants_in_one_query() {
        for engine in ENGINES {
            let f = fixture(engine).await;
            let (acme, _, key) = f.tenant_with_scope("acme").await;
            let (globex, _, other) = f.tenant_with_scope("globex").await;
            let unknown = KeyId::parse("0123456789abcdef").unwrap();
            let mut ids = vec![unknown; 600];
            ids.insert(10, key.id.clone());
            ids.push(other.id.clone());
            let mut found = f.catalog.keys_with_tenants(&ids).await.unwrap();
            found.sort_by(|a, b| {
                a.1.as_ref()
                    .map(|t| t.id.clone())
                    .cmp(&b.1.as_ref().map(|t| t.id.clone()))
            });
            assert_eq!(found, vec![(key, Some(acme)), (other, Some(globex))]);
        }
    }

    #[tokio::test]
    async fn last_use_never_moves_backwards() {
        for engine in ENGINES {
            let f = fixture(engine).await;
            let (_, _, key) = f.tenant_with_scope("acme").await;
            let later = NOW + time::Duration::minutes(5);
            f.catalog
                .record_key_use(&[(key.id.clone(), later)])
                .await
                .unwrap();
            f.catalog
                .record_key_use(&[(key.id.clone(), NOW)])
                .await
                .unwrap();
            let stored = stored_key(&f.catalog, &key.id).await.unwrap();
            assert_eq!(stored.last_used_at, Some(later));

            // A pass larger than one statement, naming the key many times.
            let latest = NOW + time::Duration::minutes(9);
            let (_, _, other) = f.tenant_with_scope("globex").await;
            let mut uses: Vec<_> = (0..1_200)
                .map(|i| (key.id.clone(), NOW + time::Duration::seconds(i % 300)))
                .collect();
            uses.insert(700, (key.id.clone(), latest));
            uses.push((other.id.clone(), NOW));
            f.catalog.record_key_use(&uses).await.unwrap();
            let stored = stored_key(&f.catalog, &key.id).await.unwrap();
            assert_eq!(stored.last_used_at, Some(latest));
            let stored = stored_key(&f.catalog, &other.id).await.unwrap();
            assert_eq!(stored.last_used_at, Some(NOW));
        }
    }

    /// Two nodes write their views of one tenant's shared counters behind:
    /// on PostgreSQL (several nodes) a view lower than the stored one never
    /// takes the count back; on SQLite (one node) its ledger is stored as is.
    #[tokio::test]
    async fn ledgers_written_by_several_nodes_never_go_backwards_on_postgresql() {
        use crate::usage::UsageBatch;
        use tenantd_core::plan::{Metric, Period, Quota, QuotaFields};
        use tenantd_core::quota::{BillingDay, Demand, Ledger};
        let quotas = [Quota::new(QuotaFields {
            metric: Metric::Requests,
            period: Some(Period::Day),
            soft: None,
            hard: 1000,
            grace: None,
        })
        .unwrap()];
        let view = |n: u64| {
            let mut ledger = Ledger::default();
            for _ in 0..n {
                ledger.admit(&quotas, &[], BillingDay::default(), NOW, Demand::default());
            }
            ledger
        };
        for engine in ENGINES {
            let f = fixture(engine).await;
            let (_, scope, _) = f.tenant_with_scope("acme").await;
            let tenant = scope.tenant().clone();
            for n in [40, 25] {
                let batch = UsageBatch {
                    ledgers: vec![(tenant.clone(), view(n))],
                    ..UsageBatch::default()
                };
                f.catalog.write_usage(&batch, NOW).await.unwrap();
            }
            let (_, mut stored) = f.catalog.ledgers().await.unwrap().remove(0);
            let day = stored.used(
                Metric::Requests,
                Period::Day,
                BillingDay::default(),
                NOW.unix_timestamp(),
            );
            let expected = match engine {
                CatalogEngine::Postgres => 40,
                CatalogEngine::Sqlite => 25,
            };
            assert_eq!(day, expected, "{engine:?}");
        }
    }

    /// A write-behind pass of more rows than one statement carries adds up
    /// exactly, a (tenant, hour) named twice included.
    #[tokio::test]
    async fn a_large_usage_pass_is_written_whole() {
        use crate::usage::{HourUsage, UsageBatch};
        use tenantd_core::plan::Metric;
        use tenantd_core::quota::{Ledger, QuotaEvent, QuotaEventKind};
        for engine in ENGINES {
            let f = fixture(engine).await;
            let (_, scope, _) = f.tenant_with_scope("acme").await;
            let one = HourUsage {
                requests: 1,
                rejected: 0,
                ingress_bytes: 10,
                egress_bytes: 0,
                seat_micros: 5,
            };
            let hour = NOW.unix_timestamp() / 3600 * 3600;
            let event = QuotaEvent {
                kind: QuotaEventKind::SoftPassed,
                metric: Metric::Requests,
                period: None,
                used: 1,
                limit: 1,
            };
            let batch = UsageBatch {
                ledgers: vec![(scope.tenant().clone(), Ledger::default()); 2],
                hours: (0..1_200)
                    .map(|i| (scope.tenant().clone(), hour + (i % 3) * 3600, one))
                    .collect(),
                events: vec![(scope.tenant().clone(), NOW, event); 501],
            };
            f.catalog.write_usage(&batch, NOW).await.unwrap();
            let hours = f
                .catalog
                .usage_hours(&scope, hour, hour + 3 * 3600)
                .await
                .unwrap();
            let requests: Vec<(i64, u64, u64)> = hours
                .iter()
                .map(|(h, u)| (h - hour, u.requests, u.ingress_bytes))
                .collect();
            assert_eq!(
                requests,
                [(0, 400, 4000), (3600, 400, 4000), (7200, 400, 4000)]
            );
            let events: i64 = sqlx::query_scalar("SELECT count(*) FROM quota_events")
                .fetch_one(&f.catalog.pool)
                .await
                .unwrap();
            assert_eq!(events, 501);
            assert_eq!(f.catalog.ledgers().await.unwrap().len(), 1);
        }
    }

    /// The change feed reads back, in commit order, what each write made
    /// stale. A purge's entry names the keys it removed, which are gone from
    /// the catalog by the time another node reads the entry.
    #[tokio::test]
    async fn the_change_feed_tells_every_write_in_order_and_what_a_purge_removed() {
        use crate::changes::Changed;
        for engine in ENGINES {
            let f = fixture(engine).await;
            let server = OperatorScope::server();
            let start = f.catalog.change_position().await.unwrap();
            let (mut t, scope, key) = f.tenant_with_scope("acme").await;
            f.revoke(&t, &scope, &key).await;
            f.delete(&mut t).await;
            let purge = NewAuditEntry {
                target: t.id.as_str().into(),
                ..audit(None, AuditAction::TenantPurge)
            };
            f.catalog
                .purge_tenant(&server, &t.id, &purge)
                .await
                .unwrap()
                .unwrap();

            // The tenant's own entries went with it; the purge's stays.
            let feed = f.catalog.changes_after(&server, start, 100).await.unwrap();
            assert_eq!(
                feed.iter().map(|e| e.changed.clone()).collect::<Vec<_>>(),
                [Some(Changed::TenantPurged {
                    tenant: t.id.clone(),
                    keys: vec![key.id.clone()],
                })],
                "{engine:?}"
            );
            let end = f.catalog.change_position().await.unwrap();
            assert_eq!(feed.last().map(|e| e.seq), Some(end), "{engine:?}");

            // Read before the purge, the same writes come in order.
            let f = fixture(engine).await;
            let start = f.catalog.change_position().await.unwrap();
            let (t, scope, key) = f.tenant_with_scope("acme").await;
            f.revoke(&t, &scope, &key).await;
            let feed = f.catalog.changes_after(&server, start, 100).await.unwrap();
            assert!(feed.windows(2).all(|w| w[0].seq < w[1].seq), "{feed:?}");
            assert_eq!(feed.len(), 3, "{engine:?}: create, key, revoke");
            assert_eq!(feed[0].changed, Some(Changed::Tenant(t.id.clone())));
            assert_eq!(feed[2].changed, Some(Changed::Keys(vec![key.id.clone()])));
            let rest = f.catalog.changes_after(&server, feed[1].seq, 100).await;
            assert_eq!(rest.unwrap(), feed[2..], "{engine:?}: read from a position");
        }
    }

    /// Each background task's lease has one holder at a time, apart from
    /// the node's lease and the other tasks', and passes on when its holder
    /// goes.
    #[tokio::test]
    async fn a_background_task_has_one_holder_at_a_time() {
        let f = fixture(CatalogEngine::Postgres).await;
        let (url, timeout) = (f.location.as_str(), Duration::from_secs(5));
        let (a, b) = (
            NodeId::generate(&mut rand::rngs::OsRng),
            NodeId::generate(&mut rand::rngs::OsRng),
        );
        let take = |task, node| CatalogLease::take_task(url, task, node, timeout);
        let node = CatalogLease::take(url, &a, timeout).await.unwrap();
        assert!(node.is_some(), "the node's lease is apart");
        let sweep = take(BackgroundTask::PurgeSweep, &a).await.unwrap();
        assert!(sweep.is_some());
        assert!(take(BackgroundTask::PurgeSweep, &b)
            .await
            .unwrap()
            .is_none());
        let keys = take(BackgroundTask::SigningKeys, &b).await.unwrap();
        assert!(keys.is_some());
        let job = JobId::generate(NOW, &mut rand::rngs::OsRng);
        let idle = JobId::generate(NOW, &mut rand::rngs::OsRng);
        let running = f.catalog.lease_job(&job, &b, timeout).await.unwrap();
        assert!(running.is_some());
        assert!(f
            .catalog
            .lease_job(&job, &a, timeout)
            .await
            .unwrap()
            .is_none());

        // The cluster's view names each lease's holder.
        use crate::nodes::Lease;
        let leases = vec![
            Lease::SoleNode,
            Lease::Task(BackgroundTask::PurgeSweep),
            Lease::Task(BackgroundTask::SigningKeys),
            Lease::Job(job.clone()),
            Lease::Job(idle.clone()),
        ];
        let held = f.catalog.lease_holders(leases.clone(), &a).await.unwrap();
        let holders: Vec<Option<NodeId>> = held.into_iter().map(|(_, h)| h).collect();
        assert_eq!(
            holders,
            [
                Some(a.clone()),
                Some(a.clone()),
                Some(b.clone()),
                Some(b.clone()),
                None
            ]
        );
        drop(sweep);
        // The lock goes with its connection, which closes in the background.
        let mut again = None;
        for _ in 0..100 {
            again = take(BackgroundTask::PurgeSweep, &b).await.unwrap();
            if again.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(again.is_some(), "the lease did not pass on");
        let held = f.catalog.lease_holders(leases, &a).await.unwrap();
        assert_eq!(held[1].1, Some(b.clone()), "the view follows the lease");
        drop((node, keys, running));
    }

    /// A node registers, beats and stops, on both engines; a forgotten row
    /// says so to the beat (so the node registers again).
    #[tokio::test]
    async fn nodes_register_beat_and_stop() {
        use crate::nodes::NodeRecord;
        for engine in ENGINES {
            let f = fixture(engine).await;
            let id = NodeId::generate(&mut rand::rngs::OsRng);
            let node = NodeRecord {
                id: id.clone(),
                name: "a".into(),
                address: "127.0.0.1:8080".into(),
                version: "1.0.0".into(),
                started_at: NOW,
                heartbeat_at: NOW,
                stopped_at: None,
            };
            f.catalog.register_node(&node).await.unwrap();
            let later = NOW + time::Duration::seconds(2);
            assert!(f.catalog.beat(&id, later).await.unwrap());
            assert_eq!(
                f.catalog.nodes().await.unwrap(),
                [NodeRecord {
                    heartbeat_at: later,
                    ..node.clone()
                }]
            );
            f.catalog.node_stopped(&id, later).await.unwrap();
            assert_eq!(f.catalog.nodes().await.unwrap()[0].stopped_at, Some(later));
            // A day of silence later, another node's beat forgets it.
            let other = NodeId::generate(&mut rand::rngs::OsRng);
            assert!(!f
                .catalog
                .beat(&other, later + time::Duration::days(2))
                .await
                .unwrap());
            assert!(f.catalog.nodes().await.unwrap().is_empty(), "{engine:?}");
            assert!(!f.catalog.beat(&id, later).await.unwrap());
        }
    }

    /// On PostgreSQL a listener hears a committed change; on SQLite there
    /// is no listener (one node makes every change itself).
    #[tokio::test]
    async fn a_listener_hears_committed_changes_on_postgresql_only() {
        let sqlite = fixture(CatalogEngine::Sqlite).await;
        let timeout = Duration::from_secs(5);
        assert!(sqlite
            .catalog
            .listen_for_changes(timeout)
            .await
            .unwrap()
            .is_none());

        let f = fixture(CatalogEngine::Postgres).await;
        let mut listener = f
            .catalog
            .listen_for_changes(timeout)
            .await
            .unwrap()
            .unwrap();
        let start = f.catalog.change_position().await.unwrap();
        let t = tenant("acme");
        let create = audit(Some(&t.id), AuditAction::TenantCreate);
        f.catalog.create_tenant(&t, &create).await.unwrap();
        let heard = tokio::time::timeout(timeout, listener.changed()).await;
        assert!(heard.unwrap().unwrap(), "the creation was heard");
        // A write that fails (the id is taken) leaves no entry behind.
        assert!(matches!(
            f.catalog.create_tenant(&t, &create).await,
            Err(StoreError::Conflict)
        ));
        let server = OperatorScope::server();
        let feed = f.catalog.changes_after(&server, start, 10).await;
        assert_eq!(feed.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn purge_removes_the_tenant_its_keys_and_its_trail_but_only_once_deleted() {
        for engine in ENGINES {
            let f = fixture(engine).await;
            let (mut t, scope, key) = f.tenant_with_scope("acme").await;
            let refused = f
                .catalog
                .purge_tenant(
                    &OperatorScope::server(),
                    &t.id,
                    &audit(None, AuditAction::TenantPurge),
                )
                .await;
            assert_eq!(refused.unwrap(), None, "a live tenant is not purged");

            f.delete(&mut t).await;
            assert_eq!(
                f.catalog.tenants_deleted_by(NOW, 10).await.unwrap(),
                vec![t.id.clone()]
            );
            let removed = f
                .catalog
                .purge_tenant(
                    &OperatorScope::server(),
                    &t.id,
                    &audit(None, AuditAction::TenantPurge),
                )
                .await;
            assert_eq!(removed.unwrap(), Some(vec![key.id.clone()]));

            assert_eq!(
                f.catalog
                    .tenant_for(&OperatorScope::server(), &t.id)
                    .await
                    .unwrap(),
                None
            );
            assert_eq!(stored_key(&f.catalog, &key.id).await, None);
            assert!(f
                .catalog
                .audit(Owner::Tenant(&scope), 0, 100)
                .await
                .unwrap()
                .is_empty());
        }
    }

    #[tokio::test]
    async fn the_audit_log_rejects_updates() {
        for engine in ENGINES {
            let f = fixture(engine).await;
            f.catalog
                .create_tenant(&tenant("acme"), &audit(None, AuditAction::TenantCreate))
                .await
                .unwrap();
            let err = sqlx::query("UPDATE audit_log SET action = 'forged'")
                .execute(&f.catalog.pool)
                .await
                .unwrap_err();
            assert!(err.to_string().contains("append-only"), "{err}");
        }
    }

    /// A log of seven entries: acme's three, globex's two, two platform ones.
    async fn chained_log(f: &Fixture) -> (TenantScope, TenantScope) {
        let (_, acme, _) = f.tenant_with_scope("acme").await; // entries 1, 2
        let (_, globex, _) = f.tenant_with_scope("globex").await; // 3, 4
        for (tenant, action) in [
            (None, AuditAction::KeyBootstrap),
            (Some(acme.tenant()), AuditAction::TenantUpdate),
            (None, AuditAction::KeyCreate),
        ] {
            let mut tx = f.catalog.begin_write().await.unwrap();
            append(&mut tx, &audit(tenant, action)).await.unwrap();
            tx.commit().await.unwrap();
        }
        (acme, globex)
    }

    async fn problems(f: &Fixture, owner: Owner<'_>) -> Vec<String> {
        f.catalog.verify_audit(owner).await.unwrap().problems
    }

    /// Runs SQL against the catalog as someone with the database file would,
    /// past the append-only triggers.
    async fn tamper(f: &Fixture, statements: &[&str]) {
        let triggers = match f.catalog.engine() {
            CatalogEngine::Sqlite => [
                "DROP TRIGGER IF EXISTS audit_log_no_update",
                "DROP TRIGGER IF EXISTS audit_chain_no_update",
            ],
            CatalogEngine::Postgres => [
                "DROP TRIGGER IF EXISTS audit_log_no_update ON audit_log",
                "DROP TRIGGER IF EXISTS audit_chain_no_update ON audit_chain",
            ],
        };
        for sql in triggers.iter().chain(statements) {
            sqlx::query(sql).execute(&f.catalog.pool).await.unwrap();
        }
    }

    #[tokio::test]
    async fn an_untouched_log_verifies_globally_and_per_tenant() {
        for engine in ENGINES {
            let f = fixture(engine).await;
            let (acme, globex) = chained_log(&f).await;
            let all = f
                .catalog
                .verify_audit(Owner::Platform(&OperatorScope::server()))
                .await
                .unwrap();
            assert_eq!((all.entries, all.problems.len()), (7, 0));
            let mine = f.catalog.verify_audit(Owner::Tenant(&acme)).await.unwrap();
            assert_eq!(
                (mine.entries, mine.problems.len()),
                (3, 0),
                "acme's own three"
            );
            assert_eq!(
                f.catalog
                    .verify_audit(Owner::Tenant(&globex))
                    .await
                    .unwrap()
                    .entries,
                2
            );
            assert_ne!(mine.head, all.head);
            // The head moves with every entry.
            let mut tx = f.catalog.begin_write().await.unwrap();
            append(&mut tx, &audit(None, AuditAction::KeyCreate))
                .await
                .unwrap();
            tx.commit().await.unwrap();
            assert_ne!(
                f.catalog
                    .verify_audit(Owner::Platform(&OperatorScope::server()))
                    .await
                    .unwrap()
                    .head,
                all.head
            );
        }
    }

    #[tokio::test]
    async fn an_edited_entry_is_found() {
        for engine in ENGINES {
            let f = fixture(engine).await;
            let (acme, globex) = chained_log(&f).await;
            tamper(
                &f,
                &["UPDATE audit_log SET details = '{\"name\":\"forged\"}' WHERE seq = 6"],
            )
            .await;
            assert_eq!(
                problems(&f, Owner::Platform(&OperatorScope::server())).await,
                ["entry 6: its content was changed"]
            );
            assert_eq!(
                problems(&f, Owner::Tenant(&acme)).await,
                ["entry 6: its content was changed"]
            );
            assert!(
                problems(&f, Owner::Tenant(&globex)).await.is_empty(),
                "globex's chain is its own"
            );
        }
    }

    #[tokio::test]
    async fn a_removed_entry_is_found_even_with_its_chain_link() {
        for engine in ENGINES {
            let f = fixture(engine).await;
            let (acme, _) = chained_log(&f).await;
            tamper(&f, &["DELETE FROM audit_log WHERE seq = 2"]).await;
            assert_eq!(
                problems(&f, Owner::Platform(&OperatorScope::server())).await,
                ["entry 2: it was removed"]
            );
            tamper(&f, &["DELETE FROM audit_chain WHERE seq = 2"]).await;
            let found = problems(&f, Owner::Platform(&OperatorScope::server())).await;
            assert_eq!(found, ["entry 3: the chain does not link (an entry before it was removed, inserted or reordered)"]);
            assert_eq!(
                problems(&f, Owner::Tenant(&acme)).await,
                ["entry 6: the chain does not link (an entry before it was removed, inserted or reordered)"]
            );
        }
    }

    #[tokio::test]
    async fn an_inserted_entry_is_found() {
        for engine in ENGINES {
            let f = fixture(engine).await;
            let (acme, _) = chained_log(&f).await;
            tamper(
                &f,
                &[
                    "INSERT INTO audit_log (tenant_id, at, action, target, details)
                          VALUES ('acme', 0, 'key.create', 'k', '{}')",
                ],
            )
            .await;
            assert_eq!(
                problems(&f, Owner::Platform(&OperatorScope::server())).await,
                ["entry 8: it is not in the chain (inserted)"]
            );
            assert_eq!(
                problems(&f, Owner::Tenant(&acme)).await,
                ["entry 8: it is not in the chain (inserted)"]
            );
            // A restart does not adopt it.
            let reopened = f.reopen().await;
            assert_eq!(
                reopened
                    .verify_audit(Owner::Platform(&OperatorScope::server()))
                    .await
                    .unwrap()
                    .problems
                    .len(),
                1
            );
        }
    }

    #[tokio::test]
    async fn reordered_entries_are_found() {
        for engine in ENGINES {
            let f = fixture(engine).await;
            chained_log(&f).await;
            // Entries 3 and 4 trade places: each now holds the other's content.
            tamper(
                &f,
                &[
                    "UPDATE audit_log SET seq = 100 WHERE seq = 3",
                    "UPDATE audit_log SET seq = 3 WHERE seq = 4",
                    "UPDATE audit_log SET seq = 4 WHERE seq = 100",
                ],
            )
            .await;
            assert_eq!(
                problems(&f, Owner::Platform(&OperatorScope::server())).await,
                [
                    "entry 3: its content was changed",
                    "entry 4: its content was changed"
                ]
            );
            // Reordering the chain itself breaks its links.
            let g = fixture(engine).await;
            chained_log(&g).await;
            tamper(
                &g,
                &[
                    "UPDATE audit_chain SET seq = 100 WHERE seq = 3",
                    "UPDATE audit_chain SET seq = 3 WHERE seq = 4",
                    "UPDATE audit_chain SET seq = 4 WHERE seq = 100",
                ],
            )
            .await;
            assert!(!problems(&g, Owner::Platform(&OperatorScope::server()))
                .await
                .is_empty());
        }
    }

    #[tokio::test]
    async fn a_purge_keeps_the_global_chain_whole_and_a_reused_id_starts_afresh() {
        for engine in ENGINES {
            let f = fixture(engine).await;
            let (acme, _) = chained_log(&f).await;
            let mut deleted = tenant("acme");
            deleted.status = TenantStatus::Deleted;
            deleted.deleted_at = Some(NOW);
            f.catalog
                .update_tenant(
                    &OperatorScope::server(),
                    &deleted,
                    TenantStatus::Active,
                    &audit(Some(acme.tenant()), AuditAction::TenantDelete),
                )
                .await
                .unwrap();
            let mut purge = audit(None, AuditAction::TenantPurge);
            purge.target = "acme".into();
            f.catalog
                .purge_tenant(&OperatorScope::server(), acme.tenant(), &purge)
                .await
                .unwrap()
                .unwrap();
            assert!(problems(&f, Owner::Platform(&OperatorScope::server()))
                .await
                .is_empty());
            let (_, again, _) = f.tenant_with_scope("acme").await;
            let fresh = f.catalog.verify_audit(Owner::Tenant(&again)).await.unwrap();
            assert_eq!((fresh.entries, fresh.problems.len()), (2, 0));
        }
    }
}
