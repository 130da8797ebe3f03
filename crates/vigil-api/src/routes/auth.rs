//! `POST /v1/auth/token`: trade an API key, or a username and password, for a short-lived JWT.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;
use utoipa::ToSchema;
use vigil_auth::{AuthError, SecretString, Token};

use crate::AppState;
use crate::authenticate::{SourceAddr, bearer_token, check_source, count_failure};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{check_json_content_type, parse_json, read_body};

/// A login. The password is a [`SecretString`]: it never appears in `Debug` output.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
}

/// A JWT: pass it as `Authorization: Bearer <token>` until it expires.
#[derive(ToSchema)]
#[schema(as = Token)]
#[allow(dead_code)] // documents vigil_auth::Token, which is what handlers return
pub(crate) struct TokenDoc {
    token: String,
    #[schema(example = "Bearer")]
    token_type: String,
    #[schema(example = "2024-05-01T12:15:00Z")]
    expires_at: String,
    /// Seconds until `expires_at`.
    #[schema(example = 900)]
    expires_in: u64,
}

/// With `Authorization: Bearer <api key>` and no body: a token for that key. With a body
/// `{"username","password"}`: a token for that user. Tokens carry the tenant and scopes of
/// the credential and stop working at once when it is revoked or deleted.
#[utoipa::path(
    post, path = "/v1/auth/token", operation_id = "issue_token", tag = "auth",
    request_body(content = Option<LoginRequest>, description = "Username and password; omit when sending an API key", content_type = "application/json"),
    responses(
        (status = 200, description = "A fresh token", body = TokenDoc),
        (status = 400, description = "invalid_json, invalid_body", body = ErrorBody),
        (status = 401, description = "Bad key, username or password (which one is not said)", body = ErrorBody),
        (status = 429, description = "Rate limited, too many failed logins for the username, or too many failed credentials from this address; see Retry-After", body = ErrorBody),
    ),
    security(("bearer" = []), ()),
)]
pub(crate) async fn token(
    State(state): State<AppState>,
    source: SourceAddr,
    headers: HeaderMap,
    body: Body,
) -> Result<axum::Json<Token>, ApiError> {
    check_source(&state, source)?;
    let bytes = read_body(&headers, body, state.config().max_body_bytes).await?;
    let auth = state.auth();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        let bearer = match bearer_token(&headers) {
            Ok(bearer) => bearer,
            Err(ApiError::Auth(e)) => return Err(count_failure(&state, source, Err(e))?),
            Err(e) => return Err(e),
        }
        .ok_or_else(|| {
            AuthError::Unauthenticated(
                "send an api key as bearer credential, or a username and password".to_owned(),
            )
        })?;
        // Only keys are exchanged: a token minted from a token would outlive its session.
        if !vigil_auth::is_api_key(bearer) {
            return Err(AuthError::Unauthenticated(
                "only an api key can be exchanged for a token".to_owned(),
            )
            .into());
        }
        let principal = count_failure(&state, source, auth.authenticate(bearer))?;
        auth.check_rate(&principal)?;
        return Ok(axum::Json(auth.issue_token(&principal)?));
    }
    check_json_content_type(&headers)?;
    let login: LoginRequest = parse_json(&bytes)?;
    let token = auth.login(&login.username, login.password.expose()).await;
    Ok(axum::Json(count_failure(&state, source, token)?))
}
