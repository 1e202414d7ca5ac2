//! The catalog on PostgreSQL (`catalog_url`): everything the control plane
//! keeps survives a restart there, its pools must be PostgreSQL, and one node
//! serves it at a time.

use std::sync::Arc;

use serde_json::json;
use std::time::Duration;

use tenantd_api::{CreateCollection, CreateTenant};
use tenantd_client::{Client, KeysOf, PageRequest};
use tenantd_core::plan::Plan;
use tenantd_core::policy::Overrides;
use tenantd_core::{
    Clock, CollectionName, Isolation, KeyId, ManualClock, OperatorScope, RecordId, Role,
    ServerSecret, SystemClock, TenantId, TenantScope,
};
use tenantd_server::config::{CatalogUrl, Config, Engine, NonZeroDuration, PoolConfig};
use tenantd_server::{Server, StartError};
use tenantd_store::plans::NewPlanVersion;
use tenantd_store::policy::{NewPolicyVersion, PolicyStatus};
use tenantd_store::{AuditAction, BackgroundTask, CatalogLease, NewAuditEntry, Owner};
use tenantd_testkit::certs::Authority;
use tenantd_testkit::{Postgres, APP_ROLE, OWNER_ROLE};

use crate::helpers::{assert_problem, restart_app, spawn_app_with, TestApp, START};

/// `config` with its catalog at `catalog_url` and its only storage pool the
/// database `database`, both on `server`.
fn on_postgres_of(server: &Postgres, config: &mut Config, catalog_url: String, database: &str) {
    config.catalog_url = Some(CatalogUrl::try_from(catalog_url).unwrap());
    config.server_secret = Some(ServerSecret::generate(&mut rand::rngs::OsRng));
    config.pools = vec![PoolConfig {
        name: "default".parse().unwrap(),
        engine: Engine::Postgres,
        location: server.app_url(database),
        owner_location: Some(server.owner_url(database)),
        region: None,
        models: vec![Isolation::Pooled],
    }];
}

/// A node whose catalog and only storage pool are fresh databases of
/// `server`, with `tweak` applied to its configuration.
async fn spawn_on_postgres(server: &Postgres, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let catalog_url = server.owner_url(&server.tenantd_database().await);
    let data = server.tenantd_database().await;
    let mut config = Config::default();
    on_postgres_of(server, &mut config, catalog_url, &data);
    spawn_on_catalog_of(config, tweak).await
}

/// A node with the catalog, server secret and pools of `shared`, and
/// `tweak` applied to its configuration.
async fn spawn_on_catalog_of(shared: Config, tweak: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_with(move |c| {
        c.catalog_url = shared.catalog_url;
        c.server_secret = shared.server_secret;
        c.pools = shared.pools;
        tweak(c);
    })
    .await
}

/// Collection `orders` with one record of `data`, made through `client`;
/// the collection's name and the record's id.
async fn an_order(client: &Client, data: serde_json::Value) -> (CollectionName, RecordId) {
    let orders: CollectionName = "orders".parse().unwrap();
    client
        .create_collection(&CreateCollection {
            name: orders.clone(),
            indexes: vec![],
        })
        .await
        .unwrap();
    let record = client.create_record(&orders, &data).await.unwrap();
    (orders, record.id)
}

