//! Who may talk to vigil, as which tenant, and to do what: API keys, users, JWTs, scopes.
//!
//! Every request but health checks passes here first: the HTTP layer hands the bearer
//! credential to [`Auth::authenticate`], gets a [`Principal`] (tenant, name, scopes), checks
//! [`Auth::check_rate`] and [`Principal::require`], and only then ingests or queries. The
//! tenant of every event written or read comes from the principal, never from the request.
//!
//! - **API keys** `vgl_<12-char id>_<43-char secret>`: 256 random bits, shown once, stored as
//!   SHA-256 and compared in constant time. The id is public and names the key in the admin API.
//! - **Users**: username + argon2id password hash; [`Auth::login`] trades them for a JWT.
//!   Usernames are global: unique across all tenants, since a login names only the user. A
//!   taken username is refused as "not available", whichever tenant holds it. Logins are
//!   bounded ([`LoginLimits`]): a few argon2 verifications at a time with a short queue, and a
//!   budget of failed attempts per username.
//! - **Failed credentials per source address** are throttled ([`Auth::check_source`],
//!   [`Auth::record_failure`], [`AuthConfig::source_failures`]): past the budget, the HTTP
//!   layer answers 429 without checking the credential.
//! - **JWTs** (EdDSA/Ed25519, 15 min by default) carry `sub`, `tenant`, `scopes`, `exp`, `iat`,
//!   `jti`. The private key ([`JwtSigningKey`]) lives in a file with the nodes, never in the
//!   store; during a rotation the previous key still verifies ([`AuthConfig::jwt_previous_keys`]).
//!   A token whose `exp − iat` exceeds the configured lifetime (plus [`JWT_CLOCK_SKEW`]) is
//!   refused. Tokens are re-checked against the live credential on every use, so revoking a key
//!   or deleting a user invalidates its tokens at once.
//! - **The last root credential** cannot be revoked or deleted (409 `last_root_credential`);
//!   [`Auth::create_recovery_root_key`] makes one offline.
//! - **Scopes** `events:write`, `events:read`, `schemas:write`, `admin` (manages its own
//!   tenant's credentials and implies the others there) and `root` (every tenant; only root
//!   grants root). Nothing else is implied.
//! - **Persistence**: keys, users and the JWT *public* key are one JSON document kept in the
//!   store under the name `auth`; a change is acknowledged only once saved. Several vigil processes
//!   may share one store: a change is applied to the latest document and saved with
//!   [`vigil_store::Store::save_meta_if`] only if nobody changed it meanwhile (else applied
//!   again), and every process reloads the document every [`AuthConfig::refresh_interval`]
//!   (1 s), so credentials created or revoked on one node take effect on the others within
//!   it. The first start creates a root key ([`Auth::bootstrap_root_key`]) in the
//!   [`SYSTEM_TENANT`] tenant; of several processes starting at once, exactly one does.
//!
//! ```
//! use std::sync::Arc;
//! use vigil_auth::{Auth, AuthConfig, AuthError, NewKey, Scope, Scopes};
//! use vigil_event::TenantId;
//!
//! async fn first_start(store: Arc<dyn vigil_store::Store>) -> Result<(), AuthError> {
//!     let auth = Auth::open(store, AuthConfig::default()).await?;
//!     let Some(root_key) = auth.bootstrap_root_key().await? else { return Ok(()) };
//!     let root = auth.authenticate(&root_key)?;
//!
//!     let acme = TenantId::parse("acme").expect("valid tenant");
//!     let writer = auth
//!         .create_key(&root, NewKey {
//!             name: "billing".into(),
//!             tenant: acme.clone(),
//!             scopes: Scopes::parse_list("events:write")?,
//!             expires_at: None,
//!         })
//!         .await?;
//!
//!     let principal = auth.authenticate(&writer.key)?;
//!     assert_eq!(principal.tenant, acme);
//!     assert!(principal.require(Scope::EventsWrite).is_ok());
//!     assert!(principal.require(Scope::EventsRead).is_err());
//!
//!     let jwt = auth.issue_token(&principal)?;
//!     assert_eq!(auth.authenticate(&jwt.token)?.name, "billing");
//!
//!     auth.revoke_key(&root, &writer.id).await?;
//!     assert!(auth.authenticate(&jwt.token).is_err());
//!     Ok(())
//! }
//! ```

mod apikey;
mod auth;
mod clock;
mod error;
mod jwt;
mod login;
mod password;
mod principal;
mod rate;
mod scope;
mod secret;
mod state;

pub use apikey::{KEY_PREFIX, is_api_key};
pub use auth::{
    Auth, AuthConfig, CreatedKey, JWT_CLOCK_SKEW, KEY_NAME_MAX_CHARS, KeyInfo, NewKey, NewUser,
    Token, UserInfo,
};
pub use error::AuthError;
pub use jwt::{JwtKeyError, JwtSigningKey, JwtVerifyingKey};
pub use login::LoginLimits;
pub use password::{PASSWORD_MAX_CHARS, PASSWORD_MIN_CHARS, USERNAME_MAX_LEN};
pub use principal::{CredentialRef, Principal, SYSTEM_TENANT, system_tenant};
pub use rate::RateLimit;
pub use scope::{Scope, Scopes};
pub use secret::SecretString;
