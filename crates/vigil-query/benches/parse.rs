//! Query front end: parsing `q=` expressions and URL parameters, cursor round trips.
//! `cargo bench -p vigil-query`.

use criterion::{Criterion, criterion_group, criterion_main};
use vigil_event::Timestamp;
use vigil_query::{Query, QueryLimits, parse_expr};

const EXPR: &str = r#"severity>=7 AND (type:login.failed OR type:"account.deactivated") AND NOT actor.ip:10.* AND details.amount>100"#;

fn bench(c: &mut Criterion) {
    let limits = QueryLimits::default();
    let now = Timestamp::now();
    let params: Vec<(String, String)> = [
        ("type", "login.failed"),
        ("actor.id", "u-7"),
        ("from", "-24h"),
        ("limit", "50"),
        ("q", "severity>=7"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let mut g = c.benchmark_group("query");
    g.bench_function("parse_expr", |b| {
        b.iter(|| parse_expr(EXPR, &limits).expect("valid"))
    });
    g.bench_function("from_params", |b| {
        b.iter(|| Query::from_params(&params, now, &limits).expect("valid"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
