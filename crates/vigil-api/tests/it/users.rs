//! `/v1/users` and password login: users log in at `/v1/auth/token` for tokens that stop
//! working when the user is deleted.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::support::spawn_app;

#[tokio::test]
async fn users_log_in_for_tokens_that_die_with_them() {
    let app = spawn_app().await;
    let admin = app.key("acme", "acme-admin", &["admin"]).await;
    let new_user = json!({"username": "alice", "password": "correct horse battery", "tenant": "acme", "scopes": ["events:read"]});
    let r = app.post_json(&admin, "/v1/users", &new_user).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["username"], "alice");
    assert!(
        !r.text().contains("correct horse"),
        "the password is never returned"
    );
    app.post_json(&admin, "/v1/users", &new_user)
        .await
        .assert(409, "conflict");

    let users = app.get(&admin, "/v1/users").await.json();
    assert!(
        users["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["username"] == "alice")
    );

    let login = json!({"username": "alice", "password": "correct horse battery"});
    let r = app
        .call(Method::POST, "/v1/auth/token", None, &[], login.to_string())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let token = r.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(r.json()["token_type"], "Bearer");
    assert_eq!(app.get(&token, "/v1/events").await.status, StatusCode::OK);
    app.post_events(&token, &json!({"type": "a"}))
        .await
        .assert(403, "forbidden");

    let wrong = json!({"username": "alice", "password": "wrong password!!"});
    let r = app
        .call(Method::POST, "/v1/auth/token", None, &[], wrong.to_string())
        .await;
    r.assert(401, "unauthenticated");
    assert!(!r.text().contains("wrong password"));

    let r = app
        .call(
            Method::DELETE,
            "/v1/users/alice",
            Some(&admin),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    app.get(&token, "/v1/events")
        .await
        .assert(401, "unauthenticated");
}
