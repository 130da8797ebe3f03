//! Why an authentication or administration request was refused.

use std::time::Duration;

use vigil_store::StoreError;

/// Every way `vigil-auth` can refuse a request. Each variant has a stable [`code`] and an
/// [`http_status`], so the HTTP layer maps them with one table.
///
/// `Unauthenticated` messages are deliberately vague ("invalid credential", "expired token"):
/// they never say whether the key id, the secret, the username or the password was wrong.
///
/// [`code`]: AuthError::code
/// [`http_status`]: AuthError::http_status
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credential, or one that does not check out (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// The credential is valid but lacks the scope or tenant for the request (403).
    #[error("{0}")]
    Forbidden(String),
    /// The key or user does not exist, or belongs to a tenant the caller cannot see (404).
    #[error("{0}")]
    NotFound(String),
    /// The key or user already exists (409).
    #[error("{0}")]
    Conflict(String),
    /// Revoking the key or deleting the user would leave no active root credential, and
    /// nothing could administer the server until an offline recovery (409).
    #[error("{0}")]
    LastRootCredential(String),
    /// A well-formed request with an invalid value: unknown scope, bad username, short
    /// password (422). `code` is specific: `invalid_scope`, `invalid_username`, …
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// The credential has used up its request budget, a username its failed logins, or every
    /// password check is busy and the queue for them full; try again after `retry_after` (429).
    #[error("rate limit exceeded, retry after {}s", retry_after.as_secs_f64().ceil())]
    RateLimited { retry_after: Duration },
    /// Loading or saving the credential document failed; nothing was changed (503/500).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An invariant broke inside vigil-auth (a corrupt credential document, a hashing task
    /// that panicked). The HTTP layer answers 500 with a generic message and logs this one.
    #[error("internal auth error: {0}")]
    Internal(String),
}

impl AuthError {
    /// Stable, machine-readable error code (the `code` of the JSON error body).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "unauthenticated",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::LastRootCredential(_) => "last_root_credential",
            Self::Invalid { code, .. } => code,
            Self::RateLimited { .. } => "rate_limited",
            Self::Store(e) => e.code(),
            Self::Internal(_) => "internal",
        }
    }

    /// The HTTP status this error deserves.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Unauthenticated(_) => 401,
            Self::Forbidden(_) => 403,
            Self::NotFound(_) => 404,
            Self::Conflict(_) | Self::LastRootCredential(_) => 409,
            Self::Invalid { .. } => 422,
            Self::RateLimited { .. } => 429,
            Self::Store(StoreError::Unavailable(_)) => 503,
            Self::Store(_) | Self::Internal(_) => 500,
        }
    }

    pub(crate) fn invalid_credential() -> Self {
        Self::Unauthenticated("invalid credential".to_owned())
    }

    pub(crate) fn expired_token() -> Self {
        Self::Unauthenticated("expired token".to_owned())
    }

    pub(crate) fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses() {
        let cases: Vec<(AuthError, &str, u16)> = vec![
            (AuthError::invalid_credential(), "unauthenticated", 401),
            (
                AuthError::Forbidden("missing scope admin".into()),
                "forbidden",
                403,
            ),
            (
                AuthError::NotFound("key not found".into()),
                "not_found",
                404,
            ),
            (
                AuthError::Conflict("user already exists".into()),
                "conflict",
                409,
            ),
            (
                AuthError::LastRootCredential("last root".into()),
                "last_root_credential",
                409,
            ),
            (
                AuthError::invalid("invalid_scope", "unknown scope"),
                "invalid_scope",
                422,
            ),
            (
                AuthError::RateLimited {
                    retry_after: Duration::from_millis(1500),
                },
                "rate_limited",
                429,
            ),
            (
                AuthError::Store(StoreError::Unavailable("down".into())),
                "store_unavailable",
                503,
            ),
            (
                AuthError::Store(StoreError::internal("disk")),
                "internal",
                500,
            ),
            (AuthError::Internal("corrupt".into()), "internal", 500),
        ];
        for (err, code, status) in cases {
            assert_eq!(err.code(), code, "{err}");
            assert_eq!(err.http_status(), status, "{err}");
        }
    }

    #[test]
    fn rate_limited_message_rounds_up() {
        let e = AuthError::RateLimited {
            retry_after: Duration::from_millis(1500),
        };
        assert_eq!(e.to_string(), "rate limit exceeded, retry after 2s");
    }
}
