//! The `vigil` binary tested from outside, one test binary: each test runs the real server
//! (`env!("CARGO_BIN_EXE_vigil")`) as a child process on port 0 over a directory of its own,
//! and talks to it over HTTP, the CLI or NATS.
//!
//! The modules run in parallel in this one process, so nothing here touches process-wide
//! state: servers get their settings as flags and a scrubbed environment, never through this
//! process's environment or working directory; every PostgreSQL database, NATS namespace and
//! private server a test uses has a name unique to the test.
//!
//! - [`common`]: the harness (start, stop and kill servers; clients; `on_every_backend!`).
//! - [`api`]: the HTTP API through a real port, on every store.
//! - [`connections`]: header-read timeout, connection cap, the shutdown deadline.
//! - [`cli`]: the command line: quick start, admin, import/export, configuration, bench.
//! - [`distributed`]: bus-mode ingest, the writer and reader, over NATS JetStream.
//! - [`durability`]: restarts, `kill -9`, torn tails, a crashing PostgreSQL.
//! - [`generate_nats`]: `vigil generate --nats` and `vigil last --nats`.
//! - [`integrity`]: checkpoints, proofs, `vigil verify` and attacks on a stopped log.
//! - [`credentials`]: the JWT key file, its pinning in PostgreSQL, offline root key recovery.
//! - [`hardening`]: repeated keys, deep nesting, compressed bodies, malformed HTTP.

#[macro_use]
mod common;

mod api;
mod cli;
mod connections;
mod credentials;
mod distributed;
mod durability;
mod generate_nats;
mod hardening;
mod integrity;
