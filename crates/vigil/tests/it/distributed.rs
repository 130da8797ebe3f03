//! The distributed pipeline against a real NATS JetStream server: bus-mode ingest, the writer,
//! the reader, the generator and `vigil last --nats`, and what survives a killed writer or a
//! restarted NATS server. Tests on the shared server (127.0.0.1:4222) each use their own
//! namespace (subjects `<ns>.events.*`, streams `VIGIL_EVENTS_<ns>`); tests that stop NATS run
//! their own private server.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vigil_bus::testing::{PrivateNats, unique_name};
use vigil_bus::{Bus, BusConfig, QueryRequest};
use vigil_client::{Client, ClientError, QueryParams};
use vigil_event::TenantId;

use crate::common::{BIN, PATIENCE, TestApp, TestDir, all_events, run_cli};

const SHARED_NATS: &str = "nats://127.0.0.1:4222";

fn bus_args<'a>(url: &'a str, namespace: &'a str) -> Vec<&'a str> {
    vec!["--nats", url, "--nats-namespace", namespace]
}

async fn bus(url: &str, namespace: &str) -> Bus {
    Bus::connect(BusConfig {
        namespace: Some(namespace.to_owned()),
        ..BusConfig::new(url)
    })
    .await
    .expect("connecting to NATS")
}

/// Waits until `client`'s tenant holds `n` events (polling; the deadline only guards hangs).
async fn wait_for_count(client: &Client, n: u64) -> u64 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let count = client.count(&QueryParams::new()).await.unwrap_or(0);
        if count >= n || Instant::now() > deadline {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every event of the tenant: ids distinct, seqs 1..=n, and each `hash` the chain hash of the
/// one before it and the event's canonical bytes.
fn assert_log_is_whole(events: &[Value]) {
    let ids: BTreeSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "an event is stored twice");
    let mut events: Vec<&Value> = events.iter().collect();
    events.sort_by_key(|e| e["seq"].as_u64().unwrap());
    let mut prev = [0u8; 32];
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["seq"].as_u64(), Some(i as u64 + 1), "seq gap");
        let mut body = (*event).clone();
        let hash = body.as_object_mut().unwrap().remove("hash").expect("hash");
        let leaf = vigil_event::leaf_hash(&vigil_event::to_canonical_bytes(&body));
        let chain = vigil_event::chain_hash(&prev, &leaf);
        assert_eq!(
            hash.as_str().unwrap(),
            hex::encode(chain),
            "chain broken at seq {}",
            i + 1
        );
        prev = chain;
    }
}

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

