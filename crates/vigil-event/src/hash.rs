//! Hashes that make the log tamper-evident.
//!
//! `leaf_hash` is the RFC 6962 leaf hash of an event's canonical bytes (the Merkle tree of
//! the integrity layer is built over these); `chain_hash` links each event of a tenant's log to
//! the one before it, so a changed, dropped or reordered event breaks every later link.

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// `SHA-256(0x00 ‖ canonical event bytes)` (RFC 6962 §2.1 leaf hash).
pub fn leaf_hash(canonical: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(canonical);
    h.finalize().into()
}

/// `SHA-256(previous chain hash ‖ leaf hash)`; the chain of a tenant starts from 32 zero bytes.
/// This is the `hash` returned with every event.
pub fn chain_hash(prev: &Hash, leaf: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(leaf);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_hash_is_domain_separated_sha256() {
        // SHA-256 of the single byte 0x00: the RFC 6962 hash of an empty leaf.
        assert_eq!(
            hex::encode(leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }

    #[test]
    fn chain_depends_on_order() {
        let a = leaf_hash(b"a");
        let b = leaf_hash(b"b");
        let zero = [0u8; 32];
        assert_ne!(
            chain_hash(&chain_hash(&zero, &a), &b),
            chain_hash(&chain_hash(&zero, &b), &a)
        );
    }
}
