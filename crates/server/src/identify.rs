//! Identify: from the presented API key to a verified `Principal`.
//!
//! Keys and their tenants are read through a bounded cache, so a warm
//! request touches no database; every change made through this server drops
//! the affected entry at once. An entry past half the cache's ttl is read
//! again in the background (all such entries in one joined query), so a
//! key in use never misses on the request path; one past the whole ttl is
//! read again before it is used. The ttl bounds only how long a change made
//! elsewhere may go unseen. Last-used times are gathered in memory and
//! written behind in batches.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderName};
use quick_cache::sync::Cache;
use tenantd_core::identity::verify;
use tenantd_core::{
    ApiKeyToken, Clock, ErrorCode, IdentifyError, KeyHasher, KeyId, KeyRecord, Principal, Tenant,
    TenantId,
};
use tenantd_store::{Catalog, StoreError};
use time::OffsetDateTime;
use tokio::sync::{watch, Notify};

use crate::app::Change;
use crate::problem::ApiError;

/// Entries kept per cache; a miss costs one indexed lookup.
const CACHE_CAPACITY: usize = 100_000;

/// A catalog read as the cache keeps it: `None` remembers an unknown id, so
/// that a flood of made-up keys does not become a flood of queries.
#[derive(Debug)]
struct Entry<T> {
    value: Option<Arc<T>>,
    read_at: OffsetDateTime,
    /// Set once the entry has been handed to the background refresh.
    refresh_asked: AtomicBool,
}

