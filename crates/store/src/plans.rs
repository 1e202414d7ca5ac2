//! Plans in the catalog, versioned: a plan's versions are appended, never
//! rewritten; its latest version is the one tenants follow unless pinned.

use tenantd_core::plan::Plan;
use tenantd_core::policy::Change;
use tenantd_core::{KeyId, PlanId};
use time::OffsetDateTime;

use crate::audit::{append, NewAuditEntry};
use crate::catalog::{is_unique_violation, Catalog};
use crate::codec::{from_nanos, parse, to_nanos};
use crate::{Result, StoreError};

/// One stored version of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanVersion {
    pub plan: Plan,
    pub version: i64,
    pub diff: Vec<Change>,
    pub reason: String,
    /// `None` when the version was seeded from the configuration.
    pub actor: Option<KeyId>,
    pub created_at: OffsetDateTime,
}

/// A new version about to be written.
#[derive(Debug, Clone)]
pub struct NewPlanVersion<'a> {
    pub plan: &'a Plan,
    /// The version this one follows; `None` to create the plan.
    pub after: Option<i64>,
    pub diff: Vec<Change>,
    pub reason: &'a str,
    pub actor: Option<KeyId>,
    pub at: OffsetDateTime,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("plan {0} already exists")]
    Exists(PlanId),
    #[error("plan {plan} changed meanwhile: its latest version is {latest}")]
    Changed { plan: PlanId, latest: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for PlanError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    plan_id: String,
    version: i64,
    manifest: String,
    diff: String,
    reason: String,
    actor_key: Option<String>,
    created_at: i64,
}

impl Row {
    fn into_version(self) -> Result<PlanVersion> {
        let corrupt = |column: &str, e: serde_json::Error| {
            StoreError::Corrupt(format!("plan_versions.{column} of {}: {e}", self.plan_id))
        };
        Ok(PlanVersion {
            plan: serde_json::from_str(&self.manifest).map_err(|e| corrupt("manifest", e))?,
            version: self.version,
            diff: serde_json::from_str(&self.diff).map_err(|e| corrupt("diff", e))?,
            reason: self.reason.clone(),
            actor: self
                .actor_key
                .as_deref()
                .map(|k| parse("plan_versions.actor_key", k, KeyId::parse))
                .transpose()?,
            created_at: from_nanos(self.created_at)?,
        })
    }
}

impl Catalog {
    /// Appends a version of `new.plan` right after `new.after` (or as the
    /// plan's first), with its audit entry; returns the version number.
    pub async fn add_plan_version(
        &self,
        new: &NewPlanVersion<'_>,
        audit: &NewAuditEntry,
    ) -> Result<i64, PlanError> {
        let id = &new.plan.id;
        let mut tx = self.begin_write().await?;
        let latest: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM plan_versions WHERE plan_id = $1")
                .bind(id.as_str())
                .fetch_one(&mut *tx)
                .await?;
        match (latest, new.after) {
            (Some(_), None) => return Err(PlanError::Exists(id.clone())),
            (Some(latest), Some(after)) if latest != after => {
                return Err(PlanError::Changed {
                    plan: id.clone(),
                    latest,
                })
            }
            (None, Some(_)) => {
                return Err(PlanError::Changed {
                    plan: id.clone(),
                    latest: 0,
                })
            }
            _ => {}
        }
        let version = latest.unwrap_or(0) + 1;
        let manifest =
            serde_json::to_string(new.plan).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let diff =
            serde_json::to_string(&new.diff).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let inserted = sqlx::query(
            "INSERT INTO plan_versions (plan_id, version, manifest, diff, reason, actor_key, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id.as_str())
        .bind(version)
        .bind(manifest)
        .bind(diff)
        .bind(new.reason)
        .bind(new.actor.as_ref().map(KeyId::as_str))
        .bind(to_nanos(new.at))
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => return Err(PlanError::Exists(id.clone())),
            other => other?,
        };
        let mut audit = audit.clone();
        audit.details["version"] = version.into();
        append(&mut tx, &audit).await?;
        tx.commit().await?;
        Ok(version)
    }

    /// The plans tenants are on, each once.
    pub async fn plans_in_use(&self) -> Result<Vec<PlanId>> {
        let plans: Vec<String> = sqlx::query_scalar("SELECT DISTINCT plan FROM tenants")
            .fetch_all(&self.pool)
            .await?;
        plans
            .iter()
            .map(|p| parse("tenants.plan", p, PlanId::parse))
            .collect()
    }

    /// Every version of every plan, oldest first: what admission holds.
    pub async fn all_plan_versions(&self) -> Result<Vec<PlanVersion>> {
        sqlx::query_as::<_, Row>("SELECT * FROM plan_versions ORDER BY plan_id, version")
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(Row::into_version)
            .collect()
    }

    /// A plan's versions after `after`, oldest first: what a node reads when
    /// another made a version.
    pub async fn plan_versions_after(&self, plan: &PlanId, after: i64) -> Result<Vec<PlanVersion>> {
        sqlx::query_as::<_, Row>(
            "SELECT * FROM plan_versions WHERE plan_id = $1 AND version > $2 ORDER BY version",
        )
        .bind(plan.as_str())
        .bind(after)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(Row::into_version)
        .collect()
    }

    /// A plan's versions, newest first, below `before`, at most `limit`.
    pub async fn plan_versions(
        &self,
        plan: &PlanId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<PlanVersion>> {
        sqlx::query_as::<_, Row>(
            "SELECT * FROM plan_versions WHERE plan_id = $1 AND version < $2
             ORDER BY version DESC LIMIT $3",
        )
        .bind(plan.as_str())
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(Row::into_version)
        .collect()
    }

    /// Plans' latest versions in id order after `after`, at most `limit`.
    pub async fn latest_plans(
        &self,
        after: Option<&PlanId>,
        limit: u32,
    ) -> Result<Vec<PlanVersion>> {
        sqlx::query_as::<_, Row>(
            "SELECT p.* FROM plan_versions p
             WHERE p.plan_id > $1 AND p.version =
                 (SELECT MAX(version) FROM plan_versions q WHERE q.plan_id = p.plan_id)
             ORDER BY p.plan_id LIMIT $2",
        )
        .bind(after.map_or("", PlanId::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(Row::into_version)
        .collect()
    }
}
