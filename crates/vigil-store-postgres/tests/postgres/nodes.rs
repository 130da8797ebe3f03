//! Several vigil nodes on one database: concurrent writers keep every tenant's seq gap-free and
//! its chain linear, ids stay idempotent across nodes, and retention on one node does not break
//! writes on another whose partition list went stale, nor the Merkle tree of the log.

use std::sync::Arc;

use vigil_event::{EventId, Hash, Prepared, TenantId, Timestamp, chain_hash, leaf_hash};
use vigil_integrity::tree::{stored_hash_count, stored_hash_index};
use vigil_store::fixtures::event_at;
use vigil_store::{Store, StoredEvent};
use vigil_store_postgres::PgStore;
use vigil_store_postgres::testing::{TestDatabase, events_by_seq};

use crate::support::connect;

async fn node(db: &TestDatabase) -> Arc<PgStore> {
    Arc::new(connect(db, 3).await)
}

async fn all(store: &PgStore, tenant: &str) -> Vec<StoredEvent> {
    events_by_seq(store, &TenantId::parse(tenant).expect("tenant")).await
}

fn assert_linear(events: &[StoredEvent]) {
    let mut prev: Hash = [0; 32];
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "seq gap");
        prev = chain_hash(&prev, &leaf_hash(&e.canonical));
        assert_eq!(e.hash, prev, "chain broken at seq {}", e.seq);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_writing_one_tenant_keep_seq_and_chain_linear() {
    let db = TestDatabase::create().await;
    let (a, b) = (node(&db).await, node(&db).await);
    let mut tasks = Vec::new();
    for (n, store) in [(0, &a), (1, &b), (2, &a), (3, &b)] {
        let store = Arc::clone(store);
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                // Two tenants in one batch: heads are locked in tenant order on both nodes.
                let batch = vec![
                    event_at("shared", &format!("n{n}-{i}"), Timestamp::now()),
                    event_at("other", &format!("n{n}-{i}"), Timestamp::now()),
                ];
                store.append(batch).await.expect("append");
            }
        }));
    }
    // Both nodes also race on the same ids: one write each, the rest duplicates.
    let same: Vec<Prepared> = (0..10)
        .map(|i| {
            event_at(
                "shared",
                &format!("dup-{i}"),
                Timestamp::from_nanos(1_700_000_000_000_000_000),
            )
        })
        .collect();
    let (ra, rb) = tokio::join!(a.append(same.clone()), b.append(same));
    for t in tasks {
        t.await.expect("writer");
    }
    let (ra, rb) = (ra.expect("a"), rb.expect("b"));
    for (x, y) in ra.iter().zip(&rb) {
        assert_eq!(x.seq, y.seq, "both nodes report the one stored copy");
        assert!(
            x.duplicate != y.duplicate,
            "exactly one node wrote {}",
            x.id.as_str()
        );
    }
    let shared = all(&a, "shared").await;
    assert_eq!(shared.len(), 4 * 25 + 10);
    assert_linear(&shared);
    let other = all(&b, "other").await;
    assert_eq!(other.len(), 4 * 25);
    assert_linear(&other);
    a.shutdown().await.expect("shutdown");
    b.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_whole_days_and_the_default_partition_takes_the_rest() {
    let db = TestDatabase::create().await;
    let (a, b) = (node(&db).await, node(&db).await);
    const DAY: i64 = 86_400 * 1_000_000_000;
    let today = Timestamp::now().as_nanos().div_euclid(DAY);
    let at_day = |d: i64| Timestamp::from_nanos(d * DAY + 3_600_000_000_000);
    // Back-filled history (days without a partition: the default one holds them), today and
    // tomorrow (partitions created ahead).
    for (i, d) in [19_000, 19_001, 19_001, 19_002].into_iter().enumerate() {
        b.append(vec![event_at("r", &format!("old-{i}"), at_day(d))])
            .await
            .expect("append");
    }
    b.append(vec![event_at("r", "today", at_day(today))])
        .await
        .expect("append");
    b.append(vec![event_at("r", "tomorrow", at_day(today + 1))])
        .await
        .expect("append");
    let (sql, conn) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let rows_in = |table: String| {
        let sql = &sql;
        async move {
            sql.query_one(&format!("SELECT count(*) FROM \"{table}\""), &[])
                .await
                .expect("count")
                .get::<_, i64>(0)
        }
    };
    assert_eq!(rows_in("vigil_events_default".into()).await, 4);

    // Everything before tomorrow goes: today's partition whole, old rows of the default one.
    let dropped = a
        .drop_partitions_before(Timestamp::from_nanos((today + 1) * DAY))
        .await
        .expect("retention");
    let today_partition = format!("vigil_events_p{}", chrono_date(at_day(today)));
    assert_eq!(dropped, std::slice::from_ref(&today_partition));
    let left: Vec<u64> = all(&a, "r").await.iter().map(|e| e.seq).collect();
    assert_eq!(left, [6]);
    let tenant = TenantId::parse("r").expect("tenant");
    assert!(
        a.get(&tenant, &EventId::parse("old-0").expect("id"))
            .await
            .expect("get")
            .is_none()
    );

    // Writes for a dropped day land in the default partition; a dropped id may be used again,
    // and seqs keep growing.
    let again = b
        .append(vec![event_at("r", "today", at_day(today))])
        .await
        .expect("append to a dropped day");
    assert!(!again[0].duplicate);
    assert_eq!(again[0].seq, 7);
    assert_eq!(rows_in("vigil_events_default".into()).await, 1);

    // The next maintenance round recreates today's partition and moves the row into it.
    a.run_maintenance().await.expect("maintenance");
    assert_eq!(rows_in("vigil_events_default".into()).await, 0);
    assert_eq!(rows_in(today_partition).await, 1);
    let left = all(&b, "r").await;
    assert_eq!(left.len(), 2);

    // Retention takes events, never tree hashes: the tree still covers all 7 seqs, and the
    // leaves of the events left are theirs.
    assert_eq!(a.tree_size(&tenant).await.expect("tree size"), 7);
    assert_eq!(
        rows_in("vigil_tree_hashes".into()).await,
        i64::try_from(stored_hash_count(7)).expect("count")
    );
    for e in &left {
        let leaf = a
            .read_hashes(&tenant, &[stored_hash_index(0, e.seq - 1)])
            .await
            .expect("leaf");
        assert_eq!(leaf, [leaf_hash(&e.canonical)], "leaf of seq {}", e.seq);
    }
    a.shutdown().await.expect("shutdown");
    b.shutdown().await.expect("shutdown");
}

/// `YYYYMMDD` of a time, UTC.
fn chrono_date(t: Timestamp) -> String {
    t.to_rfc3339()[..10].replace('-', "")
}
