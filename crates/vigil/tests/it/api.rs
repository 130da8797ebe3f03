//! The HTTP API through a real port: payload shapes, every error code, authorisation,
//! pagination under concurrent writes and idempotent retries.
//!
//! Every test runs once per store (`embedded::…` and `postgres::…`) with the same assertions:
//! nothing in the API may behave differently between backends.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use vigil_client::{ClientError, NewKey, NewUser, Order, QueryParams};

use crate::common::{Backend, TestApp, all_events};

/// The status and code of an API refusal.
fn refusal<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (u16, String, Option<Value>) {
    match result {
        Err(ClientError::Api {
            status,
            code,
            message,
            details,
            ..
        }) => {
            assert!(!message.is_empty(), "{code} has no message");
            assert!(
                !message.ends_with('.'),
                "{code}: message ends with a period: {message}"
            );
            (status, code, details)
        }
        other => panic!("expected an api error, got {other:?}"),
    }
}

fn time_of(event: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(event["time"].as_str().expect("time"))
        .expect("rfc 3339 time")
        .with_timezone(&Utc)
}

on_every_backend!(
    legacy_payload_shapes_are_accepted_and_queryable_by_each_field,
    every_error_code_over_http,
    rate_limits_answer_429_with_retry_after,
    credentials_are_confined_to_their_tenant_and_scopes,
    cursor_pagination_is_stable_under_concurrent_writes,
    retries_are_idempotent,
);

async fn legacy_payload_shapes_are_accepted_and_queryable_by_each_field(backend: Backend) {
    let app = TestApp::spawn_on(backend, &[]).await;
    let client = app
        .tenant_client("legacy", &["events:write", "events:read"])
        .await;

    let ack = client
        .ingest(&[
            json!({"event_id": "leg-1", "event_type": "user.login", "timestamp": "2024-05-01T10:00:00Z",
                   "criticality": 5, "user_id": "u-100", "src_service": "legacy-auth",
                   "event_details": {"method": "password", "attempt": 2}}),
            json!({"event_id": "leg-2", "event_type": "user.logout", "timestamp": "2024-05-01T11:00:00+02:00",
                   "criticality": 2, "username": "alice", "src_service": "legacy-web",
                   "event_specificdetails": {"reason": "timeout"}}),
        ])
        .await
        .expect("legacy json batch");
    assert_eq!(ack.accepted, 2);
    let ndjson = concat!(
        r#"{"event_id":"leg-3","event_type":"app.sync","app_data":{"items":3,"ok":true},"custom_top":"kept","criticality":0}"#,
        "\n",
        r#"{"id":"new-1","type":"account.created","time":"2024-05-02T00:00:00Z","severity":9,"actor":{"id":"u-1","type":"user","ip":"10.1.2.3"},"action":"create","outcome":"success","resource":{"type":"account","id":"acct-1"},"details":{"plan":"pro"}}"#,
        "\n"
    );
    assert_eq!(
        client.ingest_ndjson(ndjson).await.expect("ndjson").accepted,
        2
    );

    // Stored in canonical form.
    let one = client.get_event("leg-1").await.unwrap();
    assert_eq!(one["type"], "user.login");
    assert_eq!(one["severity"], 5);
    assert_eq!(one["actor"]["id"], "u-100");
    assert_eq!(one["source"], "legacy-auth");
    assert_eq!(one["details"]["method"], "password");
    assert_eq!(one["tenant"], "legacy");
    for server_set in ["seq", "received_at", "hash"] {
        assert!(one.get(server_set).is_some(), "{server_set} missing");
    }
    for alias in [
        "event_id",
        "event_type",
        "timestamp",
        "criticality",
        "user_id",
        "src_service",
        "event_details",
    ] {
        assert!(one.get(alias).is_none(), "{alias} kept");
    }
    let two = client.get_event("leg-2").await.unwrap();
    assert_eq!(
        time_of(&two),
        DateTime::parse_from_rfc3339("2024-05-01T09:00:00Z").unwrap()
    );
    assert_eq!(two["actor"]["id"], "alice");
    assert_eq!(two["details"]["reason"], "timeout");
    let three = client.get_event("leg-3").await.unwrap();
    assert_eq!(three["details"]["items"], 3);
    assert_eq!(three["custom_top"], "kept");

    // Each field finds its event, by canonical path and by alias.
    let cases: &[(&str, &str, &str)] = &[
        ("type", "user.login", "leg-1"),
        ("event_type", "user.login", "leg-1"),
        ("severity", "5", "leg-1"),
        ("criticality", "5", "leg-1"),
        ("actor.id", "u-100", "leg-1"),
        ("user_id", "u-100", "leg-1"),
        ("username", "alice", "leg-2"),
        ("source", "legacy-web", "leg-2"),
        ("src_service", "legacy-web", "leg-2"),
        ("details.method", "password", "leg-1"),
        ("event_details.method", "password", "leg-1"),
        ("details.attempt", "2", "leg-1"),
        ("details.reason", "timeout", "leg-2"),
        ("event_specificdetails.reason", "timeout", "leg-2"),
        ("app_data.items", "3", "leg-3"),
        ("details.ok", "true", "leg-3"),
        ("custom_top", "kept", "leg-3"),
        ("id", "leg-2", "leg-2"),
        ("event_id", "leg-2", "leg-2"),
        ("actor.ip", "10.1.2.3", "new-1"),
        ("actor.type", "user", "new-1"),
        ("action", "create", "new-1"),
        ("outcome", "success", "new-1"),
        ("resource.type", "account", "new-1"),
        ("resource.id", "acct-1", "new-1"),
        ("details.plan", "pro", "new-1"),
    ];
    for (path, value, expected) in cases {
        let page = client
            .query(&QueryParams::new().filter(*path, *value))
            .await
            .expect(path);
        let got: Vec<&str> = page
            .events
            .iter()
            .map(|e| e["id"].as_str().unwrap())
            .collect();
        assert_eq!(got, [*expected], "{path}={value}");
    }
    let page = client
        .query(&QueryParams::new().q("event_type:user.logout AND criticality<3"))
        .await
        .unwrap();
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0]["id"], "leg-2");

    // Time ranges, with the legacy parameter names too.
    let in_range = QueryParams::new()
        .from("2024-05-01T09:30:00Z")
        .to("2024-05-01T10:30:00Z");
    let got = client.query(&in_range).await.unwrap();
    assert_eq!(got.events.len(), 1);
    assert_eq!(got.events[0]["id"], "leg-1");
    let legacy_range = QueryParams::new()
        .filter("timeStart", "2024-05-01T08:00:00Z")
        .filter("timeEnd", "2024-05-01T09:30:00Z");
    let got = client.query(&legacy_range).await.unwrap();
    assert_eq!(got.events.len(), 1);
    assert_eq!(got.events[0]["id"], "leg-2");
}

