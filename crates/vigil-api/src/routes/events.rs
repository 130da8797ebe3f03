//! `/v1/events`: ingest, query, count, export and fetch events of the caller's tenant.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use vigil_auth::Scope;
use vigil_event::{EventId, Timestamp};
use vigil_ingest::{Destination, Origin, Publishable, Ready};
use vigil_query::{Query, QueryError};

use crate::AppState;
use crate::authenticate::Authenticated;
use crate::budget::Reservation;
use crate::encoding::ContentEncoding;
use crate::error::{ApiError, ErrorBody};
use crate::export::{ExportFormat, export_stream, page_limit};
use crate::extract::{declared_length, query_pairs, read_body};
use crate::ingest::{BodyFormat, prepare_body};
use crate::metrics::{EventsIngested, EventsRejected};

/// The answer to an accepted batch: one entry per event, in request order.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestResponse {
    /// Events accepted (new ones plus idempotent retries).
    pub accepted: usize,
    pub events: Vec<IngestedEvent>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IngestedEvent {
    pub id: String,
    /// Position in the tenant's log (1-based, gap-free). Absent in bus mode (`202`): a writer
    /// assigns it when it stores the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// True when this id was already stored with the same content: nothing new was written.
    /// In bus mode: JetStream already had this id within its duplicate window.
    pub duplicate: bool,
}

/// An event as stored and returned: the envelope as sent (aliases resolved, defaults applied),
/// plus the server-set `tenant`, `seq`, `received_at` and `hash`. Other top-level keys are
/// kept as sent.
#[derive(ToSchema)]
#[schema(as = Event)]
#[allow(dead_code)] // documents the shape; responses are written from the stored bytes
pub(crate) struct EventDoc {
    #[schema(example = "0190a5e4-7b1c-7cc3-9a4e-1f2d3c4b5a69")]
    id: String,
    #[schema(rename = "type", example = "login.failed")]
    event_type: String,
    #[schema(example = "2024-05-01T12:00:00.250Z")]
    time: String,
    #[schema(minimum = 0, maximum = 10)]
    severity: u8,
    source: String,
    actor: Option<ActorDoc>,
    action: Option<String>,
    #[schema(example = "failure")]
    outcome: Option<String>,
    resource: Option<ResourceDoc>,
    #[schema(value_type = Option<Object>)]
    details: Option<Value>,
    tenant: String,
    seq: u64,
    received_at: String,
    /// Hex chain hash of the tenant's log up to this event.
    hash: String,
}

#[derive(ToSchema)]
#[schema(as = Actor)]
#[allow(dead_code)] // documentation only
pub(crate) struct ActorDoc {
    id: Option<String>,
    #[schema(rename = "type")]
    actor_type: Option<String>,
    ip: Option<String>,
}

#[derive(ToSchema)]
#[schema(as = Resource)]
#[allow(dead_code)] // documentation only
pub(crate) struct ResourceDoc {
    #[schema(rename = "type")]
    resource_type: Option<String>,
    id: Option<String>,
}

