//! Each tenant's Merkle tree and signed checkpoints, beside the log.
//!
//! ```text
//! <data-dir>/merkle/<tenant>.hashes        stored hashes in tlog order, 32 bytes each
//! <data-dir>/merkle/<tenant>.checkpoints   signed checkpoints, one JSON object per line
//! <data-dir>/merkle/CLEAN                  present only between a clean shutdown and the next open
//! ```
//!
//! The writer thread appends a group's stored hashes after the group's fsync and before its
//! events become visible or are answered, so every acknowledged event is in its tenant's tree.
//! Files are opened for each operation rather than held, so the number of tenants is not
//! bounded by the process's file descriptor limit. Hash files are not fsynced per
//! group: they are derived from the log. They are made durable before a checkpoint is saved
//! over them and at a clean shutdown. After a crash, opening the store trusts a tenant's hashes
//! only up to its newest checkpoint (whose root they must reproduce) and recomputes the rest
//! from the log: at most the events of one checkpoint interval, never a full rebuild.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use vigil_event::{Hash, Timestamp};
use vigil_integrity::tree::{Frontier, frontier_indexes, stored_hash_count};
use vigil_store::StoredCheckpoint;

use crate::error::{EmbeddedError, Result};
use crate::fsync;

const HASH_LEN: u64 = 32;

pub(crate) fn merkle_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("merkle")
}

fn hashes_path(dir: &Path, tenant: &str) -> PathBuf {
    dir.join(format!("{tenant}.hashes"))
}

fn checkpoints_path(dir: &Path, tenant: &str) -> PathBuf {
    dir.join(format!("{tenant}.checkpoints"))
}

fn clean_path(dir: &Path) -> PathBuf {
    dir.join("CLEAN")
}

/// Largest tree size whose stored hashes fit in `hashes` hashes.
pub(crate) fn leaves_in(hashes: u64) -> u64 {
    // stored_hash_count(n) = 2n - popcount(n) is increasing; n ≤ hashes.
    let (mut lo, mut hi) = (0u64, hashes);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if stored_hash_count(mid) <= hashes {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// A checkpoint as one line of a `.checkpoints` file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointLine {
    size: u64,
    root: String,
    /// Nanoseconds since the Unix epoch.
    timestamp: i64,
    note: String,
}

impl CheckpointLine {
    fn from_stored(cp: &StoredCheckpoint) -> Self {
        Self {
            size: cp.size,
            root: hex::encode(cp.root),
            timestamp: cp.timestamp.as_nanos(),
            note: cp.note.clone(),
        }
    }

    fn into_stored(self) -> Option<StoredCheckpoint> {
        let mut root = [0u8; 32];
        hex::decode_to_slice(&self.root, &mut root).ok()?;
        Some(StoredCheckpoint {
            size: self.size,
            root,
            timestamp: Timestamp::from_nanos(self.timestamp),
            note: self.note,
        })
    }
}

/// A checkpoint read from a file, with the `(offset, len)` of its line.
type CheckpointAt = (StoredCheckpoint, u64, u32);

/// Reads every checkpoint of a `.checkpoints` file with where it sits. A last line cut short
/// by a crash is left out; the length of the valid prefix is returned beside them.
fn read_checkpoint_file(path: &Path) -> Result<(Vec<CheckpointAt>, u64)> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(EmbeddedError::io("opening", path)(e)),
    };
    let mut reader = BufReader::new(file);
    let mut out = Vec::new();
    let mut offset = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(EmbeddedError::io("reading", path))?;
        if n == 0 || line.last() != Some(&b'\n') {
            // End of file, or a line whose write was interrupted: never acknowledged.
            return Ok((out, offset));
        }
        let Some(cp) = serde_json::from_slice::<CheckpointLine>(&line)
            .ok()
            .and_then(CheckpointLine::into_stored)
        else {
            let more = !reader
                .fill_buf()
                .map_err(EmbeddedError::io("reading", path))?
                .is_empty();
            if more {
                return Err(EmbeddedError::corrupt(
                    path,
                    format!("unreadable checkpoint at offset {offset}"),
                ));
            }
            // The last line, never synced before a crash (its blocks may read as zeros).
            return Ok((out, offset));
        };
        out.push((cp, offset, n as u32));
        offset += n as u64;
    }
}

