//! Offset tracking: each event tracked as read, completed as its batch is answered (out
//! of order across batches), and the committable offsets read back, per event.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sluice_core::books::OffsetTracker;
use sluice_core::record::TopicPartition;

const EVENTS: i64 = 10_000;
const PARTITIONS: i32 = 8;
const BATCH: i64 = 250;

fn offsets(c: &mut Criterion) {
    let tps: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|p| TopicPartition::new("events", p))
        .collect();
    let mut group = c.benchmark_group("offsets");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("track, complete out of order, committable", |b| {
        b.iter_batched(
            OffsetTracker::new,
            |tracker| {
                let per = EVENTS / PARTITIONS as i64;
                for tp in &tps {
                    for offset in 0..per {
                        tracker.track(tp, offset);
                    }
                }
                // Five batches a partition, answered out of order: later ones first in pairs.
                let batches: Vec<i64> = (0..per / BATCH).collect();
                for pair in batches.chunks(2) {
                    for &batch in pair.iter().rev() {
                        for tp in &tps {
                            let done = (batch * BATCH..(batch + 1) * BATCH).map(|o| (tp, o));
                            tracker.complete(done);
                        }
                        std::hint::black_box(tracker.committable());
                    }
                }
                tracker
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, offsets);
criterion_main!(benches);
