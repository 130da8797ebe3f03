//! Published RFC 6962 vectors of transparency-dev/merkle (see `testdata/README.md`): our roots,
//! stored hashes and generated proofs must equal them, our verification must accept them, and
//! must refuse every corruption transparency-dev/merkle's own tests try.

use crate::support::{Tree, block_on, corrupt_consistency, corrupt_inclusion};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use vigil_integrity::Hash;
use vigil_integrity::proof::{ConsistencyProof, InclusionProof, prove_inclusion};
use vigil_integrity::tree::{Frontier, leaf_hash, stored_hash_index, tree_root};

#[derive(Deserialize)]
struct Vectors {
    leaf_inputs: Vec<String>,
    node_hashes: Vec<Vec<String>>,
    root_hashes: Vec<String>,
    compact_trees: Vec<Vec<[u64; 2]>>,
    inclusion_proofs: Vec<PublishedInclusion>,
    consistency_proofs: Vec<PublishedConsistency>,
}

#[derive(Deserialize)]
struct PublishedInclusion {
    /// 1-based, as published.
    leaf: u64,
    size: u64,
    proof: Vec<String>,
}

#[derive(Deserialize)]
struct PublishedConsistency {
    size1: u64,
    size2: u64,
    proof: Vec<String>,
}

fn h(s: &str) -> Hash {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).unwrap();
    out
}

fn hs(v: &[String]) -> Vec<Hash> {
    v.iter().map(|s| h(s)).collect()
}

fn b64(s: &str) -> Hash {
    BASE64.decode(s).unwrap().try_into().unwrap()
}

fn vectors() -> Vectors {
    serde_json::from_str(include_str!("../../testdata/rfc6962_vectors.json")).unwrap()
}

fn tree(v: &Vectors) -> Tree {
    Tree::new(
        v.leaf_inputs
            .iter()
            .map(|d| leaf_hash(&hex::decode(d).unwrap()))
            .collect(),
    )
}

#[test]
fn roots_node_hashes_and_frontiers() {
    let v = vectors();
    let t = tree(&v);
    let roots = hs(&v.root_hashes);
    assert_eq!(roots.len(), 9);
    let mut frontier = Frontier::new();
    assert_eq!(frontier.root(), roots[0]);
    for (n, leaf) in t.leaves.iter().enumerate() {
        frontier.push(*leaf, |_| {});
        let size = n as u64 + 1;
        assert_eq!(frontier.root(), roots[n + 1], "size {size}");
        // The compact tree of the published data is our frontier.
        let compact: Vec<Hash> = v.compact_trees[n + 1]
            .iter()
            .map(|&[level, i]| h(&v.node_hashes[level as usize][i as usize]))
            .collect();
        assert_eq!(frontier.roots(), compact.as_slice(), "size {size}");
        let read = block_on(tree_root(size, async |idx: Vec<u64>| {
            Ok::<_, ()>(idx.iter().map(|&i| t.stored[i as usize]).collect())
        }))
        .unwrap();
        assert_eq!(read, roots[n + 1]);
    }
    // Every published node hash is the stored hash where tlog puts it.
    for (level, row) in v.node_hashes.iter().enumerate() {
        for (i, hash) in row.iter().enumerate() {
            assert_eq!(
                t.stored[stored_hash_index(level as u8, i as u64) as usize],
                h(hash)
            );
        }
    }
}

#[test]
fn inclusion_proofs() {
    let v = vectors();
    let t = tree(&v);
    let roots = hs(&v.root_hashes);
    let mut checked = 0;
    for p in &v.inclusion_proofs {
        if p.leaf == 0 {
            // The entry Go's test skips: no leaf 0 (1-based) in no tree.
            assert!(
                block_on(prove_inclusion(0, p.size, async |_: Vec<u64>| Ok::<_, ()>(
                    vec![]
                )))
                .is_err()
            );
            continue;
        }
        let index = p.leaf - 1;
        let leaf = t.leaves[index as usize];
        let ours = t.inclusion(index, p.size);
        let published = InclusionProof {
            leaf_index: index,
            tree_size: p.size,
            root_hash: roots[p.size as usize],
            audit_path: hs(&p.proof),
            checkpoint: None,
        };
        assert_eq!(ours, published, "leaf {index} of {}", p.size);
        published.verify(&leaf).unwrap();
        let json = serde_json::to_string(&published).unwrap();
        assert_eq!(
            serde_json::from_str::<InclusionProof>(&json).unwrap(),
            published
        );
        for (what, bad, leaf) in corrupt_inclusion(&published, &leaf) {
            assert!(
                bad.verify(&leaf).is_err(),
                "{what} verified for leaf {index} of {}",
                p.size
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 5);
}

#[test]
fn consistency_proofs() {
    let v = vectors();
    let t = tree(&v);
    let roots = hs(&v.root_hashes);
    for p in &v.consistency_proofs {
        let (old, new) = (roots[p.size1 as usize], roots[p.size2 as usize]);
        let published = ConsistencyProof {
            from: p.size1,
            to: p.size2,
            path: hs(&p.proof),
        };
        assert_eq!(
            t.consistency(p.size1, p.size2),
            published,
            "{} -> {}",
            p.size1,
            p.size2
        );
        published.verify(&old, &new).unwrap();
        if published.path.is_empty() {
            continue;
        }
        for (what, bad, old, new) in corrupt_consistency(&published, &old, &new) {
            assert!(
                bad.verify(&old, &new).is_err(),
                "{what} verified for {} -> {}",
                p.size1,
                p.size2
            );
        }
    }
}

#[derive(Deserialize)]
struct ProbeFiles {
    files: Vec<ProbeFile>,
}

#[derive(Deserialize)]
struct ProbeFile {
    path: String,
    file: serde_json::Value,
}

#[test]
fn transparency_dev_testdata_happy_paths() {
    let v = vectors();
    let t = tree(&v);
    let probes: ProbeFiles = serde_json::from_str(include_str!(
        "../../testdata/transparency_dev_merkle_testdata.json"
    ))
    .unwrap();
    let list = |v: &serde_json::Value| -> Vec<Hash> {
        v.as_array()
            .map(|a| a.iter().map(|s| b64(s.as_str().unwrap())).collect())
            .unwrap_or_default()
    };
    let (mut inclusion, mut consistency) = (0, 0);
    for probe in &probes.files {
        let f = &probe.file;
        assert_eq!(f["wantErr"], false, "{}", probe.path);
        if probe.path.starts_with("testdata/inclusion/") {
            let p = InclusionProof {
                leaf_index: f["leafIdx"].as_u64().unwrap(),
                tree_size: f["treeSize"].as_u64().unwrap(),
                root_hash: b64(f["root"].as_str().unwrap()),
                audit_path: list(&f["proof"]),
                checkpoint: None,
            };
            let leaf = b64(f["leafHash"].as_str().unwrap());
            assert_eq!(leaf, t.leaves[p.leaf_index as usize], "{}", probe.path);
            p.verify(&leaf).unwrap();
            assert_eq!(t.inclusion(p.leaf_index, p.tree_size), p, "{}", probe.path);
            inclusion += 1;
        } else {
            let p = ConsistencyProof {
                from: f["size1"].as_u64().unwrap(),
                to: f["size2"].as_u64().unwrap(),
                path: list(&f["proof"]),
            };
            p.verify(
                &b64(f["root1"].as_str().unwrap()),
                &b64(f["root2"].as_str().unwrap()),
            )
            .unwrap();
            assert_eq!(t.consistency(p.from, p.to), p, "{}", probe.path);
            consistency += 1;
        }
    }
    assert_eq!((inclusion, consistency), (5, 5));
}