#[tokio::test]
async fn http_ingest_goes_through_jetstream_to_the_store_and_readers_answer() {
    let ns = unique_name("http");
    let app = TestApp::spawn_with(&bus_args(SHARED_NATS, &ns)).await;
    let key = app
        .create_key("acme", &["events:write", "events:read"])
        .await;
    let client = Client::new(&app.url, Some(key)).unwrap();

    let batch: Vec<Value> = (0..50)
        .map(|i| json!({"id": format!("h-{i}"), "type": "login.failed", "severity": i % 11, "actor": {"id": format!("u-{}", i % 5)}}))
        .collect();
    let ack = client.ingest(&batch).await.expect("bus-mode ingest");
    assert_eq!(ack.accepted, 50);
    assert!(
        ack.events.iter().all(|e| e.seq.is_none() && !e.duplicate),
        "202: no seq until a writer stores the event"
    );
    // The same ids again: JetStream drops them within its duplicate window.
    let again = client.ingest(&batch[..3]).await.unwrap();
    assert!(again.events.iter().all(|e| e.duplicate));
    // An invalid event is refused at the edge, as without NATS.
    let refused = client.ingest(&[json!({"severity": 2})]).await.unwrap_err();
    assert!(
        matches!(&refused, ClientError::Api { status: 422, .. }),
        "{refused:?}"
    );

    assert_eq!(wait_for_count(&client, 50).await, 50);
    let events = all_events(&client, QueryParams::new()).await;
    assert_eq!(events.len(), 50);
    assert_log_is_whole(&events);
    assert!(events.iter().all(|e| e["tenant"] == "acme"));

    // Readers answer over NATS with the query semantics of GET /v1/events.
    let bus = bus(SHARED_NATS, &ns).await;
    let page = bus
        .query(
            &tenant("acme"),
            &QueryRequest {
                q: Some("severity>7".into()),
                limit: Some(100),
                ..Default::default()
            },
        )
        .await
        .expect("query over NATS");
    let page: Value = serde_json::from_slice(&page).unwrap();
    let found = page["events"].as_array().unwrap();
    let expected = (0..50).filter(|i| i % 11 > 7).count();
    assert_eq!(found.len(), expected);
    assert!(found.iter().all(|e| e["severity"].as_u64().unwrap() > 7));
    let other = bus
        .query(&tenant("globex"), &QueryRequest::default())
        .await
        .unwrap();
    let other: Value = serde_json::from_slice(&other).unwrap();
    assert_eq!(
        other["events"],
        json!([]),
        "another tenant sees none of acme's events"
    );
    let bad = bus
        .query(
            &tenant("acme"),
            &QueryRequest {
                q: Some("severity >".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(bad.code, "invalid_query");

    // `vigil last --nats`: the newest events above a threshold, for people or scripts.
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["last", "--nats", SHARED_NATS, "--nats-namespace", &ns])
        .args(["--tenant", "acme", "--above", "7", "-n", "3", "-o", "json"])
        .env_remove("VIGIL_NATS")
        .env_remove("VIGIL_URL")
        .env_remove("VIGIL_TOKEN");
    let (status, stdout, stderr) = run_cli(cmd).await;
    assert!(status.success(), "{stderr}");
    let shown: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    assert_eq!(shown.len(), 3);
    assert!(shown.iter().all(|e| e["severity"].as_u64().unwrap() > 7));
    let mut newest_first = shown.clone();
    newest_first.sort_by_key(|e| std::cmp::Reverse(e["seq"].as_u64()));
    assert_eq!(shown, newest_first);

    // /readyz checks NATS too.
    let ready = reqwest::get(format!("{}/readyz", app.url)).await.unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn generated_events_flow_to_readers_and_poison_goes_to_the_dead_letters() {
    let ns = unique_name("gen");
    let app = TestApp::spawn_with(&bus_args(SHARED_NATS, &ns)).await;
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["generate", "--nats", SHARED_NATS, "--nats-namespace", &ns])
        .args([
            "--tenant", "acme", "--count", "300", "--rate", "0", "--seed", "3",
        ])
        .env_remove("VIGIL_NATS");
    let (status, _, stderr) = run_cli(cmd).await;
    assert!(status.success(), "{stderr}");

    // Poison: not JSON, not an event, a tenant name vigil refuses. Each goes to the dead
    // letters with its reason; none blocks the events behind it.
    let bus = bus(SHARED_NATS, &ns).await;
    let js = bus.jetstream();
    let names = bus.names();
    for (subject, payload) in [
        (
            names.events_subject(&tenant("acme")),
            "{not json".to_owned(),
        ),
        (
            names.events_subject(&tenant("acme")),
            json!({"severity": 3}).to_string(),
        ),
        (
            format!("{ns}.events.bad%tenant"),
            json!({"type": "x"}).to_string(),
        ),
        (
            names.events_subject(&tenant("acme")),
            json!({"id": "after-poison", "type": "ok.event"}).to_string(),
        ),
    ] {
        js.publish(subject, payload.into())
            .await
            .unwrap()
            .await
            .expect("JetStream ack");
    }

    let key = app.create_key("acme", &["events:read"]).await;
    let client = Client::new(&app.url, Some(key)).unwrap();
    assert_eq!(wait_for_count(&client, 301).await, 301);
    let events = all_events(&client, QueryParams::new()).await;
    assert_log_is_whole(&events);
    assert!(events.iter().any(|e| e["id"] == "after-poison"));

    let mut dead = js
        .get_stream(names.dead_letter_stream())
        .await
        .expect("dead-letter stream");
    let deadline = Instant::now() + PATIENCE;
    while dead.info().await.unwrap().state.messages < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut codes = BTreeSet::new();
    for seq in 1..=3 {
        let message = dead.get_raw_message(seq).await.expect("dead letter");
        let code = message
            .headers
            .get(vigil_bus::writer::HEADER_ERROR_CODE)
            .expect("reason header")
            .to_string();
        codes.insert(code);
    }
    assert_eq!(
        codes,
        BTreeSet::from([
            "invalid_json".to_owned(),
            "invalid_tenant".to_owned(),
            "missing_field".to_owned()
        ])
    );

    // Readers answer what the generator produced.
    let page = bus
        .query(
            &tenant("acme"),
            &QueryRequest {
                limit: Some(10),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let page: Value = serde_json::from_slice(&page).unwrap();
    assert_eq!(page["events"].as_array().unwrap().len(), 10);
    assert!(page["next_cursor"].is_string());
}

/// A writer killed with SIGKILL while it works through a backlog: after a restart every event
/// is stored exactly once, seqs are gap-free and the chain verifies.
#[tokio::test]
async fn a_writer_killed_mid_batch_loses_nothing_and_stores_nothing_twice() {
    const EVENTS: u64 = 20_000;
    let ns = unique_name("kill");
    let dir = TestDir::new();
    let args = bus_args(SHARED_NATS, &ns);
    // First start creates the stream and the consumer; then a backlog builds while no
    // writer runs.
    let app = TestApp::start(&dir, &args).await.expect("first start");
    let key = app.create_key("acme", &["events:read"]).await;
    app.stop().await;
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["generate", "--nats", SHARED_NATS, "--nats-namespace", &ns])
        .args(["--tenant", "acme", "--rate", "0", "--seed", "11"])
        .args(["--count", &EVENTS.to_string(), "--batch-size", "1000"])
        .env_remove("VIGIL_NATS");
    let (status, _, stderr) = run_cli(cmd).await;
    assert!(status.success(), "{stderr}");

    let mut kills = 0;
    for _round in 0..3 {
        let app = TestApp::start(&dir, &args).await.expect("restart");
        let client = Client::new(&app.url, Some(key.clone())).unwrap();
        // Kill as soon as some of the backlog is stored, while batches are in flight.
        let deadline = Instant::now() + PATIENCE;
        let mut stored = 0;
        while stored == 0 && Instant::now() < deadline {
            stored = client.count(&QueryParams::new()).await.unwrap_or(0);
        }
        if stored < EVENTS {
            app.kill().await;
            kills += 1;
        } else {
            app.stop().await;
            break;
        }
    }
    assert!(kills > 0, "the writer finished before it could be killed");

    let app = TestApp::start(&dir, &args).await.expect("final start");
    let client = Client::new(&app.url, Some(key)).unwrap();
    assert_eq!(wait_for_count(&client, EVENTS).await, EVENTS);
    let events = all_events(&client, QueryParams::new()).await;
    assert_eq!(events.len() as u64, EVENTS);
    assert_log_is_whole(&events);
    // Settled: nothing more arrives (no late duplicates).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(client.count(&QueryParams::new()).await.unwrap(), EVENTS);
}

/// NATS goes away under load and comes back: ingest answers 503 while it is gone, resumes by
/// itself after, and every event acknowledged with 202 ends up stored exactly once.
#[tokio::test]
async fn nats_restarted_under_load_loses_nothing_acknowledged() {
    let mut nats = PrivateNats::start();
    let url = nats.url();
    let app = TestApp::spawn_with(&[
        "--nats",
        &url,
        "--nats-timeout",
        "2s",
        "--nats-namespace",
        "restart",
    ])
    .await;
    let key = app
        .create_key("acme", &["events:write", "events:read"])
        .await;
    let client = Client::new(&app.url, Some(key)).unwrap();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for sender in 0..4 {
        let client = client.clone();
        let stop = std::sync::Arc::clone(&stop);
        senders.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut refused = 0u32;
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let batch: Vec<Value> = (0..10)
                    .map(|i| json!({"id": format!("s{sender}-{n}-{i}"), "type": "load.test"}))
                    .collect();
                n += 1;
                match client.ingest(&batch).await {
                    Ok(ack) => acked.extend(ack.events.into_iter().map(|e| e.id)),
                    Err(ClientError::Api {
                        status: 503,
                        code,
                        details,
                        ..
                    }) => {
                        assert_eq!(code, "bus_unavailable");
                        // A refused batch names its ids, for a retry that stores nothing twice.
                        let ids = details.as_ref().and_then(|d| d.get("ids")).cloned();
                        let sent: Vec<Value> = batch.iter().map(|e| e["id"].clone()).collect();
                        assert_eq!(ids, Some(Value::Array(sent)));
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("unexpected ingest error: {e}"),
                }
            }
            (acked, refused)
        }));
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.kill();
    // While NATS is down, the node says it is not ready.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let ready = reqwest::get(format!("{}/readyz", app.url)).await.unwrap();
        if ready.status() == 503 || Instant::now() > deadline {
            assert_eq!(ready.status(), 503);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.restart();
    // Back to ready by itself.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let ready = reqwest::get(format!("{}/readyz", app.url)).await.unwrap();
        if ready.status() == 200 || Instant::now() > deadline {
            assert_eq!(ready.status(), 200);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);

    let mut acked = BTreeSet::new();
    let mut refused = 0;
    for sender in senders {
        let (ids, r) = sender.await.unwrap();
        acked.extend(ids);
        refused += r;
    }
    assert!(refused > 0, "no request was refused while NATS was down");
    assert!(!acked.is_empty());

    // Everything acknowledged is stored (some refused batches may be stored too: they
    // reached the stream before the acknowledgement was lost).
    let deadline = Instant::now() + PATIENCE;
    let events = loop {
        let events = all_events(&client, QueryParams::new()).await;
        let present: BTreeSet<String> = events
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect();
        if acked.is_subset(&present) || Instant::now() > deadline {
            let lost = acked.difference(&present).count();
            assert_eq!(lost, 0, "{lost} acknowledged events lost");
            break events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Acknowledged after the restart too: the writer kept consuming by itself.
    assert_log_is_whole(&events);
}

/// Separate processes sharing a PostgreSQL store, as a scaled-out deployment runs them: an api
/// node, and two writer-only nodes sharing one consumer. The writers take the backlog together,
/// the tenant's seq stays gap-free and its chain linear, and a writer node serves its health and
/// metrics.
#[tokio::test]
async fn two_writers_on_one_postgres_store_keep_the_log_whole() {
    const EVENTS: u64 = 6_000;
    let ns = unique_name("pg");
    let dir = TestDir::on(crate::common::Backend::Postgres).await;
    let with_roles = |roles: &'static str| {
        let mut args = bus_args(SHARED_NATS, &ns);
        args.extend(["--roles", roles]);
        args
    };
    let api = TestApp::start(&dir, &with_roles("api,reader"))
        .await
        .expect("api node");
    let writers = [
        TestApp::start(&dir, &with_roles("writer"))
            .await
            .expect("first writer"),
        TestApp::start(&dir, &with_roles("writer"))
            .await
            .expect("second writer"),
    ];
    let key = api.create_key("acme", &["events:read"]).await;

    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["generate", "--nats", SHARED_NATS, "--nats-namespace", &ns])
        .args(["--tenant", "acme", "--rate", "0", "--seed", "5"])
        .args(["--count", &EVENTS.to_string(), "--batch-size", "500"])
        .env_remove("VIGIL_NATS");
    let (status, _, stderr) = run_cli(cmd).await;
    assert!(status.success(), "{stderr}");

    let client = Client::new(&api.url, Some(key)).unwrap();
    assert_eq!(wait_for_count(&client, EVENTS).await, EVENTS);
    let events = all_events(&client, QueryParams::new()).await;
    assert_eq!(events.len() as u64, EVENTS);
    assert_log_is_whole(&events);

    // Writer nodes answer probes and metrics, and nothing else; between them they stored
    // every event once.
    let mut stored = 0;
    for writer in &writers {
        let ready = reqwest::get(format!("{}/readyz", writer.url))
            .await
            .unwrap();
        assert_eq!(ready.status(), 200);
        let metrics = reqwest::get(format!("{}/metrics", writer.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        stored += metrics
            .lines()
            .find_map(|l| l.strip_prefix("vigil_bus_events_stored_total "))
            .map_or(0, |n| n.trim().parse::<u64>().unwrap());
        let events_route = reqwest::get(format!("{}/v1/events", writer.url))
            .await
            .unwrap();
        assert_eq!(events_route.status(), 404);
    }
    assert_eq!(stored, EVENTS);
}
