//! The vigil event model: what an event is, and how a client's JSON becomes one.
//!
//! This crate is the first stage of the ingest flow (parse → **normalise → validate** → append
//! → index → query). It is pure and synchronous: no I/O, no async, so it can be property-tested
//! and used by every other crate (the HTTP API, the NATS writer, the store, the query planner).
//!
//! # Flow
//! 0. [`parse_event`] turns bytes into a JSON value, refusing duplicate keys and never
//!    recursing past the depth limit ([`parse_document`] for JSON that is not an event).
//! 1. [`normalize`] turns one client JSON value into a [`Submitted`] event: aliases resolved
//!    (`event_type` → `type`, `username` → `actor.id`, …), envelope fields checked, limits
//!    enforced, a content digest computed for idempotency.
//! 2. [`Submitted::prepare`] applies server defaults (id, time, severity, source) and the
//!    server-set `tenant` and `received_at`, giving a [`Prepared`] event whose canonical bytes
//!    are known except for `seq`, which only the store's writer can assign.
//! 3. [`Prepared::canonical_bytes`] splices in `seq` and yields the RFC 8785 (JCS) bytes that are
//!    stored, hashed ([`leaf_hash`], [`chain_hash`]) and returned on read.
//! 4. [`flatten`] lists every scalar `(path, value)` of an event: what the store indexes, as
//!    [`Term`] bytes whose order is the value order ([`Prepared::terms`] has them precomputed).
//! 5. [`with_hash`] adds the chain hash for clients; [`resolve_path_alias`] applies the same
//!    aliases to query paths.
//!
//! # Example
//! ```
//! use vigil_event::{normalize, Limits, Scalar, Term, TenantId, Timestamp};
//!
//! let raw = serde_json::json!({"event_type": "login.failed", "username": "u-7", "criticality": 8});
//! let submitted = normalize(raw, &Limits::default()).unwrap();
//! assert_eq!(submitted.event_type.as_str(), "login.failed");
//!
//! let tenant = TenantId::parse("acme").unwrap();
//! let prepared = submitted.prepare(&tenant, Timestamp::from_nanos(1_700_000_000_000_000_000), "billing");
//! let bytes = prepared.canonical_bytes(1);
//! let stored: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
//! assert_eq!(stored["actor"]["id"], "u-7");
//! assert_eq!(stored["severity"], 8);
//! assert_eq!(stored["seq"], 1);
//! let term = Term::new("actor.id", Scalar::String("u-7"));
//! assert!(prepared.terms().any(|t| t == term.as_bytes()));
//! ```

mod canonical;
mod error;
mod flatten;
mod hash;
mod json;
mod limits;
mod normalize;
mod term;
#[cfg(test)]
mod test_support;
mod types;

pub use canonical::{Prepared, to_canonical_bytes, with_hash};
pub use error::{FieldError, FieldErrorCode};
pub use flatten::{Scalar, flatten};
pub use hash::{Hash, chain_hash, leaf_hash};
pub use json::{JsonError, MAX_NESTING, StrictValue, parse_document, parse_event};
pub use limits::Limits;
pub use normalize::{
    ALIASES, MAX_FIELD_ERRORS, MAX_SAFE_INTEGER, Submitted, normalize, resolve_path_alias,
};
pub use term::{Term, TermKind};
pub use types::{EventId, EventType, Severity, TenantId, Timestamp};

/// Envelope fields the server sets; a client event that carries one is rejected
/// (`reserved_field`) rather than silently rewritten. `proof` is the member
/// `GET /v1/events/{id}?proof=true` adds beside `hash`: verifiers drop both to recover the
/// hashed bytes, so an event may not carry either.
pub const RESERVED_FIELDS: [&str; 5] = ["tenant", "seq", "received_at", "hash", "proof"];
