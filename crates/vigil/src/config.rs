//! `vigil serve` configuration: every option, described once, and the rules they obey.
//!
//! [`Settings`] is the table of options: each field's doc comment is its help, its `#[arg]`
//! its flag, `VIGIL_*` variable and default, its name its `vigil.toml` key (`[limits]` for
//! [`LimitSettings`]; the NATS options of [`NatsArgs`] sit at the top level). The
//! [`options!`] macro derives the file form and the layering defaults < `vigil.toml` <
//! `VIGIL_*` environment (and `.env`) < flags from it. [`Settings::resolve`] layers, fills the
//! defaults that depend on other options and checks the result; the `*_config` methods hand
//! each component its part.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{ArgMatches, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::args::{NatsArgs, NatsFile, parse_duration};
use crate::layered::{file_value_via_serde, options, refuse_unknown};

/// Name of a signing key created at first start (`vigil keys signing --name` picks another).
pub const DEFAULT_SIGNING_KEY_NAME: &str = "vigil";

/// Name, in the data directory, of the JWT signing key created at first start.
pub const JWT_KEY_FILE: &str = "jwt.key";
/// The data directory of every command that takes `--data-dir` without one given.
pub const DEFAULT_DATA_DIR: &str = "./vigil-data";

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "vigil.toml";

/// Largest `max_event_bytes` accepted: 15 MiB. The embedded store writes each event as one log
/// record of at most 16 MiB, and the record adds the server-set fields and its own header; the
/// mebibyte between leaves room for both.
pub const MAX_EVENT_BYTES_LIMIT: usize = 15 * 1024 * 1024;

/// Largest segment size accepted (`segment_max_events`, `max_segment_events`): events in a
/// segment are numbered with `u32`.
const MAX_SEGMENT_EVENTS_LIMIT: u64 = u32::MAX as u64;

