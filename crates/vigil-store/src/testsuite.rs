//! The conformance suite every `Store` backend passes (feature `testsuite`).
//!
//! A backend's test file provides an async factory giving a fresh, empty store and invokes
//! [`store_conformance_suite!`](crate::store_conformance_suite):
//! ```ignore
//! async fn fresh() -> vigil_store::testsuite::Harness { /* new store in its own dir / database */ }
//! vigil_store::store_conformance_suite!(fresh);
//! ```

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use vigil_event::{
    EventId, Limits, Prepared, TenantId, Timestamp, chain_hash, leaf_hash, normalize,
};
use vigil_query::{Cursor, Expr, Order, Query, QueryLimits};

use crate::{Store, StoreError, StoredCheckpoint, StoredEvent};

/// A store under test and whatever keeps its storage alive (a temp dir, a database guard).
pub struct Harness {
    pub store: Arc<dyn Store>,
    pub guard: Box<dyn Any + Send>,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// Generates one `#[tokio::test]` per conformance check, each on a fresh store from `$factory`.
#[macro_export]
macro_rules! store_conformance_suite {
    ($factory:path) => {
        $crate::store_conformance_suite!(@tests $factory;
            append_assigns_gap_free_seqs_per_tenant,
            get_returns_the_stored_event,
            same_id_same_content_is_a_duplicate,
            same_id_other_content_conflicts_and_stores_nothing,
            repeats_inside_one_batch,
            query_orders_newest_first_and_limits,
            query_ascending,
            cursor_pages_cover_everything_once,
            cursor_pages_are_stable_under_concurrent_appends,
            every_operator_filters_correctly,
            time_range_filters,
            count_matches_query,
            tenants_are_isolated,
            chain_links_every_event,
            meta_documents_round_trip,
            meta_versions_guard_concurrent_changes,
            merkle_hashes_match_the_events,
            merkle_trees_are_per_tenant,
            checkpoints_are_kept_and_the_first_wins,
        );
    };
    (@tests $factory:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let harness = $factory().await;
                $crate::testsuite::$name(&harness).await;
                harness.store.shutdown().await.expect("shutdown");
            }
        )*
    };
}

const T0: i64 = 1_700_000_000_000_000_000;

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).expect("valid tenant")
}

/// An event prepared as the HTTP layer would.
pub fn prepared(tenant_name: &str, body: Value) -> Prepared {
    normalize(body, &Limits::default())
        .expect("valid event")
        .prepare(
            &tenant(tenant_name),
            Timestamp::from_nanos(T0),
            "conformance",
        )
}

fn at(secs: i64) -> String {
    Timestamp::from_nanos(T0 + secs * 1_000_000_000).to_rfc3339()
}

fn json_of(e: &StoredEvent) -> Value {
    serde_json::from_slice(&e.to_json()).expect("stored event is JSON")
}

fn query(filter: Expr, limit: usize) -> Query {
    Query {
        filter,
        from: None,
        to: None,
        limit,
        order: Order::Desc,
        cursor: None,
    }
}

fn q(expr: &str) -> Expr {
    vigil_query::parse_expr(expr, &QueryLimits::default()).expect("valid expression")
}

