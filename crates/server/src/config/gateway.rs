//! The gateway's settings: services, their upstreams, breakers, the signed
//! tenant context and the response cache.

use super::admission::Classes;
use super::ClientTls;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tenantd_core::breaker::BreakerPolicy;
use tenantd_core::plan::OpClass;
use tenantd_core::share::Percent;
use tenantd_core::{Role, ServiceName};

/// The gateway: the team's own services behind `/v1/proxy/{service}/…`, the
/// tenant context they are handed, and the tenant-keyed response cache.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    pub services: Vec<ServiceConfig>,
    pub context: ContextConfig,
    pub cache: ResponseCacheConfig,
}

/// One service behind the gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The `{service}` of `/v1/proxy/{service}/…`.
    pub name: ServiceName,
    /// Base URLs (`http://host:port`), tried in turn; a retry goes to the next.
    pub upstreams: Vec<UpstreamUrl>,
    /// Hosts whose every request goes to this service, path unchanged
    /// (`Host: billing.example.com`, `/invoices` → `<upstream><path_prefix>/invoices`),
    /// as well as `/v1/proxy/{name}/…` on any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Path on the upstream under which the rest of the request path goes:
    /// `/v1/proxy/billing/invoices` reaches `<upstream><path_prefix>/invoices`.
    #[serde(default)]
    pub path_prefix: String,
    /// Time to open a connection to one upstream.
    #[serde(
        default = "ServiceConfig::default_connect_timeout",
        with = "humantime_serde"
    )]
    pub connect_timeout: Duration,
    /// Time from sending the request to the upstream's response head, retries included.
    #[serde(
        default = "ServiceConfig::default_request_timeout",
        with = "humantime_serde"
    )]
    pub request_timeout: Duration,
    /// Longest the upstream may pause while sending its response body; the
    /// body is then cut and the tenant's bulkhead place given back.
    #[serde(
        default = "ServiceConfig::default_body_idle_timeout",
        with = "humantime_serde"
    )]
    pub body_idle_timeout: Duration,
    /// Further attempts after a failed one, for idempotent requests without a body only.
    #[serde(default = "ServiceConfig::default_retries")]
    pub retries: u32,
    /// The operation class the service's requests are admitted as.
    #[serde(default = "ServiceConfig::default_class")]
    pub class: OpClass,
    /// Tenant roles whose keys may call the service.
    #[serde(default = "ServiceConfig::default_roles")]
    pub allowed_roles: Vec<Role>,
    /// The service's own capacity in seats, shared by tenants through a fair
    /// queue of its own; without it, the service's requests take the global seats.
    #[serde(default)]
    pub seats: Option<u32>,
    /// Most requests one tenant may have in flight to the service (the bulkhead).
    #[serde(default = "ServiceConfig::default_in_flight")]
    pub max_in_flight_per_tenant: u32,
    /// When a tenant's circuit to the service opens.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// How long past its freshness a cached response may still answer a GET
    /// while the tenant's circuit to the service is open or the upstream
    /// fails (RFC 5861's `stale-if-error`), marked `Tenantd-Cache: stale`.
    /// Unset: never.
    #[serde(default, with = "humantime_serde")]
    pub stale_if_error: Option<Duration>,
    /// TLS to `https://` upstreams: whom to trust, what to present.
    #[serde(default)]
    pub tls: ClientTls,
    /// HTTP/2 to the upstreams: offered by ALPN to `https://` ones, by prior
    /// knowledge to `http://` ones (which must then speak it).
    #[serde(default)]
    pub http2: bool,
}

impl ServiceConfig {
    fn default_connect_timeout() -> Duration {
        Duration::from_secs(2)
    }
    fn default_request_timeout() -> Duration {
        Duration::from_secs(25)
    }
    fn default_body_idle_timeout() -> Duration {
        Duration::from_secs(30)
    }
    fn default_retries() -> u32 {
        1
    }
    fn default_class() -> OpClass {
        OpClass::Proxy
    }
    fn default_roles() -> Vec<Role> {
        Role::TENANT_ROLES.to_vec()
    }
    fn default_in_flight() -> u32 {
        32
    }

