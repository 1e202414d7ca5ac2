//! The gateway's response cache: purges asked for by tenant admins.

use serde_json::json;
use tenantd_core::{Principal, ServiceName, TenantScope};
use tenantd_store::AuditAction;

use super::Change;
use crate::problem::ApiError;
use crate::state::AppState;

/// Purges the scope's tenant's cached responses of `service` whose path
/// (after the service's prefix) starts with `prefix`, on every node.
pub async fn purge(
    state: &AppState,
    principal: &Principal,
    scope: &TenantScope,
    service: &ServiceName,
    prefix: String,
) -> Result<(), ApiError> {
    let audit = state.audit(
        principal,
        Some(scope.tenant()),
        AuditAction::ProxyCachePurge,
        service.as_str(),
        json!({ "prefix": prefix }),
    );
    state.catalog.record_action(&audit).await?;
    state.changes.publish(Change::ProxyCachePurged {
        tenant: scope.tenant().clone(),
        service: service.clone(),
        prefix,
    });
    Ok(())
}
