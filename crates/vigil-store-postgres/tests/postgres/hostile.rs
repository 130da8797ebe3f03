//! Hostile field names and values go through as data: stored, found by exact match, prefix,
//! existence and range, and the schema is untouched. (The SQL text is built from fixed
//! fragments only; `src/sql.rs` has the unit test that inspects it.)

use serde_json::json;
use vigil_query::{CmpOp, Expr, Literal, Order, Query};
use vigil_store::Store;
use vigil_store::fixtures::{prepare, tenant};
use vigil_store_postgres::testing::TestDatabase;

use crate::support::connect;

const KEYS: [&str; 5] = [
    "x'); DROP TABLE vigil_events; --",
    "a\"b\\c",
    "$.weird[*] ? (@ == 1)",
    "ключ 🔑",
    "tab\there",
];
const VALUE: &str = "'; DELETE FROM vigil_meta; -- \" \\ $v";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_paths_and_values_are_only_data() {
    let db = TestDatabase::create().await;
    let store = connect(&db, 2).await;
    store.save_meta("auth", b"{}").await.expect("meta");
    let tenant = tenant("h");
    let mut details = serde_json::Map::new();
    for k in KEYS {
        details.insert(k.to_owned(), json!(VALUE));
        details.insert(format!("{k}.n"), json!(5));
    }
    let ev = prepare("h", json!({"type": "t", "details": details}));
    store.append(vec![ev]).await.expect("append");
    for k in KEYS {
        let path = format!("details.{k}");
        for filter in [
            Expr::Compare {
                path: path.clone(),
                op: CmpOp::Eq,
                value: Literal::bare(VALUE),
            },
            Expr::Prefix {
                path: path.clone(),
                prefix: VALUE[..5].to_owned(),
            },
            Expr::Exists { path: path.clone() },
            Expr::Compare {
                path: format!("{path}.n"),
                op: CmpOp::Ge,
                value: Literal::bare("5"),
            },
        ] {
            let page = store
                .query(
                    &tenant,
                    &Query {
                        filter: filter.clone(),
                        from: None,
                        to: None,
                        limit: 10,
                        order: Order::Desc,
                        cursor: None,
                    },
                )
                .await
                .expect("query");
            assert_eq!(page.events.len(), 1, "{filter:?}");
            assert_eq!(
                store
                    .count(&tenant, &filter, None, None)
                    .await
                    .expect("count"),
                1
            );
        }
    }
    // Tables and documents are all still there.
    assert_eq!(
        store.load_meta("auth").await.expect("meta").as_deref(),
        Some(&b"{}"[..])
    );
    store.shutdown().await.expect("shutdown");
}
