//! Typed async client for the vigil HTTP API (v1).
//!
//! The last stage seen from outside: producers ingest through it, and the `vigil` CLI and the
//! black-box tests query, export and administer through it. It speaks the wire contract only
//! (`POST /v1/events`, `GET /v1/events`, keys, users, schemas, tokens, health) and depends on no
//! server crate, so it works against any server that keeps that contract.
//!
//! Every call returns `Result<_, ClientError>`: a refusal by the server is
//! [`ClientError::Api`] with its status, stable `code`, message and details, parsed from the
//! server's error body. The bearer token is never printed: `Debug` redacts it.
//!
//! # Example
//! ```no_run
//! # async fn run() -> Result<(), vigil_client::ClientError> {
//! use vigil_client::{Client, QueryParams};
//!
//! let client = Client::new("http://127.0.0.1:7878", Some("vk_…".to_owned()))?;
//! let ack = client
//!     .ingest(&[serde_json::json!({"type": "login.failed", "severity": 8, "actor": {"id": "u-7"}})])
//!     .await?;
//! assert_eq!(ack.accepted, 1);
//!
//! let page = client.query(&QueryParams::new().q("severity>=7").from("-1h")).await?;
//! for event in &page.events {
//!     println!("{} {}", event["time"], event["type"]);
//! }
//! # Ok(()) }
//! ```

mod error;
mod params;
mod types;

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use error::ClientError;
pub use params::{Order, QueryParams};
/// URLs as the client takes and reports them.
pub use reqwest::Url;
pub use types::{
    CreatedKey, ExportFormat, IngestResponse, Ingested, KeyInfo, NewKey, NewUser, Page,
    SchemaEntry, Token, UserInfo,
};

