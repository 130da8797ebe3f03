//! Short-lived EdDSA (Ed25519) tokens minted from an API key or a login, and the key files
//! they are signed with.
//!
//! The private key lives only with the nodes, in a file (`<data-dir>/jwt.key` by default,
//! PKCS#8 PEM, mode 0600, created at first start): nothing in the store can mint a token.
//! Tokens are checked against this node's key and any previous keys still accepted during a
//! rotation ([`JwtKeys`]). Only `EdDSA` is accepted, so HS256 tokens from older versions, `alg:
//! none` and algorithm confusion are all refused.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use vigil_event::TenantId;
use vigil_integrity::keyfile::{self, Created, KeyFileError};

use crate::error::AuthError;
use crate::scope::Scopes;

/// What a vigil JWT carries. `sub` is the key id or `user:<name>`; `cid` pins the credential
/// instance (the key id, or the user's random `uid`), so a user deleted and created again
/// under the same name does not revive the old user's tokens. `exp` and `iat` are required:
/// a token without them does not decode, and `exp − iat` is capped by the verifier.
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

/// DER of a PKCS#8 v1 Ed25519 private key (RFC 8410) up to the 32-byte seed: what
/// `openssl genpkey -algorithm ed25519` writes.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// DER of an Ed25519 SubjectPublicKeyInfo up to the 32-byte public key
/// (`openssl pkey -pubout`).
const SPKI_ED25519_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Why a JWT key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JwtKeyError {
    #[error("{action} jwt key file {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A private key file that group or others may read: anyone who can read it can mint
    /// tokens for every credential.
    #[error("jwt key file {} has mode {mode:04o}: group and others must have no access (chmod 600)", path.display())]
    Permissions { path: PathBuf, mode: u32 },
    #[error("jwt key file {}: {why}", path.display())]
    Malformed { path: PathBuf, why: String },
}

impl From<KeyFileError> for JwtKeyError {
    fn from(e: KeyFileError) -> Self {
        match e {
            KeyFileError::Io {
                action,
                path,
                source,
            } => Self::Io {
                action,
                path,
                source,
            },
            KeyFileError::Permissions { path, mode } => Self::Permissions { path, mode },
        }
    }
}

/// The Ed25519 key this node signs tokens with. `Debug` never shows it; two keys are equal
/// when their public halves are.
#[derive(Clone)]
pub struct JwtSigningKey {
    seed: [u8; 32],
    encoding: EncodingKey,
    verifying: JwtVerifyingKey,
}

impl std::fmt::Debug for JwtSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "JwtSigningKey({} [private half redacted])",
            self.verifying.id()
        )
    }
}

impl PartialEq for JwtSigningKey {
    fn eq(&self, other: &Self) -> bool {
        self.verifying == other.verifying
    }
}

impl JwtSigningKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        Self::from_seed(seed)
    }

    /// One random key per process, made on first use: what [`AuthConfig::default`]
    /// (crate::AuthConfig) signs with, so every `Auth` of a process (tests, embedders) shares
    /// it, as the nodes of a deployment share a key file. Tokens signed with it do not survive
    /// a restart; `vigil serve` loads a key file instead.
    pub fn process_default() -> Self {
        static KEY: OnceLock<JwtSigningKey> = OnceLock::new();
        KEY.get_or_init(Self::generate).clone()
    }

    fn from_seed(seed: [u8; 32]) -> Self {
        let public = ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes();
        let mut der = PKCS8_ED25519_PREFIX.to_vec();
        der.extend_from_slice(&seed);
        Self {
            seed,
            encoding: EncodingKey::from_ed_der(&der),
            verifying: JwtVerifyingKey::from_public(public),
        }
    }

    /// The public half, which verifies this key's tokens.
    pub fn verifying_key(&self) -> &JwtVerifyingKey {
        &self.verifying
    }

    /// The key file contents: a PKCS#8 PEM private key, as `openssl genpkey -algorithm
    /// ed25519` writes it.
    pub fn to_pem(&self) -> String {
        let mut der = PKCS8_ED25519_PREFIX.to_vec();
        der.extend_from_slice(&self.seed);
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(der)
        )
    }

    /// Parses a PKCS#8 PEM Ed25519 private key.
    pub fn from_pem(text: &str) -> Result<Self, String> {
        let der = pem_body(text, "PRIVATE KEY")?;
        let seed = der
            .strip_prefix(&PKCS8_ED25519_PREFIX[..])
            .and_then(|seed| <[u8; 32]>::try_from(seed).ok())
            .ok_or(
                "not an Ed25519 private key in PKCS#8 form (openssl genpkey -algorithm ed25519)",
            )?;
        Ok(Self::from_seed(seed))
    }

    /// Reads the key file at `path`, refusing one that group or others may access.
    pub fn load(path: &Path) -> Result<Self, JwtKeyError> {
        let text = keyfile::read_private(path)?;
        Self::from_pem(&text).map_err(|why| JwtKeyError::Malformed {
            path: path.to_owned(),
            why,
        })
    }

    /// Loads the key at `path`, or creates a new one there when there is no file (see
    /// [`vigil_integrity::keyfile`]). Returns the key and whether it was created. Of several
    /// processes creating it at once, all end up with the one that won the race.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), JwtKeyError> {
        match Self::load(path) {
            Ok(key) => return Ok((key, false)),
            Err(JwtKeyError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let key = Self::generate();
        match keyfile::create_private(path, key.to_pem().as_bytes())? {
            Created::Written => Ok((key, true)),
            Created::AlreadyExists => Self::load(path).map(|key| (key, false)),
        }
    }

    pub(crate) fn sign<C: Serialize>(&self, claims: &C) -> Result<String, AuthError> {
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &self.encoding)
            .map_err(|e| AuthError::Internal(format!("signing token: {e}")))
    }
}

