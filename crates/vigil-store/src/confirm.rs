//! Confirming candidates with the query evaluator: what a backend does with events its indexes
//! cannot decide exactly (long strings cut in the index, filters its SQL cannot express).
//!
//! [`Expr::matches`] defines the query language; an index answers for it only where it agrees.
//! [`is_time_path`] names the paths whose values the evaluator compares as instants, so an
//! index encodes and plans them the same way.

use serde_json::{Map, Value};
use vigil_event::Timestamp;
use vigil_query::Expr;

pub use vigil_query::is_time_path;

/// Whether the stored event with these canonical bytes matches `filter` (`now` resolves
/// relative times). An error when the bytes are not a JSON object: the backend decides whether
/// that is corruption or simply no match.
pub fn confirm(filter: &Expr, canonical: &[u8], now: Timestamp) -> Result<bool, serde_json::Error> {
    let event: Map<String, Value> = serde_json::from_slice(canonical)?;
    Ok(filter.matches(&event, now))
}

#[cfg(test)]
mod tests {
    use vigil_query::{QueryLimits, parse_expr};

    use super::*;

    #[test]
    fn confirms_with_the_evaluator() {
        let now = Timestamp::from_nanos(0);
        let filter =
            parse_expr("actor.id:u-1* AND severity>=5", &QueryLimits::default()).expect("filter");
        let yes = br#"{"actor":{"id":"u-17"},"severity":7}"#;
        let no = br#"{"actor":{"id":"u-17"},"severity":2}"#;
        assert!(confirm(&filter, yes, now).expect("object"));
        assert!(!confirm(&filter, no, now).expect("object"));
        assert!(confirm(&filter, b"[1]", now).is_err());
        assert!(confirm(&filter, b"{", now).is_err());
        assert!(is_time_path("time") && is_time_path("received_at"));
        assert!(!is_time_path("details.time"));
    }
}
