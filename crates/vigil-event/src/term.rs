//! Index terms: a field path and one scalar value as bytes whose order is the value order.
//!
//! Layout: `path ‖ 0x00 ‖ kind ‖ value`, where value is nothing (null), one byte (bool), 8 bytes
//! of an order-preserving big-endian f64 (number) or the UTF-8 bytes (string, at most
//! [`Term::MAX_STRING_BYTES`]; longer strings are truncated at a char boundary, so a lookup of
//! a value that long must be confirmed against the event). Within one path and kind, byte order
//! equals numeric / lexicographic order, so ranges and prefixes are dictionary range scans.

use crate::flatten::Scalar;

/// The kind byte of a term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum TermKind {
    Null = 1,
    Bool = 2,
    Number = 3,
    String = 4,
}

/// An encoded term (see the module docs for the layout).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Term(pub Vec<u8>);

impl Term {
    /// Strings longer than this are indexed by their first `MAX_STRING_BYTES` bytes.
    pub const MAX_STRING_BYTES: usize = 512;

    pub fn new(path: &str, value: Scalar<'_>) -> Self {
        let mut out = Vec::with_capacity(path.len() + 2 + value_len(value));
        Self::encode_into(path, value, &mut out);
        Self(out)
    }

    /// Appends the encoding of `(path, value)` to `out`.
    ///
    /// `path` must not contain a NUL byte (it separates the path from the value; ingest
    /// rejects keys holding one).
    pub fn encode_into(path: &str, value: Scalar<'_>, out: &mut Vec<u8>) {
        out.reserve(path.len() + 2 + value_len(value));
        out.extend_from_slice(path.as_bytes());
        out.push(0);
        match value {
            Scalar::Null => out.push(TermKind::Null as u8),
            Scalar::Bool(b) => {
                out.push(TermKind::Bool as u8);
                out.push(u8::from(b));
            }
            Scalar::Number(x) => {
                out.push(TermKind::Number as u8);
                out.extend_from_slice(&encode_f64(x));
            }
            Scalar::String(s) => {
                out.push(TermKind::String as u8);
                out.extend_from_slice(truncate(s).as_bytes());
            }
        }
    }

    /// `[start, end)` bounds covering every term of `path` with `kind`.
    pub fn kind_range(path: &str, kind: TermKind) -> (Vec<u8>, Vec<u8>) {
        let mut start = Vec::with_capacity(path.len() + 2);
        start.extend_from_slice(path.as_bytes());
        start.push(0);
        let mut end = start.clone();
        start.push(kind as u8);
        end.push(kind as u8 + 1);
        (start, end)
    }

    /// The key prefix shared by all string terms of `path` that start with `prefix`.
    pub fn string_prefix(path: &str, prefix: &str) -> Vec<u8> {
        let prefix = truncate(prefix);
        let mut out = Vec::with_capacity(path.len() + 2 + prefix.len());
        out.extend_from_slice(path.as_bytes());
        out.push(0);
        out.push(TermKind::String as u8);
        out.extend_from_slice(prefix.as_bytes());
        out
    }

