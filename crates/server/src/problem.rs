//! RFC 9457 problem documents. Every error leaves the server through
//! `ApiError`, whose `code` comes from the one table in `tenantd_core::error`.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tenantd_api::Problem;
use tenantd_core::ErrorCode;

/// Seconds a client is told to wait after a 503.
const RETRY_AFTER_SECS: u32 = 1;

/// An error on its way to the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    /// What went wrong this time, for humans. Never internals on a 5xx.
    pub detail: Option<String>,
    /// When to try again, if the cause says; otherwise 429s and 503s say a second.
    pub retry_after: Option<std::time::Duration>,
}

impl ApiError {
    pub fn new(code: ErrorCode) -> Self {
        Self {
            code,
            detail: None,
            retry_after: None,
        }
    }

    pub fn with_detail(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: Some(detail.into()),
            retry_after: None,
        }
    }

    /// Sets `Retry-After`, rounded up to whole seconds (at least one).
    pub fn retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    pub fn not_found() -> Self {
        Self::new(ErrorCode::NotFound)
    }

    pub fn invalid_body(detail: impl Into<String>) -> Self {
        Self::with_detail(ErrorCode::InvalidBody, detail)
    }

    pub fn invalid_parameter(detail: impl Into<String>) -> Self {
        Self::with_detail(ErrorCode::InvalidParameter, detail)
    }
}

impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> Self {
        Self::new(code)
    }
}

/// A store failure is answered with a bare 503. A store that could not
/// serve (down, out of connections, space or time) is logged by its circuit
/// once per change of state, so the request logs it only at debug level;
/// anything else (a corrupt row) is logged with its cause.
impl From<tenantd_store::StoreError> for ApiError {
    fn from(e: tenantd_store::StoreError) -> Self {
        match e {
            tenantd_store::StoreError::Unavailable {
                dependency,
                retry_after,
            } => Self::with_detail(
                ErrorCode::StoreUnavailable,
                format!("{dependency} is refusing calls after repeated failures"),
            )
            .retry_after(retry_after),
            e if e.is_unavailability() => {
                tracing::debug!(error = %e, "store unavailable");
                Self::new(ErrorCode::StoreUnavailable)
            }
            e => {
                tracing::error!(error = %e, "store error");
                Self::new(ErrorCode::StoreUnavailable)
            }
        }
    }
}

impl ApiError {
    fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub(crate) fn body(&self, instance: Option<String>, request_id: Option<String>) -> Vec<u8> {
        let code = self.code;
        let problem = Problem {
            kind: format!("urn:tenantd:error:{}", code.as_str()),
            title: code.title().to_owned(),
            status: code.status(),
            code: code.as_str().to_owned(),
            detail: self.detail.clone(),
            instance,
            request_id,
        };
        serde_json::to_vec(&problem).unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, self.body(None, None)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="tenantd", charset="UTF-8""#),
            );
        }
        if let Some(wait) = self.retry_after {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(wait)),
            );
        } else if status == StatusCode::SERVICE_UNAVAILABLE
            || status == StatusCode::TOO_MANY_REQUESTS
        {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        // Kept so that `complete` can add the request id and path.
        response.extensions_mut().insert(self);
        response
    }
}

/// `wait` in whole seconds, rounded up, at least one: a client that waits
/// that long is never early.
pub fn retry_after_secs(wait: std::time::Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// Re-renders an error response with the request's id and path, wherever
/// in the stack the error was raised (the edge calls it for every response).
pub fn complete(response: Response, path: &str, request_id: &str) -> Response {
    let Some(error) = response.extensions().get::<ApiError>() else {
        return response;
    };
    let body = error.body(Some(path.to_owned()), Some(request_id.to_owned()));
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}
