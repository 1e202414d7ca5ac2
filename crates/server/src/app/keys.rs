//! Keys: issue, rotate and revoke, for a tenant's keys and the platform's
//! operator keys alike.

use rand::rngs::OsRng;
use serde_json::json;
use tenantd_api::{CreateKey, KeyView, RotateKey};
use tenantd_core::key::check_key_name;
use tenantd_core::{ApiKeyToken, ErrorCode, KeyId, KeyOwner, KeyRecord, KeyState, Principal, Role};
use tenantd_store::AuditAction;
use tenantd_store::{Owner, StoreError};
use time::{Duration, OffsetDateTime};

use super::Change;
use crate::problem::ApiError;
use crate::state::AppState;

/// A key just issued, with its token: shown once, to whoever asked for it.
#[derive(Debug)]
pub struct IssuedKey {
    pub record: KeyRecord,
    pub token: ApiKeyToken,
}

/// A rotation: the new key, and the old one as it now stands (expiring at
/// the end of the overlap).
#[derive(Debug)]
pub struct Rotation {
    pub issued: IssuedKey,
    pub previous: KeyRecord,
}

/// Longest rotation overlap: 30 days.
const MAX_OVERLAP_SECONDS: u32 = 30 * 24 * 3600;
/// Overlap when a rotation does not say: one hour.
const DEFAULT_OVERLAP_SECONDS: u32 = 3600;

/// How a key is shown: in answers and in its audit entries' snapshots.
pub fn view(state: &AppState, key: &KeyRecord) -> KeyView {
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
        Owner::Platform(_) => KeyOwner::Platform,
        Owner::Tenant(scope) => KeyOwner::Tenant(scope.tenant().clone()),
    }
}

/// Checks that `principal` may hold keys of `role` under `owner`: platform
/// keys are operators; tenant keys have tenant roles no higher than the
/// creator's.
fn check_grant(principal: &Principal, owner: Owner<'_>, role: Role) -> Result<(), ApiError> {
    match owner {
        Owner::Platform(_) if role != Role::Operator => Err(ApiError::invalid_body(
            "role: platform keys have the operator role",
        )),
        Owner::Platform(_) => Ok(()),
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

/// Issues a key for `owner`, with a role `principal` may grant.
pub async fn create(
    state: &AppState,
    principal: &Principal,
    owner: Owner<'_>,
    body: CreateKey,
) -> Result<IssuedKey, ApiError> {
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
        AuditAction::KeyCreate,
        record.id.as_str(),
        json!({ "role": record.role, "name": record.name, "expires_at": record.expires_at.map(|t| t.unix_timestamp()) }),
    )
    .after(&view(state, &record));
    state
        .catalog
        .insert_key(owner, &record, &audit)
        .await
        .map_err(insert_error)?;
    // A cached "unknown id" for the new key is dropped.
    state.changes.publish(Change::Key(record.id.clone()));
    Ok(IssuedKey { record, token })
}

/// Issues a key in place of `id`, which keeps working until the end of the
/// overlap.
pub async fn rotate(
    state: &AppState,
    principal: &Principal,
    owner: Owner<'_>,
    id: &KeyId,
    body: RotateKey,
) -> Result<Rotation, ApiError> {
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
            AuditAction::KeyRotate,
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
    state.changes.publish(Change::Key(old.id.clone()));
    state.changes.publish(Change::Key(record.id.clone()));
    let previous = KeyRecord {
        expires_at: Some(old_expires_at),
        ..old
    };
    Ok(Rotation {
        issued: IssuedKey { record, token },
        previous,
    })
}
/// Revokes `id` at once; the platform's last active operator key cannot be.
pub async fn revoke(
    state: &AppState,
    principal: &Principal,
    owner: Owner<'_>,
    id: &KeyId,
) -> Result<KeyRecord, ApiError> {
    let key = load(state, owner, id).await?;
    let now = state.clock.now();
    if matches!(owner, Owner::Platform(_))
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
            AuditAction::KeyRevoke,
            id.as_str(),
            json!({}),
        )
        .before(&view(state, &key));
    let revoked = state
        .catalog
        .revoke_key(owner, id, now, &audit)
        .await?
        .ok_or_else(ApiError::not_found)?;
    state.changes.publish(Change::Key(id.clone()));
    Ok(revoked)
}

/// The key `id` of `owner`, or 404.
pub async fn load(state: &AppState, owner: Owner<'_>, id: &KeyId) -> Result<KeyRecord, ApiError> {
    state
        .catalog
        .key(owner, id)
        .await?
        .ok_or_else(ApiError::not_found)
}
