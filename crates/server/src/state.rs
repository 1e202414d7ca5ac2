//! State shared by every handler.

use std::ops::Deref;
use std::sync::Arc;

use serde_json::Value;
use tenantd_core::{Clock, Principal, RegionId, TenantId};
use tenantd_store::{Catalog, NewAuditEntry};

use crate::identify::Identity;

#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
pub struct Inner {
    pub catalog: Catalog,
    pub identity: Identity,
    pub clock: Arc<dyn Clock>,
    pub default_region: RegionId,
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
        action: &'static str,
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
        }
    }
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
