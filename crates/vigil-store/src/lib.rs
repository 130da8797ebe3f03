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

#[cfg(feature = "fixtures")]
pub mod fixtures;
#[cfg(feature = "testsuite")]
pub mod model;
mod page;
pub mod shared;
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

/// A signed checkpoint of a tenant's log (its Merkle tree head), as kept by a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// Number of events (leaves) the checkpoint covers.
    pub size: u64,
    /// The Merkle root of those events.
    pub root: Hash,
    /// When it was signed.
    pub timestamp: Timestamp,
    /// The C2SP signed note (see `vigil_integrity::checkpoint`).
    pub note: String,
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

/// The version of a meta document: a number that changes whenever its content does. Opaque;
/// only ever compared for equality.
pub type MetaVersion = u64;

/// A version derived from the content itself (the first 8 bytes of its SHA-256 leaf hash):
/// what backends without a stored version counter use.
pub fn content_version(bytes: &[u8]) -> MetaVersion {
    let h = vigil_event::leaf_hash(bytes);
    u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]])
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

    /// [`load_meta`](Store::load_meta) with the document's version, for read-modify-write
    /// through [`save_meta_if`](Store::save_meta_if) and for noticing changes made by other
    /// processes sharing the store.
    async fn load_meta_versioned(
        &self,
        name: &str,
    ) -> Result<Option<(MetaVersion, Vec<u8>)>, StoreError> {
        Ok(self
            .load_meta(name)
            .await?
            .map(|bytes| (content_version(&bytes), bytes)))
    }

    /// The document's current version alone (`None`: it does not exist): what processes
    /// sharing a store poll to notice a change without reading the document each time.
    async fn meta_version(&self, name: &str) -> Result<Option<MetaVersion>, StoreError> {
        Ok(self.load_meta_versioned(name).await?.map(|(v, _)| v))
    }

    /// Saves `bytes` only if the document is still at version `expected` (`None`: it does not
    /// exist yet). Returns the new version, or `Ok(None)` when the document changed meanwhile:
    /// the caller reloads and applies its change again.
    ///
    /// The default compares and saves in two steps, which is enough for a store owned by one
    /// process whose callers serialise their changes to a document; a store several processes
    /// share (PostgreSQL) makes the compare and the save one atomic step.
    async fn save_meta_if(
        &self,
        name: &str,
        expected: Option<MetaVersion>,
        bytes: &[u8],
    ) -> Result<Option<MetaVersion>, StoreError> {
        let current = self.load_meta_versioned(name).await?.map(|(v, _)| v);
        if current != expected {
            return Ok(None);
        }
        self.save_meta(name, bytes).await?;
        Ok(Some(content_version(bytes)))
    }

    /// Number of events of `tenant` whose Merkle tree hashes are stored: its tree size. Every
    /// acknowledged append is included.
    async fn tree_size(&self, tenant: &TenantId) -> Result<u64, StoreError>;

    /// Every tenant that has events, with its tree size.
    async fn tree_sizes(&self) -> Result<Vec<(TenantId, u64)>, StoreError>;

    /// The stored Merkle hashes of `tenant`'s tree at the given stored-hash indexes
    /// (`vigil_integrity::tree::stored_hash_index`), in the order asked. An index not yet stored
    /// is an [`StoreError::Internal`] error.
    async fn read_hashes(
        &self,
        tenant: &TenantId,
        indexes: &[u64],
    ) -> Result<Vec<Hash>, StoreError>;

    /// Keeps a signed checkpoint, after making the hashes it covers durable. Saving a second
    /// checkpoint of the same tenant and size is a no-op: the first one is kept.
    async fn save_checkpoint(
        &self,
        tenant: &TenantId,
        checkpoint: &StoredCheckpoint,
    ) -> Result<(), StoreError>;

    /// The checkpoint of `tenant` at `size`, or its newest (largest) one when `size` is `None`.
    async fn checkpoint(
        &self,
        tenant: &TenantId,
        size: Option<u64>,
    ) -> Result<Option<StoredCheckpoint>, StoreError>;

    /// Every checkpoint of `tenant`, smallest size first.
    async fn checkpoints(&self, tenant: &TenantId) -> Result<Vec<StoredCheckpoint>, StoreError>;

    /// Waits until everything acknowledged is durable and stops background work.
    async fn shutdown(&self) -> Result<(), StoreError>;
}
