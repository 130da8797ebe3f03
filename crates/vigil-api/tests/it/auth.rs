//! Authentication and authorisation on every route: missing or bad credentials (`401` with a
//! challenge), scopes per route, tenants that never see each other, API keys exchanged for
//! short-lived tokens at `/v1/auth/token`, and per-credential rate limits.

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use serde_json::json;
use vigil_api::ApiConfig;
use vigil_auth::{AuthConfig, RateLimit};

use crate::support::{spawn_app, spawn_app_with};

#[tokio::test]
async fn missing_or_bad_credentials_are_401_with_a_challenge() {
    let app = spawn_app().await;
    for key in [
        None,
        Some("vgl_aaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"),
        Some("not-a-jwt"),
    ] {
        let r = app
            .call(Method::GET, "/v1/events", key, &[], Body::empty())
            .await;
        r.assert(401, "unauthenticated");
        assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
        if let Some(k) = key {
            assert!(!r.text().contains(k), "credentials are never echoed");
        }
    }
    let r = app
        .call(
            Method::GET,
            "/v1/events",
            None,
            &[("authorization", "Basic dXNlcjpwdw==")],
            Body::empty(),
        )
        .await;
    r.assert(401, "unauthenticated");
}

#[tokio::test]
async fn scopes_are_enforced_per_route() {
    let app = spawn_app().await;
    let reader = app.key("acme", "reader", &["events:read"]).await;
    let writer = app.key("acme", "writer", &["events:write"]).await;
    app.post_events(&reader, &json!({"type": "a"}))
        .await
        .assert(403, "forbidden");
    app.get(&writer, "/v1/events")
        .await
        .assert(403, "forbidden");
    app.get(&writer, "/v1/events/count")
        .await
        .assert(403, "forbidden");
    app.get(&writer, "/v1/events/some-id")
        .await
        .assert(403, "forbidden");
    app.get(&writer, "/v1/keys").await.assert(403, "forbidden");
    app.post_json(&writer, "/v1/users", &json!({"username": "bob", "password": "correct horse battery", "tenant": "acme", "scopes": []}))
        .await
        .assert(403, "forbidden");
}

#[tokio::test]
async fn tenants_never_see_each_other() {
    let app = spawn_app().await;
    let a = app
        .key("tenant-a", "a", &["events:write", "events:read"])
        .await;
    let b = app
        .key("tenant-b", "b", &["events:write", "events:read"])
        .await;
    let r = app
        .post_events(
            &a,
            &json!({"id": "shared-id", "type": "secret.thing", "details": {"x": 1}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);

    let page = app.get(&b, "/v1/events").await.json();
    assert_eq!(page["events"], json!([]));
    app.get(&b, "/v1/events/shared-id")
        .await
        .assert(404, "not_found");
    assert_eq!(app.count(&b, "?type=secret.thing").await, 0);
    // `tenant` in the query does not widen the search: the tenant comes from the credential.
    assert_eq!(
        app.get(&b, "/v1/events?tenant=tenant-a").await.json()["events"],
        json!([])
    );
    let r = app
        .call(
            Method::GET,
            "/v1/events",
            Some(&b),
            &[("accept", "application/x-ndjson")],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty(), "{}", r.text());

    // The same client id in another tenant is another event, not a conflict.
    let r = app
        .post_events(&b, &json!({"id": "shared-id", "type": "other"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["events"][0]["seq"], 1);
    assert_eq!(
        app.get(&a, "/v1/events/shared-id").await.json()["type"],
        "secret.thing"
    );
}

#[tokio::test]
async fn api_keys_are_exchanged_for_tokens_but_tokens_are_not() {
    let app = spawn_app().await;
    let key = app.rw().await;
    let r = app
        .call(
            Method::POST,
            "/v1/auth/token",
            Some(&key),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let token = r.json()["token"].as_str().unwrap().to_owned();
    assert!(
        r.json()["expires_in"]
            .as_u64()
            .is_some_and(|s| s > 0 && s <= 900)
    );
    let r = app.post_events(&token, &json!({"type": "via.jwt"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

    app.call(
        Method::POST,
        "/v1/auth/token",
        Some(&token),
        &[],
        Body::empty(),
    )
    .await
    .assert(401, "unauthenticated");
    app.call(Method::POST, "/v1/auth/token", None, &[], Body::empty())
        .await
        .assert(401, "unauthenticated");
    app.call(
        Method::POST,
        "/v1/auth/token",
        None,
        &[],
        "{\"username\": 1}",
    )
    .await
    .assert(400, "invalid_body");
}

#[tokio::test]
async fn rate_limited_credentials_get_429_with_retry_after() {
    let auth = AuthConfig {
        rate_limit: Some(RateLimit {
            per_second: 0.01,
            burst: 2,
        }),
        ..AuthConfig::default()
    };
    let app = spawn_app_with(ApiConfig::default(), auth).await;
    let key = app.key("acme", "r", &["events:read"]).await;
    assert_eq!(app.get(&key, "/v1/events").await.status, StatusCode::OK);
    assert_eq!(app.get(&key, "/v1/events").await.status, StatusCode::OK);
    let r = app.get(&key, "/v1/events").await;
    r.assert(429, "rate_limited");
    let retry: u64 = r.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
}
