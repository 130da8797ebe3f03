//! The state shared in memory by the store handle, the writer and the sealer: the set of
//! segments a query sees, each tenant's position in its log, and the writer's health.
//!
//! The segment set is an `Arc` swapped whole under a short write lock (copy on write): a query
//! takes a snapshot and never blocks the writer or the sealer for longer than the swap.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::{Arc, RwLock};

use vigil_event::Hash;

use crate::EmbeddedConfig;
use crate::index::lookup::SegmentView;
use crate::index::memtable::Memtable;
use crate::index::sealed::Sealed;
use crate::trees::Trees;

/// A tenant's position in its log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TenantState {
    pub last_seq: u64,
    pub last_chain: Hash,
}

/// Every segment a query must see, oldest first: sealed ones, then unsealed memtables (the last
/// is the active one).
#[derive(Debug, Clone, Default)]
pub(crate) struct SegmentSet {
    pub sealed: Vec<Arc<Sealed>>,
    pub memtables: Vec<Arc<RwLock<Memtable>>>,
}

/// One segment of a snapshot. A memtable is locked only for the duration of one `with` call.
#[derive(Debug, Clone)]
pub(crate) enum SegRef {
    Sealed(Arc<Sealed>),
    Mem(Arc<RwLock<Memtable>>),
}

impl SegRef {
    pub(crate) fn with<T>(&self, f: impl FnOnce(&dyn SegmentView) -> T) -> T {
        match self {
            Self::Sealed(s) => f(&**s),
            Self::Mem(m) => f(&*m.read().unwrap_or_else(|e| e.into_inner())),
        }
    }
}

/// State shared by the store handle, the writer and the sealer.
#[derive(Debug)]
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub config: EmbeddedConfig,
    pub segments: RwLock<Arc<SegmentSet>>,
    /// Set after a failed write or fsync: nothing more is acknowledged until restart.
    pub poisoned: AtomicBool,
    pub stopping: AtomicBool,
    /// Consecutive failed seal attempts: past a few, the store reports itself not ready.
    pub seal_failures: AtomicU32,
    /// Every tenant's Merkle tree and checkpoints.
    pub trees: Trees,
    /// Held for the life of the store: one process per data directory.
    pub(crate) _lock: File,
}

impl Shared {
    pub(crate) fn snapshot(&self) -> Arc<SegmentSet> {
        self.segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Swaps a merged segment in for the run it replaces.
    pub(crate) fn replace_sealed(&self, ids: &[u64], merged: Arc<Sealed>) {
        let mut set = self.segments.write().unwrap_or_else(|e| e.into_inner());
        let mut next = (**set).clone();
        next.sealed.retain(|s| !ids.contains(&s.id));
        next.sealed.push(merged);
        next.sealed.sort_by_key(|s| s.id);
        *set = Arc::new(next);
    }

    /// Swaps a sealed segment in for the memtable it was built from.
    pub(crate) fn replace_memtable(&self, id: u64, sealed: Arc<Sealed>) {
        let mut set = self.segments.write().unwrap_or_else(|e| e.into_inner());
        let mut next = (**set).clone();
        next.memtables
            .retain(|m| m.read().unwrap_or_else(|e| e.into_inner()).id != id);
        next.sealed.push(sealed);
        next.sealed.sort_by_key(|s| s.id);
        *set = Arc::new(next);
    }

    /// Every segment of the current snapshot, oldest first.
    pub(crate) fn refs(&self) -> Vec<SegRef> {
        let set = self.snapshot();
        set.sealed
            .iter()
            .cloned()
            .map(SegRef::Sealed)
            .chain(set.memtables.iter().cloned().map(SegRef::Mem))
            .collect()
    }
}