options! {
    /// The effective configuration of one `vigil serve`: its options as clap parses them,
    /// then, once [`Settings::resolve`] layered the file under them, the values the server
    /// runs with. [`Settings::to_toml`] prints it in the `vigil.toml` shape
    /// (`--print-config`).
    pub struct Settings, file FileConfig {
        /// Address and port to listen on (port 0 picks a free one).
        #[arg(
            long,
            env = "VIGIL_LISTEN",
            default_value = "127.0.0.1:7878",
            value_name = "ADDR"
        )]
        pub listen: String,
        /// Directory holding the event log, indexes and credentials (created if missing).
        #[arg(
            long,
            env = "VIGIL_DATA_DIR",
            default_value = DEFAULT_DATA_DIR,
            value_name = "DIR"
        )]
        pub data_dir: PathBuf,
        /// Where events, credentials and schemas live: `embedded` (the data directory) or a
        /// PostgreSQL URL `postgres://user:password@host:port/database` shared by several
        /// nodes.
        #[arg(
            long,
            env = "VIGIL_STORE",
            default_value = "embedded",
            hide_env_values = true,
            value_name = "embedded|URL"
        )]
        pub store: String,
        /// PostgreSQL: connections per node.
        #[arg(
            long,
            env = "VIGIL_POSTGRES_POOL_SIZE",
            default_value_t = 16,
            value_name = "N"
        )]
        pub postgres_pool_size: usize,
        /// PostgreSQL: longest a statement may run before it is cancelled (503 for the
        /// request).
        #[arg(long, env = "VIGIL_POSTGRES_STATEMENT_TIMEOUT", default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
        pub postgres_statement_timeout: Duration,
        /// PostgreSQL: daily partitions kept created ahead of today.
        #[arg(
            long,
            env = "VIGIL_POSTGRES_PARTITIONS_AHEAD",
            default_value_t = 3,
            value_name = "DAYS"
        )]
        pub postgres_partitions_ahead: u32,
        /// PostgreSQL: how long an append retries a lost connection or restarting server
        /// before answering 503.
        #[arg(long, env = "VIGIL_POSTGRES_RETRY_FOR", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
        pub postgres_retry_for: Duration,
        /// PostgreSQL: drop whole daily partitions older than this (90d, 1y, …) [default: keep
        /// everything].
        #[arg(long, env = "VIGIL_RETENTION", value_parser = parse_duration, value_name = "DURATION")]
        pub retention: Option<Duration>,
        /// Longest time until a response starts; beyond it: 503 timeout.
        #[arg(long, env = "VIGIL_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
        pub request_timeout: Duration,
        /// Longest a client may take to send a request's headers, from connecting or from the
        /// end of its previous response (so it also bounds a keep-alive connection waiting
        /// for its next request); then the connection is closed.
        #[arg(long, env = "VIGIL_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
        pub header_read_timeout: Duration,
        /// A connection on which no byte moved either way for this long is closed (a stalled
        /// body, a client that stopped reading).
        #[arg(long, env = "VIGIL_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
        pub idle_timeout: Duration,
        /// Most HTTP connections open at once; one more is accepted and closed at once.
        #[arg(
            long,
            env = "VIGIL_MAX_CONNECTIONS",
            default_value_t = 1024,
            value_name = "N"
        )]
        pub max_connections: usize,
        /// After SIGTERM or SIGINT, how long requests in flight may take to finish; connections
        /// still open then are dropped (acknowledged writes are already durable).
        #[arg(long, env = "VIGIL_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
        pub shutdown_timeout: Duration,
        /// Lifetime of the JWTs POST /v1/auth/token issues (15m, 1h, …).
        #[arg(long, env = "VIGIL_JWT_TTL", default_value = "15m", value_parser = parse_duration, value_name = "DURATION")]
        pub jwt_ttl: Duration,
        /// Ed25519 private key (PKCS#8 PEM) that signs JWTs; created (mode 0600) at first
        /// start when absent, refused when group or others can read it. It never enters the
        /// store: nodes sharing a PostgreSQL store must share this file [default:
        /// <data-dir>/jwt.key].
        #[arg(long, env = "VIGIL_JWT_KEY", value_name = "FILE")]
        pub jwt_key: Option<PathBuf>,
        /// Key whose JWTs are still accepted during a rotation (the old jwt.key, or its public
        /// half as PEM); this node signs only with --jwt-key. Drop it once --jwt-ttl has
        /// passed since the rotation.
        #[arg(long, env = "VIGIL_JWT_KEY_PREVIOUS", value_name = "FILE")]
        pub jwt_key_previous: Option<PathBuf>,
        /// Failed credentials (bad key, token or password) allowed per source address within
        /// --auth-failure-window; past them the address gets 429 with Retry-After, its
        /// credentials unchecked. 0 turns the throttle off.
        #[arg(
            long,
            env = "VIGIL_AUTH_FAILURE_LIMIT",
            default_value_t = 30,
            value_name = "N"
        )]
        pub auth_failure_limit: u32,
        /// The window of --auth-failure-limit: the budget refills at limit/window.
        #[arg(long, env = "VIGIL_AUTH_FAILURE_WINDOW", default_value = "1m", value_parser = parse_duration, value_name = "DURATION")]
        pub auth_failure_window: Duration,
        /// Throttle failed credentials by the last X-Forwarded-For address instead of the TCP
        /// peer. Only behind a reverse proxy that appends the client's address and is the only
        /// way in: otherwise clients pick their own address.
        #[arg(
            long,
            env = "VIGIL_TRUST_FORWARDED_FOR",
            action = clap::ArgAction::Set,
            num_args = 0..=1,
            default_value_t = false,
            default_missing_value = "true",
            value_name = "BOOL"
        )]
        pub trust_forwarded_for: bool,
        /// How often credentials and schemas are reloaded from the store, so keys, users and
        /// schemas changed through another vigil process sharing it take effect here.
        #[arg(long, env = "VIGIL_META_REFRESH_INTERVAL", default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
        pub meta_refresh_interval: Duration,
        /// Requests per second allowed per credential (token bucket) [default: unlimited].
        #[arg(long, env = "VIGIL_RATE_LIMIT", value_name = "PER_SEC")]
        pub rate_limit: Option<f64>,
        /// Burst size of the per-credential rate limit [default: one second's worth, at
        /// least 1].
        #[arg(long, env = "VIGIL_RATE_BURST", value_name = "N")]
        pub rate_burst: Option<u32>,
        /// Events per log segment before it is sealed and indexed.
        #[arg(
            long,
            env = "VIGIL_SEGMENT_MAX_EVENTS",
            default_value_t = 262_144,
            value_name = "N"
        )]
        pub segment_max_events: u64,
        /// Seal the active segment after this long even if it is not full.
        #[arg(long, env = "VIGIL_SEAL_INTERVAL", default_value = "10m", value_parser = parse_duration, value_name = "DURATION")]
        pub seal_interval: Duration,
        /// Ed25519 key that signs checkpoints, in Go note format; created (mode 0600) at first
        /// start when absent. Nodes sharing a PostgreSQL store must share it [default:
        /// <data-dir>/signing.key].
        #[arg(long, env = "VIGIL_SIGNING_KEY", value_name = "FILE")]
        pub signing_key: Option<PathBuf>,
        /// Sign a checkpoint of every tenant whose log grew, this often.
        #[arg(long, env = "VIGIL_CHECKPOINT_INTERVAL", default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
        pub checkpoint_interval: Duration,
        /// Background merging combines sealed segments up to this many events.
        #[arg(
            long,
            env = "VIGIL_MAX_SEGMENT_EVENTS",
            default_value_t = 4 * 1024 * 1024,
            value_name = "N"
        )]
        pub max_segment_events: u64,
        /// Most events made durable by one fsync (group commit).
        #[arg(
            long,
            env = "VIGIL_MAX_COMMIT_EVENTS",
            default_value_t = 65_536,
            value_name = "N"
        )]
        pub max_commit_events: usize,
        /// Log format on stderr.
        #[arg(long, env = "VIGIL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
        pub log_format: LogFormat,
        /// Log filter: a level (error, warn, info, debug, trace) or directives
        /// (`info,vigil_api=debug`).
        #[arg(
            long,
            env = "VIGIL_LOG_LEVEL",
            default_value = "info",
            value_name = "FILTER"
        )]
        pub log_level: String,
        /// What this process does, comma-separated: `api` (HTTP), `writer` (consume JetStream
        /// into the store), `reader` (answer NATS queries) [default: all three with --nats,
        /// api without].
        #[arg(
            long,
            env = "VIGIL_ROLES",
            value_enum,
            value_delimiter = ',',
            value_name = "ROLES"
        )]
        pub roles: Vec<Role>,
        /// NATS: copies of each stream message in a NATS cluster (1 on a single server, 3 to
        /// survive the loss of a node).
        #[arg(
            long,
            env = "VIGIL_NATS_REPLICAS",
            default_value_t = 1,
            value_name = "N"
        )]
        pub nats_replicas: usize,
        /// NATS: most bytes of events waiting in the stream for a writer; beyond, ingest
        /// answers 503 [default: as much as the NATS server allows].
        #[arg(long, env = "VIGIL_NATS_MAX_BYTES", value_name = "BYTES")]
        pub nats_max_bytes: Option<u64>,
        /// Writer: most events pulled from JetStream and appended with one store call.
        #[arg(
            long,
            env = "VIGIL_WRITER_BATCH_SIZE",
            default_value_t = 5_000,
            value_name = "N"
        )]
        pub writer_batch_size: usize,
        /// Writer: most payload bytes pulled and appended at once (bounds a writer's memory).
        #[arg(
            long,
            env = "VIGIL_WRITER_BATCH_BYTES",
            default_value_t = 64 * 1024 * 1024,
            value_name = "BYTES"
        )]
        pub writer_batch_bytes: usize,
        // Distributed mode: with `--nats`, the api role publishes events to JetStream and
        // answers 202 once it acknowledged them; writers store them.
        flatten nats: NatsArgs, file NatsFile,
        section limits: LimitSettings, file FileLimits,
    }
}

