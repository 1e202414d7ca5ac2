//! The edge: what every request passes before identification. Request ids,
//! header size limit, request deadline, panic containment and the 404/405
//! fallbacks, each answering with a problem document.

use std::any::Any;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngCore;
use tenantd_core::ErrorCode;

use crate::problem::ApiError;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    /// The id of the request being served, for the audit entries it writes.
    pub static CURRENT_REQUEST_ID: String;
}

/// The address of the connection a request came on, for the gateway's
/// `X-Forwarded-For` and `X-Real-IP`.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::SocketAddr);

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

pub async fn request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| acceptable_request_id(id))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let mut bytes = [0u8; 16];
            rand::thread_rng().fill_bytes(&mut bytes);
            hex::encode(bytes)
        });
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = CURRENT_REQUEST_ID
        .scope(id.clone(), next.run(request))
        .await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    response
}

/// The sizes a request may have, checked before anything reads its body.
#[derive(Debug, Clone, Copy)]
pub struct SizeLimits {
    pub header_bytes: usize,
    pub body_bytes: usize,
}

/// Rejects a request whose headers add up to more than the limit (counting
/// names, values and the four bytes of separators per line; hyper's own
/// buffer limit sits well above this as a backstop), or whose declared
/// `Content-Length` is over the body limit, before any byte of its body is
/// read. One layer for both: each layer costs every request.
pub async fn limit_sizes(
    State(limits): State<SizeLimits>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let total: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if total > limits.header_bytes {
        return ApiError::with_detail(
            ErrorCode::HeadersTooLarge,
            format!(
                "request headers are {total} bytes; the limit is {}",
                limits.header_bytes
            ),
        )
        .into_response();
    }
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(length) = declared.filter(|&length| length > limits.body_bytes as u64) {
        return ApiError::with_detail(
            ErrorCode::PayloadTooLarge,
            format!(
                "bodies may have at most {} bytes; this one declares {length}",
                limits.body_bytes
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// Bounds a whole request, body included, by the configured timeout.
pub async fn deadline(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::with_detail(
            ErrorCode::RequestTimeout,
            format!(
                "the request did not complete within {}s",
                limit.as_secs_f64()
            ),
        )
        .into_response(),
    }
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
