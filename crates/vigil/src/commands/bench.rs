//! `vigil bench`: drives a running server over HTTP and reports throughput and latency.
//!
//! Each connection sends one request at a time, so latency is measured per request and
//! throughput is what `--connections` concurrent clients get. The ingest modes send a batch of
//! `--batch-size` events or a single event per request; the query modes send `GET /v1/events`
//! or `GET /v1/events/count` with the parameters of `--query`. A run is bounded by `--duration`
//! and, optionally, `--events` or `--requests`, and by default only targets this machine.
//!
//! Work is handed out as numbered units (events, or requests in the query modes), and unit `i`
//! draws its randomness from a stream of its own derived from the run's seed. So with `--seed`
//! the events sent, and the `{rand}` values of the queries, do not depend on `--connections` or on
//! timing: two servers fed the same seed hold the same data set.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::net::IpAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};
use vigil_client::{ClientError, Order, QueryParams, Url};

use crate::args::{ClientArgs, OutputArgs, connect, parse_duration};
use crate::error::CliError;
use crate::output::{OutputFormat, simple_table, write_json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchMode {
    /// POST batches of --batch-size events.
    Batch,
    /// POST one event per request.
    Single,
    /// GET /v1/events with --query, one page per request.
    Query,
    /// GET /v1/events/count with --query.
    Count,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[arg(long, value_enum, default_value_t = BenchMode::Batch)]
    pub mode: BenchMode,
    /// Concurrent connections, each sending one request at a time.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub connections: u32,
    /// Stop after this long.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Duration,
    /// Batch and single: stop after this many events (whichever comes first with --duration).
    #[arg(long, value_name = "N")]
    pub events: Option<u64>,
    /// Events per request in batch mode.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batch_size: u64,
    /// Makes the run reproducible. Ingest: the same seed and --events send the same events,
    /// ids included (bench-s<SEED>-0, -1, …), whatever --connections, so two servers get the
    /// same data set; sent again to the same server they are duplicates. Query and count: the
    /// same {rand} values, in the same order [default: random, ids unique to the run].
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Query and count: URL parameters of each request, as after `?` in the URL
    /// (`actor.id=u-17&limit=10`, `q=severity>=7 AND type:login.failed`); values are written
    /// plainly and encoded when sent (`%XX` escapes are decoded, so `%26` is a literal `&`).
    /// A `{rand}` in a value becomes a random number below --pool, drawn per request
    /// [default: no parameters, the newest page].
    #[arg(long, value_name = "PARAMS", value_parser = QueryTemplate::parse)]
    pub query: Option<QueryTemplate>,
    /// Query and count: stop after this many requests (whichever comes first with --duration)
    /// [default: 400].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,
    /// Query and count: the range of {rand} in --query, 0 to N-1 [default: 5000, the actors
    /// bench events come from: u-0 … u-4999].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub pool: Option<u64>,
    /// Allow a target that is not on this machine (loopback only by default).
    #[arg(long)]
    pub allow_remote: bool,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Highest latency the histogram tracks exactly (beyond, values are clamped): one minute.
const MAX_TRACKED_MICROS: u64 = 60_000_000;
/// How long a request may still take once the run's time is up.
const GRACE: Duration = Duration::from_secs(30);
/// Requests a query or count run sends when `--requests` is not given.
const DEFAULT_REQUESTS: u64 = 400;
/// Actors of generated events (`u-0` … `u-4999`), and so the default range of `{rand}`.
const ACTORS: u64 = 5_000;
/// What `--query` replaces by a random number.
const PLACEHOLDER: &str = "{rand}";

/// Whether `url` names this machine: `localhost` or a loopback address (127.0.0.0/8, ::1).
pub fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

impl BenchMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Batch => "batch",
            Self::Single => "single",
            Self::Query => "query",
            Self::Count => "count",
        }
    }

    fn is_ingest(self) -> bool {
        matches!(self, Self::Batch | Self::Single)
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub mode: &'static str,
    pub connections: u32,
    /// The `--query` of a query or count run, as given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// `--seed`, when the run was seeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Events the server acknowledged (batch, single), returned in pages (query), or counted,
    /// summed over the answers (count).
    pub events: u64,
    /// Requests sent, failed ones included.
    pub requests: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    pub requests_per_second: f64,
    /// Of the successful requests.
    pub latency_ms: Latency,
    /// Failed requests by error code.
    pub errors: BTreeMap<String, u64>,
    /// The first message of each error code, for the person reading the report.
    #[serde(skip)]
    pub error_messages: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// What one connection measured.
struct WorkerResult {
    latency: Histogram<u64>,
    events: u64,
    requests: u64,
    errors: BTreeMap<String, u64>,
    error_messages: BTreeMap<String, String>,
}

/// Limits shared by every connection.
struct Budget {
    stop_at: Instant,
    /// Units the run may send (events, or requests in the query modes), when bounded.
    limit: Option<u64>,
    /// Number of the next unit to hand out: units are numbered across all connections, so a
    /// unit's content does not depend on which connection sends it.
    next: AtomicU64,
    /// Units answered successfully so far (for the progress line).
    done: AtomicU64,
}

impl Budget {
    fn new(stop_at: Instant, limit: Option<u64>) -> Self {
        Self {
            stop_at,
            limit,
            next: AtomicU64::new(0),
            done: AtomicU64::new(0),
        }
    }

    /// Claims the next `want` units (fewer at the end of `limit`); `None` when the run is over.
    fn claim(&self, want: u64) -> Option<Range<u64>> {
        if Instant::now() >= self.stop_at {
            return None;
        }
        let limit = self.limit.unwrap_or(u64::MAX);
        let start = self
            .next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |next| {
                (next < limit).then(|| next + want.min(limit - next))
            })
            .ok()?;
        Some(start..start + want.min(limit - start))
    }
}

