//! The record store's conformance suite: every test runs against every
//! isolation model this build supports, on real SQLite databases.

// Helpers outside #[test] functions fail loudly too: a panic is the report.
#![allow(clippy::unwrap_used)]

mod cache;
mod conformance;
mod filters;
mod isolation;
mod moves;

use serde_json::Value;
use tenantd_core::testing::member;
use tenantd_core::{
    CollectionName, DataScope, Isolation, PlanId, RecordId, RegionId, Role, Tenant, TenantId,
    TenantScope,
};
use tenantd_store::cache::CacheLimits;
use tenantd_store::data::{BatchOp, BatchResult, Record};
use tenantd_store::{DataLimits, DataStore};
use time::macros::datetime;
use time::OffsetDateTime;

pub const NOW: OffsetDateTime = datetime!(2026-06-01 00:00 UTC);

/// The default pool, stored under `dir`.
pub fn one_pool(dir: &std::path::Path) -> Vec<(tenantd_core::PoolName, std::path::PathBuf)> {
    vec![(tenantd_core::PoolName::default_pool(), dir.to_owned())]
}

/// Every test runs with the record cache on, so that it is exercised too.
pub const CACHE: CacheLimits = CacheLimits {
    capacity_bytes: 1024 * 1024,
    tenant_share_percent: 50,
    ttl: std::time::Duration::from_secs(60),
};

/// The models a SQLite pool offers.
pub const MODELS: [Isolation; 2] = [Isolation::Pooled, Isolation::Dedicated];

#[derive(Debug)]
pub struct Fixture {
    _dir: tempfile::TempDir,
    pub store: DataStore,
}

pub async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let limits = DataLimits {
        max_record_bytes: 64 * 1024,
    };
    let store = DataStore::open(&one_pool(dir.path()), limits, CACHE)
        .await
        .unwrap();
    Fixture { _dir: dir, store }
}

/// A data scope for a developer of `tenant`, obtained the only way there
/// is: by verifying a real key.
pub fn scope(tenant: &str, isolation: Isolation) -> DataScope {
    scopes(tenant, isolation).0
}

/// Both scopes of a developer of `tenant`: its data, and its control plane.
pub fn scopes(tenant: &str, isolation: Isolation) -> (DataScope, TenantScope) {
    let tenant = Tenant {
        isolation,
        ..Tenant::new(
            TenantId::parse(tenant).unwrap(),
            tenant,
            PlanId::default_plan(),
            RegionId::default_region(),
            NOW,
        )
    };
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
