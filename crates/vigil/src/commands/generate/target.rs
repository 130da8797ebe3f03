//! Where `vigil generate` sends its batches: a vigil server over HTTP (`POST /v1/events`), or
//! NATS JetStream (`events.<tenant>`, each event's id as its `Nats-Msg-Id`, every publish
//! acknowledged before the batch counts as sent). Either way a batch is acknowledged as a
//! whole, some of its events possibly as duplicates of ones the target already had, or fails
//! with one [`SendError`]; the retry policy in the parent module does not care which.

use std::fmt;

use bytes::Bytes;
use serde_json::Value;
use vigil_bus::{Bus, BusError, OutgoingEvent, Published};
use vigil_client::{Client, ClientError, IngestResponse};
use vigil_event::{EventId, TenantId};

use crate::error::CliError;

/// The target of a run.
#[derive(Debug)]
pub enum Target {
    Http(Client),
    /// Publishes on `events.<tenant>` (under the bus's namespace). Boxed: a bus is several
    /// times the size of an HTTP client.
    Nats {
        bus: Box<Bus>,
        tenant: TenantId,
    },
}

impl Target {
    /// The target as the summary names it, without any password.
    pub fn describe(&self) -> String {
        match self {
            Self::Http(client) => client.base_url().to_string(),
            Self::Nats { bus, tenant } => format!(
                "{} {}",
                vigil_bus::redact(&bus.config().url),
                bus.names().events_subject(tenant)
            ),
        }
    }

    /// Sends one batch and waits for the target's acknowledgement of all of it.
    pub async fn send(&self, events: &[Value]) -> Result<Ack, SendError> {
        match self {
            Self::Http(client) => client
                .ingest(events)
                .await
                .map(|ack| Ack::from(&ack))
                .map_err(SendError::Http),
            Self::Nats { bus, tenant } => {
                let batch = events.iter().map(outgoing).collect::<Result<_, _>>()?;
                let published = bus.publish(tenant, batch).await.map_err(SendError::Nats)?;
                Ok(Ack::from(published.as_slice()))
            }
        }
    }
}

/// An event as a bus message: its id becomes the `Nats-Msg-Id`, so JetStream drops a copy
/// published again within its duplicate window.
fn outgoing(event: &Value) -> Result<OutgoingEvent, SendError> {
    let id = event
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| SendError::InvalidEvent("an event has no string `id`".to_owned()))?;
    let id = EventId::parse(id)
        .map_err(|e| SendError::InvalidEvent(format!("event id {id:?}: {}", e.message)))?;
    let payload = serde_json::to_vec(event)
        .map_err(|e| SendError::InvalidEvent(format!("event {}: {e}", id.as_str())))?;
    Ok(OutgoingEvent {
        id,
        payload: Bytes::from(payload),
        default_source: None,
    })
}

/// What the target acknowledged of one batch: every event, some already held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// Events acknowledged (new and duplicate).
    pub events: u64,
    /// Events the target already had: same id (over HTTP, same content too).
    pub duplicates: u64,
}

impl From<&IngestResponse> for Ack {
    fn from(ack: &IngestResponse) -> Self {
        Self {
            events: ack.events.len() as u64,
            duplicates: ack.duplicates(),
        }
    }
}

impl From<&[Published]> for Ack {
    fn from(published: &[Published]) -> Self {
        Self {
            events: published.len() as u64,
            duplicates: published.iter().filter(|p| p.duplicate).count() as u64,
        }
    }
}

/// Why a batch was not acknowledged.
#[derive(Debug)]
pub enum SendError {
    Http(ClientError),
    Nats(BusError),
    /// An event that cannot become a bus message (no valid `id`).
    InvalidEvent(String),
}

impl SendError {
    /// The stable code the summary counts failures under.
    pub fn code(&self) -> &str {
        match self {
            Self::Http(e) => e.code(),
            Self::Nats(e) => e.code(),
            Self::InvalidEvent(_) => "invalid_event",
        }
    }

    /// The error a run that stops on it ends with, keeping its code for the error line.
    pub fn into_error(self) -> anyhow::Error {
        match self {
            Self::Http(e) => e.into(),
            Self::Nats(e) => CliError::new(e.code(), e.to_string()).into(),
            Self::InvalidEvent(message) => CliError::new("invalid_event", message).into(),
        }
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http(e) => e.fmt(f),
            Self::Nats(e) => e.fmt(f),
            Self::InvalidEvent(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for SendError {}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn events_become_bus_messages_keyed_by_their_id() {
        let event = json!({"id": "gen-s7-0", "type": "login.failed", "severity": 2});
        let message = outgoing(&event).unwrap();
        assert_eq!(message.id.as_str(), "gen-s7-0");
        let payload: Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(payload, event);

        for bad in [json!({"type": "x"}), json!({"id": 7}), json!({"id": "a b"})] {
            let e = outgoing(&bad).unwrap_err();
            assert_eq!(e.code(), "invalid_event", "{bad}");
        }
    }

    #[test]
    fn acknowledgements_count_duplicates_the_same_way_on_both_targets() {
        let published = [
            Published {
                stream_sequence: 1,
                duplicate: false,
            },
            Published {
                stream_sequence: 1,
                duplicate: true,
            },
            Published {
                stream_sequence: 2,
                duplicate: false,
            },
        ];
        assert_eq!(
            Ack::from(published.as_slice()),
            Ack {
                events: 3,
                duplicates: 1
            }
        );
        let ingested = IngestResponse {
            accepted: 2,
            events: (0..2)
                .map(|i| vigil_client::Ingested {
                    id: format!("e-{i}"),
                    seq: Some(i),
                    duplicate: i == 0,
                })
                .collect(),
        };
        assert_eq!(
            Ack::from(&ingested),
            Ack {
                events: 2,
                duplicates: 1
            }
        );
    }

    #[test]
    fn a_stopping_error_keeps_its_code() {
        let e = SendError::Nats(BusError::Config("bad".into())).into_error();
        let e = e.downcast_ref::<CliError>().unwrap();
        assert_eq!(
            (e.code, e.to_string().as_str()),
            ("bus_config", "NATS configuration: bad")
        );
        let e = SendError::Http(ClientError::InvalidUrl("x".into())).into_error();
        assert_eq!(
            e.downcast_ref::<ClientError>().unwrap().code(),
            "invalid_url"
        );
    }
}
