//! Start-up: the data directory, the server secret, the store, and the
//! bootstrap operator key.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::rngs::OsRng;
use serde_json::json;
use tenantd_core::plan::Plan;
use tenantd_core::{
    ApiKeyToken, Clock, KeyHasher, KeyId, KeyOwner, KeyRecord, OperatorScope, Role, ServerSecret,
};
use tenantd_store::cache::CacheLimits;
use tenantd_store::plans::{NewPlanVersion, PlanError};
use tenantd_store::AuditAction;
use tenantd_store::{
    Catalog, CatalogLease, Connections, DataLimits, DataStore, NewAuditEntry, Owner, StoreError,
};

use crate::admit::{Admission, BodyRules};
use crate::config::{Config, ValidConfig};
use crate::gateway::Gateway;
use crate::identify::Identity;
use crate::state::{AppState, Inner};

const SECRET_FILE: &str = "server-secret";
/// Locked by the process that serves or maintains the data directory.
const LOCK_FILE: &str = "lock";
/// The catalog's file in the data directory.
pub const CATALOG_FILE: &str = "catalog.db";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("server secret file {path}: {reason}")]
    Secret { path: PathBuf, reason: String },
    #[error(
        "data directory {path} is in use by another tenantd process; one process serves a \
         SQLite data directory at a time (stop it first)"
    )]
    Locked { path: PathBuf },
    #[error(
        "the server secret ({found}) is not the one this catalog's API keys were made with \
         ({recorded}): no key would verify. Restore the data directory's server-secret file, or \
         set server_secret (TENANTD_SERVER_SECRET) to the secret every node of this catalog uses"
    )]
    SecretMismatch {
        /// The fingerprint of the secret this process was given.
        found: String,
        /// The fingerprint the catalog recorded.
        recorded: String,
    },
    #[error(
        "another tenantd node serves the catalog at {url}: without [admission.redis] each node \
         would count quotas and rate limits of its own, so one node serves a catalog at a time; \
         configure [admission.redis] on every node to run several"
    )]
    CatalogInUse { url: String },
    #[error("tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("gateway: {0}")]
    Gateway(#[from] crate::gateway::GatewayError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("admission: {0}")]
    Admission(#[from] crate::admit::limiter::Unavailable),
}

/// A started server, ready to `run`.
#[derive(Debug)]
pub struct Server {
    pub(crate) config: Config,
    pub(crate) state: AppState,
    bootstrap_token: Option<String>,
    /// Held while the server lives: the data directory's lock.
    pub(crate) lock: fs::File,
    /// Held while the server lives, on a PostgreSQL catalog: its lease.
    pub(crate) catalog_lease: Option<CatalogLease>,
    /// The catalog's change feed position before this node read its state:
    /// what it follows from, to hear of every change made since elsewhere.
    pub(crate) change_position: i64,
    /// The listener's TLS, read at start, when configured.
    pub(crate) tls: Option<Arc<crate::tls::Tls>>,
}

/// The catalog the configuration names, with its lease when on PostgreSQL:
/// the data directory's SQLite file, or `catalog_url`.
async fn open_catalog(
    config: &Config,
    node: &tenantd_core::NodeId,
) -> Result<(Catalog, Option<CatalogLease>), StartError> {
    let timeout = config.acquire_timeout.get();
    match &config.catalog_url {
        None => {
            let catalog = Catalog::open(&config.data_dir.join(CATALOG_FILE), timeout).await?;
            Ok((catalog, None))
        }
        // With Redis, quotas and rate limits are shared and any number of
        // nodes serve the catalog; without it each node would count its own,
        // so one node serves it at a time.
        Some(url) if config.admission.redis.is_some() => {
            let catalog = Catalog::open_postgres(url.as_str(), timeout).await?;
            Ok((catalog, None))
        }
        Some(url) => {
            let lease = CatalogLease::take(url.as_str(), node, timeout)
                .await?
                .ok_or_else(|| StartError::CatalogInUse {
                    url: format!("{url:?}"),
                })?;
            let catalog = Catalog::open_postgres(url.as_str(), timeout).await?;
            Ok((catalog, Some(lease)))
        }
    }
}

/// Creates the data directory if needed and takes its lock, which the
/// kernel releases when the process ends, however it ends.
fn lock_data_dir(data_dir: &Path) -> Result<fs::File, StartError> {
    let fail = |source| StartError::DataDir {
        path: data_dir.to_owned(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(fail)?;
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(data_dir.join(LOCK_FILE))
        .map_err(fail)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(StartError::Locked {
            path: data_dir.to_owned(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(fail(e)),
    }
}

/// Creates a new operator key on the data directory of a stopped server,
/// audited as `key.recover`, and returns its token to be shown once: the
/// way back in for an operator who lost every operator key but holds the
/// data directory. Refused while a server holds the directory.
pub async fn recover_operator_key(
    config: &Config,
    clock: &dyn Clock,
) -> Result<(KeyId, String), StartError> {
    let data_dir = &config.data_dir;
    let _lock = lock_data_dir(data_dir)?;
    let secret_file = data_dir.join(SECRET_FILE);
    if config.server_secret.is_none() && !secret_file.exists() {
        return Err(StartError::Secret {
            path: secret_file,
            reason: "missing: this is not the data directory of a server that has started".into(),
        });
    }
    let secret = match &config.server_secret {
        Some(secret) => secret.clone(),
        None => load_or_create_secret(&secret_file, data_dir.join(CATALOG_FILE).exists())?,
    };
    let (catalog, _lease) =
        open_catalog(config, &tenantd_core::NodeId::generate(&mut OsRng)).await?;
    let hasher = KeyHasher::new(secret);
    check_secret(&catalog, &hasher, clock.now()).await?;
    let token = ApiKeyToken::generate(&mut OsRng);
    let issued = OperatorKey {
        name: "recovered",
        action: AuditAction::KeyRecover,
        details: json!({ "source": "data directory" }),
    };
    let key = issued
        .insert(&catalog, &hasher, &token, clock.now())
        .await?;
    catalog.close().await;
    Ok((key, token.expose()))
}

/// Refuses a server secret other than the one the catalog's keys were made
/// with, by the fingerprint the catalog recorded on its first start.
async fn check_secret(
    catalog: &Catalog,
    hasher: &KeyHasher,
    now: time::OffsetDateTime,
) -> Result<(), StartError> {
    let found = hasher.fingerprint();
    let recorded = catalog.secret_fingerprint(&found, now).await?;
    if recorded == found {
        Ok(())
    } else {
        Err(StartError::SecretMismatch { found, recorded })
    }
}

impl Server {
    /// Opens the data directory and the store, and creates the first operator
    /// key if the store has never had one.
    pub async fn start(config: ValidConfig, clock: Arc<dyn Clock>) -> Result<Self, StartError> {
        let config = config.into_inner();
        // Every TLS client tenantd makes (Redis's among them, which asks
        // for the process's provider) uses ring, whatever else a dependency
        // enables. Installed once per process; a second start finds it.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Read first: a certificate that cannot be used stops the start
        // before anything is made.
        let tls = config.tls.as_ref().map(crate::tls::Tls::load).transpose()?;
        let data_dir = &config.data_dir;
        let lock = lock_data_dir(data_dir)?;
        let secret = match &config.server_secret {
            Some(secret) => secret.clone(),
            None => load_or_create_secret(
                &data_dir.join(SECRET_FILE),
                data_dir.join(CATALOG_FILE).exists(),
            )?,
        };
        let node_id = tenantd_core::NodeId::generate(&mut rand::rngs::OsRng);
        let (catalog, catalog_lease) = open_catalog(&config, &node_id).await?;
        let hasher = KeyHasher::new(secret);
        check_secret(&catalog, &hasher, clock.now()).await?;
        // Read before anything is loaded: a change committed while this node
        // loads is then heard again, never missed.
        let change_position = catalog.change_position().await?;
        let limits = DataLimits {
            max_record_bytes: config.max_record_bytes,
        };
        // A node's record cache learns of the writes it makes only: where
        // other nodes write the same records, it would serve their old
        // versions for up to its TTL, so it is off.
        let record_cache_bytes = match &config.catalog_url {
            Some(_) if config.admission.redis.is_some() => {
                if config.record_cache_bytes > 0 {
                    tracing::info!("the record cache is off: other nodes serve this catalog too, and their writes would not reach it");
                }
                0
            }
            _ => config.record_cache_bytes,
        };
        let cache = CacheLimits {
            capacity_bytes: record_cache_bytes,
            tenant_share_percent: config.record_cache_tenant_share,
            ttl: config.record_cache_ttl.get(),
        };
        let connections = Connections {
            acquire_timeout: config.acquire_timeout.get(),
        };
        let data = DataStore::open(&config.storage_pools(), limits, connections, cache).await?;
        let bootstrap_token =
            bootstrap(&catalog, &hasher, &*clock, config.bootstrap_key.clone()).await?;
        let body = BodyRules {
            max_bytes: u64::try_from(config.max_body_bytes).unwrap_or(u64::MAX),
            read_timeout: config
                .body_read_timeout
                .get()
                .min(config.request_timeout.get()),
        };
        let mut dependencies = vec![catalog.dependency().clone()];
        dependencies.extend(data.dependencies());
        let admission = Admission::new(
            &config.admission,
            body,
            data.clone(),
            dependencies,
            clock.clone(),
        )?;
        seed_plans(&catalog, &config.plans, &*clock).await?;
        for stored in catalog.all_plan_versions().await? {
            admission.add_plan_version(stored.version, stored.plan);
        }
        let add_ons = catalog
            .all_add_ons(&tenantd_core::OperatorScope::server(), clock.now())
            .await?;
        admission.ledgers.load(catalog.ledgers().await?, add_ons);
        for (tenant, overrides) in catalog.overrides_in_effect().await? {
            admission.set_overrides(&tenant, Some(overrides));
        }
        for plan in catalog.plans_in_use().await? {
            if !admission.has_plan(&plan, None) {
                tracing::warn!(plan = %plan, "tenants are on a plan the catalog does not have; they get the default plan");
            }
        }
        let identity = Identity::new(
            catalog.clone(),
            hasher,
            clock.clone(),
            config.identity_cache_ttl.get(),
        );
        let gateway =
            Arc::new(Gateway::new(&config.gateway, &config.admission, &catalog, &clock).await?);
        let admission = Arc::new(admission);
        let node = tenantd_api::NodeInfo {
            id: node_id,
            name: config.node_name(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: clock.now(),
        };
        let state = AppState::new(Inner {
            catalog,
            data,
            changes: crate::app::Changes::new(identity.clone(), admission.clone(), gateway.clone()),
            identity,
            admission,
            gateway,
            clock,
            default_region: config.default_region.clone(),
            pools: config.pool_specs(),
            node,
            draining: std::sync::atomic::AtomicBool::new(false),
        });
        Ok(Self {
            config,
            state,
            bootstrap_token,
            lock,
            catalog_lease,
            change_position,
            tls,
        })
    }

    /// The operator key generated by this start, if it generated one. It is
    /// not stored anywhere in clear: print it once and forget it.
    pub fn take_bootstrap_token(&mut self) -> Option<String> {
        self.bootstrap_token.take()
    }
}

/// Writes each configured plan the catalog does not have yet as its first
/// version. After that the catalog's versions rule: a configured plan that
/// differs from its latest version is reported, not applied, so that a
/// change made through the API is never undone by a restart.
async fn seed_plans(
    catalog: &Catalog,
    plans: &[Plan],
    clock: &dyn Clock,
) -> Result<(), StartError> {
    let stored = catalog.all_plan_versions().await?;
    for plan in plans {
        let latest = stored.iter().rfind(|v| v.plan.id == plan.id);
        match latest {
            Some(v) if v.plan != *plan => tracing::warn!(
                plan = %plan.id,
                version = v.version,
                "the configured plan differs from its latest version in the catalog, which applies; change plans through the API"
            ),
            Some(_) => {}
            None => {
                let now = clock.now();
                let audit = NewAuditEntry {
                    tenant: None,
                    at: now,
                    actor: None,
                    action: AuditAction::PlanCreate,
                    target: plan.id.to_string(),
                    details: json!({ "source": "configuration" }),
                    request_id: None,
                    before: None,
                    after: None,
                };
                let new = NewPlanVersion {
                    plan,
                    after: None,
                    diff: Vec::new(),
                    reason: "from the configuration",
                    actor: None,
                    at: now,
                };
                match catalog.add_plan_version(&new, &audit).await {
                    // Another node starting at the same moment seeded it.
                    Ok(_) | Err(PlanError::Exists(_)) => {}
                    Err(PlanError::Store(e)) => return Err(StartError::Store(e)),
                    Err(other) => {
                        return Err(StartError::Store(StoreError::Corrupt(other.to_string())))
                    }
                }
            }
        }
    }
    Ok(())
}

/// Reads the server secret, or generates it on first start. The file is
/// created with mode 0600 and refused if anyone else may read it.
fn load_or_create_secret(path: &Path, catalog_exists: bool) -> Result<ServerSecret, StartError> {
    let fail = |reason: String| StartError::Secret {
        path: path.to_owned(),
        reason,
    };
    match fs::read_to_string(path) {
        Ok(text) => {
            let mode = fs::metadata(path)
                .map_err(|e| fail(e.to_string()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(fail(format!(
                    "permissions are {:o}; run `chmod 600` on it",
                    mode & 0o777
                )));
            }
            ServerSecret::from_hex(&text).map_err(|e| fail(e.to_string()))
        }
        // A catalog beside a missing secret has keys made with the lost one:
        // a new secret would silently fail every one of them.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && catalog_exists => Err(fail(
            "missing, but the catalog beside it exists and its keys were made with it: restore \
             the file, or set server_secret (TENANTD_SERVER_SECRET)"
                .into(),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = ServerSecret::generate(&mut OsRng);
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| fail(e.to_string()))?;
            file.write_all(secret.to_hex().as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| fail(e.to_string()))?;
            Ok(secret)
        }
        Err(e) => Err(fail(e.to_string())),
    }
}

/// An operator key made outside the API (at first start, or offline), with
/// the audit entry that says how.
struct OperatorKey {
    name: &'static str,
    action: AuditAction,
    details: serde_json::Value,
}

impl OperatorKey {
    /// The key record of `token` and the audit entry that says how it came.
    fn made(
        self,
        hasher: &KeyHasher,
        token: &ApiKeyToken,
        now: time::OffsetDateTime,
    ) -> (KeyRecord, NewAuditEntry) {
        let key = KeyRecord::issue(
            token,
            KeyOwner::Platform,
            Role::Operator,
            self.name,
            hasher,
            now,
        );
        let audit = NewAuditEntry {
            tenant: None,
            at: now,
            actor: None,
            action: self.action,
            target: key.id.to_string(),
            details: self.details,
            request_id: None,
            before: None,
            after: None,
        };
        (key, audit)
    }

    /// Stores the key of `token` and its audit entry; returns its id.
    async fn insert(
        self,
        catalog: &Catalog,
        hasher: &KeyHasher,
        token: &ApiKeyToken,
        now: time::OffsetDateTime,
    ) -> Result<KeyId, StartError> {
        let (key, audit) = self.made(hasher, token, now);
        catalog
            .insert_key(Owner::Platform(&OperatorScope::server()), &key, &audit)
            .await?;
        Ok(key.id)
    }
}

/// Creates the first operator key on a store that has never had one: the
/// configured key, or a fresh one whose token is returned to be shown once.
async fn bootstrap(
    catalog: &Catalog,
    hasher: &KeyHasher,
    clock: &dyn Clock,
    configured: Option<ApiKeyToken>,
) -> Result<Option<String>, StartError> {
    let generated = configured.is_none();
    let token = configured.unwrap_or_else(|| ApiKeyToken::generate(&mut OsRng));
    let issued = OperatorKey {
        name: "bootstrap",
        action: AuditAction::KeyBootstrap,
        details: json!({ "generated": generated }),
    };
    let (key, audit) = issued.made(hasher, &token, clock.now());
    // Checked and made in one write: of nodes starting on an empty catalog
    // at once, one makes the key.
    if !catalog
        .insert_first_operator_key(&OperatorScope::server(), &key, &audit)
        .await?
    {
        if !generated {
            tracing::info!("the store already has operator keys; bootstrap_key is ignored");
        }
        return Ok(None);
    }
    tracing::info!(key = %key.id, "created the bootstrap operator key");
    Ok(generated.then(|| token.expose()))
}
