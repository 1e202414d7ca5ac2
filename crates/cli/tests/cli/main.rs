//! The `tenantd` binary end to end: configuration errors, the first start,
//! signals, and the client commands against a running server.

// Helpers outside #[test] functions fail loudly too: a panic is the report.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

mod cluster;

const BIN: &str = env!("CARGO_BIN_EXE_tenantd");

/// A command with no TENANTD_* variables inherited from the caller's shell.
fn tenantd(dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command.current_dir(dir);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TENANTD_") {
            command.env_remove(name);
        }
    }
    command.env_remove("RUST_LOG");
    command
}

fn serve_output(dir: &Path, configure: impl FnOnce(&mut Command)) -> Output {
    let mut command = tenantd(dir);
    command.args(["serve", "--listen", "127.0.0.1:0"]);
    configure(&mut command);
    command.output().unwrap()
}

#[test]
fn bad_configuration_exits_64_and_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let out = serve_output(dir.path(), |c| {
        c.env("TENANTD_REQUEST_TIMEOUT", "soon");
    });
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(stderr.contains("request_timeout"), "{stderr}");

    std::fs::write(dir.path().join("tenantd.toml"), "lisen = \"127.0.0.1:1\"\n").unwrap();
    let out = serve_output(dir.path(), |_| {});
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lisen"));

    let out = serve_output(dir.path(), |c| {
        c.args(["--config", "missing.toml"]);
    });
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
    assert!(
        !dir.path().join("tenantd-data").exists(),
        "nothing was started"
    );
}

/// A server's process, killed when dropped while it still runs, so that a
/// failing test leaves no server behind.
struct ServerProcess(Child);

impl std::ops::Deref for ServerProcess {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for ServerProcess {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A server started with `tenantd serve` in `dir`.
struct Running {
    child: ServerProcess,
    url: String,
    stdout: String,
    /// Every JSON log event the server wrote so far.
    logs: Arc<Mutex<Vec<Value>>>,
}

fn start(dir: &Path) -> Running {
    start_at(dir, "127.0.0.1:0")
}

/// A server started with `tenantd serve` in `dir`, listening on `listen`.
fn start_at(dir: &Path, listen: &str) -> Running {
    let mut child = tenantd(dir)
        .args(["serve", "--listen", listen, "--log-format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let logs: Arc<Mutex<Vec<Value>>> = Arc::default();
    let collected = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // A line that is not JSON is kept as a string, for the tests to see.
            let event: Value = serde_json::from_str(&line).unwrap_or(Value::String(line));
            if event["message"] == "listening" {
                let _ = tx.send(event["address"].as_str().unwrap_or_default().to_owned());
            }
            collected.lock().unwrap().push(event);
        }
    });
    let address = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|e| {
            // What it wrote says why: all of it when it stopped (the reader
            // hung up after its last line), what came so far when it hangs.
            panic!(
                "the server says where it listens: {e}; it wrote {:?}",
                logs.lock().unwrap()
            )
        });
    // The bootstrap banner is printed before the server starts listening.
    let mut stdout = String::new();
    let mut pipe = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    while let Ok(chunk) = rx.recv_timeout(Duration::from_millis(300)) {
        stdout.push_str(&String::from_utf8_lossy(&chunk));
    }
    Running {
        child: ServerProcess(child),
        url: format!("http://{address}"),
        stdout,
        logs,
    }
}

impl Running {
    /// The operator key the first start printed.
    fn bootstrap_token(&self) -> String {
        self.stdout
            .split_whitespace()
            .find(|w| w.starts_with("tk_"))
            .expect("the bootstrap key is printed")
            .to_owned()
    }

    /// Sends SIGTERM and returns the exit code.
    fn terminate(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        self.child.wait().unwrap().code()
    }
}

fn client(dir: &Path, url: &str, key: &str, args: &[&str]) -> (bool, Value) {
    let out = tenantd(dir)
        .args(args)
        .env("TENANTD_URL", url)
        .env("TENANTD_KEY", key)
        .env("TENANTD_OUTPUT", "json")
        .output()
        .unwrap();
    let text = if out.status.success() {
        out.stdout
    } else {
        out.stderr
    };
    let value = serde_json::from_slice(&text)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&text).into_owned()));
    (out.status.success(), value)
}

/// A client command's exit status and what it printed on stdout and stderr.
fn printed(dir: &Path, url: &str, key: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = tenantd(dir)
        .args(args)
        .env("TENANTD_URL", url)
        .env("TENANTD_KEY", key)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn signing_keys_are_listed_and_rotated_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let token = server.bootstrap_token();
    let (ok, keys) = client(dir.path(), &server.url, &token, &["signing-keys", "list"]);
    assert!(ok, "{keys}");
    let keys = keys.as_array().unwrap().clone();
    assert_eq!(keys.len(), 1, "the first start made one key");
    assert_eq!(keys[0]["signing"], true);
    let (ok, rotated) = client(dir.path(), &server.url, &token, &["signing-keys", "rotate"]);
    assert!(ok, "{rotated}");
    assert_eq!(rotated["signing"], false, "published before it signs");
    let (_, keys) = client(dir.path(), &server.url, &token, &["signing-keys", "list"]);
    let kids: Vec<&Value> = keys.as_array().unwrap().iter().map(|k| &k["kid"]).collect();
    assert_eq!(kids, [&keys[0]["kid"], &rotated["kid"]]);
    assert!(
        keys[0]["retires_at"].is_string(),
        "the old key now retires: {keys}"
    );
    assert_eq!(server.terminate(), Some(0));
}

