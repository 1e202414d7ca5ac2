//! One writer per SQLite database. SQLite lets one transaction write at a
//! time; pooled connections racing for that lock with `BEGIN IMMEDIATE`
//! and SQLite's busy-wait ladder (sleeps of 1, 2, 5 … 100 ms) let newcomers
//! win while older waiters starve, and a request cancelled mid-transaction
//! could hand its connection back still inside it. So every write to a
//! database goes to one task that owns one connection: writes commit in
//! arrival order, a cancelled request cannot leave a transaction half done
//! (the task, not the request, runs it to the end), and writes that queued
//! up while one committed share the next transaction (group commit), each
//! under a savepoint of its own so that one failing write leaves the others.
//!
//! Durability is unchanged: a write is answered only after the COMMIT of
//! its group returned, and with `synchronous=FULL` that COMMIT has synced.
//! (`NORMAL` would skip the sync of each commit in WAL mode, so a power
//! loss, not a crash of the process, could undo the last writes
//! acknowledged.) If any statement that steers the transaction fails
//! (BEGIN, SAVEPOINT, ROLLBACK TO, COMMIT) every write of the group is
//! answered with that error and the connection is closed and opened again,
//! so no state of a failed transaction outlives it: after a full disk has
//! room again, the next write succeeds.

use std::sync::Arc;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, SqliteConnection};
use tenantd_core::{CollectionName, TenantId};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use super::{
    pg, sqlite, BatchOp, BatchResult, CollectionRow, Conn, DataError, DataLimits, RecordRow,
    Result, Session,
};
use crate::StoreError;

/// Most writes committed in one transaction.
const MAX_GROUP: usize = 64;
/// Writes waiting for the writer; a full queue makes writers wait to enqueue.
const QUEUE: usize = 1024;

/// A write the writer task runs on its connection.
pub(super) enum Work {
    Batch {
        tenant: TenantId,
        collection: CollectionName,
        ops: Vec<BatchOp>,
        now: OffsetDateTime,
        limits: DataLimits,
    },
    CreateCollection {
        tenant: TenantId,
        row: CollectionRow,
    },
    DeleteCollection {
        tenant: TenantId,
        name: CollectionName,
    },
    DeleteTenantRows {
        tenant: TenantId,
    },
    /// A move's copy begins: whatever an earlier attempt left of the
    /// tenant here is removed and its usage set.
    ClearForCopy {
        tenant: TenantId,
        usage: Option<(i64, i64)>,
    },
    /// A part of a move's copy: a collection (with its first part) and
    /// records with their ids, versions and times kept.
    CopyRecords {
        tenant: TenantId,
        collection: String,
        create: Option<CollectionRow>,
        rows: Vec<RecordRow>,
    },
}

impl Work {
    /// Whether this is a tenant's own write, which a move holds: the move's
    /// copy and a purge's removal are not.
    pub(super) fn is_held_by_moves(&self) -> bool {
        match self {
            Work::Batch { .. } | Work::CreateCollection { .. } | Work::DeleteCollection { .. } => {
                true
            }
            Work::DeleteTenantRows { .. }
            | Work::ClearForCopy { .. }
            | Work::CopyRecords { .. } => false,
        }
    }
}

/// What a write produced.
#[derive(Debug)]
pub(super) enum Done {
    Batch(Vec<BatchResult>),
    /// Whether a collection was deleted.
    Deleted(bool),
    Nothing,
}

struct Job {
    work: Work,
    reply: oneshot::Sender<Result<Done>>,
}

/// The handle to a database's writer task; the task ends when the last
/// handle is dropped, after the writes already queued.
#[derive(Debug, Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer of the database at `options` (already created and
    /// migrated).
    pub(super) fn start(options: SqliteConnectOptions) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(run(options, queue));
        Self { jobs }
    }

    /// Runs `work` in the database's next transaction and answers once it
    /// committed (or failed).
    pub(super) async fn write(&self, work: Work) -> Result<Done> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { work, reply })
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?;
        answer
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::WorkerCrashed))?
    }
}

async fn run(options: SqliteConnectOptions, mut queue: mpsc::Receiver<Job>) {
    let mut conn: Option<SqliteConnection> = None;
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        // A request that went away before its write started needs no answer.
        group.retain(|job| !job.reply.is_closed());
        if group.is_empty() {
            continue;
        }
        let connection = match &mut conn {
            Some(c) => c,
            slot => match options.connect().await {
                Ok(c) => slot.insert(c),
                Err(e) => {
                    answer_all(group, &Arc::new(StoreError::Database(e)));
                    continue;
                }
            },
        };
        if let Err(e) = commit_group(connection, group).await {
            // The transaction failed as a whole; start the next one afresh.
            tracing::debug!(error = %e, "a group commit failed; reopening the writer's connection");
            if let Some(c) = conn.take() {
                let _ = c.close().await;
            }
        }
    }
    if let Some(c) = conn {
        let _ = c.close().await;
    }
}

