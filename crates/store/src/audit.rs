//! The append-only audit log of control-plane changes, hash-chained.
//!
//! Each entry's digest is SHA-256 over its sequence number and every field.
//! `audit_chain` links digests twice: a global chain in sequence order, and
//! one per tenant (restarting after the tenant's purge), so a tenant admin
//! can verify its own trail without reading anyone else's. `verify` walks a
//! chain and names each entry edited, removed, inserted or out of order.

use serde_json::Value;
use sqlx::{Any, Transaction};
use tenantd_core::{KeyId, Role, TenantId};
use time::OffsetDateTime;

use sha2::{Digest, Sha256};

use crate::codec::{from_nanos, parse, to_nanos};
use crate::Result;

/// What an audit entry records, as a dotted verb (`tenant.create`,
/// `key.revoke`): written as its name, and matched by it in queries.
macro_rules! audit_actions {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)+) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum AuditAction {
            $($(#[$doc])* $variant,)+
        }

        impl AuditAction {
            pub const ALL: &'static [AuditAction] = &[$(AuditAction::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(AuditAction::$variant => $name,)+
                }
            }

            /// The action named `name`, as `as_str` writes it.
            pub fn parse(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(AuditAction::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

audit_actions! {
        TenantCreate => "tenant.create",
        TenantUpdate => "tenant.update",
        TenantSuspend => "tenant.suspend",
        TenantResume => "tenant.resume",
        TenantDelete => "tenant.delete",
        TenantRestore => "tenant.restore",
        /// A tenant's data, keys and trail removed; its trail may restart after it.
        TenantPurge => "tenant.purge",
        /// A move job started.
        TenantMoveStart => "tenant.move.start",
        /// A move switched the tenant to its new placement.
        TenantMove => "tenant.move",
        /// The first operator key, made at start-up.
        KeyBootstrap => "key.bootstrap",
        /// An operator key made by `tenantd recover-operator-key`.
        KeyRecover => "key.recover",
        KeyCreate => "key.create",
        KeyRotate => "key.rotate",
        KeyRevoke => "key.revoke",
        PlanCreate => "plan.create",
        PlanUpdate => "plan.update",
        PolicyApply => "policy.apply",
        PolicyPropose => "policy.propose",
        PolicyApprove => "policy.approve",
        PolicyReject => "policy.reject",
        PolicyWithdraw => "policy.withdraw",
        SigningKeyCreate => "signing_key.create",
        SigningKeyRotate => "signing_key.rotate",
        ProxyCachePurge => "proxy_cache.purge",
        AddonCreate => "addon.create",
}

/// A change about to be recorded, written in the same transaction as the
/// change itself so that neither exists without the other.
#[derive(Debug, Clone)]
pub struct NewAuditEntry {
    /// The tenant the change concerns; `None` for platform-level changes.
    pub tenant: Option<TenantId>,
    pub at: OffsetDateTime,
    /// The key that made the change; `None` for the server itself (bootstrap, purge).
    pub actor: Option<(KeyId, Role)>,
    pub action: AuditAction,
    /// The id of the object changed.
    pub target: String,
    /// What changed, e.g. the fields before and after.
    pub details: Value,
    /// The id of the request that made the change.
    pub request_id: Option<String>,
    /// Digests of the changed object before and after (see `state_digest`).
    pub before: Option<String>,
    pub after: Option<String>,
}

/// SHA-256 (hex) of a value's JSON: lets an entry pin the object's state
/// before and after a change without copying the object (or a secret in it)
/// into the log.
pub fn state_digest(value: &impl serde::Serialize) -> String {
    let json = serde_json::to_vec(value).unwrap_or_default();
    hex::encode(Sha256::digest(json))
}

impl NewAuditEntry {
    /// Records the digest of the object as it was before the change.
    pub fn before(mut self, value: &impl serde::Serialize) -> Self {
        self.before = Some(state_digest(value));
        self
    }

    /// Records the digest of the object as it is after the change.
    pub fn after(mut self, value: &impl serde::Serialize) -> Self {
        self.after = Some(state_digest(value));
        self
    }
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
    pub request_id: Option<String>,
    pub before: Option<String>,
    pub after: Option<String>,
}

pub(crate) async fn append(tx: &mut Transaction<'_, Any>, entry: &NewAuditEntry) -> Result<()> {
    let (actor_key, actor_role) = match &entry.actor {
        Some((key, role)) => (Some(key.as_str()), Some(role.as_str())),
        None => (None, None),
    };
    let row = AuditRow {
        seq: 0,
        tenant_id: entry.tenant.as_ref().map(|t| t.as_str().to_owned()),
        at: to_nanos(entry.at),
        actor_key: actor_key.map(str::to_owned),
        actor_role: actor_role.map(str::to_owned),
        action: entry.action.as_str().to_owned(),
        target: entry.target.clone(),
        details: entry.details.to_string(),
        request_id: entry.request_id.clone(),
        before_digest: entry.before.clone(),
        after_digest: entry.after.clone(),
    };
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO audit_log (tenant_id, at, actor_key, actor_role, action, target, details,
                                request_id, before_digest, after_digest)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING seq",
    )
    .bind(&row.tenant_id)
    .bind(row.at)
    .bind(&row.actor_key)
    .bind(&row.actor_role)
    .bind(&row.action)
    .bind(&row.target)
    .bind(&row.details)
    .bind(&row.request_id)
    .bind(&row.before_digest)
    .bind(&row.after_digest)
    .fetch_one(&mut **tx)
    .await?;
    if tx.backend_name() == "PostgreSQL" {
        // Delivered when the transaction commits, and only if it does.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(crate::changes::CHANNEL)
            .bind(format!("{seq} {} {}", row.action, row.target))
            .execute(&mut **tx)
            .await?;
    }
    chain(tx, &AuditRow { seq, ..row }).await
}

/// SHA-256 over an entry's sequence number and fields, each length-prefixed
/// so that no two different entries share an encoding.
fn digest(row: &AuditRow) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(row.seq.to_be_bytes());
    h.update(row.at.to_be_bytes());
    for field in [
        row.tenant_id.as_deref(),
        row.actor_key.as_deref(),
        row.actor_role.as_deref(),
        Some(row.action.as_str()),
        Some(row.target.as_str()),
        Some(row.details.as_str()),
        row.request_id.as_deref(),
        row.before_digest.as_deref(),
        row.after_digest.as_deref(),
    ] {
        match field {
            None => h.update([0u8]),
            Some(text) => {
                h.update([1u8]);
                h.update((text.len() as u64).to_be_bytes());
                h.update(text.as_bytes());
            }
        }
    }
    h.finalize().into()
}

fn link(previous: &[u8], digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(previous);
    h.update(digest);
    h.finalize().into()
}

const GENESIS: [u8; 32] = [0; 32];

/// The sequence number of `tenant`'s last purge, before which its entries
/// may be gone and after which its chain starts afresh; 0 if never purged.
async fn last_purge(tx: &mut Transaction<'_, Any>, tenant: &str) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COALESCE(MAX(seq), 0) FROM audit_log
         WHERE tenant_id IS NULL AND action = $1 AND target = $2",
    )
    .bind(AuditAction::TenantPurge.as_str())
    .bind(tenant)
    .fetch_one(&mut **tx)
    .await?)
}