#[test]
fn first_start_prints_the_operator_key_once_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path());
    let token = first.bootstrap_token();
    let (ok, me) = client(dir.path(), &first.url, &token, &["me"]);
    assert!(ok, "{me}");
    assert_eq!(me["role"], "operator");
    assert_eq!(first.terminate(), Some(0));

    let second = start(dir.path());
    assert!(
        !second.stdout.contains("tk_"),
        "printed again: {}",
        second.stdout
    );
    let (ok, _) = client(dir.path(), &second.url, &token, &["me"]);
    assert!(ok, "the key survives a restart");
    assert_eq!(second.terminate(), Some(0));
}

#[test]
fn the_client_commands_drive_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let token = server.bootstrap_token();
    let url = server.url.clone();
    let run = |key: &str, args: &[&str]| client(dir.path(), &url, key, args);

    let (ok, tenant) = run(
        &token,
        &["tenants", "create", "acme", "--name", "Acme Corp"],
    );
    assert!(ok, "{tenant}");
    assert_eq!(tenant["status"], "active");
    let (ok, key) = run(
        &token,
        &["keys", "create", "--tenant", "acme", "--role", "admin"],
    );
    assert!(ok, "{key}");
    let admin = key["token"].as_str().unwrap().to_owned();

    let (ok, me) = run(&admin, &["me"]);
    assert!(ok);
    assert_eq!(me["tenant"]["id"], "acme");
    let (ok, problem) = run(&admin, &["tenants", "list"]);
    assert!(!ok);
    assert_eq!(problem["code"], "forbidden");

    let (ok, _) = run(&token, &["tenants", "suspend", "acme"]);
    assert!(ok);
    let (ok, problem) = run(&admin, &["me"]);
    assert!(!ok);
    assert_eq!(problem["code"], "tenant_suspended");

    let (ok, message) = client(dir.path(), &url, "", &["me"]);
    assert!(!ok, "{message}");

    // One access-log event per request, in a span that names the request,
    // its tenant and its key (never the secret).
    let logs = server.logs.lock().unwrap().clone();
    let access: Vec<&Value> = logs
        .iter()
        .filter(|e| e["message"] == "finished processing request")
        .collect();
    assert!(!access.is_empty(), "no access log in {logs:?}");
    assert!(
        logs.iter().all(Value::is_object),
        "every log line is a JSON object: {logs:?}"
    );
    let tenant_request = access
        .iter()
        .find(|e| e["span"]["tenant"] == "acme" && e["span"]["path"] == "/v1/me")
        .unwrap_or_else(|| panic!("no access log for acme's /v1/me in {access:?}"));
    assert!(tenant_request["span"]["request_id"]
        .as_str()
        .is_some_and(|id| id.len() == 32));
    assert!(tenant_request["span"]["key"]
        .as_str()
        .is_some_and(|k| k.len() == 16));
    let secret = admin.rsplit('_').next().unwrap();
    assert!(
        !logs.iter().any(|e| e.to_string().contains(secret)),
        "a key secret reached the logs"
    );
    assert_eq!(server.terminate(), Some(0));
}

#[test]
fn a_tenant_moves_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let token = server.bootstrap_token();
    let url = server.url.clone();
    let run = |args: &[&str]| client(dir.path(), &url, &token, args);
    assert!(run(&["tenants", "create", "acme", "--name", "Acme"]).0);
    let (ok, job) = run(&["tenants", "move", "acme", "--isolation", "dedicated"]);
    assert!(ok, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    let mut state = String::new();
    for _ in 0..200 {
        let (ok, job) = run(&["job", &id]);
        assert!(ok, "{job}");
        state = job["state"].as_str().unwrap().to_owned();
        if state != "running" {
            break;
        }
        #[allow(clippy::disallowed_methods)] // A plain test thread, not a Tokio worker.
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(state, "succeeded");
    let (_, tenant) = run(&["tenants", "get", "acme"]);
    assert_eq!(tenant["isolation"], "dedicated");

    // Back again, followed to its end with `job --wait`.
    let (ok, back) = run(&["tenants", "move", "acme", "--isolation", "pooled"]);
    assert!(ok, "{back}");
    let back_id = back["id"].as_str().unwrap().to_owned();
    let followed = tenantd(dir.path())
        .args(["job", &back_id, "--wait"])
        .env("TENANTD_URL", &url)
        .env("TENANTD_KEY", &token)
        .output()
        .unwrap();
    assert!(followed.status.success());
    let printed = String::from_utf8_lossy(&followed.stdout);
    assert!(printed.contains("succeeded: done"), "{printed}");
    // Both jobs, newest first; none failed.
    let (ok, jobs) = run(&["jobs", "--tenant", "acme"]);
    assert!(ok, "{jobs}");
    let ids: Vec<&str> = jobs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [back_id.as_str(), id.as_str()]);
    let (ok, failed) = run(&["jobs", "--state", "failed"]);
    assert!(ok, "{failed}");
    assert_eq!(failed["items"].as_array().unwrap().len(), 0);
    let (ok, page) = run(&["jobs", "--limit", "1"]);
    assert!(ok);
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let (_, rest) = run(&["jobs", "--limit", "1", "--cursor", &cursor]);
    assert_eq!(rest["items"][0]["id"], id.as_str());
    assert_eq!(server.terminate(), Some(0));
}

