//! Plan routes (operators): create a plan, read and list plans, write a new
//! version, read a plan's versions. Tenants on a plan follow its latest
//! version unless pinned; a new version takes effect at their next request.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tenantd_api::schema;
use tenantd_api::{Page, PlanPage, PlanView, Problem, WritePlan};
use tenantd_core::plan::Plan;
use tenantd_core::{ErrorCode, PlanId};
use tenantd_store::plans::{PlanError, PlanVersion};

use super::access::Operator;
use crate::app::plans;
use crate::app::policy::check_reason;
use crate::extract::{page_of, ApiJson, ApiPath, ApiQuery, PageQuery};
use crate::problem::ApiError;
use crate::state::AppState;

impl From<PlanError> for ApiError {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::Exists(_) => ApiError::with_detail(ErrorCode::PlanExists, e.to_string()),
            PlanError::Changed { .. } => {
                ApiError::with_detail(ErrorCode::InvalidTransition, e.to_string())
            }
            PlanError::Store(e) => e.into(),
        }
    }
}

fn view(v: PlanVersion) -> PlanView {
    PlanView {
        id: v.plan.id.clone(),
        version: v.version,
        plan: (&v.plan).into(),
        diff: v.diff.into_iter().map(Into::into).collect(),
        reason: v.reason,
        actor_key: v.actor,
        created_at: v.created_at,
    }
}

/// The body's plan, checked as the configuration's plans are.
fn parse_plan(body: &WritePlan) -> Result<Plan, ApiError> {
    let plan = Plan::try_from(body.plan.clone())
        .map_err(|e| ApiError::invalid_body(format!("plan.{e}")))?;
    plan.check().map_err(ApiError::invalid_body)?;
    check_reason(&body.reason)?;
    Ok(plan)
}

/// Create a plan.
#[utoipa::path(post, path = "/v1/plans", tag = "plans", request_body = WritePlan,
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Created, as version 1", body = PlanView),
        (status = 409, description = "The id is taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a valid plan", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn create(
    Operator(principal, _operator): Operator,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<WritePlan>,
) -> Result<Response, ApiError> {
    let plan = parse_plan(&body)?;
    if body.replaces.is_some() {
        return Err(ApiError::invalid_body(
            "replaces: a new plan replaces nothing; use PUT /v1/plans/{plan}",
        ));
    }
    let created = view(plans::write_version(&state, &principal, &plan, None, &body.reason).await?);
    let location = format!("/v1/plans/{}", created.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(created),
    )
        .into_response())
}

/// Write a plan's next version. Tenants following the plan get it at their
/// next request; pinned tenants keep their version.
#[utoipa::path(put, path = "/v1/plans/{plan}", tag = "plans", request_body = WritePlan,
    params(("plan" = schema::PlanId, Path)), security(("api_key" = [])),
    responses(
        (status = 200, description = "The new version", body = PlanView),
        (status = 409, description = "`replaces` is not the latest version", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn update(
    Operator(principal, _operator): Operator,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<PlanId>,
    ApiJson(body): ApiJson<WritePlan>,
) -> Result<Json<PlanView>, ApiError> {
    let plan = parse_plan(&body)?;
    if plan.id != id {
        return Err(ApiError::invalid_body(format!(
            "plan.id: {} is not the plan named in the path ({id})",
            plan.id
        )));
    }
    let latest = state
        .admission
        .latest_version(&id)
        .ok_or_else(ApiError::not_found)?;
    let replaces = body.replaces.unwrap_or(latest);
    let written =
        plans::write_version(&state, &principal, &plan, Some(replaces), &body.reason).await?;
    Ok(Json(view(written)))
}

/// A plan's latest version.
#[utoipa::path(get, path = "/v1/plans/{plan}", tag = "plans",
    params(("plan" = schema::PlanId, Path)), security(("api_key" = [])),
    responses(
        (status = 200, description = "The plan", body = PlanView),
        (status = 404, description = "No such plan", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn get(
    Operator(_principal, _operator): Operator,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<PlanId>,
) -> Result<Json<PlanView>, ApiError> {
    let latest = state
        .catalog
        .plan_versions(&id, None, 1)
        .await?
        .pop()
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(view(latest)))
}

/// Plans in id order, each at its latest version.
#[utoipa::path(get, path = "/v1/plans", tag = "plans", params(PageQuery),
    security(("api_key" = [])),
    responses((status = 200, description = "A page of plans", body = Page<PlanView>)))]
pub(super) async fn list(
    Operator(_principal, _operator): Operator,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<PlanPage>, ApiError> {
    let limit = query.limit()?;
    let after = query.after(|s| PlanId::parse(s).ok())?;
    let rows = state
        .catalog
        .latest_plans(after.as_ref(), limit + 1)
        .await?;
    let (rows, next_cursor) = page_of(rows, limit, |v| v.plan.id.to_string());
    Ok(Json(PlanPage {
        items: rows.into_iter().map(view).collect(),
        next_cursor,
    }))
}

/// A plan's versions, newest first.
#[utoipa::path(get, path = "/v1/plans/{plan}/versions", tag = "plans",
    params(("plan" = schema::PlanId, Path), PageQuery), security(("api_key" = [])),
    responses((status = 200, description = "A page of versions", body = Page<PlanView>)))]
pub(super) async fn versions(
    Operator(_principal, _operator): Operator,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<PlanId>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<PlanPage>, ApiError> {
    if !state.admission.has_plan(&id, None) {
        return Err(ApiError::not_found());
    }
    let limit = query.limit()?;
    let before = query.after(|s| s.parse::<i64>().ok())?;
    let rows = state.catalog.plan_versions(&id, before, limit + 1).await?;
    let (rows, next_cursor) = page_of(rows, limit, |v| v.version.to_string());
    Ok(Json(PlanPage {
        items: rows.into_iter().map(view).collect(),
        next_cursor,
    }))
}
