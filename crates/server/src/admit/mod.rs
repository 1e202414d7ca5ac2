//! Admit: what a verified tenant request passes before it runs, in order —
//! its rate limits, its quotas, a seat in the fair queue — and the deadline
//! it then runs under. Every response under admission carries `RateLimit`
//! and `RateLimit-Policy`; every refusal carries `Retry-After`.
//!
//! Invariant: the hot path touches no database. Limits, ledgers and seats
//! are in memory; usage is written behind by `meter`.
//!
//! Operator requests are the control plane: they are not admitted and count
//! against no tenant.

pub mod headers;
pub mod ledgers;
pub mod limiter;
pub mod seats;
pub mod shared_quotas;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use std::time::Duration;

use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tenantd_core::fair::Ask;
use tenantd_core::gcra::Decision;
use tenantd_core::plan::{Metric, OpClass, Period, Plan};
use tenantd_core::policy::{effective, Overrides};
use tenantd_core::quota::{BillingDay, Demand, QuotaDecision};
use tenantd_core::{Clock, DataScope, ErrorCode, PlanId, Principal, TenantId};

use tenantd_store::health::Dependency;
use tenantd_store::DataStore;

use crate::app::Change;
use crate::config::{AdmissionConfig, FailMode};
use crate::meter::{self, MeteredBody};
use crate::metrics::{Metrics, Rejection};
use crate::problem::ApiError;
use headers::RateHeaders;
use ledgers::Ledgers;
use limiter::{Limiter, RateCheck, RateOutcome, Unavailable};
use seats::{Refusal, Seat, Seats};
use shared_quotas::{Route, SharedQuotas, StrictAnswer, StrictAsk};

/// Where a shared quota decision stands (see `charge_quotas`).
enum QuotaStage {
    Start,
    /// This node's call for the tenant holds its gate.
    Gated,
    Answered(StrictAsk, StrictAnswer),
    /// Decided from this node's view: the plan shares nothing.
    Local,
    /// Decided by this node alone within its share of what was left: Redis
    /// is unavailable and the limiter fails open.
    Alone,
}

/// What a shared quota decision needs before it can be made.
enum QuotaStep {
    Wait(Arc<tokio::sync::Mutex<()>>),
    Ask(StrictAsk),
    /// Refused: deciding alone, this node's share of the quota is used up.
    PastShare(Metric, Period),
}

/// When a request refused for its node's share may try again: the share
/// ends when Redis answers again, which its probe checks this often.
const SHARE_RETRY: Duration = Duration::from_secs(1);

/// How request bodies are taken in: the server's largest body, and the time
/// a body has to arrive.
#[derive(Debug, Clone, Copy)]
pub struct BodyRules {
    pub max_bytes: u64,
    pub read_timeout: Duration,
}

/// The admission stage's state, shared by every request.
#[derive(Debug)]
pub struct Admission {
    config: AdmissionConfig,
    body: BodyRules,
    /// Where a request takes its place at a tenant's own database before
    /// it takes a seat.
    data: DataStore,
    /// Every version of every plan (index: version − 1). Read by every
    /// request without a lock; a new version (rare) swaps in a new map.
    plans: ArcSwap<HashMap<PlanId, Vec<Arc<Plan>>>>,
    /// Serializes the writers of `plans`.
    plans_writer: Mutex<()>,
    pub limiter: Limiter,
    /// Request and byte quotas counted with other nodes, when Redis is
    /// configured.
    pub shared_quotas: Option<SharedQuotas>,
    pub seats: Arc<Seats>,
    pub ledgers: Arc<Ledgers>,
    pub metrics: Metrics,
    clock: Arc<dyn Clock>,
}

/// Microseconds since the Unix epoch: the limiters' time scale.
fn micros(t: time::OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(0)
}

/// How long a refused write waits when a level (storage, records) is full:
/// nothing resets it by itself, so this is only a polite pause.
const LEVEL_RETRY: Duration = Duration::from_secs(60);

