//! `vigil generate`: the security-event daemon. Produces a steady stream of realistic events
//! ([`scenario`]) and delivers them to a target until `--count` is reached or SIGINT/SIGTERM
//! arrives, then prints what happened.
//!
//! The events go in batches of up to `--batch-size`, one batch at a time ([`target`]): over
//! HTTP to `POST /v1/events`, over NATS to JetStream on `events.<tenant>`, each batch
//! acknowledged in full before the next leaves. `--rate` is held by a [`Pacer`] that counts
//! what is due from the elapsed time since the start, so slow requests and timer jitter do not
//! make the average drift; while the target is slower than the rate, the generator falls behind
//! by at most one second's worth of events and then moves its schedule instead of flooding the
//! target when it recovers.
//!
//! A batch answered 429 or 503, lost in transport, or refused by an unavailable NATS (not
//! connected, no acknowledgement in time, no stream yet, stream full) is sent again unchanged
//! (its ids make that safe) after `Retry-After` or a growing backoff, a bounded number of
//! times; any other refusal is counted by error code and the stream goes on. A refusal that
//! every request would get (bad credential, missing scope, a batch over the server's limits, a
//! URL that is not a vigil server, a NATS configuration that cannot work) stops the run. The
//! first signal stops generating, lets the request in flight finish (for at most [`GRACE`])
//! and prints the summary; a second signal abandons it.

mod scenario;
mod target;

use std::collections::BTreeMap;
use std::io::Write;
use std::pin::pin;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{ArgGroup, Args};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::Value;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use vigil_bus::BusError;
use vigil_client::ClientError;
use vigil_event::TenantId;

use crate::args::{ClientArgs, NatsArgs, OutputArgs, connect};
use crate::error::CliError;
use crate::output::{OutputFormat, simple_table, write_json};

pub use scenario::EventGenerator;
use target::{Ack, SendError, Target};

/// `vigil generate`. The target is one of a group: exactly one of `--http` and `--nats`.
#[derive(Debug, Args)]
#[command(
    group(ArgGroup::new("target").required(true).args(["http", "nats"])),
    after_help = "Stops after --count events, or at SIGINT/SIGTERM: the request in flight \
                  finishes (a second signal abandons it), then the summary is printed."
)]
pub struct GenerateArgs {
    /// Send to the vigil server at URL: batches to POST /v1/events, authenticated with
    /// VIGIL_TOKEN (a key with scope events:write).
    #[arg(long, value_name = "URL")]
    pub http: Option<String>,
    /// Or publish to NATS JetStream (--nats URL), on `events.<tenant>`, where vigil's writers
    /// take them.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Events per second (fractions allowed: 0.2 is one every five seconds); 0 sends as fast
    /// as the target accepts.
    #[arg(long, default_value_t = 100.0, value_parser = parse_rate, value_name = "N")]
    pub rate: f64,
    /// Stop after N events [default: run until SIGINT or SIGTERM].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Reproducible events: the same seed gives the same events with the same ids
    /// (gen-s<SEED>-0, -1, …) whatever --rate and --batch-size, and without a `time`, so the
    /// server stamps its receipt time and a re-run is recognised as duplicates [default:
    /// random events, ids unique to the run, `time` set when generated].
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Tenant the events are for. Over NATS they are published on `events.<TENANT>`
    /// [default: `default`]. Over HTTP the server files events under the credential's tenant
    /// and this is not sent: it must name that tenant.
    #[arg(long, value_name = "TENANT")]
    pub tenant: Option<String>,
    /// Most events per request.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000), value_name = "N")]
    pub batch_size: u64,
    /// API key or JWT. Prefer the environment variable: command-line arguments are visible to
    /// other users of the machine.
    #[arg(
        long,
        env = "VIGIL_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// The summary printed at the end.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Events per second: a finite number, 0 or more.
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= 0.0 => Ok(rate),
        _ => Err(format!(
            "expected events per second, 0 or more (0: as fast as possible), got {s:?}"
        )),
    }
}

