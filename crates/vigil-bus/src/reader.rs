//! The query service: answers `query.event.<tenant>` requests from a store, with the query
//! semantics of `GET /v1/events`; and [`Bus::query`], the client side.
//!
//! A request is a JSON object `{"q","from","to","limit","order","cursor","filters"}` (every
//! member optional; `filters` maps a field path to an exact value, like `path=value` URL
//! parameters). The reply is the body of `GET /v1/events` — `{"events": [...],
//! "next_cursor": ...}` — or an error object `{"error": {"code", "message"}}` with the codes of
//! the HTTP API. The tenant is the subject's last token: the NATS server's permissions decide
//! who may ask for which tenant (`deploy/nats/`).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Semaphore;
use vigil_event::{TenantId, Timestamp};
use vigil_query::{Query, QueryLimits};
use vigil_store::Store;

use crate::{Bus, BusError, READER_QUEUE_GROUP, redact};

/// A query over NATS: the parameters of `GET /v1/events`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// `desc` (default, newest first) or `asc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Exact-match filters, `path` → value (ANDed). A value may be sent as a JSON string,
    /// number, boolean or null; each is read as the URL parameter of the same text, so the
    /// typing rule is the one of `GET /v1/events` (`3` and `"3"` both find `"attempt": 3`).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "scalar_filters"
    )]
    pub filters: BTreeMap<String, String>,
}

/// Filter values as the text of a URL parameter; objects and arrays are refused.
fn scalar_filters<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let raw = BTreeMap::<String, serde_json::Value>::deserialize(deserializer)?;
    raw.into_iter()
        .map(|(path, value)| {
            let text = match value {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Null => "null".to_owned(),
                serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
                    return Err(serde::de::Error::custom(format!(
                        "filter {path:?}: a value must be a string, number, boolean or null"
                    )));
                }
            };
            Ok((path, text))
        })
        .collect()
}

impl QueryRequest {
    /// The request as `GET /v1/events` URL parameters.
    pub fn to_params(&self) -> Vec<(String, String)> {
        let mut params = Vec::new();
        let named = [
            ("q", self.q.clone()),
            ("from", self.from.clone()),
            ("to", self.to.clone()),
            ("limit", self.limit.map(|l| l.to_string())),
            ("order", self.order.clone()),
            ("cursor", self.cursor.clone()),
        ];
        for (name, value) in named {
            if let Some(value) = value {
                params.push((name.to_owned(), value));
            }
        }
        for (path, value) in &self.filters {
            params.push((path.clone(), value.clone()));
        }
        params
    }
}

/// A query that was not answered with events: the reader's error object, or no reader.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({code})")]
pub struct QueryFailure {
    pub code: String,
    pub message: String,
}

impl QueryFailure {
    fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    fn to_json(&self) -> Vec<u8> {
        json!({"error": {"code": self.code, "message": self.message}})
            .to_string()
            .into_bytes()
    }
}

/// What a reader needs besides the bus and the store.
#[derive(Debug, Clone)]
pub struct ReaderConfig {
    pub query_limits: QueryLimits,
    /// Largest reply page, in bytes; stays below the server's `max_payload` (default 1 MiB),
    /// and the page's `next_cursor` continues where it stopped.
    pub max_page_bytes: usize,
    /// Queries answered at once by this process.
    pub concurrency: usize,
}

impl Default for ReaderConfig {
    fn default() -> Self {
        Self {
            query_limits: QueryLimits::default(),
            max_page_bytes: 900 * 1024,
            concurrency: 64,
        }
    }
}