/// An Ed25519 public key that tokens are accepted from. Its [`id`](Self::id) (the key,
/// unpadded base64url, as a JWK `x`) is what the credential document pins.
#[derive(Clone)]
pub struct JwtVerifyingKey {
    public: [u8; 32],
    decoding: DecodingKey,
}

impl std::fmt::Debug for JwtVerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JwtVerifyingKey({})", self.id())
    }
}

impl PartialEq for JwtVerifyingKey {
    fn eq(&self, other: &Self) -> bool {
        self.public == other.public
    }
}

impl Eq for JwtVerifyingKey {}

impl JwtVerifyingKey {
    fn from_public(public: [u8; 32]) -> Self {
        Self {
            public,
            decoding: DecodingKey::from_ed_der(&public),
        }
    }

    /// The public key as unpadded base64url.
    pub fn id(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.public)
    }

    /// Reads a key file accepted for verification: a private key file (the key being rotated
    /// away from, mode 0600 as for [`JwtSigningKey::load`]) or a public key
    /// (`-----BEGIN PUBLIC KEY-----`, as `openssl pkey -pubout` writes it).
    pub fn load(path: &Path) -> Result<Self, JwtKeyError> {
        let malformed = |why: String| JwtKeyError::Malformed {
            path: path.to_owned(),
            why,
        };
        let text = std::fs::read_to_string(path).map_err(|source| JwtKeyError::Io {
            action: "reading",
            path: path.to_owned(),
            source,
        })?;
        if text.contains("PRIVATE KEY") {
            return JwtSigningKey::load(path).map(|key| key.verifying);
        }
        let der = pem_body(&text, "PUBLIC KEY").map_err(malformed)?;
        let public = der
            .strip_prefix(&SPKI_ED25519_PREFIX[..])
            .and_then(|key| <[u8; 32]>::try_from(key).ok())
            .ok_or_else(|| malformed("not an Ed25519 public key".to_owned()))?;
        ed25519_dalek::VerifyingKey::from_bytes(&public)
            .map_err(|_| malformed("not a valid Ed25519 point".to_owned()))?;
        Ok(Self::from_public(public))
    }

    /// The public key as a PEM SubjectPublicKeyInfo.
    pub fn to_pem(&self) -> String {
        let mut der = SPKI_ED25519_PREFIX.to_vec();
        der.extend_from_slice(&self.public);
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            STANDARD.encode(der)
        )
    }
}

/// The signing key and every key a token is accepted from: this node's own, then the
/// previous ones of a rotation.
#[derive(Debug, Clone)]
pub(crate) struct JwtKeys {
    signing: JwtSigningKey,
    accepted: Vec<JwtVerifyingKey>,
}

impl JwtKeys {
    pub(crate) fn new(signing: JwtSigningKey, previous: &[JwtVerifyingKey]) -> Self {
        let mut accepted = vec![signing.verifying.clone()];
        for key in previous {
            if !accepted.contains(key) {
                accepted.push(key.clone());
            }
        }
        Self { signing, accepted }
    }

    pub(crate) fn signing(&self) -> &JwtSigningKey {
        &self.signing
    }

