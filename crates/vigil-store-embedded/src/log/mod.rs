//! The log side of the store: the source of truth, as records on disk.
pub(crate) mod record;
pub mod scan;
pub(crate) mod segment;
pub(crate) mod wal;
