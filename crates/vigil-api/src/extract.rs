//! Request extractors: the authenticated caller, bounded bodies, JSON bodies, query pairs.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Uri, header};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;
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

/// Reads a whole body, refusing (413) one longer than `limit` bytes without buffering more.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::BodyTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::BodyTooLarge { limit })
        }
        Err(e) => Err(ApiError::InvalidBody(format!(
            "could not read the request body: {e}"
        ))),
    }
}

/// Parses a JSON request body: syntax errors are 400 `invalid_json` with their position,
/// a valid document of the wrong shape 400 `invalid_body`.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        if e.is_data() {
            ApiError::InvalidBody(e.to_string())
        } else {
            let full = e.to_string();
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            ApiError::InvalidJson {
                message: full.strip_suffix(&suffix).unwrap_or(&full).to_owned(),
                position: crate::error::JsonPosition {
                    line: e.line(),
                    column: e.column(),
                },
            }
        }
    })
}

/// A JSON body of `T`, at most `max_body_bytes` long. `Content-Type` must be absent or
/// `application/json`.
#[derive(Debug)]
pub(crate) struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        check_json_content_type(&parts.headers)?;
        let bytes = read_body(&parts.headers, body, state.config().max_body_bytes).await?;
        parse_json(&bytes).map(Self)
    }
}

pub(crate) fn check_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let raw = value.to_str().unwrap_or("<not ascii>");
    let essence = raw.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(raw.to_owned()))
    }
}

/// The URL query as `(name, value)` pairs, percent-decoded, repeated names kept in order.
pub(crate) fn query_pairs(uri: &Uri) -> Result<Vec<(String, String)>, ApiError> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| {
            ApiError::Query(vigil_query::QueryError::InvalidParameter {
                name: "query string".to_owned(),
                message: e.body_text(),
            })
        })
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

    #[test]
    fn query_pairs_keep_repeats_and_decode() {
        let uri: Uri = "/v1/events?type=a&type=b&q=severity%3E%3D7+AND+x&actor.id=u%2F7"
            .parse()
            .unwrap();
        let pairs = query_pairs(&uri).unwrap();
        assert_eq!(
            pairs,
            vec![
                ("type".to_owned(), "a".to_owned()),
                ("type".to_owned(), "b".to_owned()),
                ("q".to_owned(), "severity>=7 AND x".to_owned()),
                ("actor.id".to_owned(), "u/7".to_owned()),
            ]
        );
        assert!(
            query_pairs(&"/v1/events".parse().unwrap())
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused() {
        let e = read_body(&HeaderMap::new(), Body::from(vec![b'x'; 11]), 10)
            .await
            .unwrap_err();
        assert!(matches!(e, ApiError::BodyTooLarge { limit: 10 }));
        let ok = read_body(&HeaderMap::new(), Body::from(vec![b'x'; 10]), 10)
            .await
            .unwrap();
        assert_eq!(ok.len(), 10);
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, "1000".parse().unwrap());
        assert!(matches!(
            read_body(&h, Body::empty(), 10).await,
            Err(ApiError::BodyTooLarge { .. })
        ));
    }
}
