//! Ephemeral servers for tests: each `Postgres::start()` initializes a fresh
//! PostgreSQL cluster in a temporary directory, serves it on a free port of
//! 127.0.0.1 with trust authentication, and removes it when dropped.
//! `Redis::start()` runs a throwaway redis-server the same way. Either can
//! serve TLS with a certificate from `certs` (`start_tls`). `browser` drives
//! a headless Chromium through chromedriver.
//!
//! PostgreSQL refuses to run as root, so as root the cluster belongs to the
//! `postgres` user and every command runs through `runuser`.
#![forbid(unsafe_code)]

pub mod browser;
pub mod certs;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use sqlx::{Connection, PgConnection};

/// The role that owns tenantd's schemas and may create databases.
pub const OWNER_ROLE: &str = "tenantd_owner";
/// The role tenantd serves requests as: not owner, superuser nor BYPASSRLS.
pub const APP_ROLE: &str = "tenantd_app";

/// A running throwaway PostgreSQL cluster.
#[derive(Debug)]
pub struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
    /// The server's options (`pg_ctl -o`), to start it again the same way.
    options: String,
    /// Set once the tenantd roles exist.
    roles: tokio::sync::OnceCell<()>,
    /// Numbers the databases made by `tenantd_database`.
    databases: AtomicUsize,
    /// Whether the cluster serves TLS only.
    tls: bool,
}

/// Options for clusters whose data need not survive a crash of the machine.
const FAST: &str = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off";

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `program args…`, as the `postgres` user when we are root.
fn as_postgres(program: &str, args: &[&str]) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", program]).args(args);
        command
    } else {
        let mut command = Command::new(program);
        command.args(args);
        command
    }
}

