//! Routes about the server itself: liveness, readiness, the OpenAPI
//! description, and who the caller is.

use std::sync::OnceLock;
use tenantd_api::schema;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tenantd_api::{DependencyHealth, Health, Me, Problem, Readiness};
use tenantd_core::Role;
use tenantd_store::health as store_health;
use utoipa::openapi::schema::{AdditionalProperties, Schema};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::access::{AnyKey, Public};
use crate::config::FailMode;
use crate::problem::ApiError;
use crate::state::AppState;

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "meta",
    responses((status = 200, description = "Alive", body = Health)))]
pub(super) async fn healthz(_access: Public) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Readiness, from the state the node already tracks for each dependency
/// (its circuit, fed by real calls and by probes of the dependencies that
/// are down), so it answers at once even while a dependency hangs.
#[utoipa::path(get, path = "/readyz", tag = "meta",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready: the node is draining before it stops, the catalog cannot write, a storage pool is down, or Redis is down and the limiter fails closed", body = Readiness),
    ))]
pub(super) async fn readyz(_access: Public, State(state): State<AppState>) -> Response {
    let catalog = state.catalog.dependency().status();
    let pools: Vec<_> = state
        .data
        .dependencies()
        .iter()
        .map(|d| d.status())
        .collect();
    let redis = state.admission.limiter.dependency();
    let ready = catalog.health == store_health::Health::Ok
        && !pools.iter().any(|p| p.health == store_health::Health::Down)
        && !redis.is_some_and(|(redis, mode)| mode == FailMode::FailClosed && redis.is_down());
    let dependencies = std::iter::once(catalog)
        .chain(pools)
        .chain(redis.map(|(redis, _)| redis.status()))
        .map(|s| DependencyHealth {
            name: s.name.to_string(),
            state: s.health.as_str().to_owned(),
            last_error: s.last_error,
            errors_total: s.errors_total,
        })
        .collect();
    let draining = state.draining.load(std::sync::atomic::Ordering::Relaxed);
    let (status, word) = if draining {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else if ready {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    };
    let body = Readiness {
        status: word.into(),
        dependencies,
        node: state.node.clone(),
    };
    (status, Json(body)).into_response()
}

/// This API's OpenAPI 3.1 description.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
pub(super) async fn openapi(_access: Public) -> impl IntoResponse {
    static DOC: OnceLock<String> = OnceLock::new();
    let doc = DOC.get_or_init(|| ApiDoc::openapi().to_pretty_json().unwrap_or_default());
    ([(header::CONTENT_TYPE, "application/json")], doc.as_str())
}

/// Who am I: the key's id, role, tenant and plan.
#[utoipa::path(get, path = "/v1/me", tag = "meta", security(("api_key" = [])),
    responses(
        (status = 200, description = "The caller", body = Me),
        (status = 401, description = "No valid key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The tenant is suspended", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn me(
    AnyKey(principal): AnyKey,
    State(state): State<AppState>,
) -> Result<Json<Me>, ApiError> {
    // A tenant key reads its own tenant; an operator's has none.
    let own = principal
        .tenant()
        .and_then(|id| principal.scope_for(id, Role::Reader));
    let tenant = match own {
        Some(scope) => Some(
            state
                .catalog
                .tenant(&scope)
                .await?
                .ok_or_else(ApiError::not_found)?
                .into(),
        ),
        None => None,
    };
    Ok(Json(Me {
        key_id: principal.key_id().clone(),
        role: principal.role(),
        tenant,
        plan: principal.plan().cloned(),
    }))
}

struct Security;

/// A problem response for the OpenAPI description.
fn problem_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

/// Statuses every operation of a kind can answer, whatever its handler: listing
/// them once here keeps the per-route annotations to what is particular to
/// each route, and keeps the description complete where a route forgets.
const KEYED: [(&str, &str); 6] = [
    (
        "400",
        "Invalid path or query parameter (`invalid_parameter`), or more than one credential (`multiple_credentials`)",
    ),
    (
        "401",
        "No valid key: missing, malformed, unknown, revoked or expired",
    ),
    (
        "403",
        "The key's role is too low, or its tenant is suspended or deleted",
    ),
    (
        "429",
        "The tenant's rate limit (`rate_limited`), a hard quota (`quota_exceeded`) or its queue (`tenant_queue_full`); see Retry-After",
    ),
    (
        "503",
        "The store or the shared limiter is unavailable, the request waited past its queue budget or timed out, or the tenant is being moved; see Retry-After",
    ),
    (
        "504",
        "The request did not complete within its operation class's deadline (`deadline_exceeded`)",
    ),
];
/// What an operation with a JSON request body can answer besides.
const WITH_BODY: [(&str, &str); 5] = [
    ("400", "The body is not valid JSON (`malformed_json`)"),
    (
        "408",
        "The body did not arrive within the body-read timeout (`body_timeout`)",
    ),
    (
        "413",
        "The body is larger than the limit (`payload_too_large`)",
    ),
    ("415", "The body is not `application/json`"),
    (
        "422",
        "The body does not match the expected shape (`invalid_body`)",
    ),
];
/// What an operation with path parameters can answer besides: the resource
/// they name does not exist, or (for another tenant's key) is not the key's.
const NAMED_RESOURCE: (&str, &str) = (
    "404",
    "No such resource, or not one of the key's tenant (`not_found`)",
);

/// What an action on a named resource (`POST …/{id}/rotate`) can answer
/// besides: the resource is in a state the action does not apply to.
const STATE_CONFLICT: (&str, &str) = (
    "409",
    "The resource's state does not allow this action (`invalid_transition`)",
);

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                (false, &mut item.get),
                (false, &mut item.head),
                (false, &mut item.options),
                (true, &mut item.post),
                (false, &mut item.put),
                (false, &mut item.patch),
                (false, &mut item.delete),
            ];
            for (is_post, operation) in operations {
                let Some(operation) = operation else {
                    continue;
                };
                if operation.security.is_none() {
                    continue;
                }
                let mut common: Vec<(&str, &str)> = KEYED.to_vec();
                if operation.request_body.is_some() {
                    common.extend(WITH_BODY);
                }
                if path.contains('{') {
                    common.push(NAMED_RESOURCE);
                    if is_post && !path.starts_with("/v1/proxy/") {
                        common.push(STATE_CONFLICT);
                    }
                }
                for (status, description) in common {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| problem_response(description).into());
                }
            }
        }

        let components = openapi.components.get_or_insert_with(Default::default);
        // utoipa drops serde's `deny_unknown_fields` on an internally tagged
        // enum's variants; the server refuses unknown fields there too.
        if let Some(RefOr::T(Schema::OneOf(batch))) = components.schemas.get_mut("BatchOperation") {
            for variant in &mut batch.items {
                if let RefOr::T(Schema::Object(object)) = variant {
                    object.additional_properties =
                        Some(Box::new(AdditionalProperties::FreeForm(false)));
                }
            }
        }
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("tk_<id>_<secret>")
                    .description(Some(
                        "The API key as a bearer token. `X-Api-Key: <key>` is accepted \
                         instead (scheme `api_key_header`); a request with both, or with \
                         either twice, is refused with 400 `multiple_credentials`.",
                    ))
                    .build(),
            ),
        );
        // Declared, but not listed as an alternative on each operation: the
        // OpenAPI alternatives would let a client send both headers, which
        // tenantd refuses rather than guess which one is meant.
        components.add_security_scheme(
            "api_key_header",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Api-Key",
                "The API key, in place of `Authorization: Bearer`; never both.",
            ))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "tenantd", description = "Multi-tenant API platform: tenants, keys, audit, a tenant-isolated record store, and admission by rate limits, quotas and fair queuing."),
    modifiers(&Security),
    paths(
        healthz, readyz, openapi, me, super::cluster::cluster,
        super::tenants::create, super::tenants::list, super::tenants::get, super::tenants::update,
        super::tenants::delete, super::tenants::suspend, super::tenants::resume,
        super::tenants::restore, super::tenants::purge,
        super::tenants::move_tenant, super::tenants::get_job, super::tenants::list_jobs,
        super::keys::create_tenant_key, super::keys::list_tenant_keys, super::keys::get_tenant_key,
        super::keys::rotate_tenant_key, super::keys::revoke_tenant_key,
        super::keys::create_platform_key, super::keys::list_platform_keys,
        super::keys::get_platform_key, super::keys::rotate_platform_key,
        super::keys::revoke_platform_key,
        super::audit::tenant_audit, super::audit::platform_audit,
        super::audit::verify_tenant_audit, super::audit::verify_platform_audit,
        super::data::create_collection, super::data::list_collections, super::data::get_collection,
        super::data::delete_collection, super::data::create_record, super::data::list_records,
        super::data::batch, super::data::get_record, super::data::put_record,
        super::data::patch_record, super::data::delete_record,
        super::usage::usage, super::usage::history, super::usage::events,
        super::usage::create_add_on, super::usage::list_add_ons, super::usage::metrics,
        super::policy::get_policy, super::policy::list_versions, super::policy::get_version,
        super::policy::propose, super::policy::revert, super::policy::approve,
        super::policy::reject, super::policy::withdraw, super::policy::waiting,
        super::plans::create, super::plans::list, super::plans::get, super::plans::update,
        super::plans::versions,
        super::proxy::forward, super::proxy::forward_root, super::proxy::jwks,
        super::proxy::list_signing_keys, super::proxy::rotate_signing_key,
        super::proxy::purge_cache,
    ),
    components(schemas(Problem, DependencyHealth, schema::ServiceName))
)]
pub(crate) struct ApiDoc;
