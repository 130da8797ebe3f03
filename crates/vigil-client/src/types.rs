//! Request and response bodies of the HTTP API, as the client sees them.
//!
//! These mirror the server's JSON, not its Rust types: the client depends on the wire contract
//! only, so it can talk to any vigil version that keeps it. Unknown response fields are kept in
//! `extra` rather than dropped.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The answer to `POST /v1/events`: every event of the batch, in order, once durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestResponse {
    /// Events in the batch (new and duplicate).
    pub accepted: u64,
    pub events: Vec<Ingested>,
}

impl IngestResponse {
    /// How many events of the batch were already stored (same id, same content).
    pub fn duplicates(&self) -> u64 {
        self.events.iter().filter(|e| e.duplicate).count() as u64
    }
}

/// One acknowledged event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ingested {
    pub id: String,
    /// Position in the tenant's log; for a duplicate, the original's. `None` when the server
    /// runs in bus mode (`202 Accepted`): a writer assigns it when it stores the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// True when the id was already stored with the same content.
    #[serde(default)]
    pub duplicate: bool,
}

/// One page of `GET /v1/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    pub events: Vec<Value>,
    /// Pass back as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Body of `POST /v1/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewKey {
    /// A label; events sent with the key default their `source` to it.
    pub name: String,
    pub tenant: String,
    /// `events:write`, `events:read`, `schemas:write`, `admin`.
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A freshly created API key: the only time its secret is shown.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedKey {
    pub id: String,
    /// The secret, shown once; the server keeps only its hash.
    pub key: String,
    pub name: String,
    pub tenant: String,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

impl fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedKey")
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .field("name", &self.name)
            .field("tenant", &self.tenant)
            .field("scopes", &self.scopes)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// An API key as listed (never with its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub id: String,
    pub name: String,
    pub tenant: String,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Whatever else the server reports (revocation state, last use, …).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Body of `POST /v1/users`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewUser {
    pub username: String,
    pub password: String,
    pub tenant: String,
    pub scopes: Vec<String>,
}

impl fmt::Debug for NewUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewUser")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("tenant", &self.tenant)
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// A user as listed (never with a password or its hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserInfo {
    pub username: String,
    pub tenant: String,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A registered schema as listed by `GET /v1/schemas`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaEntry {
    #[serde(rename = "type")]
    pub event_type: String,
    /// The JSON Schema (draft 2020-12) events of that type must match.
    pub schema: Value,
}

/// A short-lived JWT from `POST /v1/auth/token`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub token: String,
    /// Always `Bearer`.
    pub token_type: String,
    pub expires_at: DateTime<Utc>,
    /// Seconds from issue to expiry.
    pub expires_in: u64,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("token", &"<redacted>")
            .field("token_type", &self.token_type)
            .field("expires_at", &self.expires_at)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// What `GET /v1/events` streams when asked for an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportFormat {
    /// One event JSON object per line (`application/x-ndjson`).
    #[default]
    Ndjson,
    /// A header line, then one row per event (`text/csv`).
    Csv,
}

impl ExportFormat {
    /// The `Accept` header value that selects this format.
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Ndjson => "application/x-ndjson",
            Self::Csv => "text/csv",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug() {
        let key = CreatedKey {
            id: "k1".into(),
            key: "vk_secret_material".into(),
            name: "billing".into(),
            tenant: "acme".into(),
            scopes: vec!["events:write".into()],
            created_at: None,
            expires_at: None,
        };
        assert!(!format!("{key:?}").contains("secret_material"));
        let token = Token {
            token: "eyJ.secret.jwt".into(),
            token_type: "Bearer".into(),
            expires_at: Utc::now(),
            expires_in: 900,
        };
        assert!(!format!("{token:?}").contains("secret"));
        let user = NewUser {
            username: "ann".into(),
            password: "hunter2".into(),
            tenant: "acme".into(),
            scopes: vec![],
        };
        assert!(!format!("{user:?}").contains("hunter2"));
    }

    #[test]
    fn key_info_keeps_unknown_fields() {
        let v = serde_json::json!({
            "id": "k1", "name": "n", "tenant": "acme", "scopes": ["admin"],
            "created_at": "2024-05-01T00:00:00Z", "revoked": false
        });
        let info: KeyInfo = serde_json::from_value(v).unwrap();
        assert_eq!(info.extra.get("revoked"), Some(&Value::Bool(false)));
        assert!(info.expires_at.is_none());
    }

    #[test]
    fn new_key_omits_absent_expiry() {
        let k = NewKey {
            name: "n".into(),
            tenant: "t".into(),
            scopes: vec![],
            expires_at: None,
        };
        let v = serde_json::to_value(&k).unwrap();
        assert!(v.get("expires_at").is_none());
    }
}
