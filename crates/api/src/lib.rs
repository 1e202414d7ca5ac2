//! The wire types of tenantd's HTTP API: request and response bodies, shared
//! by the server (which derives its OpenAPI description from them) and the
//! Rust SDK, so the two cannot drift apart.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tenantd_core::filter::FIELD_PATH_PATTERN;
use tenantd_core::key::MAX_KEY_NAME_CHARS;
use tenantd_core::plan::{Metric, Period};
use tenantd_core::quota::BillingDay;
use tenantd_core::record::MAX_INDEXED_FIELDS;
use tenantd_core::tenant::MAX_TENANT_NAME_CHARS;
use tenantd_core::text::{LINE_PATTERN, MAX_REASON_CHARS, NON_BLANK_LINE_PATTERN};
use tenantd_core::whole;
use tenantd_core::{
    CollectionName, Isolation, JobId, KeyId, KeyState, NodeId, PlanId, PoolName, RecordId,
    RegionId, Role, TenantId, TenantStatus,
};
use time::OffsetDateTime;
use utoipa::ToSchema;

mod plans;
pub mod schema;

pub use plans::{
    BoundsSpec, Change, ClassRateSpec, GraceSpec, Overrides, PlanSpec, QuotaBoundsSpec,
    QuotaOverride, QuotaSpec, RateSpec, SelfServiceSpec,
};
use schema::string_schema;

/// A string-valued enum of the wire: serialized as its snake_case name, with
/// that name from `as_str` and `Display`, and `parse` for stored values.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The value named `text`, if there is one.
            pub fn parse(text: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == text)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum! {
    /// Where a job stands: `running`, then `succeeded` or `failed`.
    JobState {
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
    }
}

wire_enum! {
    /// What a job does.
    JobKind {
        /// Moves a tenant's data to another placement.
        Move => "move",
    }
}

wire_enum! {
    /// The step a move has reached, or ended at.
    MoveStep {
        Copying => "copying",
        Verifying => "verifying",
        Switching => "switching",
        Cleaning => "cleaning",
        Done => "done",
    }
}

wire_enum! {
    /// Where a policy version stands.
    PolicyStatus {
        /// Waits for an operator.
        Proposed => "proposed",
        /// Applied at once: within the plan's self-service ranges, or by an operator.
        Applied => "applied",
        /// Approved by an operator, and applied then.
        Approved => "approved",
        Rejected => "rejected",
        Withdrawn => "withdrawn",
        /// Was in effect until a revert restored an earlier version's content.
        Reverted => "reverted",
    }
}

/// The OpenAPI schema of a problem's `code`: one of the codes of
/// `tenantd_core::ErrorCode`, the one table of them.
fn error_code_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .description(Some("Stable machine-readable code; see docs/errors.md."))
        .enum_values(Some(
            tenantd_core::ErrorCode::ALL.iter().map(|c| c.as_str()),
        ))
        .build()
}