/// Every checkpoint in a data directory, by tenant; for `vigil verify`. Read-only.
pub(crate) fn read_all_checkpoints(
    data_dir: &Path,
) -> Result<BTreeMap<String, Vec<StoredCheckpoint>>> {
    let dir = merkle_dir(data_dir);
    let mut out = BTreeMap::new();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(EmbeddedError::io("listing", &dir)(e)),
    };
    for entry in entries {
        let path = entry.map_err(EmbeddedError::io("listing", &dir))?.path();
        let Some(tenant) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".checkpoints"))
        else {
            continue;
        };
        let (cps, _) = read_checkpoint_file(&path)?;
        let mut cps: Vec<StoredCheckpoint> = cps.into_iter().map(|(cp, _, _)| cp).collect();
        cps.sort_by_key(|cp| cp.size);
        out.insert(tenant.to_owned(), cps);
    }
    Ok(out)
}

/// A tenant's checkpoints file and where each checkpoint sits in it.
#[derive(Debug)]
struct Checkpoints {
    path: PathBuf,
    len: u64,
    /// size → (offset, line length).
    index: BTreeMap<u64, (u64, u32)>,
}

fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(EmbeddedError::io("opening", path))
}

impl Checkpoints {
    /// Reads the file (creating it), cutting an interrupted last line.
    fn open(dir: &Path, tenant: &str) -> Result<(Self, Option<StoredCheckpoint>)> {
        let path = checkpoints_path(dir, tenant);
        let (found, valid_len) = read_checkpoint_file(&path)?;
        let file = open_rw(&path)?;
        let on_disk = file
            .metadata()
            .map_err(EmbeddedError::io("reading", &path))?
            .len();
        if on_disk > valid_len {
            tracing::warn!(path = %path.display(), "truncating an interrupted checkpoint write");
            file.set_len(valid_len)
                .and_then(|()| fsync::sync_all(&file, &path))
                .map_err(EmbeddedError::io("truncating", &path))?;
        }
        let mut index = BTreeMap::new();
        let mut latest: Option<StoredCheckpoint> = None;
        for (cp, offset, len) in found {
            index.entry(cp.size).or_insert((offset, len));
            if latest.as_ref().is_none_or(|l| cp.size > l.size) {
                latest = Some(cp);
            }
        }
        Ok((
            Self {
                path,
                len: valid_len,
                index,
            },
            latest,
        ))
    }

    fn read(&self, size: u64) -> Result<Option<StoredCheckpoint>> {
        let Some(&(offset, len)) = self.index.get(&size) else {
            return Ok(None);
        };
        let file = File::open(&self.path).map_err(EmbeddedError::io("opening", &self.path))?;
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset)
            .map_err(EmbeddedError::io("reading", &self.path))?;
        serde_json::from_slice::<CheckpointLine>(&buf)
            .ok()
            .and_then(CheckpointLine::into_stored)
            .map(Some)
            .ok_or_else(|| {
                EmbeddedError::corrupt(
                    &self.path,
                    format!("unreadable checkpoint at offset {offset}"),
                )
            })
    }

    fn append(&mut self, cp: &StoredCheckpoint) -> Result<()> {
        if self.index.contains_key(&cp.size) {
            return Ok(());
        }
        let mut line = serde_json::to_vec(&CheckpointLine::from_stored(cp))
            .map_err(|e| EmbeddedError::corrupt(&self.path, e.to_string()))?;
        line.push(b'\n');
        let file = open_rw(&self.path)?;
        let write = file
            .write_all_at(&line, self.len)
            .and_then(|()| fsync::sync_data(&file, &self.path));
        if let Err(e) = write {
            // Cut what may have reached the file, so the next line starts clean.
            let _ = file.set_len(self.len);
            return Err(EmbeddedError::io("writing checkpoint", &self.path)(e));
        }
        self.index.insert(cp.size, (self.len, line.len() as u32));
        self.len += line.len() as u64;
        Ok(())
    }
}

