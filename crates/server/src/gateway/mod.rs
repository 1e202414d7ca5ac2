//! Gateway: the team's own services behind `/v1/proxy/{service}/…`. A request
//! arrives here identified and admitted; the gateway answers from the
//! tenant's cache, or checks the tenant's bulkhead and circuit for the
//! service, signs the tenant context and forwards the request, streaming both
//! bodies.
//!
//! Invariant: what protects a service from a tenant (in-flight bulkhead,
//! circuit breaker, cache entries) is kept per (tenant, service), so one
//! tenant's failures or load never refuse another tenant's calls.

pub mod cache;
pub mod context;
mod forward;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tenantd_core::breaker::{Breaker, BreakerPolicy, CallKind, Outcome};
use tenantd_core::plan::OpClass;
use tenantd_core::{Clock, Role, ServiceName, TenantId};
use tenantd_store::{Catalog, StoreError};

use crate::admit::seats::Seats;
use crate::config::{AdmissionConfig, GatewayConfig, ServiceConfig};
use cache::ResponseCache;
use context::Keyring;
pub use forward::{forward, Caller};

/// Why an operator key cannot call a service.
pub const OPERATORS_HAVE_NO_TENANT: &str =
    "operator keys have no tenant; call services with a key of the tenant";

/// Tenants' circuits to a service remembered at most. The least used go
/// first: a tenant whose circuit is open keeps calling, so its circuit is
/// among the most used.
const CIRCUITS_KEPT: usize = 100_000;

/// Idle upstream connections kept per upstream host.
const IDLE_CONNECTIONS_PER_HOST: usize = 64;

/// A connector whose whole connection, TCP and then TLS, is made within
/// `timeout`: `HttpConnector`'s own timeout covers the TCP part only, and an
/// upstream that takes the connection but never finishes its handshake
/// would otherwise hold the request until the service's `request_timeout`.
#[derive(Debug, Clone)]
pub struct Bounded<C> {
    inner: C,
    timeout: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<C> tower::Service<axum::http::Uri> for Bounded<C>
where
    C: tower::Service<axum::http::Uri>,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, upstream: axum::http::Uri) -> Self::Future {
        let connecting = self.inner.call(upstream);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(connected) => connected.map_err(Into::into),
                Err(_) => Err(format!(
                    "the connection (TCP, then TLS) was not made within {} ms",
                    timeout.as_millis()
                )
                .into()),
            }
        })
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A service's TLS files cannot be used.
    #[error("service {service}: {error}")]
    Tls {
        service: ServiceName,
        error: crate::tls::TlsError,
    },
}

/// Everything the gateway holds.
#[derive(Debug)]
pub struct Gateway {
    services: HashMap<ServiceName, Arc<Service>>,
    pub keyring: Keyring,
    pub cache: ResponseCache,
}

impl Gateway {
    pub async fn new(
        config: &GatewayConfig,
        admission: &AdmissionConfig,
        catalog: &Catalog,
        clock: &Arc<dyn Clock>,
    ) -> Result<Self, GatewayError> {
        let services = config
            .services
            .iter()
            .map(|s| {
                let service =
                    Service::new(s, admission, clock).map_err(|error| GatewayError::Tls {
                        service: s.name.clone(),
                        error,
                    })?;
                Ok((s.name.clone(), Arc::new(service)))
            })
            .collect::<Result<_, GatewayError>>()?;
        Ok(Self {
            services,
            keyring: Keyring::load(catalog, &config.context, clock.now()).await?,
            cache: ResponseCache::new(&config.cache, clock.clone()),
        })
    }

    pub fn service(&self, name: &ServiceName) -> Option<&Arc<Service>> {
        self.services.get(name)
    }
}

/// Which service owns each configured host.
#[derive(Debug, Clone, Default)]
pub struct HostRoutes(Arc<HashMap<String, ServiceName>>);

/// Marks a request routed to its service by its `Host`.
#[derive(Debug, Clone, Copy)]
pub struct RoutedByHost;

impl HostRoutes {
    pub fn new(config: &GatewayConfig) -> Self {
        let hosts = config
            .services
            .iter()
            .flat_map(|s| s.hosts.iter().map(|h| (h.clone(), s.name.clone())))
            .collect();
        Self(Arc::new(hosts))
    }

    /// Rewrites a request for a service's host to the service's proxy
    /// route, before routing, so it passes the same table row, access
    /// check and admission as `/v1/proxy/{service}/…`.
    pub fn route(&self, mut request: axum::extract::Request) -> axum::extract::Request {
        if self.0.is_empty() {
            return request;
        }
        let host = request
            .headers()
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| h.rsplit_once(':').map_or(h, |(name, _port)| name))
            .map(str::to_ascii_lowercase);
        let Some(service) = host.and_then(|h| self.0.get(&h)) else {
            return request;
        };
        let target = match request.uri().path_and_query() {
            Some(pq) if pq.path() != "/" => format!("/v1/proxy/{service}{pq}"),
            Some(pq) => format!(
                "/v1/proxy/{service}{}",
                pq.query().map_or(String::new(), |q| format!("?{q}"))
            ),
            None => format!("/v1/proxy/{service}"),
        };
        if let Ok(uri) = target.parse() {
            *request.uri_mut() = uri;
            request.extensions_mut().insert(RoutedByHost);
        }
        request
    }
}

