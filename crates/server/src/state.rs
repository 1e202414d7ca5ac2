//! State shared by every handler.

use std::ops::Deref;
use std::sync::Arc;

use serde_json::Value;
use tenantd_core::placement::PoolSpec;
use tenantd_core::{Clock, Principal, RegionId, TenantId, TenantStatus};
use tenantd_store::{Catalog, DataStore, NewAuditEntry, StoreError};

use crate::admit::Admission;
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
    pub gateway: Arc<Gateway>,
    pub clock: Arc<dyn Clock>,
    pub default_region: RegionId,
    /// The configured storage pools, for placement.
    pub pools: Vec<PoolSpec>,
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
            request_id: crate::edge::CURRENT_REQUEST_ID.try_with(Clone::clone).ok(),
            before: None,
            after: None,
        }
    }
}

impl AppState {
    /// Purges a soft-deleted tenant: its records first, then its catalog
    /// entries, then whatever identify has cached. Data goes first so that a
    /// crash in between leaves a deleted tenant whose purge the next sweep
    /// finishes, never data without a tenant. `false` if it is not deleted.
    pub async fn purge_tenant(
        &self,
        id: &TenantId,
        audit: &NewAuditEntry,
    ) -> Result<bool, StoreError> {
        let Some(tenant) = self.catalog.tenant(id).await? else {
            return Ok(false);
        };
        if tenant.status != TenantStatus::Deleted {
            return Ok(false);
        }
        self.data.purge(id, &tenant.pool).await?;
        let Some(keys) = self.catalog.purge_tenant(id, audit).await? else {
            return Ok(false);
        };
        self.identity.forget_purged_tenant(id, &keys).await;
        self.admission.ledgers.forget(id);
        Ok(true)
    }
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
