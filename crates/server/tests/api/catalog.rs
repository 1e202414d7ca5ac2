//! The catalog on PostgreSQL (`catalog_url`): everything the control plane
//! keeps survives a restart there, its pools must be PostgreSQL, and one node
//! serves it at a time.

use std::sync::Arc;

use serde_json::json;
use std::time::Duration;

use tenantd_api::{CreateCollection, CreateTenant};
use tenantd_client::KeysOf;
use tenantd_core::{Clock, Isolation, ManualClock, Role, ServerSecret, SystemClock};
use tenantd_server::config::{CatalogUrl, Config, Engine, NonZeroDuration, PoolConfig};
use tenantd_server::{Server, StartError};
use tenantd_testkit::Postgres;

use crate::helpers::{assert_problem, restart_app, spawn_app_with, START};

/// A configuration whose catalog and only storage pool are fresh databases
/// of the test binary's PostgreSQL cluster.
fn on_postgres(config: &mut Config, catalog_url: String, database: &str) {
    on_postgres_of(Postgres::shared(), config, catalog_url, database);
}

/// As `on_postgres`, on `server`.
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

#[tokio::test]
async fn a_postgresql_catalog_keeps_tenants_keys_and_the_trail_across_restarts() {
    let server = Postgres::shared();
    let catalog_url = server.owner_url(&server.tenantd_database().await);
    let data = server.tenantd_database().await;
    let mut config = Config::default();
    on_postgres(&mut config, catalog_url, &data);
    let (url, secret, pools) = (config.catalog_url, config.server_secret, config.pools);
    let app = spawn_app_with(move |c| {
        c.catalog_url = url;
        c.server_secret = secret;
        c.pools = pools;
    })
    .await;
    app.create_tenant("acme").await;
    let admin = app.tenant_key("acme", Role::Admin).await;
    let client = app.client(&admin.token);
    let orders = "orders".parse().unwrap();
    client
        .create_collection(&CreateCollection {
            name: "orders".parse().unwrap(),
            indexes: vec![],
        })
        .await
        .unwrap();
    let record = client
        .create_record(&orders, &json!({"total": 12}))
        .await
        .unwrap();
    for file in ["catalog.db", "server-secret"] {
        assert!(
            !app.config.data_dir.join(file).exists(),
            "{file} was made in the data directory"
        );
    }

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
        client.record(&orders, &record.id).await.unwrap().data,
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
    let catalog_url = server.owner_url(&server.tenantd_database().await);
    let data = server.tenantd_database().await;
    let mut config = Config::default();
    on_postgres_of(&server, &mut config, catalog_url, &data);
    let (url, secret, pools) = (config.catalog_url, config.server_secret, config.pools);
    let app = spawn_app_with(move |c| {
        c.catalog_url = url;
        c.server_secret = secret;
        c.pools = pools;
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
async fn a_node_that_lost_the_catalogs_lease_to_another_stops() {
    let server = Postgres::start();
    let catalog_url = server.owner_url(&server.tenantd_database().await);
    let data = server.tenantd_database().await;
    let mut config = Config::default();
    on_postgres_of(&server, &mut config, catalog_url, &data);
    let shared = config.clone();
    let first = spawn_app_with(move |c| {
        c.catalog_url = shared.catalog_url;
        c.server_secret = shared.server_secret;
        c.pools = shared.pools;
    })
    .await;

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
