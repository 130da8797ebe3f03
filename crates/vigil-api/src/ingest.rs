//! HTTP ingest, the CPU side of `POST /v1/events`: the body split into events by its
//! `Content-Type` (one object, an array, NDJSON), then handed to admission
//! ([`vigil_ingest::Intake`]: normalised, schema-checked, prepared).
//!
//! The steps are synchronous, so property tests can drive them; [`prepare_body`] decides where
//! they run. Large bodies and batches go to the blocking pool, and so does every batch that
//! meets one of the tenant's schemas: a schema is tenant-supplied code in effect (patterns,
//! nesting, `uniqueItems`), and its cost must never stall the async runtime. The batch is
//! validated whole before anything is prepared, so a request either yields every event ready
//! to append (or publish) or the full list of what is wrong.
//!
//! Splitting a body stays here rather than in `vigil-ingest`: only HTTP carries batches (a bus
//! message is one event), and its errors (`invalid_json` with a position, `batch_too_large`,
//! `empty_batch`) are HTTP answers.

use std::cell::Cell;
use std::fmt;

use axum::http::{HeaderMap, header};
use bytes::Bytes;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use vigil_event::{JsonError, StrictValue};
use vigil_ingest::{Destination, Intake, Ready};

use crate::error::{ApiError, JsonPosition};

/// Batches at least this large are normalised and prepared off the async runtime.
pub(crate) const BLOCKING_MIN_EVENTS: usize = 64;
/// Bodies at least this large are parsed off the async runtime.
pub(crate) const BLOCKING_MIN_BYTES: usize = 64 * 1024;

/// How the events of a request body are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFormat {
    /// One event object, or an array of them.
    Json,
    /// One event object per line; blank lines ignored.
    Ndjson,
}

impl BodyFormat {
    /// From `Content-Type`: JSON when absent or `application/json`, NDJSON for
    /// `application/x-ndjson`; anything else is 415. `application/x-www-form-urlencoded` is what
    /// `curl -d` sends when nobody names a type: the body is read as JSON, so the one-line curl
    /// examples work as written (a real form body is not JSON and fails with `invalid_json`).
    pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let Some(value) = headers.get(header::CONTENT_TYPE) else {
            return Ok(Self::Json);
        };
        let raw = value
            .to_str()
            .map_err(|_| ApiError::UnsupportedMediaType("<not ascii>".to_owned()))?;
        let essence = raw
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/json" | "application/x-www-form-urlencoded" => Ok(Self::Json),
            "application/x-ndjson" | "application/ndjson" => Ok(Self::Ndjson),
            _ => Err(ApiError::UnsupportedMediaType(raw.to_owned())),
        }
    }
}

/// Splits a body into its events (JSON values, not yet checked to be objects). Stops parsing
/// as soon as the batch would exceed `max_events`, so an oversized body costs no more memory
/// than an allowed one. Each event is parsed strictly ([`vigil_event::StrictValue`]): a repeated
/// key is `invalid_json`, and nesting past `max_depth` is cut for normalisation to refuse as
/// `too_deep`, never recursed into.
pub(crate) fn parse_body(
    bytes: &[u8],
    format: BodyFormat,
    max_events: usize,
    max_depth: usize,
) -> Result<Vec<Value>, ApiError> {
    let values = match format {
        BodyFormat::Json => parse_json(bytes, max_events, max_depth)?,
        BodyFormat::Ndjson => parse_ndjson(bytes, max_events, max_depth)?,
    };
    if values.is_empty() {
        return Err(ApiError::EmptyBatch);
    }
    Ok(values)
}

fn parse_json(bytes: &[u8], max_events: usize, max_depth: usize) -> Result<Vec<Value>, ApiError> {
    let overflow = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = BatchSeed {
        max_events,
        max_depth,
        overflow: &overflow,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(values) => Ok(values),
        Err(_) if overflow.get() => Err(ApiError::BatchTooLarge { limit: max_events }),
        Err(e) => Err(json_error(JsonError::from_serde(&e), 0)),
    }
}