impl<T> Entry<T> {
    fn new(value: Option<Arc<T>>, read_at: OffsetDateTime) -> Arc<Self> {
        Arc::new(Self {
            value,
            read_at,
            refresh_asked: AtomicBool::new(false),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Identity {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    catalog: Catalog,
    hasher: KeyHasher,
    clock: Arc<dyn Clock>,
    ttl: time::Duration,
    keys: Cache<KeyId, Arc<Entry<KeyRecord>>>,
    tenants: Cache<TenantId, Arc<Entry<Tenant>>>,
    /// Bumped by every change made through this server: a read that began
    /// before a change is not cached after it.
    changes: AtomicU64,
    /// Keys whose entries (or whose tenants') are due to be read again.
    due: Mutex<HashSet<KeyId>>,
    due_added: Notify,
    last_used: LastUsed,
}

impl Identity {
    pub fn new(catalog: Catalog, hasher: KeyHasher, clock: Arc<dyn Clock>, ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                catalog,
                hasher,
                clock,
                ttl: time::Duration::try_from(ttl).unwrap_or(time::Duration::MAX),
                keys: Cache::new(CACHE_CAPACITY),
                tenants: Cache::new(CACHE_CAPACITY),
                changes: AtomicU64::new(0),
                due: Mutex::default(),
                due_added: Notify::new(),
                last_used: LastUsed::default(),
            }),
        }
    }

    pub fn hasher(&self) -> &KeyHasher {
        &self.inner.hasher
    }

    pub fn last_used(&self) -> &LastUsed {
        &self.inner.last_used
    }

    /// Verifies the key in `headers`, or says why it cannot.
    pub async fn identify(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let inner = &*self.inner;
        let token = presented_key(headers)?;
        let now = inner.clock.now();
        let (record, tenant) = self.lookup(&token.id, now).await?;
        let Some(record) = record else {
            // Spend the same HMAC as for a known key, so that response time
            // does not tell which key ids exist.
            let _ = inner.hasher.hash(&token);
            return Err(ApiError::new(ErrorCode::InvalidApiKey));
        };
        let principal =
            verify(&token, &record, tenant.as_deref(), &inner.hasher, now).map_err(|e| {
                // The tenant's state is told only to a caller holding one of its keys.
                let tenant_is = |state: &str| {
                    tenant
                        .as_deref()
                        .map(|t| format!("tenant {} is {state}", t.id))
                };
                let (code, detail) = match e {
                    IdentifyError::InvalidKey => (ErrorCode::InvalidApiKey, None),
                    IdentifyError::Revoked => (ErrorCode::KeyRevoked, None),
                    IdentifyError::Expired => (ErrorCode::KeyExpired, None),
                    IdentifyError::TenantSuspended => {
                        (ErrorCode::TenantSuspended, tenant_is("suspended"))
                    }
                    IdentifyError::TenantDeleted => {
                        (ErrorCode::TenantDeleted, tenant_is("deleted"))
                    }
                };
                match detail {
                    Some(detail) => ApiError::with_detail(code, detail),
                    None => ApiError::new(code),
                }
            })?;
        inner.last_used.record(&record.id, now);
        Ok(principal)
    }

    /// The key `id` and its tenant, from the cache while fresh enough;
    /// otherwise read (one joined query) and cached.
    async fn lookup(
        &self,
        id: &KeyId,
        now: OffsetDateTime,
    ) -> Result<(Option<Arc<KeyRecord>>, Option<Arc<Tenant>>), ApiError> {
        let inner = &*self.inner;
        let key = inner.keys.get(id).filter(|e| now - e.read_at < inner.ttl);
        let tenant_id = key
            .as_ref()
            .and_then(|e| e.value.as_ref())
            .and_then(|k| k.owner.tenant().cloned());
        let tenant = match &tenant_id {
            Some(t) => inner.tenants.get(t).filter(|e| now - e.read_at < inner.ttl),
            None => None,
        };
        match (key, tenant_id, tenant) {
            (Some(key), None, _) => {
                self.refresh_if_due(id, &key.read_at, &key.refresh_asked, now);
                Ok((key.value.clone(), None))
            }
            (Some(key), Some(_), Some(tenant)) => {
                self.refresh_if_due(id, &key.read_at, &key.refresh_asked, now);
                self.refresh_if_due(id, &tenant.read_at, &tenant.refresh_asked, now);
                Ok((key.value.clone(), tenant.value.clone()))
            }
            // A miss, or an entry past its ttl: read now.
            _ => {
                let read = self.read(std::slice::from_ref(id), now).await?;
                Ok(read
                    .into_iter()
                    .next()
                    .map_or((None, None), |(k, t)| (Some(k), t)))
            }
        }
    }

    /// Hands the key to the background refresh once its entry is past half
    /// the ttl.
    fn refresh_if_due(
        &self,
        id: &KeyId,
        read_at: &OffsetDateTime,
        asked: &AtomicBool,
        now: OffsetDateTime,
    ) {
        let inner = &*self.inner;
        if now - *read_at >= inner.ttl / 2 && !asked.swap(true, Ordering::Relaxed) {
            lock(&inner.due).insert(id.clone());
            inner.due_added.notify_one();
        }
    }

    /// Reads keys with their tenants and caches what was read (unknown ids
    /// as unknown), unless a change was made through this server meanwhile:
    /// then what was cached is dropped again, since it may predate the change.
    async fn read(
        &self,
        ids: &[KeyId],
        now: OffsetDateTime,
    ) -> Result<Vec<(Arc<KeyRecord>, Option<Arc<Tenant>>)>, ApiError> {
        let inner = &*self.inner;
        let changes = inner.changes.load(Ordering::Acquire);
        let found = inner
            .catalog
            .keys_with_tenants(ids)
            .await
            .map_err(ApiError::from)?;
        let mut read = Vec::with_capacity(found.len());
        let mut tenants = Vec::new();
        for (key, tenant) in found {
            let record = Arc::new(key);
            let tenant = tenant.map(Arc::new);
            inner
                .keys
                .insert(record.id.clone(), Entry::new(Some(record.clone()), now));
            if let Some(t) = &tenant {
                inner
                    .tenants
                    .insert(t.id.clone(), Entry::new(Some(t.clone()), now));
                tenants.push(t.id.clone());
            }
            read.push((record, tenant));
        }
        for id in ids {
            if !read.iter().any(|(k, _)| k.id == *id) {
                inner.keys.insert(id.clone(), Entry::new(None, now));
            }
        }
        if inner.changes.load(Ordering::Acquire) != changes {
            for id in ids {
                inner.keys.remove(id);
            }
            for id in &tenants {
                inner.tenants.remove(id);
            }
        }
        Ok(read)
    }

    /// Reads again, in one query per pass, the entries requests found past
    /// half the ttl, until `stopped`.
    pub async fn refresh_due(&self, mut stopped: watch::Receiver<bool>) {
        let inner = &*self.inner;
        loop {
            tokio::select! {
                () = inner.due_added.notified() => {}
                _ = stopped.changed() => return,
            }
            let due: Vec<KeyId> = lock(&inner.due).drain().collect();
            if due.is_empty() {
                continue;
            }
            let now = inner.clock.now();
            if let Err(e) = self.read(&due, now).await {
                // The entries stay as they were and are read on the request
                // path once past the ttl; the catalog's circuit logs it.
                tracing::debug!(error = ?e.code, "could not refresh identify entries");
            }
        }
    }

    /// Drops what `change` made stale. Every change is counted, so that a
    /// read that began before it is not cached after it.
    pub fn apply(&self, change: &Change) {
        let inner = &*self.inner;
        match change {
            // A created key may have been cached as unknown.
            Change::Key(id) => {
                inner.changes.fetch_add(1, Ordering::AcqRel);
                inner.keys.remove(id);
            }
            // A created tenant may have been cached as unknown; a changed
            // one's keys see its status, plan and billing day from their next
            // request on.
            Change::Tenant(id) => {
                inner.changes.fetch_add(1, Ordering::AcqRel);
                inner.tenants.remove(id);
            }
            // Forgetting the keys matters: a purged id may be taken by a new
            // tenant, and a cached key of the old one must never verify
            // against the new one.
            Change::TenantPurged { tenant, keys } => {
                inner.changes.fetch_add(1, Ordering::AcqRel);
                for key in keys {
                    inner.keys.remove(key);
                }
                inner.tenants.remove(tenant);
            }
            Change::PlanVersion { .. }
            | Change::Policy { .. }
            | Change::AddOns { .. }
            | Change::ProxyCachePurged { .. } => {}
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Reads the key from `Authorization: Bearer …` or `X-Api-Key: …`: exactly
/// one credential header. Two (both headers, or one twice) are refused even
/// when they agree, so that what a proxy in front reads and what tenantd
/// reads can never differ.
static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

fn presented_key(headers: &HeaderMap) -> Result<ApiKeyToken, ApiError> {
    let malformed = |detail: &str| ApiError::with_detail(ErrorCode::MalformedApiKey, detail);
    let credentials = headers.get_all(header::AUTHORIZATION).iter().count()
        + headers.get_all(&X_API_KEY).iter().count();
    if credentials > 1 {
        return Err(ApiError::with_detail(
            ErrorCode::MultipleCredentials,
            "send one credential: either `Authorization: Bearer <key>` or `X-Api-Key: <key>`, once",
        ));
    }
    let bearer = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| malformed("the Authorization header is not ASCII"))?;
            let (scheme, credentials) = value
                .split_once(' ')
                .ok_or_else(|| malformed("the Authorization header must be `Bearer <key>`"))?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(malformed(
                    "the Authorization header must use the Bearer scheme",
                ));
            }
            Some(credentials.trim())
        }
    };
    let api_key = match headers.get(&X_API_KEY) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| malformed("the X-Api-Key header is not ASCII"))?
                .trim(),
        ),
    };
    // At most one of them is set: more than one credential was refused above.
    let Some(presented) = bearer.or(api_key) else {
        return Err(ApiError::with_detail(
            ErrorCode::MissingApiKey,
            "send the key as `Authorization: Bearer <key>` or `X-Api-Key: <key>`",
        ));
    };
    ApiKeyToken::parse(presented).map_err(|e| malformed(&e.to_string()))
}

