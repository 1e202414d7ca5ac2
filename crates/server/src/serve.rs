//! Serving: the middleware stack around the router, the accept loop with
//! hyper's header-read timeout, graceful drain, and the background tasks
//! (write-behind of key use and of usage, purge of expired soft deletes).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tenantd_core::NodeId;
use tenantd_store::nodes::NodeRecord;
use tenantd_store::AuditAction;
use tenantd_store::{BackgroundTask, CatalogEngine, CatalogLease, NewAuditEntry, StoreError};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{CatalogUrl, Config};
use crate::edge::{self, ClientAddr};
use crate::gateway::HostRoutes;
use crate::meter;
use crate::parse_errors::{ParseErrorAnswers, ProblemStream};
use crate::routes;
use crate::start::Server;
use crate::state::AppState;
use crate::tls::Tls;

/// hyper refuses buffers under 8 KiB; headers past `max_header_bytes` are
/// answered with a problem by the edge, so hyper's own limit
/// only needs to stop a client that never ends its headers (answered with
/// a problem by `parse_errors`).
fn hyper_buffer_bytes(config: &Config) -> usize {
    (config.max_header_bytes * 2).max(64 * 1024)
}

/// Header lines hyper parses: as many as `max_header_bytes` holds in lines
/// of 32 bytes, so that its own count limit (a 431 from `parse_errors`) does
/// not fire before the byte limit that the edge answers with a
/// problem for any realistic request (512 lines for the default 16 KiB).
/// Not one per 5 bytes, the shortest line: hyper allocates room for every
/// line for every request, and room for 3,000 lines is an allocation large
/// enough to be mapped and unmapped each time (bench/gateway_compare.py:
/// 69 µs of server CPU per proxied request with it, 59 µs with 512 lines,
/// against 57 µs with hyper's default of 100).
fn max_header_count(config: &Config) -> usize {
    (config.max_header_bytes / 32).max(100)
}

fn app(state: AppState, config: &Config) -> Router {
    routes::router(state)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(from_fn_with_state(
            edge::EdgeLimits {
                header_bytes: config.max_header_bytes,
                body_bytes: config.max_body_bytes,
                request_timeout: config.request_timeout.get(),
            },
            edge::edge,
        ))
}

impl Server {
    /// Serves `listener` until `shutdown` resolves, then stops accepting,
    /// lets in-flight requests finish for up to `shutdown_timeout`, writes
    /// pending key use and closes the store.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        // The data directory's lock and the catalog's lease are held until
        // the server has stopped.
        let Server {
            config,
            state,
            lock: _lock,
            catalog_lease,
            change_position,
            tls,
            ..
        } = self;
        // A service's hosts are routed before the router sees the request.
        let hosts = HostRoutes::new(&config.gateway);
        let app = app(state.clone(), &config);
        let (stop_background, stopped) = watch::channel(false);
        // On SQLite this node is the only one, and makes every change itself.
        let shared = state.catalog.engine() == CatalogEngine::Postgres;
        let follower = shared.then(|| {
            tokio::spawn(crate::app::feed::follow(
                state.clone(),
                change_position,
                stopped.clone(),
            ))
        });
        let job_sweep = if shared {
            Some(tokio::spawn(take_over_jobs(state.clone(), stopped.clone())))
        } else {
            // Before anything is served, so that no job started now is
            // taken for one the previous run left.
            if let Err(e) = crate::app::moves::resume_orphans(&state).await {
                tracing::error!(error = %e, "could not take over the jobs the previous run left; they stay running until the next start");
            }
            None
        };
        let address = listener.local_addr()?.to_string();
        let background = [
            tokio::spawn(beat(state.clone(), address, stopped.clone())),
            tokio::spawn(flush_key_use(
                state.clone(),
                config.last_used_flush_interval.get(),
                stopped.clone(),
            )),
            tokio::spawn(purge_deleted(
                state.clone(),
                Duty::new(BackgroundTask::PurgeSweep, &config, &state.node.id),
                config.purge_after,
                config.purge_interval.get(),
                stopped.clone(),
            )),
            tokio::spawn(maintain_signing_keys(
                state.clone(),
                Duty::new(BackgroundTask::SigningKeys, &config, &state.node.id),
                stopped.clone(),
            )),
            tokio::spawn({
                let identity = state.identity.clone();
                let stopped = stopped.clone();
                async move { identity.refresh_due(stopped).await }
            }),
            tokio::spawn(probe_dependencies(state.clone(), stopped.clone())),
            tokio::spawn(replay_quotas(state.clone(), stopped.clone())),
            tokio::spawn(meter::write_behind(
                state.clone(),
                config.admission.usage_flush_interval.get(),
                stopped,
            )),
        ];

