//! vigil's distributed mode over NATS JetStream (DESIGN §2 and §5).
//!
//! Producers publish events to the JetStream stream `VIGIL_EVENTS` on `events.<tenant>`, with
//! the event id as `Nats-Msg-Id`; [`writer`]s consume the stream and append into a
//! [`vigil_store::Store`], acknowledging a message only once the store made it durable;
//! [`reader`]s answer queries on `query.event.<tenant>` in the queue group `vigil-readers`.
//! Every piece of distribution — durable queues, redelivery, replication, load balancing —
//! is NATS's; this crate only maps vigil's contract onto it.
//!
//! # Layout
//! - this module: connecting ([`Bus::connect`], TLS, inbox prefix), the names of subjects and
//!   streams ([`Names`]), stream creation, and publishing a batch ([`Bus::publish`]).
//! - [`writer`]: the durable pull consumer that persists events, with its dead-letter subject.
//!   It admits each message with [`vigil_ingest::Admitter`], the same admission HTTP ingest
//!   uses (limits, the tenant's schemas, defaults).
//! - [`reader`]: the query service, and [`Bus::query`], its client.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage, stream};
use bytes::Bytes;
use futures::future::join_all;
use vigil_event::{EventId, TenantId};

pub mod reader;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod writer;

pub use reader::{QueryFailure, QueryRequest};

/// Queue group every reader joins: each query is answered by exactly one of them.
pub const READER_QUEUE_GROUP: &str = "vigil-readers";

/// What goes wrong talking to NATS.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// NATS cannot be reached, or did not confirm in time, or the stream is missing or full:
    /// nothing can be promised about the request; retrying later is safe (ids make it
    /// idempotent).
    #[error("NATS unavailable: {0}")]
    Unavailable(String),
    /// The configuration cannot work (bad URL, unreadable TLS files, a stream that exists with
    /// settings vigil cannot use).
    #[error("NATS configuration: {0}")]
    Config(String),
}

impl BusError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "bus_unavailable",
            Self::Config(_) => "bus_config",
        }
    }
}

/// TLS to NATS: a CA bundle to trust, and a client certificate for servers that verify clients.
/// Any file given turns TLS on (`tls://` URLs turn it on too).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// The streams vigil creates, and their limits.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Copies of every message kept by a NATS cluster (1 on a single server; 3 for a cluster that
    /// survives the loss of one node).
    pub replicas: usize,
    /// Largest message the stream accepts, in bytes: vigil's largest event plus room for
    /// normalisation (see [`max_message_bytes_for`]).
    pub max_message_bytes: usize,
    /// Most bytes the event stream holds before publishes are refused (`None`: as much as the
    /// server allows). Acknowledged messages are removed (work-queue retention), so this bounds
    /// the backlog writers have not yet persisted.
    pub max_bytes: Option<u64>,
    /// How long JetStream remembers a `Nats-Msg-Id` to drop a re-published duplicate.
    pub duplicate_window: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            replicas: 1,
            max_message_bytes: max_message_bytes_for(
                vigil_event::Limits::default().max_event_bytes,
            ),
            max_bytes: None,
            duplicate_window: Duration::from_secs(120),
        }
    }
}

/// Bytes of a stream message kept for its headers: an id of at most 128 bytes, a credential
/// name of at most 128 characters (512 bytes), a flag, and the header framing.
const HEADER_ROOM: usize = 1024;

/// The stream's message limit for a given event limit: an event may grow a little when
/// normalised (aliases renamed, `time` rewritten, `id` and `source` added), so 4 KiB are
/// added to it.
pub fn max_message_bytes_for(max_event_bytes: usize) -> usize {
    max_event_bytes.saturating_add(4096)
}

