//! API key text: `vgl_<12-char id>_<43-char base64url secret>`.
//!
//! The id is public (it names the key in the admin API and in logs) and lets the server find
//! the key's record without scanning; the secret is 256 random bits. Only SHA-256 of the whole
//! key text is stored, and it is compared in constant time. A fast hash is enough here (unlike
//! for passwords): the secret has full entropy, so there is nothing to brute-force.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secret::SecretString;

/// Every API key starts with this; anything else presented as a bearer is taken for a JWT.
pub const KEY_PREFIX: &str = "vgl_";

const ID_LEN: usize = 12;
const SECRET_LEN: usize = 43;
/// Lowercase letters and digits: no `_` in the id, so the key text splits unambiguously.
const ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// SHA-256 of a key's full text.
pub(crate) type KeyHash = [u8; 32];

/// A freshly generated key: its id, its plaintext (shown once) and the hash to store.
pub(crate) struct GeneratedKey {
    pub id: String,
    pub text: SecretString,
    pub hash: KeyHash,
}

pub(crate) fn generate() -> GeneratedKey {
    let mut rng = rand::rng();
    let id: String = (0..ID_LEN)
        .map(|_| char::from(ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())]))
        .collect();
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let text = format!("{KEY_PREFIX}{id}_{}", URL_SAFE_NO_PAD.encode(secret));
    let hash = hash(&text);
    GeneratedKey {
        id,
        text: SecretString::new(text),
        hash,
    }
}

/// Whether a bearer credential is an API key (as opposed to a JWT).
pub fn is_api_key(bearer: &str) -> bool {
    bearer.starts_with(KEY_PREFIX)
}

/// Whether `id` has the shape of a key id (what `DELETE /v1/keys/{id}` takes).
pub(crate) fn is_valid_id(id: &str) -> bool {
    id.len() == ID_LEN && id.bytes().all(|b| ID_ALPHABET.contains(&b))
}

/// The key id of a well-formed key text, `None` when the text is not shaped like a key.
pub(crate) fn parse_id(text: &str) -> Option<&str> {
    let rest = text.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = (rest.get(..ID_LEN)?, rest.get(ID_LEN..)?);
    let secret = secret.strip_prefix('_')?;
    let secret_ok = secret.len() == SECRET_LEN
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (is_valid_id(id) && secret_ok).then_some(id)
}

pub(crate) fn hash(text: &str) -> KeyHash {
    Sha256::digest(text.as_bytes()).into()
}

/// Constant-time check of a presented key text against a stored hash.
pub(crate) fn matches(text: &str, stored: &KeyHash) -> bool {
    hash(text).ct_eq(stored).into()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let k = generate();
        assert_eq!(k.text.len(), KEY_PREFIX.len() + ID_LEN + 1 + SECRET_LEN);
        assert!(is_api_key(&k.text));
        assert_eq!(parse_id(&k.text), Some(k.id.as_str()));
        assert!(matches(&k.text, &k.hash));
        assert_ne!(generate().id, k.id);
    }

    #[test]
    fn one_changed_character_does_not_match() {
        let k = generate();
        let mut tampered = k.text.expose().to_owned();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(parse_id(&tampered), Some(k.id.as_str()));
        assert!(!matches(&tampered, &k.hash));
    }

    #[test]
    fn malformed_texts_are_refused() {
        let k = generate();
        let text = k.text.expose();
        for bad in [
            "",
            "vgl_",
            "vgl_abc",
            &text[..text.len() - 1],
            &format!("{text}A"),
            &text.replace("vgl_", "vgk_"),
            &text.to_uppercase(),
            &format!("vgl_{}-{}", &text[4..16], &text[17..]),
        ] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "vgl_\\PC{0,70}") {
            if let Some(id) = parse_id(&s) {
                prop_assert!(is_valid_id(id));
            }
        }
    }
}
