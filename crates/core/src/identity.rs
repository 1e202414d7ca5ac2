//! Turning a presented key into a verified `Principal`, and a principal into a
//! `TenantScope`.
//!
//! Invariant: `verify` is the only constructor of `Principal`, and
//! `Principal::scope_for` and `Principal::data_scope` the only constructors
//! of `TenantScope` and `DataScope`. Code that holds a scope therefore holds
//! proof that a real key, checked against its stored hash, may act on that
//! tenant.

use time::OffsetDateTime;

use crate::api_key::{ApiKeyToken, KeyHasher};
use crate::ids::{KeyId, PlanId, PoolName, TenantId};
use crate::key::{KeyOwner, KeyRecord, KeyState};
use crate::quota::BillingDay;
use crate::record::Isolation;
use crate::role::Role;
use crate::tenant::{Tenant, TenantStatus};

/// Why a presented key does not identify anyone. Variants map one-to-one to
/// error codes; `InvalidKey` covers both an unknown id and a wrong secret so
/// that the two cannot be told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdentifyError {
    #[error("the API key is not valid")]
    InvalidKey,
    #[error("the API key has been revoked")]
    Revoked,
    #[error("the API key has expired")]
    Expired,
    #[error("the tenant is suspended")]
    TenantSuspended,
    #[error("the tenant has been deleted")]
    TenantDeleted,
}

/// Who is calling: a verified key with its role, and its tenant unless it is
/// an operator key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    key_id: KeyId,
    role: Role,
    tenant: Option<Membership>,
}

/// The tenant a key belongs to, as it was when the key was verified.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Membership {
    tenant: TenantId,
    plan: PlanId,
    plan_version: Option<i64>,
    billing_day: BillingDay,
    isolation: Isolation,
    pool: PoolName,
}

/// Proof that the caller may act on one tenant's resources. Every store call
/// for tenant data takes one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantScope {
    tenant: TenantId,
}

impl TenantScope {
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }
}

/// Proof that the caller acts for the platform, for the store calls that
/// reach across tenants or destroy one (a purge, start-up's listing of every
/// tenant's add-ons): an operator's (`Principal::operator_scope`), or the
/// server's own (`OperatorScope::server`, for start-up and sweeps, never for
/// a request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorScope {
    _proof: (),
}

impl OperatorScope {
    /// The server acting by itself: start-up and its background sweeps.
    pub fn server() -> Self {
        Self { _proof: () }
    }

    /// The platform acting on one tenant by itself: a job it resumes after
    /// the node that ran it stopped.
    pub fn tenant_scope(&self, tenant: &TenantId) -> TenantScope {
        TenantScope {
            tenant: tenant.clone(),
        }
    }
}

/// Proof that the caller may use one tenant's data, and where that data
/// lives. Only members of the tenant get one: operators manage tenants, they
/// do not read their records.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DataScope {
    tenant: TenantId,
    isolation: Isolation,
    pool: PoolName,
}

impl DataScope {
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// The storage pool holding the tenant's data.
    pub fn pool(&self) -> &PoolName {
        &self.pool
    }
}

/// Checks a presented token against its stored record and owning tenant.
///
/// The secret is checked first, so that nobody without it learns whether the
/// key exists, is revoked or has expired. `tenant` must be the record's owner
/// (`None` for platform keys); a tenant key whose tenant row is gone is
/// treated as deleted.
pub fn verify(
    token: &ApiKeyToken,
    record: &KeyRecord,
    tenant: Option<&Tenant>,
    hasher: &KeyHasher,
    now: OffsetDateTime,
) -> Result<Principal, IdentifyError> {
    if token.id != record.id || !hasher.verify(token, &record.hash) {
        return Err(IdentifyError::InvalidKey);
    }
    match record.state(now) {
        KeyState::Active => {}
        KeyState::Revoked => return Err(IdentifyError::Revoked),
        KeyState::Expired => return Err(IdentifyError::Expired),
    }
    let tenant = match &record.owner {
        KeyOwner::Platform => None,
        KeyOwner::Tenant(owner) => {
            let tenant = tenant
                .filter(|t| &t.id == owner)
                .ok_or(IdentifyError::TenantDeleted)?;
            match tenant.status {
                TenantStatus::Active => {}
                TenantStatus::Suspended => return Err(IdentifyError::TenantSuspended),
                TenantStatus::Deleted => return Err(IdentifyError::TenantDeleted),
            }
            Some(Membership {
                tenant: tenant.id.clone(),
                plan: tenant.plan.clone(),
                plan_version: tenant.plan_version,
                billing_day: tenant.billing_day,
                isolation: tenant.isolation,
                pool: tenant.pool.clone(),
            })
        }
    };
    Ok(Principal {
        key_id: record.id.clone(),
        role: record.role,
        tenant,
    })
}

