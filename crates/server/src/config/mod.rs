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
use tenantd_core::placement::PoolSpec;
use tenantd_core::plan::Plan;
use tenantd_core::share::Percent;
use tenantd_core::{ApiKeyToken, Isolation, PlanId, PoolName, RegionId, ServerSecret};
use tenantd_store::StoragePool;

mod admission;
mod client_tls;
mod errors;
mod gateway;
mod listener;
mod pools;
#[cfg(test)]
mod tests;
mod values;

pub use admission::*;
pub use client_tls::ClientTls;
use errors::explain;
pub use errors::ConfigError;
pub use gateway::*;
pub use listener::*;
pub use pools::*;
pub use values::{CatalogUrl, NonZeroDuration};

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
    /// This node's name in `/readyz` and its logs; the host's name when unset.
    pub node_name: Option<String>,
    /// The catalog (tenants, keys, plans, policies, usage, audit log) on
    /// PostgreSQL instead of the data directory's SQLite file. Storage pools
    /// must then be PostgreSQL too.
    pub catalog_url: Option<CatalogUrl>,
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
    pub body_read_timeout: NonZeroDuration,
    /// Largest stored record, in bytes of compact JSON.
    pub max_record_bytes: usize,
    /// Where tenants' data may live. Each tenant is placed on a pool of its
    /// region that offers its isolation model.
    pub pools: Vec<PoolConfig>,
    /// Longest a request waits for a connection to the catalog or a storage
    /// pool (or for a lock on a PostgreSQL table) before it gets 503
    /// `store_unavailable`; well below the classes' deadlines, so that a
    /// database that cannot serve is answered fast.
    pub acquire_timeout: NonZeroDuration,
    /// Bytes of records kept in the in-process read cache; 0 turns it off.
    pub record_cache_bytes: u64,
    /// Largest share of the record cache one tenant may hold, in percent.
    pub record_cache_tenant_share: Percent,
    /// How long a cached record may be served; bounds staleness from writes
    /// made by another process.
    pub record_cache_ttl: NonZeroDuration,
    /// Largest accepted total size of request headers.
    pub max_header_bytes: usize,
    /// Time allowed for a whole request, body included.
    pub request_timeout: NonZeroDuration,
    /// Time a client has to send its request headers before the connection is closed.
    pub header_read_timeout: NonZeroDuration,
    /// Time in-flight requests get to finish after a shutdown signal.
    pub shutdown_timeout: NonZeroDuration,
    /// After a shutdown signal, how long the node still serves while
    /// `/readyz` answers 503 `draining`, so that a load balancer polling it
    /// sends new requests elsewhere before the listener closes. 0 closes
    /// the listener at once (one node, nothing in front of it).
    #[serde(with = "humantime_serde")]
    pub shutdown_notice: Duration,
    /// How long a soft-deleted tenant is kept before it is purged.
    #[serde(with = "humantime_serde")]
    pub purge_after: Duration,
    /// How often the purge sweep runs.
    pub purge_interval: NonZeroDuration,
    /// How often keys' last-used times are written to the store.
    pub last_used_flush_interval: NonZeroDuration,
    /// How long a key or tenant looked up by the identity stage is cached.
    /// Changes made through this server take effect at once; this bounds how
    /// long a change made elsewhere (another node, a restore) may go unseen.
    pub identity_cache_ttl: NonZeroDuration,
    /// The plans tenants may be on. A plan named `default` is always there:
    /// the built-in one unless this list defines it.
    pub plans: Vec<Plan>,
    pub admission: AdmissionConfig,
    pub gateway: GatewayConfig,
    /// TLS on the listener (or on a listener of its own); unset, plain HTTP.
    pub tls: Option<TlsConfig>,
    pub http2: Http2Config,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./tenantd-data"),
            node_name: None,
            catalog_url: None,
            log_format: LogFormat::Human,
            log_level: "info".into(),
            server_secret: None,
            bootstrap_key: None,
            default_region: RegionId::default_region(),
            max_body_bytes: 1024 * 1024,
            body_read_timeout: NonZeroDuration::from_secs(10),
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
            acquire_timeout: NonZeroDuration::new(
                tenantd_store::Connections::default().acquire_timeout,
            )
            .expect("the store's default acquire timeout is above zero"),
            record_cache_bytes: 64 * 1024 * 1024,
            record_cache_tenant_share: Percent::of_const(10),
            record_cache_ttl: NonZeroDuration::from_secs(60),
            request_timeout: NonZeroDuration::from_secs(30),
            header_read_timeout: NonZeroDuration::from_secs(10),
            shutdown_timeout: NonZeroDuration::from_secs(30),
            shutdown_notice: Duration::ZERO,
            purge_after: Duration::from_secs(30 * 24 * 3600),
            purge_interval: NonZeroDuration::from_secs(3600),
            last_used_flush_interval: NonZeroDuration::from_secs(10),
            identity_cache_ttl: NonZeroDuration::from_secs(30),
            plans: vec![Plan::default_plan()],
            admission: AdmissionConfig::default(),
            gateway: GatewayConfig::default(),
            tls: None,
            http2: Http2Config::default(),
        }
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
        if let Some(name) = &self.node_name {
            let fits = !name.trim().is_empty()
                && name.chars().count() <= 100
                && !name.chars().any(char::is_control);
            if !fits {
                return Err(invalid(
                    "node_name",
                    "1 to 100 characters on one line, not only spaces",
                ));
            }
        }
        pools::check(&self.pools).map_err(|reason| invalid("pools", &reason))?;
        if let Some(tls) = &self.tls {
            tls.check()
                .map_err(|(setting, reason)| invalid(setting, &reason))?;
            if tls.listen == Some(self.listen) {
                return Err(invalid(
                    "tls.listen",
                    "is the plain listener's address too: leave it unset to serve TLS on `listen`",
                ));
            }
        }
        if self.http2.max_concurrent_streams == 0 {
            return Err(invalid(
                "http2.max_concurrent_streams",
                "must be at least 1",
            ));
        }
        if self.catalog_url.is_some() && self.server_secret.is_none() {
            return Err(invalid(
                "server_secret",
                "catalog_url needs server_secret (TENANTD_SERVER_SECRET), 64 hex characters: \
                 API keys are hashed with it, so it is configured, not generated into one \
                 node's data directory",
            ));
        }
        if self.catalog_url.is_some() {
            if let Some(pool) = self.pools.iter().find(|p| p.engine == Engine::Sqlite) {
                return Err(invalid(
                    "pools",
                    &format!(
                        "pool {} is SQLite, a file in this node's data directory; with \
                         catalog_url every pool must be PostgreSQL (engine = \"postgres\"), \
                         so that tenants' data does not depend on one node",
                        pool.name
                    ),
                ));
            }
        }
        if !(1024..=1024 * 1024).contains(&self.max_header_bytes) {
            return Err(invalid(
                "max_header_bytes",
                "must be between 1 KiB and 1 MiB",
            ));
        }
        self.gateway
            .check(&self.admission.classes, self.request_timeout.get())
            .map_err(|(setting, reason)| invalid(setting, &reason))?;
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
        .unwrap_or(self.request_timeout.get());
        if self.acquire_timeout.get() >= shortest_deadline {
            return Err(invalid(
                "acquire_timeout",
                "must be shorter than every class's deadline, so that a store that cannot serve is answered store_unavailable",
            ));
        }
        Ok(())
    }
}

impl Config {
    /// This node's name: `node_name`, or the host's name (Linux's
    /// `/proc/sys/kernel/hostname`), or `tenantd` when neither is known.
    pub fn node_name(&self) -> String {
        self.node_name.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|name| name.trim().to_owned())
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| "tenantd".to_owned())
        })
    }

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
