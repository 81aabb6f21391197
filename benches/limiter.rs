//! Limiter acquire: one token of a workspace's bucket per request, at a rate high enough
//! that nothing waits (the cost of the bookkeeping, not of the limit).

mod common;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sluice_core::limit::Limiter;

const ACQUIRES: u64 = 1_000;

fn limiter(c: &mut Criterion) {
    let mut config = common::config();
    config.limits.default_rate_limit_per_s = 1_000_000.0;
    config.limits.default_burst = 1_000_000;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("limiter");
    group.throughput(Throughput::Elements(ACQUIRES));
    group.bench_function("acquire and release", |b| {
        // A fresh limiter for every 1 000 acquires: all within its burst, so nothing
        // waits and this is the bookkeeping alone.
        b.to_async(&runtime).iter_batched(
            || Limiter::new(config.workspace_rates(), 64, 1.0),
            |limiter| async move {
                for _ in 0..ACQUIRES {
                    let (_, permit) = limiter.acquire("local").await;
                    limiter.succeeded("local");
                    drop(permit);
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, limiter);
criterion_main!(benches);
