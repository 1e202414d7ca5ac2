//! Usage routes: a tenant's standing against its quotas, its hourly history
//! and quota events (its members, or an operator), its add-ons (granted by
//! operators), and the Prometheus metrics (operators).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use tenantd_api::schema;
use tenantd_api::{
    AddOnPage, AddOnView, Counter, CreateAddOn, Page, Problem, QuotaEventPage, QuotaEventView,
    QuotaUsage, UsageHistory, UsageHour, UsageView,
};
use tenantd_core::plan::{AddOn, Metric, Period};
use tenantd_core::quota::burn;
use time::OffsetDateTime;
use utoipa::IntoParams;

use super::access::{Member, Operator, OperatorOn, Reader};
use crate::app::{addons, tenants};
use crate::extract::{page_of, ApiJson, ApiQuery, PageQuery};
use crate::problem::ApiError;
use crate::state::AppState;

fn at(secs: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(secs).ok()
}

/// The tenant's usage against every quota of its plan, with add-ons.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/usage", tag = "usage",
    params(("tenant" = schema::TenantId, Path)), security(("api_key" = [])),
    responses((status = 200, description = "Usage now", body = UsageView)))]
pub(super) async fn usage(
    Member(_principal, scope, _role): Member<Reader>,
    State(state): State<AppState>,
) -> Result<Json<UsageView>, ApiError> {
    let tenant = tenants::of_scope(&state, &scope).await?;
    let plan = state
        .admission
        .effective_plan(&tenant.id, &tenant.plan, tenant.plan_version);
    let now = state.clock.now();
    let secs = now.unix_timestamp();
    let day = tenant.billing_day;
    let (quotas, counters) = state.admission.ledgers.with(&tenant.id, |u| {
        let quotas = plan
            .quotas
            .iter()
            .map(|quota| {
                let standing = u.ledger.standing(quota, &u.add_ons, day, now);
                let burn = burn(&standing, secs);
                QuotaUsage {
                    metric: quota.metric(),
                    period: quota.period(),
                    used: standing.used,
                    soft: standing.soft,
                    hard: standing.hard,
                    remaining: standing.remaining(),
                    in_grace: standing.in_grace,
                    resets_at: standing.window.and_then(|(_, end)| at(end)),
                    burn_per_hour: burn.map(|b| b.per_hour),
                    exhausted_at: burn.and_then(|b| b.exhausted_at).and_then(at),
                }
            })
            .collect();
        let mut counters = Vec::new();
        for metric in Metric::ALL {
            if metric.is_counted() {
                for period in Period::ALL {
                    counters.push(Counter {
                        metric,
                        period: Some(period),
                        value: u.ledger.used(metric, period, day, secs),
                    });
                }
            } else {
                counters.push(Counter {
                    metric,
                    period: None,
                    value: u.ledger.level(metric),
                });
            }
        }
        (quotas, counters)
    });
    Ok(Json(UsageView {
        tenant: tenant.id,
        plan: tenant.plan,
        billing_day: day,
        at: now,
        quotas,
        counters,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Hours back from now, 1 to 744 (default 72).
    #[param(minimum = 1, maximum = 744)]
    pub hours: Option<u32>,
}

/// The tenant's metered usage per hour, as written behind (up to about a
/// second behind the live counters).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/usage/history", tag = "usage",
    params(("tenant" = schema::TenantId, Path), HistoryQuery), security(("api_key" = [])),
    responses((status = 200, description = "Hourly usage", body = UsageHistory)))]
pub(super) async fn history(
    Member(_principal, scope, _role): Member<Reader>,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<UsageHistory>, ApiError> {
    let hours = query.hours.unwrap_or(72);
    if !(1..=744).contains(&hours) {
        return Err(ApiError::invalid_parameter("hours must be from 1 to 744"));
    }
    let now = state.clock.now().unix_timestamp();
    let this_hour = now - now.rem_euclid(3600);
    let from = this_hour - 3600 * (i64::from(hours) - 1);
    let rows = state
        .catalog
        .usage_hours(&scope, from, this_hour + 3600)
        .await?;
    Ok(Json(UsageHistory {
        tenant: scope.tenant().clone(),
        hours: rows
            .into_iter()
            .filter_map(|(hour, u)| {
                Some(UsageHour {
                    hour: at(hour)?,
                    requests: u.requests,
                    rejected: u.rejected,
                    ingress_bytes: u.ingress_bytes,
                    egress_bytes: u.egress_bytes,
                    seat_seconds: u.seat_micros as f64 / 1e6,
                })
            })
            .collect(),
    }))
}

/// The tenant's quota events (soft limits passed, grace started), newest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/usage/events", tag = "usage",
    params(("tenant" = schema::TenantId, Path), PageQuery), security(("api_key" = [])),
    responses((status = 200, description = "A page of quota events, newest first", body = Page<QuotaEventView>)))]
