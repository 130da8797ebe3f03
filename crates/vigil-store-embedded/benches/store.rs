//! Micro-benchmarks of the embedded store: durable batched append (every field indexed) and
//! selective queries, over the fixtures' realistic events (`vigil_store::fixtures::EventGen`).
//! `cargo bench -p vigil-store-embedded`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vigil_event::Timestamp;
use vigil_query::{Order, Query, QueryLimits, parse_expr};
use vigil_store::Store;
use vigil_store::fixtures::{EventGen, tenant};
use vigil_store_embedded::{EmbeddedConfig, EmbeddedStore};

/// The one tenant every benchmark writes to and reads.
const TENANT: &str = "bench";

/// The fixtures' realistic events (~400 bytes, ~20 indexed fields), the same on every run.
fn events() -> EventGen {
    EventGen::new(1, "bench")
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
    for size in [1_000u64, 10_000] {
        group.throughput(Throughput::Elements(size));
        group.bench_with_input(BenchmarkId::new("batch", size), &size, |b, &size| {
            let dir = tempfile::tempdir().expect("tempdir");
            let store =
                Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).expect("open"));
            // Fresh ids for every iteration: a repeated id would measure the duplicate path.
            let (events, mut next) = (events(), 0);
            b.iter_batched(
                || {
                    let batch = events.batch(TENANT, next..next + size, Timestamp::now());
                    next += size;
                    batch
                },
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
    let events = events();
    for start in (0..200_000).step_by(2_000) {
        let batch = events.batch(TENANT, start..start + 2_000, Timestamp::now());
        rt.block_on(store.append(batch)).expect("append");
    }
    // Let the sealer finish so queries hit sealed segments.
    std::thread::sleep(Duration::from_secs(5));
    let tenant = tenant(TENANT);
    let mut group = c.benchmark_group("query_200k");
    for (name, expr) in [
        ("selective_actor", "actor.id:u-42"),
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