        // The catalog's lease, kept by a task of its own: losing it for good
        // (another node took it while this one's connection was down) stops
        // this node, which would otherwise serve beside the other.
        let lease_lost = Arc::new(tokio::sync::Notify::new());
        let lease_keeper = catalog_lease
            .zip(config.catalog_url.clone())
            .map(|(lease, url)| {
                tokio::spawn(keep_catalog_lease(
                    lease,
                    url,
                    state.node.id.clone(),
                    lease_lost.clone(),
                    stop_background.subscribe(),
                ))
            });
        let shutdown = async {
            tokio::select! {
                () = shutdown => {}
                () = lease_lost.notified() => {}
            }
        };

        let http = Arc::new(Protocols::new(&config));
        let parse_error_answers =
            ParseErrorAnswers::new(max_header_count(&config), hyper_buffer_bytes(&config));
        let graceful = GracefulShutdown::new();
        // The main listener speaks TLS unless TLS has a listener of its own.
        let separate_tls = config.tls.as_ref().and_then(|t| t.listen);
        let main_tls = tls.clone().filter(|_| separate_tls.is_none());
        let tls_listener = match separate_tls {
            Some(address) => Some(TcpListener::bind(address).await?),
            None => None,
        };
        let tls_watch = tls
            .clone()
            .map(|tls| tokio::spawn(tls.watch(stop_background.subscribe())));
        tracing::info!(address = %listener.local_addr()?, tls = main_tls.is_some(), node = %state.node.name, "listening");
        if let Some(extra) = &tls_listener {
            tracing::info!(address = %extra.local_addr()?, tls = true, "listening");
        }

