//! The response cache: upstreams' GET responses that say they may be
//! cached (`Cache-Control: max-age` or `s-maxage`), kept per tenant.
//!
//! Invariant: the tenant is part of every key, so one tenant's cached
//! response is never served to another. Responses marked `private`,
//! `no-store` or `no-cache`, or that set cookies or vary, are not kept:
//! within a tenant, every key shares what is cached.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use moka::sync::Cache;
use moka::Expiry;
use tenantd_core::share::TenantShares;
use tenantd_core::{Clock, ServiceName, TenantId};

use crate::config::ResponseCacheConfig;

/// What a cached response is found by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub tenant: TenantId,
    pub service: ServiceName,
    /// The path and query the upstream was asked for.
    pub target: String,
}

/// A response as the upstream gave it.
#[derive(Debug)]
pub struct CachedResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    stored_at: Instant,
    fresh_for: Duration,
    /// How long it is kept past `fresh_for`, to answer when the upstream
    /// cannot (`stale_if_error`).
    stale_for: Duration,
}

impl CachedResponse {
    /// Seconds since the response was stored, at `now`, for the `Age` header.
    pub fn age(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.stored_at).as_secs()
    }

    fn is_fresh(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.stored_at) < self.fresh_for
    }
}

struct FreshFor;

impl Expiry<CacheKey, Arc<CachedResponse>> for FreshFor {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<CachedResponse>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.fresh_for.saturating_add(value.stale_for))
    }
}

/// Bytes an entry is counted for.
fn weight(key: &CacheKey, value: &CachedResponse) -> u64 {
    let headers: usize = value
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum();
    (key.target.len() + headers + value.body.len()) as u64
}

/// A tenant's path on a service, whatever the query: what a write to the
/// path makes stale.
type PathKey = (TenantId, ServiceName, String);

/// The cached targets (path and query) of each path, kept by inserts and
/// the eviction listener, so that a write invalidates exactly its path's
/// entries: O(entries of that path), never a pass over the cache.
type PathIndex = Arc<Mutex<HashMap<PathKey, HashSet<String>>>>;

#[derive(Debug, Clone)]
pub struct ResponseCache {
    entries: Option<Cache<CacheKey, Arc<CachedResponse>>>,
    /// Bytes cached per tenant, kept by inserts and the eviction listener.
    shares: TenantShares,
    paths: PathIndex,
    max_entry_bytes: u64,
    clock: Arc<dyn Clock>,
}

/// The path part of an upstream target.
fn path_of(target: &str) -> &str {
    target.split_once('?').map_or(target, |(path, _)| path)
}

fn path_key(key: &CacheKey) -> PathKey {
    (
        key.tenant.clone(),
        key.service.clone(),
        path_of(&key.target).to_owned(),
    )
}

