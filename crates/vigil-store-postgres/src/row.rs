//! Rows and columns: one event as the columns of `vigil_events` (the derived `fields`, `actor`
//! and `actor_multi`, and `jsonb` sent as is), and stored columns back into values (seqs,
//! hashes, events, checkpoints).
//!
//! Both directions sit below the stages that use them: the writer ([`crate::writer`]) and the
//! Merkle tree ([`crate::merkle`]) convert seqs and hashes here rather than in each other, and
//! the reads turn their rows into events here.

use std::error::Error;

use bytes::{BufMut, BytesMut};
use serde_json::{Map, Value};
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use vigil_event::{Hash, Scalar, Timestamp, flatten};
use vigil_store::{StoredCheckpoint, StoredEvent};

use crate::error::{PgError, Result};

/// Longest `actor.id` kept in the indexed `actor` column (a btree entry holds at most about
/// 2.7 kB).
const MAX_ACTOR_COLUMN_BYTES: usize = 1024;

/// The derived columns of an event, computed from its canonical bytes before its seq is known
/// (off the writer's path; the writer splices `seq` in).
#[derive(Debug)]
pub(crate) struct Derived {
    /// `{"path": [scalar, ...], ...}` serialised without `seq`: every scalar of the event under
    /// its flattened path (what the query language matches on).
    fields_without_seq: Vec<u8>,
    /// `actor.id` from the actor object.
    pub actor: Option<String>,
    /// Another value flattens to `actor.id` besides the actor object's own.
    pub actor_multi: bool,
}

impl Derived {
    /// Derives the indexed columns from an event's canonical bytes (with any seq: `seq` is
    /// left out). `None` when the bytes are not a JSON object.
    pub(crate) fn of(canonical: &[u8]) -> Option<Self> {
        let event: Map<String, Value> = serde_json::from_slice(canonical).ok()?;
        let mut fields: Map<String, Value> = Map::new();
        flatten(&event, |path, scalar| {
            let value = scalar_json(scalar);
            match fields.get_mut(path) {
                Some(Value::Array(values)) => values.push(value),
                _ => {
                    fields.insert(path.to_owned(), Value::Array(vec![value]));
                }
            }
        });
        fields.remove("seq");
        // An id too long for a btree entry stays out of the column; queries then find it
        // through `fields`, as they find other values at the path.
        let actor = event
            .get("actor")
            .and_then(|a| a.get("id"))
            .and_then(Value::as_str)
            .filter(|id| id.len() <= MAX_ACTOR_COLUMN_BYTES)
            .map(str::to_owned);
        let at_path = fields
            .get("actor.id")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let actor_multi = at_path > usize::from(actor.is_some());
        Some(Self {
            fields_without_seq: serde_json::to_vec(&Value::Object(fields)).ok()?,
            actor,
            actor_multi,
        })
    }

    /// The `fields` document with `"seq": [seq]` in it.
    pub(crate) fn fields(&self, seq: u64, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(b"{\"seq\":[");
        out.extend_from_slice(
            scalar_json(Scalar::Number(seq as f64))
                .to_string()
                .as_bytes(),
        );
        out.push(b']');
        // `fields_without_seq` is an object: `{}` or `{"k":…}`.
        match self.fields_without_seq.get(1..) {
            Some(rest) if rest != b"}" => {
                out.push(b',');
                out.extend_from_slice(rest);
            }
            _ => out.push(b'}'),
        }
    }
}

/// A scalar as JSON. Numbers go through `f64` and print in their shortest round-trip form, as
/// query literals do, so PostgreSQL's exact `numeric` comparisons agree with the query
/// language's `f64` ones.
pub(crate) fn scalar_json(s: Scalar<'_>) -> Value {
    match s {
        Scalar::Null => Value::Null,
        Scalar::Bool(b) => Value::Bool(b),
        Scalar::Number(n) => serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number),
        Scalar::String(s) => Value::String(s.to_owned()),
    }
}

