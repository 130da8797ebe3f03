//! vigil's HTTP API: the axum routes through which events come in and answers go out.
//!
//! This crate is the edge of the ingest and query flow. `POST /v1/events` authenticates the
//! caller ([`vigil_auth`]), splits the body into events (one object, an array or NDJSON), has
//! [`vigil_ingest`] admit them (normalised, checked against the tenant's registered JSON
//! Schema, prepared) and appends the batch to the [`Store`] — all or nothing, durable before
//! the 201 — or, in bus mode, publishes it to NATS JetStream for a writer to store (202).
//! `GET /v1/events` turns URL parameters into a [`vigil_query::Query`] and answers from the
//! store, as JSON pages or as a streamed NDJSON/CSV export. The tenant of every read and write
//! comes from the credential, never from the request. The contract is `docs/api.md`; the same
//! routes are described by [`openapi`] and served at `/openapi.json`.
//!
//! # Layout
//! - `routes/` — one module per resource (`events`, `integrity`, `schemas`, `auth`, `keys`,
//!   `users`, `ops`) and the route table from which both the router and the OpenAPI document
//!   are built.
//! - `authenticate` — the authenticated caller: bearer credential, rate limit, tenant.
//! - `ingest` — HTTP ingest: body → events → admitted batch (admission is
//!   [`vigil_ingest::Intake`]; run on the blocking pool when large or when it meets a tenant's
//!   schema).
//! - `server` — the accept loop: connection cap, header-read and idle timeouts, graceful
//!   shutdown with a deadline ([`ServeConfig`]).
//! - `export` — paging a query through the store as an NDJSON or CSV stream.
//! - `encoding` — `Content-Encoding` of ingest bodies, decompressed within the body limit.
//! - `extract` — bounded bodies, JSON bodies, query pairs; `budget` — the bound on ingest bytes
//!   in flight; `error` — one error enum, one JSON error shape; `metrics` — Prometheus counters
//!   and histograms.
//!
//! The schema registry and checkpoint signing live in [`vigil_ingest`], which the bus writer
//! shares: the routes of `/v1/schemas` and `/v1/checkpoint` call them.
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use tower::ServiceExt;
//! use vigil_api::{ApiConfig, AppState};
//! use vigil_auth::{Auth, AuthConfig};
//! use vigil_store_embedded::{EmbeddedConfig, EmbeddedStore};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! tokio::runtime::Runtime::new()?.block_on(async {
//!     let store: Arc<dyn vigil_store::Store> = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path()))?);
//!     let auth = Auth::open(Arc::clone(&store), AuthConfig::default()).await?;
//!     let state = AppState::new(store, auth, ApiConfig::default()).await?;
//!
//!     // Without a socket, as the tests do; `vigil_api::serve(listener, state, shutdown)` binds one.
//!     let request = axum::http::Request::get("/healthz").body(axum::body::Body::empty())?;
//!     let response = vigil_api::router(state).oneshot(request).await?;
//!     assert_eq!(response.status(), 200);
//!     assert!(response.headers().contains_key("x-request-id"));
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })
//! # }
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{FromRef, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::OpenApi;
use vigil_ingest::{AdmitConfig, Admitter, CheckpointSigner};
use vigil_store::Store;

mod authenticate;
mod budget;
mod encoding;
mod error;
mod export;
mod extract;
mod ingest;
mod metrics;
mod routes;
mod server;

pub use error::{ApiError, JsonPosition};
pub use server::ServeConfig;
pub use vigil_ingest::ItemError;

/// Request-level limits and behaviour of the HTTP layer. Per-event limits live in
/// `event_limits`, per-query limits in `query_limits`.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Bounds on one event (size, depth, fields), enforced by normalisation.
    pub event_limits: vigil_event::Limits,
    /// Bounds on one query (`limit`, expression size and complexity).
    pub query_limits: vigil_query::QueryLimits,
    /// Largest request body, in bytes (default 8 MiB): 413 `body_too_large` beyond.
    pub max_body_bytes: usize,
    /// Most events in one `POST /v1/events` (default 10 000): 413 `batch_too_large` beyond.
    pub max_batch_events: usize,
    /// Longest time until a response starts (default 30 s): 503 `timeout` beyond. For
    /// `POST /v1/events` it bounds reading, parsing and validating the batch only: once a batch
    /// is handed to the store, the request waits for the store's answer and reports it.
    pub request_timeout: Duration,
    /// Most schemas one tenant may register (default 1 000): 422 `too_many_schemas` beyond.
    /// Every schema is compiled and kept in memory, and each change rewrites the document.
    pub max_schemas_per_tenant: usize,
    /// Largest schema document, in bytes of the request body (default 256 KiB): 413
    /// `schema_too_large` beyond.
    pub max_schema_bytes: usize,
    /// Most request-body bytes of `POST /v1/events` held at once, from reading the body until
    /// the append returns (default 256 MiB). A request that does not fit waits briefly, then
    /// gets 503 `overloaded` with `Retry-After`: memory stays bounded however many clients
    /// send at once.
    pub max_inflight_bytes: usize,
    /// Largest JSON page of `GET /v1/events`, and largest export chunk, in bytes (default
    /// 16 MiB). A page stops before the event that would exceed it (always holding at least
    /// one event) and its `next_cursor` continues after the last event included.
    pub max_page_bytes: usize,
    /// How often the schema document is reloaded from the store (default 1 s, longer than
    /// zero). Several vigil processes may share one store: a schema another process registers
    /// or deletes is enforced here within this interval.
    pub schema_refresh_interval: Duration,
    /// Take the source address that failed credentials are throttled by from the last
    /// `X-Forwarded-For` entry instead of the TCP peer (default off). Only for a server that
    /// clients reach solely through a reverse proxy that appends the client's address: else
    /// any client could name an address of its choice with each guess.
    pub trust_forwarded_for: bool,
}

