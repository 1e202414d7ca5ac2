//! The application: the control plane's use cases, between the routes that
//! parse and render and the store that keeps. A use case checks what it is
//! asked, makes its write with its audit entry (one catalog transaction),
//! and publishes the one change it made (`changes`).

pub mod addons;
pub mod changes;
pub mod feed;
pub mod keys;
pub mod moves;
pub mod plans;
pub mod policy;
pub mod proxy_cache;
pub mod tenants;

pub use changes::{Change, Changes};
