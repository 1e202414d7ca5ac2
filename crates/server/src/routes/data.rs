//! The data API: a tenant's collections of JSON records. Readers read;
//! developers and admins write. Every handler works through the `DataScope`
//! that the route table's access check placed on the request.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tenantd_api::schema;
use tenantd_api::{
    BatchOperation, BatchOutcome, BatchRequest, BatchResponse, Collection, CollectionPage,
    CreateCollection, Page, Problem, RecordPage, RecordView,
};
use tenantd_core::filter::{FieldPath, Filter};
use tenantd_core::record::check_indexes;
use tenantd_core::{CollectionName, DataScope, ErrorCode, RecordId};
use tenantd_store::data::{
    self, BatchOp, BatchResult, Cursor, Direction, Expect, ListQuery, Record,
};
use tenantd_store::DataError;
use utoipa::IntoParams;

use super::access::{DataMember, Developer, Reader};
use crate::extract::{page_of, ApiJson, ApiPath, ApiQuery, PageQuery};
use crate::problem::ApiError;
use crate::state::AppState;

/// Default and largest page sizes of record lists.
const DEFAULT_RECORD_PAGE: u32 = 100;
const MAX_RECORD_PAGE: u32 = 1000;
/// Most operations in one batch.
const MAX_BATCH: usize = 1000;

fn data_error(e: DataError) -> ApiError {
    match e {
        DataError::CollectionNotFound => {
            ApiError::with_detail(ErrorCode::NotFound, "no such collection")
        }
        DataError::RecordNotFound => ApiError::with_detail(ErrorCode::NotFound, "no such record"),
        DataError::CollectionExists => ApiError::new(ErrorCode::CollectionExists),
        DataError::RecordExists => ApiError::new(ErrorCode::RecordExists),
        DataError::VersionMismatch { current } => ApiError::with_detail(
            ErrorCode::PreconditionFailed,
            match current {
                Some(v) => format!("the record is at version {v}"),
                None => "the record does not exist".to_owned(),
            },
        ),
        DataError::NotIndexed(field) => ApiError::invalid_parameter(format!(
            "sort: {field} is not an indexed field of this collection"
        )),
        DataError::InvalidBody(detail) => ApiError::with_detail(ErrorCode::InvalidRecord, detail),
        DataError::Batch { index, error } => {
            let inner = data_error(*error);
            let detail = inner
                .detail
                .unwrap_or_else(|| inner.code.title().to_owned());
            ApiError::with_detail(inner.code, format!("operation {index}: {detail}"))
        }
        DataError::Unsupported(detail) => {
            tracing::error!(%detail, "data model not served by this store");
            ApiError::new(ErrorCode::Internal)
        }
        DataError::Maintenance => ApiError::new(ErrorCode::TenantMaintenance),
        DataError::Store(e) => e.into(),
    }
}

fn view(record: Record) -> RecordView {
    RecordView {
        id: record.id,
        version: record.version,
        created_at: record.created_at,
        updated_at: record.updated_at,
        data: record.body,
    }
}

fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\""))
        .expect("digits and quotes are a valid header value")
}

/// A record with its `ETag`, and `Location` when it was just created.
fn record_response(status: StatusCode, collection: &CollectionName, record: Record) -> Response {
    let tag = etag(record.version);
    let location = format!("/v1/collections/{collection}/records/{}", record.id);
    let mut response = (status, Json(view(record))).into_response();
    response.headers_mut().insert(header::ETAG, tag);
    if status == StatusCode::CREATED {
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, value);
        }
    }
    response
}

/// The ETags listed in a conditional header: `*`, or strong `"<version>"`
/// tags. Weak or foreign tags are kept as `None`: they never match.
enum Tags {
    Any,
    List(Vec<Option<i64>>),
}

fn tags(headers: &HeaderMap, name: header::HeaderName) -> Result<Option<Tags>, ApiError> {
    let Some(value) = headers.get(&name) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::invalid_parameter(format!("{name} is not ASCII")))?
        .trim();
    if text == "*" {
        return Ok(Some(Tags::Any));
    }
    let list = text
        .split(',')
        .map(|tag| {
            tag.trim()
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .and_then(|t| t.parse::<i64>().ok())
        })
        .collect();
    Ok(Some(Tags::List(list)))
}

