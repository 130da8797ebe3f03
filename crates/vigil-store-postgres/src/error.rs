//! How database errors become [`StoreError`]s, and which of them are worth retrying.

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;
use vigil_store::StoreError;

/// Errors of this crate before they reach the `Store` interface.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("database: {}", describe(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("connection pool: {}", describe_pool(.0))]
    Pool(#[from] PoolError),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(
        "database schema version {found} is newer than this vigil knows ({known}): upgrade vigil"
    )]
    SchemaTooNew { found: i32, known: i32 },
    /// A store opened read-only found a database this vigil would first migrate: it never
    /// does, so it refuses rather than misread. `found` is 0 when there is no vigil schema.
    #[error("{}", describe_not_current(*.found, *.known))]
    SchemaNotCurrent { found: i32, known: i32 },
    /// A store opened read-only found a tenant whose Merkle tree lags its log (built by a
    /// writable store when it opens or appends); it builds none, so it refuses.
    #[error(
        "tenant {tenant}: its Merkle tree covers {leaves} of its {events} events, and a store \
         opened read-only builds no tree: let a vigil server of this version open the database \
         (or append to the tenant) first"
    )]
    TreeIncomplete {
        tenant: String,
        leaves: u64,
        events: u64,
    },
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
}

impl PgError {
    /// True when trying again later may succeed: the server is down or restarting, the
    /// connection broke, a deadlock or serialisation failure was detected, or no connection
    /// was free in time.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Db(e) => db_is_transient(e),
            Self::Pool(PoolError::Backend(e)) => db_is_transient(e),
            // No free connection in time, or the store is shutting down.
            Self::Pool(PoolError::Timeout(_) | PoolError::Closed) => true,
            Self::Pool(_) => false,
            Self::Config(_)
            | Self::SchemaTooNew { .. }
            | Self::SchemaNotCurrent { .. }
            | Self::TreeIncomplete { .. }
            | Self::Corrupt(_) => false,
        }
    }
}

fn describe_not_current(found: i32, known: i32) -> String {
    let state = if found == 0 {
        "the database holds no vigil schema".to_owned()
    } else {
        format!("database schema version {found} is older than this vigil's ({known})")
    };
    format!(
        "{state}, and a store opened read-only never migrates: let a vigil server of this \
         version open the database first"
    )
}

/// The server's message when there is one (tokio-postgres' own text is only "db error").
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

fn describe_pool(e: &PoolError) -> String {
    match e {
        PoolError::Backend(db) => describe(db),
        other => other.to_string(),
    }
}

fn db_is_transient(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    let Some(code) = e.code() else {
        // No SQLSTATE: transient when the connection itself failed (I/O), not when a value
        // could not be encoded or decoded.
        return std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
    };
    // 08: connection exception; 53: insufficient resources; 40: serialisation failure or
    // deadlock; 57P0x: admin/crash shutdown, cannot connect now; 25006: read-only transaction
    // (a standby during a failover).
    matches!(code.code().get(..2), Some("08" | "53" | "40"))
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
        || *code == SqlState::READ_ONLY_SQL_TRANSACTION
}

impl From<PgError> for StoreError {
    fn from(e: PgError) -> Self {
        if e.is_transient() {
            return StoreError::Unavailable(e.to_string());
        }
        if let PgError::Db(db) = &e
            && db.code() == Some(&SqlState::QUERY_CANCELED)
        {
            return StoreError::Unavailable(
                "the database cancelled the statement (statement_timeout)".into(),
            );
        }
        StoreError::internal_from(e)
    }
}

pub type Result<T, E = PgError> = std::result::Result<T, E>;
