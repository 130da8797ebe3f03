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
//! timing: two servers fed the same seed hold the same data set. The events are those of the
//! store test kit's realistic generator ([`vigil_store::fixtures::EventGen`]), so benchmarks of
//! the stores alone and of the whole server send the same kind of event.

mod query;

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
use serde_json::Value;
use vigil_client::{ClientError, QueryParams, Url};

use vigil_store::fixtures::{ACTORS, EventGen};

use self::query::{PLACEHOLDER, QueryPlan, QueryTemplate};
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
