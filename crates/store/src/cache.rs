//! A bounded in-process cache of records, shared by all tenants without
//! letting any one of them take more than its share.
//!
//! Invariant: a `RecordKey` is built only from a `DataScope`, so no entry
//! can be stored or found without the tenant it belongs to.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use tenantd_core::share::{Percent, TenantShares};
use tenantd_core::{CollectionName, DataScope, RecordId, TenantId};

use crate::data::Record;

/// Where a cached record sits: tenant, collection, id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordKey {
    tenant: TenantId,
    collection: CollectionName,
    id: RecordId,
}

impl RecordKey {
    pub fn new(scope: &DataScope, collection: &CollectionName, id: &RecordId) -> Self {
        Self {
            tenant: scope.tenant().clone(),
            collection: collection.clone(),
            id: id.clone(),
        }
    }
}

/// Sizing of the record cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheLimits {
    /// Total bytes of cached records; 0 turns the cache off.
    pub capacity_bytes: u64,
    /// Largest fraction of the capacity one tenant's records may hold, in percent.
    pub tenant_share_percent: Percent,
    /// How long an entry may live; bounds staleness from writes this process
    /// did not make.
    pub ttl: Duration,
}

/// Bytes a record is counted for in the cache.
fn weight(key: &RecordKey, record: &Record) -> u64 {
    // The body's compact JSON plus the key and a fixed overhead for the entry.
    (record.body.to_string().len() + key.id.as_str().len() + key.collection.as_str().len() + 128)
        as u64
}

#[derive(Debug, Clone)]
pub struct RecordCache {
    cache: Option<Cache<RecordKey, Arc<(Record, u64)>>>,
    /// Bytes cached per tenant, kept by inserts and the eviction listener.
    shares: TenantShares,
    /// Bumped after every committed write: a read that saw a bump while it
    /// ran does not fill the cache, so a stale value cannot be cached after
    /// the write invalidated the key.
    writes: Arc<AtomicU64>,
}

impl RecordCache {
    pub fn new(limits: CacheLimits) -> Self {
        let shares = TenantShares::new(limits.capacity_bytes, limits.tenant_share_percent);
        let cache = (limits.capacity_bytes > 0).then(|| {
            let on_evict = shares.clone();
            Cache::builder()
                .max_capacity(limits.capacity_bytes)
                .weigher(|_key: &RecordKey, value: &Arc<(Record, u64)>| {
                    u32::try_from(value.1).unwrap_or(u32::MAX)
                })
                .time_to_live(limits.ttl)
                .support_invalidation_closures()
                .eviction_listener(
                    move |key: Arc<RecordKey>, value: Arc<(Record, u64)>, _cause| {
                        on_evict.release(&key.tenant, value.1);
                    },
                )
                .build()
        });
        Self {
            cache,
            shares,
            writes: Arc::default(),
        }
    }

    pub async fn get(&self, key: &RecordKey) -> Option<Record> {
        let cache = self.cache.as_ref()?;
        cache.get(key).await.map(|entry| entry.0.clone())
    }

    /// A token to pass to `fill` after reading the store.
    pub fn read_started(&self) -> u64 {
        self.writes.load(Ordering::Acquire)
    }

    /// Caches a record read from the store, unless a write committed since
    /// `started` or the tenant already holds its share.
    pub async fn fill(&self, key: RecordKey, record: &Record, started: u64) {
        let Some(cache) = &self.cache else { return };
        if self.writes.load(Ordering::Acquire) != started {
            return;
        }
        let bytes = weight(&key, record);
        if !self.shares.reserve(&key.tenant, bytes) {
            return;
        }
        cache.insert(key, Arc::new((record.clone(), bytes))).await;
    }

    /// Drops keys after a committed write.
    pub async fn invalidate(&self, keys: impl IntoIterator<Item = RecordKey>) {
        self.writes.fetch_add(1, Ordering::AcqRel);
        if let Some(cache) = &self.cache {
            for key in keys {
                cache.invalidate(&key).await;
            }
        }
    }

    /// Drops a tenant's entries, or one collection's of them.
    pub fn invalidate_tenant(&self, tenant: &TenantId, collection: Option<&CollectionName>) {
        self.writes.fetch_add(1, Ordering::AcqRel);
        if let Some(cache) = &self.cache {
            let tenant = tenant.clone();
            let collection = collection.cloned();
            // Only fails when closures are not enabled, which the builder does.
            let _ = cache.invalidate_entries_if(move |key, _| {
                key.tenant == tenant && collection.as_ref().is_none_or(|c| &key.collection == c)
            });
        }
    }

    /// Bytes of `tenant`'s records in the cache now.
    pub async fn tenant_bytes(&self, tenant: &TenantId) -> u64 {
        if let Some(cache) = &self.cache {
            cache.run_pending_tasks().await;
        }
        self.shares.held(tenant)
    }
}
