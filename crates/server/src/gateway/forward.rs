//! Forwarding one request: the tenant's cache, bulkhead and circuit, then
//! the upstream request (credentials out, tenant context in), retries for
//! idempotent requests without a body, and the streamed response.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tenantd_core::breaker::Outcome;
use tenantd_core::{ErrorCode, Principal, ServiceName, TenantId};

use super::cache::{self, CacheKey, CachedResponse, ResponseCache};
use super::context::ContextSubject;
use super::{Call, Gateway, InFlight, RoutedByHost, Service};
use crate::metrics::Metrics;
use crate::problem::ApiError;

pub static X_TENANT_ID: HeaderName = HeaderName::from_static("x-tenant-id");
pub static X_TENANT_CONTEXT: HeaderName = HeaderName::from_static("x-tenant-context");
// The forwarding headers tenantd sets, named once rather than parsed per request.
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// How the response cache took part in an answer: `hit` or `miss`.
const CACHE_STATUS: HeaderName = HeaderName::from_static("tenantd-cache");
const HIT: HeaderValue = HeaderValue::from_static("hit");
const STALE: HeaderValue = HeaderValue::from_static("stale");

/// A cached response as the client gets it, with its `Age` and how the
/// cache answered (`hit`, or `stale` when the upstream could not).
fn cached(cache: &ResponseCache, entry: &CachedResponse, how: HeaderValue) -> Response {
    let mut response = Response::new(Body::from(entry.body.clone()));
    *response.status_mut() = entry.status;
    *response.headers_mut() = entry.headers.clone();
    response
        .headers_mut()
        .insert(header::AGE, HeaderValue::from(cache.age_of(entry)));
    response.headers_mut().insert(CACHE_STATUS, how);
    response
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1),
/// `Expect` (tenantd's own server answers `100-continue` when it reads the
/// body), and the caller's credentials for tenantd: none of them is forwarded.
const NOT_FORWARDED: [&str; 12] = [
    "connection",
    "expect",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "authorization",
    "x-api-key",
];

/// Headers only tenantd may set for the upstream, besides every
/// `x-forwarded-*` and `x-tenant-*`: a client sending its own would
/// otherwise speak for a tenant it is not, or for an address it is not.
const RESERVED: [&str; 4] = ["forwarded", "x-real-ip", "x-request-id", "host"];

/// Whether a client's header `name` must not reach the upstream. Names are
/// compared after mapping `_` to `-`, as upstreams in CGI or WSGI style
/// read them (`X_Tenant_Id` is `HTTP_X_TENANT_ID`, like `X-Tenant-Id`), so
/// no spelling passes a rule that another spelling is held to.
fn withheld(name: &HeaderName) -> bool {
    // Compared byte by byte, `_` as `-`: no copy of the name per header.
    let name = name.as_str().as_bytes();
    let same = |a: u8, b: u8| a == b || (a == b'_' && b == b'-');
    let equals = |reserved: &&str| {
        name.len() == reserved.len() && name.iter().zip(reserved.bytes()).all(|(&a, b)| same(a, b))
    };
    let starts = |prefix: &str| {
        name.len() >= prefix.len() && name.iter().zip(prefix.bytes()).all(|(&a, b)| same(a, b))
    };
    NOT_FORWARDED.iter().any(equals)
        || RESERVED.iter().any(equals)
        || starts("x-forwarded-")
        || starts("x-tenant-")
}

/// Who a forwarded request is for, and when it is forwarded.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// Let through by identify and admission.
    pub principal: &'a Principal,
    pub request_id: &'a str,
    pub now: time::OffsetDateTime,
}

