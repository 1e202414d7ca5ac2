//! Usage in the catalog: quota ledgers and hourly usage written behind by
//! the admission stage, quota events, and add-ons.

use std::collections::HashMap;

use tenantd_core::plan::{AddOn, Metric, Period};
use tenantd_core::quota::{Ledger, QuotaEvent};
use tenantd_core::{OperatorScope, TenantId, TenantScope};
use time::OffsetDateTime;

use crate::audit::{append, NewAuditEntry};
use sqlx::{Any, Transaction};

use crate::catalog::{Catalog, CatalogEngine};
use crate::codec::{from_nanos, parse, placeholder_list, placeholder_rows, to_nanos};
use crate::ledger_row;
use crate::{Result, StoreError};

/// Usage metered in one hour, or a delta of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HourUsage {
    pub requests: u64,
    pub rejected: u64,
    pub ingress_bytes: u64,
    pub egress_bytes: u64,
    pub seat_micros: u64,
}

impl HourUsage {
    pub fn add(&mut self, other: &HourUsage) {
        self.requests += other.requests;
        self.rejected += other.rejected;
        self.ingress_bytes += other.ingress_bytes;
        self.egress_bytes += other.egress_bytes;
        self.seat_micros += other.seat_micros;
    }
}

/// Everything one write-behind stores, in one transaction.
#[derive(Debug, Default)]
pub struct UsageBatch {
    /// Current ledgers of the tenants whose usage changed.
    pub ledgers: Vec<(TenantId, Ledger)>,
    /// Usage metered since the previous write, by tenant and hour start (Unix seconds).
    pub hours: Vec<(TenantId, i64, HourUsage)>,
    pub events: Vec<(TenantId, OffsetDateTime, QuotaEvent)>,
}

impl UsageBatch {
    pub fn is_empty(&self) -> bool {
        self.ledgers.is_empty() && self.hours.is_empty() && self.events.is_empty()
    }

    /// Adds a later batch's contents: written after this one's, its ledgers
    /// replace this one's, and its hours and events add to them.
    pub fn append(&mut self, later: UsageBatch) {
        self.ledgers.extend(later.ledgers);
        self.hours.extend(later.hours);
        self.events.extend(later.events);
    }
}

/// A recorded quota event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: i64,
    pub at: OffsetDateTime,
    pub kind: String,
    pub metric: String,
    pub period: Option<String>,
    pub used: u64,
    pub limit: u64,
}

#[derive(sqlx::FromRow)]
struct EventRow {
    seq: i64,
    at: i64,
    kind: String,
    metric: String,
    period: Option<String>,
    used: i64,
    limit_value: i64,
}