pub(super) async fn events(
    Member(_principal, scope, _role): Member<Reader>,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<QuotaEventPage>, ApiError> {
    let limit = query.limit()?;
    let before = query.after(|s| s.parse::<i64>().ok())?;
    let rows = state
        .catalog
        .quota_events(&scope, before, limit + 1)
        .await?;
    let (rows, next_cursor) = page_of(rows, limit, |e| e.seq.to_string());
    let items = rows
        .into_iter()
        .map(|e| QuotaEventView {
            at: e.at,
            kind: e.kind,
            metric: e.metric,
            period: e.period,
            used: e.used,
            limit: e.limit,
        })
        .collect();
    Ok(Json(QuotaEventPage { items, next_cursor }))
}

fn add_on_view(id: i64, a: AddOn) -> AddOnView {
    AddOnView {
        id,
        metric: a.metric,
        period: a.period,
        amount: a.amount,
        expires_at: a.expires_at,
    }
}

/// Grant the tenant a temporary raise of one quota.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/addons", tag = "usage", request_body = CreateAddOn,
    params(("tenant" = schema::TenantId, Path)), security(("api_key" = [])),
    responses(
        (status = 201, description = "Granted", body = AddOnView),
        (status = 422, description = "Invalid body", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn create_add_on(
    OperatorOn(principal, scope): OperatorOn,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateAddOn>,
) -> Result<Response, ApiError> {
    let (id, add_on) = addons::grant(&state, &principal, &scope, body).await?;
    Ok((StatusCode::CREATED, Json(add_on_view(id, add_on))).into_response())
}

/// The tenant's add-ons that have not expired, oldest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/addons", tag = "usage",
    params(("tenant" = schema::TenantId, Path), PageQuery), security(("api_key" = [])),
    responses((status = 200, description = "A page of active add-ons", body = Page<AddOnView>)))]
pub(super) async fn list_add_ons(
    Member(_principal, scope, _role): Member<Reader>,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<AddOnPage>, ApiError> {
    let limit = query.limit()?;
    let after = query.after(|s| s.parse::<i64>().ok())?;
    let rows = state
        .catalog
        .add_ons(&scope, state.clock.now(), after.unwrap_or(0), limit + 1)
        .await?;
    let (rows, next_cursor) = page_of(rows, limit, |(id, _, _)| id.to_string());
    Ok(Json(AddOnPage {
        items: rows
            .into_iter()
            .map(|(id, _, a)| add_on_view(id, a))
            .collect(),
        next_cursor,
    }))
}

/// Prometheus metrics, in the OpenMetrics text format.
#[utoipa::path(get, path = "/metrics", tag = "meta", security(("api_key" = [])),
    responses((status = 200, description = "Metrics", body = String,
        content_type = "application/openmetrics-text")))]
pub(super) async fn metrics(
    Operator(_principal, _operator): Operator,
    State(state): State<AppState>,
) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.admission.metrics.encode(),
    )
        .into_response()
}