/// `If-Match` as a store precondition.
fn if_match(headers: &HeaderMap) -> Result<Option<Expect>, ApiError> {
    Ok(match tags(headers, header::IF_MATCH)? {
        None => None,
        Some(Tags::Any) => Some(Expect::Exists),
        Some(Tags::List(list)) => match list.as_slice() {
            [one] => Some(Expect::Version(one.unwrap_or(0))),
            _ => return Err(ApiError::invalid_parameter("If-Match takes one ETag or *")),
        },
    })
}

fn new_record_id(state: &AppState) -> RecordId {
    RecordId::generate(state.clock.now(), &mut rand::thread_rng())
}

fn parse_indexes(fields: &[String]) -> Result<Vec<FieldPath>, ApiError> {
    let paths = fields
        .iter()
        .map(|f| FieldPath::parse(f).map_err(|e| ApiError::invalid_body(format!("indexes: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    check_indexes(&paths).map_err(|e| ApiError::invalid_body(format!("indexes: {e}")))?;
    Ok(paths)
}

fn collection_view(c: data::Collection) -> Collection {
    Collection {
        name: c.name,
        indexes: c.indexes.iter().map(ToString::to_string).collect(),
        created_at: c.created_at,
    }
}

async fn write_one(
    state: &AppState,
    scope: &DataScope,
    collection: &CollectionName,
    op: BatchOp,
) -> Result<BatchResult, ApiError> {
    let mut results = state
        .data
        .write(scope, collection, vec![op], state.clock.now())
        .await
        .map_err(data_error)?;
    results
        .pop()
        .ok_or_else(|| ApiError::new(ErrorCode::Internal))
}

fn written(result: BatchResult) -> Result<Record, ApiError> {
    match result {
        BatchResult::Written(record) => Ok(record),
        BatchResult::Deleted(_) => Err(ApiError::new(ErrorCode::Internal)),
    }
}

/// Create a collection.
#[utoipa::path(post, path = "/v1/collections", tag = "data", request_body = CreateCollection,
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Created", body = Collection),
        (status = 409, description = "The name is taken", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn create_collection(
    DataMember(_principal, scope, _role): DataMember<Developer>,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateCollection>,
) -> Result<Response, ApiError> {
    let indexes = parse_indexes(&body.indexes)?;
    let created = state
        .data
        .create_collection(&scope, &body.name, &indexes, state.clock.now())
        .await
        .map_err(data_error)?;
    let location = format!("/v1/collections/{}", created.name);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(collection_view(created)),
    )
        .into_response())
}

/// List the tenant's collections by name.
#[utoipa::path(get, path = "/v1/collections", tag = "data", params(PageQuery), security(("api_key" = [])),
    responses((status = 200, description = "A page of collections", body = Page<Collection>)))]
pub(super) async fn list_collections(
    DataMember(_principal, scope, _role): DataMember<Reader>,
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<CollectionPage>, ApiError> {
    let limit = page.limit()?;
    let after = page.after(|s| CollectionName::parse(s).ok())?;
    let rows = state
        .data
        .collections(&scope, after.as_ref(), limit + 1)
        .await
        .map_err(data_error)?;
    let (rows, next_cursor) = page_of(rows, limit, |c| c.name.to_string());
    Ok(Json(CollectionPage {
        items: rows.into_iter().map(collection_view).collect(),
        next_cursor,
    }))
}

/// Get a collection.
#[utoipa::path(get, path = "/v1/collections/{collection}", tag = "data",
    params(("collection" = schema::CollectionName, Path)), security(("api_key" = [])),
    responses((status = 200, description = "The collection", body = Collection)))]
