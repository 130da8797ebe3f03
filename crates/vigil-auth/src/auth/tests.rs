use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::sync::{Notify, oneshot};
use vigil_event::{EventId, Prepared, Timestamp};
use vigil_query::{Expr, Query};
use vigil_store::{Appended, MetaVersion, Page, StoreError, StoredEvent};

use super::*;
use crate::KEY_PREFIX;
use crate::clock::ManualClock;

/// Keeps meta documents in a map; has no events. Behaves like a store several processes
/// share: every save takes a new version from a counter, `save_meta_if` compares and saves
/// atomically, and each meta call first yields, as a round trip to a database would, so
/// concurrent changes interleave.
#[derive(Debug, Default)]
struct MemStore {
    meta: Mutex<HashMap<String, (MetaVersion, Vec<u8>)>>,
    last_version: AtomicU64,
    /// Makes every save fail.
    fail_saves: AtomicBool,
    /// Makes every load fail.
    fail_loads: AtomicBool,
    /// `save_meta_if` calls refused because the document had changed.
    refused: AtomicUsize,
    /// Set by [`MemStore::hold_next_save`]: the next `save_meta_if` signals the first and waits
    /// for the second before it compares.
    hold: Mutex<Option<(Arc<Notify>, oneshot::Receiver<()>)>>,
}

impl MemStore {
    fn document(&self) -> Option<Vec<u8>> {
        self.meta
            .lock()
            .unwrap()
            .get(META_NAME)
            .map(|(_, bytes)| bytes.clone())
    }

    /// Holds the next conditional save before its compare: returns a signal that it got
    /// there and the sender that lets it go on.
    fn hold_next_save(&self) -> (Arc<Notify>, oneshot::Sender<()>) {
        let reached = Arc::new(Notify::new());
        let (release, held) = oneshot::channel();
        *self.hold.lock().unwrap() = Some((Arc::clone(&reached), held));
        (reached, release)
    }

    fn next_version(&self) -> MetaVersion {
        self.last_version.fetch_add(1, Ordering::SeqCst) + 1
    }
}

fn no_events() -> StoreError {
    StoreError::Unavailable("test store keeps no events".into())
}

#[async_trait]
impl Store for MemStore {
    async fn append(&self, _: Vec<Prepared>) -> Result<Vec<Appended>, StoreError> {
        Err(no_events())
    }
    async fn get(&self, _: &TenantId, _: &EventId) -> Result<Option<StoredEvent>, StoreError> {
        Err(no_events())
    }
    async fn query(&self, _: &TenantId, _: &Query) -> Result<Page, StoreError> {
        Err(no_events())
    }
    async fn count(
        &self,
        _: &TenantId,
        _: &Expr,
        _: Option<Timestamp>,
        _: Option<Timestamp>,
    ) -> Result<u64, StoreError> {
        Err(no_events())
    }
    async fn ready(&self) -> Result<(), StoreError> {
        Err(no_events())
    }
    async fn tree_size(&self, _: &TenantId) -> Result<u64, StoreError> {
        Err(no_events())
    }
    async fn tree_sizes(&self) -> Result<Vec<(TenantId, u64)>, StoreError> {
        Err(no_events())
    }
    async fn read_hashes(
        &self,
        _: &TenantId,
        _: &[u64],
    ) -> Result<Vec<vigil_event::Hash>, StoreError> {
        Err(no_events())
    }
    async fn save_checkpoint(
        &self,
        _: &TenantId,
        _: &vigil_store::StoredCheckpoint,
    ) -> Result<(), StoreError> {
        Err(no_events())
    }
    async fn checkpoint(
        &self,
        _: &TenantId,
        _: Option<u64>,
    ) -> Result<Option<vigil_store::StoredCheckpoint>, StoreError> {
        Err(no_events())
    }
    async fn checkpoints(
        &self,
        _: &TenantId,
    ) -> Result<Vec<vigil_store::StoredCheckpoint>, StoreError> {
        Err(no_events())
    }
    async fn load_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .load_meta_versioned(name)
            .await?
            .map(|(_, bytes)| bytes))
    }
    async fn save_meta(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        tokio::task::yield_now().await;
        if self.fail_saves.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("disk full".into()));
        }
        let version = self.next_version();
        self.meta
            .lock()
            .unwrap()
            .insert(name.to_owned(), (version, bytes.to_vec()));
        Ok(())
    }
    async fn load_meta_versioned(
        &self,
        name: &str,
    ) -> Result<Option<(MetaVersion, Vec<u8>)>, StoreError> {
        tokio::task::yield_now().await;
        if self.fail_loads.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("connection refused".into()));
        }
        Ok(self.meta.lock().unwrap().get(name).cloned())
    }
    async fn save_meta_if(
        &self,
        name: &str,
        expected: Option<MetaVersion>,
        bytes: &[u8],
    ) -> Result<Option<MetaVersion>, StoreError> {
        tokio::task::yield_now().await;
        let hold = self.hold.lock().unwrap().take();
        if let Some((reached, release)) = hold {
            reached.notify_one();
            let _ = release.await;
        }
        if self.fail_saves.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("disk full".into()));
        }
        let mut meta = self.meta.lock().unwrap();
        if meta.get(name).map(|(v, _)| *v) != expected {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Ok(None);
        }
        let version = self.next_version();
        meta.insert(name.to_owned(), (version, bytes.to_vec()));
        Ok(Some(version))
    }
    async fn shutdown(&self) -> Result<(), StoreError> {
        Err(no_events())
    }
}

struct Fixture {
    auth: Auth,
    store: Arc<MemStore>,
    clock: Arc<ManualClock>,
    root: Principal,
    root_key: String,
}

impl Fixture {
    async fn new() -> Self {
        Self::with_config(AuthConfig::default()).await
    }

    async fn with_config(config: AuthConfig) -> Self {
        let store = Arc::new(MemStore::default());
        let clock = Arc::new(ManualClock::new());
        let auth = Auth::open_with_clock(store.clone(), config, clock.clone())
            .await
            .unwrap();
        let root_key = auth
            .bootstrap_root_key()
            .await
            .unwrap()
            .expect("first start");
        let root = auth.authenticate(&root_key).unwrap();
        Self {
            auth,
            store,
            clock,
            root,
            root_key,
        }
    }

    async fn reopen(&self) -> Auth {
        Auth::open_with_clock(
            self.store.clone(),
            AuthConfig::default(),
            self.clock.clone(),
        )
        .await
        .unwrap()
    }

    async fn key(
        &self,
        by: &Principal,
        tenant: &str,
        scopes: &str,
    ) -> Result<CreatedKey, AuthError> {
        self.auth
            .create_key(
                by,
                NewKey {
                    name: format!("{tenant}-{}", scopes.replace([':', ','], "-")),
                    tenant: tenant_id(tenant),
                    scopes: Scopes::parse_list(scopes).unwrap(),
                    expires_at: None,
                },
            )
            .await
    }

    /// An authenticated principal holding a fresh key of `tenant` with `scopes`.
    async fn principal(&self, tenant: &str, scopes: &str) -> Principal {
        let created = self.key(&self.root, tenant, scopes).await.unwrap();
        self.auth.authenticate(&created.key).unwrap()
    }

    async fn user(
        &self,
        by: &Principal,
        name: &str,
        tenant: &str,
        scopes: &str,
    ) -> Result<UserInfo, AuthError> {
        self.auth
            .create_user(
                by,
                NewUser {
                    username: name.into(),
                    password: PASSWORD.into(),
                    tenant: tenant_id(tenant),
                    scopes: Scopes::parse_list(scopes).unwrap(),
                },
            )
            .await
    }
}