/// How far behind its schedule the generator may fall and still catch up.
const MAX_CATCH_UP: Duration = Duration::from_secs(1);
/// Shortest and longest pause between two looks at what is due: batches form within the
/// longest, so at low rates events still leave within a quarter of a second of being due.
const MIN_TICK: Duration = Duration::from_millis(10);
const MAX_TICK: Duration = Duration::from_millis(250);
/// Attempts at one batch while the target says "later" (429, 503) or cannot be reached.
const MAX_ATTEMPTS: u32 = 6;
/// First pause before sending a batch again; doubles with each attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest pause before sending a batch again, whatever `Retry-After` asks for.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long the request in flight may still take after a stop signal.
const GRACE: Duration = Duration::from_secs(10);
/// Code under which the events of an abandoned request are counted: their fate is unknown.
const ABANDONED: &str = "abandoned";
/// Tenant of the events published over NATS without `--tenant`.
const DEFAULT_TENANT: &str = "default";

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoppedBy {
    /// `--count` events were sent.
    Count,
    /// SIGINT or SIGTERM.
    Signal,
    /// A refusal every further request would get.
    Error,
}

/// What a run did. Every event sent is either acknowledged (accepted or duplicate) or failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenerateReport {
    /// Where the events went.
    pub target: String,
    /// `--seed`, when the run was seeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Events handed to the target (each once, however often its batch was retried).
    pub sent: u64,
    /// Events the target stored (over NATS: the stream took them, for writers to persist).
    pub accepted: u64,
    /// Events the target already held: same id and content over HTTP; over NATS, same id
    /// within the stream's duplicate window.
    pub duplicates: u64,
    /// Events not acknowledged.
    pub failed: u64,
    /// Failed events by error code (`abandoned`: the request was cut short at shutdown, so
    /// they may or may not be stored).
    pub errors: BTreeMap<String, u64>,
    /// Requests made, retries included.
    pub requests: u64,
    pub retries: u64,
    pub seconds: f64,
    /// Acknowledged events per second.
    pub events_per_second: f64,
    pub stopped_by: StoppedBy,
    /// The first message of each error code, for the person reading the summary.
    #[serde(skip)]
    pub error_messages: BTreeMap<String, String>,
}

impl GenerateReport {
    fn new(target: String, seed: Option<u64>) -> Self {
        Self {
            target,
            seed,
            sent: 0,
            accepted: 0,
            duplicates: 0,
            failed: 0,
            errors: BTreeMap::new(),
            requests: 0,
            retries: 0,
            seconds: 0.0,
            events_per_second: 0.0,
            stopped_by: StoppedBy::Count,
            error_messages: BTreeMap::new(),
        }
    }

    fn acknowledged(&mut self, ack: Ack) {
        self.duplicates += ack.duplicates;
        self.accepted += ack.events.saturating_sub(ack.duplicates);
    }

    /// Counts `events` as failed with `code`; returns whether the code is new to this run.
    fn count_failure(&mut self, events: u64, code: &str, message: String) -> bool {
        self.failed += events;
        *self.errors.entry(code.to_owned()).or_default() += events;
        let new = !self.error_messages.contains_key(code);
        self.error_messages
            .entry(code.to_owned())
            .or_insert(message);
        new
    }

    fn finish(&mut self, elapsed: Duration, stopped_by: StoppedBy) {
        self.seconds = elapsed.as_secs_f64();
        self.events_per_second = (self.accepted + self.duplicates) as f64 / self.seconds.max(1e-9);
        self.stopped_by = stopped_by;
    }
}

/// Releases events at `rate` per second counted from a fixed origin: event `k` is due at
/// `k / rate` seconds (the first at once). Because what is due is computed from the elapsed
/// time rather than accumulated per tick, late wake-ups and slow requests do not lower the
/// average rate. A backlog beyond [`MAX_CATCH_UP`] worth of events is forgiven: the schedule
/// moves on rather than flooding a target that has just recovered.
#[derive(Debug)]
pub struct Pacer {
    rate: f64,
    origin: Instant,
    /// Events released or forgiven so far.
    accounted: u64,
    /// Most events that may be due at once.
    max_backlog: u64,
}

impl Pacer {
    pub fn new(rate: f64, origin: Instant) -> Self {
        let max_backlog = (rate * MAX_CATCH_UP.as_secs_f64()).ceil().max(1.0) as u64;
        Self {
            rate,
            origin,
            accounted: 0,
            max_backlog,
        }
    }

