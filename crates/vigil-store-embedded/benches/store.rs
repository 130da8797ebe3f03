//! Micro-benchmarks of the embedded store: durable batched append (every field indexed) and
//! selective queries. `cargo bench -p vigil-store-embedded`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::json;
use vigil_event::{Limits, Prepared, TenantId, Timestamp, normalize};
use vigil_query::{Order, Query, QueryLimits, parse_expr};
use vigil_store::Store;
use vigil_store_embedded::{EmbeddedConfig, EmbeddedStore};

const TYPES: [&str; 6] = [
    "login.failed",
    "login.succeeded",
    "account.created",
    "billing.charged",
    "firewall.blocked",
    "privilege.granted",
];

/// A realistic ~400-byte security event with ~20 indexed fields.
fn event(rng: &mut StdRng, tenant: &TenantId, i: u64) -> Prepared {
    let t = TYPES[rng.random_range(0..TYPES.len())];
    let region = ["eu-west-1", "us-east-1"][rng.random_range(0..2)];
    let body = json!({
        "type": t,
        "time": Timestamp::from_nanos(1_700_000_000_000_000_000 + i as i64 * 1_000_000).to_rfc3339(),
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

fn batches(n_batches: usize, size: usize) -> Vec<Vec<Prepared>> {
    let mut rng = StdRng::seed_from_u64(1);
    let tenant = TenantId::parse("bench").expect("tenant");
    (0..n_batches)
        .map(|b| {
            (0..size)
                .map(|i| event(&mut rng, &tenant, (b * size + i) as u64))
                .collect()
        })
        .collect()
}

fn append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("append");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for size in [1_000usize, 10_000] {
        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(BenchmarkId::new("batch", size), &size, |b, &size| {
            let dir = tempfile::tempdir().expect("tempdir");
            let store =
                Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).expect("open"));
            b.iter_batched(
                || batches(1, size).pop().unwrap_or_default(),
                |batch| rt.block_on(store.append(batch)).expect("append"),
                criterion::BatchSize::LargeInput,
            );
            rt.block_on(store.shutdown()).expect("shutdown");
        });
    }
    group.finish();
}

fn query(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(
        EmbeddedStore::open(EmbeddedConfig {
            segment_max_events: 65_536,
            ..EmbeddedConfig::new(dir.path())
        })
        .expect("open"),
    );
    for batch in batches(100, 2_000) {
        rt.block_on(store.append(batch)).expect("append");
    }
    // Let the sealer finish so queries hit sealed segments.
    std::thread::sleep(Duration::from_secs(5));
    let tenant = TenantId::parse("bench").expect("tenant");
    let mut group = c.benchmark_group("query_200k");
    for (name, expr) in [
        ("selective_actor", "actor.id:user-42"),
        (
            "severity_ge_9_and_type",
            "severity>=9 AND type:login.failed",
        ),
        ("last_10_all", ""),
    ] {
        let filter = if expr.is_empty() {
            vigil_query::Expr::All
        } else {
            parse_expr(expr, &QueryLimits::default()).expect("expr")
        };
        let q = Query {
            filter,
            from: None,
            to: None,
            limit: 10,
            order: Order::Desc,
            cursor: None,
        };
        group.bench_function(name, |b| {
            b.iter(|| rt.block_on(store.query(&tenant, &q)).expect("query"))
        });
    }
    group.finish();
    rt.block_on(store.shutdown()).expect("shutdown");
}

criterion_group!(benches, append, query);
criterion_main!(benches);
