//! The log's Ed25519 signing key and its C2SP signed checkpoints.
//!
//! A checkpoint of tenant `acme` at 5 events is a [C2SP signed note] whose body is a
//! [C2SP tlog-checkpoint] without extension lines:
//!
//! ```text
//! vigil/acme
//! 5
//! Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=
//!
//! — vigil.example.com RWyY1J+...(Ed25519 note signature, type 0x01)
//! — vigil.example.com 9X3Zq2A...(timestamped cosignature/v1, type 0x04)
//! ```
//!
//! It carries two signatures by the same key:
//!
//! 1. a plain Ed25519 note signature (key ID type `0x01`), which Go's `note.Open`, the
//!    `signed_note` crate and every C2SP verifier accept;
//! 2. a [C2SP tlog-cosignature] `cosignature/v1` signature (key ID type `0x04`), which signs
//!    `cosignature/v1\ntime <unix seconds>\n` followed by the body, and carries that timestamp:
//!    a checkpoint body has no time of its own, and this is the standard way to sign one.
//!
//! Both use the same Ed25519 key. C2SP signed-note allows one key for several signature types
//! "if domain separation can be ensured", and it is: a cosignature message starts with the
//! line `cosignature/v1`, while vigil only ever makes type `0x01` signatures over bodies that
//! start with `vigil/`, so neither signature verifies as the other (the key IDs differ too).
//! tlog-cosignature only demands distinct keys between *different cosigners*. A verifier of
//! the cosignature alone is configured with [`VerifierKey::cosignature_vkey`].
//!
//! The key file holds the private key in the format of Go's `golang.org/x/mod/sumdb/note`:
//! `PRIVATE+KEY+<name>+<key id>+<base64(0x01 ‖ Ed25519 seed)>`.
//!
//! [C2SP signed note]: https://c2sp.org/signed-note
//! [C2SP tlog-checkpoint]: https://c2sp.org/tlog-checkpoint
//! [C2SP tlog-cosignature]: https://c2sp.org/tlog-cosignature

use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use ed25519_dalek::Signer as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use signed_note::{Note, NoteError, VerificationError, Verifier, Verifiers};

use crate::Hash;
use crate::keyfile::{self, Created, KeyFileError};

/// Signature type of plain Ed25519 note signatures (C2SP signed-note).
const ALG_ED25519: u8 = 0x01;
/// Signature type of timestamped Ed25519 cosignatures (C2SP tlog-cosignature).
const ALG_COSIGNATURE_V1: u8 = 0x04;
/// First line of the message a `cosignature/v1` signature signs.
const COSIGNATURE_HEADER: &str = "cosignature/v1\n";
/// Every checkpoint origin starts with this; the tenant follows.
const ORIGIN_PREFIX: &str = "vigil/";

/// The checkpoint origin of `tenant`'s log: `vigil/<tenant>`.
pub fn origin(tenant: &str) -> String {
    format!("{ORIGIN_PREFIX}{tenant}")
}

/// Why a key could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key name cannot appear in a note.
    #[error(
        "invalid key name {0:?}: it must be non-empty, without spaces, control characters or '+'"
    )]
    InvalidName(String),
    /// The private key text is not a note signer key.
    #[error("malformed signing key: {0}")]
    MalformedPrivateKey(String),
    /// The verifier key text is not a usable vkey.
    #[error("malformed verifier key: {0}")]
    MalformedVerifierKey(String),
    /// The key file can be read or written by other users.
    #[error(
        "signing key file {} is accessible to group or others (mode {mode:03o}); make it private with `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    Permissions { path: PathBuf, mode: u32 },
    /// Reading or writing the key file failed.
    #[error("{action} signing key file {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The operating system's random source failed.
    #[error("generating a signing key: the system random source failed: {0}")]
    Random(String),
}

impl From<KeyFileError> for KeyError {
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

impl KeyError {
    /// A stable machine-readable code for the error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidName(_) => "invalid_key_name",
            Self::MalformedPrivateKey(_) => "malformed_private_key",
            Self::MalformedVerifierKey(_) => "malformed_verifier_key",
            Self::Permissions { .. } => "key_file_permissions",
            Self::Io { .. } => "key_file_io",
            Self::Random(_) => "random_source",
        }
    }
}

/// Why a checkpoint was refused.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Not a well-formed signed note.
    #[error("malformed checkpoint note: {0}")]
    Malformed(String),
    /// No signature of the trusted key: the note was signed by someone else.
    #[error("checkpoint is not signed by the trusted key {trusted}; signed by {found}")]
    UntrustedSigner { trusted: String, found: String },
    /// A signature line of the trusted key does not verify.
    #[error(
        "bad signature by {key}: the checkpoint was altered after signing or the signature is corrupt"
    )]
    BadSignature { key: String },
    /// Signed by the trusted key, but one of the two signatures vigil makes is missing.
    #[error("checkpoint lacks the {kind} of the trusted key {key}")]
    MissingSignature { kind: &'static str, key: String },
    /// Correctly signed, but the body is not a checkpoint of a vigil log.
    #[error("note body is not a vigil checkpoint: {0}")]
    NotVigilCheckpoint(String),
    /// A field of a checkpoint JSON disagrees with what its note signs.
    #[error("checkpoint field {field} is {stated} but the signed note says {signed}")]
    FieldMismatch {
        field: &'static str,
        stated: String,
        signed: String,
    },
}

