//! `vigil query`, `vigil last`, `vigil count`, `vigil export`: reading events over HTTP.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use vigil_client::{ExportFormat, Order, QueryParams};

use crate::cli::{
    CountArgs, ExportArgs, ExportFormatArg, FilterArgs, LastArgs, OrderArg, QueryArgs,
};
use crate::connect;
use crate::output::{
    OutputFormat, TableStyle, event_table, write_csv_header, write_csv_rows, write_events,
    write_json, write_ndjson,
};

/// The URL parameters for an expression, `--where` filters and a time range.
pub fn filter_params(filter: &FilterArgs) -> QueryParams {
    let mut params = QueryParams::new();
    if let Some(expr) = filter
        .expr
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        params = params.q(expr);
    }
    if let Some(from) = &filter.from {
        params = params.from(from);
    }
    if let Some(to) = &filter.to {
        params = params.to(to);
    }
    for (path, value) in &filter.filters {
        params = params.filter(path, value);
    }
    params
}

fn order(arg: OrderArg) -> Order {
    match arg {
        OrderArg::Desc => Order::Desc,
        OrderArg::Asc => Order::Asc,
    }
}

fn table_style(seq: bool) -> TableStyle {
    TableStyle {
        seq,
        colour: std::io::stdout().is_terminal(),
    }
}

pub async fn query(args: QueryArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let client = connect(&args.client)?;
    let mut params = filter_params(&args.filter)
        .limit(args.limit)
        .order(order(args.order));
    if let Some(cursor) = &args.cursor {
        params = params.cursor(cursor);
    }
    let format = args.output.format;

    if !args.all {
        let page = client.query(&params).await.context("query refused")?;
        match format {
            OutputFormat::Json => {
                write_json(
                    out,
                    &json!({ "events": page.events, "next_cursor": page.next_cursor }),
                )?;
            }
            _ => {
                write_events(out, &page.events, format, table_style(true))?;
                if let (OutputFormat::Table, Some(cursor)) = (format, &page.next_cursor) {
                    eprintln!("more events: add --cursor {cursor} (or --all)");
                }
            }
        }
        return Ok(());
    }

    // --all: NDJSON and CSV stream page by page; a table or one JSON document needs them all.
    let mut collected = Vec::new();
    let mut first = true;
    loop {
        let page = client.query(&params).await.context("query refused")?;
        match format {
            OutputFormat::Ndjson => write_ndjson(out, &page.events)?,
            OutputFormat::Csv => {
                if first {
                    write_csv_header(out)?;
                }
                write_csv_rows(out, &page.events)?;
            }
            OutputFormat::Table | OutputFormat::Json => collected.extend(page.events),
        }
        first = false;
        match page.next_cursor {
            Some(cursor) => params.cursor = Some(cursor),
            None => break,
        }
    }
    match format {
        OutputFormat::Json => {
            write_json(out, &json!({ "events": collected, "next_cursor": null }))?
        }
        OutputFormat::Table => write_events(out, &collected, format, table_style(true))?,
        OutputFormat::Ndjson | OutputFormat::Csv => {}
    }
    Ok(())
}

/// The severity condition of `vigil last`.
fn severity_expr(min_severity: Option<u8>, above: Option<u8>) -> Option<String> {
    match (min_severity, above) {
        (Some(n), _) => Some(format!("severity>={n}")),
        (None, Some(n)) => Some(format!("severity>{n}")),
        (None, None) => None,
    }
}

pub async fn last(args: LastArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let client = connect(&args.client)?;
    let mut params = QueryParams::new().limit(args.count).order(Order::Desc);
    if let Some(expr) = severity_expr(args.min_severity, args.above) {
        params = params.q(expr);
    }
    if let Some(t) = &args.event_type {
        params = params.filter("type", t);
    }
    for (path, value) in &args.filters {
        params = params.filter(path, value);
    }
    let page = client.query(&params).await.context("query refused")?;
    match args.output.format {
        OutputFormat::Table if !page.events.is_empty() => {
            writeln!(out, "{}", event_table(&page.events, table_style(false)))?;
        }
        format => write_events(out, &page.events, format, table_style(false))?,
    }
    Ok(())
}

pub async fn count(args: CountArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let client = connect(&args.client)?;
    let n = client
        .count(&filter_params(&args.filter))
        .await
        .context("count refused")?;
    match args.output.format {
        OutputFormat::Table => writeln!(out, "{n}")?,
        OutputFormat::Json => write_json(out, &json!({ "count": n }))?,
        OutputFormat::Ndjson => writeln!(out, "{}", json!({ "count": n }))?,
        OutputFormat::Csv => writeln!(out, "count\n{n}")?,
    }
    Ok(())
}

