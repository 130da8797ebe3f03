//! URL parameters → [`Query`].

use vigil_event::Timestamp;

use crate::{Cursor, Expr, Order, QueryError};

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
    /// Deepest nesting of parentheses / NOT (32).
    pub max_depth: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self { default_limit: 100, max_limit: 10_000, max_expr_bytes: 4096, max_terms: 64, max_depth: 32 }
    }
}

/// One query over one tenant's events.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub filter: Expr,
    /// Inclusive lower bound on event `time`.
    pub from: Option<Timestamp>,
    /// Exclusive upper bound on event `time`.
    pub to: Option<Timestamp>,
    pub limit: usize,
    pub order: Order,
    pub cursor: Option<Cursor>,
}

impl Query {
    /// Builds a query from URL parameters (see `docs/query.md`): `q`, `from`/`timeStart`,
    /// `to`/`timeEnd`, `limit`, `order`, `cursor`; every other parameter is an exact-match
    /// filter `path=value`, aliases resolved, all ANDed with `q`. `now` resolves relative times.
    pub fn from_params(params: &[(String, String)], now: Timestamp, limits: &QueryLimits) -> Result<Self, QueryError> {
        todo!()
    }
}
