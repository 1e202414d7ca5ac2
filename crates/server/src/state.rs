//! State shared by every handler.

use std::ops::Deref;
use std::sync::Arc;

use serde_json::Value;
use tenantd_core::placement::PoolSpec;
use tenantd_core::{Clock, Principal, RegionId, TenantId};
use tenantd_store::AuditAction;
use tenantd_store::{Catalog, DataStore, NewAuditEntry};

use crate::admit::Admission;
use crate::app::Changes;
use crate::gateway::Gateway;
use crate::identify::Identity;

#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
pub struct Inner {
    pub catalog: Catalog,
    pub data: DataStore,
    pub identity: Identity,
    pub admission: Arc<Admission>,
    /// Where use cases publish what they changed.
    pub changes: Changes,
    pub gateway: Arc<Gateway>,
    pub clock: Arc<dyn Clock>,
    pub default_region: RegionId,
    /// The configured storage pools, for placement.
    pub pools: Vec<PoolSpec>,
    /// This node, as `/readyz` names it.
    pub node: tenantd_api::NodeInfo,
    /// Set when the node is shutting down: `/readyz` answers 503 `draining`.
    pub draining: std::sync::atomic::AtomicBool,
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }

    /// An audit entry for a change `principal` is making now.
    pub fn audit(
        &self,
        principal: &Principal,
        tenant: Option<&TenantId>,
        action: AuditAction,
        target: impl Into<String>,
        details: Value,
    ) -> NewAuditEntry {
        NewAuditEntry {
            tenant: tenant.cloned(),
            at: self.clock.now(),
            actor: Some((principal.key_id().clone(), principal.role())),
            action,
            target: target.into(),
            details,
            request_id: crate::edge::CURRENT_REQUEST_ID.try_with(Clone::clone).ok(),
            before: None,
            after: None,
        }
    }
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