fn lock(paths: &PathIndex) -> std::sync::MutexGuard<'_, HashMap<PathKey, HashSet<String>>> {
    // Sets of strings updated in one step each: a poisoned lock holds no torn state.
    paths
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ResponseCache {
    /// A cache whose freshness is read on `clock`'s instants (its entries
    /// also leave by the cache's own timer once past freshness and
    /// `stale_if_error`, which only frees their room).
    pub fn new(config: &ResponseCacheConfig, clock: Arc<dyn Clock>) -> Self {
        let shares = TenantShares::new(config.bytes, config.tenant_share_percent);
        let paths = PathIndex::default();
        let entries = (config.bytes > 0).then(|| {
            let on_evict = shares.clone();
            let unindex = paths.clone();
            Cache::builder()
                .max_capacity(config.bytes)
                .weigher(|key: &CacheKey, value: &Arc<CachedResponse>| {
                    u32::try_from(weight(key, value)).unwrap_or(u32::MAX)
                })
                .expire_after(FreshFor)
                .eviction_listener(
                    move |key: Arc<CacheKey>, value: Arc<CachedResponse>, cause| {
                        on_evict.release(&key.tenant, weight(&key, &value));
                        // A replaced entry's target stays cached, with the new value.
                        if cause == moka::notification::RemovalCause::Replaced {
                            return;
                        }
                        let path = path_key(&key);
                        let mut paths = lock(&unindex);
                        if let Some(targets) = paths.get_mut(&path) {
                            targets.remove(&key.target);
                            if targets.is_empty() {
                                paths.remove(&path);
                            }
                        }
                    },
                )
                .support_invalidation_closures()
                .build()
        });
        Self {
            entries,
            shares,
            paths,
            max_entry_bytes: config.max_entry_bytes,
            clock,
        }
    }

    /// Drops `tenant`'s cached responses of `service` for `path`, whatever
    /// their query: a successful write to a path makes them stale (RFC 9111
    /// §4.4).
    pub fn invalidate_path(&self, tenant: &TenantId, service: &ServiceName, path: &str) {
        let Some(entries) = &self.entries else {
            return;
        };
        let key = (tenant.clone(), service.clone(), path_of(path).to_owned());
        let targets = lock(&self.paths).remove(&key).unwrap_or_default();
        for target in targets {
            entries.invalidate(&CacheKey {
                tenant: tenant.clone(),
                service: service.clone(),
                target,
            });
        }
    }

    /// Drops `tenant`'s cached responses of `service` whose target starts
    /// with `prefix` (all of them for `""`): an operator's or tenant admin's
    /// purge, rare enough to be a pass over the cache. Returns at once; the
    /// entries are gone from every later lookup.
    pub fn purge(&self, tenant: &TenantId, service: &ServiceName, prefix: &str) {
        let Some(entries) = &self.entries else {
            return;
        };
        let (tenant, service, prefix) = (tenant.clone(), service.clone(), prefix.to_owned());
        // Only fails if closures are not enabled, which `new` does.
        let _ = entries.invalidate_entries_if(move |key, _| {
            key.tenant == tenant && key.service == service && key.target.starts_with(&prefix)
        });
    }

    /// Whether responses are cached at all (`gateway.cache.bytes` above 0).
    pub fn is_on(&self) -> bool {
        self.entries.is_some()
    }

    /// A fresh response for `key`.
    pub fn get(&self, key: &CacheKey) -> Option<Arc<CachedResponse>> {
        let now = self.clock.instant();
        self.entries
            .as_ref()?
            .get(key)
            .filter(|hit| hit.is_fresh(now))
    }

    /// A response for `key`, fresh or kept past its freshness for
    /// `stale_if_error`: for when the upstream cannot answer.
    pub fn get_stale(&self, key: &CacheKey) -> Option<Arc<CachedResponse>> {
        self.entries.as_ref()?.get(key)
    }

    /// Whether a response may be kept, and for how long; `None` if not.
    pub fn freshness(&self, status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
        self.entries.as_ref()?;
        if status != StatusCode::OK
            || headers.contains_key(header::SET_COOKIE)
            || headers.contains_key(header::VARY)
        {
            return None;
        }
        if let Some(length) = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            if length > self.max_entry_bytes {
                return None;
            }
        }
        let directives = CacheControl::parse(headers);
        if directives.no_store || directives.private || directives.no_cache {
            return None;
        }
        directives
            .s_maxage
            .or(directives.max_age)
            .filter(|age| *age > 0)
            .map(Duration::from_secs)
    }

    pub fn max_entry_bytes(&self) -> u64 {
        self.max_entry_bytes
    }

    pub fn insert(
        &self,
        key: CacheKey,
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        (fresh_for, stale_for): (Duration, Duration),
    ) {
        let Some(entries) = &self.entries else {
            return;
        };
        let value = Arc::new(CachedResponse {
            status,
            headers,
            body,
            stored_at: self.clock.instant(),
            fresh_for,
            stale_for,
        });
        // A tenant past its share keeps what it has; it does not push
        // other tenants' responses out.
        if !self.shares.reserve(&key.tenant, weight(&key, &value)) {
            return;
        }
        lock(&self.paths)
            .entry(path_key(&key))
            .or_default()
            .insert(key.target.clone());
        entries.insert(key, value);
    }

    /// Whether `tenant` has any response in the cache. Its bytes are
    /// counted before an entry goes in and given back after it left, so a
    /// tenant with an entry is never said to hold none.
    pub fn holds_any(&self, tenant: &TenantId) -> bool {
        self.shares.held(tenant) > 0
    }

    /// Seconds since `entry` was stored, for its `Age` header.
    pub fn age_of(&self, entry: &CachedResponse) -> u64 {
        entry.age(self.clock.instant())
    }

    /// Bytes of `tenant`'s responses in the cache.
    pub fn tenant_bytes(&self, tenant: &TenantId) -> u64 {
        self.shares.held(tenant)
    }
}

/// Whether a request lets the cache answer (`read`) and keep the answer (`store`).
pub fn request_allows(headers: &HeaderMap) -> (bool, bool) {
    if headers.contains_key(header::RANGE) {
        return (false, false);
    }
    let directives = CacheControl::parse(headers);
    let no_cache = directives.no_cache
        || headers
            .get(header::PRAGMA)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"));
    (!no_cache && !directives.no_store, !directives.no_store)
}

/// The `Cache-Control` directives the cache acts on.
#[derive(Debug, Default, PartialEq)]
struct CacheControl {
    max_age: Option<u64>,
    s_maxage: Option<u64>,
    no_store: bool,
    no_cache: bool,
    private: bool,
}

