//! Command-line arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tenantd_core::policy::Overrides;
use tenantd_core::{Isolation, KeyId, Role, TenantId, TenantStatus};
use tenantd_server::config::LogFormat;

#[derive(Debug, Parser)]
#[command(name = "tenantd", version, about = "Multi-tenant API platform")]
pub struct Cli {
    #[command(flatten)]
    pub client: ClientOptions,
    #[command(subcommand)]
    pub command: Command,
}

/// The client commands' flags, on the commands that run on a data
/// directory instead of talking to a server: hidden and refused. Sharing
/// the global flags' ids keeps clap from giving these commands the global
/// flags.
#[derive(Debug, Args)]
pub struct NoClientOptions {
    #[arg(long, hide = true, value_parser = refuse_client_flag::<String>)]
    url: Option<String>,
    #[arg(long, hide = true, value_parser = refuse_client_flag::<String>)]
    key: Option<String>,
    #[arg(long, hide = true, value_parser = refuse_client_flag::<crate::output::Format>)]
    output: Option<crate::output::Format>,
}

/// Refuses a client command's flag given to a local command. Typed like the
/// global flag it stands for: clap hands the global flag's default down.
fn refuse_client_flag<T>(_: &str) -> Result<T, String> {
    Err("this flag is for the commands that talk to a running server".to_owned())
}

/// Where the client commands send their requests, and how they print the
/// answers.
#[derive(Debug, Args)]
pub struct ClientOptions {
    /// Base URL of a running tenantd.
    #[arg(
        long,
        global = true,
        env = "TENANTD_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// API key to present.
    #[arg(long, global = true, env = "TENANTD_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// How answers are printed: tables for people, or the API's JSON for
    /// scripts.
    #[arg(
        long,
        global = true,
        env = "TENANTD_OUTPUT",
        value_enum,
        default_value_t
    )]
    pub output: crate::output::Format,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Create a new operator key offline, on the data directory of a stopped
    /// server (audited as `key.recover`), and print it once: the way back in
    /// when every operator key is lost. Refused while a server holds the
    /// directory.
    RecoverOperatorKey(RecoverArgs),
    #[command(flatten)]
    Client(ClientCommand),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file; `tenantd.toml` in the working directory is read if present.
    #[arg(long, env = "TENANTD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Data directory (default ./tenantd-data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Log lines for people (human) or for collectors (json).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormatArg>,
    /// A tracing filter, e.g. `info` or `tenantd_server=debug`.
    #[arg(long)]
    pub log_level: Option<String>,
    #[command(flatten)]
    pub no_client_options: NoClientOptions,
}

