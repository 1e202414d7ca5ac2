//! `spawn_app()`: a real tenantd on 127.0.0.1:0 with its own SQLite data
//! directory and a manual clock, plus shortcuts for the common set-up.

use std::net::SocketAddr;
use std::sync::Arc;

use rand::rngs::OsRng;
use reqwest::Method;
use tenantd_client::api::{CreateKey, CreateTenant, CreatedKey};
use tenantd_client::{Client, KeysOf};
use tenantd_core::{ApiKeyToken, ManualClock, Role, Tenant, TenantId};
use tenantd_server::config::Config;
use tenantd_server::Server;
use time::macros::datetime;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const START: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

pub struct TestApp {
    pub addr: SocketAddr,
    pub url: String,
    pub operator_token: String,
    /// SDK client holding the operator key.
    pub operator: Client,
    /// Plain HTTP client for requests the SDK would not send.
    pub http: reqwest::Client,
    pub clock: ManualClock,
    pub config: Config,
    pub dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a server on a fresh data directory after `tweak` adjusts its config.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_at(START, tweak).await
}

/// Starts a server whose manual clock begins at `start` (the real time, for
/// tests whose other parties check times against their own clocks).
pub async fn spawn_app_at(start: OffsetDateTime, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let token = ApiKeyToken::generate(&mut OsRng);
    let mut config = Config {
        data_dir: dir.path().join("data"),
        bootstrap_key: Some(token.clone()),
        ..Config::default()
    };
    tweak(&mut config);
    start_at(start, dir, config, token.expose()).await
}

/// Starts a server on an existing data directory (a restart).
pub async fn restart_app(
    dir: tempfile::TempDir,
    config: Config,
    operator_token: String,
) -> TestApp {
    start_at(START, dir, config, operator_token).await
}

async fn start_at(
    start: OffsetDateTime,
    dir: tempfile::TempDir,
    config: Config,
    operator_token: String,
) -> TestApp {
    let clock = ManualClock::new(start);
    let server = Server::start(
        config
            .clone()
            .check()
            .expect("the test configuration is valid"),
        Arc::new(clock.clone()),
    )
    .await
    .expect("server starts");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(server.run(listener, async {
        let _ = rx.await;
    }));
    let url = format!("http://{addr}");
    TestApp {
        addr,
        operator: Client::new(&url, &operator_token).expect("client"),
        url,
        operator_token,
        http: reqwest::Client::new(),
        clock,
        config,
        dir,
        shutdown: Some(tx),
        server: Some(handle),
    }
}

impl TestApp {
    /// Signals shutdown and waits until the server has drained and flushed.
    /// Returns what a restart needs.
    pub async fn stop(mut self) -> (tempfile::TempDir, Config, String) {
        self.signal_stop().await;
        (self.dir, self.config, self.operator_token)
    }

    async fn signal_stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.server.take() {
            handle.await.expect("server task").expect("server ran");
        }
    }

    pub fn client(&self, token: &str) -> Client {
        self.operator.with_key(token)
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.url))
    }

    pub async fn create_tenant(&self, id: &str) -> Tenant {
        self.operator
            .create_tenant(&CreateTenant::new(
                TenantId::parse(id).expect("valid id"),
                format!("Tenant {id}"),
            ))
            .await
            .expect("tenant created")
    }

    /// Creates a key for `tenant` with `role` and returns it with its token.
    pub async fn tenant_key(&self, tenant: &str, role: Role) -> CreatedKey {
        let id = TenantId::parse(tenant).expect("valid id");
        self.operator
            .create_key(
                KeysOf::Tenant(&id),
                &CreateKey {
                    role,
                    name: format!("{role} of {tenant}"),
                    expires_at: None,
                },
            )
            .await
            .expect("key created")
    }
}

/// Asserts that `result` failed with `status` and `code`.
#[track_caller]
pub fn assert_problem<T: std::fmt::Debug>(
    result: Result<T, tenantd_client::Error>,
    status: u16,
    code: &str,
) {
    match result {
        Err(tenantd_client::Error::Api(problem)) => {
            assert_eq!(
                (problem.status, problem.code.as_str()),
                (status, code),
                "{problem:?}"
            );
        }
        other => panic!("expected {status} {code}, got {other:?}"),
    }
}

/// Polls a job until it ends, and returns it.
pub async fn wait_for_job(app: &TestApp, id: &tenantd_core::JobId) -> tenantd_client::api::JobView {
    for _ in 0..500 {
        let job = app.operator.job(id).await.expect("job");
        if job.state != tenantd_client::api::JobState::Running {
            return job;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("job {} did not end within 10 s", id.as_str());
}

/// The value of the unlabelled series `series` in `/metrics` (0 if absent).
pub async fn metric(app: &TestApp, series: &str) -> f64 {
    metric_over(app, &app.http, &format!("{}/metrics", app.url), series).await
}

/// A series of `/metrics` at `url`, read with `http` (a TLS client, say).
pub async fn metric_over(app: &TestApp, http: &reqwest::Client, url: &str, series: &str) -> f64 {
    let text = http
        .get(url)
        .bearer_auth(&app.operator_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits until `series` is at least `value`.
pub async fn until_metric_at_least(app: &TestApp, series: &str, value: f64) {
    for _ in 0..500 {
        if metric(app, series).await >= value {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{series} did not reach {value}");
}

/// Waits until `series` reads `value`.
pub async fn until_metric(app: &TestApp, series: &str, value: f64) {
    for _ in 0..200 {
        if metric(app, series).await == value {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{series} did not reach {value}");
}

/// Waits until `holds` is true (checked every 10 ms, for at most 5 s).
pub async fn until(what: &str, mut holds: impl FnMut() -> bool) {
    for _ in 0..500 {
        if holds() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{what} did not happen within 5 s");
}