/// The random source of unit `index` of a run seeded with `seed`: every unit has a stream of
/// its own, so unit `index` comes out the same whoever sends it, and whenever.
fn unit_rng(seed: u64, index: u64) -> StdRng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&index.to_le_bytes());
    StdRng::from_seed(key)
}

/// `--query`: URL parameters as written (`actor.id=u-{rand}&limit=10`), parsed into what
/// `GET /v1/events` takes. Values may hold the `{rand}` placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryTemplate {
    /// As given on the command line, for the report.
    text: String,
    params: QueryParams,
}

impl QueryTemplate {
    /// Splits `text` at `&` into `NAME=VALUE` pairs (at the first `=`) and decodes `%XX`
    /// escapes; `+` stays a plus sign. `q`, `from`, `to`, `limit`, `order` and `cursor` are
    /// the query's own parameters (each at most once); any other name is an exact-match filter
    /// on that field path.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut params = QueryParams::new();
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let Some((name, value)) = pair.split_once('=') else {
                return Err(format!("expected NAME=VALUE, got {pair:?}"));
            };
            let (name, value) = (percent_decode(name)?, percent_decode(value)?);
            if name.is_empty() {
                return Err(format!("a parameter name is missing in {pair:?}"));
            }
            let slot = match name.as_str() {
                "q" => &mut params.q,
                "from" => &mut params.from,
                "to" => &mut params.to,
                "cursor" => &mut params.cursor,
                "limit" if params.limit.is_none() => {
                    let limit = value
                        .parse()
                        .map_err(|_| format!("limit must be a whole number, got {value:?}"))?;
                    params.limit = Some(limit);
                    continue;
                }
                "order" if params.order.is_none() => {
                    params.order = Some(match value.as_str() {
                        "asc" => Order::Asc,
                        "desc" => Order::Desc,
                        _ => return Err(format!("order must be asc or desc, got {value:?}")),
                    });
                    continue;
                }
                "limit" | "order" => return Err(format!("{name} is given twice")),
                _ => {
                    params.filters.push((name, value));
                    continue;
                }
            };
            if slot.is_some() {
                return Err(format!("{name} is given twice"));
            }
            *slot = Some(value);
        }
        Ok(Self {
            text: text.to_owned(),
            params,
        })
    }

    /// Whether some value holds `{rand}`.
    fn has_placeholder(&self) -> bool {
        let p = &self.params;
        [&p.q, &p.from, &p.to, &p.cursor]
            .into_iter()
            .flatten()
            .chain(p.filters.iter().map(|(_, value)| value))
            .any(|value| value.contains(PLACEHOLDER))
    }

    /// The parameters with every `{rand}` replaced by `n`.
    fn render(&self, n: u64) -> QueryParams {
        let n = n.to_string();
        let mut params = self.params.clone();
        let p = &mut params;
        for value in [&mut p.q, &mut p.from, &mut p.to, &mut p.cursor]
            .into_iter()
            .flatten()
            .chain(p.filters.iter_mut().map(|(_, value)| value))
        {
            if value.contains(PLACEHOLDER) {
                *value = value.replace(PLACEHOLDER, &n);
            }
        }
        params
    }
}

