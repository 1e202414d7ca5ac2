//! Tenants: create, change, the lifecycle (suspend, resume, delete,
//! restore) and purge.

use serde_json::json;
use tenantd_api::{CreateTenant, UpdateTenant};
use tenantd_core::placement::place;
use tenantd_core::tenant::{check_tenant_name, TenantAction};
use tenantd_core::{
    ErrorCode, Isolation, OperatorScope, PlanId, Principal, Tenant, TenantId, TenantScope,
    TenantStatus,
};
use tenantd_store::AuditAction;
use tenantd_store::{NewAuditEntry, StoreError};

use super::Change;
use crate::problem::ApiError;
use crate::state::AppState;

fn check_name(name: &str) -> Result<(), ApiError> {
    check_tenant_name(name).map_err(|reason| ApiError::invalid_body(format!("name: {reason}")))
}

fn check_plan(state: &AppState, plan: &PlanId) -> Result<(), ApiError> {
    if state.admission.has_plan(plan, None) {
        Ok(())
    } else {
        Err(ApiError::invalid_body(format!(
            "plan: {plan} is not a configured plan"
        )))
    }
}

/// The tenant `id`, for an operator, or 404.
pub async fn load(
    state: &AppState,
    operator: &OperatorScope,
    id: &TenantId,
) -> Result<Tenant, ApiError> {
    state
        .catalog
        .tenant_for(operator, id)
        .await?
        .ok_or_else(ApiError::not_found)
}

/// The scope's tenant, whatever its status, or 404.
pub async fn of_scope(state: &AppState, scope: &TenantScope) -> Result<Tenant, ApiError> {
    state
        .catalog
        .tenant(scope)
        .await?
        .ok_or_else(ApiError::not_found)
}

/// The platform scope of an operator's principal; use cases on tenants are
/// the platform's.
fn operator_of(principal: &Principal) -> Result<OperatorScope, ApiError> {
    principal
        .operator_scope()
        .ok_or_else(|| ApiError::new(ErrorCode::Forbidden))
}

/// Creates a tenant on its plan's (or the body's) isolation and pool.
pub async fn create(
    state: &AppState,
    principal: &Principal,
    body: CreateTenant,
) -> Result<Tenant, ApiError> {
    check_name(&body.name)?;
    let plan = body.plan.unwrap_or_else(PlanId::default_plan);
    check_plan(state, &plan)?;
    // What the tenant does not say, its plan may.
    let defaults = state.admission.plan(&plan, None);
    let isolation = body
        .isolation
        .or(defaults.isolation)
        .unwrap_or(Isolation::Pooled);
    let region = body.region.unwrap_or_else(|| state.default_region.clone());
    let pool_named = body.pool.or_else(|| defaults.pool.clone());
    let pool = place(&state.pools, &region, isolation, pool_named.as_ref())
        .map_err(|e| ApiError::with_detail(ErrorCode::PlacementFailed, e.to_string()))?;
    let now = state.clock.now();
    let mut tenant = Tenant {
        isolation,
        pool,
        ..Tenant::new(body.id, body.name, plan, region, now)
    };
    if let Some(day) = body.billing_day {
        tenant.billing_day = day;
    }
    let audit = state.audit(
        principal,
        Some(&tenant.id),
        AuditAction::TenantCreate,
        tenant.id.as_str(),
        json!({ "name": tenant.name, "plan": tenant.plan, "billing_day": tenant.billing_day, "region": tenant.region, "isolation": tenant.isolation, "pool": tenant.pool }),
    )
    .after(&tenant);
    match state.catalog.create_tenant(&tenant, &audit).await {
        Err(StoreError::Conflict) => {
            return Err(ApiError::with_detail(
                ErrorCode::TenantExists,
                format!("tenant {} already exists", tenant.id),
            ))
        }
        other => other?,
    }
    state.changes.publish(Change::Tenant(tenant.id.clone()));
    Ok(tenant)
}