async fn every_error_code_over_http(backend: Backend) {
    let app = TestApp::spawn_on(
        backend,
        &[
            "--max-body-bytes",
            "16384",
            "--max-batch-events",
            "5",
            "--max-event-bytes",
            "2048",
            "--max-depth",
            "4",
            "--max-query-limit",
            "50",
        ],
    )
    .await;
    let client = app
        .tenant_client("acme", &["events:write", "events:read", "schemas:write"])
        .await;
    let reader = app.tenant_client("acme", &["events:read"]).await;
    let ok = json!({"id": "ok-1", "type": "a.b"});
    client.ingest(std::slice::from_ref(&ok)).await.unwrap();

    let check = |result: (u16, String, Option<Value>), status: u16, code: &str| {
        assert_eq!(
            (result.0, result.1.as_str()),
            (status, code),
            "details: {:?}",
            result.2
        );
        result.2
    };

    // 400
    let details = check(
        refusal(client.ingest_raw("{\"type\": ", "application/json").await),
        400,
        "invalid_json",
    );
    assert!(details.is_some_and(|d| d["line"] == 1));
    check(
        refusal(
            client
                .ingest_raw("{\"type\":\"a\"}\n{oops\n", "application/x-ndjson")
                .await,
        ),
        400,
        "invalid_json",
    );
    check(
        refusal(
            client
                .ingest(&[json!({"type": "a", "event_type": "b"})])
                .await,
        ),
        400,
        "ambiguous_field",
    );
    check(refusal(client.ingest(&[]).await), 400, "empty_batch");
    check(
        refusal(client.query(&QueryParams::new().q("severity>>")).await),
        400,
        "invalid_query",
    );
    check(
        refusal(
            client
                .query(&QueryParams::new().cursor("not-a-cursor"))
                .await,
        ),
        400,
        "invalid_cursor",
    );
    check(
        refusal(client.query(&QueryParams::new().limit(51)).await),
        400,
        "invalid_parameter",
    );
    check(
        refusal(
            client
                .query(&QueryParams::new().from("yesterday-ish"))
                .await,
        ),
        400,
        "invalid_parameter",
    );

    // 401, 403
    check(
        refusal(app.anonymous().ingest(std::slice::from_ref(&ok)).await),
        401,
        "unauthenticated",
    );
    let forged = app
        .anonymous()
        .with_token(Some("vgl_AAAAAAAAAAAA_forged".into()));
    check(
        refusal(forged.count(&QueryParams::new()).await),
        401,
        "unauthenticated",
    );
    check(
        refusal(reader.ingest(std::slice::from_ref(&ok)).await),
        403,
        "forbidden",
    );

    // 404, 405
    check(
        refusal(client.get_event("no-such-event").await),
        404,
        "not_found",
    );
    check(
        refusal(client.get_schema("no.schema").await),
        404,
        "not_found",
    );
    let raw = reqwest::Client::new();
    let resp = raw
        .get(format!("{}/v1/nowhere", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "not_found"
    );
    let resp = raw
        .patch(format!("{}/v1/events", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "method_not_allowed"
    );

    // 409: nothing of the batch is stored.
    let details = check(
        refusal(
            client
                .ingest(&[
                    json!({"id": "fresh-1", "type": "a.b"}),
                    json!({"id": "ok-1", "type": "other"}),
                ])
                .await,
        ),
        409,
        "id_conflict",
    );
    assert_eq!(details.unwrap()[0]["index"], 1);
    check(refusal(client.get_event("fresh-1").await), 404, "not_found");

    // 413. The server answers as soon as it sees the length, without reading the body, so the
    // body is kept small enough to be fully written before that answer arrives.
    let big = json!({"type": "a.b", "details": {"blob": "x".repeat(17_000)}});
    check(refusal(client.ingest(&[big]).await), 413, "body_too_large");
    let six: Vec<Value> = (0..6).map(|_| json!({"type": "a.b"})).collect();
    check(refusal(client.ingest(&six).await), 413, "batch_too_large");
    let large_event = json!({"type": "a.b", "details": {"blob": "x".repeat(4_000)}});
    check(
        refusal(client.ingest(&[large_event]).await),
        413,
        "event_too_large",
    );

    // 415
    check(
        refusal(client.ingest_raw("{\"type\":\"a\"}", "text/plain").await),
        415,
        "unsupported_media_type",
    );

    // 422, each failing item listed, nothing stored.
    let details = check(
        refusal(
            client
                .ingest(&[
                    json!({"id": "v-1", "type": "a.b"}),
                    json!({"type": "a.b", "seq": 3}),
                ])
                .await,
        ),
        422,
        "reserved_field",
    );
    let items = details.unwrap();
    assert_eq!(
        (items[0]["index"].as_u64(), items[0]["path"].as_str()),
        (Some(1), Some("seq"))
    );
    check(refusal(client.get_event("v-1").await), 404, "not_found");
    check(
        refusal(client.ingest(&[json!({"severity": 3})]).await),
        422,
        "missing_field",
    );
    check(
        refusal(
            client
                .ingest(&[json!({"type": "a.b", "severity": 11})])
                .await,
        ),
        422,
        "invalid_field",
    );
    check(
        refusal(client.ingest(&[json!("just a string")]).await),
        422,
        "not_an_object",
    );
    check(
        refusal(
            client
                .ingest(&[json!({"type": "a", "details": {"b": {"c": {"d": {"e": 1}}}}})])
                .await,
        ),
        422,
        "too_deep",
    );
    let details = check(
        refusal(
            client
                .ingest(&[json!({"type": "a.b", "seq": 1}), json!({"severity": 1})])
                .await,
        ),
        422,
        "invalid_events",
    );
    assert_eq!(
        details.unwrap().as_array().unwrap().len(),
        2,
        "every failing item is listed"
    );
    client
        .put_schema(
            "billing.charged",
            &json!({"type": "object", "required": ["details"]}),
        )
        .await
        .expect("schema registered");
    check(
        refusal(client.ingest(&[json!({"type": "billing.charged"})]).await),
        422,
        "schema_violation",
    );
    check(
        refusal(client.put_schema("bad.schema", &json!({"type": 12})).await),
        422,
        "invalid_schema",
    );
    let bad_scope = NewKey {
        name: "x".into(),
        tenant: "acme".into(),
        scopes: vec!["events:fly".into()],
        expires_at: None,
    };
    let (status, code, _) = refusal(app.client().create_key(&bad_scope).await);
    assert_eq!(
        (status, code.as_str()),
        (400, "invalid_body"),
        "an unknown scope is a malformed request"
    );

    // Health needs no credential.
    app.anonymous().healthz().await.expect("healthz");
    app.anonymous().readyz().await.expect("readyz");
}

async fn rate_limits_answer_429_with_retry_after(backend: Backend) {
    let app = TestApp::spawn_on(backend, &["--rate-limit", "0.5", "--rate-burst", "2"]).await;
    let client = app.tenant_client("acme", &["events:read"]).await;
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        outcomes.push(client.count(&QueryParams::new()).await);
    }
    assert!(outcomes[0].is_ok() && outcomes[1].is_ok(), "{outcomes:?}");
    match outcomes.pop() {
        Some(Err(ClientError::Api {
            status: 429,
            code,
            retry_after,
            ..
        })) => {
            assert_eq!(code, "rate_limited");
            assert!(
                retry_after.is_some_and(|d| d >= Duration::from_secs(1)),
                "{retry_after:?}"
            );
        }
        other => panic!("expected 429, got {other:?}"),
    }
    // Another credential has its own budget.
    let other = app.tenant_client("acme", &["events:read"]).await;
    other
        .count(&QueryParams::new())
        .await
        .expect("separate budget");
}

async fn credentials_are_confined_to_their_tenant_and_scopes(backend: Backend) {
    let app = TestApp::spawn_on(backend, &[]).await;
    let acme_writer = app.tenant_client("acme", &["events:write"]).await;
    let acme_reader = app.tenant_client("acme", &["events:read"]).await;
    let globex = app
        .tenant_client("globex", &["events:write", "events:read"])
        .await;
    acme_writer
        .ingest(&[json!({"id": "secret-1", "type": "acme.plan", "details": {"plan": "x"}})])
        .await
        .unwrap();
    globex
        .ingest(&[json!({"id": "g-1", "type": "globex.thing"})])
        .await
        .unwrap();

    // Scopes.
    assert_eq!(refusal(acme_writer.count(&QueryParams::new()).await).0, 403);
    assert_eq!(
        refusal(acme_reader.ingest(&[json!({"type": "x"})]).await).0,
        403
    );
    assert_eq!(
        refusal(
            acme_reader
                .create_key(&NewKey {
                    name: "n".into(),
                    tenant: "acme".into(),
                    scopes: vec!["events:read".into()],
                    expires_at: None,
                })
                .await
        )
        .0,
        403
    );

    // Tenants: another tenant's events are invisible whatever the filter.
    assert_eq!(acme_reader.count(&QueryParams::new()).await.unwrap(), 1);
    assert_eq!(globex.count(&QueryParams::new()).await.unwrap(), 1);
    assert_eq!(
        globex
            .count(&QueryParams::new().filter("tenant", "acme"))
            .await
            .unwrap(),
        0
    );
    assert_eq!(refusal(globex.get_event("secret-1").await).0, 404);
    assert!(
        globex
            .query(&QueryParams::new().q("type:acme.plan"))
            .await
            .unwrap()
            .events
            .is_empty()
    );
    // The same id in two tenants is two events.
    let again = globex
        .ingest(&[json!({"id": "secret-1", "type": "other"})])
        .await
        .unwrap();
    assert!(!again.events[0].duplicate);
    assert_eq!(
        acme_reader.get_event("secret-1").await.unwrap()["type"],
        "acme.plan"
    );

    // A tenant admin administers its own tenant only and cannot mint root.
    let acme_admin = app.tenant_client("acme", &["admin"]).await;
    let for_globex = NewKey {
        name: "n".into(),
        tenant: "globex".into(),
        scopes: vec!["events:read".into()],
        expires_at: None,
    };
    assert_eq!(refusal(acme_admin.create_key(&for_globex).await).0, 403);
    let root_grant = NewKey {
        name: "n".into(),
        tenant: "acme".into(),
        scopes: vec!["root".into()],
        expires_at: None,
    };
    assert_eq!(refusal(acme_admin.create_key(&root_grant).await).0, 403);
    let listed = acme_admin.list_keys().await.unwrap();
    assert!(
        !listed.is_empty() && listed.iter().all(|k| k.tenant == "acme"),
        "{listed:?}"
    );
    let user = NewUser {
        username: "mallory".into(),
        password: "long enough password".into(),
        tenant: "globex".into(),
        scopes: vec!["admin".into()],
    };
    assert_eq!(refusal(acme_admin.create_user(&user).await).0, 403);
    let globex_key = app
        .client()
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.tenant == "globex")
        .unwrap();
    assert_eq!(
        refusal(acme_admin.revoke_key(&globex_key.id).await).0,
        404,
        "another tenant's key does not exist for acme"
    );

    // Revocation is immediate, for the key and the JWTs minted from it.
    let key = app
        .client()
        .create_key(&NewKey {
            name: "short-lived".into(),
            tenant: "acme".into(),
            scopes: vec!["events:read".into()],
            expires_at: None,
        })
        .await
        .unwrap();
    let keyed = app.anonymous().with_token(Some(key.key.clone()));
    let jwt = keyed.token().await.expect("token");
    assert_eq!(jwt.token_type, "Bearer");
    let jwt_client = app.anonymous().with_token(Some(jwt.token.clone()));
    assert_eq!(
        jwt_client.count(&QueryParams::new()).await.unwrap(),
        1,
        "the jwt carries tenant acme"
    );
    app.client().revoke_key(&key.id).await.unwrap();
    assert_eq!(refusal(keyed.count(&QueryParams::new()).await).0, 401);
    assert_eq!(refusal(jwt_client.count(&QueryParams::new()).await).0, 401);

    // Wrong password, unknown user.
    assert_eq!(
        refusal(app.anonymous().login("nobody", "whatever password").await).0,
        401
    );
}

