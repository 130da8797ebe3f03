//! Filtered queries read the newest rows in time order first and only then turn to the
//! filter's indexes for the rows after them. Both halves must give the same pages, in both
//! orders and across cursors, as a scan with the evaluator: here with rare matches that lie
//! beyond the probed rows, common ones within them, and pages that straddle the boundary.

use serde_json::{Map, Value, json};
use vigil_event::{Limits, TenantId, Timestamp, normalize};
use vigil_query::{Cursor, Expr, Order, Query, QueryLimits, parse_expr};
use vigil_store::Store;
use vigil_store_postgres::PgStore;
use vigil_store_postgres::testing::TestDatabase;

use crate::support::connect;

const EVENTS: usize = 5_000;

/// Every page of `filter` in `order`, `limit` at a time.
async fn pages(
    store: &PgStore,
    tenant: &TenantId,
    filter: &Expr,
    order: Order,
    limit: usize,
) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut cursor: Option<Cursor> = None;
    loop {
        let page = store
            .query(
                tenant,
                &Query {
                    filter: filter.clone(),
                    from: None,
                    to: None,
                    limit,
                    order,
                    cursor,
                },
            )
            .await
            .expect("query");
        seqs.extend(page.events.iter().map(|e| e.seq));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return seqs,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rare_and_common_matches_page_alike_on_both_plans() {
    let db = TestDatabase::create().await;
    let store = connect(&db, 3).await;
    let tenant = TenantId::parse("plans").expect("tenant");
    let t0 = 1_700_000_000_000_000_000i64;
    let batch: Vec<_> = (0..EVENTS)
        .map(|i| {
            // Rare: 7 events, all older than the newest few thousand. Common: every third.
            let rare = i % 700 == 3;
            let body = json!({
                "type": if i % 3 == 0 { "common" } else { "other" },
                "time": Timestamp::from_nanos(t0 + i as i64 * 1_000_000_000).to_rfc3339(),
                "actor": {"id": if rare { "rare-actor".to_owned() } else { format!("u-{}", i % 50) }},
                "details": {"k": if rare { "rare" } else { "usual" }, "n": i},
            });
            normalize(body, &Limits::default())
                .expect("valid")
                .prepare(&tenant, Timestamp::from_nanos(t0), "plans")
        })
        .collect();
    for chunk in batch.chunks(1_000) {
        store.append(chunk.to_vec()).await.expect("append");
    }
    let everything: Vec<(u64, Map<String, Value>)> = store
        .query(
            &tenant,
            &Query {
                filter: Expr::All,
                from: None,
                to: None,
                limit: 10_000,
                order: Order::Asc,
                cursor: None,
            },
        )
        .await
        .expect("query")
        .events
        .iter()
        .map(|e| (e.seq, serde_json::from_slice(&e.canonical).expect("json")))
        .collect();
    assert_eq!(everything.len(), EVENTS);
    let now = Timestamp::now();
    for text in [
        "details.k:rare",
        "actor.id:rare-actor",
        "details.k:rare OR details.n<3",
        "type:common",
        "type:common AND details.n>=4990",
        "details.n>=2995 AND details.n<3005",
        "details.k:nothing",
    ] {
        let filter = parse_expr(text, &QueryLimits::default()).expect("parses");
        let mut want: Vec<u64> = everything
            .iter()
            .filter(|(_, e)| filter.matches(e, now))
            .map(|(s, _)| *s)
            .collect();
        for limit in [7, 2_500] {
            assert_eq!(
                pages(&store, &tenant, &filter, Order::Asc, limit).await,
                want,
                "{text} asc limit {limit}"
            );
        }
        want.reverse();
        for limit in [7, 2_500] {
            assert_eq!(
                pages(&store, &tenant, &filter, Order::Desc, limit).await,
                want,
                "{text} desc limit {limit}"
            );
        }
    }
    store.shutdown().await.expect("shutdown");
}
