//! `vigil bench`: drives a running server's ingest path over HTTP and reports throughput and
//! latency.
//!
//! Each connection sends one request at a time (a batch of `--batch-size` events, or a single
//! event), so latency is measured per request and throughput is what `--connections`
//! concurrent producers get. A run is bounded by `--duration` and, optionally, `--events`, and
//! by default only targets this machine.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};
use vigil_client::{Client, ClientError, Url};

use crate::cli::{BenchArgs, BenchMode};
use crate::output::{OutputFormat, simple_table, write_json};
use crate::{CliError, connect};

/// Highest latency the histogram tracks exactly (beyond, values are clamped): one minute.
const MAX_TRACKED_MICROS: u64 = 60_000_000;
/// How long a request may still take once the run's time is up.
const GRACE: Duration = Duration::from_secs(30);

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

/// The outcome of a run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub mode: &'static str,
    pub connections: u32,
    pub events: u64,
    pub requests: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    pub requests_per_second: f64,
    pub latency_ms: Latency,
    /// Failed requests by error code.
    pub errors: BTreeMap<String, u64>,
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
}

/// Limits shared by every connection.
struct Budget {
    stop_at: Instant,
    /// Events still to send, when `--events` bounds the run.
    remaining: Option<AtomicU64>,
    /// Events acknowledged so far (for the progress line).
    acked: AtomicU64,
}

impl Budget {
    /// Claims up to `want` events; 0 when the run is over.
    fn claim(&self, want: u64) -> u64 {
        if Instant::now() >= self.stop_at {
            return 0;
        }
        match &self.remaining {
            None => want,
            Some(left) => {
                let prev = left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                        Some(l.saturating_sub(want))
                    })
                    .unwrap_or(0);
                prev.min(want)
            }
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
    let per_request = match args.mode {
        BenchMode::Batch => args.batch_size,
        BenchMode::Single => 1,
    };
    let budget = Arc::new(Budget {
        stop_at: Instant::now() + args.duration,
        remaining: args.events.map(AtomicU64::new),
        acked: AtomicU64::new(0),
    });
    let run_id: String = {
        let mut rng = StdRng::from_os_rng();
        (0..8)
            .map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)]))
            .collect()
    };

    let started = Instant::now();
    let progress = ProgressBar::new_spinner();
    progress.set_style(
        ProgressStyle::with_template("{spinner} bench: {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let mut workers = tokio::task::JoinSet::new();
    for connection in 0..args.connections {
        let client = client.clone();
        let budget = Arc::clone(&budget);
        let generator = EventGen::new(format!("bench-{run_id}-{connection}"));
        workers.spawn(worker(client, budget, generator, per_request));
    }
    let mut results = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                Some(result) => results.push(result.context("a bench connection failed")??),
                None => break,
            },
            _ = ticker.tick() => {
                let acked = budget.acked.load(Ordering::Relaxed);
                let rate = acked as f64 / started.elapsed().as_secs_f64().max(1e-9);
                progress.set_message(format!("{acked} events, {rate:.0} events/s"));
            }
        }
    }
    progress.finish_and_clear();
    let report = summarise(&args, &results, started.elapsed())?;
    print_report(out, args.output.format, &report)
}