/// Paging with cursors while a writer appends: every event that existed when paging began is
/// seen exactly once, and no event is ever seen twice.
async fn cursor_pagination_is_stable_under_concurrent_writes(backend: Backend) {
    let app = TestApp::spawn_on(backend, &[]).await;
    let client = app
        .tenant_client("acme", &["events:write", "events:read"])
        .await;
    let mut initial = BTreeSet::new();
    for batch in 0..6 {
        let events: Vec<Value> = (0..100)
            .map(|i| {
                let id = format!("init-{batch}-{i}");
                initial.insert(id.clone());
                json!({"id": id, "type": if i % 2 == 0 { "page.even" } else { "page.odd" }, "details": {"i": i}})
            })
            .collect();
        client.ingest(&events).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let t0 = Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true);
    tokio::time::sleep(Duration::from_millis(5)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let client = client.clone();
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut written = Vec::new();
            for round in 0..500 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let events: Vec<Value> = (0..10)
                    .map(|i| json!({"id": format!("live-{round}-{i}"), "type": if i % 2 == 0 { "page.even" } else { "page.odd" }}))
                    .collect();
                client.ingest(&events).await.expect("concurrent write");
                written.extend(events.iter().map(|e| e["id"].as_str().unwrap().to_owned()));
            }
            written
        })
    };

    let read_all = |params: QueryParams| {
        let client = client.clone();
        async move {
            let mut seen: HashMap<String, u32> = HashMap::new();
            let mut params = params.limit(37);
            loop {
                let page = client.query(&params).await.expect("page");
                for e in &page.events {
                    *seen
                        .entry(e["id"].as_str().unwrap().to_owned())
                        .or_default() += 1;
                }
                tokio::task::yield_now().await;
                match page.next_cursor {
                    Some(c) => params.cursor = Some(c),
                    None => return seen,
                }
            }
        }
    };

    let newest_first = read_all(QueryParams::new().order(Order::Desc)).await;
    let oldest_first = read_all(QueryParams::new().order(Order::Asc).to(t0.clone())).await;
    let filtered = read_all(
        QueryParams::new()
            .order(Order::Desc)
            .filter("type", "page.even"),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert!(
        !written.is_empty(),
        "the writer ran while the readers paged"
    );

    for (name, seen) in [
        ("desc", &newest_first),
        ("asc", &oldest_first),
        ("filtered", &filtered),
    ] {
        let repeats: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(repeats.is_empty(), "{name}: repeated {repeats:?}");
        let expected: BTreeSet<&String> = if name == "filtered" {
            initial
                .iter()
                .filter(|id| id.rsplit('-').next().unwrap().parse::<u32>().unwrap() % 2 == 0)
                .collect()
        } else {
            initial.iter().collect()
        };
        let missing: Vec<_> = expected
            .iter()
            .filter(|id| !seen.contains_key(**id))
            .collect();
        assert!(
            missing.is_empty(),
            "{name}: missed {} events, e.g. {:?}",
            missing.len(),
            missing.first()
        );
    }
    let before_t0: BTreeSet<&String> = oldest_first.keys().collect();
    assert_eq!(
        before_t0,
        initial.iter().collect(),
        "asc up to t0 is exactly the initial events"
    );

    let everything: BTreeSet<String> = all_events(&client, QueryParams::new())
        .await
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        written.iter().all(|id| everything.contains(id)),
        "every acknowledged write is readable"
    );
    assert_eq!(everything.len(), initial.len() + written.len());
}

