//! Handler tests: the real router over the real embedded store in a temporary directory,
//! driven without a socket through `tower::ServiceExt::oneshot` (plus tests through a port).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use bytes::Bytes;
use serde_json::{Value, json};
use tempfile::TempDir;
use tower::ServiceExt;
use vigil_api::{ApiConfig, AppState, router};
use vigil_auth::{Auth, AuthConfig, RateLimit};
use vigil_store::Store;
use vigil_store_embedded::{EmbeddedConfig, EmbeddedStore};

struct TestApp {
    router: Router,
    root: String,
    store: Arc<dyn Store>,
    _dir: Option<TempDir>,
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    #[track_caller]
    fn assert(&self, status: u16, code: &str) -> &Self {
        assert_eq!(self.status.as_u16(), status, "{}", self.text());
        assert_eq!(self.code(), code, "{}", self.text());
        self
    }
}

async fn spawn_app() -> TestApp {
    spawn_app_with(ApiConfig::default(), AuthConfig::default()).await
}

async fn spawn_app_with(config: ApiConfig, auth_config: AuthConfig) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut app = open_app_with(dir.path(), config, auth_config).await;
    app._dir = Some(dir);
    app
}

/// An app over an existing data directory; `root` is empty unless this start created it.
async fn open_app(dir: &std::path::Path) -> TestApp {
    open_app_with(dir, ApiConfig::default(), AuthConfig::default()).await
}

async fn open_app_with(
    dir: &std::path::Path,
    config: ApiConfig,
    auth_config: AuthConfig,
) -> TestApp {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir)).unwrap());
    app_over(store, config, auth_config).await
}

/// An app whose embedded store is wrapped in a [`TestStore`], returned for the test to steer.
async fn spawn_app_over_test_store(
    config: ApiConfig,
    append_delay: Duration,
    query_delay: Duration,
) -> (TestApp, Arc<TestStore>) {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap());
    let (schema_saves_open, _) = tokio::sync::watch::channel(true);
    let test_store = Arc::new(TestStore {
        inner,
        append_delay,
        query_delay,
        schema_saves_open,
        schemas_saved: tokio::sync::Notify::new(),
    });
    let store: Arc<dyn Store> = Arc::clone(&test_store) as Arc<dyn Store>;
    let mut app = app_over(store, config, AuthConfig::default()).await;
    app._dir = Some(dir);
    (app, test_store)
}

async fn app_over(store: Arc<dyn Store>, config: ApiConfig, auth_config: AuthConfig) -> TestApp {
    app_signing(store, config, auth_config, None).await
}

/// [`app_over`], signing checkpoints with `key` when given.
async fn app_signing(
    store: Arc<dyn Store>,
    config: ApiConfig,
    auth_config: AuthConfig,
    key: Option<vigil_integrity::checkpoint::SigningKey>,
) -> TestApp {
    let auth = Auth::open(Arc::clone(&store), auth_config).await.unwrap();
    let root = auth.bootstrap_root_key().await.unwrap().unwrap_or_default();
    let state = AppState::new(Arc::clone(&store), auth, config)
        .await
        .unwrap();
    if let Some(key) = key {
        state.install_checkpoint_signer(Arc::new(vigil_ingest::CheckpointSigner::new(
            key,
            Arc::clone(&store),
        )));
    }
    TestApp {
        router: router(state),
        root,
        store,
        _dir: None,
    }
}

