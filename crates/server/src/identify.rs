//! Identify: from the presented API key to a verified `Principal`.
//!
//! Keys and tenants are read through a bounded cache, so a warm request
//! touches no database; every change made through this server drops the
//! affected entry at once. Last-used times are gathered in memory and
//! written behind in batches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, HeaderMap};
use moka::future::Cache;
use tenantd_core::identity::verify;
use tenantd_core::{
    ApiKeyToken, Clock, ErrorCode, IdentifyError, KeyHasher, KeyId, KeyRecord, Principal, Tenant,
    TenantId,
};
use tenantd_store::{Catalog, StoreError};
use time::OffsetDateTime;

use crate::problem::ApiError;

/// Entries kept per cache; a miss costs one indexed lookup.
const CACHE_CAPACITY: u64 = 100_000;

#[derive(Debug, Clone)]
pub struct Identity {
    catalog: Catalog,
    hasher: KeyHasher,
    clock: Arc<dyn Clock>,
    // `None` entries remember unknown ids, so that a flood of made-up keys
    // does not become a flood of queries.
    keys: Cache<KeyId, Option<Arc<KeyRecord>>>,
    tenants: Cache<TenantId, Option<Arc<Tenant>>>,
    last_used: LastUsed,
}

impl Identity {
    pub fn new(catalog: Catalog, hasher: KeyHasher, clock: Arc<dyn Clock>, ttl: Duration) -> Self {
        Self {
            catalog,
            hasher,
            clock,
            keys: Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_live(ttl)
                .build(),
            tenants: Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_live(ttl)
                .build(),
            last_used: LastUsed::default(),
        }
    }

    pub fn hasher(&self) -> &KeyHasher {
        &self.hasher
    }

    pub fn last_used(&self) -> &LastUsed {
        &self.last_used
    }

    /// Verifies the key in `headers`, or says why it cannot.
    pub async fn identify(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let token = presented_key(headers)?;
        let record = self
            .keys
            .try_get_with(token.id.clone(), async {
                let found = self.catalog.key_for_identify(&token.id).await?;
                Ok::<_, StoreError>(found.map(Arc::new))
            })
            .await
            .map_err(store_unavailable)?;
        let Some(record) = record else {
            // Spend the same HMAC as for a known key, so that response time
            // does not tell which key ids exist.
            let _ = self.hasher.hash(&token);
            return Err(ApiError::new(ErrorCode::InvalidApiKey));
        };
        let tenant = match record.owner.tenant() {
            None => None,
            Some(id) => self
                .tenants
                .try_get_with(id.clone(), async {
                    let found = self.catalog.tenant(id).await?;
                    Ok::<_, StoreError>(found.map(Arc::new))
                })
                .await
                .map_err(store_unavailable)?,
        };
        let now = self.clock.now();
        let principal =
            verify(&token, &record, tenant.as_deref(), &self.hasher, now).map_err(|e| {
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
        self.last_used.record(&record.id, now);
        Ok(principal)
    }

    /// Drops a key from the cache after it changed or was created.
    pub async fn forget_key(&self, id: &KeyId) {
        self.keys.invalidate(id).await;
    }

    /// Drops a tenant from the cache after its status or plan changed.
    pub async fn forget_tenant(&self, id: &TenantId) {
        self.tenants.invalidate(id).await;
    }

    /// Drops a purged tenant and all its keys. Forgetting the keys matters:
    /// a purged id may be taken by a new tenant, and a cached key of the old
    /// one must never verify against the new one.
    pub async fn forget_purged_tenant(&self, id: &TenantId, keys: &[KeyId]) {
        for key in keys {
            self.keys.invalidate(key).await;
        }
        self.tenants.invalidate(id).await;
    }
}

fn store_unavailable(e: Arc<StoreError>) -> ApiError {
    tracing::error!(error = %e, "store error while identifying");
    ApiError::new(ErrorCode::StoreUnavailable)
}

/// Reads the key from `Authorization: Bearer …` or `X-Api-Key: …`: exactly
/// one credential header. Two (both headers, or one twice) are refused even
/// when they agree, so that what a proxy in front reads and what tenantd
/// reads can never differ.
fn presented_key(headers: &HeaderMap) -> Result<ApiKeyToken, ApiError> {
    let malformed = |detail: &str| ApiError::with_detail(ErrorCode::MalformedApiKey, detail);
    let credentials = headers.get_all(header::AUTHORIZATION).iter().count()
        + headers.get_all("x-api-key").iter().count();
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
    let api_key = match headers.get("x-api-key") {
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
#[derive(Debug, Clone, Default)]
pub struct LastUsed {
    pending: Arc<Mutex<HashMap<KeyId, OffsetDateTime>>>,
}

impl LastUsed {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<KeyId, OffsetDateTime>> {
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
