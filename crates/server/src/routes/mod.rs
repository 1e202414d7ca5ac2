//! Route: the route table, where every route declares the access it needs,
//! and the one middleware that enforces it.
//!
//! Invariant: a route exists only as a row of `routes()`, so no route can
//! skip authorization, and the authorization matrix test walks this table.

pub mod access;
mod audit;
mod cluster;
mod data;
mod keys;
mod meta;
mod plans;
mod policy;
mod proxy;
mod tenants;
mod usage;

use axum::extract::{FromRequestParts, RawPathParams, Request, State};
use axum::handler::Handler;
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use tenantd_core::plan::OpClass;
use tenantd_core::{ErrorCode, Principal, Role, TenantId, TenantScope};

use std::sync::Arc;

use crate::edge;
use crate::gateway::Service;
use crate::problem::ApiError;
use crate::state::AppState;
use access::Guarded;

pub(crate) use meta::ApiDoc;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a key: health checks and the API description.
    Public,
    /// Any valid key of an active tenant or of the platform.
    AnyKey,
    /// Operator keys only.
    Operator,
    /// Operator keys only, acting on the tenant named by the `{tenant}` path
    /// segment, whatever its status: the request carries that tenant's
    /// `TenantScope`, and a tenant that does not exist is 404.
    OperatorOn,
    /// Keys of the tenant named by the `{tenant}` path segment with at least
    /// this role, or an operator. Keys of other tenants get 404, as if the
    /// tenant did not exist.
    Tenant(Role),
    /// The caller's own tenant's data, with at least this role. Operators
    /// manage tenants; they do not read or write their records.
    Data(Role),
    /// A service behind the gateway (`{service}`), for keys of a tenant with
    /// a role the service allows. Operators have no tenant to call it for.
    Proxy,
}

/// The methods the gateway forwards.
const PROXY_METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// One row of the route table.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub method: Method,
    /// The axum path, with `{name}` parameters as in OpenAPI.
    pub path: &'static str,
    pub access: Access,
}

struct Route {
    spec: RouteSpec,
    handler: MethodRouter<AppState>,
}