/// The real embedded store, with delays and a gate the tests control: appends and queries
/// can be made slow (the clock is paused in those tests, so slow costs nothing), and saving the
/// `schemas` document can be held after it was written, until the test opens the gate.
#[derive(Debug)]
struct TestStore {
    inner: Arc<dyn Store>,
    append_delay: Duration,
    query_delay: Duration,
    /// While `false`, a save of the `schemas` document (plain or conditional) writes it,
    /// signals `schemas_saved`, then waits for this to turn `true` before returning.
    schema_saves_open: tokio::sync::watch::Sender<bool>,
    schemas_saved: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl Store for TestStore {
    async fn append(
        &self,
        events: Vec<vigil_event::Prepared>,
    ) -> Result<Vec<vigil_store::Appended>, vigil_store::StoreError> {
        tokio::time::sleep(self.append_delay).await;
        self.inner.append(events).await
    }

    async fn get(
        &self,
        tenant: &vigil_event::TenantId,
        id: &vigil_event::EventId,
    ) -> Result<Option<vigil_store::StoredEvent>, vigil_store::StoreError> {
        self.inner.get(tenant, id).await
    }

    async fn query(
        &self,
        tenant: &vigil_event::TenantId,
        query: &vigil_query::Query,
    ) -> Result<vigil_store::Page, vigil_store::StoreError> {
        tokio::time::sleep(self.query_delay).await;
        self.inner.query(tenant, query).await
    }

    async fn count(
        &self,
        tenant: &vigil_event::TenantId,
        filter: &vigil_query::Expr,
        from: Option<vigil_event::Timestamp>,
        to: Option<vigil_event::Timestamp>,
    ) -> Result<u64, vigil_store::StoreError> {
        self.inner.count(tenant, filter, from, to).await
    }

    async fn ready(&self) -> Result<(), vigil_store::StoreError> {
        self.inner.ready().await
    }

    async fn tree_size(
        &self,
        tenant: &vigil_event::TenantId,
    ) -> Result<u64, vigil_store::StoreError> {
        self.inner.tree_size(tenant).await
    }

    async fn tree_sizes(
        &self,
    ) -> Result<Vec<(vigil_event::TenantId, u64)>, vigil_store::StoreError> {
        self.inner.tree_sizes().await
    }

    async fn read_hashes(
        &self,
        tenant: &vigil_event::TenantId,
        indexes: &[u64],
    ) -> Result<Vec<vigil_event::Hash>, vigil_store::StoreError> {
        self.inner.read_hashes(tenant, indexes).await
    }

    async fn save_checkpoint(
        &self,
        tenant: &vigil_event::TenantId,
        checkpoint: &vigil_store::StoredCheckpoint,
    ) -> Result<(), vigil_store::StoreError> {
        self.inner.save_checkpoint(tenant, checkpoint).await
    }

    async fn checkpoint(
        &self,
        tenant: &vigil_event::TenantId,
        size: Option<u64>,
    ) -> Result<Option<vigil_store::StoredCheckpoint>, vigil_store::StoreError> {
        self.inner.checkpoint(tenant, size).await
    }

    async fn checkpoints(
        &self,
        tenant: &vigil_event::TenantId,
    ) -> Result<Vec<vigil_store::StoredCheckpoint>, vigil_store::StoreError> {
        self.inner.checkpoints(tenant).await
    }

    async fn load_meta(&self, name: &str) -> Result<Option<Vec<u8>>, vigil_store::StoreError> {
        self.inner.load_meta(name).await
    }

    async fn save_meta(&self, name: &str, bytes: &[u8]) -> Result<(), vigil_store::StoreError> {
        self.inner.save_meta(name, bytes).await?;
        self.held_after_save(name).await;
        Ok(())
    }

    async fn load_meta_versioned(
        &self,
        name: &str,
    ) -> Result<Option<(vigil_store::MetaVersion, Vec<u8>)>, vigil_store::StoreError> {
        self.inner.load_meta_versioned(name).await
    }

    async fn save_meta_if(
        &self,
        name: &str,
        expected: Option<vigil_store::MetaVersion>,
        bytes: &[u8],
    ) -> Result<Option<vigil_store::MetaVersion>, vigil_store::StoreError> {
        let saved = self.inner.save_meta_if(name, expected, bytes).await?;
        if saved.is_some() {
            self.held_after_save(name).await;
        }
        Ok(saved)
    }

    async fn shutdown(&self) -> Result<(), vigil_store::StoreError> {
        self.inner.shutdown().await
    }
}

impl TestStore {
    /// Holds a save of the `schemas` document that was just written while the gate is shut.
    async fn held_after_save(&self, name: &str) {
        if name == "schemas" && !*self.schema_saves_open.borrow() {
            self.schemas_saved.notify_one();
            let mut open = self.schema_saves_open.subscribe();
            let _ = open.wait_for(|open| *open).await;
        }
    }
}

/// Repeats `request` until its answer satisfies `done`, for changes another node applies
/// periodically; gives the last answer after 10 s without one.
async fn eventually(request: impl AsyncFn() -> Resp, done: impl Fn(&Resp) -> bool) -> Resp {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = request().await;
        if done(&r) || tokio::time::Instant::now() >= deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl TestApp {
    async fn send(&self, request: Request<Body>) -> Resp {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        Resp {
            status,
            headers,
            body,
        }
    }

    async fn call(
        &self,
        method: Method,
        uri: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Resp {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(key) = key {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        // As an HTTP client would: a body of known length says so.
        let body: Body = body.into();
        if let Some(len) = axum::body::HttpBody::size_hint(&body).exact()
            && len > 0
        {
            builder = builder.header(header::CONTENT_LENGTH, len);
        }
        self.send(builder.body(body).unwrap()).await
    }

    async fn get(&self, key: &str, uri: &str) -> Resp {
        self.call(Method::GET, uri, Some(key), &[], Body::empty())
            .await
    }

    async fn post_json(&self, key: &str, uri: &str, body: &Value) -> Resp {
        self.call(
            Method::POST,
            uri,
            Some(key),
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await
    }

    async fn post_events(&self, key: &str, body: &Value) -> Resp {
        self.post_json(key, "/v1/events", body).await
    }

    async fn put_schema(&self, key: &str, ty: &str, schema: &Value) -> Resp {
        let uri = format!("/v1/schemas/{ty}");
        self.call(
            Method::PUT,
            &uri,
            Some(key),
            &[("content-type", "application/json")],
            schema.to_string(),
        )
        .await
    }

    /// Creates a key with the root key and returns its plaintext.
    async fn key(&self, tenant: &str, name: &str, scopes: &[&str]) -> String {
        let r = self
            .post_json(
                &self.root,
                "/v1/keys",
                &json!({"name": name, "tenant": tenant, "scopes": scopes}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        r.json()["key"].as_str().unwrap().to_owned()
    }

    async fn count(&self, key: &str, query: &str) -> u64 {
        let r = self.get(key, &format!("/v1/events/count{query}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.json()["count"].as_u64().unwrap()
    }

    /// A key of tenant `acme` that may write and read events.
    async fn rw(&self) -> String {
        self.key("acme", "billing", &["events:write", "events:read"])
            .await
    }
}

// ---------------------------------------------------------------------------------------------
// Ingest

#[tokio::test]
async fn ingests_an_object_an_array_and_ndjson_and_reads_them_back() {
    let app = spawn_app().await;
    let key = app.rw().await;

    let r = app
        .post_events(
            &key,
            &json!({"type": "login.failed", "username": "u-7", "severity": 8}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let body = r.json();
    assert_eq!(body["accepted"], 1);
    assert_eq!(body["events"][0]["seq"], 1);
    assert_eq!(body["events"][0]["duplicate"], false);
    let first_id = body["events"][0]["id"].as_str().unwrap().to_owned();

    let r = app
        .post_events(
            &key,
            &json!([{"type": "a"}, {"type": "b", "source": "web"}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let seqs: Vec<u64> = r.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [2, 3]);

    let ndjson = "{\"type\":\"c\"}\n\n  \n{\"type\":\"d\"}\n";
    let r = app
        .call(
            Method::POST,
            "/v1/events",
            Some(&key),
            &[("content-type", "application/x-ndjson")],
            ndjson,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["accepted"], 2);

    // Missing Content-Type is JSON.
    let r = app
        .call(
            Method::POST,
            "/v1/events",
            Some(&key),
            &[],
            r#"{"type":"e"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

    let r = app.get(&key, &format!("/v1/events/{first_id}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/json");
    let event = r.json();
    assert_eq!(event["id"], first_id.as_str());
    assert_eq!(event["type"], "login.failed");
    assert_eq!(event["actor"]["id"], "u-7");
    assert_eq!(event["severity"], 8);
    assert_eq!(event["tenant"], "acme");
    assert_eq!(
        event["source"], "billing",
        "source defaults to the credential's name"
    );
    assert_eq!(event["seq"], 1);
    assert!(event["hash"].as_str().is_some_and(|h| h.len() == 64));

    assert_eq!(app.count(&key, "").await, 6);
    let page = app.get(&key, "/v1/events").await.json();
    assert_eq!(page["events"].as_array().unwrap().len(), 6);
    assert_eq!(page["next_cursor"], Value::Null);
}

#[tokio::test]
async fn malformed_json_is_400_with_its_position() {
    let app = spawn_app().await;
    let key = app.rw().await;

    let r = app
        .call(
            Method::POST,
            "/v1/events",
            Some(&key),
            &[],
            "{\"type\": \"a\",\n  oops}",
        )
        .await;
    r.assert(400, "invalid_json");
    assert_eq!(
        r.json()["error"]["details"],
        json!({"line": 2, "column": 3})
    );

    let ndjson = "{\"type\":\"a\"}\n\n{\"type\": }\n";
    let r = app
        .call(
            Method::POST,
            "/v1/events",
            Some(&key),
            &[("content-type", "application/x-ndjson")],
            ndjson,
        )
        .await;
    r.assert(400, "invalid_json");
    assert_eq!(
        r.json()["error"]["details"]["line"],
        3,
        "NDJSON errors name the body line"
    );
    assert_eq!(app.count(&key, "").await, 0);
}

#[tokio::test]
async fn other_content_types_are_415() {
    let app = spawn_app().await;
    let key = app.rw().await;
    let r = app
        .call(
            Method::POST,
            "/v1/events",
            Some(&key),
            &[("content-type", "text/plain")],
            "{\"type\":\"a\"}",
        )
        .await;
    r.assert(415, "unsupported_media_type");
}

/// `curl -X POST … -d '{…}'` without a content type sends
/// `application/x-www-form-urlencoded`; the documented one-line examples must work as written.
#[tokio::test]
async fn curl_default_content_type_is_read_as_json() {
    let app = spawn_app().await;
    let key = app.rw().await;
    let r = app
        .call(
            Method::POST,
            "/v1/events",
            Some(&key),
            &[("content-type", "application/x-www-form-urlencoded")],
            "{\"type\":\"login.failed\",\"severity\":8}",
        )
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text());
    assert_eq!(app.count(&key, "").await, 1);
}

#[tokio::test]
async fn request_size_limits_are_413() {
    let config = ApiConfig {
        max_body_bytes: 1024,
        max_batch_events: 3,
        ..ApiConfig::default()
    };
    let app = spawn_app_with(config, AuthConfig::default()).await;
    let key = app.rw().await;

    let big = json!({"type": "a", "details": {"blob": "x".repeat(2000)}});
    let r = app.post_events(&key, &big).await;
    r.assert(413, "body_too_large");
    assert_eq!(r.json()["error"]["details"]["limit"], 1024);

    let r = app
        .post_events(
            &key,
            &json!([{"type": "a"}, {"type": "a"}, {"type": "a"}, {"type": "a"}]),
        )
        .await;
    r.assert(413, "batch_too_large");
    let ndjson = "{\"type\":\"a\"}\n".repeat(4);
    let r = app
        .call(
            Method::POST,
            "/v1/events",
            Some(&key),
            &[("content-type", "application/x-ndjson")],
            ndjson,
        )
        .await;
    r.assert(413, "batch_too_large");

    let r = app
        .post_events(&key, &json!([{"type": "a"}, {"type": "a"}, {"type": "a"}]))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
}

#[tokio::test]
async fn oversized_events_are_refused_per_event() {
    let limits = vigil_event::Limits {
        max_event_bytes: 512,
        ..vigil_event::Limits::default()
    };
    let config = ApiConfig {
        event_limits: limits,
        ..ApiConfig::default()
    };
    let app = spawn_app_with(config, AuthConfig::default()).await;
    let key = app.rw().await;
    let r = app
        .post_events(
            &key,
            &json!([{"type": "a"}, {"type": "a", "details": {"blob": "x".repeat(600)}}]),
        )
        .await;
    r.assert(413, "event_too_large");
    assert_eq!(r.json()["error"]["details"][0]["index"], 1);
    assert_eq!(app.count(&key, "").await, 0);
}

#[tokio::test]
async fn empty_batches_are_400() {
    let app = spawn_app().await;
    let key = app.rw().await;
    app.post_events(&key, &json!([]))
        .await
        .assert(400, "empty_batch");
    app.call(
        Method::POST,
        "/v1/events",
        Some(&key),
        &[("content-type", "application/x-ndjson")],
        "\n\n",
    )
    .await
    .assert(400, "empty_batch");
}

#[tokio::test]
async fn one_invalid_event_refuses_the_whole_batch_and_lists_every_error() {
    let app = spawn_app().await;
    let key = app.rw().await;

    let r = app
        .post_events(
            &key,
            &json!([{"type": "ok"}, {"type": "a", "seq": 5}, {"type": "b", "hash": "00"}]),
        )
        .await;
    r.assert(422, "reserved_field");
    let details = r.json()["error"]["details"].clone();
    assert_eq!(details.as_array().unwrap().len(), 2, "{details}");
    assert_eq!(details[0]["index"], 1);
    assert_eq!(details[0]["path"], "seq");
    assert_eq!(details[0]["code"], "reserved_field");
    assert_eq!(details[1]["index"], 2);
    assert_eq!(details[1]["path"], "hash");
    assert!(
        details[0]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );

    let r = app
        .post_events(&key, &json!({"type": "a", "event_type": "a"}))
        .await;
    r.assert(400, "ambiguous_field");

    let r = app.post_events(&key, &json!({"severity": 3})).await;
    r.assert(422, "missing_field");
    assert_eq!(r.json()["error"]["details"][0]["path"], "type");

    // Different codes: `invalid_events`, status of the first error.
    let r = app
        .post_events(
            &key,
            &json!([{"type": "a", "event_type": "a"}, {"severity": 1}]),
        )
        .await;
    r.assert(400, "invalid_events");
    let codes: Vec<String> = r.json()["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes, ["ambiguous_field", "missing_field"]);

    let r = app.post_events(&key, &json!(["not an object"])).await;
    r.assert(422, "not_an_object");

    assert_eq!(
        app.count(&key, "").await,
        0,
        "nothing of a refused batch is stored"
    );
}

#[tokio::test]
async fn idempotent_retries_and_id_conflicts() {
    let app = spawn_app().await;
    let key = app.rw().await;
    let event = json!({"id": "evt-1", "type": "billing.charged", "details": {"amount": 10}});

    let r = app.post_events(&key, &event).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(
        r.json()["events"][0],
        json!({"id": "evt-1", "seq": 1, "duplicate": false})
    );

    let r = app.post_events(&key, &json!([{"type": "x"}, event])).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["accepted"], 2);
    assert_eq!(
        r.json()["events"][1],
        json!({"id": "evt-1", "seq": 1, "duplicate": true})
    );

    let changed = json!({"id": "evt-1", "type": "billing.charged", "details": {"amount": 11}});
    let r = app
        .post_events(&key, &json!([{"type": "y"}, changed]))
        .await;
    r.assert(409, "id_conflict");
    assert_eq!(
        r.json()["error"]["details"],
        json!([{"index": 1, "id": "evt-1"}])
    );
    assert_eq!(
        app.count(&key, "").await,
        2,
        "the conflicting batch stored nothing"
    );
}

#[tokio::test]
async fn large_batches_are_prepared_off_the_runtime_and_stored_whole() {
    let app = spawn_app().await;
    let key = app.rw().await;
    // 300 events of ~300 bytes: over both the event-count and the body-size thresholds.
    let batch: Vec<Value> = (0..300)
        .map(|i| json!({"type": "bulk", "details": {"i": i, "pad": "p".repeat(250)}}))
        .collect();
    let r = app.post_events(&key, &Value::Array(batch.clone())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["accepted"], 300);

    let mut bad = batch;
    bad[250] = json!({"type": "bulk", "tenant": "other"});
    let r = app.post_events(&key, &Value::Array(bad)).await;
    r.assert(422, "reserved_field");
    assert_eq!(r.json()["error"]["details"][0]["index"], 250);
    assert_eq!(app.count(&key, "").await, 300);

    // 100 small events: a small body, but enough events to be prepared off the runtime.
    let small: Vec<Value> = (0..100)
        .map(|i| json!({"type": "small", "details": {"i": i}}))
        .collect();
    let r = app.post_events(&key, &Value::Array(small)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let seqs: Vec<u64> = r.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (301..=400).collect::<Vec<u64>>(),
        "results in request order"
    );
}

// ---------------------------------------------------------------------------------------------
// Schemas

#[tokio::test]
async fn schema_violations_are_422_with_paths_and_per_tenant() {
    let app = spawn_app().await;
    let acme = app
        .key(
            "acme",
            "acme-admin",
            &["events:write", "events:read", "schemas:write"],
        )
        .await;
    let other = app
        .key("other", "other-writer", &["events:write", "events:read"])
        .await;
    let schema = json!({
        "type": "object",
        "required": ["details"],
        "properties": {"details": {
            "type": "object",
            "required": ["amount"],
            "properties": {"amount": {"type": "number", "minimum": 0}}
        }}
    });
    assert_eq!(
        app.put_schema(&acme, "billing.charged", &schema)
            .await
            .status,
        StatusCode::CREATED
    );

    let r = app
        .post_events(
            &acme,
            &json!([
                {"type": "billing.charged", "details": {"amount": 5}},
                {"type": "billing.charged", "details": {"amount": "five"}},
                {"type": "billing.charged"},
            ]),
        )
        .await;
    r.assert(422, "schema_violation");
    let details = r.json()["error"]["details"].clone();
    assert_eq!(details[0]["index"], 1);
    assert_eq!(details[0]["path"], "details.amount");
    assert_eq!(details[1]["index"], 2);
    assert_eq!(details[1]["path"], "");
    assert!(
        !details.to_string().contains("five"),
        "values are not echoed: {details}"
    );

    // Aliases are resolved before validation: `event_details` is `details`.
    let r = app
        .post_events(
            &acme,
            &json!({"event_type": "billing.charged", "event_details": {"amount": 1}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

    // Another tenant's events of the same type are not checked against acme's schema.
    let r = app
        .post_events(
            &other,
            &json!({"type": "billing.charged", "details": {"amount": "five"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    app.get(&other, "/v1/schemas/billing.charged")
        .await
        .assert(404, "not_found");
}

#[tokio::test]
async fn schema_crud() {
    let app = spawn_app().await;
    let writer = app.key("acme", "schema-admin", &["schemas:write"]).await;
    let reader = app.key("acme", "reader", &["events:read"]).await;
    let producer = app.key("acme", "producer", &["events:write"]).await;
    let s1 = json!({"type": "object", "required": ["actor"]});
    let s2 = json!({"type": "object"});

    let r = app.put_schema(&writer, "login.failed", &s1).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json(), s1);
    assert_eq!(
        app.put_schema(&writer, "login.failed", &s2).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.put_schema(&writer, "account.created", &s1).await.status,
        StatusCode::CREATED
    );

    let r = app.get(&reader, "/v1/schemas/login.failed").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), s2);
    let r = app.get(&writer, "/v1/schemas").await;
    assert_eq!(
        r.json(),
        json!({"schemas": [{"type": "account.created", "schema": s1}, {"type": "login.failed", "schema": s2}]})
    );

    app.put_schema(&reader, "x", &s1)
        .await
        .assert(403, "forbidden");
    app.get(&producer, "/v1/schemas")
        .await
        .assert(403, "forbidden");
    app.put_schema(&writer, "x", &json!({"type": "nonsense"}))
        .await
        .assert(422, "invalid_schema");
    app.put_schema(&writer, "bad%20type", &s1)
        .await
        .assert(400, "invalid_type");
    app.call(Method::PUT, "/v1/schemas/x", Some(&writer), &[], "{nope")
        .await
        .assert(400, "invalid_json");

    let r = app
        .call(
            Method::DELETE,
            "/v1/schemas/login.failed",
            Some(&writer),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    app.get(&reader, "/v1/schemas/login.failed")
        .await
        .assert(404, "not_found");
    app.call(
        Method::DELETE,
        "/v1/schemas/login.failed",
        Some(&writer),
        &[],
        Body::empty(),
    )
    .await
    .assert(404, "not_found");
}

#[tokio::test]
async fn schemas_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let schema = json!({"type": "object", "required": ["actor"]});
    let key = {
        let app = open_app(dir.path()).await;
        let key = app
            .key("acme", "w", &["schemas:write", "events:write"])
            .await;
        assert_eq!(
            app.put_schema(&key, "login.failed", &schema).await.status,
            StatusCode::CREATED
        );
        app.store.shutdown().await.unwrap();
        key
    };
    let app = open_app(dir.path()).await;
    app.post_events(&key, &json!({"type": "login.failed"}))
        .await
        .assert(422, "schema_violation");
    let r = app
        .post_events(&key, &json!({"type": "login.failed", "actor": {"id": "u"}}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
}

/// Two vigil processes sharing one store (a PostgreSQL database in production): keys and
/// schemas created, replaced or revoked through one are in force on the other once it has
/// reloaded them, every refresh interval, without a restart.
#[tokio::test]
async fn nodes_sharing_a_store_apply_each_others_keys_and_schemas() {
    let refresh = Duration::from_millis(20);
    let config = ApiConfig {
        schema_refresh_interval: refresh,
        ..ApiConfig::default()
    };
    let auth_config = AuthConfig {
        refresh_interval: refresh,
        ..AuthConfig::default()
    };
    let a = spawn_app_with(config.clone(), auth_config.clone()).await;
    let b = app_over(Arc::clone(&a.store), config, auth_config).await;
    assert!(b.root.is_empty(), "the first node created the root key");

    let key = a
        .key(
            "acme",
            "w",
            &["schemas:write", "events:write", "events:read"],
        )
        .await;
    let schema = json!({"type": "object", "required": ["actor"]});
    assert_eq!(
        a.put_schema(&key, "login.failed", &schema).await.status,
        StatusCode::CREATED
    );
    let unfit = json!({"type": "login.failed"});
    eventually(
        async || b.post_events(&key, &unfit).await,
        |r| r.status == StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await
    .assert(422, "schema_violation");
    let r = b
        .post_events(&key, &json!({"type": "login.failed", "actor": {"id": "u"}}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

    // The other way round: a schema registered on `b` is enforced on `a`.
    assert_eq!(
        b.put_schema(&key, "account.created", &schema).await.status,
        StatusCode::CREATED
    );
    let unfit = json!({"type": "account.created"});
    eventually(
        async || a.post_events(&key, &unfit).await,
        |r| r.status == StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await
    .assert(422, "schema_violation");
    let r = a.get(&key, "/v1/schemas").await;
    assert_eq!(r.json()["schemas"].as_array().unwrap().len(), 2);

    let id = key.split('_').nth(1).unwrap();
    let r = a
        .call(
            Method::DELETE,
            &format!("/v1/keys/{id}"),
            Some(&a.root),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    eventually(
        async || b.get(&key, "/v1/schemas").await,
        |r| r.status == StatusCode::UNAUTHORIZED,
    )
    .await
    .assert(401, "unauthenticated");
}

// ---------------------------------------------------------------------------------------------
// Credentials, scopes, tenants

#[tokio::test]
async fn missing_or_bad_credentials_are_401_with_a_challenge() {
    let app = spawn_app().await;
    for key in [
        None,
        Some("vgl_aaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"),
        Some("not-a-jwt"),
    ] {
        let r = app
            .call(Method::GET, "/v1/events", key, &[], Body::empty())
            .await;
        r.assert(401, "unauthenticated");
        assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
        if let Some(k) = key {
            assert!(!r.text().contains(k), "credentials are never echoed");
        }
    }
    let r = app
        .call(
            Method::GET,
            "/v1/events",
            None,
            &[("authorization", "Basic dXNlcjpwdw==")],
            Body::empty(),
        )
        .await;
    r.assert(401, "unauthenticated");
}

#[tokio::test]
async fn scopes_are_enforced_per_route() {
    let app = spawn_app().await;
    let reader = app.key("acme", "reader", &["events:read"]).await;
    let writer = app.key("acme", "writer", &["events:write"]).await;
    app.post_events(&reader, &json!({"type": "a"}))
        .await
        .assert(403, "forbidden");
    app.get(&writer, "/v1/events")
        .await
        .assert(403, "forbidden");
    app.get(&writer, "/v1/events/count")
        .await
        .assert(403, "forbidden");
    app.get(&writer, "/v1/events/some-id")
        .await
        .assert(403, "forbidden");
    app.get(&writer, "/v1/keys").await.assert(403, "forbidden");
    app.post_json(&writer, "/v1/users", &json!({"username": "bob", "password": "correct horse battery", "tenant": "acme", "scopes": []}))
        .await
        .assert(403, "forbidden");
}

#[tokio::test]
async fn tenants_never_see_each_other() {
    let app = spawn_app().await;
    let a = app
        .key("tenant-a", "a", &["events:write", "events:read"])
        .await;
    let b = app
        .key("tenant-b", "b", &["events:write", "events:read"])
        .await;
    let r = app
        .post_events(
            &a,
            &json!({"id": "shared-id", "type": "secret.thing", "details": {"x": 1}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);

    let page = app.get(&b, "/v1/events").await.json();
    assert_eq!(page["events"], json!([]));
    app.get(&b, "/v1/events/shared-id")
        .await
        .assert(404, "not_found");
    assert_eq!(app.count(&b, "?type=secret.thing").await, 0);
    // `tenant` in the query does not widen the search: the tenant comes from the credential.
    assert_eq!(
        app.get(&b, "/v1/events?tenant=tenant-a").await.json()["events"],
        json!([])
    );
    let r = app
        .call(
            Method::GET,
            "/v1/events",
            Some(&b),
            &[("accept", "application/x-ndjson")],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty(), "{}", r.text());

    // The same client id in another tenant is another event, not a conflict.
    let r = app
        .post_events(&b, &json!({"id": "shared-id", "type": "other"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["events"][0]["seq"], 1);
    assert_eq!(
        app.get(&a, "/v1/events/shared-id").await.json()["type"],
        "secret.thing"
    );
}

#[tokio::test]
async fn key_admin_flow() {
    let app = spawn_app().await;
    let admin = app.key("acme", "acme-admin", &["admin"]).await;

    let r = app
        .post_json(
            &admin,
            "/v1/keys",
            &json!({"name": "ingest", "tenant": "acme", "scopes": ["events:write"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let created = r.json();
    let (id, key) = (
        created["id"].as_str().unwrap().to_owned(),
        created["key"].as_str().unwrap().to_owned(),
    );
    assert!(key.starts_with("vgl_"));
    assert_eq!(created["tenant"], "acme");
    assert_eq!(created["scopes"], json!(["events:write"]));
    assert_eq!(
        app.post_events(&key, &json!({"type": "a"})).await.status,
        StatusCode::CREATED
    );

    let r = app.get(&admin, "/v1/keys").await;
    assert_eq!(r.status, StatusCode::OK);
    let keys = r.json()["keys"].as_array().unwrap().clone();
    assert!(keys.iter().any(|k| k["id"] == id.as_str()));
    assert!(
        keys.iter()
            .all(|k| k.get("key").is_none() && k["tenant"] == "acme"),
        "{keys:?}"
    );
    assert!(!r.text().contains(&key), "listings never show a secret");

    // An admin of acme administers acme only.
    app.post_json(
        &admin,
        "/v1/keys",
        &json!({"name": "x", "tenant": "globex", "scopes": ["events:read"]}),
    )
    .await
    .assert(403, "forbidden");
    app.post_json(
        &admin,
        "/v1/keys",
        &json!({"name": "x", "tenant": "acme", "scopes": ["events:nope"]}),
    )
    .await
    .assert(400, "invalid_body");
    app.call(Method::POST, "/v1/keys", Some(&admin), &[], "{\"name\": ")
        .await
        .assert(400, "invalid_json");

    let r = app
        .call(
            Method::DELETE,
            &format!("/v1/keys/{id}"),
            Some(&admin),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    app.post_events(&key, &json!({"type": "a"}))
        .await
        .assert(401, "unauthenticated");
    app.call(
        Method::DELETE,
        &format!("/v1/keys/{id}"),
        Some(&admin),
        &[],
        Body::empty(),
    )
    .await
    .assert(404, "not_found");
}

#[tokio::test]
async fn users_log_in_for_tokens_that_die_with_them() {
    let app = spawn_app().await;
    let admin = app.key("acme", "acme-admin", &["admin"]).await;
    let new_user = json!({"username": "alice", "password": "correct horse battery", "tenant": "acme", "scopes": ["events:read"]});
    let r = app.post_json(&admin, "/v1/users", &new_user).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["username"], "alice");
    assert!(
        !r.text().contains("correct horse"),
        "the password is never returned"
    );
    app.post_json(&admin, "/v1/users", &new_user)
        .await
        .assert(409, "conflict");

    let users = app.get(&admin, "/v1/users").await.json();
    assert!(
        users["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["username"] == "alice")
    );

    let login = json!({"username": "alice", "password": "correct horse battery"});
    let r = app
        .call(Method::POST, "/v1/auth/token", None, &[], login.to_string())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let token = r.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(r.json()["token_type"], "Bearer");
    assert_eq!(app.get(&token, "/v1/events").await.status, StatusCode::OK);
    app.post_events(&token, &json!({"type": "a"}))
        .await
        .assert(403, "forbidden");

    let wrong = json!({"username": "alice", "password": "wrong password!!"});
    let r = app
        .call(Method::POST, "/v1/auth/token", None, &[], wrong.to_string())
        .await;
    r.assert(401, "unauthenticated");
    assert!(!r.text().contains("wrong password"));

    let r = app
        .call(
            Method::DELETE,
            "/v1/users/alice",
            Some(&admin),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    app.get(&token, "/v1/events")
        .await
        .assert(401, "unauthenticated");
}

#[tokio::test]
async fn api_keys_are_exchanged_for_tokens_but_tokens_are_not() {
    let app = spawn_app().await;
    let key = app.rw().await;
    let r = app
        .call(
            Method::POST,
            "/v1/auth/token",
            Some(&key),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let token = r.json()["token"].as_str().unwrap().to_owned();
    assert!(
        r.json()["expires_in"]
            .as_u64()
            .is_some_and(|s| s > 0 && s <= 900)
    );
    let r = app.post_events(&token, &json!({"type": "via.jwt"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

    app.call(
        Method::POST,
        "/v1/auth/token",
        Some(&token),
        &[],
        Body::empty(),
    )
    .await
    .assert(401, "unauthenticated");
    app.call(Method::POST, "/v1/auth/token", None, &[], Body::empty())
        .await
        .assert(401, "unauthenticated");
    app.call(
        Method::POST,
        "/v1/auth/token",
        None,
        &[],
        "{\"username\": 1}",
    )
    .await
    .assert(400, "invalid_body");
}

#[tokio::test]
async fn rate_limited_credentials_get_429_with_retry_after() {
    let auth = AuthConfig {
        rate_limit: Some(RateLimit {
            per_second: 0.01,
            burst: 2,
        }),
        ..AuthConfig::default()
    };
    let app = spawn_app_with(ApiConfig::default(), auth).await;
    let key = app.key("acme", "r", &["events:read"]).await;
    assert_eq!(app.get(&key, "/v1/events").await.status, StatusCode::OK);
    assert_eq!(app.get(&key, "/v1/events").await.status, StatusCode::OK);
    let r = app.get(&key, "/v1/events").await;
    r.assert(429, "rate_limited");
    let retry: u64 = r.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
}

// ---------------------------------------------------------------------------------------------
// Queries and export

async fn seed(app: &TestApp, key: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1_000) {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|i| {
                json!({
                    "type": if i % 2 == 0 { "even" } else { "odd" },
                    "time": format!("2024-05-01T00:{:02}:{:02}Z", (i / 60) % 60, i % 60),
                    "actor": {"id": format!("u-{}", i % 3)},
                    "details": {"i": i, "note": "a, \"quoted\" note"}
                })
            })
            .collect();
        let r = app.post_events(key, &Value::Array(batch)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    }
}

#[tokio::test]
async fn cursor_paging_walks_every_event_once() {
    let app = spawn_app().await;
    let key = app.rw().await;
    seed(&app, &key, 5).await;

    let mut seen = Vec::new();
    let mut uri = "/v1/events?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let page = app.get(&key, &uri).await.json();
        pages += 1;
        for e in page["events"].as_array().unwrap() {
            seen.push(e["details"]["i"].as_u64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(c) => uri = format!("/v1/events?limit=2&cursor={c}"),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(seen, [4, 3, 2, 1, 0], "newest first by default");

    let asc = app.get(&key, "/v1/events?order=asc&limit=10").await.json();
    let order: Vec<u64> = asc["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["details"]["i"].as_u64().unwrap())
        .collect();
    assert_eq!(order, [0, 1, 2, 3, 4]);
}

#[tokio::test]
async fn filters_and_count() {
    let app = spawn_app().await;
    let key = app.rw().await;
    seed(&app, &key, 12).await;
    assert_eq!(app.count(&key, "").await, 12);
    assert_eq!(app.count(&key, "?type=even").await, 6);
    assert_eq!(
        app.count(&key, "?event_type=odd&actor.id=u-1").await,
        2,
        "aliases work in filters"
    );
    assert_eq!(app.count(&key, "?q=details.i%3E%3D10").await, 2);
    assert_eq!(
        app.count(&key, "?type=even&limit=1&order=asc&cursor=whatever")
            .await,
        6,
        "paging parameters are ignored"
    );
    let page = app
        .get(&key, "/v1/events?type=even&details.i=4")
        .await
        .json();
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    assert_eq!(page["events"][0]["details"]["i"], 4);

    app.get(&key, "/v1/events?q=severity%3E%3E")
        .await
        .assert(400, "invalid_query");
    app.get(&key, "/v1/events?limit=abc")
        .await
        .assert(400, "invalid_parameter");
    app.get(&key, "/v1/events?cursor=%21%21")
        .await
        .assert(400, "invalid_cursor");
}

#[tokio::test]
async fn ndjson_export_streams_every_match_across_pages() {
    let app = spawn_app().await;
    let key = app.rw().await;
    seed(&app, &key, 2_500).await;

    let ndjson = [("accept", "application/x-ndjson")];
    let r = app
        .call(
            Method::GET,
            "/v1/events",
            Some(&key),
            &ndjson,
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/x-ndjson");
    let lines: Vec<Value> = r
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2_500);
    let mut seqs: Vec<u64> = lines.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 2_500, "no event twice");

    let r = app
        .call(
            Method::GET,
            "/v1/events?limit=1200&type=even",
            Some(&key),
            &ndjson,
            Body::empty(),
        )
        .await;
    assert_eq!(r.text().lines().count(), 1_200);
    let r = app
        .call(
            Method::GET,
            "/v1/events?limit=20000",
            Some(&key),
            &ndjson,
            Body::empty(),
        )
        .await;
    assert_eq!(
        r.text().lines().count(),
        2_500,
        "export limits are caps, not page sizes"
    );
}

#[tokio::test]
async fn csv_export_quotes_per_rfc_4180() {
    let app = spawn_app().await;
    let key = app.rw().await;
    seed(&app, &key, 3).await;
    let r = app
        .call(
            Method::GET,
            "/v1/events?order=asc",
            Some(&key),
            &[("accept", "text/csv")],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = r.text();
    let mut lines = text.split("\r\n");
    assert_eq!(
        lines.next().unwrap(),
        "seq,time,received_at,type,severity,actor.id,source,action,outcome,resource.type,resource.id,id,details"
    );
    let first = lines.next().unwrap();
    assert!(first.starts_with("1,2024-05-01T00:00:00Z,"), "{first}");
    assert!(first.contains(",even,0,u-0,billing,,,,,"), "{first}");
    assert!(
        first.ends_with(r#","{""i"":0,""note"":""a, \""quoted\"" note""}""#),
        "{first}"
    );
    assert_eq!(text.matches("\r\n").count(), 4, "header + 3 rows");
}

/// Event fields are attacker-controlled: an exported cell a spreadsheet would run as a formula
/// is prefixed with `'`.
#[tokio::test]
async fn csv_export_neutralises_formulas() {
    let app = spawn_app().await;
    let key = app.rw().await;
    let r = app
        .post_events(
            &key,
            &json!({"type": "a", "actor": {"id": "=HYPERLINK(\"http://evil.example\",\"x\")"}, "action": "@SUM(A1)", "resource": {"id": "-1"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = app
        .call(
            Method::GET,
            "/v1/events",
            Some(&key),
            &[("accept", "text/csv")],
            Body::empty(),
        )
        .await;
    let text = r.text();
    let row = text.split("\r\n").nth(1).unwrap();
    assert!(
        row.contains(r#","'=HYPERLINK(""http://evil.example"",""x"")",billing,'@SUM(A1),,,'-1,"#),
        "{row}"
    );
}

#[tokio::test]
async fn get_by_id_validates_and_proofs_need_a_signing_key() {
    let app = spawn_app().await;
    let key = app.rw().await;
    app.post_events(&key, &json!({"id": "e-1", "type": "a"}))
        .await;
    app.get(&key, "/v1/events/bad%20id")
        .await
        .assert(400, "invalid_id");
    app.get(&key, "/v1/events/missing")
        .await
        .assert(404, "not_found");
    app.get(&key, "/v1/events/e-1?proof=true")
        .await
        .assert(501, "not_implemented");
    assert_eq!(
        app.get(&key, "/v1/events/e-1?proof=false").await.status,
        StatusCode::OK
    );
    app.get(&key, "/v1/events/e-1?proof=maybe")
        .await
        .assert(400, "invalid_parameter");
}

// ---------------------------------------------------------------------------------------------
// Operations, routing, middleware

#[tokio::test]
async fn ops_endpoints_need_no_credential() {
    let app = spawn_app().await;
    let r = app
        .call(Method::GET, "/healthz", None, &[], Body::empty())
        .await;
    assert_eq!(
        (r.status, r.json()),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let r = app
        .call(Method::GET, "/readyz", None, &[], Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::OK);

    let key = app.rw().await;
    app.post_events(&key, &json!({"type": "a"})).await;
    let r = app
        .call(Method::GET, "/metrics", None, &[], Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let text = r.text();
    assert!(text.contains("vigil_events_ingested_total"), "{text}");
    assert!(
        text.contains("vigil_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("route=\"/v1/events\""), "{text}");

    let r = app
        .call(Method::GET, "/openapi.json", None, &[], Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json()["paths"]["/v1/events"]["post"].is_object());
}

#[tokio::test]
async fn readyz_is_503_once_the_store_stops() {
    let app = spawn_app().await;
    app.store.shutdown().await.unwrap();
    let r = app
        .call(Method::GET, "/readyz", None, &[], Body::empty())
        .await;
    r.assert(503, "store_unavailable");
    assert_eq!(r.headers[header::RETRY_AFTER], "1");
    let key = app.root.clone();
    let r = app.post_events(&key, &json!({"type": "a"})).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json_errors() {
    let app = spawn_app().await;
    let r = app
        .call(Method::GET, "/v2/nothing", None, &[], Body::empty())
        .await;
    r.assert(404, "not_found");
    let r = app
        .call(Method::PATCH, "/v1/events", None, &[], Body::empty())
        .await;
    r.assert(405, "method_not_allowed");
}

/// Every documented operation is routed: the route table builds both, and this checks the
/// router answers each one with something other than "no such route".
#[tokio::test]
async fn every_documented_operation_is_routed() {
    let app = spawn_app().await;
    let doc = serde_json::to_value(vigil_api::openapi()).unwrap();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let concrete = path
                .replace("{id}", "x")
                .replace("{type}", "x")
                .replace("{username}", "x");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = app
                .call(method.clone(), &concrete, None, &[], Body::empty())
                .await;
            let unrouted = r.status == StatusCode::METHOD_NOT_ALLOWED
                || (r.status == StatusCode::NOT_FOUND
                    && r.json()["error"]["message"]
                        .as_str()
                        .unwrap()
                        .starts_with("no route"));
            assert!(
                !unrouted,
                "{method} {path} is documented but not routed: {}",
                r.text()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 22);
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = spawn_app().await;
    let r = app
        .call(Method::GET, "/healthz", None, &[], Body::empty())
        .await;
    let id = r.headers["x-request-id"].to_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
    let r = app
        .call(
            Method::GET,
            "/nope",
            None,
            &[("x-request-id", "client-chosen-1")],
            Body::empty(),
        )
        .await;
    assert_eq!(r.headers["x-request-id"], "client-chosen-1");
}

/// Regression: the request timeout used to wrap the whole ingest request, the append
/// included. A batch whose append outlived the timeout was stored, yet the client was told
/// `503 timeout`; `vigil import` retried it, and events without an `id` were stored twice (this
/// test was flaky for the same reason: with a tiny timeout it raced the append). Now the timeout
/// covers reading and validating the body only; once the batch is handed to the store, the
/// client gets the store's answer however long the append takes.
#[tokio::test(start_paused = true)]
async fn an_append_slower_than_the_timeout_is_answered_with_its_outcome() {
    let config = ApiConfig {
        request_timeout: Duration::from_secs(1),
        ..ApiConfig::default()
    };
    let (app, _) = spawn_app_over_test_store(config, Duration::from_secs(30), Duration::ZERO).await;
    let key = app.rw().await;
    let r = app
        .post_events(&key, &json!([{"type": "a"}, {"type": "b"}]))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["accepted"], 2);
    assert_eq!(app.count(&key, "").await, 2);
}

/// The request timeout still bounds what comes before the handoff: a body that never finishes
/// arriving is `503 timeout`, and nothing is stored.
#[tokio::test(start_paused = true)]
async fn a_body_slower_than_the_timeout_is_503_and_stores_nothing() {
    let config = ApiConfig {
        request_timeout: Duration::from_secs(1),
        ..ApiConfig::default()
    };
    let app = spawn_app_with(config, AuthConfig::default()).await;
    let key = app.rw().await;
    let first = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"[{\"type\""))]);
    let body = Body::from_stream(futures::StreamExt::chain(first, futures::stream::pending()));
    let r = app
        .call(
            Method::POST,
            "/v1/events",
            Some(&key),
            &[("content-type", "application/json")],
            body,
        )
        .await;
    r.assert(503, "timeout");
    assert_eq!(app.count(&key, "").await, 0);
}

/// Every other route is bounded by the request timeout as a whole.
#[tokio::test(start_paused = true)]
async fn slow_requests_time_out_with_503() {
    let config = ApiConfig {
        request_timeout: Duration::from_secs(1),
        ..ApiConfig::default()
    };
    let (app, _) = spawn_app_over_test_store(config, Duration::ZERO, Duration::from_secs(30)).await;
    let key = app.rw().await;
    let r = app.get(&key, "/v1/events").await;
    r.assert(503, "timeout");
}

/// Regression: a raw HTTP method became a metrics label, so a client sending made-up methods
/// could create label values without bound. Methods outside the standard set are `other`, and
/// the route label is the matched template or `unmatched`, never the raw path.
#[tokio::test]
async fn metric_labels_stay_bounded() {
    let app = spawn_app().await;
    let odd = Method::from_bytes(b"FROBNICATE").unwrap();
    let r = app
        .call(
            odd.clone(),
            "/v1/events/raw-id-5d41",
            None,
            &[],
            Body::empty(),
        )
        .await;
    assert!(r.status.is_client_error(), "{}", r.text());
    app.call(odd, "/no/such/route-7f3a", None, &[], Body::empty())
        .await;
    app.call(
        Method::GET,
        "/v1/events/raw-id-9c2e",
        None,
        &[],
        Body::empty(),
    )
    .await
    .assert(401, "unauthenticated");
    let text = app
        .call(Method::GET, "/metrics", None, &[], Body::empty())
        .await
        .text();
    for raw in ["FROBNICATE", "raw-id-5d41", "route-7f3a", "raw-id-9c2e"] {
        assert!(!text.contains(raw), "{raw} is a label value:\n{text}");
    }
    assert!(text.contains("method=\"other\""), "{text}");
    assert!(text.contains("route=\"/v1/events/{id}\""), "{text}");
    assert!(text.contains("route=\"unmatched\""), "{text}");
}

/// Regression: a schema PUT saved the document, then swapped the in-memory set, in the request's
/// own task. A request dropped between the two (client gone, timeout) left the schema on disk
/// but not enforced until the next restart. The save and the swap now run in a task of their
/// own, so a dropped request cannot split them.
#[tokio::test]
async fn a_dropped_schema_put_still_takes_effect_in_memory() {
    let (app, store) =
        spawn_app_over_test_store(ApiConfig::default(), Duration::ZERO, Duration::ZERO).await;
    let schema = json!({"type": "object", "required": ["details"]});
    store.schema_saves_open.send_replace(false);
    let request = Request::put("/v1/schemas/billing.charged")
        .header(header::AUTHORIZATION, format!("Bearer {}", app.root))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(schema.to_string()))
        .unwrap();
    let put = app.router.clone().oneshot(request);
    tokio::select! {
        r = put => panic!("the PUT answered while its save was held: {:?}", r.map(|r| r.status())),
        () = store.schemas_saved.notified() => {}
    }
    // The request is gone (dropped above, right after its document was written); let the save
    // finish. A second PUT is serialised behind the first, so once it answers the first is done.
    store.schema_saves_open.send_replace(true);
    app.put_schema(&app.root, "other.type", &json!(true)).await;
    let r = app.get(&app.root, "/v1/schemas/billing.charged").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json(), schema);
    let stored: Value =
        serde_json::from_slice(&app.store.load_meta("schemas").await.unwrap().unwrap()).unwrap();
    let tenants = stored["tenants"].as_object().unwrap();
    assert_eq!(tenants.len(), 1, "{stored}");
    let types: Vec<&String> = tenants
        .values()
        .next()
        .unwrap()
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(types, ["billing.charged", "other.type"]);
    let r = app
        .post_events(&app.root, &json!({"type": "billing.charged"}))
        .await;
    r.assert(422, "schema_violation");
}

/// Regression: a tenant could register any number of schemas of any size, each compiled and
/// kept in memory and rewritten with every change. Both are bounded now, with their own codes.
#[tokio::test]
async fn schemas_are_bounded_in_number_and_size() {
    let config = ApiConfig {
        max_schemas_per_tenant: 2,
        max_schema_bytes: 1024,
        ..ApiConfig::default()
    };
    let app = spawn_app_with(config, AuthConfig::default()).await;
    let key = app
        .key("acme", "schemas", &["schemas:write", "events:read"])
        .await;
    let other = app.key("globex", "schemas", &["schemas:write"]).await;
    assert_eq!(
        app.put_schema(&key, "a", &json!(true)).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        app.put_schema(&key, "b", &json!(true)).await.status,
        StatusCode::CREATED
    );
    let r = app.put_schema(&key, "c", &json!(true)).await;
    r.assert(422, "too_many_schemas");
    assert_eq!(r.json()["error"]["details"]["limit"], 2);
    // Replacing one is not one more; another tenant has its own count.
    assert_eq!(
        app.put_schema(&key, "a", &json!({})).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.put_schema(&other, "c", &json!(true)).await.status,
        StatusCode::CREATED
    );
    let r = app
        .call(
            Method::DELETE,
            "/v1/schemas/b",
            Some(&key),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.put_schema(&key, "c", &json!(true)).await.status,
        StatusCode::CREATED
    );

    let big = json!({"description": "x".repeat(2_000)});
    let r = app.put_schema(&key, "a", &big).await;
    r.assert(413, "schema_too_large");
    assert_eq!(r.json()["error"]["details"]["limit"], 1024);
    assert_eq!(app.get(&key, "/v1/schemas/a").await.json(), json!({}));
}

/// Regression: nothing bounded the ingest bodies held in memory at once, so enough concurrent
/// large requests could exhaust memory. A request whose body does not fit in what is left of
/// `max_inflight_bytes` now waits briefly, then gets `503 overloaded` with `Retry-After`; room
/// comes back when a request ends.
#[tokio::test(start_paused = true)]
async fn ingest_beyond_the_inflight_budget_is_503_overloaded() {
    let config = ApiConfig {
        max_inflight_bytes: 64 * 1024,
        ..ApiConfig::default()
    };
    let app = spawn_app_with(config, AuthConfig::default()).await;
    let key = app.rw().await;

    // A client that declared 48 KiB and is still sending holds that much of the budget.
    let stalled = Request::post("/v1/events")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_LENGTH, (48 * 1024).to_string())
        .body(Body::from_stream(futures::stream::pending::<
            Result<Bytes, std::io::Error>,
        >()))
        .unwrap();
    let stalled = tokio::spawn(app.router.clone().oneshot(stalled));
    tokio::time::sleep(Duration::from_millis(10)).await;

    let padded = json!([{"type": "a", "details": {"pad": "x".repeat(30 * 1024)}}]);
    let r = app.post_events(&key, &padded).await;
    r.assert(503, "overloaded");
    assert_eq!(r.headers[header::RETRY_AFTER], "1");
    // A body that fits in what is left goes through meanwhile.
    let r = app.post_events(&key, &json!({"type": "b"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

    stalled.abort();
    let _ = stalled.await;
    let r = app.post_events(&key, &padded).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(app.count(&key, "").await, 2);
}

/// Pages stay under `max_page_bytes` however large `limit` is, and walking `next_cursor`
/// still visits every event once; exports stream every event in bounded chunks.
#[tokio::test]
async fn pages_and_exports_are_bounded_in_bytes() {
    let config = ApiConfig {
        max_page_bytes: 4 * 1024,
        ..ApiConfig::default()
    };
    let app = spawn_app_with(config, AuthConfig::default()).await;
    let key = app.rw().await;
    let batch: Vec<Value> = (0..12)
        .map(|i| json!({"type": "a", "time": format!("2024-05-01T00:00:{i:02}Z"), "details": {"i": i, "pad": "x".repeat(1_000)}}))
        .collect();
    app.post_events(&key, &Value::Array(batch)).await;

    let mut seen = Vec::new();
    let mut uri = "/v1/events?limit=100&order=asc".to_owned();
    for _ in 0..20 {
        let r = app.get(&key, &uri).await;
        assert!(r.body.len() <= 4 * 1024, "a page of {} bytes", r.body.len());
        let page = r.json();
        let events = page["events"].as_array().unwrap();
        assert!(!events.is_empty() && events.len() < 12);
        seen.extend(events.iter().map(|e| e["details"]["i"].as_u64().unwrap()));
        match page["next_cursor"].as_str() {
            Some(c) => uri = format!("/v1/events?limit=100&order=asc&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, (0..12).collect::<Vec<u64>>());

    let r = app
        .call(
            Method::GET,
            "/v1/events?order=asc",
            Some(&key),
            &[("accept", "application/x-ndjson")],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let exported: Vec<u64> = r
        .text()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["details"]["i"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(exported, (0..12).collect::<Vec<u64>>());
}

/// Regression: a body whose `Content-Length` exceeded the limit was answered `413` before any
/// of it was read, and the connection closed with the body unread: a client still sending got a
/// broken pipe or a reset instead of the answer. Now such a body is read and discarded (up to a
/// bound) before the `413`, so the client finishes sending and reads the error.
#[tokio::test]
async fn an_oversized_body_gets_its_413_over_a_real_socket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let limit = ApiConfig::default().max_body_bytes;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap());
    let auth = Auth::open(Arc::clone(&store), AuthConfig::default())
        .await
        .unwrap();
    let root = auth.bootstrap_root_key().await.unwrap().unwrap();
    let config = ApiConfig {
        max_body_bytes: limit,
        ..ApiConfig::default()
    };
    let state = AppState::new(store, auth, config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(vigil_api::serve(listener, state, async {
        let _ = stopped.await;
    }));

    let body = vec![b' '; limit + 1024 * 1024];
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: vigil\r\nAuthorization: Bearer {root}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rx, mut tx) = conn.into_split();
    let writer = tokio::spawn(async move {
        tx.write_all(head.as_bytes()).await?;
        for chunk in body.chunks(16 * 1024) {
            tx.write_all(chunk).await?;
            tokio::task::yield_now().await;
        }
        tx.flush().await?;
        Ok::<_, std::io::Error>(tx)
    });
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let n = rx.read(&mut buf).await?;
            response.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&response);
            if n == 0 || text.contains("body_too_large") {
                return Ok::<_, std::io::Error>(());
            }
        }
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&response);
    read.unwrap_or_else(|e| panic!("reading the response failed ({e}) after {text:?}"));
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("\"body_too_large\""), "{text}");
    let sent = tokio::time::timeout(Duration::from_secs(30), writer)
        .await
        .unwrap()
        .unwrap();
    assert!(sent.is_ok(), "sending the body failed: {:?}", sent.err());

    stop.send(()).unwrap();
    drop(rx);
    drop(sent);
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn serve_answers_on_a_port_and_drains_on_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap());
    let auth = Auth::open(Arc::clone(&store), AuthConfig::default())
        .await
        .unwrap();
    let state = AppState::new(store, auth, ApiConfig::default())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(vigil_api::serve(listener, state, async {
        let _ = stopped.await;
    }));

    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: vigil\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("{\"status\":\"ok\"}"), "{response}");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Integrity

#[tokio::test]
async fn without_a_signing_key_integrity_endpoints_are_501() {
    let app = spawn_app().await;
    let key = app.rw().await;
    app.post_events(&key, &json!({"id": "e-1", "type": "a"}))
        .await;
    for uri in [
        "/v1/checkpoint",
        "/v1/checkpoint/key",
        "/v1/events/e-1?proof=true",
    ] {
        app.get(&key, uri).await.assert(501, "not_implemented");
    }
}

#[tokio::test]
async fn proofs_verify_against_the_signed_checkpoint() {
    use vigil_integrity::checkpoint::{CheckpointJson, SigningKey};
    use vigil_integrity::proof::{ConsistencyProof, InclusionProof};

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap());
    let signing = SigningKey::generate("test-log").unwrap();
    let verifier = signing.verifier();
    let mut app = app_signing(
        store,
        ApiConfig::default(),
        AuthConfig::default(),
        Some(signing),
    )
    .await;
    app._dir = Some(dir);
    let key = app.rw().await;
    let events: Vec<Value> = (0..5)
        .map(|i| json!({"id": format!("e-{i}"), "type": "a", "n": i}))
        .collect();
    app.post_events(&key, &Value::Array(events)).await;

    // The public key needs no credential.
    let published = app.get("", "/v1/checkpoint/key").await;
    assert_eq!(published.status, StatusCode::OK);
    assert_eq!(published.json()["vkey"], verifier.to_vkey());

    let first: CheckpointJson =
        serde_json::from_value(app.get(&key, "/v1/checkpoint").await.json()).unwrap();
    assert_eq!((first.origin.as_str(), first.size), ("vigil/acme", 5));
    let signed = first.verify(&verifier).unwrap();
    assert_eq!(signed.root, first.root_hash);

    let mut event = app.get(&key, "/v1/events/e-3?proof=true").await.json();
    let proof: InclusionProof =
        serde_json::from_value(event.as_object_mut().unwrap().remove("proof").unwrap()).unwrap();
    event.as_object_mut().unwrap().remove("hash");
    let leaf = vigil_integrity::tree::leaf_hash(&vigil_event::to_canonical_bytes(&event));
    assert_eq!(proof.leaf_index, 3);
    proof.verify_checkpointed(&leaf, &verifier).unwrap();

    // More events: a proof of a new one comes with a new checkpoint, consistent with the old.
    app.post_events(&key, &json!({"id": "e-9", "type": "b"}))
        .await;
    let resp = app.get(&key, "/v1/events/e-9?proof=true").await;
    let proof: InclusionProof = serde_json::from_value(resp.json()["proof"].clone()).unwrap();
    assert_eq!(proof.tree_size, 6);
    let newer = vigil_integrity::checkpoint::verify_checkpoint(
        proof.checkpoint.as_deref().unwrap(),
        &verifier,
    )
    .unwrap();
    let consistency: ConsistencyProof = serde_json::from_value(
        app.get(&key, "/v1/proof/consistency?from=5&to=6")
            .await
            .json(),
    )
    .unwrap();
    consistency.verify(&first.root_hash, &newer.root).unwrap();
    // The old checkpoint stays available, and proofs into it too.
    let kept = app.get(&key, "/v1/checkpoint?size=5").await.json();
    assert_eq!(kept["root_hash"], hex::encode(first.root_hash));
    let old = app
        .get(&key, "/v1/events/e-3?proof=true&tree_size=5")
        .await
        .json();
    assert_eq!(old["proof"]["tree_size"], 5);
    app.get(&key, "/v1/events/e-9?proof=true&tree_size=5")
        .await
        .assert(400, "invalid_parameter");
    app.get(&key, "/v1/checkpoint?size=4")
        .await
        .assert(404, "not_found");
    for bad in [
        "from=0",
        "from=7",
        "from=3&to=2",
        "from=x",
        "to=3",
        "from=1&bogus=2",
    ] {
        app.get(&key, &format!("/v1/proof/consistency?{bad}"))
            .await
            .assert(400, "invalid_parameter");
    }
    // Another tenant has its own log; acme's events are not found through it.
    let other = app
        .key("globex", "ops", &["events:read", "events:write"])
        .await;
    app.get(&other, "/v1/checkpoint")
        .await
        .assert(404, "not_found");
    app.get(&other, "/v1/events/e-3?proof=true")
        .await
        .assert(404, "not_found");
}
