//! vigil's PostgreSQL store: the events in the database an operator already runs.
//!
//! Same [`Store`] contract as the embedded store, for deployments where several stateless vigil
//! nodes share one database:
//! - **append** ([`writer`]): one writer task per node commits everything queued as one
//!   transaction — tenant heads locked (`SELECT … FOR UPDATE`, so seq stays gap-free and the
//!   chain linear across nodes), ids checked, events and ids streamed in with binary `COPY`,
//!   heads moved, committed with `synchronous_commit` on. A reply means committed.
//! - **query** ([`sql`]): the query language compiled to parameterised SQL over envelope
//!   columns and `fields`, the event flattened to `{"path": [scalars]}` under a GIN index;
//!   newest first on `(tenant, time_ns, seq)`, cursors as keyset pagination.
//! - **layout** ([`schema`]): embedded, versioned migrations applied at start; events
//!   partitioned by UTC day, created ahead and on demand; retention drops whole partitions;
//!   credentials and schemas in `vigil_meta` with compare-and-swap versions.
//! - **tamper evidence** ([`merkle`]): each tenant's log is an RFC 6962 Merkle tree (leaf `i`
//!   = the event with seq `i + 1`), grown by the writer in the append's own transaction under
//!   the same head lock. Its stored hashes (`vigil_integrity::tree` layout) live in
//!   `vigil_tree_hashes (tenant, idx, hash)`, never partitioned nor touched by retention; its
//!   right edge in `vigil_tenants.frontier`; signed checkpoints in
//!   `vigil_checkpoints (tenant, size, root, time_ns, note)`, the first per size kept. Logs
//!   written before the tree existed get theirs built when the store opens.
//! - **audit** ([`PgStore::connect_read_only`], [`PgStore::log_range`]): `vigil verify` opens
//!   the database without writing to it (no migration, partition, tree or writer; sessions
//!   read-only) and replays each tenant's log in seq order on the `(tenant, seq)` index.
//!
//! # Layout
//! One file per stage, in the order an event meets them:
//! ```text
//! config.rs       PgConfig, redact_url, the settings every session runs with, the pools
//! open.rs         connect: migrations, partitions, missing Merkle trees, writer and
//!                 maintenance started; connect_read_only for audits
//! append.rs       derive the indexed columns, queue the events to the writer, await the commit
//! writer.rs       group commit: one transaction per group under the tenants' head locks
//! merkle.rs       each tenant's Merkle tree, grown inside the writer's transaction
//! row.rs          an event as vigil_events columns; stored columns back into values
//! read.rs         get by id, query pages (plan, fetch, confirm), count, log_range
//! sql.rs          the query language compiled to parameterised SQL
//! checkpoints.rs  tree sizes, stored hashes for proofs, signed checkpoints
//! meta.rs         meta documents with compare-and-swap versions
//! schema.rs       migrations and daily partitions (DDL)
//! retention.rs    maintenance: partitions created ahead, expired ones dropped
//! error.rs        database errors as StoreErrors, and which are worth retrying
//! testing.rs      a throwaway database per test (feature "testing")
//! ```
//! This file holds [`PgStore`] and its [`Store`] implementation, which hands each call to
//! the file of its stage.
//!
//! # Example
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use vigil_event::{normalize, Limits, TenantId, Timestamp};
//! use vigil_store::Store;
//! use vigil_store_postgres::{PgConfig, PgStore};
//!
//! let store = PgStore::connect(PgConfig::new("postgres://vigil@127.0.0.1/vigil")).await.unwrap();
//! let tenant = TenantId::parse("acme").unwrap();
//! let event = normalize(serde_json::json!({"type": "login.failed", "severity": 8}), &Limits::default())
//!     .unwrap()
//!     .prepare(&tenant, Timestamp::now(), "docs");
//! let appended = store.append(vec![event]).await.unwrap();
//! store.shutdown().await.unwrap();
//! # }
//! ```
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

mod append;
mod checkpoints;
mod config;
mod error;
mod merkle;
mod meta;
mod open;
mod read;
mod retention;
mod row;
mod schema;
mod sql;
#[cfg(feature = "testing")]
pub mod testing;
mod writer;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex as StdMutex};

use async_trait::async_trait;
use deadpool_postgres::Pool;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use vigil_event::{EventId, Hash, Prepared, TenantId, Timestamp};
use vigil_query::{Expr, Query};
use vigil_store::{Appended, MetaVersion, Page, Store, StoreError, StoredCheckpoint, StoredEvent};

pub use config::{PgConfig, redact_url};
pub use error::PgError;

use crate::error::Result;
use crate::writer::Job;

/// The days that have a partition (maintenance's view; writes never need it).
type Partitions = Arc<Mutex<BTreeSet<i64>>>;

