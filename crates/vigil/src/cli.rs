//! The command line: every subcommand and option, as clap parses them.
//!
//! Client commands read the server from `VIGIL_URL` and the credential from `VIGIL_TOKEN`
//! (whose value `--help` never shows). `serve` options also come from `vigil.toml` and
//! `VIGIL_*` variables; [`crate::config`] layers them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

use crate::output::OutputFormat;

/// vigil: an audit-log and security-event service.
///
/// `vigil serve` runs the server; every other command talks to a running server over HTTP
/// (`VIGIL_URL`, `VIGIL_TOKEN`) except `reindex`, which works on a stopped server's data
/// directory.
#[derive(Debug, Parser)]
#[command(
    name = "vigil",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (HTTP API over the embedded store in --data-dir; with --nats, also the
    /// writer and reader roles).
    Serve(Box<ServeArgs>),
    /// Consume the NATS JetStream event stream into the store (`serve --roles writer`).
    Writer(Box<ServeArgs>),
    /// Answer queries over NATS from the store (`serve --roles reader`).
    Reader(Box<ServeArgs>),
    /// Create, list and revoke API keys (scope `admin`).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Create, list and delete users who log in with a password (scope `admin`).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Register, show, delete and list per-type JSON Schemas.
    #[command(subcommand)]
    Schemas(SchemasCommand),
    /// Find events: a filter expression, `--where` filters, a time range.
    Query(QueryArgs),
    /// Show the most recent events, newest first.
    Last(LastArgs),
    /// Count matching events.
    Count(CountArgs),
    /// Stream every matching event to a file or stdout (NDJSON or CSV).
    Export(ExportArgs),
    /// Send events from an NDJSON file to the server, in batches.
    Import(ImportArgs),
    /// Rebuild the index files of a data directory from its log (server stopped).
    Reindex(ReindexArgs),
    /// Check the log is intact and only grew: a data directory or PostgreSQL store against its
    /// signed checkpoints, a saved checkpoint against a running server, or one event offline.
    Verify(Box<crate::verify::VerifyArgs>),
    /// Exchange the API key in VIGIL_TOKEN for a short-lived JWT.
    Token(TokenArgs),
    /// Measure ingest or query throughput and latency of a running server.
    Bench(BenchArgs),
    /// Produce realistic security events at a steady rate until stopped: the event daemon.
    Generate(GenerateArgs),
}

/// Where the server is and who we are.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Base URL of the vigil server.
    #[arg(
        long,
        env = "VIGIL_URL",
        default_value = "http://127.0.0.1:7878",
        value_name = "URL"
    )]
    pub url: String,
    /// API key or JWT. Prefer the environment variable: command-line arguments are visible to
    /// other users of the machine.
    #[arg(
        long,
        env = "VIGIL_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
}

/// How results are printed.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Output format: a table for people, json/ndjson/csv for scripts.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

