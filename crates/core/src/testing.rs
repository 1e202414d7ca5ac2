//! For other crates' tests and benchmarks (feature `test-support`): a
//! principal obtained the only way there is, by issuing a real key and
//! verifying it, so that tests hold scopes without a back door.

use rand::rngs::OsRng;
use time::OffsetDateTime;

use crate::identity::verify;
use crate::{
    ApiKeyToken, Isolation, KeyHasher, KeyOwner, KeyRecord, PlanId, PoolName, Principal, RegionId,
    Role, ServerSecret, Tenant, TenantId,
};

/// A verified key of `tenant` with `role`, as of `now`.
pub fn member(tenant: &Tenant, role: Role, now: OffsetDateTime) -> Principal {
    let hasher = KeyHasher::new(ServerSecret::generate(&mut OsRng));
    let token = ApiKeyToken::generate(&mut OsRng);
    let key = KeyRecord::issue(
        &token,
        KeyOwner::Tenant(tenant.id.clone()),
        role,
        "test",
        &hasher,
        now,
    );
    verify(&token, &key, Some(tenant), &hasher, now).expect("a freshly issued key verifies")
}

/// A new tenant `id` on the default plan and region whose data lives on
/// storage pool `pool` with `isolation`, created at `now`.
pub fn tenant_at(id: &str, pool: &str, isolation: Isolation, now: OffsetDateTime) -> Tenant {
    Tenant {
        isolation,
        pool: PoolName::parse(pool).expect("a valid pool name"),
        ..Tenant::new(
            TenantId::parse(id).expect("a valid tenant id"),
            id,
            PlanId::default_plan(),
            RegionId::default_region(),
            now,
        )
    }
}
