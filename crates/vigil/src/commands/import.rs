//! `vigil import FILE`: an NDJSON file (or stdin) to the server, in batches.
//!
//! A batch is all-or-nothing on the server, so one bad line must not sink 999 good ones: when
//! the server names the failing items of a batch, those lines are reported and the rest of the
//! batch is sent again. A batch too large for the server's limits is split in halves. Rate
//! limiting and store unavailability are waited out (the server guarantees nothing was
//! half-written).
//!
//! Every event that carries neither `id` nor `event_id` is given a fresh UUIDv7 `id` when its
//! line is read, before the first attempt: a batch sent again after a lost answer (timeout,
//! connection reset, 503) then comes back as duplicates instead of being stored twice.
//! Re-running a whole import is safe only for events that carry their own `id` in the file.

use std::collections::{BTreeSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use vigil_client::{Client, ClientError};

use crate::args::{ClientArgs, OutputArgs, connect};
use crate::error::CliError;
use crate::output::{OutputFormat, simple_table, write_json};

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// NDJSON file, one event per line; `-` reads stdin.
    pub file: PathBuf,
    /// Events per request.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batch_size: u64,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Most failures kept (and printed) individually; the rest are only counted.
const MAX_REPORTED_FAILURES: usize = 100;
/// Attempts at one batch while the server says "later" (429, 503).
const MAX_RETRIES: u32 = 10;
/// Longest wait between two of those attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// Non-empty lines read.
    pub lines: u64,
    /// Events stored by this import.
    pub accepted: u64,
    /// Events already stored (same id, same content).
    pub duplicates: u64,
    /// Lines not imported.
    pub errors: u64,
    /// The first failures, by line.
    pub failures: Vec<Failure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// 1-based line of the input.
    pub line: u64,
    pub code: String,
    pub message: String,
}

impl ImportReport {
    fn fail(&mut self, line: u64, code: &str, message: String) {
        self.errors += 1;
        if self.failures.len() < MAX_REPORTED_FAILURES {
            self.failures.push(Failure {
                line,
                code: code.to_owned(),
                message,
            });
        }
    }
}

/// Events of one request, each with the line it came from.
#[derive(Debug, Default)]
struct Batch {
    events: Vec<Value>,
    lines: Vec<u64>,
}

impl Batch {
    fn len(&self) -> usize {
        self.events.len()
    }

    fn split(self) -> (Batch, Batch) {
        let mid = self.len() / 2;
        let mut events = self.events;
        let mut lines = self.lines;
        let back = Batch {
            events: events.split_off(mid),
            lines: lines.split_off(mid),
        };
        (Batch { events, lines }, back)
    }

    /// The batch without the items at `failed`.
    fn without(self, failed: &BTreeSet<usize>) -> Batch {
        let (events, lines) = self
            .events
            .into_iter()
            .zip(self.lines)
            .enumerate()
            .filter(|(i, _)| !failed.contains(i))
            .map(|(_, pair)| pair)
            .unzip();
        Batch { events, lines }
    }
}

pub async fn run(args: ImportArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let client = connect(&args.client)?;
    let batch_size = usize::try_from(args.batch_size).unwrap_or(usize::MAX);
    let (reader, progress): (Box<dyn AsyncRead + Unpin + Send>, ProgressBar) =
        if args.file == Path::new("-") {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} importing: {msg} in {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            (Box::new(tokio::io::stdin()), bar)
        } else {
            let file = tokio::fs::File::open(&args.file)
                .await
                .with_context(|| format!("opening {}", args.file.display()))?;
            let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
            let bar = ProgressBar::new(len);
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {msg} ({eta} left)")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            (Box::new(file), bar)
        };

    let mut report = ImportReport::default();
    let mut reader = BufReader::with_capacity(1 << 20, reader);
    let mut line = Vec::new();
    let mut line_no = 0u64;
    let mut batch = Batch::default();
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .await
            .context("reading the input")?;
        if read == 0 {
            break;
        }
        line_no += 1;
        progress.inc(read as u64);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        report.lines += 1;
        match parse_event(&line) {
            Ok(event) => {
                batch.events.push(event);
                batch.lines.push(line_no);
            }
            Err(e) => report.fail(line_no, "invalid_json", e.to_string()),
        }
        if batch.len() >= batch_size {
            send(&client, std::mem::take(&mut batch), &mut report)
                .await
                .with_context(|| {
                    format!(
                        "importing (stopped before line {line_no}; {} events stored so far)",
                        report.accepted
                    )
                })?;
            progress.set_message(format!(
                "{} accepted, {} duplicates, {} errors",
                report.accepted, report.duplicates, report.errors
            ));
        }
    }
    if batch.len() > 0 {
        send(&client, batch, &mut report).await.with_context(|| {
            format!(
                "importing (stopped at the end; {} events stored so far)",
                report.accepted
            )
        })?;
    }
    progress.finish_and_clear();
    print_report(out, args.output.format, &report)?;
    if report.errors > 0 {
        return Err(CliError::new(
            "import_incomplete",
            format!(
                "{} of {} events were not imported",
                report.errors, report.lines
            ),
        )
        .into());
    }
    Ok(())
}

