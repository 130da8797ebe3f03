//! The append path up to the writer: the indexed columns of each event are derived
//! ([`Derived`]) on the caller's side, off the async runtime for larger batches, then the
//! events join the writer's queue and the call waits for their group's commit
//! ([`crate::writer`]).

use tokio::sync::oneshot;
use vigil_event::Prepared;
use vigil_store::{Appended, StoreError};

use crate::PgStore;
use crate::row::Derived;
use crate::writer::Job;

impl PgStore {
    pub(crate) async fn append_inner(
        &self,
        events: Vec<Prepared>,
    ) -> Result<Vec<Appended>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let sender = self
            .jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or_else(|| StoreError::Unavailable("the store is shutting down".into()))?;
        // Flattening every event is CPU work: off the async runtime for anything but a few.
        let (events, derived) = if events.len() > 16 {
            tokio::task::spawn_blocking(move || derive_all(events))
                .await
                .map_err(|e| StoreError::internal_with("deriving columns failed", e))?
        } else {
            derive_all(events)
        };
        let derived = derived?;
        let (reply, answer) = oneshot::channel();
        sender
            .send(Job {
                events,
                derived,
                reply,
            })
            .await
            .map_err(|_| StoreError::Unavailable("the store is shutting down".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the writer stopped".into()))?
    }
}

fn derive_all(events: Vec<Prepared>) -> (Vec<Prepared>, Result<Vec<Derived>, StoreError>) {
    let derived = events
        .iter()
        .map(|e| {
            Derived::of(&e.canonical_bytes(0))
                .ok_or_else(|| StoreError::internal("an event is not a JSON object"))
        })
        .collect();
    (events, derived)
}
