//! vigil-integrity's integration tests, one binary (linking a binary per file dominated
//! `cargo test` time): published vectors, properties over every tree size, and proofs checked
//! end to end with their signed checkpoints; `support` holds the in-memory tree and the
//! corruptions they share. Nothing here touches process-wide state, so the modules run in
//! parallel freely.

mod checkpointed;
mod properties;
mod support;
mod vectors;