    pub(crate) fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        self.signing.sign(claims)
    }

    /// Checks the signature (EdDSA only, against each accepted key) and decodes the claims.
    /// Expiry and lifetime are checked by the caller against its clock.
    pub(crate) fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        for key in &self.accepted {
            match jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature) => {
                }
                Err(_) => break,
            }
        }
        Err(AuthError::invalid_credential())
    }
}

/// The DER inside the one PEM block labelled `label`.
fn pem_body(text: &str, label: &str) -> Result<Vec<u8>, String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text
        .find(&begin)
        .ok_or_else(|| format!("no {begin} line"))?
        + begin.len();
    let stop = text[start..]
        .find(&end)
        .ok_or_else(|| format!("no {end} line"))?;
    let body: String = text[start..start + stop]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    STANDARD
        .decode(body)
        .map_err(|e| format!("the key is not base64: {e}"))
}

/// A fresh random token id.
pub(crate) fn new_jti() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

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

    fn keys() -> JwtKeys {
        JwtKeys::new(JwtSigningKey::generate(), &[])
    }

    #[test]
    fn round_trip_and_key_survives_pem() {
        let key = JwtSigningKey::generate();
        let keys = JwtKeys::new(key.clone(), &[]);
        let claims = claims();
        let token = keys.sign(&claims).unwrap();
        assert!(token.starts_with(&URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"EdDSA"}"#)));
        let again = JwtKeys::new(JwtSigningKey::from_pem(&key.to_pem()).unwrap(), &[]);
        assert_eq!(again.verify(&token).unwrap(), claims);
        assert!(!format!("{key:?}").contains(&STANDARD.encode(key.seed)));
    }

    /// Regression: tokens were HS256, signed with a secret kept in the store's credential
    /// document, so anyone who could read the store (a read-only database role, a backup, a
    /// replica) could mint a root token. Tokens are now EdDSA with a key that never enters the
    /// store, and an HS256 token — even one made with the old stored secret — is refused.
    #[test]
    fn hs256_other_keys_and_alg_none_are_refused() {
        let keys = keys();
        let token = JwtKeys::new(JwtSigningKey::generate(), &[])
            .sign(&claims())
            .unwrap();
        assert_eq!(keys.verify(&token).unwrap_err().code(), "unauthenticated");

        let hs256 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(&[7u8; 32]),
        )
        .unwrap();
        assert!(keys.verify(&hs256).is_err());

        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims()).unwrap());
        assert!(keys.verify(&format!("{header}.{body}.")).is_err());
        assert!(keys.verify("not a token").is_err());
        assert!(keys.verify("").is_err());
    }

    #[test]
    fn previous_keys_verify_during_a_rotation() {
        let old = JwtSigningKey::generate();
        let new = JwtSigningKey::generate();
        let claims = claims();
        let old_token = JwtKeys::new(old.clone(), &[]).sign(&claims).unwrap();
        let rotating = JwtKeys::new(new.clone(), &[old.verifying_key().clone()]);
        assert_eq!(rotating.verify(&old_token).unwrap(), claims);
        let new_token = rotating.sign(&claims).unwrap();
        assert!(JwtKeys::new(old, &[]).verify(&new_token).is_err());
        assert!(JwtKeys::new(new, &[]).verify(&old_token).is_err());
    }

    #[test]
    fn key_files_are_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt.key");
        let (key, created) = JwtSigningKey::load_or_create(&path).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, created) = JwtSigningKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(again, key);
        // The previous key may be given as the private file or its public half.
        assert_eq!(&JwtVerifyingKey::load(&path).unwrap(), key.verifying_key());
        let public = dir.path().join("jwt.pub");
        std::fs::write(&public, key.verifying_key().to_pem()).unwrap();
        assert_eq!(
            &JwtVerifyingKey::load(&public).unwrap(),
            key.verifying_key()
        );

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = JwtSigningKey::load_or_create(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");

        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, "hello").unwrap();
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            JwtSigningKey::load(&bad),
            Err(JwtKeyError::Malformed { .. })
        ));
    }

    #[test]
    fn openssl_pkcs8_keys_are_read() {
        // `openssl genpkey -algorithm ed25519` (RFC 8410 test key).
        let pem = "-----BEGIN PRIVATE KEY-----\n\
                   MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n\
                   -----END PRIVATE KEY-----\n";
        let key = JwtSigningKey::from_pem(pem).unwrap();
        assert_eq!(
            key.verifying_key().to_pem(),
            "-----BEGIN PUBLIC KEY-----\n\
             MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n\
             -----END PUBLIC KEY-----\n"
        );
    }
}
