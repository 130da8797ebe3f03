//! vigil-api's integration tests, one binary: the real router over the real embedded store in
//! a temporary directory, driven without a socket through `tower::ServiceExt::oneshot` (plus a
//! few tests through a real port). One module per area of the API; [`support`] builds the test
//! app and holds the request helpers every module uses.
//!
//! - [`ingest`]: posting events, their body shapes, refusals and limits.
//! - [`schemas`]: registering schemas and validating events against them.
//! - [`auth`]: credentials, scopes, tenants, token exchange, rate limits.
//! - [`credentials`]: Ed25519 JWTs, capped lifetimes, the last root credential, throttled
//!   failures per source address (through a real port).
//! - [`keys`]: creating, listing and revoking API keys.
//! - [`users`]: user accounts and password login.
//! - [`queries`]: pages of events, filters, count, one event by id.
//! - [`export`]: NDJSON and CSV export.
//! - [`integrity`]: checkpoints and proofs.
//! - [`ops`]: health, readiness, metrics, OpenAPI, routing, timeouts, `serve`.
//! - [`nodes`]: several nodes over one store.

mod support;

mod auth;
mod credentials;
mod export;
mod ingest;
mod integrity;
mod keys;
mod nodes;
mod ops;
mod queries;
mod schemas;
mod users;
