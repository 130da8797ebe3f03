//! `/v1/schemas`: registering, replacing and deleting a tenant's JSON Schemas, ingest refusing
//! events that violate them, their bounds in number and size, and their survival of a restart
//! and of a dropped request.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;
use vigil_api::ApiConfig;
use vigil_auth::AuthConfig;

use crate::support::{open_app, spawn_app, spawn_app_over_test_store, spawn_app_with};

#[tokio::test]
async fn schema_violations_are_422_with_paths_and_per_tenant() {
    let app = spawn_app().await;
    let acme = app
        .key(
            "acme",
            "acme-admin",
            &["events:write", "events:read", "schemas:write"],
        )
        .await;
    let other = app
        .key("other", "other-writer", &["events:write", "events:read"])
        .await;
    let schema = json!({
        "type": "object",
        "required": ["details"],
        "properties": {"details": {
            "type": "object",
            "required": ["amount"],
            "properties": {"amount": {"type": "number", "minimum": 0}}
        }}
    });
    assert_eq!(
        app.put_schema(&acme, "billing.charged", &schema)
            .await
            .status,
        StatusCode::CREATED
    );

    let r = app
        .post_events(
            &acme,
            &json!([
                {"type": "billing.charged", "details": {"amount": 5}},
                {"type": "billing.charged", "details": {"amount": "five"}},
                {"type": "billing.charged"},
            ]),
        )
        .await;
    r.assert(422, "schema_violation");
    let details = r.json()["error"]["details"].clone();
    assert_eq!(details[0]["index"], 1);
    assert_eq!(details[0]["path"], "details.amount");
    assert_eq!(details[1]["index"], 2);
    assert_eq!(details[1]["path"], "");
    assert!(
        !details.to_string().contains("five"),
        "values are not echoed: {details}"
    );

    // Aliases are resolved before validation: `event_details` is `details`.
    let r = app
        .post_events(
            &acme,
            &json!({"event_type": "billing.charged", "event_details": {"amount": 1}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

    // Another tenant's events of the same type are not checked against acme's schema.
    let r = app
        .post_events(
            &other,
            &json!({"type": "billing.charged", "details": {"amount": "five"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    app.get(&other, "/v1/schemas/billing.charged")
        .await
        .assert(404, "not_found");
}

#[tokio::test]
async fn schema_crud() {
    let app = spawn_app().await;
    let writer = app.key("acme", "schema-admin", &["schemas:write"]).await;
    let reader = app.key("acme", "reader", &["events:read"]).await;
    let producer = app.key("acme", "producer", &["events:write"]).await;
    let s1 = json!({"type": "object", "required": ["actor"]});
    let s2 = json!({"type": "object"});

    let r = app.put_schema(&writer, "login.failed", &s1).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json(), s1);
    assert_eq!(
        app.put_schema(&writer, "login.failed", &s2).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.put_schema(&writer, "account.created", &s1).await.status,
        StatusCode::CREATED
    );

    let r = app.get(&reader, "/v1/schemas/login.failed").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), s2);
    let r = app.get(&writer, "/v1/schemas").await;
    assert_eq!(
        r.json(),
        json!({"schemas": [{"type": "account.created", "schema": s1}, {"type": "login.failed", "schema": s2}]})
    );

    app.put_schema(&reader, "x", &s1)
        .await
        .assert(403, "forbidden");
    app.get(&producer, "/v1/schemas")
        .await
        .assert(403, "forbidden");
    app.put_schema(&writer, "x", &json!({"type": "nonsense"}))
        .await
        .assert(422, "invalid_schema");
    app.put_schema(&writer, "bad%20type", &s1)
        .await
        .assert(400, "invalid_type");
    app.call(Method::PUT, "/v1/schemas/x", Some(&writer), &[], "{nope")
        .await
        .assert(400, "invalid_json");

    let r = app
        .call(
            Method::DELETE,
            "/v1/schemas/login.failed",
            Some(&writer),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    app.get(&reader, "/v1/schemas/login.failed")
        .await
        .assert(404, "not_found");
    app.call(
        Method::DELETE,
        "/v1/schemas/login.failed",
        Some(&writer),
        &[],
        Body::empty(),
    )
    .await
    .assert(404, "not_found");
}

#[tokio::test]
async fn schemas_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let schema = json!({"type": "object", "required": ["actor"]});
    let key = {
        let app = open_app(dir.path()).await;
        let key = app
            .key("acme", "w", &["schemas:write", "events:write"])
            .await;
        assert_eq!(
            app.put_schema(&key, "login.failed", &schema).await.status,
            StatusCode::CREATED
        );
        app.store.shutdown().await.unwrap();
        key
    };
    let app = open_app(dir.path()).await;
    app.post_events(&key, &json!({"type": "login.failed"}))
        .await
        .assert(422, "schema_violation");
    let r = app
        .post_events(&key, &json!({"type": "login.failed", "actor": {"id": "u"}}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
}

/// Regression: a tenant could register any number of schemas of any size, each compiled and
/// kept in memory and rewritten with every change. Both are bounded now, with their own codes.
#[tokio::test]
async fn schemas_are_bounded_in_number_and_size() {
    let config = ApiConfig {
        max_schemas_per_tenant: 2,
        max_schema_bytes: 1024,
        ..ApiConfig::default()
    };
    let app = spawn_app_with(config, AuthConfig::default()).await;
    let key = app
        .key("acme", "schemas", &["schemas:write", "events:read"])
        .await;
    let other = app.key("globex", "schemas", &["schemas:write"]).await;
    assert_eq!(
        app.put_schema(&key, "a", &json!(true)).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        app.put_schema(&key, "b", &json!(true)).await.status,
        StatusCode::CREATED
    );
    let r = app.put_schema(&key, "c", &json!(true)).await;
    r.assert(422, "too_many_schemas");
    assert_eq!(r.json()["error"]["details"]["limit"], 2);
    // Replacing one is not one more; another tenant has its own count.
    assert_eq!(
        app.put_schema(&key, "a", &json!({})).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.put_schema(&other, "c", &json!(true)).await.status,
        StatusCode::CREATED
    );
    let r = app
        .call(
            Method::DELETE,
            "/v1/schemas/b",
            Some(&key),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.put_schema(&key, "c", &json!(true)).await.status,
        StatusCode::CREATED
    );

    let big = json!({"description": "x".repeat(2_000)});
    let r = app.put_schema(&key, "a", &big).await;
    r.assert(413, "schema_too_large");
    assert_eq!(r.json()["error"]["details"]["limit"], 1024);
    assert_eq!(app.get(&key, "/v1/schemas/a").await.json(), json!({}));
}

/// Regression: a schema PUT saved the document, then swapped the in-memory set, in the request's
/// own task. A request dropped between the two (client gone, timeout) left the schema on disk
/// but not enforced until the next restart. The save and the swap now run in a task of their
/// own, so a dropped request cannot split them.
#[tokio::test]
async fn a_dropped_schema_put_still_takes_effect_in_memory() {
    let (app, store) =
        spawn_app_over_test_store(ApiConfig::default(), Duration::ZERO, Duration::ZERO).await;
    let schema = json!({"type": "object", "required": ["details"]});
    store.schema_saves_open.send_replace(false);
    let request = Request::put("/v1/schemas/billing.charged")
        .header(header::AUTHORIZATION, format!("Bearer {}", app.root))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(schema.to_string()))
        .unwrap();
    let put = app.router.clone().oneshot(request);
    tokio::select! {
        r = put => panic!("the PUT answered while its save was held: {:?}", r.map(|r| r.status())),
        () = store.schemas_saved.notified() => {}
    }
    // The request is gone (dropped above, right after its document was written); let the save
    // finish. A second PUT is serialised behind the first, so once it answers the first is done.
    store.schema_saves_open.send_replace(true);
    app.put_schema(&app.root, "other.type", &json!(true)).await;
    let r = app.get(&app.root, "/v1/schemas/billing.charged").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json(), schema);
    let stored: Value =
        serde_json::from_slice(&app.store.load_meta("schemas").await.unwrap().unwrap()).unwrap();
    let tenants = stored["tenants"].as_object().unwrap();
    assert_eq!(tenants.len(), 1, "{stored}");
    let types: Vec<&String> = tenants
        .values()
        .next()
        .unwrap()
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(types, ["billing.charged", "other.type"]);
    let r = app
        .post_events(&app.root, &json!({"type": "billing.charged"}))
        .await;
    r.assert(422, "schema_violation");
}
