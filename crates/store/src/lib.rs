//! tenantd's storage: the control-plane catalog (tenants, API keys, audit
//! log, jobs) and the tenant-isolated record store, on embedded SQLite in WAL
//! mode with migrations compiled into the binary; and the PostgreSQL
//! foundations (row-level security schema and catalog check) that the record
//! store will run on next.
#![forbid(unsafe_code)]

mod audit;
pub mod cache;
mod catalog;
mod codec;
pub mod data;
pub mod jobs;
pub mod plans;
pub mod policy;
pub mod postgres;
pub mod signing_keys;
pub mod usage;

pub use audit::{state_digest, AuditEntry, NewAuditEntry, Verification};
pub use catalog::{Catalog, Owner};
pub use data::{DataError, DataLimits, DataStore, PoolLocation, StoragePool};

/// A storage failure. `Conflict` is a unique-key clash the caller can name;
/// everything else is the store being unreachable or broken, which the server
/// answers with 503 and logs.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a row with this key already exists")]
    Conflict,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Catalog(#[from] postgres::CatalogProblems),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