options! {
    /// Request and event bounds, `[limits]` in the file.
    pub struct LimitSettings, file FileLimits {
        /// Largest request body, in bytes.
        #[arg(long, env = "VIGIL_MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024, value_name = "BYTES")]
        pub max_body_bytes: usize,
        /// Most events in one POST /v1/events batch.
        #[arg(
            long,
            env = "VIGIL_MAX_BATCH_EVENTS",
            default_value_t = 10_000,
            value_name = "N"
        )]
        pub max_batch_events: usize,
        /// Largest single event, in bytes of JSON.
        #[arg(long, env = "VIGIL_MAX_EVENT_BYTES", default_value_t = 256 * 1024, value_name = "BYTES")]
        pub max_event_bytes: usize,
        /// Deepest nesting of objects and arrays in an event (the event itself is depth 1).
        #[arg(long, env = "VIGIL_MAX_DEPTH", default_value_t = 16, value_name = "N")]
        pub max_depth: usize,
        /// Longest object key in an event, in bytes.
        #[arg(
            long,
            env = "VIGIL_MAX_KEY_BYTES",
            default_value_t = 256,
            value_name = "BYTES"
        )]
        pub max_key_bytes: usize,
        /// Longest string value in an event, in bytes.
        #[arg(long, env = "VIGIL_MAX_STRING_BYTES", default_value_t = 64 * 1024, value_name = "BYTES")]
        pub max_string_bytes: usize,
        /// Most scalar fields in one event (each is indexed).
        #[arg(
            long,
            env = "VIGIL_MAX_FIELDS",
            default_value_t = 1_000,
            value_name = "N"
        )]
        pub max_fields: usize,
        /// Largest `limit` a query may ask for.
        #[arg(
            long,
            env = "VIGIL_MAX_QUERY_LIMIT",
            default_value_t = 10_000,
            value_name = "N"
        )]
        pub max_query_limit: usize,
        /// Largest JSON page of GET /v1/events (and export chunk), in bytes; a page always
        /// holds at least one event.
        #[arg(long, env = "VIGIL_MAX_PAGE_BYTES", default_value_t = 16 * 1024 * 1024, value_name = "BYTES")]
        pub max_page_bytes: usize,
        /// Most POST /v1/events body bytes held at once across all requests; beyond: 503
        /// overloaded.
        #[arg(long, env = "VIGIL_MAX_INFLIGHT_BYTES", default_value_t = 256 * 1024 * 1024, value_name = "BYTES")]
        pub max_inflight_bytes: usize,
        /// Most schemas one tenant may register.
        #[arg(
            long,
            env = "VIGIL_MAX_SCHEMAS_PER_TENANT",
            default_value_t = 1_000,
            value_name = "N"
        )]
        pub max_schemas_per_tenant: usize,
        /// Largest schema document, in bytes.
        #[arg(long, env = "VIGIL_MAX_SCHEMA_BYTES", default_value_t = 256 * 1024, value_name = "BYTES")]
        pub max_schema_bytes: usize,
    }
}

/// A role of a vigil process (DESIGN §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The HTTP API.
    Api,
    /// Consumes the JetStream event stream into the store.
    Writer,
    /// Answers queries on NATS (`query.event.<tenant>`).
    Reader,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Writer => "writer",
            Self::Reader => "reader",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

file_value_via_serde!(Role, LogFormat);

/// Reads the configuration file: `explicit` (which must exist) or `./vigil.toml` when present.
/// Returns the path read, if any, with its contents.
pub fn load_file(explicit: Option<&Path>) -> anyhow::Result<(Option<PathBuf>, FileConfig)> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => {
            let default = PathBuf::from(DEFAULT_CONFIG_FILE);
            if !default.exists() {
                return Ok((None, FileConfig::default()));
            }
            default
        }
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    let file = parse_file(&text).with_context(|| format!("in config file {}", path.display()))?;
    Ok((Some(path), file))
}

/// Parses `vigil.toml` text; an error names the unknown key or the malformed value.
pub fn parse_file(text: &str) -> anyhow::Result<FileConfig> {
    let mut table: toml::Table =
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
    let file = FileConfig::take(&mut table, "")?;
    refuse_unknown(&table, "")?;
    Ok(file)
}

impl Settings {
    /// Layers `file` under the flags and variables these settings were parsed from
    /// (`matches`, the `serve` subcommand's), fills the defaults that depend on other
    /// options, then checks the result.
    pub fn resolve(mut self, matches: &ArgMatches, file: FileConfig) -> anyhow::Result<Self> {
        let listen_given = file.listen.is_some() || crate::layered::explicit(matches, "listen");
        self.layer(file, matches);
        if self.roles.is_empty() {
            self.roles = if self.nats.nats.is_some() {
                vec![Role::Api, Role::Writer, Role::Reader]
            } else {
                vec![Role::Api]
            };
        } else {
            self.roles.sort_unstable();
            self.roles.dedup();
        }
        if !listen_given {
            self.listen = default_listen(&self.roles).to_owned();
        }
        if self.signing_key.is_none() {
            self.signing_key = Some(self.data_dir.join("signing.key"));
        }
        if self.jwt_key.is_none() {
            self.jwt_key = Some(self.data_dir.join(JWT_KEY_FILE));
        }
        self.validate()?;
        self.check_roles()?;
        Ok(self)
    }

    /// The checkpoint signing key file (`<data-dir>/signing.key` unless placed elsewhere).
    pub fn signing_key(&self) -> PathBuf {
        self.signing_key
            .clone()
            .unwrap_or_else(|| self.data_dir.join("signing.key"))
    }

    /// The JWT signing key file (`<data-dir>/jwt.key` unless placed elsewhere).
    pub fn jwt_key(&self) -> PathBuf {
        self.jwt_key
            .clone()
            .unwrap_or_else(|| self.data_dir.join(JWT_KEY_FILE))
    }

    /// The roles must make sense together with the store and `--nats`.
    pub fn check_roles(&self) -> anyhow::Result<()> {
        let has = |r: Role| self.roles.contains(&r);
        if self.nats.nats.is_none() && (has(Role::Writer) || has(Role::Reader)) {
            bail!("the writer and reader roles work on NATS: give --nats (or VIGIL_NATS)");
        }
        if self.nats.nats.is_some()
            && matches!(self.backend(), Backend::Embedded)
            && has(Role::Api)
            && !has(Role::Writer)
        {
            bail!(
                "an embedded data directory belongs to one process, so a node that publishes \
                 events to NATS must also run the writer role to store them here; use a \
                 PostgreSQL store to run api and writer in separate processes"
            );
        }
        if self.writer_batch_size == 0 {
            bail!("writer_batch_size must be at least 1");
        }
        if self.writer_batch_bytes < self.limits.max_event_bytes {
            bail!(
                "writer_batch_bytes ({}) must be at least max_event_bytes ({}): a batch must \
                 hold the largest event",
                self.writer_batch_bytes,
                self.limits.max_event_bytes
            );
        }
        if self.nats_replicas == 0 || self.nats_replicas > 5 {
            bail!("nats_replicas must be from 1 to 5 (JetStream's limit)");
        }
        Ok(())
    }

