//! Routes about the server itself: liveness, readiness, the OpenAPI
//! description, and who the caller is.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use tenantd_api::{Health, Me, Problem};
use tenantd_core::Principal;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::problem::ApiError;
use crate::state::AppState;

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "meta",
    responses((status = 200, description = "Alive", body = Health)))]
pub(super) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Readiness: the store answers queries.
#[utoipa::path(get, path = "/readyz", tag = "meta",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "The store is unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    state.catalog.ping().await?;
    Ok(Json(Health {
        status: "ready".into(),
    }))
}

/// This API's OpenAPI 3.1 description.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
pub(super) async fn openapi() -> impl IntoResponse {
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
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Me>, ApiError> {
    let tenant = match principal.tenant() {
        Some(id) => Some(
            state
                .catalog
                .tenant(id)
                .await?
                .ok_or_else(ApiError::not_found)?,
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

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("tk_<id>_<secret>")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key_header",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Api-Key"))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "tenantd", description = "Multi-tenant API platform: tenants, keys, audit."),
    modifiers(&Security),
    paths(
        healthz, readyz, openapi, me,
        super::tenants::create, super::tenants::list, super::tenants::get, super::tenants::update,
        super::tenants::delete, super::tenants::suspend, super::tenants::resume,
        super::tenants::restore, super::tenants::purge,
        super::keys::create_tenant_key, super::keys::list_tenant_keys, super::keys::get_tenant_key,
        super::keys::rotate_tenant_key, super::keys::revoke_tenant_key,
        super::keys::create_platform_key, super::keys::list_platform_keys,
        super::keys::get_platform_key, super::keys::rotate_platform_key,
        super::keys::revoke_platform_key,
        super::audit::tenant_audit, super::audit::platform_audit,
    ),
    components(schemas(Problem))
)]
pub(crate) struct ApiDoc;
