//! Signed checkpoints and proofs: `501` without a signing key; with one, inclusion and
//! consistency proofs that verify against the published key, per tenant.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{Value, json};
use vigil_api::ApiConfig;
use vigil_auth::AuthConfig;
use vigil_store::Store;
use vigil_store_embedded::{EmbeddedConfig, EmbeddedStore};

use crate::support::{app_signing, spawn_app};

#[tokio::test]
async fn without_a_signing_key_integrity_endpoints_are_501() {
    let app = spawn_app().await;
    let key = app.rw().await;
    app.post_events(&key, &json!({"id": "e-1", "type": "a"}))
        .await;
    for uri in [
        "/v1/checkpoint",
        "/v1/checkpoint/key",
        "/v1/events/e-1?proof=true",
    ] {
        app.get(&key, uri).await.assert(501, "not_implemented");
    }
}

#[tokio::test]
async fn proofs_verify_against_the_signed_checkpoint() {
    use vigil_integrity::checkpoint::{CheckpointJson, SigningKey};
    use vigil_integrity::proof::{ConsistencyProof, InclusionProof};

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap());
    let signing = SigningKey::generate("test-log").unwrap();
    let verifier = signing.verifier();
    let mut app = app_signing(
        store,
        ApiConfig::default(),
        AuthConfig::default(),
        Some(signing),
    )
    .await;
    app._dir = Some(dir);
    let key = app.rw().await;
    let events: Vec<Value> = (0..5)
        .map(|i| json!({"id": format!("e-{i}"), "type": "a", "n": i}))
        .collect();
    app.post_events(&key, &Value::Array(events)).await;

    // The public key needs no credential.
    let published = app.get("", "/v1/checkpoint/key").await;
    assert_eq!(published.status, StatusCode::OK);
    assert_eq!(published.json()["vkey"], verifier.to_vkey());

    let first: CheckpointJson =
        serde_json::from_value(app.get(&key, "/v1/checkpoint").await.json()).unwrap();
    assert_eq!((first.origin.as_str(), first.size), ("vigil/acme", 5));
    let signed = first.verify(&verifier).unwrap();
    assert_eq!(signed.root, first.root_hash);

    let mut event = app.get(&key, "/v1/events/e-3?proof=true").await.json();
    let proof: InclusionProof =
        serde_json::from_value(event.as_object_mut().unwrap().remove("proof").unwrap()).unwrap();
    event.as_object_mut().unwrap().remove("hash");
    let leaf = vigil_integrity::tree::leaf_hash(&vigil_event::to_canonical_bytes(&event));
    assert_eq!(proof.leaf_index, 3);
    proof.verify_checkpointed(&leaf, &verifier).unwrap();

    // More events: a proof of a new one comes with a new checkpoint, consistent with the old.
    app.post_events(&key, &json!({"id": "e-9", "type": "b"}))
        .await;
    let resp = app.get(&key, "/v1/events/e-9?proof=true").await;
    let proof: InclusionProof = serde_json::from_value(resp.json()["proof"].clone()).unwrap();
    assert_eq!(proof.tree_size, 6);
    let newer = vigil_integrity::checkpoint::verify_checkpoint(
        proof.checkpoint.as_deref().unwrap(),
        &verifier,
    )
    .unwrap();
    let consistency: ConsistencyProof = serde_json::from_value(
        app.get(&key, "/v1/proof/consistency?from=5&to=6")
            .await
            .json(),
    )
    .unwrap();
    consistency.verify(&first.root_hash, &newer.root).unwrap();
    // The old checkpoint stays available, and proofs into it too.
    let kept = app.get(&key, "/v1/checkpoint?size=5").await.json();
    assert_eq!(kept["root_hash"], hex::encode(first.root_hash));
    let old = app
        .get(&key, "/v1/events/e-3?proof=true&tree_size=5")
        .await
        .json();
    assert_eq!(old["proof"]["tree_size"], 5);
    app.get(&key, "/v1/events/e-9?proof=true&tree_size=5")
        .await
        .assert(400, "invalid_parameter");
    app.get(&key, "/v1/checkpoint?size=4")
        .await
        .assert(404, "not_found");
    for bad in [
        "from=0",
        "from=7",
        "from=3&to=2",
        "from=x",
        "to=3",
        "from=1&bogus=2",
    ] {
        app.get(&key, &format!("/v1/proof/consistency?{bad}"))
            .await
            .assert(400, "invalid_parameter");
    }
    // Another tenant has its own log; acme's events are not found through it.
    let other = app
        .key("globex", "ops", &["events:read", "events:write"])
        .await;
    app.get(&other, "/v1/checkpoint")
        .await
        .assert(404, "not_found");
    app.get(&other, "/v1/events/e-3?proof=true")
        .await
        .assert(404, "not_found");
}