        // One connection: its address, its TLS handshake if the listener
        // has one, then the service a `Host` names, one step before the
        // router; served until the drain ends it.
        let serve_one = |stream: tokio::net::TcpStream, peer, tls: Option<&Arc<Tls>>| {
            let hosts = hosts.clone();
            let client = ClientAddr::new(peer);
            let service = TowerToHyperService::new(tower::ServiceExt::map_request(
                app.clone(),
                move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(client.clone());
                    hosts.route(request.map(axum::body::Body::new))
                },
            ));
            let (http, answers, watcher) = (
                http.clone(),
                parse_error_answers.clone(),
                graceful.watcher(),
            );
            let handshake = tls.map(|tls| (tls.acceptor(), tls_handshake_timeout(&config)));
            let header_read_timeout = config.header_read_timeout.get();
            let state = state.clone();
            tokio::spawn(async move {
                let served = match handshake {
                    None => {
                        let h2 = starts_with_h2_preface(&stream, header_read_timeout).await;
                        http.serve(stream, h2, answers, service, watcher).await
                    }
                    Some((acceptor, timeout)) => {
                        let stream = match tokio::time::timeout(timeout, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                let reason = crate::tls::failure_reason(&e);
                                state.admission.metrics.tls_handshake_failed(reason);
                                tracing::info!(%peer, reason, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                state.admission.metrics.tls_handshake_failed("timeout");
                                tracing::info!(%peer, reason = "timeout", "TLS handshake failed");
                                return;
                            }
                        };
                        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                        http.serve(stream, h2, answers, service, watcher).await
                    }
                };
                if let Err(e) = served {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
        };

        let listeners = Listeners {
            main: (&listener, main_tls.as_ref()),
            tls: tls_listener.as_ref().zip(tls.as_ref()),
        };
        accept_until(&listeners, shutdown, &serve_one).await;
        // Not ready first, still serving: a load balancer polling `/readyz`
        // moves new requests to other nodes before this one stops accepting.
        state
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if !config.shutdown_notice.is_zero() {
            tracing::info!(notice = ?config.shutdown_notice, "shutting down: not ready, still serving");
            accept_until(
                &listeners,
                tokio::time::sleep(config.shutdown_notice),
                &serve_one,
            )
            .await;
        }
        // Closed: nothing new is accepted while in-flight requests finish.
        drop((listener, tls_listener));
        tracing::info!("shutting down: draining in-flight requests");
        if tokio::time::timeout(config.shutdown_timeout.get(), graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(timeout = ?config.shutdown_timeout, "drain timed out; closing remaining connections");
        }

        let _ = stop_background.send(true);
        for task in background
            .into_iter()
            .chain(lease_keeper)
            .chain(follower)
            .chain(job_sweep)
            .chain(tls_watch)
        {
            let _ = task.await;
        }
        if let Err(e) = state.identity.last_used().flush(&state.catalog).await {
            tracing::error!(error = %e, "could not write key use at shutdown");
        }
        state.catalog.close().await;
        state.data.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Sends Redis the shared quota usage this node admitted and learns
/// everyone's, every `quota_sync_interval`, and once more when stopping.
async fn replay_quotas(state: AppState, mut stopped: watch::Receiver<bool>) {
    let Some(shared) = &state.admission.shared_quotas else {
        return;
    };
    let ledgers = &state.admission.ledgers;
    loop {
        tokio::select! {
            () = tokio::time::sleep(shared.interval()) => shared.replay(ledgers).await,
            _ = stopped.changed() => {
                shared.replay(ledgers).await;
                return;
            }
        }
    }
}

/// Checks the catalog's lease every few seconds. A lease whose connection
/// dropped (PostgreSQL restarted, the network failed) is taken again; if
/// another node took it meanwhile, `lost` is notified and this node stops.
async fn keep_catalog_lease(
    mut lease: CatalogLease,
    url: CatalogUrl,
    node: NodeId,
    lost: Arc<tokio::sync::Notify>,
    mut stopped: watch::Receiver<bool>,
) {
    const EVERY: Duration = Duration::from_secs(2);
    loop {
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            _ = stopped.changed() => return,
        }
        // A hung PostgreSQL (no answer) leaves the lease standing: its lock
        // goes only with its connection.
        if lease.held(EVERY).await != Some(false) {
            continue;
        }
        tracing::warn!("lost the catalog's lease with its connection; taking it again");
        loop {
            match CatalogLease::take(url.as_str(), &node, EVERY).await {
                Ok(Some(again)) => {
                    tracing::info!("took the catalog's lease again");
                    lease = again;
                    break;
                }
                Ok(None) => {
                    tracing::error!(
                        "another node took the catalog's lease while this node's connection was \
                         down; this node stops, since one node serves a catalog at a time"
                    );
                    lost.notify_one();
                    return;
                }
                Err(_) => {}
            }
            tokio::select! {
                () = tokio::time::sleep(EVERY) => {}
                _ = stopped.changed() => return,
            }
        }
    }
}

/// How a connection is served once its protocol is known: HTTP/1.1 with its
/// header-read timeout and head limits, or HTTP/2 with its stream and reset
/// limits (each stream a request like any other from here on).
struct Protocols {
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

impl Protocols {
    fn new(config: &Config) -> Self {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout.get())
            .max_buf_size(hyper_buffer_bytes(config))
            .max_headers(max_header_count(config));
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(config.http2.max_concurrent_streams)
            .max_pending_accept_reset_streams(config.http2.max_pending_resets)
            .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX));
        Self { http1, http2 }
    }

    /// Serves `io` until it ends or the drain ends it. HTTP/1.1 goes through
    /// `ProblemStream`, which rewrites hyper's bare answers to requests it
    /// cannot parse; HTTP/2 has none.
    async fn serve<IO, S>(
        &self,
        io: IO,
        h2: bool,
        answers: Arc<ParseErrorAnswers>,
        service: S,
        watcher: hyper_util::server::graceful::Watcher,
    ) -> Result<(), hyper::Error>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        S: hyper::service::Service<
                hyper::Request<hyper::body::Incoming>,
                Response = axum::response::Response,
                Error = std::convert::Infallible,
            > + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        if h2 {
            watcher
                .watch(self.http2.serve_connection(TokioIo::new(io), service))
                .await
        } else {
            let io = TokioIo::new(ProblemStream::new(io, answers));
            watcher
                .watch(self.http1.serve_connection(io, service))
                .await
        }
    }
}

/// Whether a connection in the clear begins with HTTP/2's preface (a client
/// with prior knowledge), looked at without reading it. HTTP/1.1 differs
/// from its first byte, so it is told at once; a preface that arrives in
/// pieces is waited for, at most `within` (then HTTP/1.1's own header-read
/// timeout ends the connection).
async fn starts_with_h2_preface(stream: &tokio::net::TcpStream, within: Duration) -> bool {
    tokio::time::timeout(within, preface(stream))
        .await
        .unwrap_or(false)
}

