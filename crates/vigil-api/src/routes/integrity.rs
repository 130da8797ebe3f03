//! Tamper evidence: signed checkpoints, the public key, inclusion and consistency proofs.
//!
//! Formats are those of `vigil_integrity` and `docs/integrity.md`: anyone holding the public
//! key can check them without vigil's code.

use axum::extract::State;
use axum::http::Uri;
use base64::Engine;
use serde::Serialize;
use utoipa::ToSchema;
use vigil_auth::Scope;
use vigil_event::TenantId;
use vigil_ingest::CheckpointSigner;
use vigil_ingest::checkpoint_signer::{checkpoint_json, tree_error};
use vigil_integrity::proof::{self, ConsistencyProof, InclusionProof};
use vigil_query::QueryError;
use vigil_store::StoredCheckpoint;

use crate::AppState;
use crate::authenticate::Authenticated;
use crate::error::{ApiError, ErrorBody};
use crate::extract::query_pairs;

/// The log's public key (also printed by `vigil keys signing`).
#[derive(Debug, Serialize, ToSchema)]
pub struct SigningKeyDoc {
    /// Key name, the first word of every signature line.
    #[schema(example = "vigil")]
    pub name: String,
    /// The C2SP key id of the Ed25519 note signature, 8 hex digits.
    #[schema(example = "6ce2b7e4")]
    pub key_id: String,
    #[schema(example = "ed25519")]
    pub algorithm: &'static str,
    /// The raw 32-byte Ed25519 public key, base64.
    pub public_key: String,
    /// The C2SP verifier key `<name>+<key id>+<base64(0x01 ‖ key)>`: what `vigil verify --key`
    /// and Go's `note.NewVerifier` take.
    pub vkey: String,
    /// The same key as a `cosignature/v1` verifier (type 0x04), which signs the timestamp.
    pub cosignature_vkey: String,
}

/// Documents `GET /v1/checkpoint`'s body.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CheckpointDoc {
    /// `vigil/<tenant>`.
    origin: String,
    size: u64,
    /// Merkle root, hex.
    root_hash: String,
    /// RFC 3339, whole seconds; signed in the note's cosignature line.
    timestamp: String,
    /// The C2SP signed note.
    note: String,
}

/// Documents `GET /v1/proof/consistency`'s body.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ConsistencyDoc {
    from: u64,
    to: u64,
    /// RFC 9162 consistency proof, hex hashes.
    path: Vec<String>,
}

fn signer(state: &AppState) -> Result<&CheckpointSigner, ApiError> {
    state.checkpoint_signer().ok_or_else(|| {
        ApiError::NotImplemented(
            "this server has no signing key: it serves no checkpoints".to_owned(),
        )
    })
}

fn invalid(name: &str, message: impl Into<String>) -> ApiError {
    QueryError::InvalidParameter {
        name: name.to_owned(),
        message: message.into(),
    }
    .into()
}

/// Reads the named non-negative integer parameters of `uri`; any other parameter is refused.
fn sizes<const N: usize>(uri: &Uri, allowed: [&str; N]) -> Result<[Option<u64>; N], ApiError> {
    let mut out = [None; N];
    for (name, value) in query_pairs(uri)? {
        let Some(i) = allowed.iter().position(|a| *a == name) else {
            return Err(invalid(
                &name,
                format!(
                    "unknown parameter; this endpoint takes {}",
                    allowed.join(", ")
                ),
            ));
        };
        let n = value
            .parse::<u64>()
            .map_err(|_| invalid(&name, "must be a non-negative integer"))?;
        if let Some(slot) = out.get_mut(i) {
            *slot = Some(n);
        }
    }
    Ok(out)
}

/// The checkpoint `size` of `tenant` (404 when none was made at that size), or a checkpoint
/// covering every event stored now.
pub(crate) async fn checkpoint_for(
    state: &AppState,
    tenant: &TenantId,
    size: Option<u64>,
) -> Result<StoredCheckpoint, ApiError> {
    match size {
        Some(size) => state
            .store()
            .checkpoint(tenant, Some(size))
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no checkpoint of size {size}"))),
        None => signer(state)?.checkpoint_now(tenant).await?.ok_or_else(|| {
            ApiError::NotFound("the log has no events yet: nothing to checkpoint".to_owned())
        }),
    }
}