/// Links a just-written entry into both chains.
async fn chain(tx: &mut Transaction<'_, Any>, row: &AuditRow) -> Result<()> {
    let digest = digest(row);
    let global: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT global_hash FROM audit_chain ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut **tx)
            .await?;
    let tenant_previous: Option<Vec<u8>> = match &row.tenant_id {
        None => sqlx::query_scalar(
            "SELECT tenant_hash FROM audit_chain WHERE tenant_id IS NULL ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(&mut **tx)
        .await?,
        Some(tenant) => {
            let since = last_purge(tx, tenant).await?;
            sqlx::query_scalar(
                "SELECT tenant_hash FROM audit_chain WHERE tenant_id = $1 AND seq > $2
                 ORDER BY seq DESC LIMIT 1",
            )
            .bind(tenant)
            .bind(since)
            .fetch_optional(&mut **tx)
            .await?
        }
    };
    sqlx::query(
        "INSERT INTO audit_chain (seq, tenant_id, digest, tenant_hash, global_hash)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(row.seq)
    .bind(&row.tenant_id)
    .bind(&digest[..])
    .bind(&link(tenant_previous.as_deref().unwrap_or(&GENESIS), &digest)[..])
    .bind(&link(global.as_deref().unwrap_or(&GENESIS), &digest)[..])
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Chains the entries written before chaining existed, once: only while
/// the chain is empty, so that rows slipped into the log later are never
/// adopted but reported.
pub(crate) async fn adopt_unchained(tx: &mut Transaction<'_, Any>) -> Result<u64> {
    let chained: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_chain")
        .fetch_one(&mut **tx)
        .await?;
    if chained > 0 {
        return Ok(0);
    }
    let rows: Vec<AuditRow> = sqlx::query_as("SELECT * FROM audit_log ORDER BY seq")
        .fetch_all(&mut **tx)
        .await?;
    for row in &rows {
        chain(tx, row).await?;
    }
    Ok(rows.len() as u64)
}

/// What a chain's verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Entries checked.
    pub entries: u64,
    /// The chain's last hash (hex): record it elsewhere to detect a later
    /// truncation of the log's end, which no chain can see from inside.
    pub head: String,
    /// Each problem found; empty when the chain holds.
    pub problems: Vec<String>,
}

#[derive(sqlx::FromRow)]
struct ChainRow {
    seq: i64,
    tenant_id: Option<String>,
    digest: Vec<u8>,
    tenant_hash: Vec<u8>,
    global_hash: Vec<u8>,
}

/// Walks the global chain (`tenant` `None`) or one tenant's chain since its
/// last purge, recomputing every digest and link.
pub(crate) async fn verify(
    tx: &mut Transaction<'_, Any>,
    tenant: Option<&TenantId>,
) -> Result<Verification> {
    let chain: Vec<ChainRow> = match tenant {
        None => {
            sqlx::query_as("SELECT * FROM audit_chain ORDER BY seq")
                .fetch_all(&mut **tx)
                .await?
        }
        Some(t) => {
            let since = last_purge(tx, t.as_str()).await?;
            sqlx::query_as(
                "SELECT * FROM audit_chain WHERE tenant_id = $1 AND seq > $2 ORDER BY seq",
            )
            .bind(t.as_str())
            .bind(since)
            .fetch_all(&mut **tx)
            .await?
        }
    };
    let entries: Vec<AuditRow> = match tenant {
        None => {
            sqlx::query_as("SELECT * FROM audit_log ORDER BY seq")
                .fetch_all(&mut **tx)
                .await?
        }
        Some(t) => {
            let since = last_purge(tx, t.as_str()).await?;
            sqlx::query_as("SELECT * FROM audit_log WHERE tenant_id = $1 AND seq > $2 ORDER BY seq")
                .bind(t.as_str())
                .bind(since)
                .fetch_all(&mut **tx)
                .await?
        }
    };
    // Purges allow a tenant's earlier entries to be missing from the log.
    let purges: Vec<(String, i64)> =
        sqlx::query_as("SELECT target, seq FROM audit_log WHERE tenant_id IS NULL AND action = $1")
            .bind(AuditAction::TenantPurge.as_str())
            .fetch_all(&mut **tx)
            .await?;
    let purged_after = |tenant: &Option<String>, seq: i64| {
        tenant
            .as_ref()
            .is_some_and(|t| purges.iter().any(|(p, at)| p == t && *at > seq))
    };
    let mut problems = Vec::new();
    let mut by_seq: std::collections::HashMap<i64, &AuditRow> =
        entries.iter().map(|e| (e.seq, e)).collect();
    let mut previous = GENESIS.to_vec();
    for link_row in &chain {
        let stored = if tenant.is_some() {
            &link_row.tenant_hash
        } else {
            &link_row.global_hash
        };
        let digest: [u8; 32] = match link_row.digest.as_slice().try_into() {
            Ok(d) => d,
            Err(_) => {
                problems.push(format!(
                    "entry {}: its chain link is malformed",
                    link_row.seq
                ));
                continue;
            }
        };
        if link(&previous, &digest)[..] != stored[..] {
            problems.push(format!(
                "entry {}: the chain does not link (an entry before it was removed, inserted or reordered)",
                link_row.seq
            ));
        }
        previous = stored.clone();
        match by_seq.remove(&link_row.seq) {
            Some(entry) if self::digest(entry) != digest => {
                problems.push(format!("entry {}: its content was changed", link_row.seq));
            }
            Some(_) => {}
            None if purged_after(&link_row.tenant_id, link_row.seq) => {}
            None => problems.push(format!("entry {}: it was removed", link_row.seq)),
        }
    }
    let mut unchained: Vec<i64> = by_seq.into_keys().collect();
    unchained.sort_unstable();
    for seq in unchained {
        problems.push(format!("entry {seq}: it is not in the chain (inserted)"));
    }
    Ok(Verification {
        entries: chain.len() as u64,
        head: hex::encode(previous),
        problems,
    })
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
    request_id: Option<String>,
    before_digest: Option<String>,
    after_digest: Option<String>,
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
            request_id: self.request_id,
            before: self.before_digest,
            after: self.after_digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::AuditAction;

    /// Entries are found by their action's name (a purge ends a tenant's
    /// chain), so no two actions may share one, and each is a dotted verb.
    #[test]
    fn every_action_has_its_own_dotted_name() {
        let mut names: Vec<&str> = AuditAction::ALL.iter().map(|a| a.as_str()).collect();
        assert!(names.iter().all(|n| n.contains('.')
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_')));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), AuditAction::ALL.len());
    }

    #[test]
    fn every_action_is_read_back_from_its_name() {
        for action in AuditAction::ALL {
            assert_eq!(AuditAction::parse(action.as_str()), Some(*action));
        }
        assert_eq!(AuditAction::parse("tenant"), None);
    }
}
