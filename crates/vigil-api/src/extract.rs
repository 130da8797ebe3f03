//! Request extractors: bounded bodies, JSON bodies, query pairs. (The authenticated caller is
//! `authenticate`'s.)

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, Uri, header};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::ApiError;

/// Most bytes of an oversized body read and discarded before answering 413, however large the
/// body limit.
const MAX_DRAIN_BYTES: usize = 64 * 1024 * 1024;

/// The body length the client declared in `Content-Length`, if any.
pub(crate) fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// Reads a whole body, refusing (413) one longer than `limit` bytes without buffering more.
///
/// An oversized body is still read and discarded, up to twice the limit (at most 64 MiB) in
/// all, before the 413 goes out: a client that is still sending would otherwise see its
/// connection reset and never read the answer. A body longer than that is left unread and the
/// answer says `Connection: close`.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    mut body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let drain_bound = limit.saturating_mul(2).min(MAX_DRAIN_BYTES).max(limit);
    let declared = declared_length(headers);
    if let Some(len) = declared.filter(|len| *len > limit as u64) {
        let unread = len > drain_bound as u64 || !drain(&mut body, drain_bound).await;
        return Err(ApiError::BodyTooLarge { limit, unread });
    }
    let capacity = declared.map_or(0, |len| usize::try_from(len).unwrap_or(limit).min(limit));
    let mut out = Vec::with_capacity(capacity);
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::InvalidBody(format!("could not read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        let seen = out.len().saturating_add(data.len());
        if seen > limit {
            drop(out);
            let unread = !drain(&mut body, drain_bound.saturating_sub(seen)).await;
            return Err(ApiError::BodyTooLarge { limit, unread });
        }
        out.extend_from_slice(&data);
    }
    Ok(Bytes::from(out))
}

/// Reads and discards the rest of `body`: `true` when it ended within `bound` more bytes.
async fn drain(body: &mut Body, bound: usize) -> bool {
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return false;
        };
        if let Some(data) = frame.data_ref() {
            seen = seen.saturating_add(data.len());
            if seen > bound {
                return false;
            }
        }
    }
    true
}

/// Parses a JSON request body: syntax errors, repeated keys and nesting beyond
/// [`vigil_event::MAX_NESTING`] are 400 `invalid_json` with their position, a valid document of
/// the wrong shape 400 `invalid_body`.
///
/// The text is parsed strictly into a value first ([`vigil_event::parse_document`]), then read
/// as `T`: a derived `Deserialize` refuses only repeated *known* fields, and a schema or an
/// unknown field may nest values of its own.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value = vigil_event::parse_document(bytes).map_err(|e| ApiError::InvalidJson {
        message: e.message,
        position: crate::error::JsonPosition {
            line: e.line,
            column: e.column,
        },
    })?;
    T::deserialize(value).map_err(|e| ApiError::InvalidBody(e.to_string()))
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

/// A JSON body of a route other than ingest: `Content-Type` absent or `application/json`
/// (else 415 `unsupported_media_type`), and no `Content-Encoding` (else 415
/// `unsupported_encoding`: only `POST /v1/events` decompresses).
pub(crate) fn check_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    crate::encoding::refuse_encoded(headers)?;
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
        assert!(matches!(
            e,
            ApiError::BodyTooLarge {
                limit: 10,
                unread: false
            }
        ));
        let ok = read_body(&HeaderMap::new(), Body::from(vec![b'x'; 10]), 10)
            .await
            .unwrap();
        assert_eq!(ok.len(), 10);
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, "1000".parse().unwrap());
        assert!(matches!(
            read_body(&h, Body::empty(), 10).await,
            Err(ApiError::BodyTooLarge { unread: true, .. })
        ));
    }

    /// An oversized body is read to its end when that is at most twice the limit, so the
    /// connection stays usable; beyond, it is left unread and the connection closes.
    #[tokio::test]
    async fn oversized_bodies_are_drained_within_a_bound() {
        let declared = |n: usize| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_LENGTH, n.to_string().parse().unwrap());
            h
        };
        let consumed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counting = |n: usize| {
            let consumed = std::sync::Arc::clone(&consumed);
            let chunks = (0..n).map(move |_| {
                consumed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok::<_, std::io::Error>(Bytes::from_static(b"x"))
            });
            Body::from_stream(futures::stream::iter(chunks))
        };

        let e = read_body(&declared(20), counting(20), 10)
            .await
            .unwrap_err();
        assert!(
            matches!(e, ApiError::BodyTooLarge { unread: false, .. }),
            "{e:?}"
        );
        assert_eq!(consumed.swap(0, std::sync::atomic::Ordering::SeqCst), 20);

        let e = read_body(&declared(21), counting(21), 10)
            .await
            .unwrap_err();
        assert!(
            matches!(e, ApiError::BodyTooLarge { unread: true, .. }),
            "{e:?}"
        );
        assert_eq!(consumed.swap(0, std::sync::atomic::Ordering::SeqCst), 0);

        // Without a declared length: read past the limit, then drained up to the bound.
        let e = read_body(&HeaderMap::new(), counting(15), 10)
            .await
            .unwrap_err();
        assert!(
            matches!(e, ApiError::BodyTooLarge { unread: false, .. }),
            "{e:?}"
        );
        let e = read_body(&HeaderMap::new(), counting(100), 10)
            .await
            .unwrap_err();
        assert!(
            matches!(e, ApiError::BodyTooLarge { unread: true, .. }),
            "{e:?}"
        );
    }
}
