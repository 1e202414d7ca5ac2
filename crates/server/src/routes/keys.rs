//! API key routes, for a tenant's keys (its admins, or an operator) and for
//! the platform's operator keys. Both owners share one implementation.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tenantd_api::schema;
use tenantd_api::{CreateKey, CreatedKey, KeyPage, KeyView, Page, Problem, RotateKey, RotatedKey};
use tenantd_core::{KeyId, TenantId};
use tenantd_store::Owner;

use super::access::{Admin, Member, Operator};
use crate::app::keys::{self, load, view, IssuedKey, Rotation};
use crate::extract::{page_of, ApiJson, ApiJsonOrEmpty, ApiPath, ApiQuery, PageQuery};
use crate::problem::ApiError;
use crate::state::AppState;

fn location(owner: Owner<'_>, id: &KeyId) -> String {
    match owner {
        Owner::Platform(_) => format!("/v1/platform/keys/{id}"),
        Owner::Tenant(scope) => format!("/v1/tenants/{}/keys/{id}", scope.tenant()),
    }
}

/// 201 with the new key and its token, shown this once.
fn created(state: &AppState, owner: Owner<'_>, issued: IssuedKey) -> Response {
    let body = CreatedKey {
        key: view(state, &issued.record),
        token: issued.token.expose(),
    };
    let location = location(owner, &issued.record.id);
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response()
}

/// 201 with the new key, its token shown this once, and the old key.
fn rotated(state: &AppState, owner: Owner<'_>, rotation: Rotation) -> Response {
    let body = RotatedKey {
        key: view(state, &rotation.issued.record),
        token: rotation.issued.token.expose(),
        previous: view(state, &rotation.previous),
    };
    let location = location(owner, &rotation.issued.record.id);
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response()
}

async fn list(
    state: &AppState,
    owner: Owner<'_>,
    page: PageQuery,
) -> Result<Json<KeyPage>, ApiError> {
    let limit = page.limit()?;
    let after = page.after(|s| KeyId::parse(s).ok())?;
    let rows = state.catalog.keys(owner, after.as_ref(), limit + 1).await?;
    let (rows, next_cursor) = page_of(rows, limit, |k| k.id.to_string());
    let items = rows.iter().map(|k| view(state, k)).collect();
    Ok(Json(KeyPage { items, next_cursor }))
}

/// `{tenant}/keys/{key_id}`: the scope already carries the tenant.
type TenantKeyPath = ApiPath<(TenantId, KeyId)>;

/// Create a key for a tenant. The token is in the response, and only there.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/keys", tag = "keys", request_body = CreateKey,
    params(("tenant" = schema::TenantId, Path)), security(("api_key" = [])),
    responses(
        (status = 201, description = "Created; the token is shown once", body = CreatedKey),
        (status = 403, description = "Role above the creator's", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn create_tenant_key(
    Member(principal, scope, _role): Member<Admin>,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<Response, ApiError> {
    let owner = Owner::Tenant(&scope);
    let issued = keys::create(&state, &principal, owner, body).await?;
    Ok(created(&state, owner, issued))
}

/// List a tenant's keys, revoked and expired ones included.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/keys", tag = "keys",
    params(("tenant" = schema::TenantId, Path), PageQuery), security(("api_key" = [])),
    responses((status = 200, description = "A page of keys", body = Page<KeyView>)))]
pub(super) async fn list_tenant_keys(
    Member(_principal, scope, _role): Member<Admin>,
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<KeyPage>, ApiError> {
    list(&state, Owner::Tenant(&scope), page).await
}

/// Get one of a tenant's keys.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/keys/{key_id}", tag = "keys",
    params(("tenant" = schema::TenantId, Path), ("key_id" = schema::KeyId, Path)), security(("api_key" = [])),
    responses((status = 200, description = "The key", body = KeyView)))]
pub(super) async fn get_tenant_key(
    Member(_principal, scope, _role): Member<Admin>,
    State(state): State<AppState>,
    ApiPath(path): TenantKeyPath,
) -> Result<Json<KeyView>, ApiError> {
    let key = load(&state, Owner::Tenant(&scope), &path.1).await?;
    Ok(Json(view(&state, &key)))
}

