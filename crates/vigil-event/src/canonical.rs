//! Canonical bytes: RFC 8785 (JCS) JSON, the form that is stored, hashed and returned.

use serde_json::Value;

use crate::hash::Hash;
use crate::types::{EventId, EventType, Severity, TenantId, Timestamp};

/// RFC 8785 (JCS) serialisation of a JSON value: sorted keys, no whitespace, ES6 numbers.
pub fn to_canonical_bytes(value: &Value) -> Vec<u8> {
    todo!()
}

/// An event ready to append: every field known except `seq`, which the store's writer assigns.
///
/// The canonical serialisation is pre-split around the `seq` member (JCS sorts keys, so `seq`
/// has one fixed place), so the single writer thread only splices in a number and copies bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub tenant: TenantId,
    pub id: EventId,
    pub event_type: EventType,
    pub time: Timestamp,
    pub received_at: Timestamp,
    pub severity: Severity,
    /// See [`crate::Submitted::content_digest`].
    pub content_digest: Hash,
    // canonical members sorting before "seq", without braces, e.g. `"actor":{..},"id":".."`
    before_seq: Vec<u8>,
    // canonical members sorting after "seq", without braces
    after_seq: Vec<u8>,
    // every indexed term of the event except `seq`, as length-prefixed `Term` bytes
    terms: Vec<u8>,
}

impl Prepared {
    /// The event's canonical bytes with `seq` in place: exactly what `GET /v1/events/{id}`
    /// returns, minus `hash`.
    pub fn canonical_bytes(&self, seq: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.canonical_len_hint());
        self.write_canonical(seq, &mut out);
        out
    }

    /// Appends the canonical bytes to `out` (no intermediate allocation).
    pub fn write_canonical(&self, seq: u64, out: &mut Vec<u8>) {
        todo!()
    }

    /// An upper bound of the canonical length, for buffer sizing.
    pub fn canonical_len_hint(&self) -> usize {
        self.before_seq.len() + self.after_seq.len() + 32
    }

    /// Every indexed term of the event except `seq` (see [`crate::flatten`] and [`crate::Term`]).
    pub fn terms(&self) -> impl Iterator<Item = &[u8]> + '_ {
        std::iter::empty() // TODO
    }
}

/// The event as returned to clients: its canonical bytes plus `"hash": "<hex chain hash>"`.
pub fn with_hash(canonical: &[u8], hash: &Hash) -> Vec<u8> {
    todo!()
}