impl Principal {
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn tenant(&self) -> Option<&TenantId> {
        self.tenant.as_ref().map(|m| &m.tenant)
    }

    pub fn plan(&self) -> Option<&PlanId> {
        self.tenant.as_ref().map(|m| &m.plan)
    }

    /// The plan version the tenant is pinned to, if any.
    pub fn plan_version(&self) -> Option<i64> {
        self.tenant.as_ref().and_then(|m| m.plan_version)
    }

    /// The day the tenant's monthly quotas reset; `None` for platform keys.
    pub fn billing_day(&self) -> Option<BillingDay> {
        self.tenant.as_ref().map(|m| m.billing_day)
    }

    pub fn is_operator(&self) -> bool {
        self.role == Role::Operator
    }

    /// The platform scope, for an operator only.
    pub fn operator_scope(&self) -> Option<OperatorScope> {
        self.is_operator().then_some(OperatorScope { _proof: () })
    }

    /// A scope on `tenant` if this principal may manage it as at least
    /// `required`: a member of that tenant with enough rank, or an operator.
    /// Anything else gets `None`, which routes answer with 404 so that other
    /// tenants' existence is never revealed.
    pub fn scope_for(&self, tenant: &TenantId, required: Role) -> Option<TenantScope> {
        let allowed = match &self.tenant {
            None => self.is_operator(),
            Some(m) => &m.tenant == tenant && self.role.satisfies_tenant(required),
        };
        allowed.then(|| TenantScope {
            tenant: tenant.clone(),
        })
    }

