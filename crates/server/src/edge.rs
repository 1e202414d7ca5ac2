//! The edge: what every request passes before identification. Request ids,
//! header size limit, request deadline, panic containment and the 404/405
//! fallbacks, each answering with a problem document.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use rand::RngCore;
use tenantd_core::{Clock, ErrorCode, SystemClock};
use tracing::Instrument;

use crate::problem::ApiError;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    /// The id of the request being served, for the audit entries it writes.
    pub static CURRENT_REQUEST_ID: String;
}

/// The address of the connection a request came on, for the gateway's
/// `X-Forwarded-For` and `X-Real-IP`: written out once per connection, not
/// per request.
#[derive(Debug, Clone)]
pub struct ClientAddr {
    pub ip: HeaderValue,
}

impl ClientAddr {
    pub fn new(peer: std::net::SocketAddr) -> Self {
        let ip = HeaderValue::try_from(peer.ip().to_string())
            .expect("an IP address is a valid header value");
        Self { ip }
    }
}

/// The request's id: the client's `X-Request-Id` if it is short and plain,
/// otherwise a fresh random one. Echoed on the response and in every log line.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn acceptable_request_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// What the edge holds every request to.
#[derive(Debug, Clone, Copy)]
pub struct EdgeLimits {
    pub header_bytes: usize,
    pub body_bytes: usize,
    /// The whole request, body included.
    pub request_timeout: Duration,
}

/// The edge, as one stage (each layer costs every request): the request's
/// id and its span, the size checks, the deadline, panic containment, the
/// problem completed with the request's id and path, the id echoed on the
/// response, and one access-log line.
pub async fn edge(State(limits): State<EdgeLimits>, mut request: Request, next: Next) -> Response {
    // A log line's latency is real time, whatever clock a test drives.
    let started = SystemClock.instant();
    let id = request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| acceptable_request_id(id))
        .map_or_else(
            || {
                let mut bytes = [0u8; 16];
                rand::thread_rng().fill_bytes(&mut bytes);
                let mut id = [0u8; 32];
                hex::encode_to_slice(bytes, &mut id).expect("32 hex digits for 16 bytes");
                String::from_utf8_lossy(&id).into_owned()
            },
            str::to_owned,
        );
    // A clone of the URI shares its bytes: no copy unless a problem needs the path.
    let uri = request.uri().clone();
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %uri.path(),
        request_id = %id,
        tenant = tracing::field::Empty,
        key = tracing::field::Empty,
    );
    request.extensions_mut().insert(RequestId(id.clone()));
    let served = async {
        if let Err(refused) = check_sizes(&request, &limits) {
            return refused.into_response();
        }
        let run = AssertUnwindSafe(tokio::time::timeout(
            limits.request_timeout,
            next.run(request),
        ));
        match run.catch_unwind().await {
            Ok(Ok(response)) => response,
            Ok(Err(_)) => ApiError::with_detail(
                ErrorCode::RequestTimeout,
                format!(
                    "the request did not complete within {}s",
                    limits.request_timeout.as_secs_f64()
                ),
            )
            .into_response(),
            Err(panic) => panic_response(panic),
        }
    };
    let response = CURRENT_REQUEST_ID
        .scope(id.clone(), served.instrument(span.clone()))
        .await;
    let mut response = crate::problem::complete(response, uri.path(), &id);
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::info!(
            status,
            latency_us = (SystemClock.instant() - started).as_micros() as u64,
            "finished processing request"
        );
    });
    response
}

/// Refuses a request whose headers add up to more than the limit (counting
/// names, values and the four bytes of separators per line; hyper's own
/// buffer limit sits well above this as a backstop), or whose declared
/// `Content-Length` is over the body limit, before any byte of its body is
/// read.
fn check_sizes(request: &Request, limits: &EdgeLimits) -> Result<(), ApiError> {
    let headers = request.headers();
    let total: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if total > limits.header_bytes {
        return Err(ApiError::with_detail(
            ErrorCode::HeadersTooLarge,
            format!(
                "request headers are {total} bytes; the limit is {}",
                limits.header_bytes
            ),
        ));
    }
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(length) = declared.filter(|&length| length > limits.body_bytes as u64) {
        return Err(ApiError::with_detail(
            ErrorCode::PayloadTooLarge,
            format!(
                "bodies may have at most {} bytes; this one declares {length}",
                limits.body_bytes
            ),
        ));
    }
    Ok(())
}

/// Turns a handler panic into a 500 and logs it; the process goes on.
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    tracing::error!(panic = %message, "handler panicked");
    ApiError::new(ErrorCode::Internal).into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::not_found()
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_a_500_problem_without_its_message() {
        let response = panic_response(Box::new("secret internals: db password"));
        assert_eq!(response.status(), 500);
        let error = response.extensions().get::<ApiError>().expect("a problem");
        assert_eq!(error.code, ErrorCode::Internal);
        assert!(error.detail.is_none(), "no internals in the answer");
    }

    #[test]
    fn only_short_plain_request_ids_are_kept() {
        assert!(acceptable_request_id("abc-123_x.y"));
        assert!(!acceptable_request_id(""));
        assert!(!acceptable_request_id(&"a".repeat(65)));
        assert!(!acceptable_request_id("a b"));
        assert!(!acceptable_request_id("a\u{7f}"));
    }
}