pub(super) async fn get_collection(
    DataMember(_principal, scope, _role): DataMember<Reader>,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<CollectionName>,
) -> Result<Json<Collection>, ApiError> {
    let found = state
        .data
        .collection(&scope, &name)
        .await
        .map_err(data_error)?;
    found
        .map(|c| Json(collection_view(c)))
        .ok_or_else(|| data_error(DataError::CollectionNotFound))
}

/// Delete a collection and all its records.
#[utoipa::path(delete, path = "/v1/collections/{collection}", tag = "data",
    params(("collection" = schema::CollectionName, Path)), security(("api_key" = [])),
    responses((status = 204, description = "Deleted")))]
pub(super) async fn delete_collection(
    DataMember(_principal, scope, _role): DataMember<Developer>,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<CollectionName>,
) -> Result<StatusCode, ApiError> {
    match state
        .data
        .delete_collection(&scope, &name)
        .await
        .map_err(data_error)?
    {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(data_error(DataError::CollectionNotFound)),
    }
}

/// Create a record with a server-assigned, time-ordered id.
#[utoipa::path(post, path = "/v1/collections/{collection}/records", tag = "data",
    params(("collection" = schema::CollectionName, Path)), security(("api_key" = [])),
    request_body(content = Object, description = "The record: a JSON object"),
    responses((status = 201, description = "Created; the ETag header carries its version", body = RecordView)))]
pub(super) async fn create_record(
    DataMember(_principal, scope, _role): DataMember<Developer>,
    State(state): State<AppState>,
    ApiPath(collection): ApiPath<CollectionName>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let op = BatchOp::Create {
        id: new_record_id(&state),
        body,
    };
    let record = written(write_one(&state, &scope, &collection, op).await?)?;
    Ok(record_response(StatusCode::CREATED, &collection, record))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListRecordsQuery {
    /// A filter expression, e.g. `status = "paid" and total >= 100`.
    filter: Option<String>,
    /// An indexed field to sort on; `-field` for descending. By id otherwise.
    sort: Option<String>,
    /// `next_cursor` from the previous page (with the same sort).
    #[param(pattern = "^[A-Za-z0-9_-]+$")]
    cursor: Option<String>,
    /// Records per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// The opaque cursor of record lists: the sort it belongs to and the last
/// row's position in it.
#[derive(Debug, Serialize, Deserialize)]
struct RecordCursor {
    sort: Option<String>,
    value: Option<Value>,
    id: RecordId,
}

fn parse_sort(sort: &Option<String>) -> Result<Option<(FieldPath, Direction)>, ApiError> {
    let Some(sort) = sort else {
        return Ok(None);
    };
    let (field, direction) = match sort.strip_prefix('-') {
        Some(field) => (field, Direction::Descending),
        None => (sort.as_str(), Direction::Ascending),
    };
    let field =
        FieldPath::parse(field).map_err(|e| ApiError::invalid_parameter(format!("sort: {e}")))?;
    Ok(Some((field, direction)))
}

/// List records, filtered and sorted, a page at a time.
#[utoipa::path(get, path = "/v1/collections/{collection}/records", tag = "data",
    params(("collection" = schema::CollectionName, Path), ListRecordsQuery), security(("api_key" = [])),
    responses(
        (status = 200, description = "A page of records", body = Page<RecordView>),
        (status = 400, description = "Invalid filter, sort, cursor or limit", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn list_records(
    DataMember(_principal, scope, _role): DataMember<Reader>,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<CollectionName>,
    ApiQuery(query): ApiQuery<ListRecordsQuery>,
) -> Result<Json<RecordPage>, ApiError> {
    let limit = match query.limit {
        None => DEFAULT_RECORD_PAGE,
        Some(n @ 1..=MAX_RECORD_PAGE) => n,
        Some(n) => {
            return Err(ApiError::invalid_parameter(format!(
                "limit is {n}; it must be between 1 and {MAX_RECORD_PAGE}"
            )))
        }
    };
    let filter = query
        .filter
        .as_deref()
        .map(Filter::parse)
        .transpose()
        .map_err(|e| ApiError::with_detail(ErrorCode::InvalidFilter, e.to_string()))?;
    let sort = parse_sort(&query.sort)?;
    let after = match &query.cursor {
        None => None,
        Some(text) => {
            let cursor: RecordCursor = URL_SAFE_NO_PAD
                .decode(text)
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .ok_or_else(|| ApiError::invalid_parameter("cursor is not valid"))?;
            if cursor.sort != query.sort {
                return Err(ApiError::invalid_parameter(
                    "cursor belongs to a list with another sort",
                ));
            }
            Some(Cursor {
                sort_value: cursor.value,
                id: cursor.id,
            })
        }
    };
    let collection = state
        .data
        .collection(&scope, &name)
        .await
        .map_err(data_error)?
        .ok_or_else(|| data_error(DataError::CollectionNotFound))?;
    let list = ListQuery {
        filter,
        sort,
        after,
        limit: limit + 1,
    };
    let rows = state
        .data
        .list(&scope, &collection, &list)
        .await
        .map_err(data_error)?;
    let next_position =
        (rows.len() > limit as usize).then(|| rows[limit as usize - 1].position.clone());
    let items = rows
        .into_iter()
        .take(limit as usize)
        .map(|r| view(r.record))
        .collect();
    let next_cursor = next_position.map(|p| {
        let cursor = RecordCursor {
            sort: query.sort.clone(),
            value: p.sort_value,
            id: p.id,
        };
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&cursor).unwrap_or_default())
    });
    Ok(Json(RecordPage { items, next_cursor }))
}

/// Get a record. `If-None-Match` with its ETag answers 304.
#[utoipa::path(get, path = "/v1/collections/{collection}/records/{id}", tag = "data",
    params(("collection" = schema::CollectionName, Path), ("id" = schema::RecordId, Path)), security(("api_key" = [])),
    responses(
        (status = 200, description = "The record; ETag carries its version", body = RecordView),
        (status = 304, description = "Unchanged since the ETag in If-None-Match"),
        (status = 404, description = "No such record or collection", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn get_record(
    DataMember(_principal, scope, _role): DataMember<Reader>,
    State(state): State<AppState>,
    ApiPath((collection, id)): ApiPath<(CollectionName, RecordId)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let record = state
        .data
        .record(&scope, &collection, &id)
        .await
        .map_err(data_error)?
        .ok_or_else(|| data_error(DataError::RecordNotFound))?;
    let unchanged = match tags(&headers, header::IF_NONE_MATCH)? {
        None => false,
        Some(Tags::Any) => true,
        Some(Tags::List(list)) => list.contains(&Some(record.version)),
    };
    if unchanged {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag(record.version))],
        )
            .into_response());
    }
    Ok(record_response(StatusCode::OK, &collection, record))
}

