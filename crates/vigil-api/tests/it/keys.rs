//! `/v1/keys`: an admin creates, lists and revokes the API keys of its own tenant.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::support::spawn_app;

#[tokio::test]
async fn key_admin_flow() {
    let app = spawn_app().await;
    let admin = app.key("acme", "acme-admin", &["admin"]).await;

    let r = app
        .post_json(
            &admin,
            "/v1/keys",
            &json!({"name": "ingest", "tenant": "acme", "scopes": ["events:write"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let created = r.json();
    let (id, key) = (
        created["id"].as_str().unwrap().to_owned(),
        created["key"].as_str().unwrap().to_owned(),
    );
    assert!(key.starts_with("vgl_"));
    assert_eq!(created["tenant"], "acme");
    assert_eq!(created["scopes"], json!(["events:write"]));
    assert_eq!(
        app.post_events(&key, &json!({"type": "a"})).await.status,
        StatusCode::CREATED
    );

    let r = app.get(&admin, "/v1/keys").await;
    assert_eq!(r.status, StatusCode::OK);
    let keys = r.json()["keys"].as_array().unwrap().clone();
    assert!(keys.iter().any(|k| k["id"] == id.as_str()));
    assert!(
        keys.iter()
            .all(|k| k.get("key").is_none() && k["tenant"] == "acme"),
        "{keys:?}"
    );
    assert!(!r.text().contains(&key), "listings never show a secret");

    // An admin of acme administers acme only.
    app.post_json(
        &admin,
        "/v1/keys",
        &json!({"name": "x", "tenant": "globex", "scopes": ["events:read"]}),
    )
    .await
    .assert(403, "forbidden");
    app.post_json(
        &admin,
        "/v1/keys",
        &json!({"name": "x", "tenant": "acme", "scopes": ["events:nope"]}),
    )
    .await
    .assert(400, "invalid_body");
    app.call(Method::POST, "/v1/keys", Some(&admin), &[], "{\"name\": ")
        .await
        .assert(400, "invalid_json");

    let r = app
        .call(
            Method::DELETE,
            &format!("/v1/keys/{id}"),
            Some(&admin),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    app.post_events(&key, &json!({"type": "a"}))
        .await
        .assert(401, "unauthenticated");
    app.call(
        Method::DELETE,
        &format!("/v1/keys/{id}"),
        Some(&admin),
        &[],
        Body::empty(),
    )
    .await
    .assert(404, "not_found");
}
