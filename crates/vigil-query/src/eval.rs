//! Evaluating an [`Expr`] against one event.
//!
//! Paths are resolved the way `vigil_event::flatten` names leaves, so an event matches here
//! exactly when the store's index terms say it should: keys join with `.`, array elements share
//! their array's path (any element may match, arrays of objects included), and a key that itself
//! contains a `.` is found too.

use std::cmp::Ordering;

use serde_json::{Map, Value};
use vigil_event::{Scalar, Timestamp};

use crate::time::TimeLiteral;
use crate::{CmpOp, Expr, Literal};

/// Envelope fields that hold RFC 3339 strings: ranges on them always compare times, and exact
/// matches also accept the same instant written another way. A store's index must treat these
/// paths the same way, so it asks here (through `vigil_store::is_time_path`).
pub fn is_time_path(path: &str) -> bool {
    matches!(path, "time" | "received_at")
}

impl Expr {
    /// True when `event` (a stored event object) satisfies this filter. `now` resolves
    /// relative times in literals.
    pub fn matches(&self, event: &Map<String, Value>, now: Timestamp) -> bool {
        match self {
            Self::All => true,
            Self::And(items) => items.iter().all(|e| e.matches(event, now)),
            Self::Or(items) => items.iter().any(|e| e.matches(event, now)),
            Self::Not(inner) => !inner.matches(event, now),
            Self::Compare {
                path,
                op: CmpOp::Eq,
                value,
            } => {
                let candidates = value.exact_candidates();
                // On envelope time fields a time literal also matches the same instant written
                // differently (`time:2024-05-01T12:00:00+02:00` finds `2024-05-01T10:00:00Z`).
                let instant = is_time_path(path)
                    .then(|| TimeLiteral::parse(&value.raw).and_then(|t| t.resolve(now)))
                    .flatten()
                    .map(RangeBound::Time);
                any_value(event, path, &mut |v| {
                    candidates.iter().any(|c| scalar_eq(v, c))
                        || instant.as_ref().is_some_and(|t| t.admits(v, CmpOp::Eq))
                })
            }
            Self::Compare { path, op, value } => match RangeBound::new(path, value, now) {
                Some(bound) => any_value(event, path, &mut |v| bound.admits(v, *op)),
                None => false,
            },
            Self::Prefix { path, prefix } => any_value(
                event,
                path,
                &mut |v| matches!(v, Value::String(s) if s.starts_with(prefix.as_str())),
            ),
            Self::Exists { path } => any_value(event, path, &mut |_| true),
        }
    }
}

/// The other side of a range comparison, resolved against `now`.
enum RangeBound {
    /// Compared with JSON numbers.
    Number(f64),
    /// Compared with strings that parse as RFC 3339.
    Time(Timestamp),
}

impl RangeBound {
    fn new(path: &str, value: &Literal, now: Timestamp) -> Option<Self> {
        if !is_time_path(path)
            && let Some(n) = value.as_number()
        {
            return Some(Self::Number(n));
        }
        TimeLiteral::parse(&value.raw)?.resolve(now).map(Self::Time)
    }

    fn admits(&self, v: &Value, op: CmpOp) -> bool {
        let ordering = match (self, v) {
            (Self::Number(bound), Value::Number(n)) => {
                n.as_f64().and_then(|n| n.partial_cmp(bound))
            }
            (Self::Time(bound), Value::String(s)) => {
                Timestamp::parse_rfc3339(s).map(|t| t.cmp(bound))
            }
            _ => None,
        };
        ordering.is_some_and(|o| match op {
            CmpOp::Eq => o == Ordering::Equal,
            CmpOp::Gt => o == Ordering::Greater,
            CmpOp::Ge => o != Ordering::Less,
            CmpOp::Lt => o == Ordering::Less,
            CmpOp::Le => o != Ordering::Greater,
        })
    }
}

fn scalar_eq(v: &Value, c: &Scalar<'_>) -> bool {
    match (v, c) {
        (Value::String(s), Scalar::String(t)) => s == t,
        (Value::Number(n), Scalar::Number(x)) => n.as_f64() == Some(*x),
        (Value::Bool(b), Scalar::Bool(x)) => b == x,
        (Value::Null, Scalar::Null) => true,
        _ => false,
    }
}

/// True when some scalar at exactly `path` satisfies `f`.
fn any_value(obj: &Map<String, Value>, path: &str, f: &mut dyn FnMut(&Value) -> bool) -> bool {
    // Each `.` may separate two keys or belong to a key: try every split, shortest key first.
    let splits = path
        .match_indices('.')
        .map(|(i, _)| i)
        .chain(std::iter::once(path.len()));
    for at in splits {
        let Some(value) = obj.get(&path[..at]) else {
            continue;
        };
        let found = match path.get(at + 1..) {
            None => any_scalar(value, f),
            Some(rest) => descend(value, rest, f),
        };
        if found {
            return true;
        }
    }
    false
}

