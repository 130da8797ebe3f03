//! Strict JSON parsing: where a client's bytes become a [`serde_json::Value`], before
//! [`crate::normalize`] sees them.
//!
//! Two things plain `serde_json::from_slice` lets through are refused here, once, for every
//! edge (an HTTP body, an NDJSON line, a NATS message, an admin request):
//!
//! - **Duplicate keys**, at any depth. serde_json keeps the last value, another reader of the
//!   same bytes may keep the first; for an audit record that ambiguity is unacceptable, and
//!   RFC 8785 (JCS) and I-JSON (RFC 7493) forbid them. The error names the key and its path.
//! - **Nesting beyond a bound**, without stack risk. The parser recurses once per level, so
//!   depth is counted as it goes and a container past the bound is never descended into: its
//!   contents are skipped by serde_json's iterative skipper, which uses no stack per level.
//!   For an event ([`StrictValue::event`]) the first container past `max_depth` is kept,
//!   emptied, so normalisation refuses it with `too_deep` and its path, like any other event
//!   error; elsewhere ([`StrictValue::document`]) it is a syntax-level error.
//!
//! serde_json's own recursion limit (128 levels) is never reached: [`MAX_NESTING`] is below it,
//! with room for the array around a batch.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

/// Deepest nesting of objects and arrays vigil parses in one JSON document (the document
/// itself being level 1), and the most `max_depth` may be. Below serde_json's recursion limit
/// of 128, so that limit never answers first.
pub const MAX_NESTING: usize = 100;

/// Longest key quoted whole in a duplicate-key message; longer ones are cut.
const MAX_QUOTED_KEY: usize = 128;

/// Why bytes are not JSON vigil takes: a syntax error, a duplicate key, or nesting beyond
/// [`MAX_NESTING`], with where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// What is wrong, without the position.
    pub message: String,
    /// 1-based line; 0 when the position is unknown.
    pub line: usize,
    /// 1-based column within `line`.
    pub column: usize,
}

impl JsonError {
    /// From a serde_json error, its position split from its message.
    pub fn from_serde(e: &serde_json::Error) -> Self {
        let full = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        Self {
            message: full.strip_suffix(&suffix).unwrap_or(&full).to_owned(),
            line: e.line(),
            column: e.column(),
        }
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.message)
        } else {
            write!(
                f,
                "{} at line {} column {}",
                self.message, self.line, self.column
            )
        }
    }
}

impl std::error::Error for JsonError {}

/// Parses one JSON document that is not an event (a schema, a request body): duplicate keys
/// and nesting beyond [`MAX_NESTING`] are errors.
pub fn parse_document(bytes: &[u8]) -> Result<Value, JsonError> {
    parse_with(bytes, StrictValue::document())
}

/// Parses one event: duplicate keys are errors; a container nested deeper than `max_depth`
/// (the event being depth 1) is kept empty, for [`crate::normalize`] to refuse as `too_deep`.
pub fn parse_event(bytes: &[u8], max_depth: usize) -> Result<Value, JsonError> {
    parse_with(bytes, StrictValue::event(max_depth))
}

fn parse_with(bytes: &[u8], seed: StrictValue<'_>) -> Result<Value, JsonError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    seed.deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| JsonError::from_serde(&e))
}

/// A [`DeserializeSeed`] (and [`Visitor`]) building a [`Value`] that refuses duplicate keys and
/// counts depth (see the module doc): for parsers that frame values themselves, such as the
/// array of an HTTP batch.
#[derive(Debug, Clone, Copy)]
pub struct StrictValue<'p> {
    /// Container levels this value may still open; a container met at 0 is past the bound.
    levels: usize,
    /// Past the bound: keep the container empty (an event, for normalisation to refuse) rather
    /// than fail.
    keep_empty: bool,
    /// The keys leading to this value, innermost first, for naming a duplicate's path.
    path: Option<&'p PathNode<'p>>,
}

