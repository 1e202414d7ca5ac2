//! tenantd's storage: the control-plane catalog (tenants, API keys, audit
//! log, jobs) and the tenant-isolated record store, on embedded SQLite in WAL
//! mode with migrations compiled into the binary; and the PostgreSQL
//! foundations (row-level security schema and catalog check) that the record
//! store will run on next.
#![forbid(unsafe_code)]

mod audit;
pub mod cache;
mod catalog;
pub mod changes;
mod codec;
pub mod data;
pub mod health;
pub mod jobs;
mod ledger_row;
pub mod nodes;
pub mod plans;
pub mod policy;
pub mod postgres;
pub mod signing_keys;
pub mod usage;

pub use audit::{state_digest, AuditAction, AuditEntry, NewAuditEntry, Verification};
pub use catalog::{BackgroundTask, Catalog, CatalogEngine, CatalogLease, JobLease, Owner};
pub use data::{Connections, DataError, DataLimits, DataStore, PoolLocation, StoragePool};

/// A storage failure. `Conflict` is a unique-key clash the caller can name;
/// everything else is the store being unreachable or broken, which the server
/// answers with 503 and logs.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a row with this key already exists")]
    Conflict,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A record was given with a proof of another owner than its own.
    #[error("{0}")]
    WrongOwner(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Catalog(#[from] postgres::CatalogProblems),
    /// A failure shared by every write of one group commit.
    #[error(transparent)]
    Shared(std::sync::Arc<StoreError>),
    /// The dependency's circuit is open after repeated failures; calls are
    /// refused at once until `retry_after`, when one probe goes through.
    #[error("{dependency} is unavailable")]
    Unavailable {
        dependency: std::sync::Arc<str>,
        retry_after: std::time::Duration,
    },
}

impl From<health::Refused> for StoreError {
    fn from(refused: health::Refused) -> Self {
        StoreError::Unavailable {
            dependency: refused.name,
            retry_after: refused.retry_after,
        }
    }
}

impl StoreError {
    /// Whether the failure is the store's, not the request's: it could not
    /// be reached, ran out of connections, time, space or locks, or was shut
    /// down. These count against a dependency's circuit; a unique-key
    /// clash or corrupt row does not.
    pub fn is_unavailability(&self) -> bool {
        match self {
            StoreError::Unavailable { .. } => true,
            StoreError::Database(e) => is_unavailability(e),
            StoreError::Shared(e) => e.is_unavailability(),
            _ => false,
        }
    }
}

/// Pool options that never hand out a connection still inside a
/// transaction: one whose transaction failed or was cancelled (a COMMIT
/// that failed on a full disk, a request dropped mid-transaction) is closed
/// when it comes back instead of being reused, so the next caller starts
/// clean and the pool heals by itself.
pub(crate) fn hygiene<DB: sqlx::Database>(
    options: sqlx::pool::PoolOptions<DB>,
) -> sqlx::pool::PoolOptions<DB> {
    use sqlx::Connection;
    options
        .after_release(|conn, _| Box::pin(async move { Ok(!conn.is_in_transaction()) }))
        .before_acquire(|conn, _| Box::pin(async move { Ok(!conn.is_in_transaction()) }))
}

/// Whether a database error says the database (not the statement) failed.
pub(crate) fn is_unavailability(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let Some(code) = db.code() else {
                return false;
            };
            if code.len() == 5 {
                // A PostgreSQL SQLSTATE (always five characters): connection
                // exceptions, insufficient resources (disk full, too many
                // connections), operator intervention (shutdown, statement
                // or lock timeout), system errors, and a lock not available.
                matches!(&code[..2], "08" | "53" | "57" | "58") || code == "55P03"
            } else {
                // A SQLite (extended) result code, at most four digits: BUSY,
                // LOCKED, READONLY, IOERR, FULL, CANTOPEN.
                code.parse::<u32>()
                    .is_ok_and(|sqlite| matches!(sqlite & 0xff, 5 | 6 | 8 | 10 | 13 | 14))
            }
        }
        _ => false,
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    use sqlx::{Connection, Executor};

    #[tokio::test]
    async fn a_connection_left_inside_a_transaction_never_serves_again() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("t.db"))
            .create_if_missing(true)
            .busy_timeout(std::time::Duration::from_millis(100));
        let pool = hygiene(SqlitePoolOptions::new())
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER)")
            .execute(&pool)
            .await
            .unwrap();
        // A write whose transaction is neither committed nor rolled back,
        // as a failed COMMIT or a lost ROLLBACK leaves it: it holds the
        // database's write lock on its connection.
        let mut conn = pool.acquire().await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        tx.execute("INSERT INTO t VALUES (1)").await.unwrap();
        std::mem::forget(tx);
        assert!(conn.is_in_transaction());
        drop(conn);
        // The next caller gets a fresh connection, outside any transaction,
        // and can take the write lock: the old one was closed, not reused.
        let mut next = pool.acquire().await.unwrap();
        assert!(!next.is_in_transaction());
        let tx = next.begin_with("BEGIN IMMEDIATE").await.unwrap();
        tx.commit().await.unwrap();
        drop(next);
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(rows, 0, "the abandoned write was not applied");
    }
}