/// Answers queries until `shutdown` resolves, then stops taking new ones and finishes those in
/// flight.
pub async fn run_reader(
    bus: Bus,
    store: Arc<dyn Store>,
    config: ReaderConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), BusError> {
    let subject = bus.names().query_wildcard();
    let mut requests = bus
        .client()
        .queue_subscribe(subject.clone(), READER_QUEUE_GROUP.to_owned())
        .await
        .map_err(|e| BusError::Unavailable(format!("subscribing to {subject}: {e}")))?;
    tracing::info!(%subject, group = READER_QUEUE_GROUP, "reader answering queries");
    let config = Arc::new(config);
    let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
    tokio::pin!(shutdown);
    loop {
        let message = tokio::select! {
            () = &mut shutdown => break,
            message = requests.next() => match message {
                Some(m) => m,
                None => break,
            },
        };
        let Some(reply_to) = message.reply.clone() else {
            continue;
        };
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let bus = bus.clone();
        let store = Arc::clone(&store);
        let config = Arc::clone(&config);
        tokio::spawn(async move {
            let tenant = bus
                .names()
                .query_subject_token(&message.subject)
                .map(str::to_owned);
            let reply = answer(&store, &config, tenant.as_deref(), &message.payload).await;
            if let Err(e) = bus.client().publish(reply_to, reply.into()).await {
                tracing::warn!(error = %e, "query reply not sent");
            }
            drop(permit);
        });
    }
    let _ = requests.unsubscribe().await;
    // Wait for the queries in flight: every permit back.
    let _ = permits
        .acquire_many(u32::try_from(config.concurrency.max(1)).unwrap_or(u32::MAX))
        .await;
    // Bounded: a flush waits for a connection, and NATS may be down at shutdown.
    let _ = tokio::time::timeout(bus.config().request_timeout, bus.client().flush()).await;
    tracing::info!(url = %redact(&bus.config().url), "reader stopped");
    Ok(())
}

/// The reply to one request: a page, or an error object.
async fn answer(
    store: &Arc<dyn Store>,
    config: &ReaderConfig,
    tenant: Option<&str>,
    payload: &[u8],
) -> Vec<u8> {
    match page(store, config, tenant, payload).await {
        Ok(bytes) => bytes,
        Err(failure) => failure.to_json(),
    }
}

async fn page(
    store: &Arc<dyn Store>,
    config: &ReaderConfig,
    tenant: Option<&str>,
    payload: &[u8],
) -> Result<Vec<u8>, QueryFailure> {
    let tenant = tenant
        .and_then(|t| TenantId::parse(t).ok())
        .ok_or_else(|| QueryFailure::new("invalid_tenant", "the subject names no valid tenant"))?;
    let request: QueryRequest = if payload.iter().all(u8::is_ascii_whitespace) {
        QueryRequest::default()
    } else {
        serde_json::from_slice(payload).map_err(|e| {
            QueryFailure::new(
                "invalid_request",
                format!("the request is not a query: {e}"),
            )
        })?
    };
    let query = Query::from_params(&request.to_params(), Timestamp::now(), &config.query_limits)
        .map_err(|e| QueryFailure::new(e.code(), e.to_string()))?;
    let page = store
        .query(&tenant, &query)
        .await
        .map_err(|e| QueryFailure::new(e.code(), e.to_string()))?;
    Ok(page.to_json(&query, config.max_page_bytes))
}

impl Bus {
    /// Asks the readers for one page of `tenant`'s events. The reply is the JSON page as
    /// `GET /v1/events` returns it.
    pub async fn query(
        &self,
        tenant: &TenantId,
        request: &QueryRequest,
    ) -> Result<Bytes, QueryFailure> {
        let subject = self.names().query_subject(tenant);
        let body = serde_json::to_vec(request)
            .map_err(|e| QueryFailure::new("internal", e.to_string()))?;
        let reply = self
            .client()
            .request(subject.clone(), body.into())
            .await
            .map_err(|e| {
                let message = match e.kind() {
                    async_nats::RequestErrorKind::NoResponders => {
                        format!("no vigil reader answers {subject}")
                    }
                    async_nats::RequestErrorKind::TimedOut => {
                        timed_out_message(&subject, self.config.inbox_prefix.as_deref())
                    }
                    async_nats::RequestErrorKind::Other => format!("requesting {subject}: {e}"),
                };
                QueryFailure::new("bus_unavailable", message)
            })?;
        if let Ok(error) = serde_json::from_slice::<ErrorReply>(&reply.payload) {
            return Err(QueryFailure::new(&error.error.code, error.error.message));
        }
        Ok(reply.payload)
    }
}

/// Why a query may get no reply, in the order people meet the causes. A NATS user of the
/// least-privilege configuration may subscribe only to its own inbox (`_INBOX.<user>.>`): a
/// client that does not say so (`--nats-inbox-prefix`) waits on `_INBOX.>`, the server drops
/// the reply, and all the client sees is a timeout.
fn timed_out_message(subject: &str, inbox_prefix: Option<&str>) -> String {
    match inbox_prefix {
        None => format!(
            "no answer on {subject} in time: if this NATS user may subscribe only to its own \
             inbox, give it with --nats-inbox-prefix (e.g. _INBOX.client-acme); otherwise check \
             that the user may publish to {subject} and that a reader is running"
        ),
        Some(prefix) => format!(
            "no answer on {subject} in time: check that this NATS user may publish to \
             {subject} and subscribe to {prefix}.>, and that a reader is running"
        ),
    }
}

