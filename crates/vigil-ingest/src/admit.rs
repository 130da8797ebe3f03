//! Admission: JSON values become events ready to append or to publish, or the list of what is
//! wrong with them.
//!
//! The one path every event takes in, whichever edge it came through: HTTP (`POST /v1/events`,
//! a batch of values) or the bus (a JetStream message, one event). Each event is normalised
//! ([`vigil_event::normalize`]: aliases, types, limits), checked against the JSON Schema its
//! tenant registered for its type ([`crate::schemas`]), then prepared: defaults and server-set
//! fields for the store ([`Ready::Append`]), or serialised for publishing, a writer preparing it
//! later ([`Ready::Publish`]).
//!
//! An [`Admitter`] holds what every admission shares (limits, the schema registry); an
//! [`Intake`] is one admission: who sent the events and when, with the tenant's schemas as they
//! stood when it began. The steps are synchronous, so property tests can drive them and the
//! edges decide where they run: a schema is tenant-supplied code in effect, so an edge runs
//! admission off the async runtime when a batch is large or meets a schema
//! ([`Intake::meets_a_schema`]).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use vigil_event::{
    EventId, FieldError, FieldErrorCode, Limits, Prepared, Submitted, TenantId, Timestamp,
    normalize,
};
use vigil_store::Store;

use crate::error::{IngestError, ItemError, Refusal, Refused};
use crate::schemas::{SchemaLimits, SchemaRegistry, TenantSchemas, validate_body};

/// What [`Admitter::load`] needs.
#[derive(Debug, Clone)]
pub struct AdmitConfig {
    /// Bounds on one event (size, depth, fields), enforced by normalisation.
    pub limits: Limits,
    /// Bounds on what one tenant may register.
    pub schema_limits: SchemaLimits,
    /// How often the schema document is reloaded from the store (longer than zero), for
    /// schemas other processes sharing the store register or delete.
    pub schema_refresh_interval: Duration,
}

/// Admits events: the event limits and every tenant's schemas. Cheap to clone; clones share
/// the schema registry.
#[derive(Debug, Clone)]
pub struct Admitter {
    limits: Limits,
    schemas: SchemaRegistry,
}

impl Admitter {
    pub fn new(limits: Limits, schemas: SchemaRegistry) -> Self {
        Self { limits, schemas }
    }

    /// Loads the schema registry from `store` (see [`SchemaRegistry::load`]).
    pub async fn load(store: Arc<dyn Store>, config: AdmitConfig) -> Result<Self, IngestError> {
        let schemas =
            SchemaRegistry::load(store, config.schema_limits, config.schema_refresh_interval)
                .await?;
        Ok(Self::new(config.limits, schemas))
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The schema registry events are checked against.
    pub fn schemas(&self) -> &SchemaRegistry {
        &self.schemas
    }

    /// Begins admitting events from `origin`, against its tenant's schemas as they stand now
    /// (none when `origin.validated`).
    pub fn intake(&self, origin: Origin) -> Intake {
        let schemas = if origin.validated {
            Arc::default()
        } else {
            self.schemas.for_tenant(&origin.tenant)
        };
        Intake::new(self.limits.clone(), schemas, origin)
    }
}

/// Who sent events and when they arrived: what an event that does not say takes, and what the
/// server sets.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The tenant of the credential (HTTP) or of the subject (bus): never the event's say.
    pub tenant: TenantId,
    /// `source` of an event that names none: the credential's name (HTTP), or what a message
    /// says (`Vigil-Source`, else `nats`).
    pub default_source: String,
    /// When the events arrived: the default `time`, and `received_at`.
    pub received_at: Timestamp,
    /// The id of an event that carries none; `None`: a fresh UUIDv7. A bus message gives one
    /// that is the same on every redelivery, so a redelivered id-less event is a duplicate,
    /// not a second event.
    pub default_id: Option<EventId>,
    /// Published by a vigil api node that already checked it against the limits and schemas
    /// (`Vigil-Validated`): not checked against the schemas again, and limits leave room for
    /// the `id` the node added. Checking again could dead-letter an event the node answered
    /// `202` for (a schema tightened meanwhile, `additionalProperties: false` without `id`).
    pub validated: bool,
}

/// What admitted events become: the route chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// Prepared for [`Store::append`].
    Append,
    /// Serialised for publishing to the event stream, each within `max_message_bytes`.
    Publish { max_message_bytes: usize },
}