/// Create or replace a record under a client-chosen id. `If-Match` makes it
/// conditional on the version; `If-None-Match: *` makes it create-only.
#[utoipa::path(put, path = "/v1/collections/{collection}/records/{id}", tag = "data",
    params(("collection" = schema::CollectionName, Path), ("id" = schema::RecordId, Path)), security(("api_key" = [])),
    request_body(content = Object, description = "The record: a JSON object"),
    responses(
        (status = 200, description = "Replaced", body = RecordView),
        (status = 201, description = "Created", body = RecordView),
        (status = 412, description = "The precondition failed", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn put_record(
    DataMember(_principal, scope, _role): DataMember<Developer>,
    State(state): State<AppState>,
    ApiPath((collection, id)): ApiPath<(CollectionName, RecordId)>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let create_only = matches!(tags(&headers, header::IF_NONE_MATCH)?, Some(Tags::Any));
    let op = if create_only {
        BatchOp::Create { id, body }
    } else {
        BatchOp::Put {
            id,
            body,
            expect: if_match(&headers)?,
        }
    };
    let result = write_one(&state, &scope, &collection, op)
        .await
        .map_err(|e| match e.code {
            ErrorCode::RecordExists => {
                ApiError::with_detail(ErrorCode::PreconditionFailed, "the record exists")
            }
            _ => e,
        })?;
    let record = written(result)?;
    let status = if record.version == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(record_response(status, &collection, record))
}

/// Merge-patch a record (RFC 7386): `null` removes a member, objects merge,
/// anything else replaces.
#[utoipa::path(patch, path = "/v1/collections/{collection}/records/{id}", tag = "data",
    params(("collection" = schema::CollectionName, Path), ("id" = schema::RecordId, Path)), security(("api_key" = [])),
    request_body(content = Object, description = "A JSON merge patch", content_type = "application/merge-patch+json"),
    responses((status = 200, description = "The patched record", body = RecordView)))]