async fn worker(
    client: Client,
    budget: Arc<Budget>,
    mut generator: EventGen,
    per_request: u64,
) -> anyhow::Result<WorkerResult> {
    let mut result = WorkerResult {
        latency: Histogram::new_with_bounds(1, MAX_TRACKED_MICROS, 3)
            .context("creating a latency histogram")?,
        events: 0,
        requests: 0,
        errors: BTreeMap::new(),
    };
    loop {
        let n = budget.claim(per_request);
        if n == 0 {
            break;
        }
        let events: Vec<Value> = (0..n).map(|_| generator.event()).collect();
        let sent_at = Instant::now();
        let answer =
            tokio::time::timeout_at((budget.stop_at + GRACE).into(), client.ingest(&events)).await;
        result.requests += 1;
        match answer {
            Ok(Ok(ack)) => {
                let micros = u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX);
                result.latency.saturating_record(micros.max(1));
                result.events += ack.accepted;
                budget.acked.fetch_add(ack.accepted, Ordering::Relaxed);
            }
            Ok(Err(e)) => {
                *result.errors.entry(e.code().to_owned()).or_default() += 1;
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
    }
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let ms = |micros: u64| micros as f64 / 1000.0;
    Ok(BenchReport {
        mode: match args.mode {
            BenchMode::Batch => "batch",
            BenchMode::Single => "single",
        },
        connections: args.connections,
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
            let errors = if failed == 0 {
                "0".to_owned()
            } else {
                let by_code: Vec<String> =
                    r.errors.iter().map(|(c, n)| format!("{c}: {n}")).collect();
                format!("{failed} ({})", by_code.join(", "))
            };
            let rows = vec![
                vec![
                    "mode".into(),
                    format!("{} × {} connections", r.mode, r.connections),
                ],
                vec!["events".into(), r.events.to_string()],
                vec!["duration".into(), format!("{:.2} s", r.seconds)],
                vec!["events/s".into(), format!("{:.0}", r.events_per_second)],
                vec!["requests".into(), r.requests.to_string()],
                vec!["requests/s".into(), format!("{:.1}", r.requests_per_second)],
                vec![
                    "latency".into(),
                    format!(
                        "p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
                        r.latency_ms.p50, r.latency_ms.p90, r.latency_ms.p99, r.latency_ms.max
                    ),
                ],
                vec!["errors".into(), errors],
            ];
            writeln!(out, "{}", simple_table(&["metric", "value"], rows))?;
        }
    }
    Ok(())
}

/// Realistic random events (~400 bytes): types, actors and services from fixed pools, IPs,
/// and a few details.
pub struct EventGen {
    rng: StdRng,
    /// Prefix of every id this generator makes, unique per run and connection.
    prefix: String,
    next: u64,
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
    pub fn new(prefix: String) -> Self {
        Self {
            rng: StdRng::from_os_rng(),
            prefix,
            next: 0,
        }
    }

    pub fn event(&mut self) -> Value {
        self.next += 1;
        let rng = &mut self.rng;
        let (event_type, action, base_severity) = TYPES[rng.random_range(0..TYPES.len())];
        let failed = event_type.ends_with("failed") || rng.random_bool(0.05);
        let severity = (base_severity + u8::from(failed) * 2 + rng.random_range(0..2)).min(10);
        let actor_n = rng.random_range(0..5_000u32);
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
            "id": format!("{}-{}", self.prefix, self.next),
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
    use super::*;

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
        let mut g = EventGen::new("bench-test-0".into());
        let mut total = 0;
        let mut ids = std::collections::HashSet::new();
        for _ in 0..200 {
            let e = g.event();
            let bytes = serde_json::to_vec(&e).unwrap().len();
            total += bytes;
            assert!(ids.insert(e["id"].as_str().unwrap().to_owned()));
            vigil_event::normalize(e, &vigil_event::Limits::default()).expect("a valid event");
        }
        let mean = total / 200;
        assert!((300..=500).contains(&mean), "mean event size {mean} bytes");
    }

    #[test]
    fn the_event_budget_is_never_overspent() {
        let budget = Budget {
            stop_at: Instant::now() + Duration::from_secs(60),
            remaining: Some(AtomicU64::new(2_500)),
            acked: AtomicU64::new(0),
        };
        let claims: Vec<u64> =
            std::iter::from_fn(|| Some(budget.claim(1_000)).filter(|&n| n > 0)).collect();
        assert_eq!(claims, [1_000, 1_000, 500]);
        let expired = Budget {
            stop_at: Instant::now(),
            remaining: None,
            acked: AtomicU64::new(0),
        };
        assert_eq!(expired.claim(10), 0);
    }
}
