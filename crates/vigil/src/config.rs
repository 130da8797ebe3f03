//! `vigil serve` configuration: defaults < `vigil.toml` < `VIGIL_*` environment < flags.
//!
//! clap already merges flags, environment variables (including those a `.env` file set) and
//! defaults; [`ArgMatches::value_source`] tells which of the three a value came from. The file
//! slots in between: a file value replaces a clap *default*, never a value the user gave as a
//! flag or variable.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::cli::{LogFormat, Role, ServeArgs};

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "vigil.toml";

/// Largest `max_event_bytes` accepted: 15 MiB. The embedded store writes each event as one log
/// record of at most 16 MiB, and the record adds the server-set fields and its own header; the
/// mebibyte between leaves room for both.
pub const MAX_EVENT_BYTES_LIMIT: usize = 15 * 1024 * 1024;

/// Largest segment size accepted (`segment_max_events`, `max_segment_events`): events in a
/// segment are numbered with `u32`.
const MAX_SEGMENT_EVENTS_LIMIT: u64 = u32::MAX as u64;

/// `vigil.toml`. Every key is optional; unknown keys are an error (a typo must not silently
/// leave a limit at its default).
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub store: Option<String>,
    pub postgres_pool_size: Option<usize>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub postgres_statement_timeout: Option<Duration>,
    pub postgres_partitions_ahead: Option<u32>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub postgres_retry_for: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub retention: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub jwt_ttl: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub meta_refresh_interval: Option<Duration>,
    pub rate_limit: Option<f64>,
    pub rate_burst: Option<u32>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub request_timeout: Option<Duration>,
    pub segment_max_events: Option<u64>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub seal_interval: Option<Duration>,
    pub signing_key: Option<PathBuf>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub checkpoint_interval: Option<Duration>,
    pub max_segment_events: Option<u64>,
    pub max_commit_events: Option<usize>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
    pub nats: Option<String>,
    pub roles: Option<Vec<Role>>,
    pub nats_namespace: Option<String>,
    pub nats_inbox_prefix: Option<String>,
    pub nats_tls_ca: Option<PathBuf>,
    pub nats_tls_cert: Option<PathBuf>,
    pub nats_tls_key: Option<PathBuf>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub nats_timeout: Option<Duration>,
    pub nats_replicas: Option<usize>,
    pub nats_max_bytes: Option<u64>,
    pub writer_batch_size: Option<usize>,
    pub writer_batch_bytes: Option<usize>,
    #[serde(default)]
    pub limits: FileLimits,
}

/// The `[limits]` table of `vigil.toml`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    pub max_body_bytes: Option<usize>,
    pub max_batch_events: Option<usize>,
    pub max_event_bytes: Option<usize>,
    pub max_depth: Option<usize>,
    pub max_key_bytes: Option<usize>,
    pub max_string_bytes: Option<usize>,
    pub max_fields: Option<usize>,
    pub max_query_limit: Option<usize>,
    pub max_page_bytes: Option<usize>,
    pub max_inflight_bytes: Option<usize>,
    pub max_schemas_per_tenant: Option<usize>,
    pub max_schema_bytes: Option<usize>,
}

/// The effective configuration of one `vigil serve`. Serialises to the `vigil.toml` shape
/// (`--print-config`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    pub listen: String,
    pub data_dir: PathBuf,
    /// `embedded` or a PostgreSQL URL (printed with its password masked).
    #[serde(serialize_with = "ser_store")]
    pub store: String,
    pub postgres_pool_size: usize,
    #[serde(serialize_with = "ser_duration")]
    pub postgres_statement_timeout: Duration,
    pub postgres_partitions_ahead: u32,
    #[serde(serialize_with = "ser_duration")]
    pub postgres_retry_for: Duration,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_duration"
    )]
    pub retention: Option<Duration>,
    #[serde(serialize_with = "ser_duration")]
    pub jwt_ttl: Duration,
    /// How often credentials and schemas are reloaded from the store (changes made through
    /// other processes sharing it).
    #[serde(serialize_with = "ser_duration")]
    pub meta_refresh_interval: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_burst: Option<u32>,
    /// Longest time until a response starts (503 `timeout` beyond).
    #[serde(serialize_with = "ser_duration")]
    pub request_timeout: Duration,
    pub segment_max_events: u64,
    #[serde(serialize_with = "ser_duration")]
    pub seal_interval: Duration,
    /// The checkpoint signing key file.
    pub signing_key: PathBuf,
    #[serde(serialize_with = "ser_duration")]
    pub checkpoint_interval: Duration,
    /// Merged segments hold at most this many events.
    pub max_segment_events: u64,
    /// Most events one group commit (one fsync) takes.
    pub max_commit_events: usize,
    pub log_format: LogFormat,
    pub log_level: String,
    /// NATS URL(s) (printed with passwords masked); `None`: no bus, the api appends directly.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_nats"
    )]
    pub nats: Option<String>,
    pub roles: Vec<Role>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_inbox_prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_tls_ca: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_tls_key: Option<PathBuf>,
    #[serde(serialize_with = "ser_duration")]
    pub nats_timeout: Duration,
    pub nats_replicas: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_max_bytes: Option<u64>,
    pub writer_batch_size: usize,
    pub writer_batch_bytes: usize,
    pub limits: LimitSettings,
}

