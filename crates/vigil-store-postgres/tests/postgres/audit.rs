//! What `vigil verify --store postgres://…` relies on: [`PgStore::log_range`] reads a tenant's
//! log front to back in seq order whatever the partitions, the limit or the size of its events,
//! and [`PgStore::connect_read_only`] opens a database without writing to it.
//!
//! The verifier used to replay logs through queries filtered on `seq`: a page cut at the byte
//! bound lost the events after the cut (reported as missing: false tampering), the filter cast
//! `seq` so no index served it (quadratic replay), and opening the store migrated the database,
//! created partitions, built trees and started a writer in the database under audit. These
//! tests pin the replacements, and end with the audit itself: clean on an untouched log, and
//! findings once rows are altered behind vigil's back.

use serde_json::json;
use tokio_postgres::NoTls;
use vigil_event::{Limits, Prepared, Timestamp, normalize};
use vigil_integrity::audit::{AuditReport, Auditor};
use vigil_integrity::checkpoint::{SigningKey, VerifierKey, origin};
use vigil_integrity::tree::{Frontier, leaf_hash, tree_root};
use vigil_query::Expr;
use vigil_store::fixtures::{prepare, tenant};
use vigil_store::{Store, StoreError, StoredCheckpoint, StoredEvent};
use vigil_store_postgres::testing::{TestDatabase, admin_url, events_by_seq};
use vigil_store_postgres::{PgConfig, PgStore};

fn config(db: &TestDatabase) -> PgConfig {
    PgConfig {
        pool_size: 3,
        ..PgConfig::new(db.url())
    }
}

async fn open(db: &TestDatabase) -> PgStore {
    PgStore::connect(config(db)).await.expect("connect")
}

async fn open_read_only(db: &TestDatabase) -> PgStore {
    PgStore::connect_read_only(config(db))
        .await
        .expect("connect read-only")
}

/// `n` events; every third in a day that has no partition (the default one), so a tenant's
/// log is spread over partitions out of seq order.
fn batch(tenant_name: &str, prefix: &str, n: usize) -> Vec<Prepared> {
    (0..n)
        .map(|i| {
            let mut body =
                json!({"id": format!("{prefix}-{i}"), "type": "audit.test", "details": {"i": i}});
            if i % 3 == 0 {
                body["time"] = json!(format!("2001-02-{:02}T00:00:00Z", 1 + i % 28));
            }
            prepare(tenant_name, body)
        })
        .collect()
}

/// Every event of `tenant` through a query, by seq: what `log_range` must agree with.
async fn queried(store: &PgStore, name: &str) -> Vec<StoredEvent> {
    events_by_seq(store, &tenant(name)).await
}

