//! API key routes, for a tenant's keys (its admins, or an operator) and for
//! the platform's operator keys. Both owners share one implementation.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use rand::rngs::OsRng;
use serde_json::json;
use tenantd_api::{CreateKey, CreatedKey, KeyPage, KeyView, Page, Problem, RotateKey, RotatedKey};
use tenantd_core::key::check_key_name;
use tenantd_core::{
    ApiKeyToken, ErrorCode, KeyId, KeyOwner, KeyRecord, KeyState, Principal, Role, TenantId,
    TenantScope,
};
use tenantd_store::{Owner, StoreError};
use time::{Duration, OffsetDateTime};

use crate::extract::{page_of, ApiJson, ApiJsonOrEmpty, ApiPath, ApiQuery, PageQuery};
use crate::problem::ApiError;
use crate::state::AppState;

/// Longest rotation overlap: 30 days.
const MAX_OVERLAP_SECONDS: u32 = 30 * 24 * 3600;
/// Overlap when a rotation does not say: one hour.
const DEFAULT_OVERLAP_SECONDS: u32 = 3600;

fn view(state: &AppState, key: &KeyRecord) -> KeyView {
    let pending = state.identity.last_used().pending(&key.id);
    KeyView {
        id: key.id.clone(),
        tenant: key.owner.tenant().cloned(),
        role: key.role,
        name: key.name.clone(),
        state: key.state(state.clock.now()),
        created_at: key.created_at,
        expires_at: key.expires_at,
        revoked_at: key.revoked_at,
        last_used_at: key.last_used_at.max(pending),
        rotated_from: key.rotated_from.clone(),
    }
}

fn owner_of(owner: Owner<'_>) -> KeyOwner {
    match owner {
        Owner::Platform => KeyOwner::Platform,
        Owner::Tenant(scope) => KeyOwner::Tenant(scope.tenant().clone()),
    }
}

fn location(owner: Owner<'_>, id: &KeyId) -> String {
    match owner {
        Owner::Platform => format!("/v1/platform/keys/{id}"),
        Owner::Tenant(scope) => format!("/v1/tenants/{}/keys/{id}", scope.tenant()),
    }
}

/// Checks that `principal` may hold keys of `role` under `owner`: platform
/// keys are operators; tenant keys have tenant roles no higher than the
/// creator's.
fn check_grant(principal: &Principal, owner: Owner<'_>, role: Role) -> Result<(), ApiError> {
    match owner {
        Owner::Platform if role != Role::Operator => Err(ApiError::invalid_body(
            "role: platform keys have the operator role",
        )),
        Owner::Platform => Ok(()),
        Owner::Tenant(_) if !role.is_tenant_role() => Err(ApiError::invalid_body(
            "role: operator keys belong to the platform, not to a tenant",
        )),
        Owner::Tenant(_) if !principal.role().may_grant_tenant_role(role) => {
            Err(ApiError::with_detail(
                ErrorCode::Forbidden,
                format!("a {} key cannot grant the {role} role", principal.role()),
            ))
        }
        Owner::Tenant(_) => Ok(()),
    }
}

fn check_expiry(expires_at: Option<OffsetDateTime>, now: OffsetDateTime) -> Result<(), ApiError> {
    match expires_at {
        Some(at) if at <= now => Err(ApiError::invalid_body("expires_at: must be in the future")),
        _ => Ok(()),
    }
}

/// Maps a store error on key insertion. A clash of 64-bit random ids is
/// practically impossible (about 3e-8 at a million keys), so it is reported
/// as a server error rather than retried.
fn insert_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict => {
            tracing::error!("a new key id clashed with an existing one");
            ApiError::new(ErrorCode::Internal)
        }
        other => other.into(),
    }
}

async fn create(
    state: &AppState,
    principal: &Principal,
    owner: Owner<'_>,
    body: CreateKey,
) -> Result<Response, ApiError> {
    check_grant(principal, owner, body.role)?;
    check_key_name(&body.name).map_err(|r| ApiError::invalid_body(format!("name: {r}")))?;
    let now = state.clock.now();
    check_expiry(body.expires_at, now)?;
    let token = ApiKeyToken::generate(&mut OsRng);
    let record = KeyRecord {
        expires_at: body.expires_at,
        ..KeyRecord::issue(
            &token,
            owner_of(owner),
            body.role,
            body.name,
            state.identity.hasher(),
            now,
        )
    };
    let audit = state.audit(
        principal,
        record.owner.tenant(),
        "key.create",
        record.id.as_str(),
        json!({ "role": record.role, "name": record.name, "expires_at": record.expires_at.map(|t| t.unix_timestamp()) }),
    )
    .after(&view(state, &record));
    state
        .catalog
        .insert_key(&record, &audit)
        .await
        .map_err(insert_error)?;
    // Forget any cached "unknown id" for the new key.
    state.identity.forget_key(&record.id).await;
    let created = CreatedKey {
        key: view(state, &record),
        token: token.expose(),
    };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location(owner, &record.id))],
        Json(created),
    )
        .into_response())
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