/// The PostgreSQL store. Cheap to share behind an `Arc`.
pub struct PgStore {
    /// Queries, meta documents, maintenance.
    pool: Pool,
    /// The writer's own connection, so reads can never starve writes. `None` when read-only.
    write_pool: Option<Pool>,
    /// `None` once shut down, and always when read-only.
    jobs: StdMutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// `None` when read-only.
    maintenance: Option<JoinHandle<()>>,
    partitions: Partitions,
    /// Opened by [`PgStore::connect_read_only`]: every write is refused before it reaches the
    /// database, whose sessions refuse them too.
    read_only: bool,
    config: PgConfig,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("config", &self.config)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Whether the store was opened with [`connect_read_only`](Self::connect_read_only).
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Refuses `what` (a write) on a read-only store.
    fn writable(&self, what: &str) -> Result<(), StoreError> {
        if self.read_only {
            return Err(StoreError::Unavailable(format!(
                "opened read-only (for auditing): {what} refused"
            )));
        }
        Ok(())
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }
}

#[async_trait]
impl Store for PgStore {
    async fn append(&self, events: Vec<Prepared>) -> Result<Vec<Appended>, StoreError> {
        self.writable("append")?;
        self.append_inner(events).await
    }

    async fn get(
        &self,
        tenant: &TenantId,
        id: &EventId,
    ) -> Result<Option<StoredEvent>, StoreError> {
        Ok(self.get_inner(tenant, id).await?)
    }

    async fn query(&self, tenant: &TenantId, query: &Query) -> Result<Page, StoreError> {
        Ok(self.query_inner(tenant, query).await?)
    }

    async fn count(
        &self,
        tenant: &TenantId,
        filter: &Expr,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    ) -> Result<u64, StoreError> {
        Ok(self.count_inner(tenant, filter, from, to).await?)
    }

    async fn ready(&self) -> Result<(), StoreError> {
        // A read-only store has no writer: it is ready to read until shut down.
        let shut_down = if self.read_only {
            self.pool.is_closed()
        } else {
            self.jobs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_none()
        };
        if shut_down {
            return Err(StoreError::Unavailable("the store is shut down".into()));
        }
        if let Some(writer) = self.writer.lock().await.as_ref()
            && writer.is_finished()
        {
            return Err(StoreError::Unavailable("the writer stopped".into()));
        }
        let client = self.client().await?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(PgError::from)?;
        Ok(())
    }

    async fn load_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.load_meta_inner(name).await?.map(|(_, doc)| doc))
    }

    async fn save_meta(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.writable("saving meta documents")?;
        Ok(self.save_meta_inner(name, bytes).await?)
    }

    async fn load_meta_versioned(
        &self,
        name: &str,
    ) -> Result<Option<(MetaVersion, Vec<u8>)>, StoreError> {
        Ok(self.load_meta_inner(name).await?)
    }

    async fn save_meta_if(
        &self,
        name: &str,
        expected: Option<MetaVersion>,
        bytes: &[u8],
    ) -> Result<Option<MetaVersion>, StoreError> {
        self.writable("saving meta documents")?;
        Ok(self.save_meta_if_inner(name, expected, bytes).await?)
    }

    async fn meta_version(&self, name: &str) -> Result<Option<MetaVersion>, StoreError> {
        Ok(self.meta_version_inner(name).await?)
    }

    async fn tree_size(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        Ok(self.tree_size_inner(tenant).await?)
    }

    async fn tree_sizes(&self) -> Result<Vec<(TenantId, u64)>, StoreError> {
        Ok(self.tree_sizes_inner().await?)
    }

    async fn read_hashes(
        &self,
        tenant: &TenantId,
        indexes: &[u64],
    ) -> Result<Vec<Hash>, StoreError> {
        self.read_hashes_inner(tenant, indexes).await
    }

    async fn save_checkpoint(
        &self,
        tenant: &TenantId,
        checkpoint: &StoredCheckpoint,
    ) -> Result<(), StoreError> {
        self.writable("saving checkpoints")?;
        self.save_checkpoint_inner(tenant, checkpoint).await
    }

    async fn checkpoint(
        &self,
        tenant: &TenantId,
        size: Option<u64>,
    ) -> Result<Option<StoredCheckpoint>, StoreError> {
        Ok(self.checkpoint_inner(tenant, size).await?)
    }

    async fn checkpoints(&self, tenant: &TenantId) -> Result<Vec<StoredCheckpoint>, StoreError> {
        Ok(self.checkpoints_inner(tenant).await?)
    }

    async fn shutdown(&self) -> Result<(), StoreError> {
        // Closing the queue lets the writer finish what is queued, then stop.
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(writer) = self.writer.lock().await.take() {
            let _ = writer.await;
        }
        if let Some(maintenance) = &self.maintenance {
            maintenance.abort();
        }
        self.pool.close();
        if let Some(write_pool) = &self.write_pool {
            write_pool.close();
        }
        Ok(())
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(maintenance) = &self.maintenance {
            maintenance.abort();
        }
    }
}
