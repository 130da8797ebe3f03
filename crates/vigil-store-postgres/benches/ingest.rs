//! Durable ingest into PostgreSQL through `PgStore::append`, in events per second, on a fresh
//! database of the test server (`VIGIL_TEST_POSTGRES`, by default the local one with trust
//! authentication):
//!
//! - `batch`: 4 appenders, 1,000 events per append, one tenant (what `scripts/bench-stores.sh`
//!   measures through the HTTP API, without the API);
//! - `single`: 64 appenders, one event per append (group commit at work).
//!
//! `cargo bench -p vigil-store-postgres --bench ingest`. `EVENTS` (default 200000) sets the
//! size of the batch run, `SINGLE_SECS` (default 10) the length of the single-event run.
//!
//! The batch run also reports what the database wrote: WAL bytes per event (server-wide, so
//! other clients of the server add to it) and the size of the tables.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vigil_event::{Prepared, Timestamp};
use vigil_store::Store;
use vigil_store::fixtures::EventGen;
use vigil_store_postgres::testing::TestDatabase;
use vigil_store_postgres::{PgConfig, PgStore};

/// The one tenant both runs write to.
const TENANT: &str = "bench";

/// The fixtures' realistic events (~400 bytes, ~20 indexed fields, as the embedded store's
/// benchmark and `vigil bench` send), the same on every run.
fn generator() -> EventGen {
    EventGen::new(1, "ev")
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn store(db: &TestDatabase) -> Arc<PgStore> {
    Arc::new(
        PgStore::connect(PgConfig::new(db.url()))
            .await
            .expect("connect"),
    )
}

/// The server's current WAL position.
async fn wal_lsn(sql: &tokio_postgres::Client) -> String {
    sql.query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .expect("wal position")
        .get(0)
}

async fn batch(events: u64) {
    const APPENDERS: u64 = 4;
    const BATCH: u64 = 1_000;
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    let per_task = events / APPENDERS / BATCH;
    // Events are made before the clock starts: the store is what is measured.
    let generator = generator();
    let mut work = Vec::new();
    for task in 0..APPENDERS {
        let batches: Vec<Vec<Prepared>> = (0..per_task)
            .map(|b| {
                let start = (task * per_task + b) * BATCH;
                generator.batch(TENANT, start..start + BATCH, Timestamp::now())
            })
            .collect();
        work.push(batches);
    }
    let (sql, conn) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let wal_before = wal_lsn(&sql).await;
    let started = Instant::now();
    let tasks: Vec<_> = work
        .into_iter()
        .map(|batches| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for b in batches {
                    store.append(b).await.expect("append");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("appender");
    }
    let took = started.elapsed();
    let n = per_task * APPENDERS * BATCH;
    println!(
        "batch: {n} events, {APPENDERS} appenders x {BATCH} events/append: {:.2}s, {:.0} events/s",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    let wal: i64 = sql
        .query_one(
            "SELECT (pg_current_wal_lsn() - $1::text::pg_lsn)::int8",
            &[&wal_before],
        )
        .await
        .expect("wal bytes")
        .get(0);
    let sizes = sql
        .query(
            "SELECT t, coalesce(pg_total_relation_size(to_regclass(t)), 0)
               FROM unnest(ARRAY['vigil_event_ids', 'vigil_tree_hashes']) AS t
             UNION ALL
             SELECT 'vigil_events', sum(pg_total_relation_size(inhrelid))::int8
               FROM pg_inherits WHERE inhparent = 'vigil_events'::regclass",
            &[],
        )
        .await
        .expect("sizes");
    let sizes: Vec<String> = sizes
        .iter()
        .map(|r| {
            let bytes: i64 = r.get(1);
            format!("{} {} B/event", r.get::<_, &str>(0), bytes / n as i64)
        })
        .collect();
    println!(
        "batch: WAL {} B/event; {}",
        wal / n as i64,
        sizes.join(", ")
    );
    store.shutdown().await.expect("shutdown");
}

async fn single(secs: u64) {
    const APPENDERS: u64 = 64;
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    let generator = Arc::new(generator());
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let tasks: Vec<_> = (0..APPENDERS)
        .map(|task| {
            let (store, generator, done) = (
                Arc::clone(&store),
                Arc::clone(&generator),
                Arc::clone(&done),
            );
            tokio::spawn(async move {
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let index = task * 1_000_000_000 + i;
                    let ev = generator.prepared(TENANT, index, Timestamp::now());
                    store.append(vec![ev]).await.expect("append");
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("appender");
    }
    let took = started.elapsed();
    let n = done.load(Ordering::Relaxed);
    println!(
        "single: {n} events, {APPENDERS} appenders x 1 event/append: {:.2}s, {:.0} events/s",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    store.shutdown().await.expect("shutdown");
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        batch(env_u64("EVENTS", 200_000)).await;
        single(env_u64("SINGLE_SECS", 10)).await;
    });
}
