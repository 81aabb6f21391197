//! Map + encode: a decoded event → its Customer.io v2 batch item, per event.

mod common;

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_core::deliver::{CustomerIo, Destination};
use sluice_core::event::Decoder;
use sluice_core::limit::Limiter;
use sluice_core::metrics::Metrics;

fn encode(c: &mut Criterion) {
    let config = common::config();
    let decoder = Decoder::for_config(&config);
    let events: Vec<_> = common::events(1_000)
        .iter()
        .map(|e| decoder.decode(&e.value, Some("local")).unwrap())
        .collect();
    let limiter = Arc::new(Limiter::new(config.workspace_rates(), 64, 1.0));
    let api = CustomerIo::new(&config, limiter, Metrics::new()).unwrap();
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("v2 batch items", |b| {
        b.iter(|| {
            for e in &events {
                std::hint::black_box(api.encode(e).unwrap());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
