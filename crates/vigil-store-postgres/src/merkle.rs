//! The Merkle tree of each tenant's log, kept beside its events.
//!
//! Leaf `i` of a tenant's tree is its event with `seq = i + 1`. The tree lives in two places,
//! both moved only under the tenant's head-row lock (the lock that keeps seq gap-free):
//! - `vigil_tree_hashes`: every stored hash (`vigil_integrity::tree` layout), written once;
//! - `vigil_tenants.frontier`: the tree's right edge ([`Frontier`]), what the next append
//!   starts from, so an append reads one row and writes about two hashes per event.
//!
//! The writer grows the tree in the transaction that writes the events ([`TreeEdge`]), so a
//! committed event always has its hashes and a rolled-back one never does. A frontier that lags
//! its head's seq — every log written before schema version 2, or events written by a node of
//! an older vigil during a rolling upgrade — is extended from the stored events: in batches by
//! [`build_missing`] when the store opens, and by the writer itself before it appends, so the
//! tree is whole after every commit of this version.

use deadpool_postgres::Pool;
use tokio_postgres::{GenericClient, Transaction};
use vigil_event::{Hash, leaf_hash};
use vigil_integrity::tree::Frontier;

use crate::error::{PgError, Result};
use crate::row::{to_i64, to_seq};

/// Events read and hashed per round trip when a tree catches up with its log, and per
/// transaction when the store builds the trees of an existing database: such a transaction
/// holds the tenant's head lock, and so its writers, for a fraction of a second.
const CATCH_UP_BATCH: u64 = 5_000;

/// A tenant's tree while a transaction grows it: the frontier as it moves, and the stored
/// hashes it produced, whose indexes run on from `first`.
#[derive(Debug)]
pub(crate) struct TreeEdge {
    frontier: Frontier,
    /// Stored-hash index of `new[0]`: the frontier's next index when the head was read.
    first: u64,
    new: Vec<Hash>,
}

impl TreeEdge {
    /// The edge of a tenant's tree as stored in its head row.
    pub(crate) fn decode(tenant: &str, bytes: &[u8]) -> Result<Self> {
        let frontier = Frontier::from_bytes(bytes).ok_or_else(|| {
            PgError::Corrupt(format!(
                "tenant {tenant}: malformed Merkle frontier ({} bytes)",
                bytes.len()
            ))
        })?;
        Ok(Self {
            first: frontier.next_index(),
            frontier,
            new: Vec::new(),
        })
    }

    /// Number of leaves.
    pub(crate) fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// Appends the leaf of the next event (`seq = size + 1`).
    pub(crate) fn push(&mut self, leaf: Hash) {
        let new = &mut self.new;
        self.frontier.push(leaf, |h| new.push(*h));
    }

    /// True when the transaction has hashes of this tree to write.
    pub(crate) fn grew(&self) -> bool {
        !self.new.is_empty()
    }

    /// The frontier as its head row keeps it.
    pub(crate) fn frontier_bytes(&self) -> Vec<u8> {
        self.frontier.to_bytes()
    }

    /// Extends the tree with the stored events of `tenant` up to `seq`, read in seq order.
    /// Fails when one of them is gone (dropped by retention before the tree had it): its leaf
    /// can never be known again.
    pub(crate) async fn catch_up(
        &mut self,
        tx: &Transaction<'_>,
        tenant: &str,
        seq: u64,
    ) -> Result<()> {
        if self.size() > seq {
            return Err(PgError::Corrupt(format!(
                "tenant {tenant}: Merkle tree of {} leaves is ahead of its log at seq {seq}",
                self.size()
            )));
        }
        if self.size() < seq && !self.grew() {
            // Hashes past the frontier can only be leftovers of a reset frontier: the events
            // are the truth, so they are computed again.
            tx.execute(
                "DELETE FROM vigil_tree_hashes WHERE tenant = $1 AND idx >= $2",
                &[&tenant, &to_i64(self.first)],
            )
            .await?;
        }
        while self.size() < seq {
            let from = self.size();
            let rows = tx
                .query(
                    "SELECT seq, canonical FROM vigil_events
                      WHERE tenant = $1 AND seq > $2 AND seq <= $3
                      ORDER BY seq LIMIT $4",
                    &[
                        &tenant,
                        &to_i64(from),
                        &to_i64(seq),
                        &to_i64(CATCH_UP_BATCH),
                    ],
                )
                .await?;
            let mut canonical = Vec::with_capacity(rows.len());
            for (want, row) in (from + 1..).zip(&rows) {
                let found = to_seq(row.get(0))?;
                if found != want {
                    return Err(missing(tenant, want, Some(found)));
                }
                canonical.push(row.get::<_, Vec<u8>>(1));
            }
            if canonical.is_empty() {
                return Err(missing(tenant, from + 1, None));
            }
            // Hashing a batch of whole events is CPU work: off the async runtime.
            let leaves = tokio::task::spawn_blocking(move || {
                canonical.iter().map(|c| leaf_hash(c)).collect::<Vec<_>>()
            })
            .await
            .map_err(|e| PgError::Corrupt(format!("hashing events failed: {e}")))?;
            for leaf in leaves {
                self.push(leaf);
            }
        }
        Ok(())
    }
}

