//! Config as code: a tenancy file declares plans and tenants (with their
//! policy overrides). `plan` compares it with what the server holds and lists
//! the steps that would make them agree; `tenantd apply` takes those steps
//! through the API, so every change is versioned and audited as if made by
//! hand; `tenantd export` writes the server's state in the same format.
//!
//! The file is partial: what it does not name is left as it is. A different
//! pool or isolation model for an existing tenant starts a move (a job, as
//! `tenantd tenants move` does); a tenant's region never changes, so a
//! different region is an error.

use serde::{Deserialize, Serialize};
use tenantd_api::Tenant;
use tenantd_core::plan::Plan;
use tenantd_core::policy::{diff, effective, Change, Overrides};
use tenantd_core::quota::BillingDay;
use tenantd_core::{Isolation, PlanId, PoolName, RegionId, TenantId};

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenancy {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plans: Vec<Plan>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<TenantSpec>,
}

/// One tenant as declared. Absent fields take the server's defaults when
/// the tenant is created and are left alone when it exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    pub id: TenantId,
    pub name: String,
    pub plan: PlanId,
    /// Pinned plan version; absent follows the plan's latest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_day: Option<BillingDay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<RegionId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<Isolation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolName>,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub overrides: Overrides,
}

fn is_empty(overrides: &Overrides) -> bool {
    *overrides == Overrides::default()
}

/// What the server holds, as far as a tenancy file can say.
#[derive(Debug, Clone, Default)]
pub struct ServerState {
    /// Each plan at its latest version, with that version's number.
    pub plans: Vec<(Plan, i64)>,
    /// Each tenant not deleted, with the overrides of its policy in effect.
    pub tenants: Vec<(Tenant, Overrides)>,
}

/// One change apply makes.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    CreatePlan(Plan),
    UpdatePlan {
        plan: Plan,
        replaces: i64,
        changes: Vec<Change>,
    },
    CreateTenant(TenantSpec),
    UpdateTenant {
        spec: TenantSpec,
        changes: Vec<String>,
    },
    SetOverrides {
        tenant: TenantId,
        overrides: Overrides,
        changes: Vec<Change>,
    },
    /// Starts moving a tenant's data to another pool or isolation model.
    Move {
        tenant: TenantId,
        from: (PoolName, Isolation),
        pool: Option<PoolName>,
        isolation: Option<Isolation>,
    },
}

fn changes_text(changes: &[Change]) -> String {
    let show =
        |v: &Option<serde_json::Value>| v.as_ref().map_or("-".to_owned(), ToString::to_string);
    changes
        .iter()
        .map(|c| format!("{} {} → {}", c.setting, show(&c.from), show(&c.to)))
        .collect::<Vec<_>>()
        .join(", ")
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::CreatePlan(plan) => write!(f, "+ plan {}", plan.id),
            Step::UpdatePlan {
                plan,
                replaces,
                changes,
            } => write!(
                f,
                "~ plan {} (version {} → {}): {}",
                plan.id,
                replaces,
                replaces + 1,
                changes_text(changes)
            ),
            Step::CreateTenant(spec) => write!(f, "+ tenant {} on plan {}", spec.id, spec.plan),
            Step::UpdateTenant { spec, changes } => {
                write!(f, "~ tenant {}: {}", spec.id, changes.join(", "))
            }
            Step::SetOverrides {
                tenant, changes, ..
            } => write!(f, "~ tenant {} policy: {}", tenant, changes_text(changes)),
            Step::Move {
                tenant,
                from,
                pool,
                isolation,
            } => write!(
                f,
                "~ tenant {} placement: {}/{} → {}/{} (a move job)",
                tenant,
                from.0,
                from.1.as_str(),
                pool.as_ref().unwrap_or(&from.0),
                isolation.unwrap_or(from.1).as_str()
            ),
        }
    }
}

/// Why a file cannot be applied. Each message names the file's path to the
/// value, and the line when it can be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FileError(pub String);

/// The 1-based line of the first `key: value` line in `text`, if any.
fn line_of(text: &str, key: &str, value: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let line = line.trim_start().trim_start_matches("- ");
            line.strip_prefix(key)
                .and_then(|rest| rest.trim_start().strip_prefix(':'))
                .is_some_and(|rest| rest.trim().trim_matches(['"', '\'']) == value)
        })
        .map(|i| i + 1)
}

