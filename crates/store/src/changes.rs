//! The catalog's change feed: the audit log read in sequence order, which is
//! how a node learns what other nodes changed.
//!
//! Invariant: every control-plane change is written with its audit entry in
//! one transaction holding the catalog's write lock (`Catalog::begin_write`),
//! so entries get their sequence numbers in the order their transactions
//! commit. A reader that has applied everything through `n` misses nothing by
//! reading the entries after `n`, whenever it reads. On PostgreSQL every entry
//! also notifies `CHANNEL` when its transaction commits, so that nodes read
//! at once instead of waiting for their next poll.

use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tenantd_core::{KeyId, OperatorScope, PlanId, TenantId};

use crate::audit::AuditAction;
use crate::{Catalog, Result};

/// The PostgreSQL notification channel every audit entry is announced on;
/// the payload is `seq action target`, for whoever watches by hand.
pub const CHANNEL: &str = "tenantd_changes";

/// What a node holds in memory that one feed entry made stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// Keys created, rotated (the old and the new) or revoked.
    Keys(Vec<KeyId>),
    /// A tenant's status, plan, billing day or placement.
    Tenant(TenantId),
    /// A tenant and every key it had, gone.
    TenantPurged { tenant: TenantId, keys: Vec<KeyId> },
    /// A plan has a new version.
    Plan(PlanId),
    /// A tenant's policy changed (its version in effect may have).
    Policy(TenantId),
    /// A tenant was granted an add-on.
    AddOns(TenantId),
    /// The gateway's signing keys.
    SigningKeys,
    /// A tenant's cached responses of a service under a path prefix.
    ProxyCache {
        tenant: TenantId,
        service: String,
        prefix: String,
    },
}

/// One entry of the feed: its position, and what it made stale (`None` for
/// entries that change nothing a node keeps, such as a proposal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry {
    pub seq: i64,
    pub changed: Option<Changed>,
}

#[derive(sqlx::FromRow)]
struct FeedRow {
    seq: i64,
    tenant_id: Option<String>,
    action: String,
    target: String,
    details: String,
}

impl FeedRow {
    /// What the entry made stale. An entry this version cannot read (a newer
    /// node's action, or a damaged row) is logged and passed over: the feed
    /// goes on, and the caches' ttl bounds what it may have left stale.
    fn into_entry(self) -> FeedEntry {
        let seq = self.seq;
        let changed = self.changed().unwrap_or_else(|problem| {
            tracing::warn!(seq, action = %self.action, problem, "passing over a change feed entry this node cannot read");
            None
        });
        FeedEntry { seq, changed }
    }

    fn changed(&self) -> std::result::Result<Option<Changed>, String> {
        use AuditAction as A;
        let action = AuditAction::parse(&self.action).ok_or("unknown action")?;
        let tenant = || -> std::result::Result<TenantId, String> {
            let id = self.tenant_id.as_deref().unwrap_or(&self.target);
            TenantId::parse(id).map_err(|e| format!("tenant: {e}"))
        };
        let key = |id: &str| KeyId::parse(id).map_err(|e| format!("key: {e}"));
        let details = || -> std::result::Result<Value, String> {
            serde_json::from_str(&self.details).map_err(|e| format!("details: {e}"))
        };
        Ok(Some(match action {
            A::TenantCreate
            | A::TenantUpdate
            | A::TenantSuspend
            | A::TenantResume
            | A::TenantDelete
            | A::TenantRestore
            | A::TenantMove => Changed::Tenant(tenant()?),
            A::TenantPurge => {
                let keys = match details()?.get("keys") {
                    Some(Value::Array(keys)) => keys
                        .iter()
                        .map(|k| key(k.as_str().unwrap_or_default()))
                        .collect::<std::result::Result<_, _>>()?,
                    // Purges recorded before their entries named the keys.
                    _ => Vec::new(),
                };
                let tenant = TenantId::parse(&self.target).map_err(|e| format!("tenant: {e}"))?;
                Changed::TenantPurged { tenant, keys }
            }
            A::KeyBootstrap | A::KeyRecover | A::KeyCreate | A::KeyRevoke => {
                Changed::Keys(vec![key(&self.target)?])
            }
            A::KeyRotate => {
                let details = details()?;
                let new = details
                    .get("new_key")
                    .and_then(Value::as_str)
                    .ok_or("a rotation without its new key")?;
                Changed::Keys(vec![key(&self.target)?, key(new)?])
            }
            A::PlanCreate | A::PlanUpdate => {
                Changed::Plan(PlanId::parse(&self.target).map_err(|e| format!("plan: {e}"))?)
            }
            A::PolicyApply | A::PolicyApprove => Changed::Policy(tenant()?),
            A::AddonCreate => Changed::AddOns(tenant()?),
            A::SigningKeyCreate | A::SigningKeyRotate => Changed::SigningKeys,
            A::ProxyCachePurge => Changed::ProxyCache {
                tenant: tenant()?,
                service: self.target.clone(),
                prefix: details()?
                    .get("prefix")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            },
            A::TenantMoveStart | A::PolicyPropose | A::PolicyReject | A::PolicyWithdraw => {
                return Ok(None)
            }
        }))
    }
}