/// Last-used instants not yet written to the store.
///
/// One short critical section per request (a map insert); the flush swaps
/// the whole map out, so it never holds the lock across I/O.
///
/// Only verified keys reach the map, so a fast keyed hash is enough.
#[derive(Debug, Clone, Default)]
pub struct LastUsed {
    pending: Arc<Mutex<PendingUses>>,
}

type PendingUses = HashMap<KeyId, OffsetDateTime, foldhash::fast::RandomState>;

impl LastUsed {
    fn lock(&self) -> std::sync::MutexGuard<'_, PendingUses> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn record(&self, id: &KeyId, at: OffsetDateTime) {
        let mut pending = self.lock();
        match pending.get_mut(id) {
            Some(existing) if *existing >= at => {}
            Some(existing) => *existing = at,
            None => {
                pending.insert(id.clone(), at);
            }
        }
    }

    /// The newest use not yet written, if any.
    pub fn pending(&self, id: &KeyId) -> Option<OffsetDateTime> {
        self.lock().get(id).copied()
    }

    /// Whether any use waits to be written.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Writes every pending use. On failure the uses are kept for the next try.
    pub async fn flush(&self, catalog: &Catalog) -> Result<(), StoreError> {
        let batch: Vec<_> = std::mem::take(&mut *self.lock()).into_iter().collect();
        if let Err(e) = catalog.record_key_use(&batch).await {
            for (id, at) in &batch {
                self.record(id, *at);
            }
            return Err(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const KEY: &str = "tk_0123456789abcdef_000000000000000000000000000000000000000000000000";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    fn code(result: Result<ApiKeyToken, ApiError>) -> Option<ErrorCode> {
        result.err().map(|e| e.code)
    }

    #[test]
    fn keys_are_read_from_either_header() {
        let bearer = format!("Bearer {KEY}");
        assert!(presented_key(&headers(&[("authorization", &bearer)])).is_ok());
        let lower = format!("bearer {KEY}");
        assert!(presented_key(&headers(&[("authorization", &lower)])).is_ok());
        assert!(presented_key(&headers(&[("x-api-key", KEY)])).is_ok());
    }

    #[test]
    fn more_than_one_credential_is_refused_even_when_they_agree() {
        let bearer = format!("Bearer {KEY}");
        for twice in [
            vec![("authorization", bearer.as_str()), ("x-api-key", KEY)],
            vec![
                ("authorization", bearer.as_str()),
                ("authorization", bearer.as_str()),
            ],
            vec![("x-api-key", KEY), ("x-api-key", KEY)],
        ] {
            assert_eq!(
                code(presented_key(&headers(&twice))),
                Some(ErrorCode::MultipleCredentials),
                "{twice:?}"
            );
        }
    }

    #[test]
    fn missing_malformed_and_conflicting_keys_are_told_apart() {
        assert_eq!(
            code(presented_key(&headers(&[]))),
            Some(ErrorCode::MissingApiKey)
        );
        for bad in ["Basic abc", "Bearer", "Bearer tk_nope", KEY] {
            assert_eq!(
                code(presented_key(&headers(&[("authorization", bad)]))),
                Some(ErrorCode::MalformedApiKey),
                "{bad}"
            );
        }
    }

    #[test]
    fn last_used_keeps_the_newest_instant() {
        let last = LastUsed::default();
        let id = KeyId::parse("0123456789abcdef").unwrap();
        let t0 = time::macros::datetime!(2026-01-01 00:00 UTC);
        last.record(&id, t0 + time::Duration::seconds(5));
        last.record(&id, t0);
        assert_eq!(last.pending(&id), Some(t0 + time::Duration::seconds(5)));
    }
}
