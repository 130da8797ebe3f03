//! Opening a store: [`PgStore::connect`] for a node that writes, and
//! [`PgStore::connect_read_only`] for an audit.
//!
//! A writable open migrates the schema ([`crate::schema`]), creates the partitions ahead and
//! applies retention ([`crate::retention`]), builds the Merkle trees of logs written before the
//! database had them ([`crate::merkle`]), then starts the writer task ([`crate::writer`]) and
//! the periodic maintenance. A read-only open only checks that the schema and the trees are
//! current, and starts nothing.

use std::sync::{Arc, Mutex as StdMutex};

use tokio::sync::{Mutex, mpsc};
use vigil_store::StoreError;

use crate::config::{PgConfig, build_pool, redact_url, session_config};
use crate::error::{PgError, Result};
use crate::retention::maintain;
use crate::writer::WriterConfig;
use crate::{Partitions, PgStore, merkle, schema, writer};

impl PgStore {
    /// Connects, applies migrations, creates the partitions ahead, builds the Merkle trees of
    /// logs written before the database had them (once, on the first start after an upgrade;
    /// see [`merkle`]) and starts the writer.
    pub async fn connect(config: PgConfig) -> Result<Self, StoreError> {
        Self::connect_inner(config).await.map_err(open_error)
    }

    /// Opens the store to read only, for auditing a database without changing it: checks that
    /// the schema is exactly this vigil's (refusing, never migrating, when it is older or
    /// newer) and that every tenant's Merkle tree is built (refusing when one lags its log,
    /// as after an upgrade no server of this version has opened yet: an audit bounded by the
    /// tree sizes would silently stop short). Creates no partition, builds no tree, starts
    /// neither writer nor maintenance; its sessions run with `default_transaction_read_only`,
    /// so the database itself refuses writes too (and a hot standby can be audited).
    ///
    /// Reads work as on a writable store; `append`, `save_checkpoint`, `save_meta`,
    /// `save_meta_if`, [`run_maintenance`](Self::run_maintenance) and
    /// [`drop_partitions_before`](Self::drop_partitions_before) fail with
    /// [`StoreError::Unavailable`] ("opened read-only …"). `pool_size` connections are all
    /// readers, made when first needed.
    pub async fn connect_read_only(config: PgConfig) -> Result<Self, StoreError> {
        Self::open_read_only(config).await.map_err(open_error)
    }

    async fn open_read_only(config: PgConfig) -> Result<Self> {
        if config.pool_size < 1 {
            return Err(PgError::Config("pool_size must be at least 1".into()));
        }
        let session = session_config(&config, true)?;
        let pool = build_pool(&session, config.pool_size, &config)?;
        {
            let client = pool.get().await?;
            schema::check_current(&**client).await?;
            if let Some(lag) = merkle::lagging(&**client).await?.into_iter().next() {
                return Err(if lag.leaves > lag.events {
                    PgError::Corrupt(format!(
                        "tenant {}: Merkle tree of {} leaves is ahead of its log at seq {}",
                        lag.tenant, lag.leaves, lag.events
                    ))
                } else {
                    PgError::TreeIncomplete {
                        tenant: lag.tenant,
                        leaves: lag.leaves,
                        events: lag.events,
                    }
                });
            }
        }
        tracing::info!(database = %redact_url(&config.url), "postgres store opened read-only");
        Ok(Self {
            pool,
            write_pool: None,
            jobs: StdMutex::new(None),
            writer: Mutex::new(None),
            maintenance: None,
            partitions: Partitions::default(),
            read_only: true,
            config,
        })
    }

    async fn connect_inner(config: PgConfig) -> Result<Self> {
        if config.pool_size < 2 {
            return Err(PgError::Config(
                "pool_size must be at least 2 (one writer, one reader)".into(),
            ));
        }
        let session = session_config(&config, false)?;
        let pool = build_pool(&session, config.pool_size - 1, &config)?;
        let write_pool = build_pool(&session, 1, &config)?;

        let mut client = pool.get().await?;
        schema::migrate(&mut client).await?;
        let existing = schema::existing_partitions(&**client).await?;
        drop(client);
        let partitions: Partitions = Arc::new(Mutex::new(existing));
        maintain(&pool, &partitions, &config).await?;
        merkle::build_missing(&pool).await?;

        let (tx, rx) = mpsc::channel(1024);
        let writer = tokio::spawn(writer::run(
            write_pool.clone(),
            WriterConfig {
                max_group_events: config.max_group_events,
                retry_for: config.retry_for,
            },
            rx,
        ));
        let maintenance = {
            let (pool, partitions, config) =
                (pool.clone(), Arc::clone(&partitions), config.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(config.maintenance_interval);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if let Err(e) = maintain(&pool, &partitions, &config).await {
                        tracing::warn!(error = %e, "partition maintenance failed; retrying later");
                    }
                }
            })
        };
        tracing::info!(database = %redact_url(&config.url), "postgres store ready");
        Ok(Self {
            pool,
            write_pool: Some(write_pool),
            jobs: StdMutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            maintenance: Some(maintenance),
            partitions,
            read_only: false,
            config,
        })
    }
}

/// How opening a store failed, as the `Store` interface says it.
fn open_error(e: PgError) -> StoreError {
    if e.is_transient() {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::internal_from(e)
    }
}
