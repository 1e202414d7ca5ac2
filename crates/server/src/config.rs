//! Typed, layered configuration: built-in defaults, then `tenantd.toml`, then
//! `TENANTD_*` environment variables, then command-line flags. It is parsed
//! and validated once at start; every later reader gets a `Config` it can
//! trust.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use tenantd_core::breaker::BreakerPolicy;
use tenantd_core::fair::Discipline;
use tenantd_core::placement::PoolSpec;
use tenantd_core::plan::{OpClass, Plan};
use tenantd_core::{
    ApiKeyToken, Isolation, PlanId, PoolName, RegionId, Role, ServerSecret, ServiceName,
};
use tenantd_store::StoragePool;

/// The file read when no `--config` is given; it may be absent.
pub const DEFAULT_CONFIG_FILE: &str = "tenantd.toml";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Readable lines for a terminal.
    Human,
    /// One JSON object per line, for log pipelines.
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Directory of the embedded store and the generated server secret.
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    /// A `tracing` filter such as `info` or `tenantd_server=debug,info`.
    pub log_level: String,
    /// HMAC key for API key hashes, 64 hex characters. When unset, one is
    /// generated on first start and kept in `<data_dir>/server-secret`.
    #[serde(skip_serializing)]
    pub server_secret: Option<ServerSecret>,
    /// The operator key to create on first start instead of a random one.
    #[serde(skip_serializing)]
    pub bootstrap_key: Option<ApiKeyToken>,
    /// Region given to tenants created without one.
    pub default_region: RegionId,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Time a tenant's request body has to arrive in full (at most
    /// `request_timeout`). The data API reads bodies before a request takes
    /// a seat, so a slow sender waits alone and then gets 408 `body_timeout`.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Largest stored record, in bytes of compact JSON.
    pub max_record_bytes: usize,
    /// Where tenants' data may live. Each tenant is placed on a pool of its
    /// region that offers its isolation model.
    pub pools: Vec<PoolConfig>,
    /// Longest a request waits for a connection to the catalog or a storage
    /// pool (or for a lock on a PostgreSQL table) before it gets 503
    /// `store_unavailable`; well below the classes' deadlines, so that a
    /// database that cannot serve is answered fast.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// Bytes of records kept in the in-process read cache; 0 turns it off.
    pub record_cache_bytes: u64,
    /// Largest share of the record cache one tenant may hold, in percent.
    pub record_cache_tenant_share: u8,
    /// How long a cached record may be served; bounds staleness from writes
    /// made by another process.
    #[serde(with = "humantime_serde")]
    pub record_cache_ttl: Duration,
    /// Largest accepted total size of request headers.
    pub max_header_bytes: usize,
    /// Time allowed for a whole request, body included.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Time a client has to send its request headers before the connection is closed.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Time in-flight requests get to finish after a shutdown signal.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// How long a soft-deleted tenant is kept before it is purged.
    #[serde(with = "humantime_serde")]
    pub purge_after: Duration,
    /// How often the purge sweep runs.
    #[serde(with = "humantime_serde")]
    pub purge_interval: Duration,
    /// How often keys' last-used times are written to the store.
    #[serde(with = "humantime_serde")]
    pub last_used_flush_interval: Duration,
    /// How long a key or tenant looked up by the identity stage is cached.
    /// Changes made through this server take effect at once; this bounds how
    /// long a change made elsewhere (another node, a restore) may go unseen.
    #[serde(with = "humantime_serde")]
    pub identity_cache_ttl: Duration,
    /// The plans tenants may be on. A plan named `default` is always there:
    /// the built-in one unless this list defines it.
    pub plans: Vec<Plan>,
    pub admission: AdmissionConfig,
    pub gateway: GatewayConfig,
}

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
        if self.seats == Some(0) || self.max_in_flight_per_tenant == 0 {
            return Err("seats and max_in_flight_per_tenant must be at least 1".into());
        }
        self.breaker.check()
    }
}

/// An upstream's base URL: `http://host[:port]`, with no path or query
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
        if scheme != &axum::http::uri::Scheme::HTTP {
            return Err(format!(
                "upstream {s:?}: only http:// upstreams are supported; terminate TLS beside the upstream"
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
    pub tenant_share_percent: u8,
}

impl Default for ResponseCacheConfig {
    fn default() -> Self {
        Self {
            bytes: 64 * 1024 * 1024,
            max_entry_bytes: 1024 * 1024,
            tenant_share_percent: 10,
        }
    }
}

/// How requests are admitted: seats, queues, budgets, the shared limiter.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    /// Seats shared by all tenants' requests being served at once.
    pub seats: u32,
    /// `fair` (weighted fair queuing) or `fifo` (one queue, for comparison).
    pub discipline: Discipline,
    /// Most seats one tenant may hold at once, whatever its weight: a number
    /// of seats or a percentage of them (`"50%"`, the default). A plan's
    /// `concurrent_requests` quota can only lower it. Requests stuck on a
    /// hung client or a tenant's own database then hold at most this share,
    /// and every other tenant keeps the rest.
    pub tenant_max_seats: SeatShare,
    /// Most requests one tenant may have waiting for a seat.
    pub max_queue: u32,
    /// Longest a request waits for a seat before it gets 503 `overloaded`.
    #[serde(with = "humantime_serde")]
    pub queue_wait: Duration,
    /// Width, deadline and first cost estimate of each operation class.
    pub classes: Classes,
    /// A Redis shared by several tenantd nodes for rate limits; each node
    /// decides alone (in memory) when unset.
    pub redis: Option<RedisConfig>,
    /// How often metered usage is written to the store.
    #[serde(with = "humantime_serde")]
    pub usage_flush_interval: Duration,
    /// Tenants given their own series in `/metrics`; the rest are summed as `other`.
    pub metrics_tenants: usize,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            seats: 64,
            discipline: Discipline::Fair,
            tenant_max_seats: SeatShare::Percent(50),
            max_queue: 64,
            queue_wait: Duration::from_secs(2),
            classes: Classes::default(),
            redis: None,
            usage_flush_interval: Duration::from_secs(1),
            metrics_tenants: 20,
        }
    }
}