const PASSWORD: &str = "correct horse battery staple";

fn tenant_id(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

fn assert_invalid_credential(result: Result<Principal, AuthError>) {
    match result {
        Err(AuthError::Unauthenticated(msg)) => assert_eq!(msg, "invalid credential"),
        other => panic!("expected invalid credential, got {other:?}"),
    }
}

#[tokio::test]
async fn key_create_authenticate_revoke() {
    let f = Fixture::new().await;
    let created = f.key(&f.root, "acme", "events:write").await.unwrap();
    assert!(created.key.starts_with(&format!("vgl_{}_", created.id)));
    assert_eq!(created.tenant, tenant_id("acme"));

    let p = f.auth.authenticate(&created.key).unwrap();
    assert_eq!(p.tenant, tenant_id("acme"));
    assert_eq!(p.name, "acme-events-write");
    assert_eq!(p.credential, CredentialRef::Key(created.id.clone()));
    assert_eq!(p.scopes, Scopes::from([Scope::EventsWrite]));
    // Surrounding whitespace from a header is tolerated.
    assert_eq!(
        f.auth
            .authenticate(&format!(" {} ", created.key.expose()))
            .unwrap(),
        p
    );

    f.auth.revoke_key(&f.root, &created.id).await.unwrap();
    assert_invalid_credential(f.auth.authenticate(&created.key));
    let again = f.auth.revoke_key(&f.root, &created.id).await.unwrap_err();
    assert_eq!(again.code(), "not_found");
}

#[tokio::test]
async fn garbage_and_tampered_keys_are_invalid_credentials() {
    let f = Fixture::new().await;
    let created = f.key(&f.root, "acme", "events:read").await.unwrap();
    let mut tampered = created.key.expose().to_owned();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'x' { 'y' } else { 'x' });
    for bad in ["", "vgl_", "vgl_nope", "Bearer", "a.b.c", &tampered] {
        assert_invalid_credential(f.auth.authenticate(bad));
    }
    // Another key id with this key's secret.
    let other = f.key(&f.root, "acme", "events:read").await.unwrap();
    let swapped = created.key.replace(&created.id, &other.id);
    assert_invalid_credential(f.auth.authenticate(&swapped));
}

#[tokio::test]
async fn jwt_from_key_works_until_the_key_is_revoked() {
    let f = Fixture::new().await;
    let created = f
        .key(&f.root, "acme", "events:write,events:read")
        .await
        .unwrap();
    let p = f.auth.authenticate(&created.key).unwrap();
    let token = f.auth.issue_token(&p).unwrap();
    assert_eq!(token.token_type, "Bearer");
    assert_eq!(token.expires_in, 15 * 60);
    assert!(!token.token.starts_with(KEY_PREFIX));

    assert_eq!(f.auth.authenticate(&token.token).unwrap(), p);

    f.auth.revoke_key(&f.root, &created.id).await.unwrap();
    assert_invalid_credential(f.auth.authenticate(&token.token));
    assert_invalid_credential(f.auth.issue_token(&p).map(|_| p.clone()));
}

#[tokio::test]
async fn jwt_claims_are_the_documented_ones() {
    let f = Fixture::new().await;
    let p = f.principal("acme", "events:read").await;
    let token = f.auth.issue_token(&p).unwrap();
    let payload = token.token.split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["sub"], p.credential_id());
    assert_eq!(claims["tenant"], "acme");
    assert_eq!(claims["scopes"], serde_json::json!(["events:read"]));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        900
    );
    assert_eq!(
        claims["exp"].as_i64().unwrap(),
        token.expires_at.timestamp()
    );
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    // Each token gets its own id.
    assert_ne!(f.auth.issue_token(&p).unwrap().token, token.token);
}

#[tokio::test]
async fn expired_jwt_is_rejected_as_expired() {
    let f = Fixture::with_config(AuthConfig {
        jwt_ttl: Duration::from_secs(60),
        ..AuthConfig::default()
    })
    .await;
    let p = f.principal("acme", "events:read").await;
    let token = f.auth.issue_token(&p).unwrap();
    assert_eq!(token.expires_in, 60);

    f.clock.advance(Duration::from_secs(59));
    assert!(f.auth.authenticate(&token.token).is_ok());
    f.clock.advance(Duration::from_secs(1));
    match f.auth.authenticate(&token.token) {
        Err(AuthError::Unauthenticated(msg)) => assert_eq!(msg, "expired token"),
        other => panic!("expected expired token, got {other:?}"),
    }
}

