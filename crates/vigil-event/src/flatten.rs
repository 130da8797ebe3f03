//! Every scalar `(path, value)` of an event: what the store indexes and queries match.

use serde_json::{Map, Value};

/// One scalar JSON value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar<'a> {
    Null,
    Bool(bool),
    Number(f64),
    String(&'a str),
}

/// Calls `f(path, scalar)` for every scalar leaf of `obj`, depth first, keys in the map's order.
/// Paths join keys with `.` (`actor.id`, `details.items.sku`); array elements share their
/// array's path (`tags: ["a","b"]` gives `tags`="a" and `tags`="b"); empty objects and arrays
/// give nothing. The path buffer is reused: no allocation per leaf.
pub fn flatten<'a>(obj: &'a Map<String, Value>, mut f: impl FnMut(&str, Scalar<'a>)) {
    todo!()
}
