//! What can go wrong talking to a vigil server.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

/// One failed call. [`ClientError::Api`] is the server saying no (its JSON error body, parsed);
/// the other variants mean no usable answer came back.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with its error body `{"error": {"code", "message", "details"?}}`.
    #[error("{message}")]
    Api {
        /// HTTP status (400, 401, 403, 404, 409, 413, 415, 422, 429, 503, …).
        status: u16,
        /// The server's stable snake_case code (`invalid_query`, `id_conflict`, …).
        code: String,
        message: String,
        /// Extra structure some errors carry, such as the failing items of a batch.
        details: Option<Value>,
        /// From the `Retry-After` header of a 429 or 503.
        retry_after: Option<Duration>,
    },
    /// A non-success status whose body is not vigil's error shape (a proxy in between, or a
    /// server of another kind at that address).
    #[error("unexpected http status {status}: {body}")]
    Http { status: u16, body: String },
    /// The request could not be sent or its answer not read: connection refused, reset, timeout.
    #[error("cannot reach the server: {0}")]
    Transport(#[source] reqwest::Error),
    /// The base URL (or a path built on it) is not a valid http(s) URL.
    #[error("invalid url: {0}")]
    InvalidUrl(String),
    /// A success response whose body is not what the API promises.
    #[error("unexpected response body: {0}")]
    Decode(String),
}

impl ClientError {
    /// A stable code for scripts and error lines: the server's code for [`ClientError::Api`].
    pub fn code(&self) -> &str {
        match self {
            Self::Api { code, .. } => code,
            Self::Http { .. } => "unexpected_status",
            Self::Transport(_) => "transport",
            Self::InvalidUrl(_) => "invalid_url",
            Self::Decode(_) => "unexpected_response",
        }
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the same request may succeed later without change (rate limited, store
    /// unavailable: the server guarantees nothing was half-written in both cases).
    pub fn is_retryable(&self) -> bool {
        matches!(self.status(), Some(429 | 503))
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorObject,
}

#[derive(Deserialize)]
struct ErrorObject {
    code: String,
    message: String,
    #[serde(default)]
    details: Option<Value>,
}

/// Longest slice of an unexpected body kept in [`ClientError::Http`].
const MAX_BODY_IN_ERROR: usize = 512;

/// Turns a non-success answer into a [`ClientError`].
pub(crate) fn from_response_parts(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error }) => ClientError::Api {
            status,
            code: error.code,
            message: error.message,
            details: error.details.filter(|d| !d.is_null()),
            retry_after,
        },
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let mut end = text.len().min(MAX_BODY_IN_ERROR);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            ClientError::Http {
                status,
                body: text[..end].trim().to_owned(),
            }
        }
    }
}

/// `Retry-After` in its delay-seconds form (the only form vigil sends).
pub(crate) fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    let secs: f64 = value?.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_server_error_shape() {
        let body = br#"{"error":{"code":"reserved_field","message":"seq is set by the server","details":[{"index":0,"path":"seq"}]}}"#;
        let err = from_response_parts(422, None, body);
        match &err {
            ClientError::Api {
                status,
                code,
                message,
                details,
                ..
            } => {
                assert_eq!(*status, 422);
                assert_eq!(code, "reserved_field");
                assert_eq!(message, "seq is set by the server");
                assert_eq!(
                    details.as_ref().and_then(|d| d[0]["path"].as_str()),
                    Some("seq")
                );
            }
            other => panic!("expected api error, got {other:?}"),
        }
        assert_eq!(err.code(), "reserved_field");
        assert_eq!(err.to_string(), "seq is set by the server");
    }

    #[test]
    fn a_foreign_body_becomes_an_http_error_with_a_bounded_excerpt() {
        let body = "é".repeat(1000);
        let err = from_response_parts(502, None, body.as_bytes());
        match err {
            ClientError::Http { status: 502, body } => assert!(body.len() <= MAX_BODY_IN_ERROR),
            other => panic!("expected http error, got {other:?}"),
        }
    }

    #[test]
    fn retry_after_takes_delay_seconds() {
        assert_eq!(parse_retry_after(Some("3")), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after(Some(" 0.5 ")),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
        assert_eq!(parse_retry_after(Some("-1")), None);
        assert_eq!(parse_retry_after(None), None);
    }

    #[test]
    fn only_rate_limits_and_unavailability_are_retryable() {
        assert!(
            from_response_parts(
                429,
                None,
                br#"{"error":{"code":"rate_limited","message":"slow down"}}"#
            )
            .is_retryable()
        );
        assert!(from_response_parts(503, None, b"").is_retryable());
        assert!(!from_response_parts(422, None, b"").is_retryable());
    }
}
