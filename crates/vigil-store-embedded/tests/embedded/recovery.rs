//! The log tested the hard way: reopen loops, torn and corrupted tails, sealing, reindex and the
//! one-process lock.

use std::path::Path;
use std::time::Duration;

use vigil_event::{EventId, chain_hash, leaf_hash};
use vigil_query::{Expr, Order, Query};
use vigil_store::{Store, StoredEvent};
use vigil_store_embedded::{EmbeddedConfig, EmbeddedError, EmbeddedStore, reindex};

use crate::support::{acme, event, small};

async fn everything(store: &EmbeddedStore) -> Vec<StoredEvent> {
    let q = Query {
        filter: Expr::All,
        from: None,
        to: None,
        limit: 100_000,
        order: Order::Asc,
        cursor: None,
    };
    let mut events = store.query(&acme(), &q).await.expect("query").events;
    events.sort_by_key(|e| e.seq);
    events
}

fn assert_chain(events: &[StoredEvent], n: usize) {
    assert_eq!(events.len(), n);
    let mut prev = [0u8; 32];
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
        prev = chain_hash(&prev, &leaf_hash(&e.canonical));
        assert_eq!(prev, e.hash);
    }
}

/// Waits until every full segment is sealed: only the active `.wal` is left.
async fn wait_sealed(dir: &Path) {
    for _ in 0..500 {
        let wals = std::fs::read_dir(dir.join("log"))
            .expect("log dir")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "wal"))
            })
            .count();
        if wals == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("segments were not sealed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_every_event_and_the_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut total = 0;
    for round in 0..5 {
        let store = EmbeddedStore::open(small(dir.path())).expect("open");
        assert_chain(&everything(&store).await, total);
        let batch: Vec<_> = (total..total + 7 + round).map(event).collect();
        total += batch.len();
        store.append(batch).await.expect("append");
        store.shutdown().await.expect("shutdown");
    }
    let store = EmbeddedStore::open(small(dir.path())).expect("open");
    assert_chain(&everything(&store).await, total);
    store.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_segments_answer_like_the_memtable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(small(dir.path())).expect("open");
    for chunk in (0..100).collect::<Vec<_>>().chunks(10) {
        store
            .append(chunk.iter().copied().map(event).collect())
            .await
            .expect("append");
    }
    wait_sealed(dir.path()).await;
    assert_chain(&everything(&store).await, 100);
    let got = store
        .get(&acme(), &EventId::parse("ev-3").expect("id"))
        .await
        .expect("get")
        .expect("found");
    assert_eq!(got.seq, 4);
    let sev = vigil_query::parse_expr("severity>=9", &Default::default()).expect("expr");
    let n = store.count(&acme(), &sev, None, None).await.expect("count");
    assert_eq!(n, (0..100).filter(|i| i % 11 >= 9).count() as u64);
    // Idempotency reaches into sealed segments.
    let again = store.append(vec![event(3)]).await.expect("append");
    assert!(again[0].duplicate);
    assert_eq!(again[0].seq, 4);
    store.shutdown().await.expect("shutdown");
}