impl CheckpointError {
    /// A stable machine-readable code for the error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed_checkpoint",
            Self::UntrustedSigner { .. } => "untrusted_signer",
            Self::BadSignature { .. } => "bad_signature",
            Self::MissingSignature { .. } => "missing_signature",
            Self::NotVigilCheckpoint(_) => "not_a_vigil_checkpoint",
            Self::FieldMismatch { .. } => "checkpoint_field_mismatch",
        }
    }
}

fn valid_key_name(name: &str) -> bool {
    signed_note::is_key_name_valid(name) && !name.chars().any(char::is_control)
}

/// C2SP key ID: `SHA-256(name ‖ 0x0A ‖ signature type ‖ public key)[:4]`, big-endian.
fn key_id(name: &str, alg: u8, public_key: &[u8; 32]) -> u32 {
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update([b'\n', alg])
        .chain_update(public_key)
        .finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// The message a `cosignature/v1` signature at `timestamp` signs over `body`.
fn cosignature_message(timestamp: u64, body: &[u8]) -> Vec<u8> {
    let mut msg = format!("{COSIGNATURE_HEADER}time {timestamp}\n").into_bytes();
    msg.extend_from_slice(body);
    msg
}

/// Parses an 8-digit hex key ID.
fn parse_key_id(id: &str) -> Option<u32> {
    if id.len() != 8 {
        return None;
    }
    u32::from_str_radix(id, 16).ok()
}

/// The log's Ed25519 signing key. Its `Debug` output never shows the secret.
pub struct SigningKey {
    name: String,
    key: ed25519_dalek::SigningKey,
    verifier: VerifierKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("verifier", &self.verifier.to_vkey())
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl SigningKey {
    fn from_seed(name: &str, seed: &[u8; 32]) -> Self {
        let key = ed25519_dalek::SigningKey::from_bytes(seed);
        let public = key.verifying_key();
        let verifier = VerifierKey {
            name: name.to_owned(),
            id: key_id(name, ALG_ED25519, public.as_bytes()),
            key: public,
        };
        Self {
            name: name.to_owned(),
            key,
            verifier,
        }
    }

    /// A fresh key named `name` (the name verifiers know the log by, e.g. its host name),
    /// from the operating system's random source.
    pub fn generate(name: &str) -> Result<Self, KeyError> {
        use rand::TryRngCore as _;
        if !valid_key_name(name) {
            return Err(KeyError::InvalidName(name.to_owned()));
        }
        let mut seed = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut seed)
            .map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self::from_seed(name, &seed))
    }

    /// Parses a note signer key, `PRIVATE+KEY+<name>+<key id>+<base64(0x01 ‖ seed)>` (surrounding
    /// whitespace is ignored). The key ID must be the one of the key. Error messages never
    /// contain the key material.
    pub fn from_note_key(text: &str) -> Result<Self, KeyError> {
        let bad = |why: &str| KeyError::MalformedPrivateKey(why.to_owned());
        let mut parts = text.trim().splitn(5, '+');
        let (Some("PRIVATE"), Some("KEY"), Some(name), Some(id), Some(key)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad(
                "expected PRIVATE+KEY+<name>+<key id>+<base64 key> (a golang.org/x/mod/sumdb/note signer key)",
            ));
        };
        if !valid_key_name(name) {
            return Err(KeyError::InvalidName(name.to_owned()));
        }
        let id = parse_key_id(id).ok_or_else(|| bad("the key id is not 8 hex digits"))?;
        let bytes = BASE64
            .decode(key)
            .map_err(|_| bad("the key is not standard base64"))?;
        let Some((&ALG_ED25519, seed)) = bytes.split_first() else {
            return Err(bad("not an Ed25519 key (algorithm byte 0x01)"));
        };
        let seed: &[u8; 32] = seed
            .try_into()
            .map_err(|_| bad("an Ed25519 key has 32 bytes after the algorithm byte"))?;
        let out = Self::from_seed(name, seed);
        if out.verifier.id != id {
            return Err(KeyError::MalformedPrivateKey(format!(
                "key id {id:08x} is not the id of this key ({:08x})",
                out.verifier.id
            )));
        }
        Ok(out)
    }

    /// The key file contents: the note signer key and a newline.
    pub fn to_note_key(&self) -> String {
        let mut bytes = Vec::with_capacity(33);
        bytes.push(ALG_ED25519);
        bytes.extend_from_slice(&self.key.to_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}\n",
            self.name,
            self.verifier.id,
            BASE64.encode(&bytes)
        )
    }

    /// Reads the key file at `path`, refusing one that group or others may access.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = keyfile::read_private(path).map_err(KeyError::from)?;
        Self::from_note_key(&text)
    }

    /// Loads the key at `path`, or creates a new one named `name` there when there is no file.
    /// Returns the key and whether it was created. An existing file is never overwritten (its
    /// key is returned whatever its name); see [`keyfile`] for how it is created.
    pub fn load_or_create(path: &Path, name: &str) -> Result<(Self, bool), KeyError> {
        match Self::load(path) {
            Ok(key) => return Ok((key, false)),
            Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let key = Self::generate(name)?;
        match keyfile::create_private(path, key.to_note_key().as_bytes())? {
            Created::Written => Ok((key, true)),
            // Another process created it in the meantime: use that key.
            Created::AlreadyExists => Self::load(path).map(|key| (key, false)),
        }
    }

    /// The key name, as it appears on signature lines.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID of its Ed25519 note signatures.
    pub fn key_id(&self) -> u32 {
        self.verifier.id
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.verifier.public_key()
    }

    /// The public half, to give to verifiers.
    pub fn verifier(&self) -> VerifierKey {
        self.verifier.clone()
    }

    /// The signed note of the checkpoint of `origin` (see [`origin`]) at `size` leaves with
    /// `root`, signed at `timestamp` (whole seconds; a time before 1970 is signed as 1970).
    /// `origin` must be one line without control characters, as [`origin`] makes it for any
    /// valid tenant id.
    pub fn sign_checkpoint(
        &self,
        origin: &str,
        size: u64,
        root: &Hash,
        timestamp: DateTime<Utc>,
    ) -> String {
        debug_assert!(!origin.is_empty() && !origin.chars().any(char::is_control));
        let body = format!("{origin}\n{size}\n{}\n", BASE64.encode(root));
        let seconds = u64::try_from(timestamp.timestamp()).unwrap_or(0);
        let note_sig = self.key.sign(body.as_bytes());
        let cosig = self
            .key
            .sign(&cosignature_message(seconds, body.as_bytes()));

        let mut note_bytes = Vec::with_capacity(4 + 64);
        note_bytes.extend_from_slice(&self.verifier.id.to_be_bytes());
        note_bytes.extend_from_slice(&note_sig.to_bytes());
        let mut cosig_bytes = Vec::with_capacity(4 + 8 + 64);
        cosig_bytes.extend_from_slice(&self.verifier.cosignature_key_id().to_be_bytes());
        cosig_bytes.extend_from_slice(&seconds.to_be_bytes());
        cosig_bytes.extend_from_slice(&cosig.to_bytes());
        format!(
            "{body}\n— {name} {}\n— {name} {}\n",
            BASE64.encode(&note_bytes),
            BASE64.encode(&cosig_bytes),
            name = self.name,
        )
    }
}