/// Creates tenant `id` with `isolation` and a key of it with `role`;
/// returns the key's token.
async fn tenant_with_key(
    operator: &tenantd_client::Client,
    id: &str,
    isolation: Option<tenantd_core::Isolation>,
    role: tenantd_core::Role,
) -> String {
    use tenantd_client::api::{CreateKey, CreateTenant};
    use tenantd_client::KeysOf;

    let tenant: tenantd_core::TenantId = id.parse().unwrap();
    operator
        .create_tenant(&CreateTenant {
            isolation,
            ..CreateTenant::new(tenant.clone(), id)
        })
        .await
        .unwrap();
    operator
        .create_key(
            KeysOf::Tenant(&tenant),
            &CreateKey {
                role,
                name: String::new(),
                expires_at: None,
            },
        )
        .await
        .unwrap()
        .token
}

/// Kills the server with SIGKILL while clients write, restarts it, and
/// checks that every write it acknowledged is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_write_is_lost_to_kill_9() {
    use tenantd_client::api::CreateCollection;
    use tenantd_client::Client;
    use tenantd_core::Role;

    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let token = server.bootstrap_token();
    let operator = Client::new(&server.url, &token).unwrap();
    let mut writers = Vec::new();
    for (tenant, isolation) in [
        ("acme", None),
        ("globex", Some(tenantd_core::Isolation::Dedicated)),
    ] {
        let key = tenant_with_key(&operator, tenant, isolation, Role::Developer).await;
        let client = operator.with_key(&key);
        client
            .create_collection(&CreateCollection {
                name: "events".parse().unwrap(),
                indexes: vec![],
            })
            .await
            .unwrap();
        for writer in 0..2 {
            let client = client.clone();
            let token = key.clone();
            writers.push(tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                // Bounded: the server is killed long before this ends.
                for n in 0..100_000 {
                    let id = format!("w{writer}-{n}").parse().unwrap();
                    let body = json!({ "n": n });
                    match client
                        .put_record(&"events".parse().unwrap(), &id, &body, None)
                        .await
                    {
                        Ok(_) => acknowledged.push(id),
                        Err(_) => break,
                    }
                }
                (token, acknowledged)
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap()
        .success());
    let mut results = Vec::new();
    for writer in writers {
        results.push(writer.await.unwrap());
    }
    let mut child = server.child;
    let _ = child.wait();

    let restarted = start(dir.path());
    let mut checked = 0;
    for (token, acknowledged) in results {
        assert!(!acknowledged.is_empty(), "the writers got some writes in");
        let client = Client::new(&restarted.url, &token).unwrap();
        for id in &acknowledged {
            let record = client.record(&"events".parse().unwrap(), id).await;
            assert!(
                record.is_ok(),
                "acknowledged write {id} was lost: {record:?}"
            );
            checked += 1;
        }
    }
    assert!(checked > 0);
    eprintln!("all {checked} acknowledged writes survived kill -9");
    assert_eq!(restarted.terminate(), Some(0));
}

/// Kills the server with SIGKILL while a client sends requests; after a
/// restart, the tenant's usage holds every request acknowledged more than
/// the write-behind interval (1 s) before the kill, and no more than were sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_at_most_about_a_second_of_metering() {
    use tenantd_client::Client;
    use tenantd_core::plan::{Metric, Period};
    use tenantd_core::Role;
    use tenantd_core::{Clock, SystemClock};

    let dir = tempfile::tempdir().unwrap();
    // A plan from the config file, generous enough that the client is never
    // rate limited.
    std::fs::write(
        dir.path().join("tenantd.toml"),
        "[[plans]]\nid = \"default\"\nrate = { requests = 1000000, per = \"1s\", burst = 1000000 }\n",
    )
    .unwrap();
    let server = start(dir.path());
    let operator_token = server.bootstrap_token();
    let operator = Client::new(&server.url, &operator_token).unwrap();
    let acme: tenantd_core::TenantId = "acme".parse().unwrap();
    let key = tenant_with_key(&operator, "acme", None, Role::Reader).await;
    let client = operator.with_key(&key);
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = answered.clone();
    let sender = tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        let mut sent = 0u64;
        // Bounded: the server is killed long before this ends.
        for _ in 0..1_000_000 {
            sent += 1;
            match client.collections(&Default::default()).await {
                Ok(_) => {
                    acknowledged.push(SystemClock.instant());
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(_) => break,
            }
        }
        (sent, acknowledged)
    });
    // The client gets going (slowly on a loaded machine: the other tests
    // run meanwhile), then goes on past the write-behind interval.
    for _ in 0..600 {
        if answered.load(std::sync::atomic::Ordering::Relaxed) >= 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let killed_at = SystemClock.instant();
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap()
        .success());
    let (sent, acknowledged) = sender.await.unwrap();
    let mut child = server.child;
    let _ = child.wait();

    let restarted = start(dir.path());
    let operator = Client::new(&restarted.url, &operator_token).unwrap();
    let usage = operator.usage(&acme).await.unwrap();
    let recorded = usage
        .counters
        .iter()
        .find(|c| c.metric == Metric::Requests && c.period == Some(Period::Day))
        .unwrap()
        .value;
    let old_enough = acknowledged
        .iter()
        .filter(|&&at| killed_at.duration_since(at) > Duration::from_millis(1500))
        .count() as u64;
    assert!(old_enough > 100, "the client got going: {old_enough}");
    assert!(
        recorded >= old_enough,
        "recorded {recorded}, but {old_enough} requests were acknowledged over 1.5 s before the kill"
    );
    assert!(recorded <= sent, "recorded {recorded} of {sent} sent");
    eprintln!(
        "kill -9: {recorded} of {} acknowledged requests were metered ({old_enough} older than 1.5 s)",
        acknowledged.len()
    );
    assert_eq!(restarted.terminate(), Some(0));
}

