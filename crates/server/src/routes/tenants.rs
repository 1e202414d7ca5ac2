//! Operator routes for tenants: create, read, list, rename, and the
//! lifecycle (suspend, resume, soft delete, restore, purge).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use tenantd_api::schema;
use tenantd_api::{
    CreateTenant, JobKind as WireJobKind, JobPage, JobState as WireJobState, JobView,
    MoveStep as WireMoveStep, MoveTenant, Page, Problem, Tenant, TenantPage, UpdateTenant,
};
use tenantd_core::placement::place;
use tenantd_core::tenant::TenantAction;
use tenantd_core::{ErrorCode, JobId, TenantId, TenantStatus};
use tenantd_store::data::Placement;
use tenantd_store::jobs::{Job, JobKind, JobState, MoveStep};
use tenantd_store::AuditAction;
use tenantd_store::StoreError;
use utoipa::IntoParams;

use super::access::{Operator, OperatorOn};
use crate::app::moves::start_move;
use crate::app::tenants::{self, load};
use crate::extract::{page_of, ApiJson, ApiPath, ApiQuery, PageQuery};
use crate::problem::ApiError;
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListTenantsQuery {
    /// `next_cursor` from the previous page.
    #[param(pattern = "^[A-Za-z0-9_-]+$")]
    pub cursor: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// Only tenants with this status.
    #[param(value_type = Option<schema::TenantStatus>)]
    pub status: Option<TenantStatus>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListJobsQuery {
    /// `next_cursor` from the previous page.
    #[param(pattern = "^[A-Za-z0-9_-]+$")]
    pub cursor: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// Only this tenant's jobs.
    #[param(value_type = Option<schema::TenantId>)]
    pub tenant: Option<TenantId>,
    /// Only jobs in this state.
    #[param(value_type = Option<WireJobState>)]
    pub state: Option<String>,
}

/// Create a tenant.
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = CreateTenant,
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Created", body = Tenant),
        (status = 409, description = "The id is taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid body", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn create(
    Operator(principal, _operator): Operator,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateTenant>,
) -> Result<Response, ApiError> {
    let tenant = tenants::create(&state, &principal, body).await?;
    let location = format!("/v1/tenants/{}", tenant.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(Tenant::from(tenant)),
    )
        .into_response())
}

/// List tenants in id order.
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", params(ListTenantsQuery),
    security(("api_key" = [])),
    responses((status = 200, description = "A page of tenants", body = Page<Tenant>)))]
pub(super) async fn list(
    Operator(_principal, _operator): Operator,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListTenantsQuery>,
) -> Result<Json<TenantPage>, ApiError> {
    let page = PageQuery {
        cursor: query.cursor,
        limit: query.limit,
    };
    let limit = page.limit()?;
    let after = page.after(|s| TenantId::parse(s).ok())?;
    let rows = state
        .catalog
        .list_tenants(after.as_ref(), limit + 1, query.status)
        .await?;
    let (items, next_cursor) = page_of(rows, limit, |t| t.id.to_string());
    let items = items.into_iter().map(Tenant::from).collect();
    Ok(Json(TenantPage { items, next_cursor }))
}

/// Get a tenant, whatever its status.
#[utoipa::path(get, path = "/v1/tenants/{tenant}", tag = "tenants",
    params(("tenant" = schema::TenantId, Path)), security(("api_key" = [])),
    responses(
        (status = 200, description = "The tenant", body = Tenant),
        (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn get(
    Operator(_principal, operator): Operator,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<TenantId>,
) -> Result<Json<Tenant>, ApiError> {
    Ok(Json(load(&state, &operator, &id).await?.into()))
}

/// Rename a tenant, or change its plan or billing day. Its id, and so every
/// reference to it, never changes; usage so far is kept on a plan change.
#[utoipa::path(patch, path = "/v1/tenants/{tenant}", tag = "tenants", request_body = UpdateTenant,
    params(("tenant" = schema::TenantId, Path)), security(("api_key" = [])),
    responses((status = 200, description = "The updated tenant", body = Tenant)))]
pub(super) async fn update(
    Operator(principal, _operator): Operator,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<TenantId>,
    ApiJson(body): ApiJson<UpdateTenant>,
) -> Result<Json<Tenant>, ApiError> {
    Ok(Json(
        tenants::update(&state, &principal, &id, body).await?.into(),
    ))
}

