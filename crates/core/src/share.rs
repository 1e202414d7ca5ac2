//! Each tenant's part of a cache that all tenants share: the bytes it holds,
//! and the most it may hold, so that one tenant filling the cache never
//! pushes the others' entries out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::TenantId;

/// A whole percentage from 1 to 100: a share of something that every
/// tenant gets some of and none more than all of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u8")]
pub struct Percent(u8);

impl Percent {
    pub const ALL: Percent = Percent(100);

    pub fn new(percent: u64) -> Result<Self, String> {
        match percent {
            1..=100 => Ok(Self(percent as u8)),
            _ => Err(format!("{percent} is not a percentage from 1 to 100")),
        }
    }

    /// `percent`, for constants; a value outside 1 to 100 fails to compile.
    pub const fn of_const(percent: u8) -> Self {
        assert!(percent >= 1 && percent <= 100, "a percentage from 1 to 100");
        Self(percent)
    }

    /// `percent` of `whole`, rounded down.
    pub fn of(self, whole: u64) -> u64 {
        whole.saturating_mul(u64::from(self.0)) / 100
    }
}

impl TryFrom<u64> for Percent {
    type Error = String;
    fn try_from(percent: u64) -> Result<Self, String> {
        Self::new(percent)
    }
}

impl From<Percent> for u8 {
    fn from(percent: Percent) -> u8 {
        percent.0
    }
}

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
    /// Shares of `share` of `capacity` bytes.
    pub fn new(capacity: u64, share: Percent) -> Self {
        Self {
            held: Arc::default(),
            holders: Arc::default(),
            max: share.of(capacity),
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
        let shares = TenantShares::new(1_000, Percent::new(25).unwrap());
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
        assert_eq!(TenantShares::new(1_000, Percent::ALL).max, 1_000);
        assert!(Percent::new(0).is_err() && Percent::new(101).is_err());
        assert_eq!(serde_json::from_str::<Percent>("30").unwrap(), Percent(30));
        assert!(serde_json::from_str::<Percent>("0").is_err());
    }

    #[test]
    fn held_is_zero_once_everything_left_and_a_refused_tenant_holds_nothing() {
        let shares = TenantShares::new(1_000, Percent::new(10).unwrap());
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
