//! The query language compiled to parameterised SQL over `vigil_events`.
//!
//! Every value and every field path travels as a bind parameter; the SQL text is built only
//! from fixed fragments and parameter numbers, so no input can change a statement's shape.
//!
//! Each comparison becomes a predicate with the query language's exact semantics:
//! - envelope columns where the column holds the path's only value: `time`/`received_at`
//!   (compared as instants), `type`, `id`, `severity`, `seq`, and `actor.id` (with the
//!   `actor_multi` escape for events where another key flattens to that path too);
//! - everything else on `fields`, the event flattened to `{"path": [scalars]}`: exact matches
//!   by GIN-indexed containment (`fields @> '{"p": [v]}'`), number ranges and prefixes by
//!   `jsonb_path_exists` over the path's values, existence by the `?` key test.
//!
//! The one comparison SQL cannot state exactly — a time range on a field other than the
//! envelope times (every string at the path parsed as RFC 3339) — compiles to a superset
//! and marks the filter inexact; the store then confirms each candidate with
//! [`Expr::matches`], as the embedded store does for its truncated long strings.

use std::fmt::Write as _;

use serde_json::{Value, json};
use tokio_postgres::types::ToSql;
use vigil_event::Timestamp;
use vigil_query::{CmpOp, Expr, Literal, parse_time_bound};

use crate::row::scalar_json;

/// A bind parameter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Param {
    Text(String),
    Int(i64),
    Float(f64),
}

impl Param {
    pub(crate) fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Self::Text(s) => s,
            Self::Int(i) => i,
            Self::Float(f) => f,
        }
    }
}

/// The parameters of a statement under construction.
#[derive(Debug, Default)]
pub(crate) struct Sql {
    pub params: Vec<Param>,
}

impl Sql {
    /// Adds a parameter and returns its placeholder (`$n`).
    pub(crate) fn bind(&mut self, p: Param) -> String {
        self.params.push(p);
        format!("${}", self.params.len())
    }

    pub(crate) fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params.iter().map(Param::as_sql).collect()
    }
}

/// A compiled filter: a boolean SQL expression and whether it is exact (false: a superset;
/// confirm each row with [`Expr::matches`]).
#[derive(Debug)]
pub(crate) struct Predicate {
    pub text: String,
    pub exact: bool,
}

impl Predicate {
    fn exact(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            exact: true,
        }
    }
}

/// Compiles `expr` into a predicate, binding its values into `sql`. `now` resolves relative
/// times, as [`Expr::matches`] does.
pub(crate) fn compile(expr: &Expr, now: Timestamp, sql: &mut Sql) -> Predicate {
    if holds_nul(expr) {
        // No stored key or string holds U+0000 (ingest refuses it), and PostgreSQL's jsonb
        // and jsonpath cannot even carry one: nothing matches.
        return Predicate::exact("FALSE");
    }
    match expr {
        Expr::All => Predicate::exact("TRUE"),
        Expr::And(parts) | Expr::Or(parts) if parts.is_empty() => {
            // An empty AND holds for everything, an empty OR for nothing.
            Predicate::exact(if matches!(expr, Expr::And(_)) {
                "TRUE"
            } else {
                "FALSE"
            })
        }
        Expr::And(parts) => join(parts, " AND ", now, sql),
        Expr::Or(parts) => join(parts, " OR ", now, sql),
        Expr::Not(inner) => {
            let mark = sql.params.len();
            let p = compile(inner, now, sql);
            if p.exact {
                Predicate::exact(format!("NOT ({})", p.text))
            } else {
                // The complement of a superset is not a superset: keep everything, confirm.
                // The inner predicate's parameters go with its text.
                sql.params.truncate(mark);
                Predicate {
                    text: "TRUE".into(),
                    exact: false,
                }
            }
        }
        Expr::Prefix { path, prefix } => prefix_match(path, prefix, sql),
        Expr::Exists { path } => {
            let p = sql.bind(Param::Text(path.clone()));
            Predicate::exact(format!("fields ? ({p}::text)"))
        }
        Expr::Compare { path, op, value } => compare(path, *op, value, now, sql),
    }
}

/// A leaf comparison whose path or value holds U+0000.
fn holds_nul(expr: &Expr) -> bool {
    match expr {
        Expr::Compare { path, value, .. } => path.contains('\0') || value.raw.contains('\0'),
        Expr::Prefix { path, prefix } => path.contains('\0') || prefix.contains('\0'),
        Expr::Exists { path } => path.contains('\0'),
        Expr::All | Expr::And(_) | Expr::Or(_) | Expr::Not(_) => false,
    }
}