/// `tenantd audit verify` passes on an untouched log and exits 1, naming the
/// entry, once someone with the database file edits it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_finds_an_entry_edited_in_the_database() {
    use sqlx::{Connection, Executor, SqliteConnection};

    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let token = server.bootstrap_token();
    let (ok, _) = client(
        dir.path(),
        &server.url,
        &token,
        &["tenants", "create", "acme", "--name", "Acme"],
    );
    assert!(ok);
    let verify = |args: &[&str]| {
        let out = tenantd(dir.path())
            .args(args)
            .args(["--output", "json"])
            .env("TENANTD_URL", &server.url)
            .env("TENANTD_KEY", &token)
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        (out.status.code(), report)
    };
    let (status, report) = verify(&["audit", "verify"]);
    assert_eq!(status, Some(0), "{report}");
    assert_eq!(report["intact"], true);
    assert_eq!(
        report["entries"], 4,
        "the bootstrap key, the configured plan, the first signing key and the tenant"
    );
    let (status, report) = verify(&["audit", "verify", "--tenant", "acme"]);
    assert_eq!((status, report["entries"].as_u64()), (Some(0), Some(1)));

    let db = dir.path().join("tenantd-data").join("catalog.db");
    let mut sql = SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sql.execute("DROP TRIGGER audit_log_no_update")
        .await
        .unwrap();
    sql.execute("UPDATE audit_log SET target = 'globex' WHERE tenant_id = 'acme'")
        .await
        .unwrap();
    let (status, report) = verify(&["audit", "verify", "--tenant", "acme"]);
    assert_eq!(status, Some(1), "{report}");
    assert_eq!(
        report["problems"],
        json!(["entry 4: its content was changed"])
    );
    assert_eq!(server.terminate(), Some(0));
}

#[test]
fn policies_plans_and_usage_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let operator = server.bootstrap_token();
    let run = |key: &str, args: &[&str]| client(dir.path(), &server.url, key, args);
    assert!(run(&operator, &["tenants", "create", "acme", "--name", "Acme"]).0);
    let (_, key) = run(
        &operator,
        &["keys", "create", "--tenant", "acme", "--role", "admin"],
    );
    let admin = key["token"].as_str().unwrap().to_owned();

    // The default plan has no self-service range: the admin's change waits.
    let (ok, proposed) = run(
        &admin,
        &[
            "policy",
            "propose",
            "--tenant",
            "acme",
            "--overrides",
            r#"{"rate_burst": 50}"#,
            "--reason",
            "a busy week",
        ],
    );
    assert!(ok, "{proposed}");
    assert_eq!(proposed["status"], "proposed");
    let (ok, waiting) = run(&operator, &["policy", "waiting"]);
    assert!(ok, "{waiting}");
    assert_eq!(
        (
            &waiting["items"][0]["tenant"],
            &waiting["items"][0]["version"]
        ),
        (&json!("acme"), &json!(1))
    );
    let (ok, approved) = run(
        &operator,
        &[
            "policy",
            "approve",
            "--tenant",
            "acme",
            "--version",
            "1",
            "--reason",
            "fine",
        ],
    );
    assert!(ok, "{approved}");
    assert_eq!(approved["status"], "approved");
    let (_, waiting) = run(&operator, &["policy", "waiting"]);
    assert_eq!(waiting["items"], json!([]));
    let (_, policy) = run(&admin, &["policy", "show", "--tenant", "acme"]);
    assert_eq!(policy["effective"]["rate"]["burst"], 50);
    let (_, history) = run(&admin, &["policy", "history", "--tenant", "acme"]);
    assert_eq!(history["items"][0]["decision_reason"], "fine");

    let (ok, usage) = run(&admin, &["usage", "--tenant", "acme"]);
    assert!(ok, "{usage}");
    assert_eq!(usage["plan"], "default");
    let (_, plans) = run(&operator, &["plans", "list"]);
    assert_eq!(plans["items"][0]["id"], "default");

    // Malformed overrides are refused before anything is sent.
    let out = tenantd(dir.path())
        .args([
            "policy",
            "propose",
            "--tenant",
            "acme",
            "--overrides",
            "{",
            "--reason",
            "x",
        ])
        .env("TENANTD_URL", &server.url)
        .env("TENANTD_KEY", &admin)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--overrides"));
    assert_eq!(server.terminate(), Some(0));
}

