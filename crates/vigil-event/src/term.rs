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
        todo!()
    }

    /// Appends the encoding of `(path, value)` to `out`.
    pub fn encode_into(path: &str, value: Scalar<'_>, out: &mut Vec<u8>) {
        todo!()
    }

    /// `[start, end)` bounds covering every term of `path` with `kind`.
    pub fn kind_range(path: &str, kind: TermKind) -> (Vec<u8>, Vec<u8>) {
        todo!()
    }

    /// The key prefix shared by all string terms of `path` that start with `prefix`.
    pub fn string_prefix(path: &str, prefix: &str) -> Vec<u8> {
        todo!()
    }

    /// Splits an encoded term back into its path and value (string values borrowed).
    pub fn decode(bytes: &[u8]) -> Option<(&str, Scalar<'_>)> {
        todo!()
    }
}
