//! The writer: a durable JetStream pull consumer that appends events into the store.
//!
//! Messages are pulled in batches. Each is admitted ([`vigil_ingest::Admitter`], as HTTP ingest
//! admits events: parsed, normalised, checked against the tenant's schemas, prepared with the
//! tenant of its subject and JetStream's receipt time), the batch is appended with one store call (the store's group commit makes it durable), and only
//! then is every message acknowledged. Delivery is at least once; the store's idempotent ids
//! make a redelivered event a duplicate, never a second copy, so a writer killed at any point
//! loses nothing and stores nothing twice.
//!
//! A message that can never be stored — not JSON, not a valid event, its tenant invalid, its id
//! taken by different content — is published to `deadletter.events.<tenant>` (stream
//! `VIGIL_DEADLETTER`) with the reason in its headers, then acknowledged: it never blocks the
//! stream. When the store is unavailable, the batch is retried with back-off, and JetStream is
//! told the messages are still in progress so they are not handed to another writer meanwhile.
//!
//! Several writers may share the consumer. Per-tenant `seq` and the hash chain stay gap-free
//! and linear because the store assigns them inside its append (the embedded store's single
//! writer thread; PostgreSQL's lock on the tenant's head row), not the bus. Within one writer,
//! events are appended in stream order; across writers, `seq` follows the order appends
//! commit in (see `docs/distributed.md`).
//!
//! Reading and admitting the next batch overlaps with appending the current one.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{self, pull};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{AckKind, Message};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use vigil_event::{EventId, Prepared, TenantId, Timestamp};
use vigil_ingest::{Admitter, Origin};
use vigil_store::{Store, StoreError};

use crate::{Bus, BusError, telemetry};

/// Header of a dead letter naming why it could not be stored (a stable code).
pub const HEADER_ERROR_CODE: &str = "Vigil-Error-Code";
/// Header of a dead letter explaining, for people, why it could not be stored.
pub const HEADER_ERROR_MESSAGE: &str = "Vigil-Error-Message";
/// Header of a dead letter: the subject the event was published to.
pub const HEADER_ORIGINAL_SUBJECT: &str = "Vigil-Original-Subject";
/// Header of a dead letter: its position in the event stream.
pub const HEADER_STREAM_SEQUENCE: &str = "Vigil-Stream-Sequence";

/// Why a message cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// `invalid_json`, `invalid_event`, `invalid_tenant`, `id_conflict`, or a field error's code.
    pub code: String,
    pub message: String,
}

impl Rejection {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// Header of an event published by a vigil api node: it passed the tenant's limits and
/// schemas there.
pub const HEADER_VALIDATED: &str = "Vigil-Validated";
/// Header naming the default `source` of an event published by a vigil api node.
pub const HEADER_SOURCE: &str = "Vigil-Source";

/// Chunks of messages admitted at once, each on a blocking thread.
const ADMISSION_PARALLELISM: usize = 4;

/// How a writer consumes.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Durable consumer name, shared by every writer of the deployment.
    pub consumer: String,
    /// Most messages appended with one store call.
    pub batch_size: usize,
    /// How long JetStream waits for an acknowledgement before redelivering.
    pub ack_wait: Duration,
    /// Most messages delivered and not yet acknowledged, across all writers.
    pub max_ack_pending: i64,
    /// Longest back-off between attempts when the store is unavailable.
    pub max_retry_wait: Duration,
    /// Most payload bytes gathered for one append (and asked of JetStream per pull): bounds a
    /// writer's memory when events are large.
    pub batch_bytes: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            consumer: "vigil-writer".to_owned(),
            batch_size: 5_000,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 50_000,
            max_retry_wait: Duration::from_secs(5),
            batch_bytes: 64 * 1024 * 1024,
        }
    }
}

/// What a writer did before it stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterReport {
    /// Events appended for the first time.
    pub stored: u64,
    /// Redelivered or re-published events the store already had.
    pub duplicates: u64,
    /// Messages sent to the dead-letter subject.
    pub dead_letters: u64,
}