fn join(parts: &[Expr], sep: &str, now: Timestamp, sql: &mut Sql) -> Predicate {
    let mut text = String::from("(");
    let mut exact = true;
    for (i, part) in parts.iter().enumerate() {
        let p = compile(part, now, sql);
        if i > 0 {
            text.push_str(sep);
        }
        text.push_str(&p.text);
        exact &= p.exact;
    }
    text.push(')');
    Predicate { text, exact }
}

/// The column holding an envelope time path, in nanoseconds.
fn time_column(path: &str) -> Option<&'static str> {
    match path {
        "time" => Some("time_ns"),
        "received_at" => Some("received_ns"),
        _ => None,
    }
}

fn op_sql(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Eq => "=",
        CmpOp::Gt => ">",
        CmpOp::Ge => ">=",
        CmpOp::Lt => "<",
        CmpOp::Le => "<=",
    }
}

fn op_jsonpath(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Eq => "==",
        other => op_sql(other),
    }
}

/// `$."<path>"[*]`: every value of a flattened path (the key quoted as a jsonpath string).
fn jsonpath_values(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 8);
    out.push_str("$.\"");
    for c in path.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push_str("\"[*]");
    out
}

/// `jsonb_path_exists(fields, <values of path> ? (@ <cond> $v), {"v": value})`.
fn path_exists(path: &str, condition: &str, value: Value, sql: &mut Sql) -> String {
    let jp = sql.bind(Param::Text(format!(
        "{} ? (@ {condition} $v)",
        jsonpath_values(path)
    )));
    let vars = sql.bind(Param::Text(json!({ "v": value }).to_string()));
    format!("jsonb_path_exists(fields, ({jp}::text)::jsonpath, ({vars}::text)::jsonb)")
}

/// `fields @> {"path": [value]}`, one per candidate, ORed.
fn contains_any(path: &str, candidates: &[Value], sql: &mut Sql) -> String {
    if candidates.is_empty() {
        return "FALSE".into();
    }
    let alternatives: Vec<String> = candidates
        .iter()
        .map(|v| {
            let doc = json!({ path: [v] }).to_string();
            let p = sql.bind(Param::Text(doc));
            format!("fields @> ({p}::text)::jsonb")
        })
        .collect();
    format!("({})", alternatives.join(" OR "))
}

fn prefix_match(path: &str, prefix: &str, sql: &mut Sql) -> Predicate {
    let column = match path {
        "type" => Some("type"),
        "id" => Some("id"),
        _ => None,
    };
    if let Some(col) = column {
        let p = sql.bind(Param::Text(prefix.to_owned()));
        return Predicate::exact(format!("starts_with({col}, {p})"));
    }
    Predicate::exact(path_exists(
        path,
        "starts with",
        Value::String(prefix.to_owned()),
        sql,
    ))
}

fn compare(path: &str, op: CmpOp, lit: &Literal, now: Timestamp, sql: &mut Sql) -> Predicate {
    if let Some(col) = time_column(path) {
        return match parse_time_bound(&lit.raw, now) {
            Some(t) => {
                let p = sql.bind(Param::Int(t.as_nanos()));
                Predicate::exact(format!("{col} {} {p}", op_sql(op)))
            }
            // Envelope times are always valid instants: equal to a non-time only as text,
            // which they never are, and never in range of one.
            None => Predicate::exact("FALSE"),
        };
    }
    if op == CmpOp::Eq {
        return Predicate::exact(exact_match(path, lit, sql));
    }
    if let Some(n) = lit.as_number() {
        return Predicate::exact(match path {
            // Always exactly one number: the column is the field.
            "severity" | "seq" => {
                let p = sql.bind(Param::Float(n));
                format!("{path}::float8 {} {p}", op_sql(op))
            }
            _ => path_exists(
                path,
                op_jsonpath(op),
                serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number),
                sql,
            ),
        });
    }
    if parse_time_bound(&lit.raw, now).is_some() {
        // Strings at `path` that parse as times: confirmed event by event. Only events that
        // have the path at all can match.
        let p = sql.bind(Param::Text(path.to_owned()));
        return Predicate {
            text: format!("fields ? ({p}::text)"),
            exact: false,
        };
    }
    // Neither a number nor a time (the parser refuses these; a hand-built query gets nothing).
    Predicate::exact("FALSE")
}