fn missing(tenant: &str, want: u64, found: Option<u64>) -> PgError {
    let found = found.map_or_else(|| "none".to_owned(), |s| format!("seq {s}"));
    PgError::Corrupt(format!(
        "tenant {tenant}: building its Merkle tree needs event seq {want}, found {found} \
         (an event dropped by retention before its leaf was stored can never be hashed again)"
    ))
}

/// The new stored hashes of one or more trees as the columns of `vigil_tree_hashes`, for
/// `INSERT … SELECT * FROM unnest($tenants::text[], $idxs::int8[], $hashes::bytea[])`. They go
/// in with the statement that moves the heads (a data-modifying `WITH`): about two rows per
/// event for no extra round trip.
#[derive(Debug, Default)]
pub(crate) struct HashRows<'a> {
    pub tenants: Vec<&'a str>,
    pub idxs: Vec<i64>,
    pub hashes: Vec<&'a [u8]>,
}

impl<'a> HashRows<'a> {
    pub(crate) fn add(&mut self, tenant: &'a str, edge: &'a TreeEdge) {
        for (idx, hash) in (edge.first..).zip(&edge.new) {
            self.tenants.push(tenant);
            self.idxs.push(to_i64(idx));
            self.hashes.push(hash);
        }
    }
}

/// A tenant whose tree has not one leaf per event of its log: fewer while it is not built yet,
/// more only if the database was damaged.
#[derive(Debug)]
pub(crate) struct Lagging {
    pub tenant: String,
    pub leaves: u64,
    pub events: u64,
}

/// The tenants whose trees do not match their logs' lengths, by name. Only reads.
pub(crate) async fn lagging(client: &impl GenericClient) -> Result<Vec<Lagging>> {
    let mut lagging = Vec::new();
    for row in client
        .query(
            "SELECT tenant, seq, frontier FROM vigil_tenants WHERE seq > 0 ORDER BY tenant",
            &[],
        )
        .await?
    {
        let tenant: String = row.get(0);
        let events = to_seq(row.get(1))?;
        let leaves = TreeEdge::decode(&tenant, row.get(2))?.size();
        if leaves != events {
            lagging.push(Lagging {
                tenant,
                leaves,
                events,
            });
        }
    }
    Ok(lagging)
}

/// Builds the trees that lag their logs (a database migrated from schema version 1), tenant
/// by tenant, [`CATCH_UP_BATCH`] events per transaction under the head-row lock: writers of
/// other nodes wait at most one batch, and an interrupted build resumes where it stopped.
pub(crate) async fn build_missing(pool: &Pool) -> Result<()> {
    let lagging = lagging(&**pool.get().await?).await?;
    if !lagging.is_empty() {
        tracing::info!(
            tenants = lagging.len(),
            "building the Merkle trees of logs written without them"
        );
    }
    for Lagging { tenant, events, .. } in lagging {
        tracing::info!(%tenant, events, "building the Merkle tree of a log");
        loop {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            let Some(head) = tx
                .query_opt(
                    "SELECT seq, frontier FROM vigil_tenants WHERE tenant = $1 FOR UPDATE",
                    &[&tenant],
                )
                .await?
            else {
                break;
            };
            let seq = to_seq(head.get(0))?;
            let mut edge = TreeEdge::decode(&tenant, head.get(1))?;
            if edge.size() == seq {
                break;
            }
            edge.catch_up(&tx, &tenant, seq.min(edge.size() + CATCH_UP_BATCH))
                .await?;
            let mut rows = HashRows::default();
            rows.add(&tenant, &edge);
            tx.execute(
                "WITH hashes AS (
                     INSERT INTO vigil_tree_hashes (tenant, idx, hash)
                     SELECT * FROM unnest($3::text[], $4::int8[], $5::bytea[])
                 )
                 UPDATE vigil_tenants SET frontier = $2 WHERE tenant = $1",
                &[
                    &tenant,
                    &edge.frontier_bytes(),
                    &rows.tenants,
                    &rows.idxs,
                    &rows.hashes,
                ],
            )
            .await?;
            tx.commit().await?;
            tracing::debug!(%tenant, leaves = edge.size(), "Merkle tree build progress");
        }
        tracing::info!(%tenant, "Merkle tree built");
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use vigil_integrity::tree::stored_hash_count;

    use super::*;

    #[test]
    fn an_edge_collects_the_stored_hashes_from_its_frontier_on() {
        let leaves: Vec<Hash> = (0u8..20).map(|i| leaf_hash(&[i])).collect();
        let mut reference = Frontier::new();
        let mut all = Vec::new();
        for l in &leaves[..7] {
            reference.push(*l, |h| all.push(*h));
        }
        let mut edge = TreeEdge::decode("t", &reference.to_bytes()).unwrap();
        assert_eq!(edge.first, stored_hash_count(7));
        assert!(!edge.grew());
        for l in &leaves[7..] {
            edge.push(*l);
            reference.push(*l, |h| all.push(*h));
        }
        assert_eq!(edge.size(), 20);
        assert_eq!(&all[edge.first as usize..], edge.new.as_slice());
        assert_eq!(edge.frontier_bytes(), reference.to_bytes());
    }

    #[test]
    fn a_malformed_frontier_is_corruption_not_a_panic() {
        assert!(matches!(
            TreeEdge::decode("t", &[1, 2, 3]),
            Err(PgError::Corrupt(m)) if m.contains("tenant t")
        ));
        // Size 1 needs one root.
        assert!(TreeEdge::decode("t", &1u64.to_be_bytes()).is_err());
    }
}