/// An event as published for a writer to prepare and store: its id (also the message id, for
/// de-duplication), its normalised body, and the `source` it takes when it names none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publishable {
    pub id: EventId,
    pub payload: Vec<u8>,
    pub default_source: String,
}

/// An admitted batch, in the form its [`Destination`] takes.
#[derive(Debug)]
pub enum Ready {
    Append(Vec<Prepared>),
    Publish(Vec<Publishable>),
}

impl Ready {
    pub fn len(&self) -> usize {
        match self {
            Self::Append(events) => events.len(),
            Self::Publish(events) => events.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Each event of a batch normalised, or why it could not be, in batch order.
#[derive(Debug)]
pub struct Normalized(Vec<Result<Submitted, Vec<FieldError>>>);

/// One admission: the events of one request or message, from one [`Origin`]. Owned, so it can
/// move to a blocking thread.
#[derive(Debug)]
pub struct Intake {
    limits: Limits,
    schemas: Arc<TenantSchemas>,
    origin: Origin,
}

impl Intake {
    /// An admission against `schemas` (an [`Admitter`] gives the tenant's current ones). When
    /// `origin.validated`, the schemas are not applied and limits leave room for what an api
    /// node adds.
    pub fn new(mut limits: Limits, mut schemas: Arc<TenantSchemas>, origin: Origin) -> Self {
        if origin.validated {
            limits.max_event_bytes = limits.max_event_bytes.saturating_add(4096);
            limits.max_fields = limits.max_fields.saturating_add(2);
            schemas = Arc::default();
        }
        Self {
            limits,
            schemas,
            origin,
        }
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The bounds this admission enforces; an edge parsing a body takes `max_depth` from them
    /// ([`vigil_event::parse_event`]).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Normalises, schema-checks and prepares every event of a batch: all of them, or the
    /// list of every failing event and field, in batch order.
    pub fn admit(&self, values: Vec<Value>, destination: Destination) -> Result<Ready, Refused> {
        self.finish(self.normalize(values), destination)
    }

    /// The first step of [`admit`](Self::admit): cheap unless the batch is large.
    pub fn normalize(&self, values: Vec<Value>) -> Normalized {
        Normalized(
            values
                .into_iter()
                .map(|v| normalize(v, &self.limits))
                .collect(),
        )
    }

    /// Whether some normalised event has a type the tenant registered a schema for: checking
    /// the batch then runs tenant-supplied code, which belongs off the async runtime.
    pub fn meets_a_schema(&self, normalized: &Normalized) -> bool {
        !self.schemas.is_empty()
            && normalized
                .0
                .iter()
                .any(|n| n.as_ref().is_ok_and(|s| self.schemas.has(&s.event_type)))
    }

    /// The rest of [`admit`](Self::admit): checks the normalised events against the tenant's
    /// schemas, then prepares them all; or lists every error of the batch, in batch order.
    pub fn finish(
        &self,
        normalized: Normalized,
        destination: Destination,
    ) -> Result<Ready, Refused> {
        let total = normalized.0.len();
        let mut errors = Vec::new();
        let mut submitted = Vec::with_capacity(total);
        for (index, item) in normalized.0.into_iter().enumerate() {
            match item.and_then(|s| self.check(s)) {
                Ok(s) => submitted.push(s),
                Err(field_errors) => errors.extend(field_errors.into_iter().map(|e| ItemError {
                    index,
                    path: e.path,
                    code: e.code,
                    message: e.message,
                })),
            }
        }
        if submitted.len() < total {
            if errors.is_empty() {
                // normalize refused an event without saying why: still refuse, never store part.
                errors.push(ItemError {
                    index: 0,
                    path: String::new(),
                    code: FieldErrorCode::InvalidField,
                    message: "invalid event".to_owned(),
                });
            }
            return Err(Refused { total, errors });
        }
        match destination {
            Destination::Append => Ok(Ready::Append(
                submitted.into_iter().map(|s| self.prepare(s)).collect(),
            )),
            Destination::Publish { max_message_bytes } => {
                self.publishable(submitted, max_message_bytes)
            }
        }
    }

    /// One event from its JSON bytes, as a bus message carries it: parsed, normalised,
    /// checked and prepared for the store; or why it can never be stored.
    pub fn admit_payload(&self, payload: &[u8]) -> Result<Prepared, Refusal> {
        if payload.len() > self.limits.max_event_bytes.saturating_mul(2) {
            return Err(Refusal {
                code: FieldErrorCode::EventTooLarge.as_str(),
                message: format!(
                    "the message is {} bytes; events are limited to {}",
                    payload.len(),
                    self.limits.max_event_bytes
                ),
            });
        }
        // Strict: a repeated key is refused, and nesting past `max_depth` is cut for
        // normalisation to refuse as `too_deep`, never recursed into.
        let value =
            vigil_event::parse_event(payload, self.limits.max_depth).map_err(|e| Refusal {
                code: "invalid_json",
                message: format!("the message is not valid JSON: {e}"),
            })?;
        let submitted = normalize(value, &self.limits)
            .and_then(|s| self.check(s))
            .map_err(|errors| Refusal::from_field_errors(&errors))?;
        Ok(self.prepare(submitted))
    }

    /// Checks a normalised event against the schema of its type, if the tenant registered one.
    fn check(&self, mut submitted: Submitted) -> Result<Submitted, Vec<FieldError>> {
        validate_body(&self.schemas, &submitted.event_type, &mut submitted.body)?;
        Ok(submitted)
    }

    /// Defaults and server-set fields.
    fn prepare(&self, mut submitted: Submitted) -> Prepared {
        if let Some(id) = &self.origin.default_id {
            submitted.set_default_id(id);
        }
        submitted.prepare(
            &self.origin.tenant,
            self.origin.received_at,
            &self.origin.default_source,
        )
    }

    /// The events as published. One that no longer fits the stream's message limit once
    /// serialised for publishing (numbers written back in full, an `id` added) is refused
    /// here, with the batch, rather than by the stream after part of the batch went out.
    fn publishable(
        &self,
        submitted: Vec<Submitted>,
        max_message_bytes: usize,
    ) -> Result<Ready, Refused> {
        let total = submitted.len();
        let mut errors = Vec::new();
        let mut events = Vec::with_capacity(total);
        for (index, s) in submitted.into_iter().enumerate() {
            let (id, payload) = s.into_published();
            if payload.len() > max_message_bytes {
                errors.push(ItemError {
                    index,
                    path: String::new(),
                    code: FieldErrorCode::EventTooLarge,
                    message: format!(
                        "the event takes {} bytes as published; the event stream takes at most {max_message_bytes}",
                        payload.len()
                    ),
                });
            }
            events.push(Publishable {
                id,
                payload,
                default_source: self.origin.default_source.clone(),
            });
        }
        if !errors.is_empty() {
            return Err(Refused { total, errors });
        }
        Ok(Ready::Publish(events))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use vigil_event::EventType;

    use super::*;

    fn origin() -> Origin {
        Origin {
            tenant: TenantId::parse("acme").unwrap(),
            default_source: "test".to_owned(),
            received_at: Timestamp::now(),
            default_id: None,
            validated: false,
        }
    }

    fn intake(schemas: TenantSchemas) -> Intake {
        Intake::new(Limits::default(), Arc::new(schemas), origin())
    }

    #[test]
    fn admission_refuses_what_is_not_an_event() {
        let tenant = TenantId::parse("acme").unwrap();
        let default_id = EventId::parse("js-1-1").unwrap();
        let at = Timestamp::from_nanos(1_700_000_000_000_000_000);
        let admission = Intake::new(
            Limits::default(),
            Arc::default(),
            Origin {
                tenant: tenant.clone(),
                default_source: "nats".to_owned(),
                received_at: at,
                default_id: Some(default_id.clone()),
                validated: false,
            },
        );
        let e = admission.admit_payload(b"{").unwrap_err();
        assert_eq!(e.code, "invalid_json");
        let e = admission.admit_payload(br#"{"severity": 99}"#).unwrap_err();
        assert!(e.message.contains("type"), "{e:?}");
        let ok = admission
            .admit_payload(br#"{"type":"login.failed","id":"e-1"}"#)
            .unwrap();
        assert_eq!(ok.tenant, tenant);
        assert_eq!(ok.time, at, "an event without time takes the receipt time");
        let json: serde_json::Value = serde_json::from_slice(&ok.canonical_bytes(1)).unwrap();
        assert_eq!(json["source"], "nats");
        // An event without id takes the message's: a redelivery is the same event.
        let first = admission.admit_payload(br#"{"type":"x"}"#).unwrap();
        let again = admission.admit_payload(br#"{"type":"x"}"#).unwrap();
        assert_eq!(first.id, default_id);
        assert_eq!(first.canonical_bytes(1), again.canonical_bytes(1));
    }

    /// Regression: a bus message with a repeated key (`{"type":"a","type":"b"}`) was stored
    /// with the last value, and one nested 128 levels or more was dead-lettered as
    /// `invalid_json` (serde_json's recursion limit) rather than `too_deep`. The writer
    /// dead-letters a message with this refusal's code.
    #[test]
    fn messages_with_repeated_keys_or_too_deep_are_refused_with_their_code() {
        let admission = intake(TenantSchemas::default());
        let e = admission
            .admit_payload(br#"{"type":"a","type":"b"}"#)
            .unwrap_err();
        assert_eq!(e.code, "invalid_json");
        assert!(e.message.contains("duplicate key `type`"), "{e:?}");
        let e = admission
            .admit_payload(br#"{"type":"a","actor":{"id":"u","id":"v"}}"#)
            .unwrap_err();
        assert!(e.message.contains("`actor.id`"), "{e:?}");

        let deep = format!(
            r#"{{"type":"a","tags":{}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        let e = admission.admit_payload(deep.as_bytes()).unwrap_err();
        assert_eq!(e.code, "too_deep", "{e:?}");
    }

    #[test]
    fn schema_and_normalisation_errors_are_listed_together_in_batch_order() {
        let schema = json!({"required": ["details"]});
        let validator = crate::schemas::compile(&schema).unwrap();
        let schemas =
            TenantSchemas::with_validator(EventType::parse("strict").unwrap(), schema, validator);
        let values = vec![
            json!({"type": "strict"}),
            json!({"severity": 2}),
            json!({"type": "strict", "details": {}}),
        ];
        let e = intake(schemas)
            .admit(values, Destination::Append)
            .unwrap_err();
        assert_eq!(e.total, 3);
        let found: Vec<(usize, FieldErrorCode)> =
            e.errors.iter().map(|e| (e.index, e.code)).collect();
        assert_eq!(
            found,
            [
                (0, FieldErrorCode::SchemaViolation),
                (1, FieldErrorCode::MissingField)
            ]
        );
    }

    /// An event an api node validated is not checked against the schemas again, and has room
    /// for what the node added.
    #[test]
    fn validated_events_skip_the_schemas() {
        let schema = json!({"required": ["details"]});
        let validator = crate::schemas::compile(&schema).unwrap();
        let schemas = Arc::new(TenantSchemas::with_validator(
            EventType::parse("strict").unwrap(),
            schema,
            validator,
        ));
        let payload = br#"{"type":"strict"}"#;
        let checked = Intake::new(Limits::default(), Arc::clone(&schemas), origin());
        assert_eq!(
            checked.admit_payload(payload).unwrap_err().code,
            "schema_violation"
        );
        let validated = Origin {
            validated: true,
            ..origin()
        };
        let limits = Limits {
            max_fields: 1,
            ..Limits::default()
        };
        let trusted = Intake::new(limits, schemas, validated);
        let admitted = trusted.admit_payload(br#"{"type":"strict","id":"e-1"}"#);
        assert!(admitted.is_ok(), "{admitted:?}");
    }

    #[test]
    fn publishing_keeps_the_id_and_leaves_defaults_to_the_writer() {
        let values = vec![json!({"type": "a", "id": "e-1"}), json!({"type": "b"})];
        let ready = intake(TenantSchemas::default())
            .admit(
                values,
                Destination::Publish {
                    max_message_bytes: 1024,
                },
            )
            .unwrap();
        let Ready::Publish(events) = ready else {
            panic!("publishing prepares for the stream");
        };
        assert_eq!(events[0].id.as_str(), "e-1");
        assert_eq!(events[0].default_source, "test");
        let second: Value = serde_json::from_slice(&events[1].payload).unwrap();
        assert_eq!(second["id"], events[1].id.as_str(), "an id is assigned");
        assert!(second.get("time").is_none() && second.get("source").is_none());
    }

    #[test]
    fn field_errors_make_one_refusal() {
        let errors = vec![
            FieldError::new("", FieldErrorCode::MissingField, "type is required"),
            FieldError::new("severity", FieldErrorCode::InvalidField, "out of range"),
        ];
        let r = Refusal::from_field_errors(&errors);
        assert_eq!(r.code, "missing_field");
        assert_eq!(r.message, "type is required; severity: out of range");
        assert_eq!(Refusal::from_field_errors(&[]).code, "invalid_event");
    }
}
