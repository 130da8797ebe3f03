//! Every way a request can fail, and the one JSON shape every failure takes.
//!
//! [`ApiError::status`] is the single table from error to HTTP status; [`IntoResponse`] turns
//! any error into `{"error": {"code", "message", "details"?}}`. Client errors (4xx) are logged
//! at debug level only; server errors (5xx) log their real cause with `tracing::error!` and
//! send a generic message, so no internal detail (paths, database errors) reaches a client.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use vigil_auth::AuthError;
use vigil_event::FieldErrorCode;
use vigil_ingest::{IngestError, ItemError, Refused};
use vigil_query::QueryError;
use vigil_store::{Conflict, StoreError};

// Documents `ItemError` (reported by admission, in vigil-ingest) in the OpenAPI document under
// its own name; the doc comment below is its description there.
/// One problem with one event of a batch: which event (`index`, 0-based position in the
/// request), which field (`path`, `""` for the whole event) and why.
#[derive(ToSchema)]
#[schema(as = ItemError)]
#[allow(dead_code)] // documents the shape; responses serialise `ItemError`
pub(crate) struct ItemErrorDoc {
    pub index: usize,
    pub path: String,
    #[schema(value_type = String, example = "reserved_field")]
    pub code: FieldErrorCode,
    pub message: String,
}

/// Where a request body stopped being valid JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct JsonPosition {
    /// 1-based line of the body (for NDJSON: the line of the offending record).
    pub line: usize,
    /// 1-based column within that line.
    pub column: usize,
}

/// A failed request. Each variant has a stable [`code`](ApiError::code) and one
/// [`status`](ApiError::status).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not valid JSON (or one NDJSON line is not).
    #[error("invalid json at line {} column {}: {message}", .position.line, .position.column)]
    InvalidJson {
        message: String,
        position: JsonPosition,
    },
    /// The body is valid JSON but not the shape the endpoint takes, or could not be read.
    #[error("invalid request body: {0}")]
    InvalidBody(String),
    #[error("unsupported content type {0:?}: send application/json or application/x-ndjson")]
    UnsupportedMediaType(String),
    /// A `Content-Encoding` the route does not decompress (see `encoding.rs`).
    #[error(
        "unsupported content encoding {0:?}: POST /v1/events takes gzip, deflate, zstd or none"
    )]
    UnsupportedEncoding(String),
    /// The body exceeds `limit`. `unread`: part of it was left unread (past the bound on what
    /// is read and discarded), so the connection closes after the answer.
    #[error("request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize, unread: bool },
    #[error("batch holds more than {limit} events")]
    BatchTooLarge { limit: usize },
    #[error("batch holds no events")]
    EmptyBatch,
    /// Some events of a batch are invalid; nothing was stored. `code` is the code every error
    /// shares, or `invalid_events` when they differ; `status` that of the first error.
    #[error("{} of {total} events {} invalid", .errors_in, if *.errors_in == 1 { "is" } else { "are" })]
    InvalidEvents {
        code: &'static str,
        status: u16,
        total: usize,
        errors_in: usize,
        errors: Vec<ItemError>,
    },
    /// Event ids already stored with different content; nothing of the batch was stored.
    #[error("{} event id(s) already stored with different content", .0.len())]
    IdConflict(Vec<Conflict>),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("invalid event id: {0}")]
    InvalidId(String),
    #[error("invalid event type: {0}")]
    InvalidType(String),
    #[error("invalid schema: {0}")]
    InvalidSchema(String),
    #[error("schema document is larger than {limit} bytes")]
    SchemaTooLarge { limit: usize },
    #[error("the tenant already has {limit} schemas, the most allowed")]
    TooManySchemas { limit: usize },
    #[error("{0}")]
    NotFound(String),
    #[error("no route for {method} {path}")]
    RouteNotFound { method: String, path: String },
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("{0}")]
    NotImplemented(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A store failure other than an id conflict (those become [`ApiError::IdConflict`]).
    #[error(transparent)]
    Store(StoreError),
    /// Bus mode: NATS did not take the batch (unreachable, or no acknowledgement in time).
    /// Some events may be in the stream; sending the same ids again is safe.
    #[error(transparent)]
    Bus(#[from] vigil_bus::BusError),
    /// Bus mode: a batch NATS did not acknowledge whole. `ids` are the ids of its events, in
    /// batch order (those the server assigned included): sending the batch again with them
    /// stores each event once.
    #[error("{error}")]
    BusPublish {
        error: vigil_bus::BusError,
        ids: Vec<String>,
    },
    #[error("request took longer than {}s", .0.as_secs_f64())]
    Timeout(Duration),
    /// The ingest budget (bytes of request bodies in flight) stayed full; nothing was read.
    #[error("the server is handling too much ingest at once, retry later")]
    Overloaded,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> Self {
        Self::invalid_events(refused.total, refused.errors)
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::InvalidSchema(message) => Self::InvalidSchema(message),
            IngestError::TooManySchemas { limit } => Self::TooManySchemas { limit },
            IngestError::Store(e) => e.into(),
            IngestError::Internal(message) => Self::Internal(message),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(conflicts) => Self::IdConflict(conflicts),
            other => Self::Store(other),
        }
    }
}