#[test]
fn a_tenancy_file_applies_what_its_dry_run_printed_and_an_export_applies_as_no_change() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let operator = server.bootstrap_token();
    let raw = |args: &[&str]| printed(dir.path(), &server.url, &operator, args);
    std::fs::write(
        dir.path().join("tenancy.yaml"),
        "\
plans:
  - id: pro
    rate: { requests: 100, per: 1s, burst: 200 }
    quotas:
      - { metric: requests, period: day, hard: 100000 }
tenants:
  - id: acme
    name: Acme
    plan: pro
    overrides:
      rate_requests: 50
  - id: globex
    name: Globex
    plan: default
    billing_day: 15
",
    )
    .unwrap();
    let expected = [
        "+ plan pro",
        "+ tenant acme on plan pro",
        "~ tenant acme policy: rate.requests 100 → 50",
        "+ tenant globex on plan default",
    ];
    let (status, dry, _) = raw(&["apply", "-f", "tenancy.yaml", "--dry-run"]);
    assert_eq!(status, Some(0));
    let lines: Vec<&str> = dry.lines().collect();
    assert_eq!(lines[..4], expected);
    assert_eq!(lines[4], "(dry run: nothing was changed)");
    let (_, tenants, _) = raw(&["--output", "json", "tenants", "list"]);
    assert!(
        tenants.contains("\"items\": []"),
        "a dry run changes nothing: {tenants}"
    );

    let (status, applied, stderr) = raw(&["apply", "-f", "tenancy.yaml"]);
    assert_eq!(status, Some(0), "{stderr}");
    assert_eq!(applied.lines().collect::<Vec<_>>(), expected);
    let (_, again, _) = raw(&["apply", "-f", "tenancy.yaml"]);
    assert_eq!(again.trim(), "no changes");

    // What the server holds, exported and applied back, is no change.
    let (status, exported, _) = raw(&["export"]);
    assert_eq!(status, Some(0));
    assert!(exported.contains("billing_day: 15"), "{exported}");
    std::fs::write(dir.path().join("export.yaml"), &exported).unwrap();
    let (_, round_trip, stderr) = raw(&["apply", "-f", "export.yaml"]);
    assert_eq!(round_trip.trim(), "no changes", "{stderr}");

    // The changes went through the API: versioned and audited.
    let (_, history, _) = raw(&["--output", "json", "policy", "history", "--tenant", "acme"]);
    assert!(
        history.contains("\"reason\": \"tenantd apply\""),
        "{history}"
    );

    // Another isolation model for an existing tenant is a move.
    std::fs::write(
        dir.path().join("moved.yaml"),
        "tenants:\n  - id: acme\n    name: Acme\n    plan: pro\n    isolation: dedicated\n    overrides:\n      rate_requests: 50\n",
    )
    .unwrap();
    let (status, moved, stderr) = raw(&["apply", "-f", "moved.yaml"]);
    assert_eq!(status, Some(0), "{stderr}");
    assert!(
        moved.starts_with(
            "~ tenant acme placement: default/pooled → default/dedicated (a move job)\n  move job "
        ),
        "{moved}"
    );
    let mut placed = String::new();
    for _ in 0..200 {
        placed = raw(&["--output", "json", "tenants", "get", "acme"]).1;
        if placed.contains("\"isolation\": \"dedicated\"") {
            break;
        }
        // A plain test thread, not a Tokio worker: sleeping blocks nothing.
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(placed.contains("\"isolation\": \"dedicated\""), "{placed}");

    std::fs::write(
        dir.path().join("bad.yaml"),
        "tenants:\n  - id: acme\n    name: Acme\n    plann: pro\n",
    )
    .unwrap();
    let (status, _, stderr) = raw(&["apply", "-f", "bad.yaml"]);
    assert_eq!(status, Some(1));
    assert!(
        stderr.contains("bad.yaml: tenants[0]: unknown field `plann`") && stderr.contains("line 4"),
        "{stderr}"
    );
    assert_eq!(server.terminate(), Some(0));
}

/// The resident set's high-water mark of process `pid`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kib * 1024
}

/// A minimal HTTP/1.1 upstream on loopback, one request per connection:
/// `POST /base/upload` reads and counts its body, answering the count;
/// `GET /base/download?bytes=N` answers N bytes. Neither holds a body.
async fn streaming_upstream() -> String {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut reader = BufReader::new(socket);
                let mut request_line = String::new();
                reader.read_line(&mut request_line).await.unwrap();
                let mut length = 0u64;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).await.unwrap();
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':') {
                        if name.eq_ignore_ascii_case("content-length") {
                            length = value.trim().parse().unwrap();
                        }
                    }
                }
                let target = request_line.split(' ').nth(1).unwrap_or("").to_owned();
                let mut buf = vec![0u8; 64 * 1024];
                let mut received = 0u64;
                while received < length {
                    let n = reader.read(&mut buf).await.unwrap();
                    assert!(n > 0, "the body ended early");
                    received += n as u64;
                }
                let mut socket = reader.into_inner();
                if let Some(bytes) = target.strip_prefix("/base/download?bytes=") {
                    let total: u64 = bytes.parse().unwrap();
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n"
                    );
                    socket.write_all(head.as_bytes()).await.unwrap();
                    let chunk = vec![b'x'; 64 * 1024];
                    let mut sent = 0u64;
                    while sent < total {
                        let n = (total - sent).min(chunk.len() as u64) as usize;
                        if socket.write_all(&chunk[..n]).await.is_err() {
                            return;
                        }
                        sent += n as u64;
                    }
                } else {
                    let body = received.to_string();
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    socket.write_all(head.as_bytes()).await.unwrap();
                }
            });
        }
    });
    url
}

