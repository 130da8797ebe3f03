//! The contract between vigil and its event stores, and what every store shares.
//!
//! [`Store`] puts the append → index → query stages behind one interface. Only the `vigil`
//! binary picks a backend — the embedded segment log (`vigil-store-embedded`, the default) or
//! PostgreSQL (`vigil-store-postgres`); everything else (the HTTP API, the NATS writer and
//! reader) talks to an `Arc<dyn Store>`. Every backend passes the same conformance suite
//! (`store_conformance_suite!`, feature `testsuite`).
//!
//! The decisions every backend must make alike are written here once, pure, and the backends
//! keep only their I/O: which events of a commit group are new and which seq, leaf and chain
//! hash each gets ([`commit`]), how a page ends ([`Page::new`], [`MAX_PAGE_READ_BYTES`]), and
//! how a candidate an index cannot decide is confirmed ([`confirm`]).
//!
//! Tenant isolation lives here too: every read takes the tenant, and a backend never returns an
//! event of another tenant, whatever the filter says.
//!
//! # Layout
//! - `lib.rs`: the [`Store`] trait, what it takes and returns ([`Appended`], [`StoredEvent`],
//!   [`Page`], [`StoredCheckpoint`]) and [`StoreError`].
//! - [`commit`]: the group-commit decision (duplicates, conflicts, seq, Merkle leaf, chain
//!   hash per tenant) both writers call.
//! - `page.rs`: ending a page of query results and writing its JSON form ([`Page::to_json`]).
//! - `confirm.rs`: confirming index candidates with the query evaluator ([`confirm`],
//!   [`is_time_path`]).
//! - [`telemetry`]: typed events of the write path (commit groups, fsyncs, seals).
//! - [`shared`]: keeping a meta document in step across processes sharing a store.
//! - `fixtures` (feature `fixtures`): tenants, minimal events, batches and the one realistic
//!   event generator ([`EventGen`](crate::fixtures::EventGen)) for tests, benchmarks and
//!   `vigil bench`.
//! - `testsuite`, `model` (feature `testsuite`): the conformance suite and the model tests
//!   every backend runs.
//!
//! # Example
//! A writer's decision for one request, against a store holding nothing yet:
//! ```
//! use serde_json::json;
//! use vigil_event::{EventId, Limits, TenantId, Timestamp, normalize};
//! use vigil_store::StoreError;
//! use vigil_store::commit::{Head, Prior, StoreState, decide};
//!
//! struct Empty;
//!
//! impl StoreState for Empty {
//!     fn stored(&self, _: &TenantId, _: &EventId) -> Result<Option<Prior>, StoreError> {
//!         Ok(None)
//!     }
//!     fn head(&self, _: &TenantId) -> Head {
//!         Head::default()
//!     }
//! }
//!
//! let tenant = TenantId::parse("acme").unwrap();
//! let event = |id: &str| {
//!     let event = json!({"id": id, "type": "login.failed", "time": "2024-05-01T12:00:00Z"});
//!     normalize(event, &Limits::default()).unwrap().prepare(&tenant, Timestamp::now(), "docs")
//! };
//! let request = vec![event("a"), event("b"), event("a")];
//! let decision = decide([request.as_slice()], &Empty);
//! let answer: Vec<(u64, bool)> = decision.results[0]
//!     .as_ref()
//!     .unwrap()
//!     .iter()
//!     .map(|a| (a.seq, a.duplicate))
//!     .collect();
//! assert_eq!(answer, [(1, false), (2, false), (1, true)]);
//! assert_eq!(decision.new.len(), 2);
//! assert_eq!(decision.heads[0].1.seq, 2);
//! ```

use std::fmt::Debug;

use async_trait::async_trait;
use vigil_event::{EventId, Hash, Prepared, TenantId, Timestamp};
use vigil_query::{Cursor, Expr, Query};

pub mod commit;
mod confirm;
#[cfg(feature = "fixtures")]
pub mod fixtures;
#[cfg(feature = "testsuite")]
pub mod model;
mod page;
pub mod shared;
pub mod telemetry;
#[cfg(feature = "testsuite")]
pub mod testsuite;

pub use confirm::{confirm, is_time_path};
pub use page::MAX_PAGE_READ_BYTES;

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
    /// An I/O or database error while serving the request, with its cause kept so that the
    /// log line of a 500 shows the whole chain.
    #[error(transparent)]
    Internal(InternalError),
}

impl StoreError {
    /// An internal failure described by `message` alone.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal(InternalError::msg(message))
    }

    /// An internal failure that is `cause` itself (its message and its sources).
    pub fn internal_from(cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(InternalError::wrap(cause))
    }

    /// An internal failure: `context`, caused by `cause`.
    pub fn internal_with(
        context: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Internal(InternalError::with(context, cause))
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Conflict(_) => "id_conflict",
            Self::Unavailable(_) => "store_unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

/// What [`StoreError::Internal`] carries: a message, a cause, or both. Clones share the cause,
/// so one failure can answer every request of a commit group.
#[derive(Debug, Clone)]
pub struct InternalError {
    /// What was being done; `None` when the error is the cause itself.
    context: Option<String>,
    cause: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
}

impl InternalError {
    pub fn msg(message: impl Into<String>) -> Self {
        Self {
            context: Some(message.into()),
            cause: None,
        }
    }

    pub fn wrap(cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            context: None,
            cause: Some(std::sync::Arc::new(cause)),
        }
    }

    pub fn with(
        context: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            context: Some(context.into()),
            cause: Some(std::sync::Arc::new(cause)),
        }
    }
}

impl std::fmt::Display for InternalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.context, &self.cause) {
            (Some(context), _) => f.write_str(context),
            (None, Some(cause)) => std::fmt::Display::fmt(cause, f),
            (None, None) => f.write_str("internal error"),
        }
    }
}

impl std::error::Error for InternalError {
    /// With a context, the cause; without one this error *is* the cause, so its source is the
    /// cause's own (the chain never shows one message twice).
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let cause = self.cause.as_deref()?;
        if self.context.is_some() {
            Some(cause)
        } else {
            cause.source()
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

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    /// Every message of an error and its sources, as a 500's log line shows them.
    fn chain(e: &dyn Error) -> Vec<String> {
        let mut out = vec![e.to_string()];
        let mut source = e.source();
        while let Some(s) = source {
            out.push(s.to_string());
            source = s.source();
        }
        out
    }

    /// Regression: `StoreError::Internal` held a `String`, so the cause of a 500 (an I/O error
    /// and what caused it) was flattened into one message at the first conversion and its
    /// source chain was lost to the log.
    #[test]
    fn internal_errors_keep_their_cause_and_never_repeat_a_message() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "permission denied");
        let e = StoreError::internal_with("reading meta/auth.json", io);
        assert_eq!(chain(&e), ["reading meta/auth.json", "permission denied"]);
        assert_eq!(e.code(), "internal");

        let wrapped = StoreError::internal_from(std::io::Error::other("disk on fire"));
        assert_eq!(chain(&wrapped), ["disk on fire"]);

        let plain = StoreError::internal("a stored event is not a JSON object");
        let StoreError::Internal(inner) = &plain else {
            unreachable!()
        };
        assert_eq!(
            inner.clone().to_string(),
            "a stored event is not a JSON object"
        );
        assert!(inner.source().is_none());
    }
}