/// How to reach NATS and which names to use there.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// `nats://[user:password@]host:port`; several servers separated by commas.
    pub url: String,
    /// A namespace for every subject and stream (tests and shared servers): subjects become
    /// `<ns>.events.<tenant>`, streams `VIGIL_EVENTS_<ns>`. `None` uses the names of DESIGN §5.
    pub namespace: Option<String>,
    /// Prefix of this connection's reply subjects (default `_INBOX`). With the least-privilege
    /// server configuration each user has its own (`_INBOX.<user>`), so no user can read
    /// another's replies.
    pub inbox_prefix: Option<String>,
    pub tls: TlsFiles,
    /// Connection name shown by the server's monitoring.
    pub connection_name: String,
    pub streams: StreamSettings,
    /// How long a publish waits for JetStream's acknowledgement, and a request for its reply.
    pub request_timeout: Duration,
}

impl BusConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            namespace: None,
            inbox_prefix: None,
            tls: TlsFiles::default(),
            connection_name: "vigil".to_owned(),
            streams: StreamSettings::default(),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// The subjects and streams of one vigil deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    namespace: Option<String>,
}

impl Names {
    /// Names under `namespace` (`[A-Za-z0-9_-]`, at most 32 characters), or DESIGN §5's.
    pub fn new(namespace: Option<&str>) -> Result<Self, BusError> {
        if let Some(ns) = namespace {
            let ok = !ns.is_empty()
                && ns.len() <= 32
                && ns
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ok {
                return Err(BusError::Config(format!(
                    "namespace {ns:?} must be 1-32 characters of [A-Za-z0-9_-]"
                )));
            }
        }
        Ok(Self {
            namespace: namespace.map(str::to_owned),
        })
    }

    fn subject(&self, rest: &str) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}.{rest}"),
            None => rest.to_owned(),
        }
    }

    fn stream(&self, base: &str) -> String {
        match &self.namespace {
            Some(ns) => format!("{base}_{ns}"),
            None => base.to_owned(),
        }
    }

    /// `VIGIL_EVENTS`: every event published, until a writer persisted it.
    pub fn events_stream(&self) -> String {
        self.stream("VIGIL_EVENTS")
    }

    /// `VIGIL_DEADLETTER`: messages a writer could not store, with the reason.
    pub fn dead_letter_stream(&self) -> String {
        self.stream("VIGIL_DEADLETTER")
    }

    /// `events.<tenant>`.
    pub fn events_subject(&self, tenant: &TenantId) -> String {
        self.subject(&format!("events.{}", tenant.as_str()))
    }

    /// `events.*`.
    pub fn events_wildcard(&self) -> String {
        self.subject("events.*")
    }

    /// The last token of an `events.<tenant>` subject (not yet checked to be a valid tenant).
    pub fn event_subject_token<'a>(&self, subject: &'a str) -> Option<&'a str> {
        self.token_after(subject, "events.")
    }

    /// `deadletter.events.<token>`.
    pub fn dead_letter_subject(&self, token: &str) -> String {
        self.subject(&format!("deadletter.events.{token}"))
    }

    /// `deadletter.events.*`.
    pub fn dead_letter_wildcard(&self) -> String {
        self.subject("deadletter.events.*")
    }

    /// `query.event.<tenant>`.
    pub fn query_subject(&self, tenant: &TenantId) -> String {
        self.subject(&format!("query.event.{}", tenant.as_str()))
    }

    /// `query.event.*`.
    pub fn query_wildcard(&self) -> String {
        self.subject("query.event.*")
    }

    /// The last token of a `query.event.<tenant>` subject.
    pub fn query_subject_token<'a>(&self, subject: &'a str) -> Option<&'a str> {
        self.token_after(subject, "query.event.")
    }

    fn token_after<'a>(&self, subject: &'a str, rest: &str) -> Option<&'a str> {
        let subject = match &self.namespace {
            Some(ns) => subject.strip_prefix(ns.as_str())?.strip_prefix('.')?,
            None => subject,
        };
        subject
            .strip_prefix(rest)
            .filter(|t| !t.is_empty() && !t.contains('.'))
    }
}

/// One event to publish: its id (the `Nats-Msg-Id`) and its JSON.
#[derive(Debug, Clone)]
pub struct OutgoingEvent {
    pub id: EventId,
    pub payload: Bytes,
    /// Set by a vigil api node: the credential's name, the event's `source` when it names
    /// none; its presence also tells the writer the event passed the api's limits and schemas.
    pub default_source: Option<String>,
}