/// One input line as the event to send: an object without `id` (or its alias `event_id`)
/// gets a fresh UUIDv7 `id`, so every attempt at sending it names the same event. Anything
/// else is sent as read, for the server to judge.
fn parse_event(line: &[u8]) -> Result<Value, serde_json::Error> {
    let mut event: Value = serde_json::from_slice(line)?;
    if let Value::Object(fields) = &mut event
        && !fields.contains_key("id")
        && !fields.contains_key("event_id")
    {
        fields.insert(
            "id".to_owned(),
            Value::String(vigil_event::EventId::generate().as_str().to_owned()),
        );
    }
    Ok(event)
}

/// Sends one batch, splitting and trimming it until every event is stored or reported.
async fn send(client: &Client, batch: Batch, report: &mut ImportReport) -> Result<(), ClientError> {
    let mut queue = VecDeque::from([batch]);
    while let Some(batch) = queue.pop_front() {
        if batch.len() == 0 {
            continue;
        }
        match ingest_with_retry(client, &batch.events).await {
            Ok(ack) => {
                let duplicates = ack.duplicates();
                report.duplicates += duplicates;
                report.accepted += (ack.events.len() as u64).saturating_sub(duplicates);
            }
            Err(ClientError::Api { code, message, .. })
                if code == "body_too_large" || code == "batch_too_large" =>
            {
                if batch.len() > 1 {
                    let (front, back) = batch.split();
                    queue.push_front(back);
                    queue.push_front(front);
                } else {
                    for &line in &batch.lines {
                        report.fail(line, &code, message.clone());
                    }
                }
            }
            Err(ClientError::Api {
                status,
                code,
                message,
                details,
                ..
            }) if (400..500).contains(&status) => {
                let items = failing_items(details.as_ref(), batch.len());
                if items.is_empty() {
                    // The server blames the request, not an event: retrying cannot help.
                    return Err(ClientError::Api {
                        status,
                        code,
                        message,
                        details,
                        retry_after: None,
                    });
                }
                let mut failed = BTreeSet::new();
                for (index, item_code, item_message) in items {
                    if failed.insert(index)
                        && let Some(&line) = batch.lines.get(index)
                    {
                        report.fail(
                            line,
                            item_code.as_deref().unwrap_or(&code),
                            item_message.unwrap_or_else(|| message.clone()),
                        );
                    }
                }
                queue.push_front(batch.without(&failed));
            }
            Err(other) => return Err(other),
        }
    }
    Ok(())
}

/// Each failing item the server listed: `(index in the batch, code, message)`.
fn failing_items(
    details: Option<&Value>,
    batch_len: usize,
) -> Vec<(usize, Option<String>, Option<String>)> {
    let Some(Value::Array(items)) = details else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let index = usize::try_from(item.get("index")?.as_u64()?)
                .ok()
                .filter(|&i| i < batch_len)?;
            let text = |key: &str| item.get(key).and_then(Value::as_str).map(str::to_owned);
            let message = match (text("path"), text("message"), text("id")) {
                (Some(path), Some(message), _) if !path.is_empty() => {
                    Some(format!("{path}: {message}"))
                }
                (_, Some(message), _) => Some(message),
                (_, None, Some(id)) => {
                    Some(format!("id {id} is already stored with different content"))
                }
                _ => None,
            };
            Some((index, text("code"), message))
        })
        .collect()
}

async fn ingest_with_retry(
    client: &Client,
    events: &[Value],
) -> Result<vigil_client::IngestResponse, ClientError> {
    let mut attempt = 0;
    loop {
        match client.ingest(events).await {
            Err(e) if e.is_retryable() && attempt < MAX_RETRIES => {
                attempt += 1;
                let backoff = Duration::from_millis(100u64 << attempt.min(7)).min(MAX_BACKOFF);
                let wait = match &e {
                    ClientError::Api {
                        retry_after: Some(d),
                        ..
                    } => (*d).min(MAX_BACKOFF),
                    _ => backoff,
                };
                tokio::time::sleep(wait).await;
            }
            other => return other,
        }
    }
}