async fn all(store: &dyn Store, tenant_name: &str, filter: Expr, order: Order) -> Vec<StoredEvent> {
    let mut out = Vec::new();
    let mut cursor: Option<Cursor> = None;
    loop {
        let page = store
            .query(
                &tenant(tenant_name),
                &Query {
                    cursor,
                    order,
                    ..query(filter.clone(), 7)
                },
            )
            .await
            .expect("query");
        out.extend(page.events);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

fn ids(events: &[StoredEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| json_of(e)["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Ten events of tenant `t`, one second apart, severities 0..9.
async fn seed(store: &dyn Store, t: &str) {
    let events = (0..10)
        .map(|i| {
            prepared(
                t,
                json!({"id": format!("e{i}"), "type": if i % 2 == 0 { "login.failed" } else { "account.created" },
                       "time": at(i), "severity": i, "actor": {"id": format!("u-{}", i % 3), "ip": format!("10.0.0.{i}")},
                       "details": {"amount": i * 10, "plan": if i < 5 { "free" } else { "pro" }, "tags": ["a", format!("t{i}")]}}),
            )
        })
        .collect();
    store.append(events).await.expect("append");
}

pub async fn append_assigns_gap_free_seqs_per_tenant(h: &Harness) {
    let s = &*h.store;
    let a = s
        .append(
            (0..5)
                .map(|i| prepared("a", json!({"type": "x", "n": i})))
                .collect(),
        )
        .await
        .expect("append");
    let b = s
        .append(vec![prepared("b", json!({"type": "x"}))])
        .await
        .expect("append");
    let a2 = s
        .append(vec![prepared("a", json!({"type": "x"}))])
        .await
        .expect("append");
    assert_eq!(
        a.iter().map(|x| x.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert!(a.iter().all(|x| !x.duplicate));
    assert_eq!(b[0].seq, 1);
    assert_eq!(a2[0].seq, 6);
}

pub async fn get_returns_the_stored_event(h: &Harness) {
    let s = &*h.store;
    let r = s
        .append(vec![prepared(
            "a",
            json!({"id": "evt-1", "type": "billing.charged", "details": {"amount": 12.5}}),
        )])
        .await
        .expect("append");
    let got = s
        .get(&tenant("a"), &EventId::parse("evt-1").expect("id"))
        .await
        .expect("get")
        .expect("found");
    let v = json_of(&got);
    assert_eq!(v["id"], "evt-1");
    assert_eq!(v["seq"], r[0].seq);
    assert_eq!(v["tenant"], "a");
    assert_eq!(v["details"]["amount"], 12.5);
    assert_eq!(v["hash"].as_str().map(str::len), Some(64));
    assert!(
        s.get(&tenant("a"), &EventId::parse("nope").expect("id"))
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        s.get(&tenant("b"), &EventId::parse("evt-1").expect("id"))
            .await
            .expect("get")
            .is_none()
    );
}

pub async fn same_id_same_content_is_a_duplicate(h: &Harness) {
    let s = &*h.store;
    let body = json!({"id": "dup", "type": "x", "details": {"k": 1}});
    let first = s
        .append(vec![prepared("a", body.clone())])
        .await
        .expect("append");
    let again = s.append(vec![prepared("a", body)]).await.expect("append");
    assert_eq!(again[0].seq, first[0].seq);
    assert!(again[0].duplicate);
    assert_eq!(
        s.count(&tenant("a"), &Expr::All, None, None)
            .await
            .expect("count"),
        1
    );
}

pub async fn same_id_other_content_conflicts_and_stores_nothing(h: &Harness) {
    let s = &*h.store;
    s.append(vec![prepared("a", json!({"id": "c1", "type": "x"}))])
        .await
        .expect("append");
    let err = s
        .append(vec![
            prepared("a", json!({"id": "c2", "type": "x"})),
            prepared("a", json!({"id": "c1", "type": "y"})),
        ])
        .await
        .expect_err("conflict");
    match err {
        StoreError::Conflict(c) => {
            assert_eq!(c.len(), 1);
            assert_eq!(c[0].index, 1);
            assert_eq!(c[0].id.as_str(), "c1");
        }
        other => panic!("expected conflict, got {other:?}"),
    }
    assert_eq!(
        s.count(&tenant("a"), &Expr::All, None, None)
            .await
            .expect("count"),
        1
    );
    // The same id in another tenant is another event.
    let other = s
        .append(vec![prepared("b", json!({"id": "c1", "type": "y"}))])
        .await
        .expect("append");
    assert!(!other[0].duplicate);
}

pub async fn repeats_inside_one_batch(h: &Harness) {
    let s = &*h.store;
    let same = json!({"id": "r1", "type": "x"});
    let r = s
        .append(vec![prepared("a", same.clone()), prepared("a", same)])
        .await
        .expect("append");
    assert_eq!(r[0].seq, r[1].seq);
    assert!(!r[0].duplicate && r[1].duplicate);
    let err = s
        .append(vec![
            prepared("a", json!({"id": "r2", "type": "x"})),
            prepared("a", json!({"id": "r2", "type": "z"})),
        ])
        .await
        .expect_err("conflict inside batch");
    assert!(matches!(err, StoreError::Conflict(_)));
    assert_eq!(
        s.count(&tenant("a"), &Expr::All, None, None)
            .await
            .expect("count"),
        1
    );
}

pub async fn query_orders_newest_first_and_limits(h: &Harness) {
    let s = &*h.store;
    seed(s, "a").await;
    let page = s
        .query(&tenant("a"), &query(Expr::All, 3))
        .await
        .expect("query");
    assert_eq!(ids(&page.events), vec!["e9", "e8", "e7"]);
    assert!(page.next_cursor.is_some());
    let page = s
        .query(&tenant("a"), &query(q("severity>=7"), 10))
        .await
        .expect("query");
    assert_eq!(ids(&page.events), vec!["e9", "e8", "e7"]);
    assert!(page.next_cursor.is_none());
}

pub async fn query_ascending(h: &Harness) {
    let s = &*h.store;
    seed(s, "a").await;
    let page = s
        .query(
            &tenant("a"),
            &Query {
                order: Order::Asc,
                ..query(Expr::All, 2)
            },
        )
        .await
        .expect("query");
    assert_eq!(ids(&page.events), vec!["e0", "e1"]);
    let every = all(s, "a", Expr::All, Order::Asc).await;
    assert_eq!(
        ids(&every),
        (0..10).map(|i| format!("e{i}")).collect::<Vec<_>>()
    );
}

pub async fn cursor_pages_cover_everything_once(h: &Harness) {
    let s = &*h.store;
    // Several events share a time: ties are broken by seq.
    let events = (0..30)
        .map(|i| {
            prepared(
                "a",
                json!({"id": format!("p{i}"), "type": "x", "time": at(i / 4)}),
            )
        })
        .collect();
    s.append(events).await.expect("append");
    let got = all(s, "a", Expr::All, Order::Desc).await;
    let mut seen = HashSet::new();
    for id in ids(&got) {
        assert!(seen.insert(id.clone()), "{id} repeated");
    }
    assert_eq!(seen.len(), 30);
    let times: Vec<(i64, u64)> = got.iter().map(|e| (e.time.as_nanos(), e.seq)).collect();
    assert!(
        times.windows(2).all(|w| w[0] > w[1]),
        "not strictly newest first"
    );
}

pub async fn cursor_pages_are_stable_under_concurrent_appends(h: &Harness) {
    let s = h.store.clone();
    let first = (0..50)
        .map(|i| {
            prepared(
                "a",
                json!({"id": format!("old{i}"), "type": "x", "time": at(i)}),
            )
        })
        .collect();
    s.append(first).await.expect("append");
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..20 {
                // Newer and older than the pages already read.
                let t = if i % 2 == 0 {
                    at(100 + i)
                } else {
                    at(-100 - i)
                };
                s.append(vec![prepared(
                    "a",
                    json!({"id": format!("new{i}"), "type": "x", "time": t}),
                )])
                .await
                .expect("append");
                tokio::task::yield_now().await;
            }
        })
    };
    let got = all(&*s, "a", Expr::All, Order::Desc).await;
    writer.await.expect("writer");
    let got = ids(&got);
    let unique: HashSet<_> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "an event was returned twice");
    for i in 0..50 {
        assert!(unique.contains(&format!("old{i}")), "old{i} skipped");
    }
}

pub async fn every_operator_filters_correctly(h: &Harness) {
    let s = &*h.store;
    seed(s, "a").await;
    let cases: &[(&str, &[u32])] = &[
        ("type:login.failed", &[0, 2, 4, 6, 8]),
        ("type:\"account.created\"", &[1, 3, 5, 7, 9]),
        ("actor.id:u-1", &[1, 4, 7]),
        ("severity>7", &[8, 9]),
        ("severity>=7", &[7, 8, 9]),
        ("severity<2", &[0, 1]),
        ("severity<=2", &[0, 1, 2]),
        ("severity:3", &[3]),
        ("details.amount>=50 AND details.amount<70", &[5, 6]),
        ("details.plan:pro AND NOT actor.id:u-0", &[5, 7, 8]),
        ("actor.ip:10.0.0.1*", &[1]),
        ("details.tags:t3 OR details.tags:t4", &[3, 4]),
        ("details.tags:a", &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
        (
            "(type:login.failed OR severity>=8) AND details.plan:pro",
            &[6, 8, 9],
        ),
        ("details.amount:30", &[3]),
        ("nothing.here:1", &[]),
        ("NOT type:login.failed", &[1, 3, 5, 7, 9]),
    ];
    for (expr, want) in cases {
        let got = all(s, "a", q(expr), Order::Asc).await;
        let want: Vec<String> = want.iter().map(|i| format!("e{i}")).collect();
        assert_eq!(ids(&got), want, "query {expr}");
        let n = s
            .count(&tenant("a"), &q(expr), None, None)
            .await
            .expect("count");
        assert_eq!(n as usize, want.len(), "count {expr}");
    }
}

pub async fn time_range_filters(h: &Harness) {
    let s = &*h.store;
    seed(s, "a").await;
    let from = Timestamp::from_nanos(T0 + 3_000_000_000);
    let to = Timestamp::from_nanos(T0 + 6_000_000_000);
    let page = s
        .query(
            &tenant("a"),
            &Query {
                from: Some(from),
                to: Some(to),
                ..query(Expr::All, 100)
            },
        )
        .await
        .expect("query");
    assert_eq!(ids(&page.events), vec!["e5", "e4", "e3"]);
    let expr = format!("time>={} AND time<{}", at(3), at(6));
    assert_eq!(
        ids(&all(s, "a", q(&expr), Order::Desc).await),
        vec!["e5", "e4", "e3"]
    );
    assert_eq!(
        s.count(&tenant("a"), &Expr::All, Some(from), Some(to))
            .await
            .expect("count"),
        3
    );
}

pub async fn count_matches_query(h: &Harness) {
    let s = &*h.store;
    seed(s, "a").await;
    seed(s, "b").await;
    assert_eq!(
        s.count(&tenant("a"), &Expr::All, None, None)
            .await
            .expect("count"),
        10
    );
    assert_eq!(
        s.count(&tenant("a"), &q("type:login.failed"), None, None)
            .await
            .expect("count"),
        5
    );
    assert_eq!(
        s.count(&tenant("c"), &Expr::All, None, None)
            .await
            .expect("count"),
        0
    );
}

/// Random events over random tenants: every query answers with the asking tenant's events only,
/// whatever the filter says (including filters naming another tenant).
pub async fn tenants_are_isolated(h: &Harness) {
    let s = &*h.store;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let names = ["t1", "t2", "t3", "t4"];
    let mut expected: HashMap<&str, usize> = HashMap::new();
    for _ in 0..8 {
        let batch: Vec<Prepared> = (0..rng.random_range(1..20))
            .map(|_| {
                let t = names[rng.random_range(0..names.len())];
                *expected.entry(t).or_default() += 1;
                prepared(t, json!({"type": "x", "severity": rng.random_range(0..=10), "details": {"owner": t}}))
            })
            .collect();
        s.append(batch).await.expect("append");
    }
    for t in names {
        for other in names {
            for filter in [
                Expr::All,
                q(&format!("tenant:{other}")),
                q(&format!("details.owner:{other}")),
                q("severity>=0"),
            ] {
                for e in all(s, t, filter.clone(), Order::Desc).await {
                    assert_eq!(
                        json_of(&e)["tenant"],
                        t,
                        "tenant {t} saw another tenant's event with {filter:?}"
                    );
                }
            }
        }
        assert_eq!(
            s.count(&tenant(t), &Expr::All, None, None)
                .await
                .expect("count") as usize,
            expected.get(t).copied().unwrap_or(0)
        );
    }
}

pub async fn chain_links_every_event(h: &Harness) {
    let s = &*h.store;
    for i in 0..5 {
        let batch = (0..7)
            .map(|j| prepared("a", json!({"type": "x", "n": i * 10 + j})))
            .collect();
        s.append(batch).await.expect("append");
    }
    let mut events = all(s, "a", Expr::All, Order::Asc).await;
    events.sort_by_key(|e| e.seq);
    let mut prev = [0u8; 32];
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "seq gap");
        let chain = chain_hash(&prev, &leaf_hash(&e.canonical));
        assert_eq!(chain, e.hash, "chain broken at seq {}", e.seq);
        prev = chain;
    }
    assert_eq!(events.len(), 35);
}

pub async fn meta_documents_round_trip(h: &Harness) {
    let s = &*h.store;
    assert_eq!(s.load_meta("conformance").await.expect("load"), None);
    s.save_meta("conformance", b"{\"v\":1}")
        .await
        .expect("save");
    s.save_meta("conformance", b"{\"v\":2}")
        .await
        .expect("save");
    assert_eq!(
        s.load_meta("conformance").await.expect("load").as_deref(),
        Some(&b"{\"v\":2}"[..])
    );
}

/// `save_meta_if` is a compare-and-swap on the version `load_meta_versioned` reports: several
/// vigil processes change the credential and schema documents through it, and a change made
/// from a stale version must be refused rather than undo another process's change.
pub async fn meta_versions_guard_concurrent_changes(h: &Harness) {
    let s = &*h.store;
    let name = "conformance-cas";
    let load = || async { s.load_meta_versioned(name).await.expect("load") };
    assert_eq!(load().await, None);

    let v1 = s
        .save_meta_if(name, None, b"{\"v\":1}")
        .await
        .expect("save")
        .expect("a missing document is created with expected None");
    assert_eq!(load().await, Some((v1, b"{\"v\":1}".to_vec())));
    assert_eq!(
        s.save_meta_if(name, None, b"{\"v\":0}")
            .await
            .expect("save"),
        None,
        "expected None but the document exists"
    );
    assert_eq!(load().await, Some((v1, b"{\"v\":1}".to_vec())));

    let v2 = s
        .save_meta_if(name, Some(v1), b"{\"v\":2}")
        .await
        .expect("save")
        .expect("saved at the current version");
    assert_ne!(v2, v1);
    assert_eq!(load().await, Some((v2, b"{\"v\":2}".to_vec())));
    assert_eq!(
        s.load_meta(name).await.expect("load").as_deref(),
        Some(&b"{\"v\":2}"[..])
    );
    assert_eq!(
        s.save_meta_if(name, Some(v1), b"{\"v\":3}")
            .await
            .expect("save"),
        None,
        "a stale version is refused"
    );
    assert_eq!(load().await, Some((v2, b"{\"v\":2}".to_vec())));

    // Writers racing from one version: exactly one wins, and the document is the winner's.
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&h.store);
            tokio::spawn(async move {
                let bytes = format!("{{\"racer\":{i}}}").into_bytes();
                let saved = store
                    .save_meta_if(name, Some(v2), &bytes)
                    .await
                    .expect("save");
                saved.map(|v| (v, bytes))
            })
        })
        .collect();
    let mut winners = Vec::new();
    for racer in racers {
        winners.extend(racer.await.expect("racer task"));
    }
    assert_eq!(winners.len(), 1, "exactly one racer saves");
    let (v3, bytes) = winners.remove(0);
    assert_eq!(load().await, Some((v3, bytes)));

    // A plain save is a change too: versions read before it are stale afterwards.
    s.save_meta(name, b"{\"v\":4}").await.expect("save");
    let (v4, _) = load().await.expect("exists");
    assert_ne!(v4, v3);
    assert_eq!(
        s.save_meta_if(name, Some(v3), b"{\"v\":5}")
            .await
            .expect("save"),
        None
    );
    assert_eq!(load().await, Some((v4, b"{\"v\":4}".to_vec())));
}