/// Request and event bounds, `[limits]` in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimitSettings {
    pub max_body_bytes: usize,
    pub max_batch_events: usize,
    pub max_event_bytes: usize,
    pub max_depth: usize,
    pub max_key_bytes: usize,
    pub max_string_bytes: usize,
    pub max_fields: usize,
    pub max_query_limit: usize,
    pub max_page_bytes: usize,
    pub max_inflight_bytes: usize,
    pub max_schemas_per_tenant: usize,
    pub max_schema_bytes: usize,
}

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

/// Parses `vigil.toml` text; the error names an unknown key and where it is.
pub fn parse_file(text: &str) -> anyhow::Result<FileConfig> {
    toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))
}

/// True when the user gave `id` as a flag or a variable (not a clap default).
fn explicit(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

impl Settings {
    /// Layers `file` under the flags and variables in `args`/`matches` (the `serve` subcommand's
    /// matches), then checks the result.
    pub fn resolve(
        args: &ServeArgs,
        matches: &ArgMatches,
        file: FileConfig,
    ) -> anyhow::Result<Self> {
        macro_rules! layer {
            ($field:ident, $file_value:expr) => {
                if explicit(matches, stringify!($field)) {
                    args.$field.clone()
                } else {
                    $file_value.unwrap_or_else(|| args.$field.clone())
                }
            };
        }
        macro_rules! layer_opt {
            ($field:ident, $file_value:expr) => {
                if explicit(matches, stringify!($field)) {
                    args.$field.clone()
                } else {
                    $file_value.or(args.$field.clone())
                }
            };
        }
        macro_rules! layer_nats {
            ($field:ident, $file_value:expr) => {
                if explicit(matches, stringify!($field)) {
                    args.nats.$field.clone()
                } else {
                    $file_value.or(args.nats.$field.clone())
                }
            };
        }
        let nats = layer_nats!(nats, file.nats);
        let roles = if explicit(matches, "roles") {
            args.roles.clone()
        } else {
            file.roles.unwrap_or_default()
        };
        let roles = if !roles.is_empty() {
            let mut roles = roles;
            roles.sort_unstable();
            roles.dedup();
            roles
        } else if nats.is_some() {
            vec![Role::Api, Role::Writer, Role::Reader]
        } else {
            vec![Role::Api]
        };
        let nats_timeout = if explicit(matches, "nats_timeout") {
            args.nats.nats_timeout
        } else {
            file.nats_timeout.unwrap_or(args.nats.nats_timeout)
        };
        let l = file.limits;
        let mut settings = Self {
            listen: layer!(listen, file.listen),
            data_dir: layer!(data_dir, file.data_dir),
            store: layer!(store, file.store),
            postgres_pool_size: layer!(postgres_pool_size, file.postgres_pool_size),
            postgres_statement_timeout: layer!(
                postgres_statement_timeout,
                file.postgres_statement_timeout
            ),
            postgres_partitions_ahead: layer!(
                postgres_partitions_ahead,
                file.postgres_partitions_ahead
            ),
            postgres_retry_for: layer!(postgres_retry_for, file.postgres_retry_for),
            retention: layer_opt!(retention, file.retention),
            jwt_ttl: layer!(jwt_ttl, file.jwt_ttl),
            meta_refresh_interval: layer!(meta_refresh_interval, file.meta_refresh_interval),
            rate_limit: layer_opt!(rate_limit, file.rate_limit),
            rate_burst: layer_opt!(rate_burst, file.rate_burst),
            request_timeout: layer!(request_timeout, file.request_timeout),
            segment_max_events: layer!(segment_max_events, file.segment_max_events),
            seal_interval: layer!(seal_interval, file.seal_interval),
            signing_key: PathBuf::new(),
            checkpoint_interval: layer!(checkpoint_interval, file.checkpoint_interval),
            max_segment_events: layer!(max_segment_events, file.max_segment_events),
            max_commit_events: layer!(max_commit_events, file.max_commit_events),
            log_format: layer!(log_format, file.log_format),
            log_level: layer!(log_level, file.log_level),
            nats,
            roles,
            nats_namespace: layer_nats!(nats_namespace, file.nats_namespace),
            nats_inbox_prefix: layer_nats!(nats_inbox_prefix, file.nats_inbox_prefix),
            nats_tls_ca: layer_nats!(nats_tls_ca, file.nats_tls_ca),
            nats_tls_cert: layer_nats!(nats_tls_cert, file.nats_tls_cert),
            nats_tls_key: layer_nats!(nats_tls_key, file.nats_tls_key),
            nats_timeout,
            nats_replicas: layer!(nats_replicas, file.nats_replicas),
            nats_max_bytes: layer_opt!(nats_max_bytes, file.nats_max_bytes),
            writer_batch_size: layer!(writer_batch_size, file.writer_batch_size),
            writer_batch_bytes: layer!(writer_batch_bytes, file.writer_batch_bytes),
            limits: LimitSettings {
                max_body_bytes: layer!(max_body_bytes, l.max_body_bytes),
                max_batch_events: layer!(max_batch_events, l.max_batch_events),
                max_event_bytes: layer!(max_event_bytes, l.max_event_bytes),
                max_depth: layer!(max_depth, l.max_depth),
                max_key_bytes: layer!(max_key_bytes, l.max_key_bytes),
                max_string_bytes: layer!(max_string_bytes, l.max_string_bytes),
                max_fields: layer!(max_fields, l.max_fields),
                max_query_limit: layer!(max_query_limit, l.max_query_limit),
                max_page_bytes: layer!(max_page_bytes, l.max_page_bytes),
                max_inflight_bytes: layer!(max_inflight_bytes, l.max_inflight_bytes),
                max_schemas_per_tenant: layer!(max_schemas_per_tenant, l.max_schemas_per_tenant),
                max_schema_bytes: layer!(max_schema_bytes, l.max_schema_bytes),
            },
        };
        settings.signing_key = layer_opt!(signing_key, file.signing_key)
            .unwrap_or_else(|| settings.data_dir.join("signing.key"));
        settings.validate()?;
        settings.check_roles()?;
        Ok(settings)
    }

    /// The roles must make sense together with the store and `--nats`.
    pub fn check_roles(&self) -> anyhow::Result<()> {
        let has = |r: Role| self.roles.contains(&r);
        if self.nats.is_none() && (has(Role::Writer) || has(Role::Reader)) {
            bail!("the writer and reader roles work on NATS: give --nats (or VIGIL_NATS)");
        }
        if self.nats.is_some()
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
        let url = self.nats.as_deref()?;
        Some(vigil_bus::BusConfig {
            namespace: self.nats_namespace.clone(),
            inbox_prefix: self.nats_inbox_prefix.clone(),
            tls: vigil_bus::TlsFiles {
                ca: self.nats_tls_ca.clone(),
                cert: self.nats_tls_cert.clone(),
                key: self.nats_tls_key.clone(),
            },
            connection_name: connection_name.to_owned(),
            streams: vigil_bus::StreamSettings {
                replicas: self.nats_replicas,
                max_message_bytes: vigil_bus::max_message_bytes_for(self.limits.max_event_bytes),
                max_bytes: self.nats_max_bytes,
                ..vigil_bus::StreamSettings::default()
            },
            request_timeout: self.nats_timeout,
            ..vigil_bus::BusConfig::new(url)
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

    /// The settings as `vigil.toml` text.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        toml::to_string(self).context("rendering the configuration as toml")
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

#[allow(clippy::ref_option)] // serde's serialize_with passes `&Option<String>`
fn ser_opt_nats<S: Serializer>(nats: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&vigil_bus::redact(nats.as_deref().unwrap_or_default()))
}

fn ser_store<S: Serializer>(store: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&vigil_store_postgres::redact_url(store))
}

fn ser_opt_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_duration(d, s),
        None => s.serialize_none(),
    }
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    text.map(|t| {
        humantime::parse_duration(&t)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {t:?}: {e}")))
    })
    .transpose()
}

fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;
    use crate::cli::{Cli, Command};

    /// Settings from a command line (no environment involved: tests never set variables) and
    /// a file.
    fn resolve(argv: &[&str], file: &str) -> anyhow::Result<Settings> {
        let mut full = vec!["vigil", "serve"];
        full.extend_from_slice(argv);
        let matches = Cli::command().try_get_matches_from(full)?;
        let cli = Cli::from_arg_matches(&matches)?;
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        let serve_matches = matches.subcommand_matches("serve").expect("serve matches");
        Settings::resolve(&args, serve_matches, parse_file(file)?)
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

    #[test]
    fn the_signing_key_lives_in_the_data_dir_unless_placed_elsewhere() {
        let s = resolve(&["--data-dir", "/srv/vigil"], "").unwrap();
        assert_eq!(s.signing_key, PathBuf::from("/srv/vigil/signing.key"));
        assert_eq!(s.checkpoint_interval, Duration::from_secs(1));
        let s = resolve(
            &["--data-dir", "/srv/vigil"],
            "signing_key = \"/etc/vigil/signing.key\"\ncheckpoint_interval = \"5s\"",
        )
        .unwrap();
        assert_eq!(s.signing_key, PathBuf::from("/etc/vigil/signing.key"));
        assert_eq!(s.checkpoint_interval, Duration::from_secs(5));
        let s = resolve(&["--signing-key", "/k"], "signing_key = \"/etc/k\"").unwrap();
        assert_eq!(s.signing_key, PathBuf::from("/k"), "flag beats file");
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
