//! [`Auth`]: the credential service the HTTP layer and the binary talk to.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use vigil_event::TenantId;
use vigil_store::Store;
use vigil_store::shared::SharedDocument;

use crate::apikey;
use crate::clock::{Clock, SystemClock};
use crate::error::AuthError;
use crate::jwt::{self, Claims, JwtKeys, JwtSigningKey, JwtVerifyingKey};
use crate::login::{self, LoginGate, LoginLimits};
use crate::password;
use crate::principal::{CredentialRef, Principal, system_tenant};
use crate::rate::{DEFAULT_CAPACITY, RateLimit, RateLimiter};
use crate::scope::{Scope, Scopes};
use crate::secret::SecretString;
use crate::state::{KeyRecord, META_NAME, State, UserRecord};

/// Longest key name accepted (names label keys and are the default event `source`).
pub const KEY_NAME_MAX_CHARS: usize = 128;

/// `created_by` of the root key made on first start.
const BOOTSTRAP: &str = "bootstrap";

/// `created_by` of a root key made offline by `vigil keys create --root`.
const RECOVERY: &str = "recovery";

/// How far the clocks of the nodes sharing a store may disagree: a token's `exp − iat` may
/// exceed `jwt_ttl` by this much, and its `iat` lie this far in the future, before it is
/// refused.
pub const JWT_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Settings for [`Auth::open`].
#[derive(Debug, Clone, PartialEq)]
pub struct AuthConfig {
    /// Lifetime of tokens from `POST /v1/auth/token` (at least one second). A token never
    /// outlives the API key it was minted from, and a token whose `exp − iat` exceeds it (plus
    /// [`JWT_CLOCK_SKEW`]) is refused, however well signed.
    pub jwt_ttl: Duration,
    /// The Ed25519 key tokens are signed with. It never enters the store: the nodes sharing a
    /// store share it as a file (`vigil serve --jwt-key`). Default:
    /// [`JwtSigningKey::process_default`], one random key per process.
    pub jwt_key: JwtSigningKey,
    /// Keys whose tokens are still accepted though this node no longer signs with them: the
    /// key being rotated away from, until its tokens have expired.
    pub jwt_previous_keys: Vec<JwtVerifyingKey>,
    /// Failed credentials allowed per source address (`burst` failures, refilled at
    /// `per_second`), after which every request from that address is answered 429 without its
    /// credential being checked; `None` turns the throttle off. Default: 30 a minute.
    pub source_failures: Option<RateLimit>,
    /// Per-credential request budget; `None` disables rate limiting.
    pub rate_limit: Option<RateLimit>,
    /// Bounds on password logins: verifications at once, logins waiting, failures per
    /// username. Always on: an unbounded login endpoint lets anyone burn the server's CPU and
    /// memory on argon2 and guess passwords at full speed.
    pub login: LoginLimits,
    /// How often the credential document is reloaded from the store (default 1 s, longer than
    /// zero). Several vigil processes may share one store: keys and users another process
    /// creates, revokes or deletes take effect here within this interval.
    pub refresh_interval: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_ttl: Duration::from_secs(15 * 60),
            jwt_key: JwtSigningKey::process_default(),
            jwt_previous_keys: Vec::new(),
            source_failures: Some(RateLimit {
                per_second: 0.5,
                burst: 30,
            }),
            rate_limit: None,
            login: LoginLimits::default(),
            refresh_interval: Duration::from_secs(1),
        }
    }
}

/// A minted JWT, as `POST /v1/auth/token` returns it.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct Token {
    pub token: String,
    /// Always `"Bearer"`.
    pub token_type: &'static str,
    pub expires_at: DateTime<Utc>,
    /// Seconds until `expires_at`.
    pub expires_in: u64,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("token", &"[redacted]")
            .field("token_type", &self.token_type)
            .field("expires_at", &self.expires_at)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// Body of `POST /v1/keys`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
    pub tenant: TenantId,
    pub scopes: Scopes,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A key just created: the only time its plaintext `key` is available.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedKey {
    pub id: String,
    /// `vgl_<id>_<secret>`; stored only as a hash, so it cannot be shown again.
    pub key: SecretString,
    pub name: String,
    pub tenant: TenantId,
    pub scopes: Scopes,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// An API key as listed: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub id: String,
    pub name: String,
    pub tenant: TenantId,
    pub scopes: Scopes,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Credential id of the creator (`bootstrap` for the first root key).
    pub created_by: String,
}

