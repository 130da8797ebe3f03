//! The Merkle tree kept beside each tenant's log in PostgreSQL: its stored hashes are exactly
//! those of a `Frontier` fed the stored events' canonical bytes in seq order, whoever wrote
//! them (one node, two nodes at once, an older vigil whose log had no tree yet), a failed
//! append leaves none of its hashes, and checkpoints keep the first one saved per size.

use std::sync::Arc;

use serde_json::json;
use vigil_event::Timestamp;
use vigil_integrity::tree::{Frontier, leaf_hash, stored_hash_count, tree_root};
use vigil_store::fixtures::{batch, event, prepare, tenant};
use vigil_store::{Store, StoreError, StoredCheckpoint, StoredEvent};
use vigil_store_postgres::testing::{TestDatabase, events_by_seq};
use vigil_store_postgres::{PgConfig, PgStore};

use crate::support::{connect, downgrade_to_version_1};

async fn open(db: &TestDatabase) -> Arc<PgStore> {
    Arc::new(connect(db, 3).await)
}

/// Every event of `tenant`, by seq.
async fn events(store: &PgStore, name: &str) -> Vec<StoredEvent> {
    events_by_seq(store, &tenant(name)).await
}

/// The stored hashes of the tree over `events`, computed from scratch.
fn expected_hashes(events: &[StoredEvent]) -> (Frontier, Vec<[u8; 32]>) {
    let mut frontier = Frontier::new();
    let mut stored = Vec::new();
    for e in events {
        frontier.push(leaf_hash(&e.canonical), |h| stored.push(*h));
    }
    (frontier, stored)
}

