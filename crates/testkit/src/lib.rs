//! Ephemeral servers for tests: each `Postgres::start()` initializes a fresh
//! PostgreSQL cluster in a temporary directory, serves it on a free port of
//! 127.0.0.1 with trust authentication, and removes it when dropped.
//!
//! PostgreSQL refuses to run as root, so as root the cluster belongs to the
//! `postgres` user and every command runs through `runuser`.
#![forbid(unsafe_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A running throwaway PostgreSQL cluster.
#[derive(Debug)]
pub struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
}

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
    /// Starts a new cluster, or panics saying what failed.
    pub fn start() -> Self {
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
        let options = format!(
            "-p {port} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
        );
        let log = dir
            .path()
            .join("postgres.log")
            .to_string_lossy()
            .into_owned();
        run(
            as_postgres(
                "pg_ctl",
                &[
                    "start", "-w", "-t", "60", "-D", &data_arg, "-l", &log, "-o", &options,
                ],
            ),
            "pg_ctl start",
        );
        Self { dir, port }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for `user` on `database`.
    pub fn url(&self, user: &str, database: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{database}", self.port)
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
