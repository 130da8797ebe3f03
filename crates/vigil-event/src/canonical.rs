//! Canonical bytes: RFC 8785 (JCS) JSON, the form that is stored, hashed and returned.
//!
//! The writer here is a direct, allocation-free walk over a [`serde_json::Value`]: members
//! sorted by their UTF-16 code units, strings escaped as RFC 8785 §3.2.2.2 prescribes, integers
//! up to 2^53 written as digits. Other numbers go through `serde_json_canonicalizer` (ES6
//! number formatting); the tests check every byte against that crate as the reference.
//!
//! Larger integers would be written as the nearest double, which is lossy; [`crate::normalize`]
//! refuses them (beyond ±(2^53 − 1)), so no stored event depends on that rounding.

use std::cell::Cell;
use std::cmp::Ordering;
use std::fmt;

use serde_json::{Map, Number, Value};

use crate::hash::Hash;
use crate::types::{EventId, EventType, Severity, TenantId, Timestamp};

/// RFC 8785 (JCS) serialisation of a JSON value: sorted keys, no whitespace, ES6 numbers.
pub fn to_canonical_bytes(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    write_value(&mut out, value);
    out
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
    /// The bytes, computed once at ingest.
    pub(crate) encoded: EncodedBody,
}

/// The serialised forms of a prepared event's body, built once at ingest so the single writer
/// thread only copies bytes.
#[derive(Clone, PartialEq)]
pub(crate) struct EncodedBody {
    // The canonical object with a gap where the value of `seq` goes:
    // `{<members before "seq">,"seq":` ‖ `,<members after "seq">}` (commas only where a member
    // follows or precedes). One buffer instead of two: one allocation per event.
    canonical: Vec<u8>,
    // Offset in `canonical` where the digits of `seq` are spliced in.
    seq_at: usize,
    // Every indexed term of the event except `seq`: `u32` little-endian length ‖ `Term` bytes,
    // repeated.
    terms: Vec<u8>,
}

impl EncodedBody {
    /// Encodes a complete event body (every envelope field set, no `seq`).
    pub(crate) fn encode(body: &Map<String, Value>) -> Self {
        let (canonical, seq_at) = with_scratch(|buf| {
            let seq_at = write_object_with_seq_gap(buf, body);
            (buf.as_slice().to_vec(), seq_at)
        });
        let terms = with_scratch(|buf| {
            crate::flatten::flatten(body, |path, scalar| {
                let start = buf.len();
                buf.extend_from_slice(&[0; 4]);
                crate::term::Term::encode_into(path, scalar, buf);
                let len = u32::try_from(buf.len() - start - 4).unwrap_or(u32::MAX);
                buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
            });
            buf.as_slice().to_vec()
        });
        Self {
            canonical,
            seq_at,
            terms,
        }
    }
}

impl fmt::Debug for EncodedBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (head, tail) = self
            .canonical
            .split_at(self.seq_at.min(self.canonical.len()));
        f.debug_struct("EncodedBody")
            .field(
                "canonical",
                &format_args!(
                    "{}<seq>{}",
                    String::from_utf8_lossy(head),
                    String::from_utf8_lossy(tail)
                ),
            )
            .field("terms_bytes", &self.terms.len())
            .finish()
    }
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
        let EncodedBody {
            canonical, seq_at, ..
        } = &self.encoded;
        let (head, tail) = canonical.split_at((*seq_at).min(canonical.len()));
        out.reserve(self.canonical_len_hint());
        out.extend_from_slice(head);
        write_u64_number(out, seq);
        out.extend_from_slice(tail);
    }

    /// An upper bound of the canonical length, for buffer sizing.
    pub fn canonical_len_hint(&self) -> usize {
        // `seq` takes at most 20 bytes (u64::MAX as an ES6 number: 18446744073709552000).
        self.encoded.canonical.len() + 20
    }

    /// Every indexed term of the event except `seq` (see [`crate::flatten`] and [`crate::Term`]).
    pub fn terms(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut rest = self.encoded.terms.as_slice();
        std::iter::from_fn(move || {
            let (len, after) = rest.split_first_chunk::<4>()?;
            let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
            let (term, after) = after.split_at_checked(len)?;
            rest = after;
            Some(term)
        })
    }
}

