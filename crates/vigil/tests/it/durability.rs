//! What survives: graceful restarts, `kill -9` at random moments, a torn log tail, and (on
//! PostgreSQL) the database server crashing under load.
//!
//! Restarts and `kill -9` run on both stores; a restarted server is given the same data
//! directory and, on PostgreSQL, the same database. Data-directory exclusivity and log-file
//! damage are about the embedded store's files and run on it only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use vigil_client::{Client, ClientError, QueryParams};
use vigil_store_postgres::testing::PrivateServer;

use crate::common::{Backend, PATIENCE, TestApp, TestDir, all_events};

on_every_backend!(
    a_restart_keeps_every_event_exactly,
    kill_dash_nine_loses_nothing_acknowledged,
);

/// The newest write-ahead file of a data directory (`log/<id>.wal`, highest id).
fn newest_wal(data_dir: &std::path::Path) -> PathBuf {
    let log = data_dir.join("log");
    let mut wals: Vec<(u64, PathBuf)> = std::fs::read_dir(&log)
        .expect("listing the log directory")
        .filter_map(|e| {
            let path = e.ok()?.path();
            let id = path
                .file_name()?
                .to_str()?
                .strip_suffix(".wal")?
                .parse()
                .ok()?;
            Some((id, path))
        })
        .collect();
    wals.sort();
    let names: Vec<_> = std::fs::read_dir(&log)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    wals.pop()
        .unwrap_or_else(|| panic!("no .wal file in {}: {names:?}", log.display()))
        .1
}

fn seqs(events: &[Value]) -> Vec<u64> {
    let mut seqs: Vec<u64> = events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    seqs.sort_unstable();
    seqs
}

/// A graceful stop and a start over the same data (directory, and database on PostgreSQL):
/// the same events with the same seqs and hashes, the same root key, and the log goes on.
async fn a_restart_keeps_every_event_exactly(backend: Backend) {
    let dir = TestDir::on(backend).await;
    let app = TestApp::start(&dir, &["--segment-max-events", "100"])
        .await
        .expect("first start");
    let key = app
        .create_key("acme", &["events:write", "events:read"])
        .await;
    let client = Client::new(&app.url, Some(key.clone())).unwrap();
    for batch in 0..5 {
        let events: Vec<Value> = (0..50)
            .map(|i| json!({"id": format!("p-{batch}-{i}"), "type": "persist.me", "severity": i % 11, "details": {"batch": batch}}))
            .collect();
        client.ingest(&events).await.unwrap();
    }
    let before = all_events(&client, QueryParams::new()).await;
    assert_eq!(seqs(&before), (1..=250).collect::<Vec<_>>());

    let root_key = app.root_key.clone();
    let status = app.stop().await;
    assert!(status.success(), "graceful stop exit status {status}");

    let app = TestApp::start(&dir, &[]).await.expect("restart");
    assert_eq!(app.root_key, root_key);
    app.client()
        .list_keys()
        .await
        .expect("the root key still works");
    let client = Client::new(&app.url, Some(key)).unwrap();
    let after = all_events(&client, QueryParams::new()).await;
    assert_eq!(
        after, before,
        "same events, seqs and hashes after a restart"
    );
    assert_eq!(
        client
            .count(&QueryParams::new().q("details.batch:4 AND severity>=5"))
            .await
            .unwrap(),
        25
    );
    let next = client
        .ingest(&[json!({"type": "persist.me"})])
        .await
        .unwrap();
    assert_eq!(
        next.events[0].seq,
        Some(251),
        "the log continues where it stopped"
    );

    let key_files: Vec<_> = std::fs::read_dir(dir.data_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("admin.key"))
        .collect();
    assert_eq!(key_files.len(), 1, "no second root key was made");
}

