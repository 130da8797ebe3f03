//! An inclusion proof as a client receives it: with the signed checkpoint of its tree size,
//! checked end to end against the log's public key only.

use crate::support::Tree;
use chrono::{TimeZone as _, Utc};
use vigil_integrity::checkpoint::{CheckpointError, SigningKey, VerifierKey, origin};
use vigil_integrity::proof::{InclusionProof, ProofError};
use vigil_integrity::tree::leaf_hash;

fn setup() -> (Tree, SigningKey) {
    let leaves = (0..20u32)
        .map(|i| leaf_hash(format!("event {i}").as_bytes()))
        .collect();
    (
        Tree::new(leaves),
        SigningKey::generate("vigil.example.com").unwrap(),
    )
}

fn attach(mut p: InclusionProof, key: &SigningKey, size: u64, root: &[u8; 32]) -> InclusionProof {
    let at = Utc.timestamp_opt(1_750_000_000, 0).unwrap();
    p.checkpoint = Some(key.sign_checkpoint(&origin("acme"), size, root, at));
    p
}

#[test]
fn a_proof_with_its_checkpoint_verifies_from_json() {
    let (t, key) = setup();
    let p = t.inclusion(12, 20);
    let root = p.root_hash;
    let p = attach(p, &key, 20, &root);
    // What a client gets and parses.
    let json = serde_json::to_string(&p).unwrap();
    let p: InclusionProof = serde_json::from_str(&json).unwrap();
    // What a client is configured with.
    let vkey = VerifierKey::parse(&key.verifier().to_string()).unwrap();
    let checkpoint = p.verify_checkpointed(&t.leaves[12], &vkey).unwrap();
    assert_eq!(
        (checkpoint.origin.as_str(), checkpoint.size),
        ("vigil/acme", 20)
    );
    assert_eq!(checkpoint.timestamp.timestamp(), 1_750_000_000);
}

#[test]
fn what_a_client_refuses() {
    let (t, key) = setup();
    let vkey = key.verifier();
    let p = t.inclusion(3, 20);
    let root = p.root_hash;
    let leaf = t.leaves[3];

    assert!(matches!(
        p.verify_checkpointed(&leaf, &vkey),
        Err(ProofError::NoCheckpoint)
    ));

    // A checkpoint of another size than the proof's.
    let other_root = t.inclusion(3, 19).root_hash;
    let err = attach(p.clone(), &key, 19, &other_root)
        .verify_checkpointed(&leaf, &vkey)
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProofError::CheckpointDisagrees {
                signed_size: 19,
                tree_size: 20,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("the attached checkpoint signs size 19 with root ")
    );

    // A server that signs with another key.
    let rogue = SigningKey::generate("vigil.example.com").unwrap();
    let err = attach(p.clone(), &rogue, 20, &root)
        .verify_checkpointed(&leaf, &vkey)
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProofError::Checkpoint(CheckpointError::UntrustedSigner { .. })
        ),
        "{err}"
    );
    assert_eq!(err.code(), "checkpoint_invalid");

    // A signed checkpoint is no excuse for a path that does not lead to its root.
    let mut bad = attach(p.clone(), &key, 20, &root);
    bad.audit_path[0][0] ^= 1;
    assert!(matches!(
        bad.verify_checkpointed(&leaf, &vkey),
        Err(ProofError::RootMismatch { .. })
    ));
    // Nor is a proof for another leaf.
    let good = attach(p, &key, 20, &root);
    assert!(good.verify_checkpointed(&t.leaves[4], &vkey).is_err());
    assert!(good.verify_checkpointed(&leaf, &vkey).is_ok());
}
