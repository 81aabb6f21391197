//! Lane scheduling with per-user ordering: events queued per user, batches of 500 taken
//! four at a time, each batch's users released on its answer, per event.

mod common;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sluice_core::config::Ordering;
use sluice_core::lane::{Envelope, Queues};

const IN_FLIGHT: usize = 4;

fn envelopes() -> Vec<Envelope> {
    common::envelopes(10_000)
}

fn schedule(ordering: Ordering) -> impl FnMut(Vec<Envelope>) -> usize {
    move |envelopes| {
        let mut queues = Queues::default();
        let mut sent = 0;
        let mut in_flight = std::collections::VecDeque::new();
        let mut events = envelopes.into_iter();
        loop {
            // Read a little, send while the window has room, answer the oldest batch.
            for e in events.by_ref().take(1_000) {
                queues.push(e, ordering);
            }
            while in_flight.len() < IN_FLIGHT {
                let batch = queues.take_batch(500, 500_000, ordering);
                if batch.is_empty() {
                    break;
                }
                sent += batch.len();
                in_flight.push_back(batch);
            }
            match in_flight.pop_front() {
                Some(batch) => queues.release(batch.into_iter().map(|e| e.user)),
                None if events.len() == 0 => return sent,
                None => {}
            }
        }
    }
}

fn lanes(c: &mut Criterion) {
    let input = envelopes();
    let mut group = c.benchmark_group("lanes");
    group.throughput(Throughput::Elements(input.len() as u64));
    for (name, ordering) in [("per-user", Ordering::PerUser), ("none", Ordering::None)] {
        group.bench_function(name, |b| {
            b.iter_batched(|| input.clone(), schedule(ordering), BatchSize::LargeInput)
        });
    }
    group.finish();
}

criterion_group!(benches, lanes);
criterion_main!(benches);