/// One pulled batch, admitted.
#[derive(Default)]
struct Admitted {
    /// Messages whose events are in `events`, in the same order.
    messages: Vec<Message>,
    events: Vec<Prepared>,
    /// Messages that can never be stored, and why.
    rejected: Vec<(Message, Rejection)>,
    /// Payload bytes of all the messages.
    bytes: usize,
}

impl Admitted {
    fn len(&self) -> usize {
        self.messages.len() + self.rejected.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn extend(&mut self, more: Admitted) {
        self.bytes += more.bytes;
        self.messages.extend(more.messages);
        self.events.extend(more.events);
        self.rejected.extend(more.rejected);
    }

    /// At shutdown: gives the messages back to JetStream at once, for another writer, rather
    /// than after `ack_wait`.
    async fn hand_back(self) {
        let rejected = self.rejected.into_iter().map(|(m, _)| m);
        for message in self.messages.into_iter().chain(rejected) {
            let _ = message.ack_with(AckKind::Nak(None)).await;
        }
    }
}

/// Creates (or checks) the streams and the durable consumer, then consumes until `shutdown`
/// resolves; the batch being appended is finished and acknowledged before it returns.
pub async fn run_writer(
    bus: Bus,
    store: Arc<dyn Store>,
    admitter: Admitter,
    config: WriterConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<WriterReport, BusError> {
    bus.ensure_event_stream().await?;
    bus.ensure_dead_letter_stream().await?;
    let consumer = ensure_consumer(&bus, &config).await?;
    tracing::info!(consumer = %config.consumer, stream = %bus.names().events_stream(), "writer consuming");

    let (tx, mut rx) = mpsc::channel::<Admitted>(1);
    // The signal also reaches an append waiting out a store outage.
    let (stop_tx, stop) = watch::channel(false);
    let signal = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let mut stopped = stop.clone();
    let pull = pull_loop(
        bus.clone(),
        consumer,
        admitter,
        config.clone(),
        tx,
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        },
    );
    let append = async {
        let mut report = WriterReport::default();
        while let Some(batch) = rx.recv().await {
            persist(&bus, &store, &config, batch, &mut report, &stop).await;
        }
        report
    };
    let ((), pulled, report) = tokio::join!(signal, pull, append);
    pulled?;
    tracing::info!(
        stored = report.stored,
        duplicates = report.duplicates,
        dead_letters = report.dead_letters,
        "writer stopped"
    );
    Ok(report)
}

async fn ensure_consumer(
    bus: &Bus,
    config: &WriterConfig,
) -> Result<consumer::Consumer<pull::Config>, BusError> {
    let stream_name = bus.names().events_stream();
    let stream = bus
        .jetstream()
        .get_stream_no_info(&stream_name)
        .await
        .map_err(|e| BusError::Unavailable(format!("stream {stream_name}: {e}")))?;
    let wanted = pull::Config {
        durable_name: Some(config.consumer.clone()),
        description: Some("vigil writers: persist events into the store".to_owned()),
        filter_subject: bus.names().events_wildcard(),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: config.ack_wait,
        max_ack_pending: config.max_ack_pending,
        // Never give up on a message: one that cannot be stored goes to the dead letters,
        // one that could not be stored yet (store down) must be tried again.
        max_deliver: -1,
        deliver_policy: consumer::DeliverPolicy::All,
        max_batch: i64::try_from(config.batch_size).unwrap_or(i64::MAX),
        ..Default::default()
    };
    let mut consumer: consumer::Consumer<pull::Config> = stream
        .get_or_create_consumer(&config.consumer, wanted.clone())
        .await
        .map_err(|e| BusError::Unavailable(format!("consumer {}: {e}", config.consumer)))?;
    let info = consumer
        .info()
        .await
        .map_err(|e| BusError::Unavailable(format!("consumer {}: {e}", config.consumer)))?;
    let have = &info.config;
    if have.max_batch != wanted.max_batch
        || have.ack_wait != wanted.ack_wait
        || have.max_ack_pending != wanted.max_ack_pending
    {
        // An existing durable keeps its settings unless updated: a pull larger than its
        // max_batch would be refused on every attempt.
        consumer = stream.create_consumer(wanted).await.map_err(|e| {
            BusError::Config(format!(
                "consumer {} exists with other settings and cannot be updated ({e}); delete it \
                 (nats consumer rm) once no writer runs",
                config.consumer
            ))
        })?;
        tracing::info!(consumer = %config.consumer, "consumer settings updated");
    }
    Ok(consumer)
}

/// Pulls, admits and hands batches to the append loop until `shutdown`.
async fn pull_loop(
    bus: Bus,
    mut consumer: consumer::Consumer<pull::Config>,
    admitter: Admitter,
    config: WriterConfig,
    tx: mpsc::Sender<Admitted>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), BusError> {
    tokio::pin!(shutdown);
    'outer: loop {
        let messages = tokio::select! {
            () = &mut shutdown => break,
            messages = consumer
                .stream()
                .max_messages_per_batch(config.batch_size)
                .max_bytes_per_batch(config.batch_bytes)
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30))
                .messages() => messages,
        };
        let messages = match messages {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "pulling from the event stream; retrying");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let mut chunks = messages.ready_chunks(config.batch_size);
        // Group commit: while the append loop is busy, admitted messages gather here, and the
        // whole gathering becomes its next append. A pull stream hands over at most 128
        // messages per poll (the runtime's cooperative budget), so without gathering every
        // append, and every fsync, would carry that few.
        let mut pending = Admitted::default();
        // Admission is most of a writer's CPU: chunks are admitted on blocking threads, several
        // at once, and gathered in stream order.
        let mut admitting = futures::stream::FuturesOrdered::new();
        let mut in_flight = 0;
        let mut in_flight_bytes = 0;
        loop {
            let room = pending.len() + in_flight < config.batch_size
                && pending.bytes + in_flight_bytes < config.batch_bytes
                && admitting.len() < ADMISSION_PARALLELISM;
            let ready = !pending.is_empty();
            let chunk = tokio::select! {
                biased;
                () = &mut shutdown => {
                    while let Some((_, _, admitted)) = admitting.next().await {
                        pending.extend(admitted);
                    }
                    pending.hand_back().await;
                    break 'outer;
                }
                Some((count, bytes, admitted)) = admitting.next(), if !admitting.is_empty() => {
                    in_flight -= count;
                    in_flight_bytes -= bytes;
                    pending.extend(admitted);
                    continue;
                }
                permit = tx.reserve(), if ready => match permit {
                    Ok(permit) => {
                        permit.send(std::mem::take(&mut pending));
                        continue;
                    }
                    Err(_) => break 'outer,
                },
                chunk = chunks.next(), if room => chunk,
            };
            let Some(chunk) = chunk else {
                // The pull stream ended (the consumer was deleted, say): set it up again.
                tracing::warn!("pull stream ended; setting up the consumer again");
                while let Some((_, _, admitted)) = admitting.next().await {
                    pending.extend(admitted);
                }
                if !pending.is_empty() && tx.send(std::mem::take(&mut pending)).await.is_err() {
                    break 'outer;
                }
                match ensure_consumer(&bus, &config).await {
                    Ok(c) => consumer = c,
                    Err(e) => {
                        tracing::warn!(error = %e, "consumer not available; retrying");
                        tokio::select! {
                            () = &mut shutdown => break 'outer,
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
                continue 'outer;
            };
            let mut pulled = Vec::with_capacity(chunk.len());
            for item in chunk {
                match item {
                    Ok(message) => pulled.push(message),
                    Err(e) if e.kind() == pull::MessagesErrorKind::MissingHeartbeat => {
                        tracing::debug!(error = %e, "pull stream");
                    }
                    Err(e) => tracing::warn!(error = %e, "pulling from the event stream"),
                }
            }
            if !pulled.is_empty() {
                let count = pulled.len();
                let bytes: usize = pulled.iter().map(|m| m.payload.len()).sum();
                in_flight += count;
                in_flight_bytes += bytes;
                let admitted = admit_all(bus.clone(), admitter.clone(), pulled);
                admitting.push_back(async move { (count, bytes, admitted.await) });
            }
        }
    }
    Ok(())
}

/// Admits every message of a batch, off the async runtime when the batch is large.
async fn admit_all(bus: Bus, admitter: Admitter, pulled: Vec<Message>) -> Admitted {
    let small = pulled.len() < 64;
    let names = bus.names().clone();
    let work = move || {
        let mut admitted = Admitted {
            messages: Vec::with_capacity(pulled.len()),
            events: Vec::with_capacity(pulled.len()),
            rejected: Vec::new(),
            bytes: pulled.iter().map(|m| m.payload.len()).sum(),
        };
        for message in pulled {
            // A panic in admission is a bug, but it must not leave the batch unacknowledged
            // (redelivered and failing forever): the event goes to the dead letters.
            let one = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                admit_one(&names, &admitter, &message)
            }))
            .unwrap_or_else(|_| {
                Err(Rejection::new(
                    "admission_failed",
                    "admitting the event failed unexpectedly (see the writer's log)",
                ))
            });
            match one {
                Ok(event) => {
                    admitted.events.push(event);
                    admitted.messages.push(message);
                }
                Err(rejection) => admitted.rejected.push((message, rejection)),
            }
        }
        admitted
    };
    if small {
        work()
    } else {
        match tokio::task::spawn_blocking(work).await {
            Ok(admitted) => admitted,
            Err(e) => {
                // Only a panic in admission gets here: nothing is acknowledged, so JetStream
                // redelivers the batch after ack_wait.
                tracing::error!(error = %e, "admitting a batch failed");
                Admitted::default()
            }
        }
    }
}

