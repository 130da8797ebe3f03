//! The Merkle tree of a tenant's log, as stored hashes.
//!
//! Stored hash `stored_hash_index(level, n)` is the root of the complete subtree of `2^level`
//! leaves starting at leaf `n << level`. Appending leaf `n` stores its leaf hash and then the
//! root of every subtree it completes — at consecutive indexes starting at
//! `stored_hash_index(0, n)` — so a tree of `n` leaves has `stored_hash_count(n)` hashes, about
//! `2n`. [`Frontier`] is what an appender keeps in memory to compute them: the roots of the
//! maximal complete subtrees (at most 64 hashes).

use sha2::{Digest, Sha256};

use crate::{Hash, TreeError};

pub use tlog_tiles::{stored_hash_count, stored_hash_index};

/// Root of the empty tree: SHA-256 of the empty string (RFC 6962 §2.1).
pub const EMPTY_ROOT: Hash = tlog_tiles::EMPTY_HASH.0;

/// `SHA-256(0x00 ‖ data)`: the RFC 6962 leaf hash.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`: the RFC 6962 interior node hash.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Stored-hash indexes of the roots of the maximal complete subtrees of a tree of `size`
/// leaves, left to right: what [`Frontier::from_stored`] and [`tree_root`] read.
pub fn frontier_indexes(size: u64) -> Vec<u64> {
    let mut out = Vec::with_capacity(size.count_ones() as usize);
    let mut start = 0u64;
    for level in (0..64u8).rev() {
        if size & (1u64 << level) != 0 {
            out.push(stored_hash_index(level, start >> level));
            start += 1u64 << level;
        }
    }
    out
}

/// The right edge of a Merkle tree: enough to append leaves and compute the root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// Roots of the maximal complete subtrees, largest (leftmost) first; one per set bit of
    /// `size`.
    roots: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The frontier of a tree of `size` leaves, from the stored hashes at
    /// [`frontier_indexes`]`(size)`, in that order.
    pub fn from_stored(
        size: u64,
        hashes: Vec<Hash>,
    ) -> Result<Self, TreeError<std::convert::Infallible>> {
        let want = size.count_ones() as usize;
        if hashes.len() != want {
            return Err(TreeError::ShortRead {
                want,
                got: hashes.len(),
            });
        }
        Ok(Self {
            size,
            roots: hashes,
        })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The roots of the maximal complete subtrees, largest first.
    pub fn roots(&self) -> &[Hash] {
        &self.roots
    }

    /// The tree's root hash ([`EMPTY_ROOT`] when empty).
    pub fn root(&self) -> Hash {
        let mut iter = self.roots.iter().rev();
        let Some(last) = iter.next() else {
            return EMPTY_ROOT;
        };
        iter.fold(*last, |acc, left| node_hash(left, &acc))
    }

    /// The stored-hash index of the first hash the next [`push`](Self::push) stores.
    pub fn next_index(&self) -> u64 {
        stored_hash_index(0, self.size)
    }

    /// Appends a leaf, calling `store` with every new stored hash in index order (the leaf
    /// hash first, at [`next_index`](Self::next_index), then each subtree root it completes).
    pub fn push(&mut self, leaf: Hash, mut store: impl FnMut(&Hash)) {
        store(&leaf);
        let mut h = leaf;
        for _ in 0..self.size.trailing_ones() {
            // One root per set bit of `size`: the trailing ones have their roots at the end.
            let Some(left) = self.roots.pop() else { break };
            h = node_hash(&left, &h);
            store(&h);
        }
        self.roots.push(h);
        self.size += 1;
    }

    /// Serialises as `size: u64 BE ‖ roots`, for stores that keep the frontier in a row.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 32 * self.roots.len());
        out.extend_from_slice(&self.size.to_be_bytes());
        for r in &self.roots {
            out.extend_from_slice(r);
        }
        out
    }

    /// Parses [`to_bytes`](Self::to_bytes); `None` when malformed.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (size, rest) = bytes.split_first_chunk::<8>()?;
        let size = u64::from_be_bytes(*size);
        let (chunks, tail) = rest.as_chunks::<32>();
        if !tail.is_empty() || chunks.len() != size.count_ones() as usize {
            return None;
        }
        Some(Self {
            size,
            roots: chunks.to_vec(),
        })
    }
}

