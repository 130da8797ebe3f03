//! vigil-bus's integration tests, one binary: each module starts real nats-server processes
//! of its own (`vigil_bus::testing::PrivateNats`, on free ports), so the modules run in
//! parallel in this one process without sharing a server.
//!
//! - [`connect`]: credentials carried by a `nats://user:password@host` URL.
//! - [`permissions`]: the least-privilege configuration of `deploy/nats/`, role by role.
//! - [`tls`]: TLS with client certificates.

mod connect;
mod permissions;
mod tls;
