//! Each tenant's part of a cache that all tenants share: the bytes it holds,
//! and the most it may hold, so that one tenant filling the cache never
//! pushes the others' entries out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::TenantId;

/// Bytes held per tenant, against a cap of a percentage of the capacity.
/// Clones share the same counts (the cache's eviction listener holds one).
#[derive(Debug, Clone)]
pub struct TenantShares {
    held: Arc<Mutex<HashMap<TenantId, u64>>>,
    /// Tenants holding anything, kept under the lock: while it is 0 (a cache
    /// nothing went into), `held` answers without taking the lock, which
    /// every request consulting the cache would otherwise contend on.
    holders: Arc<AtomicUsize>,
    max: u64,
}

impl TenantShares {
    /// Shares of `share_percent` (at most 100) of `capacity` bytes.
    pub fn new(capacity: u64, share_percent: u8) -> Self {
        Self {
            held: Arc::default(),
            holders: Arc::default(),
            max: capacity * u64::from(share_percent.min(100)) / 100,
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, u64>> {
        // The map holds counters, each changed in one step: a panic
        // elsewhere cannot leave one half-written.
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts `bytes` more for `tenant`, unless that would pass its share.
    pub fn reserve(&self, tenant: &TenantId, bytes: u64) -> bool {
        let mut held = self.counts();
        let current = held.get(tenant).copied().unwrap_or(0);
        if current + bytes > self.max {
            return false;
        }
        held.insert(tenant.clone(), current + bytes);
        self.holders.store(held.len(), Ordering::Release);
        true
    }

    /// Gives back `bytes` of an entry of `tenant` that left the cache.
    pub fn release(&self, tenant: &TenantId, bytes: u64) {
        let mut held = self.counts();
        if let Some(current) = held.get_mut(tenant) {
            *current = current.saturating_sub(bytes);
            if *current == 0 {
                held.remove(tenant);
            }
        }
        self.holders.store(held.len(), Ordering::Release);
    }

    /// The bytes `tenant` holds now.
    pub fn held(&self, tenant: &TenantId) -> u64 {
        if self.holders.load(Ordering::Acquire) == 0 {
            return 0;
        }
        self.counts().get(tenant).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_holds_at_most_its_share_and_gets_back_what_leaves() {
        let shares = TenantShares::new(1_000, 25);
        let (acme, globex): (TenantId, TenantId) =
            ("acme".parse().unwrap(), "globex".parse().unwrap());
        assert!(shares.reserve(&acme, 200));
        assert!(shares.reserve(&acme, 50), "exactly its share");
        assert!(!shares.reserve(&acme, 1), "past its share");
        assert_eq!(shares.held(&acme), 250);
        assert!(
            shares.reserve(&globex, 250),
            "another tenant has its own share"
        );
        shares.release(&acme, 200);
        assert_eq!(shares.held(&acme), 50);
        assert!(shares.reserve(&acme, 200));
        // Releasing more than held (an entry counted before a restart of the
        // counts) never underflows.
        shares.release(&globex, 1_000);
        assert_eq!(shares.held(&globex), 0);
        assert_eq!(TenantShares::new(1_000, 200).max, 1_000, "at most 100 %");
    }

    #[test]
    fn held_is_zero_once_everything_left_and_a_refused_tenant_holds_nothing() {
        let shares = TenantShares::new(1_000, 10);
        let acme: TenantId = "acme".parse().unwrap();
        assert_eq!(shares.held(&acme), 0, "nothing cached yet");
        assert!(!shares.reserve(&acme, 101), "past its share: not counted");
        assert_eq!(shares.holders.load(Ordering::Acquire), 0);
        assert!(shares.reserve(&acme, 60));
        assert_eq!(shares.held(&acme), 60);
        shares.release(&acme, 60);
        assert_eq!(shares.held(&acme), 0);
        assert_eq!(shares.holders.load(Ordering::Acquire), 0);
    }
}