/// A file that appears under its final name only once complete: a failed export leaves no
/// truncated file that looks whole.
struct PartialFile {
    final_path: PathBuf,
    part_path: PathBuf,
    writer: BufWriter<File>,
    done: bool,
}

impl PartialFile {
    fn create(path: &Path) -> anyhow::Result<Self> {
        if path.exists() {
            anyhow::bail!("{} already exists", path.display());
        }
        let mut part = path.as_os_str().to_owned();
        part.push(".part");
        let part_path = PathBuf::from(part);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&part_path)
            .with_context(|| format!("creating {}", part_path.display()))?;
        Ok(Self {
            final_path: path.to_path_buf(),
            part_path,
            writer: BufWriter::new(file),
            done: false,
        })
    }

    fn finish(mut self) -> anyhow::Result<()> {
        self.writer
            .flush()
            .with_context(|| format!("writing {}", self.part_path.display()))?;
        self.writer
            .get_ref()
            .sync_all()
            .with_context(|| format!("syncing {}", self.part_path.display()))?;
        std::fs::rename(&self.part_path, &self.final_path).with_context(|| {
            format!(
                "renaming {} to {}",
                self.part_path.display(),
                self.final_path.display()
            )
        })?;
        self.done = true;
        Ok(())
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.part_path);
        }
    }
}

pub async fn export(args: ExportArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let client = connect(&args.client)?;
    let format = match args.format {
        ExportFormatArg::Ndjson => ExportFormat::Ndjson,
        ExportFormatArg::Csv => ExportFormat::Csv,
    };
    let params = filter_params(&args.filter).order(order(args.order));
    let mut file = args
        .output_file
        .as_deref()
        .map(PartialFile::create)
        .transpose()?;
    let mut stream = Box::pin(
        client
            .export(&params, format)
            .await
            .context("export refused")?,
    );

    let progress = ProgressBar::new_spinner().with_message("exporting");
    progress.set_style(
        ProgressStyle::with_template("{spinner} {msg}: {human_pos} lines, {bytes} in {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let (mut lines, mut bytes) = (0u64, 0u64);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.context("export interrupted")?;
        match file.as_mut() {
            Some(f) => f.writer.write_all(&chunk).context("writing the export")?,
            None => out.write_all(&chunk)?,
        }
        let newlines = chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        lines += newlines;
        bytes += chunk.len() as u64;
        progress.inc(newlines);
        progress.set_length(bytes);
    }
    progress.finish_and_clear();
    let events = match format {
        ExportFormat::Ndjson => lines,
        ExportFormat::Csv => lines.saturating_sub(1),
    };
    match file {
        Some(f) => {
            let path = f.final_path.clone();
            f.finish()?;
            eprintln!(
                "exported {events} events ({bytes} bytes) to {}",
                path.display()
            );
        }
        None => {
            out.flush()?;
            if std::io::stderr().is_terminal() {
                eprintln!("exported {events} events ({bytes} bytes)");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_flags_become_an_expression() {
        assert_eq!(severity_expr(Some(7), None).as_deref(), Some("severity>=7"));
        assert_eq!(severity_expr(None, Some(3)).as_deref(), Some("severity>3"));
        assert_eq!(severity_expr(None, None), None);
    }

    #[test]
    fn filters_become_parameters() {
        let filter = FilterArgs {
            expr: Some("  ".into()),
            filters: vec![("actor.id".into(), "u-7".into())],
            from: Some("-1h".into()),
            to: None,
        };
        let p = filter_params(&filter);
        assert_eq!(p.q, None, "a blank expression means every event");
        assert_eq!(p.from.as_deref(), Some("-1h"));
        assert_eq!(p.filters, vec![("actor.id".to_owned(), "u-7".to_owned())]);
    }

    #[test]
    fn a_failed_export_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.ndjson");
        {
            let mut f = PartialFile::create(&path).unwrap();
            f.writer.write_all(b"{}\n").unwrap();
        }
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        let mut f = PartialFile::create(&path).unwrap();
        f.writer.write_all(b"{}\n").unwrap();
        f.finish().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{}\n");
        assert!(PartialFile::create(&path).is_err(), "never overwrites");
    }
}