fn run(mut command: Command, what: &str) -> Output {
    let output = command.output().unwrap_or_else(|e| {
        panic!("{what}: cannot run {command:?}: {e} (are PostgreSQL's binaries on PATH?)")
    });
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

impl Postgres {
    /// One cluster shared by every test of this test binary, started on
    /// first use. A watcher process stops it and removes its directory once
    /// the test process has exited, however it exits, since statics are
    /// never dropped.
    pub fn shared() -> &'static Postgres {
        static SHARED: OnceLock<Postgres> = OnceLock::new();
        SHARED.get_or_init(|| {
            let server = Postgres::start();
            server.stop_after_exit_of(std::process::id());
            server
        })
    }

    // The watcher is meant to outlive this process, which therefore never
    // waits for it; init reaps it.
    #[allow(clippy::zombie_processes)]
    fn stop_after_exit_of(&self, pid: u32) {
        let data = self.data_dir();
        let stop = if is_root() {
            "runuser -u postgres -- pg_ctl stop -m immediate -D \"$2\""
        } else {
            "pg_ctl stop -m immediate -D \"$2\""
        };
        let script =
            format!("while kill -0 \"$1\" 2>/dev/null; do sleep 1; done; {stop}; rm -rf \"$3\"");
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("watcher")
            .arg(pid.to_string())
            .arg(&data)
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the cluster's watcher");
    }

    /// Starts a new cluster tuned for tests: no fsync, since nothing in it
    /// needs to survive a crash of the machine. Panics saying what failed.
    pub fn start() -> Self {
        Self::start_with(FAST, None)
    }

    /// Starts a new cluster, tuned as `start` does, that takes connections
    /// over TLS only (its `pg_hba.conf` has `hostssl` lines and no `host`
    /// ones), presenting `leaf`.
    pub fn start_tls(leaf: &certs::Leaf) -> Self {
        Self::start_with(FAST, Some(leaf))
    }

    /// Starts a new cluster that makes every commit durable, as production
    /// does, for benchmarks that compare engines fairly.
    pub fn start_durable() -> Self {
        Self::start_with(
            "-c fsync=on -c synchronous_commit=on -c full_page_writes=on",
            None,
        )
    }

    fn start_with(durability: &str, tls: Option<&certs::Leaf>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tenantd-pg-")
            .tempdir()
            .expect("temp dir");
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["-R", "postgres:postgres"]).arg(dir.path());
                    c
                },
                "chown",
            );
        }
        let data = dir.path().join("data");
        let data_arg = data.to_string_lossy().into_owned();
        run(
            as_postgres(
                "initdb",
                &[
                    "-D",
                    &data_arg,
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
            ),
            "initdb",
        );
        let port = free_port();
        let socket_dir = dir.path().to_string_lossy().into_owned();
        let mut options = format!(
            "-p {port} -k {socket_dir} -c listen_addresses=127.0.0.1 {durability} \
             -c max_connections=300"
        );
        if let Some(leaf) = tls {
            let cert = dir.path().join("server.crt");
            let key = dir.path().join("server.key");
            std::fs::write(&cert, &leaf.cert).expect("write the server certificate");
            std::fs::write(&key, &leaf.key).expect("write the server key");
            // PostgreSQL refuses a key others may read.
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
                .expect("make the key private");
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\n\
                 hostssl all all 127.0.0.1/32 trust\n\
                 hostssl all all ::1/128 trust\n",
            )
            .expect("write pg_hba.conf");
            if is_root() {
                let mut chown = Command::new("chown");
                chown.arg("postgres:postgres").arg(&cert).arg(&key);
                chown.arg(data.join("pg_hba.conf"));
                run(chown, "chown");
            }
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert.display(),
                key.display()
            ));
        }
        let server = Self {
            dir,
            port,
            options,
            roles: tokio::sync::OnceCell::new(),
            databases: AtomicUsize::new(0),
            tls: tls.is_some(),
        };
        server.resume();
        server
    }

    /// Stops the server (fast shutdown: sessions are ended): connections
    /// drop and new ones are refused until `resume`.
    pub fn stop(&self) {
        let data = self.data_dir().to_string_lossy().into_owned();
        run(
            as_postgres("pg_ctl", &["stop", "-w", "-m", "fast", "-D", &data]),
            "pg_ctl stop",
        );
    }

    /// Starts the server on its data and port, and waits until it accepts
    /// connections.
    pub fn resume(&self) {
        let data = self.data_dir().to_string_lossy().into_owned();
        let log = self
            .dir
            .path()
            .join("postgres.log")
            .to_string_lossy()
            .into_owned();
        run(
            as_postgres(
                "pg_ctl",
                &[
                    "start",
                    "-w",
                    "-t",
                    "60",
                    "-D",
                    &data,
                    "-l",
                    &log,
                    "-o",
                    &self.options,
                ],
            ),
            "pg_ctl start",
        );
    }

    /// A fresh database for one tenantd storage pool, owned by `OWNER_ROLE`,
    /// with the roles an operator would create (made on first use). Returns
    /// its name; `app_url` and `owner_url` connect to it.
    pub async fn tenantd_database(&self) -> String {
        let mut admin = PgConnection::connect(&self.admin_url())
            .await
            .expect("connect as the superuser");
        self.roles
            .get_or_init(|| async {
                for statement in [
                    format!("CREATE ROLE {OWNER_ROLE} LOGIN CREATEDB"),
                    format!("CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS"),
                ] {
                    sqlx::query(&statement)
                        .execute(&mut admin)
                        .await
                        .expect("create the tenantd roles");
                }
            })
            .await;
        let name = format!(
            "t{}_{}",
            std::process::id(),
            self.databases.fetch_add(1, Ordering::Relaxed)
        );
        sqlx::query(&format!("CREATE DATABASE {name} OWNER {OWNER_ROLE}"))
            .execute(&mut admin)
            .await
            .expect("create a database");
        name
    }

    /// The application role's URL on `database`.
    pub fn app_url(&self, database: &str) -> String {
        self.url(APP_ROLE, database)
    }

    /// The owner role's URL on `database`.
    pub fn owner_url(&self, database: &str) -> String {
        self.url(OWNER_ROLE, database)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for `user` on `database`; over TLS, without
    /// checking the server's certificate, when the cluster takes only TLS.
    pub fn url(&self, user: &str, database: &str) -> String {
        let url = format!("postgres://{user}@127.0.0.1:{}/{database}", self.port);
        if self.tls {
            url + "?sslmode=require"
        } else {
            url
        }
    }

    /// A URL for `user` on `database` that reaches the server as
    /// `localhost` and verifies its certificate as libpq's `sslmode`
    /// (`verify-ca` or `verify-full`) says, against the authorities in
    /// `root_cert`.
    pub fn verifying_url(
        &self,
        user: &str,
        database: &str,
        sslmode: &str,
        root_cert: &Path,
    ) -> String {
        format!(
            "postgres://{user}@localhost:{}/{database}?sslmode={sslmode}&sslrootcert={}",
            self.port,
            root_cert.display()
        )
    }

    /// The superuser's URL on the `postgres` database.
    pub fn admin_url(&self) -> String {
        self.url("postgres", "postgres")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data_dir().to_string_lossy().into_owned();
        // Immediate: the cluster is thrown away, nothing needs flushing.
        let _ = as_postgres("pg_ctl", &["stop", "-m", "immediate", "-D", &data]).output();
    }
}