/// Runs `group` in one transaction and answers each job. `Err` if the
/// transaction itself failed (every job was answered with that error).
async fn commit_group(conn: &mut SqliteConnection, group: Vec<Job>) -> Result<(), Arc<StoreError>> {
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE").await {
        let e = Arc::new(StoreError::Database(e));
        answer_all(group, &e);
        return Err(e);
    }
    let mut done: Vec<(oneshot::Sender<Result<Done>>, Result<Done>)> =
        Vec::with_capacity(group.len());
    let mut pending = group.into_iter();
    while let Some(Job { work, reply }) = pending.next() {
        // Its request went away (a deadline, a client that left) while the
        // group waited for the write lock: nothing was acknowledged, so
        // nothing is applied.
        if reply.is_closed() {
            continue;
        }
        match steer(conn, work).await {
            Ok(result) => done.push((reply, result)),
            Err(e) => {
                // SQLite may have rolled the whole transaction back (a full
                // disk does): nothing of the group is applied.
                let e = Arc::new(e);
                let _ = exec(conn, "ROLLBACK").await;
                answer_all(pending, &e);
                for (reply, _) in done {
                    let _ = reply.send(Err(shared(&e)));
                }
                let _ = reply.send(Err(shared(&e)));
                return Err(e);
            }
        }
    }
    match exec(conn, "COMMIT").await {
        Ok(()) => {
            for (reply, result) in done {
                let _ = reply.send(result);
            }
            Ok(())
        }
        Err(e) => {
            let e = Arc::new(StoreError::Database(e));
            let _ = exec(conn, "ROLLBACK").await;
            for (reply, _) in done {
                let _ = reply.send(Err(shared(&e)));
            }
            Err(e)
        }
    }
}

/// Runs one write under a savepoint of its own: `Ok` with the write's own
/// outcome (a failed write rolled back to its savepoint), or `Err` if the
/// transaction itself is lost. That error is the write's own when its
/// failure took the transaction with it (SQLite rolls back everything on a
/// full disk, and the savepoint is then gone too), so the cause is reported
/// rather than the missing savepoint.
async fn steer(conn: &mut SqliteConnection, work: Work) -> Result<Result<Done>, StoreError> {
    exec(conn, "SAVEPOINT w").await?;
    let result = apply(&mut Session::Writer(conn), work).await;
    let closed = if result.is_ok() {
        exec(conn, "RELEASE w").await
    } else {
        match exec(conn, "ROLLBACK TO w").await {
            Ok(()) => exec(conn, "RELEASE w").await,
            Err(e) => Err(e),
        }
    };
    match (closed, result) {
        (Ok(()), result) => Ok(result),
        (Err(_), Err(DataError::Store(cause))) => Err(cause),
        (Err(e), _) => Err(StoreError::Database(e)),
    }
}

async fn exec(conn: &mut SqliteConnection, statement: &'static str) -> Result<(), sqlx::Error> {
    conn.execute(statement).await.map(drop)
}

fn shared(e: &Arc<StoreError>) -> DataError {
    DataError::Store(StoreError::Shared(e.clone()))
}

fn answer_all(jobs: impl IntoIterator<Item = Job>, e: &Arc<StoreError>) {
    for job in jobs {
        let _ = job.reply.send(Err(shared(e)));
    }
}