/// Suspend a tenant: its keys get 403 `tenant_suspended` until it is resumed.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/suspend", tag = "tenants",
    params(("tenant" = schema::TenantId, Path)), security(("api_key" = [])),
    responses(
        (status = 200, description = "The suspended tenant", body = Tenant),
        (status = 409, description = "Not active", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn suspend(
    Operator(principal, _operator): Operator,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<TenantId>,
) -> Result<Json<Tenant>, ApiError> {
    tenants::transition(&state, &principal, &id, TenantAction::Suspend)
        .await
        .map(|tenant| Json(tenant.into()))
}

/// Resume a suspended tenant.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/resume", tag = "tenants",
    params(("tenant" = schema::TenantId, Path)), security(("api_key" = [])),
    responses((status = 200, description = "The active tenant", body = Tenant)))]
pub(super) async fn resume(
    Operator(principal, _operator): Operator,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<TenantId>,
) -> Result<Json<Tenant>, ApiError> {
    tenants::transition(&state, &principal, &id, TenantAction::Resume)
        .await
        .map(|tenant| Json(tenant.into()))
}

/// Soft-delete a tenant: its keys stop working; it is purged after
/// `purge_after` unless restored.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}", tag = "tenants",
    params(("tenant" = schema::TenantId, Path)), security(("api_key" = [])),
    responses((status = 200, description = "The deleted tenant", body = Tenant)))]
pub(super) async fn delete(
    Operator(principal, _operator): Operator,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<TenantId>,
) -> Result<Json<Tenant>, ApiError> {
    tenants::transition(&state, &principal, &id, TenantAction::Delete)
        .await
        .map(|tenant| Json(tenant.into()))
}

/// Bring a soft-deleted tenant back, suspended, so that resuming it is a
/// deliberate second step.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/restore", tag = "tenants",
    params(("tenant" = schema::TenantId, Path)), security(("api_key" = [])),
    responses((status = 200, description = "The restored, suspended tenant", body = Tenant)))]
pub(super) async fn restore(
    Operator(principal, _operator): Operator,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<TenantId>,
) -> Result<Json<Tenant>, ApiError> {
    tenants::transition(&state, &principal, &id, TenantAction::Restore)
        .await
        .map(|tenant| Json(tenant.into()))
}