fn admit_one(
    names: &crate::Names,
    admitter: &Admitter,
    message: &Message,
) -> Result<Prepared, Rejection> {
    let token = names
        .event_subject_token(&message.subject)
        .ok_or_else(|| Rejection::new("invalid_tenant", "the subject names no tenant"))?;
    let tenant = TenantId::parse(token)
        .map_err(|e| Rejection::new("invalid_tenant", format!("{token:?}: {}", e.message)))?;
    let info = message.info().ok();
    // JetStream's receipt time and place: the same on every redelivery, so a redelivered
    // event is byte-for-byte the first one.
    let received_at = info
        .as_ref()
        .and_then(|i| i64::try_from(i.published.unix_timestamp_nanos()).ok())
        .map_or_else(Timestamp::now, Timestamp::from_nanos);
    let header = |name: &str| {
        message
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    let default_id = header("Nats-Msg-Id")
        .and_then(|id| EventId::parse(&id).ok())
        .or_else(|| {
            let sequence = info.as_ref().map_or(0, |i| i.stream_sequence);
            EventId::parse(&format!("js-{}-{sequence}", received_at.as_nanos())).ok()
        })
        .unwrap_or_else(EventId::generate);
    let default_source = header(HEADER_SOURCE).unwrap_or_else(|| "nats".to_owned());
    let validated = header(HEADER_VALIDATED).is_some();
    admitter
        .intake(Origin {
            tenant,
            default_source,
            received_at,
            default_id: Some(default_id),
            validated,
        })
        .admit_payload(&message.payload)
        .map_err(|refusal| Rejection::new(refusal.code, refusal.message))
}

/// Appends a batch (retrying while the store is unavailable), sends the rejected messages to
/// the dead letters, then acknowledges everything.
async fn persist(
    bus: &Bus,
    store: &Arc<dyn Store>,
    config: &WriterConfig,
    batch: Admitted,
    report: &mut WriterReport,
    stop: &watch::Receiver<bool>,
) {
    metrics::histogram!(telemetry::WRITER_BATCH_EVENTS).record(batch.messages.len() as f64);
    let (mut messages, rejected) = append_one(store, config, batch, report, stop).await;
    finish(bus, messages.as_mut(), rejected, report).await;
}

/// Appends the events of a batch: returns the messages whose events are stored, and those
/// that can never be (with the reason).
async fn append_one(
    store: &Arc<dyn Store>,
    config: &WriterConfig,
    batch: Admitted,
    report: &mut WriterReport,
    stop: &watch::Receiver<bool>,
) -> (Vec<Message>, Vec<(Message, Rejection)>) {
    let Admitted {
        mut messages,
        mut events,
        mut rejected,
        ..
    } = batch;
    let mut attempt = 0u32;
    while !events.is_empty() {
        let appended = holding(&messages, config.ack_wait, store.append(events.clone())).await;
        match appended {
            Ok(appended) => {
                let duplicates = appended.iter().filter(|a| a.duplicate).count() as u64;
                report.duplicates += duplicates;
                report.stored += appended.len() as u64 - duplicates;
                metrics::counter!(telemetry::EVENTS_STORED)
                    .increment(appended.len() as u64 - duplicates);
                metrics::counter!(telemetry::EVENTS_DUPLICATE).increment(duplicates);
                // From JetStream's receipt to durable in the store: the pipeline's latency.
                let now = Timestamp::now().as_nanos();
                let lag = metrics::histogram!(telemetry::EVENT_LAG_SECONDS);
                for event in &events {
                    let nanos = now.saturating_sub(event.received_at.as_nanos()).max(0);
                    lag.record(nanos as f64 / 1e9);
                }
                break;
            }
            Err(StoreError::Conflict(conflicts)) => {
                // These ids are taken by other content: they can never be stored. The rest
                // of the batch goes in without them.
                let mut bad: Vec<usize> = conflicts.iter().map(|c| c.index).collect();
                bad.sort_unstable();
                bad.dedup();
                for index in bad.into_iter().rev() {
                    if index < events.len() {
                        let event = events.remove(index);
                        let message = messages.remove(index);
                        rejected.push((
                            message,
                            Rejection::new(
                                "id_conflict",
                                format!(
                                    "event id {} is already stored with different content",
                                    event.id.as_str()
                                ),
                            ),
                        ));
                    }
                }
            }
            Err(StoreError::Internal(reason)) if events.len() > 1 => {
                // Not a passing outage: some event of the batch may be what the store cannot
                // take. Append one by one, so only that event is set aside.
                tracing::warn!(error = %reason, events = events.len(), "batch refused; appending its events one by one");
                let single = std::mem::take(&mut events);
                let held = std::mem::take(&mut messages);
                for (event, message) in single.into_iter().zip(held) {
                    let one = Admitted {
                        bytes: message.payload.len(),
                        messages: vec![message],
                        events: vec![event],
                        rejected: Vec::new(),
                    };
                    let (stored, set_aside) =
                        Box::pin(append_one(store, config, one, report, stop)).await;
                    messages.extend(stored);
                    rejected.extend(set_aside);
                }
                break;
            }
            Err(StoreError::Internal(reason)) => {
                let message = messages.remove(0);
                events.clear();
                rejected.push((
                    message,
                    Rejection::new(
                        "store_rejected",
                        format!("the store refused the event: {reason}"),
                    ),
                ));
            }
            Err(e) => {
                if *stop.borrow() {
                    // Stopping while the store is down: hand the messages back at once, for
                    // this or another writer to store later.
                    tracing::warn!(error = %e, "store unavailable at shutdown; messages handed back");
                    for message in &messages {
                        let _ = message.ack_with(AckKind::Nak(None)).await;
                    }
                    return (Vec::new(), rejected);
                }
                attempt += 1;
                metrics::counter!(telemetry::APPEND_RETRIES).increment(1);
                let wait = retry_wait(attempt, config.max_retry_wait);
                tracing::warn!(error = %e, attempt, wait_ms = wait.as_millis() as u64, "append failed; retrying");
                let mut stopped = stop.clone();
                holding(&messages, config.ack_wait, async {
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = stopped.wait_for(|s| *s) => {}
                    }
                })
                .await;
            }
        }
    }
    (messages, rejected)
}

