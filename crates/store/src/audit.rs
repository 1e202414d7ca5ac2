//! The append-only audit log of control-plane changes.

use serde_json::Value;
use sqlx::{Sqlite, Transaction};
use tenantd_core::{KeyId, Role, TenantId};
use time::OffsetDateTime;

use crate::codec::{from_nanos, parse, to_nanos};
use crate::Result;

/// A change about to be recorded, written in the same transaction as the
/// change itself so that neither exists without the other.
#[derive(Debug, Clone)]
pub struct NewAuditEntry {
    /// The tenant the change concerns; `None` for platform-level changes.
    pub tenant: Option<TenantId>,
    pub at: OffsetDateTime,
    /// The key that made the change; `None` for the server itself (bootstrap, purge).
    pub actor: Option<(KeyId, Role)>,
    /// A dotted verb such as `tenant.create` or `key.revoke`.
    pub action: &'static str,
    /// The id of the object changed.
    pub target: String,
    /// What changed, e.g. the fields before and after.
    pub details: Value,
}

/// A recorded change.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub seq: i64,
    pub tenant: Option<TenantId>,
    pub at: OffsetDateTime,
    pub actor: Option<(KeyId, Role)>,
    pub action: String,
    pub target: String,
    pub details: Value,
}

pub(crate) async fn append(tx: &mut Transaction<'_, Sqlite>, entry: &NewAuditEntry) -> Result<()> {
    let (actor_key, actor_role) = match &entry.actor {
        Some((key, role)) => (Some(key.as_str()), Some(role.as_str())),
        None => (None, None),
    };
    sqlx::query(
        "INSERT INTO audit_log (tenant_id, at, actor_key, actor_role, action, target, details)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(entry.tenant.as_ref().map(TenantId::as_str))
    .bind(to_nanos(entry.at))
    .bind(actor_key)
    .bind(actor_role)
    .bind(entry.action)
    .bind(&entry.target)
    .bind(entry.details.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
pub(crate) struct AuditRow {
    seq: i64,
    tenant_id: Option<String>,
    at: i64,
    actor_key: Option<String>,
    actor_role: Option<String>,
    action: String,
    target: String,
    details: String,
}

impl AuditRow {
    pub(crate) fn into_entry(self) -> Result<AuditEntry> {
        let actor = match (self.actor_key, self.actor_role) {
            (Some(key), Some(role)) => Some((
                parse("actor_key", &key, KeyId::parse)?,
                parse("actor_role", &role, |r| {
                    Role::parse(r).ok_or("unknown role")
                })?,
            )),
            _ => None,
        };
        Ok(AuditEntry {
            seq: self.seq,
            tenant: self
                .tenant_id
                .map(|t| parse("tenant_id", &t, TenantId::parse))
                .transpose()?,
            at: from_nanos(self.at)?,
            actor,
            action: self.action,
            target: self.target,
            details: parse("details", &self.details, |d| {
                serde_json::from_str::<Value>(d)
            })?,
        })
    }
}