/// A throwaway Redis on a free port of 127.0.0.1, with no persistence,
/// killed when dropped (or, if the test process dies, by a watcher). It can
/// be stopped and started again on the same port, to test what a client
/// does while Redis is away.
#[derive(Debug)]
pub struct Redis {
    dir: tempfile::TempDir,
    port: u16,
    /// The TLS port, when the server also serves TLS (the plain port stays
    /// for `command`).
    tls_port: Option<u16>,
    /// The server's options for TLS.
    tls_args: Vec<String>,
    child: Option<std::process::Child>,
}

impl Redis {
    /// Starts a server and waits until it answers. Panics saying what failed.
    pub fn start() -> Self {
        let mut redis = Self::unstarted();
        redis.resume();
        redis
    }

    /// Starts a server that also serves TLS on a port of its own,
    /// presenting `leaf`; with `clients` (an authority's PEM), a TLS client
    /// must present a certificate that authority issued. `url` is then the
    /// TLS port's, as `rediss://localhost`.
    pub fn start_tls(leaf: &certs::Leaf, clients: Option<&str>) -> Self {
        let mut redis = Self::unstarted();
        let file = |name: &str, pem: &str| {
            let path = redis.dir.path().join(name);
            std::fs::write(&path, pem).expect("write a TLS file for Redis");
            path.to_string_lossy().into_owned()
        };
        let tls_port = free_port();
        let mut args = vec![
            "--tls-port".to_owned(),
            tls_port.to_string(),
            "--tls-cert-file".to_owned(),
            file("server.crt", &leaf.cert),
            "--tls-key-file".to_owned(),
            file("server.key", &leaf.key),
        ];
        match clients {
            Some(ca) => args.extend([
                "--tls-ca-cert-file".to_owned(),
                file("clients.crt", ca),
                "--tls-auth-clients".to_owned(),
                "yes".to_owned(),
            ]),
            None => args.extend(["--tls-auth-clients".to_owned(), "no".to_owned()]),
        }
        redis.tls_port = Some(tls_port);
        redis.tls_args = args;
        redis.resume();
        redis
    }

    fn unstarted() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tenantd-redis-")
            .tempdir()
            .expect("temp dir");
        Self {
            dir,
            port: free_port(),
            tls_port: None,
            tls_args: Vec::new(),
            child: None,
        }
    }

    /// The URL clients use: the TLS port's when the server serves TLS.
    pub fn url(&self) -> String {
        match self.tls_port {
            None => format!("redis://127.0.0.1:{}/0", self.port),
            Some(port) => format!("rediss://localhost:{port}/0"),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server: connections drop and new ones are refused.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "Redis is already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.tls_args)
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server: {e} (install Debian's redis-server package)")
            });
        kill_after_exit_of(std::process::id(), child.id());
        self.child = Some(child);
        self.wait_until_ready();
    }

    /// Sends one command in RESP and returns the first reply line.
    pub fn command(&self, args: &[&str]) -> String {
        self.try_command(args)
            .unwrap_or_else(|e| panic!("test Redis on port {}: {e}", self.port))
    }

    fn try_command(&self, args: &[&str]) -> std::io::Result<String> {
        use std::io::{BufRead, BufReader, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes())?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        // A bulk string (`$<length>`, e.g. INFO's answer) is read whole;
        // every other answer is its first line.
        match line.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
            Some(length) => {
                let mut bulk = vec![0; length + 2];
                std::io::Read::read_exact(&mut reader, &mut bulk)?;
                bulk.truncate(length);
                Ok(String::from_utf8_lossy(&bulk).into_owned())
            }
            None => Ok(line.to_owned()),
        }
    }

    // Start-up is synchronous, as for `Postgres::start` (`pg_ctl -w`): it
    // blocks its thread for the few milliseconds Redis takes to listen.
    #[allow(clippy::disallowed_methods)]
    fn wait_until_ready(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if matches!(self.try_command(&["PING"]).as_deref(), Ok("+PONG")) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not answer on port {}",
                self.port
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Kills `child` once `pid` has exited, however it exits.
// The watcher outlives this process, which therefore never waits for it.
#[allow(clippy::zombie_processes)]
fn kill_after_exit_of(pid: u32, child: u32) {
    let script = "while kill -0 \"$1\" 2>/dev/null; do sleep 1; done; kill \"$2\" 2>/dev/null";
    let _ = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("watcher")
        .arg(pid.to_string())
        .arg(child.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}
