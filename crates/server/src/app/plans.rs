//! Plans: each write is a new version, audited with its diff.

use serde_json::json;
use tenantd_core::plan::Plan;
use tenantd_core::policy::diff;
use tenantd_core::Principal;
use tenantd_store::plans::{NewPlanVersion, PlanVersion};
use tenantd_store::AuditAction;

use super::Change;
use crate::problem::ApiError;
use crate::state::AppState;

/// Writes `plan` as its plan's next version (`replaces` the version it
/// follows; none for a new plan), audited with its diff and reason, in
/// effect from the next request on.
pub async fn write_version(
    state: &AppState,
    principal: &Principal,
    plan: &Plan,
    replaces: Option<i64>,
    reason: &str,
) -> Result<PlanVersion, ApiError> {
    let previous = replaces.map(|v| state.admission.plan(&plan.id, Some(v)));
    let changes = previous.as_ref().map(|p| diff(p, plan)).unwrap_or_default();
    let action = if replaces.is_some() {
        AuditAction::PlanUpdate
    } else {
        AuditAction::PlanCreate
    };
    let mut audit = state
        .audit(
            principal,
            None,
            action,
            plan.id.as_str(),
            json!({ "diff": changes, "reason": reason }),
        )
        .after(plan);
    if let Some(previous) = &previous {
        audit = audit.before(&**previous);
    }
    let at = state.clock.now();
    let new = NewPlanVersion {
        plan,
        after: replaces,
        diff: changes.clone(),
        reason,
        actor: Some(principal.key_id().clone()),
        at,
    };
    let version = state.catalog.add_plan_version(&new, &audit).await?;
    state.changes.publish(Change::PlanVersion {
        version,
        plan: plan.clone(),
    });
    Ok(PlanVersion {
        plan: plan.clone(),
        version,
        diff: changes,
        reason: reason.to_owned(),
        actor: Some(principal.key_id().clone()),
        created_at: at,
    })
}
