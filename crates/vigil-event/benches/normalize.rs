//! The per-event CPU work of ingest before the store: parse, normalise (aliases, limits,
//! content digest), prepare (defaults, canonical bytes, index terms). `parse` is serde_json's
//! own `Value`, for comparison with `parse_strict`, what ingest uses (duplicate keys refused,
//! depth counted).
//! `cargo bench -p vigil-event`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vigil_event::{Limits, TenantId, Timestamp, normalize, parse_event};

const EVENT: &str = r#"{"type":"login.failed","time":"2026-11-23T10:00:00.123Z","severity":7,
"actor":{"id":"user-4711","type":"user","ip":"203.0.113.9"},"source":"identity","action":"login",
"outcome":"failure","resource":{"type":"account","id":"acct-99812"},
"details":{"attempt":3,"user_agent":"Mozilla/5.0 (X11; Linux x86_64)","region":"eu-west-1",
"amount":12.5,"request_id":"9f1c2a7be0d34c11"}}"#;

const LEGACY: &str = r#"{"event_type":"account.created","username":"bob","timestamp":1732356000,
"criticality":2,"src_service":"billing","ip":"10.0.0.7","app_data":{"plan":"pro","seats":12}}"#;

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let tenant = TenantId::parse("acme").expect("tenant");
    let now = Timestamp::now();
    let mut g = c.benchmark_group("event");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse", |b| {
        b.iter(|| serde_json::from_str::<serde_json::Value>(EVENT).expect("json"))
    });
    g.bench_function("parse_strict", |b| {
        b.iter(|| parse_event(EVENT.as_bytes(), limits.max_depth).expect("json"))
    });
    g.bench_function("parse_normalize_prepare", |b| {
        b.iter(|| {
            let v = parse_event(EVENT.as_bytes(), limits.max_depth).expect("json");
            normalize(v, &limits)
                .expect("valid")
                .prepare(&tenant, now, "bench")
        })
    });
    g.bench_function("legacy_aliases_parse_normalize_prepare", |b| {
        b.iter(|| {
            let v = parse_event(LEGACY.as_bytes(), limits.max_depth).expect("json");
            normalize(v, &limits)
                .expect("valid")
                .prepare(&tenant, now, "bench")
        })
    });
    let prepared = normalize(serde_json::from_str(EVENT).expect("json"), &limits)
        .expect("valid")
        .prepare(&tenant, now, "bench");
    let mut out = Vec::with_capacity(1024);
    g.bench_function("canonical_bytes_with_seq", |b| {
        b.iter(|| {
            out.clear();
            prepared.write_canonical(123_456, &mut out);
            vigil_event::leaf_hash(&out)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