/// A log's public key: what a verifier is configured with, as a C2SP vkey
/// `<name>+<key id>+<base64(0x01 ‖ Ed25519 public key)>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    /// The key ID of the Ed25519 (type 0x01) note signatures.
    id: u32,
    key: ed25519_dalek::VerifyingKey,
}

impl VerifierKey {
    /// Parses a vkey (surrounding whitespace is ignored). The key ID must be the one of the key.
    pub fn parse(vkey: &str) -> Result<Self, KeyError> {
        let bad = |why: &str| KeyError::MalformedVerifierKey(why.to_owned());
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected <name>+<key id>+<base64 key>"));
        };
        if !valid_key_name(name) {
            return Err(KeyError::InvalidName(name.to_owned()));
        }
        let id = parse_key_id(id).ok_or_else(|| bad("the key id is not 8 hex digits"))?;
        let bytes = BASE64
            .decode(key)
            .map_err(|_| bad("the key is not standard base64"))?;
        let public: &[u8; 32] = match bytes.split_first() {
            Some((&ALG_ED25519, rest)) => rest
                .try_into()
                .map_err(|_| bad("an Ed25519 key has 32 bytes after the algorithm byte"))?,
            Some((&ALG_COSIGNATURE_V1, _)) => {
                return Err(bad(
                    "this is a cosignature/v1 (type 0x04) key; give the log's Ed25519 (type 0x01) vkey",
                ));
            }
            _ => return Err(bad("not an Ed25519 key (algorithm byte 0x01)")),
        };
        let want = key_id(name, ALG_ED25519, public);
        if id != want {
            return Err(KeyError::MalformedVerifierKey(format!(
                "key id {id:08x} is not the id of this key ({want:08x})"
            )));
        }
        let key = ed25519_dalek::VerifyingKey::from_bytes(public)
            .map_err(|_| bad("not a valid Ed25519 public key"))?;
        Ok(Self {
            name: name.to_owned(),
            id,
            key,
        })
    }

    /// The vkey text (no newline).
    pub fn to_vkey(&self) -> String {
        let mut bytes = Vec::with_capacity(33);
        bytes.push(ALG_ED25519);
        bytes.extend_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.id, BASE64.encode(&bytes))
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID of the Ed25519 note signatures.
    pub fn key_id(&self) -> u32 {
        self.id
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The key ID of the timestamped `cosignature/v1` signatures (signature type 0x04).
    pub fn cosignature_key_id(&self) -> u32 {
        key_id(&self.name, ALG_COSIGNATURE_V1, self.key.as_bytes())
    }

    /// The same key as a `cosignature/v1` vkey (type 0x04), for tlog-cosignature verifiers
    /// that check the timestamp signature on its own.
    pub fn cosignature_vkey(&self) -> String {
        let mut bytes = Vec::with_capacity(33);
        bytes.push(ALG_COSIGNATURE_V1);
        bytes.extend_from_slice(self.key.as_bytes());
        format!(
            "{}+{:08x}+{}",
            self.name,
            self.cosignature_key_id(),
            BASE64.encode(&bytes)
        )
    }

    /// `name+id` of the note key, as messages name it.
    fn label(&self) -> String {
        format!("{}+{:08x}", self.name, self.id)
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_vkey())
    }
}