/// Sends one request over a raw connection, streaming `upload` bytes of
/// body, and reads the answer, counting its body without keeping it.
/// Returns the status line, the body's length and its first bytes.
async fn raw_exchange(url: &str, head: &str, upload: u64) -> (String, u64, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = url.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'u'; 64 * 1024];
    let mut sent = 0u64;
    while sent < upload {
        let n = (upload - sent).min(chunk.len() as u64) as usize;
        socket.write_all(&chunk[..n]).await.unwrap();
        sent += n as u64;
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut head_text = Vec::new();
    let mut body_len = 0u64;
    let mut first = Vec::new();
    let mut in_body = false;
    loop {
        let n = socket.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        let data = &buf[..n];
        if !in_body {
            head_text.extend_from_slice(data);
            let Some(end) = head_text.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let rest = head_text.split_off(end + 4);
            in_body = true;
            body_len += rest.len() as u64;
            first.extend_from_slice(&rest[..rest.len().min(64)]);
            continue;
        }
        if first.len() < 64 {
            let take = data.len().min(64 - first.len());
            first.extend_from_slice(&data[..take]);
        }
        body_len += data.len() as u64;
    }
    let text = String::from_utf8_lossy(&head_text);
    let status = text.lines().next().unwrap_or("").to_owned();
    (
        status,
        body_len,
        String::from_utf8_lossy(&first).into_owned(),
    )
}

/// A 256 MiB upload and a 256 MiB download through the gateway stream: the
/// server's peak memory grows by far less than either body, and the bytes
/// are metered as the tenant's ingress and egress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_through_the_gateway_in_bounded_memory() {
    use tenantd_client::Client;
    use tenantd_core::plan::{Metric, Period};
    use tenantd_core::Role;

    const SIZE: u64 = 256 * 1024 * 1024;
    let upstream = streaming_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tenantd.toml"),
        // Bodies may be as large as the server allows at most (1 GiB);
        // the default limit (1 MiB) would refuse this upload with 413.
        format!(
            "max_body_bytes = 1073741824\n[[gateway.services]]\nname = \"files\"\nupstreams = [\"{upstream}\"]\npath_prefix = \"/base\"\n"
        ),
    )
    .unwrap();
    let server = start(dir.path());
    let operator = Client::new(&server.url, &server.bootstrap_token()).unwrap();
    let key = tenant_with_key(&operator, "acme", None, Role::Developer).await;
    let pid = server.child.id();
    // A small exchange first, so the baseline includes what any request allocates.
    let auth = format!("Authorization: Bearer {key}\r\nHost: tenantd\r\nConnection: close\r\n");
    let small = format!("POST /v1/proxy/files/upload HTTP/1.1\r\n{auth}Content-Length: 10\r\n\r\n");
    let (status, _, body) = raw_exchange(&server.url, &small, 10).await;
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(body, "10");
    let baseline = peak_rss(pid);

    let upload =
        format!("POST /v1/proxy/files/upload HTTP/1.1\r\n{auth}Content-Length: {SIZE}\r\n\r\n");
    let (status, _, body) = raw_exchange(&server.url, &upload, SIZE).await;
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(body, SIZE.to_string(), "the upstream got every byte");
    let download = format!("GET /v1/proxy/files/download?bytes={SIZE} HTTP/1.1\r\n{auth}\r\n");
    let (status, received, _) = raw_exchange(&server.url, &download, 0).await;
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(received, SIZE);
    let grown = peak_rss(pid).saturating_sub(baseline);
    eprintln!(
        "peak RSS grew by {} KiB over a {} MiB upload and download (baseline {} KiB)",
        grown / 1024,
        SIZE >> 20,
        baseline / 1024
    );
    assert!(
        grown < 32 * 1024 * 1024,
        "peak RSS grew by {grown} bytes streaming {SIZE} bytes each way"
    );

    // Metered as they streamed (the usage is read from memory, not the flush).
    let usage = operator.usage(&"acme".parse().unwrap()).await.unwrap();
    let day = |metric| {
        usage
            .counters
            .iter()
            .find(|c| c.metric == metric && c.period == Some(Period::Day))
            .unwrap()
            .value
    };
    assert!(
        day(Metric::IngressBytes) >= SIZE + 10,
        "{}",
        day(Metric::IngressBytes)
    );
    assert!(
        day(Metric::EgressBytes) >= SIZE,
        "{}",
        day(Metric::EgressBytes)
    );
    assert_eq!(server.terminate(), Some(0));
}

#[test]
fn a_first_start_that_cannot_listen_creates_no_key_and_the_next_start_prints_one() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let failed = tenantd(dir.path())
        .args(["serve", "--listen", &address])
        .output()
        .unwrap();
    assert!(!failed.status.success());
    let printed = String::from_utf8_lossy(&failed.stdout);
    assert!(!printed.contains("tk_"), "{printed}");
    drop(taken);
    // The key was not made (and lost) then: this start makes and prints it.
    let server = start(dir.path());
    assert!(server.bootstrap_token().starts_with("tk_"));
}