/// Forwards `request` (its path after `/v1/proxy/{service}` is `rest`) for
/// `caller`, and counts how it ended in `metrics`.
pub async fn forward(
    gateway: &Gateway,
    service: &Arc<Service>,
    caller: Caller<'_>,
    rest: &str,
    request: Request,
    metrics: &Metrics,
) -> Response {
    let outcome = try_forward(gateway, service, caller, rest, request).await;
    let label = match &outcome {
        Ok(response) if response.headers().get(CACHE_STATUS) == Some(&HIT) => "cache_hit",
        Ok(response) if response.status().is_server_error() => "upstream_5xx",
        Ok(_) => "ok",
        Err(error) => error.code.as_str(),
    };
    // Refusals before the service was chosen (a bad path) are not its calls.
    if label != ErrorCode::InvalidParameter.as_str() {
        metrics.gateway_call(&service.label, label);
    }
    match outcome {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn try_forward(
    gateway: &Gateway,
    service: &Arc<Service>,
    caller: Caller<'_>,
    rest: &str,
    request: Request,
) -> Result<Response, ApiError> {
    let Caller {
        principal,
        request_id,
        now,
    } = caller;
    let (Some(tenant), Some(plan)) = (principal.tenant(), principal.plan()) else {
        return Err(ApiError::with_detail(
            ErrorCode::Forbidden,
            super::OPERATORS_HAVE_NO_TENANT,
        ));
    };
    check_path(rest)?;
    let target = match request.uri().query() {
        Some(query) => format!("{}{rest}?{query}", service.config.path_prefix),
        None => format!("{}{rest}", service.config.path_prefix),
    };

    // The tenant's cache answers before anything reaches the upstream.
    let (read_cache, store_cache) = if request.method() == Method::GET && gateway.cache.is_on() {
        cache::request_allows(request.headers())
    } else {
        (false, false)
    };
    // A tenant that holds no cached response has none to answer with: the
    // lookup is skipped for it (for most tenants, whose upstreams send
    // nothing cacheable). A key is built only for a lookup or a fill.
    let read_cache = read_cache && gateway.cache.holds_any(tenant);
    let cache_key = || CacheKey {
        tenant: tenant.clone(),
        service: service.config.name.clone(),
        target: target.clone(),
    };
    let key = read_cache.then(cache_key);
    if let Some(hit) = key.as_ref().and_then(|key| gateway.cache.get(key)) {
        return Ok(cached(&gateway.cache, &hit, HIT));
    }
    // When the upstream cannot answer, a response kept past its freshness
    // may (`stale_if_error`).
    let stale_key = key.filter(|_| service.config.stale_if_error.is_some());
    let fall_back =
        |error: ApiError| match stale_key.as_ref().and_then(|k| gateway.cache.get_stale(k)) {
            Some(stale) => Ok(cached(&gateway.cache, &stale, STALE)),
            None => Err(error),
        };

    let circuit = service.circuit(tenant);
    let in_flight =
        InFlight::enter(&circuit, service.config.max_in_flight_per_tenant).ok_or_else(|| {
            ApiError::with_detail(
                ErrorCode::BulkheadFull,
                format!(
                    "the tenant already has {} requests in flight to {}",
                    service.config.max_in_flight_per_tenant, service.config.name
                ),
            )
            .retry_after(Duration::from_secs(1))
        })?;
    let call = match Call::start(service, &circuit) {
        Ok(call) => call,
        Err(wait) => {
            return fall_back(
                ApiError::with_detail(
                    ErrorCode::UpstreamUnavailable,
                    format!(
                        "the tenant's calls to {} failed repeatedly; one is let through in {} ms",
                        service.config.name,
                        wait.as_millis()
                    ),
                )
                .retry_after(wait),
            )
        }
    };

    let subject = ContextSubject {
        service: &service.config.name,
        tenant,
        key_id: principal.key_id(),
        role: principal.role(),
        plan,
    };
    let token = gateway
        .keyring
        .context(&subject, request_id, now)
        .ok_or_else(|| {
            tracing::error!("no signing key is in effect; the tenant context cannot be signed");
            ApiError::new(ErrorCode::Internal)
        })?;

    let (mut parts, body) = request.into_parts();
    // Only a request that can be sent again unchanged is retried.
    let replayable = is_idempotent(&parts.method) && has_no_body(&parts.headers);
    let host = parts.headers.get(header::HOST).cloned();
    let mut headers = std::mem::take(&mut parts.headers);
    withhold(&mut headers);
    headers.insert(X_TENANT_ID.clone(), header_value(tenant.as_str()));
    headers.insert(X_TENANT_CONTEXT.clone(), token);
    headers.insert(crate::edge::X_REQUEST_ID.clone(), header_value(request_id));
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    // The client's own `X-Forwarded-For` and `X-Real-IP` were withheld: the
    // address is the connection's, which a client cannot forge.
    if let Some(client) = parts.extensions.get::<crate::edge::ClientAddr>() {
        headers.insert(X_FORWARDED_FOR.clone(), client.ip.clone());
        headers.insert(X_REAL_IP.clone(), client.ip.clone());
    }
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST.clone(), host);
    }
    // The path the client used lies under this prefix, unless its host named the service.
    if parts.extensions.get::<RoutedByHost>().is_none() {
        headers.insert(X_FORWARDED_PREFIX.clone(), service.forwarded_prefix.clone());
    }

    let writes = !matches!(
        parts.method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    let attempts = if replayable {
        1 + service.config.retries
    } else {
        1
    };
    let mut body = Some(body);
    let upstreams = &service.config.upstreams;
    let first = service.next_upstream.fetch_add(1, Ordering::Relaxed);
    let exchange = async {
        let mut last = None;
        for attempt in 0..attempts {
            let upstream = &upstreams[(first + attempt as usize) % upstreams.len()];
            let uri = Uri::builder()
                .scheme(upstream.scheme.clone())
                .authority(upstream.authority.clone())
                .path_and_query(target.as_str())
                .build()
                .map_err(|e| {
                    ApiError::invalid_parameter(format!("the path cannot be forwarded: {e}"))
                })?;
            let mut outgoing = axum::http::Request::new(if replayable {
                Body::empty()
            } else {
                body.take().unwrap_or_else(Body::empty)
            });
            *outgoing.method_mut() = parts.method.clone();
            *outgoing.uri_mut() = uri;
            // The last attempt takes the headers; earlier ones copy them.
            *outgoing.headers_mut() = if retry_left(attempt, attempts) {
                headers.clone()
            } else {
                std::mem::take(&mut headers)
            };
            let result = service.client.request(outgoing).await;
            let retry = retry_left(attempt, attempts);
            match result {
                Ok(response) if retry && is_retried_status(response.status()) => {
                    tracing::debug!(status = %response.status(), %attempt, "upstream answered with a retried status");
                    last = Some(Ok(response));
                }
                Ok(response) => return Ok(Ok(response)),
                Err(e) if retry => {
                    tracing::debug!(error = %e, %attempt, "upstream attempt failed; retrying");
                    last = Some(Err(e));
                }
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(last.expect("at least one attempt is made"))
    };
    let outcome = tokio::time::timeout(service.config.request_timeout, exchange).await;
    let response = match outcome {
        Err(_) => {
            call.finish(Outcome::Failure);
            return fall_back(
                ApiError::with_detail(
                    ErrorCode::UpstreamTimeout,
                    format!(
                        "{} sent no response within {} ms",
                        service.config.name,
                        service.config.request_timeout.as_millis()
                    ),
                )
                .retry_after(Duration::from_secs(1)),
            );
        }
        Ok(Err(error)) => {
            call.finish(Outcome::Failure);
            return Err(error);
        }
        Ok(Ok(Err(error))) => {
            let error = transport_error(&service.config.name, &error);
            // A body cut at the plan's limit says nothing about the upstream.
            if error.code == ErrorCode::PayloadTooLarge {
                call.finish(Outcome::Abandoned);
                return Err(error);
            }
            call.finish(Outcome::Failure);
            return fall_back(error);
        }
        Ok(Ok(Ok(response))) => response,
    };
    let failed = response.status().is_server_error();
    call.finish(if failed {
        Outcome::Failure
    } else {
        Outcome::Success
    });
    if failed {
        if let Some(stale) = stale_key.as_ref().and_then(|k| gateway.cache.get_stale(k)) {
            return Ok(cached(&gateway.cache, &stale, STALE));
        }
    }
    // A write that succeeded makes the tenant's cached responses for its
    // path stale, and for the paths its answer names (RFC 9111 §4.4).
    if writes && response.status().as_u16() < 400 {
        let cache = &gateway.cache;
        cache.invalidate_path(tenant, &service.config.name, &target);
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            if let Some(path) = response
                .headers()
                .get(&name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| same_upstream_path(service, v))
            {
                cache.invalidate_path(tenant, &service.config.name, path);
            }
        }
    }

    let (mut parts, incoming) = response.into_parts();
    strip_connection_headers(&mut parts.headers);
    let fill = if store_cache {
        gateway
            .cache
            .freshness(parts.status, &parts.headers)
            .map(|fresh_for| CacheFill {
                cache: gateway.cache.clone(),
                key: cache_key(),
                status: parts.status,
                headers: parts.headers.clone(),
                fresh_for,
                stale_for: service.config.stale_if_error.unwrap_or_default(),
                collected: Vec::new(),
                limit: gateway.cache.max_entry_bytes(),
            })
    } else {
        None
    };
    if read_cache || store_cache {
        parts
            .headers
            .insert(CACHE_STATUS, HeaderValue::from_static("miss"));
    }
    let body = UpstreamBody {
        inner: incoming,
        fill,
        idle_limit: service.config.body_idle_timeout,
        tenant: tenant.clone(),
        service: service.config.name.clone(),
        idle: None,
        waiting: false,
        _in_flight: in_flight,
    };
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// The path of a `Location` or `Content-Location` the upstream sent, if it
/// names one of the service's own resources: a path, or an absolute URL on
/// one of its upstreams. Anything else is another origin's, not cached here.
fn same_upstream_path<'a>(service: &Service, location: &'a str) -> Option<&'a str> {
    if location.starts_with('/') && !location.starts_with("//") {
        return Some(location);
    }
    let (scheme, rest) = location.split_once("://")?;
    let (authority, path) = rest.split_at(rest.find('/')?);
    service
        .config
        .upstreams
        .iter()
        .any(|u| u.scheme.as_str() == scheme && u.authority.as_str() == authority)
        .then_some(path)
}

/// Refuses paths an upstream could resolve outside the service's prefix.
/// Runs on every proxied request, so it reads the bytes without copying them.
fn check_path(rest: &str) -> Result<(), ApiError> {
    let escapes = rest.split('/').any(is_dot_segment);
    let bytes = rest.as_bytes();
    let encoded_separator = bytes.contains(&b'\\')
        || bytes.windows(3).any(|w| {
            w[0] == b'%'
                && matches!(
                    (w[1], w[2].to_ascii_lowercase()),
                    (b'2', b'f') | (b'5', b'c')
                )
        });
    if escapes || encoded_separator {
        return Err(ApiError::invalid_parameter(
            "the path must not contain `.` or `..` segments or encoded separators",
        ));
    }
    Ok(())
}

/// Whether `segment` is `.` or `..` once each `%2e` is read as a dot.
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        if rest[0] == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3
            && rest[0] == b'%'
            && rest[1] == b'2'
            && rest[2].eq_ignore_ascii_case(&b'e')
        {
            rest = &rest[3..];
        } else {
            return false;
        }
        dots += 1;
    }
    (1..=2).contains(&dots)
}

