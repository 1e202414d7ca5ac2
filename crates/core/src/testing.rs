//! For other crates' tests and benchmarks (feature `test-support`): a
//! principal obtained the only way there is, by issuing a real key and
//! verifying it, so that tests hold scopes without a back door.

use rand::rngs::OsRng;
use time::OffsetDateTime;

use crate::identity::verify;
use crate::{ApiKeyToken, KeyHasher, KeyOwner, KeyRecord, Principal, Role, ServerSecret, Tenant};

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