/// Runs `work` while telling JetStream, every third of `ack_wait`, that `messages` are still
/// being worked on, so it does not hand them to another writer meanwhile.
async fn holding<T>(messages: &[Message], ack_wait: Duration, work: impl Future<Output = T>) -> T {
    let every = (ack_wait / 3).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = tick.tick() => {
                for message in messages {
                    let _ = message.ack_with(AckKind::Progress).await;
                }
            }
        }
    }
}

/// Sends the rejected messages to the dead letters, then acknowledges every message handled.
async fn finish(
    bus: &Bus,
    messages: &mut Vec<Message>,
    rejected: Vec<(Message, Rejection)>,
    report: &mut WriterReport,
) {
    for (message, rejection) in rejected {
        match dead_letter(bus, &message, &rejection).await {
            Ok(()) => {
                report.dead_letters += 1;
                metrics::counter!(telemetry::DEAD_LETTERS, "code" => rejection.code.clone())
                    .increment(1);
                tracing::warn!(
                    subject = %message.subject,
                    code = %rejection.code,
                    reason = %rejection.message,
                    "message sent to the dead letters"
                );
                messages.push(message);
            }
            Err(e) => {
                // Not acknowledged: JetStream redelivers it, and it is tried again.
                tracing::error!(error = %e, subject = %message.subject, "dead letter not published");
            }
        }
    }
    for message in messages.iter() {
        if let Err(e) = message.ack().await {
            // The event is stored; a redelivery would be recognised as a duplicate.
            tracing::debug!(error = %e, "ack not sent");
        }
    }
}

