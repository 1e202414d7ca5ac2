//! Audit routes: a tenant's trail (its admins, or an operator) and the
//! platform's (operators).

use axum::extract::State;
use axum::Json;
use tenantd_api::schema;
use tenantd_api::{AuditPage, AuditVerification, AuditView, Page};
use tenantd_store::{AuditEntry, Owner, Verification};

use super::access::{Admin, Member, Operator};
use crate::extract::{page_of, ApiQuery, PageQuery};
use crate::problem::ApiError;
use crate::state::AppState;

fn view(entry: AuditEntry) -> AuditView {
    let (actor_key, actor_role) = entry
        .actor
        .map_or((None, None), |(k, r)| (Some(k), Some(r)));
    AuditView {
        seq: entry.seq,
        at: entry.at,
        actor_key,
        actor_role,
        action: entry.action,
        target: entry.target,
        details: entry.details,
        request_id: entry.request_id,
        before_digest: entry.before,
        after_digest: entry.after,
    }
}

fn verification(v: Verification) -> AuditVerification {
    AuditVerification {
        entries: v.entries,
        head: v.head,
        intact: v.problems.is_empty(),
        problems: v.problems,
    }
}

/// Verify the tenant's own audit chain: every entry since the tenant's last
/// purge, recomputed and linked.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/audit/verify", tag = "audit",
    params(("tenant" = schema::TenantId, Path)), security(("api_key" = [])),
    responses((status = 200, description = "What the walk found", body = AuditVerification)))]
pub(super) async fn verify_tenant_audit(
    Member(_principal, scope, _role): Member<Admin>,
    State(state): State<AppState>,
) -> Result<Json<AuditVerification>, ApiError> {
    Ok(Json(verification(
        state.catalog.verify_audit(Owner::Tenant(&scope)).await?,
    )))
}

/// Verify the whole audit log's chain: every entry of the platform and of
/// every tenant.
#[utoipa::path(get, path = "/v1/platform/audit/verify", tag = "audit",
    security(("api_key" = [])),
    responses((status = 200, description = "What the walk found", body = AuditVerification)))]
pub(super) async fn verify_platform_audit(
    Operator(_principal, operator): Operator,
    State(state): State<AppState>,
) -> Result<Json<AuditVerification>, ApiError> {
    Ok(Json(verification(
        state
            .catalog
            .verify_audit(Owner::Platform(&operator))
            .await?,
    )))
}

async fn page(
    state: &AppState,
    owner: Owner<'_>,
    query: PageQuery,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = query.limit()?;
    let after = query.after(|s| s.parse::<i64>().ok())?.unwrap_or(0);
    let rows = state.catalog.audit(owner, after, limit + 1).await?;
    let (rows, next_cursor) = page_of(rows, limit, |e| e.seq.to_string());
    Ok(Json(AuditPage {
        items: rows.into_iter().map(view).collect(),
        next_cursor,
    }))
}

/// A tenant's audit trail, oldest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/audit", tag = "audit",
    params(("tenant" = schema::TenantId, Path), PageQuery), security(("api_key" = [])),
    responses((status = 200, description = "A page of audit entries", body = Page<AuditView>)))]
pub(super) async fn tenant_audit(
    Member(_principal, scope, _role): Member<Admin>,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    page(&state, Owner::Tenant(&scope), query).await
}

/// The platform's audit trail (operator keys, purges), oldest first.
#[utoipa::path(get, path = "/v1/platform/audit", tag = "audit", params(PageQuery),
    security(("api_key" = [])),
    responses((status = 200, description = "A page of audit entries", body = Page<AuditView>)))]
pub(super) async fn platform_audit(
    Operator(_principal, operator): Operator,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    page(&state, Owner::Platform(&operator), query).await
}
