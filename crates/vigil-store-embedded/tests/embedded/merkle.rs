//! The Merkle trees beside the log: kept across restarts, recomputed after a crash from the
//! newest checkpoint on, and read back by the verification scan.

use std::path::Path;

use vigil_event::{Hash, Timestamp, leaf_hash};
use vigil_integrity::tree::{Frontier, stored_hash_count, tree_root};
use vigil_store::{Store, StoredCheckpoint};
use vigil_store_embedded::scan::{LogEvent, LogVisitor, scan_log};
use vigil_store_embedded::{EmbeddedError, EmbeddedStore};

use crate::support::{acme, event, small};

async fn fill(store: &EmbeddedStore, from: usize, to: usize) {
    for chunk in (from..to).collect::<Vec<_>>().chunks(7) {
        store
            .append(chunk.iter().map(|&i| event(i)).collect())
            .await
            .expect("append");
    }
}

/// Every stored hash of acme's tree, and what they must be given the stored events.
async fn hashes_and_expected(store: &EmbeddedStore) -> (Vec<Hash>, Vec<Hash>) {
    let size = store.tree_size(&acme()).await.expect("size");
    let all: Vec<u64> = (0..stored_hash_count(size)).collect();
    let stored = store.read_hashes(&acme(), &all).await.expect("read");
    let mut expected = Vec::new();
    let mut f = Frontier::new();
    for i in 0..size as usize {
        let e = store
            .get(
                &acme(),
                &vigil_event::EventId::parse(&format!("ev-{i}")).expect("id"),
            )
            .await
            .expect("get")
            .expect("stored");
        assert_eq!(e.seq, i as u64 + 1);
        f.push(leaf_hash(&e.canonical), |h| expected.push(*h));
    }
    (stored, expected)
}

async fn root(store: &EmbeddedStore, size: u64) -> Hash {
    tree_root(size, async |idx: Vec<u64>| {
        store.read_hashes(&acme(), &idx).await
    })
    .await
    .expect("root")
}

async fn checkpoint_now(store: &EmbeddedStore) -> StoredCheckpoint {
    let size = store.tree_size(&acme()).await.expect("size");
    let cp = StoredCheckpoint {
        size,
        root: root(store, size).await,
        timestamp: Timestamp::now(),
        note: "a note".into(),
    };
    store.save_checkpoint(&acme(), &cp).await.expect("save");
    cp
}

fn hashes_file(dir: &Path) -> std::path::PathBuf {
    dir.join("merkle").join("acme.hashes")
}

#[tokio::test]
async fn a_clean_restart_keeps_the_tree() {
    let dir = tempfile::tempdir().expect("dir");
    let store = EmbeddedStore::open(small(dir.path())).expect("open");
    fill(&store, 0, 50).await;
    let cp = checkpoint_now(&store).await;
    store.shutdown().await.expect("shutdown");
    drop(store);
    assert!(dir.path().join("merkle/CLEAN").exists());

    let store = EmbeddedStore::open(small(dir.path())).expect("reopen");
    assert!(
        !dir.path().join("merkle/CLEAN").exists(),
        "a running store is not clean"
    );
    assert_eq!(store.tree_size(&acme()).await.expect("size"), 50);
    assert_eq!(
        store.checkpoint(&acme(), None).await.expect("cp"),
        Some(cp.clone())
    );
    fill(&store, 50, 80).await;
    let (stored, expected) = hashes_and_expected(&store).await;
    assert!(
        stored == expected,
        "stored hashes differ from the events' tree"
    );
    assert_eq!(
        root(&store, 50).await,
        cp.root,
        "the old root is still provable"
    );
}

#[tokio::test]
async fn after_a_crash_hashes_past_the_checkpoint_are_recomputed() {
    let dir = tempfile::tempdir().expect("dir");
    let store = EmbeddedStore::open(small(dir.path())).expect("open");
    fill(&store, 0, 40).await;
    let cp = checkpoint_now(&store).await;
    fill(&store, 40, 90).await;
    store.shutdown().await.expect("shutdown");
    drop(store);
    // A crash: no clean marker, and the unsynced tail of the hash file lost or garbage.
    std::fs::remove_file(dir.path().join("merkle/CLEAN")).expect("unmark");
    let path = hashes_file(dir.path());
    let keep = stored_hash_count(45) * 32 + 5;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    file.set_len(keep).expect("cut");
    file.set_len(stored_hash_count(90) * 32).expect("zero-fill");
    drop(file);

    let store = EmbeddedStore::open(small(dir.path())).expect("reopen");
    assert_eq!(store.tree_size(&acme()).await.expect("size"), 90);
    let (stored, expected) = hashes_and_expected(&store).await;
    assert!(
        stored == expected,
        "stored hashes differ from the events' tree"
    );
    assert_eq!(root(&store, 40).await, cp.root);
    fill(&store, 90, 100).await;
    let (stored, expected) = hashes_and_expected(&store).await;
    assert!(
        stored == expected,
        "stored hashes differ from the events' tree"
    );
}

