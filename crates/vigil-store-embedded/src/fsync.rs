//! fsync: every place the store makes data durable goes through here.
//!
//! The group commit's durability point is [`sync_data`] of the write-ahead file
//! (`crate::log::wal`). Writing a whole file (a sealed segment, an index, a meta document) goes
//! through a temporary file that is fsynced and renamed, then the directory is fsynced: the file
//! is complete or absent after a crash, never half written. The Merkle files (`crate::trees`)
//! call [`sync_data`] and [`sync_all`] too.
//!
//! With the `fault-injection` feature (tests only: the crate enables it for its own tests),
//! [`FsyncFault`] makes the n-th of these calls fail, so tests can check that a failed fsync
//! is never answered as a success and loses nothing that was.

use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{EmbeddedError, Result};

/// fdatasync of `file`, which is `path`: its data is on disk when this returns Ok.
pub(crate) fn sync_data(file: &File, path: &Path) -> io::Result<()> {
    fault::check(path)?;
    file.sync_data()
}

/// fsync of `file`, which is `path`: its data and metadata (such as its length) are on disk
/// when this returns Ok.
pub(crate) fn sync_all(file: &File, path: &Path) -> io::Result<()> {
    fault::check(path)?;
    file.sync_all()
}

fn tmp_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Writes `p` through a temporary file: complete and fsynced, or absent.
pub(crate) fn write_atomic(
    p: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = tmp_path(p);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(EmbeddedError::io("creating", &tmp))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    write(&mut w).map_err(EmbeddedError::io("writing", &tmp))?;
    let file = w
        .into_inner()
        .map_err(|e| EmbeddedError::io("writing", &tmp)(e.into_error()))?;
    sync_all(&file, &tmp).map_err(EmbeddedError::io("syncing", &tmp))?;
    fs::rename(&tmp, p).map_err(EmbeddedError::io("renaming", p))?;
    if let Some(parent) = p.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Makes the entries of `dir` (files created, renamed or removed in it) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| sync_all(&d, dir))
        .map_err(EmbeddedError::io("syncing directory", dir))
}

/// Renames `from` to `to` and makes the rename durable.
pub(crate) fn rename_into_place(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(EmbeddedError::io("renaming", to))?;
    match to.parent() {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

#[cfg(feature = "fault-injection")]
pub use fault::{FsyncFault, Synced};

/// The test seam: a registry of armed faults, consulted by every sync above.
#[cfg(feature = "fault-injection")]
mod fault {
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    /// Which fsyncs an [`FsyncFault`] counts.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Synced {
        /// Those of write-ahead files (`log/*.wal`): with one append at a time, the n-th is the
        /// fsync of the n-th commit group.
        Log,
        /// Every fsync under the data directory: write-ahead files, sealed and merged segments,
        /// indexes, Merkle files, meta documents, directories.
        Any,
    }

    #[derive(Debug)]
    struct Armed {
        data_dir: PathBuf,
        which: Synced,
        nth: u64,
        seen: AtomicU64,
    }

    /// Every armed fault of the process. Tests of one binary share the process, so a fault
    /// names its data directory and touches no other store.
    static ARMED: Mutex<Vec<Arc<Armed>>> = Mutex::new(Vec::new());

    /// For tests: makes the `nth` (from 1) fsync of the kind `which` under `data_dir` fail with
    /// an I/O error, once, as a disk would report it. The data is left as written and not
    /// synced, as after a real failed fsync. Disarmed when dropped.
    #[derive(Debug)]
    pub struct FsyncFault(Arc<Armed>);

    impl FsyncFault {
        pub fn fail_nth(data_dir: &Path, which: Synced, nth: u64) -> Self {
            let armed = Arc::new(Armed {
                data_dir: data_dir.to_owned(),
                which,
                nth,
                seen: AtomicU64::new(0),
            });
            ARMED
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(armed.clone());
            Self(armed)
        }

        /// Whether the failing fsync has happened.
        pub fn fired(&self) -> bool {
            self.0.seen.load(Ordering::SeqCst) >= self.0.nth
        }
    }

    impl Drop for FsyncFault {
        fn drop(&mut self) {
            ARMED
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|a| !Arc::ptr_eq(a, &self.0));
        }
    }

    pub(super) fn check(path: &Path) -> io::Result<()> {
        let armed = ARMED.lock().unwrap_or_else(|e| e.into_inner());
        for a in armed.iter().filter(|a| path.starts_with(&a.data_dir)) {
            let counts = match a.which {
                Synced::Log => path.extension().is_some_and(|e| e == "wal"),
                Synced::Any => true,
            };
            if counts && a.seen.fetch_add(1, Ordering::SeqCst) + 1 == a.nth {
                return Err(io::Error::other("injected fsync failure"));
            }
        }
        Ok(())
    }
}

#[cfg(not(feature = "fault-injection"))]
mod fault {
    #[inline]
    pub(super) fn check(_: &std::path::Path) -> std::io::Result<()> {
        Ok(())
    }
}