/// Stored hashes a tree of `leaves` must have, computed from scratch.
fn expected_hashes(leaves: &[vigil_event::Hash]) -> Vec<vigil_event::Hash> {
    let mut f = vigil_integrity::tree::Frontier::new();
    let mut out = Vec::new();
    for l in leaves {
        f.push(*l, |h| out.push(*h));
    }
    out
}

pub async fn merkle_hashes_match_the_events(h: &Harness) {
    let s = &*h.store;
    let t = tenant("a");
    assert_eq!(s.tree_size(&t).await.expect("size"), 0);
    // Batches of uneven sizes, so subtrees complete inside and across batches.
    for (i, n) in [1usize, 2, 5, 8, 13, 1].into_iter().enumerate() {
        let batch = (0..n)
            .map(|j| prepared("a", json!({"type": "x", "batch": i, "n": j})))
            .collect();
        s.append(batch).await.expect("append");
        let mut events = all(s, "a", Expr::All, Order::Asc).await;
        events.sort_by_key(|e| e.seq);
        let leaves: Vec<_> = events.iter().map(|e| leaf_hash(&e.canonical)).collect();
        let size = s.tree_size(&t).await.expect("size");
        assert_eq!(
            size,
            leaves.len() as u64,
            "every acknowledged event is in the tree"
        );
        let want = expected_hashes(&leaves);
        let indexes: Vec<u64> = (0..want.len() as u64).collect();
        assert_eq!(s.read_hashes(&t, &indexes).await.expect("read"), want);
    }
    // Any order, repeats allowed; beyond the tree is an error, not a guess.
    let some = s.read_hashes(&t, &[3, 0, 3]).await.expect("read");
    let again = s.read_hashes(&t, &[0, 3]).await.expect("read");
    assert_eq!(some, vec![again[1], again[0], again[1]]);
    let count = vigil_integrity::tree::stored_hash_count(s.tree_size(&t).await.expect("size"));
    assert!(s.read_hashes(&t, &[count]).await.is_err());
    assert!(s.read_hashes(&t, &[]).await.expect("empty read").is_empty());
    // The root the stored hashes give is the RFC 6962 root of the events.
    let size = s.tree_size(&t).await.expect("size");
    let root =
        vigil_integrity::tree::tree_root(size, async |idx: Vec<u64>| s.read_hashes(&t, &idx).await)
            .await
            .expect("root");
    let mut events = all(s, "a", Expr::All, Order::Asc).await;
    events.sort_by_key(|e| e.seq);
    let mut f = vigil_integrity::tree::Frontier::new();
    for e in &events {
        f.push(leaf_hash(&e.canonical), |_| {});
    }
    assert_eq!(root, f.root());
}

