//! PostgreSQL going away under a write load: nothing acknowledged is lost, nothing is written
//! twice, the chain stays linear, the Merkle tree holds every event once and nothing of the
//! attempts that failed, appends answer "unavailable" while the server is down and
//! work again once it is back. Runs its own server (the shared one must stay up for the other
//! tests).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vigil_event::{EventId, Hash, TenantId, chain_hash, leaf_hash};
use vigil_integrity::tree::{Frontier, stored_hash_count};
use vigil_query::{Expr, Order, Query};
use vigil_store::fixtures::event;
use vigil_store::{Store, StoreError};
use vigil_store_postgres::testing::{PrivateServer, events_by_seq};
use vigil_store_postgres::{PgConfig, PgStore};

/// Every event of `tenant`, oldest first by seq.
async fn all_events(store: &PgStore, tenant: &TenantId) -> Vec<vigil_store::StoredEvent> {
    events_by_seq(store, tenant).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_crash_under_load_loses_nothing_acknowledged() {
    let server = PrivateServer::start();
    let store = Arc::new(
        PgStore::connect(PgConfig {
            pool_size: 4,
            retry_for: Duration::from_secs(30),
            ..PgConfig::new(server.url())
        })
        .await
        .expect("connect"),
    );
    let tenant = TenantId::parse("load").expect("tenant");
    let acked: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let failures = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (store, tenant, acked, failures, stop) = (
            Arc::clone(&store),
            tenant.clone(),
            Arc::clone(&acked),
            Arc::clone(&failures),
            Arc::clone(&stop),
        );
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let ids: Vec<String> = (0..20).map(|i| format!("w{w}-{n}-{i}")).collect();
                n += 1;
                let batch = ids.iter().map(|id| event(tenant.as_str(), id)).collect();
                match store.append(batch).await {
                    Ok(appended) => {
                        let mut acked = acked.lock().expect("lock");
                        for a in appended {
                            acked.insert(a.id.as_str().to_owned(), a.seq);
                        }
                    }
                    Err(_) => {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before_crash = acked.lock().expect("lock").len();
    server.crash();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart();
    // Wait until writes flow again, then a little longer.
    let mut waited = 0;
    let after_restart = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        waited += 1;
        assert!(
            waited < 300,
            "writes did not resume within a minute of the restart"
        );
        let n = acked.lock().expect("lock").len();
        if n > before_crash + 200 {
            break n;
        }
    };
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.expect("writer");
    }
    assert!(before_crash > 0 && after_restart > before_crash);

    let stored = all_events(&store, &tenant).await;
    let acked = acked.lock().expect("lock").clone();
    // Every acknowledged event is there, at the seq it was acknowledged with.
    let by_id: BTreeMap<String, u64> = stored
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_slice(&e.canonical).expect("json");
            (v["id"].as_str().expect("id").to_owned(), e.seq)
        })
        .collect();
    for (id, seq) in &acked {
        assert_eq!(
            by_id.get(id),
            Some(seq),
            "acknowledged event {id} lost or moved"
        );
    }
    // Gap-free, each id once, chain linear from the genesis hash.
    assert_eq!(by_id.len(), stored.len(), "an id was stored twice");
    let mut prev: Hash = [0; 32];
    for (i, e) in stored.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "seq gap");
        prev = chain_hash(&prev, &leaf_hash(&e.canonical));
        assert_eq!(e.hash, prev, "chain broken at seq {}", e.seq);
    }
    // The tree has exactly the stored events as leaves: a commit cut by the crash left no
    // hashes, and its retry did not add its leaves twice.
    let mut frontier = Frontier::new();
    let mut want = Vec::new();
    for e in &stored {
        frontier.push(leaf_hash(&e.canonical), |h| want.push(*h));
    }
    assert_eq!(
        store.tree_size(&tenant).await.expect("tree size"),
        stored.len() as u64
    );
    let indexes: Vec<u64> = (0..stored_hash_count(stored.len() as u64)).collect();
    assert_eq!(
        store
            .read_hashes(&tenant, &indexes)
            .await
            .expect("read hashes"),
        want
    );
    assert!(
        store
            .read_hashes(&tenant, &[indexes.len() as u64])
            .await
            .is_err(),
        "a hash beyond the tree"
    );
    // An append whose outcome the crash made unknown was retried, so no caller saw an error
    // within the retry window.
    assert_eq!(failures.load(Ordering::SeqCst), 0);
    let some = EventId::parse("w0-0-0").expect("id");
    assert!(store.get(&tenant, &some).await.expect("get").is_some());
    store.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_refused_while_the_server_is_down_and_work_once_it_is_back() {
    let server = PrivateServer::start();
    let store = PgStore::connect(PgConfig {
        pool_size: 2,
        retry_for: Duration::from_millis(300),
        connect_timeout: Duration::from_secs(1),
        ..PgConfig::new(server.url())
    })
    .await
    .expect("connect");
    let tenant = TenantId::parse("down").expect("tenant");
    store
        .append(vec![event(tenant.as_str(), "before")])
        .await
        .expect("append while up");

    server.crash();
    let err = store
        .append(vec![event(tenant.as_str(), "during")])
        .await
        .expect_err("append while down");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(matches!(
        store.ready().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store
            .query(
                &tenant,
                &Query {
                    filter: Expr::All,
                    from: None,
                    to: None,
                    limit: 10,
                    order: Order::Desc,
                    cursor: None,
                }
            )
            .await,
        Err(StoreError::Unavailable(_))
    ));

    server.restart();
    store.ready().await.expect("ready again");
    let appended = store
        .append(vec![event(tenant.as_str(), "after")])
        .await
        .expect("append after restart");
    // The refused event was not half-written: the next one takes seq 2.
    assert_eq!(appended[0].seq, 2);
    let stored = all_events(&store, &tenant).await;
    assert_eq!(stored.len(), 2);
    store.shutdown().await.expect("shutdown");
}
