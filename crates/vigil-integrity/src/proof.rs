//! Inclusion and consistency proofs in vigil's JSON formats.
//!
//! Proofs are made from a store's stored hashes with exactly one read each (the store may be a
//! database round trip away), and checked with nothing but the proof, the leaf hash and the
//! roots: verification follows RFC 9162 §2.1.3.2 and §2.1.4.2 directly, is independent of the
//! code that generates proofs, and never panics, whatever the input.
//!
//! Paths are in RFC 6962 / RFC 9162 order, bottom-up: the sibling of the leaf (or of the old
//! tree's last subtree) first, the sibling of the root's child last.
//!
//! ```
//! use vigil_integrity::proof::{prove_consistency, prove_inclusion};
//! use vigil_integrity::tree::{Frontier, leaf_hash};
//!
//! // A store keeps the stored hashes of each tenant's tree.
//! let mut frontier = Frontier::new();
//! let mut stored = Vec::new();
//! for seq in 1..=10u32 {
//!     frontier.push(leaf_hash(format!("event {seq}").as_bytes()), |h| stored.push(*h));
//! }
//! let read = async |indexes: Vec<u64>| -> Result<Vec<[u8; 32]>, std::io::Error> {
//!     Ok(indexes.iter().map(|&i| stored[i as usize]).collect())
//! };
//! let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
//!
//! // Event seq 4 is leaf 3.
//! let proof = runtime.block_on(prove_inclusion(3, 10, read)).unwrap();
//! assert_eq!(proof.root_hash, frontier.root());
//! proof.verify(&leaf_hash(b"event 4")).unwrap();
//! assert!(proof.verify(&leaf_hash(b"event 5")).is_err());
//!
//! let consistency = runtime.block_on(prove_consistency(10, 10, read)).unwrap();
//! consistency.verify(&frontier.root(), &frontier.root()).unwrap();
//! ```

use serde::{Deserialize, Serialize};

use crate::checkpoint::{CheckpointError, VerifiedCheckpoint, VerifierKey};
use crate::tree::{frontier_indexes, node_hash, read_exactly, stored_hash_index};
use crate::{Hash, TreeError};

/// RFC 6962 inclusion proof, vigil's JSON format.
///
/// ```json
/// {"leaf_index": 5, "tree_size": 8, "root_hash": "5dc9…", "audit_path": ["bc1a…", "ca85…", "d37e…"]}
/// ```
///
/// `leaf_index` is the event's `seq - 1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionProof {
    /// Position of the leaf in the tree, from 0.
    pub leaf_index: u64,
    /// Number of leaves of the tree the proof is for.
    pub tree_size: u64,
    /// Root of that tree, as read from the store (check it against a signed checkpoint).
    #[serde(with = "hex_hash")]
    pub root_hash: Hash,
    /// The sibling hashes from the leaf up to the root (RFC 9162 §2.1.3.1).
    #[serde(with = "hex_hashes")]
    pub audit_path: Vec<Hash>,
    /// The signed checkpoint (C2SP note text) of `tree_size`, when the server attached it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
}

/// RFC 6962 consistency proof between two sizes of one tree, vigil's JSON format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyProof {
    /// Size of the older tree.
    pub from: u64,
    /// Size of the newer tree.
    pub to: u64,
    /// The proof hashes (RFC 9162 §2.1.4.1); empty when `from == to`.
    #[serde(with = "hex_hashes")]
    pub path: Vec<Hash>,
}