#[tokio::test]
async fn hashes_that_contradict_the_checkpoint_are_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().expect("dir");
    let store = EmbeddedStore::open(small(dir.path())).expect("open");
    fill(&store, 0, 33).await;
    checkpoint_now(&store).await;
    store.shutdown().await.expect("shutdown");
    drop(store);
    std::fs::remove_file(dir.path().join("merkle/CLEAN")).expect("unmark");
    // The root of the first 32 events: part of every later root.
    let at = vigil_integrity::tree::stored_hash_index(5, 0) as usize * 32;
    let mut bytes = std::fs::read(hashes_file(dir.path())).expect("read");
    bytes[at + 3] ^= 1;
    std::fs::write(hashes_file(dir.path()), &bytes).expect("write");

    let store = EmbeddedStore::open(small(dir.path())).expect("reopen");
    let (stored, expected) = hashes_and_expected(&store).await;
    assert!(
        stored == expected,
        "stored hashes differ from the events' tree"
    );
}

#[tokio::test]
async fn a_lost_hash_file_is_rebuilt_without_a_checkpoint() {
    let dir = tempfile::tempdir().expect("dir");
    let store = EmbeddedStore::open(small(dir.path())).expect("open");
    fill(&store, 0, 70).await;
    store.shutdown().await.expect("shutdown");
    drop(store);
    std::fs::remove_file(dir.path().join("merkle/CLEAN")).expect("unmark");
    std::fs::remove_file(hashes_file(dir.path())).expect("lose");
    let store = EmbeddedStore::open(small(dir.path())).expect("reopen");
    assert_eq!(store.tree_size(&acme()).await.expect("size"), 70);
    let (stored, expected) = hashes_and_expected(&store).await;
    assert!(
        stored == expected,
        "stored hashes differ from the events' tree"
    );
}

#[derive(Default)]
struct Collect {
    events: Vec<(String, u64, Hash, Vec<u8>)>,
    damage: Vec<String>,
    bytes: u64,
}

impl LogVisitor for Collect {
    fn event(&mut self, e: LogEvent<'_>) {
        self.events
            .push((e.tenant.to_owned(), e.seq, *e.chain, e.canonical.to_vec()));
    }
    fn damaged(&mut self, message: String) {
        self.damage.push(message);
    }
    fn progress(&mut self, bytes: u64) {
        self.bytes += bytes;
    }
}

#[tokio::test]
async fn the_scan_reads_every_event_as_stored() {
    let dir = tempfile::tempdir().expect("dir");
    let store = EmbeddedStore::open(small(dir.path())).expect("open");
    fill(&store, 0, 100).await;
    // A running store owns its directory.
    assert!(matches!(
        scan_log(dir.path(), &mut Collect::default()),
        Err(EmbeddedError::Locked(_))
    ));
    store.shutdown().await.expect("shutdown");
    drop(store);

    let mut seen = Collect::default();
    let summary = scan_log(dir.path(), &mut seen).expect("scan");
    assert!(seen.damage.is_empty(), "{:?}", seen.damage);
    assert_eq!(summary.events, 100);
    assert_eq!(seen.bytes, summary.bytes);
    let seqs: Vec<u64> = seen.events.iter().map(|e| e.1).collect();
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
    let store = EmbeddedStore::open(small(dir.path())).expect("reopen");
    for (tenant, seq, chain, canonical) in &seen.events {
        assert_eq!(tenant, "acme");
        let id = vigil_event::EventId::parse(&format!("ev-{}", seq - 1)).expect("id");
        let stored = store.get(&acme(), &id).await.expect("get").expect("there");
        assert_eq!(&stored.canonical, canonical);
        assert_eq!(&stored.hash, chain);
    }
}
