//! What is not a resource: `/healthz`, `/readyz`, `/metrics` (with bounded labels) and
//! `/openapi.json` without a credential, JSON errors for unknown routes, a route for every
//! documented operation, request ids, the request timeout, and `vigil_api::serve` on a real
//! port.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use serde_json::json;
use vigil_api::{ApiConfig, AppState};
use vigil_auth::{Auth, AuthConfig};
use vigil_store::Store;
use vigil_store_embedded::{EmbeddedConfig, EmbeddedStore};

use crate::support::{spawn_app, spawn_app_over_test_store};

#[tokio::test]
async fn ops_endpoints_need_no_credential() {
    let app = spawn_app().await;
    let r = app
        .call(Method::GET, "/healthz", None, &[], Body::empty())
        .await;
    assert_eq!(
        (r.status, r.json()),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let r = app
        .call(Method::GET, "/readyz", None, &[], Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::OK);

    let key = app.rw().await;
    app.post_events(&key, &json!({"type": "a"})).await;
    let r = app
        .call(Method::GET, "/metrics", None, &[], Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let text = r.text();
    assert!(text.contains("vigil_events_ingested_total"), "{text}");
    assert!(
        text.contains("vigil_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("route=\"/v1/events\""), "{text}");

    let r = app
        .call(Method::GET, "/openapi.json", None, &[], Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json()["paths"]["/v1/events"]["post"].is_object());
}

#[tokio::test]
async fn readyz_is_503_once_the_store_stops() {
    let app = spawn_app().await;
    app.store.shutdown().await.unwrap();
    let r = app
        .call(Method::GET, "/readyz", None, &[], Body::empty())
        .await;
    r.assert(503, "store_unavailable");
    assert_eq!(r.headers[header::RETRY_AFTER], "1");
    let key = app.root.clone();
    let r = app.post_events(&key, &json!({"type": "a"})).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json_errors() {
    let app = spawn_app().await;
    let r = app
        .call(Method::GET, "/v2/nothing", None, &[], Body::empty())
        .await;
    r.assert(404, "not_found");
    let r = app
        .call(Method::PATCH, "/v1/events", None, &[], Body::empty())
        .await;
    r.assert(405, "method_not_allowed");
}

/// Every documented operation is routed: the route table builds both, and this checks the
/// router answers each one with something other than "no such route".
#[tokio::test]
async fn every_documented_operation_is_routed() {
    let app = spawn_app().await;
    let doc = serde_json::to_value(vigil_api::openapi()).unwrap();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let concrete = path
                .replace("{id}", "x")
                .replace("{type}", "x")
                .replace("{username}", "x");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = app
                .call(method.clone(), &concrete, None, &[], Body::empty())
                .await;
            let unrouted = r.status == StatusCode::METHOD_NOT_ALLOWED
                || (r.status == StatusCode::NOT_FOUND
                    && r.json()["error"]["message"]
                        .as_str()
                        .unwrap()
                        .starts_with("no route"));
            assert!(
                !unrouted,
                "{method} {path} is documented but not routed: {}",
                r.text()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 22);
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = spawn_app().await;
    let r = app
        .call(Method::GET, "/healthz", None, &[], Body::empty())
        .await;
    let id = r.headers["x-request-id"].to_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
    let r = app
        .call(
            Method::GET,
            "/nope",
            None,
            &[("x-request-id", "client-chosen-1")],
            Body::empty(),
        )
        .await;
    assert_eq!(r.headers["x-request-id"], "client-chosen-1");
}

/// Every other route is bounded by the request timeout as a whole.
#[tokio::test(start_paused = true)]
async fn slow_requests_time_out_with_503() {
    let config = ApiConfig {
        request_timeout: Duration::from_secs(1),
        ..ApiConfig::default()
    };
    let (app, _) = spawn_app_over_test_store(config, Duration::ZERO, Duration::from_secs(30)).await;
    let key = app.rw().await;
    let r = app.get(&key, "/v1/events").await;
    r.assert(503, "timeout");
}

/// Regression: a raw HTTP method became a metrics label, so a client sending made-up methods
/// could create label values without bound. Methods outside the standard set are `other`, and
/// the route label is the matched template or `unmatched`, never the raw path.
#[tokio::test]
async fn metric_labels_stay_bounded() {
    let app = spawn_app().await;
    let odd = Method::from_bytes(b"FROBNICATE").unwrap();
    let r = app
        .call(
            odd.clone(),
            "/v1/events/raw-id-5d41",
            None,
            &[],
            Body::empty(),
        )
        .await;
    assert!(r.status.is_client_error(), "{}", r.text());
    app.call(odd, "/no/such/route-7f3a", None, &[], Body::empty())
        .await;
    app.call(
        Method::GET,
        "/v1/events/raw-id-9c2e",
        None,
        &[],
        Body::empty(),
    )
    .await
    .assert(401, "unauthenticated");
    let text = app
        .call(Method::GET, "/metrics", None, &[], Body::empty())
        .await
        .text();
    for raw in ["FROBNICATE", "raw-id-5d41", "route-7f3a", "raw-id-9c2e"] {
        assert!(!text.contains(raw), "{raw} is a label value:\n{text}");
    }
    assert!(text.contains("method=\"other\""), "{text}");
    assert!(text.contains("route=\"/v1/events/{id}\""), "{text}");
    assert!(text.contains("route=\"unmatched\""), "{text}");
}

#[tokio::test]
async fn serve_answers_on_a_port_and_drains_on_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap());
    let auth = Auth::open(Arc::clone(&store), AuthConfig::default())
        .await
        .unwrap();
    let state = AppState::new(store, auth, ApiConfig::default())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(vigil_api::serve(listener, state, async {
        let _ = stopped.await;
    }));

    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: vigil\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("{\"status\":\"ok\"}"), "{response}");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
