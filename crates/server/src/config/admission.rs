//! Admission's settings: seats, queues, classes and their deadlines, and the
//! shared limiter on Redis.

use super::pools::without_password;
use super::values::NonZeroDuration;
use super::ClientTls;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tenantd_core::fair::Discipline;
use tenantd_core::plan::OpClass;
use tenantd_core::share::Percent;

/// How requests are admitted: seats, queues, budgets, the shared limiter.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    /// Seats shared by all tenants' requests being served at once.
    pub seats: u32,
    /// `fair` (weighted fair queuing) or `fifo` (one queue, for comparison).
    pub discipline: Discipline,
    /// Most seats one tenant may hold at once, whatever its weight: a number
    /// of seats or a percentage of them (`"50%"`, the default). A plan's
    /// `concurrent_requests` quota can only lower it. Requests stuck on a
    /// hung client or a tenant's own database then hold at most this share,
    /// and every other tenant keeps the rest.
    pub tenant_max_seats: SeatShare,
    /// Most requests one tenant may have waiting for a seat.
    pub max_queue: u32,
    /// Longest a request waits for a seat before it gets 503 `overloaded`.
    pub queue_wait: NonZeroDuration,
    /// Width, deadline and first cost estimate of each operation class.
    pub classes: Classes,
    /// A Redis shared by several tenantd nodes for rate limits; each node
    /// decides alone (in memory) when unset.
    pub redis: Option<RedisConfig>,
    /// How often metered usage is written to the store.
    pub usage_flush_interval: NonZeroDuration,
    /// Tenants given their own series in `/metrics`; the rest are summed as `other`.
    pub metrics_tenants: usize,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            seats: 64,
            discipline: Discipline::Fair,
            tenant_max_seats: SeatShare::Percent(50),
            max_queue: 64,
            queue_wait: NonZeroDuration::from_secs(2),
            classes: Classes::default(),
            redis: None,
            usage_flush_interval: NonZeroDuration::from_secs(1),
            metrics_tenants: 20,
        }
    }
}

/// A part of a seat capacity: a number of seats, or a percentage of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SeatShareValue", into = "SeatShareValue")]
pub enum SeatShare {
    Seats(u32),
    Percent(u8),
}

/// How a `SeatShare` is written: `32` or `"50%"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum SeatShareValue {
    Seats(u32),
    Text(String),
}

impl TryFrom<SeatShareValue> for SeatShare {
    type Error = String;
    fn try_from(value: SeatShareValue) -> Result<Self, String> {
        let share = match value {
            SeatShareValue::Seats(n) => SeatShare::Seats(n),
            SeatShareValue::Text(text) => match text.trim().strip_suffix('%') {
                Some(percent) => SeatShare::Percent(
                    percent
                        .trim()
                        .parse()
                        .map_err(|_| format!("{text:?} is not a percentage"))?,
                ),
                None => SeatShare::Seats(
                    text.trim()
                        .parse()
                        .map_err(|_| format!("{text:?} is neither seats nor a percentage"))?,
                ),
            },
        };
        match share {
            SeatShare::Seats(0) => Err("a tenant needs at least one seat".into()),
            SeatShare::Percent(p) if !(1..=100).contains(&p) => {
                Err(format!("{p}% is not a percentage from 1 to 100"))
            }
            share => Ok(share),
        }
    }
}

impl From<SeatShare> for SeatShareValue {
    fn from(share: SeatShare) -> Self {
        match share {
            SeatShare::Seats(n) => SeatShareValue::Seats(n),
            SeatShare::Percent(p) => SeatShareValue::Text(format!("{p}%")),
        }
    }
}