#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// Config file, as `serve` reads it (for `data_dir` and `server_secret`).
    #[arg(long, env = "TENANTD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (default: the configuration's, ./tenantd-data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub no_client_options: NoClientOptions,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Human,
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(arg: LogFormatArg) -> Self {
        match arg {
            LogFormatArg::Human => LogFormat::Human,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

/// Commands that talk to a running server.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Show who the key belongs to.
    Me,
    /// See the nodes serving the catalog (operator).
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Manage tenants (operator).
    #[command(subcommand)]
    Tenants(TenantCommand),
    /// Manage API keys: a tenant's with --tenant, the platform's without.
    #[command(subcommand)]
    Keys(KeyCommand),
    /// Show a job, e.g. a tenant move (operator).
    Job {
        /// The job's id, as the command that started it printed.
        id: tenantd_core::JobId,
        /// Follow the job until it ends, printing each step it reaches (on
        /// a terminal, a move's copy as a bar); exits with status 1 if it
        /// failed.
        #[arg(long)]
        wait: bool,
    },
    /// List jobs, newest first (operator).
    Jobs {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<TenantId>,
        /// Only jobs in this state: running, succeeded or failed.
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Make the server agree with a tenancy file (plans, tenants, policies),
    /// through the API: every change versioned and audited. Prints each change.
    Apply {
        /// The tenancy file (YAML).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Print the changes without making them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write the server's plans, tenants and policies as a tenancy file.
    Export,
    /// Show a tenant's usage against its quotas, or with `history` its
    /// hourly usage, or with `events` its quota events.
    #[command(args_conflicts_with_subcommands = true)]
    Usage {
        #[command(subcommand)]
        view: Option<UsageCommand>,
        /// The tenant.
        #[arg(long)]
        tenant: Option<TenantId>,
    },
    /// A tenant's add-ons: temporary raises of its quotas.
    #[command(subcommand)]
    Addons(AddOnCommand),
    /// The collections of the key's tenant (data API).
    #[command(subcommand)]
    Collections(CollectionCommand),
    /// The records of a collection of the key's tenant (data API).
    #[command(subcommand)]
    Records(RecordCommand),
    /// Show plans (operator).
    #[command(subcommand)]
    Plans(PlanCommand),
    /// The keys that sign the gateway's tenant context (operator).
    #[command(subcommand)]
    SigningKeys(SigningKeyCommand),
    /// Show and change a tenant's policy: its overrides of its plan.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Show an audit trail: a tenant's with --tenant, the platform's without;
    /// or verify one with `audit verify`.
    Audit {
        #[command(subcommand)]
        action: Option<AuditCommand>,
        /// The tenant whose trail; the platform's without it.
        #[arg(long)]
        tenant: Option<TenantId>,
        #[command(flatten)]
        page: PageArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// List the nodes (id, address, version, started, last heartbeat, up,
    /// silent or stopped) and which node holds each background lease.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum UsageCommand {
    /// Hourly usage: requests, refusals, bytes and seat time, newest last.
    History {
        /// The tenant.
        #[arg(long)]
        tenant: TenantId,
        /// How many hours back, 1 to 744 (72 without it).
        #[arg(long)]
        hours: Option<u32>,
    },
    /// Quota events: soft limits passed, grace started, newest first.
    Events {
        /// The tenant.
        #[arg(long)]
        tenant: TenantId,
        #[command(flatten)]
        page: PageArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum AddOnCommand {
    /// The tenant's add-ons in effect.
    List {
        /// The tenant.
        #[arg(long)]
        tenant: TenantId,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Grant an add-on (operator): `amount` more of a quota until `expires_at`.
    Add {
        /// The tenant.
        #[arg(long)]
        tenant: TenantId,
        /// The quota's metric, e.g. requests or storage_bytes.
        #[arg(long, value_parser = parse_metric)]
        metric: tenantd_core::plan::Metric,
        /// The quota's period (minute, hour, day, month); none for levels.
        #[arg(long, value_parser = parse_period)]
        period: Option<tenantd_core::plan::Period>,
        /// How much is added to the quota's soft and hard limits.
        #[arg(long)]
        amount: u64,
        /// RFC 3339 instant, e.g. 2027-01-01T00:00:00Z.
        #[arg(long, value_parser = parse_instant)]
        expires_at: time::OffsetDateTime,
    },
}

#[derive(Debug, Subcommand)]
pub enum CollectionCommand {
    /// The collections, by name.
    List {
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show a collection and its indexes.
    Get {
        /// The collection's name.
        name: tenantd_core::CollectionName,
    },
    /// Create a collection.
    Create {
        /// The collection's name.
        name: tenantd_core::CollectionName,
        /// A field path to index, for filters and sorting; may be repeated.
        #[arg(long = "index")]
        indexes: Vec<String>,
    },
    /// Delete a collection with all its records.
    Delete {
        /// The collection's name.
        name: tenantd_core::CollectionName,
    },
}

#[derive(Debug, Subcommand)]
pub enum RecordCommand {
    /// A page of records, optionally filtered and sorted.
    List {
        /// The collection.
        collection: tenantd_core::CollectionName,
        /// A filter expression, e.g. 'status = "paid" and total >= 100'.
        #[arg(long)]
        filter: Option<String>,
        /// An indexed field, or -field for descending.
        #[arg(long)]
        sort: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show a record.
    Get {
        /// The collection.
        collection: tenantd_core::CollectionName,
        /// The record's id.
        id: tenantd_core::RecordId,
    },
    /// Create a record with a server-assigned id.
    Create {
        /// The collection.
        collection: tenantd_core::CollectionName,
        /// The record, a JSON object.
        #[arg(long, value_parser = parse_json_object)]
        data: serde_json::Value,
    },
    /// Create or replace the record with this id.
    Put(RecordWrite),
    /// Change some fields (a JSON merge patch, RFC 7386).
    Patch(RecordWrite),
    /// Delete a record.
    Delete {
        /// The collection.
        collection: tenantd_core::CollectionName,
        /// The record's id.
        id: tenantd_core::RecordId,
        /// Only if the record is at this version.
        #[arg(long)]
        if_match: Option<i64>,
    },
}

/// A record written whole (`put`) or in part (`patch`).
#[derive(Debug, Args)]
pub struct RecordWrite {
    /// The collection.
    pub collection: tenantd_core::CollectionName,
    /// The record's id.
    pub id: tenantd_core::RecordId,
    /// The record (put) or the merge patch, where `null` removes a field
    /// (patch): a JSON object.
    #[arg(long, value_parser = parse_json_object)]
    pub data: serde_json::Value,
    /// Only if the record is at this version.
    #[arg(long)]
    pub if_match: Option<i64>,
}

fn parse_json_object(text: &str) -> Result<serde_json::Value, String> {
    match serde_json::from_str(text) {
        Ok(value @ serde_json::Value::Object(_)) => Ok(value),
        Ok(_) => Err("a JSON object, e.g. '{\"total\": 12}'".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_metric(s: &str) -> Result<tenantd_core::plan::Metric, String> {
    tenantd_core::plan::Metric::parse(s).ok_or_else(|| {
        let names: Vec<&str> = tenantd_core::plan::Metric::ALL
            .iter()
            .map(|m| m.as_str())
            .collect();
        format!("one of {}", names.join(", "))
    })
}

fn parse_period(s: &str) -> Result<tenantd_core::plan::Period, String> {
    tenantd_core::plan::Period::parse(s).ok_or_else(|| "one of minute, hour, day, month".to_owned())
}

#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// Plans at their latest versions.
    List {
        #[command(flatten)]
        page: PageArgs,
    },
    /// A plan's versions, newest first.
    Versions {
        /// The plan.
        plan: tenantd_core::PlanId,
        #[command(flatten)]
        page: PageArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum SigningKeyCommand {
    /// The published keys, oldest first, and which one signs now.
    List,
    /// Publish a new key; it signs after `gateway.context.publish_ahead`.
    Rotate,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// The policy in effect.
    Show {
        /// The tenant.
        #[arg(long)]
        tenant: TenantId,
    },
    /// Its versions, newest first.
    History {
        /// The tenant.
        #[arg(long)]
        tenant: TenantId,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Set the overrides (JSON, e.g. '{"rate_requests": 50}'): applied at
    /// once within the plan's self-service ranges or by an operator,
    /// proposed otherwise.
    Propose {
        /// The tenant.
        #[arg(long)]
        tenant: TenantId,
        /// The overrides, as JSON.
        #[arg(long, value_parser = parse_overrides)]
        overrides: Overrides,
        /// Why, for the audit trail.
        #[arg(long)]
        reason: String,
    },
    /// The proposals waiting for an operator, every tenant's, oldest first
    /// (operator).
    Waiting {
        #[command(flatten)]
        page: PageArgs,
    },
    /// Approve a proposal (operator).
    Approve(PolicyVersionArgs),
    /// Reject a proposal (operator).
    Reject(PolicyVersionArgs),
    /// Withdraw a proposal.
    Withdraw(PolicyVersionArgs),
    /// Restore an earlier version's overrides, as a new version.
    Revert(PolicyVersionArgs),
}

fn parse_overrides(text: &str) -> Result<Overrides, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
pub struct PolicyVersionArgs {
    /// The tenant.
    #[arg(long)]
    pub tenant: TenantId,
    /// The policy version.
    #[arg(long)]
    pub version: i64,
    /// Why, for the audit trail.
    #[arg(long)]
    pub reason: String,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the audit log's hash chain: a tenant's own with --tenant, the
    /// whole log without (operators). Exits with status 1 if it is broken.
    Verify {
        /// The tenant whose chain; the whole log without it.
        #[arg(long)]
        tenant: Option<TenantId>,
    },
}

#[derive(Debug, Args)]
pub struct PageArgs {
    /// Cursor from the previous page's `next_cursor`.
    #[arg(long)]
    pub cursor: Option<String>,
    /// Items per page (1 to 200).
    #[arg(long)]
    pub limit: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant (operator).
    Create {
        /// The tenant's id: 3 to 63 lowercase letters, digits and single hyphens.
        id: TenantId,
        /// Its display name.
        #[arg(long)]
        name: String,
        /// Its plan; `default` when omitted.
        #[arg(long)]
        plan: Option<tenantd_core::PlanId>,
        /// The day of the month (1 to 28) its monthly quotas reset.
        #[arg(long, value_parser = parse_billing_day)]
        billing_day: Option<tenantd_core::quota::BillingDay>,
        /// Its region (data residency); `default_region` when omitted.
        #[arg(long)]
        region: Option<tenantd_core::RegionId>,
        /// pooled (default) or dedicated.
        #[arg(long, value_parser = parse_isolation)]
        isolation: Option<Isolation>,
        /// A storage pool of the tenant's region; chosen by placement when omitted.
        #[arg(long)]
        pool: Option<tenantd_core::PoolName>,
    },
    /// Show a tenant (operator).
    Get {
        /// The tenant's id.
        id: TenantId,
    },
    /// List tenants, by id (operator).
    List {
        /// Only tenants in this state: active, suspended or deleted.
        #[arg(long, value_parser = parse_status)]
        status: Option<TenantStatus>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Change a tenant's display name (operator).
    Rename {
        /// The tenant's id.
        id: TenantId,
        /// The new display name.
        name: String,
    },
    /// Put a tenant on another plan, keeping its usage; the new limits apply
    /// from its next request (operator).
    SetPlan {
        /// The tenant's id.
        id: TenantId,
        /// The plan.
        #[arg(long)]
        plan: tenantd_core::PlanId,
        /// Pin a version of the plan; without it the tenant follows the latest.
        #[arg(long)]
        version: Option<i64>,
    },
    /// Refuse every key of a tenant until it is resumed (operator).
    Suspend {
        /// The tenant's id.
        id: TenantId,
    },
    /// Let a suspended tenant's keys in again (operator).
    Resume {
        /// The tenant's id.
        id: TenantId,
    },
    /// Soft-delete; restorable until purged.
    Delete {
        /// The tenant's id.
        id: TenantId,
    },
    /// Undo a soft delete before the purge (operator).
    Restore {
        /// The tenant's id.
        id: TenantId,
    },
    /// Purge a soft-deleted tenant now.
    Purge {
        /// The tenant's id.
        id: TenantId,
    },
    /// Move a tenant's data to another pool of its region or isolation model.
    Move {
        /// The tenant's id.
        id: TenantId,
        /// The pool to move to (of the tenant's region).
        #[arg(long)]
        pool: Option<tenantd_core::PoolName>,
        /// The isolation model to move to: pooled, schema or dedicated.
        #[arg(long, value_parser = parse_isolation)]
        isolation: Option<Isolation>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key; its token is printed once.
    Create {
        /// The tenant the key is for; a platform (operator) key without it.
        #[arg(long)]
        tenant: Option<TenantId>,
        /// operator (platform keys), admin, developer or reader.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// A name to tell the key by.
        #[arg(long, default_value = "")]
        name: String,
        /// RFC 3339 instant, e.g. 2027-01-01T00:00:00Z.
        #[arg(long, value_parser = parse_instant)]
        expires_at: Option<time::OffsetDateTime>,
    },
    /// List a tenant's keys (--tenant) or the platform's; never their secrets.
    List {
        /// The tenant whose keys; the platform's without it.
        #[arg(long)]
        tenant: Option<TenantId>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show a key: role, state, expiry, last use.
    Get {
        /// The key's id (the 16 hex digits after `tk_`).
        id: KeyId,
        /// The key's tenant; a platform key without it.
        #[arg(long)]
        tenant: Option<TenantId>,
    },
    /// Replace a key; the old one works until the overlap ends.
    Rotate {
        /// The key's id (the 16 hex digits after `tk_`).
        id: KeyId,
        /// The key's tenant; a platform key without it.
        #[arg(long)]
        tenant: Option<TenantId>,
        /// How long the old key keeps working (default: the server's).
        #[arg(long)]
        overlap_seconds: Option<u32>,
    },
    /// Revoke a key at once.
    Revoke {
        /// The key's id (the 16 hex digits after `tk_`).
        id: KeyId,
        /// The key's tenant; a platform key without it.
        #[arg(long)]
        tenant: Option<TenantId>,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| "one of operator, admin, developer, reader".to_owned())
}

fn parse_billing_day(s: &str) -> Result<tenantd_core::quota::BillingDay, String> {
    s.parse::<u8>()
        .ok()
        .and_then(|day| tenantd_core::quota::BillingDay::new(day).ok())
        .ok_or_else(|| "a day of the month from 1 to 28".to_owned())
}

fn parse_isolation(s: &str) -> Result<Isolation, String> {
    Isolation::parse(s).ok_or_else(|| "one of pooled, schema, dedicated".to_owned())
}

fn parse_status(s: &str) -> Result<TenantStatus, String> {
    TenantStatus::parse(s).ok_or_else(|| "one of active, suspended, deleted".to_owned())
}

fn parse_instant(s: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| e.to_string())
}
