//! Newtypes that can only hold valid values ("parse, don't validate").

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{FieldError, FieldErrorCode};

/// A tenant name: 1–64 characters of `[A-Za-z0-9_-]`. It appears in NATS subjects
/// (`events.<tenant>`) and file names, so dots, wildcards and spaces are excluded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

impl TenantId {
    pub const MAX_LEN: usize = 64;

    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(FieldError::new(
                "tenant",
                FieldErrorCode::InvalidField,
                format!(
                    "tenant must be 1-{} characters of [A-Za-z0-9_-]",
                    Self::MAX_LEN
                ),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An event type: 1–128 characters of `[A-Za-z0-9._:/-]` (`account.created`, `login.failed`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EventType(String);

impl EventType {
    pub const MAX_LEN: usize = 128;

    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(FieldError::new(
                "type",
                FieldErrorCode::InvalidField,
                format!(
                    "type must be 1-{} characters of [A-Za-z0-9._:/-]",
                    Self::MAX_LEN
                ),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An event id: 1–128 characters of `[A-Za-z0-9._:@+~-]`. Ids travel in URL paths
/// (`GET /v1/events/{id}`) and NATS headers (`Nats-Msg-Id`), so `/`, spaces and control
/// characters are excluded. Server-assigned ids are UUIDv7.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EventId(String);

impl EventId {
    pub const MAX_LEN: usize = 128;

    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:@+~-".contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(FieldError::new(
                "id",
                FieldErrorCode::InvalidField,
                format!(
                    "id must be 1-{} characters of [A-Za-z0-9._:@+~-]",
                    Self::MAX_LEN
                ),
            ))
        }
    }

    /// A fresh, time-ordered id (UUIDv7).
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Criticality 0–10; 0 when the client says nothing.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(try_from = "u8", into = "u8")]
pub struct Severity(u8);

impl Severity {
    pub const MAX: u8 = 10;

    pub fn new(v: u8) -> Result<Self, FieldError> {
        if v <= Self::MAX {
            Ok(Self(v))
        } else {
            Err(FieldError::new(
                "severity",
                FieldErrorCode::InvalidField,
                "severity must be an integer from 0 to 10",
            ))
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

/// An instant as nanoseconds since the Unix epoch (UTC). Covers 1677-09-21 to 2262-04-11;
/// a time outside that range is rejected at ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_nanos(n: i64) -> Self {
        Self(n)
    }

    pub const fn as_nanos(self) -> i64 {
        self.0
    }

    pub fn now() -> Self {
        Self(chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX))
    }

    /// Parses an RFC 3339 date-time (any offset; converted to UTC).
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .and_then(|t| t.timestamp_nanos_opt())
            .map(Self)
    }

    /// RFC 3339 in UTC with a `Z` suffix and only as many fractional digits as needed
    /// (0, 3, 6 or 9): `2024-05-01T12:00:00.250Z`.
    pub fn to_rfc3339(self) -> String {
        chrono::DateTime::from_timestamp_nanos(self.0)
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

macro_rules! string_newtype_impls {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $t {
            type Error = FieldError;
            fn try_from(s: String) -> Result<Self, FieldError> {
                Self::parse(&s)
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
    )*};
}
string_newtype_impls!(TenantId, EventType, EventId);

impl TryFrom<u8> for Severity {
    type Error = FieldError;
    fn try_from(v: u8) -> Result<Self, FieldError> {
        Self::new(v)
    }
}

impl From<Severity> for u8 {
    fn from(v: Severity) -> u8 {
        v.0
    }
}
