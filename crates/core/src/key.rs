//! Stored API keys: who owns them, what role they carry, and whether they are
//! usable at a given instant.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::api_key::{ApiKeyToken, KeyHasher, SecretHash};
use crate::ids::{KeyId, TenantId};
use crate::role::Role;

/// Whom a key belongs to. Operator keys belong to the platform.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyOwner {
    Platform,
    Tenant(TenantId),
}

impl KeyOwner {
    pub fn tenant(&self) -> Option<&TenantId> {
        match self {
            KeyOwner::Platform => None,
            KeyOwner::Tenant(id) => Some(id),
        }
    }
}

/// Whether a key works at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    Active,
    Expired,
    Revoked,
}

impl KeyState {
    pub const ALL: [KeyState; 3] = [Self::Active, Self::Expired, Self::Revoked];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub id: KeyId,
    pub owner: KeyOwner,
    pub role: Role,
    /// A label chosen by whoever created the key, e.g. "ci deploys".
    pub name: String,
    pub hash: SecretHash,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
    pub last_used_at: Option<OffsetDateTime>,
    /// The key this one replaced by rotation, if any.
    pub rotated_from: Option<KeyId>,
}

impl KeyRecord {
    /// The record of a freshly issued `token`: active, never used, with no
    /// expiry until the caller sets one.
    pub fn issue(
        token: &ApiKeyToken,
        owner: KeyOwner,
        role: Role,
        name: impl Into<String>,
        hasher: &KeyHasher,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            id: token.id.clone(),
            owner,
            role,
            name: name.into(),
            hash: hasher.hash(token),
            created_at: now,
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
            rotated_from: None,
        }
    }

    /// Revocation wins over expiry; a key is expired from its expiry instant on.
    pub fn state(&self, now: OffsetDateTime) -> KeyState {
        if self.revoked_at.is_some() {
            KeyState::Revoked
        } else if self.expires_at.is_some_and(|at| at <= now) {
            KeyState::Expired
        } else {
            KeyState::Active
        }
    }
}

/// Longest key label, in characters.
pub const MAX_KEY_NAME_CHARS: usize = 100;

pub fn check_key_name(name: &str) -> Result<(), &'static str> {
    if name.chars().count() > MAX_KEY_NAME_CHARS {
        return Err("name must be at most 100 characters");
    }
    if name.chars().any(char::is_control) {
        return Err("name must not contain control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;
    use time::Duration;

    fn key(expires_at: Option<OffsetDateTime>, revoked_at: Option<OffsetDateTime>) -> KeyRecord {
        KeyRecord {
            id: KeyId::parse("0123456789abcdef").unwrap(),
            owner: KeyOwner::Platform,
            role: Role::Operator,
            name: String::new(),
            hash: SecretHash([0; 32]),
            created_at: datetime!(2026-01-01 00:00 UTC),
            expires_at,
            revoked_at,
            last_used_at: None,
            rotated_from: None,
        }
    }

    #[test]
    fn expiry_is_exact_at_the_instant() {
        let at = datetime!(2026-02-01 00:00 UTC);
        let k = key(Some(at), None);
        assert_eq!(k.state(at - Duration::nanoseconds(1)), KeyState::Active);
        assert_eq!(k.state(at), KeyState::Expired);
        assert_eq!(
            key(None, None).state(at + Duration::days(9999)),
            KeyState::Active
        );
    }

    #[test]
    fn revocation_wins_over_expiry() {
        let at = datetime!(2026-02-01 00:00 UTC);
        assert_eq!(
            key(Some(at), Some(at)).state(at + Duration::days(1)),
            KeyState::Revoked
        );
    }
}
