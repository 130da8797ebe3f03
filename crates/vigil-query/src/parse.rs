//! The `q=` expression parser and printer.

use crate::{Expr, QueryError};

/// Parses a `q=` expression (grammar in `docs/query.md`). Field paths are alias-resolved.
pub fn parse_expr(input: &str, limits: &crate::QueryLimits) -> Result<Expr, QueryError> {
    todo!()
}
