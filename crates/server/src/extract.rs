//! Request extractors whose rejections are problem documents: JSON bodies,
//! query strings, and cursor pagination.

use std::any::TypeId;

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tenantd_core::ErrorCode;
use utoipa::IntoParams;

use crate::problem::ApiError;

/// A JSON body. Syntax errors (and nesting deeper than serde_json's limit of
/// 128) are 400 `malformed_json`; a body of the wrong shape, including unknown
/// fields, is 422 `invalid_body`; too large is 413; no JSON content type, 415.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned + 'static, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = has_json_content_type(request.headers());
        if !is_json {
            return Err(not_json());
        }
        let bytes = body_bytes(request, state).await?;
        parse_json(&bytes).map(Self)
    }
}

/// A JSON body that may be left out entirely, standing for `T::default()`.
#[derive(Debug)]
pub struct ApiJsonOrEmpty<T>(pub T);

impl<T: DeserializeOwned + Default + 'static, S: Send + Sync> FromRequest<S> for ApiJsonOrEmpty<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = has_json_content_type(request.headers());
        let bytes = body_bytes(request, state).await?;
        if bytes.is_empty() {
            return Ok(Self(T::default()));
        }
        if !is_json {
            return Err(not_json());
        }
        // `null` stands for "no settings" as much as an empty body does.
        parse_json::<Option<T>>(&bytes).map(|value| Self(value.unwrap_or_default()))
    }
}

/// The whole body, within the body limit the edge set (413 past it).
async fn body_bytes<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, state)
        .await
        .map_err(|e| match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::with_detail(ErrorCode::PayloadTooLarge, e.body_text())
            }
            _ => ApiError::with_detail(ErrorCode::MalformedJson, e.body_text()),
        })
}

/// Reads `T` from a JSON body.
fn parse_json<T: DeserializeOwned + 'static>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every typed request body is a JSON object. serde would also fill a
    // struct from an array of its fields in order, a form no client means.
    // A record's body (a `Value`) is judged by the record rules instead.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') && TypeId::of::<T>() != TypeId::of::<serde_json::Value>() {
        return Err(ApiError::invalid_body("the body must be a JSON object"));
    }
    axum::Json::<T>::from_bytes(bytes)
        .map(|axum::Json(value)| value)
        .map_err(|rejection| {
            let code = match rejection {
                JsonRejection::JsonDataError(_) => ErrorCode::InvalidBody,
                _ => ErrorCode::MalformedJson,
            };
            ApiError::with_detail(code, rejection.body_text())
        })
}

fn not_json() -> ApiError {
    ApiError::with_detail(
        ErrorCode::UnsupportedMediaType,
        "send the body with `Content-Type: application/json`",
    )
}

/// `application/json`, or any `application/*+json`, with or without parameters.
fn has_json_content_type(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .is_some_and(|m| {
            m.type_() == mime::APPLICATION
                && (m.subtype() == mime::JSON || m.suffix() == Some(mime::JSON))
        })
}

/// A query string; any problem with it is 400 `invalid_parameter`.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e: QueryRejection| ApiError::invalid_parameter(e.body_text()))
    }
}

/// Path parameters; a malformed one is 400 `invalid_parameter`.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e| ApiError::invalid_parameter(e.body_text()))
    }
}

/// Default and largest page sizes of every list route.
pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 200;

/// `?cursor=…&limit=…` of list routes. The cursor is opaque to clients.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// `next_cursor` from the previous page.
    #[param(pattern = "^[A-Za-z0-9_-]+$")]
    pub cursor: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

impl PageQuery {
    pub fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_PAGE),
            Some(n @ 1..=MAX_PAGE) => Ok(n),
            Some(n) => Err(ApiError::invalid_parameter(format!(
                "limit is {n}; it must be between 1 and {MAX_PAGE}"
            ))),
        }
    }

    /// The position after which the page starts, decoded with `parse`.
    pub fn after<T>(&self, parse: impl FnOnce(&str) -> Option<T>) -> Result<Option<T>, ApiError> {
        let Some(cursor) = &self.cursor else {
            return Ok(None);
        };
        URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|s| parse(&s))
            .map(Some)
            .ok_or_else(|| ApiError::invalid_parameter("cursor is not valid"))
    }
}

/// Splits a page fetched with one extra row into the items and the cursor of
/// the next page, if there is one.
pub fn page_of<T>(
    mut rows: Vec<T>,
    limit: u32,
    position: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let limit = limit as usize;
    if rows.len() <= limit {
        return (rows, None);
    }
    rows.truncate(limit);
    let next = rows
        .last()
        .map(|last| URL_SAFE_NO_PAD.encode(position(last)));
    (rows, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_are_json_and_any_json_suffix() {
        let is_json = |value: &str| {
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(
                axum::http::header::CONTENT_TYPE,
                value.parse().expect("a header value"),
            );
            has_json_content_type(&headers)
        };
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/merge-patch+json",
        ] {
            assert!(is_json(ok), "{ok}");
        }
        for not in [
            "text/json",
            "application/jsonx",
            "application/x-json+xml",
            "",
        ] {
            assert!(!is_json(not), "{not}");
        }
        assert!(!has_json_content_type(&axum::http::HeaderMap::new()));
    }

    #[test]
    fn page_sizes_are_capped() {
        let q = |limit| PageQuery {
            cursor: None,
            limit,
        };
        assert_eq!(q(None).limit().unwrap(), DEFAULT_PAGE);
        assert_eq!(q(Some(MAX_PAGE)).limit().unwrap(), MAX_PAGE);
        assert_eq!(
            q(Some(0)).limit().unwrap_err().code,
            ErrorCode::InvalidParameter
        );
        assert_eq!(
            q(Some(MAX_PAGE + 1)).limit().unwrap_err().code,
            ErrorCode::InvalidParameter
        );
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_rejected() {
        let (items, next) = page_of(vec![1, 2, 3], 2, |n| n.to_string());
        assert_eq!(items, vec![1, 2]);
        let q = PageQuery {
            cursor: next,
            limit: None,
        };
        assert_eq!(q.after(|s| s.parse::<i32>().ok()).unwrap(), Some(2));

        let (items, next) = page_of(vec![1, 2], 2, |n| n.to_string());
        assert_eq!((items, next), (vec![1, 2], None));

        let bad = PageQuery {
            cursor: Some("%%%".into()),
            limit: None,
        };
        assert_eq!(
            bad.after(|s| s.parse::<i32>().ok()).unwrap_err().code,
            ErrorCode::InvalidParameter
        );
    }
}
