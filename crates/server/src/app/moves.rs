//! The tenant move job: copy a tenant's data to another placement (pool and
//! isolation model), verify the copy, switch the catalog, remove the old copy.
//!
//! Until the catalog switches, the old copy is the tenant's data: any failure
//! before that removes the new copy and leaves the tenant where it was.
//! Writes are held (503 `tenant_maintenance`) from the copy to the switch, on
//! every node when the data is on PostgreSQL; reads go on from the old copy.
//!
//! A job runs on the node holding its lease (`Catalog::lease_job`). When that
//! node stops mid-way, another takes the job over (`resume_orphans`) and
//! follows the same rule: the catalog says where the tenant is, so a job
//! whose switch committed only cleans up, and any other starts again from
//! the copy (which replaces whatever the first attempt left).

use std::time::Duration;

use serde_json::json;
use tenantd_core::{Isolation, JobId, OperatorScope, PoolName, Principal, Tenant, TenantScope};
use tenantd_store::data::{CopyProgress, DataError, Placement};
use tenantd_store::jobs::{Job, JobKind, JobState, MoveStep};
use tenantd_store::{AuditAction, CatalogEngine, JobLease, NewAuditEntry, StoreError};
use tokio::sync::watch;

use crate::app::Change;
use crate::state::AppState;

/// Longest wait for a job's lease.
const LEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the old copy of a moved tenant stays after the switch when
/// other nodes may serve it: they hear of the move within a second, and
/// until then their writes to the old copy are refused, their reads served.
const CLEANING_GRACE: Duration = Duration::from_secs(3);

fn placement_json(p: &Placement) -> serde_json::Value {
    json!({ "pool": p.pool, "isolation": p.isolation })
}

/// The placement `details[field]` names, as `placement_json` wrote it.
fn placement_of(details: &serde_json::Value, field: &str) -> Option<Placement> {
    let placement = details.get(field)?;
    Some(Placement {
        pool: PoolName::parse(placement.get("pool")?.as_str()?).ok()?,
        isolation: Isolation::parse(placement.get("isolation")?.as_str()?)?,
    })
}

/// Records a move job for `tenant` and starts it in the background.
pub(crate) async fn start_move(
    state: &AppState,
    principal: &Principal,
    scope: TenantScope,
    tenant: &Tenant,
    to: Placement,
) -> Result<Job, tenantd_store::StoreError> {
    let now = state.clock.now();
    let from = Placement {
        pool: tenant.pool.clone(),
        isolation: tenant.isolation,
    };
    let id = JobId::generate(now, &mut rand::thread_rng());
    // Leased before it exists, so that no other node takes it for an orphan.
    let lease = state
        .catalog
        .lease_job(&id, &state.node.id, LEASE_TIMEOUT)
        .await?
        .ok_or(StoreError::Conflict)?;
    let job = Job {
        id,
        tenant: tenant.id.clone(),
        kind: JobKind::Move,
        state: JobState::Running,
        step: MoveStep::Copying,
        details: json!({ "from": placement_json(&from), "to": placement_json(&to) }),
        error: None,
        created_at: now,
        updated_at: now,
    };
    let audit = state
        .audit(
            principal,
            Some(&tenant.id),
            AuditAction::TenantMoveStart,
            job.id.as_str(),
            job.details.clone(),
        )
        .after(&job.details);
    state.catalog.start_job(&job, &audit).await?;
    let runner = MoveRun {
        state: state.clone(),
        principal: Some(principal.clone()),
        scope,
        job: job.id.clone(),
        from,
        to,
        _lease: lease,
    };
    tokio::spawn(runner.run());
    Ok(job)
}

/// Takes over every running job whose lease is free: its node stopped (on
/// SQLite, called once at start: the previous run of this node). Returns how
/// many it took.
pub(crate) async fn resume_orphans(state: &AppState) -> Result<usize, StoreError> {
    let mut taken = 0;
    let mut before: Option<(time::OffsetDateTime, JobId)> = None;
    loop {
        let page = state
            .catalog
            .jobs(
                None,
                Some(JobState::Running),
                before.as_ref().map(|(at, id)| (*at, id)),
                100,
            )
            .await?;
        let Some(last) = page.last() else {
            return Ok(taken);
        };
        before = Some((last.created_at, last.id.clone()));
        for job in page {
            let Some(lease) = state
                .catalog
                .lease_job(&job.id, &state.node.id, LEASE_TIMEOUT)
                .await?
            else {
                continue;
            };
            // Read again under the lease: the node that ran it may have
            // ended it between the list and the lease.
            match state.catalog.job(&job.id).await? {
                Some(current) if current.state == JobState::Running => {}
                _ => continue,
            }
            let placements = (
                placement_of(&job.details, "from"),
                placement_of(&job.details, "to"),
            );
            let runner = match placements {
                (Some(from), Some(to)) if job.kind == JobKind::Move => MoveRun {
                    state: state.clone(),
                    principal: None,
                    scope: OperatorScope::server().tenant_scope(&job.tenant),
                    job: job.id.clone(),
                    from,
                    to,
                    _lease: lease,
                },
                _ => {
                    let at = state.clock.now();
                    let error = "its details do not name where from and where to";
                    state
                        .catalog
                        .advance_job(&job.id, JobState::Failed, job.step, Some(error), at)
                        .await?;
                    continue;
                }
            };
            tracing::warn!(job = %job.id.as_str(), tenant = %job.tenant, step = job.step.as_str(), "taking over a move whose node stopped");
            tokio::spawn(runner.resume());
            taken += 1;
        }
    }
}