    /// Whether this process runs `role`.
    pub fn runs(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The bus configuration, when `--nats` is given.
    pub fn bus_config(&self, connection_name: &str) -> Option<vigil_bus::BusConfig> {
        let url = self.nats.nats.as_deref()?;
        Some(vigil_bus::BusConfig {
            streams: vigil_bus::StreamSettings {
                replicas: self.nats_replicas,
                max_message_bytes: vigil_bus::max_message_bytes_for(self.limits.max_event_bytes),
                max_bytes: self.nats_max_bytes,
                ..vigil_bus::StreamSettings::default()
            },
            ..self.nats.bus_config(url, connection_name)
        })
    }

    fn validate(&self) -> anyhow::Result<()> {
        let l = &self.limits;
        for (name, value) in [
            ("max_body_bytes", l.max_body_bytes),
            ("max_batch_events", l.max_batch_events),
            ("max_event_bytes", l.max_event_bytes),
            ("max_depth", l.max_depth),
            ("max_key_bytes", l.max_key_bytes),
            ("max_string_bytes", l.max_string_bytes),
            ("max_fields", l.max_fields),
            ("max_query_limit", l.max_query_limit),
            ("max_page_bytes", l.max_page_bytes),
            ("max_inflight_bytes", l.max_inflight_bytes),
            ("max_schemas_per_tenant", l.max_schemas_per_tenant),
            ("max_schema_bytes", l.max_schema_bytes),
        ] {
            if value == 0 {
                bail!("{name} must be at least 1");
            }
        }
        if l.max_event_bytes > MAX_EVENT_BYTES_LIMIT {
            bail!(
                "max_event_bytes must be at most {MAX_EVENT_BYTES_LIMIT} (15 MiB), not {}: the \
                 store keeps each event in one log record of at most 16 MiB, envelope included",
                l.max_event_bytes
            );
        }
        if l.max_depth > vigil_event::MAX_NESTING {
            bail!(
                "max_depth must be at most {}, not {}: JSON is parsed without recursing past \
                 that depth",
                vigil_event::MAX_NESTING,
                l.max_depth
            );
        }
        if l.max_body_bytes < l.max_event_bytes {
            bail!(
                "max_body_bytes ({}) must be at least max_event_bytes ({}): an event that fits \
                 the event limit must fit in a request",
                l.max_body_bytes,
                l.max_event_bytes
            );
        }
        for (name, value) in [
            ("segment_max_events", self.segment_max_events),
            ("max_segment_events", self.max_segment_events),
        ] {
            if value == 0 || value > MAX_SEGMENT_EVENTS_LIMIT {
                bail!(
                    "{name} must be from 1 to {MAX_SEGMENT_EVENTS_LIMIT}, not {value}: events in a \
                     segment are numbered with 32 bits"
                );
            }
        }
        if self.max_segment_events < 4 * self.segment_max_events {
            bail!(
                "max_segment_events ({}) must be at least 4 × segment_max_events ({}): merging \
                 combines runs of 4 sealed segments, so a smaller limit would never merge and the \
                 number of segments would grow without bound",
                self.max_segment_events,
                self.segment_max_events
            );
        }
        if self.store != "embedded"
            && !(self.store.starts_with("postgres://") || self.store.starts_with("postgresql://"))
        {
            bail!(
                "store must be `embedded` or a PostgreSQL URL (postgres://user@host:port/database), \
                 not {:?}",
                vigil_store_postgres::redact_url(&self.store)
            );
        }
        match self.backend() {
            Backend::Embedded if self.retention.is_some() => bail!(
                "retention applies to the PostgreSQL store (it drops whole daily partitions); \
                 the embedded store keeps every event"
            ),
            Backend::Postgres(_) => {
                if self.postgres_pool_size < 2 {
                    bail!("postgres_pool_size must be at least 2 (one writer, one reader)");
                }
                if self.postgres_statement_timeout.is_zero() {
                    bail!("postgres_statement_timeout must be longer than zero");
                }
                if self
                    .retention
                    .is_some_and(|r| r < Duration::from_secs(86_400))
                {
                    bail!("retention must be at least 1d: partitions hold whole days");
                }
            }
            Backend::Embedded => {}
        }
        if self.max_commit_events == 0 {
            bail!("max_commit_events must be at least 1");
        }
        if self.seal_interval.is_zero() {
            bail!("seal_interval must be longer than zero");
        }
        if self.checkpoint_interval.is_zero() {
            bail!("checkpoint_interval must be longer than zero");
        }
        if self.request_timeout.is_zero() {
            bail!("request_timeout must be longer than zero");
        }
        for (name, value) in [
            ("header_read_timeout", self.header_read_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if value.is_zero() {
                bail!("{name} must be longer than zero");
            }
        }
        if self.max_connections == 0 {
            bail!("max_connections must be at least 1");
        }
        if self.auth_failure_window.is_zero() {
            bail!("auth_failure_window must be longer than zero");
        }
        if self.meta_refresh_interval.is_zero() {
            bail!("meta_refresh_interval must be longer than zero");
        }
        if self.jwt_ttl < Duration::from_secs(1) {
            bail!("jwt_ttl must be at least 1s");
        }
        match (self.rate_limit, self.rate_burst) {
            (Some(rate), _) if !(rate.is_finite() && rate > 0.0) => {
                bail!("rate_limit must be a positive number of requests per second")
            }
            (_, Some(0)) => bail!("rate_burst must be at least 1"),
            (None, Some(_)) => bail!("rate_burst needs rate_limit"),
            _ => Ok(()),
        }
    }

    /// The HTTP layer's bounds.
    pub fn api_config(&self) -> vigil_api::ApiConfig {
        let l = &self.limits;
        let query_defaults = vigil_query::QueryLimits::default();
        vigil_api::ApiConfig {
            event_limits: self.event_limits(),
            query_limits: vigil_query::QueryLimits {
                max_limit: l.max_query_limit,
                default_limit: query_defaults.default_limit.min(l.max_query_limit),
                ..query_defaults
            },
            max_body_bytes: l.max_body_bytes,
            max_batch_events: l.max_batch_events,
            request_timeout: self.request_timeout,
            max_schemas_per_tenant: l.max_schemas_per_tenant,
            max_schema_bytes: l.max_schema_bytes,
            max_inflight_bytes: l.max_inflight_bytes,
            max_page_bytes: l.max_page_bytes,
            schema_refresh_interval: self.meta_refresh_interval,
            trust_forwarded_for: self.trust_forwarded_for,
        }
    }

    /// How the HTTP listener treats connections.
    pub fn serve_config(&self) -> vigil_api::ServeConfig {
        vigil_api::ServeConfig {
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
            shutdown_timeout: self.shutdown_timeout,
        }
    }

    pub fn event_limits(&self) -> vigil_event::Limits {
        let l = &self.limits;
        vigil_event::Limits {
            max_event_bytes: l.max_event_bytes,
            max_depth: l.max_depth,
            max_key_bytes: l.max_key_bytes,
            max_string_bytes: l.max_string_bytes,
            max_fields: l.max_fields,
        }
    }

    pub fn auth_config(&self) -> vigil_auth::AuthConfig {
        vigil_auth::AuthConfig {
            jwt_ttl: self.jwt_ttl,
            rate_limit: self.rate_limit.map(|per_second| vigil_auth::RateLimit {
                per_second,
                burst: self.rate_burst.unwrap_or_else(|| default_burst(per_second)),
            }),
            refresh_interval: self.meta_refresh_interval,
            source_failures: (self.auth_failure_limit > 0).then(|| vigil_auth::RateLimit {
                per_second: f64::from(self.auth_failure_limit)
                    / self.auth_failure_window.as_secs_f64(),
                burst: self.auth_failure_limit,
            }),
            // The keys are read from their files by `vigil serve`.
            ..vigil_auth::AuthConfig::default()
        }
    }

    pub fn store_config(&self) -> vigil_store_embedded::EmbeddedConfig {
        let mut config = vigil_store_embedded::EmbeddedConfig::new(&self.data_dir);
        config.segment_max_events = self.segment_max_events;
        config.seal_interval = self.seal_interval;
        config.max_segment_events = self.max_segment_events;
        config.max_commit_events = self.max_commit_events;
        config
    }

    /// Which store `store` names.
    pub fn backend(&self) -> Backend<'_> {
        if self.store == "embedded" {
            Backend::Embedded
        } else {
            Backend::Postgres(&self.store)
        }
    }

    pub fn postgres_config(&self, url: &str) -> vigil_store_postgres::PgConfig {
        vigil_store_postgres::PgConfig {
            pool_size: self.postgres_pool_size,
            statement_timeout: self.postgres_statement_timeout,
            partitions_ahead: self.postgres_partitions_ahead,
            retry_for: self.postgres_retry_for,
            retention: self.retention,
            ..vigil_store_postgres::PgConfig::new(url)
        }
    }

    /// The settings as `vigil.toml` text. Secrets never print: the passwords in the store
    /// and NATS URLs are masked.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        let mut table = toml::Table::new();
        self.write_toml(&mut table)
            .context("rendering the configuration as toml")?;
        table.insert(
            "store".to_owned(),
            vigil_store_postgres::redact_url(&self.store).into(),
        );
        if let Some(nats) = &self.nats.nats {
            table.insert("nats".to_owned(), vigil_bus::redact(nats).into());
        }
        toml::to_string(&table).context("rendering the configuration as toml")
    }
}