/// A torn write — the process died between write and fsync, leaving a partial record — must
/// cost only the unacknowledged tail: recovery truncates it and every earlier event survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tail_is_truncated() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).expect("open");
        for i in 0..10 {
            store.append(vec![event(i)]).await.expect("append");
        }
        store.shutdown().await.expect("shutdown");
    }
    let wal = std::fs::read_dir(dir.path().join("log"))
        .expect("log")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "wal"))
        .expect("wal file");
    let bytes = std::fs::read(&wal).expect("read");
    // Corrupt the last record's bytes.
    let mut damaged = bytes.clone();
    let last = damaged.len() - 3;
    damaged[last] ^= 0xff;
    std::fs::write(&wal, &damaged).expect("write");
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).expect("open");
    assert_chain(&everything(&store).await, 9);
    // The log continues with seq 10.
    let r = store.append(vec![event(100)]).await.expect("append");
    assert_eq!(r[0].seq, 10);
    store.shutdown().await.expect("shutdown");
    drop(store);

    // A partial record (cut mid-way) behaves the same.
    let bytes = std::fs::read(&wal).expect("read");
    std::fs::write(&wal, &bytes[..bytes.len() - 10]).expect("write");
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).expect("open");
    assert_chain(&everything(&store).await, 9);
    store.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_opener_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).expect("open");
    let err = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).expect_err("locked");
    assert!(matches!(err, EmbeddedError::Locked(_)));
    assert!(err.to_string().contains("in use by another process"));
    store.shutdown().await.expect("shutdown");
    drop(store);
    EmbeddedStore::open(EmbeddedConfig::new(dir.path())).expect("reopen after release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_rebuilds_deleted_indexes() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = EmbeddedStore::open(small(dir.path())).expect("open");
        for start in (0..80).step_by(16) {
            store
                .append((start..start + 16).map(event).collect())
                .await
                .expect("append");
        }
        wait_sealed(dir.path()).await;
        store.shutdown().await.expect("shutdown");
    }
    for entry in std::fs::read_dir(dir.path().join("index")).expect("index dir") {
        std::fs::remove_file(entry.expect("entry").path()).expect("remove");
    }
    let report = reindex(dir.path()).expect("reindex");
    assert!(report.segments >= 1);
    assert_eq!(report.events, 80);
    let store = EmbeddedStore::open(small(dir.path())).expect("open");
    assert_chain(&everything(&store).await, 80);
    store.shutdown().await.expect("shutdown");
    drop(store);

    // A damaged index is rebuilt on open as well.
    let idx = std::fs::read_dir(dir.path().join("index"))
        .expect("index")
        .next()
        .expect("one")
        .expect("entry")
        .path();
    std::fs::write(&idx, b"garbage").expect("write");
    let store = EmbeddedStore::open(small(dir.path())).expect("open");
    assert_chain(&everything(&store).await, 80);
    store.shutdown().await.expect("shutdown");
}

/// Background merging keeps the number of segments low and loses nothing; an interrupted merge
/// (merged file renamed into place, superseded files still there) is cleaned up on open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merging_keeps_every_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = |p: &Path| EmbeddedConfig {
        segment_max_events: 8,
        max_segment_events: 64,
        ..small(p)
    };
    {
        let store = EmbeddedStore::open(config(dir.path())).expect("open");
        for start in (0..200).step_by(8) {
            store
                .append((start..start + 8).map(event).collect())
                .await
                .expect("append");
        }
        assert_chain(&everything(&store).await, 200);
        store.shutdown().await.expect("shutdown");
    }
    let segs = |dir: &Path| {
        std::fs::read_dir(dir.join("log"))
            .expect("log")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "seg"))
            })
            .count()
    };
    assert!(
        segs(dir.path()) < 200 / 8,
        "no merge happened: {} segments",
        segs(dir.path())
    );
    let store = EmbeddedStore::open(config(dir.path())).expect("open");
    assert_chain(&everything(&store).await, 200);
    let again = store.append(vec![event(5)]).await.expect("append");
    assert!(
        again[0].duplicate,
        "ids in merged segments still deduplicate"
    );
    store.shutdown().await.expect("shutdown");
}

fn the_wal(dir: &Path) -> std::path::PathBuf {
    std::fs::read_dir(dir.join("log"))
        .expect("log")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "wal"))
        .expect("wal file")
}

/// Regression: a group whose write did not complete (no commit marker: the process died
/// before the fsync, so nobody was told "stored") left its records behind when they happened to
/// reach the disk, so part of a refused batch could survive. Replay now applies only groups
/// closed by their commit marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_without_its_commit_marker_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).expect("open");
        store
            .append((0..3).map(event).collect())
            .await
            .expect("append");
        store
            .append((3..8).map(event).collect())
            .await
            .expect("append");
        store.shutdown().await.expect("shutdown");
    }
    let wal = the_wal(dir.path());
    let bytes = std::fs::read(&wal).expect("read");
    // The last 13 bytes are the second group's commit marker.
    std::fs::write(&wal, &bytes[..bytes.len() - 13]).expect("write");
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).expect("open");
    assert_chain(&everything(&store).await, 3);
    store.shutdown().await.expect("shutdown");
}