/// Body of `POST /v1/users`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub username: String,
    pub password: SecretString,
    pub tenant: TenantId,
    pub scopes: Scopes,
}

/// A user as listed: everything but the password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub username: String,
    pub tenant: TenantId,
    pub scopes: Scopes,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

impl From<&KeyRecord> for KeyInfo {
    fn from(r: &KeyRecord) -> Self {
        Self {
            id: r.id.clone(),
            name: r.name.clone(),
            tenant: r.tenant.clone(),
            scopes: r.scopes.clone(),
            created_at: r.created_at,
            expires_at: r.expires_at,
            created_by: r.created_by.clone(),
        }
    }
}

impl From<&UserRecord> for UserInfo {
    fn from(r: &UserRecord) -> Self {
        Self {
            username: r.username.clone(),
            tenant: r.tenant.clone(),
            scopes: r.scopes.clone(),
            created_at: r.created_at,
            created_by: r.created_by.clone(),
        }
    }
}

/// API keys, users, JWTs and rate limits over one credential document kept in the store.
///
/// Reads (`authenticate`, `check_rate`, `issue_token`, listings) are synchronous and cheap:
/// SHA-256 or HMAC against in-memory state. The document is a [`SharedDocument`]: a change is
/// applied to the latest stored document, saved through [`Store::save_meta_if`] only if nobody
/// changed the document meanwhile (else applied again to the newer one), and only then becomes
/// visible: an acknowledged change is durable, a failed save changes nothing, and changes made
/// at once by several processes sharing the store are all kept. A background task reloads the
/// document every [`AuthConfig::refresh_interval`] to pick up other processes' changes; it
/// stops when the last clone is dropped. Cheap to clone.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    config: AuthConfig,
    clock: Arc<dyn Clock>,
    /// The live credentials: the store's `auth` meta document, kept in step with the other
    /// processes sharing the store.
    document: SharedDocument<State>,
    /// Signs tokens, and checks them against this and the previous keys.
    jwt: JwtKeys,
    /// `None` when rate limiting is off.
    limiter: Option<RateLimiter>,
    /// Failed credentials per source address (see [`AuthConfig::source_failures`]); `None`
    /// when off.
    source_failures: Option<RateLimiter>,
    /// Bounds how many argon2 verifications run at once and how many logins wait for one.
    login_gate: LoginGate,
    /// Failed logins per username (token buckets; a login spends a token up front and gets it
    /// back when it succeeds).
    login_failures: RateLimiter,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.read();
        f.debug_struct("Auth")
            .field("keys", &state.keys.len())
            .field("users", &state.users.len())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn read(&self) -> Arc<State> {
        self.document.current()
    }
}

impl Auth {
    /// Loads the credential document from `store`, or creates one and saves it before
    /// returning. A document of an older version that still holds the HS256 JWT secret is
    /// saved again without it (tokens signed with that secret are refused from now on). Then
    /// reloads the document every [`AuthConfig::refresh_interval`] in a task on the current
    /// Tokio runtime, until the last clone of the returned `Auth` is dropped.
    pub async fn open(store: Arc<dyn Store>, config: AuthConfig) -> Result<Self, AuthError> {
        Self::open_with_clock(store, config, Arc::new(SystemClock)).await
    }