/// Decodes `%XX` escapes; anything else is kept as written. A `%` that starts no escape is
/// refused rather than kept, so a forgotten `%25` cannot change a query unnoticed.
fn percent_decode(s: &str) -> Result<String, String> {
    let malformed = s.match_indices('%').any(|(at, _)| {
        s.as_bytes()
            .get(at + 1..at + 3)
            .is_none_or(|hex| !hex.iter().all(u8::is_ascii_hexdigit))
    });
    if malformed {
        return Err(format!(
            "{s:?}: % must start an escape like %26 (write %25 for %)"
        ));
    }
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| format!("{s:?}: escapes do not decode to UTF-8"))
}

/// What the requests of a query or count run ask.
#[derive(Debug)]
struct QueryPlan {
    template: QueryTemplate,
    /// The range of `{rand}`, when the template has one.
    pool: Option<u64>,
    seed: u64,
}

impl QueryPlan {
    /// The parameters of request number `index`.
    fn params(&self, index: u64) -> QueryParams {
        match self.pool {
            Some(pool) => self
                .template
                .render(unit_rng(self.seed, index).random_range(0..pool)),
            None => self.template.params.clone(),
        }
    }
}

pub async fn run(args: BenchArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let client = connect(&args.client)?;
    if !args.allow_remote && !is_loopback(client.base_url()) {
        return Err(CliError::usage(format!(
            "{} is not on this machine; vigil bench targets loopback addresses unless --allow-remote is given",
            client.base_url()
        ))
        .into());
    }
    check_options(&args)?;
    let seed = args.seed.unwrap_or_else(|| StdRng::from_os_rng().random());
    let (per_request, limit) = match args.mode {
        BenchMode::Batch => (args.batch_size, args.events),
        BenchMode::Single => (1, args.events),
        BenchMode::Query | BenchMode::Count => (1, Some(args.requests.unwrap_or(DEFAULT_REQUESTS))),
    };
    let budget = Arc::new(Budget::new(Instant::now() + args.duration, limit));

    let started = Instant::now();
    let progress = ProgressBar::new_spinner();
    progress.set_style(
        ProgressStyle::with_template("{spinner} bench: {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let mut workers = tokio::task::JoinSet::new();
    if args.mode.is_ingest() {
        let prefix = match args.seed {
            Some(seed) => format!("bench-s{seed}"),
            None => format!("bench-{}", run_id()),
        };
        let generator = Arc::new(EventGen::new(seed, prefix));
        for _ in 0..args.connections {
            let (client, generator) = (client.clone(), Arc::clone(&generator));
            workers.spawn(worker(Arc::clone(&budget), per_request, move |units| {
                let events: Vec<Value> = units.map(|i| generator.event(i)).collect();
                let client = client.clone();
                async move { client.ingest(&events).await.map(|ack| ack.accepted) }
            }));
        }
    } else {
        let template = args.query.clone().unwrap_or_else(|| QueryTemplate {
            text: String::new(),
            params: QueryParams::new(),
        });
        let pool = template
            .has_placeholder()
            .then(|| args.pool.unwrap_or(ACTORS));
        let plan = Arc::new(QueryPlan {
            template,
            pool,
            seed,
        });
        let count = args.mode == BenchMode::Count;
        for _ in 0..args.connections {
            let (client, plan) = (client.clone(), Arc::clone(&plan));
            workers.spawn(worker(Arc::clone(&budget), per_request, move |units| {
                let params = plan.params(units.start);
                let client = client.clone();
                async move {
                    if count {
                        client.count(&params).await
                    } else {
                        let page = client.query(&params).await?;
                        Ok(page.events.len() as u64)
                    }
                }
            }));
        }
    }
    let unit = if args.mode.is_ingest() {
        "events"
    } else {
        "requests"
    };
    let mut results = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                Some(result) => results.push(result.context("a bench connection failed")??),
                None => break,
            },
            _ = ticker.tick() => {
                let done = budget.done.load(Ordering::Relaxed);
                let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
                progress.set_message(format!("{done} {unit}, {rate:.0} {unit}/s"));
            }
        }
    }
    progress.finish_and_clear();
    let report = summarise(&args, &results, started.elapsed())?;
    print_report(out, args.output.format, &report)?;
    let mut stderr = std::io::stderr().lock();
    for (code, message) in &report.error_messages {
        let n = report.errors.get(code).copied().unwrap_or_default();
        writeln!(
            stderr,
            "bench: {n} request(s) failed with {code}, first: {message}"
        )?;
    }
    Ok(())
}

