//! Why an event was refused, field by field.

use std::fmt;

use serde::Serialize;

/// Stable, machine-readable reason an event (or one of its fields) was refused.
/// The HTTP layer maps each to a status (see [`FieldErrorCode::http_status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldErrorCode {
    /// The event is not a JSON object.
    NotAnObject,
    /// A required field (`type`) is absent.
    MissingField,
    /// A field has the wrong JSON type or an invalid value.
    InvalidField,
    /// A server-set field (`tenant`, `seq`, `received_at`, `hash`, `proof`) was sent by the client.
    ReservedField,
    /// A field and one of its aliases were both sent (`type` and `event_type`).
    AmbiguousField,
    /// Objects/arrays nested deeper than `Limits::max_depth`.
    TooDeep,
    /// The serialised event is larger than `Limits::max_event_bytes`.
    EventTooLarge,
    /// An object key is longer than `Limits::max_key_bytes`.
    KeyTooLong,
    /// A string value is longer than `Limits::max_string_bytes`.
    StringTooLong,
    /// More scalar fields than `Limits::max_fields`.
    TooManyFields,
    /// The same id was already stored with different content (decided by the store).
    IdConflict,
    /// The event does not match the JSON Schema registered for its type.
    SchemaViolation,
}

impl FieldErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotAnObject => "not_an_object",
            Self::MissingField => "missing_field",
            Self::InvalidField => "invalid_field",
            Self::ReservedField => "reserved_field",
            Self::AmbiguousField => "ambiguous_field",
            Self::TooDeep => "too_deep",
            Self::EventTooLarge => "event_too_large",
            Self::KeyTooLong => "key_too_long",
            Self::StringTooLong => "string_too_long",
            Self::TooManyFields => "too_many_fields",
            Self::IdConflict => "id_conflict",
            Self::SchemaViolation => "schema_violation",
        }
    }

    /// The HTTP status this reason deserves on its own: 400 for a malformed request
    /// (ambiguous aliases), 413 for size, 409 for an id conflict, 422 for a valid JSON value
    /// that is not a valid event.
    pub fn http_status(self) -> u16 {
        match self {
            Self::AmbiguousField => 400,
            Self::EventTooLarge => 413,
            Self::IdConflict => 409,
            _ => 422,
        }
    }
}

impl fmt::Display for FieldErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem with one field of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Dotted path of the offending field (`actor.id`, `details.items`), `""` for the whole event.
    pub path: String,
    pub code: FieldErrorCode,
    /// Lowercase, human-readable, no trailing period.
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, code: FieldErrorCode, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.code, self.message)
        } else {
            write!(f, "{} at {}: {}", self.code, self.path, self.message)
        }
    }
}

impl std::error::Error for FieldError {}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [FieldErrorCode; 12] = [
        FieldErrorCode::NotAnObject,
        FieldErrorCode::MissingField,
        FieldErrorCode::InvalidField,
        FieldErrorCode::ReservedField,
        FieldErrorCode::AmbiguousField,
        FieldErrorCode::TooDeep,
        FieldErrorCode::EventTooLarge,
        FieldErrorCode::KeyTooLong,
        FieldErrorCode::StringTooLong,
        FieldErrorCode::TooManyFields,
        FieldErrorCode::IdConflict,
        FieldErrorCode::SchemaViolation,
    ];

    #[test]
    fn codes_serialise_as_their_stable_names() {
        for code in ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
            assert_eq!(code.to_string(), code.as_str());
        }
    }

    #[test]
    fn http_statuses() {
        let statuses: Vec<(&str, u16)> =
            ALL.iter().map(|c| (c.as_str(), c.http_status())).collect();
        assert_eq!(
            statuses,
            [
                ("not_an_object", 422),
                ("missing_field", 422),
                ("invalid_field", 422),
                ("reserved_field", 422),
                ("ambiguous_field", 400),
                ("too_deep", 422),
                ("event_too_large", 413),
                ("key_too_long", 422),
                ("string_too_long", 422),
                ("too_many_fields", 422),
                ("id_conflict", 409),
                ("schema_violation", 422),
            ]
        );
    }

    #[test]
    fn display_names_the_path() {
        let e = FieldError::new(
            "actor.id",
            FieldErrorCode::InvalidField,
            "actor.id must be a string",
        );
        assert_eq!(
            e.to_string(),
            "invalid_field at actor.id: actor.id must be a string"
        );
        let e = FieldError::new(
            "",
            FieldErrorCode::NotAnObject,
            "an event must be a JSON object",
        );
        assert_eq!(
            e.to_string(),
            "not_an_object: an event must be a JSON object"
        );
    }
}
