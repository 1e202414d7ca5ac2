//! The client commands: each sends one request through the SDK and prints
//! the JSON answer, or the problem, on failure.

use std::process::ExitCode;

use serde::Serialize;
use tenantd_api::{
    CreateAddOn, CreateCollection, CreateKey, CreateTenant, JobState, MoveTenant, ProposePolicy,
    RotateKey, UpdateTenant, WritePlan,
};
use tenantd_client::{Client, Error, KeysOf, PageRequest, PolicyAction, RecordQuery};
use tenantd_core::plan::Plan;
use tenantd_core::TenantStatus;

use crate::args::{
    AddOnCommand, AuditCommand, ClientCommand, ClientOptions, ClusterCommand, CollectionCommand,
    KeyCommand, PageArgs, PlanCommand, PolicyCommand, PolicyVersionArgs, RecordCommand,
    SigningKeyCommand, TenantCommand, UsageCommand,
};
use crate::output::{self, Columns, Format};
use crate::tenancy::{self, ServerState, Step};

fn owner(tenant: Option<&tenantd_core::TenantId>) -> KeysOf<'_> {
    tenant.map_or(KeysOf::Platform, KeysOf::Tenant)
}

fn page(args: PageArgs) -> PageRequest {
    PageRequest {
        cursor: args.cursor,
        limit: args.limit,
    }
}

/// Prints an answer as `format` says, a listing with `columns` in a table.
fn print(format: Format, columns: Columns, value: impl Serialize) -> Result<ExitCode, Error> {
    say(output::render(&value, format, columns));
    Ok(ExitCode::SUCCESS)
}

/// The columns of each listing's table; the JSON has every field.
const TENANT_COLUMNS: Columns = Some(&[
    "id",
    "name",
    "status",
    "plan",
    "region",
    "isolation",
    "pool",
]);
const NODE_COLUMNS: Columns = Some(&[
    "id",
    "name",
    "state",
    "address",
    "version",
    "started_at",
    "heartbeat_at",
]);
const LEASE_COLUMNS: Columns = Some(&["lease", "job", "holder"]);
const KEY_COLUMNS: Columns = Some(&[
    "id",
    "tenant",
    "role",
    "name",
    "state",
    "expires_at",
    "last_used_at",
]);
const JOB_COLUMNS: Columns = Some(&[
    "id",
    "tenant",
    "kind",
    "state",
    "step",
    "error",
    "created_at",
]);
const AUDIT_COLUMNS: Columns = Some(&["seq", "at", "actor_role", "action", "target", "request_id"]);
const RECORD_COLUMNS: Columns = Some(&["id", "version", "updated_at", "data"]);
const HOUR_COLUMNS: Columns = Some(&[
    "hour",
    "requests",
    "rejected",
    "ingress_bytes",
    "egress_bytes",
    "seat_seconds",
]);
const PLAN_COLUMNS: Columns = Some(&["id", "version", "reason", "created_at"]);
const POLICY_VERSION_COLUMNS: Columns = Some(&[
    "tenant",
    "version",
    "status",
    "current",
    "plan",
    "reason",
    "actor_role",
    "created_at",
]);