/// What a checkpoint that verified says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    /// `vigil/<tenant>`.
    pub origin: String,
    /// Number of events the checkpoint covers.
    pub size: u64,
    /// Merkle root of those events.
    pub root: Hash,
    /// When it was signed (from the cosignature; whole seconds).
    pub timestamp: DateTime<Utc>,
}

impl VerifiedCheckpoint {
    /// The tenant of the origin `vigil/<tenant>`.
    pub fn tenant(&self) -> &str {
        self.origin
            .strip_prefix(ORIGIN_PREFIX)
            .unwrap_or(&self.origin)
    }
}

/// Verifies Ed25519 (type 0x01) note signatures.
struct NoteVerifier<'a>(&'a VerifierKey);

impl Verifier for NoteVerifier<'_> {
    fn name(&self) -> &str {
        &self.0.name
    }
    fn key_id(&self) -> u32 {
        self.0.id
    }
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else {
            return false;
        };
        self.0.key.verify_strict(msg, &sig).is_ok()
    }
}

/// Verifies `cosignature/v1` (type 0x04) signatures: 8-byte timestamp ‖ Ed25519 signature.
struct CosignatureVerifier<'a>(&'a VerifierKey, u32);

impl Verifier for CosignatureVerifier<'_> {
    fn name(&self) -> &str {
        &self.0.name
    }
    fn key_id(&self) -> u32 {
        self.1
    }
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Some((timestamp, sig)) = split_cosignature(sig) else {
            return false;
        };
        let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else {
            return false;
        };
        self.0
            .key
            .verify_strict(&cosignature_message(timestamp, msg), &sig)
            .is_ok()
    }
}

/// Splits a cosignature into its timestamp and Ed25519 signature; `None` when the length is
/// wrong or the timestamp exceeds 2^63 - 1 (tlog-cosignature forbids it).
fn split_cosignature(sig: &[u8]) -> Option<(u64, &[u8])> {
    if sig.len() != 8 + 64 {
        return None;
    }
    let (timestamp, sig) = sig.split_first_chunk::<8>()?;
    let timestamp = u64::from_be_bytes(*timestamp);
    (timestamp <= i64::MAX as u64).then_some((timestamp, sig))
}

/// The trusted key's two verifiers, noting every other signer the note names so that a
/// refusal can say who did sign.
struct TrustedKey<'a> {
    note: NoteVerifier<'a>,
    cosignature: CosignatureVerifier<'a>,
    others: RefCell<Vec<String>>,
}

impl Verifiers for TrustedKey<'_> {
    fn verifier(&self, name: &str, id: u32) -> Result<&dyn Verifier, VerificationError> {
        if name == self.note.0.name {
            if id == self.note.0.id {
                return Ok(&self.note);
            }
            if id == self.cosignature.1 {
                return Ok(&self.cosignature);
            }
        }
        let label = format!("{name}+{id:08x}");
        let mut others = self.others.borrow_mut();
        if !others.contains(&label) {
            others.push(label);
        }
        Err(VerificationError::UnknownKey {
            name: name.to_owned(),
            id,
        })
    }
}

/// Verifies a checkpoint note: both signatures of `key` (other signatures are ignored, as C2SP
/// requires) and a vigil checkpoint body. Returns what it signs and when.
pub fn verify_checkpoint(
    note: &str,
    key: &VerifierKey,
) -> Result<VerifiedCheckpoint, CheckpointError> {
    // `Note::from_bytes` has one error, "malformed note": say what a note must look like.
    let parsed = Note::from_bytes(note.as_bytes()).map_err(|_| {
        CheckpointError::Malformed(
            "expected UTF-8 text without control characters, ending in a newline, then a blank \
             line and 1 to 100 signature lines \"— <key name> <base64>\""
                .to_owned(),
        )
    })?;
    let trusted = TrustedKey {
        note: NoteVerifier(key),
        cosignature: CosignatureVerifier(key, key.cosignature_key_id()),
        others: RefCell::new(Vec::new()),
    };
    let verified = match parsed.verify(&trusted) {
        Ok((verified, _)) => verified,
        Err(NoteError::UnverifiedNote) => {
            let others = trusted.others.into_inner();
            return Err(CheckpointError::UntrustedSigner {
                trusted: key.label(),
                found: if others.is_empty() {
                    "no one".to_owned()
                } else {
                    others.join(", ")
                },
            });
        }
        Err(NoteError::InvalidSignature { name, id }) => {
            return Err(CheckpointError::BadSignature {
                key: format!("{name}+{id:08x}"),
            });
        }
        Err(e) => return Err(CheckpointError::Malformed(e.to_string())),
    };
    if !verified.iter().any(|s| s.id() == key.id) {
        return Err(CheckpointError::MissingSignature {
            kind: "Ed25519 note signature",
            key: key.label(),
        });
    }
    let cosignature_id = key.cosignature_key_id();
    let Some((seconds, _)) = verified
        .iter()
        .find(|s| s.id() == cosignature_id)
        .and_then(|s| split_cosignature(s.signature()))
    else {
        return Err(CheckpointError::MissingSignature {
            kind: "timestamped cosignature/v1 signature",
            key: key.label(),
        });
    };
    let timestamp = i64::try_from(seconds)
        .ok()
        .and_then(|s| DateTime::from_timestamp(s, 0))
        .ok_or_else(|| {
            CheckpointError::NotVigilCheckpoint(format!(
                "the signed timestamp {seconds} is out of range"
            ))
        })?;
    let (origin, size, root) = parse_body(parsed.text())?;
    Ok(VerifiedCheckpoint {
        origin,
        size,
        root,
        timestamp,
    })
}

