//! Rate limits: GCRA decisions kept in memory (beside each tenant's ledger,
//! in `ledgers`: sharded, no global lock) or in a Redis shared by several
//! nodes (one Lua script per decision), behind one trait, with a configured
//! answer to Redis being unreachable.
//!
//! Invariant: both stores compute exactly `tenantd_core::gcra::decide`, and
//! a request is charged to every limit it passes or to none.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tenantd_core::gcra::{decide, Decision, Limit};
use tenantd_core::{Clock, SystemClock, TenantId};
use tokio::sync::OnceCell;

use tenantd_store::health::{dependency_policy, Dependency};

use super::ledgers::Ledgers;
use crate::config::{FailMode, RedisConfig};

/// Which of a tenant's limits a check is against: 0 is the tenant's own
/// limit, 1 to 4 its limits per operation class.
pub const LIMITS_PER_TENANT: usize = 5;

/// One limit a request must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateCheck {
    pub slot: usize,
    pub limit: Limit,
}

/// The shared limiter could not be asked.
#[derive(Debug, Clone, thiserror::Error)]
#[error("rate limiter unavailable: {0}")]
pub struct Unavailable(pub String);

/// Where GCRA state lives. `decide` returns one decision per check, in
/// order; state is stored only when every check allows.
pub trait RateStore: Send + Sync {
    fn decide(
        &self,
        tenant: &TenantId,
        checks: &[RateCheck],
        now: u64,
        cost: u32,
    ) -> impl Future<Output = Result<Vec<Decision>, Unavailable>> + Send;
}

/// Decides `checks` against stored TATs and, when all allow, updates them.
pub(crate) fn decide_slots(
    tats: &mut [u64; LIMITS_PER_TENANT],
    checks: &[RateCheck],
    now: u64,
    cost: u32,
) -> Vec<Decision> {
    let decisions: Vec<Decision> = checks
        .iter()
        .map(|c| {
            let stored = Some(tats[c.slot]).filter(|&t| t != 0);
            decide(&c.limit, stored, now, cost)
        })
        .collect();
    if decisions
        .iter()
        .all(|d| matches!(d, Decision::Allowed { .. }))
    {
        for (check, decision) in checks.iter().zip(&decisions) {
            if let Decision::Allowed { tat, .. } = decision {
                tats[check.slot] = *tat;
            }
        }
    }
    decisions
}

