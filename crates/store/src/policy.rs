//! Tenant policy versions in the catalog: appended, never rewritten; the
//! version in effect is named by the tenant row, so applying one is O(1).

use sqlx::{Any, Transaction};
use tenantd_core::plan::Plan;
use tenantd_core::policy::{Change, Overrides};
use tenantd_core::{KeyId, OperatorScope, PlanId, Role, TenantId, TenantScope};
use time::OffsetDateTime;

use crate::audit::{append, NewAuditEntry};
use crate::catalog::{is_unique_violation, Catalog};
use crate::codec::{from_nanos, opt_from_nanos, parse, to_nanos};
use crate::{Result, StoreError};

/// Where a policy version stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyStatus {
    /// Waits for an operator.
    Proposed,
    /// Applied at once: within the plan's self-service ranges, or by an operator.
    Applied,
    /// Approved by an operator, and applied then.
    Approved,
    Rejected,
    Withdrawn,
    /// Was in effect until a revert restored an earlier version's content.
    Reverted,
}

impl PolicyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Proposed => "proposed",
            Self::Applied => "applied",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Withdrawn => "withdrawn",
            Self::Reverted => "reverted",
        }
    }

    pub const ALL: [PolicyStatus; 6] = [
        Self::Proposed,
        Self::Applied,
        Self::Approved,
        Self::Rejected,
        Self::Withdrawn,
        Self::Reverted,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }
}

/// A new version, before the store numbers it.
#[derive(Debug, Clone)]
pub struct NewPolicyVersion {
    pub plan: PlanId,
    pub overrides: Overrides,
    /// The plan its overrides make of the tenant's plan.
    pub effective: Plan,
    pub diff: Vec<Change>,
    pub reason: String,
    pub actor: (KeyId, Role),
    /// Applied at once (`Applied`) or waiting (`Proposed`).
    pub status: PolicyStatus,
    pub reverts_to: Option<i64>,
    pub at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PolicyVersion {
    pub tenant: TenantId,
    pub version: i64,
    pub status: PolicyStatus,
    pub plan: PlanId,
    pub overrides: Overrides,
    pub effective: Plan,
    pub diff: Vec<Change>,
    pub reason: String,
    pub actor: (KeyId, Role),
    pub based_on: i64,
    pub reverts_to: Option<i64>,
    pub created_at: OffsetDateTime,
    /// Who approved, rejected or withdrew it, when and why.
    pub decision: Option<(KeyId, OffsetDateTime, String)>,
}

/// An operator's or the proposer's answer to a proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Reject,
    Withdraw,
}

