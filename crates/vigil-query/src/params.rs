//! URL parameters → [`Query`].

use vigil_event::{Timestamp, resolve_path_alias};

use crate::cursor::TimeRange;
use crate::parse::is_path;
use crate::time::TimeLiteral;
use crate::{Cursor, Expr, Literal, Order, QueryError, parse_expr};

/// Named, configurable bounds on one query.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryLimits {
    /// `limit` when the client gives none (100).
    pub default_limit: usize,
    /// Largest `limit` accepted (10 000).
    pub max_limit: usize,
    /// Longest `q` expression, in bytes (4 096).
    pub max_expr_bytes: usize,
    /// Most comparisons in one query, `q` and parameters together (64).
    pub max_terms: usize,
    /// Deepest nesting of parentheses / NOT (32). Values above 256 act as 256: parsing,
    /// evaluating and dropping an expression recurse once per level.
    pub max_depth: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            default_limit: 100,
            max_limit: 10_000,
            max_expr_bytes: 4096,
            max_terms: 64,
            max_depth: 32,
        }
    }
}

/// One query over one tenant's events.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub filter: Expr,
    /// Inclusive lower bound on event `time`. With a cursor, the bound of the first page.
    pub from: Option<Timestamp>,
    /// Exclusive upper bound on event `time`. With a cursor, the bound of the first page.
    pub to: Option<Timestamp>,
    pub limit: usize,
    pub order: Order,
    pub cursor: Option<Cursor>,
}

/// A `from`/`to` parameter as given: its name, its literal and the instant it resolves to now.
type Bound<'p> = (&'p str, TimeLiteral, Timestamp);

impl Query {
    /// Builds a query from URL parameters (see `docs/query.md`): `q`, `from`/`timeStart`,
    /// `to`/`timeEnd`, `limit`, `order`, `cursor`; every other parameter is an exact-match
    /// filter `path=value`, aliases resolved, all ANDed with `q`. `now` resolves relative times.
    ///
    /// A cursor made by [`Query::encode_cursor`] carries the time range of the first page, and
    /// `from`/`to` are that range: a relative bound (`-1h`, `now`) is not resolved again (it
    /// would have moved, and the events it moved past would be skipped); an absolute one must
    /// equal the cursor's, or the parameter is invalid; a missing one keeps the cursor's.
    pub fn from_params(
        params: &[(String, String)],
        now: Timestamp,
        limits: &QueryLimits,
    ) -> Result<Self, QueryError> {
        let mut filters = Vec::new();
        let mut q_seen = false;
        let mut from: Option<Bound<'_>> = None;
        let mut to: Option<Bound<'_>> = None;
        let mut limit: Option<usize> = None;
        let mut order: Option<Order> = None;
        let mut cursor: Option<Option<(Cursor, Option<TimeRange>)>> = None;

        for (name, value) in params {
            let name = name.as_str();
            match name {
                "q" => {
                    once(name, q_seen)?;
                    q_seen = true;
                    match parse_expr(value, limits)? {
                        Expr::All => {}
                        Expr::And(items) => filters.extend(items),
                        expr => filters.push(expr),
                    }
                }
                "from" | "timeStart" | "to" | "timeEnd" => {
                    let slot = if matches!(name, "from" | "timeStart") {
                        &mut from
                    } else {
                        &mut to
                    };
                    if let Some((earlier, _, _)) = slot {
                        return Err(invalid(name, duplicate_message(earlier, name)));
                    }
                    let literal = TimeLiteral::parse(value);
                    let at = literal.and_then(|l| l.resolve(now).map(|at| (l, at)));
                    let (literal, at) = at.ok_or_else(|| {
                        invalid(
                            name,
                            format!(
                                "expected an RFC 3339 time (2024-05-01T10:00:00Z), a date (2024-05-01), a relative \
                                 time (-15m, -24h, -7d), `now` or epoch seconds, got {}",
                                shown(value)
                            ),
                        )
                    })?;
                    *slot = Some((name, literal, at));
                }
                "limit" => {
                    once(name, limit.is_some())?;
                    let n = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=limits.max_limit).contains(n));
                    limit = Some(n.ok_or_else(|| {
                        invalid(
                            name,
                            format!(
                                "expected a whole number from 1 to {}, got {}",
                                limits.max_limit,
                                shown(value)
                            ),
                        )
                    })?);
                }
                "order" => {
                    once(name, order.is_some())?;
                    order = Some(match value.as_str() {
                        "desc" => Order::Desc,
                        "asc" => Order::Asc,
                        _ => {
                            return Err(invalid(
                                name,
                                format!("expected `desc` or `asc`, got {}", shown(value)),
                            ));
                        }
                    });
                }
                "cursor" => {
                    once(name, cursor.is_some())?;
                    // An empty cursor is the first page: clients can always send `cursor=<last next_cursor>`.
                    cursor = Some(if value.is_empty() {
                        None
                    } else {
                        Some(Cursor::decode_with_range(value)?)
                    });
                }
                _ => filters.push(param_filter(name, value)?),
            }
        }

        let order = order.unwrap_or_default();
        let (cursor, pinned) = cursor.flatten().unzip();
        if cursor.is_some_and(|c| c.order != order) {
            return Err(QueryError::InvalidCursor);
        }
        let (from, to) = match pinned.flatten() {
            None => (from.map(|(_, _, at)| at), to.map(|(_, _, at)| at)),
            Some(range) => (pinned_bound(from, range.from)?, pinned_bound(to, range.to)?),
        };
        let filter = match filters.len() {
            0 => Expr::All,
            1 => filters.pop().unwrap_or(Expr::All),
            _ => Expr::And(filters),
        };
        let terms = filter.term_count();
        if terms > limits.max_terms {
            return Err(QueryError::TooComplex(format!(
                "the query has {terms} comparisons; the limit is {}",
                limits.max_terms
            )));
        }
        Ok(Self {
            filter,
            from,
            to,
            limit: limit.unwrap_or(limits.default_limit),
            order,
            cursor,
        })
    }

    /// This query's time bounds, as a cursor pins them.
    pub fn time_range(&self) -> TimeRange {
        TimeRange {
            from: self.from,
            to: self.to,
        }
    }

    /// The `next_cursor` text for a page of this query that ended at `next`: the position and
    /// this query's time range, so the next page covers the same range however much later it
    /// is asked for.
    pub fn encode_cursor(&self, next: &Cursor) -> String {
        next.encode_with_range(self.time_range())
    }
}