#[tokio::test]
async fn a_postgresql_catalog_keeps_tenants_keys_and_the_trail_across_restarts() {
    let server = Postgres::shared();
    let app = spawn_on_postgres(server, |_| {}).await;
    app.create_tenant("acme").await;
    let admin = app.tenant_key("acme", Role::Admin).await;
    let client = app.client(&admin.token);
    let (orders, record) = an_order(&client, json!({"total": 12})).await;
    for file in ["catalog.db", "server-secret"] {
        assert!(
            !app.config.data_dir.join(file).exists(),
            "{file} was made in the data directory"
        );
    }

    // The node runs the catalog's background tasks: it holds their leases.
    let url = app.config.catalog_url.as_ref().unwrap().as_str().to_owned();
    for task in [BackgroundTask::PurgeSweep, BackgroundTask::SigningKeys] {
        let mut held_elsewhere = false;
        for _ in 0..100 {
            let someone = tenantd_core::NodeId::generate(&mut rand::rngs::OsRng);
            let taken = CatalogLease::take_task(&url, task, &someone, Duration::from_secs(5)).await;
            if taken.unwrap().is_none() {
                held_elsewhere = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(held_elsewhere, "{task:?}: the node did not take its lease");
    }
    // And the cluster's view says so, with the node beating.
    let cluster = app.operator.cluster().await.unwrap();
    let node = app
        .http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    let node: tenantd_client::api::Readiness = node.json().await.unwrap();
    assert_eq!(cluster.answered_by, node.node.id);
    let holders: Vec<(&str, Option<&tenantd_core::NodeId>)> = cluster
        .leases
        .iter()
        .map(|l| (l.lease.as_str(), l.holder.as_ref()))
        .collect();
    assert_eq!(
        holders,
        [
            ("sole_node", Some(&node.node.id)),
            ("purge_sweep", Some(&node.node.id)),
            ("signing_keys", Some(&node.node.id)),
        ]
    );

    // A second node on the same catalog is refused while the first serves.
    let other_dir = tempfile::tempdir().unwrap();
    let second = Config {
        data_dir: other_dir.path().join("data"),
        server_secret: app.config.server_secret.clone(),
        ..app.config.clone()
    };
    let refused = Server::start(second.check().unwrap(), Arc::new(ManualClock::new(START)))
        .await
        .map(|_| ());
    assert!(
        matches!(refused, Err(StartError::CatalogInUse { .. })),
        "{refused:?}"
    );

    let (dir, config, token) = app.stop().await;
    let app = restart_app(dir, config, token).await;
    let client = app.client(&admin.token);
    assert_eq!(
        client.record(&orders, &record).await.unwrap().data,
        json!({"total": 12}),
        "the key, its tenant and its data are all there after a restart"
    );
    let trail = app
        .operator
        .verify_audit(KeysOf::Tenant(&"acme".parse().unwrap()))
        .await
        .unwrap();
    assert!(trail.intact && trail.entries >= 2, "{trail:?}");
}

#[test]
fn a_postgresql_catalog_needs_a_configured_secret_and_postgresql_pools() {
    let catalog_url = CatalogUrl::try_from("postgres://tenantd@db/catalog".to_owned()).unwrap();
    let no_secret = Config {
        catalog_url: Some(catalog_url.clone()),
        ..Config::default()
    };
    let error = no_secret.check().unwrap_err().to_string();
    assert!(error.contains("catalog_url needs server_secret"), "{error}");
    let sqlite_pool = Config {
        catalog_url: Some(catalog_url),
        server_secret: Some(ServerSecret::generate(&mut rand::rngs::OsRng)),
        ..Config::default()
    };
    let error = sqlite_pool.check().unwrap_err().to_string();
    assert!(
        error.contains("pool default is SQLite") && error.contains("PostgreSQL"),
        "{error}"
    );
}

#[tokio::test]
async fn a_stopped_postgresql_catalog_answers_fast_and_heals_without_a_restart() {
    let server = Postgres::start();
    let app = spawn_on_postgres(&server, |c| {
        c.acquire_timeout = NonZeroDuration::from_secs(1);
    })
    .await;
    app.create_tenant("acme").await;

    server.stop();
    let create = |id: &'static str| {
        let app = &app;
        async move {
            let started = SystemClock.instant();
            let answer = app
                .operator
                .create_tenant(&CreateTenant::new(id.parse().unwrap(), id))
                .await;
            (answer, SystemClock.instant() - started)
        }
    };
    for id in ["globex", "initech", "umbrella"] {
        let (answer, took) = create(id).await;
        assert_problem(answer, 503, "store_unavailable");
        assert!(took < Duration::from_secs(6), "{id}: {took:?}");
    }

    server.resume();
    let mut healed = false;
    for _ in 0..100 {
        if create("hooli").await.0.is_ok() {
            healed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        healed,
        "the catalog was not written again after PostgreSQL came back"
    );
    assert!(app.operator.tenant(&"acme".parse().unwrap()).await.is_ok());
}

#[tokio::test]
async fn a_catalog_and_a_pool_over_tls_verify_the_servers_certificate_and_name() {
    let ca = Authority::new("database CA");
    let server = Postgres::start_tls(&ca.server("localhost"));
    let roots = tempfile::tempdir().unwrap();
    let root_cert = roots.path().join("ca.pem");
    std::fs::write(&root_cert, &ca.pem).unwrap();
    let verified = |user: &str, database: &str| {
        server.verifying_url(user, database, "verify-full", &root_cert)
    };
    let (catalog, data) = (
        server.tenantd_database().await,
        server.tenantd_database().await,
    );
    let mut config = Config::default();
    on_postgres_of(&server, &mut config, verified(OWNER_ROLE, &catalog), &data);
    config.pools[0].location = verified(APP_ROLE, &data);
    config.pools[0].owner_location = Some(verified(OWNER_ROLE, &data));
    let app = spawn_on_catalog_of(config, |_| {}).await;
    // The cluster takes TLS connections only: all of this went over TLS.
    app.create_tenant("acme").await;
    let client = app.client(&app.tenant_key("acme", Role::Developer).await.token);
    let (orders, record) = an_order(&client, json!({"total": 7})).await;
    let record = client.record(&orders, &record).await.unwrap();
    assert_eq!(record.data, json!({"total": 7}));

    // A server whose certificate names another host is refused.
    let elsewhere = Postgres::start_tls(&ca.server("db.internal"));
    let database = elsewhere.tenantd_database().await;
    let url = elsewhere.verifying_url(OWNER_ROLE, &database, "verify-full", &root_cert);
    let opened = tenantd_store::Catalog::open_postgres(&url, Duration::from_secs(5)).await;
    let refused = opened.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(refused.contains("db.internal"), "{refused}");
    // And an authority it does not know is refused.
    let strangers = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(strangers.path(), Authority::new("other CA").pem).unwrap();
    let url = server.verifying_url(OWNER_ROLE, &catalog, "verify-ca", strangers.path());
    let opened = tenantd_store::Catalog::open_postgres(&url, Duration::from_secs(5)).await;
    assert!(
        opened.is_err(),
        "a server from an unknown authority was trusted"
    );
}

#[tokio::test]
async fn a_node_that_lost_the_catalogs_lease_to_another_stops() {
    let server = Postgres::start();
    let catalog_url = server.owner_url(&server.tenantd_database().await);
    let data = server.tenantd_database().await;
    let mut config = Config::default();
    on_postgres_of(&server, &mut config, catalog_url, &data);
    let first = spawn_on_catalog_of(config, |_| {}).await;

    // PostgreSQL restarts: the first node's lease went with its connection.
    server.stop();
    server.resume();
    let other_dir = tempfile::tempdir().unwrap();
    let second = Config {
        data_dir: other_dir.path().join("data"),
        ..first.config.clone()
    };
    let second = Server::start(second.check().unwrap(), Arc::new(ManualClock::new(START))).await;
    let serving = |addr| async move { tokio::net::TcpStream::connect(addr).await.is_ok() };
    match second {
        // The second node took the lease first: the first stops serving.
        Ok(_second) => {
            let mut stopped = false;
            for _ in 0..100 {
                if !serving(first.addr).await {
                    stopped = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(stopped, "two nodes served one catalog");
        }
        // The first node took its lease back first: it serves on, alone.
        Err(StartError::CatalogInUse { .. }) => {
            assert!(first.operator.me().await.is_ok());
        }
        Err(other) => panic!("{other}"),
    }
}

/// A second handle on the catalog, writing as another node's use cases
/// write: each change with its audit entry, in one transaction.
struct OtherNode {
    catalog: tenantd_store::Catalog,
}

impl OtherNode {
    async fn open(app: &TestApp) -> Self {
        let url = app.config.catalog_url.as_ref().unwrap().as_str();
        let catalog = tenantd_store::Catalog::open_postgres(url, Duration::from_secs(5));
        Self {
            catalog: catalog.await.unwrap(),
        }
    }

    fn audit(tenant: Option<&TenantId>, action: AuditAction, target: &str) -> NewAuditEntry {
        NewAuditEntry {
            tenant: tenant.cloned(),
            at: START,
            actor: None,
            action,
            target: target.to_owned(),
            details: json!({}),
            request_id: None,
            before: None,
            after: None,
        }
    }

    /// An admin's scope on `tenant`, from a key verified the only way there is.
    async fn scope(&self, tenant: &TenantId) -> TenantScope {
        let server = OperatorScope::server();
        let tenant = self.catalog.tenant_for(&server, tenant).await;
        let tenant = tenant.unwrap().unwrap();
        let admin = tenantd_core::testing::member(&tenant, Role::Admin, START);
        admin.scope_for(&tenant.id, Role::Admin).unwrap()
    }

    async fn revoke(&self, tenant: &TenantId, key: &KeyId) {
        let scope = self.scope(tenant).await;
        let audit = Self::audit(Some(tenant), AuditAction::KeyRevoke, key.as_str());
        let revoked = self
            .catalog
            .revoke_key(Owner::Tenant(&scope), key, START, &audit);
        assert!(revoked.await.unwrap().is_some());
    }
}

/// Waits until `refused` says a request was refused as expected, and
/// returns how long that took from `since`.
async fn until_refused(
    since: std::time::Instant,
    mut refused: impl AsyncFnMut() -> bool,
) -> Duration {
    for _ in 0..500 {
        if refused().await {
            return SystemClock.instant() - since;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the change made on the other node was not in effect within 5 s");
}

/// What another node changes in the catalog is in effect on this one within
/// a second, without a restart: a key it revokes is refused, a plan version
/// it makes is applied, a policy it applies throttles; and a change made
/// while this node's notification connection was down is not missed.
#[tokio::test]
async fn a_change_made_on_another_node_is_in_effect_here_within_a_second() {
    let server = Postgres::shared();
    let app = spawn_on_postgres(server, |_| {}).await;
    let other = OtherNode::open(&app).await;
    let acme: TenantId = "acme".parse().unwrap();
    app.create_tenant("acme").await;
    let page = PageRequest::default();

    // A key in use, so cached here, revoked there.
    let doomed = app.tenant_key("acme", Role::Developer).await;
    let client = app.client(&doomed.token);
    client.collections(&page).await.unwrap();
    let since = SystemClock.instant();
    other.revoke(&acme, &doomed.key.id).await;
    let took = until_refused(since, async || {
        matches!(client.collections(&page).await, Err(e) if e.code() == Some("key_revoked"))
    })
    .await;
    assert!(
        took < Duration::from_secs(1),
        "a revoked key was accepted for {took:?}"
    );

    // The notification connection drops; a key revoked meanwhile is refused
    // all the same, from the feed read on reconnection or the next poll.
    let second = app.tenant_key("acme", Role::Developer).await;
    let client = app.client(&second.token);
    client.collections(&page).await.unwrap();
    let admin = sqlx::PgPool::connect(&server.admin_url()).await.unwrap();
    let dropped: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = 'tenantd change feed' AND datname = $1",
    )
    .bind(
        app.config
            .catalog_url
            .as_ref()
            .unwrap()
            .as_str()
            .rsplit('/')
            .next()
            .unwrap(),
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    assert_eq!(dropped, [true], "the node listens on one connection");
    let since = SystemClock.instant();
    other.revoke(&acme, &second.key.id).await;
    let took = until_refused(since, async || {
        matches!(client.collections(&page).await, Err(e) if e.code() == Some("key_revoked"))
    })
    .await;
    assert!(took < Duration::from_secs(2), "{took:?}");

    // A policy applied there: one request at a time, for one tenant.
    let globex: TenantId = "globex".parse().unwrap();
    app.create_tenant("globex").await;
    let throttled = app.tenant_key("globex", Role::Developer).await;
    let client = app.client(&throttled.token);
    client.collections(&page).await.unwrap();
    let plan = Plan::default_plan();
    let policy = NewPolicyVersion {
        plan: plan.id.clone(),
        overrides: Overrides {
            rate_requests: Some(1),
            rate_burst: Some(1),
            ..Overrides::default()
        },
        effective: plan,
        diff: vec![],
        reason: "throttled".to_owned(),
        actor: (throttled.key.id.clone(), Role::Admin),
        status: PolicyStatus::Applied,
        reverts_to: None,
        at: START,
    };
    let scope = other.scope(&globex).await;
    let audit = OtherNode::audit(Some(&globex), AuditAction::PolicyApply, "1");
    let since = SystemClock.instant();
    let applied = other.catalog.add_policy_version(&scope, &policy, &audit);
    applied.await.unwrap();
    let took = until_refused(since, async || {
        matches!(client.collections(&page).await, Err(e) if e.code() == Some("rate_limited"))
    })
    .await;
    assert!(took < Duration::from_secs(1), "{took:?}");
    let neighbour = app.tenant_key("acme", Role::Developer).await;
    let neighbour = app.client(&neighbour.token);
    for _ in 0..3 {
        neighbour.collections(&page).await.unwrap();
    }

    // A plan version made there: a hard quota of 2 requests a day, which
    // the requests already made have used.
    let developer = app.tenant_key("acme", Role::Developer).await;
    let client = app.client(&developer.token);
    for _ in 0..2 {
        client.collections(&page).await.unwrap();
    }
    let plan: Plan = serde_json::from_value(json!({
        "id": "default",
        "rate": { "requests": 1000, "per": "1s", "burst": 1000 },
        "quotas": [{ "metric": "requests", "period": "day", "hard": 2 }],
    }))
    .unwrap();
    let versions = app.operator.plan_versions(&plan.id, &page).await.unwrap();
    let latest = versions.items[0].version;
    let version = NewPlanVersion {
        plan: &plan,
        after: Some(latest),
        diff: vec![],
        reason: "tighter",
        actor: None,
        at: START,
    };
    let audit = OtherNode::audit(None, AuditAction::PlanUpdate, plan.id.as_str());
    let since = SystemClock.instant();
    other
        .catalog
        .add_plan_version(&version, &audit)
        .await
        .unwrap();
    let took = until_refused(since, async || {
        matches!(client.collections(&page).await, Err(e) if e.code() == Some("quota_exceeded"))
    })
    .await;
    assert!(took < Duration::from_secs(1), "{took:?}");
}