/// A row of the table: the handler's first extractor names its access.
fn route<H, T>(method: Method, path: &'static str, handler: H) -> Route
where
    H: Handler<T, AppState> + Guarded<T>,
    T: 'static,
{
    let access = <H as Guarded<T>>::ACCESS;
    let filter = MethodFilter::try_from(method.clone()).expect("the table uses standard methods");
    Route {
        spec: RouteSpec {
            method,
            path,
            access,
        },
        handler: on(filter, handler),
    }
}

fn routes() -> Vec<Route> {
    use Method as M;
    let mut routes = vec![
        route(M::GET, "/healthz", meta::healthz),
        route(M::GET, "/readyz", meta::readyz),
        route(M::GET, "/openapi.json", meta::openapi),
        route(M::GET, "/v1/me", meta::me),
        route(M::GET, "/v1/cluster", cluster::cluster),
        route(M::GET, "/metrics", usage::metrics),
        // Tenants, managed by operators.
        route(M::POST, "/v1/tenants", tenants::create),
        route(M::GET, "/v1/tenants", tenants::list),
        route(M::GET, "/v1/tenants/{tenant}", tenants::get),
        route(M::PATCH, "/v1/tenants/{tenant}", tenants::update),
        route(M::DELETE, "/v1/tenants/{tenant}", tenants::delete),
        route(M::POST, "/v1/tenants/{tenant}/suspend", tenants::suspend),
        route(M::POST, "/v1/tenants/{tenant}/resume", tenants::resume),
        route(M::POST, "/v1/tenants/{tenant}/restore", tenants::restore),
        route(M::POST, "/v1/tenants/{tenant}/purge", tenants::purge),
        route(M::POST, "/v1/tenants/{tenant}/move", tenants::move_tenant),
        route(M::GET, "/v1/jobs", tenants::list_jobs),
        route(M::GET, "/v1/jobs/{job_id}", tenants::get_job),
        // Plans, versioned, managed by operators.
        route(M::POST, "/v1/plans", plans::create),
        route(M::GET, "/v1/plans", plans::list),
        route(M::GET, "/v1/plans/{plan}", plans::get),
        route(M::PUT, "/v1/plans/{plan}", plans::update),
        route(M::GET, "/v1/plans/{plan}/versions", plans::versions),
        // A tenant's keys and audit trail: its admins, or an operator.
        route(
            M::POST,
            "/v1/tenants/{tenant}/keys",
            keys::create_tenant_key,
        ),
        route(M::GET, "/v1/tenants/{tenant}/keys", keys::list_tenant_keys),
        route(
            M::GET,
            "/v1/tenants/{tenant}/keys/{key_id}",
            keys::get_tenant_key,
        ),
        route(
            M::POST,
            "/v1/tenants/{tenant}/keys/{key_id}/rotate",
            keys::rotate_tenant_key,
        ),
        route(
            M::POST,
            "/v1/tenants/{tenant}/keys/{key_id}/revoke",
            keys::revoke_tenant_key,
        ),
        route(M::GET, "/v1/tenants/{tenant}/audit", audit::tenant_audit),
        route(
            M::GET,
            "/v1/tenants/{tenant}/audit/verify",
            audit::verify_tenant_audit,
        ),
        // A tenant's usage: its members, or an operator. Add-ons: operators grant them.
        route(M::GET, "/v1/tenants/{tenant}/usage", usage::usage),
        route(M::GET, "/v1/tenants/{tenant}/usage/history", usage::history),
        route(M::GET, "/v1/tenants/{tenant}/usage/events", usage::events),
        route(M::POST, "/v1/tenants/{tenant}/addons", usage::create_add_on),
        route(M::GET, "/v1/tenants/{tenant}/addons", usage::list_add_ons),
        // A tenant's policy: read by its members; changed by its admins
        // (within self-service ranges) or operators; proposals decided by operators.
        route(M::GET, "/v1/tenants/{tenant}/policy", policy::get_policy),
        route(
            M::GET,
            "/v1/tenants/{tenant}/policy/versions",
            policy::list_versions,
        ),
        route(
            M::POST,
            "/v1/tenants/{tenant}/policy/versions",
            policy::propose,
        ),
        route(
            M::GET,
            "/v1/tenants/{tenant}/policy/versions/{version}",
            policy::get_version,
        ),
        route(
            M::POST,
            "/v1/tenants/{tenant}/policy/versions/{version}/approve",
            policy::approve,
        ),
        route(
            M::POST,
            "/v1/tenants/{tenant}/policy/versions/{version}/reject",
            policy::reject,
        ),
        route(
            M::POST,
            "/v1/tenants/{tenant}/policy/versions/{version}/withdraw",
            policy::withdraw,
        ),
        route(
            M::POST,
            "/v1/tenants/{tenant}/policy/versions/{version}/revert",
            policy::revert,
        ),
        route(M::GET, "/v1/proposals", policy::waiting),
        // The platform's own keys and audit trail.
        route(M::POST, "/v1/platform/keys", keys::create_platform_key),
        route(M::GET, "/v1/platform/keys", keys::list_platform_keys),
        route(M::GET, "/v1/platform/keys/{key_id}", keys::get_platform_key),
        route(
            M::POST,
            "/v1/platform/keys/{key_id}/rotate",
            keys::rotate_platform_key,
        ),
        route(
            M::POST,
            "/v1/platform/keys/{key_id}/revoke",
            keys::revoke_platform_key,
        ),
        route(M::GET, "/v1/platform/audit", audit::platform_audit),
        route(
            M::GET,
            "/v1/platform/audit/verify",
            audit::verify_platform_audit,
        ),
        // The data API: the caller's own tenant's collections and records.
        route(M::POST, "/v1/collections", data::create_collection),
        route(M::GET, "/v1/collections", data::list_collections),
        route(M::GET, "/v1/collections/{collection}", data::get_collection),
        route(
            M::DELETE,
            "/v1/collections/{collection}",
            data::delete_collection,
        ),
        route(
            M::POST,
            "/v1/collections/{collection}/records",
            data::create_record,
        ),
        route(
            M::GET,
            "/v1/collections/{collection}/records",
            data::list_records,
        ),
        route(M::POST, "/v1/collections/{collection}/batch", data::batch),
        route(
            M::GET,
            "/v1/collections/{collection}/records/{id}",
            data::get_record,
        ),
        route(
            M::PUT,
            "/v1/collections/{collection}/records/{id}",
            data::put_record,
        ),
        route(
            M::PATCH,
            "/v1/collections/{collection}/records/{id}",
            data::patch_record,
        ),
        route(
            M::DELETE,
            "/v1/collections/{collection}/records/{id}",
            data::delete_record,
        ),
        // The gateway: the keys upstreams verify the tenant context with.
        route(M::GET, "/.well-known/jwks.json", proxy::jwks),
        route(
            M::DELETE,
            "/v1/tenants/{tenant}/proxy-cache/{service}",
            proxy::purge_cache,
        ),
        route(
            M::GET,
            "/v1/platform/signing-keys",
            proxy::list_signing_keys,
        ),
        route(
            M::POST,
            "/v1/platform/signing-keys/rotate",
            proxy::rotate_signing_key,
        ),
    ];
    // The gateway's services, by every method it forwards.
    for method in PROXY_METHODS {
        routes.push(route(
            method.clone(),
            "/v1/proxy/{service}",
            proxy::forward_root,
        ));
        routes.push(route(method, "/v1/proxy/{service}/{*path}", proxy::forward));
    }
    routes
}

/// The route table, for documentation and for tests that must cover every route.
pub fn route_table() -> Vec<RouteSpec> {
    routes().into_iter().map(|r| r.spec).collect()
}

/// The application router: every route behind the request path's phases.
pub(crate) fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for Route { spec, handler } in routes() {
        let phases = middleware::from_fn_with_state(
            (state.clone(), spec.access, op_class(&spec)),
            request_path,
        );
        router = router.route(spec.path, handler.route_layer(phases));
    }
    router
        .merge(api_reference())
        .fallback(edge::not_found)
        .method_not_allowed_fallback(edge::method_not_allowed)
        .with_state(state)
}

