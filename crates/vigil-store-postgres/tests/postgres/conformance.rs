//! The shared Store conformance suite against PostgreSQL, each check in its own database.

use std::sync::Arc;

use vigil_store::testsuite::Harness;
use vigil_store_postgres::testing::TestDatabase;

use crate::support::connect;

async fn fresh() -> Harness {
    let db = TestDatabase::create().await;
    let store = connect(&db, 4).await;
    Harness {
        store: Arc::new(store),
        guard: Box::new(db),
    }
}

vigil_store::store_conformance_suite!(fresh);