struct MoveRun {
    state: AppState,
    /// Who asked for the move; `None` for a move this node took over.
    principal: Option<Principal>,
    scope: TenantScope,
    job: JobId,
    from: Placement,
    to: Placement,
    /// Held until the job ends.
    _lease: JobLease,
}

impl MoveRun {
    async fn step(&self, state: JobState, step: MoveStep, error: Option<&str>) {
        let at = self.state.clock.now();
        if let Err(e) = self
            .state
            .catalog
            .advance_job(&self.job, state, step, error, at)
            .await
        {
            tracing::error!(job = %self.job.as_str(), error = %e, "could not record the job's progress");
        }
    }

    /// An audit entry of this move, by whoever asked for it (the server's
    /// own for a move taken over).
    fn audit(&self, action: AuditAction, details: serde_json::Value) -> NewAuditEntry {
        let tenant = self.scope.tenant();
        match &self.principal {
            Some(principal) => {
                self.state
                    .audit(principal, Some(tenant), action, tenant.as_str(), details)
            }
            None => NewAuditEntry {
                tenant: Some(tenant.clone()),
                at: self.state.clock.now(),
                actor: None,
                action,
                target: tenant.to_string(),
                details,
                request_id: None,
                before: None,
                after: None,
            },
        }
    }

    /// Goes on with a job another node (or this one before a restart)
    /// started: from where the catalog says the tenant is.
    async fn resume(self) {
        match self.catalog_placement().await {
            Ok(Some(at)) if at == self.to => self.clean().await,
            Ok(Some(at)) if at == self.from => self.run().await,
            Ok(_) => {
                let error = "the tenant was deleted or placed elsewhere meanwhile";
                if let Err(e) = self.state.data.remove_copy(&self.scope, &self.to).await {
                    tracing::error!(tenant = %self.scope.tenant(), error = %e, "could not remove the partial copy");
                }
                self.step(JobState::Failed, MoveStep::Copying, Some(error))
                    .await;
            }
            // The lease ends with this task; a later sweep tries again.
            Err(e) => {
                tracing::warn!(job = %self.job.as_str(), error = %e, "could not read where a moved tenant is; the job waits for the next sweep");
            }
        }
    }

    async fn run(self) {
        let data = &self.state.data;
        let tenant = self.scope.tenant().clone();
        // Writes are held from here until the switch, so the copy is complete.
        let freeze = match data.freeze(&self.scope, &self.from).await {
            Ok(freeze) => freeze,
            Err(e) => {
                let error = format!("could not hold the tenant's writes: {e}");
                tracing::warn!(tenant = %tenant, job = %self.job.as_str(), %error, "move failed");
                self.step(JobState::Failed, MoveStep::Copying, Some(&error))
                    .await;
                return;
            }
        };
        if let Err((step, error)) = self.copy_verify_switch().await {
            // A switch whose commit was reported as failed may still have
            // committed: the catalog decides which copy is the tenant's.
            let switched = if step == MoveStep::Switching {
                self.catalog_points_at_target().await
            } else {
                Some(false)
            };
            match switched {
                Some(true) => {}
                Some(false) => {
                    if let Err(e) = data.stay(&self.scope, &self.from).await {
                        // Its writes stay refused (not lost) until a retry
                        // of the move clears this.
                        tracing::error!(tenant = %tenant, error = %e, "could not undo the tenant's departure from its pool");
                    }
                    drop(freeze);
                    tracing::warn!(tenant = %tenant, job = %self.job.as_str(), %error, "move failed");
                    if let Err(e) = data.remove_copy(&self.scope, &self.to).await {
                        tracing::error!(tenant = %tenant, error = %e, "could not remove the partial copy");
                    }
                    self.step(JobState::Failed, step, Some(&error)).await;
                    return;
                }
                None => {
                    // Neither copy can be known to be unused: keep both, and
                    // keep holding the tenant's writes until a restart lets
                    // the catalog decide, so that the copies cannot diverge.
                    std::mem::forget(freeze);
                    let note =
                        format!("{error}; the catalog could not be read: both copies were kept and writes stay held until a restart");
                    tracing::error!(tenant = %tenant, job = %self.job.as_str(), %note);
                    self.step(JobState::Failed, step, Some(&note)).await;
                    return;
                }
            }
        }
        data.moved(&self.scope, self.to.clone());
        self.state.changes.publish(Change::Tenant(tenant.clone()));
        drop(freeze);
        if self.state.catalog.engine() == CatalogEngine::Postgres {
            tokio::time::sleep(CLEANING_GRACE).await;
        }
        self.clean().await;
    }