/// The JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// `urn:tenantd:error:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// Stable machine-readable code; see docs/errors.md. A string here, so
    /// that a client reads problems with codes added after it was built;
    /// the OpenAPI document lists every code this version answers with.
    #[schema(schema_with = error_code_schema)]
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The id to quote when asking an operator about this request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` when alive, `ready` when the store answers.
    pub status: String,
}

/// Readiness: whether this node can serve, and the state of each
/// dependency as the node last saw it (never by waiting on one now).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    /// `ready`; `draining` (503) once the node received a shutdown signal
    /// and waits `shutdown_notice` before it stops accepting; or
    /// `unavailable` (503) while the catalog cannot write, a storage pool is
    /// down, or Redis is down and the limiter fails closed.
    pub status: String,
    /// The catalog, each storage pool, and Redis when configured.
    pub dependencies: Vec<DependencyHealth>,
    /// The node that answered.
    pub node: NodeInfo,
}

/// A tenantd node: which one answered, and which build it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeInfo {
    /// This run of the node, made at its start (a restart is a new id).
    #[schema(value_type = schema::NodeId)]
    pub id: NodeId,
    /// `node_name`, or the host's name when unset.
    pub name: String,
    /// tenantd's version.
    pub version: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
}

/// The nodes serving the catalog, and which of them runs each piece of the
/// catalog's background work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterView {
    /// The node that answered.
    #[schema(value_type = schema::NodeId)]
    pub answered_by: NodeId,
    /// Every node registered in the last day, oldest first: those that
    /// stopped, or fell silent, included.
    pub nodes: Vec<ClusterNode>,
    /// The purge sweep, the signing keys, every running job and, on a
    /// catalog served by one node at a time, that node's own lease.
    pub leases: Vec<LeaseView>,
}

/// One node as it registered itself, and whether it is still beating.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterNode {
    #[schema(value_type = schema::NodeId)]
    pub id: NodeId,
    pub name: String,
    /// The address it listens on, as it bound it.
    pub address: String,
    pub version: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub heartbeat_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub stopped_at: Option<OffsetDateTime>,
    pub state: NodeState,
}

/// Whether a node is serving, as its heartbeats say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// It beat within the last 10 seconds.
    Up,
    /// It has not beaten for 10 seconds: it died, hangs, or cannot reach
    /// the catalog.
    Silent,
    /// It stopped in order.
    Stopped,
}

/// One lease of the catalog's background work and the node holding it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LeaseView {
    /// `sole_node`, `purge_sweep`, `signing_keys` or `job`.
    pub lease: String,
    /// The job, for a job's lease.
    #[schema(value_type = Option<schema::JobId>)]
    pub job: Option<JobId>,
    /// The node holding it; none while nobody does (a job whose node
    /// stopped waits here to be taken over).
    #[schema(value_type = Option<schema::NodeId>)]
    pub holder: Option<NodeId>,
}

/// One dependency's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DependencyHealth {
    /// `catalog`, `pool <name>` or `redis`.
    pub name: String,
    /// `ok`; `degraded` (its last call failed); `down` (its circuit is open:
    /// calls are refused at once until a probe succeeds).
    pub state: String,
    /// The last failure, kept after the dependency heals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Calls that failed since the node started.
    pub errors_total: u64,
}

/// The verified identity behind the presented key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Me {
    #[schema(value_type = schema::KeyId)]
    pub key_id: KeyId,
    #[schema(value_type = schema::Role)]
    pub role: Role,
    /// The key's tenant; absent for operator keys.
    pub tenant: Option<Tenant>,
    #[schema(value_type = Option<schema::PlanId>)]
    pub plan: Option<PlanId>,
}

/// A tenant: its identity, plan, placement and lifecycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Tenant {
    #[schema(value_type = schema::TenantId)]
    pub id: TenantId,
    pub name: String,
    #[schema(value_type = schema::PlanId)]
    pub plan: PlanId,
    /// The plan version the tenant is pinned to; it follows the plan's
    /// latest version when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_version: Option<i64>,
    #[schema(value_type = schema::RegionId)]
    pub region: RegionId,
    /// How its data is kept apart from other tenants'.
    #[schema(value_type = schema::Isolation)]
    pub isolation: Isolation,
    /// The storage pool holding its data.
    #[schema(value_type = schema::PoolName)]
    pub pool: PoolName,
    #[schema(value_type = schema::TenantStatus)]
    pub status: TenantStatus,
    /// The day of the month (UTC) its monthly quotas reset.
    #[schema(value_type = schema::BillingDay)]
    pub billing_day: BillingDay,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// When the tenant was soft-deleted; it is purged `purge_after` later.
    #[serde(with = "time::serde::rfc3339::option")]
    pub deleted_at: Option<OffsetDateTime>,
}

impl From<tenantd_core::Tenant> for Tenant {
    fn from(t: tenantd_core::Tenant) -> Self {
        Self {
            id: t.id,
            name: t.name,
            plan: t.plan,
            plan_version: t.plan_version,
            region: t.region,
            isolation: t.isolation,
            pool: t.pool,
            status: t.status,
            billing_day: t.billing_day,
            created_at: t.created_at,
            updated_at: t.updated_at,
            deleted_at: t.deleted_at,
        }
    }
}

/// One page of a list, in the list's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

// Text fields' schemas: the server's rule for each as a pattern and length
// limits (see `tenantd_core::text`).
fn tenant_name_schema() -> utoipa::openapi::Object {
    string_schema(NON_BLANK_LINE_PATTERN, 1, MAX_TENANT_NAME_CHARS).build()
}

fn key_name_schema() -> utoipa::openapi::Object {
    string_schema(LINE_PATTERN, 0, MAX_KEY_NAME_CHARS).build()
}

fn reason_schema() -> utoipa::openapi::Object {
    string_schema(NON_BLANK_LINE_PATTERN, 1, MAX_REASON_CHARS).build()
}

/// A collection's indexed fields: distinct field paths, at most 16.
fn index_list_schema() -> utoipa::openapi::schema::Array {
    let path = utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(FIELD_PATH_PATTERN));
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(path)
        .max_items(Some(MAX_INDEXED_FIELDS))
        .unique_items(true)
        .build()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Immutable slug: 3 to 63 lowercase letters, digits and single hyphens.
    #[schema(value_type = schema::TenantId)]
    pub id: TenantId,
    /// Display name, 1 to 200 characters.
    #[schema(schema_with = tenant_name_schema)]
    pub name: String,
    /// Data-residency region; the server's `default_region` when omitted.
    #[schema(value_type = Option<schema::RegionId>)]
    pub region: Option<RegionId>,
    /// Where its data lives: `pooled` (default) or `dedicated` (a database of
    /// its own). `schema` needs a PostgreSQL storage pool.
    #[serde(default)]
    #[schema(value_type = Option<schema::Isolation>)]
    pub isolation: Option<Isolation>,
    /// The storage pool; the first pool of the tenant's region offering its
    /// isolation model when omitted. A pool of another region is refused.
    #[serde(default)]
    #[schema(value_type = Option<schema::PoolName>)]
    pub pool: Option<PoolName>,
    /// One of the server's configured plans; `default` when omitted.
    #[serde(default)]
    #[schema(value_type = Option<schema::PlanId>)]
    pub plan: Option<PlanId>,
    /// The day of the month (1 to 28, UTC) its monthly quotas reset; the day
    /// of creation (at most 28) when omitted.
    #[serde(default)]
    #[schema(value_type = Option<schema::BillingDay>)]
    pub billing_day: Option<BillingDay>,
}

impl CreateTenant {
    /// A tenant with every optional setting left to the server: the default
    /// region, model, pool and plan, and today as its billing day.
    pub fn new(id: TenantId, name: impl Into<String>) -> Self {
        Self {
            id,
            name: name.into(),
            region: None,
            isolation: None,
            pool: None,
            plan: None,
            billing_day: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    /// New display name, 1 to 200 characters.
    #[schema(schema_with = tenant_name_schema)]
    pub name: Option<String>,
    /// Another configured plan. Usage so far is kept; the new limits apply
    /// from the next request.
    #[serde(default)]
    #[schema(value_type = Option<schema::PlanId>)]
    pub plan: Option<PlanId>,
    /// A new billing day; the current monthly window ends on the old day.
    #[serde(default)]
    #[schema(value_type = Option<schema::BillingDay>)]
    pub billing_day: Option<BillingDay>,
    /// Pin the tenant to a version of its plan, or `null` to follow the
    /// plan's latest version again. Absent: unchanged (a plan change unpins).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub plan_version: Option<Option<i64>>,
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D>(deserializer: D) -> Result<Option<Option<i64>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    whole::de_opt(deserializer).map(Some)
}

/// Reads a nested struct only from a JSON object: serde's derived readers
/// would also fill it from an array of its fields in order, which no client
/// means. (The body itself is checked in the server's JSON extractor.)
fn object_only<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let value = Value::deserialize(deserializer)?;
    if !value.is_object() {
        return Err(serde::de::Error::invalid_type(
            serde::de::Unexpected::Other("a value that is not a JSON object"),
            &"a JSON object",
        ));
    }
    T::deserialize(value).map_err(serde::de::Error::custom)
}

/// A page of Tenant items.
pub type TenantPage = Page<Tenant>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// `operator` for platform keys; `admin`, `developer` or `reader` for
    /// tenant keys, never above the creator's own role.
    #[schema(value_type = schema::Role)]
    pub role: Role,
    /// A label, e.g. "ci deploys"; up to 100 characters.
    #[serde(default)]
    #[schema(schema_with = key_name_schema)]
    pub name: String,
    /// When the key stops working; it never expires when omitted.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// How long the old key keeps working, 0 to 2592000 seconds (default 3600).
    #[serde(default, deserialize_with = "whole::de_opt")]
    #[schema(maximum = 2592000)]
    pub overlap_seconds: Option<u32>,
    /// When the new key stops working; never when omitted.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
}

/// A key as listed; the secret is never part of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    #[schema(value_type = schema::KeyId)]
    pub id: KeyId,
    /// The owning tenant; absent for platform keys.
    #[schema(value_type = Option<schema::TenantId>)]
    pub tenant: Option<TenantId>,
    #[schema(value_type = schema::Role)]
    pub role: Role,
    pub name: String,
    #[schema(value_type = schema::KeyState)]
    pub state: KeyState,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<OffsetDateTime>,
    /// Written behind: may lag real use by the flush interval.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<OffsetDateTime>,
    /// The key this one replaced by rotation.
    #[schema(value_type = Option<schema::KeyId>)]
    pub rotated_from: Option<KeyId>,
}

/// A new key with its token, shown this once and never again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreatedKey {
    pub key: KeyView,
    /// `tk_<id>_<secret>`: store it now; the server keeps only a hash.
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RotatedKey {
    pub key: KeyView,
    /// The new key's token, shown this once.
    pub token: String,
    /// The old key, now expiring at the end of the overlap.
    pub previous: KeyView,
}

/// A page of KeyView items.
pub type KeyPage = Page<KeyView>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditView {
    /// Position in the log; later entries have larger numbers.
    pub seq: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    /// The key that made the change; absent for the server's own actions.
    #[schema(value_type = Option<schema::KeyId>)]
    pub actor_key: Option<KeyId>,
    #[schema(value_type = Option<schema::Role>)]
    pub actor_role: Option<Role>,
    /// What was done, e.g. `tenant.suspend` or `key.rotate`.
    pub action: String,
    /// The id of the object changed.
    pub target: String,
    #[schema(value_type = Object)]
    pub details: Value,
    /// The request that made the change, as in its `X-Request-Id`.
    #[serde(default)]
    pub request_id: Option<String>,
    /// SHA-256 (hex) of the changed object's JSON before the change.
    #[serde(default)]
    pub before_digest: Option<String>,
    /// SHA-256 (hex) of the changed object's JSON after the change: the
    /// digest of the body a read of the object returns then.
    #[serde(default)]
    pub after_digest: Option<String>,
}

/// A page of AuditView items.
pub type AuditPage = Page<AuditView>;

/// The result of walking an audit chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditVerification {
    /// Entries checked.
    pub entries: u64,
    /// The chain's last hash, hex. Keep it elsewhere: a later verification
    /// whose chain does not pass through it means the log's end was cut.
    pub head: String,
    /// Whether the chain holds.
    pub intact: bool,
    /// Each entry edited, removed, inserted or out of order.
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCollection {
    #[schema(value_type = schema::CollectionName)]
    pub name: CollectionName,
    /// Field paths (e.g. `customer.country`) to index; lists can sort on these
    /// and filters on them use the index. At most 16.
    #[serde(default)]
    #[schema(schema_with = index_list_schema)]
    pub indexes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Collection {
    #[schema(value_type = schema::CollectionName)]
    pub name: CollectionName,
    pub indexes: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

/// A page of Collection items.
pub type CollectionPage = Page<Collection>;

/// A stored record: its metadata and, under `data`, the JSON object itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecordView {
    #[schema(value_type = schema::RecordId)]
    pub id: RecordId,
    /// Grows by one with every change; also sent as the `ETag`.
    pub version: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
    #[schema(value_type = Object)]
    pub data: Value,
}

/// A page of RecordView items.
pub type RecordPage = Page<RecordView>;

/// One operation of a batch. `if_match` is the version the record must have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum BatchOperation {
    /// Insert a record; the server assigns the id when none is given.
    Create {
        #[schema(value_type = Option<schema::RecordId>)]
        id: Option<RecordId>,
        #[schema(value_type = Object)]
        data: Value,
    },
    /// Insert or replace a record.
    Put {
        #[schema(value_type = schema::RecordId)]
        id: RecordId,
        #[schema(value_type = Object)]
        data: Value,
        #[serde(default, deserialize_with = "whole::de_opt")]
        if_match: Option<i64>,
    },
    /// Merge-patch (RFC 7386) an existing record.
    Patch {
        #[schema(value_type = schema::RecordId)]
        id: RecordId,
        #[schema(value_type = Object)]
        data: Value,
        #[serde(default, deserialize_with = "whole::de_opt")]
        if_match: Option<i64>,
    },
    Delete {
        #[schema(value_type = schema::RecordId)]
        id: RecordId,
        #[serde(default, deserialize_with = "whole::de_opt")]
        if_match: Option<i64>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1 to 1000 operations, applied all or none.
    #[schema(min_items = 1, max_items = 1000)]
    pub operations: Vec<BatchOperation>,
}

/// What one batch operation did: the record written, or the id deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchOutcome {
    #[schema(value_type = schema::RecordId)]
    pub id: RecordId,
    /// The new version; absent for a delete.
    pub version: Option<i64>,
    pub deleted: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchResponse {
    pub results: Vec<BatchOutcome>,
}

/// Where to move a tenant's data. Unset fields keep their current value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveTenant {
    /// A pool of the tenant's region.
    #[schema(value_type = Option<schema::PoolName>)]
    pub pool: Option<PoolName>,
    #[schema(value_type = Option<schema::Isolation>)]
    pub isolation: Option<Isolation>,
}

pub type JobPage = Page<JobView>;

/// An asynchronous job and how far it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    #[schema(value_type = schema::JobId)]
    pub id: JobId,
    #[schema(value_type = schema::TenantId)]
    pub tenant: TenantId,
    pub kind: JobKind,
    pub state: JobState,
    /// The step reached (or, for a failed job, the step it failed at).
    pub step: MoveStep,
    /// The job's parameters, e.g. `{"from": {...}, "to": {...}}`; once a
    /// move's copy has begun also `progress`: `collections` and `records`
    /// copied of `collections_total` and `records_total`.
    #[schema(value_type = Object)]
    pub details: Value,
    /// Why it failed, or what it could not finish.
    pub error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

/// A tenant's usage against its quotas, now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageView {
    #[schema(value_type = schema::TenantId)]
    pub tenant: TenantId,
    #[schema(value_type = schema::PlanId)]
    pub plan: PlanId,
    #[schema(value_type = schema::BillingDay)]
    pub billing_day: BillingDay,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// One entry per quota of the tenant's plan.
    pub quotas: Vec<QuotaUsage>,
    /// Everything counted, whether or not a quota limits it.
    pub counters: Vec<Counter>,
}

/// Usage of one quota.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuotaUsage {
    #[schema(value_type = schema::Metric)]
    pub metric: Metric,
    /// Absent for levels (storage, records, concurrent requests).
    #[schema(value_type = Option<schema::Period>)]
    pub period: Option<Period>,
    pub used: u64,
    /// The soft limit, add-ons included.
    pub soft: Option<u64>,
    /// The hard limit, add-ons included.
    pub hard: u64,
    pub remaining: u64,
    /// Whether requests are being let through on the grace allowance.
    pub in_grace: bool,
    /// When the window resets; absent for levels.
    #[serde(with = "time::serde::rfc3339::option")]
    pub resets_at: Option<OffsetDateTime>,
    /// Units per hour since the window started; absent for levels.
    pub burn_per_hour: Option<f64>,
    /// When the hard limit is reached at the current burn, if before the reset.
    #[serde(with = "time::serde::rfc3339::option")]
    pub exhausted_at: Option<OffsetDateTime>,
}

/// One counted metric over one period, or a level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Counter {
    #[schema(value_type = schema::Metric)]
    pub metric: Metric,
    #[schema(value_type = Option<schema::Period>)]
    pub period: Option<Period>,
    pub value: u64,
}

/// Usage metered in one hour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageHour {
    #[serde(with = "time::serde::rfc3339")]
    pub hour: OffsetDateTime,
    pub requests: u64,
    /// Requests refused by admission (rate limit, quota, queue).
    pub rejected: u64,
    pub ingress_bytes: u64,
    pub egress_bytes: u64,
    /// Seats held times the time they were held.
    pub seat_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageHistory {
    #[schema(value_type = schema::TenantId)]
    pub tenant: TenantId,
    /// Oldest first; hours without traffic are absent.
    pub hours: Vec<UsageHour>,
}

/// A soft limit passed or a grace period started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuotaEventView {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// `soft_limit_passed` or `grace_started`.
    pub kind: String,
    pub metric: String,
    pub period: Option<String>,
    pub used: u64,
    pub limit: u64,
}

/// A page of QuotaEventView items, newest first.
pub type QuotaEventPage = Page<QuotaEventView>;

/// A temporary raise of one quota of one tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAddOn {
    #[schema(value_type = schema::Metric)]
    pub metric: Metric,
    /// The quota's period; absent for levels.
    #[serde(default)]
    #[schema(value_type = Option<schema::Period>)]
    pub period: Option<Period>,
    /// Added to the quota's soft and hard limits; at least 1.
    #[schema(minimum = 1)]
    #[serde(deserialize_with = "whole::de")]
    pub amount: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AddOnView {
    pub id: i64,
    #[schema(value_type = schema::Metric)]
    pub metric: Metric,
    #[schema(value_type = Option<schema::Period>)]
    pub period: Option<Period>,
    pub amount: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// A page of AddOnView items: add-ons not yet expired, oldest first.
pub type AddOnPage = Page<AddOnView>;

/// One version of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PlanView {
    #[schema(value_type = schema::PlanId)]
    pub id: PlanId,
    pub version: i64,
    /// The whole plan: rate, class rates, weight, quotas, self-service ranges.
    pub plan: PlanSpec,
    /// Settings changed from the version before.
    pub diff: Vec<Change>,
    pub reason: String,
    /// The operator key that made it; absent when seeded from the configuration.
    #[schema(value_type = Option<schema::KeyId>)]
    pub actor_key: Option<KeyId>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A page of PlanView items.
pub type PlanPage = Page<PlanView>;

/// A new plan, or a plan's next version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WritePlan {
    /// The whole plan, as in the configuration's `[[plans]]`.
    #[serde(deserialize_with = "object_only")]
    pub plan: PlanSpec,
    /// Why; 1 to 500 characters.
    #[schema(schema_with = reason_schema)]
    pub reason: String,
    /// For a new version: the version it replaces, so that two operators'
    /// edits never silently overwrite each other.
    #[serde(default, deserialize_with = "whole::de_opt")]
    pub replaces: Option<i64>,
}

/// A tenant's policy in effect: its plan, its overrides, and the plan they make.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PolicyView {
    #[schema(value_type = schema::TenantId)]
    pub tenant: TenantId,
    /// The version in effect; 0 when the tenant has never changed its plan's settings.
    pub version: i64,
    #[schema(value_type = schema::PlanId)]
    pub plan: PlanId,
    pub overrides: Overrides,
    /// The effective plan: rate, class rates, weight, quotas, self-service ranges.
    pub effective: PlanSpec,
    /// A proposal waiting for an operator, if any.
    pub proposal: Option<i64>,
}

/// One version of a tenant's policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PolicyVersionView {
    #[schema(value_type = schema::TenantId)]
    pub tenant: TenantId,
    pub version: i64,
    pub status: PolicyStatus,
    /// Whether this version is the one in effect.
    pub current: bool,
    #[schema(value_type = schema::PlanId)]
    pub plan: PlanId,
    pub overrides: Overrides,
    pub effective: PlanSpec,
    /// Settings changed from the version in effect when it was made.
    pub diff: Vec<Change>,
    /// What in it is beyond the plan's self-service ranges (so needs an
    /// operator when a tenant admin asks for it).
    pub outside_self_service: Vec<String>,
    pub reason: String,
    #[schema(value_type = schema::KeyId)]
    pub actor_key: KeyId,
    #[schema(value_type = schema::Role)]
    pub actor_role: Role,
    /// The version in effect when it was made.
    pub based_on: i64,
    /// The earlier version whose content it restores, for a revert.
    pub reverts_to: Option<i64>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Who approved, rejected or withdrew it.
    #[schema(value_type = Option<schema::KeyId>)]
    pub decided_by: Option<KeyId>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub decided_at: Option<OffsetDateTime>,
    pub decision_reason: Option<String>,
}

/// A page of PolicyVersionView items: a tenant's versions newest first, or
/// the proposals waiting for an operator oldest first.
pub type PolicyVersionPage = Page<PolicyVersionView>;

/// New overrides for a tenant's plan. A tenant admin's change within the
/// plan's self-service ranges applies at once; any other waits for an
/// operator. An operator's applies at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProposePolicy {
    /// The whole set of overrides wanted (not a change to the current set).
    #[serde(deserialize_with = "object_only")]
    pub overrides: Overrides,
    /// Why, for whoever reads the history; 1 to 500 characters.
    #[schema(schema_with = reason_schema)]
    pub reason: String,
}

/// An operator's answer to a proposal, or its proposer's withdrawal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecidePolicy {
    /// Why; 1 to 500 characters.
    #[schema(schema_with = reason_schema)]
    pub reason: String,
}

/// A key that signs the gateway's tenant context. Its private half never
/// leaves the server; the public half is in `/.well-known/jwks.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SigningKeyView {
    /// The JWS `kid` of contexts signed with the key.
    pub kid: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// When the key starts signing; published from its creation.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub signs_from: OffsetDateTime,
    /// When the key leaves the published set, once a successor exists.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub retires_at: Option<OffsetDateTime>,
    /// Whether contexts are being signed with this key now.
    pub signing: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each wire enum's JSON is its `as_str` name, and `parse` reads it back.
    fn names_agree<T>(all: &[T], as_str: fn(T) -> &'static str, parse: fn(&str) -> Option<T>)
    where
        T: Copy + PartialEq + std::fmt::Debug + Serialize + for<'de> Deserialize<'de>,
    {
        for &value in all {
            let json = serde_json::to_value(value).unwrap();
            assert_eq!(json, Value::String(as_str(value).to_owned()));
            assert_eq!(serde_json::from_value::<T>(json).unwrap(), value);
            assert_eq!(parse(as_str(value)), Some(value));
        }
        assert_eq!(parse("no-such-value"), None);
    }

    #[test]
    fn wire_enums_are_written_as_their_names() {
        names_agree(JobState::ALL, JobState::as_str, JobState::parse);
        names_agree(JobKind::ALL, JobKind::as_str, JobKind::parse);
        names_agree(MoveStep::ALL, MoveStep::as_str, MoveStep::parse);
        names_agree(PolicyStatus::ALL, PolicyStatus::as_str, PolicyStatus::parse);
    }
}
