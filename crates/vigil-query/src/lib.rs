//! The vigil query language: what `GET /v1/events` and `query.event.<tenant>` accept.
//!
//! Pure and synchronous. The HTTP layer hands [`Query::from_params`] the URL parameters; the
//! store plans the resulting [`Expr`] against its indexes and confirms candidates with
//! [`Expr::matches`]. The grammar is documented in `docs/query.md`.
//!
//! # Flow
//! 1. [`Query::from_params`] reads `q`, `from`/`to`, `limit`, `order`, `cursor` and turns every
//!    other `path=value` parameter into an exact-match filter, all ANDed into one [`Expr`].
//! 2. [`parse_expr`] parses `q` (precedence `NOT` > `AND` > `OR`, aliases resolved, bounded by
//!    [`QueryLimits`]); `Display` on [`Expr`] prints it back as query text.
//! 3. The store narrows candidates with its indexes and confirms each with [`Expr::matches`],
//!    ordering by `(time, seq)` and resuming after a [`Cursor`].
//! 4. The page's `next_cursor` is [`Query::encode_cursor`]: the last position plus the query's
//!    resolved [`TimeRange`], so a relative `from=-1h` means the same hour on every page.
//!
//! # Example
//! ```
//! use serde_json::json;
//! use vigil_event::Timestamp;
//! use vigil_query::{Query, QueryLimits};
//!
//! let now = Timestamp::parse_rfc3339("2024-05-01T10:15:00Z").unwrap();
//! let params = [
//!     ("q", "severity>=7 AND (type:login.failed OR type:\"account.deactivated\") AND NOT actor.ip:10.*"),
//!     ("username", "u-7"),
//!     ("from", "-1h"),
//! ]
//! .map(|(k, v)| (k.to_string(), v.to_string()));
//! let query = Query::from_params(&params, now, &QueryLimits::default()).unwrap();
//! assert_eq!(query.limit, 100);
//! assert_eq!(query.from, Timestamp::parse_rfc3339("2024-05-01T09:15:00Z"));
//! assert_eq!(
//!     query.filter.to_string(),
//!     r#"severity>=7 AND (type:login.failed OR type:"account.deactivated") AND NOT actor.ip:10.* AND actor.id:u-7"#
//! );
//!
//! let event = json!({"type": "login.failed", "severity": 8, "actor": {"id": "u-7", "ip": "192.0.2.1"}});
//! assert!(query.filter.matches(event.as_object().unwrap(), now));
//! ```

mod ast;
mod cursor;
mod error;
mod eval;
mod params;
mod parse;
mod time;

pub use ast::{CmpOp, Expr, Literal};
pub use cursor::{Cursor, Order, TimeRange};
pub use error::QueryError;
pub use eval::is_time_path;
pub use params::{Query, QueryLimits};
pub use parse::parse_expr;
pub use time::parse_time_bound;