#[derive(Deserialize)]
struct ErrorReply {
    error: ErrorObject,
}

#[derive(Deserialize)]
struct ErrorObject {
    code: String,
    message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_become_url_parameters() {
        let request: QueryRequest = serde_json::from_str(
            r#"{"q":"severity>7","limit":10,"filters":{"actor.id":"u-1"},"order":"asc"}"#,
        )
        .unwrap();
        assert_eq!(
            request.to_params(),
            vec![
                ("q".to_owned(), "severity>7".to_owned()),
                ("limit".to_owned(), "10".to_owned()),
                ("order".to_owned(), "asc".to_owned()),
                ("actor.id".to_owned(), "u-1".to_owned()),
            ]
        );
        let typo = serde_json::from_str::<QueryRequest>(r#"{"qq":"x"}"#);
        assert!(typo.is_err(), "unknown members are refused, not ignored");
    }

    #[tokio::test]
    async fn bad_requests_get_error_objects() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            vigil_store_embedded::EmbeddedStore::open(vigil_store_embedded::EmbeddedConfig::new(
                dir.path(),
            ))
            .unwrap(),
        );
        let config = ReaderConfig::default();
        let reply = |tenant: Option<&'static str>, body: &'static str| {
            let store = Arc::clone(&store);
            let config = config.clone();
            async move {
                let bytes = answer(&store, &config, tenant, body.as_bytes()).await;
                serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
            }
        };
        assert_eq!(
            reply(Some("acme"), "{").await["error"]["code"],
            "invalid_request"
        );
        assert_eq!(
            reply(Some("acme"), r#"{"q":"severity >"}"#).await["error"]["code"],
            "invalid_query"
        );
        assert_eq!(
            reply(Some("a%b"), "{}").await["error"]["code"],
            "invalid_tenant"
        );
        assert_eq!(
            reply(Some("acme"), "").await,
            json!({"events": [], "next_cursor": null})
        );
        store.shutdown().await.unwrap();
    }

    /// Regression (issue 12): over NATS, `{"filters": {"details.i": 3}}` was refused ("expected
    /// a string") while `?details.i=3` works over HTTP. JSON numbers, booleans and null are now
    /// read as the URL parameter of the same text, with the same typing rule.
    #[tokio::test]
    async fn filters_take_numbers_booleans_and_null_like_url_parameters() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            vigil_store_embedded::EmbeddedStore::open(vigil_store_embedded::EmbeddedConfig::new(
                dir.path(),
            ))
            .unwrap(),
        );
        let tenant = TenantId::parse("acme").unwrap();
        let events = [
            json!({"type": "t", "id": "three", "details": {"i": 3, "ok": true, "gone": null}}),
            json!({"type": "t", "id": "text", "details": {"i": "3", "ok": false}}),
            json!({"type": "t", "id": "four", "details": {"i": 4}}),
        ]
        .into_iter()
        .map(|body| {
            vigil_event::normalize(body, &vigil_event::Limits::default())
                .unwrap()
                .prepare(&tenant, Timestamp::now(), "test")
        })
        .collect();
        store.append(events).await.unwrap();
        let config = ReaderConfig::default();
        let ids = |body: &'static str| {
            let (store, config) = (Arc::clone(&store), config.clone());
            async move {
                let bytes = answer(&store, &config, Some("acme"), body.as_bytes()).await;
                let page: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                let mut ids: Vec<String> = page["events"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{page}"))
                    .iter()
                    .map(|e| e["id"].as_str().unwrap().to_owned())
                    .collect();
                ids.sort();
                ids
            }
        };
        assert_eq!(
            ids(r#"{"filters":{"details.i":3}}"#).await,
            ["text", "three"]
        );
        assert_eq!(
            ids(r#"{"filters":{"details.i":"3"}}"#).await,
            ["text", "three"]
        );
        assert_eq!(ids(r#"{"filters":{"details.ok":true}}"#).await, ["three"]);
        assert_eq!(ids(r#"{"filters":{"details.gone":null}}"#).await, ["three"]);
        let refused = answer(
            &store,
            &config,
            Some("acme"),
            br#"{"filters":{"details.i":[3]}}"#,
        )
        .await;
        let refused: serde_json::Value = serde_json::from_slice(&refused).unwrap();
        assert_eq!(refused["error"]["code"], "invalid_request", "{refused}");
        store.shutdown().await.unwrap();
    }
}