/// Why a proof does not verify.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {leaf_index} is out of range for a tree of {tree_size} leaves")]
    LeafIndexOutOfRange { leaf_index: u64, tree_size: u64 },
    /// A consistency proof claims to go from a larger tree to a smaller one.
    #[error("consistency proof sizes are out of order: from {from} is larger than to {to}")]
    SizesOutOfOrder { from: u64, to: u64 },
    /// RFC 9162 defines no consistency proof from the empty tree (every tree extends it).
    #[error(
        "a consistency proof from size 0 is not defined (RFC 9162 §2.1.4): every tree extends the empty tree, so there is nothing to check"
    )]
    FromEmptyTree,
    /// The path does not have the one length the sizes allow.
    #[error("wrong proof path length: expected {expected} hashes, got {got}")]
    WrongPathLength { expected: usize, got: usize },
    /// The path leads to another root than the one expected.
    #[error(
        "root mismatch: computed {}, expected {}",
        hex::encode(computed),
        hex::encode(expected)
    )]
    RootMismatch { computed: Hash, expected: Hash },
    /// The consistency proof does not rebuild the older tree's root.
    #[error(
        "old root mismatch: computed {}, expected {}",
        hex::encode(computed),
        hex::encode(expected)
    )]
    OldRootMismatch { computed: Hash, expected: Hash },
    /// The consistency proof does not rebuild the newer tree's root.
    #[error(
        "new root mismatch: computed {}, expected {}",
        hex::encode(computed),
        hex::encode(expected)
    )]
    NewRootMismatch { computed: Hash, expected: Hash },
    /// [`InclusionProof::verify_checkpointed`] was given a proof without a checkpoint.
    #[error("the proof carries no signed checkpoint to check its root against")]
    NoCheckpoint,
    /// The attached checkpoint does not verify.
    #[error("the attached checkpoint does not verify: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The attached checkpoint verifies but signs another tree than the proof's.
    #[error(
        "the attached checkpoint signs size {signed_size} with root {}, but the proof is for size {tree_size} with root {}",
        hex::encode(signed_root),
        hex::encode(root_hash)
    )]
    CheckpointDisagrees {
        signed_size: u64,
        signed_root: Hash,
        tree_size: u64,
        root_hash: Hash,
    },
}

impl ProofError {
    /// A stable machine-readable code for the error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::LeafIndexOutOfRange { .. } => "leaf_index_out_of_range",
            Self::SizesOutOfOrder { .. } => "sizes_out_of_order",
            Self::FromEmptyTree => "from_empty_tree",
            Self::WrongPathLength { .. } => "wrong_path_length",
            Self::RootMismatch { .. } => "root_mismatch",
            Self::OldRootMismatch { .. } => "old_root_mismatch",
            Self::NewRootMismatch { .. } => "new_root_mismatch",
            Self::NoCheckpoint => "no_checkpoint",
            Self::Checkpoint(_) => "checkpoint_invalid",
            Self::CheckpointDisagrees { .. } => "checkpoint_disagrees",
        }
    }
}

impl InclusionProof {
    /// Checks that `audit_path` leads from `leaf_hash` (the [`leaf_hash`](crate::tree::leaf_hash)
    /// of the event's canonical bytes) at `leaf_index` to `root_hash` (RFC 9162 §2.1.3.2).
    ///
    /// This proves inclusion in the tree whose root is `root_hash`; that root is only as
    /// trustworthy as its source, so check it against a signed checkpoint
    /// ([`verify_checkpointed`](Self::verify_checkpointed) does both).
    pub fn verify(&self, leaf_hash: &Hash) -> Result<(), ProofError> {
        let computed =
            root_from_inclusion(self.leaf_index, self.tree_size, leaf_hash, &self.audit_path)?;
        if computed != self.root_hash {
            return Err(ProofError::RootMismatch {
                computed,
                expected: self.root_hash,
            });
        }
        Ok(())
    }

    /// [`verify`](Self::verify), then checks that the attached `checkpoint` is signed by `key`
    /// and signs this proof's `tree_size` and `root_hash`. Returns the verified checkpoint.
    pub fn verify_checkpointed(
        &self,
        leaf_hash: &Hash,
        key: &VerifierKey,
    ) -> Result<VerifiedCheckpoint, ProofError> {
        let note = self.checkpoint.as_deref().ok_or(ProofError::NoCheckpoint)?;
        let checkpoint = crate::checkpoint::verify_checkpoint(note, key)?;
        if checkpoint.size != self.tree_size || checkpoint.root != self.root_hash {
            return Err(ProofError::CheckpointDisagrees {
                signed_size: checkpoint.size,
                signed_root: checkpoint.root,
                tree_size: self.tree_size,
                root_hash: self.root_hash,
            });
        }
        self.verify(leaf_hash)?;
        Ok(checkpoint)
    }
}

