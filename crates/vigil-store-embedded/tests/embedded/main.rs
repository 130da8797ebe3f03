//! The embedded store's integration tests, one binary (linking a binary per file dominated
//! `cargo test` time): each module is one area, `support` holds what several share.
//!
//! Modules run in one process, in parallel: each test works in its own temporary directory,
//! which is also what the fsync fault hook (`FsyncFault`) is keyed by, so no test sees
//! another's store or fault.

mod conformance;
mod merkle;
mod model;
mod recovery;
mod support;