/// Parses `vigil/<tenant>\n<size>\n<base64 root>\n`.
fn parse_body(text: &[u8]) -> Result<(String, u64, Hash), CheckpointError> {
    let bad = |why: String| CheckpointError::NotVigilCheckpoint(why);
    let text = std::str::from_utf8(text).map_err(|_| bad("not UTF-8".to_owned()))?;
    let lines: Vec<&str> = text
        .strip_suffix('\n')
        .unwrap_or(text)
        .split('\n')
        .collect();
    let [origin, size, root] = lines[..] else {
        return Err(bad(format!(
            "expected 3 lines (origin, size, root hash), found {}",
            lines.len()
        )));
    };
    match origin.strip_prefix(ORIGIN_PREFIX) {
        Some(tenant) if !tenant.is_empty() => {}
        _ => {
            return Err(bad(format!(
                "the origin {origin:?} is not \"{ORIGIN_PREFIX}<tenant>\""
            )));
        }
    }
    let canonical =
        size == "0" || (!size.starts_with('0') && size.bytes().all(|b| b.is_ascii_digit()));
    let size_value = size
        .parse::<u64>()
        .ok()
        .filter(|_| canonical)
        .ok_or_else(|| {
            bad(format!(
                "the tree size {size:?} is not a decimal number without leading zeros"
            ))
        })?;
    let root_bytes = BASE64
        .decode(root)
        .map_err(|_| bad(format!("the root hash {root:?} is not standard base64")))?;
    let root_hash: Hash = root_bytes
        .try_into()
        .map_err(|v: Vec<u8>| bad(format!("the root hash has {} bytes, not 32", v.len())))?;
    Ok((origin.to_owned(), size_value, root_hash))
}

/// The JSON of `GET /v1/checkpoint`: the checkpoint's fields, for convenience, and the signed
/// note that is the evidence.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CheckpointJson {
    /// `vigil/<tenant>`.
    pub origin: String,
    /// Number of events covered.
    pub size: u64,
    /// Merkle root of those events, hex.
    #[serde(with = "crate::proof::hex_hash")]
    pub root_hash: Hash,
    /// When the checkpoint was signed (RFC 3339, whole seconds).
    pub timestamp: DateTime<Utc>,
    /// The C2SP signed note.
    pub note: String,
}

impl CheckpointJson {
    /// Verifies the note against `key` and that `origin`, `size`, `root_hash` and `timestamp`
    /// are exactly what the note signs.
    pub fn verify(&self, key: &VerifierKey) -> Result<VerifiedCheckpoint, CheckpointError> {
        let v = verify_checkpoint(&self.note, key)?;
        let mismatch = |field, stated: String, signed: String| {
            Err(CheckpointError::FieldMismatch {
                field,
                stated,
                signed,
            })
        };
        if self.origin != v.origin {
            return mismatch("origin", self.origin.clone(), v.origin);
        }
        if self.size != v.size {
            return mismatch("size", self.size.to_string(), v.size.to_string());
        }
        if self.root_hash != v.root {
            return mismatch(
                "root_hash",
                hex::encode(self.root_hash),
                hex::encode(v.root),
            );
        }
        if self.timestamp != v.timestamp {
            return mismatch(
                "timestamp",
                self.timestamp.to_rfc3339(),
                v.timestamp.to_rfc3339(),
            );
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    fn vectors() -> serde_json::Value {
        serde_json::from_str(include_str!("../testdata/note_vectors.json")).unwrap()
    }

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, 0).unwrap()
    }

