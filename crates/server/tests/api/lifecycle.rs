//! Start-up and shutdown: bootstrap, the server secret, restarts, and
//! draining in-flight requests.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use tenantd_client::Client;
use tenantd_core::{ManualClock, Role};
use tenantd_server::config::Config;
use tenantd_server::{Server, StartError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::{assert_problem, restart_app, spawn_app, spawn_app_with, START};

#[tokio::test]
async fn a_generated_bootstrap_key_is_handed_out_once_and_works() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    let clock = Arc::new(ManualClock::new(START));
    let mut server = Server::start(config.clone().check().unwrap(), clock.clone())
        .await
        .unwrap();
    let token = server
        .take_bootstrap_token()
        .expect("a fresh store gets a key");
    assert!(server.take_bootstrap_token().is_none(), "handed out once");

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(listener, async {
        let _ = stopped.await;
    }));
    let me = Client::new(&url, &token).unwrap().me().await.unwrap();
    assert_eq!(me.role, Role::Operator);
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();

    let mut again = Server::start(config.check().unwrap(), clock).await.unwrap();
    assert!(
        again.take_bootstrap_token().is_none(),
        "a store with an operator key is not bootstrapped again"
    );
}

#[tokio::test]
async fn the_server_secret_is_private_and_kept_across_restarts() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let key = app.tenant_key("acme", Role::Reader).await;
    let secret_file = app.config.data_dir.join("server-secret");
    let mode = std::fs::metadata(&secret_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let (dir, config, token) = app.stop().await;
    let app = restart_app(dir, config, token).await;
    assert!(
        app.client(&key.token).me().await.is_ok(),
        "keys survive a restart"
    );

    let (dir, config, _) = app.stop().await;
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = Server::start(config.check().unwrap(), Arc::new(ManualClock::new(START))).await;
    assert!(
        matches!(refused, Err(StartError::Secret { .. })),
        "{refused:?}"
    );
    drop(dir);
}

#[tokio::test]
async fn a_server_with_another_secret_than_its_catalogs_keys_is_refused() {
    let app = spawn_app().await;
    let (dir, mut config, token) = app.stop().await;
    let secret_file = config.data_dir.join("server-secret");
    let kept = std::fs::read_to_string(&secret_file).unwrap();

    let start = |config: &Config| {
        let config = config.clone().check().unwrap();
        async move {
            Server::start(config, Arc::new(ManualClock::new(START)))
                .await
                .map(|_| ())
        }
    };

    // The secret file lost: no new one is made, since no key would verify.
    std::fs::remove_file(&secret_file).unwrap();
    let refused = start(&config).await;
    let Err(error @ StartError::Secret { .. }) = refused else {
        panic!("a new secret was made: {refused:?}");
    };
    assert!(error.to_string().contains("restore"), "{error}");
    assert!(!secret_file.exists(), "nothing was written in its place");

    // The file replaced by another secret.
    let other = tenantd_core::ServerSecret::generate(&mut rand::rngs::OsRng);
    std::fs::write(&secret_file, other.to_hex()).unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let refused = start(&config).await;
    let Err(error @ StartError::SecretMismatch { .. }) = refused else {
        panic!("another secret was accepted: {refused:?}");
    };
    assert!(error.to_string().contains("server-secret file"), "{error}");

    // Another node configured with a different secret.
    config.server_secret = Some(tenantd_core::ServerSecret::generate(&mut rand::rngs::OsRng));
    let refused = start(&config).await;
    assert!(
        matches!(refused, Err(StartError::SecretMismatch { .. })),
        "{refused:?}"
    );

    // The same secret, configured: served, and the operator's key verifies.
    config.server_secret = Some(tenantd_core::ServerSecret::from_hex(kept.trim()).unwrap());
    let app = restart_app(dir, config, token).await;
    assert!(app.operator.me().await.is_ok());
}

#[tokio::test]
async fn a_configured_bootstrap_key_is_ignored_once_operators_exist() {
    let app = spawn_app().await;
    let (dir, mut config, token) = app.stop().await;
    let other = tenantd_core::ApiKeyToken::generate(&mut rand::rngs::OsRng);
    config.bootstrap_key = Some(other.clone());
    let app = restart_app(dir, config, token).await;
    assert!(app.operator.me().await.is_ok());
    assert_problem(
        app.client(&other.expose()).me().await,
        401,
        "invalid_api_key",
    );
}

#[tokio::test]
async fn readiness_names_the_node_its_version_and_when_it_started() {
    let app = spawn_app_with(|config| config.node_name = Some("edge-1".into())).await;
    let ready: serde_json::Value = reqwest::get(format!("{}/readyz", app.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["node"]["name"], "edge-1");
    assert_eq!(ready["node"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        ready["node"]["started_at"], "2026-01-01T00:00:00Z",
        "the clock's start"
    );

    let blank = Config {
        node_name: Some("  ".into()),
        ..Config::default()
    };
    let error = blank.check().unwrap_err().to_string();
    assert!(error.contains("node_name"), "{error}");
}

#[tokio::test]
async fn a_stopping_node_says_it_is_draining_while_it_still_serves() {
    let app = spawn_app_with(|config| config.shutdown_notice = Duration::from_secs(3)).await;
    let http = reqwest::Client::new();
    let (url, token) = (app.url.clone(), app.operator_token.clone());
    let ready = http.get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    let stopping = tokio::spawn(app.stop());
    let mut readiness = serde_json::Value::Null;
    for _ in 0..200 {
        let answer = http.get(format!("{url}/readyz")).send().await.unwrap();
        readiness = answer.json().await.unwrap();
        if readiness["status"] == "draining" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(readiness["status"], "draining", "{readiness}");
    // A load balancer that has not noticed yet still gets answers.
    let tenants = http
        .get(format!("{url}/v1/tenants"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(tenants.status(), 200);
    tokio::time::timeout(Duration::from_secs(15), stopping)
        .await
        .expect("stopped after the notice and the drain")
        .unwrap();
    assert!(
        http.get(format!("{url}/readyz")).send().await.is_err(),
        "the listener is closed once stopped"
    );
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish() {
    let app = spawn_app().await;
    let body = r#"{"id":"acme","name":"Acme"}"#;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    // `Expect: 100-continue`: the server answers `100 Continue` when the
    // request is admitted and its body first read, so the test knows the
    // request is in flight before it stops the server.
    let head = format!(
        "POST /v1/tenants HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\
         Expect: 100-continue\r\n\r\n",
        app.operator_token,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut interim = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut interim))
        .await
        .expect("an interim answer")
        .unwrap();
    let interim = String::from_utf8_lossy(&interim[..n]);
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
    stream.write_all(&body.as_bytes()[..10]).await.unwrap();

    let addr = app.addr;
    let stopping = tokio::spawn(app.stop());
    // The drain has begun once the listener refuses new connections.
    let mut refused = false;
    for _ in 0..500 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the listener closes when the drain begins");
    assert!(
        !stopping.is_finished(),
        "the server waits for the in-flight request"
    );
    stream.write_all(&body.as_bytes()[10..]).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    drop(stream);

    let (dir, config, token) = tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("stopped after the drain")
        .unwrap();
    let app = restart_app(dir, config, token).await;
    assert!(
        app.operator.tenant(&"acme".parse().unwrap()).await.is_ok(),
        "the acknowledged write is durable"
    );
}
