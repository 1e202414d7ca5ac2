//! Changes made on other nodes: read from the catalog's change feed
//! (`tenantd_store::changes`) and published here as this node's own, so that
//! a key revoked, a plan versioned or a policy applied on any node is in
//! effect on this one within a second.
//!
//! The feed is read after the position this node has applied through: when
//! a notification says something committed, at least every `POLL_EVERY`
//! (so that a notification lost without its connection failing costs at
//! most that), and at once after the notification connection is back. A
//! read costs one indexed query plus one small read per change that needs
//! data (a plan's new versions, a tenant's overrides or add-ons): O(1) per
//! change, never a reload of everything.

use std::sync::Arc;
use std::time::Duration;

use tenantd_core::{OperatorScope, ServiceName};
use tenantd_store::changes::Changed;
use tenantd_store::{Catalog, StoreError};
use tokio::sync::{watch, Notify};

use super::Change;
use crate::state::AppState;

/// The longest a change made elsewhere goes unread while the catalog answers.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// How long connecting the notification listener may take, and how long
/// to wait before connecting again after it failed.
const LISTENER_RETRY: Duration = Duration::from_secs(2);

/// The longest one read of the feed may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Entries read per query.
const BATCH: u32 = 500;

/// Follows the feed from `position` (where it stood before this node read
/// its state at start) until `stopped`.
pub async fn follow(state: AppState, mut position: i64, mut stopped: watch::Receiver<bool>) {
    let heard = Arc::new(Notify::new());
    let listener = tokio::spawn(listen(state.catalog.clone(), heard.clone()));
    let mut failing = false;
    loop {
        // Bounded, so that a catalog that stopped answering mid-read is
        // read again from where it stopped (applying a change twice is
        // applying it once).
        let read = tokio::select! {
            read = tokio::time::timeout(READ_TIMEOUT, catch_up(&state, &mut position)) => match read {
                Ok(read) => read.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {}s", READ_TIMEOUT.as_secs())),
            },
            _ = stopped.changed() => break,
        };
        match read {
            Ok(()) if failing => {
                failing = false;
                tracing::info!(position, "reading the catalog's change feed again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = e, position, "cannot read the catalog's change feed; changes made on other nodes wait until it answers");
            }
            Err(_) => {}
        }
        tokio::select! {
            () = heard.notified() => {}
            () = tokio::time::sleep(POLL_EVERY) => {}
            _ = stopped.changed() => break,
        }
    }
    listener.abort();
}

/// Applies every entry after `position`, moving it past each one applied.
async fn catch_up(state: &AppState, position: &mut i64) -> Result<(), StoreError> {
    let server = OperatorScope::server();
    loop {
        let entries = state
            .catalog
            .changes_after(&server, *position, BATCH)
            .await?;
        let last_batch = entries.len() < BATCH as usize;
        for entry in entries {
            if let Some(changed) = entry.changed {
                apply(state, &server, changed).await?;
            }
            *position = entry.seq;
        }
        if last_batch {
            return Ok(());
        }
    }
}

/// Reads what `changed` needs and publishes it.
async fn apply(
    state: &AppState,
    server: &OperatorScope,
    changed: Changed,
) -> Result<(), StoreError> {
    let catalog = &state.catalog;
    let publish = |change| state.changes.publish(change);
    match changed {
        Changed::Keys(keys) => keys.into_iter().map(Change::Key).for_each(publish),
        Changed::Tenant(tenant) => publish(Change::Tenant(tenant)),
        Changed::TenantPurged { tenant, keys } => publish(Change::TenantPurged { tenant, keys }),
        Changed::Plan(plan) => {
            let known = state.admission.latest_version(&plan).unwrap_or(0);
            for stored in catalog.plan_versions_after(&plan, known).await? {
                publish(Change::PlanVersion {
                    version: stored.version,
                    plan: stored.plan,
                });
            }
        }
        Changed::Policy(tenant) => {
            let overrides = catalog.tenant_overrides(server, &tenant).await?;
            publish(Change::Policy { tenant, overrides });
        }
        Changed::AddOns(tenant) => {
            let live = catalog
                .tenant_add_ons(server, &tenant, state.clock.now())
                .await?;
            let through = live.iter().map(|(id, ..)| *id).max().unwrap_or(0);
            publish(Change::AddOns {
                tenant,
                add_ons: live.into_iter().map(|(_, _, add_on)| add_on).collect(),
                through,
            });
        }
        Changed::SigningKeys => {
            state
                .gateway
                .keyring
                .reload(catalog, state.clock.now())
                .await?;
        }
        Changed::ProxyCache {
            tenant,
            service,
            prefix,
        } => {
            // A service name this version cannot read is no service here.
            if let Ok(service) = ServiceName::parse(&service) {
                publish(Change::ProxyCachePurged {
                    tenant,
                    service,
                    prefix,
                });
            }
        }
    }
    Ok(())
}

/// Keeps a notification listener connected, waking the follower on each
/// notification and after each (re)connection, when some may have been
/// missed. Logs once per state change.
async fn listen(catalog: Catalog, heard: Arc<Notify>) {
    // Whether the last attempt failed, so that each change of state is
    // logged once.
    let mut listening: Option<bool> = None;
    loop {
        match catalog.listen_for_changes(LISTENER_RETRY).await {
            Ok(None) => return,
            Ok(Some(mut listener)) => {
                if listening == Some(false) {
                    tracing::info!("listening for catalog changes again");
                }
                heard.notify_one();
                loop {
                    match listener.changed().await {
                        Ok(true) => heard.notify_one(),
                        // Lost and connected again: read what may be missed.
                        Ok(false) => heard.notify_one(),
                        Err(e) => {
                            tracing::warn!(error = %e, "lost the catalog's change notifications; reading the feed every {}s until they are back", POLL_EVERY.as_secs());
                            listening = Some(false);
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                if listening != Some(false) {
                    tracing::warn!(error = %e, "cannot listen for catalog changes; reading the feed every {}s until it can", POLL_EVERY.as_secs());
                }
                listening = Some(false);
            }
        }
        tokio::time::sleep(LISTENER_RETRY).await;
    }
}