async fn preface(stream: &tokio::net::TcpStream) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut seen = [0u8; PREFACE.len()];
    loop {
        let Ok(n) = stream.peek(&mut seen).await else {
            return false;
        };
        if n == 0 || seen[..n] != PREFACE[..n] {
            return false;
        }
        if n == PREFACE.len() {
            return true;
        }
        // A prefix of the preface, and the rest not here yet: peeking again
        // at once would see the same bytes.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The listeners a node accepts on, each with its TLS if it speaks TLS.
struct Listeners<'a> {
    main: (&'a TcpListener, Option<&'a Arc<Tls>>),
    /// `tls.listen`'s, beside a plain main listener.
    tls: Option<(&'a TcpListener, &'a Arc<Tls>)>,
}

/// Serves every connection the listeners accept until `until` resolves. A
/// failed accept (usually out of file descriptors) pauses instead of spinning.
async fn accept_until(
    listeners: &Listeners<'_>,
    until: impl Future<Output = ()>,
    serve: &impl Fn(tokio::net::TcpStream, std::net::SocketAddr, Option<&Arc<Tls>>),
) {
    tokio::pin!(until);
    let (main, main_tls) = listeners.main;
    loop {
        let second = async {
            match listeners.tls {
                Some((listener, tls)) => (listener.accept().await, Some(tls)),
                None => std::future::pending().await,
            }
        };
        let (accepted, tls) = tokio::select! {
            accepted = main.accept() => (accepted, main_tls),
            accepted = second => accepted,
            () = &mut until => return,
        };
        match accepted {
            Ok((stream, peer)) => serve(stream, peer, tls),
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Time a client has to finish its TLS handshake.
fn tls_handshake_timeout(config: &Config) -> Duration {
    config
        .tls
        .as_ref()
        .map_or(Duration::from_secs(10), |tls| tls.handshake_timeout.get())
}

/// Writes key last-used times every `every`.
async fn flush_key_use(state: AppState, every: Duration, mut stopped: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // Through the catalog's circuit, like the usage write-behind;
                // unwritten times are kept for the next round.
                if state.identity.last_used().is_empty() {
                    continue;
                }
                let Ok(call) = state.catalog.dependency().enter() else {
                    continue;
                };
                match state.identity.last_used().flush(&state.catalog).await {
                    Ok(()) => call.finish(Ok(())),
                    Err(e) => {
                        tracing::debug!(error = %e, "could not write key use; will retry");
                        call.finish(Err(&e));
                    }
                }
            }
            _ = stopped.changed() => return,
        }
    }
}

/// How often the catalog and the storage pools whose circuit is open are probed.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Probes the catalog and the storage pools that are down, so that they come
/// back without waiting for a write or a tenant's request (see
/// `Catalog::probe`, `DataStore::probe`).
async fn probe_dependencies(state: AppState, mut stopped: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                state.catalog.probe(state.clock.now()).await;
                state.data.probe().await;
            }
            _ = stopped.changed() => return,
        }
    }
}

/// How often signing keys are checked: rotated when due, retired ones
/// dropped, and the published set read again.
const SIGNING_KEY_CHECK: Duration = Duration::from_secs(60);

/// Keeps the gateway's signing keys on schedule (see `gateway::context`).
async fn maintain_signing_keys(
    state: AppState,
    mut duty: Duty,
    mut stopped: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(SIGNING_KEY_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = state.clock.now();
                let keyring = &state.gateway.keyring;
                // One node rotates; the others read the keys it made (also
                // told by the change feed, this is the schedule's backstop).
                let maintained = if duty.mine().await {
                    keyring.maintain(&state.catalog, now).await
                } else {
                    keyring.reload(&state.catalog, now).await.map(|()| false)
                };
                match maintained {
                    Ok(true) => tracing::info!("rotated the tenant context's signing key"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "could not maintain signing keys; will retry"),
                }
            }
            _ = stopped.changed() => return,
        }
    }
}

/// A background task that one node at a time runs for the whole catalog:
/// on a PostgreSQL catalog, whichever node holds the task's lease (taken
/// when free, and lost with its connection); on SQLite, this node, the only
/// one.
struct Duty {
    task: BackgroundTask,
    url: Option<CatalogUrl>,
    node: NodeId,
    lease: Option<CatalogLease>,
}

impl Duty {
    /// Longest a lease check or attempt may take.
    const TIMEOUT: Duration = Duration::from_secs(2);

    fn new(task: BackgroundTask, config: &Config, node: &NodeId) -> Self {
        Self {
            task,
            url: config.catalog_url.clone(),
            node: node.clone(),
            lease: None,
        }
    }

