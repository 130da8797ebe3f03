//! `/v1/users`: users who log in with a password (scope `admin` for the caller's tenant).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use vigil_auth::{NewUser, UserInfo};

use crate::AppState;
use crate::authenticate::Authenticated;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiJson;

#[derive(Debug, Serialize)]
pub struct UserList {
    pub users: Vec<UserInfo>,
}

#[derive(ToSchema)]
#[schema(as = NewUser)]
#[allow(dead_code)] // documents vigil_auth::NewUser
pub(crate) struct NewUserDoc {
    #[schema(example = "alice")]
    username: String,
    #[schema(format = Password)]
    password: String,
    #[schema(example = "acme")]
    tenant: String,
    #[schema(example = json!(["events:read"]))]
    scopes: Vec<String>,
}

#[derive(ToSchema)]
#[schema(as = UserInfo)]
#[allow(dead_code)] // documents vigil_auth::UserInfo
pub(crate) struct UserInfoDoc {
    username: String,
    tenant: String,
    scopes: Vec<String>,
    created_at: String,
    created_by: String,
}

#[derive(ToSchema)]
#[schema(as = UserList)]
#[allow(dead_code)] // documents UserList
pub(crate) struct UserListDoc {
    users: Vec<UserInfoDoc>,
}

/// Create a user; the password is stored as an argon2id hash.
#[utoipa::path(
    post, path = "/v1/users", operation_id = "create_user", tag = "admin",
    request_body(content = NewUserDoc, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = UserInfoDoc),
        (status = 400, description = "invalid_json, invalid_body", body = ErrorBody),
        (status = 403, description = "Not an admin of that tenant", body = ErrorBody),
        (status = 409, description = "The username exists", body = ErrorBody),
        (status = 422, description = "invalid_username, invalid_password, invalid_scope", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    ApiJson(req): ApiJson<NewUser>,
) -> Result<(StatusCode, axum::Json<UserInfo>), ApiError> {
    let created = state.auth().create_user(&principal, req).await?;
    Ok((StatusCode::CREATED, axum::Json(created)))
}

/// The users the caller administers.
#[utoipa::path(
    get, path = "/v1/users", operation_id = "list_users", tag = "admin",
    responses(
        (status = 200, description = "Users", body = UserListDoc),
        (status = 403, description = "Missing scope admin", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
) -> Result<axum::Json<UserList>, ApiError> {
    Ok(axum::Json(UserList {
        users: state.auth().list_users(&principal)?,
    }))
}

/// Delete a user: their tokens stop working at once.
#[utoipa::path(
    delete, path = "/v1/users/{username}", operation_id = "delete_user", tag = "admin",
    params(("username" = String, Path, description = "Username")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Missing scope admin", body = ErrorBody),
        (status = 404, description = "No such user in a tenant the caller administers", body = ErrorBody),
        (status = 409, description = "last_root_credential: the last active root credential cannot be removed; create another root key first", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(username) = path.map_err(|e| ApiError::InvalidBody(e.body_text()))?;
    state.auth().delete_user(&principal, &username).await?;
    Ok(StatusCode::NO_CONTENT)
}
