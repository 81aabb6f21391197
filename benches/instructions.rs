//! The CI gate: instructions counted by valgrind (callgrind, through gungraun) for the
//! hot stages — decode, encode (the Track path and `kind = "http"`'s template), offset tracking and lane scheduling — on fixed inputs.
//! Counts, unlike wall time, do not move with a shared machine's load, so
//! scripts/test.sh compares them with the committed baseline (benches/baseline/) and
//! fails above +10%. How to update it: README, "Performance".

mod common;

use std::hint::black_box;
use std::sync::Arc;

use gungraun::{library_benchmark, library_benchmark_group, main};
use sluice_core::books::OffsetTracker;
use sluice_core::config::Ordering;
use sluice_core::deliver::{CustomerIo, Destination, JsonApi};
use sluice_core::event::{Decoder, Event};
use sluice_core::lane::{Envelope, Queues};
use sluice_core::limit::Limiter;
use sluice_core::metrics::Metrics;
use sluice_core::record::TopicPartition;

const EVENTS: usize = 1_000;

fn payloads() -> (Decoder, Vec<Vec<u8>>) {
    let decoder = Decoder::for_config(&common::config());
    let payloads = common::events(EVENTS)
        .into_iter()
        .map(|e| e.value)
        .collect();
    (decoder, payloads)
}

fn decoded() -> (CustomerIo, Vec<Event>) {
    let config = common::config();
    let (decoder, payloads) = payloads();
    let events = payloads
        .iter()
        .map(|p| decoder.decode(p, Some("local")).unwrap())
        .collect();
    let limiter = Arc::new(Limiter::new(config.workspace_rates(), 64, 1.0));
    (
        CustomerIo::new(&config, limiter, Metrics::new()).unwrap(),
        events,
    )
}

fn templated() -> (JsonApi, Vec<Event>) {
    let (_, events) = decoded();
    let config = common::http_config(Some(common::TEMPLATE));
    let limiter = Arc::new(Limiter::new(config.workspace_rates(), 64, 1.0));
    (
        JsonApi::new(&config, limiter, Metrics::new()).unwrap(),
        events,
    )
}

fn envelopes() -> Vec<Envelope> {
    common::envelopes(EVENTS)
}

#[library_benchmark(setup = payloads)]
fn decode((decoder, payloads): (Decoder, Vec<Vec<u8>>)) -> usize {
    payloads
        .iter()
        .map(|p| {
            black_box(decoder.decode(p, Some("local")).unwrap())
                .dedup_id
                .len()
        })
        .sum()
}

/// Every event encoded by `api`: the bytes written.
fn encode_all(api: &impl Destination, events: &[Event]) -> usize {
    events
        .iter()
        .map(|e| black_box(api.encode(e).unwrap()).len())
        .sum()
}

#[library_benchmark(setup = decoded)]
fn encode((api, events): (CustomerIo, Vec<Event>)) -> usize {
    encode_all(&api, &events)
}

// `kind = "http"`'s batch item from the bench's Segment-like template.
#[library_benchmark(setup = templated)]
fn encode_template((api, events): (JsonApi, Vec<Event>)) -> usize {
    encode_all(&api, &events)
}

#[library_benchmark]
fn offsets() -> usize {
    let tracker = OffsetTracker::new();
    let tps: Vec<_> = (0..8).map(|p| TopicPartition::new("events", p)).collect();
    for tp in &tps {
        for offset in 0..125 {
            tracker.track(tp, offset);
        }
    }
    for batch in (0..5).rev() {
        for tp in &tps {
            tracker.complete((batch * 25..(batch + 1) * 25).map(|o| (tp, o)));
        }
    }
    black_box(tracker.committable()).len()
}

#[library_benchmark(setup = envelopes)]
fn lanes(envelopes: Vec<Envelope>) -> usize {
    let mut queues = Queues::default();
    for e in envelopes {
        queues.push(e, Ordering::PerUser);
    }
    let mut sent = 0;
    loop {
        let batch = queues.take_batch(100, 500_000, Ordering::PerUser);
        if batch.is_empty() {
            return sent;
        }
        sent += batch.len();
        queues.release(batch.into_iter().map(|e| e.user));
    }
}

library_benchmark_group!(name = stages; benchmarks = decode, encode, encode_template, offsets, lanes);

main!(library_benchmark_groups = stages);