impl ApiError {
    /// Stable, machine-readable code: the `code` of the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidJson { .. } => "invalid_json",
            Self::InvalidBody(_) => "invalid_body",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::UnsupportedEncoding(_) => "unsupported_encoding",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::BatchTooLarge { .. } => "batch_too_large",
            Self::EmptyBatch => "empty_batch",
            Self::InvalidEvents { code, .. } => code,
            Self::IdConflict(_) => "id_conflict",
            Self::Query(e) => e.code(),
            Self::InvalidId(_) => "invalid_id",
            Self::InvalidType(_) => "invalid_type",
            Self::InvalidSchema(_) => "invalid_schema",
            Self::SchemaTooLarge { .. } => "schema_too_large",
            Self::TooManySchemas { .. } => "too_many_schemas",
            Self::NotFound(_) | Self::RouteNotFound { .. } => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::NotImplemented(_) => "not_implemented",
            Self::Auth(e) => e.code(),
            Self::Store(e) => e.code(),
            Self::Bus(e) | Self::BusPublish { error: e, .. } => e.code(),
            Self::Timeout(_) => "timeout",
            Self::Overloaded => "overloaded",
            Self::Internal(_) => "internal",
        }
    }

    /// The one table from error to HTTP status.
    pub fn status(&self) -> StatusCode {
        let code = match self {
            Self::InvalidJson { .. }
            | Self::EmptyBatch
            | Self::Query(_)
            | Self::InvalidId(_)
            | Self::InvalidType(_)
            | Self::InvalidBody(_) => 400,
            Self::RouteNotFound { .. } | Self::NotFound(_) => 404,
            Self::MethodNotAllowed { .. } => 405,
            Self::IdConflict(_) => 409,
            Self::BodyTooLarge { .. }
            | Self::BatchTooLarge { .. }
            | Self::SchemaTooLarge { .. } => 413,
            Self::UnsupportedMediaType(_) | Self::UnsupportedEncoding(_) => 415,
            Self::InvalidSchema(_) | Self::TooManySchemas { .. } => 422,
            Self::InvalidEvents { status, .. } => *status,
            Self::Auth(e) => e.http_status(),
            Self::Store(StoreError::Unavailable(_))
            | Self::Bus(_)
            | Self::BusPublish { .. }
            | Self::Timeout(_)
            | Self::Overloaded => 503,
            Self::Store(_) | Self::Internal(_) => 500,
            Self::NotImplemented(_) => 501,
        };
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// Builds the error for a batch whose events failed validation (`errors` non-empty, in
    /// event order). See [`ApiError::InvalidEvents`].
    pub(crate) fn invalid_events(total: usize, errors: Vec<ItemError>) -> Self {
        let first = errors.first().map(|e| e.code);
        let status = first.map_or(422, FieldErrorCode::http_status);
        let code = match first {
            Some(c) if errors.iter().all(|e| e.code == c) => c.as_str(),
            _ => "invalid_events",
        };
        let mut indexes: Vec<usize> = errors.iter().map(|e| e.index).collect();
        indexes.dedup();
        Self::InvalidEvents {
            code,
            status,
            total,
            errors_in: indexes.len(),
            errors,
        }
    }

    fn details(&self) -> Option<Value> {
        match self {
            Self::InvalidJson { position, .. } => Some(json!(position)),
            Self::BodyTooLarge { limit, .. }
            | Self::BatchTooLarge { limit }
            | Self::SchemaTooLarge { limit }
            | Self::TooManySchemas { limit } => Some(json!({ "limit": limit })),
            Self::InvalidEvents { errors, .. } => Some(json!(errors)),
            Self::BusPublish { ids, .. } => Some(json!({ "ids": ids })),
            Self::IdConflict(conflicts) => Some(Value::Array(
                conflicts
                    .iter()
                    .map(|c| json!({ "index": c.index, "id": c.id.as_str() }))
                    .collect(),
            )),
            _ => None,
        }
    }

    /// What a client is told about a server error: nothing internal.
    fn public_message(&self, status: StatusCode) -> String {
        if !status.is_server_error() {
            return self.to_string();
        }
        match self {
            Self::Store(StoreError::Unavailable(_))
            | Self::Auth(AuthError::Store(StoreError::Unavailable(_))) => {
                "the store is unavailable, retry later".to_owned()
            }
            Self::Bus(_) | Self::BusPublish { .. } => {
                "the event bus (NATS) is unavailable, retry later with the same event ids"
                    .to_owned()
            }
            Self::Timeout(_) | Self::Overloaded | Self::NotImplemented(_) => self.to_string(),
            _ => "internal server error".to_owned(),
        }
    }
}

