//! Tenants and their lifecycle: active, suspended, soft-deleted, purged.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::ids::{PlanId, PoolName, RegionId, TenantId};
use crate::quota::BillingDay;
use crate::record::Isolation;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    /// Serves requests.
    Active,
    /// Keeps its data; every request by its keys gets 403 `tenant_suspended`.
    Suspended,
    /// Soft-deleted: invisible to its keys, restorable until purged.
    Deleted,
}

impl TenantStatus {
    pub const ALL: [TenantStatus; 3] = [Self::Active, Self::Suspended, Self::Deleted];

    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
            TenantStatus::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }
}

/// An operator's lifecycle action on a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantAction {
    Suspend,
    Resume,
    Delete,
    Restore,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a tenant that is {from}")]
pub struct TransitionError {
    pub action: &'static str,
    pub from: &'static str,
}

impl TenantAction {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantAction::Suspend => "suspend",
            TenantAction::Resume => "resume",
            TenantAction::Delete => "delete",
            TenantAction::Restore => "restore",
        }
    }

    /// The status after this action, or why it is not allowed. Restoring
    /// brings a tenant back suspended so that an operator resumes it on
    /// purpose, after checking why it was deleted.
    pub fn apply(self, from: TenantStatus) -> Result<TenantStatus, TransitionError> {
        use TenantAction as A;
        use TenantStatus as S;
        match (self, from) {
            (A::Suspend, S::Active) => Ok(S::Suspended),
            (A::Resume, S::Suspended) => Ok(S::Active),
            (A::Delete, S::Active | S::Suspended) => Ok(S::Deleted),
            (A::Restore, S::Deleted) => Ok(S::Suspended),
            _ => Err(TransitionError {
                action: self.as_str(),
                from: from.as_str(),
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub plan: PlanId,
    /// The plan version the tenant is pinned to; it follows the plan's
    /// latest version when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_version: Option<i64>,
    pub region: RegionId,
    /// How its data is kept apart from other tenants'.
    pub isolation: Isolation,
    /// The storage pool holding its data.
    pub pool: PoolName,
    pub status: TenantStatus,
    /// The day of the month (UTC) its monthly quotas reset.
    pub billing_day: BillingDay,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// When the tenant was soft-deleted; it is purged `purge_after` later.
    #[serde(with = "time::serde::rfc3339::option")]
    pub deleted_at: Option<OffsetDateTime>,
}

impl Tenant {
    /// A new, active tenant created at `now`, pooled in the default pool,
    /// billed from the day of its creation (the 28th for days after it).
    pub fn new(
        id: TenantId,
        name: impl Into<String>,
        plan: PlanId,
        region: RegionId,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            id,
            name: name.into(),
            plan,
            plan_version: None,
            region,
            isolation: Isolation::Pooled,
            pool: PoolName::default_pool(),
            status: TenantStatus::Active,
            billing_day: BillingDay::new(now.day().min(28)).unwrap_or_default(),
            created_at: now,
            updated_at: now,
            deleted_at: None,
        }
    }

    /// True once a soft-deleted tenant has been kept for the whole retention.
    pub fn purge_due(&self, retention: Duration, now: OffsetDateTime) -> bool {
        self.status == TenantStatus::Deleted
            && self.deleted_at.is_some_and(|at| at + retention <= now)
    }
}

/// Longest tenant display name, in characters.
pub const MAX_TENANT_NAME_CHARS: usize = 200;

/// Checks a display name: non-empty after trimming, bounded, no control characters.
pub fn check_tenant_name(name: &str) -> Result<(), &'static str> {
    if name.trim().is_empty() {
        return Err("name must not be empty");
    }
    if name.chars().count() > MAX_TENANT_NAME_CHARS {
        return Err("name must be at most 200 characters");
    }
    if name.chars().any(char::is_control) {
        return Err("name must not contain control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;
    use TenantAction as A;
    use TenantStatus as S;

    #[test]
    fn lifecycle_allows_only_meaningful_transitions() {
        let all = [S::Active, S::Suspended, S::Deleted];
        let allowed = [
            (A::Suspend, S::Active, S::Suspended),
            (A::Resume, S::Suspended, S::Active),
            (A::Delete, S::Active, S::Deleted),
            (A::Delete, S::Suspended, S::Deleted),
            (A::Restore, S::Deleted, S::Suspended),
        ];
        for action in [A::Suspend, A::Resume, A::Delete, A::Restore] {
            for from in all {
                let expected = allowed
                    .iter()
                    .find(|(a, f, _)| *a == action && *f == from)
                    .map(|(_, _, to)| *to);
                assert_eq!(
                    action.apply(from).ok(),
                    expected,
                    "{action:?} from {from:?}"
                );
            }
        }
    }

    fn tenant(status: TenantStatus, deleted_at: Option<OffsetDateTime>) -> Tenant {
        Tenant {
            status,
            deleted_at,
            ..Tenant::new(
                TenantId::parse("acme").unwrap(),
                "Acme",
                PlanId::default_plan(),
                RegionId::default_region(),
                datetime!(2026-01-01 00:00 UTC),
            )
        }
    }

    #[test]
    fn purge_is_due_only_after_the_whole_retention() {
        let deleted = datetime!(2026-01-10 12:00 UTC);
        let t = tenant(S::Deleted, Some(deleted));
        let week = Duration::days(7);
        assert!(!t.purge_due(week, deleted + Duration::days(7) - Duration::seconds(1)));
        assert!(t.purge_due(week, deleted + Duration::days(7)));
        assert!(!tenant(S::Suspended, None).purge_due(week, deleted + Duration::days(30)));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_tenant_name("Acme Corp").is_ok());
        assert!(check_tenant_name("  ").is_err());
        assert!(check_tenant_name("a\nb").is_err());
        assert!(check_tenant_name(&"x".repeat(201)).is_err());
        assert!(check_tenant_name(&"é".repeat(200)).is_ok());
    }
}
