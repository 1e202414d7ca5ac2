//! The cluster as operators see it: the nodes serving the catalog and who
//! runs its background work.

use axum::extract::State;
use axum::Json;
use tenantd_api::{ClusterNode, ClusterView, LeaseView, NodeState};
use tenantd_store::jobs::JobState;
use tenantd_store::nodes::{Lease, NodeRecord};
use tenantd_store::{BackgroundTask, CatalogEngine};

use super::access::Operator;
use crate::problem::ApiError;
use crate::state::AppState;

/// Running jobs listed with their leases; more are left out of the view.
const JOBS_SHOWN: u32 = 100;

fn node_view(node: NodeRecord, now: time::OffsetDateTime) -> ClusterNode {
    let state = match node.stopped_at {
        Some(_) => NodeState::Stopped,
        None if node.is_up(now) => NodeState::Up,
        None => NodeState::Silent,
    };
    ClusterNode {
        id: node.id,
        name: node.name,
        address: node.address,
        version: node.version,
        started_at: node.started_at,
        heartbeat_at: node.heartbeat_at,
        stopped_at: node.stopped_at,
        state,
    }
}

/// The nodes serving this catalog (those that stopped or fell silent in the
/// last day too) and which node holds each lease: the purge sweep, the
/// signing keys, each running job.
#[utoipa::path(get, path = "/v1/cluster", tag = "meta",
    security(("api_key" = [])),
    responses((status = 200, description = "The cluster", body = ClusterView)))]
pub(super) async fn cluster(
    Operator(_principal, _operator): Operator,
    State(state): State<AppState>,
) -> Result<Json<ClusterView>, ApiError> {
    let now = state.clock.now();
    let nodes = state.catalog.nodes().await?;
    let mut leases = Vec::new();
    // Only a PostgreSQL catalog without Redis has a sole node's lease.
    if state.catalog.engine() == CatalogEngine::Postgres
        && state.admission.limiter.dependency().is_none()
    {
        leases.push(Lease::SoleNode);
    }
    leases.extend([
        Lease::Task(BackgroundTask::PurgeSweep),
        Lease::Task(BackgroundTask::SigningKeys),
    ]);
    let running = state
        .catalog
        .jobs(None, Some(JobState::Running), None, JOBS_SHOWN)
        .await?;
    leases.extend(running.into_iter().map(|job| Lease::Job(job.id)));
    let held = state.catalog.lease_holders(leases, &state.node.id).await?;
    Ok(Json(ClusterView {
        answered_by: state.node.id.clone(),
        nodes: nodes.into_iter().map(|n| node_view(n, now)).collect(),
        leases: held
            .into_iter()
            .map(|(lease, holder)| {
                let (name, job) = match lease {
                    Lease::SoleNode => ("sole_node", None),
                    Lease::Task(BackgroundTask::PurgeSweep) => ("purge_sweep", None),
                    Lease::Task(BackgroundTask::SigningKeys) => ("signing_keys", None),
                    Lease::Job(job) => ("job", Some(job)),
                };
                LeaseView {
                    lease: name.to_owned(),
                    job,
                    holder,
                }
            })
            .collect(),
    }))
}
