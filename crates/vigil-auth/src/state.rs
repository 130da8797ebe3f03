//! The credential document: keys, users and the public half of the JWT signing key, saved as
//! one JSON document through `Store::save_meta_if("auth", …)` and shared with the other
//! processes of the store as a [`SharedDocument`](vigil_store::shared::SharedDocument).
//!
//! No secret that could mint a token is stored. Version 1 documents held the HS256
//! `jwt_secret`; they still load (the secret is ignored) and [`Auth::open`](crate::Auth::open)
//! rewrites them as version 2, without it.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use vigil_event::TenantId;

use crate::apikey::{self, KeyHash};
use crate::error::AuthError;
use crate::password;
use crate::scope::Scopes;

/// The `Store` meta document name.
pub(crate) const META_NAME: &str = "auth";
const VERSION: u32 = 2;
/// The last version that held the HS256 `jwt_secret`.
const VERSION_WITH_SECRET: u32 = 1;

/// One API key, without its secret.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct KeyRecord {
    pub id: String,
    pub name: String,
    pub tenant: TenantId,
    pub scopes: Scopes,
    /// SHA-256 of the full key text, hex in the document.
    #[serde(with = "hex_hash")]
    pub hash: KeyHash,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Credential id of the creator (`bootstrap` for the first root key).
    pub created_by: String,
}

impl KeyRecord {
    pub(crate) fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// One user, with the argon2id PHC string of its password.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct UserRecord {
    pub username: String,
    /// Random per-creation id, carried in JWTs as `cid` (see [`crate::jwt::Claims`]).
    pub uid: String,
    pub password_hash: String,
    pub tenant: TenantId,
    pub scopes: Scopes,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

/// Everything vigil-auth keeps. Cloned for each mutation: the clone is changed, saved, and
/// only then swapped in, so readers never see an unsaved change.
#[derive(Clone)]
pub(crate) struct State {
    /// The public key tokens of this store are signed with ([`crate::JwtVerifyingKey::id`]),
    /// recorded by [`Auth::pin_jwt_key`](crate::Auth::pin_jwt_key) so a node given another
    /// key file is refused at start instead of minting tokens the other nodes reject.
    pub jwt_public_key: Option<String>,
    pub keys: BTreeMap<String, KeyRecord>,
    pub users: BTreeMap<String, UserRecord>,
    /// Loaded from a version 1 document, which still holds the HS256 secret in the store: it
    /// must be saved again (as version 2) to remove it.
    pub holds_legacy_secret: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    version: u32,
    /// Version 1 only: the HS256 secret, read to be dropped, never written.
    #[serde(default, skip_serializing)]
    jwt_secret: Option<serde::de::IgnoredAny>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jwt_public_key: Option<String>,
    keys: Vec<KeyRecord>,
    users: Vec<UserRecord>,
}

impl State {
    pub(crate) fn new() -> Self {
        Self {
            jwt_public_key: None,
            keys: BTreeMap::new(),
            users: BTreeMap::new(),
            holds_legacy_secret: false,
        }
    }

    pub(crate) fn to_document(&self) -> Result<Vec<u8>, AuthError> {
        let doc = Document {
            version: VERSION,
            jwt_secret: None,
            jwt_public_key: self.jwt_public_key.clone(),
            keys: self.keys.values().cloned().collect(),
            users: self.users.values().cloned().collect(),
        };
        serde_json::to_vec_pretty(&doc)
            .map_err(|e| AuthError::Internal(format!("serialising credential document: {e}")))
    }

    /// Parses and checks a saved document. Anything off (unknown version, a malformed key id,
    /// a duplicate, a password hash that is not argon2id) refuses the whole document: serving
    /// with half the credentials would be worse than not starting.
    pub(crate) fn from_document(bytes: &[u8]) -> Result<Self, AuthError> {
        let corrupt = |why: String| AuthError::Internal(format!("credential document: {why}"));
        let doc: Document = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        let holds_legacy_secret = match doc.version {
            VERSION_WITH_SECRET if doc.jwt_secret.is_some() => true,
            VERSION if doc.jwt_secret.is_none() => false,
            VERSION_WITH_SECRET | VERSION => {
                return Err(corrupt(format!(
                    "version {} {} a jwt_secret",
                    doc.version,
                    if doc.version == VERSION {
                        "must not hold"
                    } else {
                        "lacks"
                    }
                )));
            }
            other => return Err(corrupt(format!("unsupported version {other}"))),
        };
        let mut keys = BTreeMap::new();
        for key in doc.keys {
            if !apikey::is_valid_id(&key.id) {
                return Err(corrupt(format!("malformed key id {:?}", key.id)));
            }
            if let Some(dup) = keys.insert(key.id.clone(), key) {
                return Err(corrupt(format!("duplicate key id {:?}", dup.id)));
            }
        }
        let mut users = BTreeMap::new();
        for user in doc.users {
            password::validate_username(&user.username)
                .map_err(|_| corrupt(format!("malformed username {:?}", user.username)))?;
            if !password::is_valid_phc(&user.password_hash) {
                return Err(corrupt(format!(
                    "user {:?} has no argon2id hash",
                    user.username
                )));
            }
            if let Some(dup) = users.insert(user.username.clone(), user) {
                return Err(corrupt(format!("duplicate username {:?}", dup.username)));
            }
        }
        Ok(Self {
            jwt_public_key: doc.jwt_public_key,
            keys,
            users,
            holds_legacy_secret,
        })
    }
}

impl vigil_store::shared::Document for State {
    type Error = AuthError;

