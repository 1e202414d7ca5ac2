//! The cluster in the catalog: the nodes serving it, each registered at its
//! start and beating every few seconds, and which node holds each lease of
//! the catalog's background work.

use tenantd_core::{JobId, NodeId};
use time::OffsetDateTime;

use crate::catalog::{job_lock, BackgroundTask, Catalog, CatalogEngine};
use crate::codec::{from_nanos, parse, to_nanos};
use crate::Result;

/// How long a node that stopped or fell silent stays listed.
const FORGOTTEN_AFTER: time::Duration = time::Duration::days(1);

/// One node serving the catalog, as it registered itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub id: NodeId,
    pub name: String,
    /// The address it listens on, as it bound it.
    pub address: String,
    pub version: String,
    pub started_at: OffsetDateTime,
    pub heartbeat_at: OffsetDateTime,
    /// When it stopped, if it stopped in order (a node that died only
    /// stops beating).
    pub stopped_at: Option<OffsetDateTime>,
}

/// How long a node may go without a heartbeat before it counts as silent
/// (not serving): a few of its beats.
pub const SILENT_AFTER: time::Duration = time::Duration::seconds(10);

impl NodeRecord {
    /// Whether it serves at `now`: it has not stopped and beat lately.
    pub fn is_up(&self, now: OffsetDateTime) -> bool {
        self.stopped_at.is_none() && now - self.heartbeat_at <= SILENT_AFTER
    }
}

#[derive(sqlx::FromRow)]
struct NodeRow {
    id: String,
    name: String,
    address: String,
    version: String,
    started_at: i64,
    heartbeat_at: i64,
    stopped_at: Option<i64>,
}

impl NodeRow {
    fn into_record(self) -> Result<NodeRecord> {
        Ok(NodeRecord {
            id: parse("nodes.id", &self.id, NodeId::parse)?,
            name: self.name,
            address: self.address,
            version: self.version,
            started_at: from_nanos(self.started_at)?,
            heartbeat_at: from_nanos(self.heartbeat_at)?,
            stopped_at: self.stopped_at.map(from_nanos).transpose()?,
        })
    }
}

/// A lease of the catalog's background work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// The one node allowed on a PostgreSQL catalog without Redis.
    SoleNode,
    Task(BackgroundTask),
    Job(JobId),
}

/// The name PostgreSQL shows for a lease's connection (`application_name`),
/// by which the holder of a lease is found.
pub(crate) fn holder_name(node: &NodeId) -> String {
    format!("tenantd node {node}")
}

impl Catalog {
    /// Registers this node (again, after its row was forgotten).
    pub async fn register_node(&self, node: &NodeRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO nodes (id, name, address, version, started_at, heartbeat_at, stopped_at)
             VALUES ($1, $2, $3, $4, $5, $6, NULL)
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, stopped_at = NULL",
        )
        .bind(node.id.as_str())
        .bind(&node.name)
        .bind(&node.address)
        .bind(&node.version)
        .bind(to_nanos(node.started_at))
        .bind(to_nanos(node.heartbeat_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records that `node` is alive at `at`, and forgets nodes silent for
    /// a day. `false` if the node's row was forgotten (register it again).
    pub async fn beat(&self, node: &NodeId, at: OffsetDateTime) -> Result<bool> {
        let updated = sqlx::query("UPDATE nodes SET heartbeat_at = $1 WHERE id = $2")
            .bind(to_nanos(at))
            .bind(node.as_str())
            .execute(&self.pool)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM nodes WHERE heartbeat_at < $1")
            .bind(to_nanos(at - FORGOTTEN_AFTER))
            .execute(&self.pool)
            .await?;
        Ok(updated > 0)
    }

    /// Records that `node` stopped in order at `at`.
    pub async fn node_stopped(&self, node: &NodeId, at: OffsetDateTime) -> Result<()> {
        sqlx::query("UPDATE nodes SET stopped_at = $1, heartbeat_at = $1 WHERE id = $2")
            .bind(to_nanos(at))
            .bind(node.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The nodes registered, those that stopped included, oldest first.
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>> {
        sqlx::query_as::<_, NodeRow>("SELECT * FROM nodes ORDER BY started_at, id")
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(NodeRow::into_record)
            .collect()
    }

    /// Which node holds each lease among `leases`, as PostgreSQL's lock
    /// table says (a lease's connection is named after its node); `None`
    /// for a lease nobody holds now. On SQLite every lease is `this`
    /// node's: it is the only one.
    pub async fn lease_holders(
        &self,
        leases: Vec<Lease>,
        this: &NodeId,
    ) -> Result<Vec<(Lease, Option<NodeId>)>> {
        if self.engine() == CatalogEngine::Sqlite {
            return Ok(leases
                .into_iter()
                .map(|l| (l, Some(this.clone())))
                .collect());
        }
        // A bigint advisory lock shows as its high half in classid and its
        // low half in objid, with objsubid 1.
        let held: Vec<(i64, i64, String)> = sqlx::query_as(
            "SELECT l.classid::bigint, l.objid::bigint, a.application_name::text
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_all(&self.pool)
        .await?;
        let holder = |key: i64| {
            let (high, low) = ((key as u64 >> 32) as i64, (key as u64 & 0xffff_ffff) as i64);
            held.iter()
                .find(|(class, object, _)| *class == high && *object == low)
                .and_then(|(_, _, name)| name.strip_prefix("tenantd node "))
                .and_then(|id| NodeId::parse(id).ok())
        };
        Ok(leases
            .into_iter()
            .map(|lease| {
                let key = match &lease {
                    Lease::SoleNode => crate::catalog::POSTGRES_NODE_LOCK,
                    Lease::Task(task) => task.lock(),
                    Lease::Job(job) => job_lock(job),
                };
                (lease, holder(key))
            })
            .collect())
    }
}