/// Refuses options that do not apply to the mode, rather than ignoring them.
fn check_options(args: &BenchArgs) -> Result<(), CliError> {
    if args.mode.is_ingest() {
        if args.query.is_some() || args.requests.is_some() || args.pool.is_some() {
            return Err(CliError::usage(
                "--query, --requests and --pool apply to --mode query and --mode count",
            ));
        }
        return Ok(());
    }
    if args.events.is_some() {
        return Err(CliError::usage(
            "--events applies to the ingest modes; bound a query run with --requests or --duration",
        ));
    }
    let has_placeholder = args
        .query
        .as_ref()
        .is_some_and(QueryTemplate::has_placeholder);
    if args.pool.is_some() && !has_placeholder {
        return Err(CliError::usage(format!(
            "--pool gives the range of {PLACEHOLDER} in --query, which has none"
        )));
    }
    Ok(())
}

/// A short random id that keeps the event ids of unseeded runs apart.
fn run_id() -> String {
    let mut rng = StdRng::from_os_rng();
    (0..8)
        .map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)]))
        .collect()
}

/// One connection: claims `per_request` units at a time and hands them to `send`, which
/// prepares a request (synchronously, outside the measured time) and returns it as a future
/// that answers with the number of events acknowledged, returned or counted.
async fn worker<F, Fut>(
    budget: Arc<Budget>,
    per_request: u64,
    mut send: F,
) -> anyhow::Result<WorkerResult>
where
    F: FnMut(Range<u64>) -> Fut,
    Fut: Future<Output = Result<u64, ClientError>>,
{
    let mut result = WorkerResult {
        latency: Histogram::new_with_bounds(1, MAX_TRACKED_MICROS, 3)
            .context("creating a latency histogram")?,
        events: 0,
        requests: 0,
        errors: BTreeMap::new(),
        error_messages: BTreeMap::new(),
    };
    while let Some(units) = budget.claim(per_request) {
        let claimed = units.end - units.start;
        let request = send(units);
        let sent_at = Instant::now();
        let answer = tokio::time::timeout_at((budget.stop_at + GRACE).into(), request).await;
        result.requests += 1;
        match answer {
            Ok(Ok(events)) => {
                let micros = u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX);
                result.latency.saturating_record(micros.max(1));
                result.events += events;
                budget.done.fetch_add(claimed, Ordering::Relaxed);
            }
            Ok(Err(e)) => {
                *result.errors.entry(e.code().to_owned()).or_default() += 1;
                result
                    .error_messages
                    .entry(e.code().to_owned())
                    .or_insert_with(|| e.to_string());
                let pause = match &e {
                    ClientError::Api {
                        retry_after: Some(d),
                        ..
                    } => (*d).min(Duration::from_secs(1)),
                    _ => Duration::from_millis(100),
                };
                tokio::time::sleep(pause).await;
            }
            Err(_) => {
                *result.errors.entry("timeout".to_owned()).or_default() += 1;
                result
                    .error_messages
                    .entry("timeout".to_owned())
                    .or_insert_with(|| {
                        format!("no answer within {} s after the run's end", GRACE.as_secs())
                    });
                break;
            }
        }
    }
    Ok(result)
}

fn summarise(
    args: &BenchArgs,
    results: &[WorkerResult],
    elapsed: Duration,
) -> anyhow::Result<BenchReport> {
    let mut latency = Histogram::<u64>::new_with_bounds(1, MAX_TRACKED_MICROS, 3)
        .context("creating a latency histogram")?;
    let mut errors = BTreeMap::new();
    let mut error_messages = BTreeMap::new();
    let (mut events, mut requests) = (0, 0);
    for r in results {
        latency
            .add(&r.latency)
            .context("merging latency histograms")?;
        events += r.events;
        requests += r.requests;
        for (code, n) in &r.errors {
            *errors.entry(code.clone()).or_default() += n;
        }
        for (code, message) in &r.error_messages {
            error_messages
                .entry(code.clone())
                .or_insert_with(|| message.clone());
        }
    }
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let ms = |micros: u64| micros as f64 / 1000.0;
    Ok(BenchReport {
        mode: args.mode.as_str(),
        connections: args.connections,
        query: (!args.mode.is_ingest()).then(|| {
            args.query
                .as_ref()
                .map(|q| q.text.clone())
                .unwrap_or_default()
        }),
        seed: args.seed,
        events,
        requests,
        seconds,
        events_per_second: events as f64 / seconds,
        requests_per_second: requests as f64 / seconds,
        latency_ms: Latency {
            p50: ms(latency.value_at_quantile(0.50)),
            p90: ms(latency.value_at_quantile(0.90)),
            p99: ms(latency.value_at_quantile(0.99)),
            max: ms(latency.max()),
        },
        errors,
        error_messages,
    })
}

