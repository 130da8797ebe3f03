//! Pages of query results: how a backend ends one, and their JSON form.
//!
//! A page is bounded in bytes twice. A backend stops reading once a page holds
//! [`MAX_PAGE_READ_BYTES`] of events (bounding its memory whatever the `limit`) and builds the
//! page with [`Page::new`], whose `next_cursor` continues after the last event read. The JSON
//! form ([`Page::to_json`]) then stops before the event that would take it past the caller's
//! `max_bytes` (the first event always goes in), and its `next_cursor` continues after the last
//! event written.

use serde_json::Value;
use vigil_query::{Cursor, Order, Query};

use crate::{Page, StoredEvent};

/// Most event bytes a backend reads for one query page, whatever its `limit`: bounds the memory
/// of a page of large events (the HTTP layer cuts its responses smaller still).
pub const MAX_PAGE_READ_BYTES: usize = 32 * 1024 * 1024;

/// Room kept at the end of a page for `],"next_cursor":"…"}`.
const PAGE_TAIL_BYTES: usize = 128;

impl StoredEvent {
    /// The position just after this event, for a query in `order`: where the next page starts.
    pub fn cursor(&self, order: Order) -> Cursor {
        Cursor {
            order,
            time: self.time,
            seq: self.seq,
        }
    }
}

impl Page {
    /// A page of `events`, read in `order`. When `more` may follow (the query matched more than
    /// its `limit`, or reading stopped at [`MAX_PAGE_READ_BYTES`]), `next_cursor` continues
    /// after the last event; otherwise the page is the last.
    pub fn new(events: Vec<StoredEvent>, order: Order, more: bool) -> Self {
        let next_cursor = if more {
            events.last().map(|e| e.cursor(order))
        } else {
            None
        };
        Self {
            events,
            next_cursor,
        }
    }

    /// `{"events": [...], "next_cursor": ...}`: the body of `GET /v1/events` and of a NATS query
    /// reply. See the module doc for the byte bound.
    pub fn to_json(self, query: &Query, max_bytes: usize) -> Vec<u8> {
        let page = self;
        let budget = max_bytes.saturating_sub(PAGE_TAIL_BYTES);
        let estimate = page
            .events
            .iter()
            .map(|e| e.canonical.len() + 90)
            .sum::<usize>();
        let mut out = Vec::with_capacity(estimate.min(budget) + PAGE_TAIL_BYTES);
        out.extend_from_slice(b"{\"events\":[");
        let mut next = page.next_cursor;
        for (i, event) in page.events.iter().enumerate() {
            let start = out.len();
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&event.to_json());
            if i > 0 && out.len() > budget {
                out.truncate(start);
                next = Some(page.events[i - 1].cursor(query.order));
                break;
            }
        }
        out.extend_from_slice(b"],\"next_cursor\":");
        match next {
            Some(c) => out.extend_from_slice(
                Value::String(query.encode_cursor(&c))
                    .to_string()
                    .as_bytes(),
            ),
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
        out
    }
}

#[cfg(test)]
mod tests {
    use vigil_event::Timestamp;
    use vigil_query::Cursor;

    use super::*;
    use crate::StoredEvent;

    fn stored(seq: u64, pad: usize) -> StoredEvent {
        StoredEvent {
            seq,
            time: Timestamp::from_nanos(seq as i64),
            canonical: format!(
                r#"{{"id":"e-{seq}","pad":"{}","seq":{seq}}}"#,
                "x".repeat(pad)
            )
            .into_bytes(),
            hash: [0; 32],
        }
    }

    fn query() -> Query {
        Query::from_params(
            &[],
            Timestamp::from_nanos(0),
            &vigil_query::QueryLimits::default(),
        )
        .unwrap()
    }

    #[test]
    fn pages_are_written_from_stored_bytes() {
        let empty_page = Page {
            events: vec![],
            next_cursor: None,
        };
        let empty: Value = serde_json::from_slice(&empty_page.to_json(&query(), 1 << 20)).unwrap();
        assert_eq!(
            empty,
            serde_json::json!({"events": [], "next_cursor": null})
        );
        let cursor = Cursor {
            order: vigil_query::Order::Desc,
            time: Timestamp::from_nanos(7),
            seq: 7,
        };
        let page = Page {
            events: vec![stored(1, 0), stored(2, 0)],
            next_cursor: Some(cursor),
        };
        let bytes = page.to_json(&query(), 1 << 20);
        let page: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(page["events"].as_array().unwrap().len(), 2);
        assert_eq!(page["events"][0]["id"], "e-1");
        assert_eq!(page["events"][1]["hash"], "0".repeat(64));
        let next = Cursor::decode(page["next_cursor"].as_str().unwrap()).unwrap();
        assert_eq!(next, cursor);
    }

    /// Regression: a page was as large as `limit` events made it (10 000 events of up to
    /// 256 KiB: gigabytes in one response buffer). A page now stops before the event that
    /// would take it past the byte bound, and `next_cursor` continues after the last event
    /// written, even when the store had more on this page.
    #[test]
    fn pages_are_bounded_in_bytes() {
        let events: Vec<StoredEvent> = (1..=10).map(|i| stored(i, 1_000)).collect();
        let page = Page {
            events,
            next_cursor: None,
        };
        let max = 4 * 1024;
        let bytes = page.to_json(&query(), max);
        assert!(bytes.len() <= max, "{} bytes", bytes.len());
        let page: Value = serde_json::from_slice(&bytes).unwrap();
        let written = page["events"].as_array().unwrap();
        assert_eq!(written.len(), 3);
        let next = Cursor::decode(page["next_cursor"].as_str().unwrap()).unwrap();
        assert_eq!((next.seq, next.time), (3, Timestamp::from_nanos(3)));

        // One event larger than the bound still makes a page of one.
        let page = Page {
            events: vec![stored(1, 10_000), stored(2, 10)],
            next_cursor: None,
        };
        let page: Value = serde_json::from_slice(&page.to_json(&query(), max)).unwrap();
        assert_eq!(page["events"].as_array().unwrap().len(), 1);
        assert!(page["next_cursor"].is_string());
    }
}