/// `vigil serve`. Every option is also a `VIGIL_*` variable and a `vigil.toml` key; a flag
/// beats the variable, which beats the file, which beats the default.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Precedence: defaults < vigil.toml < VIGIL_* environment (and .env) < flags."
)]
pub struct ServeArgs {
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
        default_value = "./vigil-data",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,
    /// Where events, credentials and schemas live: `embedded` (the data directory) or a
    /// PostgreSQL URL `postgres://user:password@host:port/database` shared by several nodes.
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
    /// PostgreSQL: longest a statement may run before it is cancelled (503 for the request).
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
    /// PostgreSQL: how long an append retries a lost connection or restarting server before
    /// answering 503.
    #[arg(long, env = "VIGIL_POSTGRES_RETRY_FOR", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub postgres_retry_for: Duration,
    /// PostgreSQL: drop whole daily partitions older than this (90d, 1y, …) [default: keep
    /// everything].
    #[arg(long, env = "VIGIL_RETENTION", value_parser = parse_duration, value_name = "DURATION")]
    pub retention: Option<Duration>,
    /// Configuration file [default: ./vigil.toml when present].
    #[arg(long, env = "VIGIL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
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
    /// Largest JSON page of GET /v1/events (and export chunk), in bytes; a page always holds
    /// at least one event.
    #[arg(long, env = "VIGIL_MAX_PAGE_BYTES", default_value_t = 16 * 1024 * 1024, value_name = "BYTES")]
    pub max_page_bytes: usize,
    /// Most POST /v1/events body bytes held at once across all requests; beyond: 503 overloaded.
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
    /// Longest time until a response starts; beyond it: 503 timeout.
    #[arg(long, env = "VIGIL_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub request_timeout: Duration,
    /// Lifetime of the JWTs POST /v1/auth/token issues (15m, 1h, …).
    #[arg(long, env = "VIGIL_JWT_TTL", default_value = "15m", value_parser = parse_duration, value_name = "DURATION")]
    pub jwt_ttl: Duration,
    /// How often credentials and schemas are reloaded from the store, so keys, users and
    /// schemas changed through another vigil process sharing it take effect here.
    #[arg(long, env = "VIGIL_META_REFRESH_INTERVAL", default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub meta_refresh_interval: Duration,
    /// Requests per second allowed per credential (token bucket) [default: unlimited].
    #[arg(long, env = "VIGIL_RATE_LIMIT", value_name = "PER_SEC")]
    pub rate_limit: Option<f64>,
    /// Burst size of the per-credential rate limit [default: one second's worth, at least 1].
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
    /// Distributed mode: how to reach NATS JetStream. With `--nats`, the api role publishes
    /// events to JetStream and answers 202 once it acknowledged them; writers store them.
    #[command(flatten)]
    pub nats: crate::nats::NatsArgs,
    /// What this process does, comma-separated: `api` (HTTP), `writer` (consume JetStream into
    /// the store), `reader` (answer NATS queries) [default: all three with --nats, api without].
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
    /// NATS: most bytes of events waiting in the stream for a writer; beyond, ingest answers 503
    /// [default: as much as the NATS server allows].
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
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// A role of a vigil process (DESIGN §2).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key; its secret is printed once.
    Create(KeysCreateArgs),
    /// List the keys you administer.
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Revoke a key at once (JWTs minted from it stop working too).
    Revoke {
        /// Key id (from `vigil keys list`).
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the public key checkpoints are signed with (a C2SP verifier key, what
    /// `vigil verify --key` takes), creating the signing key if it does not exist yet.
    Signing(SigningKeyArgs),
}

#[derive(Debug, Args)]
pub struct SigningKeyArgs {
    /// Data directory whose `signing.key` is meant.
    #[arg(
        long,
        env = "VIGIL_DATA_DIR",
        default_value = "./vigil-data",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,
    /// The key file itself [default: <data-dir>/signing.key].
    #[arg(long, env = "VIGIL_SIGNING_KEY", value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
    /// Name of a key created now (the first word of its signature lines; a host name such as
    /// `audit.example.com` tells witnesses which log it is). An existing key keeps its name.
    #[arg(long, default_value = crate::serve::DEFAULT_SIGNING_KEY_NAME)]
    pub name: String,
    /// `vkey`: the verifier key alone; `json`: name, key id, raw key and both verifier keys.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = SigningKeyFormat::Vkey)]
    pub format: SigningKeyFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SigningKeyFormat {
    Vkey,
    Json,
}

#[derive(Debug, Args)]
pub struct KeysCreateArgs {
    /// Tenant the key belongs to.
    #[arg(long)]
    pub tenant: String,
    /// Comma-separated scopes: events:write, events:read, schemas:write, admin.
    #[arg(long, value_delimiter = ',', required = true)]
    pub scopes: Vec<String>,
    /// Label; events sent with the key default their `source` to it [default: the tenant].
    #[arg(long)]
    pub name: Option<String>,
    /// Expire the key after this long (30d, 12h) [default: never].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub expires_in: Option<Duration>,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user. The password comes from VIGIL_USER_PASSWORD or, with --password-stdin,
    /// from the first line of stdin.
    Create(UsersCreateArgs),
    /// List the users you administer.
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Delete a user.
    Delete {
        username: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Args)]
pub struct UsersCreateArgs {
    #[arg(long)]
    pub username: String,
    #[arg(long)]
    pub tenant: String,
    /// Comma-separated scopes: events:write, events:read, schemas:write, admin.
    #[arg(long, value_delimiter = ',', required = true)]
    pub scopes: Vec<String>,
    /// Read the password from the first line of stdin.
    #[arg(long, conflicts_with = "password")]
    pub password_stdin: bool,
    /// The password (environment only: it never appears on the command line).
    #[arg(long, env = "VIGIL_USER_PASSWORD", hide = true, hide_env_values = true)]
    pub password: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Subcommand)]
pub enum SchemasCommand {
    /// Register (or replace) the JSON Schema for an event type.
    Put {
        /// Event type (`account.created`).
        event_type: String,
        /// JSON Schema file (draft 2020-12); `-` reads stdin.
        file: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the schema registered for an event type.
    Get {
        event_type: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove the schema of an event type (its events are no longer validated).
    Delete {
        event_type: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the registered schemas.
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
}

/// Which events: an expression, exact-match filters and a time range.
#[derive(Debug, Clone, Args)]
pub struct FilterArgs {
    /// Filter expression, e.g. `severity>=7 AND type:login.failed` [default: every event].
    #[arg(value_name = "EXPR")]
    pub expr: Option<String>,
    /// Exact-match filter `path=value` (`--where actor.id=u-7`); repeatable, ANDed.
    #[arg(long = "where", value_name = "PATH=VALUE", value_parser = parse_where)]
    pub filters: Vec<(String, String)>,
    /// Start of the time range (inclusive): RFC 3339 or relative (`-15m`, `-24h`, `-7d`).
    #[arg(long, allow_hyphen_values = true, value_name = "TIME")]
    pub from: Option<String>,
    /// End of the time range (exclusive): RFC 3339 or relative.
    #[arg(long, allow_hyphen_values = true, value_name = "TIME")]
    pub to: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OrderArg {
    /// Newest first.
    Desc,
    /// Oldest first.
    Asc,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Events per page.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    #[arg(long, value_enum, default_value_t = OrderArg::Desc)]
    pub order: OrderArg,
    /// Continue from a previous page's `next_cursor`.
    #[arg(long)]
    pub cursor: Option<String>,
    /// Follow cursors to the end of the result instead of stopping after one page.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `vigil last`: over HTTP by default, over NATS (a reader answers) with `--nats`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("bus").args(["nats"]).requires("tenant")))]
pub struct LastArgs {
    /// How many events.
    #[arg(short = 'n', long = "count", default_value_t = 10, value_name = "N")]
    pub count: usize,
    /// Only events of at least this severity.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=10), conflicts_with = "above")]
    pub min_severity: Option<u8>,
    /// Only events of severity strictly above N.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=10))]
    pub above: Option<u8>,
    /// Only events of this type.
    #[arg(long = "type", value_name = "TYPE")]
    pub event_type: Option<String>,
    /// Exact-match filter `path=value`; repeatable.
    #[arg(long = "where", value_name = "PATH=VALUE", value_parser = parse_where)]
    pub filters: Vec<(String, String)>,
    /// Whose events, over NATS (required with --nats). Over HTTP the credential names the
    /// tenant, so this is refused there.
    #[arg(long, value_name = "TENANT", requires = "nats")]
    pub tenant: Option<String>,
    /// Ask vigil's readers over NATS instead of a server over HTTP (--url and VIGIL_TOKEN are
    /// then not used).
    #[command(flatten)]
    pub nats: crate::nats::NatsArgs,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct CountArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormatArg {
    Ndjson,
    Csv,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Write here instead of stdout (the file must not exist yet).
    #[arg(long, value_name = "FILE")]
    pub output_file: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = ExportFormatArg::Ndjson)]
    pub format: ExportFormatArg,
    #[arg(long, value_enum, default_value_t = OrderArg::Asc)]
    pub order: OrderArg,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// NDJSON file, one event per line; `-` reads stdin.
    pub file: PathBuf,
    /// Events per request.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batch_size: u64,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ReindexArgs {
    /// Data directory of a stopped server.
    #[arg(
        long,
        env = "VIGIL_DATA_DIR",
        default_value = "./vigil-data",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// `table` prints the bare token (for `$(vigil token)`); json prints it with its expiry.
    #[command(flatten)]
    pub output: OutputArgs,
}

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
    #[arg(long, value_name = "PARAMS", value_parser = crate::bench::QueryTemplate::parse)]
    pub query: Option<crate::bench::QueryTemplate>,
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
    pub nats: crate::nats::NatsArgs,
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

/// A humantime duration (`15m`, `1h 30m`, `500ms`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration {s:?}: {e} (examples: 30s, 15m, 1h)"))
}

/// `path=value`, split at the first `=`.
fn parse_where(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((path, value)) if !path.trim().is_empty() => {
            Ok((path.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected PATH=VALUE, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn where_filters_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_where("details.q=a=b").unwrap(),
            ("details.q".to_owned(), "a=b".to_owned())
        );
        assert_eq!(
            parse_where("actor.id=").unwrap(),
            ("actor.id".to_owned(), String::new())
        );
        assert!(parse_where("=x").is_err());
        assert!(parse_where("novalue").is_err());
    }

    #[test]
    fn relative_times_are_not_mistaken_for_flags() {
        let cli = Cli::try_parse_from([
            "vigil",
            "query",
            "severity>=7",
            "--from",
            "-1h",
            "-o",
            "json",
        ])
        .unwrap();
        let Command::Query(q) = cli.command else {
            panic!("not a query")
        };
        assert_eq!(q.filter.from.as_deref(), Some("-1h"));
        assert_eq!(q.filter.expr.as_deref(), Some("severity>=7"));
        assert_eq!(q.output.format, OutputFormat::Json);
    }

    #[test]
    fn min_severity_and_above_exclude_each_other() {
        assert!(
            Cli::try_parse_from(["vigil", "last", "--min-severity", "7", "--above", "3"]).is_err()
        );
        assert!(Cli::try_parse_from(["vigil", "last", "--min-severity", "11"]).is_err());
    }

    #[test]
    fn last_takes_a_tenant_over_nats_only() {
        let last = |args: &[&str]| Cli::try_parse_from(["vigil", "last"].iter().chain(args));
        let cli = last(&["--nats", "nats://127.0.0.1:4222", "--tenant", "acme"]).unwrap();
        let Command::Last(args) = cli.command else {
            panic!("not last")
        };
        assert_eq!(args.nats.nats.as_deref(), Some("nats://127.0.0.1:4222"));
        assert_eq!(args.tenant.as_deref(), Some("acme"));
        assert!(
            last(&["--nats", "nats://127.0.0.1:4222"]).is_err(),
            "a reader answers for one tenant: --tenant is required"
        );
        assert!(
            last(&["--tenant", "acme"]).is_err(),
            "over HTTP the credential names the tenant"
        );
        let cli = last(&["-n", "5"]).unwrap();
        let Command::Last(args) = cli.command else {
            panic!("not last")
        };
        assert_eq!((args.nats.nats, args.tenant), (None, None));
    }

    #[test]
    fn serve_help_names_every_env_var_and_no_secret() {
        let mut cmd = Cli::command();
        let serve = cmd.find_subcommand_mut("serve").unwrap();
        let help = serve.render_long_help().to_string();
        for var in [
            "VIGIL_LISTEN",
            "VIGIL_DATA_DIR",
            "VIGIL_CONFIG",
            "VIGIL_MAX_BODY_BYTES",
            "VIGIL_MAX_BATCH_EVENTS",
            "VIGIL_MAX_EVENT_BYTES",
            "VIGIL_MAX_DEPTH",
            "VIGIL_MAX_KEY_BYTES",
            "VIGIL_MAX_STRING_BYTES",
            "VIGIL_MAX_FIELDS",
            "VIGIL_MAX_QUERY_LIMIT",
            "VIGIL_JWT_TTL",
            "VIGIL_RATE_LIMIT",
            "VIGIL_RATE_BURST",
            "VIGIL_SEGMENT_MAX_EVENTS",
            "VIGIL_SEAL_INTERVAL",
            "VIGIL_SIGNING_KEY",
            "VIGIL_CHECKPOINT_INTERVAL",
            "VIGIL_LOG_FORMAT",
            "VIGIL_LOG_LEVEL",
        ] {
            assert!(help.contains(var), "{var} missing from serve --help");
        }
    }
}
