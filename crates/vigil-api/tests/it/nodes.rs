//! Several API nodes over one store (one PostgreSQL database in production): what one node
//! changes in the shared metadata (keys, schemas) comes into force on the others.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::json;
use vigil_api::ApiConfig;
use vigil_auth::AuthConfig;

use crate::support::{app_over, eventually, spawn_app_with};

/// Two vigil processes sharing one store (a PostgreSQL database in production): keys and
/// schemas created, replaced or revoked through one are in force on the other once it has
/// reloaded them, every refresh interval, without a restart.
#[tokio::test]
async fn nodes_sharing_a_store_apply_each_others_keys_and_schemas() {
    let refresh = Duration::from_millis(20);
    let config = ApiConfig {
        schema_refresh_interval: refresh,
        ..ApiConfig::default()
    };
    let auth_config = AuthConfig {
        refresh_interval: refresh,
        ..AuthConfig::default()
    };
    let a = spawn_app_with(config.clone(), auth_config.clone()).await;
    let b = app_over(Arc::clone(&a.store), config, auth_config).await;
    assert!(b.root.is_empty(), "the first node created the root key");

    let key = a
        .key(
            "acme",
            "w",
            &["schemas:write", "events:write", "events:read"],
        )
        .await;
    let schema = json!({"type": "object", "required": ["actor"]});
    assert_eq!(
        a.put_schema(&key, "login.failed", &schema).await.status,
        StatusCode::CREATED
    );
    let unfit = json!({"type": "login.failed"});
    eventually(
        async || b.post_events(&key, &unfit).await,
        |r| r.status == StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await
    .assert(422, "schema_violation");
    let r = b
        .post_events(&key, &json!({"type": "login.failed", "actor": {"id": "u"}}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

    // The other way round: a schema registered on `b` is enforced on `a`.
    assert_eq!(
        b.put_schema(&key, "account.created", &schema).await.status,
        StatusCode::CREATED
    );
    let unfit = json!({"type": "account.created"});
    eventually(
        async || a.post_events(&key, &unfit).await,
        |r| r.status == StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await
    .assert(422, "schema_violation");
    let r = a.get(&key, "/v1/schemas").await;
    assert_eq!(r.json()["schemas"].as_array().unwrap().len(), 2);

    let id = key.split('_').nth(1).unwrap();
    let r = a
        .call(
            Method::DELETE,
            &format!("/v1/keys/{id}"),
            Some(&a.root),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    eventually(
        async || b.get(&key, "/v1/schemas").await,
        |r| r.status == StatusCode::UNAUTHORIZED,
    )
    .await
    .assert(401, "unauthenticated");
}