/// A part of a seat capacity: a number of seats, or a percentage of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SeatShareValue", into = "SeatShareValue")]
pub enum SeatShare {
    Seats(u32),
    Percent(u8),
}

/// How a `SeatShare` is written: `32` or `"50%"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum SeatShareValue {
    Seats(u32),
    Text(String),
}

impl TryFrom<SeatShareValue> for SeatShare {
    type Error = String;
    fn try_from(value: SeatShareValue) -> Result<Self, String> {
        let share = match value {
            SeatShareValue::Seats(n) => SeatShare::Seats(n),
            SeatShareValue::Text(text) => match text.trim().strip_suffix('%') {
                Some(percent) => SeatShare::Percent(
                    percent
                        .trim()
                        .parse()
                        .map_err(|_| format!("{text:?} is not a percentage"))?,
                ),
                None => SeatShare::Seats(
                    text.trim()
                        .parse()
                        .map_err(|_| format!("{text:?} is neither seats nor a percentage"))?,
                ),
            },
        };
        match share {
            SeatShare::Seats(0) => Err("a tenant needs at least one seat".into()),
            SeatShare::Percent(p) if !(1..=100).contains(&p) => {
                Err(format!("{p}% is not a percentage from 1 to 100"))
            }
            share => Ok(share),
        }
    }
}

impl From<SeatShare> for SeatShareValue {
    fn from(share: SeatShare) -> Self {
        match share {
            SeatShare::Seats(n) => SeatShareValue::Seats(n),
            SeatShare::Percent(p) => SeatShareValue::Text(format!("{p}%")),
        }
    }
}

