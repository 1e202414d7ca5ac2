//! The one table of stable error codes. Clients match on `code`; its HTTP
//! status and title live here and nowhere else. Codes are never renamed or
//! reused: add a new one instead.

macro_rules! error_codes {
    ($($variant:ident = ($code:literal, $status:literal, $title:literal),)*) => {
        /// A stable, machine-readable error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The `code` member of a problem document.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            /// The HTTP status this code is always sent with.
            pub fn status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)* }
            }

            /// A short human summary that does not change between occurrences.
            pub fn title(self) -> &'static str {
                match self { $(ErrorCode::$variant => $title,)* }
            }
        }
    };
}

error_codes! {
    MissingApiKey = ("missing_api_key", 401, "No API key was presented"),
    MalformedApiKey = ("malformed_api_key", 401, "The API key is not in the tk_<id>_<secret> form"),
    MultipleCredentials = ("multiple_credentials", 400, "The request presents more than one credential"),
    InvalidApiKey = ("invalid_api_key", 401, "The API key is not valid"),
    KeyRevoked = ("key_revoked", 401, "The API key has been revoked"),
    KeyExpired = ("key_expired", 401, "The API key has expired"),
    Forbidden = ("forbidden", 403, "The key's role does not allow this action"),
    TenantSuspended = ("tenant_suspended", 403, "The tenant is suspended"),
    TenantDeleted = ("tenant_deleted", 403, "The tenant has been deleted"),
    NotFound = ("not_found", 404, "No such resource"),
    MethodNotAllowed = ("method_not_allowed", 405, "The method is not allowed on this resource"),
    TenantExists = ("tenant_exists", 409, "A tenant with this id already exists"),
    PlanExists = ("plan_exists", 409, "A plan with this id already exists"),
    InvalidTransition = ("invalid_transition", 409, "The resource is not in a state that allows this action"),
    PayloadTooLarge = ("payload_too_large", 413, "The request body is too large"),
    BodyTimeout = ("body_timeout", 408, "The request body did not arrive within the server's body-read timeout"),
    UnsupportedMediaType = ("unsupported_media_type", 415, "The request body must be application/json"),
    MalformedJson = ("malformed_json", 400, "The request body is not valid JSON"),
    InvalidBody = ("invalid_body", 422, "The request body does not match the expected shape"),
    InvalidParameter = ("invalid_parameter", 400, "A path or query parameter is invalid"),
    InvalidFilter = ("invalid_filter", 400, "The filter expression is invalid"),
    InvalidRecord = ("invalid_record", 400, "The record is not a JSON object within the size and depth limits"),
    PlacementFailed = ("placement_failed", 422, "No storage pool fits the tenant's region and isolation model"),
    CollectionExists = ("collection_exists", 409, "A collection with this name already exists"),
    RecordExists = ("record_exists", 409, "A record with this id already exists"),
    PreconditionFailed = ("precondition_failed", 412, "The record's version does not match If-Match or If-None-Match"),
    HeadersTooLarge = ("headers_too_large", 431, "The request headers are too large"),
    MalformedRequest = ("malformed_request", 400, "The request is not well-formed HTTP/1.1"),
    UriTooLong = ("uri_too_long", 414, "The request target is too long"),
    RateLimited = ("rate_limited", 429, "The tenant's rate limit is exhausted; retry after Retry-After seconds"),
    QuotaExceeded = ("quota_exceeded", 429, "A hard quota of the tenant is exhausted"),
    TenantQueueFull = ("tenant_queue_full", 429, "Too many of the tenant's requests are already waiting"),
    Overloaded = ("overloaded", 503, "The request waited longer than its queue-wait budget"),
    DeadlineExceeded = ("deadline_exceeded", 504, "The request did not complete within its operation class's deadline"),
    LimiterUnavailable = ("limiter_unavailable", 503, "The shared rate limiter cannot be reached"),
    RequestTimeout = ("request_timeout", 503, "The request did not complete within the server's time limit"),
    TenantMaintenance = ("tenant_maintenance", 503, "The tenant's data is being moved; writes resume shortly"),
    StoreUnavailable = ("store_unavailable", 503, "The store is unavailable"),
    ServiceNotFound = ("service_not_found", 404, "No service of this name is behind the gateway"),
    BulkheadFull = ("bulkhead_full", 429, "Too many of the tenant's requests to this service are in flight"),
    UpstreamUnavailable = ("upstream_unavailable", 503, "The tenant's circuit to this service is open after repeated failures"),
    UpstreamRefused = ("upstream_refused", 502, "The service's upstream refused or could not take the connection"),
    UpstreamTls = ("upstream_tls", 502, "The TLS handshake with the service's upstream failed"),
    UpstreamError = ("upstream_error", 502, "The service's upstream broke off or answered with something that is not HTTP"),
    UpstreamTimeout = ("upstream_timeout", 504, "The service's upstream did not answer within the service's request timeout"),
    Internal = ("internal", 500, "Internal server error"),
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_snake_case_and_map_to_error_statuses() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "duplicate code {s}");
            assert!(
                s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{s} is not snake_case"
            );
            assert!((400..600).contains(&code.status()), "{s}");
            assert!(!code.title().is_empty());
        }
    }

    #[test]
    fn every_code_is_documented_in_the_error_table() {
        let doc = include_str!("../../../docs/errors.md");
        for code in ErrorCode::ALL {
            let row = format!("| `{}` | {} |", code.as_str(), code.status());
            assert!(doc.contains(&row), "docs/errors.md lacks the row {row}");
        }
    }
}