fn print_report(out: &mut dyn Write, format: OutputFormat, r: &BenchReport) -> anyhow::Result<()> {
    let failed: u64 = r.errors.values().sum();
    match format {
        OutputFormat::Json => write_json(out, &serde_json::to_value(r)?)?,
        OutputFormat::Ndjson => writeln!(out, "{}", serde_json::to_string(r)?)?,
        OutputFormat::Csv => {
            writeln!(
                out,
                "mode,connections,events,requests,seconds,events_per_second,requests_per_second,p50_ms,p90_ms,p99_ms,max_ms,errors"
            )?;
            writeln!(
                out,
                "{},{},{},{},{:.3},{:.1},{:.1},{:.3},{:.3},{:.3},{:.3},{failed}",
                r.mode,
                r.connections,
                r.events,
                r.requests,
                r.seconds,
                r.events_per_second,
                r.requests_per_second,
                r.latency_ms.p50,
                r.latency_ms.p90,
                r.latency_ms.p99,
                r.latency_ms.max
            )?;
        }
        OutputFormat::Table => {
            writeln!(out, "{}", simple_table(&["metric", "value"], table_rows(r)))?;
        }
    }
    Ok(())
}

/// The report for a person: the ingest modes lead with events, the query modes with requests.
fn table_rows(r: &BenchReport) -> Vec<Vec<String>> {
    let failed: u64 = r.errors.values().sum();
    let errors = if failed == 0 {
        "0".to_owned()
    } else {
        let by_code: Vec<String> = r.errors.iter().map(|(c, n)| format!("{c}: {n}")).collect();
        format!("{failed} ({})", by_code.join(", "))
    };
    let mut rows = vec![vec![
        "mode".into(),
        format!("{} × {} connections", r.mode, r.connections),
    ]];
    if let Some(query) = &r.query {
        let shown = if query.is_empty() { "(none)" } else { query };
        rows.push(vec!["query".into(), shown.to_owned()]);
    }
    if let Some(seed) = r.seed {
        rows.push(vec!["seed".into(), seed.to_string()]);
    }
    let duration = vec!["duration".into(), format!("{:.2} s", r.seconds)];
    let requests = vec!["requests".into(), r.requests.to_string()];
    let per_second = vec!["requests/s".into(), format!("{:.1}", r.requests_per_second)];
    if r.query.is_none() {
        rows.extend([
            vec!["events".into(), r.events.to_string()],
            duration,
            vec!["events/s".into(), format!("{:.0}", r.events_per_second)],
            requests,
            per_second,
        ]);
    } else {
        let answered = r.requests - failed;
        let events = if answered == 0 {
            r.events.to_string()
        } else {
            format!(
                "{} ({:.1} per request)",
                r.events,
                r.events as f64 / answered as f64
            )
        };
        let label = if r.mode == BenchMode::Count.as_str() {
            "events counted"
        } else {
            "events returned"
        };
        rows.extend([requests, duration, per_second, vec![label.into(), events]]);
    }
    let latency = if r.requests == failed {
        "none: no request succeeded".to_owned()
    } else {
        format!(
            "p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            r.latency_ms.p50, r.latency_ms.p90, r.latency_ms.p99, r.latency_ms.max
        )
    };
    rows.extend([
        vec!["latency".into(), latency],
        vec!["errors".into(), errors],
    ]);
    rows
}

/// Realistic random events (~400 bytes): types, actors and services from fixed pools, IPs,
/// and a few details. Event `i` of a generator is a function of its seed and `i` alone.
#[derive(Debug)]
pub struct EventGen {
    seed: u64,
    /// Prefix of every id this generator makes: from the seed, or unique to the run.
    prefix: String,
}

