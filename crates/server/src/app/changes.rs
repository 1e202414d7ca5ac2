//! Change events: what a use case changed, said once, and what this process
//! keeps in memory reacting to it.
//!
//! Invariant: a change is published once, by the use case that made it,
//! after its write (and audit entry) committed. Nothing else drops a cached
//! key or tenant or puts a plan or policy in effect: the identify cache and
//! admission react to the events here, so a change made here is in effect
//! from the next request on, and a change learned from elsewhere (another
//! node, later) needs only to be published to take effect the same way.

use std::sync::Arc;

use tenantd_core::plan::{AddOn, Plan};
use tenantd_core::policy::Overrides;
use tenantd_core::{KeyId, ServiceName, TenantId};

use crate::admit::Admission;
use crate::gateway::Gateway;
use crate::identify::Identity;

/// One change to the control plane.
#[derive(Debug, Clone)]
pub enum Change {
    /// A key was created, rotated or revoked.
    Key(KeyId),
    /// A tenant was created, or its status, plan, billing day or placement
    /// changed.
    Tenant(TenantId),
    /// A tenant was purged, with every key it had.
    TenantPurged { tenant: TenantId, keys: Vec<KeyId> },
    /// A plan has a new version (`version`, counted from 1).
    PlanVersion { version: i64, plan: Plan },
    /// A tenant's add-ons not expired, as the catalog had them when the one
    /// numbered `through` (the highest id among them) was its latest: an
    /// older list, published late, never replaces a newer one.
    AddOns {
        tenant: TenantId,
        add_ons: Vec<AddOn>,
        through: i64,
    },
    /// A tenant's policy now applies `overrides` (none: its plan alone).
    Policy {
        tenant: TenantId,
        overrides: Option<Overrides>,
    },
    /// A tenant's cached responses of a service were purged, those whose
    /// path (after the service's prefix) starts with `prefix`.
    ProxyCachePurged {
        tenant: TenantId,
        service: ServiceName,
        prefix: String,
    },
}

/// Where use cases publish their changes.
#[derive(Debug, Clone)]
pub struct Changes {
    identity: Identity,
    admission: Arc<Admission>,
    gateway: Arc<Gateway>,
}

impl Changes {
    pub(crate) fn new(
        identity: Identity,
        admission: Arc<Admission>,
        gateway: Arc<Gateway>,
    ) -> Self {
        Self {
            identity,
            admission,
            gateway,
        }
    }

    /// Applies `change` to everything in this process that it affects,
    /// before the use case answers. Applying a change twice is applying it
    /// once: a node hears its own changes again from the change feed.
    pub fn publish(&self, change: Change) {
        if let Change::ProxyCachePurged {
            tenant,
            service,
            prefix,
        } = &change
        {
            // A service this node is not configured with has nothing cached.
            if let Some(config) = self.gateway.service(service).map(|s| &s.config) {
                let target_prefix = format!("{}{prefix}", config.path_prefix);
                self.gateway.cache.purge(tenant, service, &target_prefix);
            }
            return;
        }
        self.identity.apply(&change);
        self.admission.apply(change);
    }
}
