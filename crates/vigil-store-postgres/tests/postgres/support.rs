//! What several test modules share: a store on a test database, and proptest's settings.

use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence};
use vigil_store_postgres::testing::TestDatabase;
use vigil_store_postgres::{PgConfig, PgStore};

/// A store on `db` with a pool of `pool_size` connections.
pub async fn connect(db: &TestDatabase, pool_size: usize) -> PgStore {
    PgStore::connect(PgConfig {
        pool_size,
        ..PgConfig::new(db.url())
    })
    .await
    .expect("connect")
}

/// `cases` cases per property, with failures saved beside the test module that found them
/// (`model.rs` → `model.proptest-regressions`). Proptest's default would put them under
/// `tests/proptest-regressions/` now that the tests have a `main.rs`, and miss the seeds
/// already saved.
pub fn proptest_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

/// Turns the database back into what schema version 1 left: no unique `(tenant, seq)` on the
/// ids, no tree tables, no frontier, no record of migrations 2 and 3.
pub async fn downgrade_to_version_1(db: &TestDatabase) {
    db.client()
        .await
        .batch_execute(
            "ALTER TABLE vigil_event_ids DROP CONSTRAINT vigil_event_ids_tenant_seq;
             DROP TABLE vigil_tree_hashes;
             DROP TABLE vigil_checkpoints;
             ALTER TABLE vigil_tenants DROP COLUMN frontier;
             DELETE FROM vigil_migrations WHERE version IN (2, 3);",
        )
        .await
        .expect("downgrade");
}