/// The JSON error body, for the OpenAPI document.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

/// `code` is stable and machine-readable; `message` is for people; `details` depends on `code`
/// (the failing items of a batch, the position of a JSON syntax error, a limit).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorObject {
    #[schema(example = "invalid_json")]
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if matches!(self, Self::Overloaded | Self::Timeout(_)) {
            // Load, not a fault: one line per request would flood the log when it peaks.
            tracing::warn!(code = self.code(), "request refused");
        } else if status.is_server_error() && !matches!(self, Self::NotImplemented(_)) {
            tracing::error!(code = self.code(), error = %ErrorChain(&self), "request failed");
        } else if matches!(self, Self::InvalidBody(_)) {
            // Deserialisation messages can quote request values (a password sent as a number).
            tracing::debug!(code = self.code(), "request refused");
        } else {
            tracing::debug!(code = self.code(), error = %self, "request refused");
        }
        let body = ErrorBody {
            error: ErrorObject {
                code: self.code().to_owned(),
                message: self.public_message(status),
                details: self.details(),
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            Self::Auth(AuthError::Unauthenticated(_)) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::Auth(AuthError::RateLimited { retry_after }) => {
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            Self::Store(StoreError::Unavailable(_))
            | Self::Auth(AuthError::Store(StoreError::Unavailable(_)))
            | Self::Bus(_)
            | Self::BusPublish { .. }
            | Self::Overloaded => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::BodyTooLarge { unread: true, .. } => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

/// Displays an error followed by its sources: `a: b: c`.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(index: usize, code: FieldErrorCode) -> ItemError {
        ItemError {
            index,
            path: "type".into(),
            code,
            message: "bad".into(),
        }
    }

    async fn body_of(e: ApiError) -> (StatusCode, Value, axum::http::HeaderMap) {
        let response = e.into_response();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap(), headers)
    }

    #[test]
    fn one_shared_code_names_the_batch_error() {
        let e = ApiError::invalid_events(
            3,
            vec![
                item(0, FieldErrorCode::ReservedField),
                item(2, FieldErrorCode::ReservedField),
            ],
        );
        assert_eq!(e.code(), "reserved_field");
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.to_string(), "2 of 3 events are invalid");
    }

    #[test]
    fn mixed_codes_give_invalid_events_with_the_first_status() {
        let e = ApiError::invalid_events(
            2,
            vec![
                item(0, FieldErrorCode::AmbiguousField),
                item(1, FieldErrorCode::MissingField),
            ],
        );
        assert_eq!(e.code(), "invalid_events");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let one = ApiError::invalid_events(
            1,
            vec![
                item(0, FieldErrorCode::MissingField),
                item(0, FieldErrorCode::InvalidField),
            ],
        );
        assert_eq!(one.to_string(), "1 of 1 events is invalid");
    }

    #[tokio::test]
    async fn server_errors_hide_their_cause() {
        let (status, body, headers) = body_of(ApiError::Store(StoreError::internal(
            "open /var/lib/vigil/seg-1: permission denied",
        )))
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["code"], "internal");
        assert_eq!(body["error"]["message"], "internal server error");
        assert!(headers.get(header::RETRY_AFTER).is_none());

        let (status, body, headers) = body_of(ApiError::Store(StoreError::Unavailable(
            "writer poisoned".into(),
        )))
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "store_unavailable");
        assert!(!body.to_string().contains("poisoned"));
        assert_eq!(headers[header::RETRY_AFTER], "1");
    }

    #[tokio::test]
    async fn auth_errors_carry_their_headers() {
        let (status, body, headers) = body_of(ApiError::Auth(AuthError::Unauthenticated(
            "invalid credential".into(),
        )))
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"]["code"], "unauthenticated");
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");

        let (status, _, headers) = body_of(ApiError::Auth(AuthError::RateLimited {
            retry_after: Duration::from_millis(1200),
        }))
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers[header::RETRY_AFTER], "2");
    }

    #[tokio::test]
    async fn details_follow_the_code() {
        let (status, body, _) = body_of(ApiError::InvalidJson {
            message: "expected value".into(),
            position: JsonPosition { line: 3, column: 7 },
        })
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["details"], json!({"line": 3, "column": 7}));
        assert_eq!(
            body["error"]["message"],
            "invalid json at line 3 column 7: expected value"
        );

        let (_, body, _) = body_of(ApiError::EmptyBatch).await;
        assert!(body["error"].get("details").is_none());
    }
}