    /// Events due at `now` and not yet released (at most one second's worth).
    pub fn due(&mut self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin).as_secs_f64();
        let scheduled = (self.rate * elapsed).floor() as u64 + 1;
        let due = scheduled.saturating_sub(self.accounted);
        if due > self.max_backlog {
            self.accounted += due - self.max_backlog;
            return self.max_backlog;
        }
        due
    }

    /// Marks `n` due events as sent.
    pub fn release(&mut self, n: u64) {
        self.accounted += n;
    }

    /// How often to look at what is due: about one batch's worth, within [`MIN_TICK`] and
    /// [`MAX_TICK`].
    fn tick(&self, batch_size: u64) -> Duration {
        Duration::from_secs_f64(batch_size as f64 / self.rate).clamp(MIN_TICK, MAX_TICK)
    }
}

/// How many stop signals (SIGINT, SIGTERM) have arrived: 1 stops generating, 2 abandons the
/// request in flight.
#[derive(Debug, Clone)]
struct Stop(watch::Receiver<u32>);

impl Stop {
    /// Counts SIGINT and SIGTERM from now on, in place of their default (ending the process).
    fn install() -> std::io::Result<Self> {
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let (tx, rx) = watch::channel(0u32);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(()) = interrupt.recv() => {}
                    Some(()) = terminate.recv() => {}
                    else => return,
                }
                tx.send_modify(|n| *n += 1);
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(Self(rx))
    }

    fn requested(&self) -> bool {
        *self.0.borrow() >= 1
    }

    /// Resolves once `n` signals have arrived.
    async fn reached(&mut self, n: u32) {
        if self.0.wait_for(|&count| count >= n).await.is_err() {
            // No more signals can come.
            std::future::pending::<()>().await;
        }
    }
}

/// The fate of one batch.
#[derive(Debug)]
enum Delivery {
    Acknowledged(Ack),
    /// Not acknowledged; the stream goes on.
    Failed(SendError),
    /// A refusal that every further request would get.
    Fatal(SendError),
    /// Cut short at shutdown: the target may or may not have stored it.
    Abandoned,
}

/// Whether sending the same batch again may succeed: the target asked to wait (429, 503), or
/// the answer was lost (the ids make a second attempt safe), or NATS is unavailable for now
/// (not connected, no acknowledgement in time, no stream yet, stream full).
fn is_transient(e: &SendError) -> bool {
    match e {
        SendError::Http(e) => e.is_retryable() || matches!(e, ClientError::Transport(_)),
        SendError::Nats(e) => matches!(e, BusError::Unavailable(_)),
        SendError::InvalidEvent(_) => false,
    }
}

/// Whether every request would be refused the same way: the request itself is wrong, not
/// one of its events (401, 403, 404, 405, a batch over the limits, a NATS configuration that
/// cannot work, …). 408, 409, 422 and 429 concern one request or its events.
fn is_fatal(e: &SendError) -> bool {
    match e {
        SendError::Http(e) => matches!(
            e.status(),
            Some(s) if (400..500).contains(&s) && !matches!(s, 408 | 409 | 422 | 429)
        ),
        SendError::Nats(e) => matches!(e, BusError::Config(_)),
        SendError::InvalidEvent(_) => false,
    }
}

/// The pause before attempt `attempt + 1` (`attempt` ≥ 1): `Retry-After` when the target
/// sent one, else a doubling backoff; never more than [`MAX_BACKOFF`].
fn retry_wait(attempt: u32, e: &SendError) -> Duration {
    match e {
        SendError::Http(ClientError::Api {
            retry_after: Some(wait),
            ..
        }) => (*wait).min(MAX_BACKOFF),
        _ => FIRST_BACKOFF
            .saturating_mul(1 << (attempt.saturating_sub(1)).min(16))
            .min(MAX_BACKOFF),
    }
}

/// Sends one batch, retrying what may pass later. Counts requests and retries in `report`.
async fn deliver(
    target: &Target,
    events: &[Value],
    stop: &mut Stop,
    report: &mut GenerateReport,
) -> Delivery {
    let mut attempt = 0;
    loop {
        attempt += 1;
        report.requests += 1;
        let mut request = pin!(target.send(events));
        let answer = tokio::select! {
            answer = &mut request => answer,
            () = stop.reached(1), if !stop.requested() => {
                // Stopping: the request in flight may still finish, within the grace period.
                tokio::select! {
                    answer = &mut request => answer,
                    () = tokio::time::sleep(GRACE) => return Delivery::Abandoned,
                    () = stop.reached(2) => return Delivery::Abandoned,
                }
            }
        };
        let error = match answer {
            Ok(ack) => return Delivery::Acknowledged(ack),
            Err(e) if is_fatal(&e) => return Delivery::Fatal(e),
            Err(e) => e,
        };
        if !is_transient(&error) || attempt >= MAX_ATTEMPTS || stop.requested() {
            return Delivery::Failed(error);
        }
        tokio::select! {
            () = tokio::time::sleep(retry_wait(attempt, &error)) => report.retries += 1,
            () = stop.reached(1) => return Delivery::Failed(error),
        }
    }
}