fn print_report(
    out: &mut dyn Write,
    format: OutputFormat,
    report: &ImportReport,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Table | OutputFormat::Csv => {
            for f in &report.failures {
                eprintln!("line {}: {} ({})", f.line, f.message, f.code);
            }
            if report.errors > report.failures.len() as u64 {
                eprintln!(
                    "… and {} more",
                    report.errors - report.failures.len() as u64
                );
            }
            let table = simple_table(
                &["lines", "accepted", "duplicates", "errors"],
                vec![vec![
                    report.lines.to_string(),
                    report.accepted.to_string(),
                    report.duplicates.to_string(),
                    report.errors.to_string(),
                ]],
            );
            if format == OutputFormat::Csv {
                writeln!(out, "lines,accepted,duplicates,errors")?;
                writeln!(
                    out,
                    "{},{},{},{}",
                    report.lines, report.accepted, report.duplicates, report.errors
                )?;
            } else {
                writeln!(out, "{table}")?;
            }
        }
        OutputFormat::Json => write_json(out, &serde_json::to_value(report)?)?,
        OutputFormat::Ndjson => writeln!(out, "{}", serde_json::to_string(report)?)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn batch(n: u64) -> Batch {
        Batch {
            events: (0..n).map(|i| json!({ "i": i })).collect(),
            lines: (1..=n).collect(),
        }
    }

    /// Regression: events without an `id` were sent without one, so the server assigned a new
    /// id on every attempt. When an answer was lost (a timeout, a reset connection) and the
    /// batch was sent again, its events were stored twice. Each such event now gets its id
    /// once, when its line is read, and keeps it across retries and batch splits.
    #[test]
    fn events_without_an_id_get_one_before_the_first_attempt() {
        let event = parse_event(br#"{"type": "login.failed", "details": {"n": 1}}"#).unwrap();
        let id = event["id"].as_str().unwrap();
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{id}");
        assert!(
            id.split('-').nth(2).unwrap().starts_with('7'),
            "a UUIDv7: {id}"
        );
        assert_eq!(event["details"]["n"], 1);
        let other = parse_event(br#"{"type": "login.failed"}"#).unwrap();
        assert_ne!(other["id"], event["id"]);

        // The client's own id is kept, and an aliased one is not doubled (that is refused).
        let own = parse_event(br#"{"id": "ord-1", "type": "a"}"#).unwrap();
        assert_eq!(own, json!({"id": "ord-1", "type": "a"}));
        let aliased = parse_event(br#"{"event_id": "ord-2", "type": "a"}"#).unwrap();
        assert_eq!(aliased, json!({"event_id": "ord-2", "type": "a"}));
        // Not an event object: left for the server to refuse.
        assert_eq!(parse_event(b"[1, 2]").unwrap(), json!([1, 2]));
        assert!(parse_event(b"{nope").is_err());
    }

    #[test]
    fn splitting_keeps_lines_with_their_events() {
        let (a, b) = batch(5).split();
        assert_eq!(a.lines, [1, 2]);
        assert_eq!(b.lines, [3, 4, 5]);
        assert_eq!(b.events[0]["i"], 2);
    }

    #[test]
    fn dropping_failed_items_keeps_the_rest_in_order() {
        let rest = batch(5).without(&BTreeSet::from([0, 3]));
        assert_eq!(rest.lines, [2, 3, 5]);
        assert_eq!(
            rest.events
                .iter()
                .map(|e| e["i"].as_u64().unwrap())
                .collect::<Vec<_>>(),
            [1, 2, 4]
        );
    }

    #[test]
    fn failing_items_come_from_item_errors_and_conflicts() {
        let details = json!([
            {"index": 1, "path": "seq", "code": "reserved_field", "message": "set by the server"},
            {"index": 4, "id": "e-9"},
            {"index": 99, "path": "", "code": "x", "message": "out of range"},
            {"path": "no index"}
        ]);
        let items = failing_items(Some(&details), 5);
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[0],
            (
                1,
                Some("reserved_field".into()),
                Some("seq: set by the server".into())
            )
        );
        assert_eq!(items[1].0, 4);
        assert!(items[1].2.as_deref().unwrap().contains("e-9"));
        assert!(failing_items(Some(&json!({"limit": 10})), 5).is_empty());
        assert!(failing_items(None, 5).is_empty());
    }

    #[test]
    fn only_the_first_failures_are_kept() {
        let mut report = ImportReport::default();
        for line in 0..(MAX_REPORTED_FAILURES as u64 + 5) {
            report.fail(line, "c", "m".into());
        }
        assert_eq!(report.errors, MAX_REPORTED_FAILURES as u64 + 5);
        assert_eq!(report.failures.len(), MAX_REPORTED_FAILURES);
    }
}
