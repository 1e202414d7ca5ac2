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
use tenantd_core::{KeyId, TenantId};

use crate::admit::Admission;
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
    /// A tenant was granted an add-on.
    AddOn { tenant: TenantId, add_on: AddOn },
    /// A tenant's policy now applies `overrides` (none: its plan alone).
    Policy {
        tenant: TenantId,
        overrides: Option<Overrides>,
    },
}

/// Where use cases publish their changes.
#[derive(Debug, Clone)]
pub struct Changes {
    identity: Identity,
    admission: Arc<Admission>,
}

impl Changes {
    pub(crate) fn new(identity: Identity, admission: Arc<Admission>) -> Self {
        Self {
            identity,
            admission,
        }
    }

    /// Applies `change` to everything in this process that it affects,
    /// before the use case answers.
    pub fn publish(&self, change: Change) {
        self.identity.apply(&change);
        self.admission.apply(change);
    }
}