/// The API reference at `/docs`: Swagger UI (its files built into the
/// binary) reading `/openapi.json`. Static pages for people, public like
/// the description they render, so outside the route table.
fn api_reference() -> Router<AppState> {
    utoipa_swagger_ui::SwaggerUi::new("/docs")
        .config(utoipa_swagger_ui::Config::from("/openapi.json"))
        .into()
}

/// The request path of every route after the edge, as phases in order:
/// identify (the key, to a `Principal`), authorize (the route's `Access`),
/// admit (rate limits, quotas, body, seat), route (the handler, under its
/// class's deadline), meter (bytes out). Each phase either hands on or
/// answers; public routes go straight to their handler.
async fn request_path(
    State((state, access, class)): State<(AppState, Access, Option<OpClass>)>,
    request: Request,
    next: Next,
) -> Response {
    if access == Access::Public {
        return next.run(request).await;
    }
    let principal = match state.identity.identify(request.headers()).await {
        Ok(principal) => principal,
        Err(e) => return e.into_response(),
    };
    let mut request = match authorize(&state, access, &principal, request).await {
        Ok(request) => request,
        Err(e) => return e.into_response(),
    };
    // A service's requests are admitted as its class, on its own seats if it has them.
    let service = request.extensions().get::<Arc<Service>>();
    let seats = service.and_then(|s| s.seats.clone());
    let Some(class) = service.map(|s| s.class()).or(class) else {
        request.extensions_mut().insert(principal);
        return next.run(request).await;
    };
    // Admission runs the route and meters it, and hands the principal on.
    state
        .admission
        .clone()
        .run(class, principal, seats, request, next)
        .await
}

/// The operation class a route's requests are admitted as: reads and writes
/// of data, and administration; public routes are not admitted.
fn op_class(spec: &RouteSpec) -> Option<OpClass> {
    match spec.access {
        Access::Public => None,
        Access::Data(_) if spec.method == Method::GET => Some(OpClass::Read),
        Access::Data(_) => Some(OpClass::Write),
        Access::AnyKey | Access::Operator | Access::OperatorOn | Access::Tenant(_) => {
            Some(OpClass::Admin)
        }
        Access::Proxy => Some(OpClass::Proxy),
    }
}

