//! Streaming export of query results as NDJSON or CSV (`GET /v1/events` with `Accept`).
//!
//! The result is paged through the store with cursors, one page at a time, so an export of
//! any size holds one page in memory. The first page is read before the response starts, so
//! a failing store still gets a proper error status; a failure later ends the stream early
//! (logged), which the client sees as a truncated body.

use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use serde_json::{Map, Value};
use vigil_event::TenantId;
use vigil_query::Query;
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

    fn encode_page(self, events: &[StoredEvent], out: &mut Vec<u8>) {
        for event in events {
            match self {
                Self::Ndjson => {
                    out.extend_from_slice(&event.to_json());
                    out.push(b'\n');
                }
                Self::Csv => csv_row(event, out),
            }
        }
    }
}

/// Where the export is: the query for the next page, how many events may still be sent.
struct ExportState {
    store: Arc<dyn Store>,
    tenant: TenantId,
    query: Query,
    remaining: Option<u64>,
    format: ExportFormat,
    /// The page read before the response started.
    first: Option<Page>,
    header_sent: bool,
    done: bool,
}

/// The export body, starting with `first` (already read with `query`). `cap` limits the total
/// number of events; `None` exports every match.
pub(crate) fn export_stream(
    store: Arc<dyn Store>,
    tenant: TenantId,
    query: Query,
    first: Page,
    cap: Option<u64>,
    format: ExportFormat,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let state = ExportState {
        store,
        tenant,
        query,
        remaining: cap,
        format,
        first: Some(first),
        header_sent: false,
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        let mut out = Vec::new();
        if !st.header_sent {
            st.header_sent = true;
            if st.format == ExportFormat::Csv {
                csv_header(&mut out);
            }
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
        let take = st
            .remaining
            .map_or(page.events.len(), |r| page.events.len().min(r as usize));
        st.format.encode_page(&page.events[..take], &mut out);
        if let Some(r) = st.remaining.as_mut() {
            *r -= take as u64;
        }
        match page.next_cursor {
            Some(cursor) if st.remaining != Some(0) && take == page.events.len() => {
                st.query.cursor = Some(cursor);
                st.query.limit = page_limit(st.remaining);
            }
            _ => st.done = true,
        }
        Some((Ok(Bytes::from(out)), st))
    })
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

pub(crate) fn csv_field(text: &str, out: &mut Vec<u8>) {
    if text.contains([',', '"', '\r', '\n']) {
        out.push(b'"');
        out.extend_from_slice(text.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(text.as_bytes());
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
