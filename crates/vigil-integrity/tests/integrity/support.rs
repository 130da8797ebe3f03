//! Helpers shared by the integration tests: an in-memory store of stored hashes, an RFC 6962
//! reference root, the corruptions transparency-dev/merkle applies to proofs, and proptest's
//! settings.

use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence};
use vigil_integrity::Hash;
use vigil_integrity::proof::{
    ConsistencyProof, InclusionProof, prove_consistency, prove_inclusion,
};
use vigil_integrity::tree::{Frontier, node_hash};

/// Runs a future that never waits (the in-memory reader answers at once).
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => panic!("the in-memory reader never waits"),
    }
}

/// RFC 6962 §2.1 MTH over leaf hashes, straight from the definition.
pub fn reference_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => vigil_integrity::tree::EMPTY_ROOT,
        1 => leaves[0],
        n => {
            let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
            node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
        }
    }
}

/// A tree as a store keeps it.
pub struct Tree {
    pub leaves: Vec<Hash>,
    pub stored: Vec<Hash>,
}

impl Tree {
    pub fn new(leaves: Vec<Hash>) -> Self {
        let mut frontier = Frontier::new();
        let mut stored = Vec::new();
        for l in &leaves {
            frontier.push(*l, |h| stored.push(*h));
        }
        Self { leaves, stored }
    }

    fn read(&self, indexes: Vec<u64>, reads: &std::cell::Cell<usize>) -> Result<Vec<Hash>, String> {
        reads.set(reads.get() + 1);
        indexes
            .iter()
            .map(|&i| {
                self.stored
                    .get(i as usize)
                    .copied()
                    .ok_or_else(|| format!("index {i} is not stored"))
            })
            .collect()
    }

    /// Our inclusion proof, checking that it took at most one read.
    pub fn inclusion(&self, leaf: u64, size: u64) -> InclusionProof {
        let reads = std::cell::Cell::new(0);
        let p = block_on(prove_inclusion(leaf, size, async |idx| {
            self.read(idx, &reads)
        }))
        .unwrap();
        assert!(reads.get() <= 1, "{} reads", reads.get());
        p
    }

    /// Our consistency proof, checking that it took at most one read.
    pub fn consistency(&self, from: u64, to: u64) -> ConsistencyProof {
        let reads = std::cell::Cell::new(0);
        let p = block_on(prove_consistency(from, to, async |idx| {
            self.read(idx, &reads)
        }))
        .unwrap();
        assert!(reads.get() <= 1, "{} reads", reads.get());
        p
    }
}