/// One tenant's tree: its hash file and checkpoints.
#[derive(Debug)]
pub(crate) struct Tree {
    path: PathBuf,
    /// Leaves whose stored hashes are in the file, for readers.
    size: AtomicU64,
    /// The right edge, advanced by the writer thread only.
    frontier: Mutex<Frontier>,
    checkpoints: Mutex<Checkpoints>,
}

impl Tree {
    pub(crate) fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// Appends the leaves of seqs `first_seq..`: their stored hashes are written at the end of
    /// the file, then made visible to readers. On failure nothing changes (the file is cut
    /// back). Leaves must continue the tree exactly: anything else would shift every later one.
    fn append(&self, first_seq: u64, leaves: &[Hash], buf: &mut Vec<u8>) -> Result<()> {
        let mut frontier = self.frontier.lock().unwrap_or_else(|e| e.into_inner());
        if frontier.size() + 1 != first_seq {
            return Err(EmbeddedError::corrupt(
                &self.path,
                format!(
                    "the tree has {} leaves; seq {first_seq} cannot be the next",
                    frontier.size()
                ),
            ));
        }
        let mut next = frontier.clone();
        buf.clear();
        for leaf in leaves {
            next.push(*leaf, |h| buf.extend_from_slice(h));
        }
        let at = stored_hash_count(frontier.size()) * HASH_LEN;
        let file = open_rw(&self.path)?;
        if let Err(e) = file.write_all_at(buf, at) {
            let _ = file.set_len(at);
            return Err(EmbeddedError::io("writing Merkle hashes", &self.path)(e));
        }
        *frontier = next;
        self.size.store(frontier.size(), Ordering::Release);
        Ok(())
    }

    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, String> {
        let count = stored_hash_count(self.size());
        if indexes.is_empty() {
            return Ok(Vec::new());
        }
        let file =
            File::open(&self.path).map_err(|e| format!("opening {}: {e}", self.path.display()))?;
        let mut out = Vec::with_capacity(indexes.len());
        for &i in indexes {
            if i >= count {
                return Err(format!(
                    "Merkle hash {i} is beyond the tree's {count} stored hashes"
                ));
            }
            let mut h = [0u8; 32];
            file.read_exact_at(&mut h, i * HASH_LEN)
                .map_err(|e| format!("reading {}: {e}", self.path.display()))?;
            out.push(h);
        }
        Ok(out)
    }

    fn sync(&self) -> Result<()> {
        File::open(&self.path)
            .and_then(|f| fsync::sync_data(&f, &self.path))
            .map_err(EmbeddedError::io("syncing", &self.path))
    }
}

/// Every tenant's tree.
#[derive(Debug)]
pub(crate) struct Trees {
    dir: PathBuf,
    tenants: RwLock<HashMap<String, Arc<Tree>>>,
}

/// What recovery must recompute for one tenant: leaves of seqs `from..=to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Missing {
    pub from: u64,
    pub to: u64,
}