/// An embedded data directory belongs to one process: a second server over it refuses to start
/// and says why, and the first one goes on serving.
#[tokio::test]
async fn an_embedded_data_directory_serves_one_server_at_a_time() {
    let dir = TestDir::new();
    let app = TestApp::start(&dir, &[]).await.expect("first start");
    let second = TestApp::start(&dir, &[])
        .await
        .expect_err("a second server on the same directory must not start");
    assert!(second.status.is_some_and(|s| !s.success()), "{second:?}");
    assert!(
        second.stderr.contains("in use"),
        "unclear error: {}",
        second.stderr
    );
    app.client()
        .list_keys()
        .await
        .expect("the first server still serves");
}

/// `kill -9` at a random moment while several writers post: after a restart every acknowledged
/// event is there, none twice, and each tenant's seqs are gap-free. Rounds from
/// `VIGIL_KILL_ROUNDS` (5).
async fn kill_dash_nine_loses_nothing_acknowledged(backend: Backend) {
    let rounds: u32 = std::env::var("VIGIL_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let tenants = ["alpha", "beta"];
    let dir = TestDir::on(backend).await;
    let args = ["--segment-max-events", "400"];
    let mut keys: BTreeMap<&str, String> = BTreeMap::new();
    let mut acked: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();

    for round in 0..rounds {
        let app = TestApp::start(&dir, &args)
            .await
            .unwrap_or_else(|f| panic!("round {round}: start failed: {f:?}"));
        if keys.is_empty() {
            for t in tenants {
                keys.insert(t, app.create_key(t, &["events:write", "events:read"]).await);
            }
        }
        verify(&app, &keys, &acked, round).await;

        let log: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let mut writers = Vec::new();
        for w in 0..4 {
            let tenant = tenants[w % tenants.len()];
            let client = Client::new(&app.url, Some(keys[tenant].clone())).unwrap();
            let log = Arc::clone(&log);
            writers.push(tokio::spawn(async move {
                for k in 0..100_000u32 {
                    let size = rand::random_range(1..40);
                    let events: Vec<Value> = (0..size)
                        .map(|i| json!({"id": format!("r{round}-w{w}-{k}-{i}"), "type": "crash.test", "details": {"k": k}}))
                        .collect();
                    match client.ingest(&events).await {
                        Ok(ack) => {
                            let mut log = log.lock().unwrap();
                            for e in ack.events {
                                log.push((tenant.to_owned(), e.id));
                            }
                        }
                        Err(_) => return,
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(rand::random_range(50..700))).await;
        app.kill().await;
        for w in writers {
            tokio::time::timeout(PATIENCE, w)
                .await
                .expect("a writer hung after the kill")
                .unwrap();
        }
        for (tenant, id) in log.lock().unwrap().drain(..) {
            acked.entry(tenant).or_default().insert(id);
        }
    }
    let app = TestApp::start(&dir, &args).await.expect("final start");
    verify(&app, &keys, &acked, rounds).await;
    let total: usize = acked.values().map(BTreeSet::len).sum();
    assert!(total > 0, "no write was ever acknowledged");
}

/// PostgreSQL only: the database server crashes (an immediate stop, recovered from its WAL on
/// the next start) while clients write through vigil, which keeps running. While the database
/// is down `/readyz` and the writes that cannot wait for it answer 503, nothing else; once it is
/// back writes flow again, and every acknowledged event is there, none twice, seqs gap-free.
#[tokio::test]
async fn a_database_crash_under_load_loses_nothing_acknowledged() {
    let server = Arc::new(
        tokio::task::spawn_blocking(PrivateServer::start)
            .await
            .expect("starting a private PostgreSQL server"),
    );
    let dir = TestDir::with_store(&server.url());
    let app = TestApp::start(&dir, &["--postgres-retry-for", "1s"])
        .await
        .unwrap_or_else(|f| panic!("start failed: {f:?}"));
    let tenants = ["alpha", "beta"];
    let mut keys: BTreeMap<&str, String> = BTreeMap::new();
    for t in tenants {
        keys.insert(t, app.create_key(t, &["events:write", "events:read"]).await);
    }

    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let refusals: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let tenant = tenants[w % tenants.len()];
        let client = Client::new(&app.url, Some(keys[tenant].clone())).unwrap();
        let (acked, refusals, stop) =
            (Arc::clone(&acked), Arc::clone(&refusals), Arc::clone(&stop));
        writers.push(tokio::spawn(async move {
            for k in 0..100_000u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let size = rand::random_range(1..20);
                let events: Vec<Value> = (0..size)
                    .map(|i| json!({"id": format!("w{w}-{k}-{i}"), "type": "db.crash.test"}))
                    .collect();
                match client.ingest(&events).await {
                    Ok(ack) => {
                        let mut acked = acked.lock().unwrap();
                        for e in ack.events {
                            acked.push((tenant.to_owned(), e.id));
                        }
                    }
                    Err(e) => refusals.lock().unwrap().push(describe(&e)),
                }
            }
        }));
    }
    let acked_count = || acked.lock().unwrap().len();
    wait_until("writes before the crash", || acked_count() > 200).await;

    let crashing = Arc::clone(&server);
    tokio::task::spawn_blocking(move || crashing.crash())
        .await
        .unwrap();
    let (status, code) = match app.anonymous().readyz().await {
        Err(ClientError::Api { status, code, .. }) => (status, code),
        other => panic!("readyz with the database down: {other:?}"),
    };
    assert_eq!(status, 503, "readyz with the database down: {code}");
    let restarting = Arc::clone(&server);
    tokio::task::spawn_blocking(move || restarting.restart())
        .await
        .unwrap();
    let after_restart = acked_count();
    wait_until("writes after the restart", || {
        acked_count() > after_restart + 200
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        tokio::time::timeout(PATIENCE, w)
            .await
            .expect("a writer hung")
            .unwrap();
    }
    app.anonymous()
        .readyz()
        .await
        .expect("ready once the database is back");

    let refusals = refusals.lock().unwrap().clone();
    assert!(
        refusals.iter().all(|r| r.starts_with("503 ")),
        "writes were refused otherwise than with 503: {refusals:?}\n{}",
        app.log()
    );
    let mut by_tenant: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (tenant, id) in acked.lock().unwrap().drain(..) {
        by_tenant.entry(tenant).or_default().insert(id);
    }
    verify(&app, &keys, &by_tenant, 0).await;
}

/// Polls `done` until it holds; panics after [`PATIENCE`].
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    tokio::time::timeout(PATIENCE, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("waited too long for {what}"));
}

/// `"<status> <code>"` of an API refusal; anything else as it is.
fn describe(error: &ClientError) -> String {
    match error {
        ClientError::Api { status, code, .. } => format!("{status} {code}"),
        other => format!("{other}"),
    }
}

async fn verify(
    app: &TestApp,
    keys: &BTreeMap<&str, String>,
    acked: &BTreeMap<String, BTreeSet<String>>,
    round: u32,
) {
    for (tenant, key) in keys {
        let client = Client::new(&app.url, Some(key.clone())).unwrap();
        let events = all_events(&client, QueryParams::new()).await;
        let present: BTreeSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(
            present.len(),
            events.len(),
            "round {round}, tenant {tenant}: an event is stored twice"
        );
        let lost: Vec<&String> = acked
            .get(*tenant)
            .into_iter()
            .flatten()
            .filter(|id| !present.contains(id.as_str()))
            .collect();
        assert!(
            lost.is_empty(),
            "round {round}, tenant {tenant}: {} acknowledged events lost, e.g. {:?}",
            lost.len(),
            lost.first()
        );
        let seqs = seqs(&events);
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "round {round}, tenant {tenant}: seqs not gap-free"
        );
        assert_eq!(
            client.count(&QueryParams::new()).await.unwrap(),
            events.len() as u64
        );
    }
}

/// Embedded only: a damaged last record (bit rot or a torn write) costs that record only: the
/// server starts, drops the tail and serves everything before it.
#[tokio::test]
async fn a_torn_log_tail_is_dropped_and_the_rest_served() {
    let dir = TestDir::new();
    let app = TestApp::start(&dir, &[]).await.expect("first start");
    let key = app
        .create_key("acme", &["events:write", "events:read"])
        .await;
    let client = Client::new(&app.url, Some(key.clone())).unwrap();
    let events: Vec<Value> = (0..20)
        .map(|i| json!({"id": format!("t-{i}"), "type": "tail.test"}))
        .collect();
    client.ingest(&events).await.unwrap();
    client
        .ingest(&[
            json!({"id": "t-last", "type": "tail.test", "details": {"note": "the last record"}}),
        ])
        .await
        .unwrap();
    let before = all_events(&client, QueryParams::new()).await;
    assert!(app.stop().await.success());

    // Flip the final byte: the last record's checksum no longer matches.
    let wal = newest_wal(&dir.data_dir());
    let mut bytes = std::fs::read(&wal).unwrap();
    let last = bytes.last_mut().expect("a non-empty log");
    *last ^= 0xff;
    std::fs::write(&wal, &bytes).unwrap();

    let app = TestApp::start(&dir, &[])
        .await
        .unwrap_or_else(|f| panic!("start after corruption failed: {f:?}"));
    let client = Client::new(&app.url, Some(key.clone())).unwrap();
    let after = all_events(&client, QueryParams::new()).await;
    assert_eq!(after.len(), 20);
    assert_eq!(
        after[..],
        before[..20],
        "everything before the damaged record is intact"
    );
    assert_eq!(
        client.get_event("t-last").await.unwrap_err().status(),
        Some(404)
    );
    let ack = client
        .ingest(&[json!({"id": "t-after", "type": "tail.test"})])
        .await
        .unwrap();
    assert_eq!(
        ack.events[0].seq,
        Some(21),
        "the log continues gap-free after the dropped tail"
    );
    assert!(app.stop().await.success());

    // Cut the file mid-record, as a crash during a write would.
    let wal = newest_wal(&dir.data_dir());
    let len = std::fs::metadata(&wal).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let app = TestApp::start(&dir, &[])
        .await
        .unwrap_or_else(|f| panic!("start after truncation failed: {f:?}"));
    let client = Client::new(&app.url, Some(key)).unwrap();
    assert_eq!(
        client.get_event("t-after").await.unwrap_err().status(),
        Some(404)
    );
    assert_eq!(
        seqs(&all_events(&client, QueryParams::new()).await),
        (1..=20).collect::<Vec<_>>()
    );
    app.client()
        .list_keys()
        .await
        .expect("credentials are untouched");
}

/// Regression (issue 12, item 8): every start rewrote `meta/auth.json` (the root-key bootstrap
/// saved the credential document even when the root key existed), so a server that crashed on
/// a full disk could not start again, not even to serve reads. A start over a data directory
/// that needs nothing new now leaves every meta document as it was: same file (inode), same
/// bytes.
#[tokio::test]
async fn a_start_writes_no_meta_document_that_did_not_change() {
    use std::os::unix::fs::MetadataExt as _;

    let dir = TestDir::new();
    let app = TestApp::start(&dir, &[]).await.expect("first start");
    assert!(app.stop().await.success());
    let meta = dir.data_dir().join("meta");
    let snapshot = || -> BTreeMap<String, (u64, Vec<u8>)> {
        std::fs::read_dir(&meta)
            .expect("listing meta/")
            .map(|e| {
                let path = e.expect("meta entry").path();
                let inode = std::fs::metadata(&path).expect("metadata").ino();
                let bytes = std::fs::read(&path).expect("reading a meta document");
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, (inode, bytes))
            })
            .collect()
    };
    let before = snapshot();
    assert!(before.contains_key("auth.json"), "{:?}", before.keys());

    let app = TestApp::start(&dir, &[]).await.expect("second start");
    let answered = app
        .client()
        .count(&QueryParams::new())
        .await
        .expect("a read");
    assert_eq!(answered, 0);
    assert!(app.stop().await.success());
    assert_eq!(snapshot(), before, "a start rewrote a meta document");
}
