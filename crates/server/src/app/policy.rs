//! Tenant policies: new versions of a tenant's overrides (applied or
//! proposed), and the decisions on proposals.

use serde_json::json;
use tenantd_core::policy::{diff, effective, outside_self_service, Overrides};
use tenantd_core::{Principal, TenantScope};
use tenantd_store::policy::{NewPolicyVersion, PolicyStatus, PolicyVersion, Verdict};
use tenantd_store::AuditAction;

use super::Change;
use crate::problem::ApiError;
use crate::state::AppState;

/// A submitted version, the version in effect after it, and whether it
/// applied (or waits for an operator).
#[derive(Debug)]
pub struct Submitted {
    pub version: PolicyVersion,
    pub current: i64,
    pub applied: bool,
}

/// Checks a reason given for a change, as a problem for the caller.
pub fn check_reason(reason: &str) -> Result<(), ApiError> {
    tenantd_core::text::check_reason(reason).map_err(ApiError::invalid_body)
}

/// The version of the tenant's policy in effect (0: none yet).
pub async fn version_in_effect(state: &AppState, scope: &TenantScope) -> Result<i64, ApiError> {
    Ok(state
        .catalog
        .policy_in_effect(scope)
        .await?
        .map_or(0, |v| v.version))
}

/// A new version of a tenant's overrides: applied at once when within its
/// plan's self-service ranges (or made by an operator), proposed otherwise.
pub async fn submit(
    state: &AppState,
    principal: &Principal,
    scope: &TenantScope,
    overrides: Overrides,
    reason: String,
    reverts_to: Option<i64>,
) -> Result<Submitted, ApiError> {
    check_reason(&reason)?;
    let tenant = super::tenants::of_scope(state, scope).await?;
    let base = state.admission.plan(&tenant.plan, tenant.plan_version);
    let wanted = effective(&base, &overrides).map_err(ApiError::invalid_body)?;
    let current = state
        .admission
        .effective_plan(&tenant.id, &tenant.plan, tenant.plan_version);
    let changes = diff(&current, &wanted);
    let outside = outside_self_service(&base, &overrides);
    let status = if principal.is_operator() || outside.is_empty() {
        PolicyStatus::Applied
    } else {
        PolicyStatus::Proposed
    };
    let action = match status {
        PolicyStatus::Applied => AuditAction::PolicyApply,
        _ => AuditAction::PolicyPropose,
    };
    let audit = state
        .audit(
            principal,
            Some(&tenant.id),
            action,
            tenant.id.as_str(),
            json!({ "diff": changes, "reason": reason, "reverts_to": reverts_to }),
        )
        .before(&*current)
        .after(&wanted);
    let new = NewPolicyVersion {
        plan: tenant.plan.clone(),
        overrides: overrides.clone(),
        effective: wanted.clone(),
        diff: changes,
        reason,
        actor: (principal.key_id().clone(), principal.role()),
        status,
        reverts_to,
        at: state.clock.now(),
    };
    let added = state
        .catalog
        .add_policy_version(scope, &new, &audit)
        .await?;
    let applied = status == PolicyStatus::Applied;
    if applied {
        state.changes.publish(Change::Policy {
            tenant: tenant.id.clone(),
            overrides: Some(overrides).filter(|o| *o != Overrides::default()),
        });
    }
    let current = if applied {
        added.version
    } else {
        added.based_on
    };
    Ok(Submitted {
        version: added,
        current,
        applied,
    })
}

/// Approves, rejects or withdraws a waiting proposal; an approved one is in
/// effect at once. Returns the decided version and the version in effect.
pub async fn decide(
    state: &AppState,
    principal: &Principal,
    scope: &TenantScope,
    version: i64,
    verdict: Verdict,
    reason: String,
) -> Result<(PolicyVersion, i64), ApiError> {
    check_reason(&reason)?;
    let tenant = super::tenants::of_scope(state, scope).await?;
    let proposal = state
        .catalog
        .policy_version(scope, version)
        .await?
        .ok_or_else(ApiError::not_found)?;
    if verdict == Verdict::Approve {
        // The plan may have changed since the proposal was made.
        effective(
            &state.admission.plan(&tenant.plan, tenant.plan_version),
            &proposal.overrides,
        )
        .map_err(|e| {
            ApiError::invalid_body(format!("the proposal no longer fits the plan: {e}"))
        })?;
    }
    let action = match verdict {
        Verdict::Approve => AuditAction::PolicyApprove,
        Verdict::Reject => AuditAction::PolicyReject,
        Verdict::Withdraw => AuditAction::PolicyWithdraw,
    };
    let audit = state
        .audit(
            principal,
            Some(&tenant.id),
            action,
            format!("{}/policy/{version}", tenant.id),
            json!({ "version": version, "reason": reason }),
        )
        .before(&json!({ "version": version, "status": proposal.status.as_str() }))
        .after(&json!({ "version": version, "status": verdict.status().as_str() }));
    let now = state.clock.now();
    let decided = state
        .catalog
        .decide_policy(
            scope,
            version,
            verdict,
            (principal.key_id(), &reason, now),
            &audit,
        )
        .await?;
    if verdict == Verdict::Approve {
        let overrides = Some(decided.overrides.clone()).filter(|o| *o != Overrides::default());
        state.changes.publish(Change::Policy {
            tenant: tenant.id.clone(),
            overrides,
        });
    }
    let current = version_in_effect(state, scope).await?;
    Ok((decided, current))
}