impl ApiConfig {
    /// What admission takes from this configuration: the event limits and the schema
    /// registry's.
    pub fn admit_config(&self) -> AdmitConfig {
        AdmitConfig {
            limits: self.event_limits.clone(),
            schema_limits: vigil_ingest::schemas::SchemaLimits {
                max_per_tenant: self.max_schemas_per_tenant,
            },
            schema_refresh_interval: self.schema_refresh_interval,
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            event_limits: vigil_event::Limits::default(),
            query_limits: vigil_query::QueryLimits::default(),
            max_body_bytes: 8 * 1024 * 1024,
            max_batch_events: 10_000,
            request_timeout: Duration::from_secs(30),
            max_schemas_per_tenant: 1_000,
            max_schema_bytes: 256 * 1024,
            max_inflight_bytes: 256 * 1024 * 1024,
            max_page_bytes: 16 * 1024 * 1024,
            schema_refresh_interval: Duration::from_secs(1),
            trust_forwarded_for: false,
        }
    }
}

/// Everything a handler needs, shared by all requests. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where events, credentials and schemas live.
    store: Arc<dyn Store>,
    /// Authenticates every request and manages keys and users.
    auth: vigil_auth::Auth,
    config: ApiConfig,
    /// Admits every ingested event: the event limits and the compiled per-tenant schemas.
    admitter: Admitter,
    /// Bytes of ingest bodies in flight, bounded by `config.max_inflight_bytes`.
    ingest_budget: budget::InflightBudget,
    /// Bus mode: validated events are published here instead of appended to the store.
    bus: Option<vigil_bus::Bus>,
    /// Signs checkpoints; absent on a server without a signing key.
    checkpoint_signer: std::sync::OnceLock<Arc<CheckpointSigner>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("store", &self.inner.store)
            .field("auth", &self.inner.auth)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Loads the schema registry from `store` (and starts reloading it every
    /// `config.schema_refresh_interval`) and installs the metrics recorder (once per process).
    /// Fails when the stored schemas cannot be read or no longer compile.
    pub async fn new(
        store: Arc<dyn Store>,
        auth: vigil_auth::Auth,
        config: ApiConfig,
    ) -> Result<Self, ApiError> {
        Self::with_bus(store, auth, config, None).await
    }

    /// [`AppState::new`] in bus mode when `bus` is given: `POST /v1/events` validates, then
    /// publishes to NATS JetStream and answers `202` once JetStream acknowledged every event (a
    /// writer stores them); queries are still answered from `store`. `/readyz` then also needs
    /// the connection to NATS.
    pub async fn with_bus(
        store: Arc<dyn Store>,
        auth: vigil_auth::Auth,
        config: ApiConfig,
        bus: Option<vigil_bus::Bus>,
    ) -> Result<Self, ApiError> {
        metrics::handle();
        let admitter = Admitter::load(Arc::clone(&store), config.admit_config()).await?;
        let ingest_budget = budget::InflightBudget::new(config.max_inflight_bytes);
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                auth,
                config,
                admitter,
                ingest_budget,
                bus,
                checkpoint_signer: std::sync::OnceLock::new(),
            }),
        })
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub(crate) fn auth(&self) -> &vigil_auth::Auth {
        &self.inner.auth
    }

    pub(crate) fn config(&self) -> &ApiConfig {
        &self.inner.config
    }

    /// How this API admits events: its limits and the tenants' schemas. A writer running
    /// beside it admits the events it consumes from NATS with the same one.
    pub fn admitter(&self) -> &Admitter {
        &self.inner.admitter
    }

    pub(crate) fn schemas(&self) -> &vigil_ingest::schemas::SchemaRegistry {
        self.inner.admitter.schemas()
    }

    pub(crate) fn ingest_budget(&self) -> &budget::InflightBudget {
        &self.inner.ingest_budget
    }

    pub(crate) fn bus(&self) -> Option<&vigil_bus::Bus> {
        self.inner.bus.as_ref()
    }

    /// Gives the API the signer of checkpoints (once; a second call is ignored). Without one,
    /// the integrity endpoints answer `501`.
    pub fn install_checkpoint_signer(&self, signer: Arc<CheckpointSigner>) {
        let _ = self.inner.checkpoint_signer.set(signer);
    }

    pub(crate) fn checkpoint_signer(&self) -> Option<&CheckpointSigner> {
        self.inner.checkpoint_signer.get().map(|s| &**s)
    }
}

