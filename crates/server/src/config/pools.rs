//! Storage pools: where tenants' data lives, on which engine, in which region.

use serde::{Deserialize, Serialize};
use tenantd_core::{Isolation, PoolName, RegionId};

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
pub(super) fn without_password(url: &str) -> String {
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

/// Checks the pools together: at least one, distinct names, each usable.
pub(super) fn check(pools: &[PoolConfig]) -> Result<(), String> {
    if pools.is_empty() {
        return Err("at least one storage pool is needed".into());
    }
    for (i, pool) in pools.iter().enumerate() {
        if pools[..i].iter().any(|p| p.name == pool.name) {
            return Err(format!("two pools are named {}", pool.name));
        }
        if pool.models.is_empty() {
            return Err(format!("pool {} offers no isolation model", pool.name));
        }
        pool.check()
            .map_err(|reason| format!("pool {}: {reason}", pool.name))?;
    }
    Ok(())
}