async fn retries_are_idempotent(backend: Backend) {
    let app = TestApp::spawn_on(backend, &[]).await;
    let client = app
        .tenant_client("acme", &["events:write", "events:read"])
        .await;
    let batch: Vec<Value> = (0..10)
        .map(|i| json!({"id": format!("idem-{i}"), "type": "order.placed", "details": {"n": i}}))
        .collect();

    let first = client.ingest(&batch).await.unwrap();
    assert!(first.events.iter().all(|e| !e.duplicate));
    let seqs: Vec<Option<u64>> = first.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=10).map(Some).collect::<Vec<_>>());

    let retry = client.ingest(&batch).await.unwrap();
    assert_eq!(retry.accepted, 10);
    assert!(retry.events.iter().all(|e| e.duplicate));
    assert_eq!(
        retry.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        seqs,
        "a duplicate reports the original seq"
    );
    assert_eq!(client.count(&QueryParams::new()).await.unwrap(), 10);

    // The same event in its legacy shape is the same event.
    let legacy =
        json!({"event_id": "idem-3", "event_type": "order.placed", "event_details": {"n": 3}});
    let ack = client.ingest(&[legacy]).await.unwrap();
    assert!(ack.events[0].duplicate);
    assert_eq!(ack.events[0].seq, Some(4));

    // Concurrent retries of a new batch store it once.
    let second: Vec<Value> = (0..20)
        .map(|i| json!({"id": format!("race-{i}"), "type": "order.paid"}))
        .collect();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let client = client.clone();
        let second = second.clone();
        tasks.push(tokio::spawn(async move {
            client.ingest(&second).await.expect("concurrent retry")
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let reference: Vec<Option<u64>> = answers[0].events.iter().map(|e| e.seq).collect();
    for a in &answers {
        assert_eq!(
            a.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            reference,
            "every retry sees the same seqs"
        );
    }
    let fresh: usize = answers
        .iter()
        .map(|a| a.events.iter().filter(|e| !e.duplicate).count())
        .sum();
    assert_eq!(fresh, 20, "each event was new exactly once");
    assert_eq!(client.count(&QueryParams::new()).await.unwrap(), 30);
    let mut all_seqs: Vec<u64> = all_events(&client, QueryParams::new())
        .await
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    all_seqs.sort_unstable();
    assert_eq!(all_seqs, (1..=30).collect::<Vec<_>>(), "gap-free");

    // A mixed batch: old ids are duplicates, new ones are stored.
    let mixed = client
        .ingest(&[
            batch[0].clone(),
            json!({"id": "idem-new", "type": "order.placed"}),
        ])
        .await
        .unwrap();
    assert_eq!(
        (mixed.events[0].duplicate, mixed.events[1].duplicate),
        (true, false)
    );
    assert_eq!(mixed.events[1].seq, Some(31));

    // Same id, other content: 409, nothing stored.
    let (status, code, _) = refusal(
        client
            .ingest(&[json!({"id": "idem-0", "type": "order.placed", "details": {"n": 99}})])
            .await,
    );
    assert_eq!((status, code.as_str()), (409, "id_conflict"));
    assert_eq!(client.get_event("idem-0").await.unwrap()["details"]["n"], 0);
    assert_eq!(client.count(&QueryParams::new()).await.unwrap(), 31);
}