impl tlog_tiles::HashReader for Tree {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<tlog_tiles::Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|&i| {
                self.stored
                    .get(i as usize)
                    .map(|h| tlog_tiles::Hash(*h))
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

/// `sha256SomeHash` of transparency-dev/merkle's verify_test.go: a hash that is in no tree.
pub fn some_hash() -> Hash {
    let mut h = [0u8; 32];
    hex::decode_to_slice(
        "abacaba000000000000000000000000000000000000000000060061e00123456",
        &mut h,
    )
    .unwrap();
    h
}

/// The corruptions of `corruptInclusionProof` in transparency-dev/merkle's verify_test.go
/// (garbage hashes are 32 bytes here: the JSON format cannot carry shorter ones), as
/// (description, proof, leaf hash). None of them may verify.
pub fn corrupt_inclusion(p: &InclusionProof, leaf: &Hash) -> Vec<(String, InclusionProof, Hash)> {
    let with = |f: &dyn Fn(&mut InclusionProof)| {
        let mut q = p.clone();
        f(&mut q);
        q
    };
    let mut out = vec![
        (
            "leaf_index - 1".to_owned(),
            with(&|q| q.leaf_index = q.leaf_index.wrapping_sub(1)),
            *leaf,
        ),
        (
            "leaf_index + 1".to_owned(),
            with(&|q| q.leaf_index += 1),
            *leaf,
        ),
        (
            "leaf_index ^ 2".to_owned(),
            with(&|q| q.leaf_index ^= 2),
            *leaf,
        ),
        (
            "tree_size * 2".to_owned(),
            with(&|q| q.tree_size *= 2),
            *leaf,
        ),
        (
            "tree_size / 2".to_owned(),
            with(&|q| q.tree_size /= 2),
            *leaf,
        ),
        ("wrong leaf".to_owned(), p.clone(), some_hash()),
        (
            "empty root".to_owned(),
            with(&|q| q.root_hash = vigil_integrity::tree::EMPTY_ROOT),
            *leaf,
        ),
        (
            "random root".to_owned(),
            with(&|q| q.root_hash = some_hash()),
            *leaf,
        ),
        (
            "trailing garbage".to_owned(),
            with(&|q| q.audit_path.push(some_hash())),
            *leaf,
        ),
        (
            "trailing root".to_owned(),
            with(&|q| q.audit_path.push(q.root_hash)),
            *leaf,
        ),
        (
            "preceding garbage".to_owned(),
            with(&|q| q.audit_path.insert(0, some_hash())),
            *leaf,
        ),
        (
            "preceding root".to_owned(),
            with(&|q| q.audit_path.insert(0, q.root_hash)),
            *leaf,
        ),
    ];
    for i in 0..p.audit_path.len() {
        out.push((
            format!("modified audit_path[{i}] bit 3"),
            with(&|q| q.audit_path[i][0] ^= 8),
            *leaf,
        ));
        out.push((
            format!("modified audit_path[{i}] last bit"),
            with(&|q| q.audit_path[i][31] ^= 1),
            *leaf,
        ));
    }
    if !p.audit_path.is_empty() {
        out.push((
            "removed component".to_owned(),
            with(&|q| {
                q.audit_path.pop();
            }),
            *leaf,
        ));
    }
    if p.audit_path.len() > 1 {
        out.push((
            "inserted component".to_owned(),
            with(&|q| q.audit_path.insert(1, some_hash())),
            *leaf,
        ));
    }
    out
}

/// The corruptions of `corruptConsistencyProof` in transparency-dev/merkle's verify_test.go, as
/// (description, proof, old root, new root). None of them may verify (for proofs whose sizes
/// differ: Go checks the same).
pub fn corrupt_consistency(
    p: &ConsistencyProof,
    old: &Hash,
    new: &Hash,
) -> Vec<(String, ConsistencyProof, Hash, Hash)> {
    let with = |f: &dyn Fn(&mut ConsistencyProof)| {
        let mut q = p.clone();
        f(&mut q);
        q
    };
    let mut out = vec![
        ("from - 1".to_owned(), with(&|q| q.from -= 1), *old, *new),
        ("from + 1".to_owned(), with(&|q| q.from += 1), *old, *new),
        ("from ^ 2".to_owned(), with(&|q| q.from ^= 2), *old, *new),
        ("to * 2".to_owned(), with(&|q| q.to *= 2), *old, *new),
        ("to / 2".to_owned(), with(&|q| q.to /= 2), *old, *new),
        ("wrong old root".to_owned(), p.clone(), some_hash(), *new),
        ("wrong new root".to_owned(), p.clone(), *old, some_hash()),
        ("swapped roots".to_owned(), p.clone(), *new, *old),
        (
            "empty path".to_owned(),
            with(&|q| q.path.clear()),
            *old,
            *new,
        ),
        (
            "trailing garbage".to_owned(),
            with(&|q| q.path.push(some_hash())),
            *old,
            *new,
        ),
        (
            "trailing old root".to_owned(),
            with(&|q| q.path.push(*old)),
            *old,
            *new,
        ),
        (
            "trailing new root".to_owned(),
            with(&|q| q.path.push(*new)),
            *old,
            *new,
        ),
        (
            "preceding garbage".to_owned(),
            with(&|q| q.path.insert(0, some_hash())),
            *old,
            *new,
        ),
        (
            "preceding old root".to_owned(),
            with(&|q| q.path.insert(0, *old)),
            *old,
            *new,
        ),
        (
            "preceding new root".to_owned(),
            with(&|q| q.path.insert(0, *new)),
            *old,
            *new,
        ),
    ];
    if let Some(first) = p.path.first() {
        out.push((
            "preceding path[0]".to_owned(),
            with(&|q| q.path.insert(0, *first)),
            *old,
            *new,
        ));
        out.push((
            "truncated path".to_owned(),
            with(&|q| {
                q.path.pop();
            }),
            *old,
            *new,
        ));
    }
    for i in 0..p.path.len() {
        out.push((
            format!("modified path[{i}] bit 4"),
            with(&|q| q.path[i][0] ^= 16),
            *old,
            *new,
        ));
        out.push((
            format!("modified path[{i}] last bit"),
            with(&|q| q.path[i][31] ^= 1),
            *old,
            *new,
        ));
    }
    out
}

/// `cases` cases per property, with failures saved beside the test module that found them
/// (`properties.rs` → `properties.proptest-regressions`), not under `tests/proptest-regressions/`
/// where proptest's default puts them once the tests have a `main.rs`.
pub fn proptest_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}