/// The signed checkpoint covering every event of the caller's tenant stored before the request
/// (the newest kept one, or a new one), or the kept checkpoint of `size`.
#[utoipa::path(
    get, path = "/v1/checkpoint", operation_id = "get_checkpoint", tag = "integrity",
    params(("size" = Option<u64>, Query, description = "A kept checkpoint of this tree size instead of the newest")),
    responses(
        (status = 200, description = "The checkpoint", body = CheckpointDoc),
        (status = 403, description = "Missing scope events:read", body = ErrorBody),
        (status = 404, description = "No events yet, or no checkpoint of that size", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn checkpoint(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    uri: Uri,
) -> Result<axum::Json<vigil_integrity::checkpoint::CheckpointJson>, ApiError> {
    principal.require(Scope::EventsRead)?;
    let [size] = sizes(&uri, ["size"])?;
    let cp = checkpoint_for(&state, &principal.tenant, size).await?;
    Ok(axum::Json(checkpoint_json(&principal.tenant, &cp)))
}

/// The public key checkpoints are signed with. No credential needed: verifiers and witnesses
/// fetch it.
#[utoipa::path(
    get, path = "/v1/checkpoint/key", operation_id = "get_signing_key", tag = "integrity",
    responses(
        (status = 200, description = "The key", body = SigningKeyDoc),
        (status = 501, description = "The server has no signing key", body = ErrorBody),
    ),
)]
pub(crate) async fn signing_key(
    State(state): State<AppState>,
) -> Result<axum::Json<SigningKeyDoc>, ApiError> {
    let key = signer(&state)?.verifier();
    Ok(axum::Json(SigningKeyDoc {
        name: key.name().to_owned(),
        key_id: format!("{:08x}", key.key_id()),
        algorithm: "ed25519",
        public_key: base64::engine::general_purpose::STANDARD.encode(key.public_key()),
        vkey: key.to_vkey(),
        cosignature_vkey: key.cosignature_vkey(),
    }))
}

/// Proof that the tree of `to` events extends the tree of `from` events (RFC 9162): the log
/// only grew between two checkpoints.
#[utoipa::path(
    get, path = "/v1/proof/consistency", operation_id = "prove_consistency", tag = "integrity",
    params(
        ("from" = u64, Query, description = "Size of the older tree (≥ 1)"),
        ("to" = Option<u64>, Query, description = "Size of the newer tree; default: the newest checkpoint's, made now if the log grew"),
    ),
    responses(
        (status = 200, description = "The proof", body = ConsistencyDoc),
        (status = 400, description = "invalid_parameter: sizes out of range", body = ErrorBody),
        (status = 403, description = "Missing scope events:read", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn consistency(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    uri: Uri,
) -> Result<axum::Json<ConsistencyProof>, ApiError> {
    principal.require(Scope::EventsRead)?;
    let [from, to] = sizes(&uri, ["from", "to"])?;
    let from = from.ok_or_else(|| invalid("from", "is required"))?;
    let tenant = &principal.tenant;
    let to = match to {
        Some(to) => to,
        None => checkpoint_for(&state, tenant, None).await?.size,
    };
    let size = state.store().tree_size(tenant).await?;
    if from == 0 || from > to || to > size {
        let name = if to > size { "to" } else { "from" };
        return Err(invalid(
            name,
            format!("need 1 <= from <= to <= {size} (the log's size); got from={from}, to={to}"),
        ));
    }
    let store = state.store();
    let proof = proof::prove_consistency(from, to, async |idx: Vec<u64>| {
        store.read_hashes(tenant, &idx).await
    })
    .await
    .map_err(tree_error)?;
    Ok(axum::Json(proof))
}

/// The inclusion proof of the event at `seq` in the checkpoint of `tree_size` (or in a
/// checkpoint covering it, made now if needed), with that checkpoint's signed note attached.
pub(crate) async fn inclusion(
    state: &AppState,
    tenant: &TenantId,
    seq: u64,
    tree_size: Option<u64>,
) -> Result<InclusionProof, ApiError> {
    let cp = match tree_size {
        Some(_) => {
            let cp = checkpoint_for(state, tenant, tree_size).await?;
            if cp.size < seq {
                return Err(invalid(
                    "tree_size",
                    format!(
                        "the event has seq {seq}, beyond the checkpoint of size {}",
                        cp.size
                    ),
                ));
            }
            cp
        }
        None => signer(state)?
            .checkpoint_covering(tenant, seq)
            .await?
            .ok_or_else(|| {
                // Only while a writer catches up with events an older node stored.
                ApiError::Store(vigil_store::StoreError::Unavailable(format!(
                    "the Merkle tree does not hold seq {seq} yet; retry shortly"
                )))
            })?,
    };
    let store = state.store();
    let mut proof = proof::prove_inclusion(seq - 1, cp.size, async |idx: Vec<u64>| {
        store.read_hashes(tenant, &idx).await
    })
    .await
    .map_err(tree_error)?;
    if proof.root_hash != cp.root {
        return Err(ApiError::Store(vigil_store::StoreError::internal(format!(
            "the stored tree of size {} does not reproduce its checkpoint's root",
            cp.size
        ))));
    }
    proof.checkpoint = Some(cp.note);
    Ok(proof)
}
