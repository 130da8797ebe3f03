//! Authentication of HTTP requests: the first step of every tenant-scoped route.
//!
//! [`Authenticated`] is the extractor every such handler takes. It reads the bearer credential
//! (`Authorization: Bearer <api key | JWT>`), has [`vigil_auth::Auth`] check it and the
//! caller's rate limit, and records tenant and credential on the request's span. The tenant a
//! handler reads or writes comes only from it, never from the request. Scopes are checked by
//! each handler (`principal.require(..)`), since they differ per route.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use vigil_auth::{AuthError, Principal};

use crate::AppState;
use crate::error::ApiError;

/// The caller, authenticated from `Authorization: Bearer <api key | JWT>` and within its rate
/// limit. Every tenant-scoped handler takes this, and reads the tenant only from it.
#[derive(Debug, Clone)]
pub(crate) struct Authenticated(pub Principal);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let bearer = bearer_token(&parts.headers)?
            .ok_or_else(|| AuthError::Unauthenticated("missing bearer credential".to_owned()))?;
        let principal = state.auth().authenticate(bearer)?;
        state.auth().check_rate(&principal)?;
        let span = tracing::Span::current();
        span.record("tenant", principal.tenant.as_str());
        span.record("credential", principal.credential_id().as_str());
        Ok(Self(principal))
    }
}

/// The credential of an `Authorization: Bearer …` header; `None` when there is no such header.
/// A header with another scheme, or that is not ASCII, is a 401 (never echoed back).
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || {
        ApiError::Auth(AuthError::Unauthenticated(
            "malformed authorization header".to_owned(),
        ))
    };
    let text = value.to_str().map_err(|_| malformed())?;
    let (scheme, credential) = text.trim().split_once(' ').ok_or_else(malformed)?;
    let credential = credential.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || credential.is_empty() {
        return Err(malformed());
    }
    Ok(Some(credential))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth_header(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token(&HeaderMap::new()).unwrap(), None);
        assert_eq!(
            bearer_token(&auth_header("Bearer abc")).unwrap(),
            Some("abc")
        );
        assert_eq!(
            bearer_token(&auth_header("bearer   abc ")).unwrap(),
            Some("abc")
        );
        for bad in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", "abc"] {
            let e = bearer_token(&auth_header(bad)).unwrap_err();
            assert_eq!(e.code(), "unauthenticated", "{bad}");
            assert!(
                !e.to_string().contains("dXNl"),
                "the credential is never echoed"
            );
        }
    }
}
