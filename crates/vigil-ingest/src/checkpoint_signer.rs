//! Checkpoint signing: the server's Ed25519 key signs each tenant's Merkle tree head.
//!
//! The last step of the write flow: once events are appended, a [`CheckpointSigner`] makes a
//! checkpoint when one is asked for (a proof of an event newer than the newest checkpoint,
//! `GET /v1/checkpoint`) and, through [`CheckpointSigner::run`], periodically for every tenant
//! whose log grew: on an api node in embedded mode and on every writer. Every checkpoint is
//! kept by the store, so any old one can later be proven consistent with the newest. Several
//! nodes sharing a store may each sign: the store keeps the first checkpoint of each size.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use vigil_event::{TenantId, Timestamp};
use vigil_integrity::checkpoint::{CheckpointJson, SigningKey, VerifierKey, origin};
use vigil_integrity::{TreeError, tree};
use vigil_store::{Store, StoreError, StoredCheckpoint};

/// Signs and keeps checkpoints of the tenants' logs.
pub struct CheckpointSigner {
    key: SigningKey,
    store: Arc<dyn Store>,
    /// One signing at a time per process; also guards `signed`.
    signed: tokio::sync::Mutex<HashMap<TenantId, u64>>,
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("key", &self.key.verifier().to_vkey())
            .finish_non_exhaustive()
    }
}

/// A stored checkpoint as `GET /v1/checkpoint` returns it.
pub fn checkpoint_json(tenant: &TenantId, cp: &StoredCheckpoint) -> CheckpointJson {
    CheckpointJson {
        origin: origin(tenant.as_str()),
        size: cp.size,
        root_hash: cp.root,
        timestamp: DateTime::from_timestamp_nanos(cp.timestamp.as_nanos()),
        note: cp.note.clone(),
    }
}

/// Checkpoints signed by this process (counter).
const CHECKPOINTS_SIGNED: &str = "vigil_checkpoints_signed_total";

/// Gives the signer's metric its description in the installed recorder.
pub fn describe_metrics() {
    metrics::describe_counter!(
        CHECKPOINTS_SIGNED,
        "Checkpoints (signed tree heads) this process signed"
    );
}

/// Maps a failure to read a tree from the store to the store's error.
pub fn tree_error(e: TreeError<StoreError>) -> StoreError {
    match e {
        TreeError::Read(e) => e,
        other => StoreError::internal(other.to_string()),
    }
}

impl CheckpointSigner {
    pub fn new(key: SigningKey, store: Arc<dyn Store>) -> Self {
        Self {
            key,
            store,
            signed: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The public key checkpoints verify with.
    pub fn verifier(&self) -> VerifierKey {
        self.key.verifier()
    }

    /// A checkpoint covering every event of `tenant` stored before the call: the newest kept one
    /// if the log has not grown since, else a new one (signings are serialised per process).
    /// `None` when the tenant has no events.
    pub async fn checkpoint_now(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<StoredCheckpoint>, StoreError> {
        let mut signed = self.signed.lock().await;
        self.checkpoint_locked(tenant, &mut signed).await
    }

    /// A checkpoint covering the event at `seq`: the newest kept one when it does, else a new
    /// one. `None` when the tree does not hold `seq` yet.
    pub async fn checkpoint_covering(
        &self,
        tenant: &TenantId,
        seq: u64,
    ) -> Result<Option<StoredCheckpoint>, StoreError> {
        if let Some(latest) = self.store.checkpoint(tenant, None).await?
            && latest.size >= seq
        {
            return Ok(Some(latest));
        }
        let mut signed = self.signed.lock().await;
        Ok(self
            .checkpoint_locked(tenant, &mut signed)
            .await?
            .filter(|cp| cp.size >= seq))
    }

    async fn checkpoint_locked(
        &self,
        tenant: &TenantId,
        signed: &mut HashMap<TenantId, u64>,
    ) -> Result<Option<StoredCheckpoint>, StoreError> {
        let size = self.store.tree_size(tenant).await?;
        let latest = self.store.checkpoint(tenant, None).await?;
        if let Some(latest) = &latest
            && latest.size > size
        {
            // Never sign a tree that contradicts one already signed: that would be a fork.
            return Err(StoreError::internal(format!(
                "tenant {tenant}: the log holds {size} events but a checkpoint signed at {} covers {}: events were removed; run `vigil verify`",
                latest.timestamp.to_rfc3339(),
                latest.size
            )));
        }
        if size == 0 {
            return Ok(None);
        }
        if let Some(latest) = latest
            && latest.size == size
        {
            signed.insert(tenant.clone(), latest.size);
            return Ok(Some(latest));
        }
        let store = &self.store;
        let root = tree::tree_root(size, async |idx: Vec<u64>| {
            store.read_hashes(tenant, &idx).await
        })
        .await
        .map_err(tree_error)?;
        // Checkpoints carry whole seconds: what is stored is exactly what is signed.
        let seconds = Utc::now().timestamp();
        let now = DateTime::from_timestamp(seconds, 0).unwrap_or_default();
        let note = self
            .key
            .sign_checkpoint(&origin(tenant.as_str()), size, &root, now);
        let cp = StoredCheckpoint {
            size,
            root,
            timestamp: Timestamp::from_nanos(seconds.saturating_mul(1_000_000_000)),
            note,
        };
        self.store.save_checkpoint(tenant, &cp).await?;
        metrics::counter!(CHECKPOINTS_SIGNED).increment(1);
        signed.insert(tenant.clone(), size);
        // Another node sharing the store may have saved this size first; its checkpoint is the
        // one kept, and the one to hand out.
        Ok(Some(
            self.store
                .checkpoint(tenant, Some(size))
                .await?
                .unwrap_or(cp),
        ))
    }

    /// Signs a checkpoint for every tenant whose log grew since its newest checkpoint. Returns
    /// how many were signed.
    pub async fn checkpoint_changed(&self) -> Result<usize, StoreError> {
        let sizes = self.store.tree_sizes().await?;
        let mut signed = self.signed.lock().await;
        let mut count = 0;
        for (tenant, size) in sizes {
            if signed.get(&tenant).is_some_and(|&s| s >= size) {
                continue;
            }
            if let Some(cp) = self.checkpoint_locked(&tenant, &mut signed).await?
                && cp.size == size
            {
                count += 1;
            }
        }
        Ok(count)
    }

    /// Checkpoints changed logs every `interval` until `shutdown` resolves, then once more, so
    /// a clean stop leaves every acknowledged event under a signed checkpoint.
    pub async fn run(
        self: Arc<Self>,
        interval: Duration,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = &mut shutdown => break,
            }
            if let Err(e) = self.checkpoint_changed().await {
                tracing::warn!(error = %e, "periodic checkpoint failed; retrying at the next interval");
            }
        }
        if let Err(e) = self.checkpoint_changed().await {
            tracing::warn!(error = %e, "final checkpoint at shutdown failed");
        }
    }
}