/// Rotate a tenant key: a new key with the same role; the old one keeps
/// working until the end of the overlap.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/keys/{key_id}/rotate", tag = "keys",
    request_body(content = Option<RotateKey>),
    params(("tenant" = schema::TenantId, Path), ("key_id" = schema::KeyId, Path)), security(("api_key" = [])),
    responses((status = 201, description = "The new key, shown once, and the old one", body = RotatedKey)))]
pub(super) async fn rotate_tenant_key(
    Member(principal, scope, _role): Member<Admin>,
    State(state): State<AppState>,
    ApiPath(path): TenantKeyPath,
    ApiJsonOrEmpty(body): ApiJsonOrEmpty<RotateKey>,
) -> Result<Response, ApiError> {
    let owner = Owner::Tenant(&scope);
    let rotation = keys::rotate(&state, &principal, owner, &path.1, body).await?;
    Ok(rotated(&state, owner, rotation))
}

/// Revoke a tenant key at once. Revoking twice is harmless.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/keys/{key_id}/revoke", tag = "keys",
    params(("tenant" = schema::TenantId, Path), ("key_id" = schema::KeyId, Path)), security(("api_key" = [])),
    responses((status = 200, description = "The revoked key", body = KeyView)))]
pub(super) async fn revoke_tenant_key(
    Member(principal, scope, _role): Member<Admin>,
    State(state): State<AppState>,
    ApiPath(path): TenantKeyPath,
) -> Result<Json<KeyView>, ApiError> {
    let revoked = keys::revoke(&state, &principal, Owner::Tenant(&scope), &path.1).await?;
    Ok(Json(view(&state, &revoked)))
}

/// Create an operator key.
#[utoipa::path(post, path = "/v1/platform/keys", tag = "keys", request_body = CreateKey,
    security(("api_key" = [])),
    responses((status = 201, description = "Created; the token is shown once", body = CreatedKey)))]
pub(super) async fn create_platform_key(
    Operator(principal, operator): Operator,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<Response, ApiError> {
    let issued = keys::create(&state, &principal, Owner::Platform(&operator), body).await?;
    Ok(created(&state, Owner::Platform(&operator), issued))
}

/// List operator keys.
#[utoipa::path(get, path = "/v1/platform/keys", tag = "keys", params(PageQuery),
    security(("api_key" = [])),
    responses((status = 200, description = "A page of keys", body = Page<KeyView>)))]
pub(super) async fn list_platform_keys(
    Operator(_principal, operator): Operator,
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<KeyPage>, ApiError> {
    list(&state, Owner::Platform(&operator), page).await
}

/// Get an operator key.
#[utoipa::path(get, path = "/v1/platform/keys/{key_id}", tag = "keys",
    params(("key_id" = schema::KeyId, Path)), security(("api_key" = [])),
    responses((status = 200, description = "The key", body = KeyView)))]
pub(super) async fn get_platform_key(
    Operator(_principal, operator): Operator,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<KeyId>,
) -> Result<Json<KeyView>, ApiError> {
    let key = load(&state, Owner::Platform(&operator), &id).await?;
    Ok(Json(view(&state, &key)))
}

/// Rotate an operator key.
#[utoipa::path(post, path = "/v1/platform/keys/{key_id}/rotate", tag = "keys",
    request_body(content = Option<RotateKey>),
    params(("key_id" = schema::KeyId, Path)), security(("api_key" = [])),
    responses((status = 201, description = "The new key, shown once, and the old one", body = RotatedKey)))]
pub(super) async fn rotate_platform_key(
    Operator(principal, operator): Operator,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<KeyId>,
    ApiJsonOrEmpty(body): ApiJsonOrEmpty<RotateKey>,
) -> Result<Response, ApiError> {
    let rotation = keys::rotate(&state, &principal, Owner::Platform(&operator), &id, body).await?;
    Ok(rotated(&state, Owner::Platform(&operator), rotation))
}

/// Revoke an operator key; the last active one cannot be revoked.
#[utoipa::path(post, path = "/v1/platform/keys/{key_id}/revoke", tag = "keys",
    params(("key_id" = schema::KeyId, Path)), security(("api_key" = [])),
    responses(
        (status = 200, description = "The revoked key", body = KeyView),
        (status = 409, description = "The last active operator key", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn revoke_platform_key(
    Operator(principal, operator): Operator,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<KeyId>,
) -> Result<Json<KeyView>, ApiError> {
    let revoked = keys::revoke(&state, &principal, Owner::Platform(&operator), &id).await?;
    Ok(Json(view(&state, &revoked)))
}