/// Writes a line on stdout. A reader that went away (`tenantd … | head`)
/// is no error: the rest of the output is dropped, the command goes on.
fn say(line: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

pub async fn run(options: ClientOptions, command: ClientCommand) -> ExitCode {
    let Some(key) = options.key.clone() else {
        eprintln!("tenantd: no API key: pass --key or set TENANTD_KEY");
        return ExitCode::FAILURE;
    };
    let url = options.url.clone();
    let result = match Client::new(&options.url, &key) {
        Ok(client) => execute(&client, options.output, command).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(code) => code,
        Err(Error::Api(problem)) => {
            eprintln!("{}", output::render_problem(&problem, options.output));
            ExitCode::FAILURE
        }
        Err(Error::Http(e)) if e.is_connect() => {
            eprintln!(
                "tenantd: nothing answers at {url}: start a server with `tenantd serve`, \
                 or point TENANTD_URL (or --url) at a running one"
            );
            ExitCode::FAILURE
        }
        Err(Error::Http(e)) if e.is_timeout() => {
            eprintln!("tenantd: the server at {url} did not answer in time");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("tenantd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Everything a tenancy file can describe, as the server holds it now.
async fn server_state(client: &Client) -> Result<ServerState, Error> {
    let mut state = ServerState::default();
    let mut cursor = None;
    loop {
        let page = client
            .plans(&PageRequest {
                cursor,
                limit: Some(200),
            })
            .await?;
        for view in page.items {
            if let Ok(plan) = Plan::try_from(view.plan) {
                state.plans.push((plan, view.version));
            }
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let mut cursor = None;
    loop {
        let page = client
            .list_tenants(
                &PageRequest {
                    cursor,
                    limit: Some(200),
                },
                None,
            )
            .await?;
        for tenant in page.items {
            if tenant.status == TenantStatus::Deleted {
                continue;
            }
            let overrides = client.policy(&tenant.id).await?.overrides;
            state.tenants.push((tenant, overrides.into()));
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(state)
}

const APPLY_REASON: &str = "tenantd apply";

async fn take(client: &Client, step: Step) -> Result<(), Error> {
    let plan_body = |plan: &Plan, replaces| WritePlan {
        plan: plan.into(),
        reason: APPLY_REASON.into(),
        replaces,
    };
    match step {
        Step::CreatePlan(plan) => client.create_plan(&plan_body(&plan, None)).await.map(drop),
        Step::UpdatePlan { plan, replaces, .. } => client
            .update_plan(&plan.id, &plan_body(&plan, Some(replaces)))
            .await
            .map(drop),
        Step::CreateTenant(spec) => client
            .create_tenant(&CreateTenant {
                region: spec.region,
                isolation: spec.isolation,
                pool: spec.pool,
                plan: Some(spec.plan),
                billing_day: spec.billing_day,
                ..CreateTenant::new(spec.id, spec.name)
            })
            .await
            .map(drop),
        Step::UpdateTenant { spec, .. } => client
            .update_tenant(
                &spec.id,
                &UpdateTenant {
                    name: Some(spec.name),
                    plan: Some(spec.plan),
                    billing_day: spec.billing_day,
                    plan_version: Some(spec.plan_version),
                },
            )
            .await
            .map(drop),
        Step::Move {
            tenant,
            pool,
            isolation,
            ..
        } => {
            let job = client
                .move_tenant(&tenant, &MoveTenant { pool, isolation })
                .await?;
            say(format_args!("  move job {} started", job.id.as_str()));
            Ok(())
        }
        Step::SetOverrides {
            tenant, overrides, ..
        } => client
            .propose_policy(
                &tenant,
                &ProposePolicy {
                    overrides: (&overrides).into(),
                    reason: APPLY_REASON.into(),
                },
            )
            .await
            .map(drop),
    }
}

/// Reads, checks and plans a tenancy file, then prints and (unless a dry
/// run) takes each step. A file that cannot be applied changes nothing.
async fn apply(client: &Client, file: &std::path::Path, dry_run: bool) -> Result<ExitCode, Error> {
    let name = file.display().to_string();
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("tenantd: {name}: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let wanted = match tenancy::parse(&name, &text) {
        Ok(wanted) => wanted,
        Err(e) => {
            eprintln!("tenantd: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let state = server_state(client).await?;
    let steps = match tenancy::plan(&name, &text, &wanted, &state) {
        Ok(steps) => steps,
        Err(e) => {
            eprintln!("tenantd: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if steps.is_empty() {
        say("no changes");
    }
    for step in steps {
        say(&step);
        if !dry_run {
            take(client, step).await?;
        }
    }
    if dry_run {
        say("(dry run: nothing was changed)");
    }
    Ok(ExitCode::SUCCESS)
}

/// How often `job --wait` looks at its job.
const JOB_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Follows a job until it ends: a line per step reached (on a terminal, a
/// move's copy also as a bar of records copied), then the job.
async fn follow_job(
    client: &Client,
    format: Format,
    id: &tenantd_core::JobId,
) -> Result<ExitCode, Error> {
    use std::io::IsTerminal;
    let terminal = std::io::stderr().is_terminal();
    let mut last_step = None;
    let mut bar_shown = false;
    loop {
        let job = client.job(id).await?;
        if last_step != Some(job.step) {
            if bar_shown {
                eprintln!();
                bar_shown = false;
            }
            say(format_args!("{}: {}", job.state, job.step));
            last_step = Some(job.step);
        }
        if let (true, JobState::Running, Some(progress)) =
            (terminal, job.state, output::copy_progress(&job.details))
        {
            eprint!("\r\x1b[2K{progress}");
            bar_shown = true;
        }
        if job.state != JobState::Running {
            if bar_shown {
                eprintln!();
            }
            let failed = job.state == JobState::Failed;
            print(format, None, job)?;
            return Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            });
        }
        tokio::time::sleep(JOB_POLL).await;
    }
}

/// Runs a command; its exit status is failure for a broken audit chain or
/// a tenancy file that cannot be applied.
async fn execute(
    client: &Client,
    format: Format,
    command: ClientCommand,
) -> Result<ExitCode, Error> {
    match command {
        ClientCommand::Me => print(format, None, client.me().await?),
        ClientCommand::Cluster(ClusterCommand::Status) => {
            let cluster = client.cluster().await?;
            if format == Format::Json {
                return print(format, None, cluster);
            }
            say(format!("answered by {}\n", cluster.answered_by));
            say(output::render(&cluster.nodes, format, NODE_COLUMNS));
            print(format, LEASE_COLUMNS, cluster.leases)
        }
        ClientCommand::Job { id, wait: false } => print(format, None, client.job(&id).await?),
        ClientCommand::Job { id, wait: true } => follow_job(client, format, &id).await,
        ClientCommand::Jobs {
            tenant,
            state,
            page: p,
        } => print(
            format,
            JOB_COLUMNS,
            client
                .jobs(&page(p), tenant.as_ref(), state.as_deref())
                .await?,
        ),
        ClientCommand::Audit {
            action: Some(AuditCommand::Verify { tenant }),
            ..
        } => {
            let verification = client.verify_audit(owner(tenant.as_ref())).await?;
            let intact = verification.intact;
            print(format, None, verification)?;
            Ok(if intact {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        ClientCommand::Audit {
            tenant,
            page: p,
            action: None,
        } => print(
            format,
            AUDIT_COLUMNS,
            client.audit(owner(tenant.as_ref()), &page(p)).await?,
        ),
        ClientCommand::Apply { file, dry_run } => apply(client, &file, dry_run).await,
        ClientCommand::Export => {
            let state = server_state(client).await?;
            let text = serde_norway::to_string(&tenancy::export(&state)).unwrap_or_default();
            say(text.trim_end());
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Usage {
            view: None,
            tenant: Some(tenant),
        } => print(format, None, client.usage(&tenant).await?),
        ClientCommand::Usage {
            view: None,
            tenant: None,
        } => {
            eprintln!("tenantd: usage needs --tenant <TENANT>");
            Ok(ExitCode::from(2))
        }
        ClientCommand::Usage {
            view: Some(UsageCommand::History { tenant, hours }),
            ..
        } => print(
            format,
            HOUR_COLUMNS,
            client.usage_history(&tenant, hours).await?.hours,
        ),
        ClientCommand::Usage {
            view: Some(UsageCommand::Events { tenant, page: p }),
            ..
        } => print(format, None, client.quota_events(&tenant, &page(p)).await?),
        ClientCommand::Addons(AddOnCommand::List { tenant, page: p }) => {
            print(format, None, client.add_ons(&tenant, &page(p)).await?)
        }
        ClientCommand::Addons(AddOnCommand::Add {
            tenant,
            metric,
            period,
            amount,
            expires_at,
        }) => {
            let add_on = CreateAddOn {
                metric,
                period,
                amount,
                expires_at,
            };
            print(format, None, client.create_add_on(&tenant, &add_on).await?)
        }
        ClientCommand::Collections(command) => collections(client, format, command).await,
        ClientCommand::Records(command) => records(client, format, command).await,
        ClientCommand::Plans(PlanCommand::List { page: p }) => {
            print(format, PLAN_COLUMNS, client.plans(&page(p)).await?)
        }
        ClientCommand::Plans(PlanCommand::Versions { plan, page: p }) => print(
            format,
            PLAN_COLUMNS,
            client.plan_versions(&plan, &page(p)).await?,
        ),
        ClientCommand::SigningKeys(SigningKeyCommand::List) => {
            print(format, None, client.signing_keys().await?)
        }
        ClientCommand::SigningKeys(SigningKeyCommand::Rotate) => {
            print(format, None, client.rotate_signing_key().await?)
        }
        ClientCommand::Policy(command) => policy(client, format, command).await,
        ClientCommand::Tenants(command) => tenants(client, format, command).await,
        ClientCommand::Keys(command) => keys(client, format, command).await,
    }
}

async fn collections(
    client: &Client,
    format: Format,
    command: CollectionCommand,
) -> Result<ExitCode, Error> {
    match command {
        CollectionCommand::List { page: p } => {
            print(format, None, client.collections(&page(p)).await?)
        }
        CollectionCommand::Get { name } => print(format, None, client.collection(&name).await?),
        CollectionCommand::Create { name, indexes } => print(
            format,
            None,
            client
                .create_collection(&CreateCollection { name, indexes })
                .await?,
        ),
        CollectionCommand::Delete { name } => {
            client.delete_collection(&name).await?;
            print(format, None, serde_json::json!({ "deleted": name }))
        }
    }
}

async fn records(
    client: &Client,
    format: Format,
    command: RecordCommand,
) -> Result<ExitCode, Error> {
    match command {
        RecordCommand::List {
            collection,
            filter,
            sort,
            page: p,
        } => {
            let query = RecordQuery {
                filter,
                sort,
                cursor: p.cursor,
                limit: p.limit,
            };
            print(
                format,
                RECORD_COLUMNS,
                client.list_records(&collection, &query).await?,
            )
        }
        RecordCommand::Get { collection, id } => {
            print(format, None, client.record(&collection, &id).await?)
        }
        RecordCommand::Create { collection, data } => print(
            format,
            None,
            client.create_record(&collection, &data).await?,
        ),
        RecordCommand::Put(write) => print(
            format,
            None,
            client
                .put_record(&write.collection, &write.id, &write.data, write.if_match)
                .await?,
        ),
        RecordCommand::Patch(write) => print(
            format,
            None,
            client
                .patch_record(&write.collection, &write.id, &write.data, write.if_match)
                .await?,
        ),
        RecordCommand::Delete {
            collection,
            id,
            if_match,
        } => {
            client.delete_record(&collection, &id, if_match).await?;
            print(format, None, serde_json::json!({ "deleted": id }))
        }
    }
}

async fn policy(
    client: &Client,
    format: Format,
    command: PolicyCommand,
) -> Result<ExitCode, Error> {
    let act = |args: PolicyVersionArgs, action| async move {
        print(
            format,
            None,
            client
                .act_on_policy(&args.tenant, args.version, action, &args.reason)
                .await?,
        )
    };
    match command {
        PolicyCommand::Show { tenant } => print(format, None, client.policy(&tenant).await?),
        PolicyCommand::Waiting { page: p } => print(
            format,
            POLICY_VERSION_COLUMNS,
            client.waiting_proposals(&page(p)).await?,
        ),
        PolicyCommand::History { tenant, page: p } => print(
            format,
            POLICY_VERSION_COLUMNS,
            client.policy_versions(&tenant, &page(p)).await?,
        ),
        PolicyCommand::Propose {
            tenant,
            overrides,
            reason,
        } => print(
            format,
            None,
            client
                .propose_policy(
                    &tenant,
                    &ProposePolicy {
                        overrides: (&overrides).into(),
                        reason,
                    },
                )
                .await?,
        ),
        PolicyCommand::Approve(args) => act(args, PolicyAction::Approve).await,
        PolicyCommand::Reject(args) => act(args, PolicyAction::Reject).await,
        PolicyCommand::Withdraw(args) => act(args, PolicyAction::Withdraw).await,
        PolicyCommand::Revert(args) => act(args, PolicyAction::Revert).await,
    }
}

async fn tenants(
    client: &Client,
    format: Format,
    command: TenantCommand,
) -> Result<ExitCode, Error> {
    match command {
        TenantCommand::Create {
            id,
            name,
            plan,
            billing_day,
            region,
            isolation,
            pool,
        } => print(
            format,
            None,
            client
                .create_tenant(&CreateTenant {
                    id,
                    name,
                    region,
                    isolation,
                    pool,
                    plan,
                    billing_day,
                })
                .await?,
        ),
        TenantCommand::SetPlan { id, plan, version } => print(
            format,
            None,
            client
                .update_tenant(
                    &id,
                    &UpdateTenant {
                        name: None,
                        plan: Some(plan),
                        billing_day: None,
                        plan_version: Some(version),
                    },
                )
                .await?,
        ),
        TenantCommand::Get { id } => print(format, None, client.tenant(&id).await?),
        TenantCommand::List { status, page: p } => print(
            format,
            TENANT_COLUMNS,
            client.list_tenants(&page(p), status).await?,
        ),
        TenantCommand::Rename { id, name } => print(
            format,
            None,
            client
                .update_tenant(
                    &id,
                    &UpdateTenant {
                        name: Some(name),
                        plan: None,
                        billing_day: None,
                        plan_version: None,
                    },
                )
                .await?,
        ),
        TenantCommand::Suspend { id } => print(format, None, client.suspend_tenant(&id).await?),
        TenantCommand::Resume { id } => print(format, None, client.resume_tenant(&id).await?),
        TenantCommand::Delete { id } => print(format, None, client.delete_tenant(&id).await?),
        TenantCommand::Restore { id } => print(format, None, client.restore_tenant(&id).await?),
        TenantCommand::Move {
            id,
            pool,
            isolation,
        } => print(
            format,
            None,
            client
                .move_tenant(&id, &MoveTenant { pool, isolation })
                .await?,
        ),
        TenantCommand::Purge { id } => {
            client.purge_tenant(&id).await?;
            print(format, None, serde_json::json!({ "purged": id }))
        }
    }
}

async fn keys(client: &Client, format: Format, command: KeyCommand) -> Result<ExitCode, Error> {
    match command {
        KeyCommand::Create {
            tenant,
            role,
            name,
            expires_at,
        } => {
            let key = CreateKey {
                role,
                name,
                expires_at,
            };
            print(
                format,
                None,
                client.create_key(owner(tenant.as_ref()), &key).await?,
            )
        }
        KeyCommand::List { tenant, page: p } => print(
            format,
            KEY_COLUMNS,
            client.list_keys(owner(tenant.as_ref()), &page(p)).await?,
        ),
        KeyCommand::Get { id, tenant } => {
            print(format, None, client.key(owner(tenant.as_ref()), &id).await?)
        }
        KeyCommand::Rotate {
            id,
            tenant,
            overlap_seconds,
        } => {
            let rotate = RotateKey {
                overlap_seconds,
                expires_at: None,
            };
            print(
                format,
                None,
                client
                    .rotate_key(owner(tenant.as_ref()), &id, &rotate)
                    .await?,
            )
        }
        KeyCommand::Revoke { id, tenant } => print(
            format,
            None,
            client.revoke_key(owner(tenant.as_ref()), &id).await?,
        ),
    }
}