impl SeatShare {
    /// The seats this share is of `capacity`: at least one, at most all.
    pub fn of(self, capacity: u32) -> u32 {
        let seats = match self {
            SeatShare::Seats(n) => n,
            SeatShare::Percent(p) => {
                u32::try_from(u64::from(capacity) * u64::from(p) / 100).unwrap_or(u32::MAX)
            }
        };
        seats.clamp(1, capacity.max(1))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Classes {
    pub read: ClassConfig,
    pub write: ClassConfig,
    pub admin: ClassConfig,
    pub proxy: ClassConfig,
}

impl Default for Classes {
    fn default() -> Self {
        let class = |width, deadline_secs, estimate_ms| ClassConfig {
            width,
            deadline: Duration::from_secs(deadline_secs),
            estimate: Duration::from_millis(estimate_ms),
        };
        Self {
            read: class(1, 10, 2),
            write: class(2, 15, 5),
            admin: class(1, 15, 5),
            proxy: class(1, 30, 20),
        }
    }
}

impl Classes {
    pub fn get(&self, class: OpClass) -> &ClassConfig {
        match class {
            OpClass::Read => &self.read,
            OpClass::Write => &self.write,
            OpClass::Admin => &self.admin,
            OpClass::Proxy => &self.proxy,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassConfig {
    /// Seats one request of the class holds.
    pub width: u32,
    /// Time a request of the class may run before it gets 504 `deadline_exceeded`.
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
    /// The service time assumed before any is measured.
    #[serde(with = "humantime_serde")]
    pub estimate: Duration,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`, or `rediss://` for TLS.
    pub url: String,
    /// TLS to a `rediss://` server: whom to trust, what to present (for
    /// `tls-auth-clients`).
    #[serde(default)]
    pub tls: ClientTls,
    /// What to do when Redis cannot be reached: `fail_open` decides on this
    /// node alone meanwhile; `fail_closed` answers 503 `limiter_unavailable`.
    pub on_unavailable: FailMode,
    /// Longest a limiter decision may wait for Redis.
    #[serde(with = "humantime_serde", default = "default_redis_timeout")]
    pub timeout: Duration,
    /// How often this node sends Redis the request and byte quota usage it
    /// admitted, and learns everyone's.
    #[serde(default = "default_quota_sync_interval")]
    pub quota_sync_interval: NonZeroDuration,
    /// How close to a hard limit (a percentage of it; further when other
    /// nodes add fast) a tenant's quota decisions are made in Redis itself.
    #[serde(default = "default_quota_strict_margin")]
    pub quota_strict_margin: Percent,
}

impl RedisConfig {
    /// Redis at `url`, with every other setting at its default.
    pub fn new(url: String, on_unavailable: FailMode) -> Self {
        Self {
            url,
            tls: ClientTls::default(),
            on_unavailable,
            timeout: default_redis_timeout(),
            quota_sync_interval: default_quota_sync_interval(),
            quota_strict_margin: default_quota_strict_margin(),
        }
    }
}

fn default_redis_timeout() -> Duration {
    Duration::from_millis(100)
}

fn default_quota_sync_interval() -> NonZeroDuration {
    NonZeroDuration::from_millis(10)
}

fn default_quota_strict_margin() -> Percent {
    Percent::of_const(1)
}

/// Shown without the password its URL may hold.
impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &without_password(&self.url))
            .field("tls", &self.tls)
            .field("on_unavailable", &self.on_unavailable)
            .field("timeout", &self.timeout)
            .field("quota_sync_interval", &self.quota_sync_interval)
            .field("quota_strict_margin", &self.quota_strict_margin)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    FailOpen,
    FailClosed,
}

impl AdmissionConfig {
    pub(super) fn check(&self) -> Result<(), String> {
        if !(1..=100_000).contains(&self.seats) {
            return Err("seats must be from 1 to 100000".into());
        }
        if !(1..=100_000).contains(&self.max_queue) {
            return Err("max_queue must be from 1 to 100000".into());
        }
        for class in OpClass::ALL {
            let c = self.classes.get(class);
            let name = class.as_str();
            if c.width == 0 || c.width > self.seats {
                return Err(format!(
                    "classes.{name}.width must be from 1 to seats ({})",
                    self.seats
                ));
            }
            if c.deadline.is_zero() || c.estimate.is_zero() {
                return Err(format!(
                    "classes.{name} needs a deadline and an estimate above zero"
                ));
            }
        }
        if let Some(redis) = &self.redis {
            if !(redis.url.starts_with("redis://") || redis.url.starts_with("rediss://")) {
                return Err("redis.url must start with redis:// or rediss://".into());
            }
            if redis.timeout.is_zero() {
                return Err("redis.timeout must be greater than zero".into());
            }
            redis
                .tls
                .check(redis.url.starts_with("rediss://"), "rediss://")
                .map_err(|e| format!("redis.{e}"))?;
        }
        Ok(())
    }
}
