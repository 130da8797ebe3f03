//! Client JSON → [`Submitted`]: aliases resolved, envelope checked, limits enforced.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::canonical::Prepared;
use crate::error::FieldError;
use crate::hash::Hash;
use crate::limits::Limits;
use crate::types::{EventId, EventType, Severity, TenantId, Timestamp};

/// Field aliases accepted so existing producers work unchanged: `(alias, canonical path)`.
/// The same table resolves field paths in queries (`event_type=x` finds `type` = x).
pub const ALIASES: &[(&str, &str)] = &[
    ("event_id", "id"),
    ("event_type", "type"),
    ("timestamp", "time"),
    ("criticality", "severity"),
    ("user_id", "actor.id"),
    ("username", "actor.id"),
    ("src_service", "source"),
    ("event_details", "details"),
    ("event_specificdetails", "details"),
    ("app_data", "details"),
];

/// Resolves a query field path through [`ALIASES`]: `event_type` → `type`,
/// `app_data.plan` → `details.plan`. Paths without an alias come back unchanged.
pub fn resolve_path_alias(path: &str) -> Cow<'_, str> {
    todo!()
}

/// A valid, normalised event as the client sent it: no server-set fields, no defaults yet.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    pub id: Option<EventId>,
    pub event_type: EventType,
    pub time: Option<Timestamp>,
    pub severity: Option<Severity>,
    pub source: Option<String>,
    /// The whole normalised object: aliases renamed to their canonical paths, `time` rewritten
    /// as RFC 3339 UTC ([`Timestamp::to_rfc3339`]), every other key kept as sent.
    pub body: Map<String, Value>,
    /// SHA-256 of the canonical (RFC 8785) bytes of `body`: two submissions with the same id are
    /// "the same event" exactly when their digests are equal (idempotent retries).
    pub content_digest: Hash,
}

/// Validates and normalises one client event. Returns every problem found, not just the first.
pub fn normalize(value: Value, limits: &Limits) -> Result<Submitted, Vec<FieldError>> {
    todo!()
}

impl Submitted {
    /// Applies server defaults and server-set fields: `id` (UUIDv7) if absent, `time` =
    /// `received_at` if absent, `severity` = 0 if absent, `source` = `default_source` (the
    /// credential's name) if absent; `tenant` and `received_at` from the server.
    pub fn prepare(self, tenant: &TenantId, received_at: Timestamp, default_source: &str) -> Prepared {
        todo!()
    }
}
