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

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::json;
use vigil_event::{Limits, Prepared, TenantId, Timestamp, normalize};
use vigil_store::Store;
use vigil_store_postgres::testing::TestDatabase;
use vigil_store_postgres::{PgConfig, PgStore};

const TYPES: [&str; 6] = [
    "login.failed",
    "login.succeeded",
    "account.created",
    "billing.charged",
    "firewall.blocked",
    "privilege.granted",
];

/// A realistic ~400-byte security event with ~20 indexed fields (as the embedded store's
/// benchmark sends).
fn event(rng: &mut StdRng, tenant: &TenantId, i: u64) -> Prepared {
    let t = TYPES[rng.random_range(0..TYPES.len())];
    let region = ["eu-west-1", "us-east-1"][rng.random_range(0..2)];
    let body = json!({
        "id": format!("ev-{i}"),
        "type": t,
        "time": Timestamp::now().to_rfc3339(),
        "severity": rng.random_range(0..=10),
        "actor": {"id": format!("user-{}", rng.random_range(0..5000)), "type": "user", "ip": format!("10.{}.{}.{}", rng.random_range(0..4), rng.random_range(0..255), rng.random_range(0..255))},
        "source": format!("svc-{}", rng.random_range(0..20)),
        "action": "login", "outcome": if rng.random_bool(0.3) { "failure" } else { "success" },
        "resource": {"type": "account", "id": format!("acct-{}", rng.random_range(0..100_000))},
        "details": {"attempt": rng.random_range(1..6), "user_agent": "Mozilla/5.0 (X11; Linux x86_64)", "region": region,
                    "amount": rng.random_range(0..100_000) as f64 / 100.0, "request_id": format!("{:016x}", rng.random::<u64>())}
    });
    normalize(body, &Limits::default())
        .expect("valid")
        .prepare(tenant, Timestamp::now(), "bench")
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
    let tenant = TenantId::parse("bench").expect("tenant");
    let per_task = events / APPENDERS / BATCH;
    // Events are made before the clock starts: the store is what is measured.
    let mut work = Vec::new();
    for task in 0..APPENDERS {
        let mut rng = StdRng::seed_from_u64(task);
        let batches: Vec<Vec<Prepared>> = (0..per_task)
            .map(|b| {
                (0..BATCH)
                    .map(|i| event(&mut rng, &tenant, (task * per_task + b) * BATCH + i))
                    .collect()
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
    let tenant = TenantId::parse("bench").expect("tenant");
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let tasks: Vec<_> = (0..APPENDERS)
        .map(|task| {
            let (store, tenant, done) = (Arc::clone(&store), tenant.clone(), Arc::clone(&done));
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(100 + task);
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let ev = event(&mut rng, &tenant, task * 1_000_000_000 + i);
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
