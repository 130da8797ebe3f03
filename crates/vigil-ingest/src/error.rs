//! Why admission or a schema change failed: the per-event errors of a refused batch
//! ([`ItemError`], [`Refused`]), of a refused message ([`Refusal`]), and of the schema registry
//! ([`IngestError`]). The edges map them to what they answer: an HTTP status and JSON body in
//! `vigil-api`, a dead letter in `vigil-bus`.

use serde::Serialize;
use vigil_event::{FieldError, FieldErrorCode};
use vigil_store::StoreError;

/// One problem with one event of a batch: which event (`index`, 0-based position in the
/// request), which field (`path`, `""` for the whole event) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemError {
    pub index: usize,
    pub path: String,
    pub code: FieldErrorCode,
    pub message: String,
}

/// A batch refused whole: nothing of it may be stored. `errors` lists every failing event and
/// field, in batch order, never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Events in the batch.
    pub total: usize,
    pub errors: Vec<ItemError>,
}

/// Why one event, sent alone (one bus message), cannot be admitted: a stable code and a
/// message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `invalid_json`, `event_too_large`, `invalid_event`, or a field error's code.
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    /// Field errors as one refusal: the first error's code, every message.
    pub fn from_field_errors(errors: &[FieldError]) -> Self {
        let code = errors.first().map_or("invalid_event", |e| e.code.as_str());
        let message = errors
            .iter()
            .map(|e| {
                if e.path.is_empty() {
                    e.message.clone()
                } else {
                    format!("{}: {}", e.path, e.message)
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        Self { code, message }
    }
}

/// A failed schema registration, removal or reload.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The document sent is not a schema vigil can apply.
    #[error("invalid schema: {0}")]
    InvalidSchema(String),
    #[error("the tenant already has {limit} schemas, the most allowed")]
    TooManySchemas { limit: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl IngestError {
    /// Stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidSchema(_) => "invalid_schema",
            Self::TooManySchemas { .. } => "too_many_schemas",
            Self::Store(e) => e.code(),
            Self::Internal(_) => "internal",
        }
    }
}
