//! The log side of the store: the source of truth, as records on disk.
//!
//! A segment's records are first appended to its write-ahead file ([`wal`]) in the encoding of
//! [`record`]; sealing rewrites them into compressed blocks ([`segment`]). Every index
//! (`crate::index`) is derived from these files and can be rebuilt from them; [`scan`] reads
//! them as they are, for `vigil verify`.
pub(crate) mod record;
pub mod scan;
pub(crate) mod segment;
pub(crate) mod wal;
