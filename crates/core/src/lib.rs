//! tenantd's domain: identifiers, roles, API keys, tenants, the clock and the
//! table of stable error codes. Everything here is pure logic with no I/O, so
//! every rule in it is tested on values and a fake clock.
#![forbid(unsafe_code)]

pub mod api_key;
pub mod breaker;
pub mod clock;
pub mod error;
pub mod fair;
pub mod filter;
pub mod gcra;
pub mod identity;
pub mod ids;
pub mod key;
pub mod placement;
pub mod plan;
pub mod policy;
pub mod quota;
pub mod record;
pub mod role;
pub mod share;
pub mod tenant;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
pub mod text;
pub mod user;
pub mod whole;

pub use api_key::{ApiKeyToken, KeyHasher, KeySecret, SecretHash, ServerSecret};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::ErrorCode;
pub use identity::{DataScope, IdentifyError, OperatorScope, Principal, TenantScope};
pub use ids::{IdError, KeyId, NodeId, PlanId, PoolName, RegionId, ServiceName, TenantId};
pub use key::{KeyOwner, KeyRecord, KeyState};
pub use record::{CollectionName, Isolation, JobId, RecordId};
pub use role::Role;
pub use tenant::{Tenant, TenantStatus, TransitionError};
