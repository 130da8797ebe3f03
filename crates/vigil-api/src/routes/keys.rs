//! `/v1/keys`: API keys (scope `admin` for the caller's tenant, `root` for any tenant).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use vigil_auth::{CreatedKey, KeyInfo, NewKey};

use crate::AppState;
use crate::authenticate::Authenticated;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiJson;

#[derive(Debug, Serialize)]
pub struct KeyList {
    pub keys: Vec<KeyInfo>,
}

#[derive(ToSchema)]
#[schema(as = NewKey)]
#[allow(dead_code)] // documents vigil_auth::NewKey
pub(crate) struct NewKeyDoc {
    #[schema(example = "billing")]
    name: String,
    #[schema(example = "acme")]
    tenant: String,
    #[schema(example = json!(["events:write"]))]
    scopes: Vec<String>,
    #[schema(example = "2025-01-01T00:00:00Z")]
    expires_at: Option<String>,
}

#[derive(ToSchema)]
#[schema(as = CreatedKey)]
#[allow(dead_code)] // documents vigil_auth::CreatedKey
pub(crate) struct CreatedKeyDoc {
    #[schema(example = "k3v9q0x1m2ab")]
    id: String,
    /// The key itself: shown this once, stored hashed.
    #[schema(example = "vgl_k3v9q0x1m2ab_…")]
    key: String,
    name: String,
    tenant: String,
    scopes: Vec<String>,
    created_at: String,
    expires_at: Option<String>,
}

#[derive(ToSchema)]
#[schema(as = KeyInfo)]
#[allow(dead_code)] // documents vigil_auth::KeyInfo
pub(crate) struct KeyInfoDoc {
    id: String,
    name: String,
    tenant: String,
    scopes: Vec<String>,
    created_at: String,
    expires_at: Option<String>,
    created_by: String,
}

#[derive(ToSchema)]
#[schema(as = KeyList)]
#[allow(dead_code)] // documents KeyList
pub(crate) struct KeyListDoc {
    keys: Vec<KeyInfoDoc>,
}

/// Create an API key. The response holds the key once; only its hash is kept.
#[utoipa::path(
    post, path = "/v1/keys", operation_id = "create_key", tag = "admin",
    request_body(content = NewKeyDoc, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; `key` is shown only now", body = CreatedKeyDoc),
        (status = 400, description = "invalid_json, invalid_body", body = ErrorBody),
        (status = 403, description = "Not an admin of that tenant, or granting root without being root", body = ErrorBody),
        (status = 422, description = "invalid_scope, invalid_name, invalid_expires_at", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    ApiJson(req): ApiJson<NewKey>,
) -> Result<(StatusCode, axum::Json<CreatedKey>), ApiError> {
    let created = state.auth().create_key(&principal, req).await?;
    Ok((StatusCode::CREATED, axum::Json(created)))
}

/// The keys the caller administers (never their secrets).
#[utoipa::path(
    get, path = "/v1/keys", operation_id = "list_keys", tag = "admin",
    responses(
        (status = 200, description = "Keys", body = KeyListDoc),
        (status = 403, description = "Missing scope admin", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
) -> Result<axum::Json<KeyList>, ApiError> {
    Ok(axum::Json(KeyList {
        keys: state.auth().list_keys(&principal)?,
    }))
}

/// Revoke a key: it, and every token minted from it, stops working at once.
#[utoipa::path(
    delete, path = "/v1/keys/{id}", operation_id = "revoke_key", tag = "admin",
    params(("id" = String, Path, description = "Key id (the part after `vgl_`)")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 403, description = "Missing scope admin", body = ErrorBody),
        (status = 404, description = "No such key in a tenant the caller administers", body = ErrorBody),
        (status = 409, description = "last_root_credential: the last active root credential cannot be removed; create another root key first", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(id) = path.map_err(|e| ApiError::InvalidBody(e.body_text()))?;
    state.auth().revoke_key(&principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