#[derive(ToSchema)]
#[schema(as = EventPage)]
#[allow(dead_code)] // documentation only
pub(crate) struct EventPageDoc {
    events: Vec<EventDoc>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CountResponse {
    pub count: u64,
}

/// Append events. The batch is validated whole first: one invalid event and nothing is
/// stored, and the error lists every failing event and field.
#[utoipa::path(
    post, path = "/v1/events", operation_id = "ingest_events", tag = "events",
    request_body(
        description = "One event object, a JSON array of events, or NDJSON (Content-Type: application/x-ndjson)",
        content(
            (Object = "application/json"),
            (String = "application/x-ndjson"),
        ),
    ),
    responses(
        (status = 201, description = "Stored durably", body = IngestResponse),
        (status = 202, description = "Bus mode: acknowledged by NATS JetStream (replicated, on disk); a writer stores the events", body = IngestResponse),
        (status = 400, description = "invalid_json, empty_batch, ambiguous_field", body = ErrorBody),
        (status = 401, description = "No or bad credential", body = ErrorBody),
        (status = 403, description = "Missing scope events:write", body = ErrorBody),
        (status = 409, description = "id_conflict: an id is stored with different content", body = ErrorBody),
        (status = 413, description = "body_too_large (for a compressed body, also once decompressed), batch_too_large, event_too_large", body = ErrorBody),
        (status = 415, description = "unsupported_media_type: Content-Type is not JSON or NDJSON; unsupported_encoding: Content-Encoding is not gzip, deflate, zstd or identity", body = ErrorBody),
        (status = 422, description = "Valid JSON, invalid events (reserved_field, missing_field, schema_violation, …)", body = ErrorBody),
        (status = 429, description = "Rate limited; see Retry-After", body = ErrorBody),
        (status = 503, description = "store_unavailable: nothing was written; bus_unavailable: NATS did not acknowledge every event, send the same ids again; overloaded: too much ingest in flight, nothing was read; timeout: the batch was not received and validated in time, nothing was written. Retry after Retry-After", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn ingest(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut batch_len = None;
    let result = ingest_batch(&state, &principal, &headers, body, &mut batch_len).await;
    if let Err(e) = &result {
        EventsRejected {
            reason: e.code(),
            count: batch_len.unwrap_or(1) as u64,
        }
        .emit();
    }
    result
}

async fn ingest_batch(
    state: &AppState,
    principal: &vigil_auth::Principal,
    headers: &HeaderMap,
    body: Body,
    batch_len: &mut Option<usize>,
) -> Result<Response, ApiError> {
    principal.require(Scope::EventsWrite)?;
    let limit = state.config().request_timeout;
    // The request timeout bounds everything before the handoff to the store, and nothing
    // after it: see `times_itself` in lib.rs.
    let (ready, reservation) = tokio::time::timeout(
        limit,
        receive_batch(state, principal, headers, body, batch_len),
    )
    .await
    .map_err(|_| ApiError::Timeout(limit))??;

    let prepared = match ready {
        Ready::Append(prepared) => prepared,
        Ready::Publish(events) => {
            let bus = state
                .bus()
                .ok_or_else(|| ApiError::Internal("bus-mode batch without a bus".to_owned()))?;
            return publish_batch(bus, &principal.tenant, events, reservation).await;
        }
    };
    let store = Arc::clone(state.store());
    // Handed to the store: from here the request waits for the store's answer, however long,
    // and reports it. The append runs in its own task, so it also completes (or fails whole)
    // when this request is dropped (client gone); the reservation is held until it returns.
    let appended = tokio::spawn(async move {
        let appended = store.append(prepared).await;
        drop(reservation);
        appended
    })
    .await
    .map_err(|e| ApiError::Internal(format!("append task failed: {e}")))??;

    let events = appended
        .into_iter()
        .map(|a| IngestedEvent {
            id: a.id.as_str().to_owned(),
            seq: Some(a.seq),
            duplicate: a.duplicate,
        })
        .collect();
    Ok(acknowledged(StatusCode::CREATED, events))
}

/// The answer to an ingest request whose every event was taken, counted in the metrics.
fn acknowledged(status: StatusCode, events: Vec<IngestedEvent>) -> Response {
    let duplicates = events.iter().filter(|e| e.duplicate).count() as u64;
    EventsIngested {
        stored: events.len() as u64 - duplicates,
        duplicates,
    }
    .emit();
    let response = IngestResponse {
        accepted: events.len(),
        events,
    };
    (status, axum::Json(response)).into_response()
}

/// Bus mode: publishes the batch to JetStream and answers `202` once every event is
/// acknowledged. Like an append, the publish runs in its own task, so a client that goes away
/// does not cut it off halfway.
async fn publish_batch(
    bus: &vigil_bus::Bus,
    tenant: &vigil_event::TenantId,
    events: Vec<Publishable>,
    reservation: Option<Reservation>,
) -> Result<Response, ApiError> {
    let ids: Vec<String> = events.iter().map(|e| e.id.as_str().to_owned()).collect();
    let events = events
        .into_iter()
        .map(|e| vigil_bus::OutgoingEvent {
            id: e.id,
            payload: e.payload.into(),
            default_source: Some(e.default_source),
        })
        .collect();
    let bus = bus.clone();
    let tenant = tenant.clone();
    let published = tokio::spawn(async move {
        let published = bus.publish(&tenant, events).await;
        drop(reservation);
        published
    })
    .await
    .map_err(|e| ApiError::Internal(format!("publish task failed: {e}")))?;
    // Part of the batch may be in the stream: the answer names every event's id, so the client
    // can send the batch again with them and nothing is stored twice.
    let published = match published {
        Ok(published) => published,
        Err(error) => return Err(ApiError::BusPublish { error, ids }),
    };
    let events = ids
        .into_iter()
        .zip(published)
        .map(|(id, p)| IngestedEvent {
            id,
            seq: None,
            duplicate: p.duplicate,
        })
        .collect();
    Ok(acknowledged(StatusCode::ACCEPTED, events))
}

/// Everything before the handoff to the store: room in the ingest budget, the body, and the
/// batch parsed, normalised, schema-checked and prepared.
async fn receive_batch(
    state: &AppState,
    principal: &vigil_auth::Principal,
    headers: &HeaderMap,
    body: Body,
    batch_len: &mut Option<usize>,
) -> Result<(Ready, Option<Reservation>), ApiError> {
    let config = state.config();
    let format = BodyFormat::from_headers(headers)?;
    let encoding = ContentEncoding::from_headers(headers)?;
    let max_body = config.max_body_bytes;
    // A body declared too large is refused by `read_body` without being kept: it needs no room.
    // A compressed one may grow to the limit once decompressed: it reserves the limit.
    let reservation = match declared_length(headers) {
        Some(len) if len > max_body as u64 => None,
        _ if !encoding.is_identity() => Some(state.ingest_budget().reserve(max_body).await?),
        declared => {
            let bytes = declared.map_or(max_body, |len| usize::try_from(len).unwrap_or(max_body));
            Some(state.ingest_budget().reserve(bytes).await?)
        }
    };
    // The limit holds for the compressed bytes read and for what they decompress to.
    let bytes = read_body(headers, body, max_body).await?;
    let bytes = encoding.decode(bytes, max_body).await?;
    let intake = state.admitter().intake(Origin {
        tenant: principal.tenant.clone(),
        default_source: principal.name.clone(),
        received_at: Timestamp::now(),
        default_id: None,
        validated: false,
    });
    // In bus mode the batch is published for a writer to store, each event within the
    // stream's message limit; else it is appended here.
    let destination = match state.bus() {
        Some(bus) => Destination::Publish {
            max_message_bytes: bus.max_payload_bytes(),
        },
        None => Destination::Append,
    };
    let ready = prepare_body(
        bytes,
        format,
        config.max_batch_events,
        intake,
        destination,
        batch_len,
    )
    .await?;
    Ok((ready, reservation))
}

/// Query events. Any `path=value` parameter is an exact-match filter (ANDed); `q` takes an
/// expression. `Accept: application/x-ndjson` or `text/csv` streams every match for export
/// (`limit` then caps the total; no limit exports everything).
#[utoipa::path(
    get, path = "/v1/events", operation_id = "list_events", tag = "events",
    params(
        ("q" = Option<String>, Query, description = "Filter expression, e.g. `severity>=7 AND type:login.failed`"),
        ("from" = Option<String>, Query, description = "Inclusive lower time bound: RFC 3339, date, `-15m`, epoch seconds/ms"),
        ("to" = Option<String>, Query, description = "Exclusive upper time bound (same forms as `from`)"),
        ("limit" = Option<usize>, Query, description = "Page size (default 100, max 10 000); for exports the total cap"),
        ("order" = Option<String>, Query, description = "`desc` (default, newest first) or `asc`"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
        ("path=value" = Option<String>, Query, description = "Any other parameter: exact match on that field path, e.g. `actor.id=u-7`"),
    ),
    responses(
        (status = 200, description = "One page; or an NDJSON/CSV export stream", content(
            (EventPageDoc = "application/json"),
            (String = "application/x-ndjson"),
            (String = "text/csv"),
        )),
        (status = 400, description = "invalid_query, invalid_parameter, invalid_cursor, query_too_complex", body = ErrorBody),
        (status = 401, description = "No or bad credential", body = ErrorBody),
        (status = 403, description = "Missing scope events:read", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    principal.require(Scope::EventsRead)?;
    let mut params = query_pairs(&uri)?;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let export = ExportFormat::from_accept(accept);
    let now = Timestamp::now();

    let max_page_bytes = state.config().max_page_bytes;
    let Some(format) = export else {
        let query = Query::from_params(&params, now, &state.config().query_limits)?;
        let page = state.store().query(&principal.tenant, &query).await?;
        return Ok(json_response(page.to_json(&query, max_page_bytes)));
    };

    // Exports page internally; `limit` caps the whole export rather than one page.
    let cap = take_limit(&mut params)?;
    let mut query = Query::from_params(&params, now, &state.config().query_limits)?;
    query.limit = page_limit(cap);
    let store = Arc::clone(state.store());
    let first = store.query(&principal.tenant, &query).await?;
    let stream = export_stream(
        store,
        principal.tenant.clone(),
        query,
        first,
        cap,
        format,
        max_page_bytes,
    );
    let mut response = Body::from_stream(stream).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    Ok(response)
}

/// Removes every `limit` parameter and returns the last one's value.
fn take_limit(params: &mut Vec<(String, String)>) -> Result<Option<u64>, ApiError> {
    let mut cap = None;
    for (_, value) in params.iter().filter(|(name, _)| name == "limit") {
        let n = value
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| QueryError::InvalidParameter {
                name: "limit".to_owned(),
                message: "must be a positive integer".to_owned(),
            })?;
        cap = Some(n);
    }
    params.retain(|(name, _)| name != "limit");
    Ok(cap)
}

fn json_response(bytes: Vec<u8>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response()
}

/// Count events matching the same filters as `GET /v1/events` (`limit`, `cursor` and `order`
/// are ignored).
#[utoipa::path(
    get, path = "/v1/events/count", operation_id = "count_events", tag = "events",
    params(
        ("q" = Option<String>, Query, description = "Filter expression"),
        ("from" = Option<String>, Query, description = "Inclusive lower time bound"),
        ("to" = Option<String>, Query, description = "Exclusive upper time bound"),
        ("path=value" = Option<String>, Query, description = "Exact match on a field path"),
    ),
    responses(
        (status = 200, description = "Number of matching events", body = CountResponse),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 403, description = "Missing scope events:read", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn count(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    uri: Uri,
) -> Result<axum::Json<CountResponse>, ApiError> {
    principal.require(Scope::EventsRead)?;
    let mut params = query_pairs(&uri)?;
    params.retain(|(name, _)| !matches!(name.as_str(), "limit" | "cursor" | "order"));
    let query = Query::from_params(&params, Timestamp::now(), &state.config().query_limits)?;
    let count = state
        .store()
        .count(&principal.tenant, &query.filter, query.from, query.to)
        .await?;
    Ok(axum::Json(CountResponse { count }))
}

/// One event by id. `?proof=true` adds `proof`: the Merkle inclusion proof of the event in a
/// signed checkpoint (the newest, made now if it predates the event, or the kept one of
/// `tree_size`), with that checkpoint's note attached.
#[utoipa::path(
    get, path = "/v1/events/{id}", operation_id = "get_event", tag = "events",
    params(
        ("id" = String, Path, description = "Event id"),
        ("proof" = Option<bool>, Query, description = "Add `proof`: the Merkle inclusion proof with the signed checkpoint it leads to"),
        ("tree_size" = Option<u64>, Query, description = "With `proof`: prove inclusion in the kept checkpoint of this size (default: the newest, made now if it predates the event)"),
    ),
    responses(
        (status = 200, description = "The event", body = EventDoc),
        (status = 400, description = "invalid_id", body = ErrorBody),
        (status = 403, description = "Missing scope events:read", body = ErrorBody),
        (status = 404, description = "No such event in the caller's tenant", body = ErrorBody),
        (status = 501, description = "Proof asked of a server without a signing key", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Response, ApiError> {
    principal.require(Scope::EventsRead)?;
    let Path(raw) = path.map_err(|e| ApiError::InvalidId(e.body_text()))?;
    let id = EventId::parse(&raw).map_err(|e| ApiError::InvalidId(e.message))?;
    let mut proof = false;
    let mut tree_size = None;
    for (name, value) in query_pairs(&uri)? {
        match name.as_str() {
            "proof" => {
                proof = match value.as_str() {
                    "true" | "1" => true,
                    "false" | "0" | "" => false,
                    _ => {
                        return Err(QueryError::InvalidParameter {
                            name,
                            message: "must be true or false".to_owned(),
                        }
                        .into());
                    }
                }
            }
            "tree_size" => {
                let size = value.parse::<u64>().ok().filter(|&n| n > 0);
                tree_size = Some(size.ok_or_else(|| QueryError::InvalidParameter {
                    name,
                    message: "must be a positive integer".to_owned(),
                })?);
            }
            _ => {}
        }
    }
    let event = state
        .store()
        .get(&principal.tenant, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no event with id {}", id.as_str())))?;
    let body = event.to_json();
    if !proof {
        return Ok(json_response(body));
    }
    let proof =
        super::integrity::inclusion(&state, &principal.tenant, event.seq, tree_size).await?;
    Ok(json_response(with_member(body, "proof", &proof)?))
}

/// Adds a member at the end of a JSON object's bytes.
fn with_member(object: Vec<u8>, name: &str, value: &impl Serialize) -> Result<Vec<u8>, ApiError> {
    let Some((b'}', head)) = object.split_last() else {
        return Err(ApiError::Store(vigil_store::StoreError::internal(
            "a stored event is not a JSON object",
        )));
    };
    let value = serde_json::to_vec(value)
        .map_err(|e| ApiError::Store(vigil_store::StoreError::internal_from(e)))?;
    let mut out = Vec::with_capacity(object.len() + name.len() + value.len() + 4);
    out.extend_from_slice(head);
    if head != b"{" {
        out.push(b',');
    }
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    out.extend_from_slice(&value);
    out.push(b'}');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_is_taken_out_of_export_parameters() {
        let mut params = vec![
            ("type".into(), "a".into()),
            ("limit".into(), "5".into()),
            ("limit".into(), "50000".into()),
        ];
        assert_eq!(take_limit(&mut params).unwrap(), Some(50_000));
        assert_eq!(params, vec![("type".to_owned(), "a".to_owned())]);
        let mut bad = vec![("limit".into(), "0".into())];
        assert_eq!(
            take_limit(&mut bad).unwrap_err().code(),
            "invalid_parameter"
        );
        assert_eq!(take_limit(&mut vec![]).unwrap(), None);
    }
}
