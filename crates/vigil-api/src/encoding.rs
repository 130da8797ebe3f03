//! `Content-Encoding` of request bodies: what `POST /v1/events` decompresses, bounded.
//!
//! Producers and log shippers commonly compress what they send. An ingest body may be
//! `gzip` (also `x-gzip`), `deflate` (zlib, as HTTP means it) or `zstd`; `identity` is no
//! encoding. Anything else, including `br` and a list of several encodings, is refused with
//! 415 `unsupported_encoding` before the body is read.
//!
//! The limit on a body (`max_body_bytes`) holds for what it decompresses to: the compressed
//! bytes are read within the limit first, then decompressed on the blocking pool with the
//! output cut at one byte past the limit, so a small "zip bomb" costs at most the limit in
//! memory and the time to produce it before its 413. Other JSON routes take no encoding.

use std::io::Read;

use axum::http::{HeaderMap, header};
use bytes::Bytes;

use crate::error::ApiError;

/// How a request body is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContentEncoding {
    Identity,
    /// RFC 1952, one or more members.
    Gzip,
    /// The zlib format (RFC 1950), which is what HTTP calls `deflate`.
    Deflate,
    /// RFC 8878.
    Zstd,
}

impl ContentEncoding {
    /// From `Content-Encoding`: absent or `identity` is no encoding; 415
    /// `unsupported_encoding` for anything vigil does not decompress.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let mut values = headers.get_all(header::CONTENT_ENCODING).iter();
        let Some(value) = values.next() else {
            return Ok(Self::Identity);
        };
        let raw = value.to_str().unwrap_or("<not ascii>");
        if values.next().is_some() || raw.contains(',') {
            return Err(ApiError::UnsupportedEncoding(
                "several encodings at once".to_owned(),
            ));
        }
        match raw.trim().to_ascii_lowercase().as_str() {
            "" | "identity" => Ok(Self::Identity),
            "gzip" | "x-gzip" => Ok(Self::Gzip),
            "deflate" => Ok(Self::Deflate),
            "zstd" => Ok(Self::Zstd),
            _ => Err(ApiError::UnsupportedEncoding(raw.to_owned())),
        }
    }

    pub(crate) fn is_identity(self) -> bool {
        self == Self::Identity
    }

    fn name(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Gzip => "gzip",
            Self::Deflate => "deflate",
            Self::Zstd => "zstd",
        }
    }

    /// The body decompressed, on the blocking pool: 413 `body_too_large` when it would exceed
    /// `limit` bytes (no more than `limit + 1` are ever produced), 400 `invalid_body` when it
    /// is not valid data of its encoding.
    pub(crate) async fn decode(self, bytes: Bytes, limit: usize) -> Result<Bytes, ApiError> {
        if self.is_identity() {
            return Ok(bytes);
        }
        tokio::task::spawn_blocking(move || self.decode_blocking(&bytes, limit))
            .await
            .map_err(|e| ApiError::Internal(format!("decompression task failed: {e}")))?
    }

    fn decode_blocking(self, bytes: &[u8], limit: usize) -> Result<Bytes, ApiError> {
        let reader: Box<dyn Read + '_> = match self {
            Self::Identity => return Ok(Bytes::copy_from_slice(bytes)),
            Self::Gzip => Box::new(flate2::read::MultiGzDecoder::new(bytes)),
            Self::Deflate => Box::new(flate2::read::ZlibDecoder::new(bytes)),
            Self::Zstd => Box::new(
                zstd::stream::read::Decoder::with_buffer(bytes).map_err(|e| self.corrupt(&e))?,
            ),
        };
        let bound = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
        let mut out = Vec::with_capacity(bytes.len().saturating_mul(4).min(limit));
        reader
            .take(bound)
            .read_to_end(&mut out)
            .map_err(|e| self.corrupt(&e))?;
        if out.len() > limit {
            return Err(ApiError::BodyTooLarge {
                limit,
                unread: false,
            });
        }
        Ok(Bytes::from(out))
    }

    fn corrupt(self, e: &std::io::Error) -> ApiError {
        ApiError::InvalidBody(format!("the body is not valid {} data: {e}", self.name()))
    }
}

