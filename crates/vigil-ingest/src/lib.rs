//! vigil's admission, below both edges: how an event gets in, whichever way it came.
//!
//! Events reach vigil over HTTP (`POST /v1/events`, in `vigil-api`) and over NATS JetStream (a
//! writer consuming `events.<tenant>`, in `vigil-bus`). Both edges authenticate or trust their
//! caller, frame the events their way, and then hand each JSON value to the same
//! [`Admitter`]: normalised ([`vigil_event::normalize`]), checked against the JSON Schema the
//! tenant registered for its type ([`schemas`]), and prepared for the store, or serialised for
//! publishing when an api node hands it to the bus. The edges choose where the result goes
//! (append or publish) and map refusals to what they answer (an HTTP error, a dead letter).
//! After the append, the [`CheckpointSigner`] signs each tenant's Merkle tree head.
//!
//! ```text
//!  HTTP body ─┐                                            ┌─> Store::append ─> CheckpointSigner
//!             ├─> Admitter: normalise -> validate -> prepare ┤
//!  bus message┘            (schema registry)               └─> publish (bus mode api node)
//! ```
//!
//! This crate knows neither axum nor NATS: it depends on the event model, the store contract
//! and the integrity formats only.
//!
//! # Layout
//! - `admit` — [`Admitter`], [`Intake`] (one admission: its [`Origin`], the tenant's schemas as
//!   they stood), [`Ready`] (prepared or publishable events).
//! - `schemas` — the per-tenant schema registry, kept in the store's `schemas` document and
//!   reloaded from it, so processes sharing a store share the schemas.
//! - `checkpoint_signer` — signed checkpoints, on demand and periodically.
//! - `error` — [`ItemError`] and [`Refused`] (a batch), [`Refusal`] (one message),
//!   [`IngestError`] (the schema registry).
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use serde_json::json;
//! use vigil_event::{Limits, TenantId, Timestamp};
//! use vigil_ingest::schemas::SchemaLimits;
//! use vigil_ingest::{AdmitConfig, Admitter, Destination, Origin, Ready};
//! use vigil_store_embedded::{EmbeddedConfig, EmbeddedStore};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! tokio::runtime::Runtime::new()?.block_on(async {
//!     let store: Arc<dyn vigil_store::Store> = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path()))?);
//!     let config = AdmitConfig {
//!         limits: Limits::default(),
//!         schema_limits: SchemaLimits { max_per_tenant: 100 },
//!         schema_refresh_interval: Duration::from_secs(1),
//!     };
//!     let admitter = Admitter::load(Arc::clone(&store), config).await?;
//!
//!     let intake = admitter.intake(Origin {
//!         tenant: TenantId::parse("acme")?,
//!         default_source: "billing".to_owned(),
//!         received_at: Timestamp::now(),
//!         default_id: None,
//!         validated: false,
//!     });
//!     let values = vec![json!({"event_type": "login.failed", "username": "u-7"})];
//!     let Ready::Append(prepared) = intake.admit(values, Destination::Append).map_err(|r| format!("{r:?}"))? else {
//!         unreachable!("appending prepares for the store");
//!     };
//!     let appended = store.append(prepared).await?;
//!     assert_eq!(appended[0].seq, 1);
//!
//!     // A batch with one invalid event is refused whole, every failing event listed.
//!     let values = vec![json!({"type": "ok"}), json!({"severity": 3})];
//!     let refused = intake.admit(values, Destination::Append).unwrap_err();
//!     assert_eq!((refused.total, refused.errors[0].index), (2, 1));
//!     store.shutdown().await?;
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })
//! # }
//! ```

mod admit;
pub mod checkpoint_signer;
mod error;
pub mod schemas;

pub use admit::{
    AdmitConfig, Admitter, Destination, Intake, Normalized, Origin, Publishable, Ready,
};
pub use checkpoint_signer::CheckpointSigner;
pub use error::{IngestError, ItemError, Refusal, Refused};