/// Reads a tenancy file: syntax, types and unknown fields (with the path and
/// line the YAML reader reports), then what the types cannot say.
pub fn parse(file: &str, text: &str) -> Result<Tenancy, FileError> {
    let tenancy: Tenancy =
        serde_norway::from_str(text).map_err(|e| FileError(format!("{file}: {e}")))?;
    for (i, plan) in tenancy.plans.iter().enumerate() {
        if let Err(reason) = plan.check() {
            let at = line_of(text, "id", plan.id.as_str())
                .map_or(String::new(), |l| format!(" at line {l}"));
            return Err(FileError(format!("{file}: plans[{i}]: {reason}{at}")));
        }
    }
    for (i, plan) in tenancy.plans.iter().enumerate() {
        if tenancy.plans[..i].iter().any(|p| p.id == plan.id) {
            return Err(FileError(format!(
                "{file}: plans[{i}].id: plan {} is declared twice",
                plan.id
            )));
        }
    }
    for (i, tenant) in tenancy.tenants.iter().enumerate() {
        if tenancy.tenants[..i].iter().any(|t| t.id == tenant.id) {
            return Err(FileError(format!(
                "{file}: tenants[{i}].id: tenant {} is declared twice",
                tenant.id
            )));
        }
    }
    Ok(tenancy)
}

/// The steps that make the server agree with the file, in the order apply
/// takes them: plans first, then tenants, then their policies.
pub fn plan(
    file: &str,
    text: &str,
    wanted: &Tenancy,
    server: &ServerState,
) -> Result<Vec<Step>, FileError> {
    let mut steps = Vec::new();
    for plan in &wanted.plans {
        match server.plans.iter().find(|(p, _)| p.id == plan.id) {
            None => steps.push(Step::CreatePlan(plan.clone())),
            Some((current, _)) if current == plan => {}
            Some((current, version)) => steps.push(Step::UpdatePlan {
                plan: plan.clone(),
                replaces: *version,
                changes: diff(current, plan),
            }),
        }
    }
    let plan_named = |id: &PlanId| {
        wanted
            .plans
            .iter()
            .find(|p| &p.id == id)
            .or_else(|| server.plans.iter().map(|(p, _)| p).find(|p| &p.id == id))
    };
    for (i, spec) in wanted.tenants.iter().enumerate() {
        let at = line_of(text, "id", spec.id.as_str())
            .map_or(String::new(), |l| format!(" (tenant at line {l})"));
        let Some(base) = plan_named(&spec.plan) else {
            return Err(FileError(format!(
                "{file}: tenants[{i}].plan: no plan {} in the file or on the server{at}",
                spec.plan
            )));
        };
        let wanted_plan = effective(base, &spec.overrides)
            .map_err(|e| FileError(format!("{file}: tenants[{i}].overrides: {e}{at}")))?;
        match server.tenants.iter().find(|(t, _)| t.id == spec.id) {
            None => {
                steps.push(Step::CreateTenant(spec.clone()));
                if !is_empty(&spec.overrides) {
                    steps.push(Step::SetOverrides {
                        tenant: spec.id.clone(),
                        overrides: spec.overrides.clone(),
                        changes: diff(base, &wanted_plan),
                    });
                }
            }
            Some((tenant, overrides)) => {
                if let Some(region) = spec.region.as_ref().filter(|r| **r != tenant.region) {
                    return Err(FileError(format!(
                        "{file}: tenants[{i}].region: tenant {} is in {}, not {region}; \
                         a tenant's region never changes{at}",
                        spec.id, tenant.region
                    )));
                }
                let pool = spec.pool.clone().filter(|p| *p != tenant.pool);
                let isolation = spec.isolation.filter(|m| *m != tenant.isolation);
                if pool.is_some() || isolation.is_some() {
                    steps.push(Step::Move {
                        tenant: spec.id.clone(),
                        from: (tenant.pool.clone(), tenant.isolation),
                        pool,
                        isolation,
                    });
                }
                let mut changes = Vec::new();
                if spec.name != tenant.name {
                    changes.push(format!("name {:?} → {:?}", tenant.name, spec.name));
                }
                if spec.plan != tenant.plan {
                    changes.push(format!("plan {} → {}", tenant.plan, spec.plan));
                }
                if spec.plan_version != tenant.plan_version {
                    let show = |v: Option<i64>| v.map_or("latest".to_owned(), |v| v.to_string());
                    changes.push(format!(
                        "plan_version {} → {}",
                        show(tenant.plan_version),
                        show(spec.plan_version)
                    ));
                }
                if spec.billing_day.is_some_and(|d| d != tenant.billing_day) {
                    changes.push(format!(
                        "billing_day {} → {}",
                        tenant.billing_day.get(),
                        spec.billing_day.map_or(0, BillingDay::get)
                    ));
                }
                if !changes.is_empty() {
                    steps.push(Step::UpdateTenant {
                        spec: spec.clone(),
                        changes,
                    });
                }
                if spec.overrides != *overrides {
                    let current = effective(base, overrides).unwrap_or_else(|_| base.clone());
                    steps.push(Step::SetOverrides {
                        tenant: spec.id.clone(),
                        overrides: spec.overrides.clone(),
                        changes: diff(&current, &wanted_plan),
                    });
                }
            }
        }
    }
    Ok(steps)
}

