//! Names and descriptions of the metrics of the distributed pipeline (the writer's batches, what
//! it stored, its lag behind JetStream, retries and dead letters). The HTTP layer installs the
//! Prometheus recorder and calls [`describe`], so every metric carries its HELP text.

/// Messages per batch a writer appends (histogram).
pub(crate) const WRITER_BATCH_EVENTS: &str = "vigil_bus_writer_batch_events";
/// Events a writer stored for the first time (counter).
pub(crate) const EVENTS_STORED: &str = "vigil_bus_events_stored_total";
/// Redelivered or re-published events the store already had (counter).
pub(crate) const EVENTS_DUPLICATE: &str = "vigil_bus_events_duplicate_total";
/// Seconds from JetStream's receipt of an event to its durable append (histogram).
pub(crate) const EVENT_LAG_SECONDS: &str = "vigil_bus_event_lag_seconds";
/// Appends retried because the store was unavailable (counter).
pub(crate) const APPEND_RETRIES: &str = "vigil_bus_append_retries_total";
/// Messages sent to the dead letters, by code (counter).
pub(crate) const DEAD_LETTERS: &str = "vigil_bus_dead_letters_total";

/// Gives every metric of this crate its description in the installed recorder.
pub fn describe() {
    metrics::describe_histogram!(
        WRITER_BATCH_EVENTS,
        "Messages per batch a writer appended to the store"
    );
    metrics::describe_counter!(EVENTS_STORED, "Events a writer stored for the first time");
    metrics::describe_counter!(
        EVENTS_DUPLICATE,
        "Redelivered or re-published events the store already had"
    );
    metrics::describe_histogram!(
        EVENT_LAG_SECONDS,
        metrics::Unit::Seconds,
        "From JetStream's receipt of an event to its durable append: the pipeline's lag"
    );
    metrics::describe_counter!(
        APPEND_RETRIES,
        "Appends a writer retried because the store was unavailable"
    );
    metrics::describe_counter!(
        DEAD_LETTERS,
        "Messages set aside on the dead-letter stream, by error code"
    );
}