fn retry_wait(attempt: u32, max: Duration) -> Duration {
    let base = Duration::from_millis(50).saturating_mul(1 << attempt.min(10));
    base.min(max)
}

/// Publishes a copy of `message` with the reason to the dead-letter subject and waits for
/// JetStream to have it. Its `Nats-Msg-Id` is its position in the event stream, so a retried
/// dead letter is kept once.
async fn dead_letter(bus: &Bus, message: &Message, rejection: &Rejection) -> Result<(), BusError> {
    let names = bus.names();
    let token = message
        .subject
        .rsplit('.')
        .next()
        .filter(|t| !t.is_empty())
        .unwrap_or("_");
    let subject = names.dead_letter_subject(token);
    let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_ERROR_CODE, header_value(&rejection.code));
    headers.insert(HEADER_ERROR_MESSAGE, header_value(&rejection.message));
    headers.insert(HEADER_ORIGINAL_SUBJECT, header_value(&message.subject));
    headers.insert(HEADER_STREAM_SEQUENCE, sequence.to_string().as_str());
    let publish = PublishMessage::build()
        .payload(message.payload.clone())
        .headers(headers)
        .message_id(format!("{}-{sequence}", names.events_stream()));
    let ack = bus
        .jetstream()
        .send_publish(subject.clone(), publish)
        .await
        .map_err(|e| BusError::Unavailable(format!("publishing to {subject}: {e}")))?;
    ack.await
        .map_err(|e| BusError::Unavailable(format!("publishing to {subject}: {e}")))?;
    Ok(())
}

/// A header value: one line, at most 1 KiB.
fn header_value(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.len() <= 1024 {
        return line;
    }
    let mut end = 1024;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_headers_are_one_bounded_line() {
        assert_eq!(header_value("a\nb\r\tc"), "a b  c");
        assert_eq!(header_value(&"é".repeat(1000)).len(), 1024);
    }

    #[test]
    fn retries_back_off_to_a_bound() {
        let max = Duration::from_secs(5);
        assert_eq!(retry_wait(1, max), Duration::from_millis(100));
        assert!(retry_wait(3, max) > retry_wait(2, max));
        assert_eq!(retry_wait(30, max), max);
    }
}
