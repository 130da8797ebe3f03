//! The `Store` trait: the append → index → query stages behind one interface.
//!
//! Only the `vigil` binary picks a concrete backend (the embedded segment log by default,
//! PostgreSQL later); everything else — the HTTP API, the NATS writer and reader — talks to an
//! `Arc<dyn Store>`. Every backend passes the same conformance suite
//! (`store_conformance_suite!`, feature `testsuite`).
//!
//! Tenant isolation lives here: every read takes the tenant, and a backend never returns an
//! event of another tenant, whatever the filter says.

use std::fmt::Debug;

use async_trait::async_trait;
use vigil_event::{EventId, Hash, Prepared, TenantId, Timestamp};
use vigil_query::{Cursor, Expr, Query};

#[cfg(feature = "testsuite")]
pub mod testsuite;

/// The outcome of appending one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub id: EventId,
    /// The event's position in its tenant's log (1-based, gap-free).
    pub seq: u64,
    /// True when the id was already stored with the same content: nothing new was written and
    /// `seq` is the original's.
    pub duplicate: bool,
}

/// An event as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: u64,
    pub time: Timestamp,
    /// RFC 8785 bytes, exactly as hashed (everything but `hash`).
    pub canonical: Vec<u8>,
    /// Chain hash of the tenant's log up to and including this event.
    pub hash: Hash,
}

impl StoredEvent {
    /// The JSON object clients see: the canonical bytes plus `hash`.
    pub fn to_json(&self) -> Vec<u8> {
        vigil_event::with_hash(&self.canonical, &self.hash)
    }
}

/// One page of query results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub events: Vec<StoredEvent>,
    /// Where the next page starts; `None` when this page is the last.
    pub next_cursor: Option<Cursor>,
}

/// An id that is already stored with different content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// Position of the offending event in the appended batch.
    pub index: usize,
    pub id: EventId,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Some ids of the batch exist with different content; nothing of the batch was stored.
    #[error("{} event id(s) already stored with different content", .0.len())]
    Conflict(Vec<Conflict>),
    /// The store cannot accept or answer requests now (shutting down, writer poisoned after a
    /// failed fsync, database down). Nothing was half-written.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// An I/O or database error while serving the request.
    #[error("store error: {0}")]
    Internal(String),
}

impl StoreError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Conflict(_) => "id_conflict",
            Self::Unavailable(_) => "store_unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

/// An event store. Implementations are cheap to share (`Arc<dyn Store>`).
#[async_trait]
pub trait Store: Send + Sync + Debug + 'static {
    /// Appends a batch (events may belong to different tenants). Returns once every new event
    /// is durable (fsynced / committed); the batch is all-or-nothing. Ids already stored with
    /// the same content come back as `duplicate`; with other content the whole batch fails
    /// with [`StoreError::Conflict`]. Results are in batch order.
    async fn append(&self, events: Vec<Prepared>) -> Result<Vec<Appended>, StoreError>;

    /// One event of `tenant` by id.
    async fn get(&self, tenant: &TenantId, id: &EventId)
    -> Result<Option<StoredEvent>, StoreError>;

    /// Events of `tenant` matching the query, in its order, at most `limit`.
    async fn query(&self, tenant: &TenantId, query: &Query) -> Result<Page, StoreError>;

    /// How many events of `tenant` match `filter` with `from <= time < to`.
    async fn count(
        &self,
        tenant: &TenantId,
        filter: &Expr,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    ) -> Result<u64, StoreError>;

    /// Ok when the store accepts writes (for `/readyz`).
    async fn ready(&self) -> Result<(), StoreError>;

    /// Small named documents (credentials, schemas) kept beside the events, so a deployment
    /// has one place of truth. `None` when never saved.
    async fn load_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Replaces a named document durably (atomic: readers see the old or the new one whole).
    async fn save_meta(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError>;

    /// Waits until everything acknowledged is durable and stops background work.
    async fn shutdown(&self) -> Result<(), StoreError>;
}