impl Verdict {
    /// The status a proposal takes on this verdict.
    pub fn status(self) -> PolicyStatus {
        match self {
            Verdict::Approve => PolicyStatus::Approved,
            Verdict::Reject => PolicyStatus::Rejected,
            Verdict::Withdraw => PolicyStatus::Withdrawn,
        }
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    tenant_id: String,
    version: i64,
    status: String,
    plan: String,
    overrides: String,
    effective: String,
    diff: String,
    reason: String,
    actor_key: String,
    actor_role: String,
    based_on: i64,
    reverts_to: Option<i64>,
    created_at: i64,
    decided_at: Option<i64>,
    decided_by: Option<String>,
    decision_reason: Option<String>,
}

fn json<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

fn to_text<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl Row {
    fn into_version(self) -> Result<PolicyVersion> {
        let decision = match (self.decided_by, opt_from_nanos(self.decided_at)?) {
            (Some(by), Some(at)) => Some((
                parse("policy_versions.decided_by", &by, KeyId::parse)?,
                at,
                self.decision_reason.unwrap_or_default(),
            )),
            _ => None,
        };
        Ok(PolicyVersion {
            tenant: parse(
                "policy_versions.tenant_id",
                &self.tenant_id,
                TenantId::parse,
            )?,
            version: self.version,
            status: parse("policy_versions.status", &self.status, |s| {
                PolicyStatus::parse(s).ok_or("unknown status")
            })?,
            plan: parse("policy_versions.plan", &self.plan, PlanId::parse)?,
            overrides: json("policy_versions.overrides", &self.overrides)?,
            effective: json("policy_versions.effective", &self.effective)?,
            diff: json("policy_versions.diff", &self.diff)?,
            reason: self.reason,
            actor: (
                parse("policy_versions.actor_key", &self.actor_key, KeyId::parse)?,
                parse("policy_versions.actor_role", &self.actor_role, |r| {
                    Role::parse(r).ok_or("unknown role")
                })?,
            ),
            based_on: self.based_on,
            reverts_to: self.reverts_to,
            created_at: from_nanos(self.created_at)?,
            decision,
        })
    }
}

/// Why a version could not be added or decided.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("no such tenant")]
    NoTenant,
    #[error("version {0} is waiting for a decision; withdraw it first")]
    ProposalWaiting(i64),
    #[error("version {version} is {status}, not proposed")]
    NotProposed { version: i64, status: &'static str },
    #[error("no such version")]
    NoVersion,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for PolicyError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

async fn current_version(tx: &mut Transaction<'_, Any>, tenant: &TenantId) -> Result<Option<i64>> {
    Ok(
        sqlx::query_scalar("SELECT policy_version FROM tenants WHERE id = $1")
            .bind(tenant.as_str())
            .fetch_optional(&mut **tx)
            .await?,
    )
}

/// Makes `version` the one in effect; a revert marks the one it replaces.
async fn put_in_effect(
    tx: &mut Transaction<'_, Any>,
    tenant: &TenantId,
    version: i64,
    replaced: i64,
    reverting: bool,
) -> Result<()> {
    if reverting && replaced > 0 {
        sqlx::query(
            "UPDATE policy_versions SET status = 'reverted' WHERE tenant_id = $1 AND version = $2",
        )
        .bind(tenant.as_str())
        .bind(replaced)
        .execute(&mut **tx)
        .await?;
    }
    sqlx::query("UPDATE tenants SET policy_version = $1 WHERE id = $2")
        .bind(version)
        .bind(tenant.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Catalog {
    /// Appends a version (numbered after the last) and, if it is `Applied`,
    /// puts it in effect; with its audit entry, in one transaction.
    pub async fn add_policy_version(
        &self,
        scope: &TenantScope,
        new: &NewPolicyVersion,
        audit: &NewAuditEntry,
    ) -> Result<PolicyVersion, PolicyError> {
        let tenant = scope.tenant();
        let mut tx = self.begin_write().await?;
        let based_on = current_version(&mut tx, tenant)
            .await?
            .ok_or(PolicyError::NoTenant)?;
        let waiting: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM policy_versions WHERE tenant_id = $1 AND status = 'proposed'",
        )
        .bind(tenant.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if let (Some(v), PolicyStatus::Proposed) = (waiting, new.status) {
            return Err(PolicyError::ProposalWaiting(v));
        }
        let version: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM policy_versions WHERE tenant_id = $1",
        )
        .bind(tenant.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO policy_versions (tenant_id, version, status, plan, overrides, effective,
                 diff, reason, actor_key, actor_role, based_on, reverts_to, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(tenant.as_str())
        .bind(version)
        .bind(new.status.as_str())
        .bind(new.plan.as_str())
        .bind(to_text(&new.overrides)?)
        .bind(to_text(&new.effective)?)
        .bind(to_text(&new.diff)?)
        .bind(&new.reason)
        .bind(new.actor.0.as_str())
        .bind(new.actor.1.as_str())
        .bind(based_on)
        .bind(new.reverts_to)
        .bind(to_nanos(new.at))
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {
                return Err(PolicyError::ProposalWaiting(waiting.unwrap_or_default()))
            }
            other => other?,
        };
        if new.status == PolicyStatus::Applied {
            put_in_effect(&mut tx, tenant, version, based_on, new.reverts_to.is_some()).await?;
        }
        let mut audit = audit.clone();
        audit.details["version"] = version.into();
        audit.target = format!("{}/policy/{version}", tenant);
        append(&mut tx, &audit).await?;
        tx.commit().await?;
        self.policy_version(scope, version)
            .await?
            .ok_or(PolicyError::NoVersion)
    }

    /// Answers a proposal. Approving puts it in effect.
    pub async fn decide_policy(
        &self,
        scope: &TenantScope,
        version: i64,
        verdict: Verdict,
        (by, reason, at): (&KeyId, &str, OffsetDateTime),
        audit: &NewAuditEntry,
    ) -> Result<PolicyVersion, PolicyError> {
        let tenant = scope.tenant();
        let mut tx = self.begin_write().await?;
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM policy_versions WHERE tenant_id = $1 AND version = $2",
        )
        .bind(tenant.as_str())
        .bind(version)
        .fetch_optional(&mut *tx)
        .await?;
        let status = status
            .and_then(|s| PolicyStatus::parse(&s))
            .ok_or(PolicyError::NoVersion)?;
        if status != PolicyStatus::Proposed {
            return Err(PolicyError::NotProposed {
                version,
                status: status.as_str(),
            });
        }
        let next = verdict.status();
        sqlx::query(
            "UPDATE policy_versions SET status = $1, decided_at = $2, decided_by = $3, decision_reason = $4
             WHERE tenant_id = $5 AND version = $6",
        )
        .bind(next.as_str())
        .bind(to_nanos(at))
        .bind(by.as_str())
        .bind(reason)
        .bind(tenant.as_str())
        .bind(version)
        .execute(&mut *tx)
        .await?;
        if next == PolicyStatus::Approved {
            let replaced = current_version(&mut tx, tenant).await?.unwrap_or(0);
            let reverting: Option<i64> = sqlx::query_scalar(
                "SELECT reverts_to FROM policy_versions WHERE tenant_id = $1 AND version = $2",
            )
            .bind(tenant.as_str())
            .bind(version)
            .fetch_one(&mut *tx)
            .await?;
            put_in_effect(&mut tx, tenant, version, replaced, reverting.is_some()).await?;
        }
        append(&mut tx, audit).await?;
        tx.commit().await?;
        self.policy_version(scope, version)
            .await?
            .ok_or(PolicyError::NoVersion)
    }

    pub async fn policy_version(
        &self,
        scope: &TenantScope,
        version: i64,
    ) -> Result<Option<PolicyVersion>> {
        let tenant = scope.tenant();
        sqlx::query_as::<_, Row>(
            "SELECT * FROM policy_versions WHERE tenant_id = $1 AND version = $2",
        )
        .bind(tenant.as_str())
        .bind(version)
        .fetch_optional(&self.pool)
        .await?
        .map(Row::into_version)
        .transpose()
    }

    /// The proposal waiting for an operator, if any.
    pub async fn waiting_proposal(&self, scope: &TenantScope) -> Result<Option<i64>> {
        let tenant = scope.tenant();
        Ok(sqlx::query_scalar(
            "SELECT version FROM policy_versions WHERE tenant_id = $1 AND status = 'proposed'",
        )
        .bind(tenant.as_str())
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The version in effect, if any.
    pub async fn policy_in_effect(&self, scope: &TenantScope) -> Result<Option<PolicyVersion>> {
        let tenant = scope.tenant();
        sqlx::query_as::<_, Row>(
            "SELECT p.* FROM policy_versions p JOIN tenants t
                 ON t.id = p.tenant_id AND t.policy_version = p.version
             WHERE t.id = $1",
        )
        .bind(tenant.as_str())
        .fetch_optional(&self.pool)
        .await?
        .map(Row::into_version)
        .transpose()
    }

    /// Versions newest first, below `before` (exclusive), at most `limit`.
    pub async fn policy_versions(
        &self,
        scope: &TenantScope,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<PolicyVersion>> {
        let tenant = scope.tenant();
        sqlx::query_as::<_, Row>(
            "SELECT * FROM policy_versions WHERE tenant_id = $1 AND version < $2
             ORDER BY version DESC LIMIT $3",
        )
        .bind(tenant.as_str())
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(Row::into_version)
        .collect()
    }

    /// Proposals waiting for an operator, across every tenant, oldest first
    /// after `after` (a proposal's creation time and tenant), at most
    /// `limit`. Operators only: the routes give it no tenant caller.
    pub async fn waiting_proposals(
        &self,
        after: Option<(OffsetDateTime, &TenantId)>,
        limit: u32,
    ) -> Result<Vec<PolicyVersion>> {
        let (at, tenant) = after.map_or((i64::MIN, ""), |(at, t)| (to_nanos(at), t.as_str()));
        sqlx::query_as::<_, Row>(
            "SELECT * FROM policy_versions
             WHERE status = 'proposed' AND (created_at, tenant_id) > ($1, $2)
             ORDER BY created_at, tenant_id LIMIT $3",
        )
        .bind(at)
        .bind(tenant)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(Row::into_version)
        .collect()
    }

    /// Every tenant's overrides in effect, to start admission with.
    pub async fn overrides_in_effect(&self) -> Result<Vec<(TenantId, Overrides)>> {
        self.overrides_of(None).await
    }

    /// One tenant's overrides in effect, if its policy has any: what a node
    /// reads when another changed that tenant's policy.
    pub async fn tenant_overrides(
        &self,
        _server: &OperatorScope,
        tenant: &TenantId,
    ) -> Result<Option<Overrides>> {
        Ok(self
            .overrides_of(Some(tenant))
            .await?
            .pop()
            .map(|(_, overrides)| overrides))
    }

    async fn overrides_of(&self, tenant: Option<&TenantId>) -> Result<Vec<(TenantId, Overrides)>> {
        let tenant = tenant.map(TenantId::as_str);
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT p.tenant_id, p.overrides FROM policy_versions p JOIN tenants t
                 ON t.id = p.tenant_id AND t.policy_version = p.version
             WHERE $1 IS NULL OR t.id = $2",
        )
        .bind(tenant)
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(tenant, overrides)| {
                Ok((
                    parse("policy_versions.tenant_id", &tenant, TenantId::parse)?,
                    json("policy_versions.overrides", &overrides)?,
                ))
            })
            .collect()
    }
}
