//! Errors of the embedded store, split by operation so a message says what failed where.

use std::io;
use std::path::PathBuf;

/// Why the embedded store could not open, write or read.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("data directory {} is in use by another process", .0.display())]
    Locked(PathBuf),
    #[error("{op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("corrupt {}: {detail}", .path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("writer stopped after a failed write or fsync; restart to recover from the log")]
    Poisoned,
    #[error("store is shutting down")]
    ShuttingDown,
    #[error("event of {bytes} bytes exceeds the store's record limit of {max} bytes")]
    TooLarge { bytes: usize, max: usize },
}

impl EmbeddedError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { op, path, source }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        Self::Corrupt {
            path: path.into(),
            detail: detail.into(),
        }
    }
}

impl From<EmbeddedError> for vigil_store::StoreError {
    fn from(e: EmbeddedError) -> Self {
        match e {
            EmbeddedError::Poisoned | EmbeddedError::ShuttingDown | EmbeddedError::Locked(_) => {
                Self::Unavailable(e.to_string())
            }
            EmbeddedError::Io { .. }
            | EmbeddedError::Corrupt { .. }
            | EmbeddedError::TooLarge { .. } => Self::internal_from(e),
        }
    }
}

pub(crate) type Result<T, E = EmbeddedError> = std::result::Result<T, E>;