/// JetStream's acknowledgement of one published event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Position in the stream.
    pub stream_sequence: u64,
    /// True when JetStream already had a message with this id within its duplicate window, and
    /// dropped this one.
    pub duplicate: bool,
}

/// A connection to NATS with JetStream, and the deployment's names. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Bus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    names: Names,
    config: BusConfig,
}

impl Bus {
    /// Connects (failing when no server answers within the request timeout). Once connected,
    /// the client reconnects by itself for as long as the process runs; [`Bus::is_connected`]
    /// tells whether it is connected right now.
    pub async fn connect(config: BusConfig) -> Result<Self, BusError> {
        let names = Names::new(config.namespace.as_deref())?;
        let mut options = async_nats::ConnectOptions::new()
            .name(&config.connection_name)
            .connection_timeout(config.request_timeout)
            .request_timeout(Some(config.request_timeout))
            .max_reconnects(None::<usize>);
        if let Some(prefix) = &config.inbox_prefix {
            options = options.custom_inbox_prefix(prefix);
        }
        let tls = &config.tls;
        if let Some(ca) = &tls.ca {
            check_readable(ca, "--nats-tls-ca")?;
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => {
                check_readable(cert, "--nats-tls-cert")?;
                check_readable(key, "--nats-tls-key")?;
                options = options
                    .add_client_certificate(cert.clone(), key.clone())
                    .require_tls(true);
            }
            (None, None) => {}
            _ => {
                return Err(BusError::Config(
                    "a client certificate needs both --nats-tls-cert and --nats-tls-key".into(),
                ));
            }
        }
        let servers: Vec<async_nats::ServerAddr> = config
            .url
            .split(',')
            .map(|s| s.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(|e| {
                BusError::Config(format!("invalid NATS URL {}: {e}", redact(&config.url)))
            })?;
        // async-nats takes credentials from the options, not from the URL.
        if let Some(first) = servers.first()
            && let Some(user) = first.username()
        {
            let user = percent_decode(user);
            options = match first.password() {
                Some(password) => options.user_and_password(user, percent_decode(password)),
                None => options.token(user),
            };
        }
        let client = options.connect(servers).await.map_err(|e| {
            BusError::Unavailable(format!("connecting to {}: {e}", redact(&config.url)))
        })?;
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(config.request_timeout)
            .max_ack_inflight(100_000)
            .backpressure_on_inflight(true)
            .build(client.clone());
        tracing::info!(url = %redact(&config.url), "connected to NATS");
        Ok(Self {
            client,
            jetstream,
            names,
            config,
        })
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    pub fn config(&self) -> &BusConfig {
        &self.config
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// Largest event payload [`Bus::publish`] can put in the stream: JetStream counts headers
    /// against the message limit, so room is kept for vigil's (`Nats-Msg-Id`, `Vigil-Source`,
    /// `Vigil-Validated`).
    pub fn max_payload_bytes(&self) -> usize {
        self.config
            .streams
            .max_message_bytes
            .saturating_sub(HEADER_ROOM)
    }

    /// Whether the connection is up right now (it reconnects by itself when it is not).
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Creates the event stream, or checks and updates an existing one (idempotent; safe when
    /// several nodes start at once).
    pub async fn ensure_event_stream(&self) -> Result<(), BusError> {
        let settings = &self.config.streams;
        let config = stream::Config {
            name: self.names.events_stream(),
            description: Some("vigil: events published, until a writer persisted them".into()),
            subjects: vec![self.names.events_wildcard()],
            // Removed once acknowledged: the store is the system of record; the stream holds
            // the backlog. When full, publishes are refused (503), never old events dropped.
            retention: stream::RetentionPolicy::WorkQueue,
            discard: stream::DiscardPolicy::New,
            storage: stream::StorageType::File,
            num_replicas: settings.replicas,
            max_message_size: i32::try_from(settings.max_message_bytes).unwrap_or(i32::MAX),
            max_bytes: settings
                .max_bytes
                .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
            duplicate_window: settings.duplicate_window,
            ..Default::default()
        };
        self.ensure_stream(config).await
    }

    /// Creates the dead-letter stream, or checks and updates it.
    pub async fn ensure_dead_letter_stream(&self) -> Result<(), BusError> {
        let settings = &self.config.streams;
        let config = stream::Config {
            name: self.names.dead_letter_stream(),
            description: Some("vigil: messages writers could not store, with the reason".into()),
            subjects: vec![self.names.dead_letter_wildcard()],
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            max_bytes: -1,
            storage: stream::StorageType::File,
            num_replicas: settings.replicas,
            // The original message plus headers naming the reason.
            max_message_size: i32::try_from(settings.max_message_bytes.saturating_add(4096))
                .unwrap_or(i32::MAX),
            duplicate_window: settings.duplicate_window,
            ..Default::default()
        };
        self.ensure_stream(config).await
    }

    async fn ensure_stream(&self, wanted: stream::Config) -> Result<(), BusError> {
        let name = wanted.name.clone();
        match self.jetstream.get_stream(&name).await {
            Ok(mut existing) => {
                let info = existing.info().await.map_err(|e| unavailable(&name, e))?;
                let have = &info.config;
                if have.subjects != wanted.subjects
                    || have.retention != wanted.retention
                    || have.storage != wanted.storage
                {
                    return Err(BusError::Config(format!(
                        "stream {name} exists with subjects {:?}, retention {:?}, storage {:?}; \
                         vigil needs {:?}, {:?}, {:?} (delete it or use another --nats-namespace)",
                        have.subjects,
                        have.retention,
                        have.storage,
                        wanted.subjects,
                        wanted.retention,
                        wanted.storage
                    )));
                }
                let differs = have.num_replicas != wanted.num_replicas
                    || have.max_message_size != wanted.max_message_size
                    || have.max_bytes != wanted.max_bytes
                    || have.duplicate_window != wanted.duplicate_window
                    || have.discard != wanted.discard;
                if differs {
                    // Only vigil's own settings change; anything an operator set on the
                    // stream (max_age, placement, …) is kept.
                    let mut updated = have.clone();
                    updated.num_replicas = wanted.num_replicas;
                    updated.max_message_size = wanted.max_message_size;
                    updated.max_bytes = wanted.max_bytes;
                    updated.duplicate_window = wanted.duplicate_window;
                    updated.discard = wanted.discard;
                    self.jetstream
                        .update_stream(&updated)
                        .await
                        .map_err(|e| unavailable(&name, e))?;
                    tracing::info!(stream = %name, "stream settings updated");
                }
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(ref js)
                        if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                ) =>
            {
                match self.jetstream.create_stream(wanted).await {
                    Ok(_) => {
                        tracing::info!(stream = %name, "stream created");
                        Ok(())
                    }
                    // Another node created it meanwhile: check it as above.
                    Err(create) => match self.jetstream.get_stream(&name).await {
                        Ok(_) => Ok(()),
                        Err(_) => Err(unavailable(&name, create)),
                    },
                }
            }
            Err(e) => Err(unavailable(&name, e)),
        }
    }

    /// Publishes a batch of events of one tenant and waits until JetStream acknowledged every
    /// one (the publishes go out together; the acknowledgements are awaited together). Results
    /// are in batch order. Fails when NATS is not connected, or when any acknowledgement fails
    /// or does not come within the request timeout: some events may then be in the stream, and
    /// publishing the same ids again is safe.
    pub async fn publish(
        &self,
        tenant: &TenantId,
        events: Vec<OutgoingEvent>,
    ) -> Result<Vec<Published>, BusError> {
        if !self.is_connected() {
            return Err(BusError::Unavailable(format!(
                "not connected to NATS at {}",
                redact(&self.config.url)
            )));
        }
        let subject = self.names.events_subject(tenant);
        let mut pending = Vec::with_capacity(events.len());
        for event in events {
            let mut message = PublishMessage::build()
                .payload(event.payload)
                .message_id(event.id.as_str());
            if let Some(source) = &event.default_source {
                message = message
                    .header(writer::HEADER_SOURCE, source.as_str())
                    .header(writer::HEADER_VALIDATED, "1");
            }
            let ack = self
                .jetstream
                .send_publish(subject.clone(), message)
                .await
                .map_err(|e| publish_error(&subject, &e))?;
            pending.push(ack.into_future());
        }
        join_all(pending)
            .await
            .into_iter()
            .map(|ack| {
                ack.map(|a| Published {
                    stream_sequence: a.sequence,
                    duplicate: a.duplicate,
                })
                .map_err(|e| publish_error(&subject, &e))
            })
            .collect()
    }
}

fn publish_error(subject: &str, e: &jetstream::context::PublishError) -> BusError {
    let reason = match e.kind() {
        PublishErrorKind::StreamNotFound => {
            "no JetStream stream takes this subject (is a vigil writer or api node with --nats started?)"
                .to_owned()
        }
        PublishErrorKind::TimedOut => "JetStream did not acknowledge in time".to_owned(),
        _ => e.to_string(),
    };
    BusError::Unavailable(format!("publishing to {subject}: {reason}"))
}

fn unavailable(stream: &str, e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(format!("stream {stream}: {e}"))
}

/// `%XX` escapes of a URL's user or password decoded (`p%40ss` is `p@ss`).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn check_readable(path: &std::path::Path, flag: &str) -> Result<(), BusError> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|e| BusError::Config(format!("{flag} {}: {e}", path.display())))
}

/// The URL with any password replaced by `***`, for logs and errors.
pub fn redact(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let one = one.trim();
            let (scheme, rest) = one.split_once("://").unwrap_or(("", one));
            match rest.split_once('@') {
                Some((userinfo, host)) => {
                    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
                    let sep = if scheme.is_empty() { "" } else { "://" };
                    if userinfo.contains(':') {
                        format!("{scheme}{sep}{user}:***@{host}")
                    } else {
                        format!("{scheme}{sep}***@{host}")
                    }
                }
                None => one.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    #[test]
    fn default_names_are_the_design_names() {
        let n = Names::new(None).unwrap();
        assert_eq!(n.events_stream(), "VIGIL_EVENTS");
        assert_eq!(n.dead_letter_stream(), "VIGIL_DEADLETTER");
        assert_eq!(n.events_subject(&tenant("acme")), "events.acme");
        assert_eq!(n.events_wildcard(), "events.*");
        assert_eq!(n.query_subject(&tenant("acme")), "query.event.acme");
        assert_eq!(n.query_wildcard(), "query.event.*");
        assert_eq!(n.dead_letter_subject("acme"), "deadletter.events.acme");
        assert_eq!(n.event_subject_token("events.acme"), Some("acme"));
        assert_eq!(n.query_subject_token("query.event.acme"), Some("acme"));
        assert_eq!(n.query_subject_token("query.event."), None);
        assert_eq!(n.event_subject_token("x.events.acme"), None);
    }

    #[test]
    fn a_namespace_prefixes_subjects_and_suffixes_streams() {
        let n = Names::new(Some("t1")).unwrap();
        assert_eq!(n.events_stream(), "VIGIL_EVENTS_t1");
        assert_eq!(n.events_subject(&tenant("acme")), "t1.events.acme");
        assert_eq!(n.event_subject_token("t1.events.acme"), Some("acme"));
        assert_eq!(n.event_subject_token("events.acme"), None);
        assert_eq!(n.query_subject_token("t1.query.event.b"), Some("b"));
        for bad in ["", "a.b", "a*", "x y", &"n".repeat(33)] {
            assert_eq!(Names::new(Some(bad)).unwrap_err().code(), "bus_config");
        }
    }

    #[test]
    fn url_credentials_are_decoded() {
        assert_eq!(percent_decode("p%40ss%3Aw"), "p@ss:w");
        assert_eq!(percent_decode("plain%"), "plain%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn passwords_never_print() {
        assert_eq!(
            redact("nats://writer:s3cret@n1:4222, nats://n2:4222"),
            "nats://writer:***@n1:4222,nats://n2:4222"
        );
        assert_eq!(redact("nats://tok@n1:4222"), "nats://***@n1:4222");
        assert_eq!(redact("n1:4222"), "n1:4222");
    }
}
