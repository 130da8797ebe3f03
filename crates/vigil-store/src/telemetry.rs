//! Telemetry of the store's write path, as typed events whose one `emit()` logs and counts:
//! a commit group answered, the log's fsync, a segment sealed.
//!
//! Every backend emits the same events, so its metrics carry the same names and meanings and
//! one dashboard reads either. The counts go to the process's `metrics` recorder (the HTTP layer
//! installs the Prometheus one); without a recorder they go nowhere.

use std::time::Duration;

/// Seconds from taking a commit group to answering it.
const COMMIT_SECONDS: &str = "vigil_commit_seconds";
/// Events per commit group.
const COMMIT_GROUP_EVENTS: &str = "vigil_commit_group_events";
/// Events newly stored (duplicates not counted).
const EVENTS_APPENDED: &str = "vigil_store_events_appended_total";
/// Seconds one fsync of the log took.
const FSYNC_SECONDS: &str = "vigil_fsync_seconds";
/// Seconds sealing one segment took.
const SEAL_SECONDS: &str = "vigil_seal_seconds";
/// Events moved into sealed segments.
const SEALED_EVENTS: &str = "vigil_sealed_events_total";
/// Bytes of sealed segment files (log blocks and index) written.
const SEALED_BYTES: &str = "vigil_sealed_bytes_total";

/// Gives every metric of the store its description in the installed recorder (the HTTP layer
/// calls this once it installed the Prometheus one).
pub fn describe() {
    metrics::describe_histogram!(
        COMMIT_SECONDS,
        metrics::Unit::Seconds,
        "From taking a commit group off the queue to answering it, fsync included"
    );
    metrics::describe_histogram!(
        COMMIT_GROUP_EVENTS,
        "Events per commit group: new ones, duplicates and those of refused requests"
    );
    metrics::describe_counter!(
        EVENTS_APPENDED,
        "Events newly stored by this process's store (duplicates not counted)"
    );
    metrics::describe_histogram!(
        FSYNC_SECONDS,
        metrics::Unit::Seconds,
        "Seconds one fsync of the event log took"
    );
    metrics::describe_histogram!(
        SEAL_SECONDS,
        metrics::Unit::Seconds,
        "Seconds sealing one segment took (compression and index building)"
    );
    metrics::describe_counter!(SEALED_EVENTS, "Events moved into sealed segments");
    metrics::describe_counter!(
        SEALED_BYTES,
        metrics::Unit::Bytes,
        "Bytes of sealed segment files written (log blocks and index)"
    );
}

/// A commit group was answered: its new events are durable, or every request of it got its
/// error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommitted {
    /// Append requests in the group.
    pub requests: usize,
    /// Events of those requests: new ones, duplicates and those of refused requests.
    pub events: usize,
    /// Events newly stored.
    pub written: u64,
    /// From taking the group off the queue to answering it.
    pub elapsed: Duration,
}

impl GroupCommitted {
    pub fn emit(self) {
        tracing::debug!(
            requests = self.requests,
            events = self.events,
            written = self.written,
            elapsed_us = self.elapsed.as_micros() as u64,
            "commit group answered"
        );
        metrics::counter!(EVENTS_APPENDED).increment(self.written);
        metrics::histogram!(COMMIT_GROUP_EVENTS).record(self.events as f64);
        metrics::histogram!(COMMIT_SECONDS).record(self.elapsed.as_secs_f64());
    }
}

/// The log was fsynced to make a commit group durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSynced {
    /// Bytes the group appended to the log.
    pub bytes: u64,
    pub elapsed: Duration,
}

impl LogSynced {
    pub fn emit(self) {
        tracing::trace!(
            bytes = self.bytes,
            elapsed_us = self.elapsed.as_micros() as u64,
            "log fsynced"
        );
        metrics::histogram!(FSYNC_SECONDS).record(self.elapsed.as_secs_f64());
    }
}

/// A segment of the log was sealed: its events now sit in compressed blocks with an immutable
/// index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSealed {
    pub segment: u64,
    pub events: u64,
    /// Size of the sealed files.
    pub bytes: u64,
    pub elapsed: Duration,
}

impl SegmentSealed {
    pub fn emit(self) {
        tracing::info!(
            segment = self.segment,
            events = self.events,
            bytes = self.bytes,
            elapsed_ms = self.elapsed.as_millis() as u64,
            "segment sealed"
        );
        metrics::histogram!(SEAL_SECONDS).record(self.elapsed.as_secs_f64());
        metrics::counter!(SEALED_EVENTS).increment(self.events);
        metrics::counter!(SEALED_BYTES).increment(self.bytes);
    }
}
