//! `POST /v1/events`: the body shapes (object, array, NDJSON) and content types, malformed and
//! invalid events (a refused batch stores nothing), idempotent retries, and the limits on one
//! request: body and batch size, event size, the in-flight byte budget and the request timeout,
//! which stops at the handoff to the store.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use bytes::Bytes;
use serde_json::{Value, json};
use tower::ServiceExt;
use vigil_api::{ApiConfig, AppState};
use vigil_auth::{Auth, AuthConfig};
use vigil_store::Store;
use vigil_store_embedded::{EmbeddedConfig, EmbeddedStore};

use crate::support::{spawn_app, spawn_app_over_test_store, spawn_app_with};

#[tokio::test]
async fn ingests_an_object_an_array_and_ndjson_and_reads_them_back() {
    let app = spawn_app().await;
    let key = app.rw().await;

    let r = app
        .post_events(
            &key,
            &json!({"type": "login.failed", "username": "u-7", "severity": 8}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let body = r.json();
    assert_eq!(body["accepted"], 1);
    assert_eq!(body["events"][0]["seq"], 1);
    assert_eq!(body["events"][0]["duplicate"], false);
    let first_id = body["events"][0]["id"].as_str().unwrap().to_owned();

    let r = app
        .post_events(
            &key,
            &json!([{"type": "a"}, {"type": "b", "source": "web"}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let seqs: Vec<u64> = r.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [2, 3]);

    let ndjson = "{\"type\":\"c\"}\n\n  \n{\"type\":\"d\"}\n";
    let r = app
        .call(
            Method::POST,
            "/v1/events",
            Some(&key),
            &[("content-type", "application/x-ndjson")],
            ndjson,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["accepted"], 2);

    // Missing Content-Type is JSON.
    let r = app
        .call(
            Method::POST,
            "/v1/events",
            Some(&key),
            &[],
            r#"{"type":"e"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

    let r = app.get(&key, &format!("/v1/events/{first_id}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/json");
    let event = r.json();
    assert_eq!(event["id"], first_id.as_str());
    assert_eq!(event["type"], "login.failed");
    assert_eq!(event["actor"]["id"], "u-7");
    assert_eq!(event["severity"], 8);
    assert_eq!(event["tenant"], "acme");
    assert_eq!(
        event["source"], "billing",
        "source defaults to the credential's name"
    );
    assert_eq!(event["seq"], 1);
    assert!(event["hash"].as_str().is_some_and(|h| h.len() == 64));

    assert_eq!(app.count(&key, "").await, 6);
    let page = app.get(&key, "/v1/events").await.json();
    assert_eq!(page["events"].as_array().unwrap().len(), 6);
    assert_eq!(page["next_cursor"], Value::Null);
}

#[tokio::test]
async fn malformed_json_is_400_with_its_position() {
    let app = spawn_app().await;
    let key = app.rw().await;

    let r = app
        .call(
            Method::POST,
            "/v1/events",
            Some(&key),
            &[],
            "{\"type\": \"a\",\n  oops}",
        )
        .await;
    r.assert(400, "invalid_json");
    assert_eq!(
        r.json()["error"]["details"],
        json!({"line": 2, "column": 3})
    );

    let ndjson = "{\"type\":\"a\"}\n\n{\"type\": }\n";
    let r = app
        .call(
            Method::POST,
            "/v1/events",
            Some(&key),
            &[("content-type", "application/x-ndjson")],
            ndjson,
        )
        .await;
    r.assert(400, "invalid_json");
    assert_eq!(
        r.json()["error"]["details"]["line"],
        3,
        "NDJSON errors name the body line"
    );
    assert_eq!(app.count(&key, "").await, 0);
}

#[tokio::test]
async fn other_content_types_are_415() {
    let app = spawn_app().await;
    let key = app.rw().await;
    let r = app
        .call(
            Method::POST,
            "/v1/events",
            Some(&key),
            &[("content-type", "text/plain")],
            "{\"type\":\"a\"}",
        )
        .await;
    r.assert(415, "unsupported_media_type");
}

/// `curl -X POST … -d '{…}'` without a content type sends
/// `application/x-www-form-urlencoded`; the documented one-line examples must work as written.
#[tokio::test]
async fn curl_default_content_type_is_read_as_json() {
    let app = spawn_app().await;
    let key = app.rw().await;
    let r = app
        .call(
            Method::POST,
            "/v1/events",
            Some(&key),
            &[("content-type", "application/x-www-form-urlencoded")],
            "{\"type\":\"login.failed\",\"severity\":8}",
        )
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text());
    assert_eq!(app.count(&key, "").await, 1);
}

#[tokio::test]
async fn empty_batches_are_400() {
    let app = spawn_app().await;
    let key = app.rw().await;
    app.post_events(&key, &json!([]))
        .await
        .assert(400, "empty_batch");
    app.call(
        Method::POST,
        "/v1/events",
        Some(&key),
        &[("content-type", "application/x-ndjson")],
        "\n\n",
    )
    .await
    .assert(400, "empty_batch");
}

#[tokio::test]
async fn one_invalid_event_refuses_the_whole_batch_and_lists_every_error() {
    let app = spawn_app().await;
    let key = app.rw().await;

    let r = app
        .post_events(
            &key,
            &json!([{"type": "ok"}, {"type": "a", "seq": 5}, {"type": "b", "hash": "00"}]),
        )
        .await;
    r.assert(422, "reserved_field");
    let details = r.json()["error"]["details"].clone();
    assert_eq!(details.as_array().unwrap().len(), 2, "{details}");
    assert_eq!(details[0]["index"], 1);
    assert_eq!(details[0]["path"], "seq");
    assert_eq!(details[0]["code"], "reserved_field");
    assert_eq!(details[1]["index"], 2);
    assert_eq!(details[1]["path"], "hash");
    assert!(
        details[0]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );

    let r = app
        .post_events(&key, &json!({"type": "a", "event_type": "a"}))
        .await;
    r.assert(400, "ambiguous_field");

    let r = app.post_events(&key, &json!({"severity": 3})).await;
    r.assert(422, "missing_field");
    assert_eq!(r.json()["error"]["details"][0]["path"], "type");

    // Different codes: `invalid_events`, status of the first error.
    let r = app
        .post_events(
            &key,
            &json!([{"type": "a", "event_type": "a"}, {"severity": 1}]),
        )
        .await;
    r.assert(400, "invalid_events");
    let codes: Vec<String> = r.json()["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes, ["ambiguous_field", "missing_field"]);

    let r = app.post_events(&key, &json!(["not an object"])).await;
    r.assert(422, "not_an_object");

    assert_eq!(
        app.count(&key, "").await,
        0,
        "nothing of a refused batch is stored"
    );
}

#[tokio::test]
async fn idempotent_retries_and_id_conflicts() {
    let app = spawn_app().await;
    let key = app.rw().await;
    let event = json!({"id": "evt-1", "type": "billing.charged", "details": {"amount": 10}});

    let r = app.post_events(&key, &event).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(
        r.json()["events"][0],
        json!({"id": "evt-1", "seq": 1, "duplicate": false})
    );

    let r = app.post_events(&key, &json!([{"type": "x"}, event])).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["accepted"], 2);
    assert_eq!(
        r.json()["events"][1],
        json!({"id": "evt-1", "seq": 1, "duplicate": true})
    );

    let changed = json!({"id": "evt-1", "type": "billing.charged", "details": {"amount": 11}});
    let r = app
        .post_events(&key, &json!([{"type": "y"}, changed]))
        .await;
    r.assert(409, "id_conflict");
    assert_eq!(
        r.json()["error"]["details"],
        json!([{"index": 1, "id": "evt-1"}])
    );
    assert_eq!(
        app.count(&key, "").await,
        2,
        "the conflicting batch stored nothing"
    );
}

#[tokio::test]
async fn large_batches_are_prepared_off_the_runtime_and_stored_whole() {
    let app = spawn_app().await;
    let key = app.rw().await;
    // 300 events of ~300 bytes: over both the event-count and the body-size thresholds.
    let batch: Vec<Value> = (0..300)
        .map(|i| json!({"type": "bulk", "details": {"i": i, "pad": "p".repeat(250)}}))
        .collect();
    let r = app.post_events(&key, &Value::Array(batch.clone())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["accepted"], 300);

    let mut bad = batch;
    bad[250] = json!({"type": "bulk", "tenant": "other"});
    let r = app.post_events(&key, &Value::Array(bad)).await;
    r.assert(422, "reserved_field");
    assert_eq!(r.json()["error"]["details"][0]["index"], 250);
    assert_eq!(app.count(&key, "").await, 300);

    // 100 small events: a small body, but enough events to be prepared off the runtime.
    let small: Vec<Value> = (0..100)
        .map(|i| json!({"type": "small", "details": {"i": i}}))
        .collect();
    let r = app.post_events(&key, &Value::Array(small)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let seqs: Vec<u64> = r.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (301..=400).collect::<Vec<u64>>(),
        "results in request order"
    );
}

#[tokio::test]
async fn request_size_limits_are_413() {
    let config = ApiConfig {
        max_body_bytes: 1024,
        max_batch_events: 3,
        ..ApiConfig::default()
    };
    let app = spawn_app_with(config, AuthConfig::default()).await;
    let key = app.rw().await;

    let big = json!({"type": "a", "details": {"blob": "x".repeat(2000)}});
    let r = app.post_events(&key, &big).await;
    r.assert(413, "body_too_large");
    assert_eq!(r.json()["error"]["details"]["limit"], 1024);

    let r = app
        .post_events(
            &key,
            &json!([{"type": "a"}, {"type": "a"}, {"type": "a"}, {"type": "a"}]),
        )
        .await;
    r.assert(413, "batch_too_large");
    let ndjson = "{\"type\":\"a\"}\n".repeat(4);
    let r = app
        .call(
            Method::POST,
            "/v1/events",
            Some(&key),
            &[("content-type", "application/x-ndjson")],
            ndjson,
        )
        .await;
    r.assert(413, "batch_too_large");

    let r = app
        .post_events(&key, &json!([{"type": "a"}, {"type": "a"}, {"type": "a"}]))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
}

#[tokio::test]
async fn oversized_events_are_refused_per_event() {
    let limits = vigil_event::Limits {
        max_event_bytes: 512,
        ..vigil_event::Limits::default()
    };
    let config = ApiConfig {
        event_limits: limits,
        ..ApiConfig::default()
    };
    let app = spawn_app_with(config, AuthConfig::default()).await;
    let key = app.rw().await;
    let r = app
        .post_events(
            &key,
            &json!([{"type": "a"}, {"type": "a", "details": {"blob": "x".repeat(600)}}]),
        )
        .await;
    r.assert(413, "event_too_large");
    assert_eq!(r.json()["error"]["details"][0]["index"], 1);
    assert_eq!(app.count(&key, "").await, 0);
}

/// Regression: a body whose `Content-Length` exceeded the limit was answered `413` before any
/// of it was read, and the connection closed with the body unread: a client still sending got a
/// broken pipe or a reset instead of the answer. Now such a body is read and discarded (up to a
/// bound) before the `413`, so the client finishes sending and reads the error.
#[tokio::test]
async fn an_oversized_body_gets_its_413_over_a_real_socket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let limit = ApiConfig::default().max_body_bytes;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap());
    let auth = Auth::open(Arc::clone(&store), AuthConfig::default())
        .await
        .unwrap();
    let root = auth.bootstrap_root_key().await.unwrap().unwrap();
    let config = ApiConfig {
        max_body_bytes: limit,
        ..ApiConfig::default()
    };
    let state = AppState::new(store, auth, config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(vigil_api::serve(listener, state, async {
        let _ = stopped.await;
    }));

    let body = vec![b' '; limit + 1024 * 1024];
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: vigil\r\nAuthorization: Bearer {root}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rx, mut tx) = conn.into_split();
    let writer = tokio::spawn(async move {
        tx.write_all(head.as_bytes()).await?;
        for chunk in body.chunks(16 * 1024) {
            tx.write_all(chunk).await?;
            tokio::task::yield_now().await;
        }
        tx.flush().await?;
        Ok::<_, std::io::Error>(tx)
    });
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let n = rx.read(&mut buf).await?;
            response.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&response);
            if n == 0 || text.contains("body_too_large") {
                return Ok::<_, std::io::Error>(());
            }
        }
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&response);
    read.unwrap_or_else(|e| panic!("reading the response failed ({e}) after {text:?}"));
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("\"body_too_large\""), "{text}");
    let sent = tokio::time::timeout(Duration::from_secs(30), writer)
        .await
        .unwrap()
        .unwrap();
    assert!(sent.is_ok(), "sending the body failed: {:?}", sent.err());

    stop.send(()).unwrap();
    drop(rx);
    drop(sent);
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// Regression: nothing bounded the ingest bodies held in memory at once, so enough concurrent
/// large requests could exhaust memory. A request whose body does not fit in what is left of
/// `max_inflight_bytes` now waits briefly, then gets `503 overloaded` with `Retry-After`; room
/// comes back when a request ends.
#[tokio::test(start_paused = true)]
async fn ingest_beyond_the_inflight_budget_is_503_overloaded() {
    let config = ApiConfig {
        max_inflight_bytes: 64 * 1024,
        ..ApiConfig::default()
    };
    let app = spawn_app_with(config, AuthConfig::default()).await;
    let key = app.rw().await;

    // A client that declared 48 KiB and is still sending holds that much of the budget.
    let stalled = Request::post("/v1/events")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_LENGTH, (48 * 1024).to_string())
        .body(Body::from_stream(futures::stream::pending::<
            Result<Bytes, std::io::Error>,
        >()))
        .unwrap();
    let stalled = tokio::spawn(app.router.clone().oneshot(stalled));
    tokio::time::sleep(Duration::from_millis(10)).await;

    let padded = json!([{"type": "a", "details": {"pad": "x".repeat(30 * 1024)}}]);
    let r = app.post_events(&key, &padded).await;
    r.assert(503, "overloaded");
    assert_eq!(r.headers[header::RETRY_AFTER], "1");
    // A body that fits in what is left goes through meanwhile.
    let r = app.post_events(&key, &json!({"type": "b"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

    stalled.abort();
    let _ = stalled.await;
    let r = app.post_events(&key, &padded).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(app.count(&key, "").await, 2);
}

/// Regression: the request timeout used to wrap the whole ingest request, the append
/// included. A batch whose append outlived the timeout was stored, yet the client was told
/// `503 timeout`; `vigil import` retried it, and events without an `id` were stored twice (this
/// test was flaky for the same reason: with a tiny timeout it raced the append). Now the timeout
/// covers reading and validating the body only; once the batch is handed to the store, the
/// client gets the store's answer however long the append takes.
#[tokio::test(start_paused = true)]
async fn an_append_slower_than_the_timeout_is_answered_with_its_outcome() {
    let config = ApiConfig {
        request_timeout: Duration::from_secs(1),
        ..ApiConfig::default()
    };
    let (app, _) = spawn_app_over_test_store(config, Duration::from_secs(30), Duration::ZERO).await;
    let key = app.rw().await;
    let r = app
        .post_events(&key, &json!([{"type": "a"}, {"type": "b"}]))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["accepted"], 2);
    assert_eq!(app.count(&key, "").await, 2);
}

/// The request timeout still bounds what comes before the handoff: a body that never finishes
/// arriving is `503 timeout`, and nothing is stored.
#[tokio::test(start_paused = true)]
async fn a_body_slower_than_the_timeout_is_503_and_stores_nothing() {
    let config = ApiConfig {
        request_timeout: Duration::from_secs(1),
        ..ApiConfig::default()
    };
    let app = spawn_app_with(config, AuthConfig::default()).await;
    let key = app.rw().await;
    let first = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"[{\"type\""))]);
    let body = Body::from_stream(futures::StreamExt::chain(first, futures::stream::pending()));
    let r = app
        .call(
            Method::POST,
            "/v1/events",
            Some(&key),
            &[("content-type", "application/json")],
            body,
        )
        .await;
    r.assert(503, "timeout");
    assert_eq!(app.count(&key, "").await, 0);
}