/// The target the command line names: `--http` or `--nats` (clap lets exactly one through).
async fn target(args: &GenerateArgs) -> anyhow::Result<Target> {
    let tenant = args.tenant.as_deref().map_or(Ok(None), |tenant| {
        TenantId::parse(tenant)
            .map(Some)
            .map_err(|e| CliError::usage(format!("--tenant {tenant:?}: {}", e.message)))
    })?;
    if let Some(url) = &args.http {
        let client = connect(&ClientArgs {
            url: url.clone(),
            token: args.token.clone(),
        })?;
        return Ok(Target::Http(client));
    }
    let url = args
        .nats
        .nats
        .as_deref()
        .context("no target: pass --http URL or --nats URL")?;
    let tenant = match tenant {
        Some(tenant) => tenant,
        None => TenantId::parse(DEFAULT_TENANT)
            .map_err(|e| CliError::usage(format!("tenant {DEFAULT_TENANT:?}: {}", e.message)))?,
    };
    let bus = args.nats.connect(url, "vigil-generate").await?;
    Ok(Target::Nats {
        bus: Box::new(bus),
        tenant,
    })
}

pub async fn run(args: GenerateArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let target = target(&args).await?;
    let mut stop = Stop::install().context("installing signal handlers")?;
    let mut generator = match args.seed {
        Some(seed) => EventGenerator::seeded(seed),
        None => EventGenerator::unseeded(),
    };
    let mut report = GenerateReport::new(target.describe(), args.seed);
    let limit = args.count.unwrap_or(u64::MAX);
    let started = Instant::now();
    let mut pacer = (args.rate > 0.0).then(|| Pacer::new(args.rate, started));
    let mut ticker =
        tokio::time::interval(pacer.as_ref().map_or(MAX_TICK, |p| p.tick(args.batch_size)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let progress = ProgressBar::new_spinner();
    progress.set_style(
        ProgressStyle::with_template("{spinner} generate: {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    progress.enable_steady_tick(Duration::from_millis(200));

    let mut fatal = None;
    let stopped_by = loop {
        if stop.requested() {
            break StoppedBy::Signal;
        }
        let remaining = limit - report.sent;
        if remaining == 0 {
            break StoppedBy::Count;
        }
        let mut n = args.batch_size.min(remaining);
        if let Some(pacer) = &mut pacer {
            let due = pacer.due(Instant::now());
            if due == 0 {
                tokio::select! {
                    _ = ticker.tick() => continue,
                    () = stop.reached(1) => break StoppedBy::Signal,
                }
            }
            n = n.min(due);
            pacer.release(n);
        }
        let events: Vec<Value> = (0..n).map(|_| generator.next_event()).collect();
        report.sent += n;
        match deliver(&target, &events, &mut stop, &mut report).await {
            Delivery::Acknowledged(ack) => report.acknowledged(ack),
            Delivery::Failed(e) => {
                if report.count_failure(n, e.code(), e.to_string()) {
                    progress.suspend(|| {
                        eprintln!("generate: {n} event(s) not sent: {e} ({})", e.code())
                    });
                }
                // Without a pause, a target that refuses every batch would be hammered as
                // fast as it answers.
                tokio::select! {
                    () = tokio::time::sleep(FIRST_BACKOFF) => {}
                    () = stop.reached(1) => {}
                }
            }
            Delivery::Fatal(e) => {
                report.count_failure(n, e.code(), e.to_string());
                fatal = Some(e);
                break StoppedBy::Error;
            }
            Delivery::Abandoned => {
                report.count_failure(
                    n,
                    ABANDONED,
                    "abandoned at shutdown: the target may or may not have stored them".into(),
                );
                break StoppedBy::Signal;
            }
        }
        progress.set_message(format!(
            "{} sent, {} accepted, {} duplicates, {} failed",
            report.sent, report.accepted, report.duplicates, report.failed
        ));
    };
    progress.finish_and_clear();
    report.finish(started.elapsed(), stopped_by);
    print_report(out, args.output.format, &report)?;
    out.flush().context("writing to stdout")?;

    if let Some(e) = fatal {
        let hint = match e.code() {
            "batch_too_large" | "body_too_large" => " (lower --batch-size)",
            _ => "",
        };
        return Err(e.into_error().context(format!("generating stopped{hint}")));
    }
    let mut stderr = std::io::stderr().lock();
    for (code, message) in &report.error_messages {
        let n = report.errors.get(code).copied().unwrap_or_default();
        writeln!(
            stderr,
            "generate: {n} event(s) failed with {code}, first: {message}"
        )?;
    }
    if report.failed > 0 {
        return Err(CliError::new(
            "generate_incomplete",
            format!(
                "{} of {} events were not acknowledged",
                report.failed, report.sent
            ),
        )
        .into());
    }
    Ok(())
}

fn print_report(
    out: &mut dyn Write,
    format: OutputFormat,
    r: &GenerateReport,
) -> anyhow::Result<()> {
    let stopped_by = serde_json::to_value(r.stopped_by)?;
    let stopped_by = stopped_by.as_str().unwrap_or_default();
    match format {
        OutputFormat::Json => write_json(out, &serde_json::to_value(r)?)?,
        OutputFormat::Ndjson => writeln!(out, "{}", serde_json::to_string(r)?)?,
        OutputFormat::Csv => {
            writeln!(
                out,
                "sent,accepted,duplicates,failed,requests,retries,seconds,events_per_second,stopped_by"
            )?;
            writeln!(
                out,
                "{},{},{},{},{},{},{:.3},{:.1},{stopped_by}",
                r.sent,
                r.accepted,
                r.duplicates,
                r.failed,
                r.requests,
                r.retries,
                r.seconds,
                r.events_per_second
            )?;
        }
        OutputFormat::Table => {
            let failed = if r.failed == 0 {
                "0".to_owned()
            } else {
                let by_code: Vec<String> =
                    r.errors.iter().map(|(c, n)| format!("{c}: {n}")).collect();
                format!("{} ({})", r.failed, by_code.join(", "))
            };
            let mut rows = vec![vec!["target".to_owned(), r.target.clone()]];
            if let Some(seed) = r.seed {
                rows.push(vec!["seed".into(), seed.to_string()]);
            }
            rows.extend([
                vec!["sent".into(), r.sent.to_string()],
                vec!["accepted".into(), r.accepted.to_string()],
                vec!["duplicates".into(), r.duplicates.to_string()],
                vec!["failed".into(), failed],
                vec![
                    "requests".into(),
                    format!("{} ({} retries)", r.requests, r.retries),
                ],
                vec!["duration".into(), format!("{:.2} s", r.seconds)],
                vec![
                    "rate".into(),
                    format!("{:.1} events/s", r.events_per_second),
                ],
                vec!["stopped by".into(), stopped_by.to_owned()],
            ]);
            writeln!(out, "{}", simple_table(&["metric", "value"], rows))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn generate_args(args: &[&str]) -> Result<GenerateArgs, clap::Error> {
        let cli = Cli::try_parse_from(["vigil", "generate"].iter().chain(args))?;
        let Command::Generate(args) = cli.command else {
            panic!("not generate")
        };
        Ok(args)
    }

    fn api_error(status: u16, code: &str, retry_after: Option<Duration>) -> SendError {
        SendError::Http(ClientError::Api {
            status,
            code: code.to_owned(),
            message: format!("{code} message"),
            details: None,
            retry_after,
        })
    }

    #[test]
    fn options_parse_with_their_defaults_and_a_target_is_required() {
        let args = generate_args(&["--http", "http://127.0.0.1:7878"]).unwrap();
        assert_eq!(args.http.as_deref(), Some("http://127.0.0.1:7878"));
        assert_eq!((args.rate, args.batch_size), (100.0, 100));
        assert_eq!((args.count, args.seed, args.tenant), (None, None, None));

        let args = generate_args(&[
            "--http",
            "http://h:1",
            "--rate",
            "0",
            "--count",
            "250",
            "--seed",
            "7",
            "--batch-size",
            "500",
            "--tenant",
            "acme",
            "-o",
            "json",
        ])
        .unwrap();
        assert_eq!(
            (args.rate, args.count, args.seed),
            (0.0, Some(250), Some(7))
        );
        assert_eq!(args.batch_size, 500);
        assert_eq!(args.output.format, OutputFormat::Json);
        assert_eq!(
            generate_args(&["--http", "http://h:1", "--rate", "0.5"])
                .unwrap()
                .rate,
            0.5
        );

        let refused: [&[&str]; 7] = [
            &[],
            &["--rate", "10"],
            &["--http", "http://h:1", "--rate", "-1"],
            &["--http", "http://h:1", "--rate", "inf"],
            &["--http", "http://h:1", "--batch-size", "0"],
            &["--http", "http://h:1", "--batch-size", "10001"],
            &["--http", "http://h:1", "--count", "0"],
        ];
        for args in refused {
            assert!(generate_args(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn nats_is_the_other_target_and_exactly_one_is_given() {
        let args = generate_args(&[
            "--nats",
            "nats://generator:pw@n1:4222",
            "--nats-namespace",
            "staging",
            "--nats-inbox-prefix",
            "_INBOX.generator",
            "--tenant",
            "acme",
        ])
        .unwrap();
        assert_eq!(args.http, None);
        assert_eq!(
            args.nats.nats.as_deref(),
            Some("nats://generator:pw@n1:4222")
        );
        assert_eq!(args.nats.nats_namespace.as_deref(), Some("staging"));
        assert_eq!(
            args.nats.nats_inbox_prefix.as_deref(),
            Some("_INBOX.generator")
        );
        assert_eq!(args.tenant.as_deref(), Some("acme"));
        assert!(
            generate_args(&["--http", "http://h:1", "--nats", "nats://n1:4222"]).is_err(),
            "one target per run"
        );
        assert!(generate_args(&["--nats-namespace", "staging"]).is_err());
    }

    #[tokio::test]
    async fn a_bad_tenant_or_namespace_stops_the_run_before_it_connects() {
        let nats = |extra: &[&str]| {
            let mut args = vec!["--nats", "nats://127.0.0.1:1"];
            args.extend_from_slice(extra);
            generate_args(&args).unwrap()
        };
        let code = |e: anyhow::Error| e.downcast_ref::<CliError>().map(|e| e.code);
        let e = target(&nats(&["--tenant", "a b"])).await.unwrap_err();
        assert_eq!(code(e), Some("usage"));
        let e = target(&nats(&["--nats-namespace", "a.b"]))
            .await
            .unwrap_err();
        assert_eq!(code(e), Some("bus_config"));
    }

    #[test]
    fn the_pacer_holds_the_rate_however_irregularly_it_is_asked() {
        let origin = Instant::now();
        let mut pacer = Pacer::new(100.0, origin);
        assert_eq!(pacer.due(origin), 1, "the first event is due at once");
        pacer.release(1);
        assert_eq!(pacer.due(origin + Duration::from_millis(5)), 0);
        // Asked at uneven moments, releasing all that is due each time: after 10 s exactly
        // the 1 001 events due by then have left, whatever the moments were.
        let mut released = 1;
        let mut at = Duration::ZERO;
        for step in [13, 250, 7, 90, 400, 1, 333].iter().cycle() {
            at += Duration::from_millis(*step);
            if at > Duration::from_secs(10) {
                break;
            }
            let due = pacer.due(origin + at);
            pacer.release(due);
            released += due;
        }
        let due = pacer.due(origin + Duration::from_secs(10));
        pacer.release(due);
        released += due;
        assert_eq!(released, 1_001);
    }

    #[test]
    fn the_pacer_releases_due_events_in_parts_and_forgives_a_long_stall() {
        let origin = Instant::now();
        let mut pacer = Pacer::new(50.0, origin);
        // Due events may leave in several batches.
        assert_eq!(pacer.due(origin + Duration::from_millis(500)), 26);
        pacer.release(10);
        assert_eq!(pacer.due(origin + Duration::from_millis(500)), 16);
        pacer.release(16);
        // A minute without sending: one second's worth is caught up, the rest forgiven.
        assert_eq!(pacer.due(origin + Duration::from_secs(60)), 50);
        pacer.release(50);
        assert_eq!(pacer.due(origin + Duration::from_secs(60)), 0);
        assert_eq!(pacer.due(origin + Duration::from_millis(60_100)), 5);

        // Slow rates: one event every ten seconds.
        let mut slow = Pacer::new(0.1, origin);
        assert_eq!(slow.due(origin), 1);
        slow.release(1);
        assert_eq!(slow.due(origin + Duration::from_secs(9)), 0);
        assert_eq!(slow.due(origin + Duration::from_secs(10)), 1);
        assert_eq!(slow.tick(100), MAX_TICK);
        assert_eq!(Pacer::new(1e6, origin).tick(100), MIN_TICK);
        assert_eq!(
            Pacer::new(1_000.0, origin).tick(100),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn refusals_are_sorted_into_retry_count_and_stop() {
        let rate_limited = api_error(429, "rate_limited", Some(Duration::from_secs(2)));
        let unavailable = api_error(503, "unavailable", None);
        assert!(is_transient(&rate_limited) && is_transient(&unavailable));
        for (status, code) in [
            (422, "invalid_event"),
            (409, "id_conflict"),
            (500, "internal"),
        ] {
            let e = api_error(status, code, None);
            assert!(!is_transient(&e) && !is_fatal(&e), "{code}");
        }
        for (status, code) in [
            (401, "unauthenticated"),
            (403, "forbidden"),
            (400, "batch_too_large"),
            (413, "body_too_large"),
        ] {
            assert!(is_fatal(&api_error(status, code, None)), "{code}");
        }
        assert!(is_fatal(&SendError::Http(ClientError::Http {
            status: 404,
            body: "not found".into()
        })));
        assert!(!is_fatal(&rate_limited));

        // NATS: unavailable (not connected, no acknowledgement, no stream, stream full) is
        // worth another attempt; a configuration that cannot work is not.
        let unavailable = SendError::Nats(BusError::Unavailable("not connected".into()));
        assert!(is_transient(&unavailable) && !is_fatal(&unavailable));
        let config = SendError::Nats(BusError::Config("bad namespace".into()));
        assert!(!is_transient(&config) && is_fatal(&config));
        let waits: Vec<Duration> = (1..=3).map(|a| retry_wait(a, &unavailable)).collect();
        assert_eq!(waits, [FIRST_BACKOFF, FIRST_BACKOFF * 2, FIRST_BACKOFF * 4]);
        let invalid = SendError::InvalidEvent("no id".into());
        assert!(!is_transient(&invalid) && !is_fatal(&invalid));
    }

    #[test]
    fn retries_wait_as_asked_within_bounds() {
        let asked = api_error(429, "rate_limited", Some(Duration::from_secs(3)));
        assert_eq!(retry_wait(1, &asked), Duration::from_secs(3));
        let greedy = api_error(503, "unavailable", Some(Duration::from_secs(3_600)));
        assert_eq!(retry_wait(1, &greedy), MAX_BACKOFF);
        let silent = api_error(503, "unavailable", None);
        let waits: Vec<Duration> = (1..=8).map(|a| retry_wait(a, &silent)).collect();
        assert_eq!(waits[0], FIRST_BACKOFF);
        assert_eq!(waits[1], FIRST_BACKOFF * 2);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(waits[7], MAX_BACKOFF);
    }

    #[test]
    fn the_report_adds_up_and_prints_for_people_and_scripts() {
        let mut report = GenerateReport::new("http://127.0.0.1:7878/".into(), Some(7));
        report.sent = 300;
        report.acknowledged(Ack {
            events: 200,
            duplicates: 50,
        });
        assert!(report.count_failure(100, "internal", "boom".into()));
        assert!(!report.count_failure(0, "internal", "again".into()));
        report.finish(Duration::from_secs(2), StoppedBy::Signal);
        assert_eq!(
            (report.accepted, report.duplicates, report.failed),
            (150, 50, 100)
        );
        assert_eq!(report.events_per_second, 100.0);
        assert_eq!(report.error_messages["internal"], "boom");

        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["stopped_by"], "signal");
        assert_eq!(json["errors"], serde_json::json!({"internal": 100}));
        assert!(json.get("error_messages").is_none());

        let mut table = Vec::new();
        print_report(&mut table, OutputFormat::Table, &report).unwrap();
        let table = String::from_utf8(table).unwrap();
        assert!(table.contains("100 (internal: 100)"), "{table}");
        assert!(
            table.contains("signal") && table.contains("seed"),
            "{table}"
        );

        let mut csv = Vec::new();
        print_report(&mut csv, OutputFormat::Csv, &report).unwrap();
        let csv = String::from_utf8(csv).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[1].starts_with("300,150,50,100,"), "{csv}");
        assert!(lines[1].ends_with(",signal"), "{csv}");
    }
}
