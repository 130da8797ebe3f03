//! The PostgreSQL store's integration tests, one binary (linking a binary per file dominated
//! `cargo test` time): each module is one area, `support` holds what several share.
//!
//! Modules run in one process, in parallel, against the local server (`VIGIL_TEST_POSTGRES`):
//! each test creates its own database (`TestDatabase`), and `restart` runs private servers of
//! its own, so no test sees another's tables, and crashing a server stops no one else.

mod audit;
mod conformance;
mod hostile;
mod merkle;
mod model;
mod nodes;
mod plans;
mod restart;
mod schema;
mod support;