pub async fn merkle_trees_are_per_tenant(h: &Harness) {
    let s = &*h.store;
    seed(s, "a").await;
    s.append(vec![prepared("b", json!({"type": "x"}))])
        .await
        .expect("append");
    assert_eq!(s.tree_size(&tenant("a")).await.expect("size"), 10);
    assert_eq!(s.tree_size(&tenant("b")).await.expect("size"), 1);
    assert_eq!(s.tree_size(&tenant("nobody")).await.expect("size"), 0);
    let mut sizes = s.tree_sizes().await.expect("sizes");
    sizes.sort();
    assert_eq!(sizes, vec![(tenant("a"), 10), (tenant("b"), 1)]);
    // b's tree holds b's one leaf, nothing of a's.
    assert!(s.read_hashes(&tenant("b"), &[1]).await.is_err());
    assert!(s.read_hashes(&tenant("nobody"), &[0]).await.is_err());
    let b = all(s, "b", Expr::All, Order::Asc).await;
    assert_eq!(
        s.read_hashes(&tenant("b"), &[0]).await.expect("read"),
        vec![leaf_hash(&b[0].canonical)]
    );
}

pub async fn checkpoints_are_kept_and_the_first_wins(h: &Harness) {
    let s = &*h.store;
    let t = tenant("a");
    assert_eq!(s.checkpoint(&t, None).await.expect("latest"), None);
    assert_eq!(s.checkpoints(&t).await.expect("list"), vec![]);
    seed(s, "a").await;
    let cp = |size: u64, fill: u8, secs: i64| StoredCheckpoint {
        size,
        root: [fill; 32],
        timestamp: Timestamp::from_nanos(secs * 1_000_000_000 + 123),
        note: format!("vigil/a\n{size}\nroot\n\n— vigil sig{fill}\n"),
    };
    s.save_checkpoint(&t, &cp(4, 1, 100)).await.expect("save");
    s.save_checkpoint(&t, &cp(10, 2, 101)).await.expect("save");
    // A second checkpoint of a size already kept changes nothing.
    s.save_checkpoint(&t, &cp(4, 9, 102))
        .await
        .expect("save again");
    assert_eq!(
        s.checkpoint(&t, None).await.expect("latest"),
        Some(cp(10, 2, 101))
    );
    assert_eq!(
        s.checkpoint(&t, Some(4)).await.expect("at 4"),
        Some(cp(4, 1, 100))
    );
    assert_eq!(s.checkpoint(&t, Some(5)).await.expect("at 5"), None);
    assert_eq!(
        s.checkpoints(&t).await.expect("list"),
        vec![cp(4, 1, 100), cp(10, 2, 101)]
    );
    // Another tenant sees none of them.
    s.append(vec![prepared("b", json!({"type": "x"}))])
        .await
        .expect("append");
    assert_eq!(s.checkpoint(&tenant("b"), None).await.expect("b"), None);
    assert_eq!(s.checkpoints(&tenant("b")).await.expect("b"), vec![]);
}
