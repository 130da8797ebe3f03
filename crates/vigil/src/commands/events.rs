//! `vigil query`, `vigil last`, `vigil count`, `vigil export`: reading events over HTTP, and
//! for `vigil last` over NATS too (vigil's readers answer the same page).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{ArgGroup, Args, ValueEnum};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use vigil_bus::QueryRequest;
use vigil_client::{ClientError, ExportFormat, Order, Page, QueryParams};
use vigil_event::TenantId;

use crate::args::{ClientArgs, NatsArgs, OutputArgs, connect};
use crate::error::CliError;
use crate::output::{
    OutputFormat, TableStyle, event_table, write_csv_header, write_csv_rows, write_events,
    write_json, write_ndjson,
};

/// Which events: an expression, exact-match filters and a time range.
#[derive(Debug, Clone, Args)]
pub struct FilterArgs {
    /// Filter expression, e.g. `severity>=7 AND type:login.failed` [default: every event].
    #[arg(value_name = "EXPR")]
    pub expr: Option<String>,
    /// Exact-match filter `path=value` (`--where actor.id=u-7`); repeatable, ANDed.
    #[arg(long = "where", value_name = "PATH=VALUE", value_parser = parse_where)]
    pub filters: Vec<(String, String)>,
    /// Start of the time range (inclusive): RFC 3339 or relative (`-15m`, `-24h`, `-7d`).
    #[arg(long, allow_hyphen_values = true, value_name = "TIME")]
    pub from: Option<String>,
    /// End of the time range (exclusive): RFC 3339 or relative.
    #[arg(long, allow_hyphen_values = true, value_name = "TIME")]
    pub to: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OrderArg {
    /// Newest first.
    Desc,
    /// Oldest first.
    Asc,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Events per page.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    #[arg(long, value_enum, default_value_t = OrderArg::Desc)]
    pub order: OrderArg,
    /// Continue from a previous page's `next_cursor`.
    #[arg(long)]
    pub cursor: Option<String>,
    /// Follow cursors to the end of the result instead of stopping after one page.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `vigil last`: over HTTP by default, over NATS (a reader answers) with `--nats`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("bus").args(["nats"]).requires("tenant")))]
pub struct LastArgs {
    /// How many events.
    #[arg(short = 'n', long = "count", default_value_t = 10, value_name = "N")]
    pub count: usize,
    /// Only events of at least this severity.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=10), conflicts_with = "above")]
    pub min_severity: Option<u8>,
    /// Only events of severity strictly above N.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=10))]
    pub above: Option<u8>,
    /// Only events of this type.
    #[arg(long = "type", value_name = "TYPE")]
    pub event_type: Option<String>,
    /// Exact-match filter `path=value`; repeatable.
    #[arg(long = "where", value_name = "PATH=VALUE", value_parser = parse_where)]
    pub filters: Vec<(String, String)>,
    /// Whose events, over NATS (required with --nats). Over HTTP the credential names the
    /// tenant, so this is refused there.
    #[arg(long, value_name = "TENANT", requires = "nats")]
    pub tenant: Option<String>,
    /// Ask vigil's readers over NATS instead of a server over HTTP (--url and VIGIL_TOKEN are
    /// then not used).
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct CountArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormatArg {
    Ndjson,
    Csv,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Write here instead of stdout (the file must not exist yet).
    #[arg(long, value_name = "FILE")]
    pub output_file: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = ExportFormatArg::Ndjson)]
    pub format: ExportFormatArg,
    #[arg(long, value_enum, default_value_t = OrderArg::Asc)]
    pub order: OrderArg,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `path=value`, split at the first `=`.
fn parse_where(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((path, value)) if !path.trim().is_empty() => {
            Ok((path.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected PATH=VALUE, got {s:?}")),
    }
}

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
    let events = match &args.nats.nats {
        Some(url) => last_over_nats(&args, url).await?,
        None => last_over_http(&args).await?,
    };
    match args.output.format {
        OutputFormat::Table if !events.is_empty() => {
            writeln!(out, "{}", event_table(&events, table_style(false)))?;
        }
        format => write_events(out, &events, format, table_style(false))?,
    }
    Ok(())
}

async fn last_over_http(args: &LastArgs) -> anyhow::Result<Vec<Value>> {
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
    Ok(page.events)
}

/// The same page from vigil's readers over NATS, for `--tenant`. A reader's refusal prints
/// as the server's would: `query refused: <message> (<code>)`.
async fn last_over_nats(args: &LastArgs, url: &str) -> anyhow::Result<Vec<Value>> {
    let tenant = args
        .tenant
        .as_deref()
        .ok_or_else(|| CliError::usage("--nats needs --tenant"))?;
    let tenant = TenantId::parse(tenant)
        .map_err(|e| CliError::usage(format!("--tenant {tenant:?}: {}", e.message)))?;
    let request = last_request(args)?;
    let bus = args.nats.connect(url, "vigil-last").await?;
    let page = bus
        .query(&tenant, &request)
        .await
        .context("query refused")?;
    let page: Page =
        serde_json::from_slice(&page).map_err(|e| ClientError::Decode(e.to_string()))?;
    Ok(page.events)
}

/// The request `vigil last` sends over NATS. Its filters map each path to one value, so a path
/// given twice with different values (which over HTTP matches nothing) is refused.
fn last_request(args: &LastArgs) -> Result<QueryRequest, CliError> {
    let mut filters = BTreeMap::new();
    let event_type = args
        .event_type
        .iter()
        .map(|t| ("type".to_owned(), t.clone()));
    for (path, value) in event_type.chain(args.filters.iter().cloned()) {
        if let Some(earlier) = filters.insert(path.clone(), value.clone())
            && earlier != value
        {
            return Err(CliError::usage(format!(
                "`{path}` must equal both {earlier:?} and {value:?}: no event can"
            )));
        }
    }
    Ok(QueryRequest {
        q: severity_expr(args.min_severity, args.above),
        limit: Some(args.count as u64),
        order: Some("desc".to_owned()),
        filters,
        ..QueryRequest::default()
    })
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
    fn where_filters_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_where("details.q=a=b").unwrap(),
            ("details.q".to_owned(), "a=b".to_owned())
        );
        assert_eq!(
            parse_where("actor.id=").unwrap(),
            ("actor.id".to_owned(), String::new())
        );
        assert!(parse_where("=x").is_err());
        assert!(parse_where("novalue").is_err());
    }

    #[test]
    fn severity_flags_become_an_expression() {
        assert_eq!(severity_expr(Some(7), None).as_deref(), Some("severity>=7"));
        assert_eq!(severity_expr(None, Some(3)).as_deref(), Some("severity>3"));
        assert_eq!(severity_expr(None, None), None);
    }

    fn last_args(args: &[&str]) -> LastArgs {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from(["vigil", "last"].iter().chain(args)).unwrap();
        let crate::cli::Command::Last(args) = cli.command else {
            panic!("not last")
        };
        args
    }

    #[test]
    fn last_asks_readers_for_the_page_it_asks_servers_for() {
        let args = last_args(&[
            "--nats",
            "nats://127.0.0.1:4222",
            "--tenant",
            "acme",
            "-n",
            "25",
            "--min-severity",
            "7",
            "--type",
            "login.failed",
            "--where",
            "actor.id=u-7",
        ]);
        let request = last_request(&args).unwrap();
        assert_eq!(
            request.to_params(),
            [
                ("q", "severity>=7"),
                ("limit", "25"),
                ("order", "desc"),
                ("actor.id", "u-7"),
                ("type", "login.failed"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        let plain = last_request(&last_args(&["--nats", "n:4222", "--tenant", "a"])).unwrap();
        assert_eq!(
            (plain.q, plain.limit, plain.filters.len()),
            (None, Some(10), 0)
        );

        // The same value twice is harmless; two values for one path match nothing.
        let twice = ["--nats", "n:4222", "--tenant", "a", "--type", "x"];
        assert!(last_request(&last_args(&[&twice[..], &["--where", "type=x"]].concat())).is_ok());
        let e = last_request(&last_args(&[&twice[..], &["--where", "type=y"]].concat()));
        assert_eq!(e.unwrap_err().code, "usage");
    }

    #[test]
    fn a_readers_refusal_prints_like_a_servers() {
        let failure = vigil_bus::QueryFailure {
            code: "invalid_query".to_owned(),
            message: "expected a value after `>`".to_owned(),
        };
        let e = anyhow::Error::new(failure).context("query refused");
        assert_eq!(
            format!("{e:#}"),
            "query refused: expected a value after `>` (invalid_query)"
        );
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