/// How long to wait for a TCP connection before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A handle on one vigil server, with or without a credential. Cheap to clone (the connection
/// pool is shared).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Always ends with `/`, so relative API paths join under any path prefix it has.
    base: Url,
    /// API key or JWT sent as `Authorization: Bearer …`.
    token: Option<String>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Client {
    /// A client for the server at `base_url` (`http://127.0.0.1:7878`, possibly with a path
    /// prefix), authenticating with `token` (an API key or a JWT) when given.
    pub fn new(base_url: &str, token: Option<String>) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(ClientError::Transport)?;
        Ok(Self {
            http,
            base: parse_base(base_url)?,
            token,
        })
    }

    /// The same server and connection pool with another credential.
    pub fn with_token(&self, token: Option<String>) -> Self {
        Self {
            http: self.http.clone(),
            base: self.base.clone(),
            token,
        }
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// Appends events, all-or-nothing, durable on return. Each value is one event object in
    /// any accepted shape (aliases included).
    pub async fn ingest(&self, events: &[Value]) -> Result<IngestResponse, ClientError> {
        let rb = self.request(Method::POST, &["v1", "events"])?.json(events);
        decode(self.send(rb).await?).await
    }

    /// Appends events sent as NDJSON (one JSON object per line), as producers that stream do.
    pub async fn ingest_ndjson(
        &self,
        body: impl Into<Bytes>,
    ) -> Result<IngestResponse, ClientError> {
        self.ingest_raw(body, "application/x-ndjson").await
    }

    /// Sends `body` as-is to `POST /v1/events` with the given content type: for producers that
    /// already hold serialised events, and for exercising the server's handling of bad input.
    pub async fn ingest_raw(
        &self,
        body: impl Into<Bytes>,
        content_type: &str,
    ) -> Result<IngestResponse, ClientError> {
        let rb = self
            .request(Method::POST, &["v1", "events"])?
            .header(CONTENT_TYPE, content_type)
            .body(body.into());
        decode(self.send(rb).await?).await
    }

    /// One page of matching events.
    pub async fn query(&self, params: &QueryParams) -> Result<Page, ClientError> {
        let rb = self
            .request(Method::GET, &["v1", "events"])?
            .query(&params.to_pairs());
        decode(self.send(rb).await?).await
    }

    /// How many events match (`limit`, `order` and `cursor` are ignored by the server).
    pub async fn count(&self, params: &QueryParams) -> Result<u64, ClientError> {
        #[derive(serde::Deserialize)]
        struct Count {
            count: u64,
        }
        let rb = self
            .request(Method::GET, &["v1", "events", "count"])?
            .query(&params.to_pairs());
        Ok(decode::<Count>(self.send(rb).await?).await?.count)
    }

    /// One event by id, as stored (with `tenant`, `seq`, `received_at`, `hash`).
    pub async fn get_event(&self, id: &str) -> Result<Value, ClientError> {
        let rb = self.request(Method::GET, &["v1", "events", id])?;
        decode(self.send(rb).await?).await
    }

    /// One event with its inclusion proof (`proof` member: the audit path and the signed
    /// checkpoint it leads to); in the kept checkpoint of `tree_size` when given.
    pub async fn get_event_with_proof(
        &self,
        id: &str,
        tree_size: Option<u64>,
    ) -> Result<Value, ClientError> {
        let mut query = vec![("proof", "true".to_owned())];
        if let Some(size) = tree_size {
            query.push(("tree_size", size.to_string()));
        }
        let rb = self
            .request(Method::GET, &["v1", "events", id])?
            .query(&query);
        decode(self.send(rb).await?).await
    }

    /// The tenant's signed checkpoint covering every stored event (`GET /v1/checkpoint`), or the
    /// kept one of `size`.
    pub async fn checkpoint(&self, size: Option<u64>) -> Result<Value, ClientError> {
        let mut rb = self.request(Method::GET, &["v1", "checkpoint"])?;
        if let Some(size) = size {
            rb = rb.query(&[("size", size)]);
        }
        decode(self.send(rb).await?).await
    }

    /// The server's checkpoint signing key (`GET /v1/checkpoint/key`, no credential needed).
    pub async fn signing_key(&self) -> Result<Value, ClientError> {
        let rb = self.request(Method::GET, &["v1", "checkpoint", "key"])?;
        decode(self.send(rb).await?).await
    }

    /// Proof that the tree of `to` events extends the tree of `from` events.
    pub async fn consistency_proof(&self, from: u64, to: u64) -> Result<Value, ClientError> {
        let rb = self
            .request(Method::GET, &["v1", "proof", "consistency"])?
            .query(&[("from", from), ("to", to)]);
        decode(self.send(rb).await?).await
    }

    /// Every matching event as a byte stream in `format`, for export. The request is sent and
    /// its status checked before this returns; the stream then yields the body as it arrives.
    pub async fn export(
        &self,
        params: &QueryParams,
        format: ExportFormat,
    ) -> Result<impl Stream<Item = Result<Bytes, ClientError>> + Send + use<>, ClientError> {
        let rb = self
            .request(Method::GET, &["v1", "events"])?
            .query(&params.to_pairs())
            .header(ACCEPT, format.media_type());
        let response = self.send(rb).await?;
        Ok(response.bytes_stream().map_err(ClientError::Transport))
    }

    /// [`Client::export`] as NDJSON.
    pub async fn export_ndjson(
        &self,
        params: &QueryParams,
    ) -> Result<impl Stream<Item = Result<Bytes, ClientError>> + Send + use<>, ClientError> {
        self.export(params, ExportFormat::Ndjson).await
    }

    /// Creates an API key; the answer holds its secret, shown this once.
    pub async fn create_key(&self, key: &NewKey) -> Result<CreatedKey, ClientError> {
        let rb = self.request(Method::POST, &["v1", "keys"])?.json(key);
        decode(self.send(rb).await?).await
    }

    /// The keys this credential administers.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>, ClientError> {
        let rb = self.request(Method::GET, &["v1", "keys"])?;
        decode_list(self.send(rb).await?, "keys").await
    }

    /// Revokes a key at once (JWTs minted from it included).
    pub async fn revoke_key(&self, id: &str) -> Result<(), ClientError> {
        let rb = self.request(Method::DELETE, &["v1", "keys", id])?;
        self.send(rb).await.map(drop)
    }

    pub async fn create_user(&self, user: &NewUser) -> Result<UserInfo, ClientError> {
        let rb = self.request(Method::POST, &["v1", "users"])?.json(user);
        decode(self.send(rb).await?).await
    }

    pub async fn list_users(&self) -> Result<Vec<UserInfo>, ClientError> {
        let rb = self.request(Method::GET, &["v1", "users"])?;
        decode_list(self.send(rb).await?, "users").await
    }

    pub async fn delete_user(&self, username: &str) -> Result<(), ClientError> {
        let rb = self.request(Method::DELETE, &["v1", "users", username])?;
        self.send(rb).await.map(drop)
    }

    /// Exchanges this client's API key for a short-lived JWT.
    pub async fn token(&self) -> Result<Token, ClientError> {
        let rb = self.request(Method::POST, &["v1", "auth", "token"])?;
        decode(self.send(rb).await?).await
    }

    /// Exchanges a username and password for a short-lived JWT.
    pub async fn login(&self, username: &str, password: &str) -> Result<Token, ClientError> {
        let body = serde_json::json!({ "username": username, "password": password });
        let rb = self
            .request(Method::POST, &["v1", "auth", "token"])?
            .json(&body);
        decode(self.send(rb).await?).await
    }

    /// Registers (or replaces) the JSON Schema that events of `event_type` must match.
    pub async fn put_schema(&self, event_type: &str, schema: &Value) -> Result<Value, ClientError> {
        let rb = self
            .request(Method::PUT, &["v1", "schemas", event_type])?
            .json(schema);
        decode_or_null(self.send(rb).await?).await
    }

    /// The JSON Schema registered for `event_type`.
    pub async fn get_schema(&self, event_type: &str) -> Result<Value, ClientError> {
        let rb = self.request(Method::GET, &["v1", "schemas", event_type])?;
        decode(self.send(rb).await?).await
    }

    pub async fn delete_schema(&self, event_type: &str) -> Result<(), ClientError> {
        let rb = self.request(Method::DELETE, &["v1", "schemas", event_type])?;
        self.send(rb).await.map(drop)
    }

    /// The schemas registered for this credential's tenant, ordered by type.
    pub async fn list_schemas(&self) -> Result<Vec<SchemaEntry>, ClientError> {
        let rb = self.request(Method::GET, &["v1", "schemas"])?;
        decode_list(self.send(rb).await?, "schemas").await
    }

    /// Ok while the process is up (`GET /healthz`, no credential needed).
    pub async fn healthz(&self) -> Result<(), ClientError> {
        let rb = self.request(Method::GET, &["healthz"])?;
        self.send(rb).await.map(drop)
    }

    /// Ok while the server accepts writes (`GET /readyz`, no credential needed).
    pub async fn readyz(&self) -> Result<(), ClientError> {
        let rb = self.request(Method::GET, &["readyz"])?;
        self.send(rb).await.map(drop)
    }

    /// A request to the API path made of `segments` (each percent-encoded), with the bearer
    /// token when the client has one.
    fn request(&self, method: Method, segments: &[&str]) -> Result<RequestBuilder, ClientError> {
        let url = join(&self.base, segments)?;
        let rb = self.http.request(method, url);
        Ok(match &self.token {
            Some(token) => rb.header(AUTHORIZATION, format!("Bearer {token}")),
            None => rb,
        })
    }

    /// Sends and turns any non-success status into a [`ClientError`].
    async fn send(&self, rb: RequestBuilder) -> Result<Response, ClientError> {
        let response = rb.send().await.map_err(ClientError::Transport)?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = error::parse_retry_after(
            response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
        );
        let body = response.bytes().await.map_err(ClientError::Transport)?;
        Err(error::from_response_parts(
            status.as_u16(),
            retry_after,
            &body,
        ))
    }
}