/// A bound of a page after the first: the cursor's `pinned` one. A relative parameter was
/// resolved on the first page and is not resolved again; an absolute one must agree.
fn pinned_bound(
    given: Option<Bound<'_>>,
    pinned: Option<Timestamp>,
) -> Result<Option<Timestamp>, QueryError> {
    match given {
        Some((name, TimeLiteral::Absolute(at), _)) if Some(at) != pinned => Err(invalid(
            name,
            format!(
                "differs from the time range the cursor continues ({}); keep the first page's \
                 bounds while paging, or start without a cursor",
                match pinned {
                    Some(t) => format!("{name} {}", t.to_rfc3339()),
                    None => format!("no {name}"),
                }
            ),
        )),
        _ => Ok(pinned),
    }
}

/// `path=value`: exact match, `value*` a prefix match, `*` alone "the field exists".
fn param_filter(name: &str, value: &str) -> Result<Expr, QueryError> {
    if !is_path(name) {
        return Err(invalid(
            name,
            "not a query parameter, and not a field path (letters, digits, `_`, `.` and `-`) to filter on",
        ));
    }
    let path = resolve_path_alias(name).into_owned();
    Ok(match value.strip_suffix('*') {
        Some("") => Expr::Exists { path },
        Some(prefix) => Expr::Prefix {
            path,
            prefix: prefix.to_string(),
        },
        None => Expr::Compare {
            path,
            op: crate::CmpOp::Eq,
            value: Literal::bare(value),
        },
    })
}

fn invalid(name: &str, message: impl Into<String>) -> QueryError {
    QueryError::InvalidParameter {
        name: name.to_string(),
        message: message.into(),
    }
}

fn once(name: &str, seen: bool) -> Result<(), QueryError> {
    if seen {
        Err(invalid(name, "given more than once"))
    } else {
        Ok(())
    }
}