#[test]
fn one_process_holds_a_data_directory_and_a_lost_operator_key_is_recovered_offline() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    // A second server, and the recovery, are refused while it runs.
    let second = serve_output(dir.path(), |_| {});
    assert!(!second.status.success());
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(said.contains("in use by another tenantd process"), "{said}");
    let refused = tenantd(dir.path())
        .arg("recover-operator-key")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(!String::from_utf8_lossy(&refused.stdout).contains("tk_"));
    assert_eq!(server.terminate(), Some(0));

    // The bootstrap key is forgotten; the data directory's holder makes another.
    let recovered = tenantd(dir.path())
        .arg("recover-operator-key")
        .output()
        .unwrap();
    assert!(
        recovered.status.success(),
        "{}",
        String::from_utf8_lossy(&recovered.stderr)
    );
    let printed = String::from_utf8_lossy(&recovered.stdout);
    let token = printed
        .split_whitespace()
        .find(|w| w.starts_with("tk_"))
        .expect("the new key is printed")
        .to_owned();
    let server = start(dir.path());
    let (ok, me) = client(dir.path(), &server.url, &token, &["me"]);
    assert!(ok, "{me}");
    assert_eq!(me["role"], "operator");
    let (ok, trail) = client(dir.path(), &server.url, &token, &["audit"]);
    assert!(ok, "{trail}");
    assert!(
        trail["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "key.recover"),
        "{trail}"
    );
    assert_eq!(server.terminate(), Some(0));

    // Where no server ever started there is nothing to recover.
    let empty = tempfile::tempdir().unwrap();
    let nothing = tenantd(empty.path())
        .arg("recover-operator-key")
        .output()
        .unwrap();
    assert!(!nothing.status.success());
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let token = server.bootstrap_token();
    let mut child = tenantd(dir.path())
        .args(["plans", "list"])
        .env("TENANTD_URL", &server.url)
        .env("TENANTD_KEY", &token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before anything is written, as `| head -0` does.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{stderr}");
    assert_eq!(server.terminate(), Some(0));
}

#[test]
fn a_tenant_is_created_on_a_plan_and_moved_to_another_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tenantd.toml"),
        "[[plans]]\nid = \"pro\"\nrate = { requests = 100, per = \"1s\", burst = 200 }\n",
    )
    .unwrap();
    let server = start(dir.path());
    let token = server.bootstrap_token();
    let run = |args: &[&str]| client(dir.path(), &server.url, &token, args);
    let (ok, created) = run(&[
        "tenants",
        "create",
        "acme",
        "--name",
        "Acme",
        "--plan",
        "pro",
        "--billing-day",
        "15",
    ]);
    assert!(ok, "{created}");
    assert_eq!(
        (created["plan"].as_str(), created["billing_day"].as_u64()),
        (Some("pro"), Some(15))
    );
    let (ok, moved) = run(&["tenants", "set-plan", "acme", "--plan", "default"]);
    assert!(ok, "{moved}");
    assert_eq!(moved["plan"], "default");
    let (ok, pinned) = run(&[
        "tenants",
        "set-plan",
        "acme",
        "--plan",
        "pro",
        "--version",
        "1",
    ]);
    assert!(ok, "{pinned}");
    assert_eq!(
        (pinned["plan"].as_str(), pinned["plan_version"].as_i64()),
        (Some("pro"), Some(1))
    );
    let (ok, refused) = run(&[
        "tenants",
        "create",
        "globex",
        "--name",
        "G",
        "--billing-day",
        "31",
    ]);
    assert!(!ok, "{refused}");
    assert_eq!(server.terminate(), Some(0));
}

#[test]
fn a_server_that_is_not_there_is_named_with_how_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: taken, then given back.
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{address}");
    let key = "tk_0123456789abcdef_000000000000000000000000000000000000000000000000";
    let (ok, message) = client(dir.path(), &url, key, &["me"]);
    assert!(!ok);
    let message = message.as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("nothing answers at {url}")),
        "{message}"
    );
    assert!(message.contains("tenantd serve"), "{message}");
}

/// People read tables by default (the JSON is one flag away), and the
/// commands that run on a data directory neither list nor take the client
/// commands' flags.
#[test]
fn answers_print_as_tables_for_people_and_json_for_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let token = server.bootstrap_token();
    let run = |args: &[&str]| printed(dir.path(), &server.url, &token, args);
    assert_eq!(
        run(&["tenants", "create", "acme", "--name", "Acme"]).0,
        Some(0)
    );
    let (_, listed, _) = run(&["tenants", "list"]);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "{listed}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID",
            "NAME",
            "STATUS",
            "PLAN",
            "REGION",
            "ISOLATION",
            "POOL"
        ]
    );
    assert!(lines[1].starts_with("acme  "), "{listed}");
    assert!(lines[1].contains(" active "), "{listed}");

    let (_, usage, _) = run(&["usage", "--tenant", "acme"]);
    assert!(
        usage.lines().next().unwrap().starts_with("tenant "),
        "{usage}"
    );
    assert!(usage.contains("\ncounters:\nMETRIC "), "{usage}");

    let (_, json, _) = run(&["--output", "json", "tenants", "list"]);
    let page: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(page["items"][0]["id"], "acme");

    let (code, _, problem) = run(&["tenants", "get", "nobody"]);
    assert_eq!(code, Some(1));
    assert!(
        problem.starts_with("tenantd: No such resource (not_found, HTTP 404)"),
        "{problem}"
    );

    let (_, help, _) = run(&["serve", "--help"]);
    assert!(
        !help.contains("--url") && !help.contains("--key") && !help.contains("--output"),
        "{help}"
    );
    let (code, _, refused) = run(&["serve", "--url", "http://elsewhere"]);
    assert_eq!(code, Some(2));
    assert!(
        refused.contains("for the commands that talk to a running server"),
        "{refused}"
    );
    assert_eq!(server.terminate(), Some(0));
}

