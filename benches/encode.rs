//! Map + encode: a decoded event → its item in a batch, per event: Customer.io's v2
//! batch item (the built-in path), and `kind = "http"` with a batch body from a
//! template and from the field mapping (the generic path, held to ≤ 1.3× the first).

mod common;

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_core::deliver::{CustomerIo, Destination, JsonApi};
use sluice_core::event::Decoder;
use sluice_core::limit::Limiter;
use sluice_core::metrics::Metrics;

fn encode(c: &mut Criterion) {
    let config = common::config();
    let decoder = Decoder::for_config(&config);
    let generated = common::events(1_000);
    let events: Vec<_> = generated
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
    let http = |body: Option<&str>| {
        let config = common::http_config(body);
        let limiter = Arc::new(Limiter::new(config.workspace_rates(), 64, 1.0));
        JsonApi::new(&config, limiter, Metrics::new()).unwrap()
    };
    let templated = http(Some(common::TEMPLATE));
    group.bench_function("http batch items, template", |b| {
        b.iter(|| {
            for e in &events {
                std::hint::black_box(templated.encode(e).unwrap());
            }
        })
    });
    let mapped = http(None);
    group.bench_function("http batch items, field mapping", |b| {
        b.iter(|| {
            for e in &events {
                std::hint::black_box(mapped.encode(e).unwrap());
            }
        })
    });
    group.finish();

    // What each path costs an event from its bytes to its item in a request (the
    // Kafka read before and the HTTP request after are the same for both).
    let mut group = c.benchmark_group("decode + encode");
    group.throughput(Throughput::Elements(events.len() as u64));
    let paths: [(&str, &dyn Destination); 3] = [
        ("customer.io v2", &api),
        ("http batch, template", &templated),
        ("http batch, field mapping", &mapped),
    ];
    for (name, destination) in paths {
        group.bench_function(name, |b| {
            b.iter(|| {
                for e in &generated {
                    let event = decoder.decode(&e.value, Some("local")).unwrap();
                    std::hint::black_box(destination.encode(&event).unwrap());
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
