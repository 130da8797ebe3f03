//! The vigil query language: what `GET /v1/events` and `query.event.<tenant>` accept.
//!
//! Pure and synchronous. The HTTP layer hands [`Query::from_params`] the URL parameters; the
//! store plans the resulting [`Expr`] against its indexes and confirms candidates with
//! [`Expr::matches`]. The grammar is documented in `docs/query.md`.
//!
//! TODO(helper): module docs + example.

mod ast;
mod cursor;
mod error;
mod eval;
mod params;
mod parse;
mod time;

pub use ast::{CmpOp, Expr, Literal};
pub use cursor::{Cursor, Order};
pub use error::QueryError;
pub use params::{Query, QueryLimits};
pub use parse::parse_expr;
pub use time::parse_time_bound;
