//! Moving a tenant's data to another placement (pool and isolation model):
//! hold its writes, copy, verify, and remove the copy that is no longer used.
//!
//! The steps are separate so that the caller (a job) can switch the
//! catalog between verify and remove, and undo on failure: until the
//! catalog switches, the old copy is the tenant's data and is never touched.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use sha2::{Digest, Sha256};
use tenantd_core::{CollectionName, DataScope, Isolation, PoolName, TenantId, TenantScope};
use tokio::sync::{watch, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use super::{pg, sqlite, Conn, DataError, DataStore, Db, RecordRow, Result, Work};
use crate::codec::parse;
use crate::StoreError;

/// Where a tenant's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub pool: PoolName,
    pub isolation: Isolation,
}

/// Records a move's copy writes in one transaction: large enough that a
/// transaction's cost is spread, small enough that progress shows.
const COPY_PART_RECORDS: usize = 1000;

/// How far a move's copy is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CopyProgress {
    pub collections: u64,
    pub collections_total: u64,
    pub records: u64,
    pub records_total: u64,
}

/// One collection's content, summarized for comparing two copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionDigest {
    pub collection: CollectionName,
    pub records: i64,
    /// SHA-256 over every record's id, version and stored body, in id order.
    pub sha256: [u8; 32],
}

#[derive(Debug, Default)]
struct GateState {
    /// Writers hold it shared; a move holds it exclusively while it copies.
    gates: HashMap<TenantId, Arc<RwLock<()>>>,
    /// Tenants being moved: their writes are refused at once.
    frozen: HashMap<TenantId, ()>,
    /// Tenants moved by this process: a write still carrying the old
    /// placement (from a scope made before the move) is refused, not lost.
    moved: HashMap<TenantId, Placement>,
}

/// Per-tenant write gates. Entries are kept for every tenant that wrote.
#[derive(Debug, Clone, Default)]
pub(crate) struct WriteGates {
    state: Arc<Mutex<GateState>>,
}

impl WriteGates {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refused(&self, scope: &DataScope) -> bool {
        let state = self.lock();
        let stale = state
            .moved
            .get(scope.tenant())
            .is_some_and(|p| p.pool != *scope.pool() || p.isolation != scope.isolation());
        state.frozen.contains_key(scope.tenant()) || stale
    }

    /// Admits one write of `scope`, or says it must wait for a move.
    pub(crate) async fn permit(&self, scope: &DataScope) -> Result<OwnedRwLockReadGuard<()>> {
        if self.refused(scope) {
            return Err(DataError::Maintenance);
        }
        let gate = self
            .lock()
            .gates
            .entry(scope.tenant().clone())
            .or_default()
            .clone();
        let permit = gate.read_owned().await;
        // A move may have started or finished while this write waited.
        if self.refused(scope) {
            return Err(DataError::Maintenance);
        }
        Ok(permit)
    }
}

/// Holds a tenant's writes for as long as it lives: new writes are refused
/// with `DataError::Maintenance`, and writes in flight have finished. On
/// PostgreSQL the hold is the database's, so it binds every node, and it
/// ends with this process at the latest (its connection closes).
#[derive(Debug)]
pub struct Freeze {
    gates: WriteGates,
    tenant: TenantId,
    _exclusive: OwnedRwLockWriteGuard<()>,
    /// The session holding the tenant's write lock in the source schema.
    _held: Option<sqlx::PgConnection>,
}

impl Drop for Freeze {
    fn drop(&mut self) {
        self.gates.lock().frozen.remove(&self.tenant);
    }
}

/// Adds a record to a digest. The body is hashed in its canonical form
/// (serde's: keys sorted, no spaces), so that the same content digests the
/// same on every engine whatever text the engine stores.
fn digest_row(hasher: &mut Sha256, row: &RecordRow) -> Result<()> {
    let body: Value = parse("records.body", &row.body, |b| {
        serde_json::from_str::<Value>(b)
    })?;
    hasher.update(row.id.as_bytes());
    hasher.update([0]);
    hasher.update(row.version.to_be_bytes());
    hasher.update(body.to_string().as_bytes());
    hasher.update([0]);
    Ok(())
}

impl DataStore {
    /// Holds the tenant's writes at `from` until the returned `Freeze` is
    /// dropped: this process's own, and on PostgreSQL every node's.
    pub async fn freeze(&self, scope: &TenantScope, from: &Placement) -> Result<Freeze> {
        let tenant = scope.tenant().clone();
        let gate = {
            let mut state = self.gates.lock();
            state.frozen.insert(tenant.clone(), ());
            state.gates.entry(tenant.clone()).or_default().clone()
        };
        // Built before anything can fail, so that a failure below unfreezes.
        let mut freeze = Freeze {
            gates: self.gates.clone(),
            tenant,
            _exclusive: gate.write_owned().await,
            _held: None,
        };
        if let Db::Postgres(db, _) = self.db_of(scope, from).await? {
            freeze._held = Some(db.hold_writes(scope.tenant()).await?);
        }
        Ok(freeze)
    }

