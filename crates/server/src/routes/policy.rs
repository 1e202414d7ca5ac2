//! Policy routes: a tenant's policy in effect and its versions (its
//! members, operators); new versions and reverts (its admins, operators);
//! approval and rejection (operators only, so a tenant never approves its
//! own proposal); withdrawal (its admins, operators).
//!
//! A tenant admin's change within its plan's self-service ranges applies at
//! once; anything else waits for an operator. Applied versions take effect
//! in admission at the next request, with usage kept.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tenantd_api::schema;
use tenantd_api::{
    DecidePolicy, Page, PolicyStatus as WirePolicyStatus, PolicyVersionPage, PolicyVersionView,
    PolicyView, Problem, ProposePolicy,
};
use tenantd_core::policy::outside_self_service;
use tenantd_core::{ErrorCode, TenantId};
use tenantd_store::policy::{PolicyError, PolicyStatus, PolicyVersion, Verdict};

use super::access::{Admin, Member, Operator, OperatorOn, Reader};
use crate::app::policy::{self, version_in_effect, Submitted};
use crate::app::tenants;
use crate::extract::{page_of, ApiJson, ApiPath, ApiQuery, PageQuery};
use crate::problem::ApiError;
use crate::state::AppState;

impl From<PolicyError> for ApiError {
    fn from(e: PolicyError) -> Self {
        match e {
            PolicyError::NoTenant | PolicyError::NoVersion => ApiError::not_found(),
            PolicyError::ProposalWaiting(_) | PolicyError::NotProposed { .. } => {
                ApiError::with_detail(ErrorCode::InvalidTransition, e.to_string())
            }
            PolicyError::Store(e) => e.into(),
        }
    }
}

fn view(state: &AppState, v: PolicyVersion, current: i64) -> PolicyVersionView {
    let (decided_by, decided_at, decision_reason) = match v.decision {
        Some((by, at, reason)) => (Some(by), Some(at), Some(reason)),
        None => (None, None, None),
    };
    let outside = outside_self_service(&state.admission.plan(&v.plan, None), &v.overrides);
    PolicyVersionView {
        tenant: v.tenant,
        current: v.version == current,
        version: v.version,
        status: match v.status {
            PolicyStatus::Proposed => WirePolicyStatus::Proposed,
            PolicyStatus::Applied => WirePolicyStatus::Applied,
            PolicyStatus::Approved => WirePolicyStatus::Approved,
            PolicyStatus::Rejected => WirePolicyStatus::Rejected,
            PolicyStatus::Withdrawn => WirePolicyStatus::Withdrawn,
            PolicyStatus::Reverted => WirePolicyStatus::Reverted,
        },
        plan: v.plan,
        overrides: (&v.overrides).into(),
        effective: (&v.effective).into(),
        diff: v.diff.into_iter().map(Into::into).collect(),
        outside_self_service: outside,
        reason: v.reason,
        actor_key: v.actor.0,
        actor_role: v.actor.1,
        based_on: v.based_on,
        reverts_to: v.reverts_to,
        created_at: v.created_at,
        decided_by,
        decided_at,
        decision_reason,
    }
}

/// 201 with the version when it applied, 202 when it waits for an operator.
fn submitted_response(state: &AppState, submitted: Submitted) -> Response {
    let Submitted {
        version,
        current,
        applied,
    } = submitted;
    let code = if applied {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    let location = format!(
        "/v1/tenants/{}/policy/versions/{}",
        version.tenant, version.version
    );
    let body = view(state, version, current);
    (code, [(header::LOCATION, location)], Json(body)).into_response()
}

/// The tenant's policy in effect.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/policy", tag = "policy",
    params(("tenant" = schema::TenantId, Path)), security(("api_key" = [])),
    responses((status = 200, description = "The policy in effect", body = PolicyView)))]
pub(super) async fn get_policy(
    Member(_principal, scope, _role): Member<Reader>,
    State(state): State<AppState>,
) -> Result<Json<PolicyView>, ApiError> {
    let tenant = tenants::of_scope(&state, &scope).await?;
    let in_effect = state.catalog.policy_in_effect(&scope).await?;
    let plan = state
        .admission
        .effective_plan(&tenant.id, &tenant.plan, tenant.plan_version);
    let proposal = state.catalog.waiting_proposal(&scope).await?;
    Ok(Json(PolicyView {
        tenant: tenant.id,
        version: in_effect.as_ref().map_or(0, |v| v.version),
        plan: tenant.plan,
        overrides: in_effect.map(|v| (&v.overrides).into()).unwrap_or_default(),
        effective: (&*plan).into(),
        proposal,
    }))
}