#[tokio::test]
async fn expired_key_is_rejected_and_caps_its_tokens() {
    let f = Fixture::new().await;
    let now = f.clock.now();
    let created = f
        .auth
        .create_key(
            &f.root,
            NewKey {
                name: "temp".into(),
                tenant: tenant_id("acme"),
                scopes: Scopes::from([Scope::EventsRead]),
                expires_at: Some(now + Duration::from_secs(300)),
            },
        )
        .await
        .unwrap();
    let p = f.auth.authenticate(&created.key).unwrap();
    let token = f.auth.issue_token(&p).unwrap();
    assert!(token.expires_at <= now + Duration::from_secs(300));
    assert!(token.expires_in <= 300);

    f.clock.advance(Duration::from_secs(300));
    assert_invalid_credential(f.auth.authenticate(&created.key));
    assert!(f.auth.authenticate(&token.token).is_err());
    assert!(f.auth.issue_token(&p).is_err());

    let past = f
        .auth
        .create_key(
            &f.root,
            NewKey {
                name: "stale".into(),
                tenant: tenant_id("acme"),
                scopes: Scopes::from([Scope::EventsRead]),
                expires_at: Some(f.clock.now()),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(past.code(), "invalid_expires_at");
}

#[tokio::test]
async fn tampered_jwt_is_rejected() {
    let f = Fixture::new().await;
    let p = f.principal("acme", "events:read").await;
    let token = f.auth.issue_token(&p).unwrap().token;
    let parts: Vec<&str> = token.split('.').collect();

    // Raise the scopes to admin and move to another tenant, keeping the signature.
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["scopes"] = serde_json::json!(["admin"]);
    claims["tenant"] = "globex".into();
    let forged = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    assert_invalid_credential(
        f.auth
            .authenticate(&format!("{}.{forged}.{}", parts[0], parts[2])),
    );

    // A flipped signature byte.
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    sig[0] ^= 1;
    let resigned = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(sig));
    assert_invalid_credential(f.auth.authenticate(&resigned));

    // A well-formed token from another vigil (another signing key).
    let other = Fixture::with_config(AuthConfig {
        jwt_key: JwtSigningKey::generate(),
        ..AuthConfig::default()
    })
    .await;
    let foreign = other.auth.issue_token(&other.root).unwrap().token;
    assert_invalid_credential(f.auth.authenticate(&foreign));
}

#[tokio::test]
async fn token_scopes_are_a_subset_of_the_credential() {
    let f = Fixture::new().await;
    let mut p = f.principal("acme", "events:write,events:read").await;
    // A narrowed principal mints a narrowed token.
    p.scopes = Scopes::from([Scope::EventsRead]);
    let narrow = f.auth.issue_token(&p).unwrap();
    assert_eq!(f.auth.authenticate(&narrow.token).unwrap().scopes, p.scopes);
    // A widened one mints nothing.
    p.scopes = Scopes::from([Scope::EventsRead, Scope::Admin]);
    assert!(f.auth.issue_token(&p).is_err());
    // Nor does one claiming another tenant.
    p.scopes = Scopes::from([Scope::EventsRead]);
    p.tenant = tenant_id("globex");
    assert!(f.auth.issue_token(&p).is_err());
}

#[tokio::test]
async fn tenant_admin_stays_in_its_tenant() {
    let f = Fixture::new().await;
    let acme_admin = f.principal("acme", "admin").await;
    let globex_key = f.key(&f.root, "globex", "events:write").await.unwrap();
    f.user(&f.root, "gina", "globex", "events:read")
        .await
        .unwrap();

    // Its own tenant: fine, including `admin` itself.
    f.key(
        &acme_admin,
        "acme",
        "events:write,events:read,schemas:write,admin",
    )
    .await
    .unwrap();
    f.user(&acme_admin, "alice", "acme", "events:read")
        .await
        .unwrap();

    // Another tenant: forbidden.
    let err = f
        .key(&acme_admin, "globex", "events:write")
        .await
        .unwrap_err();
    assert_eq!(err.code(), "forbidden");
    let err = f
        .user(&acme_admin, "eve", "globex", "events:read")
        .await
        .unwrap_err();
    assert_eq!(err.code(), "forbidden");

    // Root: never, not even in its own tenant.
    let err = f.key(&acme_admin, "acme", "root").await.unwrap_err();
    assert_eq!(
        (err.code(), err.to_string().as_str()),
        ("forbidden", "only root can grant root")
    );
    let err = f
        .user(&acme_admin, "mallory", "acme", "admin,root")
        .await
        .unwrap_err();
    assert_eq!(err.code(), "forbidden");

    // Listing shows its tenant only.
    let keys = f.auth.list_keys(&acme_admin).unwrap();
    assert!(!keys.is_empty());
    assert!(keys.iter().all(|k| k.tenant == tenant_id("acme")));
    let users = f.auth.list_users(&acme_admin).unwrap();
    assert_eq!(
        users
            .iter()
            .map(|u| u.username.as_str())
            .collect::<Vec<_>>(),
        ["alice"]
    );
    assert_eq!(users[0].created_by, acme_admin.credential_id());

    // Another tenant's credentials look absent.
    let err = f
        .auth
        .revoke_key(&acme_admin, &globex_key.id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "not_found");
    let err = f
        .auth
        .revoke_key(&acme_admin, &f.root.credential_id())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "not_found");
    let err = f.auth.delete_user(&acme_admin, "gina").await.unwrap_err();
    assert_eq!(err.code(), "not_found");
    assert!(f.auth.authenticate(&globex_key.key).is_ok());

    // Root sees and manages everything.
    let all = f.auth.list_keys(&f.root).unwrap();
    for tenant in ["system", "acme", "globex"] {
        assert!(
            all.iter().any(|k| k.tenant == tenant_id(tenant)),
            "{tenant}"
        );
    }
    assert_eq!(f.auth.list_users(&f.root).unwrap().len(), 2);
    f.auth.revoke_key(&f.root, &globex_key.id).await.unwrap();
    f.auth.delete_user(&f.root, "gina").await.unwrap();
}

#[tokio::test]
async fn non_admins_administer_nothing() {
    let f = Fixture::new().await;
    let writer = f
        .principal("acme", "events:write,events:read,schemas:write")
        .await;
    let victim = f.key(&f.root, "acme", "events:read").await.unwrap();
    for err in [
        f.key(&writer, "acme", "events:read").await.unwrap_err(),
        f.user(&writer, "bob", "acme", "events:read")
            .await
            .unwrap_err(),
        f.auth.list_keys(&writer).unwrap_err(),
        f.auth.list_users(&writer).unwrap_err(),
        f.auth.revoke_key(&writer, &victim.id).await.unwrap_err(),
        f.auth.delete_user(&writer, "bob").await.unwrap_err(),
    ] {
        assert_eq!(err.code(), "forbidden", "{err}");
    }
}

#[tokio::test]
async fn only_root_removes_root_credentials() {
    let f = Fixture::new().await;
    // A root key living in tenant acme, next to an acme admin.
    let acme_root = f.key(&f.root, "acme", "root").await.unwrap();
    let acme_admin = f.principal("acme", "admin").await;
    let err = f
        .auth
        .revoke_key(&acme_admin, &acme_root.id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "forbidden");
    f.auth.revoke_key(&f.root, &acme_root.id).await.unwrap();
}

