//! Authentication of HTTP requests: the first step of every tenant-scoped route.
//!
//! [`Authenticated`] is the extractor every such handler takes. It reads the bearer credential
//! (`Authorization: Bearer <api key | JWT>`), has [`vigil_auth::Auth`] check it and the
//! caller's rate limit, and records tenant and credential on the request's span. The tenant a
//! handler reads or writes comes only from it, never from the request. Scopes are checked by
//! each handler (`principal.require(..)`), since they differ per route.
//!
//! Failed credentials are throttled per source address ([`SourceAddr`]): once an address has
//! used up its failures, its requests are answered 429 before any credential is checked, and
//! every failure and refusal counts in `vigil_auth_failures_total`.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use vigil_auth::{AuthError, Principal};

use crate::AppState;
use crate::error::ApiError;
use crate::metrics::AuthFailed;

/// The address a request comes from: the TCP peer (served with connect info, see
/// [`crate::serve_router`]), or, when [`crate::ApiConfig::trust_forwarded_for`] is set, the
/// last address of the last `X-Forwarded-For` header — the one the proxy in front of vigil
/// appended. `None` without either (a router driven without a socket): not throttled.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SourceAddr(pub Option<IpAddr>);

impl FromRequestParts<AppState> for SourceAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Infallible> {
        Ok(Self(source_address(
            parts,
            state.config().trust_forwarded_for,
        )))
    }
}

fn source_address(parts: &Parts, trust_forwarded_for: bool) -> Option<IpAddr> {
    if trust_forwarded_for && let Some(ip) = forwarded_for(&parts.headers) {
        return Some(ip);
    }
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

/// The last address of the last `X-Forwarded-For` header. Earlier entries are whatever the
/// client claimed and are never used.
fn forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    let last = headers.get_all("x-forwarded-for").iter().next_back()?;
    let entry = last.to_str().ok()?.rsplit(',').next()?.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// Refuses a throttled `source` before its credential is looked at (429 with
/// `Retry-After`).
pub(crate) fn check_source(state: &AppState, source: SourceAddr) -> Result<(), ApiError> {
    if let Some(ip) = source.0
        && let Err(e) = state.auth().check_source(ip)
    {
        AuthFailed {
            reason: "throttled",
        }
        .emit();
        return Err(e.into());
    }
    Ok(())
}

/// Counts `result`'s failure against `source` when the credential did not check out.
pub(crate) fn count_failure<T>(
    state: &AppState,
    source: SourceAddr,
    result: Result<T, AuthError>,
) -> Result<T, AuthError> {
    if let Err(AuthError::Unauthenticated(_)) = &result {
        AuthFailed {
            reason: "invalid_credential",
        }
        .emit();
        if let Some(ip) = source.0 {
            state.auth().record_failure(ip);
        }
    }
    result
}

/// The caller, authenticated from `Authorization: Bearer <api key | JWT>` and within its rate
/// limit. Every tenant-scoped handler takes this, and reads the tenant only from it.
#[derive(Debug, Clone)]
pub(crate) struct Authenticated(pub Principal);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let source = SourceAddr(source_address(parts, state.config().trust_forwarded_for));
        check_source(state, source)?;
        let bearer = match bearer_token(&parts.headers) {
            Ok(bearer) => bearer,
            Err(ApiError::Auth(e)) => return Err(count_failure(state, source, Err(e))?),
            Err(e) => return Err(e),
        }
        .ok_or_else(|| AuthError::Unauthenticated("missing bearer credential".to_owned()))?;
        let principal = count_failure(state, source, state.auth().authenticate(bearer))?;
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

    #[test]
    fn forwarded_for_takes_the_last_hop_only() {
        let mut h = HeaderMap::new();
        assert_eq!(forwarded_for(&h), None);
        h.append("x-forwarded-for", "1.1.1.1, 10.0.0.9".parse().unwrap());
        assert_eq!(forwarded_for(&h), Some("10.0.0.9".parse().unwrap()));
        h.append("x-forwarded-for", "[2001:db8::1]:443".parse().unwrap());
        assert_eq!(forwarded_for(&h), Some("2001:db8::1".parse().unwrap()));
        h.append("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(forwarded_for(&h), None);
    }

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
