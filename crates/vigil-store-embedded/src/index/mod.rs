//! The index side of the store: what answers "which docs match" without reading the log.
//!
//! Every index here is derived: it can be rebuilt from the log ([`crate::log`]).
//! - [`memtable`]: the live, in-memory index of the unsealed segment;
//! - [`sealed`]: the immutable index file of a sealed segment;
//! - [`merge`]: combining adjacent sealed segments, log and index together;
//! - [`lookup`]: what the query plan can ask of either kind of index.
pub(crate) mod lookup;
pub(crate) mod memtable;
pub(crate) mod merge;
pub(crate) mod sealed;