/// One key on the path to a value: a list on the stack, walked only to name a duplicate.
#[derive(Debug)]
struct PathNode<'p> {
    key: &'p str,
    parent: Option<&'p PathNode<'p>>,
}

impl StrictValue<'static> {
    /// Any JSON document, nested at most [`MAX_NESTING`] levels.
    pub fn document() -> Self {
        Self {
            levels: MAX_NESTING,
            keep_empty: false,
            path: None,
        }
    }

    /// One event, nested at most `max_depth` levels (the event object being level 1): a
    /// container one level deeper is kept, emptied, for normalisation to refuse. A `max_depth`
    /// beyond [`MAX_NESTING`] is held to it, and nesting past that is an error.
    pub fn event(max_depth: usize) -> Self {
        Self {
            levels: max_depth.min(MAX_NESTING),
            keep_empty: max_depth <= MAX_NESTING,
            path: None,
        }
    }
}

impl<'p> StrictValue<'p> {
    fn child<'c>(&self, path: Option<&'c PathNode<'c>>) -> StrictValue<'c> {
        StrictValue {
            levels: self.levels - 1,
            keep_empty: self.keep_empty,
            path,
        }
    }

    fn too_deep<E: serde::de::Error>(&self) -> E {
        E::custom(format_args!("nested deeper than {MAX_NESTING} levels"))
    }

    fn duplicate<E: serde::de::Error>(&self, key: &str) -> E {
        let mut keys = vec![key];
        let mut node = self.path;
        while let Some(n) = node {
            keys.push(n.key);
            node = n.parent;
        }
        keys.reverse();
        let path = keys.iter().map(|k| quoted(k)).collect::<Vec<_>>().join(".");
        if keys.len() == 1 {
            E::custom(format_args!("duplicate key `{}`", quoted(key)))
        } else {
            E::custom(format_args!("duplicate key `{}` at `{path}`", quoted(key)))
        }
    }
}

/// A key as quoted in an error: cut when long, so a hostile key is not echoed whole.
fn quoted(key: &str) -> std::borrow::Cow<'_, str> {
    if key.len() <= MAX_QUOTED_KEY {
        return key.into();
    }
    let mut end = MAX_QUOTED_KEY;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &key[..end]).into()
}