impl CacheControl {
    fn parse(headers: &HeaderMap) -> Self {
        let mut parsed = Self::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(value) = value.to_str() else {
                // An unreadable header could say anything: keep nothing.
                parsed.no_store = true;
                continue;
            };
            for directive in value.split(',') {
                let (name, argument) = match directive.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (directive.trim(), None),
                };
                let seconds = argument.and_then(|a| a.parse::<u64>().ok());
                match name.to_ascii_lowercase().as_str() {
                    "max-age" => parsed.max_age = seconds.or(Some(0)),
                    "s-maxage" => parsed.s_maxage = seconds.or(Some(0)),
                    "no-store" => parsed.no_store = true,
                    "no-cache" => parsed.no_cache = true,
                    "private" => parsed.private = true,
                    _ => {}
                }
            }
        }
        parsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    /// A cache of `bytes`, entries of at most `max_entry_bytes`, tenants'
    /// shares of `share` percent, on the system clock.
    fn cache_of(bytes: u64, max_entry_bytes: u64, share: u8) -> ResponseCache {
        let config = ResponseCacheConfig {
            bytes,
            max_entry_bytes,
            tenant_share_percent: tenantd_core::share::Percent::new(u64::from(share)).unwrap(),
        };
        ResponseCache::new(&config, Arc::new(tenantd_core::SystemClock))
    }

    fn cache() -> ResponseCache {
        cache_of(1 << 20, 100, 10)
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn keeps_only_what_the_upstream_allows_for_as_long_as_it_says() {
        let c = cache();
        let ok = StatusCode::OK;
        let fresh = |pairs: &[(&'static str, &'static str)]| c.freshness(ok, &headers(pairs));
        assert_eq!(
            fresh(&[("cache-control", "max-age=30")]),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            fresh(&[("cache-control", "public, max-age=30, s-maxage=5")]),
            Some(Duration::from_secs(5)),
            "s-maxage wins in a shared cache"
        );
        assert_eq!(
            fresh(&[("cache-control", "Max-Age=\"7\"")]),
            Some(Duration::from_secs(7))
        );
        assert_eq!(fresh(&[]), None, "no max-age, no caching");
        assert_eq!(fresh(&[("cache-control", "max-age=0")]), None);
        assert_eq!(fresh(&[("cache-control", "max-age=bogus")]), None);
        assert_eq!(fresh(&[("cache-control", "private, max-age=30")]), None);
        assert_eq!(
            fresh(&[
                ("cache-control", "max-age=30"),
                ("cache-control", "no-store")
            ]),
            None
        );
        assert_eq!(fresh(&[("cache-control", "no-cache, max-age=30")]), None);
        assert_eq!(
            fresh(&[("cache-control", "max-age=30"), ("set-cookie", "a=b")]),
            None
        );
        assert_eq!(
            fresh(&[("cache-control", "max-age=30"), ("vary", "accept")]),
            None
        );
        assert_eq!(
            fresh(&[("cache-control", "max-age=30"), ("content-length", "101")]),
            None,
            "larger than max_entry_bytes"
        );
        assert_eq!(
            c.freshness(
                StatusCode::NOT_FOUND,
                &headers(&[("cache-control", "max-age=30")])
            ),
            None
        );
    }

    #[test]
    fn requests_can_refuse_the_cache() {
        assert_eq!(request_allows(&headers(&[])), (true, true));
        assert_eq!(
            request_allows(&headers(&[("cache-control", "no-cache")])),
            (false, true)
        );
        assert_eq!(
            request_allows(&headers(&[("pragma", "no-cache")])),
            (false, true)
        );
        assert_eq!(
            request_allows(&headers(&[("cache-control", "no-store")])),
            (false, false)
        );
        assert_eq!(
            request_allows(&headers(&[("range", "bytes=0-1")])),
            (false, false)
        );
    }

    #[test]
    fn a_tenant_past_its_share_does_not_push_others_out() {
        let c = cache_of(10_000, 1_000, 20);
        let key = |tenant: &str, n: usize| CacheKey {
            tenant: tenant.parse().unwrap(),
            service: "billing".parse().unwrap(),
            target: format!("/r/{n:03}"),
        };
        let fill = |tenant: &str, n: usize| {
            c.insert(
                key(tenant, n),
                StatusCode::OK,
                HeaderMap::new(),
                Bytes::from(vec![b'x'; 494]),
                (Duration::from_secs(60), Duration::ZERO),
            )
        };
        // Each entry weighs 500 bytes (a 6-byte target, a 494-byte body, no
        // headers); acme's share is 20 % of 10,000: four entries.
        for n in 0..10 {
            fill("acme", n);
        }
        let acme: TenantId = "acme".parse().unwrap();
        assert_eq!(c.tenant_bytes(&acme), 2_000);
        assert!(c.get(&key("acme", 3)).is_some());
        assert!(c.get(&key("acme", 4)).is_none(), "past its share");
        for n in 0..4 {
            fill("globex", n);
        }
        assert!(
            c.get(&key("globex", 3)).is_some(),
            "globex has its own share"
        );
        assert_eq!(c.tenant_bytes(&"globex".parse().unwrap()), 2_000);
    }

    #[test]
    fn a_disabled_cache_keeps_nothing() {
        let c = cache_of(0, 100, 10);
        assert_eq!(
            c.freshness(StatusCode::OK, &headers(&[("cache-control", "max-age=30")])),
            None
        );
    }
}
