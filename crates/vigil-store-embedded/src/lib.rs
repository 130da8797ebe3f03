//! vigil's embedded store: the log is the store.
//!
//! An append-only **segment log** in the data directory is the source of truth. The single
//! writer thread assigns each event its gap-free per-tenant `seq` and chain hash, appends
//! CRC-checked records to the active segment's `.wal`, and acknowledges a whole group of
//! concurrent requests with one fsync. The active segment keeps an in-memory index (the
//! memtable) so acknowledged events are queryable at once; when full (or old) it is **sealed**
//! on a background thread into compressed blocks of records plus an immutable term dictionary,
//! postings and columns. Queries walk segments newest first and stop as soon as `limit` is
//! filled. Opening the store replays only the unsealed tail, truncating a torn last write; every
//! index file can be rebuilt from the log ([`reindex`]).
//!
//! # Layout
//! Each stage of the flow, and the file that holds it (under `src/`):
//! ```text
//! commit        writer.rs          the writer thread: seq, chain, one fsync per group
//! fsync         fsync.rs           every sync of the store; the fault-injection test seam
//! log           log/record.rs      one event as stored: length, CRC, fixed fields, JSON
//!               log/wal.rs         the active segment's write-ahead file; replay
//!               log/segment.rs     a sealed segment's file: records in zstd blocks
//!               log/scan.rs        reading the log as it is, for `vigil verify`
//! index         index/memtable.rs  the live index of the unsealed segment
//!               index/sealed.rs    the index file of a sealed segment (fst, postings, columns)
//! seal          seal.rs            memtable -> .seg + .idx on the sealer thread; when to merge
//! merge         index/merge.rs     adjacent sealed segments -> one, blocks copied as they are
//! recovery      recovery.rs        open: replay, truncate the torn tail, recompute Merkle
//!                                  leaves, drop leftovers and superseded segments; reindex
//! query plan    query.rs           segments newest first, time and cursor bounds, top-k; paging
//! index lookup  index/lookup.rs    a filter -> candidate docs of one segment; an event by id
//! Merkle trees  trees.rs           each tenant's stored tree hashes and signed checkpoints
//! shared state  state.rs           the segment set, tenants' positions, the writer's health
//! Store API     store.rs           the vigil_store::Store contract over all of the above
//! ```
//!
//! The data directory:
//! ```text
//! <data-dir>/LOCK                   held by the one process that owns the directory
//! <data-dir>/log/<id>.wal           unsealed segment: raw records
//! <data-dir>/log/<id>.seg           sealed segment: records in zstd blocks (the log)
//! <data-dir>/index/<id>.idx         derived index of a sealed segment
//! <data-dir>/meta/<name>.json       small documents (credentials, schemas), mode 0600
//! <data-dir>/merkle/<tenant>.*      each tenant's Merkle tree and signed checkpoints
//! ```
//!
//! # Example
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use vigil_event::{normalize, Limits, TenantId, Timestamp};
//! use vigil_store::Store;
//! use vigil_store_embedded::{EmbeddedConfig, EmbeddedStore};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
//! let tenant = TenantId::parse("acme").unwrap();
//! let event = normalize(serde_json::json!({"type": "login.failed", "severity": 8}), &Limits::default())
//!     .unwrap()
//!     .prepare(&tenant, Timestamp::now(), "docs");
//! let appended = store.append(vec![event]).await.unwrap();
//! assert_eq!(appended[0].seq, 1);
//! store.shutdown().await.unwrap();
//! # }
//! ```
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

mod error;
mod fsync;
mod index;
mod log;
mod query;
mod recovery;
mod seal;
mod state;
mod store;
mod trees;
mod writer;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use state::Shared;
use writer::Command;

pub use error::EmbeddedError;
#[cfg(feature = "fault-injection")]
pub use fsync::{FsyncFault, Synced};
pub use log::scan;
pub use recovery::{ReindexReport, reindex};

/// Tuning of the embedded store. Every field but `queue_depth` is a `vigil serve` option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedConfig {
    pub data_dir: PathBuf,
    /// Events per segment before it is sealed (default 262 144): bounds the memory of the
    /// in-memory index and the work of replay after a crash.
    pub segment_max_events: u64,
    /// Seal the active segment after this long even if not full (default 10 min), so a quiet
    /// log does not keep its newest events only in the write-ahead file.
    pub seal_interval: Duration,
    /// Most events in one group commit (default 65 536): bounds the latency one fsync adds.
    pub max_commit_events: usize,
    /// Capacity of the writer's request queue (default 1 024 requests): back-pressure beyond.
    pub queue_depth: usize,
    /// Background merging combines adjacent sealed segments up to this many events (default
    /// 4 194 304), keeping the number of segments a query visits low.
    pub max_segment_events: u64,
}

impl EmbeddedConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            segment_max_events: 262_144,
            seal_interval: Duration::from_secs(600),
            max_commit_events: 65_536,
            queue_depth: 1024,
            max_segment_events: 4 * 1024 * 1024,
        }
    }
}

/// The embedded event store. Cheap to share behind an `Arc`.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Command>,
    /// Held by every meta document write until the file is replaced (even when the caller
    /// stops waiting), so [`vigil_store::Store::save_meta_if`] compares and replaces as one step: two
    /// concurrent changes of a document cannot both start from one version and one silently
    /// undo the other. The directory lock keeps other processes out.
    meta_writes: Arc<tokio::sync::Mutex<()>>,
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}
