//! Private key files: how every secret key of vigil (the checkpoint signing key, the JWT key)
//! is read and created, so they are all protected alike.
//!
//! A key file is read only when group and others have no access to the file actually opened
//! (not whatever the path names a moment later), and created with `create_new` and mode 0600,
//! written, and made durable together with its directory: it is never overwritten, and of
//! several processes creating it at once, all end up with the one that won.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

/// Why a key file could not be read or written. The key's own error type names the file for
/// people ("signing key file …", "jwt key file …").
#[derive(Debug)]
pub enum KeyFileError {
    Io {
        /// What was being done: "opening", "reading", "creating" …
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// Group or others may access the file: anyone who can read it holds the key.
    Permissions { path: PathBuf, mode: u32 },
}

/// Whether [`create_private`] wrote the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Written,
    /// Another process created it first: read that one.
    AlreadyExists,
}

/// The text of the private key file at `path`, refused when group or others may access it.
pub fn read_private(path: &Path) -> Result<String, KeyFileError> {
    let io = |action, source| KeyFileError::Io {
        action,
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(|e| io("opening", e))?;
    // The mode of the file actually opened, not of whatever the path names later.
    let meta = file.metadata().map_err(|e| io("inspecting", e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| io("reading", e))?;
    Ok(text)
}

/// Creates the private key file at `path` holding `contents` (mode 0600, never overwriting),
/// durable with its directory, which must exist.
pub fn create_private(path: &Path, contents: &[u8]) -> Result<Created, KeyFileError> {
    let io = |action, source| KeyFileError::Io {
        action,
        path: path.to_owned(),
        source,
    };
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = match options.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Ok(Created::AlreadyExists);
        }
        Err(e) => return Err(io("creating", e)),
    };
    file.write_all(contents).map_err(|e| io("writing", e))?;
    file.sync_all().map_err(|e| io("syncing", e))?;
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("syncing the directory of", e))?;
    }
    Ok(Created::Written)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn created_private_never_overwritten_and_refused_once_readable_by_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        assert_eq!(create_private(&path, b"one").unwrap(), Created::Written);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            create_private(&path, b"two").unwrap(),
            Created::AlreadyExists
        );
        assert_eq!(read_private(&path).unwrap(), "one");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        match read_private(&path) {
            Err(KeyFileError::Permissions { mode, .. }) => assert_eq!(mode, 0o640),
            other => panic!("{other:?}"),
        }
        match read_private(&dir.path().join("missing")) {
            Err(KeyFileError::Io { source, .. }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
    }
}
