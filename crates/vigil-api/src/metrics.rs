//! Prometheus metrics of the HTTP layer, as typed events whose one `emit()` logs and counts.
//!
//! The recorder is process-global (the `metrics` facade allows one), so it is installed once
//! per process, on first use, however many apps are built (tests build many in one process).

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::Method;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const EVENTS_INGESTED: &str = "vigil_events_ingested_total";
const EVENTS_REJECTED: &str = "vigil_events_rejected_total";
const REQUEST_DURATION: &str = "vigil_http_request_duration_seconds";
const INGEST_BATCH_SIZE: &str = "vigil_ingest_batch_size";
const AUTH_FAILURES: &str = "vigil_auth_failures_total";

/// Buckets of every latency histogram (every metric named `*_seconds`): 0.5 ms to 30 s.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets of every size histogram (events per request, commit group or writer batch).
const COUNT_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1_000.0, 5_000.0, 10_000.0, 50_000.0,
];

/// How often histogram buckets are drained so they do not grow between scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The process's Prometheus handle: what `/metrics` renders.
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder on first call; later calls return the same handle.
pub(crate) fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(install)
}

/// Every histogram gets buckets, so Prometheus can aggregate it across nodes and its quantiles
/// never fall back to 0 between observations (as a summary's window does).
fn install() -> PrometheusHandle {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), DURATION_BUCKETS)
        .and_then(|b| b.set_buckets(COUNT_BUCKETS))
        // Only empty bucket lists fail, and the lists above are not empty.
        .unwrap_or_else(|_| PrometheusBuilder::new());
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        tracing::warn!(
            "a metrics recorder was already installed; /metrics will not show vigil's metrics"
        );
    } else {
        describe();
    }
    let upkeep = handle.clone();
    let spawned = std::thread::Builder::new()
        .name("vigil-metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the metrics upkeep thread");
    }
    handle
}

fn describe() {
    metrics::describe_counter!(
        EVENTS_INGESTED,
        "Events newly stored (idempotent retries not counted)"
    );
    metrics::describe_counter!(
        EVENTS_REJECTED,
        "Events refused at ingest, by reason (the error code)"
    );
    metrics::describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "HTTP request latency until the response head, by route, method and status"
    );
    metrics::describe_histogram!(INGEST_BATCH_SIZE, "Events per accepted ingest request");
    vigil_store::telemetry::describe();
    vigil_bus::telemetry::describe();
    vigil_ingest::checkpoint_signer::describe_metrics();
    metrics::describe_counter!(
        AUTH_FAILURES,
        "Requests refused for their credential, by reason: invalid_credential (401: a bad key, \
         token, username or password) or throttled (429: too many failures from the source \
         address, credential not checked)"
    );
}

/// A request was refused for its credential (`invalid_credential`), or without checking it
/// because its source address failed too often (`throttled`).
#[derive(Debug)]
pub(crate) struct AuthFailed {
    pub reason: &'static str,
}

impl AuthFailed {
    pub(crate) fn emit(self) {
        tracing::debug!(reason = self.reason, "credential refused");
        metrics::counter!(AUTH_FAILURES, "reason" => self.reason).increment(1);
    }
}

/// A batch was stored: `stored` new events, `duplicates` idempotent retries.
#[derive(Debug)]
pub(crate) struct EventsIngested {
    pub stored: u64,
    pub duplicates: u64,
}

impl EventsIngested {
    pub(crate) fn emit(self) {
        tracing::debug!(
            stored = self.stored,
            duplicates = self.duplicates,
            "events ingested"
        );
        metrics::counter!(EVENTS_INGESTED).increment(self.stored);
        metrics::histogram!(INGEST_BATCH_SIZE).record((self.stored + self.duplicates) as f64);
    }
}

/// A batch was refused: `count` events (1 when the body could not be split into events).
#[derive(Debug)]
pub(crate) struct EventsRejected {
    pub reason: &'static str,
    pub count: u64,
}

impl EventsRejected {
    pub(crate) fn emit(self) {
        tracing::debug!(reason = self.reason, count = self.count, "events rejected");
        metrics::counter!(EVENTS_REJECTED, "reason" => self.reason).increment(self.count);
    }
}

/// The `method` label: one of the standard methods, or `other`. Taking the raw method would
/// let a client mint a label value (and a time series) per made-up method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MethodLabel(&'static str);

impl MethodLabel {
    pub(crate) fn of(method: &Method) -> Self {
        Self(match *method {
            Method::GET => "GET",
            Method::HEAD => "HEAD",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::DELETE => "DELETE",
            Method::PATCH => "PATCH",
            Method::OPTIONS => "OPTIONS",
            Method::CONNECT => "CONNECT",
            Method::TRACE => "TRACE",
            _ => "other",
        })
    }

    pub(crate) fn as_str(self) -> &'static str {
        self.0
    }
}

/// One HTTP request answered. `route` is the matched route template (`/v1/events/{id}`) or
/// `unmatched`, never the raw path, and `method` a [`MethodLabel`], so label cardinality stays
/// bounded.
#[derive(Debug)]
pub(crate) struct RequestServed {
    pub route: String,
    pub method: MethodLabel,
    pub status: u16,
    pub elapsed: Duration,
}

impl RequestServed {
    pub(crate) fn emit(self) {
        metrics::histogram!(
            REQUEST_DURATION,
            "route" => self.route,
            "method" => self.method.as_str(),
            "status" => self.status.to_string()
        )
        .record(self.elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_standard_methods_are_label_values() {
        assert_eq!(MethodLabel::of(&Method::GET).as_str(), "GET");
        assert_eq!(MethodLabel::of(&Method::DELETE).as_str(), "DELETE");
        for raw in [&b"FROBNICATE"[..], b"get", b"PROPFIND"] {
            let method = Method::from_bytes(raw).unwrap();
            assert_eq!(MethodLabel::of(&method).as_str(), "other", "{method}");
        }
    }
}
