//! Operations endpoints, without authentication: liveness, readiness, metrics, API document.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::OpsState;
use crate::error::{ApiError, ErrorBody};

#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Liveness: 200 whenever the process answers.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "ops", responses((status = 200, body = Status)))]
pub(crate) async fn healthz() -> axum::Json<Status> {
    axum::Json(Status { status: "ok" })
}

/// Readiness: 200 when the store accepts writes (and, in bus mode, NATS is connected), else 503.
#[utoipa::path(
    get, path = "/readyz", operation_id = "readyz", tag = "ops",
    responses(
        (status = 200, description = "Ready", body = Status),
        (status = 503, description = "store_unavailable, bus_unavailable", body = ErrorBody),
    ),
)]
pub(crate) async fn readyz(State(state): State<OpsState>) -> Result<axum::Json<Status>, ApiError> {
    state.store.ready().await.map_err(|e| match e {
        vigil_store::StoreError::Internal(m) => {
            ApiError::Store(vigil_store::StoreError::Unavailable(m.to_string()))
        }
        other => ApiError::from(other),
    })?;
    if let Some(bus) = &state.bus
        && !bus.is_connected()
    {
        return Err(ApiError::Bus(vigil_bus::BusError::Unavailable(
            "not connected to NATS".to_owned(),
        )));
    }
    Ok(axum::Json(Status { status: "ready" }))
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(
    get, path = "/metrics", operation_id = "metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")),
)]
pub(crate) async fn metrics() -> Response {
    let body = crate::metrics::handle().render();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(
    get, path = "/openapi.json", operation_id = "openapi", tag = "ops",
    responses((status = 200, description = "OpenAPI document", body = Object)),
)]
pub(crate) async fn openapi_json() -> Response {
    static DOCUMENT: OnceLock<Vec<u8>> = OnceLock::new();
    let bytes = DOCUMENT.get_or_init(|| serde_json::to_vec(&crate::openapi()).unwrap_or_default());
    if bytes.is_empty() {
        return ApiError::Internal("openapi document did not serialise".to_owned()).into_response();
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes.clone(),
    )
        .into_response()
}
