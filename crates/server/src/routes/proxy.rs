//! The gateway's routes: requests for the team's services, forwarded by
//! `gateway`, and the keys upstreams verify the tenant context with.

use std::sync::Arc;
use tenantd_api::schema;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tenantd_api::{Problem, SigningKeyView};
use tenantd_core::{Principal, ServiceName};

use super::access::{Admin, Member, Operator, Proxied, Public};
use crate::edge::RequestId;
use crate::extract::{ApiPath, ApiQuery};
use crate::gateway::{self, Service};
use crate::problem::ApiError;
use crate::state::AppState;
use tenantd_store::AuditAction;

/// Forward a request to a service: `/v1/proxy/{service}/{path}` reaches the
/// service's upstream at `<path_prefix>/{path}`, query included. The upstream
/// gets no credentials; it gets `X-Tenant-Id` and `X-Tenant-Context`, a
/// compact JWS (EdDSA) to verify with `/.well-known/jwks.json`. Answers are
/// the upstream's, streamed; the gateway's own refusals are problems.
#[utoipa::path(method(get, head, post, put, patch, delete, options),
    path = "/v1/proxy/{service}/{path}", tag = "gateway",
    params(("service" = schema::ServiceName, Path), ("path" = String, Path, description = "The rest of the path, sent to the upstream")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The upstream's answer, whatever its status"),
        (status = 404, description = "No such service (`service_not_found`)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The tenant's bulkhead for the service is full (`bulkhead_full`), or a rate limit or quota", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The upstream refused the connection or broke off (`upstream_refused`, `upstream_error`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The tenant's circuit to the service is open (`upstream_unavailable`)", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "The upstream did not answer in time (`upstream_timeout`)", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn forward(
    _access: Proxied,
    State(state): State<AppState>,
    mut request: Request,
) -> Response {
    // What authorization put on the request, taken rather than copied.
    let extensions = request.extensions_mut();
    let (Some(service), Some(principal), Some(RequestId(request_id)), Some(ForwardPath(rest))) = (
        extensions.remove::<Arc<Service>>(),
        extensions.remove::<Principal>(),
        extensions.remove::<RequestId>(),
        extensions.remove::<ForwardPath>(),
    ) else {
        tracing::error!("a proxied request reached its handler without its authorization");
        return ApiError::new(tenantd_core::ErrorCode::Internal).into_response();
    };
    let caller = gateway::Caller {
        principal: &principal,
        request_id: &request_id,
        now: state.clock.now(),
    };
    gateway::forward(
        &state.gateway,
        &service,
        caller,
        &rest,
        request,
        &state.admission.metrics,
    )
    .await
}

/// Forward a request to the root of a service (`<path_prefix>` on the upstream).
#[utoipa::path(method(get, head, post, put, patch, delete, options),
    path = "/v1/proxy/{service}", tag = "gateway",
    params(("service" = schema::ServiceName, Path)),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The upstream's answer, whatever its status"),
        (status = 404, description = "No such service (`service_not_found`)", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn forward_root(
    access: Proxied,
    state: State<AppState>,
    request: Request,
) -> Response {
    forward(access, state, request).await
}

/// The public keys of the tenant context, as a JWK set (Ed25519 `OKP` keys).
/// Upstreams may cache it for the `max-age` it is sent with.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "gateway",
    responses((status = 200, description = "The published keys", content_type = "application/jwk-set+json")))]
pub(super) async fn jwks(_access: Public, State(state): State<AppState>) -> Response {
    let keyring = &state.gateway.keyring;
    let body = keyring.jwks(state.clock.now()).to_string();
    let max_age = format!(
        "public, max-age={}",
        keyring.config().jwks_max_age.as_secs()
    );
    (
        [
            (header::CONTENT_TYPE, "application/jwk-set+json".to_owned()),
            (header::CACHE_CONTROL, max_age),
        ],
        body,
    )
        .into_response()
}

/// The signing keys: each published key's schedule and which one signs now.
#[utoipa::path(get, path = "/v1/platform/signing-keys", tag = "gateway",
    security(("api_key" = [])),
    responses((status = 200, description = "The published keys, oldest first", body = Vec<SigningKeyView>)))]