/// Asks `read` for the hashes at `indexes` and checks it answered each.
pub(crate) async fn read_exactly<E>(
    indexes: Vec<u64>,
    read: impl AsyncFnOnce(Vec<u64>) -> Result<Vec<Hash>, E>,
) -> Result<Vec<Hash>, TreeError<E>> {
    let want = indexes.len();
    if want == 0 {
        return Ok(Vec::new());
    }
    let hashes = read(indexes).await.map_err(TreeError::Read)?;
    if hashes.len() != want {
        return Err(TreeError::ShortRead {
            want,
            got: hashes.len(),
        });
    }
    Ok(hashes)
}

/// The root of the tree of `size` leaves, from one read of at most `log2(size) + 1` stored
/// hashes.
pub async fn tree_root<E>(
    size: u64,
    read: impl AsyncFnOnce(Vec<u64>) -> Result<Vec<Hash>, E>,
) -> Result<Hash, TreeError<E>> {
    let hashes = read_exactly(frontier_indexes(size), read).await?;
    Ok(Frontier {
        size,
        roots: hashes,
    }
    .root())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6962 MTH over leaf hashes, straight from the definition.
    pub(crate) fn reference_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => EMPTY_ROOT,
            1 => leaves[0],
            n => {
                let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn push_matches_tlog_stored_hashes_and_the_rfc_root() {
        let all = leaves(300);
        let mut frontier = Frontier::new();
        let mut stored: Vec<Hash> = Vec::new();
        for (n, leaf) in all.iter().enumerate() {
            assert_eq!(frontier.next_index(), stored.len() as u64);
            frontier.push(*leaf, |h| stored.push(*h));
            assert_eq!(stored.len() as u64, stored_hash_count(n as u64 + 1));
            assert_eq!(
                frontier.root(),
                reference_root(&all[..=n]),
                "size {}",
                n + 1
            );
            // The frontier read back from storage is the one kept in memory.
            let size = n as u64 + 1;
            let read: Vec<Hash> = frontier_indexes(size)
                .iter()
                .map(|&i| stored[i as usize])
                .collect();
            assert_eq!(Frontier::from_stored(size, read).unwrap(), frontier);
            assert_eq!(
                Frontier::from_bytes(&frontier.to_bytes()).unwrap(),
                frontier
            );
        }
        // Every stored hash is where tlog puts it.
        struct Reader<'a>(&'a [Hash]);
        impl tlog_tiles::HashReader for Reader<'_> {
            fn read_hashes(&self, idx: &[u64]) -> Result<Vec<tlog_tiles::Hash>, tlog_tiles::Error> {
                Ok(idx
                    .iter()
                    .map(|&i| tlog_tiles::Hash(self.0[i as usize]))
                    .collect())
            }
        }
        for n in 1..=300u64 {
            assert_eq!(
                tlog_tiles::tree_hash(n, &Reader(&stored)).unwrap().0,
                reference_root(&all[..n as usize])
            );
        }
    }

    #[test]
    fn empty_tree() {
        assert_eq!(Frontier::new().root(), EMPTY_ROOT);
        assert_eq!(
            hex::encode(EMPTY_ROOT),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(frontier_indexes(0).is_empty());
        assert!(Frontier::from_bytes(&[0; 7]).is_none());
    }

    #[tokio::test]
    async fn tree_root_reads_the_frontier_once() {
        let all = leaves(37);
        let mut stored = Vec::new();
        let mut f = Frontier::new();
        for l in &all {
            f.push(*l, |h| stored.push(*h));
        }
        let root = tree_root(37, async |idx: Vec<u64>| {
            assert_eq!(idx.len(), 3);
            Ok::<_, ()>(idx.iter().map(|&i| stored[i as usize]).collect())
        })
        .await
        .unwrap();
        assert_eq!(root, reference_root(&all));
        let short = tree_root(37, async |_idx: Vec<u64>| Ok::<_, ()>(vec![]))
            .await
            .unwrap_err();
        assert!(matches!(short, TreeError::ShortRead { want: 3, got: 0 }));
    }
}
