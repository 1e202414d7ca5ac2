//! Asynchronous jobs in the catalog: created, advanced step by step, and
//! ended as succeeded or failed. At most one job runs per tenant.

use serde_json::Value;
use tenantd_core::{Isolation, JobId, PoolName, TenantId, TenantScope};
use time::OffsetDateTime;

use crate::audit::append;
use crate::catalog::{is_unique_violation, Catalog};
use crate::codec::{from_nanos, parse, to_nanos};
use crate::{NewAuditEntry, Result, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Running, Self::Succeeded, Self::Failed]
            .into_iter()
            .find(|state| state.as_str() == s)
    }
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// Moves a tenant's data to another placement.
    Move,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Move => "move",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        (s == "move").then_some(JobKind::Move)
    }
}

/// The steps of a move, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveStep {
    Copying,
    Verifying,
    Switching,
    Cleaning,
    Done,
}

impl MoveStep {
    pub const ALL: [MoveStep; 5] = [
        Self::Copying,
        Self::Verifying,
        Self::Switching,
        Self::Cleaning,
        Self::Done,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MoveStep::Copying => "copying",
            MoveStep::Verifying => "verifying",
            MoveStep::Switching => "switching",
            MoveStep::Cleaning => "cleaning",
            MoveStep::Done => "done",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|step| step.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub tenant: TenantId,
    pub kind: JobKind,
    pub state: JobState,
    /// The step the job is at, or ended at.
    pub step: MoveStep,
    /// Job-specific parameters, e.g. where from and where to.
    pub details: Value,
    pub error: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
struct JobRow {
    id: String,
    tenant_id: String,
    kind: String,
    state: String,
    step: String,
    details: String,
    error: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl JobRow {
    fn into_job(self) -> Result<Job> {
        Ok(Job {
            id: parse("jobs.id", &self.id, JobId::parse)?,
            tenant: parse("jobs.tenant_id", &self.tenant_id, TenantId::parse)?,
            kind: parse("jobs.kind", &self.kind, |s| {
                JobKind::parse(s).ok_or("unknown kind")
            })?,
            state: parse("jobs.state", &self.state, |s| {
                JobState::parse(s).ok_or("unknown state")
            })?,
            step: parse("jobs.step", &self.step, |s| {
                MoveStep::parse(s).ok_or("unknown step")
            })?,
            details: parse("jobs.details", &self.details, |d| {
                serde_json::from_str::<Value>(d)
            })?,
            error: self.error,
            created_at: from_nanos(self.created_at)?,
            updated_at: from_nanos(self.updated_at)?,
        })
    }
}

impl Catalog {
    /// Records a new running job; `Conflict` if the tenant already has one.
    pub async fn start_job(&self, job: &Job, audit: &NewAuditEntry) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, tenant_id, kind, state, step, details, error, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(job.id.as_str())
        .bind(job.tenant.as_str())
        .bind(job.kind.as_str())
        .bind(job.state.as_str())
        .bind(job.step.as_str())
        .bind(job.details.to_string())
        .bind(&job.error)
        .bind(to_nanos(job.created_at))
        .bind(to_nanos(job.updated_at))
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => return Err(StoreError::Conflict),
            other => other?,
        };
        append(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets a running job's `details.progress`: how far it is, for those
    /// who follow it.
    pub async fn record_job_progress(
        &self,
        id: &JobId,
        progress: &Value,
        at: OffsetDateTime,
    ) -> Result<()> {
        // Read, changed and written in one write transaction: the same on
        // every engine, with no JSON function of one engine's dialect.
        let mut tx = self.begin_write().await?;
        let details: Option<String> =
            sqlx::query_scalar("SELECT details FROM jobs WHERE id = $1 AND state = 'running'")
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let Some(details) = details else {
            return Ok(());
        };
        let mut details: Value = serde_json::from_str(&details)
            .map_err(|e| StoreError::Corrupt(format!("jobs.details of {id}: {e}")))?;
        if let Some(object) = details.as_object_mut() {
            object.insert("progress".to_owned(), progress.clone());
        }
        sqlx::query("UPDATE jobs SET details = $1, updated_at = $2 WHERE id = $3")
            .bind(details.to_string())
            .bind(to_nanos(at))
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Moves a job to `step` and `state`, with an error when it failed.
    pub async fn advance_job(
        &self,
        id: &JobId,
        state: JobState,
        step: MoveStep,
        error: Option<&str>,
        at: OffsetDateTime,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET state = $1, step = $2, error = $3, updated_at = $4 WHERE id = $5",
        )
        .bind(state.as_str())
        .bind(step.as_str())
        .bind(error)
        .bind(to_nanos(at))
        .bind(id.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn job(&self, id: &JobId) -> Result<Option<Job>> {
        sqlx::query_as::<_, JobRow>("SELECT * FROM jobs WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(JobRow::into_job)
            .transpose()
    }

    /// Jobs newest first, of one tenant or every one, in one state or any,
    /// after the (created_at, id) position of the previous page: the
    /// operators' list of jobs.
    pub async fn jobs(
        &self,
        tenant: Option<&TenantId>,
        state: Option<JobState>,
        before: Option<(OffsetDateTime, &JobId)>,
        limit: u32,
    ) -> Result<Vec<Job>> {
        let (at, id) = before.map_or((i64::MAX, ""), |(at, id)| (to_nanos(at), id.as_str()));
        sqlx::query_as::<_, JobRow>(
            "SELECT * FROM jobs
             WHERE ($1 IS NULL OR tenant_id = $1) AND ($2 IS NULL OR state = $2)
               AND (created_at, id) < ($3, $4)
             ORDER BY created_at DESC, id DESC LIMIT $5",
        )
        .bind(tenant.map(TenantId::as_str))
        .bind(state.map(JobState::as_str))
        .bind(at)
        .bind(id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(JobRow::into_job)
        .collect()
    }

    /// Points the tenant at its new placement if it is still at `from`, in
    /// one transaction with the audit entry. `Ok(false)` if it changed.
    pub async fn switch_placement(
        &self,
        scope: &TenantScope,
        from: (&PoolName, Isolation),
        to: (&PoolName, Isolation),
        audit: &NewAuditEntry,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let switched = sqlx::query(
            "UPDATE tenants SET pool = $1, isolation = $2, updated_at = $3
             WHERE id = $4 AND pool = $5 AND isolation = $6",
        )
        .bind(to.0.as_str())
        .bind(to.1.as_str())
        .bind(to_nanos(audit.at))
        .bind(scope.tenant().as_str())
        .bind(from.0.as_str())
        .bind(from.1.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if switched == 0 {
            return Ok(false);
        }
        append(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored step or kind reads back as what was written.
    #[test]
    fn steps_and_kinds_read_back_from_their_names() {
        for step in MoveStep::ALL {
            assert_eq!(MoveStep::parse(step.as_str()), Some(step));
        }
        assert_eq!(JobKind::parse(JobKind::Move.as_str()), Some(JobKind::Move));
        assert_eq!(MoveStep::parse("starting"), None);
        assert_eq!(JobKind::parse("copy"), None);
    }
}
