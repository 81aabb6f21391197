//! Decode: payload bytes → a validated [`sluice_core::event::Event`], per event.

mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_core::event::Decoder;

fn decode(c: &mut Criterion) {
    let events = common::events(1_000);
    let decoder = Decoder::for_config(&common::config());
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("loadgen events", |b| {
        b.iter(|| {
            for e in &events {
                std::hint::black_box(decoder.decode(&e.value, Some("local")).unwrap());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
