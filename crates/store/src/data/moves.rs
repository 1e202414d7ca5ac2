//! Moving a tenant's data to another placement (pool and isolation model):
//! hold its writes, copy, verify, and remove the copy that is no longer used.
//!
//! The steps are separate so that the caller (a job) can switch the
//! catalog between verify and remove, and undo on failure: until the
//! catalog switches, the old copy is the tenant's data and is never touched.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use sqlx::SqlitePool;
use tenantd_core::{CollectionName, DataScope, Isolation, PoolName, TenantId, TenantScope};
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use super::{DataError, DataStore, Result};
use crate::StoreError;

/// Where a tenant's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub pool: PoolName,
    pub isolation: Isolation,
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
/// with `DataError::Maintenance`, and writes in flight have finished.
#[derive(Debug)]
pub struct Freeze {
    gates: WriteGates,
    tenant: TenantId,
    _exclusive: OwnedRwLockWriteGuard<()>,
}

impl Drop for Freeze {
    fn drop(&mut self) {
        self.gates.lock().frozen.remove(&self.tenant);
    }
}

/// The text whose hash identifies a record's content.
fn digest_row(hasher: &mut Sha256, id: &str, version: i64, body: &str) {
    hasher.update(id.as_bytes());
    hasher.update([0]);
    hasher.update(version.to_be_bytes());
    hasher.update(body.as_bytes());
    hasher.update([0]);
}

type RecordRowRaw = (String, i64, String, i64, i64, i64);

impl DataStore {
    /// Holds the tenant's writes until the returned `Freeze` is dropped.
    pub async fn freeze(&self, scope: &TenantScope) -> Freeze {
        let tenant = scope.tenant().clone();
        let gate = {
            let mut state = self.gates.lock();
            state.frozen.insert(tenant.clone(), ());
            state.gates.entry(tenant.clone()).or_default().clone()
        };
        Freeze {
            gates: self.gates.clone(),
            tenant,
            _exclusive: gate.write_owned().await,
        }
    }

    /// Records that the tenant now lives at `to`, after the catalog switched.
    pub fn moved(&self, scope: &TenantScope, to: Placement) {
        self.gates.lock().moved.insert(scope.tenant().clone(), to);
        self.cache.invalidate_tenant(scope.tenant(), None);
    }

    async fn pool_of(&self, scope: &TenantScope, at: &Placement) -> Result<SqlitePool> {
        self.pool_at(scope.tenant(), &at.pool, at.isolation).await
    }

    /// Copies every collection, record and the usage of the tenant from
    /// `from` to `to`, replacing whatever an earlier attempt left at `to`.
    /// Records keep their ids, versions and times.
    pub async fn copy_tenant(
        &self,
        scope: &TenantScope,
        from: &Placement,
        to: &Placement,
    ) -> Result<()> {
        if from == to {
            return Err(DataError::Unsupported(
                "the tenant is already at this placement".into(),
            ));
        }
        let tenant = scope.tenant().as_str();
        let source = self.pool_of(scope, from).await?;
        let target = self.pool_of(scope, to).await?;
        let collections: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT name, indexes, created_at FROM collections WHERE tenant_id = ? ORDER BY name",
        )
        .bind(tenant)
        .fetch_all(&source)
        .await?;
        let usage: Option<(i64, i64)> =
            sqlx::query_as("SELECT bytes, records FROM usage WHERE tenant_id = ?")
                .bind(tenant)
                .fetch_optional(&source)
                .await?;

        let mut tx = target.begin_with("BEGIN IMMEDIATE").await?;
        super::delete_tenant_rows(&mut tx, scope.tenant()).await?;
        for (name, indexes, created_at) in &collections {
            sqlx::query("INSERT INTO collections (tenant_id, name, indexes, created_at) VALUES (?, ?, ?, ?)")
                .bind(tenant)
                .bind(name)
                .bind(indexes)
                .bind(created_at)
                .execute(&mut *tx)
                .await?;
            let collection =
                super::collection_from_row((name.clone(), indexes.clone(), *created_at))?;
            super::create_indexes(&mut tx, &collection.indexes).await?;
            let rows: Vec<RecordRowRaw> = sqlx::query_as(
                "SELECT id, version, body, size, created_at, updated_at FROM records
                 WHERE tenant_id = ? AND collection = ? ORDER BY id",
            )
            .bind(tenant)
            .bind(name)
            .fetch_all(&source)
            .await?;
            for (id, version, body, size, created, updated) in rows {
                sqlx::query(
                    "INSERT INTO records (tenant_id, collection, id, version, body, size, created_at, updated_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(tenant)
                .bind(name)
                .bind(id)
                .bind(version)
                .bind(body)
                .bind(size)
                .bind(created)
                .bind(updated)
                .execute(&mut *tx)
                .await?;
            }
        }
        if let Some((bytes, records)) = usage {
            sqlx::query("INSERT INTO usage (tenant_id, bytes, records) VALUES (?, ?, ?)")
                .bind(tenant)
                .bind(bytes)
                .bind(records)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Record counts and content digests of every collection of the tenant at `at`.
    pub async fn digests(
        &self,
        scope: &TenantScope,
        at: &Placement,
    ) -> Result<Vec<CollectionDigest>> {
        let pool = self.pool_of(scope, at).await?;
        let tenant = scope.tenant().as_str();
        let names: Vec<(String,)> =
            sqlx::query_as("SELECT name FROM collections WHERE tenant_id = ? ORDER BY name")
                .bind(tenant)
                .fetch_all(&pool)
                .await?;
        let mut digests = Vec::with_capacity(names.len());
        for (name,) in names {
            let rows: Vec<(String, i64, String)> = sqlx::query_as(
                "SELECT id, version, body FROM records WHERE tenant_id = ? AND collection = ? ORDER BY id",
            )
            .bind(tenant)
            .bind(&name)
            .fetch_all(&pool)
            .await?;
            let mut hasher = Sha256::new();
            for (id, version, body) in &rows {
                digest_row(&mut hasher, id, *version, body);
            }
            digests.push(CollectionDigest {
                collection: crate::codec::parse("collections.name", &name, CollectionName::parse)?,
                records: rows.len() as i64,
                sha256: hasher.finalize().into(),
            });
        }
        Ok(digests)
    }

    /// Removes the tenant's copy at `at` only: its rows in the pool's shared
    /// database, or its dedicated file.
    pub async fn remove_copy(&self, scope: &TenantScope, at: &Placement) -> Result<(), StoreError> {
        let tenant = scope.tenant();
        match at.isolation {
            Isolation::Dedicated => self.remove_dedicated(tenant, &at.pool).await,
            Isolation::Pooled | Isolation::Schema => self.remove_pooled(tenant, &at.pool).await,
        }
    }
}
