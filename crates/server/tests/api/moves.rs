//! Moving a tenant between pools and isolation models: verified, atomic, and
//! harmless when it fails.

use serde_json::json;
use sqlx::Connection;
use tenantd_client::api::{CreateCollection, CreateTenant, JobView, MoveTenant, RecordView};
use tenantd_client::{Client, RecordQuery};
use tenantd_core::{Isolation, Role, TenantId};
use tenantd_server::config::{Engine, PoolConfig};
use tenantd_testkit::Postgres;

use crate::helpers::{assert_problem, spawn_app_with, wait_for_job, TestApp};

fn pools(c: &mut tenantd_server::config::Config) {
    let pool = |name: &str| PoolConfig {
        name: name.parse().unwrap(),
        engine: Engine::Sqlite,
        location: format!("pools/{name}"),
        owner_location: None,
        region: None,
        models: vec![Isolation::Pooled, Isolation::Dedicated],
    };
    c.pools = vec![pool("a"), pool("b")];
}

/// acme on pool a, pooled, with 50 records written through the API.
async fn acme_with_data(app: &TestApp) -> (Client, Vec<RecordView>) {
    app.operator
        .create_tenant(&CreateTenant {
            pool: Some("a".parse().unwrap()),
            ..CreateTenant::new("acme".parse().unwrap(), "Acme")
        })
        .await
        .unwrap();
    let client = app.client(&app.tenant_key("acme", Role::Developer).await.token);
    let orders = "orders".parse().unwrap();
    client
        .create_collection(&CreateCollection {
            name: "orders".parse().unwrap(),
            indexes: vec!["n".into()],
        })
        .await
        .unwrap();
    for n in 0..50 {
        let id = format!("r{n:02}").parse().unwrap();
        client
            .put_record(&orders, &id, &json!({ "n": n }), None)
            .await
            .unwrap();
    }
    // Versions above 1 must survive the move.
    client
        .put_record(
            &orders,
            &"r07".parse().unwrap(),
            &json!({ "n": 7, "x": 1 }),
            Some(1),
        )
        .await
        .unwrap();
    let records = all_orders(&client).await;
    (client, records)
}

/// Every record of `orders`, in id order.
async fn all_orders(client: &Client) -> Vec<RecordView> {
    let all = RecordQuery {
        limit: Some(1000),
        ..Default::default()
    };
    client
        .list_records(&"orders".parse().unwrap(), &all)
        .await
        .unwrap()
        .items
}

/// Moves acme to `pool` (and `isolation`, if given) and waits for the job.
async fn move_acme(app: &TestApp, pool: &str, isolation: Option<Isolation>) -> JobView {
    let to = MoveTenant {
        pool: Some(pool.parse().unwrap()),
        isolation,
    };
    let job = app
        .operator
        .move_tenant(&"acme".parse().unwrap(), &to)
        .await
        .unwrap();
    wait_for_job(app, &job.id).await
}

/// After a failed move, acme is still on pool `a`, pooled, with exactly
/// `before`, and writes again.
async fn assert_whole_on_a(app: &TestApp, client: &Client, before: &[RecordView]) {
    let tenant = app.operator.tenant(&"acme".parse().unwrap()).await.unwrap();
    assert_eq!(
        (tenant.pool.as_str(), tenant.isolation),
        ("a", Isolation::Pooled)
    );
    assert_eq!(all_orders(client).await, before);
    client
        .create_record(&"orders".parse().unwrap(), &json!({"n": 50}))
        .await
        .unwrap();
}