    /// Removes the old copy, once the catalog points at the new one.
    async fn clean(self) {
        let tenant = self.scope.tenant();
        self.step(JobState::Running, MoveStep::Cleaning, None).await;
        match self.state.data.remove_copy(&self.scope, &self.from).await {
            Ok(()) => self.step(JobState::Succeeded, MoveStep::Done, None).await,
            Err(e) => {
                // The tenant is whole at its new placement; only disk space is lost.
                let note = format!("moved, but the old copy was not removed: {e}");
                tracing::error!(tenant = %tenant, %note);
                self.step(JobState::Succeeded, MoveStep::Done, Some(&note))
                    .await;
            }
        }
    }

    /// Where the catalog says the tenant lives; `None` if it has no tenant.
    async fn catalog_placement(&self) -> Result<Option<Placement>, StoreError> {
        Ok(self
            .state
            .catalog
            .tenant(&self.scope)
            .await?
            .map(|t| Placement {
                pool: t.pool,
                isolation: t.isolation,
            }))
    }

    /// Whether the catalog says the tenant lives at the target; `None` when
    /// the catalog cannot be read.
    async fn catalog_points_at_target(&self) -> Option<bool> {
        self.catalog_placement()
            .await
            .ok()
            .map(|at| at.as_ref() == Some(&self.to))
    }

    /// Copies the tenant, recording in the job how far the copy is each
    /// time it has written a part (the latest only, if parts come faster
    /// than the catalog records them).
    async fn copy_with_progress(&self) -> Result<(), DataError> {
        let (progress, mut seen) = watch::channel(CopyProgress::default());
        let copy = self
            .state
            .data
            .copy_tenant(&self.scope, &self.from, &self.to, &progress);
        tokio::pin!(copy);
        loop {
            tokio::select! {
                done = &mut copy => {
                    // The last part's count, which the copy may have
                    // finished before this loop saw it.
                    if seen.has_changed().unwrap_or(false) {
                        let last = *seen.borrow_and_update();
                        self.record_progress(last).await;
                    }
                    return done;
                }
                Ok(()) = seen.changed() => {
                    let now = *seen.borrow_and_update();
                    self.record_progress(now).await;
                }
            }
        }
    }

    async fn record_progress(&self, progress: CopyProgress) {
        let at = self.state.clock.now();
        let value = serde_json::to_value(progress).unwrap_or_default();
        if let Err(e) = self
            .state
            .catalog
            .record_job_progress(&self.job, &value, at)
            .await
        {
            tracing::debug!(job = %self.job.as_str(), error = %e, "could not record the copy's progress");
        }
    }

    /// The steps that can still fail without touching the tenant's data.
    async fn copy_verify_switch(&self) -> Result<(), (MoveStep, String)> {
        let data = &self.state.data;
        let fail = |step: MoveStep| move |e: DataError| (step, e.to_string());
        self.copy_with_progress()
            .await
            .map_err(fail(MoveStep::Copying))?;

        self.step(JobState::Running, MoveStep::Verifying, None)
            .await;
        let before = data
            .digests(&self.scope, &self.from)
            .await
            .map_err(fail(MoveStep::Verifying))?;
        let after = data
            .digests(&self.scope, &self.to)
            .await
            .map_err(fail(MoveStep::Verifying))?;
        if before != after {
            let differs = before
                .iter()
                .zip(after.iter())
                .find(|(a, b)| a != b)
                .map_or_else(
                    || "the collections differ".to_owned(),
                    |(a, _)| format!("collection {} differs", a.collection),
                );
            return Err((
                MoveStep::Verifying,
                format!("the copy does not match: {differs}"),
            ));
        }

        self.step(JobState::Running, MoveStep::Switching, None)
            .await;
        data.depart(&self.scope, &self.from, &self.to, self.state.clock.now())
            .await
            .map_err(fail(MoveStep::Switching))?;
        let audit = self
            .audit(
                AuditAction::TenantMove,
                json!({ "job": self.job, "from": placement_json(&self.from), "to": placement_json(&self.to) }),
            )
            .before(&placement_json(&self.from))
            .after(&placement_json(&self.to));
        let switched = self
            .state
            .catalog
            .switch_placement(
                &self.scope,
                (&self.from.pool, self.from.isolation),
                (&self.to.pool, self.to.isolation),
                &audit,
            )
            .await
            .map_err(|e| (MoveStep::Switching, e.to_string()))?;
        if !switched {
            return Err((
                MoveStep::Switching,
                "the tenant's placement changed meanwhile".into(),
            ));
        }
        Ok(())
    }
}
