//! The response cache: upstreams' GET responses that say they may be
//! cached (`Cache-Control: max-age` or `s-maxage`), kept per tenant.
//!
//! Invariant: the tenant is part of every key, so one tenant's cached
//! response is never served to another. Responses marked `private`,
//! `no-store` or `no-cache`, or that set cookies or vary, are not kept:
//! within a tenant, every key shares what is cached.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use moka::sync::Cache;
use moka::Expiry;
use tenantd_core::share::TenantShares;
use tenantd_core::{ServiceName, TenantId};

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
}

impl CachedResponse {
    /// Seconds since the response was stored, for the `Age` header.
    pub fn age(&self) -> u64 {
        self.stored_at.elapsed().as_secs()
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
        Some(value.fresh_for)
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

#[derive(Debug, Clone)]
pub struct ResponseCache {
    entries: Option<Cache<CacheKey, Arc<CachedResponse>>>,
    /// Bytes cached per tenant, kept by inserts and the eviction listener.
    shares: TenantShares,
    max_entry_bytes: u64,
}

impl ResponseCache {
    pub fn new(config: &ResponseCacheConfig) -> Self {
        let shares = TenantShares::new(config.bytes, config.tenant_share_percent);
        let entries = (config.bytes > 0).then(|| {
            let on_evict = shares.clone();
            Cache::builder()
                .max_capacity(config.bytes)
                .weigher(|key: &CacheKey, value: &Arc<CachedResponse>| {
                    u32::try_from(weight(key, value)).unwrap_or(u32::MAX)
                })
                .expire_after(FreshFor)
                .eviction_listener(move |key: Arc<CacheKey>, value: Arc<CachedResponse>, _| {
                    on_evict.release(&key.tenant, weight(&key, &value));
                })
                .build()
        });
        Self {
            entries,
            shares,
            max_entry_bytes: config.max_entry_bytes,
        }
    }

    pub fn get(&self, key: &CacheKey) -> Option<Arc<CachedResponse>> {
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
        fresh_for: Duration,
    ) {
        let Some(entries) = &self.entries else {
            return;
        };
        let value = Arc::new(CachedResponse {
            status,
            headers,
            body,
            stored_at: Instant::now(),
            fresh_for,
        });
        // A tenant past its share keeps what it has; it does not push
        // other tenants' responses out.
        if !self.shares.reserve(&key.tenant, weight(&key, &value)) {
            return;
        }
        entries.insert(key, value);
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

    fn cache() -> ResponseCache {
        ResponseCache::new(&ResponseCacheConfig {
            bytes: 1 << 20,
            max_entry_bytes: 100,
            tenant_share_percent: 10,
        })
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
        let c = ResponseCache::new(&ResponseCacheConfig {
            bytes: 10_000,
            max_entry_bytes: 1_000,
            tenant_share_percent: 20,
        });
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
                Duration::from_secs(60),
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
        let c = ResponseCache::new(&ResponseCacheConfig {
            bytes: 0,
            max_entry_bytes: 100,
            tenant_share_percent: 10,
        });
        assert_eq!(
            c.freshness(StatusCode::OK, &headers(&[("cache-control", "max-age=30")])),
            None
        );
    }
}
