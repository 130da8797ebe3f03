//! Model tests shared by every backend (feature `testsuite`): for random events and random
//! filters, a store's answer equals a brute-force scan with [`Expr::matches`], the evaluator
//! that defines the query language; and no filter ever shows a tenant another tenant's events.
//!
//! A backend's test file runs them under `proptest!` with its own store factory:
//! ```ignore
//! proptest! {
//!     #[test]
//!     fn store_agrees_with_evaluator(events in vec(arb_event(), 1..40), exprs in vec(arb_expr(), 1..8)) {
//!         runtime.block_on(vigil_store::model::check_filters(&store, "m1", events, exprs))?;
//!     }
//! }
//! ```

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Map, Value, json};
use vigil_event::{Limits, TenantId, Timestamp, normalize};
use vigil_query::{Expr, Order, Query, QueryLimits, parse_expr};

use crate::Store;

const T0: i64 = 1_700_000_000_000_000_000;

fn at(secs: i64) -> String {
    Timestamp::from_nanos(T0 + secs * 1_000_000_000).to_rfc3339()
}

/// Events over small value pools, so filters find repeats: types, severities, actors (or none),
/// IPs,
/// times, mixed-type and array values, times inside details, and now and then a top-level key
/// that flattens onto another field's path (`"actor.id"`, `"details.plan"`).
pub fn arb_event() -> impl Strategy<Value = Value> {
    (
        (
            prop::sample::select(vec!["login.failed", "login.succeeded", "account.created"]),
            0u8..=10,
            prop::option::weighted(
                0.8,
                prop::sample::select(vec!["u-1", "u-2", "u-10", "admin"]),
            ),
            prop::option::of(prop::sample::select(vec![
                "10.0.0.1",
                "10.0.1.2",
                "192.168.1.1",
            ])),
            -50i64..50,
        ),
        (
            prop::option::of(prop::sample::select(vec![
                json!(1),
                json!(2.5),
                json!("3"),
                json!(true),
                json!(null),
                json!([1, "a"]),
                json!([[2], {"y": 1}]),
            ])),
            prop::option::of(prop::sample::select(vec!["free", "pro", "pro-max"])),
            prop::option::of(-60i64..60),
            prop::option::of(prop::sample::select(vec![
                ("actor.id", json!("u-1")),
                ("actor.id", json!(7)),
                ("details.plan", json!("pro")),
            ])),
        ),
    )
        .prop_map(|((t, sev, actor, ip, secs), (extra, plan, when, dotted))| {
            let mut details = Map::new();
            if let Some(x) = extra {
                details.insert("x".into(), x);
            }
            if let Some(p) = plan {
                details.insert("plan".into(), json!(p));
            }
            if let Some(w) = when {
                details.insert("when".into(), json!(at(w)));
            }
            let mut actor_obj = serde_json::Map::new();
            if let Some(id) = actor {
                actor_obj.insert("id".into(), json!(id));
            }
            if let Some(ip) = ip {
                actor_obj.insert("ip".into(), json!(ip));
            }
            let mut event =
                json!({"type": t, "severity": sev, "time": at(secs), "details": details});
            if !actor_obj.is_empty() {
                event["actor"] = Value::Object(actor_obj);
            }
            if let Some((key, value)) = dotted {
                event[key] = value;
            }
            event
        })
}

fn arb_leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["login.failed", "account.created", "nope", "login.*"])
            .prop_map(|v| format!("type:{v}")),
        (
            prop::sample::select(vec![">", ">=", "<", "<=", ":"]),
            0u8..=10
        )
            .prop_map(|(op, v)| format!("severity{op}{v}")),
        prop::sample::select(vec!["u-1", "u-1*", "u*", "admin", "\"u-10\"", "7", "*"])
            .prop_map(|v| format!("actor.id:{v}")),
        prop::sample::select(vec!["10.0.*", "192.168.1.1", "*"])
            .prop_map(|v| format!("actor.ip:{v}")),
        prop::sample::select(vec![
            "1", "2.5", "3", "\"3\"", "true", "null", "a", "*", "1*", "2"
        ])
        .prop_map(|v| format!("details.x:{v}")),
        (
            prop::sample::select(vec![">", ">=", "<", "<="]),
            prop::sample::select(vec!["1", "2", "0.5"])
        )
            .prop_map(|(op, v)| format!("details.x{op}{v}")),
        prop::sample::select(vec!["1", "*"]).prop_map(|v| format!("details.x.y:{v}")),
        prop::sample::select(vec!["pro", "pro*", "free", "*"])
            .prop_map(|v| format!("details.plan:{v}")),
        (
            prop::sample::select(vec![">", ">=", "<", "<=", ":"]),
            -60i64..60
        )
            .prop_map(|(op, s)| format!("time{op}{}", at(s))),
        (
            prop::sample::select(vec![">", ">=", "<", "<=", ":"]),
            -60i64..60
        )
            .prop_map(|(op, s)| format!("details.when{op}{}", at(s))),
        (prop::sample::select(vec![">", "<=", ":"]), 1u8..30)
            .prop_map(|(op, s)| format!("seq{op}{s}")),
        prop::sample::select(vec![
            "received_at>=2000-01-01",
            "received_at<2000-01-01",
            "tenant:*"
        ])
        .prop_map(str::to_owned),
    ]
}

