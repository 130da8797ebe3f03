//! The active segment's write-ahead file: records appended, then fsynced by the group commit.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{EmbeddedError, Result};
use crate::fsync;
use crate::log::record::{self, DecodeError, Entry, Record};

pub(crate) fn wal_path(dir: &Path, id: u64) -> PathBuf {
    dir.join("log").join(format!("{id:020}.wal"))
}

/// Appends records to one `.wal` file. Owned by the writer thread.
#[derive(Debug)]
pub(crate) struct WalWriter {
    file: File,
    path: PathBuf,
    /// Bytes known to be in the file (and, after `sync`, durable).
    len: u64,
    /// Bytes made durable by the last successful `sync`.
    synced: u64,
}

impl WalWriter {
    /// Opens `path` for appending at `len` (creating it when absent).
    pub(crate) fn open(path: &Path, len: u64) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(EmbeddedError::io("opening log", path))?;
        Ok(Self {
            file,
            path: path.to_owned(),
            len,
            synced: len,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `buf` at the end of the file and returns the offset it starts at. Not durable
    /// until [`WalWriter::sync`].
    pub(crate) fn append(&mut self, buf: &[u8]) -> Result<u64> {
        let at = self.len;
        self.file
            .write_all(buf)
            .map_err(EmbeddedError::io("writing log", &self.path))?;
        self.len += buf.len() as u64;
        Ok(at)
    }

    /// After a failed append or sync: cuts the file back to the last synced length.
    pub(crate) fn rollback(&mut self) {
        if let Err(e) = self
            .file
            .set_len(self.synced)
            .and_then(|()| fsync::sync_all(&self.file, &self.path))
        {
            tracing::warn!(error = %e, path = %self.path.display(), "could not cut back an unacknowledged write");
        }
        self.len = self.synced;
    }

    /// fdatasync: everything appended so far is on disk when this returns Ok.
    pub(crate) fn sync(&mut self) -> Result<()> {
        fsync::sync_data(&self.file, &self.path)
            .map_err(EmbeddedError::io("syncing log", &self.path))?;
        self.synced = self.len;
        Ok(())
    }
}

/// Reads records back from a log file by offset (used while the segment is not yet sealed).
#[derive(Debug)]
pub(crate) struct WalReader {
    file: File,
    path: PathBuf,
}

impl WalReader {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(EmbeddedError::io("opening log", path))?;
        Ok(Self {
            file,
            path: path.to_owned(),
        })
    }

    /// Reads the `len`-byte record at `offset` into `buf` (cleared first).
    pub(crate) fn read_at(&self, offset: u64, len: u32, buf: &mut Vec<u8>) -> Result<()> {
        buf.clear();
        buf.resize(len as usize, 0);
        self.file
            .read_exact_at(buf, offset)
            .map_err(EmbeddedError::io("reading log", &self.path))
    }
}

/// What replaying a log file found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Replay {
    /// Length of the committed prefix: every group in it ends with its commit marker.
    pub valid_len: u64,
    /// Bytes after `valid_len`: a group whose write never completed (never acknowledged).
    pub dropped: u64,
}

/// Calls `f(offset, len, record)` for every record of every committed group of `path`, in
/// order. Replay ends at the first truncated or damaged entry, or at the end of the file; what
/// follows the last commit marker is an unacknowledged group and is left to the caller to cut.
/// A damaged entry followed by a later commit marker means acknowledged events were damaged:
/// that is corruption, never silently cut.
pub(crate) fn replay(
    path: &Path,
    mut f: impl FnMut(u64, u32, Record<'_>) -> Result<()>,
) -> Result<Replay> {
    let file = File::open(path).map_err(EmbeddedError::io("opening log", path))?;
    let file_len = file
        .metadata()
        .map_err(EmbeddedError::io("reading log", path))?
        .len();
    if file_len == 0 {
        return Ok(Replay {
            valid_len: 0,
            dropped: 0,
        });
    }
    // SAFETY: a write-ahead file is only written by the process holding the data directory's
    // lock, which replays before its writer starts (or, for `vigil verify`, holds the lock
    // and never writes): nothing changes the file while it is mapped.
    #[allow(unsafe_code)]
    let map =
        unsafe { memmap2::Mmap::map(&file) }.map_err(EmbeddedError::io("mapping log", path))?;
    let bytes: &[u8] = &map;
    let mut pos = 0usize;
    let mut committed = 0usize;
    // The decoded records of the group being read, applied when its commit marker is.
    let mut group: Vec<(usize, usize, Record<'_>)> = Vec::new();
    while let Some(rest) = bytes.get(pos..).filter(|r| !r.is_empty()) {
        match record::decode_entry(rest) {
            Ok((Entry::Event(rec), n)) => {
                group.push((pos, n, rec));
                pos += n;
            }
            Ok((Entry::Commit { records }, n)) => {
                if records as usize != group.len() {
                    return Err(EmbeddedError::corrupt(
                        path,
                        format!(
                            "commit marker at offset {pos} closes {records} records, found {}",
                            group.len()
                        ),
                    ));
                }
                for (at, len, rec) in group.drain(..) {
                    f(at as u64, len as u32, rec)?;
                }
                pos += n;
                committed = pos;
            }
            Err(DecodeError::Truncated | DecodeError::Corrupt(_)) => {
                if let Some(later) = later_commit(bytes, pos + 1) {
                    return Err(EmbeddedError::corrupt(
                        path,
                        format!(
                            "damaged record at offset {pos} precedes acknowledged events (commit at offset {later})"
                        ),
                    ));
                }
                break;
            }
        }
    }
    Ok(Replay {
        valid_len: committed as u64,
        dropped: (bytes.len() - committed) as u64,
    })
}

/// The offset of a valid commit marker at or after `from` that is followed by more valid
/// entries, if any (a slow scan, run only when replay met damage). The writer starts a group only
/// after the previous one's fsync, so a group followed by another was acknowledged; only the very
/// last group of the file can be an unacknowledged, partly written one.
fn later_commit(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len()).find(|&at| match bytes.get(at..).map(record::decode_entry) {
        Some(Ok((Entry::Commit { .. }, n))) => {
            matches!(bytes.get(at + n..).map(record::decode_entry), Some(Ok(_)))
        }
        _ => false,
    })
}

/// Cuts a log file back to `len` bytes and makes that durable.
pub(crate) fn truncate(path: &Path, len: u64) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(EmbeddedError::io("opening log", path))?;
    file.set_len(len)
        .map_err(EmbeddedError::io("truncating log", path))?;
    fsync::sync_all(&file, path).map_err(EmbeddedError::io("syncing log", path))
}