fn descend(value: &Value, rest: &str, f: &mut dyn FnMut(&Value) -> bool) -> bool {
    match value {
        Value::Object(obj) => any_value(obj, rest, f),
        Value::Array(items) => items.iter().any(|item| descend(item, rest, f)),
        _ => false,
    }
}

/// The path ends at `value`: scalars are tested, arrays fan out, objects are not values.
fn any_scalar(value: &Value, f: &mut dyn FnMut(&Value) -> bool) -> bool {
    match value {
        Value::Array(items) => items.iter().any(|item| any_scalar(item, f)),
        Value::Object(_) => false,
        scalar => f(scalar),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event() -> Map<String, Value> {
        let v = json!({
            "type": "login.failed",
            "time": "2024-05-01T10:00:00Z",
            "received_at": "2024-05-01T10:00:01.5Z",
            "severity": 7,
            "actor": {"id": "u-7", "ip": "10.1.2.3"},
            "tags": ["a", "b", 3],
            "details": {
                "amount": 150.5,
                "attempt": 3,
                "admin": false,
                "note": null,
                "when": "2024-04-30T00:00:00+02:00",
                "items": [{"sku": "x-1", "qty": 2}, {"sku": "y-2", "qty": 5}],
                "matrix": [[1, 2], [3]],
                "empty": {},
                "none": [],
                "dotted.key": "yes"
            }
        });
        match v {
            Value::Object(m) => m,
            _ => unreachable!("literal object"),
        }
    }

    fn now() -> Timestamp {
        Timestamp::parse_rfc3339("2024-05-01T10:10:00Z").expect("test time")
    }

    fn cmp(path: &str, op: CmpOp, raw: &str) -> Expr {
        Expr::Compare {
            path: path.into(),
            op,
            value: Literal::bare(raw),
        }
    }

    fn quoted(path: &str, raw: &str) -> Expr {
        Expr::Compare {
            path: path.into(),
            op: CmpOp::Eq,
            value: Literal::quoted(raw),
        }
    }

    fn m(e: &Expr) -> bool {
        e.matches(&event(), now())
    }

    #[test]
    fn exact_matches_strings_numbers_bools_and_null() {
        assert!(m(&cmp("type", CmpOp::Eq, "login.failed")));
        assert!(!m(&cmp("type", CmpOp::Eq, "login")));
        assert!(m(&cmp("actor.id", CmpOp::Eq, "u-7")));
        assert!(m(&cmp("severity", CmpOp::Eq, "7")));
        assert!(m(&cmp("severity", CmpOp::Eq, "7.0")));
        assert!(m(&cmp("details.amount", CmpOp::Eq, "150.5")));
        assert!(m(&cmp("details.admin", CmpOp::Eq, "false")));
        assert!(m(&cmp("details.note", CmpOp::Eq, "null")));
        assert!(!m(&cmp("details.admin", CmpOp::Eq, "null")));
    }

    #[test]
    fn quoted_values_match_strings_only() {
        assert!(!m(&quoted("severity", "7")));
        assert!(!m(&quoted("details.admin", "false")));
        assert!(m(&quoted("type", "login.failed")));
    }

    #[test]
    fn objects_are_not_values() {
        assert!(!m(&cmp("actor", CmpOp::Eq, "u-7")));
        assert!(!m(&cmp("details.empty", CmpOp::Eq, "null")));
        assert!(!m(&cmp("missing", CmpOp::Eq, "null")));
    }

    #[test]
    fn arrays_fan_out() {
        assert!(m(&cmp("tags", CmpOp::Eq, "b")));
        assert!(m(&cmp("tags", CmpOp::Eq, "3")));
        assert!(m(&cmp("details.items.sku", CmpOp::Eq, "y-2")));
        assert!(m(&cmp("details.items.qty", CmpOp::Gt, "4")));
        assert!(!m(&cmp("details.items.qty", CmpOp::Gt, "5")));
        assert!(m(&cmp("details.matrix", CmpOp::Eq, "3")));
        // Any element may match each comparison on its own, like the index.
        let both = Expr::And(vec![
            cmp("details.items.sku", CmpOp::Eq, "x-1"),
            cmp("details.items.qty", CmpOp::Eq, "5"),
        ]);
        assert!(m(&both));
    }

    #[test]
    fn keys_containing_dots_are_found() {
        assert!(m(&cmp("details.dotted.key", CmpOp::Eq, "yes")));
    }

    #[test]
    fn numeric_ranges() {
        assert!(m(&cmp("severity", CmpOp::Ge, "7")));
        assert!(!m(&cmp("severity", CmpOp::Gt, "7")));
        assert!(m(&cmp("severity", CmpOp::Le, "7")));
        assert!(!m(&cmp("severity", CmpOp::Lt, "7")));
        assert!(m(&cmp("details.amount", CmpOp::Gt, "100")));
        assert!(!m(&cmp("details.amount", CmpOp::Lt, "1.5e2")));
        // Strings are not numbers, even when they look like one.
        let mut ev = event();
        ev.insert("code".into(), json!("500"));
        assert!(!cmp("code", CmpOp::Ge, "400").matches(&ev, now()));
    }

    #[test]
    fn time_ranges_on_envelope_times() {
        assert!(m(&cmp("time", CmpOp::Ge, "2024-05-01T10:00:00Z")));
        assert!(!m(&cmp("time", CmpOp::Gt, "2024-05-01T10:00:00Z")));
        assert!(m(&cmp("time", CmpOp::Lt, "2024-05-01T12:30:00+02:00")));
        assert!(m(&cmp("time", CmpOp::Ge, "2024-05-01")));
        assert!(m(&cmp("time", CmpOp::Lt, "2024-05-02")));
        assert!(m(&cmp("time", CmpOp::Ge, "-15m")));
        assert!(!m(&cmp("time", CmpOp::Ge, "-5m")));
        assert!(m(&cmp("time", CmpOp::Lt, "now")));
        assert!(m(&cmp("time", CmpOp::Ge, "1714557600")));
        assert!(!m(&cmp("time", CmpOp::Gt, "1714557600")));
        assert!(m(&cmp("received_at", CmpOp::Gt, "2024-05-01T10:00:01Z")));
    }

    #[test]
    fn time_literals_compare_with_time_strings_elsewhere() {
        assert!(m(&cmp("details.when", CmpOp::Lt, "2024-04-30")));
        assert!(m(&cmp("details.when", CmpOp::Ge, "2024-04-29T22:00:00Z")));
        assert!(!m(&cmp("type", CmpOp::Lt, "2024-04-30")));
        // A number literal is numeric off the envelope time fields.
        assert!(!m(&cmp("details.when", CmpOp::Gt, "0")));
    }

    #[test]
    fn unresolvable_range_bounds_match_nothing() {
        assert!(!m(&cmp("severity", CmpOp::Gt, "high")));
        assert!(!cmp("time", CmpOp::Lt, "-1d").matches(&event(), Timestamp::from_nanos(i64::MIN)));
    }

    #[test]
    fn prefix_matches_string_starts() {
        let p = |path: &str, prefix: &str| Expr::Prefix {
            path: path.into(),
            prefix: prefix.into(),
        };
        assert!(m(&p("actor.ip", "10.")));
        assert!(!m(&p("actor.ip", "10.2")));
        assert!(m(&p("type", "")));
        assert!(!m(&p("severity", "7")));
        assert!(m(&p("details.items.sku", "y-")));
    }

    #[test]
    fn exists_finds_any_value_at_the_path() {
        let e = |path: &str| Expr::Exists { path: path.into() };
        assert!(m(&e("severity")));
        assert!(m(&e("details.admin")));
        assert!(m(&e("details.note")));
        assert!(m(&e("details.items.sku")));
        assert!(m(&e("tags")));
        assert!(m(&e("details.dotted.key")));
        // Objects hold no value of their own: ask for a field inside them.
        assert!(!m(&e("actor")));
        assert!(!m(&e("details.empty")));
        assert!(!m(&e("details.none")));
        assert!(!m(&e("actor.name")));
        assert!(!m(&e("act")));
    }

    #[test]
    fn exact_times_on_envelope_fields_compare_instants() {
        assert!(m(&cmp("time", CmpOp::Eq, "2024-05-01T10:00:00Z")));
        assert!(m(&cmp("time", CmpOp::Eq, "2024-05-01T12:00:00+02:00")));
        assert!(m(&cmp("time", CmpOp::Eq, "1714557600")));
        assert!(!m(&cmp("time", CmpOp::Eq, "2024-05-01")));
        assert!(m(&cmp(
            "received_at",
            CmpOp::Eq,
            "2024-05-01T10:00:01.500Z"
        )));
        // Elsewhere exact means the same text.
        assert!(!m(&cmp("details.when", CmpOp::Eq, "2024-04-29T22:00:00Z")));
        assert!(m(&cmp(
            "details.when",
            CmpOp::Eq,
            "2024-04-30T00:00:00+02:00"
        )));
    }

    #[test]
    fn connectives() {
        let yes = cmp("severity", CmpOp::Eq, "7");
        let no = cmp("severity", CmpOp::Eq, "8");
        assert!(m(&Expr::All));
        assert!(m(&Expr::And(vec![yes.clone(), Expr::All])));
        assert!(!m(&Expr::And(vec![yes.clone(), no.clone()])));
        assert!(m(&Expr::Or(vec![no.clone(), yes.clone()])));
        assert!(!m(&Expr::Or(vec![])));
        assert!(m(&Expr::And(vec![])));
        assert!(m(&Expr::Not(Box::new(no))));
        assert!(!m(&Expr::Not(Box::new(yes))));
        assert!(!m(&Expr::Not(Box::new(Expr::All))));
    }

    #[test]
    fn not_matches_events_without_the_field() {
        assert!(m(&Expr::Not(Box::new(cmp(
            "details.plan",
            CmpOp::Eq,
            "pro"
        )))));
    }
}
