//! The schema as a DBA meets it: constraints the database enforces by itself, and a comment on
//! every table and column.

use vigil_store::Store;
use vigil_store::fixtures::batch;
use vigil_store_postgres::testing::TestDatabase;

use crate::support::connect;

/// Regression (issue 12): a unique `(tenant, seq)` was kept by vigil's writers only; any other
/// writer to the database (a script, a bad restore) could put a second event at a position of
/// a tenant's log. The database now refuses it.
#[tokio::test]
async fn the_database_refuses_a_second_event_at_one_seq() {
    let db = TestDatabase::create().await;
    let store = connect(&db, 2).await;
    store.append(batch("acme", "e", 3)).await.expect("append");
    store.shutdown().await.expect("shutdown");

    let sql = db.client().await;
    let err = sql
        .execute(
            "INSERT INTO vigil_event_ids (tenant, id, seq, time_ns, digest)
             VALUES ('acme', 'intruder', 2, 0, '\\x00')",
            &[],
        )
        .await
        .expect_err("a second event at seq 2");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION),
        "{err}"
    );
    // Another tenant's seq 2 is its own.
    sql.execute(
        "INSERT INTO vigil_event_ids (tenant, id, seq, time_ns, digest)
         VALUES ('globex', 'first', 2, 0, '\\x00')",
        &[],
    )
    .await
    .expect("another tenant's seq");
}

/// Regression (issue 12): `\d+` showed no description, so a DBA had to read vigil's source to
/// learn what `actor_multi` marks or in which unit a bigint time is. Every table and every
/// column of vigil's schema carries a comment, and every time column names its unit.
#[tokio::test]
async fn every_table_and_column_says_what_it_holds() {
    let db = TestDatabase::create().await;
    connect(&db, 2).await.shutdown().await.expect("shutdown");
    let sql = db.client().await;
    let rows = sql
        .query(
            "SELECT c.relname, a.attname, obj_description(c.oid, 'pg_class'),
                    col_description(c.oid, a.attnum)
               FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
              WHERE n.nspname = current_schema()
                AND c.relname LIKE 'vigil\\_%'
                AND c.relkind IN ('r', 'p')
                AND NOT c.relispartition",
            &[],
        )
        .await
        .expect("catalog");
    assert!(rows.len() > 30, "{} columns", rows.len());
    let mut missing = Vec::new();
    for row in &rows {
        let (table, column): (String, String) = (row.get(0), row.get(1));
        let table_comment: Option<String> = row.get(2);
        let column_comment: Option<String> = row.get(3);
        if table_comment.is_none() {
            missing.push(format!("table {table}"));
        }
        match column_comment {
            None => missing.push(format!("{table}.{column}")),
            Some(text) if column.ends_with("_ns") => assert!(
                text.contains("nanoseconds since the Unix epoch"),
                "{table}.{column}: {text}"
            ),
            Some(_) => {}
        }
    }
    missing.dedup();
    assert!(missing.is_empty(), "without a comment: {missing:?}");
}