/// Renames a tenant or changes its plan, plan pin or billing day. Usage so
/// far is kept on a plan change.
pub async fn update(
    state: &AppState,
    principal: &Principal,
    id: &TenantId,
    body: UpdateTenant,
) -> Result<Tenant, ApiError> {
    if let Some(name) = &body.name {
        check_name(name)?;
    }
    if let Some(plan) = &body.plan {
        check_plan(state, plan)?;
    }
    let operator = operator_of(principal)?;
    let mut tenant = load(state, &operator, id).await?;
    if tenant.status == TenantStatus::Deleted {
        return Err(ApiError::with_detail(
            ErrorCode::InvalidTransition,
            "a deleted tenant cannot be changed; restore it first",
        ));
    }
    let before = tenant.clone();
    if let Some(name) = body.name {
        tenant.name = name;
    }
    if let Some(plan) = body.plan {
        if plan != tenant.plan {
            // A pin names a version of the old plan.
            tenant.plan_version = None;
        }
        tenant.plan = plan;
    }
    if let Some(pin) = body.plan_version {
        if !state.admission.has_plan(&tenant.plan, pin) {
            return Err(ApiError::invalid_body(format!(
                "plan_version: plan {} has no version {}",
                tenant.plan,
                pin.unwrap_or_default()
            )));
        }
        tenant.plan_version = pin;
    }
    if let Some(day) = body.billing_day {
        tenant.billing_day = day;
    }
    let mut changes = serde_json::Map::new();
    note_change(&mut changes, "name", &before.name, &tenant.name);
    note_change(&mut changes, "plan", &before.plan, &tenant.plan);
    note_change(
        &mut changes,
        "plan_version",
        &before.plan_version,
        &tenant.plan_version,
    );
    note_change(
        &mut changes,
        "billing_day",
        &before.billing_day,
        &tenant.billing_day,
    );
    if changes.is_empty() {
        return Ok(tenant);
    }
    tenant.updated_at = state.clock.now();
    let audit = state
        .audit(
            principal,
            Some(id),
            AuditAction::TenantUpdate,
            id.as_str(),
            serde_json::Value::Object(changes),
        )
        .before(&before)
        .after(&tenant);
    let expected = tenant.status;
    if !state
        .catalog
        .update_tenant(&operator, &tenant, expected, &audit)
        .await?
    {
        return Err(concurrent_change());
    }
    state.changes.publish(Change::Tenant(id.clone()));
    Ok(tenant)
}

/// Records `field` in an audit entry's details when it changed.
fn note_change<T: PartialEq + serde::Serialize>(
    changes: &mut serde_json::Map<String, serde_json::Value>,
    field: &str,
    from: &T,
    to: &T,
) {
    if from != to {
        changes.insert(field.into(), json!({ "from": from, "to": to }));
    }
}

fn concurrent_change() -> ApiError {
    ApiError::with_detail(
        ErrorCode::InvalidTransition,
        "the tenant changed while this request ran; read it and try again",
    )
}

/// Applies a lifecycle action; the tenant's keys feel it from their next
/// request on.
pub async fn transition(
    state: &AppState,
    principal: &Principal,
    id: &TenantId,
    action: TenantAction,
) -> Result<Tenant, ApiError> {
    let operator = operator_of(principal)?;
    let mut tenant = load(state, &operator, id).await?;
    let before = tenant.clone();
    let from = tenant.status;
    let to = action
        .apply(from)
        .map_err(|e| ApiError::with_detail(ErrorCode::InvalidTransition, e.to_string()))?;
    let now = state.clock.now();
    tenant.status = to;
    tenant.updated_at = now;
    tenant.deleted_at = (to == TenantStatus::Deleted).then_some(now);
    let audit = state
        .audit(
            principal,
            Some(id),
            match action {
                TenantAction::Suspend => AuditAction::TenantSuspend,
                TenantAction::Resume => AuditAction::TenantResume,
                TenantAction::Delete => AuditAction::TenantDelete,
                TenantAction::Restore => AuditAction::TenantRestore,
            },
            id.as_str(),
            json!({ "status": { "from": from, "to": to } }),
        )
        .before(&before)
        .after(&tenant);
    if !state
        .catalog
        .update_tenant(&operator, &tenant, from, &audit)
        .await?
    {
        return Err(concurrent_change());
    }
    state.changes.publish(Change::Tenant(id.clone()));
    Ok(tenant)
}

/// Purges a soft-deleted tenant: its records first, then its catalog
/// entries, then whatever identify has cached. Data goes first so that a
/// crash in between leaves a deleted tenant whose purge the next sweep
/// finishes, never data without a tenant. `false` if it is not deleted.
pub async fn purge(
    state: &AppState,
    operator: &OperatorScope,
    id: &TenantId,
    audit: &NewAuditEntry,
) -> Result<bool, StoreError> {
    let Some(tenant) = state.catalog.tenant_for(operator, id).await? else {
        return Ok(false);
    };
    if tenant.status != TenantStatus::Deleted {
        return Ok(false);
    }
    state.data.purge(operator, id, &tenant.pool).await?;
    let Some(keys) = state.catalog.purge_tenant(operator, id, audit).await? else {
        return Ok(false);
    };
    state.changes.publish(Change::TenantPurged {
        tenant: id.clone(),
        keys,
    });
    Ok(true)
}