    const LABEL: &'static str = "credential";

    async fn decode(bytes: Vec<u8>, _previous: Option<Arc<Self>>) -> Result<Self, AuthError> {
        Self::from_document(&bytes)
    }

    async fn encode(state: Arc<Self>) -> Result<Vec<u8>, AuthError> {
        state.to_document()
    }

    fn absent() -> Result<Self, AuthError> {
        Err(AuthError::Internal(
            "the credential document is missing from the store".into(),
        ))
    }

    fn internal(message: String) -> AuthError {
        AuthError::Internal(message)
    }

    fn reloaded(&self) {
        tracing::info!(
            keys = self.keys.len(),
            users = self.users.len(),
            "credentials reloaded: the stored document was changed by another process"
        );
    }

    fn reload_failed(error: &AuthError) {
        tracing::warn!(error = %error, code = error.code(), "reloading credentials from the store failed; keeping the ones in memory");
    }
}

mod hex_hash {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    use crate::apikey::KeyHash;

    pub fn serialize<S: Serializer>(hash: &KeyHash, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(hash))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<KeyHash, D::Error> {
        let s = String::deserialize(deserializer)?;
        let bytes = hex::decode(&s).map_err(D::Error::custom)?;
        bytes
            .try_into()
            .map_err(|_| D::Error::custom("key hash must be 32 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the version 1 document kept the HS256 `jwt_secret` that signed every token,
    /// readable by anyone with read access to the store. Such a document still loads, flagged
    /// so it is saved again; the saved form (version 2) holds no secret.
    #[test]
    fn version_1_documents_load_and_are_saved_without_the_secret() {
        let v1 = serde_json::json!({
            "version": 1,
            "jwt_secret": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=",
            "keys": [], "users": []
        });
        let state = State::from_document(&serde_json::to_vec(&v1).unwrap()).unwrap();
        assert!(state.holds_legacy_secret);
        let saved = String::from_utf8(state.to_document().unwrap()).unwrap();
        assert!(!saved.contains("jwt_secret"), "{saved}");
        assert!(!saved.contains("c2VjcmV0"), "{saved}");
        let again = State::from_document(saved.as_bytes()).unwrap();
        assert!(!again.holds_legacy_secret);

        // A version 2 document with a secret is corrupt, not silently accepted.
        let mut v2: serde_json::Value = serde_json::from_str(&saved).unwrap();
        v2["jwt_secret"] = "x".into();
        assert!(State::from_document(&serde_json::to_vec(&v2).unwrap()).is_err());
    }

    #[test]
    fn refuses_corrupt_documents() {
        let good = State::new().to_document().unwrap();
        assert!(State::from_document(&good).is_ok());

        let mut doc: serde_json::Value = serde_json::from_slice(&good).unwrap();
        doc["version"] = 3.into();
        let err = State::from_document(&serde_json::to_vec(&doc).unwrap())
            .err()
            .unwrap();
        assert!(err.to_string().contains("unsupported version 3"), "{err}");

        assert!(State::from_document(b"{").is_err());
        assert!(State::from_document(b"{}").is_err());

        let mut doc: serde_json::Value = serde_json::from_slice(&good).unwrap();
        doc["keys"] = serde_json::json!([{
            "id": "NOT-AN-ID", "name": "k", "tenant": "acme", "scopes": [],
            "hash": hex::encode([0u8; 32]), "created_at": "2024-01-01T00:00:00Z",
            "expires_at": null, "created_by": "bootstrap"
        }]);
        let err = State::from_document(&serde_json::to_vec(&doc).unwrap())
            .err()
            .unwrap();
        assert!(err.to_string().contains("malformed key id"), "{err}");

        let mut doc: serde_json::Value = serde_json::from_slice(&good).unwrap();
        doc["users"] = serde_json::json!([{
            "username": "alice", "uid": "u", "password_hash": "plaintext!", "tenant": "acme",
            "scopes": [], "created_at": "2024-01-01T00:00:00Z", "created_by": "bootstrap"
        }]);
        let err = State::from_document(&serde_json::to_vec(&doc).unwrap())
            .err()
            .unwrap();
        assert!(err.to_string().contains("no argon2id hash"), "{err}");
    }
}