/// One write's statements, in the caller's transaction (on SQLite, inside
/// the write's savepoint in the writer's group).
pub(super) async fn apply(session: &mut Session<'_>, work: Work) -> Result<Done> {
    match work {
        Work::Batch {
            tenant,
            collection,
            ops,
            now,
            limits,
        } => super::apply_batch(&limits, session, &tenant, &collection, ops, now)
            .await
            .map(Done::Batch),
        Work::CreateCollection { tenant, row } => {
            on_engine!(session, insert_collection(&tenant, &row)).map(|()| Done::Nothing)
        }
        Work::DeleteCollection { tenant, name } => {
            let Some((bytes, records)) = on_engine!(session, delete_collection(&tenant, &name))?
            else {
                return Ok(Done::Deleted(false));
            };
            on_engine!(session, add_usage(&tenant, -bytes, -records))?;
            Ok(Done::Deleted(true))
        }
        Work::DeleteTenantRows { tenant } => {
            on_engine!(session, delete_tenant_rows(&tenant)).map(|()| Done::Nothing)
        }
        Work::ClearForCopy { tenant, usage } => {
            on_engine!(session, delete_tenant_rows(&tenant))?;
            // A tenant moving back here is welcome again once the catalog
            // switches. SQLite pools serve one node, whose own gates refuse
            // a moved tenant's writes (`WriteGates::moved`).
            if let Conn::Postgres(c) = session.conn() {
                pg::clear_departure(c, &tenant).await?;
            }
            if let Some((bytes, records)) = usage {
                on_engine!(session, add_usage(&tenant, bytes, records))?;
            }
            Ok(Done::Nothing)
        }
        Work::CopyRecords {
            tenant,
            collection,
            create,
            rows,
        } => {
            if let Some(row) = &create {
                on_engine!(session, insert_collection(&tenant, row))?;
            }
            for row in &rows {
                on_engine!(session, insert_record(&tenant, &collection, row))?;
            }
            Ok(Done::Nothing)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sqlx::Row;
    use tenantd_core::RecordId;

    fn tenant() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    fn orders() -> CollectionName {
        CollectionName::parse("orders").unwrap()
    }

    /// `ops` on acme's `orders`, as one write.
    fn batch(ops: Vec<BatchOp>) -> Work {
        Work::Batch {
            tenant: tenant(),
            collection: orders(),
            ops,
            now: OffsetDateTime::UNIX_EPOCH,
            limits: DataLimits {
                max_record_bytes: 1 << 20,
            },
        }
    }

    async fn put(writer: &Writer, id: &str, bytes: usize) -> Result<Done> {
        let op = BatchOp::Put {
            id: RecordId::parse(id).unwrap(),
            body: json!({ "pad": "x".repeat(bytes) }),
            expect: None,
        };
        writer.write(batch(vec![op])).await
    }

    /// A database with acme's `orders` collection that may grow by only
    /// `room_pages` pages more (SQLite's `max_page_count`, set on every
    /// connection the writer opens), so a full disk is had without one.
    async fn small_database(dir: &std::path::Path, room_pages: i64) -> (sqlx::SqlitePool, Writer) {
        let path = dir.join("small.db");
        let pool = sqlite::open(&path, 2, std::time::Duration::from_secs(2))
            .await
            .unwrap();
        let pages: i64 = sqlx::query("PRAGMA page_count")
            .fetch_one(&pool)
            .await
            .unwrap()
            .get(0);
        let options =
            sqlite::options(&path).pragma("max_page_count", (pages + room_pages).to_string());
        let writer = Writer::start(options);
        let orders = CollectionRow {
            name: "orders".into(),
            indexes: "[]".into(),
            created_at: 0,
        };
        let create = Work::CreateCollection {
            tenant: tenant(),
            row: orders,
        };
        writer.write(create).await.unwrap();
        (pool, writer)
    }

    fn is_full(e: &DataError) -> bool {
        matches!(e, DataError::Store(s) if s.is_unavailability())
    }

    #[tokio::test]
    async fn a_full_database_refuses_writes_and_the_writer_recovers_when_room_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, writer) = small_database(dir.path(), 40).await;
        // 8 KB records until the database is full.
        let mut written = Vec::new();
        let full = loop {
            let id = format!("r{}", written.len());
            match put(&writer, &id, 8_000).await {
                Ok(_) => written.push(id),
                Err(e) => break e,
            }
            assert!(written.len() < 100, "the database never filled");
        };
        assert!(is_full(&full), "{full:?}");
        assert!(!written.is_empty());
        // Still full: a write of the same size fails again, cleanly.
        assert!(is_full(&put(&writer, "again", 8_000).await.unwrap_err()));

        // Room is made by deleting records (freed pages are reused); the
        // next writes succeed on the same writer, and every acknowledged
        // write is there.
        let deletes = written
            .drain(..written.len() / 2)
            .map(|id| BatchOp::Delete {
                id: RecordId::parse(&id).unwrap(),
                expect: None,
            })
            .collect();
        let deleted = writer.write(batch(deletes)).await;
        assert!(deleted.is_ok(), "{:?}", deleted.err());
        put(&writer, "after", 8_000).await.unwrap();
        written.push("after".into());
        for id in &written {
            let found: Option<i64> = sqlx::query_scalar(
                "SELECT version FROM records WHERE tenant_id = 'acme' AND id = ?",
            )
            .bind(id)
            .fetch_optional(&pool)
            .await
            .unwrap();
            assert_eq!(found, Some(1), "record {id}");
        }
    }

    #[tokio::test]
    async fn writes_queued_at_once_all_commit_and_one_failure_spares_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, writer) = small_database(dir.path(), 10_000).await;
        put(&writer, "taken", 10).await.unwrap();
        // Fifty writes at once, one of them a create of an id that exists.
        let writes: Vec<_> = (0..50)
            .map(|i| {
                let writer = writer.clone();
                tokio::spawn(async move {
                    if i == 25 {
                        let create = BatchOp::Create {
                            id: RecordId::parse("taken").unwrap(),
                            body: json!({}),
                        };
                        writer.write(batch(vec![create])).await
                    } else {
                        put(&writer, &format!("w{i}"), 10).await
                    }
                })
            })
            .collect();
        let mut results = Vec::new();
        for write in writes {
            results.push(write.await.unwrap());
        }
        for (i, result) in results.iter().enumerate() {
            if i == 25 {
                assert!(matches!(result, Err(DataError::RecordExists)), "{result:?}");
            } else {
                assert!(result.is_ok(), "write {i}: {result:?}");
            }
        }
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM records WHERE id LIKE 'w%'")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(count, 49);
    }
}