    /// Whether this node runs the task now, taking its lease if it is free.
    async fn mine(&mut self) -> bool {
        let Some(url) = &self.url else {
            return true;
        };
        if let Some(lease) = &mut self.lease {
            // A hung PostgreSQL leaves the lease standing: the task's own
            // work then fails and is retried.
            if lease.held(Self::TIMEOUT).await == Some(false) {
                tracing::info!(task = ?self.task, "lost a background task's lease with its connection");
                self.lease = None;
            }
        }
        if self.lease.is_none() {
            let taken =
                CatalogLease::take_task(url.as_str(), self.task, &self.node, Self::TIMEOUT).await;
            self.lease = taken.ok().flatten();
            if self.lease.is_some() {
                tracing::info!(task = ?self.task, "this node runs a background task for the catalog");
            }
        }
        self.lease.is_some()
    }
}

/// How often a node tells the catalog it is alive.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);

/// Registers this node in the catalog, beats every `HEARTBEAT_INTERVAL`
/// (registering again if its row was forgotten), and records its stop: what
/// `GET /v1/cluster` shows. A catalog that cannot be written is the
/// write-behind's to report; a missed beat only makes the node look silent.
async fn beat(state: AppState, address: String, mut stopped: watch::Receiver<bool>) {
    let node = &state.node;
    let record = || NodeRecord {
        id: node.id.clone(),
        name: node.name.clone(),
        address: address.clone(),
        version: node.version.clone(),
        started_at: node.started_at,
        heartbeat_at: state.clock.now(),
        stopped_at: None,
    };
    let mut registered = false;
    let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                registered = if registered {
                    state.catalog.beat(&node.id, state.clock.now()).await.unwrap_or(true)
                } else {
                    state.catalog.register_node(&record()).await.is_ok()
                };
                // How many share a quota while Redis is away (at least
                // this node, which may not have registered yet).
                if let (Some(shared), Ok(nodes)) =
                    (&state.admission.shared_quotas, state.catalog.nodes().await)
                {
                    let now = state.clock.now();
                    let up = nodes.iter().filter(|n| n.is_up(now) && n.id != node.id).count();
                    shared.set_nodes(up as u64 + 1);
                }
            }
            _ = stopped.changed() => {
                if let Err(e) = state.catalog.node_stopped(&node.id, state.clock.now()).await {
                    tracing::debug!(error = %e, "could not record this node's stop");
                }
                return;
            }
        }
    }
}

/// How often a node with a PostgreSQL catalog looks for jobs whose node
/// stopped: a job waits at most this long (plus the lock's release when its
/// node's connection drops) to be taken over.
const JOB_SWEEP_INTERVAL: Duration = Duration::from_secs(2);

/// Takes over, every `JOB_SWEEP_INTERVAL`, the jobs of a node that stopped
/// (on a PostgreSQL catalog; on SQLite this node is the only one, and takes
/// over its previous run's jobs once, before it serves).
async fn take_over_jobs(state: AppState, mut stopped: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(JOB_SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let swept = crate::app::moves::resume_orphans(&state).await;
                if let Err(e) = &swept {
                    if !failing {
                        tracing::warn!(error = %e, "could not look for jobs to take over; trying again");
                    }
                }
                failing = swept.is_err();
            }
            _ = stopped.changed() => return,
        }
    }
}

/// Purges tenants soft-deleted more than `retention` ago, every `every`.
async fn purge_deleted(
    state: AppState,
    mut duty: Duty,
    retention: Duration,
    every: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if !duty.mine().await {
                    continue;
                }
                let swept = purge_due(&state, retention).await;
                state.admission.metrics.purge_sweep(swept.is_ok());
                if let Err(e) = swept {
                    tracing::warn!(error = %e, "purge sweep failed; will retry");
                }
            }
            _ = stopped.changed() => return,
        }
    }
}

async fn purge_due(state: &AppState, retention: Duration) -> Result<(), StoreError> {
    // The sweep's schedule suits the store's statistics refresh too.
    state.data.optimize().await?;
    let retention = time::Duration::try_from(retention).unwrap_or(time::Duration::MAX);
    let now = state.clock.now();
    let cutoff = now
        .checked_sub(retention)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    for id in state.catalog.tenants_deleted_by(cutoff, 100).await? {
        let audit = NewAuditEntry {
            tenant: None,
            at: now,
            actor: None,
            action: AuditAction::TenantPurge,
            target: id.to_string(),
            details: json!({ "reason": "retention elapsed" }),
            request_id: None,
            before: None,
            after: None,
        };
        let server = tenantd_core::OperatorScope::server();
        if crate::app::tenants::purge(state, &server, &id, &audit).await? {
            tracing::info!(tenant = %id, "purged soft-deleted tenant");
        }
    }
    Ok(())
}
