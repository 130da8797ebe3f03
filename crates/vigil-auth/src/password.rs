//! Usernames and passwords: validation and argon2id hashing.
//!
//! Hashing is deliberately slow (argon2id, 19 MiB, 2 passes: the OWASP baseline), so the
//! async wrappers in `Auth` run it on `spawn_blocking` threads, never on the runtime.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;

use crate::error::AuthError;

pub const USERNAME_MAX_LEN: usize = 64;
pub const PASSWORD_MIN_CHARS: usize = 12;
pub const PASSWORD_MAX_CHARS: usize = 1024;

/// Checks a username: 1–64 characters of `[A-Za-z0-9._@-]` (so it can be an e-mail address,
/// and `user:<name>` in a JWT `sub` stays unambiguous).
pub(crate) fn validate_username(name: &str) -> Result<(), AuthError> {
    let ok = !name.is_empty()
        && name.len() <= USERNAME_MAX_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(AuthError::invalid(
            "invalid_username",
            format!("username must be 1-{USERNAME_MAX_LEN} characters of [A-Za-z0-9._@-]"),
        ))
    }
}

/// Checks a new password's length: 12–1024 characters (the upper bound keeps hashing cost
/// bounded).
pub(crate) fn validate_password(password: &str) -> Result<(), AuthError> {
    let chars = password.chars().count();
    if (PASSWORD_MIN_CHARS..=PASSWORD_MAX_CHARS).contains(&chars) {
        Ok(())
    } else {
        Err(AuthError::invalid(
            "invalid_password",
            format!("password must be {PASSWORD_MIN_CHARS}-{PASSWORD_MAX_CHARS} characters long"),
        ))
    }
}

fn hasher() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

/// Hashes a password into a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`). Blocking.
pub(crate) fn hash_password(password: &str) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| AuthError::Internal(format!("encoding password salt: {e}")))?;
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| AuthError::Internal(format!("hashing password: {e}")))
}

/// Checks a password against a stored PHC string. Blocking. A malformed stored hash counts as
/// a mismatch (it was validated when the credential document was loaded).
pub(crate) fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => hasher().verify_password(password.as_bytes(), &hash).is_ok(),
        Err(_) => false,
    }
}

/// Whether a stored string is a PHC hash this crate can verify.
pub(crate) fn is_valid_phc(phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| h.algorithm.as_str() == "argon2id")
}

/// Burns the same work as a real verification, for logins of unknown users: the response
/// time must not tell whether a username exists. Blocking.
pub(crate) fn dummy_verify(password: &str) {
    if let Some(phc) = dummy_hash() {
        let _ = verify_password(password, phc);
    }
}

/// The hash `dummy_verify` checks against, made once per process. Blocking the first time;
/// `Auth::open` warms it up in the background so no login pays for it.
pub(crate) fn dummy_hash() -> Option<&'static str> {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    DUMMY
        .get_or_init(|| hash_password("vigil dummy password for timing").ok())
        .as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for ok in [
            "a",
            "alice",
            "alice.smith@example.com",
            "svc_backup-01",
            &"x".repeat(64),
        ] {
            assert!(validate_username(ok).is_ok(), "{ok}");
        }
        for bad in ["", "al ice", "alice:admin", "ålice", "a/b", &"x".repeat(65)] {
            let err = validate_username(bad).unwrap_err();
            assert_eq!(err.code(), "invalid_username", "{bad}");
        }
    }

    #[test]
    fn password_length_is_counted_in_characters() {
        assert!(validate_password("twelve chars").is_ok());
        assert!(validate_password("ééééééééééé").is_err()); // 11 chars, 22 bytes
        assert!(validate_password("short").is_err());
        assert!(validate_password(&"p".repeat(1024)).is_ok());
        let err = validate_password(&"p".repeat(1025)).unwrap_err();
        assert_eq!(err.code(), "invalid_password");
    }

    #[test]
    fn hash_and_verify() {
        let phc = hash_password("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
        assert!(is_valid_phc(&phc));
        assert!(verify_password("correct horse battery", &phc));
        assert!(!verify_password("correct horse battery!", &phc));
        assert!(!verify_password("correct horse battery", "not a hash"));
        assert!(!is_valid_phc("$2b$12$abcdefghijklmnopqrstuv"));
        // Same password, fresh salt.
        assert_ne!(hash_password("correct horse battery").unwrap(), phc);
    }
}