pub(super) async fn patch_record(
    DataMember(_principal, scope, _role): DataMember<Developer>,
    State(state): State<AppState>,
    ApiPath((collection, id)): ApiPath<(CollectionName, RecordId)>,
    headers: HeaderMap,
    ApiJson(patch): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let op = BatchOp::Patch {
        id,
        patch,
        expect: if_match(&headers)?,
    };
    let record = written(write_one(&state, &scope, &collection, op).await?)?;
    Ok(record_response(StatusCode::OK, &collection, record))
}

/// Delete a record, optionally only at the version in `If-Match`.
#[utoipa::path(delete, path = "/v1/collections/{collection}/records/{id}", tag = "data",
    params(("collection" = schema::CollectionName, Path), ("id" = schema::RecordId, Path)), security(("api_key" = [])),
    responses((status = 204, description = "Deleted")))]
pub(super) async fn delete_record(
    DataMember(_principal, scope, _role): DataMember<Developer>,
    State(state): State<AppState>,
    ApiPath((collection, id)): ApiPath<(CollectionName, RecordId)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let op = BatchOp::Delete {
        id,
        expect: if_match(&headers)?,
    };
    write_one(&state, &scope, &collection, op).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Apply up to 1000 writes to one collection, all or none.
#[utoipa::path(post, path = "/v1/collections/{collection}/batch", tag = "data", request_body = BatchRequest,
    params(("collection" = schema::CollectionName, Path)), security(("api_key" = [])),
    responses(
        (status = 200, description = "Every operation applied", body = BatchResponse),
        (status = 404, description = "An operation's record or the collection is missing; nothing was applied", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A create's id is taken (`record_exists`); nothing was applied", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "An operation's `if_match` does not match its record's version (`precondition_failed`); nothing was applied", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn batch(
    DataMember(_principal, scope, _role): DataMember<Developer>,
    State(state): State<AppState>,
    ApiPath(collection): ApiPath<CollectionName>,
    ApiJson(body): ApiJson<BatchRequest>,
) -> Result<Json<BatchResponse>, ApiError> {
    if body.operations.is_empty() || body.operations.len() > MAX_BATCH {
        return Err(ApiError::invalid_body(format!(
            "operations: 1 to {MAX_BATCH}, not {}",
            body.operations.len()
        )));
    }
    let ops = body
        .operations
        .into_iter()
        .map(|op| match op {
            BatchOperation::Create { id, data } => BatchOp::Create {
                id: id.unwrap_or_else(|| new_record_id(&state)),
                body: data,
            },
            BatchOperation::Put { id, data, if_match } => BatchOp::Put {
                id,
                body: data,
                expect: if_match.map(Expect::Version),
            },
            BatchOperation::Patch { id, data, if_match } => BatchOp::Patch {
                id,
                patch: data,
                expect: if_match.map(Expect::Version),
            },
            BatchOperation::Delete { id, if_match } => BatchOp::Delete {
                id,
                expect: if_match.map(Expect::Version),
            },
        })
        .collect();
    let results = state
        .data
        .write(&scope, &collection, ops, state.clock.now())
        .await
        .map_err(data_error)?;
    let results = results
        .into_iter()
        .map(|r| match r {
            BatchResult::Written(record) => BatchOutcome {
                id: record.id,
                version: Some(record.version),
                deleted: false,
            },
            BatchResult::Deleted(id) => BatchOutcome {
                id,
                version: None,
                deleted: true,
            },
        })
        .collect();
    Ok(Json(BatchResponse { results }))
}