/// Regression: one damaged record in the middle of a log made recovery cut the file there,
/// silently discarding every acknowledged event after it. Damage followed by acknowledged groups
/// is corruption: the store refuses to open and says where.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_before_acknowledged_events_refuses_to_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).expect("open");
        for i in 0..5 {
            store.append(vec![event(i)]).await.expect("append");
        }
        store.shutdown().await.expect("shutdown");
    }
    let wal = the_wal(dir.path());
    let mut bytes = std::fs::read(&wal).expect("read");
    bytes[40] ^= 0xff; // inside the first record
    std::fs::write(&wal, &bytes).expect("write");
    let err = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).expect_err("corrupt");
    assert!(matches!(err, EmbeddedError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().contains("precedes acknowledged events"),
        "{err}"
    );
    // Nothing was cut: the evidence is still there.
    assert_eq!(std::fs::read(&wal).expect("read").len(), bytes.len());
}

/// Regression: when sealing a segment failed, newer segments were sealed anyway, and on the
/// next start the older log was replayed after them and refused ("tenant jumps from seq 4 to
/// 1"): the store could not open. Sealing is now retried in order, and recovery replays
/// segments in id order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_seal_loses_nothing_and_the_store_reopens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = |p: &Path| EmbeddedConfig {
        segment_max_events: 4,
        ..small(p)
    };
    {
        let store = EmbeddedStore::open(config(dir.path())).expect("open");
        // Block the seal of the first full segment: its temporary file name is taken.
        let first = the_wal(dir.path());
        let blocker = first.with_extension("seg.tmp");
        std::fs::create_dir(&blocker).expect("blocker");
        for start in (0..24).step_by(4) {
            store
                .append((start..start + 4).map(event).collect())
                .await
                .expect("append");
        }
        assert_chain(&everything(&store).await, 24);
        // Sealing keeps failing: the store says so on its readiness check, and still accepts
        // and answers (the events are in the log and in memory).
        let mut unready = false;
        for _ in 0..200 {
            if store.ready().await.is_err() {
                unready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(unready, "repeated seal failures must show on readiness");
        store
            .append(vec![event(24)])
            .await
            .expect("append while sealing fails");
        assert_chain(&everything(&store).await, 25);
        store.shutdown().await.expect("shutdown");
        std::fs::remove_dir(&blocker).expect("unblock");
    }
    let store = EmbeddedStore::open(config(dir.path())).expect("reopens");
    assert_chain(&everything(&store).await, 25);
    wait_sealed(dir.path()).await;
    store.ready().await.expect("ready once sealing works");
    assert_chain(&everything(&store).await, 25);
    let next = store.append(vec![event(100)]).await.expect("append");
    assert_eq!(next[0].seq, 26);
    store.shutdown().await.expect("shutdown");
}

/// A failed fsync is never answered as a success, and loses nothing that was.
///
/// The fault hook (`FsyncFault`, feature `fault-injection`) fails one fsync the way a disk
/// reports it: the bytes were written, the sync returns an error. When that fsync is the
/// write-ahead log's for a commit group, the request in that group gets `Unavailable` (503 at
/// the HTTP edge), the writer poisons itself and every later append gets `Unavailable` too,
/// rather than acknowledging events after a gap whose durability is unknown. After the store is
/// dropped and the directory reopened, it holds exactly the acknowledged events: every one of
/// them, none of the failed group's, with gap-free seqs, an unbroken chain and a Merkle tree
/// whose every stored hash matches the events. The second test fails the n-th fsync of any kind
/// (directories at open, Merkle files, sealing running beside the writer): whichever it hits,
/// a reopen holds exactly what was acknowledged.
mod failed_fsync {
    use std::path::Path;

    use vigil_event::leaf_hash;
    use vigil_integrity::tree::{Frontier, stored_hash_count};
    use vigil_store::{Store, StoreError};
    use vigil_store_embedded::{EmbeddedError, EmbeddedStore, FsyncFault, Synced};

    use super::{assert_chain, everything};
    use crate::support::{acme, event, small};

    /// Appends per run, each of this many events; with 16-event segments the run seals and
    /// rotates several times.
    const BATCHES: usize = 12;
    const BATCH: usize = 3;

    /// Appends `BATCHES` batches one at a time; returns the ids acknowledged, and the index of
    /// the first batch that failed. Once one fails, every later one must fail the same way.
    async fn load(store: &EmbeddedStore) -> (Vec<String>, Option<usize>) {
        let mut acked = Vec::new();
        let mut failed = None;
        for b in 0..BATCHES {
            let batch: Vec<_> = (b * BATCH..(b + 1) * BATCH).map(event).collect();
            match store.append(batch).await {
                Ok(appended) => {
                    assert_eq!(failed, None, "batch {b} acknowledged after a failed one");
                    assert!(appended.iter().all(|a| !a.duplicate));
                    acked.extend(appended.into_iter().map(|a| a.id.as_str().to_owned()));
                }
                Err(StoreError::Unavailable(_)) => failed = failed.or(Some(b)),
                Err(e) => panic!("batch {b}: expected Unavailable, got {e}"),
            }
        }
        if failed.is_some() {
            assert!(matches!(
                store.ready().await,
                Err(StoreError::Unavailable(_))
            ));
        }
        (acked, failed)
    }

    /// Reopens `dir` (no fault armed) and checks it holds exactly `acked`, in seq order, with
    /// the chain and the Merkle tree intact; then that the store takes appends again.
    async fn reopened_holds_exactly(dir: &Path, acked: &[String]) {
        let store = EmbeddedStore::open(small(dir)).expect("reopen");
        let events = everything(&store).await;
        let ids: Vec<String> = events
            .iter()
            .map(|e| {
                let v: serde_json::Value = serde_json::from_slice(&e.canonical).expect("json");
                v["id"].as_str().expect("id").to_owned()
            })
            .collect();
        assert_eq!(
            ids, acked,
            "stored events differ from the acknowledged ones"
        );
        assert_chain(&events, acked.len());

        let size = store.tree_size(&acme()).await.expect("tree size");
        assert_eq!(size, acked.len() as u64);
        let all: Vec<u64> = (0..stored_hash_count(size)).collect();
        let stored = store.read_hashes(&acme(), &all).await.expect("hashes");
        let mut expected = Vec::new();
        let mut tree = Frontier::new();
        for e in &events {
            tree.push(leaf_hash(&e.canonical), |h| expected.push(*h));
        }
        assert_eq!(stored, expected, "Merkle hashes disagree with the events");

        let next = store.append(vec![event(10_000)]).await.expect("append");
        assert_eq!(next[0].seq, acked.len() as u64 + 1);
        store.shutdown().await.expect("shutdown");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_log_fsync_poisons_and_a_reopen_holds_what_was_acknowledged() {
        for nth in [1, 2, 3, 5, 8, 12] {
            let dir = tempfile::tempdir().expect("tempdir");
            let fault = FsyncFault::fail_nth(dir.path(), Synced::Log, nth);
            let store = EmbeddedStore::open(small(dir.path())).expect("open");
            let (acked, failed) = load(&store).await;
            assert!(fault.fired(), "fsync {nth} never happened");
            // One append is one commit group: the nth group's fsync is the nth of the log.
            let nth = nth as usize;
            assert_eq!(failed, Some(nth - 1), "fsync {nth}");
            assert_eq!(acked.len(), (nth - 1) * BATCH, "fsync {nth}");
            store.shutdown().await.expect("shutdown");
            drop(store);
            drop(fault);
            reopened_holds_exactly(dir.path(), &acked).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn any_failed_fsync_loses_nothing_acknowledged() {
        for nth in 1..=24 {
            let dir = tempfile::tempdir().expect("tempdir");
            let fault = FsyncFault::fail_nth(dir.path(), Synced::Any, nth);
            let acked = match EmbeddedStore::open(small(dir.path())) {
                Ok(store) => {
                    let (acked, _) = load(&store).await;
                    store.shutdown().await.expect("shutdown");
                    acked
                }
                // The fsync of a directory created while opening.
                Err(EmbeddedError::Io { .. }) => Vec::new(),
                Err(e) => panic!("fsync {nth}: open failed with {e}"),
            };
            assert!(fault.fired(), "fsync {nth} never happened");
            drop(fault);
            reopened_holds_exactly(dir.path(), &acked).await;
        }
    }
}
