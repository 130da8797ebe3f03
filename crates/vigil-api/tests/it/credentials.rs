//! Credential hardening, black-box through a real port: JWTs signed with a key kept off the
//! store, capped token lifetimes, the last root credential, and failed credentials throttled
//! per source address. Self-contained (its own helpers) so it can move into the crate's
//! consolidated test binary as a module.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;
use vigil_api::{ApiConfig, AppState};
use vigil_auth::{Auth, AuthConfig, JwtSigningKey, RateLimit};
use vigil_store::Store;
use vigil_store_embedded::{EmbeddedConfig, EmbeddedStore};

/// A server on `127.0.0.1:0` over an embedded store in its own directory.
struct Server {
    url: String,
    root: String,
    store: Arc<dyn Store>,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: Option<TempDir>,
}

impl Server {
    async fn start(api: ApiConfig, auth: AuthConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap());
        let mut server = Self::over(store, api, auth).await;
        server._dir = Some(dir);
        server
    }

    async fn over(store: Arc<dyn Store>, api: ApiConfig, auth_config: AuthConfig) -> Self {
        let auth = Auth::open(Arc::clone(&store), auth_config).await.unwrap();
        let root = auth.bootstrap_root_key().await.unwrap().unwrap_or_default();
        let state = AppState::new(Arc::clone(&store), auth, api).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(vigil_api::serve(listener, state, async {
            let _ = stopped.await;
        }));
        Self {
            url,
            root,
            store,
            http: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
            _dir: None,
        }
    }

    async fn shutdown(mut self) -> Option<TempDir> {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
        self._dir.take()
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, body)
    }

    async fn get(
        &self,
        bearer: &str,
        path: &str,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        self.send(
            self.http
                .get(format!("{}{path}", self.url))
                .bearer_auth(bearer),
        )
        .await
    }

    async fn create_key(&self, tenant: &str, scopes: &[&str]) -> Value {
        let (status, _, body) = self
            .send(
                self.http
                    .post(format!("{}/v1/keys", self.url))
                    .bearer_auth(&self.root)
                    .json(&json!({"name": "k", "tenant": tenant, "scopes": scopes})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

fn throttle(burst: u32) -> AuthConfig {
    AuthConfig {
        source_failures: Some(RateLimit {
            per_second: 0.01,
            burst,
        }),
        ..AuthConfig::default()
    }
}

/// Claims of a token, decoded without checking it.
fn claims_of(token: &str) -> Value {
    let body = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap()
}

/// Signs `claims` with `key` (EdDSA), as anyone holding the key file could.
fn sign_with(key: &JwtSigningKey, claims: &Value) -> String {
    let pem = key.to_pem();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(b64).unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        claims,
        &jsonwebtoken::EncodingKey::from_ed_der(&der),
    )
    .unwrap()
}

async fn mint(server: &Server, key: &str) -> String {
    let (status, _, body) = server
        .send(
            server
                .http
                .post(format!("{}/v1/auth/token", server.url))
                .bearer_auth(key),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

/// Regression (issue 12, item 12): failed credentials were never throttled, even with
/// `--rate-limit`: about 1,000–1,400 wrong API keys a second were each answered 401, so keys
/// and passwords could be guessed at full speed. After the per-address budget of failures,
/// every request from the address gets 429 with `Retry-After` before its credential is
/// checked (a valid one included), failures and refusals are counted in
/// `vigil_auth_failures_total`, and `X-Forwarded-For` does not let a client pick another
/// address unless the server is told to trust it.
#[tokio::test]
async fn failed_credentials_from_one_address_are_throttled_with_429_and_counted() {
    let server = Server::start(ApiConfig::default(), throttle(5)).await;
    let wrong = "vgl_aaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    for i in 0..5 {
        // A client rotating X-Forwarded-For gains nothing: the peer address counts.
        let (status, _, body) = server
            .send(
                server
                    .http
                    .get(format!("{}/v1/events", server.url))
                    .bearer_auth(wrong)
                    .header("x-forwarded-for", format!("192.0.2.{i}")),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    let (status, headers, body) = server.get(wrong, "/v1/events").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(code(&body), "rate_limited");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1, "{retry}");
    // Not checked: even the root key is refused from this address now.
    let (status, _, _) = server.get(&server.root.clone(), "/v1/keys").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // Logins and key exchanges are throttled alike.
    let (status, _, _) = server
        .send(
            server
                .http
                .post(format!("{}/v1/auth/token", server.url))
                .json(&json!({"username": "nobody", "password": "wrong password!"})),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    let metrics = server.metrics().await;
    assert!(
        metrics.contains("# HELP vigil_auth_failures_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vigil_auth_failures_total{reason=\"throttled\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vigil_auth_failures_total{reason=\"invalid_credential\"}"),
        "{metrics}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_trusted_forwarded_for_separates_clients_behind_a_proxy() {
    let api = ApiConfig {
        trust_forwarded_for: true,
        ..ApiConfig::default()
    };
    let server = Server::start(api, throttle(2)).await;
    let wrong = "vgl_aaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    let from = |client: &str| {
        server
            .http
            .get(format!("{}/v1/events", server.url))
            .bearer_auth(wrong)
            // A client-supplied first entry, then the address the proxy appended.
            .header("x-forwarded-for", format!("10.9.9.9, {client}"))
    };
    for _ in 0..2 {
        assert_eq!(
            server.send(from("198.51.100.1")).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        server.send(from("198.51.100.1")).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        server.send(from("198.51.100.2")).await.0,
        StatusCode::UNAUTHORIZED,
        "another client behind the same proxy keeps its own budget"
    );
    server.shutdown().await;
}

/// Regression (issue 12, item 3): the only root key could revoke itself, silently, and then
/// nothing could administer the server until a restart minted a new key into an undocumented
/// file. `DELETE /v1/keys/{id}` of the last active root credential is now a 409
/// `last_root_credential` with a message saying what to do, and changes nothing.
#[tokio::test]
async fn the_last_root_key_cannot_revoke_itself() {
    let server = Server::start(ApiConfig::default(), AuthConfig::default()).await;
    let (_, _, keys) = server.get(&server.root.clone(), "/v1/keys").await;
    let root_id = keys["keys"][0]["id"].as_str().unwrap().to_owned();
    let delete = |id: &str| {
        server
            .http
            .delete(format!("{}/v1/keys/{id}", server.url))
            .bearer_auth(&server.root)
    };
    let (status, _, body) = server.send(delete(&root_id)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(code(&body), "last_root_credential");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("create another root key"),
        "{body}"
    );
    assert_eq!(
        server.get(&server.root.clone(), "/v1/keys").await.0,
        StatusCode::OK
    );

    // With a second root key, the first may go.
    let second = server
        .create_key(vigil_auth::SYSTEM_TENANT, &["root", "admin"])
        .await;
    let (status, _, body) = server.send(delete(&root_id)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let second_key = second["key"].as_str().unwrap();
    assert_eq!(server.get(second_key, "/v1/keys").await.0, StatusCode::OK);
    server.shutdown().await;
}

/// Regression (issue 12, item 2): a correctly signed token with `exp` a year ahead was
/// accepted. A token living longer than `jwt_ttl` (plus the clock skew), or without `iat` or
/// `exp`, is now a 401.
#[tokio::test]
async fn overlong_tokens_and_tokens_without_iat_or_exp_are_refused() {
    let key = JwtSigningKey::generate();
    let auth = AuthConfig {
        jwt_key: key.clone(),
        jwt_ttl: Duration::from_secs(300),
        ..AuthConfig::default()
    };
    let server = Server::start(ApiConfig::default(), auth).await;
    let token = mint(&server, &server.root.clone()).await;
    assert_eq!(server.get(&token, "/v1/keys").await.0, StatusCode::OK);

    let claims = claims_of(&token);
    let iat = claims["iat"].as_i64().unwrap();
    let mut year = claims.clone();
    year["exp"] = (iat + 365 * 86_400).into();
    let mut no_iat = claims.clone();
    no_iat.as_object_mut().unwrap().remove("iat");
    let mut no_exp = claims.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    for forged in [year, no_iat, no_exp] {
        let (status, _, body) = server.get(&sign_with(&key, &forged), "/v1/keys").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{forged} {body}");
    }
    server.shutdown().await;
}

/// Regression (issue 12, item 1): the `auth` document in the store held the HS256
/// `jwt_secret`, so anyone able to read the store could mint a root token. Opening such a
/// document removes the secret from the store; a root token signed with it is a 401; tokens
/// are signed with the node's key, and a token of another key is refused unless that key is
/// given as a previous key (rotation).
#[tokio::test]
async fn the_stored_hs256_secret_is_removed_and_its_tokens_refused() {
    let server = Server::start(ApiConfig::default(), AuthConfig::default()).await;
    let root = server.root.clone();
    let (_, _, keys) = server.get(&root, "/v1/keys").await;
    let root_id = keys["keys"][0]["id"].as_str().unwrap().to_owned();
    let store = Arc::clone(&server.store);
    let dir = server.shutdown().await;

    // The document as a version 1 server left it.
    let secret = [42u8; 32];
    let mut doc: Value =
        serde_json::from_slice(&store.load_meta("auth").await.unwrap().unwrap()).unwrap();
    doc["version"] = 1.into();
    doc["jwt_secret"] = STANDARD.encode(secret).into();
    store
        .save_meta("auth", &serde_json::to_vec(&doc).unwrap())
        .await
        .unwrap();

    let old_key = JwtSigningKey::generate();
    let new_key = JwtSigningKey::generate();
    let server = Server::over(
        Arc::clone(&store),
        ApiConfig::default(),
        AuthConfig {
            jwt_key: new_key.clone(),
            jwt_previous_keys: vec![old_key.verifying_key().clone()],
            ..AuthConfig::default()
        },
    )
    .await;
    let stored = String::from_utf8(store.load_meta("auth").await.unwrap().unwrap()).unwrap();
    assert!(!stored.contains("jwt_secret"), "{stored}");
    assert!(!stored.contains(&STANDARD.encode(secret)), "{stored}");

    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "sub": root_id, "cid": root_id, "tenant": vigil_auth::SYSTEM_TENANT, "scopes": ["root", "admin"],
        "iat": now, "exp": now + 60, "jti": "forged",
    });
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&secret),
    )
    .unwrap();
    let (status, _, body) = server.get(&hs256, "/v1/keys").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // Rotation: tokens of the previous key and of the new one are accepted, others not.
    assert_eq!(
        server
            .get(&sign_with(&old_key, &claims), "/v1/keys")
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        server
            .get(&sign_with(&new_key, &claims), "/v1/keys")
            .await
            .0,
        StatusCode::OK
    );
    let stranger = JwtSigningKey::generate();
    assert_eq!(
        server
            .get(&sign_with(&stranger, &claims), "/v1/keys")
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let minted = mint(&server, &root).await;
    assert!(minted.starts_with(&URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"EdDSA"}"#)));
    server.shutdown().await;
    drop(dir);
}
