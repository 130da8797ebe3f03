//! vigil's embedded store: the log is the store.
//!
//! An append-only **segment log** in the data directory is the source of truth. The single
//! writer thread ([`writer`]) assigns each event its gap-free per-tenant `seq` and chain hash,
//! appends CRC-checked records to the active segment's `.wal`, and acknowledges a whole group of
//! concurrent requests with one fsync. The active segment keeps an in-memory index
//! ([`memtable`]) so acknowledged events are queryable at once; when full (or old) it is
//! **sealed** on a background thread ([`seal`]) into compressed blocks plus an immutable term
//! dictionary, postings and columns ([`segment`]). Queries ([`query`]) walk segments newest
//! first and stop as soon as `limit` is filled. Opening the store replays only the unsealed
//! tail, truncating a torn last write; every index file can be rebuilt from the log
//! ([`reindex`]).
//!
//! # Layout
//! ```text
//! <data-dir>/LOCK                   held by the one process that owns the directory
//! <data-dir>/log/<id>.wal           unsealed segment: raw records
//! <data-dir>/log/<id>.seg           sealed segment: records in zstd blocks (the log)
//! <data-dir>/index/<id>.idx         derived index of a sealed segment
//! <data-dir>/meta/<name>.json       small documents (credentials, schemas), mode 0600
//! <data-dir>/merkle/<tenant>.*      each tenant's Merkle tree and signed checkpoints ([`trees`])
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
mod index;
mod log;
mod query;
mod seal;
mod trees;
mod writer;

pub use log::scan;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use vigil_event::{EventId, Hash, Prepared, TenantId, Timestamp, chain_hash, leaf_hash};
use vigil_query::{Expr, Query};
use vigil_store::{
    Appended, MetaVersion, Page, Store, StoreError, StoredCheckpoint, StoredEvent, content_version,
};

pub use error::EmbeddedError;
use error::Result;
use index::memtable::Memtable;
use log::{record, segment, wal};
use segment::{Sealed, SegmentView};
use writer::{Command, Writer};

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
    pub seal_failures: std::sync::atomic::AtomicU32,
    /// Every tenant's Merkle tree and checkpoints.
    pub trees: trees::Trees,
    /// Held for the life of the store: one process per data directory.
    _lock: File,
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

/// The embedded event store. Cheap to share behind an `Arc`.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Command>,
    /// Held by every meta document write until the file is replaced (even when the caller
    /// stops waiting), so [`Store::save_meta_if`] compares and replaces as one step: two
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

/// What [`reindex`] rebuilt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReindexReport {
    pub segments: usize,
    pub events: u64,
}

impl fmt::Display for ReindexReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rebuilt the index of {} sealed segment(s), {} event(s)",
            self.segments, self.events
        )
    }
}

fn segment_ids(log_dir: &Path) -> Result<(BTreeSet<u64>, BTreeSet<u64>)> {
    let (sealed, wal, leftovers) = list_segments(log_dir)?;
    for path in leftovers {
        // An interrupted seal: the .wal it came from is still there.
        let _ = fs::remove_file(path);
    }
    Ok((sealed, wal))
}