/// Refuses an encoded body where none is taken (every JSON route but `POST /v1/events`).
pub(crate) fn refuse_encoded(headers: &HeaderMap) -> Result<(), ApiError> {
    match ContentEncoding::from_headers(headers)? {
        ContentEncoding::Identity => Ok(()),
        other => Err(ApiError::UnsupportedEncoding(format!(
            "{} (only POST /v1/events takes a compressed body)",
            other.name()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn headers(encoding: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for e in encoding {
            h.append(header::CONTENT_ENCODING, e.parse().unwrap());
        }
        h
    }

    fn gzip(data: &[u8]) -> Bytes {
        let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        w.write_all(data).unwrap();
        Bytes::from(w.finish().unwrap())
    }

    #[test]
    fn encodings_are_named_or_refused() {
        let of = |e: &[&str]| ContentEncoding::from_headers(&headers(e));
        assert_eq!(of(&[]).unwrap(), ContentEncoding::Identity);
        assert_eq!(of(&["identity"]).unwrap(), ContentEncoding::Identity);
        assert_eq!(of(&["GZip"]).unwrap(), ContentEncoding::Gzip);
        assert_eq!(of(&["x-gzip"]).unwrap(), ContentEncoding::Gzip);
        assert_eq!(of(&["deflate"]).unwrap(), ContentEncoding::Deflate);
        assert_eq!(of(&["zstd"]).unwrap(), ContentEncoding::Zstd);
        for refused in [
            &["br"][..],
            &["compress"],
            &["gzip, gzip"],
            &["gzip", "zstd"],
        ] {
            let e = of(refused).unwrap_err();
            assert_eq!(e.code(), "unsupported_encoding", "{refused:?}");
            assert_eq!(e.status(), 415);
        }
        assert!(refuse_encoded(&headers(&["identity"])).is_ok());
        assert_eq!(
            refuse_encoded(&headers(&["gzip"])).unwrap_err().code(),
            "unsupported_encoding"
        );
    }

    #[tokio::test]
    async fn every_encoding_round_trips() {
        let data = br#"{"type":"compressed"}"#.repeat(100);
        let decoded = ContentEncoding::Gzip
            .decode(gzip(&data), data.len())
            .await
            .unwrap();
        assert_eq!(decoded, data);

        // Two gzip members are one body.
        let mut two = gzip(&data[..50]).to_vec();
        two.extend_from_slice(&gzip(&data[50..]));
        let decoded = ContentEncoding::Gzip
            .decode(Bytes::from(two), data.len())
            .await
            .unwrap();
        assert_eq!(decoded, data);

        let mut w = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        w.write_all(&data).unwrap();
        let decoded = ContentEncoding::Deflate
            .decode(Bytes::from(w.finish().unwrap()), data.len())
            .await
            .unwrap();
        assert_eq!(decoded, data);

        let zstd = zstd::encode_all(&data[..], 3).unwrap();
        let decoded = ContentEncoding::Zstd
            .decode(Bytes::from(zstd), data.len())
            .await
            .unwrap();
        assert_eq!(decoded, data);
    }

    /// A body that decompresses past the limit is 413 without being decompressed further:
    /// 64 MiB of zeros in about 64 KiB of gzip, against a 1 MiB limit.
    #[tokio::test]
    async fn a_zip_bomb_is_too_large_after_at_most_the_limit() {
        let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            w.write_all(&zeros).unwrap();
        }
        let bomb = Bytes::from(w.finish().unwrap());
        assert!(bomb.len() < 1 << 20, "{}", bomb.len());
        let started = std::time::Instant::now();
        let e = ContentEncoding::Gzip
            .decode(bomb, 1 << 20)
            .await
            .unwrap_err();
        assert!(
            matches!(e, ApiError::BodyTooLarge { limit, .. } if limit == 1 << 20),
            "{e:?}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));

        let e = ContentEncoding::Gzip
            .decode(Bytes::from_static(b"not gzip"), 100)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "invalid_body");
    }
}