impl SeatShare {
    /// The seats this share is of `capacity`: at least one, at most all.
    pub fn of(self, capacity: u32) -> u32 {
        let seats = match self {
            SeatShare::Seats(n) => n,
            SeatShare::Percent(p) => {
                u32::try_from(u64::from(capacity) * u64::from(p) / 100).unwrap_or(u32::MAX)
            }
        };
        seats.clamp(1, capacity.max(1))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Classes {
    pub read: ClassConfig,
    pub write: ClassConfig,
    pub admin: ClassConfig,
    pub proxy: ClassConfig,
}

impl Default for Classes {
    fn default() -> Self {
        let class = |width, deadline_secs, estimate_ms| ClassConfig {
            width,
            deadline: Duration::from_secs(deadline_secs),
            estimate: Duration::from_millis(estimate_ms),
        };
        Self {
            read: class(1, 10, 2),
            write: class(2, 15, 5),
            admin: class(1, 15, 5),
            proxy: class(1, 30, 20),
        }
    }
}

impl Classes {
    pub fn get(&self, class: OpClass) -> &ClassConfig {
        match class {
            OpClass::Read => &self.read,
            OpClass::Write => &self.write,
            OpClass::Admin => &self.admin,
            OpClass::Proxy => &self.proxy,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassConfig {
    /// Seats one request of the class holds.
    pub width: u32,
    /// Time a request of the class may run before it gets 504 `deadline_exceeded`.
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
    /// The service time assumed before any is measured.
    #[serde(with = "humantime_serde")]
    pub estimate: Duration,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`.
    pub url: String,
    /// What to do when Redis cannot be reached: `fail_open` decides on this
    /// node alone meanwhile; `fail_closed` answers 503 `limiter_unavailable`.
    pub on_unavailable: FailMode,
    /// Longest a limiter decision may wait for Redis.
    #[serde(with = "humantime_serde", default = "default_redis_timeout")]
    pub timeout: Duration,
}

fn default_redis_timeout() -> Duration {
    Duration::from_millis(100)
}

/// Shown without the password its URL may hold.
impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &without_password(&self.url))
            .field("on_unavailable", &self.on_unavailable)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    FailOpen,
    FailClosed,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./tenantd-data"),
            log_format: LogFormat::Human,
            log_level: "info".into(),
            server_secret: None,
            bootstrap_key: None,
            default_region: RegionId::default_region(),
            max_body_bytes: 1024 * 1024,
            body_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_record_bytes: 256 * 1024,
            pools: vec![PoolConfig {
                name: PoolName::default_pool(),
                engine: Engine::Sqlite,
                location: "data".into(),
                owner_location: None,
                region: None,
                models: vec![Isolation::Pooled, Isolation::Dedicated],
            }],
            acquire_timeout: tenantd_store::Connections::default().acquire_timeout,
            record_cache_bytes: 64 * 1024 * 1024,
            record_cache_tenant_share: 10,
            record_cache_ttl: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(30),
            purge_after: Duration::from_secs(30 * 24 * 3600),
            purge_interval: Duration::from_secs(3600),
            last_used_flush_interval: Duration::from_secs(10),
            identity_cache_ttl: Duration::from_secs(30),
            plans: vec![Plan::default_plan()],
            admission: AdmissionConfig::default(),
            gateway: GatewayConfig::default(),
        }
    }
}

/// A storage engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// Embedded SQLite: a shared database and a file per dedicated tenant.
    Sqlite,
    /// A PostgreSQL database: shared tables under row-level security, a
    /// schema per tenant, and a database per dedicated tenant on its server.
    Postgres,
}

/// A named storage pool.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub name: PoolName,
    pub engine: Engine,
    /// SQLite: the pool's directory; relative paths are under `data_dir`.
    /// PostgreSQL: the URL the application connects with, as a role that is
    /// neither the tables' owner, a superuser nor BYPASSRLS.
    pub location: String,
    /// PostgreSQL only: the URL of the role that owns the pool's schemas,
    /// which applies migrations and creates indexes, tenant schemas and
    /// (with CREATEDB) dedicated databases.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_location: Option<String>,
    /// The pool's region; `default_region` when unset.
    pub region: Option<RegionId>,
    /// The isolation models the pool offers.
    pub models: Vec<Isolation>,
}

/// Shown without the passwords its URLs may hold.
impl std::fmt::Debug for PoolConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolConfig")
            .field("name", &self.name)
            .field("engine", &self.engine)
            .field("location", &without_password(&self.location))
            .field(
                "owner_location",
                &self.owner_location.as_deref().map(without_password),
            )
            .field("region", &self.region)
            .field("models", &self.models)
            .finish()
    }
}

/// `url` with the password of its `user:password@` part replaced.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or_default();
            format!("{scheme}://{name}:***@{host}")
        }
        _ => url.to_owned(),
    }
}

impl PoolConfig {
    /// Checks what the engine needs; the reason names the setting.
    fn check(&self) -> Result<(), String> {
        match self.engine {
            Engine::Sqlite => {
                if self.models.contains(&Isolation::Schema) {
                    return Err("the schema model needs a PostgreSQL pool".into());
                }
                if self.owner_location.is_some() {
                    return Err("owner_location is for PostgreSQL pools only".into());
                }
            }
            Engine::Postgres => {
                let owner = self.owner_location.as_deref().ok_or(
                    "a PostgreSQL pool needs owner_location, the URL of the role that owns its schemas",
                )?;
                for (setting, url) in [
                    ("location", self.location.as_str()),
                    ("owner_location", owner),
                ] {
                    tenantd_store::postgres::check_url(url).map_err(|e| {
                        // The URL may hold a password: name the setting, not the value.
                        format!("{setting} is not a PostgreSQL URL ({e})")
                    })?;
                }
            }
        }
        Ok(())
    }
}

/// Values given on the command line; each one set overrides every other layer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
}

/// Why the configuration cannot be used. The message names the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("{0}")]
    Parse(#[from] Box<figment::Error>),
    /// A setting tenantd does not have: a typo, most likely.
    #[error("{}", unknown_setting(.origin, .line, .key, .nearest))]
    UnknownSetting {
        /// The file or environment variable it was found in.
        origin: String,
        /// Its line in the file, when found there.
        line: Option<usize>,
        /// The setting as written, with the tables it is in (`admission.seets`).
        key: String,
        /// The valid setting nearest to it, if one is near.
        nearest: Option<String>,
    },
    #[error("invalid setting `{setting}`: {reason}")]
    Invalid {
        setting: &'static str,
        reason: String,
    },
}

/// How an unknown setting is told: where, what, and what was likely meant.
fn unknown_setting(
    origin: &str,
    line: &Option<usize>,
    key: &str,
    nearest: &Option<String>,
) -> String {
    let at = line.map_or(origin.to_owned(), |line| format!("{origin}:{line}"));
    match nearest {
        Some(nearest) => format!("{at}: unknown setting `{key}`; did you mean `{nearest}`?"),
        None => format!("{at}: unknown setting `{key}`"),
    }
}

/// A figment error as the user can act on it: an unknown field is named
/// with its file and line (or its environment variable) and the nearest
/// valid name; anything else is figment's own message.
fn explain(error: figment::Error) -> ConfigError {
    let figment::error::Kind::UnknownField(found, expected) = &error.kind else {
        return ConfigError::Parse(Box::new(error));
    };
    let nearest = expected
        .iter()
        .map(|name| (strsim::damerau_levenshtein(found, name), *name))
        .filter(|(distance, name)| *distance <= (name.len() / 3).max(1))
        .min()
        .map(|(_, name)| name.to_owned());
    // The path figment reports starts with its profile (`default`).
    let path: Vec<&str> = error
        .path
        .iter()
        .map(String::as_str)
        .skip_while(|segment| *segment == "default")
        .collect();
    let key = path.join(".");
    let (origin, line) = match error.metadata.as_ref().and_then(|m| m.source.as_ref()) {
        Some(figment::Source::File(file)) => {
            let line = std::fs::read_to_string(file).ok().and_then(|text| {
                text.lines().position(|line| {
                    line.trim_start()
                        .strip_prefix(found.as_str())
                        .is_some_and(|rest| rest.trim_start().starts_with('='))
                })
            });
            (file.display().to_string(), line.map(|l| l + 1))
        }
        _ => match error.metadata.as_ref() {
            Some(m) if m.name.contains("environment") => (
                format!(
                    "environment variable TENANTD_{}",
                    key.replace('.', "_").to_uppercase()
                ),
                None,
            ),
            Some(m) => (m.name.to_string(), None),
            None => ("configuration".to_owned(), None),
        },
    };
    ConfigError::UnknownSetting {
        origin,
        line,
        key,
        nearest,
    }
}

/// A configuration that passed every check. Only `Config::load` and
/// `Config::check` make one, and `Server::start` takes nothing else, so no
/// server runs on a configuration that was not checked.
#[derive(Debug, Clone)]
pub struct ValidConfig(Config);

impl std::ops::Deref for ValidConfig {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.0
    }
}

impl ValidConfig {
    pub fn into_inner(self) -> Config {
        self.0
    }
}

/// Environment variables read by the `tenantd` client commands, not by the server.
const CLIENT_ENV: [&str; 3] = ["config", "url", "key"];

impl Config {
    /// Loads the layers in order. `file` is required to exist when given;
    /// otherwise `tenantd.toml` in the working directory is read if present.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<ValidConfig, ConfigError> {
        let file = match file {
            Some(path) if !path.exists() => return Err(ConfigError::MissingFile(path.to_owned())),
            Some(path) => path.to_owned(),
            None => PathBuf::from(DEFAULT_CONFIG_FILE),
        };
        Self::load_from(
            Figment::from(Serialized::defaults(Config::default()))
                .merge(Toml::file(file))
                .merge(Env::prefixed("TENANTD_").ignore(&CLIENT_ENV))
                .merge(Serialized::defaults(overrides)),
        )
    }

    fn load_from(figment: Figment) -> Result<ValidConfig, ConfigError> {
        let config: Config = figment.extract().map_err(explain)?;
        config.check()
    }

    /// Checks a configuration made in code (tests, benchmarks) as a loaded
    /// one is checked; the only other way to a `ValidConfig`.
    pub fn check(mut self) -> Result<ValidConfig, ConfigError> {
        if !self.plans.iter().any(|p| p.id == PlanId::default_plan()) {
            self.plans.push(Plan::default_plan());
        }
        self.validate()?;
        Ok(ValidConfig(self))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting, reason: &str| ConfigError::Invalid {
            setting,
            reason: reason.to_owned(),
        };
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .map_err(|e| invalid("log_level", &e.to_string()))?;
        if !(1024..=1024 * 1024 * 1024).contains(&self.max_body_bytes) {
            return Err(invalid("max_body_bytes", "must be between 1 KiB and 1 GiB"));
        }
        if !(16..=64 * 1024 * 1024).contains(&self.max_record_bytes) {
            return Err(invalid(
                "max_record_bytes",
                "must be between 16 bytes and 64 MiB",
            ));
        }
        if self.pools.is_empty() {
            return Err(invalid("pools", "at least one storage pool is needed"));
        }
        for (i, pool) in self.pools.iter().enumerate() {
            if self.pools[..i].iter().any(|p| p.name == pool.name) {
                return Err(invalid(
                    "pools",
                    &format!("two pools are named {}", pool.name),
                ));
            }
            if pool.models.is_empty() {
                return Err(invalid(
                    "pools",
                    &format!("pool {} offers no isolation model", pool.name),
                ));
            }
            pool.check()
                .map_err(|reason| invalid("pools", &format!("pool {}: {reason}", pool.name)))?;
        }
        if !(1..=100).contains(&self.record_cache_tenant_share) {
            return Err(invalid(
                "record_cache_tenant_share",
                "must be a percentage from 1 to 100",
            ));
        }
        if !(1024..=1024 * 1024).contains(&self.max_header_bytes) {
            return Err(invalid(
                "max_header_bytes",
                "must be between 1 KiB and 1 MiB",
            ));
        }
        let durations = [
            ("request_timeout", self.request_timeout),
            ("header_read_timeout", self.header_read_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("acquire_timeout", self.acquire_timeout),
            ("shutdown_timeout", self.shutdown_timeout),
            ("purge_interval", self.purge_interval),
            ("last_used_flush_interval", self.last_used_flush_interval),
            ("identity_cache_ttl", self.identity_cache_ttl),
            ("record_cache_ttl", self.record_cache_ttl),
            ("admission.queue_wait", self.admission.queue_wait),
            (
                "admission.usage_flush_interval",
                self.admission.usage_flush_interval,
            ),
        ];
        for (setting, value) in durations {
            if value.is_zero() {
                return Err(invalid(setting, "must be greater than zero"));
            }
        }
        for (i, service) in self.gateway.services.iter().enumerate() {
            let earlier = &self.gateway.services[..i];
            if let Some(host) = service
                .hosts
                .iter()
                .find(|h| earlier.iter().any(|s| s.hosts.contains(h)))
            {
                return Err(invalid(
                    "gateway.services",
                    &format!("two services claim host {host}"),
                ));
            }
            if earlier.iter().any(|s| s.name == service.name) {
                return Err(invalid(
                    "gateway.services",
                    &format!("two services are named {}", service.name),
                ));
            }
            service.check().map_err(|reason| {
                invalid(
                    "gateway.services",
                    &format!("service {}: {reason}", service.name),
                )
            })?;
            // The service's own timeout must fire first, so that a slow
            // upstream is answered `upstream_timeout` and counted by its breaker.
            let deadline = self.admission.classes.get(service.class).deadline;
            if service.request_timeout >= deadline.min(self.request_timeout) {
                return Err(invalid(
                    "gateway.services",
                    &format!(
                        "service {}: request_timeout ({:?}) must be shorter than its class's deadline ({deadline:?}) and than request_timeout ({:?})",
                        service.name, service.request_timeout, self.request_timeout
                    ),
                ));
            }
        }
        if !(1..=100).contains(&self.gateway.cache.tenant_share_percent) {
            return Err(invalid(
                "gateway.cache.tenant_share_percent",
                "must be a percentage from 1 to 100",
            ));
        }
        let context = &self.gateway.context;
        if context.ttl.is_zero() || context.rotate_every.is_zero() {
            return Err(invalid(
                "gateway.context",
                "ttl and rotate_every must be greater than zero",
            ));
        }
        if context.publish_ahead < context.jwks_max_age {
            return Err(invalid(
                "gateway.context.publish_ahead",
                "must be at least jwks_max_age, or upstreams with a cached key set reject the new key",
            ));
        }
        for (i, plan) in self.plans.iter().enumerate() {
            plan.check().map_err(|reason| invalid("plans", &reason))?;
            if self.plans[..i].iter().any(|p| p.id == plan.id) {
                return Err(invalid(
                    "plans",
                    &format!("two plans are named {}", plan.id),
                ));
            }
        }
        self.admission
            .check()
            .map_err(|reason| ConfigError::Invalid {
                setting: "admission",
                reason,
            })?;
        let shortest_deadline = [
            self.admission.classes.read.deadline,
            self.admission.classes.write.deadline,
            self.admission.classes.admin.deadline,
        ]
        .into_iter()
        .min()
        .unwrap_or(self.request_timeout);
        if self.acquire_timeout >= shortest_deadline {
            return Err(invalid(
                "acquire_timeout",
                "must be shorter than every class's deadline, so that a store that cannot serve is answered store_unavailable",
            ));
        }
        Ok(())
    }
}

impl AdmissionConfig {
    fn check(&self) -> Result<(), String> {
        if !(1..=100_000).contains(&self.seats) {
            return Err("seats must be from 1 to 100000".into());
        }
        if !(1..=100_000).contains(&self.max_queue) {
            return Err("max_queue must be from 1 to 100000".into());
        }
        for class in OpClass::ALL {
            let c = self.classes.get(class);
            let name = class.as_str();
            if c.width == 0 || c.width > self.seats {
                return Err(format!(
                    "classes.{name}.width must be from 1 to seats ({})",
                    self.seats
                ));
            }
            if c.deadline.is_zero() || c.estimate.is_zero() {
                return Err(format!(
                    "classes.{name} needs a deadline and an estimate above zero"
                ));
            }
        }
        if let Some(redis) = &self.redis {
            if !(redis.url.starts_with("redis://") || redis.url.starts_with("rediss://")) {
                return Err("redis.url must start with redis:// or rediss://".into());
            }
            if redis.timeout.is_zero() {
                return Err("redis.timeout must be greater than zero".into());
            }
        }
        Ok(())
    }
}

impl Config {
    /// The configured plan named `id`.
    pub fn plan(&self, id: &PlanId) -> Option<&Plan> {
        self.plans.iter().find(|p| &p.id == id)
    }

    /// What placement needs to know of each pool.
    pub fn pool_specs(&self) -> Vec<PoolSpec> {
        self.pools
            .iter()
            .map(|p| PoolSpec {
                name: p.name.clone(),
                region: p
                    .region
                    .clone()
                    .unwrap_or_else(|| self.default_region.clone()),
                models: p.models.clone(),
            })
            .collect()
    }

    /// Where each pool keeps its data, for the record store to open.
    pub fn storage_pools(&self) -> Vec<StoragePool> {
        self.pools
            .iter()
            .map(|p| match (p.engine, &p.owner_location) {
                (Engine::Postgres, Some(owner)) => {
                    StoragePool::postgres(p.name.clone(), &p.location, owner)
                }
                _ => StoragePool::sqlite(p.name.clone(), &self.data_dir.join(&p.location)),
            })
            .collect()
    }
}

#[cfg(test)]
// figment's Jail closures return its large error type by design.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;
    use tenantd_store::PoolLocation;

    fn load(overrides: &Overrides) -> Result<ValidConfig, ConfigError> {
        Config::load(None, overrides)
    }

    /// The pages of the manual that show configuration.
    const MANUAL: [&str; 4] = [
        include_str!("../../../docs/admission.md"),
        include_str!("../../../docs/governance.md"),
        include_str!("../../../docs/gateway.md"),
        include_str!("../../../docs/configuration.md"),
    ];

    /// The manual's example configuration that begins with `first_lines`.
    fn manual_example(first_lines: &str) -> &'static str {
        let page = MANUAL
            .iter()
            .find(|page| page.contains(first_lines))
            .expect("the example");
        let start = page.find(first_lines).expect("the example");
        let end = start + page[start..].find("```").expect("its end");
        &page[start..end]
    }

    /// Asserts that a config file `text` is refused, naming `setting`.
    fn assert_invalid(text: &str, setting: &str) {
        Jail::expect_with(|jail| {
            jail.create_file("tenantd.toml", text)?;
            match load(&Overrides::default()) {
                Err(ConfigError::Invalid { setting: s, .. }) => assert_eq!(s, setting, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
            Ok(())
        });
    }

    #[test]
    fn defaults_need_no_file_and_no_environment() {
        Jail::expect_with(|_| {
            let config = load(&Overrides::default()).unwrap();
            assert_eq!(config.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
            assert_eq!(config.data_dir, PathBuf::from("./tenantd-data"));
            assert_eq!(config.log_format, LogFormat::Human);
            Ok(())
        });
    }

    #[test]
    fn the_manual_admission_example_is_valid_configuration() {
        let example = manual_example(
            "[[plans]]
id = \"pro\"",
        );
        Jail::expect_with(|jail| {
            jail.create_file("tenantd.toml", example)?;
            let config = load(&Overrides::default()).unwrap();
            let pro = config.plan(&"pro".parse().unwrap()).unwrap();
            assert_eq!(pro.weight, 4);
            assert_eq!(pro.concurrency_cap(), Some(16));
            assert!(pro.class_rate(OpClass::Write).is_some());
            assert!(
                config.plan(&PlanId::default_plan()).is_some(),
                "default added"
            );
            assert_eq!(config.admission.classes.write.width, 2);
            assert_eq!(
                config.admission.classes.read.width, 1,
                "other classes keep defaults"
            );
            let redis = config.admission.redis.as_ref().unwrap();
            assert_eq!(redis.on_unavailable, FailMode::FailOpen);
            Ok(())
        });
    }

    #[test]
    fn the_manual_self_service_example_is_valid_configuration() {
        let example = manual_example(
            "[[plans]]
id = \"team\"",
        );
        Jail::expect_with(|jail| {
            jail.create_file("tenantd.toml", example)?;
            let config = load(&Overrides::default()).unwrap();
            let team = config.plan(&"team".parse().unwrap()).unwrap();
            assert!(team.self_service.rate_requests.is_some());
            assert_eq!(team.self_service.quotas.len(), 1);
            Ok(())
        });
    }

    #[test]
    fn a_typo_names_its_file_line_key_and_the_setting_meant() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "tenantd.toml",
                "log_level = \"info\"\nlisen = \"127.0.0.1:1\"\n\n[admission]\nseats = 8\n",
            )?;
            let error = load(&Overrides::default()).unwrap_err().to_string();
            assert!(
                error.contains("tenantd.toml:2: unknown setting `lisen`; did you mean `listen`?"),
                "{error}"
            );
            jail.create_file("tenantd.toml", "[admission]\nseets = 8\n")?;
            let error = load(&Overrides::default()).unwrap_err().to_string();
            assert!(
                error.contains(":2: unknown setting `admission.seets`; did you mean `seats`?"),
                "{error}"
            );
            jail.create_file("tenantd.toml", "")?;
            jail.set_env("TENANTD_LISTN", "127.0.0.1:1");
            let error = load(&Overrides::default()).unwrap_err().to_string();
            assert!(
                error.contains("environment variable TENANTD_LISTN: unknown setting `listn`; did you mean `listen`?"),
                "{error}"
            );
            Ok(())
        });
    }

    #[test]
    fn a_tenants_seat_ceiling_is_seats_or_a_percentage() {
        let parse = |text: &str| -> Result<SeatShare, String> {
            let value: SeatShareValue = serde_json::from_str(text).map_err(|e| e.to_string())?;
            SeatShare::try_from(value)
        };
        assert_eq!(parse("\"50%\"").unwrap().of(64), 32);
        assert_eq!(parse("\"25 %\"").unwrap().of(10), 2);
        assert_eq!(parse("12").unwrap().of(64), 12);
        assert_eq!(parse("\"12\"").unwrap().of(64), 12);
        assert_eq!(parse("100").unwrap().of(64), 64, "at most every seat");
        assert_eq!(parse("\"1%\"").unwrap().of(10), 1, "at least one seat");
        for bad in ["0", "\"0%\"", "\"101%\"", "\"half\""] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            AdmissionConfig::default().tenant_max_seats.of(64),
            32,
            "half by default"
        );
        Jail::expect_with(|jail| {
            jail.create_file("tenantd.toml", "[admission]\ntenant_max_seats = \"150%\"\n")?;
            let error = load(&Overrides::default()).unwrap_err().to_string();
            assert!(error.contains("150% is not a percentage"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn bad_plans_and_admission_settings_name_the_setting() {
        for (text, setting) in [
            ("[[plans]]\nid = \"a\"\nrate = { requests = 1, per = \"1s\", burst = 1 }\nweight = 0\n", "plans"),
            ("[admission]\nseats = 0\n", "admission"),
            ("[admission.classes.write]\nwidth = 100\ndeadline = \"1s\"\nestimate = \"1ms\"\n", "admission"),
            ("[admission.redis]\nurl = \"http://x\"\non_unavailable = \"fail_open\"\n", "admission"),
        ] {
            assert_invalid(text, setting);
        }
    }

    #[test]
    fn the_manual_gateway_example_is_valid_configuration() {
        let example = manual_example(
            "[[gateway.services]]
name = \"billing\"",
        );
        Jail::expect_with(|jail| {
            jail.create_file("tenantd.toml", example)?;
            let config = load(&Overrides::default()).unwrap();
            let billing = &config.gateway.services[0];
            assert_eq!(billing.upstreams.len(), 2);
            assert_eq!(
                String::from(billing.upstreams[1].clone()),
                "http://10.0.0.6:9000"
            );
            assert_eq!(billing.path_prefix, "/api");
            assert_eq!(billing.allowed_roles, [Role::Admin, Role::Developer]);
            assert_eq!(billing.seats, Some(32));
            assert_eq!(billing.breaker.min_calls, 5);
            assert_eq!(
                config.gateway.context.publish_ahead,
                Duration::from_secs(600)
            );
            assert_eq!(config.gateway.cache.max_entry_bytes, 1_048_576);
            Ok(())
        });
    }

    #[test]
    fn bad_gateway_settings_are_rejected_with_the_setting_named() {
        let service = |extra: &str| {
            format!("[[gateway.services]]\nname = \"billing\"\nupstreams = [\"http://127.0.0.1:9\"]\n{extra}")
        };
        let cases = [
            (service("path_prefix = \"api\"\n"), "gateway.services"),
            (service("path_prefix = \"/api/\"\n"), "gateway.services"),
            (
                service("allowed_roles = [\"operator\"]\n"),
                "gateway.services",
            ),
            (
                service("max_in_flight_per_tenant = 0\n"),
                "gateway.services",
            ),
            (service("request_timeout = \"30s\"\n"), "gateway.services"),
            (
                service("breaker = { failure_percent = 0 }\n"),
                "gateway.services",
            ),
            (
                format!("{}{}", service(""), service("")),
                "gateway.services",
            ),
            (
                "[gateway.context]\njwks_max_age = \"10m\"\npublish_ahead = \"5m\"\n".to_owned(),
                "gateway.context.publish_ahead",
            ),
        ];
        for (text, setting) in cases {
            assert_invalid(&text, setting);
        }
        // Upstream URLs are parsed when read: a path, https or no host is a parse error.
        for upstream in ["http://h:1/base", "https://h:1", "h:1", "http://h:1/?q=1"] {
            Jail::expect_with(|jail| {
                let text = format!(
                    "[[gateway.services]]\nname = \"billing\"\nupstreams = [\"{upstream}\"]\n"
                );
                jail.create_file("tenantd.toml", &text)?;
                let error = load(&Overrides::default()).unwrap_err();
                assert!(
                    matches!(error, ConfigError::Parse(_)),
                    "{upstream}: {error}"
                );
                assert!(
                    error.to_string().contains("upstream"),
                    "{upstream}: {error}"
                );
                Ok(())
            });
        }
    }

    #[test]
    fn each_layer_overrides_the_one_before() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "tenantd.toml",
                r#"
                    listen = "127.0.0.1:9001"
                    data_dir = "/from/file"
                    log_format = "json"
                    request_timeout = "5s"
                "#,
            )?;
            jail.set_env("TENANTD_DATA_DIR", "/from/env");
            jail.set_env("TENANTD_LOG_FORMAT", "human");
            let flags = Overrides {
                log_format: Some(LogFormat::Json),
                ..Overrides::default()
            };
            let config = load(&flags).unwrap();
            assert_eq!(config.listen.port(), 9001, "file over default");
            assert_eq!(
                config.request_timeout,
                Duration::from_secs(5),
                "file over default"
            );
            assert_eq!(config.data_dir, PathBuf::from("/from/env"), "env over file");
            assert_eq!(config.log_format, LogFormat::Json, "flag over env");
            Ok(())
        });
    }

    #[test]
    fn an_explicit_config_file_must_exist() {
        Jail::expect_with(|_| {
            let err =
                Config::load(Some(Path::new("nope.toml")), &Overrides::default()).unwrap_err();
            assert!(matches!(err, ConfigError::MissingFile(_)), "{err}");
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_rejected_with_the_setting_named() {
        let cases: [(&str, &str, &str); 7] = [
            ("TENANTD_LISTEN", "not-an-address", "listen"),
            ("TENANTD_REQUEST_TIMEOUT", "soon", "request_timeout"),
            ("TENANTD_REQUEST_TIMEOUT", "0s", "request_timeout"),
            ("TENANTD_SERVER_SECRET", "abc", "server_secret"),
            ("TENANTD_BOOTSTRAP_KEY", "password", "bootstrap_key"),
            ("TENANTD_MAX_BODY_BYTES", "10", "max_body_bytes"),
            ("TENANTD_LISTNE", "127.0.0.1:1", "listne"),
        ];
        for (var, value, named) in cases {
            Jail::expect_with(|jail| {
                jail.set_env(var, value);
                let err = load(&Overrides::default()).unwrap_err().to_string();
                assert!(err.to_lowercase().contains(named), "{var}={value}: {err}");
                Ok(())
            });
        }
    }

    #[test]
    fn pools_come_from_the_file_and_are_checked() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "tenantd.toml",
                r#"
                    default_region = "eu"
                    [[pools]]
                    name = "eu-1"
                    engine = "sqlite"
                    location = "pools/eu-1"
                    models = ["pooled"]
                    [[pools]]
                    name = "us-1"
                    engine = "sqlite"
                    location = "/srv/us-1"
                    region = "us"
                    models = ["pooled", "dedicated"]
                "#,
            )?;
            let config = load(&Overrides::default()).unwrap();
            let specs = config.pool_specs();
            assert_eq!(specs.len(), 2);
            assert_eq!(specs[0].region.as_str(), "eu", "the default region");
            assert_eq!(specs[1].region.as_str(), "us");
            let dirs: Vec<_> = config
                .storage_pools()
                .into_iter()
                .map(|p| match p.location {
                    PoolLocation::Sqlite { dir } => dir,
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(dirs[0], PathBuf::from("./tenantd-data/pools/eu-1"));
            assert_eq!(dirs[1], PathBuf::from("/srv/us-1"));
            Ok(())
        });
        let bad = [
            ("pools = []", "at least one"),
            ("[[pools]]\nname = \"a\"\nengine = \"sqlite\"\nlocation = \"a\"\nmodels = [\"schema\"]", "postgresql"),
            ("[[pools]]\nname = \"a\"\nengine = \"mysql\"\nlocation = \"a\"\nmodels = [\"pooled\"]", "mysql"),
            ("[[pools]]\nname = \"a\"\nengine = \"postgres\"\nlocation = \"postgres://app@db/t\"\nmodels = [\"pooled\"]", "owner_location"),
            ("[[pools]]\nname = \"a\"\nengine = \"postgres\"\nlocation = \"mysql://app:hunter2@db/t\"\nowner_location = \"postgres://o@db/t\"\nmodels = [\"pooled\"]", "location is not a postgresql url"),
            ("[[pools]]\nname = \"a\"\nengine = \"sqlite\"\nlocation = \"a\"\nowner_location = \"postgres://o@db/t\"\nmodels = [\"pooled\"]", "for postgresql pools only"),
        ];
        for (toml, named) in bad {
            Jail::expect_with(|jail| {
                jail.create_file("tenantd.toml", toml)?;
                let err = load(&Overrides::default()).unwrap_err().to_string();
                assert!(err.to_lowercase().contains(named), "{toml}: {err}");
                Ok(())
            });
        }
    }

    #[test]
    fn pool_urls_are_shown_without_their_passwords() {
        let pool = PoolConfig {
            name: PoolName::default_pool(),
            engine: Engine::Postgres,
            location: "postgres://app:hunter2@db:5432/t".into(),
            owner_location: Some("postgresql://owner:s3cret@db/t".into()),
            region: None,
            models: vec![Isolation::Pooled],
        };
        let shown = format!("{pool:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert!(shown.contains("postgres://app:***@db:5432/t"), "{shown}");
        assert_eq!(
            without_password("postgres://app@db/t"),
            "postgres://app@db/t"
        );
    }

    #[test]
    fn client_variables_are_not_server_settings() {
        Jail::expect_with(|jail| {
            jail.set_env("TENANTD_URL", "http://127.0.0.1:8080");
            jail.set_env("TENANTD_KEY", "tk_x");
            assert!(load(&Overrides::default()).is_ok());
            Ok(())
        });
    }
}