    #[test]
    fn go_note_key_vector() {
        let v = vectors();
        let go = &v["go_sumdb_note"];
        let key = SigningKey::from_note_key(go["signer_key"].as_str().unwrap()).unwrap();
        assert_eq!(
            key.verifier().to_vkey(),
            go["verifier_key"].as_str().unwrap()
        );
        assert_eq!(key.key_id(), 0xc74f20a3);
        assert_eq!(key.name(), "PeterNeumann");
        assert_eq!(
            key.to_note_key().trim_end(),
            go["signer_key"].as_str().unwrap()
        );
        // Ed25519 is deterministic: our note signature of the Go example text is Go's.
        let text = go["text"].as_str().unwrap();
        let mut sig = key.key_id().to_be_bytes().to_vec();
        sig.extend_from_slice(&key.key.sign(text.as_bytes()).to_bytes());
        assert_eq!(
            format!("— {} {}\n", key.name(), BASE64.encode(sig)),
            go["signature_line"].as_str().unwrap()
        );
        let parsed = VerifierKey::parse(go["verifier_key"].as_str().unwrap()).unwrap();
        assert_eq!(parsed, key.verifier());
        assert_eq!(parsed.to_string(), go["verifier_key"].as_str().unwrap());
    }

    #[test]
    fn cosignature_key_id_and_timestamp_vectors() {
        let v = vectors();
        let c = &v["transparency_dev_formats"];
        // A native cosignature/v1 vkey: our type-0x04 key id of its key is the published one.
        let vkey = c["cosignature_vkey"].as_str().unwrap();
        let mut parts = vkey.splitn(3, '+');
        let (name, id, b64) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        let bytes = BASE64.decode(b64).unwrap();
        assert_eq!(bytes[0], ALG_COSIGNATURE_V1);
        let public: [u8; 32] = bytes[1..].try_into().unwrap();
        assert_eq!(
            format!("{:08x}", key_id(name, ALG_COSIGNATURE_V1, &public)),
            id
        );
        let as_ours = VerifierKey {
            name: name.to_owned(),
            id: key_id(name, ALG_ED25519, &public),
            key: ed25519_dalek::VerifyingKey::from_bytes(&public).unwrap(),
        };
        assert_eq!(as_ours.cosignature_vkey(), vkey);
        let err = VerifierKey::parse(vkey).unwrap_err().to_string();
        assert!(err.contains("cosignature/v1 (type 0x04) key"), "{err}");
        // A published cosignature's timestamp field.
        let sig = BASE64.decode(c["cosignature"].as_str().unwrap()).unwrap();
        let (timestamp, _) = split_cosignature(&sig[4..]).unwrap();
        assert_eq!(timestamp, c["cosignature_timestamp"].as_u64().unwrap());
    }

    #[test]
    fn round_trip_and_go_compatible_note_signature() {
        let key = SigningKey::generate("vigil.example.com").unwrap();
        let root = [7u8; 32];
        let note = key.sign_checkpoint(&origin("acme"), 42, &root, at(1_700_000_000));
        let body = format!("vigil/acme\n42\n{}\n", BASE64.encode(root));
        assert!(note.starts_with(&format!("{body}\n— vigil.example.com ")));
        assert_eq!(note.lines().count(), 6);
        let v = verify_checkpoint(&note, &key.verifier()).unwrap();
        assert_eq!(
            v,
            VerifiedCheckpoint {
                origin: "vigil/acme".into(),
                size: 42,
                root,
                timestamp: at(1_700_000_000),
            }
        );
        assert_eq!(v.tenant(), "acme");

        // The reference port of Go's note package accepts the 0x01 signature and ignores the
        // cosignature line.
        let go_verifier = signed_note::StandardVerifier::new(&key.verifier().to_vkey()).unwrap();
        let parsed = Note::from_bytes(note.as_bytes()).unwrap();
        let (ok, unknown) = parsed
            .verify(&signed_note::VerifierList::new(vec![Box::new(go_verifier)]))
            .unwrap();
        assert_eq!((ok.len(), unknown.len()), (1, 1));
        assert_eq!(unknown[0].id(), key.verifier().cosignature_key_id());
        // And `signed_note` signers parse our key file.
        let signer = signed_note::StandardSigner::new(key.to_note_key().trim_end()).unwrap();
        assert_eq!(signed_note::Signer::key_id(&signer), key.key_id());

        // Sub-second precision is dropped; times before 1970 are signed as 1970.
        let note = key.sign_checkpoint(
            "vigil/acme",
            0,
            &crate::tree::EMPTY_ROOT,
            at(5) + chrono::Duration::milliseconds(900),
        );
        assert_eq!(
            verify_checkpoint(&note, &key.verifier()).unwrap().timestamp,
            at(5)
        );
        let note = key.sign_checkpoint("vigil/acme", 0, &crate::tree::EMPTY_ROOT, at(-5));
        assert_eq!(
            verify_checkpoint(&note, &key.verifier()).unwrap().timestamp,
            at(0)
        );
    }

    #[test]
    fn another_key_is_named_in_the_refusal() {
        let ours = SigningKey::generate("vigil.example.com").unwrap();
        let attacker = SigningKey::generate("vigil.example.com").unwrap();
        let note = attacker.sign_checkpoint("vigil/acme", 3, &[1; 32], at(10));
        let err = verify_checkpoint(&note, &ours.verifier()).unwrap_err();
        assert!(matches!(err, CheckpointError::UntrustedSigner { .. }));
        assert_eq!(
            err.to_string(),
            format!(
                "checkpoint is not signed by the trusted key vigil.example.com+{:08x}; signed by vigil.example.com+{:08x}, vigil.example.com+{:08x}",
                ours.key_id(),
                attacker.key_id(),
                attacker.verifier().cosignature_key_id()
            )
        );
        // Adding the attacker's signature to a genuine note changes nothing.
        let genuine = ours.sign_checkpoint("vigil/acme", 3, &[1; 32], at(10));
        let extra = note.lines().nth(4).unwrap();
        let both = format!("{genuine}{extra}\n");
        assert!(verify_checkpoint(&both, &ours.verifier()).is_ok());
    }