/// The same arithmetic as `gcra::decide`, over every limit of one tenant,
/// stored in one hash per tenant. Numbers are Lua doubles; `Limit` keeps
/// every value below 2^53 so they stay exact integers, and TATs are written
/// with `%d` so no digit is lost.
const GCRA_LUA: &str = r#"
local now = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local n = (#ARGV - 2) / 3
local out = {}
local new_tats = {}
local all_allowed = true
local longest = 0
for i = 1, n do
  local field = ARGV[3 * i]
  local interval = tonumber(ARGV[3 * i + 1])
  local burst = tonumber(ARGV[3 * i + 2])
  local stored = redis.call('HGET', KEYS[1], field)
  local tat = now
  if stored then tat = math.max(tonumber(stored), now) end
  local new_tat = tat + interval * cost
  local early = new_tat - interval * burst - now
  if cost > burst or early > 0 then
    all_allowed = false
    if early < 0 then early = 0 end
    out[#out + 1] = 0
    out[#out + 1] = early
    out[#out + 1] = tat - now
  else
    local left = -early
    local remaining = math.floor(left / interval)
    if remaining * interval > left then remaining = remaining - 1 end
    out[#out + 1] = 1
    out[#out + 1] = remaining
    out[#out + 1] = new_tat - now
    new_tats[#new_tats + 1] = {field, new_tat}
    if new_tat - now > longest then longest = new_tat - now end
  end
end
if all_allowed then
  for _, pair in ipairs(new_tats) do
    redis.call('HSET', KEYS[1], pair[1], string.format('%d', pair[2]))
  end
  redis.call('PEXPIRE', KEYS[1], math.floor(longest / 1000) + 1)
end
return out
"#;

/// GCRA state in Redis. Each tenant's limits are one hash whose key carries
/// the tenant as a hash tag, so it lives on one cluster slot. The script is
/// called by its digest and sent again if Redis answers NOSCRIPT (after a
/// restart or `SCRIPT FLUSH`).
pub struct RedisRates {
    client: redis::Client,
    connection: OnceCell<ConnectionManager>,
    script: redis::Script,
    timeout: Duration,
    /// Until when (ms since `epoch`) not to try connecting again after a failure.
    retry_connect_at: AtomicU64,
    epoch: Instant,
}

impl std::fmt::Debug for RedisRates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRates")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A client of the Redis at `config.url`. `Client::open` takes a
/// `rediss://` URL too, trusting the system's roots; files configured for
/// TLS go through `build_with_tls`.
fn redis_client(config: &RedisConfig) -> Result<redis::Client, String> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
    };
    let client_tls = match config.tls.identity() {
        Some((cert, key)) => Some(redis::ClientTlsConfig {
            client_cert: read(cert)?,
            client_key: read(key)?,
        }),
        None => None,
    };
    let root_cert = config.tls.ca_file.as_deref().map(read).transpose()?;
    if client_tls.is_none() && root_cert.is_none() {
        return redis::Client::open(config.url.as_str()).map_err(|e| e.to_string());
    }
    let certificates = redis::TlsCertificates {
        client_tls,
        root_cert,
    };
    redis::Client::build_with_tls(config.url.as_str(), certificates)
        .map_err(|e| format!("redis TLS files: {e}"))
}

/// The hash holding a tenant's limits.
pub fn redis_key(tenant: &TenantId) -> String {
    format!("tenantd:rate:{{{tenant}}}")
}

impl RedisRates {
    /// The limiter's store on the Redis `config` names, over TLS with its
    /// authorities and client certificate for a `rediss://` URL. Nothing is
    /// connected yet; files that cannot be read or parsed are refused here.
    pub fn new(config: &RedisConfig) -> Result<Self, Unavailable> {
        let client = redis_client(config).map_err(|e| Unavailable(e.to_string()))?;
        Ok(Self {
            client,
            connection: OnceCell::new(),
            script: redis::Script::new(GCRA_LUA),
            timeout: config.timeout,
            retry_connect_at: AtomicU64::new(0),
            epoch: SystemClock.instant(),
        })
    }

    /// Longest a call may wait for Redis.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The shared connection, opened on first use. It reconnects by itself
    /// once opened; a failed first open is retried after a second, so that
    /// requests meanwhile do not each wait for a connect timeout.
    pub(crate) async fn connection(&self) -> Result<ConnectionManager, Unavailable> {
        if let Some(c) = self.connection.get() {
            return Ok(c.clone());
        }
        // Reconnection follows real time, as the real Redis does.
        let now_ms = (SystemClock.instant() - self.epoch).as_millis() as u64;
        if now_ms < self.retry_connect_at.load(Ordering::Relaxed) {
            return Err(Unavailable("not connected; retrying shortly".into()));
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1)
            .set_max_delay(1000);
        let opened = self
            .connection
            .get_or_try_init(|| self.client.get_connection_manager_with_config(config))
            .await;
        match opened {
            Ok(c) => Ok(c.clone()),
            Err(e) => {
                self.retry_connect_at
                    .store(now_ms + 1000, Ordering::Relaxed);
                Err(Unavailable(e.to_string()))
            }
        }
    }
}

impl RateStore for RedisRates {
    async fn decide(
        &self,
        tenant: &TenantId,
        checks: &[RateCheck],
        now: u64,
        cost: u32,
    ) -> Result<Vec<Decision>, Unavailable> {
        let mut connection = self.connection().await?;
        let mut invocation = self.script.key(redis_key(tenant));
        invocation.arg(now).arg(cost);
        for check in checks {
            invocation
                .arg(check.slot)
                .arg(check.limit.interval())
                .arg(check.limit.burst());
        }
        let reply: Vec<i64> =
            tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection))
                .await
                .map_err(|_| Unavailable("Redis did not answer in time".into()))?
                .map_err(|e| Unavailable(e.to_string()))?;
        if reply.len() != checks.len() * 3 {
            return Err(Unavailable(format!(
                "the limiter script answered {} numbers for {} limits",
                reply.len(),
                checks.len()
            )));
        }
        let micros = |n: i64| Duration::from_micros(u64::try_from(n).unwrap_or(0));
        Ok(reply
            .chunks(3)
            .map(|r| {
                if r[0] == 1 {
                    Decision::Allowed {
                        tat: now + u64::try_from(r[2]).unwrap_or(0),
                        remaining: u32::try_from(r[1]).unwrap_or(0),
                        reset_after: micros(r[2]),
                    }
                } else {
                    Decision::Denied {
                        retry_after: micros(r[1]),
                        reset_after: micros(r[2]),
                    }
                }
            })
            .collect())
    }
}

/// The limiter the admission stage asks.
#[derive(Debug)]
pub enum Limiter {
    Memory(Arc<Ledgers>),
    Redis {
        redis: Arc<RedisRates>,
        /// Decides while Redis is unreachable, when failing open.
        local: Arc<Ledgers>,
        on_unavailable: FailMode,
        /// Redis's circuit: after a few failures the limiter stops calling
        /// it (deciding locally or refusing at once) until a probe answers.
        health: Arc<Dependency>,
    },
}

/// A limiter's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateOutcome {
    Decided(Vec<Decision>),
    /// Redis is unreachable and the limiter fails closed.
    Unavailable,
}

impl Limiter {
    pub fn new(redis: Option<&RedisConfig>, ledgers: Arc<Ledgers>) -> Result<Self, Unavailable> {
        Ok(match redis {
            None => Self::Memory(ledgers),
            Some(config) => Self::Redis {
                redis: Arc::new(RedisRates::new(config)?),
                local: ledgers,
                on_unavailable: config.on_unavailable,
                health: Dependency::new("redis", dependency_policy()),
            },
        })
    }

    /// The connection to Redis and its circuit, when the limiter uses it:
    /// shared quotas use both.
    pub fn redis(&self) -> Option<(&Arc<RedisRates>, &Arc<Dependency>)> {
        match self {
            Self::Memory(_) => None,
            Self::Redis { redis, health, .. } => Some((redis, health)),
        }
    }

    /// Redis's circuit and what the limiter does without Redis, when it
    /// uses Redis.
    pub fn dependency(&self) -> Option<(&Arc<Dependency>, FailMode)> {
        match self {
            Self::Memory(_) => None,
            Self::Redis {
                health,
                on_unavailable,
                ..
            } => Some((health, *on_unavailable)),
        }
    }

    pub async fn decide(&self, tenant: &TenantId, checks: &[RateCheck], now: u64) -> RateOutcome {
        match self {
            Self::Memory(memory) => {
                RateOutcome::Decided(memory.decide_rates(tenant, checks, now, 1))
            }
            Self::Redis {
                redis,
                local,
                on_unavailable,
                health,
            } => {
                // The circuit logs Redis going down and coming back, once
                // each; a decision taken without Redis logs nothing.
                let decided = match health.enter() {
                    Ok(call) => match redis.decide(tenant, checks, now, 1).await {
                        Ok(decisions) => {
                            call.finish(Ok(()));
                            Some(decisions)
                        }
                        Err(e) => {
                            call.finish(Err(&e));
                            None
                        }
                    },
                    Err(_) => None,
                };
                match (decided, on_unavailable) {
                    (Some(decisions), _) => RateOutcome::Decided(decisions),
                    (None, FailMode::FailOpen) => {
                        RateOutcome::Decided(local.decide_rates(tenant, checks, now, 1))
                    }
                    (None, FailMode::FailClosed) => RateOutcome::Unavailable,
                }
            }
        }
    }
}