fn header_value(s: &str) -> HeaderValue {
    // Ids and request ids are checked slugs and hex, always valid header values.
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// The client's headers without connection-level ones, credentials or
/// headers only tenantd may set.
fn withhold(headers: &mut HeaderMap) {
    strip_connection_headers(headers);
    let withheld_names: Vec<HeaderName> = headers.keys().filter(|n| withheld(n)).cloned().collect();
    for name in withheld_names {
        headers.remove(name);
    }
}

/// Removes hop-by-hop headers, the ones `Connection` names among them.
fn strip_connection_headers(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in NOT_FORWARDED {
        headers.remove(name);
    }
}

/// Whether another attempt may follow attempt number `attempt` (from 0).
fn retry_left(attempt: u32, attempts: u32) -> bool {
    attempt + 1 < attempts
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

fn has_no_body(headers: &HeaderMap) -> bool {
    let length_zero = headers
        .get(header::CONTENT_LENGTH)
        .is_none_or(|v| v.as_bytes() == b"0");
    length_zero && !headers.contains_key(header::TRANSFER_ENCODING)
}

/// Answers that mean "this upstream could not serve it now": another
/// upstream (or the same one a moment later) may.
fn is_retried_status(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

fn transport_error(service: &ServiceName, error: &hyper_util::client::legacy::Error) -> ApiError {
    let mut cause = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = source {
        cause = e.to_string();
        source = e.source();
    }
    // The plan's body limit cut the request as it streamed: the caller's doing.
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return ApiError::with_detail(
                ErrorCode::PayloadTooLarge,
                format!("the body grew past the body limit while it streamed to {service}"),
            );
        }
        source = e.source();
    }
    tracing::warn!(%service, error = %error, %cause, "upstream call failed");
    if crate::tls::is_tls_failure(error) {
        ApiError::with_detail(
            ErrorCode::UpstreamTls,
            format!("the TLS handshake with an upstream of {service} failed: {cause}"),
        )
    } else if error.is_connect() {
        ApiError::with_detail(
            ErrorCode::UpstreamRefused,
            format!("no upstream of {service} took the connection: {cause}"),
        )
    } else {
        ApiError::with_detail(
            ErrorCode::UpstreamError,
            format!("the upstream of {service} broke off: {cause}"),
        )
    }
}

/// A response being collected for the cache as it streams to the client.
struct CacheFill {
    cache: ResponseCache,
    key: CacheKey,
    status: StatusCode,
    headers: HeaderMap,
    fresh_for: Duration,
    stale_for: Duration,
    collected: Vec<u8>,
    limit: u64,
}

/// The upstream's response body on its way to the client: streamed frame by
/// frame, copied for the cache only when it may be kept and is small enough,
/// and holding the tenant's bulkhead place until it ends.
struct UpstreamBody {
    inner: hyper::body::Incoming,
    fill: Option<CacheFill>,
    /// Longest the upstream may keep the body waiting for its next frame.
    idle_limit: Duration,
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whom the body is for: it is read after the request's span has ended,
    /// so its log lines name them themselves.
    tenant: TenantId,
    service: ServiceName,
    /// Whether a frame is being waited for; the idle time counts only then,
    /// so a client slow to read is not taken for a stalled upstream.
    waiting: bool,
    _in_flight: InFlight,
}

/// The upstream stopped sending its response body.
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent nothing of its response body for {0:?}")]
struct BodyStalled(Duration);

impl UpstreamBody {
    /// Puts the whole body, now read, in the cache if it is being collected.
    fn keep(&mut self) {
        if let Some(fill) = self.fill.take() {
            fill.cache.insert(
                fill.key,
                fill.status,
                fill.headers,
                Bytes::from(fill.collected),
                (fill.fresh_for, fill.stale_for),
            );
        }
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                // The idle time starts when a frame is first waited for: a
                // body that is there when read (most small ones) never
                // needs a timer.
                let idle_limit = this.idle_limit;
                let deadline = || tokio::time::Instant::now() + idle_limit;
                let idle = match &mut this.idle {
                    Some(idle) if this.waiting => idle,
                    Some(idle) => {
                        idle.as_mut().reset(deadline());
                        idle
                    }
                    None => this
                        .idle
                        .insert(Box::pin(tokio::time::sleep_until(deadline()))),
                };
                this.waiting = true;
                ready!(idle.as_mut().poll(cx));
                // The client gets a cut body (the head is long gone), and the
                // tenant's bulkhead place is given back.
                this.fill = None;
                tracing::warn!(
                    tenant = %this.tenant,
                    service = %this.service,
                    idle = ?this.idle_limit,
                    "an upstream's response body stalled; cutting it"
                );
                return Poll::Ready(Some(Err(Box::new(BodyStalled(this.idle_limit)))));
            }
        };
        this.waiting = false;
        match &frame {
            Some(Ok(frame)) => {
                if let (Some(fill), Some(data)) = (&mut this.fill, frame.data_ref()) {
                    if (fill.collected.len() + data.len()) as u64 > fill.limit {
                        this.fill = None;
                    } else {
                        fill.collected.extend_from_slice(data);
                    }
                }
                // A body of known length is not polled past its last frame.
                if this.inner.is_end_stream() {
                    this.keep();
                }
            }
            // A body cut short is not a response to keep.
            Some(Err(_)) => this.fill = None,
            None => this.keep(),
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_could_leave_the_prefix_are_refused() {
        for bad in [
            "/..",
            "/.",
            "/%2e",
            "/.%2E/x",
            "/a/../b",
            "/%2e%2E/x",
            "/./a",
            "/a%2fb",
            "/a%2Fb",
            "/a%5cb",
            "/a%5Cb",
            "/a\\b",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        for good in [
            "",
            "/",
            "/a/b",
            "/a..b/c",
            "/.well-known/x",
            "/a%20b",
            "/...",
            "/%2e%2e%2e",
            "/a%2",
            "/%2",
        ] {
            assert!(check_path(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn credentials_reserved_and_connection_headers_are_not_forwarded() {
        let mut incoming = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer tk_secret"),
            ("x-api-key", "tk_secret"),
            ("x-tenant-id", "someone-else"),
            ("x-tenant-context", "forged"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-server", "edge"),
            ("x-forwarded-user", "admin"),
            ("x-real-ip", "1.2.3.4"),
            ("x_tenant_id", "someone-else"),
            ("x-tenant_id", "someone-else"),
            ("x_tenant_context", "forged"),
            ("x_forwarded_host", "evil.example"),
            ("x_api_key", "tk_secret"),
            ("x-tenant-role", "admin"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("host", "gateway.example"),
            ("accept", "application/json"),
            ("x-custom", "kept"),
        ] {
            incoming.append(name, HeaderValue::from_static(value));
        }
        withhold(&mut incoming);
        let names: Vec<&str> = incoming.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["accept", "x-custom"]);
    }

    #[test]
    fn only_idempotent_requests_without_a_body_are_replayable() {
        let mut empty = HeaderMap::new();
        assert!(is_idempotent(&Method::GET) && has_no_body(&empty));
        assert!(is_idempotent(&Method::PUT) && is_idempotent(&Method::DELETE));
        assert!(!is_idempotent(&Method::POST) && !is_idempotent(&Method::PATCH));
        empty.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        assert!(has_no_body(&empty));
        let mut sized = HeaderMap::new();
        sized.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert!(!has_no_body(&sized));
        let mut chunked = HeaderMap::new();
        chunked.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert!(!has_no_body(&chunked));
    }
}
