//! The record store's conformance suite: every test runs against every
//! engine and isolation model, on real SQLite databases and a real
//! PostgreSQL server that the test binary starts and throws away.

// Helpers outside #[test] functions fail loudly too: a panic is the report.
#![allow(clippy::unwrap_used)]

mod cache;
mod conformance;
mod filters;
mod isolation;
mod moves;

use serde_json::Value;
use tenantd_core::share::Percent;
use tenantd_core::testing::{member, tenant_at};

use sqlx::{Connection, PgConnection};
use tenantd_core::{CollectionName, DataScope, Isolation, PoolName, RecordId, Role, TenantScope};
use tenantd_store::cache::CacheLimits;
use tenantd_store::data::{BatchOp, BatchResult, Record};
use tenantd_store::{Connections, DataLimits, DataStore, StoragePool};
use tenantd_testkit::Postgres;
use time::macros::datetime;
use time::OffsetDateTime;

pub const NOW: OffsetDateTime = datetime!(2026-06-01 00:00 UTC);

/// Where a test places a tenant: a storage pool of the fixture and a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    pub pool: &'static str,
    pub isolation: Isolation,
}

/// The fixture's SQLite pool (the embedded default) and PostgreSQL pool.
pub const SQLITE: &str = "default";
pub const POSTGRES: &str = "pg";

/// Every engine and model: the conformance suite runs on each.
pub const MODELS: [At; 5] = [
    At {
        pool: SQLITE,
        isolation: Isolation::Pooled,
    },
    At {
        pool: SQLITE,
        isolation: Isolation::Dedicated,
    },
    At {
        pool: POSTGRES,
        isolation: Isolation::Pooled,
    },
    At {
        pool: POSTGRES,
        isolation: Isolation::Schema,
    },
    At {
        pool: POSTGRES,
        isolation: Isolation::Dedicated,
    },
];

/// Every test runs with the record cache on, so that it is exercised too.
pub const CACHE: CacheLimits = CacheLimits {
    capacity_bytes: 1024 * 1024,
    tenant_share_percent: Percent::of_const(50),
    ttl: std::time::Duration::from_secs(60),
};

pub const LIMITS: DataLimits = DataLimits {
    max_record_bytes: 64 * 1024,
};

/// A store over a fresh SQLite directory and a fresh PostgreSQL database
/// (with the tenants' own databases beside it) on the test binary's shared
/// server, dropped with the fixture.
#[derive(Debug)]
pub struct Fixture {
    _dir: tempfile::TempDir,
    database: String,
    pub store: DataStore,
}

/// The pools of a fixture: SQLite under `dir`, PostgreSQL on `database`.
pub fn pools(dir: &std::path::Path, database: &str) -> Vec<StoragePool> {
    let server = Postgres::shared();
    vec![
        StoragePool::sqlite(PoolName::parse(SQLITE).unwrap(), dir),
        StoragePool::postgres(
            PoolName::parse(POSTGRES).unwrap(),
            &server.app_url(database),
            &server.owner_url(database),
        ),
    ]
}

pub async fn fixture() -> Fixture {
    fixture_with(CACHE).await
}

pub async fn fixture_with(cache: CacheLimits) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let database = Postgres::shared().tenantd_database().await;
    let store = DataStore::open(
        &pools(dir.path(), &database),
        LIMITS,
        Connections::default(),
        cache,
    )
    .await
    .unwrap();
    Fixture {
        _dir: dir,
        database,
        store,
    }
}

impl Fixture {
    /// The fixture's PostgreSQL database.
    pub fn database(&self) -> &str {
        &self.database
    }
}

impl Drop for Fixture {
    /// Drops the fixture's databases (its own and its tenants'), so that a
    /// long suite does not fill the disk; on a thread of its own, as the
    /// test's runtime cannot be blocked on from here.
    fn drop(&mut self) {
        let prefix = self.database.clone();
        let url = Postgres::shared().admin_url();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&url).await.unwrap();
                let names: Vec<String> = sqlx::query_scalar(
                    "SELECT datname::text FROM pg_database WHERE datname = $1 OR datname LIKE $1 || '\\_%'",
                )
                .bind(&prefix)
                .fetch_all(&mut admin)
                .await
                .unwrap();
                for name in names {
                    sqlx::query(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
                        .execute(&mut admin)
                        .await
                        .unwrap();
                }
            });
        })
        .join();
        // Not worth a second panic while a failing test unwinds.
        if dropped.is_err() && !std::thread::panicking() {
            panic!("dropping the fixture's databases failed");
        }
    }
}

/// A data scope for a developer of `tenant`, obtained the only way there
/// is: by verifying a real key.
pub fn scope(tenant: &str, at: At) -> DataScope {
    scopes(tenant, at).0
}

/// Both scopes of a developer of `tenant`: its data, and its control plane.
pub fn scopes(tenant: &str, at: At) -> (DataScope, TenantScope) {
    let tenant = tenant_at(tenant, at.pool, at.isolation, NOW);
    let principal = member(&tenant, Role::Developer, NOW);
    let data = principal.data_scope(Role::Developer).unwrap();
    let control = principal.scope_for(&tenant.id, Role::Reader).unwrap();
    (data, control)
}

pub fn coll(name: &str) -> CollectionName {
    CollectionName::parse(name).unwrap()
}

pub fn rid(id: &str) -> RecordId {
    RecordId::parse(id).unwrap()
}

impl Fixture {
    pub async fn create(
        &self,
        scope: &DataScope,
        collection: &str,
        id: &str,
        body: Value,
    ) -> Record {
        let ops = vec![BatchOp::Create { id: rid(id), body }];
        match self
            .store
            .write(scope, &coll(collection), ops, NOW)
            .await
            .unwrap()
            .remove(0)
        {
            BatchResult::Written(record) => record,
            other => panic!("{other:?}"),
        }
    }
}