impl ConsistencyProof {
    /// Checks that the tree of `to` leaves with root `new_root` extends the tree of `from`
    /// leaves with root `old_root` (RFC 9162 §2.1.4.2). `from == to` needs an empty path and
    /// equal roots; `from == 0` is refused ([`ProofError::FromEmptyTree`]).
    pub fn verify(&self, old_root: &Hash, new_root: &Hash) -> Result<(), ProofError> {
        let (from, to) = (self.from, self.to);
        if from == 0 {
            return Err(ProofError::FromEmptyTree);
        }
        if from > to {
            return Err(ProofError::SizesOutOfOrder { from, to });
        }
        if from == to {
            if !self.path.is_empty() {
                return Err(ProofError::WrongPathLength {
                    expected: 0,
                    got: self.path.len(),
                });
            }
            if old_root != new_root {
                return Err(ProofError::NewRootMismatch {
                    computed: *old_root,
                    expected: *new_root,
                });
            }
            return Ok(());
        }

        // RFC 9162 §2.1.4.2. When `from` is a power of two the old tree is a complete subtree
        // of the new one, the proof omits its root, and the verifier puts `old_root` first.
        let old_is_subtree = from.is_power_of_two();
        let mut fnode = from - 1;
        let mut snode = to - 1;
        while fnode & 1 == 1 {
            fnode >>= 1;
            snode >>= 1;
        }
        let expected = walk_len(fnode, snode) + usize::from(!old_is_subtree);
        if self.path.len() != expected {
            return Err(ProofError::WrongPathLength {
                expected,
                got: self.path.len(),
            });
        }
        let (first, rest) = if old_is_subtree {
            (old_root, self.path.as_slice())
        } else {
            match self.path.split_first() {
                Some((first, rest)) => (first, rest),
                // `expected` is at least 1 here, so the length check above already refused it.
                None => {
                    return Err(ProofError::WrongPathLength { expected, got: 0 });
                }
            }
        };
        let mut fr = *first;
        let mut sr = *first;
        for c in rest {
            if fnode & 1 == 1 || fnode == snode {
                fr = node_hash(c, &fr);
                sr = node_hash(c, &sr);
                if fnode & 1 == 0 {
                    while fnode & 1 == 0 && fnode != 0 {
                        fnode >>= 1;
                        snode >>= 1;
                    }
                }
            } else {
                sr = node_hash(&sr, c);
            }
            fnode >>= 1;
            snode >>= 1;
        }
        if fr != *old_root {
            return Err(ProofError::OldRootMismatch {
                computed: fr,
                expected: *old_root,
            });
        }
        if sr != *new_root {
            return Err(ProofError::NewRootMismatch {
                computed: sr,
                expected: *new_root,
            });
        }
        Ok(())
    }
}