fn parse_base(base_url: &str) -> Result<Url, ClientError> {
    let mut url =
        Url::parse(base_url).map_err(|e| ClientError::InvalidUrl(format!("{base_url}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(ClientError::InvalidUrl(format!(
            "{base_url}: expected an http:// or https:// url"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ClientError::InvalidUrl(format!(
            "{base_url}: a base url takes no query or fragment"
        )));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

fn join(base: &Url, segments: &[&str]) -> Result<Url, ClientError> {
    let mut path = base.path().to_owned();
    for (i, segment) in segments.iter().enumerate() {
        // URLs treat `.` and `..` (even percent-encoded) as path navigation, so a resource
        // with such a name cannot be addressed at all.
        if matches!(*segment, "." | ".." | "") {
            return Err(ClientError::InvalidUrl(format!(
                "{segment:?} cannot be used as a path segment"
            )));
        }
        if i > 0 {
            path.push('/');
        }
        encode_segment(segment, &mut path);
    }
    let mut url = base.clone();
    url.set_path(&path);
    Ok(url)
}

/// Percent-encodes one path segment: everything but RFC 3986 unreserved characters.
fn encode_segment(segment: &str, out: &mut String) {
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
}

async fn decode<T: DeserializeOwned>(response: Response) -> Result<T, ClientError> {
    let body = response.bytes().await.map_err(ClientError::Transport)?;
    serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
}

/// A JSON body, or `null` when the server answered with no body (204).
async fn decode_or_null(response: Response) -> Result<Value, ClientError> {
    let body = response.bytes().await.map_err(ClientError::Transport)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
}

/// A list body: a bare JSON array, or an object holding the array under `field`.
async fn decode_list<T: DeserializeOwned>(
    response: Response,
    field: &str,
) -> Result<Vec<T>, ClientError> {
    let value: Value = decode(response).await?;
    let items = match value {
        Value::Array(items) => Value::Array(items),
        Value::Object(mut map) => map
            .remove(field)
            .ok_or_else(|| ClientError::Decode(format!("expected a list under {field:?}")))?,
        other => return Err(ClientError::Decode(format!("expected a list, got {other}"))),
    };
    serde_json::from_value(items).map_err(|e| ClientError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths_join_under_any_base_prefix() {
        let base = parse_base("http://127.0.0.1:7878").unwrap();
        assert_eq!(
            join(&base, &["v1", "events"]).unwrap().as_str(),
            "http://127.0.0.1:7878/v1/events"
        );
        let prefixed = parse_base("http://h:1/vigil").unwrap();
        assert_eq!(
            join(&prefixed, &["healthz"]).unwrap().as_str(),
            "http://h:1/vigil/healthz"
        );
        let slashed = parse_base("http://h:1/vigil/").unwrap();
        assert_eq!(
            join(&slashed, &["healthz"]).unwrap().as_str(),
            "http://h:1/vigil/healthz"
        );
    }

    #[test]
    fn path_segments_are_encoded_not_interpreted() {
        let base = parse_base("http://h:1").unwrap();
        let url = join(&base, &["v1", "users", "../keys?x=1"]).unwrap();
        assert_eq!(url.as_str(), "http://h:1/v1/users/..%2Fkeys%3Fx%3D1");
        for dots in [".", "..", ""] {
            assert!(matches!(
                join(&base, &["v1", "events", dots]),
                Err(ClientError::InvalidUrl(_))
            ));
        }
        assert_eq!(
            join(&base, &["v1", "events", "a.b~c"]).unwrap().as_str(),
            "http://h:1/v1/events/a.b~c"
        );
    }

    #[test]
    fn rejects_urls_that_are_not_http_bases() {
        for bad in [
            "127.0.0.1:7878",
            "ftp://h/",
            "mailto:a@b",
            "http://h/?x=1",
            "not a url",
        ] {
            assert!(
                matches!(parse_base(bad), Err(ClientError::InvalidUrl(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn debug_never_shows_the_token() {
        let c = Client::new("http://127.0.0.1:1", Some("vk_topsecret".into())).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("topsecret"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[tokio::test]
    async fn a_closed_port_is_a_transport_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let c = Client::new(&format!("http://{addr}"), None).unwrap();
        let err = c.healthz().await.unwrap_err();
        assert_eq!(err.code(), "transport");
    }
}