    fn check(&self) -> Result<(), String> {
        if self.upstreams.is_empty() {
            return Err("needs at least one upstream".into());
        }
        if !self.path_prefix.is_empty()
            && (!self.path_prefix.starts_with('/') || self.path_prefix.ends_with('/'))
        {
            return Err("path_prefix must start with / and not end with one".into());
        }
        if self.path_prefix.contains(['?', '#']) {
            return Err("path_prefix must be a path only".into());
        }
        for host in &self.hosts {
            let valid = !host.is_empty()
                && host.len() <= 253
                && host.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !valid {
                return Err(format!(
                    "host {host:?} must be a lowercase host name, without a port"
                ));
            }
        }
        if self.allowed_roles.contains(&Role::Operator) {
            return Err(
                "operators have no tenant to proxy for; allowed_roles takes tenant roles".into(),
            );
        }
        if self.connect_timeout.is_zero()
            || self.request_timeout.is_zero()
            || self.body_idle_timeout.is_zero()
        {
            return Err("timeouts must be greater than zero".into());
        }
        let https = self
            .upstreams
            .iter()
            .filter(|u| u.scheme == axum::http::uri::Scheme::HTTPS)
            .count();
        self.tls.check(https > 0, "https://")?;
        // The client has one switch for HTTP/2 in the clear (prior
        // knowledge), which would also force it on https:// upstreams that
        // did not choose it by ALPN.
        if self.http2 && https > 0 && https < self.upstreams.len() {
            return Err(
                "with http2 = true, a service's upstreams are all http:// (prior knowledge) \
                 or all https:// (ALPN)"
                    .into(),
            );
        }
        if self.seats == Some(0) || self.max_in_flight_per_tenant == 0 {
            return Err("seats and max_in_flight_per_tenant must be at least 1".into());
        }
        self.breaker.check()
    }
}

/// An upstream's base URL: `http://` or `https://host[:port]`, with no path or query
/// (the service's `path_prefix` says where it lives on the upstream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UpstreamUrl {
    pub scheme: axum::http::uri::Scheme,
    pub authority: axum::http::uri::Authority,
}

impl TryFrom<String> for UpstreamUrl {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let uri: axum::http::Uri = s
            .parse()
            .map_err(|e| format!("upstream {s:?} is not a URL: {e}"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(format!("upstream {s:?} needs a scheme and a host"));
        };
        if scheme != &axum::http::uri::Scheme::HTTP && scheme != &axum::http::uri::Scheme::HTTPS {
            return Err(format!(
                "upstream {s:?}: the scheme must be http:// or https://"
            ));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "upstream {s:?} must have no path or query; use the service's path_prefix"
            ));
        }
        Ok(Self {
            scheme: scheme.clone(),
            authority: authority.clone(),
        })
    }
}

impl From<UpstreamUrl> for String {
    fn from(url: UpstreamUrl) -> String {
        format!("{}://{}", url.scheme, url.authority)
    }
}

/// A tenant's circuit to a service: opens when, in a window of at least
/// `min_calls` calls, `failure_percent` of them failed (5xx, timeouts,
/// broken connections); stays open `open_for`, doubling after each failed
/// probe up to `max_open_for`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    pub min_calls: u32,
    pub failure_percent: u8,
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
    #[serde(with = "humantime_serde")]
    pub max_open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        let policy = BreakerPolicy::default();
        Self {
            window: policy.window,
            min_calls: policy.min_calls,
            failure_percent: policy.failure_percent,
            open_for: policy.open_for,
            max_open_for: policy.max_open_for,
        }
    }
}

impl BreakerConfig {
    pub fn policy(&self) -> BreakerPolicy {
        BreakerPolicy {
            window: self.window,
            min_calls: self.min_calls,
            failure_percent: self.failure_percent,
            open_for: self.open_for,
            max_open_for: self.max_open_for,
        }
    }

    fn check(&self) -> Result<(), String> {
        if !(1..=100).contains(&self.failure_percent) {
            return Err("breaker.failure_percent must be from 1 to 100".into());
        }
        if self.min_calls == 0 || self.window.is_zero() || self.open_for.is_zero() {
            return Err("breaker.min_calls, window and open_for must be greater than zero".into());
        }
        if self.max_open_for < self.open_for {
            return Err("breaker.max_open_for must be at least open_for".into());
        }
        Ok(())
    }
}

