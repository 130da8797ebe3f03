//! Proofs for every tree size from 1 to 1000, checked against roots computed straight from the
//! RFC 6962 definition and against the independent Go port (`tlog_tiles`); plus random proofs
//! with random corruptions, none of which may verify.

use crate::support::{Tree, corrupt_consistency, corrupt_inclusion, reference_root};
use proptest::prelude::*;
use vigil_integrity::Hash;
use vigil_integrity::proof::{ConsistencyProof, InclusionProof};
use vigil_integrity::tree::leaf_hash;

const MAX: u64 = 1000;

fn tree() -> &'static (Tree, Vec<Hash>) {
    static TREE: std::sync::OnceLock<(Tree, Vec<Hash>)> = std::sync::OnceLock::new();
    TREE.get_or_init(|| {
        let leaves: Vec<Hash> = (0..MAX)
            .map(|i| leaf_hash(format!("event {i}").as_bytes()))
            .collect();
        // roots[n] is the root of the first n leaves, from the definition.
        let roots = (0..=MAX as usize)
            .map(|n| reference_root(&leaves[..n]))
            .collect();
        (Tree::new(leaves), roots)
    })
}

/// A deterministic spread of other sizes to pair with `n`.
fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

#[test]
fn every_size_up_to_1000() {
    let (t, roots) = tree();
    for n in 1..=MAX {
        let root = roots[n as usize];
        let r = xorshift(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut leaves = vec![0, n - 1, n / 2, r % n];
        leaves.dedup();
        for &i in &leaves {
            let p = t.inclusion(i, n);
            assert_eq!(p.root_hash, root, "root of {n}");
            p.verify(&t.leaves[i as usize]).unwrap();
            // The Go algorithms (ported by tlog_tiles) make the same path.
            let go = tlog_tiles::prove_record(n, i, t).unwrap();
            assert_eq!(
                p.audit_path,
                go.iter().map(|h| h.0).collect::<Vec<_>>(),
                "leaf {i} of {n}"
            );
            if i == 0 || i == n - 1 {
                for (what, bad, leaf) in corrupt_inclusion(&p, &t.leaves[i as usize]) {
                    assert!(
                        bad.verify(&leaf).is_err(),
                        "{what} verified for leaf {i} of {n}"
                    );
                }
            }
        }
        // From a random older size to n, and from n to a random newer size.
        for (m, k) in [(1 + r % n, n), (n, n + (r >> 20) % (MAX - n + 1)), (n, MAX)] {
            let p = t.consistency(m, k);
            p.verify(&roots[m as usize], &roots[k as usize]).unwrap();
            let go = tlog_tiles::prove_tree(k, m, t).unwrap();
            assert_eq!(
                p.path,
                go.iter().map(|h| h.0).collect::<Vec<_>>(),
                "{m} -> {k}"
            );
            if m < k {
                for (what, bad, old, new) in
                    corrupt_consistency(&p, &roots[m as usize], &roots[k as usize])
                {
                    assert!(
                        bad.verify(&old, &new).is_err(),
                        "{what} verified for {m} -> {k}"
                    );
                }
            }
        }
    }
}

/// One way of spoiling a proof.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit { element: usize, bit: u8 },
    Index(u64),
    Truncate,
    Extend(Hash),
    Prepend(Hash),
    Replace { element: usize, with: Hash },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..=255).prop_map(|(element, bit)| Mutation::FlipBit { element, bit }),
        (1..MAX).prop_map(Mutation::Index),
        Just(Mutation::Truncate),
        any::<[u8; 32]>().prop_map(Mutation::Extend),
        any::<[u8; 32]>().prop_map(Mutation::Prepend),
        (any::<usize>(), any::<[u8; 32]>())
            .prop_map(|(element, with)| Mutation::Replace { element, with }),
    ]
}

/// Applies `m` to `path`; `false` when it does not apply (nothing to flip, truncate, ...).
fn spoil(path: &mut Vec<Hash>, m: &Mutation) -> bool {
    match *m {
        Mutation::FlipBit { element, bit } if !path.is_empty() => {
            let e = element % path.len();
            path[e][usize::from(bit / 8)] ^= 1 << (bit % 8);
        }
        Mutation::Truncate if !path.is_empty() => {
            path.pop();
        }
        Mutation::Extend(h) => path.push(h),
        Mutation::Prepend(h) => path.insert(0, h),
        Mutation::Replace { element, with } if !path.is_empty() => {
            let e = element % path.len();
            if path[e] == with {
                return false;
            }
            path[e] = with;
        }
        _ => return false,
    }
    true
}

proptest! {
    #![proptest_config(crate::support::proptest_config(512))]

    #[test]
    fn random_inclusion_proofs(size in 1..=MAX, leaf in any::<u64>(), m in mutation()) {
        let (t, roots) = tree();
        let leaf = leaf % size;
        let p = t.inclusion(leaf, size);
        prop_assert_eq!(p.root_hash, roots[size as usize]);
        prop_assert!(p.verify(&t.leaves[leaf as usize]).is_ok());
        let mut bad: InclusionProof = p.clone();
        let applies = match m {
            Mutation::Index(d) => {
                bad.leaf_index = (leaf + d) % size;
                bad.leaf_index != leaf
            }
            ref m => spoil(&mut bad.audit_path, m),
        };
        if applies {
            prop_assert!(bad.verify(&t.leaves[leaf as usize]).is_err(), "{:?} verified", m);
        }
    }

    #[test]
    fn random_consistency_proofs(a in 1..=MAX, b in 1..=MAX, m in mutation()) {
        let (t, roots) = tree();
        let (from, to) = (a.min(b), a.max(b));
        let p = t.consistency(from, to);
        let (old, new) = (roots[from as usize], roots[to as usize]);
        prop_assert!(p.verify(&old, &new).is_ok());
        let mut bad: ConsistencyProof = p.clone();
        let applies = match m {
            Mutation::Index(d) => {
                bad.from = 1 + (from - 1 + d) % to;
                bad.from != from
            }
            ref m => spoil(&mut bad.path, m),
        };
        if applies && from < to {
            prop_assert!(bad.verify(&old, &new).is_err(), "{:?} verified", m);
        }
    }

    #[test]
    fn verification_never_panics(
        leaf_index in any::<u64>(),
        tree_size in any::<u64>(),
        from in any::<u64>(),
        to in any::<u64>(),
        path in proptest::collection::vec(any::<[u8; 32]>(), 0..80),
    ) {
        let p = InclusionProof { leaf_index, tree_size, root_hash: [0; 32], audit_path: path.clone(), checkpoint: None };
        let _ = p.verify(&[1; 32]);
        let c = ConsistencyProof { from, to, path };
        let _ = c.verify(&[1; 32], &[2; 32]);
    }
}
