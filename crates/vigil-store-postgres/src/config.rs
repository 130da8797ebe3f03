//! How a store reaches the database: [`PgConfig`], the URL as logs may show it
//! ([`redact_url`]), the settings every session runs with, and the connection pools.
//!
//! The first step of opening a store ([`crate::open`]); nothing here talks to the database.

use std::fmt;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::error::{PgError, Result};

/// How to reach and use the database. Every field has a default ([`PgConfig::new`]).
#[derive(Clone)]
pub struct PgConfig {
    /// `postgres://user:password@host:port/database?…` (libpq URL or key=value form). Holds a
    /// password: never printed (`Debug` redacts it).
    pub url: String,
    /// Connections per node. The writer uses one at a time; queries the rest.
    pub pool_size: usize,
    /// Limit on establishing a connection, and on waiting for a free one.
    pub connect_timeout: Duration,
    /// `statement_timeout` of every connection: a statement running longer is cancelled and
    /// the request answered 503.
    pub statement_timeout: Duration,
    /// Daily partitions kept created ahead of today.
    pub partitions_ahead: u32,
    /// Drop partitions whose whole day is older than this. `None` keeps everything.
    pub retention: Option<Duration>,
    /// Upper bound on events per write transaction (a group of queued appends).
    pub max_group_events: usize,
    /// How long an append keeps retrying transient database failures (connection lost,
    /// server restarting) before answering 503.
    pub retry_for: Duration,
    /// How often partitions ahead are created and retention applied.
    pub maintenance_interval: Duration,
}

impl PgConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            partitions_ahead: 3,
            retention: None,
            max_group_events: 20_000,
            retry_for: Duration::from_secs(10),
            maintenance_interval: Duration::from_secs(600),
        }
    }
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConfig")
            .field("url", &redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("partitions_ahead", &self.partitions_ahead)
            .field("retention", &self.retention)
            .field("max_group_events", &self.max_group_events)
            .field("retry_for", &self.retry_for)
            .field("maintenance_interval", &self.maintenance_interval)
            .finish()
    }
}

/// The URL with any password replaced by `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    if url.contains("password") {
        // A password as a URL parameter (`?password=…`) or in key=value form: drop everything
        // after the host rather than parse it.
        let shown = url.split(['?', ' ']).next().unwrap_or("");
        let shown = if shown.contains("password") {
            ""
        } else {
            shown
        };
        return format!("{} (with password)", redact_userinfo(shown));
    }
    redact_userinfo(url)
}

fn redact_userinfo(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((userinfo, host)) = rest.rsplit_once('@')
    {
        let user = userinfo.split(':').next().unwrap_or("");
        let masked = if userinfo.contains(':') {
            format!("{user}:***")
        } else {
            user.to_owned()
        };
        return format!("{scheme}://{masked}@{host}");
    }
    url.to_owned()
}

/// The connection settings of every session of a store: `config`'s URL with vigil's session
/// options, and for a read-only store `default_transaction_read_only`.
pub(crate) fn session_config(config: &PgConfig, read_only: bool) -> Result<tokio_postgres::Config> {
    let mut pg: tokio_postgres::Config = config
        .url
        .parse()
        .map_err(|e| PgError::Config(format!("invalid database URL: {e}")))?;
    pg.connect_timeout(config.connect_timeout);
    // Durability does not depend on the server's or the role's defaults: a commit returns
    // once the WAL is flushed. A transaction left idle (a node cut off mid-write) releases
    // its tenant locks after a minute instead of blocking other nodes for hours.
    let mut options = format!(
        "{} -c statement_timeout={} -c synchronous_commit=on \
         -c idle_in_transaction_session_timeout=60000",
        pg.get_options().unwrap_or(""),
        config.statement_timeout.as_millis()
    );
    if read_only {
        // The database refuses any write of these sessions, whatever a bug might send.
        options.push_str(" -c default_transaction_read_only=on");
    }
    pg.options(options.trim());
    if pg.get_application_name().is_none() {
        pg.application_name(if read_only { "vigil-audit" } else { "vigil" });
    }
    Ok(pg)
}

/// A pool of at most `size` sessions configured as `session`, made when first needed.
pub(crate) fn build_pool(
    session: &tokio_postgres::Config,
    size: usize,
    config: &PgConfig,
) -> Result<Pool> {
    let manager = Manager::from_config(
        session.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(config.connect_timeout))
        .create_timeout(Some(config.connect_timeout))
        .build()
        .map_err(|e| PgError::Config(e.to_string()))
}