    /// Marks the tenant as gone from `from` to `to`, before the catalog
    /// switches: a node that still sends its writes to `from` is refused
    /// there (503 `tenant_maintenance`) until it hears of the move, instead
    /// of writing to a copy no one reads. SQLite pools serve one node, whose
    /// own gates do this (`moved`).
    pub async fn depart(
        &self,
        scope: &TenantScope,
        from: &Placement,
        to: &Placement,
        at: time::OffsetDateTime,
    ) -> Result<()> {
        let Db::Postgres(db, _) = self.db_of(scope, from).await? else {
            return Ok(());
        };
        let tenant = scope.tenant();
        let mut tx = db.begin(tenant).await?;
        let moved_to = format!("{}/{}", to.pool, to.isolation.as_str());
        pg::depart(&mut tx, tenant, &moved_to, crate::codec::to_nanos(at)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Undoes `depart`: the move failed and the tenant stays at `from`.
    pub async fn stay(&self, scope: &TenantScope, from: &Placement) -> Result<()> {
        let Db::Postgres(db, _) = self.db_of(scope, from).await? else {
            return Ok(());
        };
        let tenant = scope.tenant();
        let mut tx = db.begin(tenant).await?;
        pg::clear_departure(&mut tx, tenant).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records that the tenant now lives at `to`, after the catalog switched.
    pub fn moved(&self, scope: &TenantScope, to: Placement) {
        self.gates.lock().moved.insert(scope.tenant().clone(), to);
        self.cache.invalidate_tenant(scope.tenant(), None);
    }

    async fn db_of(&self, scope: &TenantScope, at: &Placement) -> Result<Db> {
        self.db_at(scope.tenant(), &at.pool, at.isolation).await
    }

    /// Copies every collection, record and the usage of the tenant from
    /// `from` to `to`, replacing whatever an earlier attempt left at `to`,
    /// and tells `progress` after each part. Records keep their ids,
    /// versions and times. The source is read in one transaction, so the
    /// copy is of one moment even on PostgreSQL; the target is written in
    /// parts of `COPY_PART_RECORDS` (it is not the tenant's data until the
    /// catalog switches to it, and a failed copy is removed whole).
    pub async fn copy_tenant(
        &self,
        scope: &TenantScope,
        from: &Placement,
        to: &Placement,
        progress: &watch::Sender<CopyProgress>,
    ) -> Result<()> {
        if from == to {
            return Err(DataError::Unsupported(
                "the tenant is already at this placement".into(),
            ));
        }
        let tenant = scope.tenant();
        let source = self.db_of(scope, from).await?;
        let target = self.db_of(scope, to).await?;

        let mut read = source.read(tenant).await?;
        let collections = on_engine!(read, collections(tenant, "", i64::MAX))?;
        let usage = on_engine!(read, usage(tenant))?;
        let mut contents = Vec::with_capacity(collections.len());
        for collection in collections {
            let rows = on_engine!(read, records(tenant, &collection.name))?;
            contents.push((collection, rows));
        }
        read.commit().await?;

        let mut done = CopyProgress {
            collections: 0,
            collections_total: contents.len() as u64,
            records: 0,
            records_total: contents.iter().map(|(_, rows)| rows.len() as u64).sum(),
        };
        progress.send_replace(done);
        for (collection, _) in &contents {
            let indexes = collection.index_paths()?;
            target.create_indexes(&indexes).await?;
        }
        let clear = Work::ClearForCopy {
            tenant: tenant.clone(),
            usage,
        };
        target.guard(target.run(tenant, clear)).await?;
        for (collection, rows) in contents {
            let mut create = Some(collection.clone());
            let mut rows = rows.into_iter().peekable();
            // A collection without records is still one part, to create it.
            while create.is_some() || rows.peek().is_some() {
                let part: Vec<RecordRow> = rows.by_ref().take(COPY_PART_RECORDS).collect();
                let copied = part.len() as u64;
                let work = Work::CopyRecords {
                    tenant: tenant.clone(),
                    collection: collection.name.clone(),
                    create: create.take(),
                    rows: part,
                };
                target.guard(target.run(tenant, work)).await?;
                done.records += copied;
                progress.send_replace(done);
            }
            done.collections += 1;
            progress.send_replace(done);
        }
        Ok(())
    }

    /// Record counts and content digests of every collection of the tenant at `at`.
    pub async fn digests(
        &self,
        scope: &TenantScope,
        at: &Placement,
    ) -> Result<Vec<CollectionDigest>> {
        let tenant = scope.tenant();
        let mut read = self.db_of(scope, at).await?.read(tenant).await?;
        let collections = on_engine!(read, collections(tenant, "", i64::MAX))?;
        let mut digests = Vec::with_capacity(collections.len());
        for collection in collections {
            let rows = on_engine!(read, records(tenant, &collection.name))?;
            let mut hasher = Sha256::new();
            for row in &rows {
                digest_row(&mut hasher, row)?;
            }
            digests.push(CollectionDigest {
                collection: parse("collections.name", &collection.name, CollectionName::parse)?,
                records: rows.len() as i64,
                sha256: hasher.finalize().into(),
            });
        }
        read.commit().await?;
        Ok(digests)
    }

    /// Removes the tenant's copy at `at` only: its rows in the pool's shared
    /// tables, its own schema, or its dedicated database.
    pub async fn remove_copy(&self, scope: &TenantScope, at: &Placement) -> Result<(), StoreError> {
        let tenant = scope.tenant();
        match at.isolation {
            Isolation::Pooled => self.remove_pooled(tenant, &at.pool).await,
            Isolation::Schema => self.remove_schema(tenant, &at.pool).await,
            Isolation::Dedicated => self.remove_dedicated(tenant, &at.pool).await,
        }
    }
}