/// Purge a soft-deleted tenant now, with its keys and audit trail.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/purge", tag = "tenants",
    params(("tenant" = schema::TenantId, Path)), security(("api_key" = [])),
    responses(
        (status = 204, description = "Purged"),
        (status = 409, description = "Not deleted", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn purge(
    Operator(principal, operator): Operator,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<TenantId>,
) -> Result<StatusCode, ApiError> {
    let not_deleted = || {
        ApiError::with_detail(
            ErrorCode::InvalidTransition,
            "only a deleted tenant can be purged",
        )
    };
    let audit = state.audit(
        &principal,
        None,
        AuditAction::TenantPurge,
        id.as_str(),
        json!({}),
    );
    if tenants::purge(&state, &operator, &id, &audit).await? {
        return Ok(StatusCode::NO_CONTENT);
    }
    // Not purged: say whether the tenant is missing or not deleted.
    load(&state, &operator, &id).await?;
    Err(not_deleted())
}

/// A job as the API shows it.
fn job_view(job: Job) -> JobView {
    JobView {
        kind: match job.kind {
            JobKind::Move => WireJobKind::Move,
        },
        state: match job.state {
            JobState::Running => WireJobState::Running,
            JobState::Succeeded => WireJobState::Succeeded,
            JobState::Failed => WireJobState::Failed,
        },
        step: match job.step {
            MoveStep::Copying => WireMoveStep::Copying,
            MoveStep::Verifying => WireMoveStep::Verifying,
            MoveStep::Switching => WireMoveStep::Switching,
            MoveStep::Cleaning => WireMoveStep::Cleaning,
            MoveStep::Done => WireMoveStep::Done,
        },
        id: job.id,
        tenant: job.tenant,
        details: job.details,
        error: job.error,
        created_at: job.created_at,
        updated_at: job.updated_at,
    }
}

/// Move a tenant's data to another pool of its region or another isolation
/// model, as a job: copy, verify, switch, remove the old copy. Writes get
/// 503 `tenant_maintenance` while the copy runs; a failure leaves the
/// tenant whole where it was.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/move", tag = "tenants", request_body = MoveTenant,
    params(("tenant" = schema::TenantId, Path)), security(("api_key" = [])),
    responses(
        (status = 202, description = "The job started; poll its Location", body = JobView),
        (status = 409, description = "Deleted, already there, or a job is running", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No pool fits", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn move_tenant(
    OperatorOn(principal, scope): OperatorOn,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<MoveTenant>,
) -> Result<Response, ApiError> {
    let tenant = tenants::of_scope(&state, &scope).await?;
    if tenant.status == TenantStatus::Deleted {
        return Err(ApiError::with_detail(
            ErrorCode::InvalidTransition,
            "a deleted tenant cannot be moved",
        ));
    }
    let isolation = body.isolation.unwrap_or(tenant.isolation);
    // Without a pool named, the tenant stays in its pool if that pool offers
    // the model, and goes to the first pool of its region that does if not.
    let pool = match &body.pool {
        Some(pool) => place(&state.pools, &tenant.region, isolation, Some(pool)),
        None => place(&state.pools, &tenant.region, isolation, Some(&tenant.pool))
            .or_else(|_| place(&state.pools, &tenant.region, isolation, None)),
    }
    .map_err(|e| ApiError::with_detail(ErrorCode::PlacementFailed, e.to_string()))?;
    let to = Placement { pool, isolation };
    if to.pool == tenant.pool && to.isolation == tenant.isolation {
        return Err(ApiError::with_detail(
            ErrorCode::InvalidTransition,
            "the tenant is already there",
        ));
    }
    let job = match start_move(&state, &principal, scope, &tenant, to).await {
        Err(StoreError::Conflict) => {
            return Err(ApiError::with_detail(
                ErrorCode::InvalidTransition,
                "a job is already running for this tenant",
            ))
        }
        other => other?,
    };
    let location = format!("/v1/jobs/{}", job.id.as_str());
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(job_view(job)),
    )
        .into_response())
}

/// Jobs, newest first: every tenant's, or one's, in any state or one.
#[utoipa::path(get, path = "/v1/jobs", tag = "tenants",
    params(ListJobsQuery), security(("api_key" = [])),
    responses((status = 200, description = "A page of jobs", body = Page<JobView>)))]
pub(super) async fn list_jobs(
    Operator(_principal, _operator): Operator,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListJobsQuery>,
) -> Result<Json<JobPage>, ApiError> {
    let job_state = query
        .state
        .as_deref()
        .map(|s| {
            JobState::parse(s).ok_or_else(|| {
                ApiError::invalid_parameter("state: one of running, succeeded, failed")
            })
        })
        .transpose()?;
    let page = PageQuery {
        cursor: query.cursor,
        limit: query.limit,
    };
    let limit = page.limit()?;
    let before = page.after(|s| {
        let (at, id) = s.split_once('.')?;
        let at = time::OffsetDateTime::from_unix_timestamp_nanos(at.parse().ok()?).ok()?;
        Some((at, JobId::parse(id).ok()?))
    })?;
    let rows = state
        .catalog
        .jobs(
            query.tenant.as_ref(),
            job_state,
            before.as_ref().map(|(at, id)| (*at, id)),
            limit + 1,
        )
        .await?;
    let (rows, next_cursor) = page_of(rows, limit, |j| {
        format!("{}.{}", j.created_at.unix_timestamp_nanos(), j.id.as_str())
    });
    Ok(Json(JobPage {
        items: rows.into_iter().map(job_view).collect(),
        next_cursor,
    }))
}

/// Get a job.
#[utoipa::path(get, path = "/v1/jobs/{job_id}", tag = "tenants",
    params(("job_id" = schema::JobId, Path)), security(("api_key" = [])),
    responses((status = 200, description = "The job", body = JobView)))]
pub(super) async fn get_job(
    Operator(_principal, _operator): Operator,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<JobId>,
) -> Result<Json<JobView>, ApiError> {
    let job = state
        .catalog
        .job(&id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(job_view(job)))
}