/// Rows one write-behind statement carries: 7 columns each stays far
/// below SQLite's limit of 32,766 bound values.
pub(crate) const ROWS_PER_STATEMENT: usize = 500;

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Catalog {
    /// Writes a batch: ledgers replaced, hours added to, events appended.
    pub async fn write_usage(&self, batch: &UsageBatch, now: OffsetDateTime) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        // Many rows per statement: a pass over thousands of active tenants
        // is a handful of statements, not thousands of round trips. Each
        // part is encoded just before its statement, whose wait lets the
        // runtime serve requests between parts.
        // One row per key in a statement: PostgreSQL's upsert refuses to
        // touch a row twice in one statement. A later ledger replaces an
        // earlier one; hours add up.
        // A pass carries thousands of tenants: merged through maps, in the
        // order each tenant first appears.
        let mut latest: HashMap<&TenantId, usize> = HashMap::with_capacity(batch.ledgers.len());
        let mut ledgers: Vec<(&TenantId, &Ledger)> = Vec::with_capacity(batch.ledgers.len());
        for (tenant, ledger) in &batch.ledgers {
            match latest.get(tenant) {
                Some(&at) => ledgers[at].1 = ledger,
                None => {
                    latest.insert(tenant, ledgers.len());
                    ledgers.push((tenant, ledger));
                }
            }
        }
        let mut at_hour: HashMap<(&TenantId, i64), usize> =
            HashMap::with_capacity(batch.hours.len());
        let mut hours: Vec<(&TenantId, i64, HourUsage)> = Vec::with_capacity(batch.hours.len());
        for (tenant, hour, usage) in &batch.hours {
            match at_hour.get(&(tenant, *hour)) {
                Some(&at) => hours[at].2.add(usage),
                None => {
                    at_hour.insert((tenant, *hour), hours.len());
                    hours.push((tenant, *hour, *usage));
                }
            }
        }
        for part in ledgers.chunks(ROWS_PER_STATEMENT) {
            let encoded: Vec<String> = match self.engine() {
                // One node writes a SQLite catalog: its ledger is the whole truth.
                CatalogEngine::Sqlite => part.iter().map(|(_, l)| ledger_row::encode(l)).collect(),
                CatalogEngine::Postgres => self.merged_with_stored(&mut tx, part).await?,
            };
            let sql = format!(
                "INSERT INTO usage_ledgers (tenant_id, ledger, updated_at) VALUES {}
                 ON CONFLICT (tenant_id) DO UPDATE SET ledger = excluded.ledger,
                                                      updated_at = excluded.updated_at",
                placeholder_rows(self.engine(), part.len(), 3, 1)
            );
            let mut insert = sqlx::query(&sql);
            for ((tenant, _), json) in part.iter().zip(&encoded) {
                insert = insert
                    .bind(tenant.as_str())
                    .bind(json.as_str())
                    .bind(to_nanos(now));
            }
            insert.execute(&mut *tx).await?;
        }
        for part in hours.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO usage_hours (tenant_id, hour, requests, rejected, ingress_bytes,
                                          egress_bytes, seat_micros) VALUES {}
                 ON CONFLICT (tenant_id, hour) DO UPDATE SET
                     requests = usage_hours.requests + excluded.requests,
                     rejected = usage_hours.rejected + excluded.rejected,
                     ingress_bytes = usage_hours.ingress_bytes + excluded.ingress_bytes,
                     egress_bytes = usage_hours.egress_bytes + excluded.egress_bytes,
                     seat_micros = usage_hours.seat_micros + excluded.seat_micros",
                placeholder_rows(self.engine(), part.len(), 7, 1)
            );
            let mut insert = sqlx::query(&sql);
            for (tenant, hour, u) in part {
                insert = insert
                    .bind(tenant.as_str())
                    .bind(*hour)
                    .bind(to_i64(u.requests))
                    .bind(to_i64(u.rejected))
                    .bind(to_i64(u.ingress_bytes))
                    .bind(to_i64(u.egress_bytes))
                    .bind(to_i64(u.seat_micros));
            }
            insert.execute(&mut *tx).await?;
        }
        for part in batch.events.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO quota_events (tenant_id, at, kind, metric, period, used, limit_value)
                 VALUES {}",
                placeholder_rows(self.engine(), part.len(), 7, 1)
            );
            let mut insert = sqlx::query(&sql);
            for (tenant, at, event) in part {
                insert = insert
                    .bind(tenant.as_str())
                    .bind(to_nanos(*at))
                    .bind(event.kind.as_str())
                    .bind(event.metric.as_str())
                    .bind(event.period.map(Period::as_str))
                    .bind(to_i64(event.used))
                    .bind(to_i64(event.limit));
            }
            insert.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The ledgers of `part` merged with what the catalog holds for the
    /// same tenants (`Ledger::merge_stored`), encoded: several nodes write
    /// their views of the same shared counters behind, and none may take a
    /// count back that another stored. Read inside the write transaction,
    /// whose lock keeps another node's write from coming between.
    async fn merged_with_stored(
        &self,
        tx: &mut Transaction<'static, Any>,
        part: &[(&TenantId, &Ledger)],
    ) -> Result<Vec<String>> {
        let sql = format!(
            "SELECT tenant_id, ledger FROM usage_ledgers WHERE tenant_id IN ({})",
            placeholder_list(self.engine(), part.len(), 1)
        );
        let mut select = sqlx::query_as::<_, (String, String)>(&sql);
        for (tenant, _) in part {
            select = select.bind(tenant.as_str());
        }
        let mut stored: HashMap<String, String> =
            select.fetch_all(&mut **tx).await?.into_iter().collect();
        part.iter()
            .map(|(tenant, ledger)| {
                let Some(row) = stored.remove(tenant.as_str()) else {
                    return Ok(ledger_row::encode(ledger));
                };
                let before = ledger_row::decode(&row)
                    .map_err(|e| StoreError::Corrupt(format!("ledger of {tenant}: {e}")))?;
                let mut merged = (*ledger).clone();
                merged.merge_stored(&before);
                Ok(ledger_row::encode(&merged))
            })
            .collect()
    }

    /// Every stored ledger, to start the admission stage with.
    pub async fn ledgers(&self) -> Result<Vec<(TenantId, Ledger)>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT tenant_id, ledger FROM usage_ledgers")
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|(tenant, json)| {
                let tenant = parse("usage_ledgers.tenant_id", &tenant, TenantId::parse)?;
                let ledger = ledger_row::decode(&json)
                    .map_err(|e| StoreError::Corrupt(format!("ledger of {tenant}: {e}")))?;
                Ok((tenant, ledger))
            })
            .collect()
    }

    /// Hourly usage of `tenant` for hours starting in `[from, to)` (Unix seconds), oldest first.
    pub async fn usage_hours(
        &self,
        scope: &TenantScope,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, HourUsage)>> {
        let tenant = scope.tenant();
        let rows: Vec<(i64, i64, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT hour, requests, rejected, ingress_bytes, egress_bytes, seat_micros
             FROM usage_hours WHERE tenant_id = $1 AND hour >= $2 AND hour < $3 ORDER BY hour",
        )
        .bind(tenant.as_str())
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(hour, requests, rejected, ingress, egress, seat)| {
                (
                    hour,
                    HourUsage {
                        requests: to_u64(requests),
                        rejected: to_u64(rejected),
                        ingress_bytes: to_u64(ingress),
                        egress_bytes: to_u64(egress),
                        seat_micros: to_u64(seat),
                    },
                )
            })
            .collect())
    }

    /// Quota events of `tenant`, newest first, older than `before` (a
    /// `seq`) when given, at most `limit`.
    pub async fn quota_events(
        &self,
        scope: &TenantScope,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredEvent>> {
        let tenant = scope.tenant();
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT seq, at, kind, metric, period, used, limit_value FROM quota_events
             WHERE tenant_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
        )
        .bind(tenant.as_str())
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(StoredEvent {
                    seq: row.seq,
                    at: from_nanos(row.at)?,
                    kind: row.kind,
                    metric: row.metric,
                    period: row.period,
                    used: to_u64(row.used),
                    limit: to_u64(row.limit_value),
                })
            })
            .collect()
    }

    /// Records an add-on for `tenant`; returns its id.
    pub async fn insert_add_on(
        &self,
        scope: &TenantScope,
        add_on: &AddOn,
        audit: &NewAuditEntry,
    ) -> Result<i64> {
        let tenant = scope.tenant();
        let mut tx = self.begin_write().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO tenant_addons (tenant_id, metric, period, amount, expires_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(tenant.as_str())
        .bind(add_on.metric.as_str())
        .bind(add_on.period.map(Period::as_str))
        .bind(to_i64(add_on.amount))
        .bind(to_nanos(add_on.expires_at))
        .bind(to_nanos(audit.at))
        .fetch_one(&mut *tx)
        .await?;
        append(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Add-ons of the scope's tenant not expired at `now`, with their ids,
    /// in id order after `after`; at most `limit`.
    pub async fn add_ons(
        &self,
        scope: &TenantScope,
        now: OffsetDateTime,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, TenantId, AddOn)>> {
        self.add_ons_of(Some(scope.tenant()), now, after, Some(limit))
            .await
    }

    /// Every tenant's add-ons not expired at `now`: start-up loads them all.
    pub async fn all_add_ons(
        &self,
        _operator: &OperatorScope,
        now: OffsetDateTime,
    ) -> Result<Vec<(i64, TenantId, AddOn)>> {
        self.add_ons_of(None, now, 0, None).await
    }

    /// One tenant's add-ons not expired at `now`: what a node reads when
    /// another granted that tenant one.
    pub async fn tenant_add_ons(
        &self,
        _server: &OperatorScope,
        tenant: &TenantId,
        now: OffsetDateTime,
    ) -> Result<Vec<(i64, TenantId, AddOn)>> {
        self.add_ons_of(Some(tenant), now, 0, None).await
    }

    async fn add_ons_of(
        &self,
        tenant: Option<&TenantId>,
        now: OffsetDateTime,
        after: i64,
        limit: Option<u32>,
    ) -> Result<Vec<(i64, TenantId, AddOn)>> {
        let rows: Vec<(i64, String, String, Option<String>, i64, i64)> = sqlx::query_as(
            "SELECT id, tenant_id, metric, period, amount, expires_at FROM tenant_addons
             WHERE ($1 IS NULL OR tenant_id = $2) AND expires_at > $3 AND id > $4
             ORDER BY id LIMIT $5",
        )
        .bind(tenant.map(TenantId::as_str))
        .bind(tenant.map(TenantId::as_str))
        .bind(to_nanos(now))
        .bind(after)
        // SQLite reads a negative limit as none.
        .bind(limit.map_or(i64::MAX, i64::from))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, tenant, metric, period, amount, expires_at)| {
                let tenant = parse("tenant_addons.tenant_id", &tenant, TenantId::parse)?;
                let metric = parse("tenant_addons.metric", &metric, |m| {
                    Metric::parse(m).ok_or("unknown metric")
                })?;
                let period = period
                    .map(|p| {
                        parse("tenant_addons.period", &p, |p| {
                            Period::parse(p).ok_or("unknown period")
                        })
                    })
                    .transpose()?;
                Ok((
                    id,
                    tenant,
                    AddOn {
                        metric,
                        period,
                        amount: to_u64(amount),
                        expires_at: from_nanos(expires_at)?,
                    },
                ))
            })
            .collect()
    }
}
