//! The index side of the store: what answers "which docs match" without reading the log.
pub(crate) mod memtable;