    #[test]
    fn tampering_is_refused() {
        let key = SigningKey::generate("log").unwrap();
        let vk = key.verifier();
        let root = [9u8; 32];
        let note = key.sign_checkpoint("vigil/acme", 100, &root, at(1000));
        let b64 = BASE64.encode(root);
        let mut other_root = root;
        other_root[0] ^= 1;
        for (what, tampered) in [
            ("size", note.replacen("\n100\n", "\n99\n", 1)),
            ("root", note.replacen(&b64, &BASE64.encode(other_root), 1)),
            ("origin", note.replacen("vigil/acme", "vigil/acmf", 1)),
        ] {
            let err = verify_checkpoint(&tampered, &vk).unwrap_err();
            assert!(
                matches!(&err, CheckpointError::BadSignature { key } if *key == format!("log+{:08x}", vk.key_id())),
                "{what}: {err}"
            );
            assert!(err.to_string().contains("altered after signing"));
        }
        // The timestamp is signed: moving it breaks the cosignature.
        let lines: Vec<&str> = note.lines().collect();
        let cosig_b64 = lines[5].rsplit(' ').next().unwrap();
        let mut cosig = BASE64.decode(cosig_b64).unwrap();
        cosig[11] ^= 1;
        let moved = note.replace(cosig_b64, &BASE64.encode(&cosig));
        let err = verify_checkpoint(&moved, &vk).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "bad signature by log+{:08x}: the checkpoint was altered after signing or the signature is corrupt",
                vk.cosignature_key_id()
            )
        );
        // Either signature alone is not enough.
        let only_note = format!("{}\n", lines[..5].join("\n"));
        assert!(matches!(
            verify_checkpoint(&only_note, &vk),
            Err(CheckpointError::MissingSignature { kind, .. }) if kind.contains("cosignature")
        ));
        let only_cosig = format!("{}\n{}\n", lines[..4].join("\n"), lines[5]);
        assert!(matches!(
            verify_checkpoint(&only_cosig, &vk),
            Err(CheckpointError::MissingSignature { kind, .. }) if kind.contains("note signature")
        ));
        for garbage in [
            "",
            "no signatures\n",
            "vigil/acme\n1\n\n— log !!!\n",
            "a\u{1}b\n\n— log AAAA\n",
        ] {
            let err = verify_checkpoint(garbage, &vk).unwrap_err();
            assert!(
                matches!(err, CheckpointError::Malformed(_)),
                "{garbage:?}: {err}"
            );
            assert!(err.to_string().starts_with("malformed checkpoint note: "));
        }
    }

    #[test]
    fn body_must_be_a_vigil_checkpoint() {
        let key = SigningKey::generate("log").unwrap();
        let vk = key.verifier();
        let sign_text = |text: &str| {
            let signer = signed_note::StandardSigner::new(key.to_note_key().trim_end()).unwrap();
            let mut n = Note::new(text.as_bytes(), &[]).unwrap();
            n.add_sigs(&[&signer]).unwrap();
            let note = String::from_utf8(n.to_bytes()).unwrap();
            let cosig = key.key.sign(&cosignature_message(7, text.as_bytes()));
            let mut bytes = vk.cosignature_key_id().to_be_bytes().to_vec();
            bytes.extend_from_slice(&7u64.to_be_bytes());
            bytes.extend_from_slice(&cosig.to_bytes());
            format!("{note}— log {}\n", BASE64.encode(bytes))
        };
        let root = BASE64.encode([0u8; 32]);
        assert!(verify_checkpoint(&sign_text(&format!("vigil/a\n5\n{root}\n")), &vk).is_ok());
        for (text, why) in [
            (format!("example.com/log\n5\n{root}\n"), "origin"),
            (format!("vigil/\n5\n{root}\n"), "origin"),
            (format!("vigil/a\n05\n{root}\n"), "leading zeros"),
            (format!("vigil/a\n+5\n{root}\n"), "leading zeros"),
            (
                format!("vigil/a\n5\n{}\n", BASE64.encode([0u8; 31])),
                "31 bytes",
            ),
            (
                format!("vigil/a\n5\n{root}\nextension\n"),
                "expected 3 lines",
            ),
            ("vigil/a\n5\n".to_owned(), "expected 3 lines"),
        ] {
            let err = verify_checkpoint(&sign_text(&text), &vk).unwrap_err();
            assert!(
                matches!(err, CheckpointError::NotVigilCheckpoint(_)),
                "{text:?}: {err}"
            );
            assert!(err.to_string().contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn checkpoint_json_must_match_its_note() {
        let key = SigningKey::generate("log").unwrap();
        let vk = key.verifier();
        let note = key.sign_checkpoint("vigil/acme", 8, &[3; 32], at(1_700_000_000));
        let good = CheckpointJson {
            origin: "vigil/acme".into(),
            size: 8,
            root_hash: [3; 32],
            timestamp: at(1_700_000_000),
            note,
        };
        assert_eq!(good.verify(&vk).unwrap().size, 8);
        let json = serde_json::to_value(&good).unwrap();
        assert_eq!(json["root_hash"], "03".repeat(32));
        assert_eq!(json["timestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(
            serde_json::from_value::<CheckpointJson>(json).unwrap(),
            good
        );

        let cases = [
            (
                CheckpointJson {
                    size: 9,
                    ..good.clone()
                },
                "checkpoint field size is 9 but the signed note says 8",
            ),
            (
                CheckpointJson {
                    origin: "vigil/x".into(),
                    ..good.clone()
                },
                "field origin",
            ),
            (
                CheckpointJson {
                    root_hash: [4; 32],
                    ..good.clone()
                },
                "field root_hash",
            ),
            (
                CheckpointJson {
                    timestamp: at(1),
                    ..good.clone()
                },
                "field timestamp",
            ),
        ];
        for (json, msg) in cases {
            let err = json.verify(&vk).unwrap_err().to_string();
            assert!(err.contains(msg), "{err}");
        }
    }

    #[test]
    fn key_text_parsing() {
        let key = SigningKey::generate("vigil.example.com").unwrap();
        let text = key.to_note_key();
        assert!(text.ends_with('\n'));
        let again = SigningKey::from_note_key(&text).unwrap();
        assert_eq!(again.verifier(), key.verifier());
        let debug = format!("{key:?}");
        let secret = text.trim_end().rsplit('+').next().unwrap();
        assert!(
            !debug.contains(secret) && debug.contains("<redacted>"),
            "{debug}"
        );

        assert!(matches!(
            SigningKey::generate("bad name"),
            Err(KeyError::InvalidName(_))
        ));
        assert!(matches!(
            SigningKey::generate("a+b"),
            Err(KeyError::InvalidName(_))
        ));
        assert!(matches!(
            SigningKey::generate(""),
            Err(KeyError::InvalidName(_))
        ));
        let wrong_id = text.replacen(&format!("{:08x}", key.key_id()), "00000000", 1);
        let err = SigningKey::from_note_key(&wrong_id)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("key id 00000000 is not the id of this key"),
            "{err}"
        );
        assert!(!err.contains(secret));
        for bad in [
            "",
            "PRIVATE+KEY+x",
            "PUBLIC+KEY+a+00000000+AA==",
            "PRIVATE+KEY+a+zz+AA==",
            "PRIVATE+KEY+a+00000000+!!",
        ] {
            assert!(SigningKey::from_note_key(bad).is_err(), "{bad}");
        }
        let vkey = key.verifier().to_vkey();
        assert!(VerifierKey::parse(&format!("{vkey}\n")).is_ok());
        let wrong = vkey.replacen(&format!("{:08x}", key.key_id()), "00000000", 1);
        assert!(
            VerifierKey::parse(&wrong)
                .unwrap_err()
                .to_string()
                .contains("is not the id of this key")
        );
        assert!(VerifierKey::parse("name+00000000").is_err());
        assert!(VerifierKey::parse(&text).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn key_files() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        let (key, created) = SigningKey::load_or_create(&path, "vigil.example.com").unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), key.to_note_key());

        // Never overwritten, whatever name is asked for.
        let (again, created) = SigningKey::load_or_create(&path, "other.name").unwrap();
        assert!(!created);
        assert_eq!(again.verifier(), key.verifier());
        assert_eq!(SigningKey::load(&path).unwrap().verifier(), key.verifier());

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = SigningKey::load(&path).unwrap_err();
        assert!(matches!(err, KeyError::Permissions { mode: 0o640, .. }));
        assert_eq!(
            err.to_string(),
            format!(
                "signing key file {p} is accessible to group or others (mode 640); make it private with `chmod 600 {p}`",
                p = path.display()
            )
        );
        // A refused file is refused by load_or_create too, and left alone.
        assert!(matches!(
            SigningKey::load_or_create(&path, "x"),
            Err(KeyError::Permissions { .. })
        ));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), key.to_note_key());

        let missing_dir = dir.path().join("nope").join("signing.key");
        let err = SigningKey::load_or_create(&missing_dir, "x").unwrap_err();
        assert!(
            matches!(
                err,
                KeyError::Io {
                    action: "creating",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("nope/signing.key"));

        // A corrupt file is reported, not replaced.
        let corrupt = dir.path().join("corrupt.key");
        std::fs::write(&corrupt, "PRIVATE+KEY+").unwrap();
        std::fs::set_permissions(&corrupt, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            SigningKey::load_or_create(&corrupt, "x"),
            Err(KeyError::MalformedPrivateKey(_) | KeyError::InvalidName(_))
        ));
        assert_eq!(std::fs::read_to_string(&corrupt).unwrap(), "PRIVATE+KEY+");
    }
}