/// One service behind the gateway.
#[derive(Debug)]
pub struct Service {
    pub config: ServiceConfig,
    /// The service's own fair queue, when it declares its capacity.
    pub seats: Option<Arc<Seats>>,
    client: Client<Bounded<HttpsConnector<HttpConnector>>, axum::body::Body>,
    breaker: BreakerPolicy,
    circuits: quick_cache::sync::Cache<TenantId, Arc<TenantCircuit>>,
    /// Where the next request starts among the upstreams (round robin).
    next_upstream: AtomicUsize,
    /// `X-Forwarded-Prefix`: the path under which clients reach the service.
    forwarded_prefix: axum::http::HeaderValue,
    /// The service's name as its metrics label.
    label: crate::metrics::ServiceLabel,
    /// Whose instants the breakers read.
    clock: Arc<dyn Clock>,
}

impl Service {
    fn new(
        config: &ServiceConfig,
        admission: &AdmissionConfig,
        clock: &Arc<dyn Clock>,
    ) -> Result<Self, crate::tls::TlsError> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        // The https connector below takes `https://` upstreams.
        connector.enforce_http(false);
        let speaks_tls = config
            .upstreams
            .iter()
            .any(|u| u.scheme == axum::http::uri::Scheme::HTTPS);
        let tls = crate::tls::client_config(&config.tls, speaks_tls)?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let connector = if config.http2 {
            https.enable_all_versions().wrap_connector(connector)
        } else {
            https.enable_http1().wrap_connector(connector)
        };
        let mut client = Client::builder(TokioExecutor::new());
        client
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(IDLE_CONNECTIONS_PER_HOST);
        // In the clear, HTTP/2 has no ALPN to agree on it: prior knowledge
        // (a service with http2 has upstreams of one scheme only).
        if config.http2 && !speaks_tls {
            client.http2_only(true);
        }
        let client = client.build(Bounded {
            inner: connector,
            timeout: config.connect_timeout,
        });
        Ok(Self {
            seats: config.seats.map(|seats| {
                Seats::with_tenant_ceiling(
                    seats,
                    admission.tenant_max_seats.of(seats),
                    admission.discipline,
                )
            }),
            client,
            breaker: config.breaker.policy(),
            circuits: quick_cache::sync::Cache::new(CIRCUITS_KEPT),
            next_upstream: AtomicUsize::new(0),
            forwarded_prefix: axum::http::HeaderValue::try_from(format!(
                "/v1/proxy/{}",
                config.name
            ))
            .expect("a service name is a slug"),
            label: crate::metrics::ServiceLabel::new(&config.name),
            clock: clock.clone(),
            config: config.clone(),
        })
    }

    pub fn class(&self) -> OpClass {
        self.config.class
    }

    pub fn allows(&self, role: Role) -> bool {
        self.config.allowed_roles.contains(&role)
    }

    fn circuit(&self, tenant: &TenantId) -> Arc<TenantCircuit> {
        let created = self.circuits.get_or_insert_with(tenant, || {
            Ok::<_, std::convert::Infallible>(Arc::new(TenantCircuit {
                in_flight: AtomicU32::new(0),
                breaker: Mutex::new(Breaker::new(self.clock.instant())),
            }))
        });
        match created {
            Ok(circuit) => circuit,
            Err(never) => match never {},
        }
    }
}

/// One tenant's calls to one service.
#[derive(Debug)]
struct TenantCircuit {
    in_flight: AtomicU32,
    breaker: Mutex<Breaker>,
}

impl TenantCircuit {
    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        // The breaker's state is a few integers updated in one step; a
        // panic elsewhere cannot leave it half-written.
        self.breaker
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A place in a tenant's bulkhead for a service, given back on drop.
#[derive(Debug)]
struct InFlight(Arc<TenantCircuit>);

impl InFlight {
    fn enter(circuit: &Arc<TenantCircuit>, max: u32) -> Option<Self> {
        let before = circuit.in_flight.fetch_add(1, Ordering::AcqRel);
        if before >= max {
            circuit.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self(circuit.clone()))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A call the tenant's circuit let through; its outcome is recorded once,
/// and as abandoned if the caller goes away first.
#[derive(Debug)]
struct Call {
    circuit: Arc<TenantCircuit>,
    policy: BreakerPolicy,
    kind: CallKind,
    clock: Arc<dyn Clock>,
    recorded: bool,
}

impl Call {
    fn start(service: &Service, circuit: &Arc<TenantCircuit>) -> Result<Self, Duration> {
        let kind = circuit.breaker().try_call(service.clock.instant())?;
        Ok(Self {
            circuit: circuit.clone(),
            policy: service.breaker,
            kind,
            clock: service.clock.clone(),
            recorded: false,
        })
    }

    fn finish(mut self, outcome: Outcome) {
        self.record(outcome);
    }

    fn record(&mut self, outcome: Outcome) {
        if !self.recorded {
            self.recorded = true;
            self.circuit
                .breaker()
                .record(&self.policy, self.kind, outcome, self.clock.instant());
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.record(Outcome::Abandoned);
    }
}
