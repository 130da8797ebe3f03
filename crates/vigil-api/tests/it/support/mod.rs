//! The test app every module drives: the real router over the real embedded store in a
//! temporary directory, called without a socket through `tower::ServiceExt::oneshot`, with
//! typed request helpers ([`TestApp`]) and answers ([`Resp`]); plus the fixtures several
//! areas share ([`seed`]). [`TestStore`] wraps the store for tests that steer its timing.

mod test_store;

pub use test_store::TestStore;

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
use vigil_auth::{Auth, AuthConfig};
use vigil_store::Store;
use vigil_store_embedded::{EmbeddedConfig, EmbeddedStore};

pub struct TestApp {
    pub router: Router,
    pub root: String,
    pub store: Arc<dyn Store>,
    pub _dir: Option<TempDir>,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    #[track_caller]
    pub fn assert(&self, status: u16, code: &str) -> &Self {
        assert_eq!(self.status.as_u16(), status, "{}", self.text());
        assert_eq!(self.code(), code, "{}", self.text());
        self
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(ApiConfig::default(), AuthConfig::default()).await
}

pub async fn spawn_app_with(config: ApiConfig, auth_config: AuthConfig) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut app = open_app_with(dir.path(), config, auth_config).await;
    app._dir = Some(dir);
    app
}

/// An app over an existing data directory; `root` is empty unless this start created it.
pub async fn open_app(dir: &std::path::Path) -> TestApp {
    open_app_with(dir, ApiConfig::default(), AuthConfig::default()).await
}

pub async fn open_app_with(
    dir: &std::path::Path,
    config: ApiConfig,
    auth_config: AuthConfig,
) -> TestApp {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir)).unwrap());
    app_over(store, config, auth_config).await
}

/// An app whose embedded store is wrapped in a [`TestStore`], returned for the test to steer.
pub async fn spawn_app_over_test_store(
    config: ApiConfig,
    append_delay: Duration,
    query_delay: Duration,
) -> (TestApp, Arc<TestStore>) {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap());
    let test_store = Arc::new(TestStore::new(inner, append_delay, query_delay));
    let store: Arc<dyn Store> = Arc::clone(&test_store) as Arc<dyn Store>;
    let mut app = app_over(store, config, AuthConfig::default()).await;
    app._dir = Some(dir);
    (app, test_store)
}

pub async fn app_over(
    store: Arc<dyn Store>,
    config: ApiConfig,
    auth_config: AuthConfig,
) -> TestApp {
    app_signing(store, config, auth_config, None).await
}

/// [`app_over`], signing checkpoints with `key` when given.
pub async fn app_signing(
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

/// Repeats `request` until its answer satisfies `done`, for changes another node applies
/// periodically; gives the last answer after 10 s without one.
pub async fn eventually(request: impl AsyncFn() -> Resp, done: impl Fn(&Resp) -> bool) -> Resp {
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
    pub async fn send(&self, request: Request<Body>) -> Resp {
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

    pub async fn call(
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

    pub async fn get(&self, key: &str, uri: &str) -> Resp {
        self.call(Method::GET, uri, Some(key), &[], Body::empty())
            .await
    }

    pub async fn post_json(&self, key: &str, uri: &str, body: &Value) -> Resp {
        self.call(
            Method::POST,
            uri,
            Some(key),
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await
    }

    pub async fn post_events(&self, key: &str, body: &Value) -> Resp {
        self.post_json(key, "/v1/events", body).await
    }

    pub async fn put_schema(&self, key: &str, ty: &str, schema: &Value) -> Resp {
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
    pub async fn key(&self, tenant: &str, name: &str, scopes: &[&str]) -> String {
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

    pub async fn count(&self, key: &str, query: &str) -> u64 {
        let r = self.get(key, &format!("/v1/events/count{query}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.json()["count"].as_u64().unwrap()
    }

    /// A key of tenant `acme` that may write and read events.
    pub async fn rw(&self) -> String {
        self.key("acme", "billing", &["events:write", "events:read"])
            .await
    }
}

/// Stores `n` events through `key`, in batches of at most 1 000: even `i` are `even`, odd
/// `i` are `odd`, one second apart from 2024-05-01T00:00:00Z, by actors `u-0` to `u-2`, each
/// with a note that needs quoting in CSV.
pub async fn seed(app: &TestApp, key: &str, n: usize) {
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