/// A tenant's data, usage history, quota events and add-ons from the
/// command line.
#[test]
fn data_usage_history_and_add_ons_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let operator = server.bootstrap_token();
    let url = server.url.clone();
    let as_operator = |args: &[&str]| client(dir.path(), &url, &operator, args);
    assert!(as_operator(&["tenants", "create", "acme", "--name", "Acme"]).0);
    let (ok, key) = as_operator(&["keys", "create", "--tenant", "acme", "--role", "developer"]);
    assert!(ok, "{key}");
    let token = key["token"].as_str().unwrap().to_owned();
    let as_tenant = |args: &[&str]| client(dir.path(), &url, &token, args);

    let (ok, created) = as_tenant(&["collections", "create", "orders", "--index", "total"]);
    assert!(ok, "{created}");
    assert_eq!(created["indexes"], json!(["total"]));
    let (ok, put) = as_tenant(&[
        "records",
        "put",
        "orders",
        "r1",
        "--data",
        r#"{"total": 12}"#,
    ]);
    assert!(ok, "{put}");
    assert_eq!(put["version"], 1);
    let (ok, made) = as_tenant(&["records", "create", "orders", "--data", r#"{"total": 3}"#]);
    assert!(ok, "{made}");
    let (ok, patched) = as_tenant(&[
        "records",
        "patch",
        "orders",
        "r1",
        "--data",
        r#"{"paid": true}"#,
        "--if-match",
        "1",
    ]);
    assert!(ok, "{patched}");
    assert_eq!(patched["data"], json!({"total": 12, "paid": true}));
    let (ok, stale) = as_tenant(&["records", "delete", "orders", "r1", "--if-match", "1"]);
    assert!(!ok);
    assert_eq!(stale["code"], "precondition_failed");
    let (ok, page) = as_tenant(&["records", "list", "orders", "--filter", "total >= 10"]);
    assert!(ok, "{page}");
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["r1"]);
    assert!(as_tenant(&["records", "delete", "orders", "r1"]).0);
    let (ok, gone) = as_tenant(&["records", "get", "orders", "r1"]);
    assert!(!ok);
    assert_eq!(gone["code"], "not_found");
    let (ok, refused) = as_tenant(&["records", "create", "orders", "--data", "[1]"]);
    assert!(!ok, "a record must be an object: {refused}");
    let (_, listed) = as_tenant(&["collections", "list"]);
    assert_eq!(listed["items"][0]["name"], "orders");

    // The requests above reach the tenant's hourly usage with the next
    // write-behind pass (every second).
    let mut hours = Vec::new();
    for _ in 0..200 {
        let (ok, history) = as_tenant(&["usage", "history", "--tenant", "acme", "--hours", "2"]);
        assert!(ok, "{history}");
        hours = history.as_array().unwrap().clone();
        if !hours.is_empty() {
            break;
        }
        #[allow(clippy::disallowed_methods)] // A plain test thread, not a Tokio worker.
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(hours.len() == 1 || hours.len() == 2, "{hours:?}");
    let requests: u64 = hours.iter().filter_map(|h| h["requests"].as_u64()).sum();
    assert!(requests >= 10, "{hours:?}");
    let (ok, events) = as_tenant(&["usage", "events", "--tenant", "acme"]);
    assert!(ok, "{events}");
    assert_eq!(events["items"], json!([]));
    let (ok, missing) = as_tenant(&["usage"]);
    assert!(!ok, "{missing}");

    let (ok, add_on) = as_operator(&[
        "addons",
        "add",
        "--tenant",
        "acme",
        "--metric",
        "requests",
        "--period",
        "day",
        "--amount",
        "500",
        "--expires-at",
        "2099-01-01T00:00:00Z",
    ]);
    assert!(ok, "{add_on}");
    assert_eq!(add_on["amount"], 500);
    let (_, add_ons) = as_tenant(&["addons", "list", "--tenant", "acme"]);
    assert_eq!(add_ons["items"][0]["metric"], "requests");
    let (ok, not_yours) = as_tenant(&[
        "addons",
        "add",
        "--tenant",
        "acme",
        "--metric",
        "requests",
        "--period",
        "day",
        "--amount",
        "1",
        "--expires-at",
        "2099-01-01T00:00:00Z",
    ]);
    assert!(!ok);
    assert_eq!(not_yours["code"], "forbidden");
    assert_eq!(server.terminate(), Some(0));
}
