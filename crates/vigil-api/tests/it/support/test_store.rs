//! A store for tests that steer its timing: the real embedded store, with appends and queries
//! made slow and the save of the `schemas` document held on request.

use std::sync::Arc;
use std::time::Duration;

use vigil_store::Store;

/// The real embedded store, with delays and a gate the tests control: appends and queries
/// can be made slow (the clock is paused in those tests, so slow costs nothing), and saving the
/// `schemas` document can be held after it was written, until the test opens the gate.
#[derive(Debug)]
pub struct TestStore {
    inner: Arc<dyn Store>,
    append_delay: Duration,
    query_delay: Duration,
    /// While `false`, a save of the `schemas` document (plain or conditional) writes it,
    /// signals `schemas_saved`, then waits for this to turn `true` before returning.
    pub schema_saves_open: tokio::sync::watch::Sender<bool>,
    /// Signalled when a held save has written the document, so a test knows it is held.
    pub schemas_saved: tokio::sync::Notify,
}

impl TestStore {
    /// `inner` with the given delays, its `schemas` saves not held.
    pub fn new(inner: Arc<dyn Store>, append_delay: Duration, query_delay: Duration) -> Self {
        let (schema_saves_open, _) = tokio::sync::watch::channel(true);
        Self {
            inner,
            append_delay,
            query_delay,
            schema_saves_open,
            schemas_saved: tokio::sync::Notify::new(),
        }
    }

    /// Holds a save of the `schemas` document that was just written while the gate is shut.
    async fn held_after_save(&self, name: &str) {
        if name == "schemas" && !*self.schema_saves_open.borrow() {
            self.schemas_saved.notify_one();
            let mut open = self.schema_saves_open.subscribe();
            let _ = open.wait_for(|open| *open).await;
        }
    }
}

#[async_trait::async_trait]
impl Store for TestStore {
    async fn append(
        &self,
        events: Vec<vigil_event::Prepared>,
    ) -> Result<Vec<vigil_store::Appended>, vigil_store::StoreError> {
        tokio::time::sleep(self.append_delay).await;
        self.inner.append(events).await
    }

    async fn get(
        &self,
        tenant: &vigil_event::TenantId,
        id: &vigil_event::EventId,
    ) -> Result<Option<vigil_store::StoredEvent>, vigil_store::StoreError> {
        self.inner.get(tenant, id).await
    }

    async fn query(
        &self,
        tenant: &vigil_event::TenantId,
        query: &vigil_query::Query,
    ) -> Result<vigil_store::Page, vigil_store::StoreError> {
        tokio::time::sleep(self.query_delay).await;
        self.inner.query(tenant, query).await
    }

    async fn count(
        &self,
        tenant: &vigil_event::TenantId,
        filter: &vigil_query::Expr,
        from: Option<vigil_event::Timestamp>,
        to: Option<vigil_event::Timestamp>,
    ) -> Result<u64, vigil_store::StoreError> {
        self.inner.count(tenant, filter, from, to).await
    }

    async fn ready(&self) -> Result<(), vigil_store::StoreError> {
        self.inner.ready().await
    }

    async fn tree_size(
        &self,
        tenant: &vigil_event::TenantId,
    ) -> Result<u64, vigil_store::StoreError> {
        self.inner.tree_size(tenant).await
    }

    async fn tree_sizes(
        &self,
    ) -> Result<Vec<(vigil_event::TenantId, u64)>, vigil_store::StoreError> {
        self.inner.tree_sizes().await
    }

    async fn read_hashes(
        &self,
        tenant: &vigil_event::TenantId,
        indexes: &[u64],
    ) -> Result<Vec<vigil_event::Hash>, vigil_store::StoreError> {
        self.inner.read_hashes(tenant, indexes).await
    }

    async fn save_checkpoint(
        &self,
        tenant: &vigil_event::TenantId,
        checkpoint: &vigil_store::StoredCheckpoint,
    ) -> Result<(), vigil_store::StoreError> {
        self.inner.save_checkpoint(tenant, checkpoint).await
    }

    async fn checkpoint(
        &self,
        tenant: &vigil_event::TenantId,
        size: Option<u64>,
    ) -> Result<Option<vigil_store::StoredCheckpoint>, vigil_store::StoreError> {
        self.inner.checkpoint(tenant, size).await
    }

    async fn checkpoints(
        &self,
        tenant: &vigil_event::TenantId,
    ) -> Result<Vec<vigil_store::StoredCheckpoint>, vigil_store::StoreError> {
        self.inner.checkpoints(tenant).await
    }

    async fn load_meta(&self, name: &str) -> Result<Option<Vec<u8>>, vigil_store::StoreError> {
        self.inner.load_meta(name).await
    }

    async fn save_meta(&self, name: &str, bytes: &[u8]) -> Result<(), vigil_store::StoreError> {
        self.inner.save_meta(name, bytes).await?;
        self.held_after_save(name).await;
        Ok(())
    }

    async fn load_meta_versioned(
        &self,
        name: &str,
    ) -> Result<Option<(vigil_store::MetaVersion, Vec<u8>)>, vigil_store::StoreError> {
        self.inner.load_meta_versioned(name).await
    }

    async fn save_meta_if(
        &self,
        name: &str,
        expected: Option<vigil_store::MetaVersion>,
        bytes: &[u8],
    ) -> Result<Option<vigil_store::MetaVersion>, vigil_store::StoreError> {
        let saved = self.inner.save_meta_if(name, expected, bytes).await?;
        if saved.is_some() {
            self.held_after_save(name).await;
        }
        Ok(saved)
    }

    async fn shutdown(&self) -> Result<(), vigil_store::StoreError> {
        self.inner.shutdown().await
    }
}