#[tokio::test]
async fn key_requests_are_validated() {
    let f = Fixture::new().await;
    for (name, scopes, code) in [
        ("", "events:read", "invalid_name"),
        ("   ", "events:read", "invalid_name"),
        ("tab\there", "events:read", "invalid_name"),
        (&"n".repeat(129), "events:read", "invalid_name"),
        ("ok", "", "invalid_scope"),
    ] {
        let err = f
            .auth
            .create_key(
                &f.root,
                NewKey {
                    name: name.into(),
                    tenant: tenant_id("acme"),
                    scopes: Scopes::parse_list(scopes).unwrap(),
                    expires_at: None,
                },
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{name:?} {scopes:?}");
        assert_eq!(err.http_status(), 422);
    }
    // Request bodies: unknown fields and unknown scopes are refused by serde.
    let body =
        r#"{"name":"k","tenant":"acme","scopes":["events:read"],"expires":"2030-01-01T00:00:00Z"}"#;
    assert!(serde_json::from_str::<NewKey>(body).is_err());
    let body = r#"{"name":"k","tenant":"acme","scopes":["events:remove"]}"#;
    assert!(serde_json::from_str::<NewKey>(body).is_err());
    let body = r#"{"name":"k","tenant":"acme","scopes":["events:read"]}"#;
    assert_eq!(
        serde_json::from_str::<NewKey>(body).unwrap().expires_at,
        None
    );
}

#[tokio::test]
async fn login_issues_user_tokens() {
    let f = Fixture::new().await;
    let info = f
        .user(&f.root, "alice@example.com", "acme", "events:read")
        .await
        .unwrap();
    assert_eq!(info.scopes, Scopes::from([Scope::EventsRead]));
    assert_eq!(info.created_by, f.root.credential_id());

    let token = f.auth.login("alice@example.com", PASSWORD).await.unwrap();
    let p = f.auth.authenticate(&token.token).unwrap();
    assert_eq!(p.tenant, tenant_id("acme"));
    assert_eq!(p.name, "alice@example.com");
    assert_eq!(
        p.credential,
        CredentialRef::User("alice@example.com".into())
    );
    assert_eq!(p.credential_id(), "user:alice@example.com");
    assert_eq!(p.scopes, Scopes::from([Scope::EventsRead]));
    // A user principal can refresh its token.
    assert!(f.auth.issue_token(&p).is_ok());
}

#[tokio::test]
async fn wrong_password_and_unknown_user_fail_the_same_way() {
    let f = Fixture::new().await;
    f.user(&f.root, "alice", "acme", "events:read")
        .await
        .unwrap();
    let wrong = f
        .auth
        .login("alice", "not the password at all")
        .await
        .unwrap_err();
    let unknown = f.auth.login("nobody", PASSWORD).await.unwrap_err();
    let malformed = f.auth.login("not a username!", PASSWORD).await.unwrap_err();
    let huge = f.auth.login("alice", &"p".repeat(5000)).await.unwrap_err();
    for err in [&wrong, &unknown, &malformed, &huge] {
        assert_eq!(err.code(), "unauthenticated");
        assert_eq!(err.http_status(), 401);
        assert_eq!(err.to_string(), "invalid credential");
    }
}

#[tokio::test]
async fn deleting_a_user_kills_its_tokens_even_if_recreated() {
    let f = Fixture::new().await;
    f.user(&f.root, "alice", "acme", "events:read")
        .await
        .unwrap();
    let token = f.auth.login("alice", PASSWORD).await.unwrap();
    f.auth.delete_user(&f.root, "alice").await.unwrap();
    assert_invalid_credential(f.auth.authenticate(&token.token));
    assert!(f.auth.login("alice", PASSWORD).await.is_err());

    // Same name, same password, new user: the old token stays dead.
    f.user(&f.root, "alice", "acme", "events:read")
        .await
        .unwrap();
    assert_invalid_credential(f.auth.authenticate(&token.token));
    let fresh = f.auth.login("alice", PASSWORD).await.unwrap();
    assert!(f.auth.authenticate(&fresh.token).is_ok());
}

#[tokio::test]
async fn user_requests_are_validated() {
    let f = Fixture::new().await;
    let new_user = |username: &str, password: &str| NewUser {
        username: username.into(),
        password: password.into(),
        tenant: tenant_id("acme"),
        scopes: Scopes::from([Scope::EventsRead]),
    };
    let err = f
        .auth
        .create_user(&f.root, new_user("bad name", PASSWORD))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_username");
    let err = f
        .auth
        .create_user(&f.root, new_user("bob", "short"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_password");
    f.auth
        .create_user(&f.root, new_user("bob", PASSWORD))
        .await
        .unwrap();
    let err = f
        .auth
        .create_user(&f.root, new_user("bob", PASSWORD))
        .await
        .unwrap_err();
    assert_eq!((err.code(), err.http_status()), ("conflict", 409));
    let err = f.auth.delete_user(&f.root, "carol").await.unwrap_err();
    assert_eq!(err.code(), "not_found");
}

#[tokio::test]
async fn rate_limit_per_credential() {
    let config = AuthConfig {
        rate_limit: Some(RateLimit {
            per_second: 2.0,
            burst: 2,
        }),
        ..AuthConfig::default()
    };
    let f = Fixture::with_config(config).await;
    let a = f.principal("acme", "events:write").await;
    let b = f.principal("acme", "events:write").await;

    f.auth.check_rate(&a).unwrap();
    f.auth.check_rate(&a).unwrap();
    match f.auth.check_rate(&a) {
        Err(AuthError::RateLimited { retry_after }) => {
            assert_eq!(retry_after, Duration::from_millis(500))
        }
        other => panic!("expected rate limited, got {other:?}"),
    }
    // Another credential has its own bucket.
    f.auth.check_rate(&b).unwrap();
    // A JWT of the same key shares the key's bucket.
    let via_jwt = f
        .auth
        .authenticate(&f.auth.issue_token(&a).unwrap().token)
        .unwrap();
    assert_eq!(
        f.auth.check_rate(&via_jwt).unwrap_err().code(),
        "rate_limited"
    );

    f.clock.advance(Duration::from_millis(500));
    f.auth.check_rate(&a).unwrap();
    assert!(f.auth.check_rate(&a).is_err());
}

#[tokio::test]
async fn rate_limit_off_by_default() {
    let f = Fixture::new().await;
    for _ in 0..1000 {
        f.auth.check_rate(&f.root).unwrap();
    }
}

#[tokio::test]
async fn state_survives_reopen() {
    let f = Fixture::new().await;
    let writer = f.key(&f.root, "acme", "events:write").await.unwrap();
    f.user(&f.root, "alice", "acme", "events:read")
        .await
        .unwrap();
    let token = f
        .auth
        .issue_token(&f.auth.authenticate(&writer.key).unwrap())
        .unwrap();

    let reopened = f.reopen().await;
    assert_eq!(
        reopened.list_keys(&f.root).unwrap(),
        f.auth.list_keys(&f.root).unwrap()
    );
    assert_eq!(
        reopened.list_users(&f.root).unwrap(),
        f.auth.list_users(&f.root).unwrap()
    );
    assert_eq!(
        reopened.authenticate(&writer.key).unwrap(),
        f.auth.authenticate(&writer.key).unwrap()
    );
    // Same JWT secret: tokens minted before the restart still work.
    assert_eq!(
        reopened.authenticate(&token.token).unwrap().name,
        writer.name
    );
    assert!(reopened.login("alice", PASSWORD).await.is_ok());
    // The root key exists already.
    assert_eq!(reopened.bootstrap_root_key().await.unwrap(), None);
    assert!(reopened.authenticate(&f.root_key).is_ok());
}

#[tokio::test]
async fn document_is_saved_on_first_open_and_holds_no_secrets() {
    let store = Arc::new(MemStore::default());
    let auth = Auth::open(store.clone(), AuthConfig::default())
        .await
        .unwrap();
    let first = store.document().expect("saved on first open");
    let root_key = auth.bootstrap_root_key().await.unwrap().unwrap();
    let doc = String::from_utf8(store.document().unwrap()).unwrap();
    assert_ne!(doc.as_bytes(), first.as_slice());
    let secret_part = &root_key[KEY_PREFIX.len() + 13..];
    assert!(
        !doc.contains(secret_part),
        "the key's secret must not be stored"
    );

    let root = auth.authenticate(&root_key).unwrap();
    auth.create_user(
        &root,
        NewUser {
            username: "alice".into(),
            password: PASSWORD.into(),
            tenant: tenant_id("acme"),
            scopes: Scopes::from([Scope::EventsRead]),
        },
    )
    .await
    .unwrap();
    let doc = String::from_utf8(store.document().unwrap()).unwrap();
    assert!(!doc.contains(PASSWORD));
    assert!(doc.contains("$argon2id$"));
}

#[tokio::test]
async fn failed_save_changes_nothing() {
    let f = Fixture::new().await;
    let kept = f.key(&f.root, "acme", "events:read").await.unwrap();
    let before = f.store.document();
    f.store.fail_saves.store(true, Ordering::SeqCst);

    let err = f.key(&f.root, "acme", "events:write").await.unwrap_err();
    assert_eq!((err.code(), err.http_status()), ("store_unavailable", 503));
    assert_eq!(
        f.auth.list_keys(&f.root).unwrap().len(),
        2,
        "root + kept only"
    );

    let err = f.auth.revoke_key(&f.root, &kept.id).await.unwrap_err();
    assert_eq!(err.code(), "store_unavailable");
    assert!(
        f.auth.authenticate(&kept.key).is_ok(),
        "revocation was not acknowledged"
    );

    let err = f
        .user(&f.root, "alice", "acme", "events:read")
        .await
        .unwrap_err();
    assert_eq!(err.code(), "store_unavailable");
    assert!(f.auth.list_users(&f.root).unwrap().is_empty());
    assert_eq!(f.store.document(), before);

    // Once the store recovers, changes go through again.
    f.store.fail_saves.store(false, Ordering::SeqCst);
    f.auth.revoke_key(&f.root, &kept.id).await.unwrap();
    assert!(f.auth.authenticate(&kept.key).is_err());
}

#[tokio::test]
async fn concurrent_changes_are_all_kept() {
    let f = Fixture::new().await;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let auth = f.auth.clone();
            let root = f.root.clone();
            tokio::spawn(async move {
                auth.create_key(
                    &root,
                    NewKey {
                        name: format!("k{i}"),
                        tenant: tenant_id("acme"),
                        scopes: Scopes::from([Scope::EventsWrite]),
                        expires_at: None,
                    },
                )
                .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(f.auth.list_keys(&f.root).unwrap().len(), 17);
    assert_eq!(f.reopen().await.list_keys(&f.root).unwrap().len(), 17);
}

#[tokio::test]
async fn bootstrap_creates_one_root_key() {
    let f = Fixture::new().await;
    assert_eq!(f.root.tenant, tenant_id(crate::SYSTEM_TENANT));
    assert_eq!(f.root.name, "root");
    assert_eq!(f.root.scopes, Scopes::from([Scope::Root, Scope::Admin]));
    assert_eq!(f.auth.bootstrap_root_key().await.unwrap(), None);
    let info = f.auth.list_keys(&f.root).unwrap();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].created_by, "bootstrap");

    // The last root key cannot be revoked (see `the_last_root_credential_cannot_be_removed`);
    // should every root key expire, the next bootstrap makes a new one.
    let expiring = f
        .auth
        .create_key(
            &f.root,
            NewKey {
                name: "expiring root".into(),
                tenant: tenant_id(crate::SYSTEM_TENANT),
                scopes: Scopes::from([Scope::Root, Scope::Admin]),
                expires_at: Some(f.clock.now() + chrono::Duration::hours(1)),
            },
        )
        .await
        .unwrap();
    f.auth
        .revoke_key(&f.root, &f.root.credential_id())
        .await
        .unwrap();
    assert_invalid_credential(f.auth.authenticate(&f.root_key));
    assert_eq!(f.auth.bootstrap_root_key().await.unwrap(), None);
    f.clock.advance(Duration::from_secs(2 * 3600));
    assert_invalid_credential(f.auth.authenticate(&expiring.key));
    let fresh = f
        .auth
        .bootstrap_root_key()
        .await
        .unwrap()
        .expect("new root key");
    assert_ne!(fresh, f.root_key);
    assert!(f.auth.authenticate(&fresh).is_ok());
}

#[tokio::test]
async fn bad_config_and_corrupt_documents_refuse_to_open() {
    let store: Arc<dyn Store> = Arc::new(MemStore::default());
    let zero_ttl = AuthConfig {
        jwt_ttl: Duration::ZERO,
        ..AuthConfig::default()
    };
    assert_eq!(
        Auth::open(store.clone(), zero_ttl)
            .await
            .unwrap_err()
            .code(),
        "invalid_config"
    );
    let no_burst = AuthConfig {
        rate_limit: Some(RateLimit {
            per_second: 1.0,
            burst: 0,
        }),
        ..AuthConfig::default()
    };
    assert_eq!(
        Auth::open(store.clone(), no_burst)
            .await
            .unwrap_err()
            .code(),
        "invalid_config"
    );
    for login in [
        LoginLimits {
            max_concurrent: 0,
            ..LoginLimits::default()
        },
        LoginLimits {
            failures: RateLimit {
                per_second: 0.0,
                burst: 10,
            },
            ..LoginLimits::default()
        },
    ] {
        let config = AuthConfig {
            login,
            ..AuthConfig::default()
        };
        assert_eq!(
            Auth::open(store.clone(), config).await.unwrap_err().code(),
            "invalid_config"
        );
    }

    let no_refresh = AuthConfig {
        refresh_interval: Duration::ZERO,
        ..AuthConfig::default()
    };
    assert_eq!(
        Auth::open(store.clone(), no_refresh)
            .await
            .unwrap_err()
            .code(),
        "invalid_config"
    );

    store
        .save_meta(META_NAME, b"{\"version\":1}")
        .await
        .unwrap();
    let err = Auth::open(store, AuthConfig::default()).await.unwrap_err();
    assert_eq!((err.code(), err.http_status()), ("internal", 500));
}

#[tokio::test]
async fn secrets_never_show_in_debug_output() {
    let f = Fixture::new().await;
    let created = f.key(&f.root, "acme", "events:read").await.unwrap();
    let token = f.auth.issue_token(&f.root).unwrap();
    let new_user = NewUser {
        username: "alice".into(),
        password: PASSWORD.into(),
        tenant: tenant_id("acme"),
        scopes: Scopes::from([Scope::EventsRead]),
    };
    let debug = format!("{created:?} {token:?} {new_user:?} {:?}", f.auth);
    assert!(!debug.contains(created.key.expose()));
    assert!(!debug.contains(&token.token));
    assert!(!debug.contains(PASSWORD));
    assert!(!debug.contains(&f.root_key));
    assert!(debug.contains("[redacted]"));
    // The one intended exit: the JSON body answering the creation.
    let body = serde_json::to_value(&created).unwrap();
    assert_eq!(body["key"], created.key.expose());
    assert_eq!(
        serde_json::to_value(&token).unwrap()["token_type"],
        "Bearer"
    );
}

fn retry_after(err: AuthError) -> Duration {
    match err {
        AuthError::RateLimited { retry_after } => retry_after,
        other => panic!("expected rate limited, got {other:?}"),
    }
}

/// Regression: password logins had no limit at all. Anyone could guess a user's password as
/// fast as the server could run argon2, and every guess ran. Now each username has a budget of
/// failed attempts (10, then one a minute); once it is spent, a login is refused with 429
/// before the password is looked at, and unknown usernames are treated exactly alike so the
/// refusal does not reveal which users exist.
#[tokio::test]
async fn failed_logins_per_username_are_limited() {
    let f = Fixture::new().await;
    f.user(&f.root, "alice", "acme", "events:read")
        .await
        .unwrap();

    // Successful logins do not use up the budget.
    for _ in 0..12 {
        f.auth.login("alice", PASSWORD).await.unwrap();
    }

    for name in ["alice", "nobody"] {
        for _ in 0..10 {
            let err = f.auth.login(name, "not the password at all").await;
            assert_eq!(err.unwrap_err().to_string(), "invalid credential", "{name}");
        }
        let err = f.auth.login(name, "not the password at all").await;
        assert_eq!(
            retry_after(err.unwrap_err()),
            Duration::from_secs(60),
            "{name}"
        );
        // Not even the right password is checked now.
        let err = f.auth.login(name, PASSWORD).await.unwrap_err();
        assert_eq!((err.code(), err.http_status()), ("rate_limited", 429));
    }

    // Other usernames have their own budget.
    f.user(&f.root, "bob", "acme", "events:read").await.unwrap();
    f.auth.login("bob", PASSWORD).await.unwrap();

    // A minute later alice has one attempt again; a success gives it back, a failure spends it.
    f.clock.advance(Duration::from_secs(60));
    f.auth.login("alice", PASSWORD).await.unwrap();
    assert_eq!(
        f.auth
            .login("alice", "not the password at all")
            .await
            .unwrap_err()
            .code(),
        "unauthenticated"
    );
    assert_eq!(
        f.auth.login("alice", PASSWORD).await.unwrap_err().code(),
        "rate_limited"
    );
}

/// Regression: every login ran argon2 (19 MiB, tens of ms of CPU) on its own blocking thread
/// with no bound, so a burst of logins could exhaust memory and starve the blocking pool. Now
/// at most `max_concurrent` checks run and at most `max_waiting` logins queue for one; beyond
/// that a login is refused at once with 429 and `Retry-After: 1`, without counting as a
/// failure of its username.
#[tokio::test]
async fn password_checks_run_in_bounded_slots_with_a_bounded_queue() {
    let config = AuthConfig {
        login: LoginLimits {
            max_concurrent: 1,
            max_waiting: 1,
            failures: RateLimit {
                per_second: 1.0 / 60.0,
                burst: 1,
            },
        },
        ..AuthConfig::default()
    };
    let f = Fixture::with_config(config).await;
    f.user(&f.root, "alice", "acme", "events:read")
        .await
        .unwrap();
    let gate = &f.auth.inner.login_gate;

    // The only slot is busy: one login waits for it...
    let busy = gate.slots().acquire_owned().await.unwrap();
    let waiting = tokio::spawn({
        let auth = f.auth.clone();
        async move { auth.login("alice", PASSWORD).await }
    });
    for _ in 0..1000 {
        if gate.waiting() == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(gate.waiting(), 1);

    // ...and the next is turned away at once.
    let err = f.auth.login("carol", PASSWORD).await.unwrap_err();
    assert_eq!(retry_after(err), Duration::from_secs(1));

    drop(busy);
    waiting.await.unwrap().unwrap();
    assert_eq!(gate.waiting(), 0);

    // The turned-away login did not spend carol's single failure: she still gets her attempt.
    assert_eq!(
        f.auth.login("carol", PASSWORD).await.unwrap_err().code(),
        "unauthenticated"
    );
    assert_eq!(
        f.auth.login("carol", PASSWORD).await.unwrap_err().code(),
        "rate_limited"
    );
}

/// Regression: an admin of one tenant creating a user got `409 user "bob" already exists` when
/// another tenant had a user `bob`, learning of that tenant's users. Usernames are global, so
/// the name stays taken, but the answer is the same whichever tenant holds it.
#[tokio::test]
async fn a_taken_username_does_not_say_which_tenant_has_it() {
    let f = Fixture::new().await;
    f.user(&f.root, "bob", "globex", "events:read")
        .await
        .unwrap();
    f.user(&f.root, "ann", "acme", "events:read").await.unwrap();
    let acme_admin = f.principal("acme", "admin").await;

    let elsewhere = f
        .user(&acme_admin, "bob", "acme", "events:read")
        .await
        .unwrap_err();
    let own_tenant = f
        .user(&acme_admin, "ann", "acme", "events:read")
        .await
        .unwrap_err();
    for err in [&elsewhere, &own_tenant] {
        assert_eq!((err.code(), err.http_status()), ("conflict", 409));
        assert_eq!(err.to_string(), "username is not available");
    }
    // The other tenant's user is untouched and still invisible to this admin.
    assert!(
        f.auth
            .list_users(&acme_admin)
            .unwrap()
            .iter()
            .all(|u| u.username != "bob")
    );
    f.auth.login("bob", PASSWORD).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Several processes sharing one store

/// A key of `tenant` named `name` with `events:write`, created through `auth`.
async fn create_on(auth: &Auth, by: &Principal, name: &str) -> CreatedKey {
    auth.create_key(
        by,
        NewKey {
            name: name.to_owned(),
            tenant: tenant_id("acme"),
            scopes: Scopes::from([Scope::EventsWrite]),
            expires_at: None,
        },
    )
    .await
    .unwrap()
}

fn key_ids(auth: &Auth, root: &Principal) -> Vec<String> {
    let mut ids: Vec<String> = auth
        .list_keys(root)
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn credentials_changed_on_one_node_apply_on_another_after_a_refresh() {
    let f = Fixture::new().await;
    let other = f.reopen().await;
    assert!(!other.refresh().await.unwrap(), "nothing changed yet");

    let key = f.key(&f.root, "acme", "events:write").await.unwrap();
    f.user(&f.root, "alice", "acme", "events:read")
        .await
        .unwrap();
    assert!(other.refresh().await.unwrap());
    assert_eq!(
        other.authenticate(&key.key).unwrap(),
        f.auth.authenticate(&key.key).unwrap()
    );
    let alice = other.login("alice", PASSWORD).await.unwrap();
    let key_token = other
        .issue_token(&other.authenticate(&key.key).unwrap())
        .unwrap();
    // One JWT secret for both: tokens minted on one node work on the other.
    assert_eq!(f.auth.authenticate(&alice.token).unwrap().name, "alice");
    assert_eq!(
        f.auth.authenticate(&key_token.token).unwrap().name,
        key.name
    );
    assert!(!other.refresh().await.unwrap());

    f.auth.revoke_key(&f.root, &key.id).await.unwrap();
    f.auth.delete_user(&f.root, "alice").await.unwrap();
    assert!(other.refresh().await.unwrap());
    assert_invalid_credential(other.authenticate(&key.key));
    assert_invalid_credential(other.authenticate(&key_token.token));
    assert_invalid_credential(other.authenticate(&alice.token));
    assert_eq!(
        other.login("alice", PASSWORD).await.unwrap_err().code(),
        "unauthenticated"
    );
}

/// Regression: each process changed its own in-memory copy of the credential document and
/// saved the whole copy, so a key created on one node vanished when another node, which had
/// not seen it, saved its own change; and a node could not revoke a key it had not loaded.
/// A change now starts from the latest stored document, whatever the node holds in memory.
#[tokio::test]
async fn a_change_on_a_node_with_stale_credentials_keeps_the_other_nodes_changes() {
    let f = Fixture::new().await;
    let other = f.reopen().await;
    let first = create_on(&f.auth, &f.root, "first").await;
    let second = create_on(&other, &f.root, "second").await;

    let reopened = f.reopen().await;
    for auth in [&other, &reopened] {
        assert!(auth.authenticate(&first.key).is_ok());
        assert!(auth.authenticate(&second.key).is_ok());
    }
    // The node that made `first` never saw `second` in memory, yet can revoke it.
    f.auth.revoke_key(&f.root, &second.id).await.unwrap();
    assert!(other.refresh().await.unwrap());
    assert_invalid_credential(other.authenticate(&second.key));
    assert!(other.authenticate(&first.key).is_ok());
    assert_eq!(key_ids(&f.reopen().await, &f.root).len(), 2, "root + first");
}

#[tokio::test]
async fn a_change_that_loses_the_race_is_applied_again_to_the_newer_document() {
    let f = Fixture::new().await;
    let other = f.reopen().await;
    let (reached, release) = f.store.hold_next_save();
    let slow = tokio::spawn({
        let (auth, root) = (f.auth.clone(), f.root.clone());
        async move { create_on(&auth, &root, "slow").await }
    });
    reached.notified().await;
    // Saved while the slow change waits between reading the document and saving it.
    let fast = create_on(&other, &f.root, "fast").await;
    release.send(()).unwrap();
    let slow = slow.await.unwrap();

    assert_eq!(f.store.refused.load(Ordering::SeqCst), 1);
    // The slow node picked up the fast key while applying its change again.
    assert!(f.auth.authenticate(&fast.key).is_ok());
    assert!(f.auth.authenticate(&slow.key).is_ok());
    let reopened = f.reopen().await;
    assert!(reopened.authenticate(&fast.key).is_ok());
    assert!(reopened.authenticate(&slow.key).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_on_two_nodes_are_all_kept() {
    let f = Fixture::new().await;
    let other = f.reopen().await;
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let auth = if i % 2 == 0 {
                f.auth.clone()
            } else {
                other.clone()
            };
            let root = f.root.clone();
            tokio::spawn(async move { create_on(&auth, &root, &format!("k{i}")).await })
        })
        .collect();
    let mut created = Vec::new();
    for task in tasks {
        created.push(task.await.unwrap());
    }
    f.auth.refresh().await.unwrap();
    other.refresh().await.unwrap();
    let reopened = f.reopen().await;
    for auth in [&f.auth, &other, &reopened] {
        assert_eq!(key_ids(auth, &f.root).len(), 33, "root + 32");
        for key in &created {
            assert!(auth.authenticate(&key.key).is_ok(), "{} lost", key.name);
        }
    }
}

#[tokio::test]
async fn nodes_starting_together_on_an_empty_store_share_one_secret_and_one_root_key() {
    let store = Arc::new(MemStore::default());
    let clock = Arc::new(ManualClock::new());
    let open = || Auth::open_with_clock(store.clone(), AuthConfig::default(), clock.clone());
    let (a, b) = tokio::join!(open(), open());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        store.refused.load(Ordering::SeqCst),
        1,
        "both tried to create the document"
    );

    let (from_a, from_b) = tokio::join!(a.bootstrap_root_key(), b.bootstrap_root_key());
    let mut root_keys: Vec<String> = [from_a.unwrap(), from_b.unwrap()]
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(root_keys.len(), 1, "exactly one node creates the root key");
    let root_key = root_keys.remove(0);
    a.refresh().await.unwrap();
    b.refresh().await.unwrap();
    for auth in [&a, &b] {
        let root = auth.authenticate(&root_key).unwrap();
        assert_eq!(key_ids(auth, &root).len(), 1);
        assert_eq!(auth.bootstrap_root_key().await.unwrap(), None);
    }
    let token = a.issue_token(&a.authenticate(&root_key).unwrap()).unwrap();
    assert_eq!(b.authenticate(&token.token).unwrap().name, "root");
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_credentials_in_memory() {
    let f = Fixture::new().await;
    let other = f.reopen().await;
    let key = f.key(&f.root, "acme", "events:write").await.unwrap();

    f.store.fail_loads.store(true, Ordering::SeqCst);
    let err = other.refresh().await.unwrap_err();
    assert_eq!(err.code(), "store_unavailable");
    assert!(other.authenticate(&f.root_key).is_ok());
    let err = f.key(&f.root, "acme", "events:read").await.unwrap_err();
    assert_eq!(err.code(), "store_unavailable");
    f.store.fail_loads.store(false, Ordering::SeqCst);
    assert!(other.refresh().await.unwrap());
    assert!(other.authenticate(&key.key).is_ok());

    // A document that does not parse is refused; what was loaded before stays in force.
    f.store
        .save_meta(META_NAME, b"{\"version\":1}")
        .await
        .unwrap();
    let err = other.refresh().await.unwrap_err();
    assert_eq!(err.code(), "internal");
    assert!(other.authenticate(&key.key).is_ok());
    assert!(other.authenticate(&f.root_key).is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_background_refresh_applies_other_nodes_changes_and_stops_with_the_last_clone() {
    let f = Fixture::new().await;
    let other = f.reopen().await;
    let key = f.key(&f.root, "acme", "events:write").await.unwrap();
    assert_invalid_credential(other.authenticate(&key.key));
    tokio::time::sleep(AuthConfig::default().refresh_interval * 2).await;
    assert!(other.authenticate(&key.key).is_ok());

    f.auth.revoke_key(&f.root, &key.id).await.unwrap();
    tokio::time::sleep(AuthConfig::default().refresh_interval * 2).await;
    assert_invalid_credential(other.authenticate(&key.key));

    let metrics = tokio::runtime::Handle::current().metrics();
    assert_eq!(metrics.num_alive_tasks(), 2, "one refresh task per node");
    let clone = other.clone();
    drop(other);
    tokio::task::yield_now().await;
    assert_eq!(metrics.num_alive_tasks(), 2, "a clone keeps it running");
    drop(clone);
    drop(f);
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(metrics.num_alive_tasks(), 0);
}

/// Signs arbitrary claims with the process default key, as a holder of the key file could.
fn sign_raw(claims: &serde_json::Value) -> String {
    JwtSigningKey::process_default().sign(claims).unwrap()
}

/// The claims of a token `issue_token` made, to be altered and signed again.
fn claims_of(token: &str) -> serde_json::Value {
    let body = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap()
}

/// Regression: a correctly signed token with `exp` a year ahead was accepted, so one token
/// (from a leaked key, or from a node with a longer `jwt_ttl`) could outlive any session.
/// `exp − iat` is now capped at `jwt_ttl` plus `JWT_CLOCK_SKEW`, `iat` may not lie in the
/// future beyond the skew, and tokens without `iat` or `exp` are refused.
#[tokio::test]
async fn token_lifetime_is_capped_and_iat_exp_are_required() {
    let f = Fixture::new().await;
    let p = f.principal("acme", "events:read").await;
    let issued = claims_of(&f.auth.issue_token(&p).unwrap().token);
    let iat = issued["iat"].as_i64().unwrap();
    let ttl = 15 * 60;
    let skew = i64::try_from(JWT_CLOCK_SKEW.as_secs()).unwrap();

    // Up to the ttl plus the skew: accepted.
    let mut claims = issued.clone();
    claims["exp"] = (iat + ttl + skew).into();
    assert!(f.auth.authenticate(&sign_raw(&claims)).is_ok());

    // A second more, or a year: refused as an invalid credential, not as expired.
    for exp in [iat + ttl + skew + 1, iat + 365 * 86_400] {
        let mut claims = issued.clone();
        claims["exp"] = exp.into();
        assert_invalid_credential(f.auth.authenticate(&sign_raw(&claims)));
    }

    // Issued in the future: refused.
    let mut claims = issued.clone();
    claims["iat"] = (iat + skew + 10).into();
    claims["exp"] = (iat + skew + 20).into();
    assert_invalid_credential(f.auth.authenticate(&sign_raw(&claims)));

    // Without `iat` or `exp`: refused.
    for missing in ["iat", "exp"] {
        let mut claims = issued.clone();
        claims.as_object_mut().unwrap().remove(missing);
        assert_invalid_credential(f.auth.authenticate(&sign_raw(&claims)));
    }

    // The cap follows the configured ttl.
    let short = Fixture::with_config(AuthConfig {
        jwt_ttl: Duration::from_secs(60),
        ..AuthConfig::default()
    })
    .await;
    let p = short.principal("acme", "events:read").await;
    let mut claims = claims_of(&short.auth.issue_token(&p).unwrap().token);
    let iat = claims["iat"].as_i64().unwrap();
    claims["exp"] = (iat + 15 * 60).into();
    assert_invalid_credential(short.auth.authenticate(&sign_raw(&claims)));
}

/// Regression: the only root key could revoke itself, silently, leaving nothing able to
/// administer the server. Revoking or deleting the last active root credential is now a 409
/// `last_root_credential`; with another root credential it works.
#[tokio::test]
async fn the_last_root_credential_cannot_be_removed() {
    let f = Fixture::new().await;
    let err = f
        .auth
        .revoke_key(&f.root, &f.root.credential_id())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "last_root_credential");
    assert_eq!(err.http_status(), 409);
    assert!(
        err.to_string().contains("last active root credential"),
        "{err}"
    );
    assert!(f.auth.authenticate(&f.root_key).is_ok(), "nothing changed");

    // An expired root key does not count as another root credential.
    let expiring = f
        .auth
        .create_key(
            &f.root,
            NewKey {
                name: "short root".into(),
                tenant: tenant_id(crate::SYSTEM_TENANT),
                scopes: Scopes::from([Scope::Root, Scope::Admin]),
                expires_at: Some(f.clock.now() + chrono::Duration::seconds(10)),
            },
        )
        .await
        .unwrap();
    f.clock.advance(Duration::from_secs(20));
    let err = f
        .auth
        .revoke_key(&f.root, &f.root.credential_id())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "last_root_credential");
    // The expired root key itself may go.
    f.auth.revoke_key(&f.root, &expiring.id).await.unwrap();

    // A root user is a root credential: the key may go while it exists, then the user may not.
    f.user(&f.root, "rooty", crate::SYSTEM_TENANT, "root,admin")
        .await
        .unwrap();
    let user_token = f.auth.login("rooty", PASSWORD).await.unwrap();
    let as_user = f.auth.authenticate(&user_token.token).unwrap();
    f.auth
        .revoke_key(&as_user, &f.root.credential_id())
        .await
        .unwrap();
    let err = f.auth.delete_user(&as_user, "rooty").await.unwrap_err();
    assert_eq!(err.code(), "last_root_credential");

    // With a second root key, the user can go.
    let second = f
        .key(&as_user, crate::SYSTEM_TENANT, "root,admin")
        .await
        .unwrap();
    f.auth.delete_user(&as_user, "rooty").await.unwrap();
    assert!(f.auth.authenticate(&second.key).is_ok());
}

#[tokio::test]
async fn a_recovery_root_key_is_made_without_a_credential() {
    let f = Fixture::new().await;
    let recovered = f.auth.create_recovery_root_key("recovery").await.unwrap();
    let p = f.auth.authenticate(&recovered.key).unwrap();
    assert!(p.scopes.allows(Scope::Root));
    let listed = f.auth.list_keys(&p).unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().any(|k| k.created_by == "recovery"));
    // Now the first root key is no longer the last one.
    f.auth
        .revoke_key(&p, &f.root.credential_id())
        .await
        .unwrap();
}

/// Regression: the HS256 `jwt_secret` sat in the stored credential document, so anyone who
/// could read the store could mint root tokens. Opening a version 1 document removes the
/// secret from the store at once, and tokens signed with it are refused.
#[tokio::test]
async fn opening_a_version_1_document_removes_the_secret_and_its_tokens() {
    let f = Fixture::new().await;
    let secret = [9u8; 32];
    let mut doc: serde_json::Value = serde_json::from_slice(&f.store.document().unwrap()).unwrap();
    doc["version"] = 1.into();
    doc["jwt_secret"] = base64::engine::general_purpose::STANDARD
        .encode(secret)
        .into();
    let version = f.store.next_version();
    f.store.meta.lock().unwrap().insert(
        META_NAME.to_owned(),
        (version, serde_json::to_vec(&doc).unwrap()),
    );

    let auth = f.reopen().await;
    let stored = String::from_utf8(f.store.document().unwrap()).unwrap();
    assert!(!stored.contains("jwt_secret"), "{stored}");
    assert!(stored.contains("\"version\": 2"), "{stored}");
    assert!(auth.authenticate(&f.root_key).is_ok(), "keys survive");

    // A root token minted with the old secret, as a reader of the store could.
    let now = f.clock.now().timestamp();
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({
            "sub": f.root.credential_id(), "cid": f.root.credential_id(),
            "tenant": crate::SYSTEM_TENANT, "scopes": ["root", "admin"],
            "iat": now, "exp": now + 60, "jti": "x",
        }),
        &jsonwebtoken::EncodingKey::from_secret(&secret),
    )
    .unwrap();
    assert_invalid_credential(auth.authenticate(&forged));

    // Opening again writes nothing.
    let before = f.store.last_version.load(Ordering::SeqCst);
    let _again = f.reopen().await;
    assert_eq!(f.store.last_version.load(Ordering::SeqCst), before);
}

#[tokio::test]
async fn the_store_pins_the_jwt_public_key_and_refuses_another() {
    let f = Fixture::new().await;
    f.auth.pin_jwt_key().await.unwrap();
    let pinned = f.store.last_version.load(Ordering::SeqCst);
    let stored = String::from_utf8(f.store.document().unwrap()).unwrap();
    let ours = JwtSigningKey::process_default().verifying_key().id();
    assert!(stored.contains(&ours), "{stored}");
    // Pinning the same key again writes nothing.
    f.auth.pin_jwt_key().await.unwrap();
    assert_eq!(f.store.last_version.load(Ordering::SeqCst), pinned);

    // A node with its own key file is refused, with a message saying to share the file.
    let other_key = JwtSigningKey::generate();
    let stranger = Auth::open_with_clock(
        f.store.clone(),
        AuthConfig {
            jwt_key: other_key.clone(),
            ..AuthConfig::default()
        },
        f.clock.clone(),
    )
    .await
    .unwrap();
    let err = stranger.pin_jwt_key().await.unwrap_err();
    assert_eq!(err.code(), "jwt_key_mismatch");
    assert!(err.to_string().contains("same key file"), "{err}");

    // Rotating: the old key as previous. Old tokens still verify; the pin moves to the new key.
    let token = f.auth.issue_token(&f.root).unwrap().token;
    let rotated = Auth::open_with_clock(
        f.store.clone(),
        AuthConfig {
            jwt_key: other_key.clone(),
            jwt_previous_keys: vec![JwtSigningKey::process_default().verifying_key().clone()],
            ..AuthConfig::default()
        },
        f.clock.clone(),
    )
    .await
    .unwrap();
    rotated.pin_jwt_key().await.unwrap();
    assert_eq!(rotated.authenticate(&token).unwrap().name, "root");
    let stored = String::from_utf8(f.store.document().unwrap()).unwrap();
    assert!(stored.contains(&other_key.verifying_key().id()), "{stored}");
    // The old key alone is now refused.
    assert_eq!(
        f.reopen().await.pin_jwt_key().await.unwrap_err().code(),
        "jwt_key_mismatch"
    );
}

/// Regression: failed credentials were never throttled (about 1,000 wrong API keys a second
/// were answered 401). After the per-address budget of failures, the address is refused
/// without its credential being checked, other addresses are not, and the budget refills.
#[tokio::test]
async fn failed_credentials_are_throttled_per_source_address() {
    let f = Fixture::with_config(AuthConfig {
        source_failures: Some(RateLimit {
            per_second: 1.0,
            burst: 3,
        }),
        ..AuthConfig::default()
    })
    .await;
    let attacker: IpAddr = "203.0.113.7".parse().unwrap();
    let bystander: IpAddr = "198.51.100.1".parse().unwrap();
    for _ in 0..3 {
        f.auth.check_source(attacker).unwrap();
        f.auth.record_failure(attacker);
    }
    let err = f.auth.check_source(attacker).unwrap_err();
    assert_eq!(err.code(), "rate_limited");
    assert_eq!(retry_after(err), Duration::from_secs(1));
    f.auth.check_source(bystander).unwrap();
    f.clock.advance(Duration::from_secs(1));
    f.auth.check_source(attacker).unwrap();

    // One IPv6 client holds a /64: changing the interface id does not reset its budget.
    for i in 0..3 {
        let v6: IpAddr = format!("2001:db8:1:2::{i}").parse().unwrap();
        f.auth.record_failure(v6);
    }
    assert!(
        f.auth
            .check_source("2001:db8:1:2::ffff".parse().unwrap())
            .is_err()
    );
    f.auth
        .check_source("2001:db8:1:3::1".parse().unwrap())
        .unwrap();

    // Off: never throttled.
    let off = Fixture::with_config(AuthConfig {
        source_failures: None,
        ..AuthConfig::default()
    })
    .await;
    for _ in 0..100 {
        off.auth.record_failure(attacker);
    }
    off.auth.check_source(attacker).unwrap();
}