impl Trees {
    /// Opens the trees of the tenants in `log_sizes` (tenant → last seq in the log). Returns the
    /// trees and, per tenant, the seqs whose leaves must be recomputed from the log and passed
    /// to [`Trees::append`] before the writer starts.
    pub(crate) fn open(
        data_dir: &Path,
        log_sizes: &HashMap<String, u64>,
    ) -> Result<(Self, HashMap<String, Missing>)> {
        let dir = merkle_dir(data_dir);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(EmbeddedError::io("creating directory", &dir))?;
        let clean = clean_path(&dir);
        let was_clean = clean.exists();
        let mut tenants = HashMap::new();
        let mut missing = HashMap::new();
        for (tenant, &log_size) in log_sizes {
            let (checkpoints, latest) = Checkpoints::open(&dir, tenant)?;
            let path = hashes_path(&dir, tenant);
            let hashes = open_rw(&path)?;
            let on_disk = hashes
                .metadata()
                .map_err(EmbeddedError::io("reading", &path))?
                .len();
            let in_file = leaves_in(on_disk / HASH_LEN);
            let mut trusted = in_file.min(log_size);
            if let Some(cp) = &latest {
                if cp.size > log_size {
                    tracing::error!(
                        tenant = %tenant,
                        log_events = log_size,
                        checkpoint_size = cp.size,
                        "the log is shorter than its newest signed checkpoint: events were removed; run `vigil verify`"
                    );
                }
                if !was_clean {
                    // Only what a checkpoint covered was certainly fsynced.
                    trusted = trusted.min(cp.size);
                }
            } else if !was_clean {
                trusted = 0;
            }
            let read = |size: u64| -> Result<Frontier> {
                let idx = frontier_indexes(size);
                let mut roots = Vec::with_capacity(idx.len());
                for i in idx {
                    let mut h = [0u8; 32];
                    hashes
                        .read_exact_at(&mut h, i * HASH_LEN)
                        .map_err(EmbeddedError::io("reading", &path))?;
                    roots.push(h);
                }
                Frontier::from_stored(size, roots)
                    .map_err(|e| EmbeddedError::corrupt(&path, e.to_string()))
            };
            let mut frontier = read(trusted)?;
            // The newest checkpoint's root must come out of the hashes kept (O(log n) reads).
            let agrees = match latest.as_ref().filter(|cp| cp.size <= trusted) {
                Some(cp) => read(cp.size)?.root() == cp.root,
                None => true,
            };
            if !agrees {
                tracing::warn!(
                    tenant = %tenant,
                    "stored Merkle hashes disagree with the newest checkpoint; recomputing them from the log"
                );
                trusted = 0;
                frontier = Frontier::new();
            }
            let keep = stored_hash_count(trusted) * HASH_LEN;
            if on_disk != keep {
                hashes
                    .set_len(keep)
                    .map_err(EmbeddedError::io("truncating", &path))?;
            }
            if trusted < log_size {
                missing.insert(
                    tenant.clone(),
                    Missing {
                        from: trusted + 1,
                        to: log_size,
                    },
                );
            }
            drop(hashes);
            tenants.insert(
                tenant.clone(),
                Arc::new(Tree {
                    path,
                    size: AtomicU64::new(trusted),
                    frontier: Mutex::new(frontier),
                    checkpoints: Mutex::new(checkpoints),
                }),
            );
        }
        if was_clean {
            fs::remove_file(&clean).map_err(EmbeddedError::io("removing", &clean))?;
        }
        // Files created above (and the directory itself) must survive a crash: checkpoints are
        // the one thing the log cannot rebuild.
        fsync::sync_dir(&dir)?;
        fsync::sync_dir(data_dir)?;
        Ok((
            Self {
                dir,
                tenants: RwLock::new(tenants),
            },
            missing,
        ))
    }

    pub(crate) fn get(&self, tenant: &str) -> Option<Arc<Tree>> {
        self.tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            .cloned()
    }

    fn get_or_create(&self, tenant: &str) -> Result<Arc<Tree>> {
        if let Some(t) = self.get(tenant) {
            return Ok(t);
        }
        let mut map = self.tenants.write().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = map.get(tenant) {
            return Ok(t.clone());
        }
        let path = hashes_path(&self.dir, tenant);
        // A tenant new to the log: whatever a hash file held belongs to no event.
        OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(EmbeddedError::io("creating", &path))?;
        let (checkpoints, _) = Checkpoints::open(&self.dir, tenant)?;
        fsync::sync_dir(&self.dir)?;
        let tree = Arc::new(Tree {
            path,
            size: AtomicU64::new(0),
            frontier: Mutex::new(Frontier::new()),
            checkpoints: Mutex::new(checkpoints),
        });
        map.insert(tenant.to_owned(), tree.clone());
        Ok(tree)
    }