async fn load(state: &AppState, owner: Owner<'_>, id: &KeyId) -> Result<KeyRecord, ApiError> {
    state
        .catalog
        .key(owner, id)
        .await?
        .ok_or_else(ApiError::not_found)
}

async fn rotate(
    state: &AppState,
    principal: &Principal,
    owner: Owner<'_>,
    id: &KeyId,
    body: RotateKey,
) -> Result<Response, ApiError> {
    let old = load(state, owner, id).await?;
    check_grant(principal, owner, old.role)?;
    let now = state.clock.now();
    if old.state(now) != KeyState::Active {
        return Err(ApiError::with_detail(
            ErrorCode::InvalidTransition,
            "only an active key can be rotated",
        ));
    }
    let overlap = body.overlap_seconds.unwrap_or(DEFAULT_OVERLAP_SECONDS);
    if overlap > MAX_OVERLAP_SECONDS {
        return Err(ApiError::invalid_body(format!(
            "overlap_seconds: at most {MAX_OVERLAP_SECONDS}"
        )));
    }
    check_expiry(body.expires_at, now)?;
    let overlap_end = now + Duration::seconds(i64::from(overlap));
    let old_expires_at = old.expires_at.map_or(overlap_end, |at| at.min(overlap_end));
    let token = ApiKeyToken::generate(&mut OsRng);
    let record = KeyRecord {
        expires_at: body.expires_at,
        rotated_from: Some(old.id.clone()),
        ..KeyRecord::issue(
            &token,
            old.owner.clone(),
            old.role,
            old.name.clone(),
            state.identity.hasher(),
            now,
        )
    };
    let audit = state
        .audit(
            principal,
            old.owner.tenant(),
            "key.rotate",
            old.id.as_str(),
            json!({
                "new_key": record.id,
                // RFC 3339, as every other time the API and its audit log show.
                "old_expires_at": old_expires_at
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
            }),
        )
        .before(&view(state, &old))
        .after(&view(state, &record));
    let rotated = state
        .catalog
        .rotate_key(owner, &old.id, old_expires_at, &record, &audit)
        .await
        .map_err(insert_error)?;
    if !rotated {
        return Err(ApiError::with_detail(
            ErrorCode::InvalidTransition,
            "the key was revoked while this request ran",
        ));
    }
    state.identity.forget_key(&old.id).await;
    state.identity.forget_key(&record.id).await;
    let previous = KeyRecord {
        expires_at: Some(old_expires_at),
        ..old
    };
    let rotated = RotatedKey {
        key: view(state, &record),
        token: token.expose(),
        previous: view(state, &previous),
    };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location(owner, &record.id))],
        Json(rotated),
    )
        .into_response())
}

async fn revoke(
    state: &AppState,
    principal: &Principal,
    owner: Owner<'_>,
    id: &KeyId,
) -> Result<Json<KeyView>, ApiError> {
    let key = load(state, owner, id).await?;
    let now = state.clock.now();
    if matches!(owner, Owner::Platform)
        && key.state(now) == KeyState::Active
        && state.catalog.active_operator_keys(now).await? <= 1
    {
        return Err(ApiError::with_detail(
            ErrorCode::InvalidTransition,
            "this is the last active operator key; create another before revoking it",
        ));
    }
    let audit = state
        .audit(
            principal,
            key.owner.tenant(),
            "key.revoke",
            id.as_str(),
            json!({}),
        )
        .before(&view(state, &key));
    let revoked = state
        .catalog
        .revoke_key(owner, id, now, &audit)
        .await?
        .ok_or_else(ApiError::not_found)?;
    state.identity.forget_key(id).await;
    Ok(Json(view(state, &revoked)))
}

/// `{tenant}/keys/{key_id}`: the scope already carries the tenant.
type TenantKeyPath = ApiPath<(TenantId, KeyId)>;