/// Filters built from the leaves above with `AND`, `OR` and `NOT`, up to three levels deep.
pub fn arb_expr() -> impl Strategy<Value = String> {
    arb_leaf().prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} AND {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} OR {b})")),
            inner.prop_map(|a| format!("NOT ({a})")),
        ]
    })
}

fn everything() -> Query {
    Query {
        filter: Expr::All,
        from: None,
        to: None,
        limit: 10_000,
        order: Order::Asc,
        cursor: None,
    }
}

fn parse(text: &str) -> Expr {
    parse_expr(text, &QueryLimits::default()).expect("generated expressions parse")
}

fn object(bytes: &[u8]) -> Map<String, Value> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(m)) => m,
        _ => panic!("stored event is not an object"),
    }
}

/// Appends `events` to `tenant` (which must be empty) in batches of three, then checks every
/// filter of `exprs`: query and count equal the evaluator's answer over the stored events.
pub async fn check_filters(
    store: &dyn Store,
    tenant: &str,
    events: Vec<Value>,
    exprs: Vec<String>,
) -> Result<(), TestCaseError> {
    let tenant = TenantId::parse(tenant).expect("tenant");
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
    let stored: Vec<(u64, Map<String, Value>)> = store
        .query(&tenant, &everything())
        .await
        .expect("query")
        .events
        .iter()
        .map(|e| (e.seq, object(&e.canonical)))
        .collect();
    prop_assert_eq!(stored.len(), events.len());
    let now = Timestamp::now();
    for text in &exprs {
        let expr = parse(text);
        let want: BTreeSet<u64> = stored
            .iter()
            .filter(|(_, m)| expr.matches(m, now))
            .map(|(s, _)| *s)
            .collect();
        let q = Query {
            filter: expr.clone(),
            ..everything()
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
    Ok(())
}

/// Tenant isolation, as a property: events of three tenants (`<prefix>0..2`, which must be
/// empty; the same ids in several tenants on purpose), random filters — and filters naming
/// another tenant — and every answer holds the asking tenant's matching events, exactly.
pub async fn check_tenants(
    store: &dyn Store,
    prefix: &str,
    events: Vec<(usize, Value)>,
    exprs: Vec<String>,
) -> Result<(), TestCaseError> {
    let tenants: Vec<String> = (0..3).map(|i| format!("{prefix}{i}")).collect();
    for (i, (t, e)) in events.iter().enumerate() {
        let mut e = e.clone();
        e["id"] = json!(format!("ev-{}", i / 2));
        let ev = normalize(e, &Limits::default()).expect("valid").prepare(
            &TenantId::parse(&tenants[*t % 3]).expect("tenant"),
            Timestamp::from_nanos(T0),
            "model",
        );
        // One by one: the same id twice in one tenant is then a duplicate or a conflict.
        let _ = store.append(vec![ev]).await;
    }
    let now = Timestamp::now();
    let mut texts = exprs;
    texts.extend(tenants.iter().map(|t| format!("tenant:{t}")));
    for asker in &tenants {
        let tenant = TenantId::parse(asker).expect("tenant");
        let mine: Vec<Map<String, Value>> = store
            .query(&tenant, &everything())
            .await
            .expect("query")
            .events
            .iter()
            .map(|e| object(&e.canonical))
            .collect();
        for m in &mine {
            prop_assert_eq!(m["tenant"].as_str(), Some(asker.as_str()));
        }
        for text in &texts {
            let expr = parse(text);
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
                        ..everything()
                    },
                )
                .await
                .expect("query");
            for e in &page.events {
                let v = object(&e.canonical);
                prop_assert_eq!(
                    v["tenant"].as_str(),
                    Some(asker.as_str()),
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
    Ok(())
}
