//! Short-lived HS256 tokens minted from an API key or a login.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use vigil_event::TenantId;

use crate::error::AuthError;
use crate::scope::Scopes;

/// What a vigil JWT carries. `sub` is the key id or `user:<name>`; `cid` pins the credential
/// instance (the key id, or the user's random `uid`), so a user deleted and created again
/// under the same name does not revive the old user's tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Claims {
    pub sub: String,
    pub tenant: TenantId,
    pub scopes: Scopes,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub cid: String,
}

/// The HMAC secret and the keys derived from it. Created once on first start and persisted
/// with the credentials, so tokens survive a restart; never printed.
#[derive(Clone)]
pub(crate) struct JwtKeys {
    secret: [u8; 32],
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys([redacted])")
    }
}

impl JwtKeys {
    pub(crate) fn generate() -> Self {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        Self::from_secret(secret)
    }

    fn from_secret(secret: [u8; 32]) -> Self {
        Self {
            secret,
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
        }
    }

    /// The secret as stored in the credential document (standard base64).
    pub(crate) fn to_base64(&self) -> String {
        STANDARD.encode(self.secret)
    }

    pub(crate) fn from_base64(s: &str) -> Result<Self, String> {
        let bytes = STANDARD
            .decode(s)
            .map_err(|e| format!("jwt secret is not base64: {e}"))?;
        let secret: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "jwt secret must be 32 bytes".to_owned())?;
        Ok(Self::from_secret(secret))
    }

    pub(crate) fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| AuthError::Internal(format!("signing token: {e}")))
    }

    /// Checks the signature (HS256 only: no `none`, no algorithm confusion) and decodes the
    /// claims. Expiry is checked by the caller against its clock.
    pub(crate) fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|_| AuthError::invalid_credential())
    }
}

/// A fresh random token id.
pub(crate) fn new_jti() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::Scope;

    fn claims() -> Claims {
        Claims {
            sub: "abcdefghijkl".into(),
            tenant: TenantId::parse("acme").unwrap(),
            scopes: Scopes::from([Scope::EventsRead]),
            exp: 2_000_000_000,
            iat: 1_999_999_000,
            jti: new_jti(),
            cid: "abcdefghijkl".into(),
        }
    }

    #[test]
    fn round_trip_and_secret_survives_base64() {
        let keys = JwtKeys::generate();
        let token = keys.sign(&claims()).unwrap();
        let again = JwtKeys::from_base64(&keys.to_base64()).unwrap();
        assert_eq!(again.verify(&token).unwrap(), keys.verify(&token).unwrap());
        assert_eq!(format!("{keys:?}"), "JwtKeys([redacted])");
    }

    #[test]
    fn other_secret_or_alg_none_is_refused() {
        let token = JwtKeys::generate().sign(&claims()).unwrap();
        assert_eq!(
            JwtKeys::generate().verify(&token).unwrap_err().code(),
            "unauthenticated"
        );

        // An unsigned token (`alg: none`) with the same claims.
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims()).unwrap());
        let keys = JwtKeys::generate();
        assert!(keys.verify(&format!("{header}.{body}.")).is_err());
        assert!(keys.verify("not a token").is_err());
        assert!(keys.verify("").is_err());
    }

    #[test]
    fn bad_stored_secrets_are_reported() {
        assert!(JwtKeys::from_base64("!!").is_err());
        assert!(JwtKeys::from_base64(&STANDARD.encode([0u8; 16])).is_err());
    }
}