/// Checks the tenant's tree against its events: the size is the last seq, every stored hash is
/// the one a `Frontier` computes, no row lies beyond them, and the root read back is the
/// frontier's. Returns the tree size.
async fn assert_tree(store: &PgStore, db: &TestDatabase, name: &str) -> u64 {
    let evs = events(store, name).await;
    for (i, e) in evs.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "seq gap in {name}");
    }
    let size = evs.len() as u64;
    let (frontier, stored) = expected_hashes(&evs);
    assert_eq!(stored.len() as u64, stored_hash_count(size));
    let t = tenant(name);
    assert_eq!(store.tree_size(&t).await.expect("tree size"), size);
    let all: Vec<u64> = (0..stored.len() as u64).collect();
    let read = store.read_hashes(&t, &all).await.expect("read hashes");
    for (i, (got, want)) in read.iter().zip(&stored).enumerate() {
        assert_eq!(got, want, "{name}: stored hash {i} of {size} leaves");
    }
    let rows: i64 = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM vigil_tree_hashes WHERE tenant = $1",
            &[&name],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows as u64, stored_hash_count(size), "{name}: extra rows");
    let root = tree_root(size, async |idx: Vec<u64>| {
        store.read_hashes(&t, &idx).await
    })
    .await
    .expect("root");
    assert_eq!(root, frontier.root());
    size
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_hashes_are_those_of_the_events_in_seq_order() {
    let db = TestDatabase::create().await;
    let store = open(&db).await;
    // Batch sizes that cross many subtree boundaries, two tenants interleaved in one batch,
    // duplicates (no leaf) and a conflicting request (no leaf, nothing else of it written).
    for (round, n) in [1usize, 1, 2, 3, 7, 16, 33, 100].into_iter().enumerate() {
        let mut b = batch("a", &format!("r{round}"), n);
        b.extend(batch("b", &format!("r{round}"), n / 2));
        store.append(b).await.expect("append");
    }
    let dup = store
        .append(vec![event("a", "r0-0"), event("a", "fresh")])
        .await
        .expect("append with a duplicate");
    assert!(dup[0].duplicate && !dup[1].duplicate);
    let conflicting = prepare("a", json!({"id": "r1-0", "type": "other"}));
    let err = store
        .append(vec![event("a", "never"), conflicting])
        .await
        .expect_err("conflict");
    assert!(matches!(err, StoreError::Conflict(_)));

    assert_eq!(assert_tree(&store, &db, "a").await, 164);
    assert_eq!(assert_tree(&store, &db, "b").await, 79);
    assert_eq!(
        store.tree_sizes().await.expect("sizes"),
        vec![(tenant("a"), 164), (tenant("b"), 79)]
    );
    store.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashes_come_back_in_the_order_asked_and_only_the_tenants_own() {
    let db = TestDatabase::create().await;
    let store = open(&db).await;
    store.append(batch("a", "x", 10)).await.expect("append a");
    store.append(batch("b", "y", 3)).await.expect("append b");
    let (_, a_hashes) = expected_hashes(&events(&store, "a").await);
    let (_, b_hashes) = expected_hashes(&events(&store, "b").await);

    let asked = [5u64, 0, 5, 17, 2];
    let got = store.read_hashes(&tenant("a"), &asked).await.expect("read");
    let want: Vec<[u8; 32]> = asked.iter().map(|&i| a_hashes[i as usize]).collect();
    assert_eq!(got, want);
    assert!(
        store
            .read_hashes(&tenant("a"), &[])
            .await
            .expect("none")
            .is_empty()
    );

    // Tenant b has 4 stored hashes; index 10 exists only in a's tree.
    assert_eq!(
        store
            .read_hashes(&tenant("b"), &[3, 0])
            .await
            .expect("read b"),
        vec![b_hashes[3], b_hashes[0]]
    );
    for (name, asked, missing) in [
        ("b", vec![0, 10, 11], 10u64),
        ("b", vec![u64::MAX], u64::MAX),
        ("nobody", vec![0], 0),
        ("a", vec![1, stored_hash_count(10)], stored_hash_count(10)),
    ] {
        match store.read_hashes(&tenant(name), &asked).await {
            Err(StoreError::Internal(m)) => assert!(
                m.to_string().contains(&format!("hash {missing} ")),
                "{name} {asked:?}: {m}"
            ),
            other => panic!("{name} {asked:?}: {other:?}"),
        }
    }
    assert_eq!(store.tree_size(&tenant("nobody")).await.expect("size"), 0);
    store.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_appending_to_one_tenant_grow_one_tree() {
    let db = TestDatabase::create().await;
    let (a, b) = (open(&db).await, open(&db).await);
    let mut tasks = Vec::new();
    for (n, store) in [(0, &a), (1, &b), (2, &a), (3, &b)] {
        let store = Arc::clone(store);
        tasks.push(tokio::spawn(async move {
            for i in 0..30 {
                // Mixed sizes and a second tenant, so groups of both nodes interleave.
                let mut events = batch("shared", &format!("n{n}-{i}"), 1 + (i * 7 + n) % 13);
                events.push(event("side", &format!("n{n}-{i}")));
                store.append(events).await.expect("append");
            }
        }));
    }
    // Both nodes write the same ids too: one leaf each, whoever wins.
    let same = batch("shared", "same", 20);
    let (ra, rb) = tokio::join!(a.append(same.clone()), b.append(same));
    ra.expect("a");
    rb.expect("b");
    for t in tasks {
        t.await.expect("writer");
    }
    let size = assert_tree(&a, &db, "shared").await;
    assert!(size > 20 + 4 * 30);
    assert_eq!(assert_tree(&b, &db, "side").await, 4 * 30);
    // Both nodes see the same tree.
    assert_eq!(b.tree_size(&tenant("shared")).await.expect("size"), size);
    a.shutdown().await.expect("shutdown");
    b.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_schema_version_1_gets_its_trees_built_when_opened() {
    let db = TestDatabase::create().await;
    let store = open(&db).await;
    // More events than one build transaction takes, so the build goes in several.
    for i in 0..12 {
        store
            .append(batch("big", &format!("b{i}"), 1_000))
            .await
            .expect("append");
    }
    store.append(batch("small", "s", 5)).await.expect("append");
    store.shutdown().await.expect("shutdown");
    drop(store);
    downgrade_to_version_1(&db).await;

    let store = open(&db).await;
    assert_eq!(assert_tree(&store, &db, "big").await, 12_000);
    assert_eq!(assert_tree(&store, &db, "small").await, 5);
    // Appends go on from the built trees, and a second open has nothing to build.
    store
        .append(vec![event("big", "after"), event("small", "after")])
        .await
        .expect("append");
    store.shutdown().await.expect("shutdown");
    drop(store);
    let store = open(&db).await;
    assert_eq!(assert_tree(&store, &db, "big").await, 12_001);
    assert_eq!(assert_tree(&store, &db, "small").await, 6);
    store.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_catches_up_with_events_an_older_vigil_wrote() {
    // A rolling upgrade: nodes of the previous version go on appending after the schema moved
    // to version 2, moving seq but not the frontier. The next append of this version must
    // extend the tree over those events before its own.
    let db = TestDatabase::create().await;
    let store = open(&db).await;
    store.append(batch("t", "new", 11)).await.expect("append");
    store.append(batch("t", "old", 25)).await.expect("append");
    let evs = events(&store, "t").await;
    let (at_11, _) = expected_hashes(&evs[..11]);
    let client = db.client().await;
    client
        .execute(
            "UPDATE vigil_tenants SET frontier = $1 WHERE tenant = 't'",
            &[&at_11.to_bytes()],
        )
        .await
        .expect("rewind frontier");
    let idx = i64::try_from(stored_hash_count(11)).expect("idx");
    client
        .execute(
            "DELETE FROM vigil_tree_hashes WHERE tenant = 't' AND idx >= $1",
            &[&idx],
        )
        .await
        .expect("forget hashes");
    assert_eq!(store.tree_size(&tenant("t")).await.expect("size"), 11);

    // A group of duplicates only still leaves the tree whole.
    let dup = store
        .append(vec![event("t", "new-0")])
        .await
        .expect("duplicate");
    assert!(dup[0].duplicate);
    assert_eq!(assert_tree(&store, &db, "t").await, 36);

    // And with new events after the catch-up.
    client
        .execute(
            "UPDATE vigil_tenants SET frontier = $1 WHERE tenant = 't'",
            &[&at_11.to_bytes()],
        )
        .await
        .expect("rewind frontier");
    client
        .execute(
            "DELETE FROM vigil_tree_hashes WHERE tenant = 't' AND idx >= $1",
            &[&idx],
        )
        .await
        .expect("forget hashes");
    store.append(batch("t", "more", 4)).await.expect("append");
    assert_eq!(assert_tree(&store, &db, "t").await, 40);
    store.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_lost_events_before_it_had_a_tree_is_refused_not_misbuilt() {
    let db = TestDatabase::create().await;
    let store = open(&db).await;
    store.append(batch("t", "e", 10)).await.expect("append");
    store.shutdown().await.expect("shutdown");
    drop(store);
    downgrade_to_version_1(&db).await;
    // Retention removed seq 4 while the database was at version 1.
    db.client()
        .await
        .batch_execute("DELETE FROM vigil_events WHERE tenant = 't' AND seq = 4")
        .await
        .expect("delete");
    let err = PgStore::connect(PgConfig {
        pool_size: 3,
        ..PgConfig::new(db.url())
    })
    .await
    .expect_err("an unbuildable tree");
    match err {
        StoreError::Internal(m) => {
            let m = m.to_string();
            assert!(m.contains("tenant t") && m.contains("seq 4"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_append_leaves_no_hashes_behind() {
    let db = TestDatabase::create().await;
    let store = open(&db).await;
    store.append(batch("t", "ok", 5)).await.expect("append");
    // The hashes are the last rows the transaction writes: fail right there.
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN RAISE EXCEPTION 'refused by test'; END $$;
             CREATE TRIGGER refuse BEFORE INSERT ON vigil_tree_hashes
                 FOR EACH ROW EXECUTE FUNCTION refuse();",
        )
        .await
        .expect("trigger");
    let err = store
        .append(batch("t", "lost", 3))
        .await
        .expect_err("refused");
    assert!(matches!(err, StoreError::Internal(_)), "{err:?}");
    client
        .batch_execute("DROP TRIGGER refuse ON vigil_tree_hashes")
        .await
        .expect("drop trigger");
    // Neither the events nor their hashes were kept; the log and tree go on from seq 5.
    assert_eq!(assert_tree(&store, &db, "t").await, 5);
    let appended = store.append(batch("t", "next", 2)).await.expect("append");
    assert_eq!(appended[0].seq, 6);
    assert_eq!(assert_tree(&store, &db, "t").await, 7);
    store.shutdown().await.expect("shutdown");
}

fn checkpoint(size: u64, note: &str, nanos: i64) -> StoredCheckpoint {
    StoredCheckpoint {
        size,
        root: [size as u8; 32],
        timestamp: Timestamp::from_nanos(nanos),
        note: note.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_keep_the_first_per_size_and_list_by_size() {
    let db = TestDatabase::create().await;
    let store = open(&db).await;
    let (a, b) = (tenant("a"), tenant("b"));
    assert_eq!(store.checkpoint(&a, None).await.expect("none"), None);
    assert!(store.checkpoints(&a).await.expect("none").is_empty());

    // Full nanosecond precision, saved out of size order.
    let c10 = checkpoint(
        10,
        "vigil/a\n10\nroot\n\n— sig\n",
        1_700_000_000_123_456_789,
    );
    let c3 = checkpoint(3, "note 3", 1_699_999_999_000_000_001);
    let c42 = checkpoint(42, "note 42", 1_700_000_001_999_999_999);
    for c in [&c10, &c3, &c42] {
        store.save_checkpoint(&a, c).await.expect("save");
    }
    // A second checkpoint of a size is a no-op.
    store
        .save_checkpoint(&a, &checkpoint(10, "another note", 1))
        .await
        .expect("save again");
    store
        .save_checkpoint(&b, &checkpoint(99, "b's", 5))
        .await
        .expect("save b");

    assert_eq!(
        store.checkpoint(&a, Some(10)).await.expect("10"),
        Some(c10.clone())
    );
    assert_eq!(
        store.checkpoint(&a, None).await.expect("latest"),
        Some(c42.clone())
    );
    assert_eq!(store.checkpoint(&a, Some(11)).await.expect("11"), None);
    assert_eq!(
        store.checkpoint(&a, Some(u64::MAX)).await.expect("max"),
        None
    );
    assert_eq!(
        store.checkpoint(&a, Some(99)).await.expect("b's size"),
        None
    );
    assert_eq!(
        store.checkpoints(&a).await.expect("list"),
        vec![c3, c10, c42]
    );
    assert_eq!(
        store.checkpoints(&b).await.expect("list b"),
        vec![checkpoint(99, "b's", 5)]
    );
    assert!(matches!(
        store
            .save_checkpoint(&a, &checkpoint(u64::MAX, "too big", 0))
            .await,
        Err(StoreError::Internal(_))
    ));
    store.shutdown().await.expect("shutdown");
}
