//! Limiter acquire: one token of a workspace's bucket per request, at a rate high enough
//! that nothing waits (the cost of the bookkeeping, not of the limit).

mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice::limit::Limiter;

fn limiter(c: &mut Criterion) {
    let mut config = common::config();
    config.limits.default_rate_limit_per_s = 1_000_000.0;
    config.limits.default_burst = 1_000_000;
    let limiter = Limiter::new(config.workspace_rates(), 64, 1.0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("limiter");
    group.throughput(Throughput::Elements(1));
    group.bench_function("acquire and release", |b| {
        b.to_async(&runtime).iter(|| async {
            let (_, permit) = limiter.acquire("local").await;
            limiter.succeeded("local");
            drop(permit);
        })
    });
    group.finish();
}

criterion_group!(benches, limiter);
criterion_main!(benches);
