//! The active segment's write-ahead file: records appended, then fsynced by the group commit.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{EmbeddedError, Result};
use crate::record::{self, DecodeError, Record};

/// Appends records to one `.wal` file. Owned by the writer thread.
#[derive(Debug)]
pub(crate) struct WalWriter {
    file: File,
    path: PathBuf,
    /// Bytes known to be in the file (and, after `sync`, durable).
    len: u64,
}

impl WalWriter {
    /// Opens `path` for appending at `len` (creating it when absent).
    pub(crate) fn open(path: &Path, len: u64) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(EmbeddedError::io("opening log", path))?;
        Ok(Self {
            file,
            path: path.to_owned(),
            len,
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

    /// fdatasync: everything appended so far is on disk when this returns Ok.
    pub(crate) fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(EmbeddedError::io("syncing log", &self.path))
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
    /// Length of the valid prefix: every record before it decoded and checked.
    pub valid_len: u64,
    /// Bytes after `valid_len` (a torn or corrupt tail).
    pub dropped: u64,
}

/// Calls `f(offset, len, record)` for every valid record from the start of `path`. Stops at the
/// first truncated or corrupt record: what follows is the tail of a write that was never
/// acknowledged (acknowledgement waits for the fsync that covers the whole group).
pub(crate) fn replay(
    path: &Path,
    mut f: impl FnMut(u64, u32, Record<'_>) -> Result<()>,
) -> Result<Replay> {
    let bytes = std::fs::read(path).map_err(EmbeddedError::io("reading log", path))?;
    let mut pos = 0usize;
    while let Some(rest) = bytes.get(pos..).filter(|r| !r.is_empty()) {
        match record::decode(rest) {
            Ok((rec, n)) => {
                f(pos as u64, n as u32, rec)?;
                pos += n;
            }
            Err(DecodeError::Truncated | DecodeError::Corrupt(_)) => break,
        }
    }
    Ok(Replay {
        valid_len: pos as u64,
        dropped: (bytes.len() - pos) as u64,
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
    file.sync_all()
        .map_err(EmbeddedError::io("syncing log", path))
}
