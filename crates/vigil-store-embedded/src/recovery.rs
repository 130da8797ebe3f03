//! Recovery: opening a data directory and bringing the store back to exactly what the log
//! proves, then starting the writer.
//!
//! In order: lock the directory; remove temporary files of an interrupted seal or merge
//! ([`remove_leftovers`]) and segments a finished merge superseded ([`drop_superseded`]);
//! open sealed segments (rebuilding an unusable index from the log, [`open_sealed`]); replay
//! every unsealed write-ahead file, checking each seq and chain link ([`replay_wal`]), and
//! truncate the torn tail of the newest one; recompute the Merkle leaves the hash files lack
//! ([`recompute_leaves`]). Only then do the writer, sealer and ticker threads start.
//! [`reindex`] rebuilds every index file of a closed directory from its log.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs::{self, File};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use tokio::sync::mpsc;
use vigil_event::{Hash, chain_hash, leaf_hash};

use crate::error::{EmbeddedError, Result};
use crate::index::memtable::Memtable;
use crate::index::sealed::Sealed;
use crate::log::{record, segment, wal};
use crate::state::{SegmentSet, Shared, TenantState};
use crate::writer::{self, Command, Writer};
use crate::{EmbeddedConfig, EmbeddedStore, fsync, seal, trees};

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
        let path = wal::wal_path(dir, mem.id);
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

pub(crate) fn lock_dir(dir: &Path) -> Result<File> {
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
            let path = wal::wal_path(&dir, id);
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
            let path = wal::wal_path(&dir, id);
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
                let path = wal::wal_path(&dir, next_id);
                let m = Arc::new(RwLock::new(Memtable::new(next_id, &path).or_else(
                    |_| {
                        fs::OpenOptions::new()
                            .create(true)
                            .truncate(false)
                            .write(true)
                            .mode(0o600)
                            .open(&path)
                            .map_err(EmbeddedError::io("creating log", &path))?;
                        fsync::sync_dir(&log_dir)?;
                        Memtable::new(next_id, &path)
                    },
                )?));
                memtables.push(m.clone());
                active_len = 0;
                m
            }
        };
        let active_id = active.read().unwrap_or_else(|e| e.into_inner()).id;
        let wal = wal::WalWriter::open(&wal::wal_path(&dir, active_id), active_len)?;

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
            seal_failures: AtomicU32::new(0),
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