/// The tenant's policy versions, newest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/policy/versions", tag = "policy",
    params(("tenant" = schema::TenantId, Path), PageQuery), security(("api_key" = [])),
    responses((status = 200, description = "A page of versions", body = Page<PolicyVersionView>)))]
pub(super) async fn list_versions(
    Member(_principal, scope, _role): Member<Reader>,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<PolicyVersionPage>, ApiError> {
    let limit = query.limit()?;
    let before = query.after(|s| s.parse::<i64>().ok())?;
    let rows = state
        .catalog
        .policy_versions(&scope, before, limit + 1)
        .await?;
    let current = version_in_effect(&state, &scope).await?;
    let (rows, next_cursor) = page_of(rows, limit, |v| v.version.to_string());
    Ok(Json(PolicyVersionPage {
        items: rows.into_iter().map(|v| view(&state, v, current)).collect(),
        next_cursor,
    }))
}

/// The proposals waiting for an operator, across every tenant, oldest
/// first: the operators' queue of approvals.
#[utoipa::path(get, path = "/v1/proposals", tag = "policy",
    params(PageQuery), security(("api_key" = [])),
    responses((status = 200, description = "A page of waiting proposals", body = Page<PolicyVersionView>)))]
pub(super) async fn waiting(
    Operator(_principal, _operator): Operator,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<PolicyVersionPage>, ApiError> {
    let limit = query.limit()?;
    let after = query.after(|s| {
        let (at, tenant) = s.split_once('.')?;
        let at = time::OffsetDateTime::from_unix_timestamp_nanos(at.parse().ok()?).ok()?;
        Some((at, TenantId::parse(tenant).ok()?))
    })?;
    let rows = state
        .catalog
        .waiting_proposals(after.as_ref().map(|(at, t)| (*at, t)), limit + 1)
        .await?;
    let (rows, next_cursor) = page_of(rows, limit, |v| {
        format!("{}.{}", v.created_at.unix_timestamp_nanos(), v.tenant)
    });
    Ok(Json(PolicyVersionPage {
        // A proposal is never the version in effect.
        items: rows.into_iter().map(|v| view(&state, v, 0)).collect(),
        next_cursor,
    }))
}

/// One version of the tenant's policy.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/policy/versions/{version}", tag = "policy",
    params(("tenant" = schema::TenantId, Path), ("version" = i64, Path, minimum = 1, description = "A policy version, from 1")), security(("api_key" = [])),
    responses(
        (status = 200, description = "The version", body = PolicyVersionView),
        (status = 404, description = "No such version", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn get_version(
    Member(_principal, scope, _role): Member<Reader>,
    State(state): State<AppState>,
    ApiPath((_tenant, version)): ApiPath<(TenantId, i64)>,
) -> Result<Json<PolicyVersionView>, ApiError> {
    let found = state
        .catalog
        .policy_version(&scope, version)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let current = version_in_effect(&state, &scope).await?;
    Ok(Json(view(&state, found, current)))
}

/// Change the tenant's overrides. 201 when applied, 202 when it waits for
/// an operator (the answer says what is outside the self-service ranges).
#[utoipa::path(post, path = "/v1/tenants/{tenant}/policy/versions", tag = "policy",
    request_body = ProposePolicy, params(("tenant" = schema::TenantId, Path)), security(("api_key" = [])),
    responses(
        (status = 201, description = "Applied", body = PolicyVersionView),
        (status = 202, description = "Proposed: waits for an operator", body = PolicyVersionView),
        (status = 409, description = "A proposal is already waiting", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The overrides do not make a valid plan", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn propose(
    Member(principal, scope, _role): Member<Admin>,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ProposePolicy>,
) -> Result<Response, ApiError> {
    let submitted = policy::submit(
        &state,
        &principal,
        &scope,
        body.overrides.into(),
        body.reason,
        None,
    )
    .await?;
    Ok(submitted_response(&state, submitted))
}

/// Restore an earlier version's overrides, as a new version (history is
/// never rewritten). The same rules apply as to any change.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/policy/versions/{version}/revert", tag = "policy",
    request_body = DecidePolicy, params(("tenant" = schema::TenantId, Path), ("version" = i64, Path, minimum = 1, description = "A policy version, from 1")),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Applied", body = PolicyVersionView),
        (status = 202, description = "Proposed: waits for an operator", body = PolicyVersionView),
    ))]
pub(super) async fn revert(
    Member(principal, scope, _role): Member<Admin>,
    State(state): State<AppState>,
    ApiPath((_tenant, version)): ApiPath<(TenantId, i64)>,
    ApiJson(body): ApiJson<DecidePolicy>,
) -> Result<Response, ApiError> {
    let target = state
        .catalog
        .policy_version(&scope, version)
        .await?
        .ok_or_else(ApiError::not_found)?;
    if !matches!(
        target.status,
        PolicyStatus::Applied | PolicyStatus::Approved | PolicyStatus::Reverted
    ) {
        return Err(ApiError::with_detail(
            ErrorCode::InvalidTransition,
            format!(
                "version {version} was never in effect ({})",
                target.status.as_str()
            ),
        ));
    }
    let submitted = policy::submit(
        &state,
        &principal,
        &scope,
        target.overrides,
        body.reason,
        Some(version),
    )
    .await?;
    Ok(submitted_response(&state, submitted))
}

/// Approve a proposal; it takes effect at once.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/policy/versions/{version}/approve", tag = "policy",
    request_body = DecidePolicy, params(("tenant" = schema::TenantId, Path), ("version" = i64, Path, minimum = 1, description = "A policy version, from 1")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Approved and in effect", body = PolicyVersionView),
        (status = 409, description = "Not a waiting proposal", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn approve(
    OperatorOn(principal, scope): OperatorOn,
    State(state): State<AppState>,
    ApiPath((_tenant, version)): ApiPath<(TenantId, i64)>,
    ApiJson(body): ApiJson<DecidePolicy>,
) -> Result<Json<PolicyVersionView>, ApiError> {
    let (decided, current) = policy::decide(
        &state,
        &principal,
        &scope,
        version,
        Verdict::Approve,
        body.reason,
    )
    .await?;
    Ok(Json(view(&state, decided, current)))
}

/// Reject a proposal, saying why.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/policy/versions/{version}/reject", tag = "policy",
    request_body = DecidePolicy, params(("tenant" = schema::TenantId, Path), ("version" = i64, Path, minimum = 1, description = "A policy version, from 1")),
    security(("api_key" = [])),
    responses((status = 200, description = "Rejected", body = PolicyVersionView)))]
pub(super) async fn reject(
    OperatorOn(principal, scope): OperatorOn,
    State(state): State<AppState>,
    ApiPath((_tenant, version)): ApiPath<(TenantId, i64)>,
    ApiJson(body): ApiJson<DecidePolicy>,
) -> Result<Json<PolicyVersionView>, ApiError> {
    let (decided, current) = policy::decide(
        &state,
        &principal,
        &scope,
        version,
        Verdict::Reject,
        body.reason,
    )
    .await?;
    Ok(Json(view(&state, decided, current)))
}

/// Withdraw a proposal that waits.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/policy/versions/{version}/withdraw", tag = "policy",
    request_body = DecidePolicy, params(("tenant" = schema::TenantId, Path), ("version" = i64, Path, minimum = 1, description = "A policy version, from 1")),
    security(("api_key" = [])),
    responses((status = 200, description = "Withdrawn", body = PolicyVersionView)))]
pub(super) async fn withdraw(
    Member(principal, scope, _role): Member<Admin>,
    State(state): State<AppState>,
    ApiPath((_tenant, version)): ApiPath<(TenantId, i64)>,
    ApiJson(body): ApiJson<DecidePolicy>,
) -> Result<Json<PolicyVersionView>, ApiError> {
    let (decided, current) = policy::decide(
        &state,
        &principal,
        &scope,
        version,
        Verdict::Withdraw,
        body.reason,
    )
    .await?;
    Ok(Json(view(&state, decided, current)))
}