fn parse_ndjson(bytes: &[u8], max_events: usize, max_depth: usize) -> Result<Vec<Value>, ApiError> {
    let mut values = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if values.len() == max_events {
            return Err(ApiError::BatchTooLarge { limit: max_events });
        }
        let value = vigil_event::parse_event(line, max_depth).map_err(|e| json_error(e, i))?;
        values.push(value);
    }
    Ok(values)
}

/// A JSON error with its position; `line_offset` lines precede the parsed text.
fn json_error(e: JsonError, line_offset: usize) -> ApiError {
    ApiError::InvalidJson {
        message: e.message,
        position: JsonPosition {
            line: e.line + line_offset,
            column: e.column,
        },
    }
}

/// Deserialises either one event (an object, or anything else, which normalisation will
/// refuse) or an array of at most `max_events` values.
struct BatchSeed<'a> {
    max_events: usize,
    max_depth: usize,
    overflow: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for BatchSeed<'_> {
    type Value = Vec<Value>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<Value>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

macro_rules! single_scalar {
    ($($name:ident: $t:ty),*) => {$(
        fn $name<E: serde::de::Error>(self, v: $t) -> Result<Vec<Value>, E> {
            Ok(vec![Value::from(v)])
        }
    )*};
}

impl<'de> Visitor<'de> for BatchSeed<'_> {
    type Value = Vec<Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object or an array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Value>, A::Error> {
        let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max_events));
        while let Some(value) = seq.next_element_seed(StrictValue::event(self.max_depth))? {
            if values.len() == self.max_events {
                self.overflow.set(true);
                return Err(serde::de::Error::custom("too many events"));
            }
            values.push(value);
        }
        Ok(values)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Vec<Value>, A::Error> {
        let value = StrictValue::event(self.max_depth).visit_map(map)?;
        Ok(vec![value])
    }

    single_scalar!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);

    fn visit_unit<E: serde::de::Error>(self) -> Result<Vec<Value>, E> {
        Ok(vec![Value::Null])
    }
}

/// Parses, normalises, schema-checks and prepares a request body, running each step where it
/// belongs (see the module doc). `batch_len` is set once the body is split into events.
pub(crate) async fn prepare_body(
    bytes: Bytes,
    format: BodyFormat,
    max_events: usize,
    intake: Intake,
    destination: Destination,
    batch_len: &mut Option<usize>,
) -> Result<Ready, ApiError> {
    let max_depth = intake.limits().max_depth;
    if bytes.len() >= BLOCKING_MIN_BYTES {
        let (len, prepared) = blocking(move || {
            let values = parse_body(&bytes, format, max_events, max_depth)?;
            Ok((values.len(), intake.admit(values, destination)))
        })
        .await?;
        *batch_len = Some(len);
        return Ok(prepared?);
    }
    let values = parse_body(&bytes, format, max_events, max_depth)?;
    *batch_len = Some(values.len());
    if values.len() >= BLOCKING_MIN_EVENTS {
        return blocking(move || Ok(intake.admit(values, destination)?)).await;
    }
    let normalized = intake.normalize(values);
    if intake.meets_a_schema(&normalized) {
        blocking(move || Ok(intake.finish(normalized, destination)?)).await
    } else {
        Ok(intake.finish(normalized, destination)?)
    }
}

