//! Model test: for random events and random filters, the store's indexed answer (memtable and
//! sealed segments alike) equals a brute-force scan with `Expr::matches`, the evaluator the query
//! language defines. Any disagreement between the index planner and the language shows up here.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use vigil_event::{Limits, TenantId, Timestamp, normalize};
use vigil_query::{Expr, Order, Query, QueryLimits, parse_expr};
use vigil_store::Store;
use vigil_store_embedded::{EmbeddedConfig, EmbeddedStore};

const T0: i64 = 1_700_000_000_000_000_000;

fn arb_event() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["login.failed", "login.succeeded", "account.created"]),
        0u8..=10,
        prop::sample::select(vec!["u-1", "u-2", "u-10", "admin"]),
        prop::option::of(prop::sample::select(vec!["10.0.0.1", "10.0.1.2", "192.168.1.1"])),
        -50i64..50,
        prop::option::of(prop::sample::select(vec![json!(1), json!(2.5), json!("3"), json!(true), json!(null), json!([1, "a"])])),
        prop::option::of(prop::sample::select(vec!["free", "pro", "pro-max"])),
    )
        .prop_map(|(t, sev, actor, ip, secs, extra, plan)| {
            let mut details = serde_json::Map::new();
            if let Some(x) = extra {
                details.insert("x".into(), x);
            }
            if let Some(p) = plan {
                details.insert("plan".into(), json!(p));
            }
            let mut actor_obj = json!({"id": actor});
            if let Some(ip) = ip {
                actor_obj["ip"] = json!(ip);
            }
            json!({"type": t, "severity": sev, "actor": actor_obj,
                   "time": Timestamp::from_nanos(T0 + secs * 1_000_000_000).to_rfc3339(), "details": details})
        })
}

fn arb_leaf() -> impl Strategy<Value = String> {
    let t = |s: i64| Timestamp::from_nanos(T0 + s * 1_000_000_000).to_rfc3339();
    prop_oneof![
        prop::sample::select(vec!["login.failed", "account.created", "nope"])
            .prop_map(|v| format!("type:{v}")),
        (
            prop::sample::select(vec![">", ">=", "<", "<=", ":"]),
            0u8..=10
        )
            .prop_map(|(op, v)| format!("severity{op}{v}")),
        prop::sample::select(vec!["u-1", "u-1*", "u*", "admin", "\"u-10\""])
            .prop_map(|v| format!("actor.id:{v}")),
        prop::sample::select(vec!["10.0.*", "192.168.1.1", "*"])
            .prop_map(|v| format!("actor.ip:{v}")),
        prop::sample::select(vec![
            "1", "2.5", "3", "\"3\"", "true", "null", "a", "*", "1*"
        ])
        .prop_map(|v| format!("details.x:{v}")),
        (
            prop::sample::select(vec![">", ">=", "<", "<="]),
            prop::sample::select(vec!["1", "2", "0.5"])
        )
            .prop_map(|(op, v)| format!("details.x{op}{v}")),
        prop::sample::select(vec!["pro", "pro*", "free", "*"])
            .prop_map(|v| format!("details.plan:{v}")),
        (
            prop::sample::select(vec![">", ">=", "<", "<=", ":"]),
            -60i64..60
        )
            .prop_map(move |(op, s)| format!("time{op}{}", t(s))),
    ]
}

fn arb_expr() -> impl Strategy<Value = String> {
    arb_leaf().prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} AND {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} OR {b})")),
            inner.prop_map(|a| format!("NOT ({a})")),
        ]
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A fresh store in its own directory (kept alive by the returned guard).
fn open_store(segment_max_events: u64) -> (tempfile::TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(EmbeddedConfig {
        segment_max_events,
        seal_interval: Duration::from_secs(3600),
        ..EmbeddedConfig::new(dir.path())
    })
    .expect("open");
    (dir, store)
}