pub(super) async fn list_signing_keys(
    Operator(_principal, _operator): Operator,
    State(state): State<AppState>,
) -> Json<Vec<SigningKeyView>> {
    Json(state.gateway.keyring.views(state.clock.now()))
}

/// Rotate the signing key: a new key is published now and signs from
/// `gateway.context.publish_ahead` on; the keys before it stay published
/// until what they signed has expired.
#[utoipa::path(post, path = "/v1/platform/signing-keys/rotate", tag = "gateway",
    security(("api_key" = [])),
    responses((status = 201, description = "The new key", body = SigningKeyView)))]
pub(super) async fn rotate_signing_key(
    Operator(principal, _operator): Operator,
    State(state): State<AppState>,
) -> Result<(axum::http::StatusCode, Json<SigningKeyView>), ApiError> {
    let audit = state.audit(
        &principal,
        None,
        AuditAction::SigningKeyRotate,
        "",
        serde_json::Value::Null,
    );
    let now = state.clock.now();
    let key = state
        .gateway
        .keyring
        .rotate(&state.catalog, now, audit)
        .await?;
    Ok((axum::http::StatusCode::CREATED, Json(key)))
}

/// `?prefix=` of a cache purge.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct PurgeQuery {
    /// Only responses whose path (after `/v1/proxy/{service}`) starts with
    /// this, e.g. `/invoices`; all of the tenant's for the service without it.
    pub prefix: Option<String>,
}

/// Purge a tenant's cached responses of a service, all of them or those
/// under a path prefix; audited as `proxy_cache.purge`. Writes through the
/// gateway already drop the responses of the paths they change.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/proxy-cache/{service}", tag = "gateway",
    params(("tenant" = schema::TenantId, Path), ("service" = schema::ServiceName, Path), PurgeQuery),
    security(("api_key" = [])),
    responses(
        (status = 204, description = "Purged"),
        (status = 404, description = "No such tenant or service", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn purge_cache(
    Member(principal, scope, _role): Member<Admin>,
    State(state): State<AppState>,
    ApiPath((_tenant, service)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<PurgeQuery>,
) -> Result<StatusCode, ApiError> {
    let service = service_named(&state, &service)?;
    let prefix = query.prefix.unwrap_or_default();
    if !(prefix.is_empty() || prefix.starts_with('/')) {
        return Err(ApiError::invalid_parameter("prefix must start with /"));
    }
    crate::app::proxy_cache::purge(&state, &principal, &scope, &service.config.name, prefix)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The path after `/v1/proxy/{service}`, as the client encoded it: what
/// the upstream gets after the service's `path_prefix`.
#[derive(Debug, Clone)]
pub(super) struct ForwardPath(pub String);

/// Splits a proxy route's path, as the client encoded it, into the service
/// segment and the rest (empty, or starting with `/`). A service name is a
/// plain slug, so a percent-encoded byte in its segment is refused: decoding
/// it for the lookup but not for the rest would forward a path cut at the
/// wrong place, past the service's `path_prefix`.
pub(super) fn split_path(path: &str) -> Result<(&str, &str), ApiError> {
    let after = path.strip_prefix("/v1/proxy/").unwrap_or_default();
    let (service, rest) = after
        .find('/')
        .map_or((after, ""), |slash| after.split_at(slash));
    if service.contains('%') {
        return Err(ApiError::invalid_parameter(
            "service: a service name is sent as it is, not percent-encoded",
        ));
    }
    Ok((service, rest))
}

/// The service a proxy route names, if it is configured.
pub(super) fn service_named(state: &AppState, raw: &str) -> Result<Arc<Service>, ApiError> {
    let unknown = || {
        ApiError::with_detail(
            tenantd_core::ErrorCode::ServiceNotFound,
            format!("no service named {raw:?} is behind the gateway"),
        )
    };
    let name = ServiceName::parse(raw).map_err(|_| unknown())?;
    state.gateway.service(&name).cloned().ok_or_else(unknown)
}
