//! The tenant move job: copy a tenant's data to another placement (pool and
//! isolation model), verify the copy, switch the catalog, remove the old copy.
//!
//! Until the catalog switches, the old copy is the tenant's data: any failure
//! before that removes the new copy and leaves the tenant where it was.
//! Writes are held (503 `tenant_maintenance`) from the copy to the switch;
//! reads go on from the old copy.

use serde_json::json;
use tenantd_core::{JobId, Principal, Tenant, TenantScope};
use tenantd_store::data::{CopyProgress, DataError, Placement};
use tenantd_store::jobs::{Job, JobKind, JobState, MoveStep};
use tenantd_store::AuditAction;
use tokio::sync::watch;

use crate::app::Change;
use crate::state::AppState;

fn placement_json(p: &Placement) -> serde_json::Value {
    json!({ "pool": p.pool, "isolation": p.isolation })
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
    let job = Job {
        id: JobId::generate(now, &mut rand::thread_rng()),
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
        principal: principal.clone(),
        scope,
        job: job.id.clone(),
        from,
        to,
    };
    tokio::spawn(runner.run());
    Ok(job)
}

struct MoveRun {
    state: AppState,
    principal: Principal,
    scope: TenantScope,
    job: JobId,
    from: Placement,
    to: Placement,
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

    async fn run(self) {
        let data = &self.state.data;
        let tenant = self.scope.tenant().clone();
        // Writes are held from here until the switch, so the copy is complete.
        let freeze = data.freeze(&self.scope).await;
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

        self.step(JobState::Running, MoveStep::Cleaning, None).await;
        match data.remove_copy(&self.scope, &self.from).await {
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

    /// Whether the catalog says the tenant lives at the target; `None` when
    /// the catalog cannot be read.
    async fn catalog_points_at_target(&self) -> Option<bool> {
        match self.state.catalog.tenant(&self.scope).await {
            Ok(Some(t)) => Some(t.pool == self.to.pool && t.isolation == self.to.isolation),
            Ok(None) => Some(false),
            Err(_) => None,
        }
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
        let audit = self.state.audit(
            &self.principal,
            Some(self.scope.tenant()),
            AuditAction::TenantMove,
            self.scope.tenant().as_str(),
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