/// The signed tenant context (a compact JWS, EdDSA) upstreams receive.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContextConfig {
    /// The `iss` claim.
    pub issuer: String,
    /// How long a context is valid after it is signed (`exp` − `iat`).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How long upstreams may cache `/.well-known/jwks.json` (its `max-age`).
    #[serde(with = "humantime_serde")]
    pub jwks_max_age: Duration,
    /// How long a new key is published before it signs, so that upstreams
    /// holding a cached JWKS know it first; at least `jwks_max_age`.
    #[serde(with = "humantime_serde")]
    pub publish_ahead: Duration,
    /// How often the signing key is replaced by a new one.
    #[serde(with = "humantime_serde")]
    pub rotate_every: Duration,
    /// Sign a context for every request, with its `request_id` among the
    /// claims. Off, a context is signed once per key and service and reused
    /// for up to half its `ttl` (the request id travels as `X-Request-Id`):
    /// a context is replayable within its `ttl` either way, and signing each
    /// time was a quarter of the gateway's CPU per request.
    pub per_request: bool,
}

impl Default for ContextConfig {
    fn default() -> Self {
        Self {
            issuer: "tenantd".into(),
            ttl: Duration::from_secs(60),
            jwks_max_age: Duration::from_secs(300),
            publish_ahead: Duration::from_secs(600),
            rotate_every: Duration::from_secs(30 * 24 * 3600),
            per_request: false,
        }
    }
}

/// The tenant-keyed cache of upstreams' GET responses.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponseCacheConfig {
    /// Bytes of responses kept in all; 0 turns the cache off.
    pub bytes: u64,
    /// Largest response body kept; larger ones stream through uncached.
    pub max_entry_bytes: u64,
    /// Largest share of `bytes` one tenant's responses may hold, in percent.
    pub tenant_share_percent: Percent,
}

impl Default for ResponseCacheConfig {
    fn default() -> Self {
        Self {
            bytes: 64 * 1024 * 1024,
            max_entry_bytes: 1024 * 1024,
            tenant_share_percent: Percent::of_const(10),
        }
    }
}

impl GatewayConfig {
    /// Checks the services against each other and against admission's
    /// deadlines; a refusal names its setting.
    pub(super) fn check(
        &self,
        classes: &Classes,
        request_timeout: Duration,
    ) -> Result<(), (&'static str, String)> {
        for (i, service) in self.services.iter().enumerate() {
            let earlier = &self.services[..i];
            if let Some(host) = service
                .hosts
                .iter()
                .find(|h| earlier.iter().any(|s| s.hosts.contains(h)))
            {
                return Err((
                    "gateway.services",
                    format!("two services claim host {host}"),
                ));
            }
            if earlier.iter().any(|s| s.name == service.name) {
                return Err((
                    "gateway.services",
                    format!("two services are named {}", service.name),
                ));
            }
            service.check().map_err(|reason| {
                (
                    "gateway.services",
                    format!("service {}: {reason}", service.name),
                )
            })?;
            // The service's own timeout must fire first, so that a slow
            // upstream is answered `upstream_timeout` and counted by its breaker.
            let deadline = classes.get(service.class).deadline;
            if service.request_timeout >= deadline.min(request_timeout) {
                return Err(("gateway.services", format!(
                        "service {}: request_timeout ({:?}) must be shorter than its class's deadline ({deadline:?}) and than request_timeout ({:?})",
                        service.name, service.request_timeout, request_timeout
                    )));
            }
        }
        let context = &self.context;
        if context.ttl.is_zero() || context.rotate_every.is_zero() {
            return Err((
                "gateway.context",
                "ttl and rotate_every must be greater than zero".into(),
            ));
        }
        if context.publish_ahead < context.jwks_max_age {
            return Err(("gateway.context.publish_ahead", "must be at least jwks_max_age, or upstreams with a cached key set reject the new key".into()));
        }
        Ok(())
    }
}