/// The server's state as a tenancy file.
pub fn export(server: &ServerState) -> Tenancy {
    Tenancy {
        plans: server.plans.iter().map(|(p, _)| p.clone()).collect(),
        tenants: server
            .tenants
            .iter()
            .map(|(t, overrides)| TenantSpec {
                id: t.id.clone(),
                name: t.name.clone(),
                plan: t.plan.clone(),
                plan_version: t.plan_version,
                billing_day: Some(t.billing_day),
                region: Some(t.region.clone()),
                isolation: Some(t.isolation),
                pool: Some(t.pool.clone()),
                overrides: overrides.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const FILE: &str = "\
plans:
  - id: pro
    rate: { requests: 100, per: 1s, burst: 200 }
    quotas:
      - { metric: requests, period: day, hard: 1000 }
tenants:
  - id: acme
    name: Acme
    plan: pro
    overrides:
      rate_requests: 50
  - id: globex
    name: Globex
    plan: default
";

    fn server() -> ServerState {
        let tenant = |id: &str, plan: &str| {
            Tenant::from(tenantd_core::Tenant::new(
                id.parse().unwrap(),
                id,
                plan.parse().unwrap(),
                RegionId::default_region(),
                datetime!(2026-01-01 00:00 UTC),
            ))
        };
        ServerState {
            plans: vec![(Plan::default_plan(), 1)],
            tenants: vec![(tenant("globex", "default"), Overrides::default())],
        }
    }

    #[test]
    fn a_file_is_read_and_planned_against_the_server() {
        let tenancy = parse("tenancy.yaml", FILE).unwrap();
        let steps = plan("tenancy.yaml", FILE, &tenancy, &server()).unwrap();
        let lines: Vec<String> = steps.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "+ plan pro",
                "+ tenant acme on plan pro",
                "~ tenant acme policy: rate.requests 100 → 50",
                "~ tenant globex: name \"globex\" → \"Globex\"",
            ]
        );
    }

    #[test]
    fn an_export_applied_again_changes_nothing() {
        let mut state = server();
        state
            .plans
            .push((parse("f", FILE).unwrap().plans[0].clone(), 3));
        let text = serde_norway::to_string(&export(&state)).unwrap();
        let again = parse("export.yaml", &text).unwrap();
        assert_eq!(plan("export.yaml", &text, &again, &state).unwrap(), []);
    }

    #[test]
    fn errors_name_the_file_the_path_and_the_line() {
        let unknown = FILE.replace("    plan: pro\n", "    plann: pro\n");
        let err = parse("t.yaml", &unknown).unwrap_err().0;
        assert!(
            err.starts_with("t.yaml: tenants[0]: unknown field `plann`"),
            "{err}"
        );
        assert!(err.contains("line 9"), "{err}");

        let wrong_type = FILE.replace("rate_requests: 50", "rate_requests: fifty");
        let err = parse("t.yaml", &wrong_type).unwrap_err().0;
        assert!(err.contains("tenants[0].overrides.rate_requests"), "{err}");
        assert!(err.contains("line 11"), "{err}");

        let missing = FILE.replace("plan: default", "plan: gold");
        let tenancy = parse("t.yaml", &missing).unwrap();
        let err = plan("t.yaml", &missing, &tenancy, &server()).unwrap_err().0;
        assert_eq!(
            err,
            "t.yaml: tenants[1].plan: no plan gold in the file or on the server (tenant at line 12)"
        );

        let elsewhere = FILE.replace("plan: default", "plan: default\n    region: eu");
        let tenancy = parse("t.yaml", &elsewhere).unwrap();
        let err = plan("t.yaml", &elsewhere, &tenancy, &server())
            .unwrap_err()
            .0;
        assert!(
            err.contains("tenants[1].region: tenant globex is in default, not eu"),
            "{err}"
        );

        // Another pool or model is a move.
        let moved = FILE.replace("plan: default", "plan: default\n    isolation: dedicated");
        let tenancy = parse("t.yaml", &moved).unwrap();
        let steps = plan("t.yaml", &moved, &tenancy, &server()).unwrap();
        let lines: Vec<String> = steps.iter().map(ToString::to_string).collect();
        assert!(
            lines.contains(
                &"~ tenant globex placement: default/pooled → default/dedicated (a move job)"
                    .to_owned()
            ),
            "{lines:?}"
        );
    }
}