    pub(crate) async fn open_with_clock(
        store: Arc<dyn Store>,
        config: AuthConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AuthError> {
        if config.jwt_ttl < Duration::from_secs(1) {
            return Err(AuthError::invalid(
                "invalid_config",
                "jwt_ttl must be at least one second",
            ));
        }
        if let Some(limit) = &config.rate_limit {
            limit.validate()?;
        }
        if let Some(limit) = &config.source_failures {
            limit.validate()?;
        }
        config.login.validate()?;
        if config.refresh_interval.is_zero() {
            return Err(AuthError::invalid(
                "invalid_config",
                "refresh_interval must be longer than zero",
            ));
        }
        // When several processes start on an empty store at once, one creates the document and
        // the others load that one.
        let document =
            SharedDocument::open_or_create(store, META_NAME, config.refresh_interval, State::new)
                .await?;
        let removed_secret = document
            .update(|state| {
                let legacy = state.holds_legacy_secret;
                state.holds_legacy_secret = false;
                Ok((legacy, legacy))
            })
            .await?;
        if removed_secret {
            tracing::warn!(
                "the HS256 jwt secret was removed from the stored credentials: tokens are now \
                 signed with this node's Ed25519 key, and tokens issued before the upgrade are \
                 refused (clients fetch new ones)"
            );
        }
        let limiter = config
            .rate_limit
            .map(|limit| RateLimiter::new(limit, DEFAULT_CAPACITY));
        let source_failures = config
            .source_failures
            .map(|limit| RateLimiter::new(limit, DEFAULT_CAPACITY));
        let jwt = JwtKeys::new(config.jwt_key.clone(), &config.jwt_previous_keys);
        let login_gate = LoginGate::new(&config.login);
        let login_failures = RateLimiter::new(config.login.failures, DEFAULT_CAPACITY);
        let inner = Arc::new(Inner {
            config,
            clock,
            document,
            jwt,
            limiter,
            source_failures,
            login_gate,
            login_failures,
        });
        Ok(Self { inner })
    }

    /// Reloads the credential document from the store now, if another process changed it,
    /// rather than at the next periodic refresh. Returns whether anything changed. On error the
    /// credentials in memory stay as they were.
    pub async fn refresh(&self) -> Result<bool, AuthError> {
        self.inner.document.refresh().await
    }

    /// Records this node's JWT public key in the store, or checks it against the one recorded:
    /// every node sharing a store must sign with the same key file, or tokens minted on one
    /// node would be refused by the others. A recorded key that is one of
    /// [`AuthConfig::jwt_previous_keys`] is a rotation: this node's key replaces it. Another
    /// key refuses the start (`jwt_key_mismatch`). Writes only when the record changes.
    pub async fn pin_jwt_key(&self) -> Result<(), AuthError> {
        let ours = self.inner.jwt.signing().verifying_key().id();
        let previous: Vec<String> = self
            .inner
            .config
            .jwt_previous_keys
            .iter()
            .map(JwtVerifyingKey::id)
            .collect();
        let rotated = self
            .mutate_if(move |state| match state.jwt_public_key.as_deref() {
                Some(known) if known == ours => Ok((None, false)),
                Some(known) if previous.iter().any(|p| p == known) => {
                    let old = known.to_owned();
                    state.jwt_public_key = Some(ours.clone());
                    Ok((Some(old), true))
                }
                Some(known) => Err(AuthError::invalid(
                    "jwt_key_mismatch",
                    format!(
                        "this store's tokens are signed with the jwt key {known}, but this \
                         node's key is {ours}: give every node sharing the store the same key \
                         file (--jwt-key), or pass the old key as --jwt-key-previous to rotate"
                    ),
                )),
                None => {
                    state.jwt_public_key = Some(ours.clone());
                    Ok((None, true))
                }
            })
            .await?;
        if let Some(old) = rotated {
            tracing::info!(previous = %old, current = %self.inner.jwt.signing().verifying_key().id(), "jwt signing key rotated");
        }
        Ok(())
    }

    /// Creates a root key (tenant [`SYSTEM_TENANT`](crate::SYSTEM_TENANT), scopes
    /// `root,admin`) unconditionally and returns it: the offline recovery of `vigil keys create
    /// --root` when every root credential is lost. Whoever can call this can already write the
    /// store, so it needs no credential.
    pub async fn create_recovery_root_key(&self, name: &str) -> Result<CreatedKey, AuthError> {
        let now = self.inner.clock.now();
        let name = validate_key_name(name)?;
        let scopes = Scopes::from([Scope::Root, Scope::Admin]);
        let (id, text) = self
            .mutate({
                let (name, scopes) = (name.clone(), scopes.clone());
                move |state| {
                    let generated = unique_key(state)?;
                    state.keys.insert(
                        generated.id.clone(),
                        KeyRecord {
                            id: generated.id.clone(),
                            name: name.clone(),
                            tenant: system_tenant(),
                            scopes: scopes.clone(),
                            hash: generated.hash,
                            created_at: now,
                            expires_at: None,
                            created_by: RECOVERY.to_owned(),
                        },
                    );
                    Ok((generated.id, generated.text))
                }
            })
            .await?;
        tracing::warn!(key_id = %id, "root api key created offline for recovery");
        Ok(CreatedKey {
            id,
            key: text,
            name,
            tenant: system_tenant(),
            scopes,
            created_at: now,
            expires_at: None,
        })
    }

    /// Creates the root key (name `root`, tenant [`SYSTEM_TENANT`](crate::SYSTEM_TENANT),
    /// scopes `root,admin`) when no unexpired key with scope `root` exists, and returns its
    /// plaintext — the only time it is available. `None` when a root key already exists. The
    /// last active root credential cannot be revoked through the API; should every root key
    /// have expired, the next start makes a new one.
    pub async fn bootstrap_root_key(&self) -> Result<Option<String>, AuthError> {
        let now = self.inner.clock.now();
        // A store that has its root key is not written: every start goes through here, and a
        // start must not need a writable disk (nor wake every other node sharing the store).
        let created = self
            .mutate_if(move |state| {
                if state
                    .keys
                    .values()
                    .any(|k| k.scopes.contains(Scope::Root) && !k.is_expired(now))
                {
                    return Ok((None, false));
                }
                let generated = unique_key(state)?;
                state.keys.insert(
                    generated.id.clone(),
                    KeyRecord {
                        id: generated.id.clone(),
                        name: "root".to_owned(),
                        tenant: system_tenant(),
                        scopes: Scopes::from([Scope::Root, Scope::Admin]),
                        hash: generated.hash,
                        created_at: now,
                        expires_at: None,
                        created_by: BOOTSTRAP.to_owned(),
                    },
                );
                Ok((Some((generated.id, generated.text)), true))
            })
            .await?;
        Ok(created.map(|(id, text)| {
            tracing::info!(key_id = %id, "root api key created");
            text.into_inner()
        }))
    }

    /// Authenticates a bearer credential: an API key (`vgl_…`) or a JWT from
    /// [`issue_token`](Auth::issue_token). A JWT is valid only while the key or user it was
    /// minted from still exists, unexpired, with at least the token's scopes.
    pub fn authenticate(&self, bearer: &str) -> Result<Principal, AuthError> {
        let bearer = bearer.trim();
        let now = self.inner.clock.now();
        let state = self.inner.read();
        if apikey::is_api_key(bearer) {
            authenticate_key(&state, bearer, now)
        } else {
            authenticate_jwt(
                &state,
                &self.inner.jwt,
                self.inner.config.jwt_ttl,
                bearer,
                now,
            )
        }
    }

    /// Whether `source` may still present credentials: `RateLimited` once it has used up its
    /// failures ([`AuthConfig::source_failures`]), in which case the caller answers 429
    /// without checking the credential. Takes nothing from the budget; only
    /// [`record_failure`](Auth::record_failure) does.
    pub fn check_source(&self, source: IpAddr) -> Result<(), AuthError> {
        match &self.inner.source_failures {
            None => Ok(()),
            Some(limiter) => limiter
                .peek(&source_key(source), self.inner.clock.instant())
                .map_err(|retry_after| AuthError::RateLimited { retry_after }),
        }
    }

    /// Counts a credential from `source` that did not check out.
    pub fn record_failure(&self, source: IpAddr) {
        if let Some(limiter) = &self.inner.source_failures {
            let _ = limiter.check(&source_key(source), self.inner.clock.instant());
        }
    }

    /// Takes one request from the principal's budget; `RateLimited { retry_after }` when it
    /// is spent. Always Ok when rate limiting is off.
    pub fn check_rate(&self, principal: &Principal) -> Result<(), AuthError> {
        match &self.inner.limiter {
            None => Ok(()),
            Some(limiter) => limiter
                .check(&principal.credential_id(), self.inner.clock.instant())
                .map_err(|retry_after| AuthError::RateLimited { retry_after }),
        }
    }

    /// Mints a JWT carrying the principal's tenant and scopes, valid for `jwt_ttl` but never
    /// past the expiry of the key behind it.
    pub fn issue_token(&self, principal: &Principal) -> Result<Token, AuthError> {
        let now = self.inner.clock.now();
        let state = self.inner.read();
        let (cid, tenant, scopes, expires_at) = match &principal.credential {
            CredentialRef::Key(id) => {
                let key = state
                    .keys
                    .get(id)
                    .ok_or_else(AuthError::invalid_credential)?;
                if key.is_expired(now) {
                    return Err(AuthError::invalid_credential());
                }
                (key.id.clone(), &key.tenant, &key.scopes, key.expires_at)
            }
            CredentialRef::User(name) => {
                let user = state
                    .users
                    .get(name)
                    .ok_or_else(AuthError::invalid_credential)?;
                (user.uid.clone(), &user.tenant, &user.scopes, None)
            }
        };
        if *tenant != principal.tenant || !principal.scopes.is_subset(scopes) {
            return Err(AuthError::invalid_credential());
        }
        self.mint(principal, cid, expires_at, now)
    }

    fn mint(
        &self,
        principal: &Principal,
        cid: String,
        credential_expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Token, AuthError> {
        let iat = now.timestamp();
        let ttl = i64::try_from(self.inner.config.jwt_ttl.as_secs()).unwrap_or(i64::MAX);
        let mut exp = iat.saturating_add(ttl);
        if let Some(at) = credential_expires_at {
            exp = exp.min(at.timestamp());
        }
        if exp <= iat {
            return Err(AuthError::invalid_credential());
        }
        let expires_at = DateTime::from_timestamp(exp, 0)
            .ok_or_else(|| AuthError::Internal(format!("token expiry {exp} out of range")))?;
        let claims = Claims {
            sub: principal.credential_id(),
            tenant: principal.tenant.clone(),
            scopes: principal.scopes.clone(),
            exp,
            iat,
            jti: jwt::new_jti(),
            cid,
        };
        Ok(Token {
            token: self.inner.jwt.sign(&claims)?,
            token_type: "Bearer",
            expires_at,
            expires_in: u64::try_from(exp - iat).unwrap_or(0),
        })
    }

    /// Exchanges a username and password for a JWT. A wrong password and an unknown user
    /// fail identically, in about the same time (a dummy hash is verified for unknown users).
    ///
    /// Bounded by [`LoginLimits`]: once a username has used up its failures, its logins are
    /// `RateLimited` without the password being checked (for unknown usernames too); when
    /// every verification slot is busy and `max_waiting` logins already wait, a login is
    /// `RateLimited` with `retry_after` 1 s.
    pub async fn login(&self, username: &str, password: &str) -> Result<Token, AuthError> {
        let failure_key = login::failure_key(username);
        // The failure is paid for up front, so concurrent guesses cannot all pass a check made
        // before any of them failed; a login that succeeds, or is turned away unchecked, gets
        // it back. A login cancelled mid-check keeps it spent.
        self.inner
            .login_failures
            .check(&failure_key, self.inner.clock.instant())
            .map_err(|retry_after| AuthError::RateLimited { retry_after })?;
        let refund = || {
            self.inner
                .login_failures
                .refund(&failure_key, self.inner.clock.instant());
        };
        let slot = match self.inner.login_gate.enter().await {
            Ok(slot) => slot,
            Err(e) => {
                refund();
                return Err(e);
            }
        };
        let found = {
            let state = self.inner.read();
            state
                .users
                .get(username)
                .map(|u| (u.password_hash.clone(), u.uid.clone()))
        };
        let candidate = password.to_owned();
        let (verified, found) = tokio::task::spawn_blocking(move || {
            // Held until the hash is checked, even if the request is dropped meanwhile.
            let _slot = slot;
            // Keep hashing cost bounded for absurdly long input, yet still burn the time.
            let too_long = candidate.chars().count() > password::PASSWORD_MAX_CHARS;
            match &found {
                Some((phc, _)) if !too_long => (password::verify_password(&candidate, phc), found),
                _ => {
                    password::dummy_verify(if too_long { "" } else { &candidate });
                    (false, found)
                }
            }
        })
        .await
        .map_err(|e| AuthError::Internal(format!("password check task failed: {e}")))?;
        let Some((_, uid)) = found.filter(|_| verified) else {
            return Err(AuthError::invalid_credential());
        };

        let now = self.inner.clock.now();
        let state = self.inner.read();
        // The user may have been deleted (or re-created) while the hash was being checked.
        let user = state
            .users
            .get(username)
            .filter(|u| u.uid == uid)
            .ok_or_else(AuthError::invalid_credential)?;
        let principal = user_principal(user, user.scopes.clone());
        let token = self.mint(&principal, uid, None, now)?;
        refund();
        Ok(token)
    }

    /// Creates an API key. Needs `admin` of `req.tenant` (or root); only root may grant
    /// `root`.
    pub async fn create_key(&self, by: &Principal, req: NewKey) -> Result<CreatedKey, AuthError> {
        let now = self.inner.clock.now();
        check_grant(by, &req.tenant, &req.scopes)?;
        let name = validate_key_name(&req.name)?;
        if req.expires_at.is_some_and(|at| at <= now) {
            return Err(AuthError::invalid(
                "invalid_expires_at",
                "expires_at must be in the future",
            ));
        }
        let created_by = by.credential_id();
        let (id, text) = self
            .mutate({
                let (name, tenant, scopes, created_by) = (
                    name.clone(),
                    req.tenant.clone(),
                    req.scopes.clone(),
                    created_by.clone(),
                );
                move |state| {
                    let generated = unique_key(state)?;
                    state.keys.insert(
                        generated.id.clone(),
                        KeyRecord {
                            id: generated.id.clone(),
                            name: name.clone(),
                            tenant: tenant.clone(),
                            scopes: scopes.clone(),
                            hash: generated.hash,
                            created_at: now,
                            expires_at: req.expires_at,
                            created_by: created_by.clone(),
                        },
                    );
                    Ok((generated.id, generated.text))
                }
            })
            .await?;
        tracing::info!(key_id = %id, tenant = %req.tenant, scopes = %req.scopes, created_by = %created_by, "api key created");
        Ok(CreatedKey {
            id,
            key: text,
            name,
            tenant: req.tenant,
            scopes: req.scopes,
            created_at: now,
            expires_at: req.expires_at,
        })
    }

    /// Keys the caller administers: its own tenant's, or all for root. Oldest first.
    pub fn list_keys(&self, by: &Principal) -> Result<Vec<KeyInfo>, AuthError> {
        by.require(Scope::Admin)?;
        let state = self.inner.read();
        let mut keys: Vec<KeyInfo> = state
            .keys
            .values()
            .filter(|k| by.can_admin(&k.tenant))
            .map(KeyInfo::from)
            .collect();
        keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(keys)
    }

    /// Deletes a key; it and every JWT minted from it stop working at once. A key of a tenant
    /// the caller does not administer is `NotFound`, as if it did not exist.
    ///
    /// The last active root credential (root key or root user) cannot be revoked:
    /// `LastRootCredential`, since nothing could administer the server afterwards.
    pub async fn revoke_key(&self, by: &Principal, id: &str) -> Result<(), AuthError> {
        by.require(Scope::Admin)?;
        let now = self.inner.clock.now();
        let caller = by.clone();
        let target = id.to_owned();
        let tenant = self
            .mutate(move |state| {
                let key = state
                    .keys
                    .get(&target)
                    .filter(|k| caller.can_admin(&k.tenant))
                    .ok_or_else(|| AuthError::NotFound(format!("key {target:?} not found")))?;
                if key.scopes.contains(Scope::Root) && !caller.scopes.allows(Scope::Root) {
                    return Err(AuthError::Forbidden(
                        "only root can revoke a root key".into(),
                    ));
                }
                if key.scopes.contains(Scope::Root) && !key.is_expired(now) {
                    refuse_last_root(state, now, |k| k.id == target, |_| false)?;
                }
                let tenant = key.tenant.clone();
                state.keys.remove(&target);
                Ok(tenant)
            })
            .await?;
        tracing::info!(key_id = %id, tenant = %tenant, revoked_by = %by.credential_id(), "api key revoked");
        Ok(())
    }

    /// Creates a user. Same rules as [`create_key`](Auth::create_key).
    ///
    /// Usernames are global, unique across all tenants (a login names only the user, and
    /// tokens carry `user:<name>`). A taken name is a `Conflict` with the same message
    /// whichever tenant holds it, so an admin learns nothing about other tenants' users beyond
    /// "not available".
    pub async fn create_user(&self, by: &Principal, req: NewUser) -> Result<UserInfo, AuthError> {
        check_grant(by, &req.tenant, &req.scopes)?;
        password::validate_username(&req.username)?;
        password::validate_password(&req.password)?;
        let taken = || AuthError::Conflict("username is not available".to_owned());
        if self.inner.read().users.contains_key(&req.username) {
            return Err(taken());
        }
        let secret = req.password.clone();
        let password_hash = tokio::task::spawn_blocking(move || password::hash_password(&secret))
            .await
            .map_err(|e| AuthError::Internal(format!("password hashing task failed: {e}")))??;
        let record = UserRecord {
            username: req.username.clone(),
            uid: jwt::new_jti(),
            password_hash,
            tenant: req.tenant.clone(),
            scopes: req.scopes.clone(),
            created_at: self.inner.clock.now(),
            created_by: by.credential_id(),
        };
        let info = UserInfo::from(&record);
        self.mutate(move |state| {
            if state.users.contains_key(&record.username) {
                return Err(taken());
            }
            state.users.insert(record.username.clone(), record.clone());
            Ok(())
        })
        .await?;
        tracing::info!(username = %info.username, tenant = %info.tenant, scopes = %info.scopes, created_by = %info.created_by, "user created");
        Ok(info)
    }

    /// Users the caller administers: its own tenant's, or all for root. By username.
    pub fn list_users(&self, by: &Principal) -> Result<Vec<UserInfo>, AuthError> {
        by.require(Scope::Admin)?;
        let state = self.inner.read();
        Ok(state
            .users
            .values()
            .filter(|u| by.can_admin(&u.tenant))
            .map(UserInfo::from)
            .collect())
    }

    /// Deletes a user; its JWTs stop working at once. Another tenant's user is `NotFound`. The
    /// last active root credential cannot be deleted (`LastRootCredential`).
    pub async fn delete_user(&self, by: &Principal, username: &str) -> Result<(), AuthError> {
        by.require(Scope::Admin)?;
        let now = self.inner.clock.now();
        let caller = by.clone();
        let target = username.to_owned();
        let tenant = self
            .mutate(move |state| {
                let user = state
                    .users
                    .get(&target)
                    .filter(|u| caller.can_admin(&u.tenant))
                    .ok_or_else(|| AuthError::NotFound(format!("user {target:?} not found")))?;
                if user.scopes.contains(Scope::Root) && !caller.scopes.allows(Scope::Root) {
                    return Err(AuthError::Forbidden(
                        "only root can delete a root user".into(),
                    ));
                }
                if user.scopes.contains(Scope::Root) {
                    refuse_last_root(state, now, |_| false, |u| u.username == target)?;
                }
                let tenant = user.tenant.clone();
                state.users.remove(&target);
                Ok(tenant)
            })
            .await?;
        tracing::info!(username = %username, tenant = %tenant, deleted_by = %by.credential_id(), "user deleted");
        Ok(())
    }

    /// Applies `change` to a copy of the latest stored state and saves it (see
    /// [`SharedDocument::update`]): two nodes creating keys at once both keep theirs, and of two
    /// nodes bootstrapping an empty store one creates the root key and the other finds it.
    async fn mutate<T, F>(&self, mut change: F) -> Result<T, AuthError>
    where
        T: Send + 'static,
        F: FnMut(&mut State) -> Result<T, AuthError> + Send + 'static,
    {
        self.mutate_if(move |state| change(state).map(|out| (out, true)))
            .await
    }

    /// [`mutate`](Self::mutate) for a change that may turn out to change nothing (it returns
    /// whether it did): then nothing is saved.
    async fn mutate_if<T, F>(&self, change: F) -> Result<T, AuthError>
    where
        T: Send + 'static,
        F: FnMut(&mut State) -> Result<(T, bool), AuthError> + Send + 'static,
    {
        self.inner.document.update(change).await
    }
}

/// A trimmed key name of 1–[`KEY_NAME_MAX_CHARS`] characters without control characters.
fn validate_key_name(name: &str) -> Result<String, AuthError> {
    let name = name.trim().to_owned();
    if name.is_empty()
        || name.chars().count() > KEY_NAME_MAX_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(AuthError::invalid(
            "invalid_name",
            format!("key name must be 1-{KEY_NAME_MAX_CHARS} characters, no control characters"),
        ));
    }
    Ok(name)
}

/// Refuses removing a root credential when no other active one (an unexpired root key, or a
/// root user) would remain. `is_target_key` / `is_target_user` name the one being removed.
fn refuse_last_root(
    state: &State,
    now: DateTime<Utc>,
    is_target_key: impl Fn(&KeyRecord) -> bool,
    is_target_user: impl Fn(&UserRecord) -> bool,
) -> Result<(), AuthError> {
    let other_keys = state
        .keys
        .values()
        .filter(|k| k.scopes.contains(Scope::Root) && !k.is_expired(now) && !is_target_key(k))
        .count();
    let other_users = state
        .users
        .values()
        .filter(|u| u.scopes.contains(Scope::Root) && !is_target_user(u))
        .count();
    if other_keys + other_users == 0 {
        return Err(AuthError::LastRootCredential(
            "this is the last active root credential: create another root key first \
             (POST /v1/keys with scopes root,admin); removing it would leave nothing able to \
             administer the server"
                .to_owned(),
        ));
    }
    Ok(())
}

/// The throttle bucket of a source address: the address for IPv4, its /64 network for IPv6
/// (one client usually holds a whole /64, and could otherwise change address per guess).
fn source_key(source: IpAddr) -> String {
    match source {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// The checks shared by key and user creation.
fn check_grant(by: &Principal, tenant: &TenantId, scopes: &Scopes) -> Result<(), AuthError> {
    by.require(Scope::Admin)?;
    if !by.can_admin(tenant) {
        return Err(AuthError::Forbidden(format!(
            "cannot administer tenant {tenant}"
        )));
    }
    if scopes.contains(Scope::Root) && !by.scopes.allows(Scope::Root) {
        return Err(AuthError::Forbidden("only root can grant root".into()));
    }
    if scopes.is_empty() {
        return Err(AuthError::invalid(
            "invalid_scope",
            "at least one scope is required",
        ));
    }
    Ok(())
}

/// A new key whose id is not taken (a clash is ~1 in 10^18, but costs nothing to rule out).
fn unique_key(state: &State) -> Result<apikey::GeneratedKey, AuthError> {
    for _ in 0..4 {
        let generated = apikey::generate();
        if !state.keys.contains_key(&generated.id) {
            return Ok(generated);
        }
    }
    Err(AuthError::Internal(
        "could not generate an unused key id".into(),
    ))
}

fn key_principal(key: &KeyRecord, scopes: Scopes) -> Principal {
    Principal {
        tenant: key.tenant.clone(),
        name: key.name.clone(),
        credential: CredentialRef::Key(key.id.clone()),
        scopes,
    }
}

fn user_principal(user: &UserRecord, scopes: Scopes) -> Principal {
    Principal {
        tenant: user.tenant.clone(),
        name: user.username.clone(),
        credential: CredentialRef::User(user.username.clone()),
        scopes,
    }
}

fn authenticate_key(state: &State, text: &str, now: DateTime<Utc>) -> Result<Principal, AuthError> {
    let key = apikey::parse_id(text).and_then(|id| state.keys.get(id));
    let Some(key) = key else {
        // Same work as for a known id, so timing does not tell which ids exist.
        let _ = apikey::matches(text, &[0u8; 32]);
        return Err(AuthError::invalid_credential());
    };
    if !apikey::matches(text, &key.hash) || key.is_expired(now) {
        return Err(AuthError::invalid_credential());
    }
    Ok(key_principal(key, key.scopes.clone()))
}

fn authenticate_jwt(
    state: &State,
    keys: &JwtKeys,
    ttl: Duration,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Principal, AuthError> {
    let claims = keys.verify(token)?;
    // However well signed, a token may not live longer than this server issues them for, nor
    // claim to be issued in the future: a leaked signing key, or a node with a longer
    // `jwt_ttl`, must not yield long-lived tokens.
    let skew = i64::try_from(JWT_CLOCK_SKEW.as_secs()).unwrap_or(i64::MAX);
    let max_lifetime = i64::try_from(ttl.as_secs())
        .unwrap_or(i64::MAX)
        .saturating_add(skew);
    if claims.exp.saturating_sub(claims.iat) > max_lifetime
        || claims.iat > now.timestamp().saturating_add(skew)
    {
        return Err(AuthError::invalid_credential());
    }
    if now.timestamp() >= claims.exp {
        return Err(AuthError::expired_token());
    }
    let principal = match claims.sub.strip_prefix("user:") {
        Some(name) => {
            let user = state
                .users
                .get(name)
                .filter(|u| u.uid == claims.cid)
                .ok_or_else(AuthError::invalid_credential)?;
            if user.tenant != claims.tenant || !claims.scopes.is_subset(&user.scopes) {
                return Err(AuthError::invalid_credential());
            }
            user_principal(user, claims.scopes)
        }
        None => {
            let key = state
                .keys
                .get(&claims.sub)
                .filter(|k| k.id == claims.cid && !k.is_expired(now))
                .ok_or_else(AuthError::invalid_credential)?;
            if key.tenant != claims.tenant || !claims.scopes.is_subset(&key.scopes) {
                return Err(AuthError::invalid_credential());
            }
            key_principal(key, claims.scopes)
        }
    };
    Ok(principal)
}

#[cfg(test)]
mod tests;
