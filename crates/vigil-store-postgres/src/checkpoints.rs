//! What proofs and audits read of each tenant's Merkle tree: its size (from the frontier in
//! `vigil_tenants`), the stored hashes a proof is built from (`vigil_tree_hashes`), and the
//! signed checkpoints (`vigil_checkpoints`, the first per size kept).
//!
//! The tree itself is grown by the writer ([`crate::merkle`]); this file only reads it, and
//! saves the checkpoints signed over it.

use std::collections::HashMap;

use vigil_event::{Hash, TenantId};
use vigil_store::{StoreError, StoredCheckpoint};

use crate::PgStore;
use crate::error::{PgError, Result};
use crate::merkle::TreeEdge;
use crate::row::{checkpoint_of, to_hash, to_seq};

impl PgStore {
    pub(crate) async fn tree_size_inner(&self, tenant: &TenantId) -> Result<u64> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT frontier FROM vigil_tenants WHERE tenant = $1",
                &[&tenant.as_str()],
            )
            .await?;
        // The frontier's size, not the head's seq: the two differ only while the tree of a
        // log an older vigil wrote to is being built, and the size then says what is readable.
        row.map_or(Ok(0), |r| {
            Ok(TreeEdge::decode(tenant.as_str(), r.get(0))?.size())
        })
    }

    pub(crate) async fn tree_sizes_inner(&self) -> Result<Vec<(TenantId, u64)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT tenant, frontier FROM vigil_tenants WHERE seq > 0 ORDER BY tenant",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let name: &str = r.get(0);
                let tenant = TenantId::parse(name).map_err(|e| {
                    PgError::Corrupt(format!("stored tenant name {name:?} is invalid: {e}"))
                })?;
                Ok((tenant, TreeEdge::decode(name, r.get(1))?.size()))
            })
            .collect()
    }

    pub(crate) async fn read_hashes_inner(
        &self,
        tenant: &TenantId,
        indexes: &[u64],
    ) -> Result<Vec<Hash>, StoreError> {
        if indexes.is_empty() {
            return Ok(Vec::new());
        }
        // An index past i64 can never be stored: left out here, reported missing below.
        let wanted: Vec<i64> = indexes
            .iter()
            .filter_map(|&i| i64::try_from(i).ok())
            .collect();
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT idx, hash FROM vigil_tree_hashes WHERE tenant = $1 AND idx = ANY($2)",
                &[&tenant.as_str(), &wanted],
            )
            .await
            .map_err(PgError::from)?;
        let mut found: HashMap<u64, Hash> = HashMap::with_capacity(rows.len());
        for r in &rows {
            found.insert(to_seq(r.get(0))?, to_hash(r.get(1))?);
        }
        indexes
            .iter()
            .map(|i| {
                found.get(i).copied().ok_or_else(|| {
                    StoreError::internal(format!(
                        "Merkle hash {i} of tenant {} is not stored",
                        tenant.as_str()
                    ))
                })
            })
            .collect()
    }

    pub(crate) async fn save_checkpoint_inner(
        &self,
        tenant: &TenantId,
        checkpoint: &StoredCheckpoint,
    ) -> Result<(), StoreError> {
        let size = i64::try_from(checkpoint.size).map_err(|_| {
            StoreError::internal(format!(
                "checkpoint size {} is out of range",
                checkpoint.size
            ))
        })?;
        // The hashes a checkpoint covers were committed (so made durable) by the appends that
        // wrote them: nothing to flush first.
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO vigil_checkpoints (tenant, size, root, time_ns, note)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (tenant, size) DO NOTHING",
                &[
                    &tenant.as_str(),
                    &size,
                    &checkpoint.root.as_slice(),
                    &checkpoint.timestamp.as_nanos(),
                    &checkpoint.note,
                ],
            )
            .await
            .map_err(PgError::from)?;
        Ok(())
    }

    pub(crate) async fn checkpoint_inner(
        &self,
        tenant: &TenantId,
        size: Option<u64>,
    ) -> Result<Option<StoredCheckpoint>> {
        let client = self.client().await?;
        let row = match size {
            None => {
                client
                    .query_opt(
                        "SELECT size, root, time_ns, note FROM vigil_checkpoints
                          WHERE tenant = $1 ORDER BY size DESC LIMIT 1",
                        &[&tenant.as_str()],
                    )
                    .await?
            }
            Some(size) => {
                let Ok(size) = i64::try_from(size) else {
                    return Ok(None);
                };
                client
                    .query_opt(
                        "SELECT size, root, time_ns, note FROM vigil_checkpoints
                          WHERE tenant = $1 AND size = $2",
                        &[&tenant.as_str(), &size],
                    )
                    .await?
            }
        };
        row.as_ref().map(checkpoint_of).transpose()
    }

    pub(crate) async fn checkpoints_inner(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<StoredCheckpoint>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT size, root, time_ns, note FROM vigil_checkpoints
                  WHERE tenant = $1 ORDER BY size",
                &[&tenant.as_str()],
            )
            .await?;
        rows.iter().map(checkpoint_of).collect()
    }
}