/// Serialised JSON sent as a `jsonb` value without re-parsing on our side (binary format:
/// version byte 1, then the text).
#[derive(Debug)]
pub(crate) struct RawJsonb<'a>(pub &'a [u8]);

impl ToSql for RawJsonb<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.put_u8(1);
        out.put_slice(self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }

    to_sql_checked!();
}

// Stored columns back into values. `bigint` and `bytea` columns hold what only vigil wrote:
// a value out of range means the database was changed behind its back.

pub(crate) fn to_seq(v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| PgError::Corrupt(format!("negative seq {v}")))
}

pub(crate) fn to_i64(seq: u64) -> i64 {
    // Seqs count events; they never approach 2^63.
    i64::try_from(seq).unwrap_or(i64::MAX)
}

pub(crate) fn to_hash(bytes: &[u8]) -> Result<Hash> {
    bytes
        .try_into()
        .map_err(|_| PgError::Corrupt(format!("hash of {} bytes", bytes.len())))
}

/// A `vigil_checkpoints` row (`size, root, time_ns, note`).
pub(crate) fn checkpoint_of(row: &tokio_postgres::Row) -> Result<StoredCheckpoint> {
    Ok(StoredCheckpoint {
        size: to_seq(row.get(0))?,
        root: to_hash(row.get(1))?,
        timestamp: Timestamp::from_nanos(row.get(2)),
        note: row.get(3),
    })
}

/// An event of a `SELECT seq, time_ns, canonical, hash` row.
pub(crate) fn event_of(row: &tokio_postgres::Row) -> Result<StoredEvent> {
    Ok(StoredEvent {
        seq: to_seq(row.get(0))?,
        time: Timestamp::from_nanos(row.get(1)),
        canonical: row.get(2),
        hash: to_hash(row.get(3))?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields_of(v: Value) -> (Value, Derived) {
        let bytes = serde_json::to_vec(&v).unwrap();
        let d = Derived::of(&bytes).unwrap();
        let mut out = Vec::new();
        d.fields(3, &mut out);
        (serde_json::from_slice(&out).unwrap(), d)
    }

    #[test]
    fn fields_group_every_scalar_under_its_flattened_path() {
        let (fields, d) = fields_of(json!({
            "type": "x",
            "seq": 1,
            "actor": {"id": "u-1"},
            "tags": ["a", "b", 1],
            "details": {"items": [{"sku": "s1"}, {"sku": "s2"}], "empty": {}, "none": [], "n": null},
            "a.b": true,
            "a": {"b": false}
        }));
        assert_eq!(
            fields,
            json!({
                "type": ["x"],
                "seq": [3.0],
                "actor.id": ["u-1"],
                "tags": ["a", "b", 1.0],
                "details.items.sku": ["s1", "s2"],
                "details.n": [null],
                "a.b": [false, true]
            })
        );
        assert_eq!(d.actor.as_deref(), Some("u-1"));
        assert!(!d.actor_multi);
    }

    #[test]
    fn a_dotted_top_level_actor_key_marks_the_event() {
        let (_, d) = fields_of(json!({"type": "x", "actor": {"id": "u"}, "actor.id": "v"}));
        assert_eq!(d.actor.as_deref(), Some("u"));
        assert!(d.actor_multi);
        let (_, d) = fields_of(json!({"type": "x", "actor.id": "v"}));
        assert_eq!(d.actor, None);
        assert!(d.actor_multi);
        let long = "u".repeat(MAX_ACTOR_COLUMN_BYTES + 1);
        let (_, d) = fields_of(json!({"type": "x", "actor": {"id": long}}));
        assert_eq!(d.actor, None);
        assert!(d.actor_multi);
        let (fields, d) = fields_of(json!({"type": "x"}));
        assert!(!d.actor_multi);
        assert_eq!(fields, json!({"seq": [3.0], "type": ["x"]}));
        let (fields, _) = fields_of(json!({}));
        assert_eq!(fields, json!({"seq": [3.0]}));
    }
}