/// The ids of the sealed segments and write-ahead files in `log_dir`, and the temporary files
/// an interrupted seal or merge left. Reads only.
pub(crate) fn list_segments(
    log_dir: &Path,
) -> Result<(BTreeSet<u64>, BTreeSet<u64>, Vec<PathBuf>)> {
    let (mut sealed, mut wal, mut leftovers) = (BTreeSet::new(), BTreeSet::new(), Vec::new());
    for entry in fs::read_dir(log_dir).map_err(EmbeddedError::io("listing", log_dir))? {
        let entry = entry.map_err(EmbeddedError::io("listing", log_dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".tmp") || name.ends_with(".merge") {
            leftovers.push(entry.path());
            continue;
        }
        let Some((stem, ext)) = name.split_once('.') else {
            continue;
        };
        let Ok(id) = stem.parse::<u64>() else {
            continue;
        };
        match ext {
            "seg" => {
                sealed.insert(id);
            }
            "wal" => {
                wal.insert(id);
            }
            _ => {}
        }
    }
    Ok((sealed, wal, leftovers))
}

/// Opens a sealed segment, rebuilding its index from the log when it is missing or damaged.
fn open_sealed(dir: &Path, id: u64) -> Result<Sealed> {
    match Sealed::open(dir, id) {
        Ok(s) => Ok(s),
        Err(e) => {
            tracing::warn!(segment = id, error = %e, "index unusable; rebuilding it from the log");
            seal::rebuild_index(dir, id)?;
            Sealed::open(dir, id)
        }
    }
}

/// Replays an unsealed log into a memtable, checking every seq and chain link against (and
/// advancing) the tenants' state.
fn replay_wal(
    path: &Path,
    id: u64,
    tenants: &mut HashMap<String, TenantState>,
) -> Result<(Memtable, wal::Replay)> {
    let mut mem = Memtable::new(id, path)?;
    let mut terms: Vec<Vec<u8>> = Vec::with_capacity(32);
    let replay = wal::replay(path, |offset, len, rec| {
        let state = tenants.entry(rec.tenant.to_owned()).or_default();
        if rec.seq != state.last_seq + 1 {
            return Err(EmbeddedError::corrupt(
                path,
                format!(
                    "tenant {} jumps from seq {} to {}",
                    rec.tenant, state.last_seq, rec.seq
                ),
            ));
        }
        let chain = chain_hash(&state.last_chain, &leaf_hash(rec.canonical));
        if chain != rec.chain {
            return Err(EmbeddedError::corrupt(
                path,
                format!(
                    "chain hash mismatch at tenant {} seq {}",
                    rec.tenant, rec.seq
                ),
            ));
        }
        *state = TenantState {
            last_seq: rec.seq,
            last_chain: chain,
        };
        terms.clear();
        if !seal::terms_of_canonical(rec.canonical, |t| terms.push(t.to_vec())) {
            return Err(EmbeddedError::corrupt(
                path,
                format!("seq {}: event is not a JSON object", rec.seq),
            ));
        }
        mem.insert(offset, len, &rec, terms.iter().map(|t| t.as_slice()));
        Ok(())
    })?;
    Ok((mem, replay))
}

/// Recomputes the Merkle leaves of seqs the hash files lack (after a crash, the events since
/// the newest checkpoint) from the log, oldest segment first. Returns how many.
fn recompute_leaves(
    dir: &Path,
    sealed: &[Arc<Sealed>],
    memtables: &[Arc<RwLock<Memtable>>],
    trees: &trees::Trees,
    missing: HashMap<String, trees::Missing>,
) -> Result<u64> {
    /// Leaves are handed to the tree in chunks of this many.
    const CHUNK: usize = 65_536;
    struct Todo {
        next: u64,
        to: u64,
        leaves: Vec<Hash>,
    }
    let from_of: HashMap<String, u64> = missing.iter().map(|(t, m)| (t.clone(), m.from)).collect();
    let mut todo: HashMap<String, Todo> = missing
        .into_iter()
        .map(|(t, m)| {
            (
                t,
                Todo {
                    next: m.from,
                    to: m.to,
                    leaves: Vec::new(),
                },
            )
        })
        .collect();
    let mut buf = Vec::new();
    let mut total = 0u64;
    let mut take = |rec: &record::Record<'_>, path: &Path| -> Result<()> {
        let Some(t) = todo.get_mut(rec.tenant) else {
            return Ok(());
        };
        if rec.seq < t.next || rec.seq > t.to {
            return Ok(());
        }
        if rec.seq != t.next {
            return Err(EmbeddedError::corrupt(
                path,
                format!(
                    "tenant {} jumps from seq {} to {}",
                    rec.tenant,
                    t.next - 1,
                    rec.seq
                ),
            ));
        }
        t.leaves.push(leaf_hash(rec.canonical));
        t.next += 1;
        total += 1;
        if t.leaves.len() >= CHUNK || t.next > t.to {
            let first = t.next - t.leaves.len() as u64;
            trees.append(rec.tenant, first, &t.leaves, &mut buf)?;
            t.leaves.clear();
        }
        Ok(())
    };
    for seg in sealed {
        // Only segments holding a missing seq are read.
        let needed = seg.tenants.iter().any(|tail| {
            from_of
                .get(&tail.name)
                .is_some_and(|&from| tail.last_seq >= from)
        });
        if needed {
            let path = segment::seg_path(dir, seg.id);
            seg.raw.for_each_record(|_, rec| take(&rec, &path))?;
        }
    }
    for mem in memtables {
        let mem = mem.read().unwrap_or_else(|e| e.into_inner());
        let path = segment::wal_path(dir, mem.id);
        mem.for_each_record(|_, raw| {
            let (rec, _) = record::decode(raw)
                .map_err(|_| EmbeddedError::corrupt(&path, "record unreadable"))?;
            take(&rec, &path)
        })?;
    }
    if let Some((tenant, t)) = todo.iter().find(|(_, t)| t.next <= t.to) {
        return Err(EmbeddedError::corrupt(
            dir,
            format!(
                "tenant {tenant}: seq {} is not in the log, though the log ends at seq {}",
                t.next, t.to
            ),
        ));
    }
    Ok(total)
}