impl Admission {
    /// The stage with no plans yet; `add_plan_version` loads them.
    /// `dependencies` (the catalog, the storage pools) are reported in
    /// `/metrics` with Redis, when the limiter uses it.
    pub fn new(
        config: &AdmissionConfig,
        body: BodyRules,
        data: DataStore,
        mut dependencies: Vec<Arc<Dependency>>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, Unavailable> {
        let ledgers = Arc::new(Ledgers::default());
        let seats = Seats::with_tenant_ceiling(
            config.seats,
            config.tenant_max_seats.of(config.seats),
            config.discipline,
        );
        let limiter = Limiter::new(config.redis.as_ref(), ledgers.clone())?;
        dependencies.extend(limiter.dependency().map(|(redis, _)| redis.clone()));
        let metrics = Metrics::new(
            seats.clone(),
            ledgers.clone(),
            dependencies,
            config.metrics_tenants,
        );
        let shared_quotas =
            limiter
                .redis()
                .zip(config.redis.as_ref())
                .map(|((redis, health), settings)| {
                    SharedQuotas::new(
                        redis.clone(),
                        health.clone(),
                        settings.quota_sync_interval.get(),
                        settings.quota_strict_margin.into(),
                        clock.clone(),
                    )
                    .counting_calls(metrics.shared_quota_calls())
                });
        Ok(Self {
            limiter,
            shared_quotas,
            metrics,
            seats,
            ledgers,
            plans: ArcSwap::default(),
            plans_writer: Mutex::default(),
            config: config.clone(),
            body,
            data,
            clock,
        })
    }

    fn read_plans(&self) -> arc_swap::Guard<Arc<HashMap<PlanId, Vec<Arc<Plan>>>>> {
        self.plans.load()
    }

    /// Records version `version` of a plan (versions arrive in order). The
    /// map is copied: O(plans), which are few, and never per tenant.
    pub fn add_plan_version(&self, version: i64, plan: Plan) {
        let _writer = self
            .plans_writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut plans = HashMap::clone(&self.plans.load());
        let versions = plans.entry(plan.id.clone()).or_default();
        if usize::try_from(version).ok() == Some(versions.len() + 1) {
            versions.push(Arc::new(plan));
            self.plans.store(Arc::new(plans));
        }
    }

    /// The latest version number of plan `id`, if it exists.
    pub fn latest_version(&self, id: &PlanId) -> Option<i64> {
        self.read_plans()
            .get(id)
            .and_then(|v| i64::try_from(v.len()).ok())
            .filter(|&n| n > 0)
    }

    /// Whether plan `id` has version `version` (its latest when `None`).
    pub fn has_plan(&self, id: &PlanId, version: Option<i64>) -> bool {
        let latest = self.latest_version(id).unwrap_or(0);
        version.map_or(latest > 0, |v| (1..=latest).contains(&v))
    }

    /// Plan `id` at `version`, or its latest; the default plan for an id
    /// no longer known (start-up warns about those).
    pub fn plan(&self, id: &PlanId, version: Option<i64>) -> Arc<Plan> {
        let plans = self.read_plans();
        let at = |versions: &Vec<Arc<Plan>>| {
            let index = version.and_then(|v| usize::try_from(v - 1).ok());
            index
                .and_then(|i| versions.get(i))
                .or_else(|| versions.last())
                .cloned()
        };
        plans
            .get(id)
            .and_then(at)
            .or_else(|| {
                plans
                    .get(&PlanId::default_plan())
                    .and_then(|v| v.last().cloned())
            })
            .unwrap_or_else(|| Arc::new(Plan::default_plan()))
    }

    /// The plan a tenant is held to now: its plan named `id` (pinned at
    /// `version`, or the latest), with the overrides of its policy in effect.
    /// Made once per change of either, then cached beside the tenant's ledger.
    pub fn effective_plan(
        &self,
        tenant: &TenantId,
        id: &PlanId,
        version: Option<i64>,
    ) -> Arc<Plan> {
        let base = self.plan(id, version);
        self.ledgers.with(tenant, |usage| {
            let Some(overrides) = &usage.overrides else {
                return base;
            };
            if let Some((_, cached)) = usage
                .effective
                .as_ref()
                .filter(|(made_from, _)| Arc::ptr_eq(made_from, &base))
            {
                return cached.clone();
            }
            match effective(&base, overrides) {
                Ok(plan) => {
                    let plan = Arc::new(plan);
                    usage.effective = Some((base, plan.clone()));
                    plan
                }
                Err(e) => {
                    // Possible only if the configured plan changed under
                    // the overrides; the plan alone still holds.
                    tracing::warn!(tenant = %tenant, error = %e, "a tenant's overrides do not fit its plan; applying the plan alone");
                    base
                }
            }
        })
    }

    /// Puts in effect what `change` changed for admission: a plan's new
    /// version, a tenant's overrides or add-on (from its next request on), a
    /// purged tenant's state gone.
    pub fn apply(&self, change: Change) {
        match change {
            Change::PlanVersion { version, plan } => self.add_plan_version(version, plan),
            Change::Policy { tenant, overrides } => self.set_overrides(&tenant, overrides),
            Change::TenantPurged { tenant, .. } => self.ledgers.forget(&tenant),
            Change::AddOns {
                tenant,
                add_ons,
                through,
            } => self
                .ledgers
                .with(&tenant, |usage| usage.replace_add_ons(add_ons, through)),
            Change::Key(_) | Change::Tenant(_) | Change::ProxyCachePurged { .. } => {}
        }
    }

    /// Puts a tenant's new overrides in effect, from its next request on.
    pub fn set_overrides(&self, tenant: &TenantId, overrides: Option<Overrides>) {
        self.ledgers.with(tenant, |usage| {
            usage.overrides = overrides.map(Arc::new);
            usage.effective = None;
        });
    }

    fn refuse(
        &self,
        tenant: &TenantId,
        reason: Rejection,
        error: ApiError,
        headers: RateHeaders,
    ) -> Response {
        self.metrics.rejected(reason);
        let now = self.clock.now();
        self.ledgers
            .with(tenant, |usage| usage.meter(now, |h| h.rejected += 1));
        let mut response = error.into_response();
        headers.apply(response.headers_mut());
        response
    }

    /// Admits `request` of class `class` for `principal` on `seats` (the
    /// global ones unless a service brings its own), runs it, and meters it.
    /// The phases, in order; each either hands on or answers with a refusal.
    pub async fn run(
        self: Arc<Self>,
        class: OpClass,
        principal: Principal,
        seats: Option<Arc<Seats>>,
        mut request: Request,
        next: Next,
    ) -> Response {
        let Some(mut admittee) = self.admittee(class, &principal, &request) else {
            request.extensions_mut().insert(principal);
            return next.run(request).await;
        };
        if let Err(error) = self.check_body_limit(&admittee) {
            return error.into_response();
        }
        if let Err((reason, error)) = self.check_rates(&mut admittee).await {
            return self.refuse(&admittee.tenant, reason, error, admittee.headers);
        }
        let data_scope = request.extensions().get::<DataScope>().cloned();
        let charge = match self.charge_quotas(&mut admittee, data_scope.as_ref()).await {
            Ok(charge) => charge,
            Err((reason, error)) => {
                return self.refuse(&admittee.tenant, reason, error, admittee.headers)
            }
        };
        let request = match self.take_body(&admittee, request).await {
            Ok(request) => request,
            Err((reason, error)) => return self.refuse_charged(charge, admittee, reason, error),
        };
        // A place at the tenant's own database, if it has one on a server:
        // waiting for it is waiting for the tenant's own resource, so it
        // happens before the seat, bounded by the acquire timeout.
        let reservation = match &data_scope {
            Some(scope) => match self.data.reserve(scope).await {
                Ok(reservation) => Some(reservation),
                Err(e) => {
                    let reason = Rejection::StoreUnavailable;
                    return self.refuse_charged(charge, admittee, reason, e.into());
                }
            },
            None => None,
        };
        let seats = seats.as_ref().unwrap_or(&self.seats);
        let seat = match self.take_seat(&admittee, seats).await {
            Ok(seat) => seat,
            Err((reason, error)) => return self.refuse_charged(charge, admittee, reason, error),
        };
        // From here the request runs: its charge stands.
        let running = charge.commit(class);
        let mut request = request;
        request.extensions_mut().insert(principal);
        let response = self.run_under_deadline(class, next.run(request)).await;
        running.finish(&seat, data_scope, self.clock.now());
        drop(seat);
        drop(reservation);
        self.meter_response(admittee, response)
    }

    /// The tenant, plan and time a request is admitted under; `None` for a
    /// request with no tenant (an operator's), which is not admitted.
    fn admittee(
        &self,
        class: OpClass,
        principal: &Principal,
        request: &Request,
    ) -> Option<Admittee> {
        let (tenant, plan_id) = (principal.tenant()?, principal.plan()?);
        let plan = self.effective_plan(tenant, plan_id, principal.plan_version());
        let declared_length = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let bodiless = declared_length.is_none_or(|length| length == 0)
            && !request.headers().contains_key(header::TRANSFER_ENCODING);
        Some(Admittee {
            tenant: tenant.clone(),
            billing_day: principal.billing_day().unwrap_or_default(),
            // The edge refused lengths over the server's limit; this is the plan's.
            body_limit: plan
                .max_body_bytes
                .map_or(self.body.max_bytes, |limit| limit.min(self.body.max_bytes)),
            plan,
            class,
            now: self.clock.now(),
            declared_length,
            bodiless,
            // Read from the tenant's state when its quotas are charged.
            extra_seats: 0,
            estimate: 0,
            headers: RateHeaders::default(),
        })
    }

    /// Phase: a declared body over the plan's limit is refused before
    /// anything is counted.
    fn check_body_limit(&self, admittee: &Admittee) -> Result<(), ApiError> {
        let limit = admittee.body_limit;
        match admittee.declared_length.filter(|&length| length > limit) {
            Some(length) => Err(ApiError::with_detail(
                ErrorCode::PayloadTooLarge,
                format!("the plan allows bodies of {limit} bytes; this one has {length}"),
            )),
            None => Ok(()),
        }
    }

    /// Phase: the tenant's rate limit, and its class's if the plan sets one.
    async fn check_rates(&self, admittee: &mut Admittee) -> Result<(), (Rejection, ApiError)> {
        let (plan, class) = (&admittee.plan, admittee.class);
        let tenant_limit = RateCheck {
            slot: 0,
            limit: *plan.rate.limit(),
        };
        let class_limit = plan.class_rate(class).map(|rate| RateCheck {
            slot: 1 + class.index(),
            limit: *rate.limit(),
        });
        let checks: &[RateCheck] = match &class_limit {
            Some(class_limit) => &[tenant_limit, *class_limit],
            None => std::slice::from_ref(&tenant_limit),
        };
        let outcome = self
            .limiter
            .decide(&admittee.tenant, checks, micros(admittee.now))
            .await;
        let decisions = match outcome {
            RateOutcome::Unavailable => {
                let error = ApiError::new(ErrorCode::LimiterUnavailable);
                return Err((Rejection::LimiterUnavailable, error));
            }
            RateOutcome::Decided(decisions) => decisions,
        };
        admittee.headers.rates(plan, class, &decisions);
        let wait = decisions
            .iter()
            .filter_map(|d| match d {
                Decision::Denied { retry_after, .. } => Some(*retry_after),
                Decision::Allowed { .. } => None,
            })
            .max();
        match wait {
            Some(wait) => {
                let error = ApiError::with_detail(
                    ErrorCode::RateLimited,
                    format!(
                        "the rate limit allows another request in {} ms",
                        wait.as_millis().max(1)
                    ),
                )
                .retry_after(wait);
                Err((Rejection::RateLimited, error))
            }
            None => Ok(()),
        }
    }

    /// Phase: the quotas, checked and charged in one step so that the hard
    /// limit is exact. The charge refunds itself unless the request runs.
    async fn charge_quotas(
        self: &Arc<Self>,
        admittee: &mut Admittee,
        data_scope: Option<&DataScope>,
    ) -> Result<Charge, (Rejection, ApiError)> {
        let (class, now) = (admittee.class, admittee.now);
        let demand = Demand {
            ingress_bytes: admittee.declared_length,
            writes: class == OpClass::Write,
        };
        // A tenant's own control-plane requests (keys, audit, usage, policy)
        // are limited and queued but count against no quota: a tenant that
        // used up its quota can still see it and change it.
        let counts_against_quotas = class != OpClass::Admin;
        let default_estimate = micros_of(self.config.classes.get(class).estimate);
        let billing_day = admittee.billing_day;
        let shared = self
            .shared_quotas
            .as_ref()
            .filter(|_| counts_against_quotas);
        // With shared quotas, the decision may be made in Redis (`strict`):
        // the tenant's state is entered again once this node's call for it
        // holds the tenant's gate, and again with Redis's answer.
        let mut stage = QuotaStage::Start;
        let mut _gate = None;
        let decision = loop {
            let admitting = &*admittee;
            let (tenant, plan) = (&admitting.tenant, &admitting.plan);
            let step = self.ledgers.with(tenant, |usage| {
                if let Some(shared) = shared {
                    match std::mem::replace(&mut stage, QuotaStage::Local) {
                        QuotaStage::Start => {
                            if let Route::Strict(gate) = shared.route(usage, plan, now) {
                                return Err(QuotaStep::Wait(gate));
                            }
                        }
                        QuotaStage::Gated => {
                            let ask =
                                shared.strict_ask(tenant, usage, plan, billing_day, now, demand);
                            if let Some(ask) = ask {
                                return Err(QuotaStep::Ask(ask));
                            }
                        }
                        QuotaStage::Answered(ask, answer) => shared.settle(usage, ask, &answer),
                        QuotaStage::Alone => {
                            if let Some((metric, period)) = shared.past_share(usage, demand) {
                                return Err(QuotaStep::PastShare(metric, period));
                            }
                        }
                        QuotaStage::Local => {}
                    }
                }
                let asks = (demand, default_estimate);
                Ok(self.decide_quotas(admitting, usage, data_scope, counts_against_quotas, asks))
            });
            stage = match step {
                Ok(decision) => break decision,
                Err(QuotaStep::Wait(gate)) => {
                    _gate = Some(gate.lock_owned().await);
                    QuotaStage::Gated
                }
                Err(QuotaStep::Ask(ask)) => match shared {
                    Some(shared) => match shared.decide(&ask).await {
                        Ok(answer) => QuotaStage::Answered(ask, answer),
                        Err(_) => match self.config.redis.as_ref().map(|r| r.on_unavailable) {
                            Some(FailMode::FailClosed) => {
                                let error = ApiError::new(ErrorCode::LimiterUnavailable);
                                return Err((Rejection::LimiterUnavailable, error));
                            }
                            _ => QuotaStage::Alone,
                        },
                    },
                    None => QuotaStage::Local,
                },
                Err(QuotaStep::PastShare(metric, period)) => {
                    let error = ApiError::with_detail(
                        ErrorCode::QuotaExceeded,
                        format!(
                            "the shared {} per {} quota cannot be counted now (Redis is unavailable): this node has admitted its share of what was left",
                            metric.as_str(),
                            period.as_str()
                        ),
                    )
                    .retry_after(SHARE_RETRY);
                    return Err((Rejection::QuotaExceeded, error));
                }
            };
        };
        let (decision, extra_seats, estimate) = decision;
        admittee.extra_seats = extra_seats;
        admittee.estimate = estimate;
        self.answer_quotas(admittee, decision, counts_against_quotas, default_estimate)
    }

    /// The local decision on the tenant's quotas, with its metering; with
    /// shared quotas, also what the replays and the next decision need.
    fn decide_quotas(
        &self,
        admittee: &Admittee,
        usage: &mut ledgers::TenantUsage,
        data_scope: Option<&DataScope>,
        counts_against_quotas: bool,
        (demand, default_estimate): (Demand, u64),
    ) -> (QuotaDecision, u64, u64) {
        let (plan, class, now) = (&admittee.plan, admittee.class, admittee.now);
        if usage.admitted_total == 0 && usage.measure_storage.is_none() {
            // First request since start: measure storage for the level quotas.
            usage.measure_storage = data_scope.cloned().map(Box::new);
        }
        let decision = if counts_against_quotas {
            let add_ons = &usage.add_ons;
            usage
                .ledger
                .admit(&plan.quotas, add_ons, admittee.billing_day, now, demand)
        } else {
            QuotaDecision::Allowed {
                nearest: None,
                over_soft: Vec::new(),
                events: Vec::new(),
            }
        };
        if let QuotaDecision::Allowed { events, .. } = &decision {
            usage.ledger_changed();
            usage.admitted_total += 1;
            usage.meter(now, |h| h.requests += 1);
            usage.note(now, events.iter().copied());
        }
        let extra_seats = usage
            .add_ons
            .iter()
            .filter(|a| a.metric == Metric::ConcurrentRequests && a.expires_at > now)
            .map(|a| a.amount)
            .sum();
        let estimate = usage.estimate(class, default_estimate);
        if let Some(shared) = self
            .shared_quotas
            .as_ref()
            .filter(|_| counts_against_quotas)
        {
            shared.decided(&admittee.tenant, usage);
        }
        (decision, extra_seats, estimate)
    }

    /// The quota decision as the request's answer: a refusal with its
    /// problem, or the charge it runs under.
    fn answer_quotas(
        self: &Arc<Self>,
        admittee: &mut Admittee,
        decision: QuotaDecision,
        counts_against_quotas: bool,
        default_estimate: u64,
    ) -> Result<Charge, (Rejection, ApiError)> {
        let (billing_day, now) = (admittee.billing_day, admittee.now);
        match decision {
            QuotaDecision::Exceeded {
                standing,
                retry_after,
            } => {
                admittee.headers.quota(&standing, now.unix_timestamp());
                let what = match standing.quota.period() {
                    Some(period) => format!(
                        "{} per {}",
                        standing.quota.metric().as_str(),
                        period.as_str()
                    ),
                    None => standing.quota.metric().as_str().to_owned(),
                };
                let error = ApiError::with_detail(
                    ErrorCode::QuotaExceeded,
                    format!(
                        "the {what} quota is used up: {} of {}",
                        standing.used, standing.hard
                    ),
                )
                .retry_after(retry_after.unwrap_or(LEVEL_RETRY));
                Err((Rejection::QuotaExceeded, error))
            }
            QuotaDecision::Allowed {
                nearest, over_soft, ..
            } => {
                if let Some(nearest) = nearest {
                    admittee.headers.quota(&nearest, now.unix_timestamp());
                }
                admittee.headers.soft_warnings(&over_soft);
                Ok(Charge {
                    ledgers: self.ledgers.clone(),
                    tenant: admittee.tenant.clone(),
                    billing_day,
                    at: now,
                    counts_against_quotas,
                    default_estimate,
                    committed: false,
                })
            }
        }
    }

    /// Phase: the body, metered as it arrives. A data API body is read whole
    /// before the request queues for a seat: a client that sends it slowly
    /// holds nothing anyone else needs while it waits. A proxied body
    /// streams to the upstream, cut at the limit; it holds the tenant's
    /// bulkhead place and a seat within its ceiling meanwhile. Most proxied
    /// requests (GETs) have no body: without a length or a transfer coding,
    /// an HTTP/1.1 request has none, and it is handed on as it is.
    async fn take_body(
        self: &Arc<Self>,
        admittee: &Admittee,
        request: Request,
    ) -> Result<Request, (Rejection, ApiError)> {
        let limit = usize::try_from(admittee.body_limit).unwrap_or(usize::MAX);
        if admittee.class == OpClass::Proxy && admittee.bodiless {
            return Ok(request);
        }
        let request = meter::meter_request(request, self, &admittee.tenant, admittee.billing_day);
        if admittee.class == OpClass::Proxy {
            let (parts, body) = request.into_parts();
            let limited = http_body_util::Limited::new(body, limit);
            return Ok(Request::from_parts(parts, axum::body::Body::new(limited)));
        }
        read_body(request, limit, self.body.read_timeout).await
    }

    /// Phase: a seat, fairly, within the plan's concurrency cap.
    async fn take_seat(
        &self,
        admittee: &Admittee,
        seats: &Arc<Seats>,
    ) -> Result<Seat, (Rejection, ApiError)> {
        let class_config = self.config.classes.get(admittee.class);
        let cap = admittee.plan.concurrency_cap().map_or(u32::MAX, |c| {
            u32::try_from(c.saturating_add(admittee.extra_seats)).unwrap_or(u32::MAX)
        });
        let ask = Ask {
            width: class_config.width,
            cost: u64::from(class_config.width).saturating_mul(admittee.estimate),
            weight: admittee.plan.weight,
            cap,
            max_queue: self.config.max_queue,
        };
        let refusal = match seats
            .acquire(&admittee.tenant, ask, self.config.queue_wait.get())
            .await
        {
            Ok(seat) => {
                self.metrics.admitted(admittee.class, seat.waited);
                return Ok(seat);
            }
            Err(refusal) => refusal,
        };
        Err(match refusal {
            Refusal::QueueFull => (
                Rejection::TenantQueueFull,
                ApiError::with_detail(
                    ErrorCode::TenantQueueFull,
                    format!(
                        "{} of the tenant's requests are already waiting",
                        self.config.max_queue
                    ),
                )
                .retry_after(self.config.queue_wait.get()),
            ),
            Refusal::Overloaded => (
                Rejection::Overloaded,
                ApiError::with_detail(
                    ErrorCode::Overloaded,
                    format!(
                        "no seat was free within {} ms",
                        self.config.queue_wait.get().as_millis()
                    ),
                )
                .retry_after(self.config.queue_wait.get()),
            ),
        })
    }

    /// Phase: the route, under the class's deadline. A proxied request
    /// needs no timer of its own here: the gateway bounds its wait for the
    /// upstream by the service's `request_timeout`, which the configuration
    /// holds shorter than the class's deadline, and does nothing before that
    /// wait that could block.
    async fn run_under_deadline(
        &self,
        class: OpClass,
        route: impl std::future::Future<Output = Response>,
    ) -> Response {
        if class == OpClass::Proxy {
            return route.await;
        }
        let deadline = self.config.classes.get(class).deadline;
        match tokio::time::timeout(deadline, route).await {
            Ok(response) => response,
            Err(_) => {
                self.metrics.rejected(Rejection::DeadlineExceeded);
                ApiError::with_detail(
                    ErrorCode::DeadlineExceeded,
                    format!(
                        "{} requests must finish within {} ms",
                        class.as_str(),
                        deadline.as_millis()
                    ),
                )
                .retry_after(Duration::from_secs(1))
                .into_response()
            }
        }
    }

    /// Phase: the response carries the rate headers, and its bytes are
    /// charged as they stream out.
    fn meter_response(self: Arc<Self>, admittee: Admittee, mut response: Response) -> Response {
        admittee.headers.apply(response.headers_mut());
        let (parts, body) = response.into_parts();
        let body = MeteredBody::new(
            body,
            self,
            admittee.tenant,
            admittee.billing_day,
            Metric::EgressBytes,
        );
        Response::from_parts(parts, axum::body::Body::new(body))
    }

    /// A refusal after the quotas were charged: the charge is refunded (by
    /// dropping it) before the refusal is counted.
    fn refuse_charged(
        &self,
        charge: Charge,
        admittee: Admittee,
        reason: Rejection,
        error: ApiError,
    ) -> Response {
        drop(charge);
        self.refuse(&admittee.tenant, reason, error, admittee.headers)
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
}

/// Reads `request`'s body whole, at most `limit` bytes within `timeout`, and
/// hands the request on with the bytes read.
async fn read_body(
    request: Request,
    limit: usize,
    timeout: Duration,
) -> Result<Request, (Rejection, ApiError)> {
    use http_body_util::BodyExt;
    let (parts, body) = request.into_parts();
    let limited = http_body_util::Limited::new(body, limit);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Ok(Ok(collected)) => Ok(Request::from_parts(
            parts,
            axum::body::Body::from(collected.to_bytes()),
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err((
            Rejection::BodyTooLarge,
            ApiError::with_detail(
                ErrorCode::PayloadTooLarge,
                format!("bodies may have at most {limit} bytes"),
            ),
        )),
        Ok(Err(e)) => Err((
            Rejection::BodyUnreadable,
            ApiError::invalid_body(format!("the request body could not be read: {e}")),
        )),
        Err(_) => Err((
            Rejection::BodyTimeout,
            ApiError::with_detail(
                ErrorCode::BodyTimeout,
                format!("the body did not arrive within {} s", timeout.as_secs_f64()),
            ),
        )),
    }
}

/// One tenant request as admission sees it, from its plan to its seat.
#[derive(Debug)]
struct Admittee {
    tenant: TenantId,
    billing_day: BillingDay,
    /// The plan in effect, overrides applied.
    plan: Arc<Plan>,
    class: OpClass,
    /// When admission began: the time its limits and quotas are read at.
    now: time::OffsetDateTime,
    declared_length: Option<u64>,
    /// No length and no transfer coding: the request has no body.
    bodiless: bool,
    /// The plan's body limit within the server's.
    body_limit: u64,
    /// Seats bought as add-ons, above the plan's concurrency cap.
    extra_seats: u64,
    /// The request's expected service time (µs), its cost in the fair queue.
    estimate: u64,
    headers: RateHeaders,
}

/// A request's charge against its tenant's quotas and metering, taken when
/// the quotas admitted it. A request refused or abandoned before it runs
/// has not run, so it does not count: the charge refunds itself when
/// dropped, unless it was committed.
#[must_use]
struct Charge {
    ledgers: Arc<Ledgers>,
    tenant: TenantId,
    billing_day: BillingDay,
    at: time::OffsetDateTime,
    counts_against_quotas: bool,
    default_estimate: u64,
    committed: bool,
}

impl Charge {
    /// The request runs: the charge stands, and the request counts in its
    /// tenant's `concurrent_requests` level until it ends.
    fn commit(mut self, class: OpClass) -> Running {
        self.committed = true;
        self.ledgers.with(&self.tenant, |usage| {
            let level = usage.ledger.level(Metric::ConcurrentRequests);
            usage
                .ledger
                .set_level(Metric::ConcurrentRequests, level + 1);
        });
        Running {
            charge: self,
            class,
            finished: false,
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let (day, at) = (self.billing_day, self.at);
        let counts = self.counts_against_quotas;
        self.ledgers.with(&self.tenant, |usage| {
            if counts {
                usage.ledger.refund_request(day, at.unix_timestamp());
            }
            usage.meter(at, |h| h.requests = h.requests.saturating_sub(1));
            usage.admitted_total = usage.admitted_total.saturating_sub(1);
        });
    }
}

/// A request that runs, counted in its tenant's `concurrent_requests` level
/// however it ends.
struct Running {
    /// Committed: it refunds nothing.
    charge: Charge,
    class: OpClass,
    finished: bool,
}

impl Running {
    /// The request ended after holding `seat`: its seat time is metered, its
    /// class's estimate learns from it, a write has storage measured again,
    /// and it leaves the level; one visit to the tenant's state for all.
    fn finish(mut self, seat: &Seat, data_scope: Option<DataScope>, now: time::OffsetDateTime) {
        self.finished = true;
        let (held, width) = (seat.held(), seat.width());
        let (class, default_estimate) = (self.class, self.charge.default_estimate);
        self.charge.ledgers.with(&self.charge.tenant, |usage| {
            let seat_micros = u64::from(width).saturating_mul(micros_of(held));
            usage.meter(now, |h| h.seat_micros += seat_micros);
            usage.measured(class, micros_of(held), default_estimate);
            if class == OpClass::Write {
                usage.measure_storage = data_scope.map(Box::new);
            }
            leave_level(usage);
        });
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.finished {
            self.charge.ledgers.with(&self.charge.tenant, leave_level);
        }
    }
}

fn leave_level(usage: &mut ledgers::TenantUsage) {
    let level = usage.ledger.level(Metric::ConcurrentRequests);
    usage
        .ledger
        .set_level(Metric::ConcurrentRequests, level.saturating_sub(1));
}

fn micros_of(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