/// Create a key for a tenant. The token is in the response, and only there.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/keys", tag = "keys", request_body = CreateKey,
    params(("tenant" = TenantId, Path)), security(("api_key" = [])),
    responses(
        (status = 201, description = "Created; the token is shown once", body = CreatedKey),
        (status = 403, description = "Role above the creator's", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn create_tenant_key(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(scope): Extension<TenantScope>,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<Response, ApiError> {
    create(&state, &principal, Owner::Tenant(&scope), body).await
}

/// List a tenant's keys, revoked and expired ones included.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/keys", tag = "keys",
    params(("tenant" = TenantId, Path), PageQuery), security(("api_key" = [])),
    responses((status = 200, description = "A page of keys", body = Page<KeyView>)))]
pub(super) async fn list_tenant_keys(
    State(state): State<AppState>,
    Extension(scope): Extension<TenantScope>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<KeyPage>, ApiError> {
    list(&state, Owner::Tenant(&scope), page).await
}

/// Get one of a tenant's keys.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/keys/{key_id}", tag = "keys",
    params(("tenant" = TenantId, Path), ("key_id" = KeyId, Path)), security(("api_key" = [])),
    responses((status = 200, description = "The key", body = KeyView)))]
pub(super) async fn get_tenant_key(
    State(state): State<AppState>,
    Extension(scope): Extension<TenantScope>,
    ApiPath(path): TenantKeyPath,
) -> Result<Json<KeyView>, ApiError> {
    let key = load(&state, Owner::Tenant(&scope), &path.1).await?;
    Ok(Json(view(&state, &key)))
}

/// Rotate a tenant key: a new key with the same role; the old one keeps
/// working until the end of the overlap.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/keys/{key_id}/rotate", tag = "keys",
    request_body(content = Option<RotateKey>),
    params(("tenant" = TenantId, Path), ("key_id" = KeyId, Path)), security(("api_key" = [])),
    responses((status = 201, description = "The new key, shown once, and the old one", body = RotatedKey)))]
pub(super) async fn rotate_tenant_key(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(scope): Extension<TenantScope>,
    ApiPath(path): TenantKeyPath,
    ApiJsonOrEmpty(body): ApiJsonOrEmpty<RotateKey>,
) -> Result<Response, ApiError> {
    rotate(&state, &principal, Owner::Tenant(&scope), &path.1, body).await
}

/// Revoke a tenant key at once. Revoking twice is harmless.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/keys/{key_id}/revoke", tag = "keys",
    params(("tenant" = TenantId, Path), ("key_id" = KeyId, Path)), security(("api_key" = [])),
    responses((status = 200, description = "The revoked key", body = KeyView)))]
pub(super) async fn revoke_tenant_key(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(scope): Extension<TenantScope>,
    ApiPath(path): TenantKeyPath,
) -> Result<Json<KeyView>, ApiError> {
    revoke(&state, &principal, Owner::Tenant(&scope), &path.1).await
}

/// Create an operator key.
#[utoipa::path(post, path = "/v1/platform/keys", tag = "keys", request_body = CreateKey,
    security(("api_key" = [])),
    responses((status = 201, description = "Created; the token is shown once", body = CreatedKey)))]
pub(super) async fn create_platform_key(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<Response, ApiError> {
    create(&state, &principal, Owner::Platform, body).await
}

/// List operator keys.
#[utoipa::path(get, path = "/v1/platform/keys", tag = "keys", params(PageQuery),
    security(("api_key" = [])),
    responses((status = 200, description = "A page of keys", body = Page<KeyView>)))]
pub(super) async fn list_platform_keys(
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<KeyPage>, ApiError> {
    list(&state, Owner::Platform, page).await
}

/// Get an operator key.
#[utoipa::path(get, path = "/v1/platform/keys/{key_id}", tag = "keys",
    params(("key_id" = KeyId, Path)), security(("api_key" = [])),
    responses((status = 200, description = "The key", body = KeyView)))]
pub(super) async fn get_platform_key(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<KeyId>,
) -> Result<Json<KeyView>, ApiError> {
    let key = load(&state, Owner::Platform, &id).await?;
    Ok(Json(view(&state, &key)))
}

/// Rotate an operator key.
#[utoipa::path(post, path = "/v1/platform/keys/{key_id}/rotate", tag = "keys",
    request_body(content = Option<RotateKey>),
    params(("key_id" = KeyId, Path)), security(("api_key" = [])),
    responses((status = 201, description = "The new key, shown once, and the old one", body = RotatedKey)))]
pub(super) async fn rotate_platform_key(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<KeyId>,
    ApiJsonOrEmpty(body): ApiJsonOrEmpty<RotateKey>,
) -> Result<Response, ApiError> {
    rotate(&state, &principal, Owner::Platform, &id, body).await
}

/// Revoke an operator key; the last active one cannot be revoked.
#[utoipa::path(post, path = "/v1/platform/keys/{key_id}/revoke", tag = "keys",
    params(("key_id" = KeyId, Path)), security(("api_key" = [])),
    responses(
        (status = 200, description = "The revoked key", body = KeyView),
        (status = 409, description = "The last active operator key", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn revoke_platform_key(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<KeyId>,
) -> Result<Json<KeyView>, ApiError> {
    revoke(&state, &principal, Owner::Platform, &id).await
}