/// The first and last segment id a sealed segment covers.
type IdRange = (u64, u64);

/// Deletes temporary files of an interrupted seal or merge.
fn remove_leftovers(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(EmbeddedError::io("listing", dir))? {
        let path = entry.map_err(EmbeddedError::io("listing", dir))?.path();
        if path.extension().is_some_and(|e| e == "tmp" || e == "merge") {
            fs::remove_file(&path).map_err(EmbeddedError::io("removing", &path))?;
        }
    }
    Ok(())
}

/// Removes segments a merged segment covers (a merge interrupted after its rename). Returns the
/// ids that remain and the id ranges the sealed segments cover.
fn drop_superseded(dir: &Path, ids: BTreeSet<u64>) -> Result<(BTreeSet<u64>, Vec<IdRange>)> {
    let mut superseded = BTreeSet::new();
    let mut ranges = Vec::new();
    for &id in &ids {
        let first = segment::RawSegment::open(&segment::seg_path(dir, id))?.first_id;
        superseded.extend(ids.range(first..id).copied());
        ranges.push((first, id));
    }
    for &id in &superseded {
        tracing::info!(segment = id, "removing a segment superseded by a merge");
        seal::remove_segment_files(dir, id);
    }
    ranges.retain(|(_, id)| !superseded.contains(id));
    Ok((ids.difference(&superseded).copied().collect(), ranges))
}

fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(EmbeddedError::io("opening lock file", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(EmbeddedError::Locked(dir.to_owned())),
        Err(fs::TryLockError::Error(e)) => Err(EmbeddedError::io("locking", &path)(e)),
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) and locks the data directory, then recovers: sealed segments
    /// are opened (their index rebuilt if missing or damaged), unsealed logs replayed with every
    /// seq and chain link checked, and a torn tail truncated. Blocking.
    pub fn open(config: EmbeddedConfig) -> Result<Self, EmbeddedError> {
        let dir = config.data_dir.clone();
        for sub in ["", "log", "index", "meta"] {
            let p = dir.join(sub);
            // Events of every tenant live here: readable by the owner only.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&p)
                .map_err(EmbeddedError::io("creating directory", &p))?;
        }
        let lock = lock_dir(&dir)?;
        let log_dir = dir.join("log");
        remove_leftovers(&dir.join("index"))?;
        let (sealed_ids, wal_ids) = segment_ids(&log_dir)?;

        let (sealed_ids, covered) = drop_superseded(&dir, sealed_ids)?;
        // Recover in segment order, sealed and unsealed alike, so each log is checked against
        // the tenants' state at its own start (a segment whose sealing failed may be older than
        // sealed ones).
        let mut order: Vec<(u64, bool)> = sealed_ids.iter().map(|&id| (id, true)).collect();
        for &id in &wal_ids {
            let path = segment::wal_path(&dir, id);
            if covered
                .iter()
                .any(|&(first, last)| (first..=last).contains(&id))
            {
                // Sealed before the crash; only the removal of its log was lost.
                fs::remove_file(&path).map_err(EmbeddedError::io("removing sealed log", &path))?;
            } else {
                order.push((id, false));
            }
        }
        order.sort_unstable();
        let newest_wal = order
            .iter()
            .rev()
            .find(|(_, sealed)| !sealed)
            .map(|&(id, _)| id);
        let mut tenants: HashMap<String, TenantState> = HashMap::new();
        let mut sealed = Vec::new();
        let mut memtables = Vec::new();
        let mut active_len = 0;
        for (id, is_sealed) in order {
            if is_sealed {
                let seg = open_sealed(&dir, id)?;
                for t in &seg.tenants {
                    let state = tenants.entry(t.name.clone()).or_default();
                    if t.last_seq > state.last_seq {
                        *state = TenantState {
                            last_seq: t.last_seq,
                            last_chain: t.last_chain,
                        };
                    }
                }
                sealed.push(Arc::new(seg));
                continue;
            }
            let path = segment::wal_path(&dir, id);
            let (mem, replay) = replay_wal(&path, id, &mut tenants)?;
            if replay.dropped > 0 {
                if Some(id) != newest_wal {
                    // Only the newest log can end in an unfinished group: an older one was
                    // complete before the next was started.
                    return Err(EmbeddedError::corrupt(
                        &path,
                        format!(
                            "{} damaged bytes after offset {} in a completed log",
                            replay.dropped, replay.valid_len
                        ),
                    ));
                }
                tracing::warn!(
                    path = %path.display(),
                    kept_bytes = replay.valid_len,
                    dropped_bytes = replay.dropped,
                    "truncating an unacknowledged, partly written group at the end of the log"
                );
                wal::truncate(&path, replay.valid_len)?;
            }
            active_len = replay.valid_len;
            memtables.push(Arc::new(RwLock::new(mem)));
        }
        let next_id = sealed_ids
            .iter()
            .chain(wal_ids.iter())
            .max()
            .map_or(1, |m| m + 1);
        // Every memtable but the newest is full: it goes to the sealer.
        let active = match memtables.last() {
            Some(m) => m.clone(),
            None => {
                let path = segment::wal_path(&dir, next_id);
                let m = Arc::new(RwLock::new(Memtable::new(next_id, &path).or_else(
                    |_| {
                        fs::OpenOptions::new()
                            .create(true)
                            .truncate(false)
                            .write(true)
                            .mode(0o600)
                            .open(&path)
                            .map_err(EmbeddedError::io("creating log", &path))?;
                        segment::sync_dir(&log_dir)?;
                        Memtable::new(next_id, &path)
                    },
                )?));
                memtables.push(m.clone());
                active_len = 0;
                m
            }
        };
        let active_id = active.read().unwrap_or_else(|e| e.into_inner()).id;
        let wal = wal::WalWriter::open(&segment::wal_path(&dir, active_id), active_len)?;

        let log_sizes: HashMap<String, u64> = tenants
            .iter()
            .map(|(t, s)| (t.clone(), s.last_seq))
            .collect();
        let (trees, missing) = trees::Trees::open(&dir, &log_sizes)?;
        if !missing.is_empty() {
            let started = Instant::now();
            let events = recompute_leaves(&dir, &sealed, &memtables, &trees, missing)?;
            tracing::info!(events, elapsed = ?started.elapsed(), "Merkle hashes recomputed from the log");
        }

        let shared = Arc::new(Shared {
            dir: dir.clone(),
            config: config.clone(),
            segments: RwLock::new(Arc::new(SegmentSet {
                sealed,
                memtables: memtables.clone(),
            })),
            poisoned: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            seal_failures: std::sync::atomic::AtomicU32::new(0),
            trees,
            _lock: lock,
        });

        // Unbounded on purpose: it holds handles to memtables that are in memory anyway, and the
        // writer must never block on a sealer that keeps failing.
        let (seal_tx, seal_rx) = std::sync::mpsc::channel();
        let sealer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("vigil-sealer".into())
                .spawn(move || seal::run(shared, seal_rx))
                .map_err(EmbeddedError::io("starting sealer thread", &dir))?
        };
        for m in memtables.iter().take(memtables.len().saturating_sub(1)) {
            let _ = seal_tx.send(m.clone());
        }
        let (tx, rx) = mpsc::channel(config.queue_depth.max(1));
        let writer = Writer {
            shared: shared.clone(),
            rx,
            wal,
            active,
            tenants,
            segment_started: Instant::now(),
            seal_tx,
            sealer: Some(sealer),
            hash_buf: Vec::new(),
        };
        std::thread::Builder::new()
            .name("vigil-writer".into())
            .spawn(move || writer.run())
            .map_err(EmbeddedError::io("starting writer thread", &dir))?;
        {
            let tx = tx.downgrade();
            let shared = Arc::downgrade(&shared);
            std::thread::Builder::new()
                .name("vigil-ticker".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(writer::TICK);
                        let alive = shared
                            .upgrade()
                            .is_some_and(|s| !s.stopping.load(Ordering::SeqCst));
                        let Some(tx) = tx.upgrade().filter(|_| alive) else {
                            return;
                        };
                        // A full queue already wakes the writer; a missed tick is harmless.
                        let _ = tx.try_send(Command::Tick);
                    }
                })
                .map_err(EmbeddedError::io("starting ticker thread", &dir))?;
        }
        tracing::info!(dir = %dir.display(), segments = sealed_ids.len() + wal_ids.len(), "event store open");
        Ok(Self {
            shared,
            tx,
            meta_writes: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        if self.shared.poisoned.load(Ordering::SeqCst) {
            return Err(EmbeddedError::Poisoned.into());
        }
        if self.shared.stopping.load(Ordering::SeqCst) {
            return Err(EmbeddedError::ShuttingDown.into());
        }
        Ok(())
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&[SegRef]) -> Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || f(&shared.refs()))
            .await
            .map_err(|e| StoreError::Internal(format!("query task failed: {e}")))?
            .map_err(StoreError::from)
    }

    fn meta_path(&self, name: &str) -> Result<PathBuf, StoreError> {
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(StoreError::Internal(format!(
                "invalid meta document name {name:?}"
            )));
        }
        Ok(self.shared.dir.join("meta").join(format!("{name}.json")))
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Without an explicit shutdown, stop the writer once it has drained its queue.
        let (done, _) = oneshot::channel();
        let _ = self.tx.try_send(Command::Shutdown { done });
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn append(&self, events: Vec<Prepared>) -> Result<Vec<Appended>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.check_writable()?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Append { events, reply })
            .await
            .map_err(|_| StoreError::from(EmbeddedError::ShuttingDown))?;
        rx.await
            .map_err(|_| StoreError::from(EmbeddedError::ShuttingDown))?
    }

    async fn get(
        &self,
        tenant: &TenantId,
        id: &EventId,
    ) -> Result<Option<StoredEvent>, StoreError> {
        let (tenant, id) = (tenant.as_str().to_owned(), id.as_str().to_owned());
        self.read(move |views| Ok(query::find_id(views, &tenant, &id)?.map(query::to_stored)))
            .await
    }

    async fn query(&self, tenant: &TenantId, q: &Query) -> Result<Page, StoreError> {
        let (tenant, q) = (tenant.as_str().to_owned(), q.clone());
        let now = Timestamp::now();
        self.read(move |views| query::execute(views, &tenant, &q, now))
            .await
    }

    async fn count(
        &self,
        tenant: &TenantId,
        filter: &Expr,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    ) -> Result<u64, StoreError> {
        let (tenant, filter) = (tenant.as_str().to_owned(), filter.clone());
        let now = Timestamp::now();
        self.read(move |views| query::count(views, &tenant, &filter, from, to, now))
            .await
    }

    async fn ready(&self) -> Result<(), StoreError> {
        self.check_writable()?;
        let failures = self.shared.seal_failures.load(Ordering::SeqCst);
        if failures >= seal::UNREADY_AFTER_FAILURES {
            return Err(StoreError::Unavailable(format!(
                "sealing has failed {failures} times in a row; events stay in the log and memory until it succeeds"
            )));
        }
        Ok(())
    }

    async fn load_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.meta_path(name)?;
        tokio::task::spawn_blocking(move || read_meta(&path))
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))?
    }

    async fn save_meta(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.meta_path(name)?;
        let bytes = bytes.to_vec();
        let writing = Arc::clone(&self.meta_writes).lock_owned().await;
        tokio::task::spawn_blocking(move || {
            let _writing = writing;
            write_private_atomic(&path, &bytes)
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
        .map_err(StoreError::from)
    }

    /// Versions are [`content_version`]s, as [`save_meta_if`](Store::save_meta_if) returns.
    async fn load_meta_versioned(
        &self,
        name: &str,
    ) -> Result<Option<(MetaVersion, Vec<u8>)>, StoreError> {
        Ok(self
            .load_meta(name)
            .await?
            .map(|bytes| (content_version(&bytes), bytes)))
    }

    async fn save_meta_if(
        &self,
        name: &str,
        expected: Option<MetaVersion>,
        bytes: &[u8],
    ) -> Result<Option<MetaVersion>, StoreError> {
        let path = self.meta_path(name)?;
        let bytes = bytes.to_vec();
        let writing = Arc::clone(&self.meta_writes).lock_owned().await;
        tokio::task::spawn_blocking(move || {
            let _writing = writing;
            // Every write holds the lock, so the file read here stays the latest until ours.
            let current = read_meta(&path)?.map(|old| content_version(&old));
            if current != expected {
                return Ok(None);
            }
            write_private_atomic(&path, &bytes)?;
            Ok(Some(content_version(&bytes)))
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
    }

    async fn tree_size(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        Ok(self
            .shared
            .trees
            .get(tenant.as_str())
            .map_or(0, |t| t.size()))
    }

    async fn tree_sizes(&self) -> Result<Vec<(TenantId, u64)>, StoreError> {
        self.shared
            .trees
            .sizes()
            .into_iter()
            .map(|(t, size)| {
                TenantId::parse(&t)
                    .map(|t| (t, size))
                    .map_err(|e| StoreError::Internal(format!("tenant {t:?} in the store: {e}")))
            })
            .collect()
    }

    async fn read_hashes(
        &self,
        tenant: &TenantId,
        indexes: &[u64],
    ) -> Result<Vec<Hash>, StoreError> {
        let shared = self.shared.clone();
        let (tenant, indexes) = (tenant.as_str().to_owned(), indexes.to_vec());
        tokio::task::spawn_blocking(move || shared.trees.read_hashes(&tenant, &indexes))
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))?
            .map_err(StoreError::Internal)
    }

    async fn save_checkpoint(
        &self,
        tenant: &TenantId,
        checkpoint: &StoredCheckpoint,
    ) -> Result<(), StoreError> {
        let shared = self.shared.clone();
        let (tenant, checkpoint) = (tenant.as_str().to_owned(), checkpoint.clone());
        tokio::task::spawn_blocking(move || shared.trees.save_checkpoint(&tenant, &checkpoint))
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))?
            .map_err(StoreError::from)
    }

    async fn checkpoint(
        &self,
        tenant: &TenantId,
        size: Option<u64>,
    ) -> Result<Option<StoredCheckpoint>, StoreError> {
        let shared = self.shared.clone();
        let tenant = tenant.as_str().to_owned();
        tokio::task::spawn_blocking(move || shared.trees.checkpoint(&tenant, size))
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))?
            .map_err(StoreError::from)
    }

    async fn checkpoints(&self, tenant: &TenantId) -> Result<Vec<StoredCheckpoint>, StoreError> {
        let shared = self.shared.clone();
        let tenant = tenant.as_str().to_owned();
        tokio::task::spawn_blocking(move || shared.trees.checkpoints(&tenant))
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))?
            .map_err(StoreError::from)
    }

    async fn shutdown(&self) -> Result<(), StoreError> {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown { done }).await.is_ok() {
            let _ = rx.await;
        }
        Ok(())
    }
}

/// A meta document's bytes; `None` when it was never saved. Blocking.
fn read_meta(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::Internal(format!(
            "reading {}: {e}",
            path.display()
        ))),
    }
}

/// Writes a file readable only by its owner, atomically (temp file, fsync, rename, fsync dir).
fn write_private_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    segment::write_atomic(path, |w| w.write_all(bytes))
}

/// Rebuilds every derived index file from the log of a data directory no process has open.
pub fn reindex(data_dir: &Path) -> Result<ReindexReport, EmbeddedError> {
    let _lock = lock_dir(data_dir)?;
    let (sealed, _) = segment_ids(&data_dir.join("log"))?;
    let mut report = ReindexReport {
        segments: 0,
        events: 0,
    };
    for id in sealed {
        report.events += seal::rebuild_index(data_dir, id)?;
        report.segments += 1;
    }
    Ok(report)
}