/// The whole log of `tenant` by keyset, `limit` at a time.
async fn read_all(store: &PgStore, name: &str, limit: usize) -> Vec<StoredEvent> {
    let mut all: Vec<StoredEvent> = Vec::new();
    loop {
        let after = all.last().map_or(0, |e| e.seq);
        let page = store
            .log_range(&tenant(name), after, limit)
            .await
            .expect("log range");
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

fn seqs(events: &[StoredEvent]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_range_reads_one_tenants_log_in_seq_order_from_a_position() {
    let db = TestDatabase::create().await;
    let store = open(&db).await;
    // Two tenants in the same batches, so their rows interleave in every partition.
    for round in 0..4 {
        let mut b = batch("a", &format!("r{round}"), 10);
        b.extend(batch("b", &format!("r{round}"), 3));
        store.append(b).await.expect("append");
    }
    let (a, b) = (tenant("a"), tenant("b"));
    let everything = queried(&store, "a").await;
    assert_eq!(everything.len(), 40);

    assert_eq!(
        store.log_range(&a, 0, 1_000).await.expect("all"),
        everything
    );
    assert_eq!(
        seqs(&store.log_range(&a, 0, 3).await.expect("first")),
        [1, 2, 3]
    );
    assert_eq!(
        store.log_range(&a, 17, 4).await.expect("middle"),
        everything[17..21]
    );
    assert_eq!(
        seqs(&store.log_range(&a, 38, 10).await.expect("tail")),
        [39, 40]
    );
    for after in [40, 41, u64::MAX] {
        assert!(
            store
                .log_range(&a, after, 10)
                .await
                .expect("end")
                .is_empty()
        );
    }
    assert!(store.log_range(&a, 0, 0).await.expect("limit 0").is_empty());
    assert_eq!(read_all(&store, "a", 7).await, everything);

    // Tenant b's own log: its seqs, not a's rows.
    let b_log = store.log_range(&b, 0, 1_000).await.expect("b");
    assert_eq!(b_log, queried(&store, "b").await);
    assert_eq!(seqs(&b_log), (1..=12).collect::<Vec<_>>());
    assert!(
        store
            .log_range(&tenant("nobody"), 0, 10)
            .await
            .expect("nobody")
            .is_empty()
    );
    store.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_range_progresses_past_events_beyond_the_byte_bound() {
    // A read stops once it holds 32 MiB. Events of 12 MiB: the first read gets three (the
    // bound is reached within the third), the next the rest; an event larger than the bound
    // comes alone, never as an empty answer that would end the reader's replay.
    let db = TestDatabase::create().await;
    let store = open(&db).await;
    const MIB: usize = 1024 * 1024;
    let limits = Limits {
        max_event_bytes: 48 * MIB,
        max_string_bytes: 48 * MIB,
        ..Limits::default()
    };
    let big = |i: usize, size: usize| {
        normalize(
            json!({"id": format!("big-{i}"), "type": "audit.big", "details": {"blob": "x".repeat(size)}}),
            &limits,
        )
        .expect("valid")
        .prepare(&tenant("big"), Timestamp::now(), "audit")
    };
    for i in 0..5 {
        store.append(vec![big(i, 12 * MIB)]).await.expect("append");
    }
    store.append(vec![big(5, 40 * MIB)]).await.expect("append");
    store
        .append(vec![prepare(
            "big",
            json!({"id": "small", "type": "audit.small"}),
        )])
        .await
        .expect("append");
    let t = tenant("big");

    let first = store.log_range(&t, 0, 100).await.expect("first read");
    assert_eq!(seqs(&first), [1, 2, 3]);
    assert!(first.iter().all(|e| e.canonical.len() > 12 * MIB));
    assert_eq!(
        seqs(&store.log_range(&t, 3, 100).await.expect("second read")),
        [4, 5, 6]
    );
    let huge = store.log_range(&t, 5, 100).await.expect("the huge one");
    assert_eq!(seqs(&huge), [6]);
    assert!(huge[0].canonical.len() > 40 * MIB);
    assert_eq!(seqs(&store.log_range(&t, 6, 100).await.expect("rest")), [7]);
    // Read back intact: the leaves are those of the events as appended.
    let all = read_all(&store, "big", 100).await;
    assert_eq!(seqs(&all), (1..=7).collect::<Vec<_>>());
    let mut frontier = Frontier::new();
    for e in &all {
        frontier.push(leaf_hash(&e.canonical), |_| {});
    }
    let root = tree_root(7, async |idx: Vec<u64>| store.read_hashes(&t, &idx).await)
        .await
        .expect("root");
    assert_eq!(root, frontier.root());
    store.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_sharing_a_seq_are_never_split_between_reads() {
    // vigil never writes two rows with one seq, but someone with access to the database can.
    // A keyset reader resumes after the last seq it got: had a read ended between two such
    // rows, the second would never be read, and the audit would not see it.
    let db = TestDatabase::create().await;
    let store = open(&db).await;
    store.append(batch("t", "e", 6)).await.expect("append");
    db.client()
        .await
        .batch_execute(
            "INSERT INTO vigil_events SELECT * FROM vigil_events WHERE tenant = 't' AND seq = 3",
        )
        .await
        .expect("duplicate a row");
    let t = tenant("t");
    assert_eq!(
        seqs(&store.log_range(&t, 0, 3).await.expect("read")),
        [1, 2, 3, 3]
    );
    assert_eq!(
        seqs(&store.log_range(&t, 2, 1).await.expect("read")),
        [3, 3]
    );
    assert_eq!(
        seqs(&store.log_range(&t, 3, 2).await.expect("read")),
        [4, 5]
    );
    assert_eq!(seqs(&read_all(&store, "t", 3).await), [1, 2, 3, 3, 4, 5, 6]);
    store.shutdown().await.expect("shutdown");
}

/// The names of the event partitions.
async fn partitions(db: &TestDatabase) -> Vec<String> {
    db.client()
        .await
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'vigil_events'::regclass ORDER BY 1",
            &[],
        )
        .await
        .expect("partitions")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Makes every session of the test database read-only from now on: any write anyone attempts
/// in it fails.
async fn forbid_writes(db: &TestDatabase) {
    let (client, conn) = tokio_postgres::connect(&admin_url(), NoTls)
        .await
        .expect("admin connection");
    tokio::spawn(conn);
    client
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" SET default_transaction_read_only = on",
            db.name()
        ))
        .await
        .expect("alter database");
}

fn assert_read_only_refusal(result: Result<impl std::fmt::Debug, StoreError>, what: &str) {
    match result {
        Err(StoreError::Unavailable(m)) => {
            assert!(m.contains("opened read-only"), "{what}: {m}");
        }
        other => panic!("{what}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_store_reads_everything_and_writes_nothing() {
    let db = TestDatabase::create().await;
    let store = open(&db).await;
    let appended = store.append(batch("t", "e", 10)).await.expect("append");
    let cp = StoredCheckpoint {
        size: 10,
        root: [7; 32],
        timestamp: Timestamp::from_nanos(1_700_000_000_000_000_000),
        note: "note".into(),
    };
    store
        .save_checkpoint(&tenant("t"), &cp)
        .await
        .expect("checkpoint");
    store.save_meta("auth", b"{}").await.expect("meta");
    let events = queried(&store, "t").await;
    store.shutdown().await.expect("shutdown");
    drop(store);
    // A partition ahead that a writable store would create again when it opens.
    let before = partitions(&db).await;
    let last = before.last().expect("partitions").clone();
    db.client()
        .await
        .batch_execute(&format!("DROP TABLE \"{last}\""))
        .await
        .expect("drop a partition");
    // From here on the database refuses every write: opening and reading must not try one.
    forbid_writes(&db).await;

    let store = open_read_only(&db).await;
    assert!(store.is_read_only());
    let t = tenant("t");
    store.ready().await.expect("ready");
    assert_eq!(
        store.tree_sizes().await.expect("sizes"),
        vec![(t.clone(), 10)]
    );
    assert_eq!(store.tree_size(&t).await.expect("size"), 10);
    assert_eq!(
        store.checkpoints(&t).await.expect("checkpoints"),
        vec![cp.clone()]
    );
    assert_eq!(store.checkpoint(&t, None).await.expect("latest"), Some(cp));
    assert_eq!(store.log_range(&t, 0, 100).await.expect("log"), events);
    assert_eq!(queried(&store, "t").await, events);
    assert_eq!(
        store
            .count(&t, &Expr::All, None, None)
            .await
            .expect("count"),
        10
    );
    let id = &appended[3].id;
    assert_eq!(
        store.get(&t, id).await.expect("get").map(|e| e.seq),
        Some(4)
    );
    let root = tree_root(10, async |idx: Vec<u64>| store.read_hashes(&t, &idx).await)
        .await
        .expect("root");
    let mut frontier = Frontier::new();
    for e in &events {
        frontier.push(leaf_hash(&e.canonical), |_| {});
    }
    assert_eq!(root, frontier.root());
    assert_eq!(
        store.load_meta("auth").await.expect("meta").as_deref(),
        Some(&b"{}"[..])
    );

    assert_read_only_refusal(store.append(batch("t", "more", 1)).await, "append");
    assert_read_only_refusal(store.append(Vec::new()).await, "empty append");
    assert_read_only_refusal(
        store
            .save_checkpoint(
                &t,
                &StoredCheckpoint {
                    size: 5,
                    root: [1; 32],
                    timestamp: Timestamp::from_nanos(0),
                    note: "n".into(),
                },
            )
            .await,
        "save_checkpoint",
    );
    assert_read_only_refusal(store.save_meta("auth", b"{\"x\":1}").await, "save_meta");
    assert_read_only_refusal(
        store.save_meta_if("other", None, b"{}").await,
        "save_meta_if",
    );
    assert_read_only_refusal(store.run_maintenance().await, "run_maintenance");
    assert_read_only_refusal(
        store.drop_partitions_before(Timestamp::now()).await,
        "drop_partitions_before",
    );
    // Nothing was created again, and nothing of the refused writes is there.
    assert_eq!(partitions(&db).await.len(), before.len() - 1);
    assert!(!partitions(&db).await.contains(&last));
    assert_eq!(store.tree_size(&t).await.expect("size"), 10);
    assert_eq!(store.checkpoints(&t).await.expect("checkpoints").len(), 1);
    assert_eq!(store.load_meta("other").await.expect("meta"), None);

    store.shutdown().await.expect("shutdown");
    assert!(matches!(
        store.ready().await,
        Err(StoreError::Unavailable(_))
    ));
}

/// The vigil tables in the test database.
async fn vigil_tables(db: &TestDatabase) -> Vec<String> {
    db.client()
        .await
        .query(
            "SELECT tablename::text FROM pg_tables WHERE tablename LIKE 'vigil%' ORDER BY 1",
            &[],
        )
        .await
        .expect("tables")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn migrations(db: &TestDatabase) -> Vec<i32> {
    db.client()
        .await
        .query("SELECT version FROM vigil_migrations ORDER BY 1", &[])
        .await
        .expect("migrations")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn refusal(result: Result<PgStore, StoreError>) -> String {
    match result {
        Err(StoreError::Internal(m)) => m.to_string(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_open_refuses_a_database_it_would_have_to_migrate() {
    // An empty database: no schema at all, and none made.
    let db = TestDatabase::create().await;
    let m = refusal(PgStore::connect_read_only(config(&db)).await);
    assert!(
        m.contains("no vigil schema") && m.contains("never migrates"),
        "{m}"
    );
    assert!(vigil_tables(&db).await.is_empty());

    // Schema version 1: the Merkle tables of version 2 are not added.
    let store = open(&db).await;
    store.append(batch("t", "e", 3)).await.expect("append");
    store.shutdown().await.expect("shutdown");
    drop(store);
    crate::support::downgrade_to_version_1(&db).await;
    let tables = vigil_tables(&db).await;
    let m = refusal(PgStore::connect_read_only(config(&db)).await);
    assert!(
        m.contains("version 1 is older than this vigil's (3)") && m.contains("never migrates"),
        "{m}"
    );
    assert_eq!(vigil_tables(&db).await, tables);
    assert_eq!(migrations(&db).await, [1]);

    // A newer vigil's schema.
    db.client()
        .await
        .batch_execute("INSERT INTO vigil_migrations (version) VALUES (2), (99)")
        .await
        .expect("pretend newer");
    let m = refusal(PgStore::connect_read_only(config(&db)).await);
    assert!(m.contains("version 99 is newer"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_open_refuses_a_log_whose_tree_it_would_have_to_build() {
    // Older vigil nodes appended after the upgrade (a rolling upgrade): the tree covers the
    // first 4 events only. An audit bounded by the tree size would stop short; building the
    // tree would write. So the read-only open refuses, and leaves the tree as it was.
    let db = TestDatabase::create().await;
    let store = open(&db).await;
    store.append(batch("t", "e", 4)).await.expect("append");
    let mut at_4 = Frontier::new();
    for e in queried(&store, "t").await {
        at_4.push(leaf_hash(&e.canonical), |_| {});
    }
    store.append(batch("t", "f", 6)).await.expect("append");
    store.shutdown().await.expect("shutdown");
    drop(store);
    let client = db.client().await;
    client
        .execute(
            "UPDATE vigil_tenants SET frontier = $1 WHERE tenant = 't'",
            &[&at_4.to_bytes()],
        )
        .await
        .expect("rewind frontier");
    let m = refusal(PgStore::connect_read_only(config(&db)).await);
    assert!(
        m.contains("tenant t") && m.contains("covers 4 of its 10 events"),
        "{m}"
    );
    let frontier: Vec<u8> = client
        .query_one("SELECT frontier FROM vigil_tenants WHERE tenant = 't'", &[])
        .await
        .expect("frontier")
        .get(0);
    assert_eq!(frontier, at_4.to_bytes());
}

/// Events per read in [`audit`], small so the logs here span many reads.
const AUDIT_BATCH: usize = 50;

/// What `vigil verify --store` does: every tenant's checkpoints, then its log by keyset up to
/// the larger of its tree size and its largest checkpoint.
async fn audit(store: &PgStore, key: VerifierKey) -> AuditReport {
    let mut auditor = Auditor::new(key);
    for (t, size) in store.tree_sizes().await.expect("sizes") {
        let checkpoints = store.checkpoints(&t).await.expect("checkpoints");
        for cp in &checkpoints {
            auditor.add_checkpoint(t.as_str(), cp.size, &cp.root, &cp.note);
        }
        let end = checkpoints
            .iter()
            .map(|c| c.size)
            .max()
            .unwrap_or(0)
            .max(size);
        let mut after = 0;
        while after < end {
            let events = store
                .log_range(&t, after, AUDIT_BATCH)
                .await
                .expect("log range");
            let Some(last) = events.last() else { break };
            after = last.seq;
            for e in events.iter().filter(|e| e.seq <= end) {
                auditor.push(t.as_str(), e.seq, &e.canonical, &e.hash);
            }
        }
    }
    auditor.finish()
}

/// Signs and saves the checkpoint of `name`'s tree at `size`, as the server's checkpoint signer does.
async fn sign(store: &PgStore, key: &SigningKey, name: &str, size: u64) {
    let t = tenant(name);
    let root = tree_root(size, async |idx: Vec<u64>| {
        store.read_hashes(&t, &idx).await
    })
    .await
    .expect("root");
    let seconds = 1_700_000_000 + i64::try_from(size).expect("size");
    let signed_at = chrono::DateTime::from_timestamp(seconds, 0).expect("time");
    let note = key.sign_checkpoint(&origin(name), size, &root, signed_at);
    store
        .save_checkpoint(
            &t,
            &StoredCheckpoint {
                size,
                root,
                timestamp: Timestamp::from_nanos(seconds * 1_000_000_000),
                note,
            },
        )
        .await
        .expect("save checkpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_over_log_range_is_clean_until_rows_are_altered() {
    let db = TestDatabase::create().await;
    let store = open(&db).await;
    let key = SigningKey::generate("audit.test").expect("key");
    for round in 0..6 {
        let mut b = batch("a", &format!("r{round}"), 60);
        b.extend(batch("b", &format!("r{round}"), 7));
        store.append(b).await.expect("append");
    }
    // Checkpoints inside reads, on a read boundary and at the end.
    for size in [1, 50, 173, 360] {
        sign(&store, &key, "a", size).await;
    }
    sign(&store, &key, "b", 42).await;
    store.shutdown().await.expect("shutdown");
    drop(store);

    let store = open_read_only(&db).await;
    let report = audit(&store, key.verifier()).await;
    assert!(report.is_clean(), "{:?}", report.findings);
    assert_eq!(report.events, 360 + 42);
    assert_eq!(report.checkpoints_checked, 5);
    let a = report.tenants.iter().find(|t| t.tenant == "a").expect("a");
    assert_eq!(a.last_verified_size, 360);

    // One byte of one event's canonical JSON changed behind vigil's back.
    let client = db.client().await;
    client
        .batch_execute(
            "UPDATE vigil_events
                SET canonical = convert_to(
                        replace(convert_from(canonical, 'UTF8'), 'audit.test', 'audit.tesT'),
                        'UTF8')
              WHERE tenant = 'a' AND seq = 120",
        )
        .await
        .expect("tamper");
    let report = audit(&store, key.verifier()).await;
    assert!(!report.is_clean());
    assert!(
        report
            .findings
            .iter()
            .all(|f| f.tenant.as_deref() == Some("a")),
        "{:?}",
        report.findings
    );
    assert!(
        report.findings.iter().any(|f| f.seq == Some(120)),
        "{:?}",
        report.findings
    );
    // The checkpoints before the altered event still hold; the ones after it do not.
    let a = report.tenants.iter().find(|t| t.tenant == "a").expect("a");
    assert_eq!(a.last_verified_size, 50);

    // The last events of b removed: its checkpoint covers events the log no longer has.
    client
        .batch_execute("DELETE FROM vigil_events WHERE tenant = 'b' AND seq > 40")
        .await
        .expect("delete");
    let report = audit(&store, key.verifier()).await;
    let b: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.tenant.as_deref() == Some("b"))
        .collect();
    assert!(
        b.iter()
            .any(|f| f.range == Some(41..=42) && f.message.contains("removed")),
        "{b:?}"
    );

    // A copy of a row at a read boundary is read, and reported.
    client
        .batch_execute(
            "INSERT INTO vigil_events SELECT * FROM vigil_events WHERE tenant = 'a' AND seq = 50",
        )
        .await
        .expect("duplicate");
    let report = audit(&store, key.verifier()).await;
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.seq == Some(50) && f.message.contains("found seq 50 again")),
        "{:?}",
        report.findings
    );
    store.shutdown().await.expect("shutdown");
}