    /// Splits an encoded term back into its path and value (string values borrowed).
    /// `None` when `bytes` is not a term.
    pub fn decode(bytes: &[u8]) -> Option<(&str, Scalar<'_>)> {
        let sep = bytes.iter().position(|&b| b == 0)?;
        let (path, rest) = bytes.split_at(sep);
        let path = std::str::from_utf8(path).ok()?;
        let (&kind, value) = rest.get(1..)?.split_first()?;
        let scalar = match kind {
            k if k == TermKind::Null as u8 && value.is_empty() => Scalar::Null,
            k if k == TermKind::Bool as u8 => match value {
                [0] => Scalar::Bool(false),
                [1] => Scalar::Bool(true),
                _ => return None,
            },
            k if k == TermKind::Number as u8 => Scalar::Number(decode_f64(value.try_into().ok()?)),
            k if k == TermKind::String as u8 => Scalar::String(std::str::from_utf8(value).ok()?),
            _ => return None,
        };
        Some((path, scalar))
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Term {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl TermKind {
    /// The kind a scalar is indexed under.
    pub fn of(value: Scalar<'_>) -> Self {
        match value {
            Scalar::Null => Self::Null,
            Scalar::Bool(_) => Self::Bool,
            Scalar::Number(_) => Self::Number,
            Scalar::String(_) => Self::String,
        }
    }
}

fn value_len(value: Scalar<'_>) -> usize {
    match value {
        Scalar::Null => 0,
        Scalar::Bool(_) => 1,
        Scalar::Number(_) => 8,
        Scalar::String(s) => s.len().min(Term::MAX_STRING_BYTES),
    }
}

/// `s` cut to at most [`Term::MAX_STRING_BYTES`] bytes, at a char boundary.
fn truncate(s: &str) -> &str {
    if s.len() <= Term::MAX_STRING_BYTES {
        return s;
    }
    let mut end = Term::MAX_STRING_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

const SIGN: u64 = 1 << 63;

/// Big-endian bytes whose unsigned order is the numeric order of `x`: positives get the sign
/// bit set, negatives are inverted (so larger magnitudes sort lower). `-0.0` is stored as `0.0`.
fn encode_f64(x: f64) -> [u8; 8] {
    let x = if x == 0.0 { 0.0 } else { x };
    let bits = x.to_bits();
    let key = if bits & SIGN != 0 { !bits } else { bits | SIGN };
    key.to_be_bytes()
}

fn decode_f64(bytes: [u8; 8]) -> f64 {
    let key = u64::from_be_bytes(bytes);
    let bits = if key & SIGN != 0 { key & !SIGN } else { !key };
    f64::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn finite() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>().prop_filter("finite", |x| x.is_finite()),
            (-1000i64..1000).prop_map(|i| i as f64),
            Just(0.0),
            Just(-0.0),
            Just(f64::MIN),
            Just(f64::MAX),
            Just(f64::MIN_POSITIVE),
            Just(-f64::MIN_POSITIVE),
        ]
    }

    proptest! {
        #[test]
        fn number_byte_order_is_numeric_order(a in finite(), b in finite()) {
            let ta = Term::new("details.amount", Scalar::Number(a));
            let tb = Term::new("details.amount", Scalar::Number(b));
            prop_assert_eq!(ta.cmp(&tb), a.partial_cmp(&b).unwrap());
        }

        #[test]
        fn string_byte_order_is_string_order(a in ".{0,40}", b in ".{0,40}") {
            let ta = Term::new("actor.id", Scalar::String(&a));
            let tb = Term::new("actor.id", Scalar::String(&b));
            prop_assert_eq!(ta.cmp(&tb), a.cmp(&b));
        }

        #[test]
        fn long_strings_keep_order_up_to_their_prefix(a in ".{500,700}", b in ".{500,700}") {
            let ta = Term::new("p", Scalar::String(&a));
            let tb = Term::new("p", Scalar::String(&b));
            if a <= b {
                prop_assert!(ta <= tb);
            } else {
                prop_assert!(ta >= tb);
            }
        }

        #[test]
        fn decode_reverses_encode(path in "[a-z_.]{0,20}", x in finite(), s in ".{0,40}", b in any::<bool>()) {
            for value in [Scalar::Null, Scalar::Bool(b), Scalar::Number(x), Scalar::String(&s)] {
                let term = Term::new(&path, value);
                let (p, v) = Term::decode(&term.0).unwrap();
                prop_assert_eq!(p, path.as_str());
                match (value, v) {
                    // -0.0 is indexed as 0.0
                    (Scalar::Number(a), Scalar::Number(b)) => prop_assert!(a == b && (a != 0.0 || b.is_sign_positive())),
                    (a, b) => prop_assert_eq!(a, b),
                }
            }
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = Term::decode(&bytes);
        }

        #[test]
        fn terms_of_a_kind_fall_in_its_range(x in finite(), s in ".{0,20}", b in any::<bool>()) {
            for value in [Scalar::Null, Scalar::Bool(b), Scalar::Number(x), Scalar::String(&s)] {
                let term = Term::new("a.b", value);
                let (lo, hi) = Term::kind_range("a.b", TermKind::of(value));
                prop_assert!(lo.as_slice() <= term.as_bytes() && term.as_bytes() < hi.as_slice());
                // a longer path sharing the prefix never falls in the range
                let other = Term::new("a.bc", value);
                prop_assert!(!(lo.as_slice() <= other.as_bytes() && other.as_bytes() < hi.as_slice()));
            }
        }
    }

    #[test]
    fn layout() {
        assert_eq!(Term::new("a", Scalar::Null).0, b"a\x00\x01");
        assert_eq!(Term::new("a", Scalar::Bool(true)).0, b"a\x00\x02\x01");
        assert_eq!(Term::new("a", Scalar::String("xy")).0, b"a\x00\x04xy");
        assert_eq!(
            Term::new("a", Scalar::Number(1.0)).0,
            [b'a', 0, 3, 0xBF, 0xF0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            Term::new("a", Scalar::Number(-0.0)),
            Term::new("a", Scalar::Number(0.0))
        );
    }

    #[test]
    fn long_strings_are_cut_at_a_char_boundary() {
        let s = format!("{}é{}", "x".repeat(Term::MAX_STRING_BYTES - 1), "tail");
        let term = Term::new("p", Scalar::String(&s));
        let (_, value) = Term::decode(&term.0).unwrap();
        assert_eq!(value, Scalar::String(&s[..Term::MAX_STRING_BYTES - 1]));
        let prefix = Term::string_prefix("p", &s);
        assert_eq!(prefix, term.0);
    }

    #[test]
    fn prefix_scan_bounds() {
        let prefix = Term::string_prefix("actor.ip", "10.");
        assert!(
            Term::new("actor.ip", Scalar::String("10.0.0.7"))
                .0
                .starts_with(&prefix)
        );
        assert!(
            !Term::new("actor.ip", Scalar::String("100.0.0.1"))
                .0
                .starts_with(&prefix)
        );
    }

    #[test]
    fn malformed_terms_do_not_decode() {
        assert_eq!(Term::decode(b"no separator"), None);
        assert_eq!(Term::decode(b"a\x00"), None);
        assert_eq!(Term::decode(b"a\x00\x09"), None);
        assert_eq!(Term::decode(b"a\x00\x01x"), None);
        assert_eq!(Term::decode(b"a\x00\x02\x02"), None);
        assert_eq!(Term::decode(b"a\x00\x03\x01\x02"), None);
        assert_eq!(Term::decode(b"a\x00\x04\xff"), None);
        assert_eq!(Term::decode(b"\xff\x00\x01"), None);
    }
}
