//! `/v1/schemas`: the caller's tenant's JSON Schemas per event type.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use vigil_auth::{AuthError, Principal, Scope};
use vigil_event::EventType;
use vigil_ingest::schemas::PutOutcome;

use crate::AppState;
use crate::authenticate::Authenticated;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{check_json_content_type, parse_json, read_body};

#[derive(Debug, Serialize, ToSchema)]
pub struct SchemaList {
    pub schemas: Vec<SchemaEntry>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SchemaEntry {
    #[serde(rename = "type")]
    #[schema(example = "billing.charged")]
    pub event_type: String,
    #[schema(value_type = Object)]
    pub schema: Value,
}

/// Reading schemas needs `events:read` (producers and consumers look at them) or
/// `schemas:write`.
fn require_read(principal: &Principal) -> Result<(), ApiError> {
    if principal.scopes.allows(Scope::EventsRead) || principal.scopes.allows(Scope::SchemasWrite) {
        Ok(())
    } else {
        Err(AuthError::Forbidden("missing scope events:read or schemas:write".to_owned()).into())
    }
}

fn event_type(path: Result<Path<String>, PathRejection>) -> Result<EventType, ApiError> {
    let Path(raw) = path.map_err(|e| ApiError::InvalidType(e.body_text()))?;
    EventType::parse(&raw).map_err(|e| ApiError::InvalidType(e.message))
}

/// Every schema of the caller's tenant, ordered by type.
#[utoipa::path(
    get, path = "/v1/schemas", operation_id = "list_schemas", tag = "schemas",
    responses(
        (status = 200, description = "The tenant's schemas", body = SchemaList),
        (status = 403, description = "Missing scope events:read or schemas:write", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
) -> Result<axum::Json<SchemaList>, ApiError> {
    require_read(&principal)?;
    let schemas = state
        .schemas()
        .list(&principal.tenant)
        .into_iter()
        .map(|(t, s)| SchemaEntry {
            event_type: t.as_str().to_owned(),
            schema: (*s).clone(),
        })
        .collect();
    Ok(axum::Json(SchemaList { schemas }))
}

/// Register (201) or replace (200) the JSON Schema (draft 2020-12) for events of a type.
/// From then on, such events of this tenant are validated at ingest.
#[utoipa::path(
    put, path = "/v1/schemas/{type}", operation_id = "put_schema", tag = "schemas",
    params(("type" = String, Path, description = "Event type, e.g. billing.charged")),
    request_body(content = Object, description = "A JSON Schema (draft 2020-12)", content_type = "application/json"),
    responses(
        (status = 201, description = "Registered", body = Object),
        (status = 200, description = "Replaced", body = Object),
        (status = 400, description = "invalid_type, invalid_json", body = ErrorBody),
        (status = 403, description = "Missing scope schemas:write", body = ErrorBody),
        (status = 413, description = "schema_too_large: the document exceeds max_schema_bytes", body = ErrorBody),
        (status = 422, description = "invalid_schema; too_many_schemas: the tenant has max_schemas_per_tenant already", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn put(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    principal.require(Scope::SchemasWrite)?;
    let event_type = event_type(path)?;
    check_json_content_type(&headers)?;
    let limit = state.config().max_schema_bytes;
    let bytes = read_body(&headers, body, limit)
        .await
        .map_err(|e| match e {
            ApiError::BodyTooLarge { .. } => ApiError::SchemaTooLarge { limit },
            other => other,
        })?;
    let schema: Arc<Value> = Arc::new(parse_json(&bytes)?);
    let outcome = state
        .schemas()
        .put(&principal.tenant, event_type, Arc::clone(&schema))
        .await?;
    let status = match outcome {
        PutOutcome::Created => StatusCode::CREATED,
        PutOutcome::Replaced => StatusCode::OK,
    };
    Ok((status, axum::Json(schema.as_ref())).into_response())
}

/// The schema registered for a type.
#[utoipa::path(
    get, path = "/v1/schemas/{type}", operation_id = "get_schema", tag = "schemas",
    params(("type" = String, Path, description = "Event type")),
    responses(
        (status = 200, description = "The schema as registered", body = Object),
        (status = 403, description = "Missing scope events:read or schemas:write", body = ErrorBody),
        (status = 404, description = "No schema for this type", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    path: Result<Path<String>, PathRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    require_read(&principal)?;
    let event_type = event_type(path)?;
    let schema = state
        .schemas()
        .get(&principal.tenant, &event_type)
        .ok_or_else(|| ApiError::NotFound(format!("no schema for type {}", event_type.as_str())))?;
    Ok(axum::Json((*schema).clone()))
}

/// Remove the schema of a type: its events are no longer checked.
#[utoipa::path(
    delete, path = "/v1/schemas/{type}", operation_id = "delete_schema", tag = "schemas",
    params(("type" = String, Path, description = "Event type")),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, description = "Missing scope schemas:write", body = ErrorBody),
        (status = 404, description = "No schema for this type", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    principal.require(Scope::SchemasWrite)?;
    let event_type = event_type(path)?;
    if state
        .schemas()
        .delete(&principal.tenant, &event_type)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "no schema for type {}",
            event_type.as_str()
        )))
    }
}