    /// Appends the leaves of seqs `first_seq..` to `tenant`'s tree (writer thread and
    /// recovery only).
    pub(crate) fn append(
        &self,
        tenant: &str,
        first_seq: u64,
        leaves: &[Hash],
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        self.get_or_create(tenant)?.append(first_seq, leaves, buf)
    }

    /// Every tenant's tree size.
    pub(crate) fn sizes(&self) -> Vec<(String, u64)> {
        let map = self.tenants.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(String, u64)> = map
            .iter()
            .map(|(t, tree)| (t.clone(), tree.size()))
            .filter(|(_, size)| *size > 0)
            .collect();
        out.sort();
        out
    }

    pub(crate) fn read_hashes(&self, tenant: &str, indexes: &[u64]) -> Result<Vec<Hash>, String> {
        match self.get(tenant) {
            Some(tree) => tree.read_hashes(indexes),
            None if indexes.is_empty() => Ok(Vec::new()),
            None => Err(format!("tenant {tenant} has no Merkle tree")),
        }
    }

    /// Makes the hashes a checkpoint covers durable, then appends the checkpoint (fsynced).
    pub(crate) fn save_checkpoint(&self, tenant: &str, cp: &StoredCheckpoint) -> Result<()> {
        let tree = self.get(tenant).ok_or_else(|| {
            EmbeddedError::corrupt(&self.dir, format!("tenant {tenant} has no Merkle tree"))
        })?;
        if cp.size > tree.size() {
            return Err(EmbeddedError::corrupt(
                &tree.path,
                format!(
                    "checkpoint of size {} is beyond the tree's {} leaves",
                    cp.size,
                    tree.size()
                ),
            ));
        }
        tree.sync()?;
        tree.checkpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .append(cp)
    }

    pub(crate) fn checkpoint(
        &self,
        tenant: &str,
        size: Option<u64>,
    ) -> Result<Option<StoredCheckpoint>> {
        let Some(tree) = self.get(tenant) else {
            return Ok(None);
        };
        let cps = tree.checkpoints.lock().unwrap_or_else(|e| e.into_inner());
        let size = match size {
            Some(s) => s,
            None => match cps.index.keys().next_back() {
                Some(&s) => s,
                None => return Ok(None),
            },
        };
        cps.read(size)
    }

    pub(crate) fn checkpoints(&self, tenant: &str) -> Result<Vec<StoredCheckpoint>> {
        let Some(tree) = self.get(tenant) else {
            return Ok(Vec::new());
        };
        let cps = tree.checkpoints.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(cps.index.len());
        for &size in cps.index.keys() {
            if let Some(cp) = cps.read(size)? {
                out.push(cp);
            }
        }
        Ok(out)
    }

    /// At a clean shutdown, after the last append: makes every hash file durable and marks
    /// them complete, so the next open trusts them whole.
    pub(crate) fn close_clean(&self) -> Result<()> {
        let map = self.tenants.read().unwrap_or_else(|e| e.into_inner());
        for tree in map.values() {
            tree.sync()?;
        }
        let clean = clean_path(&self.dir);
        let mut f = File::create(&clean).map_err(EmbeddedError::io("creating", &clean))?;
        f.write_all(b"hash files complete\n")
            .and_then(|()| fsync::sync_all(&f, &clean))
            .map_err(EmbeddedError::io("writing", &clean))?;
        fsync::sync_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_in_inverts_stored_hash_count() {
        for n in 0..5000u64 {
            let c = stored_hash_count(n);
            assert_eq!(leaves_in(c), n);
            if n > 0 {
                // One hash short of a complete leaf is still the tree before it.
                assert_eq!(leaves_in(c - 1), n - 1);
            }
        }
    }
}