/// The event as returned to clients: its canonical bytes plus `"hash": "<hex chain hash>"`.
///
/// The member is appended before the closing brace (`{..,"hash":"..."}`, or `{"hash":"..."}`
/// for an empty object), so a client recovers the hashed bytes by removing exactly that
/// member. `canonical` must be a JSON object; anything else is returned unchanged.
pub fn with_hash(canonical: &[u8], hash: &Hash) -> Vec<u8> {
    let Some((b'}', head)) = canonical.split_last() else {
        return canonical.to_vec();
    };
    let mut hex = [0u8; 64];
    // 32 bytes always fit 64 hex digits, so this cannot fail.
    let _ = hex::encode_to_slice(hash, &mut hex);
    let mut out = Vec::with_capacity(canonical.len() + 76);
    out.extend_from_slice(head);
    if head != b"{" {
        out.push(b',');
    }
    out.extend_from_slice(b"\"hash\":\"");
    out.extend_from_slice(&hex);
    out.extend_from_slice(b"\"}");
    out
}

/// Runs `f` with an empty per-thread buffer, so hot paths (normalise, prepare) serialise
/// without growing a fresh vector every time.
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    thread_local! {
        static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    }
    // A buffer grown by an unusually large event is dropped rather than kept per thread.
    const KEEP_CAPACITY: usize = 1 << 20;
    // Taken out while in use, so a nested call (or thread teardown) just gets a fresh one.
    let mut buf = SCRATCH.try_with(Cell::take).unwrap_or_default();
    buf.clear();
    let result = f(&mut buf);
    if buf.capacity() <= KEEP_CAPACITY {
        let _ = SCRATCH.try_with(|cell| cell.set(buf));
    }
    result
}

/// Writes `value` as RFC 8785 JSON.
pub(crate) fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(out, map),
    }
}

/// Writes `map` as an RFC 8785 object.
pub(crate) fn write_object(out: &mut Vec<u8>, map: &Map<String, Value>) {
    out.push(b'{');
    let mut first = true;
    for_each_sorted(map, |key, value| {
        if !first {
            out.push(b',');
        }
        first = false;
        write_member(out, key, value);
    });
    out.push(b'}');
}

/// Writes `map` as an RFC 8785 object in which a `seq` member is due, up to and including
/// `"seq":`, then the rest; returns the offset where the value of `seq` belongs.
fn write_object_with_seq_gap(out: &mut Vec<u8>, map: &Map<String, Value>) -> usize {
    const SEQ: &str = "seq";
    out.push(b'{');
    let mut first = true;
    let mut seq_at = None;
    for_each_sorted(map, |key, value| {
        if seq_at.is_none() && jcs_key_cmp(key, SEQ) == Ordering::Greater {
            if !first {
                out.push(b',');
            }
            out.extend_from_slice(b"\"seq\":");
            seq_at = Some(out.len());
            first = false;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_member(out, key, value);
    });
    let seq_at = match seq_at {
        Some(at) => at,
        None => {
            if !first {
                out.push(b',');
            }
            out.extend_from_slice(b"\"seq\":");
            out.len()
        }
    };
    out.push(b'}');
    seq_at
}

fn write_member(out: &mut Vec<u8>, key: &str, value: &Value) {
    write_str(out, key);
    out.push(b':');
    write_value(out, value);
}

/// Calls `f` for every member of `map` in RFC 8785 order. A `serde_json::Map` iterates in
/// byte order, which is the JCS order unless keys mix supplementary characters with
/// U+E000..U+FFFF; only then are the members collected and sorted.
fn for_each_sorted<'a>(map: &'a Map<String, Value>, mut f: impl FnMut(&'a str, &'a Value)) {
    let mut prev: Option<&str> = None;
    let sorted = map.keys().all(|key| {
        let ok = prev.is_none_or(|p| jcs_key_cmp(p, key) == Ordering::Less);
        prev = Some(key);
        ok
    });
    if sorted {
        for (key, value) in map {
            f(key, value);
        }
    } else {
        let mut members: Vec<(&str, &Value)> = map.iter().map(|(k, v)| (k.as_str(), v)).collect();
        members.sort_unstable_by(|a, b| jcs_key_cmp(a.0, b.0));
        for (key, value) in members {
            f(key, value);
        }
    }
}

/// Orders keys by their UTF-16 code units (RFC 8785 §3.2.3) without transcoding.
///
/// UTF-8 byte order is code point order, which agrees with UTF-16 order except between a
/// supplementary character (UTF-8 lead byte F0–F4, UTF-16 surrogates D800–DFFF) and one in
/// U+E000..U+FFFF (lead byte EE or EF): there the surrogate sorts first.
pub(crate) fn jcs_key_cmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    match a.iter().zip(b).find(|(x, y)| x != y) {
        None => a.len().cmp(&b.len()),
        Some((&x, &y)) => match (x >= 0xF0, y >= 0xF0) {
            (true, false) if y >= 0xEE => Ordering::Less,
            (false, true) if x >= 0xEE => Ordering::Greater,
            _ => x.cmp(&y),
        },
    }
}

