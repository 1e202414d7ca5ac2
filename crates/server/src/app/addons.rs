//! Add-ons: temporary raises of a tenant's quotas, granted by operators.

use serde_json::json;
use tenantd_api::CreateAddOn;
use tenantd_core::plan::AddOn;
use tenantd_core::{Principal, TenantScope};
use tenantd_store::AuditAction;

use super::Change;
use crate::problem::ApiError;
use crate::state::AppState;

/// Grants `body` to the scope's tenant, in effect from its next request on.
/// Returns the add-on's id and the add-on.
pub async fn grant(
    state: &AppState,
    principal: &Principal,
    scope: &TenantScope,
    body: CreateAddOn,
) -> Result<(i64, AddOn), ApiError> {
    let now = state.clock.now();
    if body.amount == 0 {
        return Err(ApiError::invalid_body("amount must be at least 1"));
    }
    if body.expires_at <= now {
        return Err(ApiError::invalid_body("expires_at must be in the future"));
    }
    if body.metric.is_counted() != body.period.is_some() {
        return Err(ApiError::invalid_body(format!(
            "a {} add-on {}",
            body.metric.as_str(),
            if body.metric.is_counted() {
                "needs the period of the quota it raises"
            } else {
                "takes no period"
            }
        )));
    }
    let add_on = AddOn {
        metric: body.metric,
        period: body.period,
        amount: body.amount,
        expires_at: body.expires_at,
    };
    let tenant = scope.tenant();
    let audit = state
        .audit(
            principal,
            Some(tenant),
            AuditAction::AddonCreate,
            tenant.as_str(),
            json!({ "metric": add_on.metric, "period": add_on.period, "amount": add_on.amount,
                "expires_at": add_on.expires_at.unix_timestamp() }),
        )
        .after(&add_on);
    let id = state.catalog.insert_add_on(scope, &add_on, &audit).await?;
    // The tenant's whole list as it is now, so that a node hearing of this
    // grant late, or twice, ends with the same list.
    let live = state.catalog.add_ons(scope, now, 0, u32::MAX).await?;
    let through = live.iter().map(|(id, ..)| *id).max().unwrap_or(id);
    state.changes.publish(Change::AddOns {
        tenant: tenant.clone(),
        add_ons: live.into_iter().map(|(_, _, add_on)| add_on).collect(),
        through,
    });
    Ok((id, add_on))
}