/// What the operations endpoints need: the store and, in bus mode, the connection to NATS, for
/// `/readyz`. A node without the api role serves them with no [`AppState`].
#[derive(Clone)]
pub(crate) struct OpsState {
    store: Arc<dyn Store>,
    bus: Option<vigil_bus::Bus>,
}

impl FromRef<AppState> for OpsState {
    fn from_ref(state: &AppState) -> Self {
        Self {
            store: Arc::clone(&state.inner.store),
            bus: state.inner.bus.clone(),
        }
    }
}

/// The whole API: every route of `docs/api.md`, JSON 404/405 for the rest, request ids
/// (`x-request-id`, UUIDv7 unless the client sent one), a tracing span per request,
/// latency metrics and the request timeout.
pub fn router(state: AppState) -> Router {
    let timeout = state.config().request_timeout;
    let middleware = ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuidV7))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(axum::middleware::from_fn(record_request))
        .layer(axum::middleware::from_fn_with_state(
            timeout,
            enforce_timeout,
        ));
    routes::add_routes(Router::new())
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware)
        .with_state(state)
}

/// Only the operations endpoints, `/healthz`, `/readyz` and `/metrics` (no credential): what a
/// node without the api role (a writer, a reader) serves, for probes and Prometheus. `/readyz`
/// checks `store`, and the connection to NATS when `bus` is given. Installs the metrics
/// recorder (once per process).
pub fn ops_router(store: Arc<dyn Store>, bus: Option<vigil_bus::Bus>) -> Router {
    use axum::routing::get;
    metrics::handle();
    let state = OpsState { store, bus };
    Router::new()
        .route("/healthz", get(routes::ops::healthz))
        .route("/readyz", get(routes::ops::readyz))
        .route("/metrics", get(routes::ops::metrics))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(record_request))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then stops accepting connections and drains in-flight
/// requests: an append that was accepted completes and is answered. Connections are bounded
/// as [`ServeConfig::default`] says; [`serve_router_with`] takes other bounds.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router(listener, router(state), shutdown).await
}

/// [`serve`] with another router, such as [`ops_router`]. Connections carry their peer address
/// (`ConnectInfo`), which failed credentials are throttled by.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router_with(listener, router, &ServeConfig::default(), shutdown).await
}

/// [`serve_router`] with `config`'s bounds on connections: header-read and idle timeouts, the
/// most connections open at once, and how long shutdown waits for requests in flight before
/// dropping their connections.
pub async fn serve_router_with(
    listener: tokio::net::TcpListener,
    router: Router,
    config: &ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "http serving");
    }
    server::run(listener, router, config, shutdown).await?;
    tracing::info!("http stopped");
    Ok(())
}

/// The OpenAPI document of every route (served at `/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes::ApiDoc::openapi()
}

/// Time-ordered request ids, so ids sort like the requests they name.
#[derive(Debug, Clone, Copy)]
struct MakeRequestUuidV7;

impl MakeRequestId for MakeRequestUuidV7 {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
            .ok()
            .map(RequestId::new)
    }
}

fn request_span(request: &Request) -> tracing::Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id,
        tenant = tracing::field::Empty,
        credential = tracing::field::Empty,
    )
}

async fn record_request(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = metrics::MethodLabel::of(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    metrics::RequestServed {
        route,
        method,
        status: response.status().as_u16(),
        elapsed: started.elapsed(),
    }
    .emit();
    response
}

/// Bounds the time until a response starts, except for the routes that bound their own
/// (see [`times_itself`]).
async fn enforce_timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    if times_itself(&request) {
        return next.run(request).await;
    }
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(limit).into_response(),
    }
}

/// `POST /v1/events` applies the request timeout itself, to reading and validating the batch
/// only: cutting it off after the batch was handed to the store would answer `503` for events
/// that are stored, and a client retrying would store them twice.
fn times_itself(request: &Request) -> bool {
    request.method() == Method::POST
        && request
            .extensions()
            .get::<MatchedPath>()
            .is_some_and(|p| p.as_str() == routes::INGEST_PATH)
}

async fn route_not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::RouteNotFound {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}