fn duplicate_message(earlier: &str, name: &str) -> String {
    if earlier == name {
        "given more than once".to_string()
    } else {
        format!("`{earlier}` and `{name}` are the same bound: give only one")
    }
}

fn shown(value: &str) -> String {
    if value.is_empty() {
        "an empty value".to_string()
    } else {
        format!("`{value}`")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CmpOp;

    fn now() -> Timestamp {
        Timestamp::parse_rfc3339("2024-05-02T00:00:00Z").expect("test time")
    }

    fn query(params: &[(&str, &str)]) -> Result<Query, QueryError> {
        let params: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Query::from_params(&params, now(), &QueryLimits::default())
    }

    fn ok(params: &[(&str, &str)]) -> Query {
        match query(params) {
            Ok(q) => q,
            Err(e) => panic!("{params:?} should be accepted: {e}"),
        }
    }

    fn invalid_param(params: &[(&str, &str)]) -> (String, String) {
        match query(params) {
            Err(QueryError::InvalidParameter { name, message }) => (name, message),
            other => panic!("{params:?} should be an invalid parameter, got {other:?}"),
        }
    }

    fn eq(path: &str, raw: &str) -> Expr {
        Expr::Compare {
            path: path.into(),
            op: CmpOp::Eq,
            value: Literal::bare(raw),
        }
    }

    #[test]
    fn defaults() {
        let q = ok(&[]);
        assert_eq!(
            q,
            Query {
                filter: Expr::All,
                from: None,
                to: None,
                limit: 100,
                order: Order::Desc,
                cursor: None
            }
        );
    }

    #[test]
    fn field_parameters_are_exact_filters_anded_with_q() {
        let q = ok(&[
            ("type", "login.failed"),
            ("q", "severity>=7 AND details.amount>100"),
            ("details.attempt", "3"),
        ]);
        assert_eq!(
            q.filter,
            Expr::And(vec![
                eq("type", "login.failed"),
                Expr::Compare {
                    path: "severity".into(),
                    op: CmpOp::Ge,
                    value: Literal::bare("7")
                },
                Expr::Compare {
                    path: "details.amount".into(),
                    op: CmpOp::Gt,
                    value: Literal::bare("100")
                },
                eq("details.attempt", "3"),
            ])
        );
        assert_eq!(
            ok(&[("q", "a:1 OR b:2"), ("c", "3")]).filter,
            Expr::And(vec![
                Expr::Or(vec![eq("a", "1"), eq("b", "2")]),
                eq("c", "3"),
            ])
        );
        assert_eq!(
            ok(&[("actor.id", "John Doe")]).filter,
            eq("actor.id", "John Doe")
        );
        assert_eq!(ok(&[("q", "")]).filter, Expr::All);
        assert_eq!(ok(&[("q", "*"), ("a", "1")]).filter, eq("a", "1"));
    }

    #[test]
    fn field_parameters_resolve_aliases() {
        assert_eq!(ok(&[("event_type", "x")]).filter, eq("type", "x"));
        assert_eq!(ok(&[("username", "u")]).filter, eq("actor.id", "u"));
        assert_eq!(
            ok(&[("app_data.plan", "pro")]).filter,
            eq("details.plan", "pro")
        );
    }

    #[test]
    fn trailing_star_is_a_prefix_and_a_lone_star_exists() {
        assert_eq!(
            ok(&[("actor.ip", "10.*")]).filter,
            Expr::Prefix {
                path: "actor.ip".into(),
                prefix: "10.".into()
            }
        );
        assert_eq!(
            ok(&[("details.plan", "*")]).filter,
            Expr::Exists {
                path: "details.plan".into()
            }
        );
        assert_eq!(ok(&[("a", "x*y")]).filter, eq("a", "x*y"));
    }

    #[test]
    fn names_that_are_not_paths_are_refused() {
        let (name, message) = invalid_param(&[("actor id", "x")]);
        assert_eq!(name, "actor id");
        assert!(message.contains("not a query parameter"), "{message}");
        assert_eq!(invalid_param(&[("", "x")]).0, "");
    }

    #[test]
    fn time_bounds_and_their_aliases() {
        let q = ok(&[("from", "-24h"), ("to", "2024-05-01T12:00:00Z")]);
        assert_eq!(q.from, Timestamp::parse_rfc3339("2024-05-01T00:00:00Z"));
        assert_eq!(q.to, Timestamp::parse_rfc3339("2024-05-01T12:00:00Z"));
        let q = ok(&[("timeStart", "2024-04-01"), ("timeEnd", "now")]);
        assert_eq!(q.from, Timestamp::parse_rfc3339("2024-04-01T00:00:00Z"));
        assert_eq!(q.to, Some(now()));
        // An empty range is allowed: it returns nothing.
        let q = ok(&[("from", "now"), ("to", "-1h")]);
        assert!(q.from > q.to);
    }

    #[test]
    fn time_bound_errors() {
        assert_eq!(
            invalid_param(&[("from", "-1h"), ("timeStart", "-2h")]),
            (
                "timeStart".into(),
                "`from` and `timeStart` are the same bound: give only one".into()
            )
        );
        assert_eq!(invalid_param(&[("timeEnd", "now"), ("to", "now")]).0, "to");
        assert_eq!(
            invalid_param(&[("to", "now"), ("to", "now")]).1,
            "given more than once"
        );
        let (name, message) = invalid_param(&[("from", "yesterday")]);
        assert_eq!(name, "from");
        assert!(message.ends_with("got `yesterday`"), "{message}");
        assert!(
            invalid_param(&[("to", "")])
                .1
                .ends_with("got an empty value")
        );
    }

    #[test]
    fn limit() {
        assert_eq!(ok(&[("limit", "1")]).limit, 1);
        assert_eq!(ok(&[("limit", "10000")]).limit, 10_000);
        for bad in ["0", "10001", "-1", "ten", "", "1.5"] {
            let (name, message) = invalid_param(&[("limit", bad)]);
            assert_eq!(name, "limit");
            assert!(
                message.starts_with("expected a whole number from 1 to 10000"),
                "{message}"
            );
        }
        let limits = QueryLimits {
            default_limit: 5,
            max_limit: 50,
            ..QueryLimits::default()
        };
        assert_eq!(
            Query::from_params(&[], now(), &limits).map(|q| q.limit),
            Ok(5)
        );
        let over = [("limit".to_string(), "51".to_string())];
        assert!(matches!(Query::from_params(&over, now(), &limits),
            Err(QueryError::InvalidParameter { message, .. }) if message.contains("1 to 50")));
    }

    #[test]
    fn order() {
        assert_eq!(ok(&[("order", "asc")]).order, Order::Asc);
        assert_eq!(ok(&[("order", "desc")]).order, Order::Desc);
        assert_eq!(
            invalid_param(&[("order", "newest")]).1,
            "expected `desc` or `asc`, got `newest`"
        );
    }

    #[test]
    fn cursors() {
        let c = Cursor {
            order: Order::Asc,
            time: now(),
            seq: 9,
        };
        let text = c.encode();
        assert_eq!(ok(&[("order", "asc"), ("cursor", &text)]).cursor, Some(c));
        assert_eq!(query(&[("cursor", &text)]), Err(QueryError::InvalidCursor));
        assert_eq!(
            query(&[("cursor", "garbage")]),
            Err(QueryError::InvalidCursor)
        );
        assert_eq!(ok(&[("cursor", "")]).cursor, None);
    }

    fn at(params: &[(&str, &str)], now: Timestamp) -> Result<Query, QueryError> {
        let params: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Query::from_params(&params, now, &QueryLimits::default())
    }

    /// Regression: `from=-1h` was resolved again on every page, against that request's `now`.
    /// Paging newest-first, the second page's range started later than the first page's, so the
    /// oldest events of the hour (the ones the last pages were about to return) were silently
    /// skipped. The cursor now carries the first page's resolved range and later pages use it.
    #[test]
    fn relative_bounds_are_pinned_by_the_cursor() {
        let first_now = now();
        let later = Timestamp::from_nanos(first_now.as_nanos() + 600 * 1_000_000_000);
        let params = [("from", "-1h"), ("to", "now"), ("type", "login.failed")];
        let first = at(&params, first_now).unwrap();
        assert_eq!(first.from, Timestamp::parse_rfc3339("2024-05-01T23:00:00Z"));
        assert_eq!(first.to, Some(first_now));

        let position = Cursor {
            order: Order::Desc,
            time: Timestamp::parse_rfc3339("2024-05-01T23:40:00Z").unwrap(),
            seq: 7,
        };
        let text = first.encode_cursor(&position);
        let mut next = params.to_vec();
        next.push(("cursor", &text));
        // Ten minutes later, the second page covers the same range as the first.
        let second = at(&next, later).unwrap();
        assert_eq!((second.from, second.to), (first.from, first.to));
        assert_eq!(second.cursor, Some(position));
        assert_eq!(second.filter, first.filter);
        // ...and so does every page after it.
        let third = at(
            &[
                ("from", "-1h"),
                ("cursor", &second.encode_cursor(&position)),
            ],
            later,
        )
        .unwrap();
        assert_eq!((third.from, third.to), (first.from, first.to));

        // A position-only cursor leaves the bounds to the parameters, resolved again.
        let unpinned = at(&[("from", "-1h"), ("cursor", &position.encode())], later).unwrap();
        assert_eq!(
            unpinned.from,
            Timestamp::parse_rfc3339("2024-05-01T23:10:00Z")
        );
    }

    #[test]
    fn a_pinned_range_wins_over_relative_bounds_and_must_match_absolute_ones() {
        let position = Cursor {
            order: Order::Asc,
            time: now(),
            seq: 1,
        };
        let range = TimeRange {
            from: Timestamp::parse_rfc3339("2024-05-01T00:00:00Z"),
            to: None,
        };
        let text = position.encode_with_range(range);
        let page = |params: &[(&str, &str)]| {
            let mut params = params.to_vec();
            params.extend([("order", "asc"), ("cursor", text.as_str())]);
            query(&params)
        };
        for same in [
            &[][..],
            &[("from", "-3h")],
            &[("timeStart", "2024-05-01")],
            &[("from", "2024-05-01T02:00:00+02:00")],
            &[("from", "1714521600")],
            &[("to", "now")],
            &[("timeEnd", "-5m")],
        ] {
            let q = page(same).unwrap_or_else(|e| panic!("{same:?}: {e}"));
            assert_eq!(q.time_range(), range, "{same:?}");
        }
        match page(&[("from", "2024-04-30")]) {
            Err(QueryError::InvalidParameter { name, message }) => {
                assert_eq!(name, "from");
                assert!(
                    message.starts_with(
                        "differs from the time range the cursor continues (from 2024-05-01T00:00:00Z)"
                    ),
                    "{message}"
                );
            }
            other => panic!("expected an invalid `from`, got {other:?}"),
        }
        match page(&[("timeEnd", "2024-05-02")]) {
            Err(QueryError::InvalidParameter { name, message }) => {
                assert_eq!(name, "timeEnd");
                assert!(message.contains("(no timeEnd)"), "{message}");
            }
            other => panic!("expected an invalid `timeEnd`, got {other:?}"),
        }
        // Bad values are still bad, pinned range or not.
        assert_eq!(
            page(&[("from", "yesterday")]).unwrap_err().code(),
            "invalid_parameter"
        );
    }

    #[test]
    fn q_errors_pass_through() {
        assert!(matches!(
            query(&[("q", "severity>=")]),
            Err(QueryError::Syntax { offset: 10, .. })
        ));
    }

    #[test]
    fn term_limit_counts_q_and_parameters_together() {
        let limits = QueryLimits {
            max_terms: 3,
            ..QueryLimits::default()
        };
        let params = |n: usize| -> Vec<(String, String)> {
            let mut p = vec![("q".to_string(), "a:1 OR b:2".to_string())];
            p.extend((0..n).map(|i| (format!("f{i}"), "x".to_string())));
            p
        };
        assert!(Query::from_params(&params(1), now(), &limits).is_ok());
        assert_eq!(
            Query::from_params(&params(2), now(), &limits),
            Err(QueryError::TooComplex(
                "the query has 4 comparisons; the limit is 3".into()
            ))
        );
    }
}
