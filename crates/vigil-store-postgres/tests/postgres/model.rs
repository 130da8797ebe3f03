//! Model tests (`vigil_store::model`) on PostgreSQL: for random events and random filters, the
//! compiled SQL's answer equals a brute-force scan with `Expr::matches`, the evaluator the query
//! language defines, and no filter shows one tenant another's events. One database for the
//! whole run; every case writes to tenants of its own.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use proptest::prelude::*;
use vigil_store::model::{arb_event, arb_expr, check_filters, check_tenants};
use vigil_store_postgres::PgStore;
use vigil_store_postgres::testing::TestDatabase;

use crate::support::connect;

struct Shared {
    runtime: tokio::runtime::Runtime,
    store: PgStore,
    _db: TestDatabase,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (db, store) = runtime.block_on(async {
            let db = TestDatabase::create().await;
            let store = connect(&db, 4).await;
            (db, store)
        });
        Shared {
            runtime,
            store,
            _db: db,
        }
    })
}

fn next_tenant(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

proptest! {
    #![proptest_config(crate::support::proptest_config(64))]

    #[test]
    fn sql_agrees_with_evaluator(events in prop::collection::vec(arb_event(), 1..40), exprs in prop::collection::vec(arb_expr(), 1..8)) {
        let s = shared();
        s.runtime.block_on(check_filters(&s.store, &next_tenant("m"), events, exprs))?;
    }

    #[test]
    fn tenants_never_see_each_other(
        events in prop::collection::vec((0usize..3, arb_event()), 1..40),
        exprs in prop::collection::vec(arb_expr(), 1..5),
    ) {
        let s = shared();
        s.runtime.block_on(check_tenants(&s.store, &next_tenant("t") , events, exprs))?;
    }
}