    /// A scope on this key's own tenant's data if its role is at least
    /// `required`; `None` for operators and for lower roles.
    pub fn data_scope(&self, required: Role) -> Option<DataScope> {
        let m = self.tenant.as_ref()?;
        self.role.satisfies_tenant(required).then(|| DataScope {
            tenant: m.tenant.clone(),
            isolation: m.isolation,
            pool: m.pool.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_key::ServerSecret;
    use crate::ids::RegionId;
    use rand::rngs::OsRng;
    use time::macros::datetime;
    use time::Duration;

    const NOW: OffsetDateTime = datetime!(2026-03-01 12:00 UTC);

    struct Fixture {
        hasher: KeyHasher,
        token: ApiKeyToken,
        record: KeyRecord,
        tenant: Tenant,
    }

    fn fixture(role: Role) -> Fixture {
        let hasher = KeyHasher::new(ServerSecret::generate(&mut OsRng));
        let token = ApiKeyToken::generate(&mut OsRng);
        let tenant = Tenant::new(
            TenantId::parse("acme").unwrap(),
            "Acme",
            PlanId::default_plan(),
            RegionId::default_region(),
            NOW,
        );
        let owner = if role == Role::Operator {
            KeyOwner::Platform
        } else {
            KeyOwner::Tenant(tenant.id.clone())
        };
        let record = KeyRecord::issue(&token, owner, role, "", &hasher, NOW);
        Fixture {
            hasher,
            token,
            record,
            tenant,
        }
    }

    #[test]
    fn a_valid_tenant_key_yields_its_tenant_and_plan() {
        let f = fixture(Role::Developer);
        let p = verify(&f.token, &f.record, Some(&f.tenant), &f.hasher, NOW).unwrap();
        assert_eq!(p.tenant(), Some(&f.tenant.id));
        assert_eq!(p.plan(), Some(&PlanId::default_plan()));
        assert_eq!(p.role(), Role::Developer);
    }

    #[test]
    fn a_wrong_secret_is_invalid_even_when_the_key_is_revoked() {
        let mut f = fixture(Role::Admin);
        f.record.revoked_at = Some(NOW);
        let wrong = ApiKeyToken {
            id: f.token.id.clone(),
            secret: ApiKeyToken::generate(&mut OsRng).secret,
        };
        let got = verify(&wrong, &f.record, Some(&f.tenant), &f.hasher, NOW);
        assert_eq!(got, Err(IdentifyError::InvalidKey));
    }

    #[test]
    fn revoked_expired_suspended_and_deleted_are_told_apart() {
        let mut f = fixture(Role::Admin);
        f.record.expires_at = Some(NOW);
        assert_eq!(
            verify(&f.token, &f.record, Some(&f.tenant), &f.hasher, NOW),
            Err(IdentifyError::Expired)
        );
        assert!(verify(
            &f.token,
            &f.record,
            Some(&f.tenant),
            &f.hasher,
            NOW - Duration::seconds(1)
        )
        .is_ok());

        let mut f = fixture(Role::Admin);
        f.record.revoked_at = Some(NOW);
        assert_eq!(
            verify(&f.token, &f.record, Some(&f.tenant), &f.hasher, NOW),
            Err(IdentifyError::Revoked)
        );

        let mut f = fixture(Role::Reader);
        f.tenant.status = TenantStatus::Suspended;
        assert_eq!(
            verify(&f.token, &f.record, Some(&f.tenant), &f.hasher, NOW),
            Err(IdentifyError::TenantSuspended)
        );
        f.tenant.status = TenantStatus::Deleted;
        assert_eq!(
            verify(&f.token, &f.record, Some(&f.tenant), &f.hasher, NOW),
            Err(IdentifyError::TenantDeleted)
        );
        assert_eq!(
            verify(&f.token, &f.record, None, &f.hasher, NOW),
            Err(IdentifyError::TenantDeleted),
            "a purged tenant's key is dead"
        );
    }

    #[test]
    fn a_key_never_verifies_against_another_tenants_row() {
        let f = fixture(Role::Admin);
        let mut other = f.tenant.clone();
        other.id = TenantId::parse("globex").unwrap();
        assert_eq!(
            verify(&f.token, &f.record, Some(&other), &f.hasher, NOW),
            Err(IdentifyError::TenantDeleted)
        );
    }

    #[test]
    fn scopes_follow_membership_and_rank() {
        let acme = TenantId::parse("acme").unwrap();
        let globex = TenantId::parse("globex").unwrap();

        let f = fixture(Role::Admin);
        let admin = verify(&f.token, &f.record, Some(&f.tenant), &f.hasher, NOW).unwrap();
        assert_eq!(admin.scope_for(&acme, Role::Admin).unwrap().tenant(), &acme);
        assert!(admin.scope_for(&globex, Role::Reader).is_none());

        let f = fixture(Role::Reader);
        let reader = verify(&f.token, &f.record, Some(&f.tenant), &f.hasher, NOW).unwrap();
        assert!(reader.scope_for(&acme, Role::Reader).is_some());
        assert!(reader.scope_for(&acme, Role::Admin).is_none());

        let f = fixture(Role::Operator);
        let operator = verify(&f.token, &f.record, None, &f.hasher, NOW).unwrap();
        assert!(operator.tenant().is_none());
        assert!(operator.scope_for(&globex, Role::Admin).is_some());
    }

    #[test]
    fn data_scopes_go_to_members_of_sufficient_rank_only() {
        let mut f = fixture(Role::Developer);
        f.tenant.isolation = Isolation::Dedicated;
        let developer = verify(&f.token, &f.record, Some(&f.tenant), &f.hasher, NOW).unwrap();
        let scope = developer.data_scope(Role::Developer).unwrap();
        assert_eq!(
            (scope.tenant().as_str(), scope.isolation()),
            ("acme", Isolation::Dedicated)
        );
        assert!(developer.data_scope(Role::Admin).is_none());

        let f = fixture(Role::Operator);
        let operator = verify(&f.token, &f.record, None, &f.hasher, NOW).unwrap();
        assert!(
            operator.data_scope(Role::Reader).is_none(),
            "operators do not read tenant data"
        );
    }
}