async fn count_rows(path: std::path::PathBuf, tenant: &str) -> i64 {
    let url = format!("sqlite://{}", path.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM records WHERE tenant_id = ?")
        .bind(tenant)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

#[tokio::test]
async fn a_move_copies_verifies_switches_and_removes_the_old_copy() {
    let app = spawn_app_with(pools).await;
    let (client, before) = acme_with_data(&app).await;
    let acme: TenantId = "acme".parse().unwrap();
    let data = app.config.data_dir.join("pools");

    for (pool, isolation) in [
        ("a", Isolation::Dedicated),
        ("b", Isolation::Pooled),
        ("b", Isolation::Dedicated),
    ] {
        let done = move_acme(&app, pool, Some(isolation)).await;
        assert_eq!(
            done.details["progress"],
            json!({ "collections": 1, "collections_total": 1, "records": 50, "records_total": 50 }),
            "the job says how much it copied"
        );
        assert_eq!(
            (done.state.as_str(), done.step.as_str(), done.error),
            ("succeeded", "done", None)
        );
        let tenant = app.operator.tenant(&acme).await.unwrap();
        assert_eq!((tenant.pool.as_str(), tenant.isolation), (pool, isolation));

        let after = all_orders(&client).await;
        assert_eq!(
            after, before,
            "same ids, versions, times and data after moving to {pool}/{isolation:?}"
        );
        let sorted = RecordQuery {
            sort: Some("-n".into()),
            limit: Some(1),
            ..Default::default()
        };
        assert_eq!(
            client
                .list_records(&"orders".parse().unwrap(), &sorted)
                .await
                .unwrap()
                .items[0]
                .data["n"],
            49
        );
    }
    // Only the final copy remains.
    assert_eq!(count_rows(data.join("a/pooled.db"), "acme").await, 0);
    assert_eq!(count_rows(data.join("b/pooled.db"), "acme").await, 0);
    assert!(!data.join("a/tenants/acme.db").exists());
    assert_eq!(count_rows(data.join("b/tenants/acme.db"), "acme").await, 50);
    // The tenant writes at its new home.
    client
        .create_record(&"orders".parse().unwrap(), &json!({"n": 50}))
        .await
        .unwrap();

    let trail = app
        .operator
        .audit(tenantd_client::KeysOf::Tenant(&acme), &Default::default())
        .await
        .unwrap();
    assert_eq!(
        trail
            .items
            .iter()
            .filter(|e| e.action == "tenant.move")
            .count(),
        3
    );
}

/// Installs a trigger in `db` that aborts the insert of record `r30`: a
/// real failure halfway through a copy.
async fn poison(db: std::path::PathBuf, sql: &str) {
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query(sql).execute(&pool).await.unwrap();
    pool.close().await;
}

#[tokio::test]
async fn a_failure_mid_copy_leaves_the_tenant_whole_where_it_was() {
    let app = spawn_app_with(pools).await;
    let (client, before) = acme_with_data(&app).await;
    let target = app.config.data_dir.join("pools/b/pooled.db");
    poison(
        target.clone(),
        "CREATE TRIGGER poison BEFORE INSERT ON records WHEN NEW.id = 'r30'
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
    )
    .await;

    let done = move_acme(&app, "b", None).await;
    assert_eq!(
        (done.state.as_str(), done.step.as_str()),
        ("failed", "copying")
    );
    assert!(done.error.unwrap().contains("injected failure"));

    assert_whole_on_a(&app, &client, &before).await;
    assert_eq!(
        count_rows(target, "acme").await,
        0,
        "no partial copy is left behind"
    );
}

#[tokio::test]
async fn a_copy_that_does_not_verify_is_discarded() {
    let app = spawn_app_with(pools).await;
    let (client, before) = acme_with_data(&app).await;
    // Silent corruption on the target: the copy lands, but changed.
    poison(
        app.config.data_dir.join("pools/b/pooled.db"),
        "CREATE TRIGGER corrupt AFTER INSERT ON records WHEN NEW.id = 'r12'
         BEGIN UPDATE records SET body = '{\"n\":-1}' WHERE rowid = NEW.rowid; END",
    )
    .await;
    let done = move_acme(&app, "b", None).await;
    assert_eq!(
        (done.state.as_str(), done.step.as_str()),
        ("failed", "verifying")
    );
    assert!(done.error.unwrap().contains("collection orders differs"));
    assert_whole_on_a(&app, &client, &before).await;
}

#[tokio::test]
async fn moves_respect_placement_rules() {
    let app = spawn_app_with(|c| {
        pools(c);
        c.pools[1].region = Some("us".parse().unwrap());
    })
    .await;
    let (_, _) = acme_with_data(&app).await;
    let acme: TenantId = "acme".parse().unwrap();
    let to_us = MoveTenant {
        pool: Some("b".parse().unwrap()),
        isolation: None,
    };
    assert_problem(
        app.operator.move_tenant(&acme, &to_us).await,
        422,
        "placement_failed",
    );
    assert_problem(
        app.operator
            .move_tenant(&acme, &MoveTenant::default())
            .await,
        409,
        "invalid_transition",
    );
    app.operator.delete_tenant(&acme).await.unwrap();
    let dedicated = MoveTenant {
        pool: None,
        isolation: Some(Isolation::Dedicated),
    };
    assert_problem(
        app.operator.move_tenant(&acme, &dedicated).await,
        409,
        "invalid_transition",
    );
}

/// Pool `a` on SQLite and pool `pg` on a fresh database of the test
/// binary's PostgreSQL server, in one region.
async fn sqlite_and_postgres() -> TestApp {
    let server = Postgres::shared();
    let database = server.tenantd_database().await;
    spawn_app_with(|c| {
        pools(c);
        c.pools[1] = PoolConfig {
            name: "pg".parse().unwrap(),
            engine: Engine::Postgres,
            location: server.app_url(&database),
            owner_location: Some(server.owner_url(&database)),
            region: None,
            models: vec![Isolation::Pooled, Isolation::Schema, Isolation::Dedicated],
        };
    })
    .await
}

#[tokio::test]
async fn a_tenant_moves_between_sqlite_and_every_postgresql_model() {
    let app = sqlite_and_postgres().await;
    let (client, before) = acme_with_data(&app).await;
    for (pool, isolation) in [
        ("pg", Isolation::Schema),
        ("pg", Isolation::Dedicated),
        ("pg", Isolation::Pooled),
        ("a", Isolation::Dedicated),
    ] {
        let done = move_acme(&app, pool, Some(isolation)).await;
        assert_eq!(
            (done.state.as_str(), done.step.as_str(), done.error),
            ("succeeded", "done", None),
            "to {pool}/{isolation:?}"
        );
        let after = all_orders(&client).await;
        assert_eq!(after, before, "after moving to {pool}/{isolation:?}");
        let page = RecordQuery {
            filter: Some("n >= 10 and n < 13".into()),
            sort: Some("-n".into()),
            limit: Some(2),
            ..Default::default()
        };
        let first = client
            .list_records(&"orders".parse().unwrap(), &page)
            .await
            .unwrap();
        let ns: Vec<_> = first.items.iter().map(|r| r.data["n"].clone()).collect();
        assert_eq!(ns, [json!(12), json!(11)], "on {pool}/{isolation:?}");
        let second = RecordQuery {
            cursor: first.next_cursor.clone(),
            ..page
        };
        let rest = client
            .list_records(&"orders".parse().unwrap(), &second)
            .await
            .unwrap();
        assert_eq!(rest.items.len(), 1);
        assert_eq!(rest.items[0].data["n"], 10);
    }
}

#[tokio::test]
async fn a_failure_mid_copy_into_postgresql_leaves_the_tenant_whole() {
    let app = sqlite_and_postgres().await;
    let (client, before) = acme_with_data(&app).await;
    // The pool's schema exists once the server has started; its owner
    // installs a trigger that fails the copy of r30.
    let pg = app.config.pools[1].owner_location.clone().unwrap();
    let mut owner = sqlx::PgConnection::connect(&pg).await.unwrap();
    for statement in [
        "CREATE FUNCTION tenantd.poison() RETURNS trigger LANGUAGE plpgsql AS
         $$ BEGIN IF NEW.id = 'r30' THEN RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER poison BEFORE INSERT ON tenantd.records FOR EACH ROW EXECUTE FUNCTION tenantd.poison()",
    ] {
        sqlx::query(statement).execute(&mut owner).await.unwrap();
    }

    let done = move_acme(&app, "pg", Some(Isolation::Pooled)).await;
    assert_eq!(
        (done.state.as_str(), done.step.as_str()),
        ("failed", "copying")
    );
    assert!(done.error.unwrap().contains("injected failure"));
    assert_whole_on_a(&app, &client, &before).await;
    // Row-level security binds the owner too: look as the tenant.
    sqlx::query("SELECT set_config('app.tenant_id', 'acme', false)")
        .execute(&mut owner)
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM tenantd.records")
        .fetch_one(&mut owner)
        .await
        .unwrap();
    assert_eq!(left, 0, "no partial copy is left behind");
}

/// A move whose node stopped mid-way (here: the job is running in the
/// catalog, as a node killed during the copy leaves it) is taken over when a
/// node starts, from the copy: it finishes, and the tenant is whole at its
/// new placement with only that copy left.
#[tokio::test]
async fn a_move_left_running_by_a_stopped_node_is_taken_over_and_finished() {
    use tenantd_core::JobId;
    use tenantd_store::jobs::{Job, JobKind, JobState, MoveStep};

    let app = spawn_app_with(pools).await;
    let (_, before) = acme_with_data(&app).await;
    let developer = app.tenant_key("acme", Role::Developer).await.token;
    let data = app.config.data_dir.join("pools");
    let (dir, config, operator) = app.stop().await;

    let catalog = tenantd_store::Catalog::open(
        &config.data_dir.join("catalog.db"),
        std::time::Duration::from_secs(5),
    )
    .await
    .unwrap();
    let now = crate::helpers::START;
    let id = JobId::generate(now, &mut rand::thread_rng());
    let job = Job {
        id: id.clone(),
        tenant: "acme".parse().unwrap(),
        kind: JobKind::Move,
        state: JobState::Running,
        step: MoveStep::Copying,
        details: json!({
            "from": { "pool": "a", "isolation": "pooled" },
            "to": { "pool": "b", "isolation": "dedicated" },
        }),
        error: None,
        created_at: now,
        updated_at: now,
    };
    let audit = tenantd_store::NewAuditEntry {
        tenant: Some(job.tenant.clone()),
        at: now,
        actor: None,
        action: tenantd_store::AuditAction::TenantMoveStart,
        target: id.as_str().to_owned(),
        details: job.details.clone(),
        request_id: None,
        before: None,
        after: None,
    };
    catalog.start_job(&job, &audit).await.unwrap();
    catalog.close().await;

    let app = crate::helpers::restart_app(dir, config, operator).await;
    let done = wait_for_job(&app, &id).await;
    assert_eq!(
        (
            done.state.as_str(),
            done.step.as_str(),
            done.error.as_deref()
        ),
        ("succeeded", "done", None),
        "{done:?}"
    );
    let tenant = app.operator.tenant(&"acme".parse().unwrap()).await.unwrap();
    assert_eq!(
        (tenant.pool.as_str(), tenant.isolation),
        ("b", Isolation::Dedicated)
    );
    assert_eq!(all_orders(&app.client(&developer)).await, before);
    assert_eq!(count_rows(data.join("a/pooled.db"), "acme").await, 0);
    assert_eq!(count_rows(data.join("b/tenants/acme.db"), "acme").await, 50);
}