/// One second's worth of requests, at least one.
fn default_burst(per_second: f64) -> u32 {
    // `as` saturates; the rate is validated positive and finite before this runs.
    (per_second.ceil() as u32).max(1)
}

/// The store a configuration names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend<'a> {
    /// Segment log in the data directory.
    Embedded,
    /// PostgreSQL at this URL.
    Postgres(&'a str),
}

/// Where a node listens when no `--listen` is given: the API on 7878, and nodes without the api
/// role (health, readiness and metrics only) on ports of their own, so the documented
/// one-machine example of separate `vigil writer` and `vigil reader` processes runs as written.
pub fn default_listen(roles: &[Role]) -> &'static str {
    if roles.contains(&Role::Api) {
        "127.0.0.1:7878"
    } else if roles.contains(&Role::Writer) {
        "127.0.0.1:7879"
    } else {
        "127.0.0.1:7880"
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;

    /// `vigil serve`'s options alone, as the command flattens them.
    #[derive(Debug, clap::Parser)]
    struct Serve {
        #[command(flatten)]
        settings: Settings,
    }

    /// Settings from a command line (no environment involved: tests never set variables) and
    /// a file.
    fn resolve(argv: &[&str], file: &str) -> anyhow::Result<Settings> {
        let matches = Serve::command()
            .try_get_matches_from(std::iter::once("serve").chain(argv.iter().copied()))?;
        let serve = Serve::from_arg_matches(&matches)?;
        serve.settings.resolve(&matches, parse_file(file)?)
    }

    /// Two values `id` accepts (the second differs from the first), as a flag or variable
    /// takes them and as `vigil.toml` writes them. Only the layering is under test here, so
    /// they need not pass validation.
    fn sample_values(arg: &clap::Arg) -> [(String, toml::Value); 2] {
        if arg
            .get_value_names()
            .and_then(|n| n.first())
            .map(|n| n.as_str())
            == Some("BOOL")
        {
            return [true, false].map(|v| (v.to_string(), v.into()));
        }
        if let Some([a, b, ..]) = arg.get_possible_values().get(..2) {
            let value = |v: &clap::builder::PossibleValue| {
                let name = v.get_name().to_owned();
                let file = if arg.get_id() == "roles" {
                    toml::Value::Array(vec![name.clone().into()])
                } else {
                    name.clone().into()
                };
                (name, file)
            };
            return [value(a), value(b)];
        }
        let name = arg
            .get_value_names()
            .and_then(|n| n.first())
            .map(|n| n.as_str());
        match name {
            Some("DURATION") => ["2days", "3days"].map(|v| (v.to_owned(), v.into())),
            Some("N" | "BYTES" | "DAYS") => [2, 3].map(|v| (v.to_string(), v.into())),
            Some("PER_SEC") => [2.5, 3.5].map(|v| (v.to_string(), v.into())),
            _ => ["/sample/a", "/sample/b"].map(|v| (v.to_owned(), v.into())),
        }
    }

    /// The file key of option `id`: its name, under `[limits]` for the limits.
    fn file_key(id: &str) -> String {
        let in_limits = <LimitSettings as clap::Args>::augment_args(clap::Command::new("limits"))
            .get_arguments()
            .any(|a| a.get_id() == id);
        if in_limits {
            format!("limits.{id}")
        } else {
            id.to_owned()
        }
    }

    fn printed(settings: &Settings, key: &str) -> Option<toml::Value> {
        let mut table = toml::Table::new();
        settings.write_toml(&mut table).unwrap();
        match key.split_once('.') {
            Some((section, key)) => table[section].as_table().unwrap().get(key).cloned(),
            None => table.get(key).cloned(),
        }
    }

    /// Every option, read from the option table itself: its flag is `--<name>`, its variable
    /// `VIGIL_<NAME>`, its file key `<name>` (`limits.<name>`); a file value beats the default
    /// and a flag beats the file. (The variable's place between them is clap's: a variable
    /// and a flag are both explicit; `tests/it/cli.rs` runs the binary with all four layers.)
    #[test]
    fn every_option_maps_to_its_flag_variable_and_file_key_in_order() {
        let command = Serve::command();
        let mut seen = 0;
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" {
                continue;
            }
            seen += 1;
            assert_eq!(arg.get_long(), Some(id.replace('_', "-").as_str()), "{id}");
            let env = format!("VIGIL_{}", id.to_uppercase());
            assert_eq!(arg.get_env(), Some(std::ffi::OsStr::new(&env)), "{id}");

            let key = file_key(id);
            let [(_, file_value), (flag_value, flag_file_value)] = sample_values(arg);
            let file_text = match key.split_once('.') {
                Some((section, key)) => format!("[{section}]\n{key} = {file_value}\n"),
                None => format!("{key} = {file_value}\n"),
            };
            let flag = format!("--{}", arg.get_long().unwrap());
            // The TLS certificate and key go together on the command line.
            let partner: &[&str] = match id {
                "nats_tls_cert" => &["--nats-tls-key", "/k"],
                "nats_tls_key" => &["--nats-tls-cert", "/c"],
                _ => &[],
            };
            let layered = |argv: &[&str], file: &str| {
                let partner = if argv.is_empty() { &[][..] } else { partner };
                let argv = std::iter::once("serve")
                    .chain(partner.iter().copied())
                    .chain(argv.iter().copied());
                let matches = Serve::command().try_get_matches_from(argv).unwrap();
                let mut settings = Serve::from_arg_matches(&matches).unwrap().settings;
                settings.layer(parse_file(file).unwrap(), &matches);
                printed(&settings, &key)
            };
            assert_eq!(
                layered(&[], &file_text),
                Some(file_value.clone()),
                "{id}: file beats default"
            );
            assert_eq!(
                layered(&[&flag, &flag_value], &file_text),
                Some(flag_file_value),
                "{id}: flag beats file"
            );
            assert!(
                parse_file(&file_text.replace(id, &format!("{id}x"))).is_err(),
                "{id}: a misspelt key is refused"
            );
        }
        assert_eq!(
            seen, 54,
            "options added or lost: update docs/configuration.md"
        );
    }

    /// docs/configuration.md documents every option with its flag, variable and key, and
    /// documents nothing the table does not have.
    #[test]
    fn the_documented_options_are_the_options() {
        let docs = include_str!("../../../docs/configuration.md");
        let command = Serve::command();
        let mut documented = std::collections::BTreeSet::new();
        for line in docs.lines().filter(|l| l.starts_with("| `--")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if cells.len() != 7 {
                continue; // the client commands' table: option, env var, default, meaning
            }
            let flags: Vec<&str> = cells[1].split(", ").map(|f| f.trim_matches('`')).collect();
            let keys: Vec<&str> = cells[3].split(", ").map(|k| k.trim_matches('`')).collect();
            for (i, flag) in flags.iter().enumerate() {
                let long = flag.trim_start_matches("--");
                let id = long.replace('-', "_");
                documented.insert(id.clone());
                if matches!(long, "config" | "print-config") {
                    continue;
                }
                let arg = command
                    .get_arguments()
                    .find(|a| a.get_long() == Some(long))
                    .unwrap_or_else(|| panic!("documented {flag} is no option"));
                let env = arg.get_env().unwrap().to_str().unwrap().to_owned();
                // The TLS row abbreviates `VIGIL_NATS_TLS_CERT` as `…_CERT`.
                assert!(
                    cells[2].contains(&env)
                        || cells[2].contains(env.trim_start_matches("VIGIL_NATS_TLS")),
                    "{flag}: documented as {}, is {env}",
                    cells[2]
                );
                assert_eq!(keys[i], file_key(&id), "{flag}");
            }
        }
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            assert!(
                id == "help" || documented.contains(id),
                "{id} is not documented"
            );
        }
    }

    #[test]
    fn defaults_apply_without_file_or_flags() {
        let s = resolve(&[], "").unwrap();
        assert_eq!(s.listen, "127.0.0.1:7878");
        assert_eq!(s.data_dir, PathBuf::from("./vigil-data"));
        assert_eq!(s.jwt_ttl, Duration::from_secs(900));
        assert_eq!(s.limits.max_body_bytes, 8 * 1024 * 1024);
        assert_eq!(s.limits.max_batch_events, 10_000);
        assert_eq!(s.rate_limit, None);
        assert!(s.auth_config().rate_limit.is_none());
    }

    /// Regression (issue 12): `vigil writer` and `vigil reader` listened on 127.0.0.1:7878 like
    /// an api node, so the documented example of separate roles on one machine failed with
    /// "Address already in use". Without `--listen`, each role has a port of its own; a given
    /// address (flag, variable or file) is kept whatever the role.
    #[test]
    fn nodes_without_the_api_role_listen_on_ports_of_their_own() {
        let nats = ["--nats", "nats://n1:4222", "--store", "postgres://db/vigil"];
        let with = |extra: &[&'static str]| {
            let argv: Vec<&str> = nats.iter().chain(extra).copied().collect();
            resolve(&argv, "").unwrap().listen
        };
        assert_eq!(with(&["--roles", "api"]), "127.0.0.1:7878");
        assert_eq!(with(&["--roles", "writer"]), "127.0.0.1:7879");
        assert_eq!(with(&["--roles", "reader"]), "127.0.0.1:7880");
        assert_eq!(with(&["--roles", "writer,reader"]), "127.0.0.1:7879");
        assert_eq!(
            with(&["--roles", "reader", "--listen", "127.0.0.1:9"]),
            "127.0.0.1:9"
        );
        let argv: Vec<&str> = nats.iter().chain(&["--roles", "writer"]).copied().collect();
        let from_file = resolve(&argv, "listen = \"127.0.0.1:7878\"").unwrap();
        assert_eq!(
            from_file.listen, "127.0.0.1:7878",
            "the file's address is kept"
        );
    }

    #[test]
    fn roles_default_to_the_mode_and_must_fit_the_store() {
        let plain = resolve(&[], "").unwrap();
        assert_eq!(plain.roles, vec![Role::Api]);
        assert!(plain.bus_config("t").is_none());

        let bus = resolve(&["--nats", "nats://w:secret@n1:4222"], "").unwrap();
        assert_eq!(bus.roles, vec![Role::Api, Role::Writer, Role::Reader]);
        let config = bus.bus_config("t").unwrap();
        assert_eq!(config.streams.max_message_bytes, 256 * 1024 + 4096);
        let printed = bus.to_toml().unwrap();
        assert!(!printed.contains("secret"), "{printed}");

        let from_file = resolve(&[], "nats = \"nats://n1\"\nroles = [\"reader\"]\n").unwrap();
        assert_eq!(from_file.roles, vec![Role::Reader]);

        let e = resolve(&["--roles", "writer"], "").unwrap_err();
        assert!(e.to_string().contains("--nats"), "{e}");
        let e = resolve(&["--nats", "nats://n1", "--roles", "api"], "").unwrap_err();
        assert!(e.to_string().contains("writer role"), "{e}");
        let pg = resolve(
            &[
                "--nats",
                "nats://n1",
                "--roles",
                "api",
                "--store",
                "postgres://pg/v",
            ],
            "",
        )
        .unwrap();
        assert_eq!(pg.roles, vec![Role::Api]);
        let e = resolve(&["--nats", "nats://n1", "--writer-batch-bytes", "1000"], "").unwrap_err();
        assert!(e.to_string().contains("writer_batch_bytes"), "{e}");
    }

    #[test]
    fn the_file_beats_defaults_and_flags_beat_the_file() {
        let file = r#"
            listen = "0.0.0.0:9000"
            jwt_ttl = "1h"
            rate_limit = 50.0
            [limits]
            max_batch_events = 500
            max_query_limit = 2000
        "#;
        let s = resolve(
            &["--listen", "127.0.0.1:0", "--max-query-limit", "50"],
            file,
        )
        .unwrap();
        assert_eq!(s.listen, "127.0.0.1:0", "flag beats file");
        assert_eq!(s.jwt_ttl, Duration::from_secs(3600), "file beats default");
        assert_eq!(s.limits.max_batch_events, 500);
        assert_eq!(s.limits.max_query_limit, 50);
        let api = s.api_config();
        assert_eq!(api.query_limits.max_limit, 50);
        assert_eq!(
            api.query_limits.default_limit, 50,
            "default limit never exceeds the max"
        );
        let rate = s.auth_config().rate_limit.unwrap();
        assert_eq!((rate.per_second, rate.burst), (50.0, 50));
    }

    #[test]
    fn a_flag_equal_to_the_default_still_beats_the_file() {
        let s = resolve(&["--max-depth", "16"], "[limits]\nmax_depth = 4").unwrap();
        assert_eq!(s.limits.max_depth, 16);
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let err = parse_file("listen = \"x\"\nmax_body = 3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_body"), "{err}");
        let err = parse_file("[limits]\nmax_deph = 3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_deph"), "{err}");
    }

    #[test]
    fn bad_values_are_refused_with_their_name() {
        let err = resolve(&["--max-fields", "0"], "").unwrap_err().to_string();
        assert!(err.contains("max_fields"), "{err}");
        let err = resolve(&["--rate-burst", "5"], "").unwrap_err().to_string();
        assert!(err.contains("rate_limit"), "{err}");
        let err = resolve(&["--rate-limit=-1"], "").unwrap_err().to_string();
        assert!(err.contains("rate_limit"), "{err}");
        let err = parse_file("seal_interval = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("soon"), "{err}");
    }

    #[test]
    fn defaults_are_the_components_defaults() {
        let s = resolve(&[], "").unwrap();
        assert_eq!(
            format!("{:?}", s.api_config()),
            format!("{:?}", vigil_api::ApiConfig::default())
        );
        assert_eq!(
            s.store_config(),
            vigil_store_embedded::EmbeddedConfig::new("./vigil-data")
        );
        assert_eq!(s.auth_config(), vigil_auth::AuthConfig::default());
        assert_eq!(s.serve_config(), vigil_api::ServeConfig::default());
    }

    /// Regression: `max_event_bytes` was accepted at any size, though the store refuses a log
    /// record above 16 MiB, so a large limit let events through validation that the store
    /// then failed to write; and `max_body_bytes` could be set below `max_event_bytes`, making
    /// the event limit a lie. Both are now refused at start-up with a message that says why.
    #[test]
    fn event_limit_fits_the_store_and_the_body_limit_fits_an_event() {
        let err = resolve(
            &[
                "--max-event-bytes",
                "16777216",
                "--max-body-bytes",
                "33554432",
            ],
            "",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("max_event_bytes must be at most 15728640 (15 MiB), not 16777216")
                && err.contains("16 MiB, envelope included"),
            "{err}"
        );
        let s = resolve(
            &[
                "--max-event-bytes",
                "15728640",
                "--max-body-bytes",
                "15728640",
            ],
            "",
        )
        .unwrap();
        assert_eq!(s.event_limits().max_event_bytes, MAX_EVENT_BYTES_LIMIT);

        let err = resolve(&["--max-body-bytes", "1000"], "")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "max_body_bytes (1000) must be at least max_event_bytes (262144): an event that fits \
             the event limit must fit in a request"
        );
        // The same from the file.
        let err = resolve(
            &[],
            "[limits]\nmax_event_bytes = 9000000\nmax_body_bytes = 8000000",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("max_body_bytes (8000000)"), "{err}");
    }

    /// Nesting past `max_depth` is refused as `too_deep` by a parser that stops descending
    /// there; it never recurses past `vigil_event::MAX_NESTING`, so a larger limit is refused
    /// at start-up rather than silently held lower.
    #[test]
    fn the_depth_limit_stays_within_what_the_parser_descends() {
        let s = resolve(&["--max-depth", "100"], "").unwrap();
        assert_eq!(s.event_limits().max_depth, 100);
        let err = resolve(&["--max-depth", "101"], "")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("max_depth must be at most 100, not 101"),
            "{err}"
        );
    }

    #[test]
    fn the_signing_key_lives_in_the_data_dir_unless_placed_elsewhere() {
        let s = resolve(&["--data-dir", "/srv/vigil"], "").unwrap();
        assert_eq!(s.signing_key(), PathBuf::from("/srv/vigil/signing.key"));
        assert_eq!(s.checkpoint_interval, Duration::from_secs(1));
        let s = resolve(
            &["--data-dir", "/srv/vigil"],
            "signing_key = \"/etc/vigil/signing.key\"\ncheckpoint_interval = \"5s\"",
        )
        .unwrap();
        assert_eq!(s.signing_key(), PathBuf::from("/etc/vigil/signing.key"));
        assert_eq!(s.checkpoint_interval, Duration::from_secs(5));
        let s = resolve(&["--signing-key", "/k"], "signing_key = \"/etc/k\"").unwrap();
        assert_eq!(s.signing_key(), PathBuf::from("/k"), "flag beats file");
        let err = resolve(&["--checkpoint-interval", "0s"], "").unwrap_err();
        assert!(err.to_string().contains("checkpoint_interval"), "{err}");
    }

    #[test]
    fn store_and_request_tuning_options_reach_their_components() {
        let file = r#"
            request_timeout = "5s"
            max_segment_events = 2000000
            max_commit_events = 512
            [limits]
            max_page_bytes = 1048576
            max_inflight_bytes = 67108864
            max_schemas_per_tenant = 50
            max_schema_bytes = 4096
        "#;
        let s = resolve(&["--max-commit-events", "1024"], file).unwrap();
        let api = s.api_config();
        assert_eq!(api.request_timeout, Duration::from_secs(5));
        assert_eq!(api.max_page_bytes, 1 << 20);
        assert_eq!(api.max_inflight_bytes, 64 << 20);
        assert_eq!(api.max_schemas_per_tenant, 50);
        assert_eq!(api.max_schema_bytes, 4096);
        let store = s.store_config();
        assert_eq!(store.max_segment_events, 2_000_000);
        assert_eq!(store.max_commit_events, 1024, "flag beats file");

        for (argv, name) in [
            (&["--request-timeout", "0s"][..], "request_timeout"),
            (&["--max-commit-events", "0"], "max_commit_events"),
            (&["--max-segment-events", "0"], "max_segment_events"),
            (
                &["--max-segment-events", "4294967296"],
                "max_segment_events",
            ),
            (
                &["--segment-max-events", "4294967296"],
                "segment_max_events",
            ),
            (&["--max-page-bytes", "0"], "max_page_bytes"),
            (&["--max-inflight-bytes", "0"], "max_inflight_bytes"),
            (&["--max-schemas-per-tenant", "0"], "max_schemas_per_tenant"),
            (&["--max-schema-bytes", "0"], "max_schema_bytes"),
        ] {
            let err = resolve(argv, "").unwrap_err().to_string();
            assert!(err.starts_with(name), "{argv:?}: {err}");
        }
    }

    #[test]
    fn connection_bounds_reach_the_listener() {
        let s = resolve(
            &["--max-connections", "8", "--shutdown-timeout", "2s"],
            "header_read_timeout = \"3s\"\nidle_timeout = \"4s\"\nmax_connections = 100",
        )
        .unwrap();
        assert_eq!(
            s.serve_config(),
            vigil_api::ServeConfig {
                header_read_timeout: Duration::from_secs(3),
                idle_timeout: Duration::from_secs(4),
                max_connections: 8,
                shutdown_timeout: Duration::from_secs(2),
            }
        );
        for (argv, name) in [
            (&["--header-read-timeout", "0s"][..], "header_read_timeout"),
            (&["--idle-timeout", "0s"], "idle_timeout"),
            (&["--max-connections", "0"], "max_connections"),
        ] {
            let err = resolve(argv, "").unwrap_err().to_string();
            assert!(err.starts_with(name), "{argv:?}: {err}");
        }
        // A zero deadline is allowed: shutdown then drops every connection at once.
        let s = resolve(&["--shutdown-timeout", "0s"], "").unwrap();
        assert!(s.serve_config().shutdown_timeout.is_zero());
    }

    #[test]
    fn the_meta_refresh_interval_reaches_credentials_and_schemas() {
        let s = resolve(&[], "").unwrap();
        assert_eq!(s.meta_refresh_interval, Duration::from_secs(1));
        let s = resolve(&[], "meta_refresh_interval = \"250ms\"").unwrap();
        assert_eq!(s.auth_config().refresh_interval, Duration::from_millis(250));
        assert_eq!(
            s.api_config().schema_refresh_interval,
            Duration::from_millis(250)
        );
        let err = resolve(&["--meta-refresh-interval", "0s"], "")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("meta_refresh_interval"), "{err}");
    }

    #[test]
    fn printed_config_reads_back_as_the_same_settings() {
        let s = resolve(
            &[
                "--rate-limit",
                "2.5",
                "--seal-interval",
                "90s",
                "--request-timeout",
                "1m 30s",
                "--max-commit-events",
                "100",
                "--max-page-bytes",
                "65536",
                "--log-format",
                "json",
            ],
            "",
        )
        .unwrap();
        let text = s.to_toml().unwrap();
        let again = resolve(&[], &text).unwrap();
        assert_eq!(again, s, "{text}");
        assert_eq!(again.auth_config().rate_limit.unwrap().burst, 3);
    }

    #[test]
    fn the_store_is_embedded_or_a_postgres_url_whose_password_never_prints() {
        let s = resolve(&[], "").unwrap();
        assert_eq!(s.backend(), Backend::Embedded);
        let s = resolve(
            &[
                "--store",
                "postgres://vigil:s3cret@db:5432/vigil",
                "--retention",
                "90d",
            ],
            "",
        )
        .unwrap();
        assert_eq!(
            s.backend(),
            Backend::Postgres("postgres://vigil:s3cret@db:5432/vigil")
        );
        assert_eq!(s.postgres_config("postgres://x@y/z").retention, s.retention);
        let text = s.to_toml().unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(
            text.contains("postgres://vigil:***@db:5432/vigil"),
            "{text}"
        );
        let from_file = resolve(
            &[],
            "store = \"postgresql://db/vigil\"\npostgres_pool_size = 4",
        )
        .unwrap();
        assert_eq!(
            from_file.backend(),
            Backend::Postgres("postgresql://db/vigil")
        );
        assert_eq!(from_file.postgres_pool_size, 4);

        let err = |argv: &[&str]| resolve(argv, "").unwrap_err().to_string();
        assert!(err(&["--store", "mysql://u:pw@h/db"]).starts_with("store must be"));
        assert!(!err(&["--store", "mysql://u:pw@h/db"]).contains("pw"));
        assert!(
            err(&["--retention", "30d"]).starts_with("retention applies to the PostgreSQL store")
        );
        assert!(
            err(&["--store", "postgres://h/db", "--retention", "1h"])
                .starts_with("retention must be at least 1d")
        );
        assert!(
            err(&["--store", "postgres://h/db", "--postgres-pool-size", "1"])
                .starts_with("postgres_pool_size must be at least 2")
        );
    }
}
