//! The [`Store`] contract served by the embedded store: appends go to the writer thread's
//! queue, reads run on the blocking pool over a snapshot of the segment set, meta documents are
//! small files replaced atomically, and Merkle hashes and checkpoints are read from the trees.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use tokio::sync::oneshot;
use vigil_event::{EventId, Hash, Prepared, TenantId, Timestamp};
use vigil_query::{Expr, Query};
use vigil_store::{
    Appended, MetaVersion, Page, Store, StoreError, StoredCheckpoint, StoredEvent, content_version,
};

use crate::error::{EmbeddedError, Result};
use crate::state::SegRef;
use crate::writer::Command;
use crate::{EmbeddedStore, fsync, query, seal};

impl EmbeddedStore {
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
            .map_err(|e| StoreError::internal_with("query task failed", e))?
            .map_err(StoreError::from)
    }

    fn meta_path(&self, name: &str) -> Result<PathBuf, StoreError> {
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(StoreError::internal(format!(
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
        self.read(move |views| {
            Ok(crate::index::lookup::find_id(views, &tenant, &id)?.map(query::to_stored))
        })
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
            .map_err(StoreError::internal_from)?
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
        .map_err(StoreError::internal_from)?
        .map_err(StoreError::from)
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
        .map_err(StoreError::internal_from)?
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
                    .map_err(|e| StoreError::internal_with(format!("tenant {t:?} in the store"), e))
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
            .map_err(StoreError::internal_from)?
            .map_err(StoreError::internal)
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
            .map_err(StoreError::internal_from)?
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
            .map_err(StoreError::internal_from)?
            .map_err(StoreError::from)
    }

    async fn checkpoints(&self, tenant: &TenantId) -> Result<Vec<StoredCheckpoint>, StoreError> {
        let shared = self.shared.clone();
        let tenant = tenant.as_str().to_owned();
        tokio::task::spawn_blocking(move || shared.trees.checkpoints(&tenant))
            .await
            .map_err(StoreError::internal_from)?
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
        Err(e) => Err(StoreError::internal_with(
            format!("reading {}", path.display()),
            e,
        )),
    }
}

/// Writes a file readable only by its owner, atomically (temp file, fsync, rename, fsync dir).
fn write_private_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    fsync::write_atomic(path, |w| w.write_all(bytes))
}