const TYPES: [(&str, &str, u8); 10] = [
    ("login.succeeded", "login", 1),
    ("login.failed", "login", 6),
    ("account.created", "create", 2),
    ("account.updated", "update", 2),
    ("account.deactivated", "delete", 7),
    ("billing.charged", "charge", 3),
    ("permission.granted", "grant", 5),
    ("api_key.rotated", "rotate", 4),
    ("file.downloaded", "read", 1),
    ("mfa.disabled", "update", 9),
];
const SERVICES: [&str; 6] = [
    "auth",
    "billing",
    "accounts",
    "storage",
    "gateway",
    "admin-console",
];
const PLANS: [&str; 4] = ["free", "pro", "team", "enterprise"];
const AGENTS: [&str; 4] = [
    "Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) Safari/605.1.15",
    "curl/8.7.1",
    "vigil-sdk-go/1.4.2",
];

impl EventGen {
    pub fn new(seed: u64, prefix: String) -> Self {
        Self { seed, prefix }
    }

    /// Event number `index`, with id `<prefix>-<index>`.
    pub fn event(&self, index: u64) -> Value {
        let rng = &mut unit_rng(self.seed, index);
        let (event_type, action, base_severity) = TYPES[rng.random_range(0..TYPES.len())];
        let failed = event_type.ends_with("failed") || rng.random_bool(0.05);
        let severity = (base_severity + u8::from(failed) * 2 + rng.random_range(0..2)).min(10);
        let actor_n = rng.random_range(0..ACTORS);
        let ip = format!(
            "10.{}.{}.{}",
            rng.random_range(0..64u8),
            rng.random_range(0..=255u8),
            rng.random_range(1..255u8)
        );
        let request_id: String = (0..16)
            .map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)]))
            .collect();
        json!({
            "id": format!("{}-{index}", self.prefix),
            "type": event_type,
            "severity": severity,
            "actor": {
                "id": format!("u-{actor_n}"),
                "type": if actor_n % 10 == 0 { "service" } else { "user" },
                "ip": ip,
            },
            "source": SERVICES[rng.random_range(0..SERVICES.len())],
            "action": action,
            "outcome": if failed { "failure" } else { "success" },
            "resource": {"type": "account", "id": format!("acct-{}", rng.random_range(0..20_000u32))},
            "details": {
                "request_id": request_id,
                "user_agent": AGENTS[rng.random_range(0..AGENTS.len())],
                "plan": PLANS[rng.random_range(0..PLANS.len())],
                "attempt": rng.random_range(1..4u8),
                "amount": f64::from(rng.random_range(0..100_000u32)) / 100.0,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn bench_args(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        let cli = Cli::try_parse_from(["vigil", "bench"].iter().chain(args))?;
        let Command::Bench(args) = cli.command else {
            panic!("not bench")
        };
        Ok(args)
    }

    fn template(text: &str) -> QueryTemplate {
        QueryTemplate::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    /// The URL `vigil_client` requests for `params` (it encodes parameters the same way).
    fn url_for(params: &QueryParams) -> Url {
        let mut url = Url::parse("http://127.0.0.1:7878/v1/events").unwrap();
        url.query_pairs_mut().extend_pairs(params.to_pairs());
        url
    }

    #[test]
    fn only_loopback_targets_pass_by_default() {
        for ok in [
            "http://127.0.0.1:7878",
            "http://127.1.2.3/",
            "http://localhost:1",
            "http://[::1]:7878",
        ] {
            assert!(is_loopback(&Url::parse(ok).unwrap()), "{ok}");
        }
        for remote in [
            "http://10.0.0.1:7878",
            "http://example.com",
            "http://[2001:db8::1]/",
            "http://0.0.0.0:1",
        ] {
            assert!(!is_loopback(&Url::parse(remote).unwrap()), "{remote}");
        }
    }

    #[test]
    fn generated_events_are_valid_realistic_and_unique() {
        let g = EventGen::new(7, "bench-test".into());
        let mut total = 0;
        let mut ids = std::collections::HashSet::new();
        for i in 0..200 {
            let e = g.event(i);
            let bytes = serde_json::to_vec(&e).unwrap().len();
            total += bytes;
            assert!(ids.insert(e["id"].as_str().unwrap().to_owned()));
            vigil_event::normalize(e, &vigil_event::Limits::default()).expect("a valid event");
        }
        let mean = total / 200;
        assert!((300..=500).contains(&mean), "mean event size {mean} bytes");
    }

    #[test]
    fn a_seed_fixes_every_event_whatever_order_they_are_made_in() {
        let a = EventGen::new(42, "bench-s42".into());
        let b = EventGen::new(42, "bench-s42".into());
        let forward: Vec<Value> = (0..50).map(|i| a.event(i)).collect();
        let backward: Vec<Value> = (0..50).rev().map(|i| b.event(i)).collect();
        assert!(forward.iter().eq(backward.iter().rev()));
        assert_eq!(forward[3]["id"], "bench-s42-3");

        let other = EventGen::new(43, "bench-s42".into());
        let differing = (0..50)
            .filter(|&i| other.event(i) != forward[i as usize])
            .count();
        assert!(differing > 45, "only {differing} of 50 events differ");
    }

    #[test]
    fn the_budget_is_never_overspent_and_numbers_units_without_gaps() {
        let budget = Budget::new(Instant::now() + Duration::from_secs(60), Some(2_500));
        let claims: Vec<Range<u64>> = std::iter::from_fn(|| budget.claim(1_000)).collect();
        assert_eq!(claims, [0..1_000, 1_000..2_000, 2_000..2_500]);

        let unbounded = Budget::new(Instant::now() + Duration::from_secs(60), None);
        assert_eq!(unbounded.claim(3), Some(0..3));
        assert_eq!(unbounded.claim(3), Some(3..6));

        let expired = Budget::new(Instant::now(), None);
        assert_eq!(expired.claim(10), None);
    }

    #[test]
    fn query_parameters_become_the_query_and_its_filters() {
        let t = template(
            "q=severity>=7 AND type:login.failed&from=-1h&limit=10&order=asc&actor.id=u-17&details.plan=pro",
        );
        let want = QueryParams::new()
            .q("severity>=7 AND type:login.failed")
            .from("-1h")
            .limit(10)
            .order(Order::Asc)
            .filter("actor.id", "u-17")
            .filter("details.plan", "pro");
        assert_eq!(t.params, want);
        assert_eq!(template("").params, QueryParams::new());
        assert_eq!(
            template("type=a&&type=b&").params,
            QueryParams::new().filter("type", "a").filter("type", "b")
        );
    }

    #[test]
    fn escapes_are_decoded_and_everything_else_kept_as_written() {
        let t = template("q=details.note:%22a%26b%22&to=2024-05-01T00:00:00+02:00&k%3Dx=v=w");
        assert_eq!(t.params.q.as_deref(), Some(r#"details.note:"a&b""#));
        assert_eq!(t.params.to.as_deref(), Some("2024-05-01T00:00:00+02:00"));
        assert_eq!(t.params.filters, [("k=x".to_owned(), "v=w".to_owned())]);
        assert_eq!(template("x=%C3%A9").params.filters[0].1, "é");
    }

    #[test]
    fn malformed_queries_are_refused_with_the_reason() {
        for (text, reason) in [
            ("limit", "expected NAME=VALUE"),
            ("=u-1", "name is missing"),
            ("q=a&q=b", "q is given twice"),
            ("limit=1&limit=2", "limit is given twice"),
            ("limit=ten", "whole number"),
            ("order=up", "asc or desc"),
            ("q=100%", "escape"),
            ("q=%+1", "escape"),
            ("q=%zz", "escape"),
            ("q=%ff", "UTF-8"),
        ] {
            let err = QueryTemplate::parse(text).unwrap_err();
            assert!(err.contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn query_values_are_url_encoded_and_read_back_unchanged() {
        let t = template("q=severity>=7 AND actor.ip:10.*&limit=10&details.q=a%26b=c&from=-15m");
        let url = url_for(&t.params);
        assert_eq!(
            url.query(),
            Some("q=severity%3E%3D7+AND+actor.ip%3A10.*&from=-15m&limit=10&details.q=a%26b%3Dc")
        );
        let read_back: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(read_back, t.params.to_pairs());
        assert_eq!(
            read_back[0],
            ("q".to_owned(), "severity>=7 AND actor.ip:10.*".to_owned())
        );
    }

    #[test]
    fn placeholders_draw_a_reproducible_number_below_the_pool() {
        let t = template("actor.id=u-{rand}&q=resource.id:acct-{rand}&limit=5");
        assert!(t.has_placeholder());
        assert!(!template("actor.id=u-1&limit=5").has_placeholder());
        assert!(QueryTemplate::parse("limit={rand}").is_err());
        assert_eq!(
            t.render(17),
            QueryParams::new()
                .q("resource.id:acct-17")
                .limit(5)
                .filter("actor.id", "u-17")
        );

        let plan = |seed| QueryPlan {
            template: t.clone(),
            pool: Some(50),
            seed,
        };
        let (a, b) = (plan(9), plan(9));
        let seen: std::collections::BTreeSet<String> = (0..500)
            .map(|i| {
                let p = a.params(i);
                assert_eq!(p, b.params(i), "request {i}");
                p.filters[0].1.clone()
            })
            .collect();
        let allowed: std::collections::BTreeSet<String> =
            (0..50).map(|n| format!("u-{n}")).collect();
        assert_eq!(seen, allowed, "500 draws cover the pool and stay inside it");
        assert!((0..20).any(|i| plan(10).params(i) != a.params(i)));

        let fixed = QueryPlan {
            template: template("actor.id=u-1"),
            pool: None,
            seed: 1,
        };
        assert_eq!(
            fixed.params(3),
            QueryParams::new().filter("actor.id", "u-1")
        );
    }

    #[test]
    fn query_options_parse_and_apply_only_to_their_modes() {
        let args = bench_args(&[
            "--mode",
            "query",
            "--query",
            "actor.id=u-{rand}&limit=10",
            "--pool",
            "100",
            "--requests",
            "50",
            "--seed",
            "3",
            "--connections",
            "1",
        ])
        .unwrap();
        assert_eq!(args.mode, BenchMode::Query);
        assert_eq!(args.requests, Some(50));
        assert_eq!((args.pool, args.seed), (Some(100), Some(3)));
        assert_eq!(
            args.query.as_ref().unwrap().params,
            QueryParams::new().limit(10).filter("actor.id", "u-{rand}")
        );
        check_options(&args).unwrap();
        check_options(&bench_args(&["--mode", "count"]).unwrap()).unwrap();
        check_options(&bench_args(&["--seed", "1", "--events", "10"]).unwrap()).unwrap();

        let clap_refusals: [&[&str]; 3] = [
            &["--mode", "query", "--query", "q=a&q=b"],
            &["--mode", "query", "--requests", "0"],
            &["--mode", "count", "--pool", "0"],
        ];
        for args in clap_refusals {
            assert!(bench_args(args).is_err(), "{args:?}");
        }
        let usage_refusals: [&[&str]; 5] = [
            &["--query", "limit=1"],
            &["--mode", "single", "--requests", "5"],
            &["--pool", "5"],
            &["--mode", "query", "--events", "5"],
            &["--mode", "count", "--query", "actor.id=u-1", "--pool", "5"],
        ];
        for args in usage_refusals {
            let err = check_options(&bench_args(args).unwrap()).unwrap_err();
            assert_eq!(err.code, "usage", "{args:?}");
        }
    }

    #[test]
    fn query_reports_lead_with_requests_and_name_what_the_events_are() {
        let report = |mode: BenchMode, query: Option<&str>| BenchReport {
            mode: mode.as_str(),
            connections: 1,
            query: query.map(str::to_owned),
            seed: None,
            events: 90,
            requests: 10,
            seconds: 1.0,
            events_per_second: 90.0,
            requests_per_second: 10.0,
            latency_ms: Latency {
                p50: 1.0,
                p90: 2.0,
                p99: 3.0,
                max: 4.0,
            },
            errors: BTreeMap::from([("invalid_query".to_owned(), 1)]),
            error_messages: BTreeMap::new(),
        };
        let labels = |r: &BenchReport| -> Vec<String> {
            table_rows(r)
                .into_iter()
                .map(|row| row[0].clone())
                .collect()
        };
        let query = report(BenchMode::Query, Some("limit=10"));
        assert_eq!(
            labels(&query),
            [
                "mode",
                "query",
                "requests",
                "duration",
                "requests/s",
                "events returned",
                "latency",
                "errors"
            ]
        );
        let rows = table_rows(&query);
        assert_eq!(rows[5][1], "90 (10.0 per request)");
        assert_eq!(rows[7][1], "1 (invalid_query: 1)");
        let all_failed = BenchReport {
            errors: BTreeMap::from([("invalid_query".to_owned(), 10)]),
            ..query.clone()
        };
        assert_eq!(table_rows(&all_failed)[6][1], "none: no request succeeded");
        assert!(labels(&report(BenchMode::Count, Some(""))).contains(&"events counted".into()));
        assert_eq!(
            labels(&report(BenchMode::Batch, None))[..3],
            ["mode", "events", "duration"]
        );

        let json = serde_json::to_value(&query).unwrap();
        assert_eq!(json["query"], "limit=10");
        assert_eq!(json["errors"]["invalid_query"], 1);
        assert!(json.get("seed").is_none() && json.get("error_messages").is_none());
        let ingest = serde_json::to_value(report(BenchMode::Batch, None)).unwrap();
        assert!(ingest.get("query").is_none());
    }
}