/// An exact match on a path that is not an envelope time.
fn exact_match(path: &str, lit: &Literal, sql: &mut Sql) -> String {
    let candidates = lit.exact_candidates();
    let string = candidates.iter().find_map(|c| match c {
        vigil_event::Scalar::String(s) => Some(*s),
        _ => None,
    });
    let number = lit.as_number();
    match path {
        // Columns holding the path's only value, always a string.
        "type" | "id" => match string {
            Some(s) => {
                let p = sql.bind(Param::Text(s.to_owned()));
                format!("{path} = {p}")
            }
            None => "FALSE".into(),
        },
        // Always one number.
        "severity" | "seq" => match number {
            Some(n) => {
                let p = sql.bind(Param::Float(n));
                format!("{path}::float8 = {p}")
            }
            None => "FALSE".into(),
        },
        "actor.id" => {
            let values: Vec<Value> = candidates.into_iter().map(scalar_json).collect();
            let column = match string {
                Some(s) => {
                    let p = sql.bind(Param::Text(s.to_owned()));
                    // Never NULL (so `NOT` stays exact for events without an actor id), and
                    // still a btree condition.
                    format!("(actor IS NOT NULL AND actor = {p})")
                }
                None => "FALSE".into(),
            };
            format!(
                "({column} OR (actor_multi AND {}))",
                contains_any(path, &values, sql)
            )
        }
        _ => {
            let values: Vec<Value> = candidates.into_iter().map(scalar_json).collect();
            contains_any(path, &values, sql)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use vigil_query::{QueryLimits, parse_expr};

    use super::*;

    fn now() -> Timestamp {
        Timestamp::parse_rfc3339("2024-05-01T10:00:00Z").unwrap()
    }

    fn compiled(q: &str) -> (Predicate, Vec<Param>) {
        let expr = parse_expr(q, &QueryLimits::default()).unwrap();
        let mut sql = Sql::default();
        let p = compile(&expr, now(), &mut sql);
        (p, sql.params)
    }

    #[test]
    fn values_and_paths_are_parameters_never_sql_text() {
        // URL parameters carry any path and value; build the tree as they would.
        let path = "details.x'); DROP TABLE vigil_events; --".to_owned();
        let value = "'; DELETE FROM vigil_meta; --";
        let expr = Expr::And(vec![
            Expr::Compare {
                path: path.clone(),
                op: CmpOp::Eq,
                value: Literal::bare(value),
            },
            Expr::Prefix {
                path: path.clone(),
                prefix: value.into(),
            },
            Expr::Exists { path: path.clone() },
            Expr::Compare {
                path,
                op: CmpOp::Gt,
                value: Literal::bare("5"),
            },
        ]);
        let mut sql = Sql::default();
        let p = compile(&expr, now(), &mut sql);
        for word in ["DROP", "DELETE", "'", "--"] {
            assert!(!p.text.contains(word), "{word} in {}", p.text);
        }
        assert!(
            sql.params
                .iter()
                .any(|v| matches!(v, Param::Text(t) if t.contains("DELETE FROM vigil_meta")))
        );
    }

    #[test]
    fn comparisons_holding_nul_match_nothing() {
        let expr = Expr::Not(Box::new(Expr::Compare {
            path: "details.a".into(),
            op: CmpOp::Eq,
            value: Literal::bare("x\0y"),
        }));
        let mut sql = Sql::default();
        let p = compile(&expr, now(), &mut sql);
        assert_eq!(p.text, "NOT (FALSE)");
        assert!(sql.params.is_empty());
    }

    #[test]
    fn jsonpath_keys_are_quoted_and_escaped() {
        assert_eq!(jsonpath_values("a.b"), r#"$."a.b"[*]"#);
        assert_eq!(jsonpath_values(r#"a"b\c"#), r#"$."a\"b\\c"[*]"#);
        assert_eq!(jsonpath_values("a\nb"), r#"$."a\u000ab"[*]"#);
    }

    #[test]
    fn envelope_fields_use_their_columns() {
        let (p, params) = compiled("type:login.failed AND severity>=7 AND time>=-1h");
        assert_eq!(
            p.text,
            "(type = $1 AND severity::float8 >= $2 AND time_ns >= $3)"
        );
        assert!(p.exact);
        assert_eq!(params[0], Param::Text("login.failed".into()));
        assert_eq!(params[1], Param::Float(7.0));
        assert_eq!(params[2], Param::Int(now().as_nanos() - 3_600_000_000_000));
    }

    #[test]
    fn bare_numbers_match_strings_and_numbers() {
        let (p, params) = compiled("details.attempt:3");
        assert_eq!(
            p.text,
            "(fields @> ($1::text)::jsonb OR fields @> ($2::text)::jsonb)"
        );
        assert_eq!(
            params[0],
            Param::Text(r#"{"details.attempt":["3"]}"#.into())
        );
        assert_eq!(
            params[1],
            Param::Text(r#"{"details.attempt":[3.0]}"#.into())
        );
    }

    #[test]
    fn time_ranges_on_other_fields_are_confirmed() {
        let (p, _) = compiled("details.when>=2024-01-01");
        assert!(!p.exact);
        let (p, _) = compiled("NOT details.when>=2024-01-01");
        assert_eq!(p.text, "TRUE");
        assert!(!p.exact);
        let (p, _) = compiled("details.amount>100");
        assert!(p.exact);
    }
}
