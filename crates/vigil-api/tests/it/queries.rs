//! `GET /v1/events` as JSON pages and `/v1/events/count`: filters, cursor paging, pages bounded
//! in bytes, and `GET /v1/events/{id}`.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use vigil_api::ApiConfig;
use vigil_auth::AuthConfig;

use crate::support::{seed, spawn_app, spawn_app_with};

#[tokio::test]
async fn cursor_paging_walks_every_event_once() {
    let app = spawn_app().await;
    let key = app.rw().await;
    seed(&app, &key, 5).await;

    let mut seen = Vec::new();
    let mut uri = "/v1/events?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let page = app.get(&key, &uri).await.json();
        pages += 1;
        for e in page["events"].as_array().unwrap() {
            seen.push(e["details"]["i"].as_u64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(c) => uri = format!("/v1/events?limit=2&cursor={c}"),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(seen, [4, 3, 2, 1, 0], "newest first by default");

    let asc = app.get(&key, "/v1/events?order=asc&limit=10").await.json();
    let order: Vec<u64> = asc["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["details"]["i"].as_u64().unwrap())
        .collect();
    assert_eq!(order, [0, 1, 2, 3, 4]);
}

#[tokio::test]
async fn filters_and_count() {
    let app = spawn_app().await;
    let key = app.rw().await;
    seed(&app, &key, 12).await;
    assert_eq!(app.count(&key, "").await, 12);
    assert_eq!(app.count(&key, "?type=even").await, 6);
    assert_eq!(
        app.count(&key, "?event_type=odd&actor.id=u-1").await,
        2,
        "aliases work in filters"
    );
    assert_eq!(app.count(&key, "?q=details.i%3E%3D10").await, 2);
    assert_eq!(
        app.count(&key, "?type=even&limit=1&order=asc&cursor=whatever")
            .await,
        6,
        "paging parameters are ignored"
    );
    let page = app
        .get(&key, "/v1/events?type=even&details.i=4")
        .await
        .json();
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    assert_eq!(page["events"][0]["details"]["i"], 4);

    app.get(&key, "/v1/events?q=severity%3E%3E")
        .await
        .assert(400, "invalid_query");
    app.get(&key, "/v1/events?limit=abc")
        .await
        .assert(400, "invalid_parameter");
    app.get(&key, "/v1/events?cursor=%21%21")
        .await
        .assert(400, "invalid_cursor");
}

#[tokio::test]
async fn get_by_id_validates_and_proofs_need_a_signing_key() {
    let app = spawn_app().await;
    let key = app.rw().await;
    app.post_events(&key, &json!({"id": "e-1", "type": "a"}))
        .await;
    app.get(&key, "/v1/events/bad%20id")
        .await
        .assert(400, "invalid_id");
    app.get(&key, "/v1/events/missing")
        .await
        .assert(404, "not_found");
    app.get(&key, "/v1/events/e-1?proof=true")
        .await
        .assert(501, "not_implemented");
    assert_eq!(
        app.get(&key, "/v1/events/e-1?proof=false").await.status,
        StatusCode::OK
    );
    app.get(&key, "/v1/events/e-1?proof=maybe")
        .await
        .assert(400, "invalid_parameter");
}

/// Pages stay under `max_page_bytes` however large `limit` is, and walking `next_cursor`
/// still visits every event once; exports stream every event in bounded chunks.
#[tokio::test]
async fn pages_and_exports_are_bounded_in_bytes() {
    let config = ApiConfig {
        max_page_bytes: 4 * 1024,
        ..ApiConfig::default()
    };
    let app = spawn_app_with(config, AuthConfig::default()).await;
    let key = app.rw().await;
    let batch: Vec<Value> = (0..12)
        .map(|i| json!({"type": "a", "time": format!("2024-05-01T00:00:{i:02}Z"), "details": {"i": i, "pad": "x".repeat(1_000)}}))
        .collect();
    app.post_events(&key, &Value::Array(batch)).await;

    let mut seen = Vec::new();
    let mut uri = "/v1/events?limit=100&order=asc".to_owned();
    for _ in 0..20 {
        let r = app.get(&key, &uri).await;
        assert!(r.body.len() <= 4 * 1024, "a page of {} bytes", r.body.len());
        let page = r.json();
        let events = page["events"].as_array().unwrap();
        assert!(!events.is_empty() && events.len() < 12);
        seen.extend(events.iter().map(|e| e["details"]["i"].as_u64().unwrap()));
        match page["next_cursor"].as_str() {
            Some(c) => uri = format!("/v1/events?limit=100&order=asc&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, (0..12).collect::<Vec<u64>>());

    let r = app
        .call(
            Method::GET,
            "/v1/events?order=asc",
            Some(&key),
            &[("accept", "application/x-ndjson")],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let exported: Vec<u64> = r
        .text()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["details"]["i"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(exported, (0..12).collect::<Vec<u64>>());
}
