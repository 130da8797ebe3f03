//! Tamper evidence for vigil's logs.
//!
//! Every tenant's log is an RFC 6962 Merkle tree whose leaf `i` is the event with `seq = i + 1`:
//! leaf hash = SHA-256(0x00 ‖ canonical event bytes), node hash = SHA-256(0x01 ‖ left ‖ right).
//! Stores keep the tree as its *stored hashes* — the leaf hashes plus the root of every complete
//! subtree, laid out in the dense order of Go's `sumdb/tlog` ([`tree::stored_hash_index`]), so
//! appending a leaf writes its hashes once and any root or proof needs O(log n) reads.
//!
//! - [`tree`]: the tree's right edge ([`tree::Frontier`]) that appends compute with, and roots
//!   read from stored hashes.
//! - [`proof`]: inclusion and consistency proofs in vigil's JSON formats, made from stored
//!   hashes and checked without any of them.
//! - [`checkpoint`]: the Ed25519 signing key and C2SP `tlog-checkpoint` signed notes.
//! - [`audit`]: replaying a whole log against its checkpoints, as `vigil verify` does.
//!
//! The Merkle algorithms are those of Go's `sumdb/tlog` (through the `tlog_tiles` port) and
//! the notes those of `c2sp.org/signed-note` (through `signed_note`), so third parties can check
//! vigil's checkpoints and proofs with the Go or Rust reference code.

pub mod audit;
pub mod checkpoint;
pub mod keyfile;
pub mod proof;
pub mod tree;

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// Why a root or proof could not be computed from stored hashes.
#[derive(Debug, thiserror::Error)]
pub enum TreeError<E> {
    /// The request does not fit the tree (an index or size beyond it, `from > to`, ...).
    #[error("{0}")]
    OutOfRange(String),
    /// The store could not read the hashes.
    #[error("reading stored hashes: {0}")]
    Read(E),
    /// The store answered with the wrong number of hashes.
    #[error("the store returned {got} hashes where {want} were asked for")]
    ShortRead { want: usize, got: usize },
}