/// The raw value of the route's path parameter `name`, which the route has.
async fn path_param(
    parts: &mut axum::http::request::Parts,
    state: &AppState,
    name: &str,
) -> Result<String, ApiError> {
    let params = RawPathParams::from_request_parts(parts, state)
        .await
        .map_err(|e| ApiError::invalid_parameter(e.body_text()))?;
    params
        .iter()
        .find(|(param, _)| *param == name)
        .map(|(_, value)| value.to_owned())
        .ok_or_else(|| ApiError::new(ErrorCode::Internal))
}

fn require_operator(principal: &Principal) -> Result<(), ApiError> {
    if principal.is_operator() {
        Ok(())
    } else {
        Err(ApiError::with_detail(
            ErrorCode::Forbidden,
            "this route needs an operator key",
        ))
    }
}

/// 404 unless the scope's tenant exists (whatever its status): an operator
/// may name any id.
async fn require_tenant(state: &AppState, scope: &TenantScope) -> Result<(), ApiError> {
    match state.catalog.tenant(scope).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found()),
    }
}

/// The tenant a `{tenant}` route names.
async fn path_tenant(
    parts: &mut axum::http::request::Parts,
    state: &AppState,
) -> Result<TenantId, ApiError> {
    let raw = path_param(parts, state, "tenant").await?;
    TenantId::parse(&raw).map_err(|e| ApiError::invalid_parameter(format!("tenant: {e}")))
}

/// Phase: enforces the route's `Access` for `principal`. The request goes
/// on with what the route needs: the `TenantScope` of a tenant route, the
/// `DataScope` of a data route, the service and forwarded path of a proxy
/// route.
async fn authorize(
    state: &AppState,
    access: Access,
    principal: &Principal,
    request: Request,
) -> Result<Request, ApiError> {
    let span = tracing::Span::current();
    span.record("key", principal.key_id().as_str());
    if let Some(tenant) = principal.tenant() {
        span.record("tenant", tenant.as_str());
    }
    let (mut parts, body) = request.into_parts();
    match access {
        Access::Public | Access::AnyKey => {}
        Access::Operator => require_operator(principal)?,
        Access::OperatorOn => {
            require_operator(principal)?;
            let tenant = path_tenant(&mut parts, state).await?;
            let scope = principal
                .scope_for(&tenant, Role::Admin)
                .ok_or_else(|| ApiError::new(ErrorCode::Internal))?;
            require_tenant(state, &scope).await?;
            parts.extensions.insert(scope);
        }
        Access::Tenant(required) => {
            let tenant = path_tenant(&mut parts, state).await?;
            let scope = match principal.scope_for(&tenant, required) {
                Some(scope) => scope,
                None if principal.tenant() == Some(&tenant) => {
                    return Err(ApiError::with_detail(
                        ErrorCode::Forbidden,
                        format!("this route needs the {required} role"),
                    ))
                }
                None => return Err(ApiError::not_found()),
            };
            // A member's tenant was checked by identify; an operator may name any.
            if principal.is_operator() {
                require_tenant(state, &scope).await?;
            }
            parts.extensions.insert(scope);
        }
        Access::Proxy => {
            if principal.is_operator() {
                return Err(ApiError::with_detail(
                    ErrorCode::Forbidden,
                    crate::gateway::OPERATORS_HAVE_NO_TENANT,
                ));
            }
            // The service and the path it gets come from one parse of the
            // path as the client sent it.
            let (raw, rest) = proxy::split_path(parts.uri.path())?;
            let service = proxy::service_named(state, raw)?;
            let rest = proxy::ForwardPath(rest.to_owned());
            parts.extensions.insert(rest);
            if !service.allows(principal.role()) {
                return Err(ApiError::with_detail(
                    ErrorCode::Forbidden,
                    format!(
                        "service {} does not take calls from {} keys",
                        service.config.name,
                        principal.role()
                    ),
                ));
            }
            parts.extensions.insert(service);
        }
        Access::Data(required) => {
            let scope = principal.data_scope(required).ok_or_else(|| {
                let detail = if principal.is_operator() {
                    "operator keys manage tenants; use a key of the tenant for its data".to_owned()
                } else {
                    format!("this route needs the {required} role")
                };
                ApiError::with_detail(ErrorCode::Forbidden, detail)
            })?;
            parts.extensions.insert(scope);
        }
    }
    Ok(Request::from_parts(parts, body))
}