impl Catalog {
    /// The feed's position now: the last entry written.
    pub async fn change_position(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM audit_log")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// The feed's entries after `after`, oldest first, at most `limit`:
    /// every tenant's and the platform's, so the server's own proof only.
    pub async fn changes_after(
        &self,
        _server: &OperatorScope,
        after: i64,
        limit: u32,
    ) -> Result<Vec<FeedEntry>> {
        let rows: Vec<FeedRow> = sqlx::query_as(
            "SELECT seq, tenant_id, action, target, details FROM audit_log
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(FeedRow::into_entry).collect())
    }

    /// A connection that hears of every change as its transaction commits:
    /// `None` on SQLite, whose one node makes every change itself. Connecting
    /// waits at most `timeout`.
    pub async fn listen_for_changes(&self, timeout: Duration) -> Result<Option<ChangeListener>> {
        let Some(url) = &self.postgres_url else {
            return Ok(None);
        };
        let options = PgConnectOptions::from_str(url)?.application_name("tenantd change feed");
        let connect = async {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(timeout)
                .max_lifetime(None)
                .idle_timeout(None)
                .connect_with(options)
                .await?;
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match tokio::time::timeout(timeout, connect).await {
            Ok(listener) => Ok(Some(ChangeListener(listener?))),
            Err(_) => Err(sqlx::Error::PoolTimedOut.into()),
        }
    }
}

/// A connection listening on `CHANNEL`.
#[derive(Debug)]
pub struct ChangeListener(PgListener);

impl ChangeListener {
    /// Waits for the next notification and takes every one already
    /// received with it, since one read of the feed covers them all.
    /// `false` once the connection was lost, when notifications may have
    /// been missed (the listener has connected again if it could).
    pub async fn changed(&mut self) -> Result<bool> {
        match self.0.try_recv().await? {
            Some(_) => {
                while self.0.next_buffered().is_some() {}
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(tenant: Option<&str>, action: AuditAction, target: &str, details: Value) -> FeedRow {
        FeedRow {
            seq: 7,
            tenant_id: tenant.map(str::to_owned),
            action: action.as_str().to_owned(),
            target: target.to_owned(),
            details: details.to_string(),
        }
    }

    fn key(id: &str) -> KeyId {
        KeyId::parse(id).unwrap()
    }

    #[test]
    fn every_action_is_read_as_what_it_made_stale() {
        let acme = TenantId::parse("acme").unwrap();
        let (old, new) = ("0123456789abcdef", "fedcba9876543210");
        let cases = [
            (
                row(Some("acme"), AuditAction::TenantSuspend, "acme", json!({})),
                Some(Changed::Tenant(acme.clone())),
            ),
            (
                row(
                    None,
                    AuditAction::TenantPurge,
                    "acme",
                    json!({ "keys": [old, new] }),
                ),
                Some(Changed::TenantPurged {
                    tenant: acme.clone(),
                    keys: vec![key(old), key(new)],
                }),
            ),
            (
                row(
                    Some("acme"),
                    AuditAction::KeyRotate,
                    old,
                    json!({ "new_key": new }),
                ),
                Some(Changed::Keys(vec![key(old), key(new)])),
            ),
            (
                row(None, AuditAction::KeyRevoke, old, json!({})),
                Some(Changed::Keys(vec![key(old)])),
            ),
            (
                row(None, AuditAction::PlanUpdate, "pro", json!({})),
                Some(Changed::Plan(PlanId::parse("pro").unwrap())),
            ),
            (
                row(Some("acme"), AuditAction::PolicyApprove, "3", json!({})),
                Some(Changed::Policy(acme.clone())),
            ),
            (
                row(Some("acme"), AuditAction::PolicyPropose, "4", json!({})),
                None,
            ),
            (
                row(Some("acme"), AuditAction::AddonCreate, "acme", json!({})),
                Some(Changed::AddOns(acme.clone())),
            ),
            (
                row(
                    Some("acme"),
                    AuditAction::ProxyCachePurge,
                    "billing",
                    json!({ "prefix": "/invoices" }),
                ),
                Some(Changed::ProxyCache {
                    tenant: acme.clone(),
                    service: "billing".to_owned(),
                    prefix: "/invoices".to_owned(),
                }),
            ),
            (
                row(None, AuditAction::SigningKeyRotate, "ab12", json!({})),
                Some(Changed::SigningKeys),
            ),
        ];
        for (row, expected) in cases {
            let action = row.action.clone();
            assert_eq!(row.into_entry().changed, expected, "{action}");
        }
    }

    #[test]
    fn an_entry_it_cannot_read_is_passed_over_not_fatal() {
        let unknown = FeedRow {
            action: "tenant.teleport".to_owned(),
            ..row(None, AuditAction::TenantCreate, "acme", json!({}))
        };
        assert_eq!(
            unknown.into_entry(),
            FeedEntry {
                seq: 7,
                changed: None
            }
        );
        let damaged = row(None, AuditAction::KeyRevoke, "not a key", json!({}));
        assert_eq!(damaged.into_entry().changed, None);
    }

    /// Every action the server records has a reading: the match above is
    /// exhaustive, and this names the entries that change nothing kept.
    #[test]
    fn only_proposals_and_move_starts_change_nothing_a_node_keeps() {
        let silent: Vec<&str> = AuditAction::ALL
            .iter()
            .filter(|a| {
                let target = match a {
                    AuditAction::PlanCreate | AuditAction::PlanUpdate => "pro",
                    AuditAction::KeyBootstrap
                    | AuditAction::KeyRecover
                    | AuditAction::KeyCreate
                    | AuditAction::KeyRevoke
                    | AuditAction::KeyRotate => "0123456789abcdef",
                    _ => "acme",
                };
                let details = json!({ "new_key": "fedcba9876543210" });
                row(Some("acme"), **a, target, details)
                    .into_entry()
                    .changed
                    .is_none()
            })
            .map(|a| a.as_str())
            .collect();
        assert_eq!(
            silent,
            [
                "tenant.move.start",
                "policy.propose",
                "policy.reject",
                "policy.withdraw"
            ]
        );
    }
}