fn check(
    events: Vec<Value>,
    exprs: Vec<String>,
    segment_max_events: u64,
) -> Result<(), TestCaseError> {
    runtime().block_on(async {
        let (_dir, store) = open_store(segment_max_events);
        let store = Arc::new(store);
        let tenant = TenantId::parse("m").expect("tenant");
        let prepared: Vec<_> = events
            .iter()
            .map(|e| {
                normalize(e.clone(), &Limits::default())
                    .expect("valid")
                    .prepare(&tenant, Timestamp::from_nanos(T0), "model")
            })
            .collect();
        for chunk in prepared.chunks(3) {
            store.append(chunk.to_vec()).await.expect("append");
        }
        // Every stored event, as the evaluator sees it.
        let everything = Query {
            filter: Expr::All,
            from: None,
            to: None,
            limit: 10_000,
            order: Order::Asc,
            cursor: None,
        };
        let stored: Vec<(u64, serde_json::Map<String, Value>)> = store
            .query(&tenant, &everything)
            .await
            .expect("query")
            .events
            .iter()
            .map(|e| match serde_json::from_slice(&e.canonical) {
                Ok(Value::Object(m)) => (e.seq, m),
                _ => panic!("stored event is not an object"),
            })
            .collect();
        prop_assert_eq!(stored.len(), events.len());
        let now = Timestamp::now();
        for text in &exprs {
            let expr =
                parse_expr(text, &QueryLimits::default()).expect("generated expressions parse");
            let want: BTreeSet<u64> = stored
                .iter()
                .filter(|(_, m)| expr.matches(m, now))
                .map(|(s, _)| *s)
                .collect();
            let q = Query {
                filter: expr.clone(),
                ..everything.clone()
            };
            let got: BTreeSet<u64> = store
                .query(&tenant, &q)
                .await
                .expect("query")
                .events
                .iter()
                .map(|e| e.seq)
                .collect();
            prop_assert_eq!(&got, &want, "query {}", text);
            let n = store
                .count(&tenant, &expr, None, None)
                .await
                .expect("count");
            prop_assert_eq!(n as usize, want.len(), "count {}", text);
        }
        store.shutdown().await.expect("shutdown");
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn index_agrees_with_evaluator_in_memory(events in prop::collection::vec(arb_event(), 1..40), exprs in prop::collection::vec(arb_expr(), 1..8)) {
        check(events, exprs, 1_000_000)?;
    }

    #[test]
    fn index_agrees_with_evaluator_when_sealed(events in prop::collection::vec(arb_event(), 1..40), exprs in prop::collection::vec(arb_expr(), 1..8)) {
        check(events, exprs, 4)?;
    }
}

/// Regression: a prefix matching several terms of an unsealed segment lost docs. Postings were
/// added with `RoaringBitmap::append`, which refuses (silently, through an ignored `Err`) values
/// below the bitmap's current maximum, so the second term's docs vanished whenever the first
/// term's were larger.
#[test]
fn prefix_over_several_memtable_terms_keeps_every_doc() {
    let e = |id: &str, plan: &str| json!({"type": "login.failed", "severity": 0, "actor": {"id": id}, "time": "2023-11-14T22:13:20Z", "details": {"plan": plan}});
    check(
        vec![
            e("u-1", "pro-max"),
            e("u-1", "pro"),
            e("u-1", "pro-max"),
            e("u-2", "pro"),
        ],
        vec![
            "((details.plan:pro* OR actor.id:u-1) AND (type:login.failed OR type:login.failed))"
                .into(),
        ],
        1_000_000,
    )
    .expect("store agrees with the evaluator");
}

/// Tenant isolation, as a property: events of random tenants (the same ids in several tenants
/// included), random filters — including filters that name another tenant — and every answer
/// holds the asking tenant's matching events, exactly, and nothing else.
fn check_tenants(
    events: Vec<(usize, Value)>,
    exprs: Vec<String>,
    segment_max_events: u64,
) -> Result<(), TestCaseError> {
    const TENANTS: [&str; 3] = ["t0", "t1", "t2"];
    runtime().block_on(async {
        let (_dir, store) = open_store(segment_max_events);
        let prepared: Vec<_> = events
            .iter()
            .enumerate()
            .map(|(i, (t, e))| {
                let mut e = e.clone();
                // Ids repeat across tenants on purpose: isolation must not depend on them.
                e["id"] = json!(format!("ev-{}", i / 2));
                normalize(e, &Limits::default()).expect("valid").prepare(
                    &TenantId::parse(TENANTS[*t]).expect("tenant"),
                    Timestamp::from_nanos(T0),
                    "model",
                )
            })
            .collect();
        for ev in prepared {
            // One by one: the same id twice in one tenant is then a duplicate or a conflict.
            let _ = store.append(vec![ev]).await;
        }
        let now = Timestamp::now();
        let everything = Query {
            filter: Expr::All,
            from: None,
            to: None,
            limit: 10_000,
            order: Order::Asc,
            cursor: None,
        };
        let mut texts = exprs;
        texts.extend(TENANTS.iter().map(|t| format!("tenant:{t}")));
        for asker in TENANTS {
            let tenant = TenantId::parse(asker).expect("tenant");
            let mine: Vec<serde_json::Map<String, Value>> = store
                .query(&tenant, &everything)
                .await
                .expect("query")
                .events
                .iter()
                .map(|e| match serde_json::from_slice(&e.canonical) {
                    Ok(Value::Object(m)) => m,
                    _ => panic!("stored event is not an object"),
                })
                .collect();
            for m in &mine {
                prop_assert_eq!(m["tenant"].as_str(), Some(asker));
            }
            for text in &texts {
                let expr = parse_expr(text, &QueryLimits::default()).expect("parses");
                let want: BTreeSet<u64> = mine
                    .iter()
                    .filter(|m| expr.matches(m, now))
                    .filter_map(|m| m["seq"].as_u64())
                    .collect();
                let page = store
                    .query(
                        &tenant,
                        &Query {
                            filter: expr.clone(),
                            ..everything.clone()
                        },
                    )
                    .await
                    .expect("query");
                for e in &page.events {
                    let v: Value = serde_json::from_slice(&e.canonical).expect("json");
                    prop_assert_eq!(
                        v["tenant"].as_str(),
                        Some(asker),
                        "{} leaked into {}",
                        text,
                        asker
                    );
                }
                let got: BTreeSet<u64> = page.events.iter().map(|e| e.seq).collect();
                prop_assert_eq!(&got, &want, "tenant {} query {}", asker, text);
                let n = store
                    .count(&tenant, &expr, None, None)
                    .await
                    .expect("count");
                prop_assert_eq!(n as usize, want.len());
            }
        }
        store.shutdown().await.expect("shutdown");
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn tenants_never_see_each_other(
        events in prop::collection::vec((0usize..3, arb_event()), 1..40),
        exprs in prop::collection::vec(arb_expr(), 1..5),
        tiny in any::<bool>(),
    ) {
        check_tenants(events, exprs, if tiny { 4 } else { 1_000_000 })?;
    }
}