/// Runs CPU-heavy work off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("ingest task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;
    use serde_json::json;
    use vigil_event::{EventType, FieldErrorCode, Limits, TenantId, Timestamp};
    use vigil_ingest::Origin;
    use vigil_ingest::schemas::TenantSchemas;

    use super::*;

    fn headers(content_type: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(ct) = content_type {
            h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
        }
        h
    }

    #[test]
    fn content_types() {
        assert_eq!(
            BodyFormat::from_headers(&headers(None)).unwrap(),
            BodyFormat::Json
        );
        assert_eq!(
            BodyFormat::from_headers(&headers(Some("application/json; charset=utf-8"))).unwrap(),
            BodyFormat::Json
        );
        assert_eq!(
            BodyFormat::from_headers(&headers(Some("Application/X-NDJSON"))).unwrap(),
            BodyFormat::Ndjson
        );
        assert_eq!(
            BodyFormat::from_headers(&headers(Some("application/x-www-form-urlencoded"))).unwrap(),
            BodyFormat::Json,
            "curl -d without -H content-type"
        );
        let e = BodyFormat::from_headers(&headers(Some("text/plain"))).unwrap_err();
        assert_eq!(e.code(), "unsupported_media_type");
    }

    #[test]
    fn one_object_or_an_array() {
        assert_eq!(
            parse_body(br#"{"type":"a"}"#, BodyFormat::Json, 10, 16).unwrap(),
            vec![json!({"type":"a"})]
        );
        assert_eq!(
            parse_body(
                br#" [{"type":"a"},{"type":"b"}] "#,
                BodyFormat::Json,
                10,
                16
            )
            .unwrap()
            .len(),
            2
        );
        // Not an object: parsed, and left for normalisation to refuse as not_an_object.
        assert_eq!(
            parse_body(b"42", BodyFormat::Json, 10, 16).unwrap(),
            vec![json!(42)]
        );
        assert_eq!(
            parse_body(b"[]", BodyFormat::Json, 10, 16)
                .unwrap_err()
                .code(),
            "empty_batch"
        );
    }

    #[test]
    fn batch_limit_stops_parsing() {
        let e = parse_body(b"[{},{},{}]", BodyFormat::Json, 2, 16).unwrap_err();
        assert!(matches!(e, ApiError::BatchTooLarge { limit: 2 }), "{e:?}");
        assert!(parse_body(b"[{},{}]", BodyFormat::Json, 2, 16).is_ok());
        let e = parse_body(b"{}\n{}\n\n{}\n", BodyFormat::Ndjson, 2, 16).unwrap_err();
        assert!(matches!(e, ApiError::BatchTooLarge { limit: 2 }), "{e:?}");
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse_body(b"{\"type\":\n  \"a\",, }", BodyFormat::Json, 10, 16).unwrap_err();
        match e {
            ApiError::InvalidJson { position, message } => {
                assert_eq!(position.line, 2);
                assert_eq!(position.column, 7);
                assert!(!message.contains("line"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_body(b"[{}] x", BodyFormat::Json, 10, 16)
                .unwrap_err()
                .code(),
            "invalid_json"
        );
        assert_eq!(
            parse_body(b"", BodyFormat::Json, 10, 16)
                .unwrap_err()
                .code(),
            "invalid_json"
        );
    }

    #[test]
    fn ndjson_lines() {
        let body = b"{\"type\":\"a\"}\r\n\n   \n{\"type\":\"b\"}";
        assert_eq!(
            parse_body(body, BodyFormat::Ndjson, 10, 16).unwrap().len(),
            2
        );
        let e = parse_body(b"{}\n\n{\"type\": nope}\n", BodyFormat::Ndjson, 10, 16).unwrap_err();
        match e {
            ApiError::InvalidJson { position, .. } => assert_eq!(
                position,
                JsonPosition {
                    line: 3,
                    column: 11
                }
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_body(b"\n \n", BodyFormat::Ndjson, 10, 16)
                .unwrap_err()
                .code(),
            "empty_batch"
        );
    }

    /// Regression: a repeated key was accepted, the last value winning
    /// (`{"type":"a","type":"b"}` stored as `b`), where another reader of the same bytes may
    /// take the first. Refused with `invalid_json` naming the key, at any depth, in every
    /// framing: one object, an array, NDJSON.
    #[test]
    fn repeated_keys_are_invalid_json_in_every_framing() {
        let message = |body: &[u8], format| match parse_body(body, format, 10, 16) {
            Err(ApiError::InvalidJson { message, position }) => (message, position.line),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            message(br#"{"type":"a","type":"b"}"#, BodyFormat::Json),
            ("duplicate key `type`".to_owned(), 1)
        );
        assert_eq!(
            message(
                b"[{\"type\":\"a\"},\n {\"type\":\"b\",\"details\":{\"x\":[{\"k\":1,\"k\":1}]}}]",
                BodyFormat::Json
            ),
            ("duplicate key `k` at `details.x.k`".to_owned(), 2)
        );
        assert_eq!(
            message(
                b"{\"type\":\"a\"}\n{\"type\":\"b\",\"actor\":{\"id\":\"u\",\"id\":\"v\"}}",
                BodyFormat::Ndjson
            ),
            ("duplicate key `id` at `actor.id`".to_owned(), 2)
        );
    }

    /// Regression: an event nested 128 levels or more was refused with `400 invalid_json`
    /// (serde_json's recursion limit answered before vigil's depth limit). It is `422 too_deep`
    /// with the path, listed with the batch's other errors, however deep the input: the parser
    /// never recurses past `max_depth`.
    #[tokio::test]
    async fn deep_events_are_too_deep_whatever_their_depth() {
        for levels in [17, 127, 128, 100_000] {
            let deep = format!(
                r#"[{{"severity":1}},{{"type":"a","tags":{}1{}}}]"#,
                "[".repeat(levels),
                "]".repeat(levels)
            );
            let mut len = None;
            let e = prepare_body(
                Bytes::from(deep),
                BodyFormat::Json,
                10,
                context(TenantSchemas::default()),
                Destination::Append,
                &mut len,
            )
            .await
            .unwrap_err();
            let ApiError::InvalidEvents { errors, .. } = &e else {
                panic!("{levels}: {e:?}");
            };
            assert_eq!(errors[0].code, FieldErrorCode::MissingField);
            assert_eq!(errors[1].index, 1);
            assert_eq!(errors[1].code, FieldErrorCode::TooDeep, "{levels}");
            assert_eq!(errors[1].path, "tags");
            assert_eq!(errors.len(), 2);
        }
        let ndjson = format!(
            "{{\"type\":\"a\",\"x\":{}}}",
            "{\"n\":".repeat(500) + "1" + &"}".repeat(500)
        );
        let values = parse_body(ndjson.as_bytes(), BodyFormat::Ndjson, 10, 16).unwrap();
        let e = context(TenantSchemas::default())
            .admit(values, Destination::Append)
            .unwrap_err();
        assert_eq!(e.errors[0].code, FieldErrorCode::TooDeep);
        assert_eq!(e.errors[0].code.http_status(), 422);
    }

    fn context(schemas: TenantSchemas) -> Intake {
        let origin = Origin {
            tenant: TenantId::parse("acme").unwrap(),
            default_source: "test".to_owned(),
            received_at: Timestamp::now(),
            default_id: None,
            validated: false,
        };
        Intake::new(Limits::default(), Arc::new(schemas), origin)
    }

    /// Regression: a small batch (under 64 events and 64 KiB) was checked against the tenant's
    /// schemas on the async runtime, so a costly tenant schema (patterns, deep nesting,
    /// `uniqueItems` over large arrays) stalled every request sharing that worker. A batch that
    /// meets one of the tenant's schemas is now checked on the blocking pool. The test runs on a
    /// current-thread runtime, whose one worker is the test's own thread, and records where a
    /// format check of the schema ran.
    #[tokio::test]
    async fn batches_that_meet_a_schema_are_checked_off_the_runtime() {
        use std::sync::{Arc, Mutex};
        use std::thread::{self, ThreadId};

        let seen: Arc<Mutex<Vec<ThreadId>>> = Arc::default();
        let record = Arc::clone(&seen);
        let schema = json!({"properties": {"details": {"properties": {"v": {"format": "probe"}}}}});
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .with_format("probe", move |_: &str| {
                record
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(thread::current().id());
                true
            })
            .build(&schema)
            .unwrap();
        let schemas =
            TenantSchemas::with_validator(EventType::parse("probed").unwrap(), schema, validator);

        let body =
            Bytes::from_static(br#"[{"type":"other"},{"type":"probed","details":{"v":"x"}}]"#);
        let mut len = None;
        let prepared = prepare_body(
            body,
            BodyFormat::Json,
            10,
            context(schemas.clone()),
            Destination::Append,
            &mut len,
        )
        .await
        .unwrap();
        assert_eq!((prepared.len(), len), (2, Some(2)));
        let runtime_thread = thread::current().id();
        let threads = seen.lock().unwrap().clone();
        assert_eq!(threads.len(), 1);
        assert_ne!(threads[0], runtime_thread, "the schema ran on the runtime");

        // A batch that meets no schema needs no blocking thread, and is not checked.
        let body = Bytes::from_static(br#"{"type":"other","details":{"v":"x"}}"#);
        prepare_body(
            body,
            BodyFormat::Json,
            10,
            context(schemas),
            Destination::Append,
            &mut len,
        )
        .await
        .unwrap();
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn bus_mode_publishes_the_validated_event_or_refuses_the_batch_whole() {
        let ctx = context(TenantSchemas::default());
        let bus = Destination::Publish {
            max_message_bytes: 1024,
        };
        let body = Bytes::from_static(br#"[{"type":"a","id":"e-1"},{"type":"b"}]"#);
        let mut len = None;
        let Ready::Publish(events) = prepare_body(body, BodyFormat::Json, 10, ctx, bus, &mut len)
            .await
            .unwrap()
        else {
            panic!("bus mode prepares for the bus");
        };
        assert_eq!(events[0].id.as_str(), "e-1");
        assert_eq!(events[0].default_source, "test");
        let second: Value = serde_json::from_slice(&events[1].payload).unwrap();
        assert_eq!(second["id"], events[1].id.as_str(), "an id is assigned");
        assert!(second.get("time").is_none() && second.get("source").is_none());

        let ctx = context(TenantSchemas::default());
        let bus = Destination::Publish {
            max_message_bytes: 64,
        };
        let body = Bytes::from(format!(
            r#"[{{"type":"a"}},{{"type":"b","details":{{"x":"{}"}}}}]"#,
            "y".repeat(100)
        ));
        let e = prepare_body(body, BodyFormat::Json, 10, ctx, bus, &mut len)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "event_too_large");
        assert_eq!(e.status(), 413);
    }

    #[tokio::test]
    async fn schema_and_normalisation_errors_are_listed_together_in_batch_order() {
        let validator = vigil_ingest::schemas::compile(&json!({"required": ["details"]})).unwrap();
        let schemas = TenantSchemas::with_validator(
            EventType::parse("strict").unwrap(),
            json!({"required": ["details"]}),
            validator,
        );
        let body = Bytes::from_static(
            br#"[{"type":"strict"},{"severity":2},{"type":"strict","details":{}}]"#,
        );
        let mut len = None;
        let e = prepare_body(
            body,
            BodyFormat::Json,
            10,
            context(schemas),
            Destination::Append,
            &mut len,
        )
        .await
        .unwrap_err();
        let ApiError::InvalidEvents { errors, .. } = e else {
            panic!("{e:?}");
        };
        let found: Vec<(usize, FieldErrorCode)> =
            errors.iter().map(|e| (e.index, e.code)).collect();
        assert_eq!(
            found,
            [
                (0, FieldErrorCode::SchemaViolation),
                (1, FieldErrorCode::MissingField)
            ]
        );
    }

    proptest! {
        /// Any bytes give events or a client error, never a panic; an array of n objects
        /// gives n events when n is within the limit.
        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), ndjson in any::<bool>()) {
            let format = if ndjson { BodyFormat::Ndjson } else { BodyFormat::Json };
            if let Err(e) = parse_body(&bytes, format, 5, 16) {
                prop_assert!(e.status().is_client_error());
            }
        }

        #[test]
        fn arrays_within_the_limit_round_trip(n in 1usize..20, limit in 1usize..20) {
            let body = serde_json::to_vec(&vec![json!({"type": "t"}); n]).unwrap();
            match parse_body(&body, BodyFormat::Json, limit, 16) {
                Ok(values) => { prop_assert!(n <= limit); prop_assert_eq!(values.len(), n); }
                Err(e) => { prop_assert!(n > limit); prop_assert_eq!(e.code(), "batch_too_large"); }
            }
        }
    }
}