impl<'de> DeserializeSeed<'de> for StrictValue<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // As serde_json's own `Value`: a non-finite float (never produced by its parser) is null.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        if self.levels == 0 {
            if !self.keep_empty {
                return Err(self.too_deep());
            }
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(Value::Array(Vec::new()));
        }
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element_seed(self.child(self.path))? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        if self.levels == 0 {
            if !self.keep_empty {
                return Err(self.too_deep());
            }
            while map.next_key::<IgnoredAny>()?.is_some() {
                map.next_value::<IgnoredAny>()?;
            }
            return Ok(Value::Object(Map::new()));
        }
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let node = PathNode {
                key: &key,
                parent: self.path,
            };
            let value = map.next_value_seed(self.child(Some(&node)))?;
            match object.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                Entry::Occupied(taken) => return Err(self.duplicate(taken.key())),
            }
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn nested(levels: usize) -> String {
        format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
    }

    fn nested_objects(levels: usize) -> String {
        format!("{}1{}", r#"{"n":"#.repeat(levels), "}".repeat(levels))
    }

    #[test]
    fn builds_what_serde_json_builds() {
        let text = br#"{"a": [1, -2, 3.5, 1e300, "s\u00e9", true, null, {}], "b": {"c": 18446744073709551615}}"#;
        let expected: Value = serde_json::from_slice(text).unwrap();
        assert_eq!(parse_document(text).unwrap(), expected);
        assert_eq!(parse_event(text, 16).unwrap(), expected);
    }

    /// Regression: `{"type":"a","type":"b"}` was accepted and stored as `b` (serde_json keeps
    /// the last of a repeated key), while another reader of the same bytes may take the first:
    /// an audit record whose meaning depends on the parser. Repeated keys are refused at any
    /// depth, naming the key and the path to it.
    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let e = parse_event(br#"{"type":"a","type":"b"}"#, 16).unwrap_err();
        assert_eq!(e.message, "duplicate key `type`");
        assert_eq!((e.line, e.column), (1, 23));

        let e = parse_document(br#"{"actor": {"id": "u", "ip": "x", "id": "v"}}"#).unwrap_err();
        assert_eq!(e.message, "duplicate key `id` at `actor.id`");

        // Inside arrays: arrays add no segment to a path, as everywhere in vigil.
        let e = parse_event(
            br#"{"details": {"items": [{"k": 1}, {"k": 2, "k": 3}]}}"#,
            16,
        )
        .unwrap_err();
        assert_eq!(e.message, "duplicate key `k` at `details.items.k`");

        // The same key in sibling objects is no duplicate; escapes are compared decoded.
        assert!(parse_document(br#"{"a": {"k": 1}, "b": {"k": 1}}"#).is_ok());
        let e = parse_document(br#"{"k": 1, "\u006b": 2}"#).unwrap_err();
        assert_eq!(e.message, "duplicate key `k`");

        let long = "x".repeat(1000);
        let e = parse_document(format!(r#"{{"{long}":1,"{long}":2}}"#).as_bytes()).unwrap_err();
        assert!(e.message.len() < 200, "{}", e.message);
    }

    /// Regression: 128 or more levels of nesting gave `400 invalid_json` (serde_json's recursion
    /// limit answered first) instead of `422 too_deep`. An event's container past `max_depth`
    /// is kept, emptied, so normalisation names it; the parser never recurses further, however
    /// deep the input.
    #[test]
    fn events_past_max_depth_are_cut_for_normalisation_to_refuse() {
        let deep = format!(r#"{{"type":"x","details":{}}}"#, nested_objects(100_000));
        let value = parse_event(deep.as_bytes(), 4).unwrap();
        // event 1, details 2, n 3, n.n 4, n.n.n 5: kept empty
        assert_eq!(
            value["details"],
            json!({"n": {"n": {"n": {}}}}),
            "the first container past the bound is kept, emptied"
        );
        let errors = crate::normalize(
            value,
            &crate::Limits {
                max_depth: 4,
                ..crate::Limits::default()
            },
        )
        .unwrap_err();
        assert_eq!(errors[0].code, crate::FieldErrorCode::TooDeep);
        assert_eq!(errors[0].path, "details.n.n.n");

        let arrays = format!(r#"{{"type":"x","tags":{}}}"#, nested(1_000_000));
        let value = parse_event(arrays.as_bytes(), 16).unwrap();
        let errors = crate::normalize(value, &crate::Limits::default()).unwrap_err();
        assert_eq!(errors[0].code, crate::FieldErrorCode::TooDeep);

        // What is skipped is still checked to be JSON.
        let broken = format!(r#"{{"type":"x","tags":{}"#, "[".repeat(200));
        assert!(parse_event(broken.as_bytes(), 16).is_err());
    }

    #[test]
    fn documents_past_the_nesting_bound_are_errors() {
        assert!(parse_document(nested(MAX_NESTING).as_bytes()).is_ok());
        let e = parse_document(nested(MAX_NESTING + 1).as_bytes()).unwrap_err();
        assert_eq!(e.message, "nested deeper than 100 levels");
        assert!(parse_document(nested(10_000_000).as_bytes()).is_err());
        // A max_depth beyond the bound is held to it.
        assert!(parse_event(nested(MAX_NESTING + 1).as_bytes(), 1000).is_err());
    }

    #[test]
    fn syntax_errors_keep_their_position() {
        let e = parse_document(b"{\"a\":\n  1,, }").unwrap_err();
        assert_eq!((e.line, e.column), (2, 5));
        assert!(!e.message.contains("line"), "{}", e.message);
        assert_eq!(e.to_string(), format!("{} at line 2 column 5", e.message));
        assert!(parse_document(b"{} x").is_err());
        assert!(parse_document(b"").is_err());
    }
}
