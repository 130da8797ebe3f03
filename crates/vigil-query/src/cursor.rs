//! Opaque pagination cursors: a position `(time, seq)` in the result order.

use vigil_event::Timestamp;

/// Result order by event time, ties broken by `seq`. Newest first by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    #[default]
    Desc,
    Asc,
}

/// The last event a page returned; the next page starts strictly after it in the query's
/// order, so events arriving meanwhile never cause a skip or a repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub order: Order,
    pub time: Timestamp,
    pub seq: u64,
}

impl Cursor {
    /// URL-safe opaque text.
    pub fn encode(&self) -> String {
        todo!()
    }

    pub fn decode(s: &str) -> Result<Self, crate::QueryError> {
        todo!()
    }

    /// True when an event at `(time, seq)` comes after this cursor in its order.
    pub fn admits(&self, time: Timestamp, seq: u64) -> bool {
        match self.order {
            Order::Desc => (time, seq) < (self.time, self.seq),
            Order::Asc => (time, seq) > (self.time, self.seq),
        }
    }
}
