//! Evaluating an [`Expr`] against one event.

use serde_json::{Map, Value};
use vigil_event::Timestamp;

use crate::Expr;

impl Expr {
    /// True when `event` (a stored event object) satisfies this filter. `now` resolves
    /// relative times in literals.
    pub fn matches(&self, event: &Map<String, Value>, now: Timestamp) -> bool {
        todo!()
    }
}
