//! Model tests (`vigil_store::model`) on the embedded store, each case on a fresh store: for
//! random events and random filters, the indexed answer (memtable and sealed segments alike)
//! equals a brute-force scan with `Expr::matches`, the evaluator the query language defines, and
//! no filter shows one tenant another's events.

use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use vigil_store::Store;
use vigil_store::model::{arb_event, arb_expr, check_filters, check_tenants};
use vigil_store_embedded::{EmbeddedConfig, EmbeddedStore};

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
        check_filters(&store, "m", events, exprs).await?;
        store.shutdown().await.expect("shutdown");
        Ok(())
    })
}

proptest! {
    #![proptest_config(crate::support::proptest_config(64))]

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

proptest! {
    #![proptest_config(crate::support::proptest_config(32))]

    #[test]
    fn tenants_never_see_each_other(
        events in prop::collection::vec((0usize..3, arb_event()), 1..40),
        exprs in prop::collection::vec(arb_expr(), 1..5),
        tiny in any::<bool>(),
    ) {
        runtime().block_on(async {
            let (_dir, store) = open_store(if tiny { 4 } else { 1_000_000 });
            check_tenants(&store, "t", events, exprs).await?;
            store.shutdown().await.expect("shutdown");
            Ok::<(), TestCaseError>(())
        })?;
    }
}
