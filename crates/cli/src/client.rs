//! The client commands: each sends one request through the SDK and prints
//! the JSON answer, or the problem, on failure.

use std::process::ExitCode;

use serde::Serialize;
use tenantd_api::{CreateKey, CreateTenant, MoveTenant, ProposePolicy, RotateKey, UpdateTenant};
use tenantd_client::{Client, Error, KeysOf, PageRequest, PolicyAction};

use crate::args::{
    AuditCommand, ClientCommand, Connection, KeyCommand, PageArgs, PlanCommand, PolicyCommand,
    PolicyVersionArgs, TenantCommand,
};

fn owner(tenant: Option<&tenantd_core::TenantId>) -> KeysOf<'_> {
    tenant.map_or(KeysOf::Platform, KeysOf::Tenant)
}

fn page(args: PageArgs) -> PageRequest {
    PageRequest {
        cursor: args.cursor,
        limit: args.limit,
    }
}

fn print(value: impl Serialize) -> Result<(), Error> {
    println!(
        "{}",
        serde_json::to_string_pretty(&value).unwrap_or_default()
    );
    Ok(())
}

pub async fn run(connection: Connection, command: ClientCommand) -> ExitCode {
    let Some(key) = connection.key else {
        eprintln!("tenantd: no API key: pass --key or set TENANTD_KEY");
        return ExitCode::FAILURE;
    };
    let result = match Client::new(&connection.url, &key) {
        Ok(client) => execute(&client, command).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(code) => code,
        Err(Error::Api(problem)) => {
            eprintln!(
                "{}",
                serde_json::to_string_pretty(&problem).unwrap_or_default()
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("tenantd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a command; its exit status is failure only for a broken audit chain.
async fn execute(client: &Client, command: ClientCommand) -> Result<ExitCode, Error> {
    if let ClientCommand::Audit {
        action: Some(AuditCommand::Verify { tenant }),
        ..
    } = &command
    {
        let verification = client.verify_audit(owner(tenant.as_ref())).await?;
        let intact = verification.intact;
        print(verification)?;
        return Ok(if intact {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    execute_printing(client, command)
        .await
        .map(|()| ExitCode::SUCCESS)
}

async fn execute_printing(client: &Client, command: ClientCommand) -> Result<(), Error> {
    match command {
        ClientCommand::Me => print(client.me().await?),
        ClientCommand::Job { id } => print(client.job(&id).await?),
        ClientCommand::Audit {
            tenant, page: p, ..
        } => print(client.audit(owner(tenant.as_ref()), &page(p)).await?),
        ClientCommand::Usage { tenant } => print(client.usage(&tenant).await?),
        ClientCommand::Plans(PlanCommand::List { page: p }) => print(client.plans(&page(p)).await?),
        ClientCommand::Plans(PlanCommand::Versions { plan, page: p }) => {
            print(client.plan_versions(&plan, &page(p)).await?)
        }
        ClientCommand::Policy(command) => policy(client, command).await,
        ClientCommand::Tenants(command) => tenants(client, command).await,
        ClientCommand::Keys(command) => keys(client, command).await,
    }
}

async fn policy(client: &Client, command: PolicyCommand) -> Result<(), Error> {
    let act = |args: PolicyVersionArgs, action| async move {
        print(
            client
                .act_on_policy(&args.tenant, args.version, action, &args.reason)
                .await?,
        )
    };
    match command {
        PolicyCommand::Show { tenant } => print(client.policy(&tenant).await?),
        PolicyCommand::History { tenant, page: p } => {
            print(client.policy_versions(&tenant, &page(p)).await?)
        }
        PolicyCommand::Propose {
            tenant,
            overrides,
            reason,
        } => print(
            client
                .propose_policy(&tenant, &ProposePolicy { overrides, reason })
                .await?,
        ),
        PolicyCommand::Approve(args) => act(args, PolicyAction::Approve).await,
        PolicyCommand::Reject(args) => act(args, PolicyAction::Reject).await,
        PolicyCommand::Withdraw(args) => act(args, PolicyAction::Withdraw).await,
        PolicyCommand::Revert(args) => act(args, PolicyAction::Revert).await,
    }
}

async fn tenants(client: &Client, command: TenantCommand) -> Result<(), Error> {
    match command {
        TenantCommand::Create {
            id,
            name,
            region,
            isolation,
            pool,
        } => print(
            client
                .create_tenant(&CreateTenant {
                    id,
                    name,
                    region,
                    isolation,
                    pool,
                    plan: None,
                    billing_day: None,
                })
                .await?,
        ),
        TenantCommand::Get { id } => print(client.tenant(&id).await?),
        TenantCommand::List { status, page: p } => {
            print(client.list_tenants(&page(p), status).await?)
        }
        TenantCommand::Rename { id, name } => print(
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
        TenantCommand::Suspend { id } => print(client.suspend_tenant(&id).await?),
        TenantCommand::Resume { id } => print(client.resume_tenant(&id).await?),
        TenantCommand::Delete { id } => print(client.delete_tenant(&id).await?),
        TenantCommand::Restore { id } => print(client.restore_tenant(&id).await?),
        TenantCommand::Move {
            id,
            pool,
            isolation,
        } => print(
            client
                .move_tenant(&id, &MoveTenant { pool, isolation })
                .await?,
        ),
        TenantCommand::Purge { id } => {
            client.purge_tenant(&id).await?;
            print(serde_json::json!({ "purged": id }))
        }
    }
}

async fn keys(client: &Client, command: KeyCommand) -> Result<(), Error> {
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
            print(client.create_key(owner(tenant.as_ref()), &key).await?)
        }
        KeyCommand::List { tenant, page: p } => {
            print(client.list_keys(owner(tenant.as_ref()), &page(p)).await?)
        }
        KeyCommand::Get { id, tenant } => print(client.key(owner(tenant.as_ref()), &id).await?),
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
                client
                    .rotate_key(owner(tenant.as_ref()), &id, &rotate)
                    .await?,
            )
        }
        KeyCommand::Revoke { id, tenant } => {
            print(client.revoke_key(owner(tenant.as_ref()), &id).await?)
        }
    }
}