/// The root an inclusion path leads to (RFC 9162 §2.1.3.2), after checking its length.
fn root_from_inclusion(
    leaf_index: u64,
    tree_size: u64,
    leaf_hash: &Hash,
    path: &[Hash],
) -> Result<Hash, ProofError> {
    if leaf_index >= tree_size {
        return Err(ProofError::LeafIndexOutOfRange {
            leaf_index,
            tree_size,
        });
    }
    let mut fnode = leaf_index;
    let mut snode = tree_size - 1;
    let expected = walk_len(fnode, snode);
    if path.len() != expected {
        return Err(ProofError::WrongPathLength {
            expected,
            got: path.len(),
        });
    }
    let mut r = *leaf_hash;
    for p in path {
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    Ok(r)
}

/// How many path hashes the RFC 9162 verification loop consumes from node `fnode` of a tree
/// whose last node is `snode` before reaching the root (`snode == 0`): the only path length
/// that can verify. Running the loop with exactly this many hashes never hits its failure
/// branch ("sn is 0 before the path ends") and always ends with `sn == 0`.
fn walk_len(mut fnode: u64, mut snode: u64) -> usize {
    let mut len = 0;
    while snode != 0 {
        if fnode & 1 == 0 && fnode == snode {
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        }
        fnode >>= 1;
        snode >>= 1;
        len += 1;
    }
    len
}

/// Proves that the leaf at `leaf_index` is in the tree of `tree_size` leaves, with one call to
/// `read` for every stored hash the path and the root need.
pub async fn prove_inclusion<E>(
    leaf_index: u64,
    tree_size: u64,
    read: impl AsyncFnOnce(Vec<u64>) -> Result<Vec<Hash>, E>,
) -> Result<InclusionProof, TreeError<E>> {
    if leaf_index >= tree_size {
        return Err(TreeError::OutOfRange(format!(
            "leaf index {leaf_index} is not in a tree of {tree_size} leaves"
        )));
    }
    let plan = ReadPlan::new(&inclusion_spans(leaf_index, tree_size), tree_size);
    let hashes = read_exactly(plan.indexes.clone(), read).await?;
    let (audit_path, root_hash) = plan.assemble(&hashes)?;
    Ok(InclusionProof {
        leaf_index,
        tree_size,
        root_hash,
        audit_path,
        checkpoint: None,
    })
}

/// Proves that the tree of `to` leaves extends the tree of `from` leaves, with one call to
/// `read`. Needs `0 < from <= to`: `from == to` gives an empty path, and `from == 0` is refused
/// because RFC 9162 defines no proof from the empty tree (every tree extends it).
pub async fn prove_consistency<E>(
    from: u64,
    to: u64,
    read: impl AsyncFnOnce(Vec<u64>) -> Result<Vec<Hash>, E>,
) -> Result<ConsistencyProof, TreeError<E>> {
    if from == 0 {
        return Err(TreeError::OutOfRange(
            "a consistency proof needs from > 0: RFC 9162 defines no proof from the empty tree, which every tree extends".to_owned(),
        ));
    }
    if from > to {
        return Err(TreeError::OutOfRange(format!(
            "a consistency proof needs from <= to, got from {from} and to {to}"
        )));
    }
    let plan = ReadPlan::new(&consistency_spans(from, to), 0);
    let hashes = read_exactly(plan.indexes.clone(), read).await?;
    let (path, _) = plan.assemble(&hashes)?;
    Ok(ConsistencyProof { from, to, path })
}

/// A run of leaves `[lo, hi)` whose Merkle root is one proof hash.
type Span = (u64, u64);

/// Largest power of two strictly below `n` (`n >= 2`): where RFC 6962 splits `n` leaves.
fn split_point(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// The stored subtrees `(level, index)` whose roots, combined right to left, give the root of
/// leaves `[lo, hi)`: its maximal complete subtrees, left to right.
fn complete_subtrees(mut lo: u64, hi: u64) -> impl Iterator<Item = (u8, u64)> {
    std::iter::from_fn(move || {
        if lo >= hi {
            return None;
        }
        let n = hi - lo;
        let mut k = 1u64 << (63 - n.leading_zeros());
        // Spans of RFC 6962 proofs are always aligned; the bound keeps any span well-formed.
        if lo != 0 {
            k = k.min(1u64 << lo.trailing_zeros());
        }
        let level = k.trailing_zeros() as u8;
        let out = (level, lo >> level);
        lo += k;
        Some(out)
    })
}

/// The spans of the inclusion path of `leaf` in a tree of `size` leaves, bottom-up
/// (RFC 9162 §2.1.3.1 `PATH`).
fn inclusion_spans(leaf: u64, size: u64) -> Vec<Span> {
    let mut spans = Vec::new();
    let (mut lo, mut hi) = (0, size);
    while hi - lo > 1 {
        let k = split_point(hi - lo);
        if leaf < lo + k {
            spans.push((lo + k, hi));
            hi = lo + k;
        } else {
            spans.push((lo, lo + k));
            lo += k;
        }
    }
    spans.reverse();
    spans
}

/// The spans of the consistency proof from `from` to `to` leaves, bottom-up
/// (RFC 9162 §2.1.4.1 `SUBPROOF`, with `from` kept absolute). Needs `0 < from <= to`.
fn consistency_spans(from: u64, to: u64) -> Vec<Span> {
    let mut spans = Vec::new();
    let (mut lo, mut hi) = (0, to);
    // Whether [lo, hi) still starts at leaf 0, so that reaching `from` means reaching the old
    // tree itself, whose root the verifier knows.
    let mut whole_old_tree = true;
    while from < hi {
        let k = split_point(hi - lo);
        if from <= lo + k {
            spans.push((lo + k, hi));
            hi = lo + k;
        } else {
            spans.push((lo, lo + k));
            lo += k;
            whole_old_tree = false;
        }
    }
    if !whole_old_tree {
        spans.push((lo, hi));
    }
    spans.reverse();
    spans
}

/// Which stored hashes to read for some spans (and optionally a root), asked once, sorted and
/// without duplicates, and how to put the answer back together.
struct ReadPlan {
    indexes: Vec<u64>,
    /// For each span, the positions in `indexes` of its subtrees' roots, left to right.
    spans: Vec<Vec<usize>>,
    /// The positions of the tree's frontier, when its root is wanted.
    root: Vec<usize>,
}

impl ReadPlan {
    /// `root_size` 0 asks for no root.
    fn new(spans: &[Span], root_size: u64) -> Self {
        let span_indexes: Vec<Vec<u64>> = spans
            .iter()
            .map(|&(lo, hi)| {
                complete_subtrees(lo, hi)
                    .map(|(level, n)| stored_hash_index(level, n))
                    .collect()
            })
            .collect();
        let root_indexes = frontier_indexes(root_size);
        let mut indexes: Vec<u64> = span_indexes
            .iter()
            .flatten()
            .chain(&root_indexes)
            .copied()
            .collect();
        indexes.sort_unstable();
        indexes.dedup();
        // Every index is in `indexes` by construction, so the search always finds it.
        let position = |i: &u64| indexes.binary_search(i).unwrap_or_else(|at| at);
        let spans = span_indexes
            .iter()
            .map(|group| group.iter().map(position).collect())
            .collect();
        let root = root_indexes.iter().map(position).collect();
        Self {
            indexes,
            spans,
            root,
        }
    }

    /// The span hashes and the root from the hashes read at `self.indexes`.
    fn assemble<E>(&self, hashes: &[Hash]) -> Result<(Vec<Hash>, Hash), TreeError<E>> {
        let combine = |positions: &[usize]| -> Result<Hash, TreeError<E>> {
            let mut acc: Option<Hash> = None;
            for &p in positions.iter().rev() {
                let h = hashes.get(p).ok_or(TreeError::ShortRead {
                    want: self.indexes.len(),
                    got: hashes.len(),
                })?;
                acc = Some(match acc {
                    None => *h,
                    Some(right) => node_hash(h, &right),
                });
            }
            Ok(acc.unwrap_or(crate::tree::EMPTY_ROOT))
        };
        let path = self
            .spans
            .iter()
            .map(|s| combine(s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((path, combine(&self.root)?))
    }
}

/// Serde for a [`Hash`] as a lowercase hex string (uppercase is accepted on input).
pub(crate) mod hex_hash {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    use crate::Hash;

    pub fn serialize<S: Serializer>(hash: &Hash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(hash))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        parse(&s).map_err(D::Error::custom)
    }

    /// Parses 64 hex digits.
    pub fn parse(s: &str) -> Result<Hash, String> {
        if s.len() != 64 {
            return Err(format!(
                "expected a SHA-256 hash as 64 hex digits, got {} characters",
                s.chars().count()
            ));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)
            .map_err(|e| format!("expected a SHA-256 hash as 64 hex digits: {e}"))?;
        Ok(out)
    }
}

/// Serde for a list of [`Hash`]es as hex strings.
pub(crate) mod hex_hashes {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _, ser::SerializeSeq};

    use crate::Hash;

    pub fn serialize<S: Serializer>(hashes: &[Hash], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(hashes.len()))?;
        for h in hashes {
            seq.serialize_element(&hex::encode(h))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Hash>, D::Error> {
        let strings = Vec::<std::borrow::Cow<'de, str>>::deserialize(d)?;
        strings
            .iter()
            .enumerate()
            .map(|(i, s)| {
                super::hex_hash::parse(s).map_err(|e| D::Error::custom(format!("hash #{i}: {e}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Frontier, leaf_hash};

    /// The tree of `leaves`, as the store keeps it.
    fn stored(leaves: &[Hash]) -> Vec<Hash> {
        let mut f = Frontier::new();
        let mut out = Vec::new();
        for l in leaves {
            f.push(*l, |h| out.push(*h));
        }
        out
    }

    fn block_on<F: std::future::Future>(fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(out) => out,
            std::task::Poll::Pending => panic!("the test reader never waits"),
        }
    }

    /// Transcribed from transparency-dev/merkle `proof/proof_test.go`; see
    /// `testdata/rfc6962_vectors.json`.
    #[derive(serde::Deserialize)]
    struct NodeCase {
        size1: Option<u64>,
        size2: Option<u64>,
        size: Option<u64>,
        index: Option<u64>,
        /// Node ids `[level, index]` in the order Go lists them.
        ids: Vec<[u64; 2]>,
        /// `[begin, end)` of the ids Go rehashes into one proof hash, when any.
        rehash: Option<[usize; 2]>,
    }

    /// Go's `proof.Nodes` as proof hashes: groups of node ids, each combined into one hash.
    /// Go lists a rehashed group right to left; ours are left to right.
    fn go_groups(case: &NodeCase) -> Vec<Vec<(u8, u64)>> {
        let ids: Vec<(u8, u64)> = case.ids.iter().map(|&[l, i]| (l as u8, i)).collect();
        let (begin, end) = case.rehash.map_or((ids.len(), ids.len()), |[b, e]| (b, e));
        let mut groups: Vec<Vec<(u8, u64)>> = ids[..begin].iter().map(|&id| vec![id]).collect();
        if begin < end {
            groups.push(ids[begin..end].iter().rev().copied().collect());
        }
        groups.extend(ids[end..].iter().map(|&id| vec![id]));
        groups
    }

    fn our_groups(spans: &[Span]) -> Vec<Vec<(u8, u64)>> {
        spans
            .iter()
            .map(|&(lo, hi)| complete_subtrees(lo, hi).collect())
            .collect()
    }

    #[test]
    fn spans_match_the_node_ids_of_transparency_dev_merkle() {
        let vectors: serde_json::Value =
            serde_json::from_str(include_str!("../testdata/rfc6962_vectors.json")).unwrap();
        let section = &vectors["proof_nodes"];
        let inclusion: Vec<NodeCase> =
            serde_json::from_value(section["inclusion"].clone()).unwrap();
        let consistency: Vec<NodeCase> =
            serde_json::from_value(section["consistency"].clone()).unwrap();
        assert_eq!((inclusion.len(), consistency.len()), (20, 25));
        for case in &inclusion {
            let (size, index) = (case.size.unwrap(), case.index.unwrap());
            assert_eq!(
                our_groups(&inclusion_spans(index, size)),
                go_groups(case),
                "inclusion of leaf {index} in {size}"
            );
        }
        for case in &consistency {
            let (m, n) = (case.size1.unwrap(), case.size2.unwrap());
            assert_eq!(
                our_groups(&consistency_spans(m, n)),
                go_groups(case),
                "consistency {m} -> {n}"
            );
        }
    }

    #[test]
    fn one_sorted_read_without_duplicates() {
        let leaves: Vec<Hash> = (0u32..100).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let store = stored(&leaves);
        for (leaf, size) in [(0, 1), (0, 100), (99, 100), (37, 64), (64, 65)] {
            let mut calls = 0;
            let proof = block_on(prove_inclusion(leaf, size, async |idx: Vec<u64>| {
                calls += 1;
                assert!(idx.windows(2).all(|w| w[0] < w[1]), "{idx:?}");
                Ok::<_, ()>(idx.iter().map(|&i| store[i as usize]).collect())
            }))
            .unwrap();
            assert!(calls <= 1);
            proof.verify(&leaves[leaf as usize]).unwrap();
        }
        let mut calls = 0;
        let p = block_on(prove_consistency(3, 3, async |idx: Vec<u64>| {
            calls += 1;
            Ok::<_, ()>(idx.iter().map(|&i| store[i as usize]).collect())
        }))
        .unwrap();
        assert_eq!((calls, p.path.len()), (0, 0));
    }

    #[test]
    fn refuses_what_the_tree_does_not_have() {
        let read = async |_: Vec<u64>| -> Result<Vec<Hash>, ()> { panic!("nothing to read") };
        assert!(matches!(
            block_on(prove_inclusion(5, 5, read)),
            Err(TreeError::OutOfRange(m)) if m.contains("leaf index 5")
        ));
        assert!(matches!(
            block_on(prove_inclusion(0, 0, read)),
            Err(TreeError::OutOfRange(_))
        ));
        assert!(matches!(
            block_on(prove_consistency(0, 5, read)),
            Err(TreeError::OutOfRange(m)) if m.contains("from > 0")
        ));
        assert!(matches!(
            block_on(prove_consistency(6, 5, read)),
            Err(TreeError::OutOfRange(m)) if m.contains("from 6 and to 5")
        ));
        let short = block_on(prove_inclusion(1, 8, async |_: Vec<u64>| {
            Ok::<_, ()>(vec![[0; 32]])
        }));
        assert!(matches!(
            short,
            Err(TreeError::ShortRead { want: 4, got: 1 })
        ));
        let failed = block_on(prove_consistency(1, 8, async |_: Vec<u64>| {
            Err::<Vec<Hash>, _>("db down")
        }));
        assert!(matches!(failed, Err(TreeError::Read("db down"))));
    }

    #[test]
    fn json_shape_and_hex_errors() {
        let p = InclusionProof {
            leaf_index: 1,
            tree_size: 2,
            root_hash: [0xab; 32],
            audit_path: vec![[1; 32]],
            checkpoint: None,
        };
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "leaf_index": 1, "tree_size": 2,
                "root_hash": "ab".repeat(32),
                "audit_path": ["01".repeat(32)],
            })
        );
        assert_eq!(serde_json::from_value::<InclusionProof>(json).unwrap(), p);

        let err = serde_json::from_str::<ConsistencyProof>(r#"{"from":1,"to":2,"path":["abcd"]}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("hash #0: expected a SHA-256 hash as 64 hex digits, got 4 characters"),
            "{err}"
        );
        let err = serde_json::from_str::<ConsistencyProof>(&format!(
            r#"{{"from":1,"to":2,"path":["{}"]}}"#,
            "zz".repeat(32)
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("hash #0: expected a SHA-256 hash as 64 hex digits: Invalid character"),
            "{err}"
        );
        let err =
            serde_json::from_str::<ConsistencyProof>(r#"{"from":1,"to":2,"path":[],"extra":1}"#)
                .unwrap_err()
                .to_string();
        assert!(err.contains("unknown field `extra`"), "{err}");
        let upper = serde_json::from_str::<InclusionProof>(&format!(
            r#"{{"leaf_index":0,"tree_size":1,"root_hash":"{}","audit_path":[]}}"#,
            "AB".repeat(32)
        ))
        .unwrap();
        assert_eq!(upper.root_hash, [0xab; 32]);
    }

    #[test]
    fn verification_messages() {
        let p = InclusionProof {
            leaf_index: 3,
            tree_size: 3,
            root_hash: [0; 32],
            audit_path: vec![],
            checkpoint: None,
        };
        assert_eq!(
            p.verify(&[0; 32]).unwrap_err().to_string(),
            "leaf index 3 is out of range for a tree of 3 leaves"
        );
        let p = InclusionProof {
            leaf_index: 0,
            tree_size: 4,
            ..p
        };
        assert_eq!(
            p.verify(&[0; 32]).unwrap_err().to_string(),
            "wrong proof path length: expected 2 hashes, got 0"
        );
        let p = InclusionProof { tree_size: 1, ..p };
        assert_eq!(
            p.verify(&[1; 32]).unwrap_err().to_string(),
            format!(
                "root mismatch: computed {}, expected {}",
                "01".repeat(32),
                "00".repeat(32)
            )
        );
        let c = ConsistencyProof {
            from: 0,
            to: 3,
            path: vec![],
        };
        assert!(matches!(
            c.verify(&[0; 32], &[0; 32]),
            Err(ProofError::FromEmptyTree)
        ));
        let c = ConsistencyProof {
            from: 4,
            to: 3,
            path: vec![],
        };
        assert_eq!(
            c.verify(&[0; 32], &[0; 32]).unwrap_err().to_string(),
            "consistency proof sizes are out of order: from 4 is larger than to 3"
        );
        let c = ConsistencyProof {
            from: 3,
            to: 3,
            path: vec![[0; 32]],
        };
        assert!(matches!(
            c.verify(&[0; 32], &[0; 32]),
            Err(ProofError::WrongPathLength {
                expected: 0,
                got: 1
            })
        ));
        let c = ConsistencyProof {
            from: 3,
            to: 3,
            path: vec![],
        };
        assert!(c.verify(&[7; 32], &[7; 32]).is_ok());
        assert!(matches!(
            c.verify(&[7; 32], &[8; 32]),
            Err(ProofError::NewRootMismatch { .. })
        ));
    }

    #[test]
    fn verification_never_panics_at_the_edges_of_u64() {
        let path = vec![[0u8; 32]; 70];
        for (i, n) in [
            (u64::MAX - 1, u64::MAX),
            (0, u64::MAX),
            (u64::MAX, u64::MAX),
            (1 << 63, (1 << 63) + 1),
        ] {
            for len in [0, 1, 63, 64, 65, 70] {
                let p = InclusionProof {
                    leaf_index: i,
                    tree_size: n,
                    root_hash: [0; 32],
                    audit_path: path[..len].to_vec(),
                    checkpoint: None,
                };
                assert!(p.verify(&[0; 32]).is_err());
                let c = ConsistencyProof {
                    from: i,
                    to: n,
                    path: path[..len].to_vec(),
                };
                let _ = c.verify(&[0; 32], &[0; 32]);
            }
        }
    }
}