/// Largest integer every JSON implementation reads back exactly (2^53): up to it, ES6 number
/// formatting of an integer is just its digits.
const MAX_EXACT_INT: u64 = 1 << 53;

fn write_number(out: &mut Vec<u8>, n: &Number) {
    if let Some(u) = n.as_u64() {
        write_u64_number(out, u);
    } else if let Some(i) = n.as_i64().filter(|i| i.unsigned_abs() <= MAX_EXACT_INT) {
        out.push(b'-');
        write_digits(out, i.unsigned_abs());
    } else if let Some(x) = n.as_f64() {
        write_f64(out, x);
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Writes an unsigned integer as an RFC 8785 number.
pub(crate) fn write_u64_number(out: &mut Vec<u8>, u: u64) {
    if u <= MAX_EXACT_INT {
        write_digits(out, u);
    } else {
        write_f64(out, u as f64);
    }
}

fn write_digits(out: &mut Vec<u8>, mut u: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// ES6 `Number.prototype.toString` formatting (RFC 8785 §3.2.2.3).
fn write_f64(out: &mut Vec<u8>, x: f64) {
    // Only non-finite values fail, and JSON values cannot hold them.
    if serde_json_canonicalizer::to_writer(&x, out).is_err() {
        out.extend_from_slice(b"null");
    }
}

/// What each byte becomes inside a JSON string: 0 = itself, `u` = `\u00XX`, else `\` + that.
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0A] = b'n';
    table[0x0C] = b'f';
    table[0x0D] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Writes `s` as an RFC 8785 string literal.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = ESCAPE[usize::from(b)];
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        if escape == b'u' {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xF)],
            ]);
        } else {
            out.extend_from_slice(&[b'\\', escape]);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::test_support::{arb_json, arb_key, arb_object};
    use crate::{Scalar, Submitted, Term, flatten};

    fn jcs(v: &Value) -> String {
        String::from_utf8(to_canonical_bytes(v)).unwrap()
    }

    #[test]
    fn rfc8785_sorting_example() {
        // RFC 8785 §3.2.3: keys ordered by UTF-16 code units.
        let input = r#"{"\u20ac":"Euro Sign","\r":"Carriage Return","\ufb33":"Hebrew Letter Dalet With Dagesh","1":"One","\ud83d\ude00":"Emoji: Grinning Face","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis"}"#;
        let v: Value = serde_json::from_str(input).unwrap();
        let want = "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\
                    \"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\
                    \"\u{1f600}\":\"Emoji: Grinning Face\",\
                    \"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}";
        assert_eq!(jcs(&v), want);
    }

    #[test]
    fn rfc8785_values_example() {
        // RFC 8785 §3.2.2 example (numbers, literals, string escapes).
        let input = r#"{"numbers":[333333333.33333329,1E30,4.50,2e-3,0.000000000000000000000000001],"string":"\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/","literals":[null,true,false]}"#;
        let v: Value = serde_json::from_str(input).unwrap();
        assert_eq!(
            jcs(&v),
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        );
    }

    #[test]
    fn integers_beyond_2_pow_53_are_doubles() {
        assert_eq!(jcs(&json!(9_007_199_254_740_993u64)), "9007199254740992");
        assert_eq!(jcs(&json!(u64::MAX)), "18446744073709552000");
        assert_eq!(jcs(&json!(-9_007_199_254_740_992i64)), "-9007199254740992");
        assert_eq!(jcs(&json!(i64::MIN)), "-9223372036854776000");
    }

    #[test]
    fn with_hash_appends_the_member() {
        let hash = [0xab; 32];
        let hex = "ab".repeat(32);
        assert_eq!(
            String::from_utf8(with_hash(br#"{"a":1}"#, &hash)).unwrap(),
            format!(r#"{{"a":1,"hash":"{hex}"}}"#)
        );
        assert_eq!(
            String::from_utf8(with_hash(b"{}", &hash)).unwrap(),
            format!(r#"{{"hash":"{hex}"}}"#)
        );
        assert_eq!(with_hash(b"", &hash), b"");
        assert_eq!(with_hash(b"[1]", &hash), b"[1]");
    }

    fn submitted(body: Map<String, Value>) -> Submitted {
        Submitted {
            id: None,
            event_type: EventType::parse("t").unwrap(),
            time: None,
            severity: None,
            source: None,
            body,
            content_digest: [7; 32],
        }
    }

    #[test]
    fn prepared_terms_are_the_flattened_body() {
        let body = json!({"type": "t", "actor": {"id": "u"}, "details": {"n": [1, 2]}, "ok": true, "z": null});
        let prepared = submitted(body.as_object().unwrap().clone()).prepare(
            &TenantId::parse("acme").unwrap(),
            Timestamp::from_nanos(0),
            "svc",
        );
        let stored: Value = serde_json::from_slice(&prepared.canonical_bytes(5)).unwrap();
        let mut stored = stored.as_object().unwrap().clone();
        stored.remove("seq");
        let mut want = Vec::new();
        flatten(&stored, |path, scalar| want.push(Term::new(path, scalar).0));
        let got: Vec<Vec<u8>> = prepared.terms().map(<[u8]>::to_vec).collect();
        assert_eq!(got, want);
        assert!(got.contains(&Term::new("tenant", Scalar::String("acme")).0));
        assert!(got.contains(&Term::new("details.n", Scalar::Number(2.0)).0));
        // actor.id, details.n (2), id, ok, received_at, severity, source, tenant, time, type, z
        assert_eq!(got.len(), 12);
    }

    proptest! {
        #[test]
        fn matches_the_reference_canonicalizer(v in arb_json()) {
            let reference = serde_json_canonicalizer::to_vec(&v).unwrap();
            prop_assert_eq!(String::from_utf8(to_canonical_bytes(&v)).unwrap(), String::from_utf8(reference).unwrap());
        }

        #[test]
        fn key_order_is_utf16_order(a in arb_key(), b in arb_key()) {
            prop_assert_eq!(jcs_key_cmp(&a, &b), a.encode_utf16().cmp(b.encode_utf16()));
        }

        #[test]
        fn seq_gap_splices_to_canonical_bytes(
            body in arb_object(arb_json()).prop_map(|mut m| { m.remove("seq"); m }),
            seq in prop_oneof![any::<u64>(), 0u64..1000],
        ) {
            let mut buf = Vec::new();
            let at = write_object_with_seq_gap(&mut buf, &body);
            let mut spliced = buf[..at].to_vec();
            write_u64_number(&mut spliced, seq);
            spliced.extend_from_slice(&buf[at..]);
            let mut with_seq = body.clone();
            with_seq.insert("seq".to_owned(), Value::from(seq));
            prop_assert_eq!(
                String::from_utf8(spliced).unwrap(),
                String::from_utf8(to_canonical_bytes(&Value::Object(with_seq))).unwrap()
            );
        }

        #[test]
        fn prepared_bytes_equal_canonical_body_with_seq(
            body in arb_object(arb_json()),
            id in proptest::option::of("[a-z0-9]{1,8}"),
            time in proptest::option::of(-1_000_000_000_000_000_000i64..4_000_000_000_000_000_000),
            severity in proptest::option::of(0u8..=10),
            source in proptest::option::of("[a-z]{1,5}"),
            received in 0i64..4_000_000_000_000_000_000,
            seq in prop_oneof![any::<u64>(), 1u64..100_000],
        ) {
            let mut sub = submitted(body);
            sub.body.insert("type".to_owned(), json!("t"));
            if let Some(id) = &id {
                sub.id = Some(EventId::parse(id).unwrap());
                sub.body.insert("id".to_owned(), json!(id));
            }
            if let Some(t) = time {
                sub.time = Some(Timestamp::from_nanos(t));
                sub.body.insert("time".to_owned(), json!(Timestamp::from_nanos(t).to_rfc3339()));
            }
            if let Some(s) = severity {
                sub.severity = Some(Severity::new(s).unwrap());
                sub.body.insert("severity".to_owned(), json!(s));
            }
            if let Some(s) = &source {
                sub.source = Some(s.clone());
                sub.body.insert("source".to_owned(), json!(s));
            }
            let received = Timestamp::from_nanos(received);
            let tenant = TenantId::parse("acme").unwrap();
            let mut want = sub.body.clone();
            let prepared = sub.prepare(&tenant, received, "svc");

            want.remove("hash");
            want.insert("id".to_owned(), json!(prepared.id.as_str()));
            want.insert("time".to_owned(), json!(prepared.time.to_rfc3339()));
            want.insert("severity".to_owned(), json!(prepared.severity.get()));
            want.insert("source".to_owned(), json!(source.as_deref().unwrap_or("svc")));
            want.insert("tenant".to_owned(), json!("acme"));
            want.insert("received_at".to_owned(), json!(received.to_rfc3339()));
            want.insert("seq".to_owned(), json!(seq));
            prop_assert_eq!(prepared.time, time.map_or(received, Timestamp::from_nanos));
            prop_assert_eq!(prepared.received_at, received);
            prop_assert_eq!(prepared.content_digest, [7; 32]);

            let got = prepared.canonical_bytes(seq);
            prop_assert!(got.len() <= prepared.canonical_len_hint());
            prop_assert_eq!(
                String::from_utf8(got).unwrap(),
                String::from_utf8(to_canonical_bytes(&Value::Object(want))).unwrap()
            );
        }
    }
}
