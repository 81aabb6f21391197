//! Unit tests of [`super`].

use super::*;
use crate::record::TopicPartition;

fn env(user: &str, offset: i64, size: usize) -> Envelope {
    Envelope {
        origin: Origin {
            tp: TopicPartition::new("t", 0),
            offset,
        },
        raw: Raw::default(),
        user: user.into(),
        event_time: None,
        encoded: Encoded::BatchItem(vec![b'x'; size]),
        arrived: Instant::now(),
        from_park: false,
    }
}

fn offsets(batch: &[Envelope]) -> Vec<i64> {
    batch.iter().map(|e| e.origin.offset).collect()
}

#[tokio::test]
async fn a_user_in_flight_waits_for_its_batch() {
    let mut q = Queues::default();
    for (i, user) in ["a", "b", "a", "c", "a"].iter().enumerate() {
        q.push(env(user, i as i64, 10), Ordering::PerUser);
    }
    // A batch of two takes user a's first two events, in order.
    let first = q.take_batch(2, 10_000, Ordering::PerUser);
    assert_eq!(offsets(&first), vec![0, 2]);
    // a is in flight; its event 4 must not go until the first batch is answered.
    let second = q.take_batch(10, 10_000, Ordering::PerUser);
    assert_eq!(offsets(&second), vec![1, 3]);
    assert!(q.take_batch(10, 10_000, Ordering::PerUser).is_empty());
    assert_eq!(q.total, 1);

    q.release(first.into_iter().map(|e| e.user));
    assert_eq!(
        offsets(&q.take_batch(10, 10_000, Ordering::PerUser)),
        vec![4]
    );
    assert_eq!(q.total, 0);
}

#[tokio::test]
async fn a_revoked_partitions_queued_events_go_and_in_flight_users_still_wait() {
    let mut q = Queues::default();
    let on = |partition, user, offset| {
        let mut e = env(user, offset, 10);
        e.origin.tp = TopicPartition::new("t", partition);
        e
    };
    // a: 0@p0 (sent below), then 1@p1 and 2@p0 queued; b: 3@p0; c: 4@p1.
    q.push(on(0, "a", 0), Ordering::PerUser);
    let first = q.take_batch(1, 10_000, Ordering::PerUser);
    for (partition, user, offset) in [(1, "a", 1), (0, "a", 2), (0, "b", 3), (1, "c", 4)] {
        q.push(on(partition, user, offset), Ordering::PerUser);
    }
    let dropped = q.drop_partitions(&[TopicPartition::new("t", 0)], Ordering::PerUser);
    let mut dropped = offsets(&dropped);
    dropped.sort();
    assert_eq!(dropped, vec![2, 3], "2@p0 and 3@p0");
    assert_eq!((q.total, q.runnable_events), (2, 1));
    // a is still in flight: only c may go; a's 1@p1 waits for the first answer.
    assert_eq!(
        offsets(&q.take_batch(10, 10_000, Ordering::PerUser)),
        vec![4]
    );
    q.release(first.into_iter().map(|e| e.user));
    assert_eq!(
        offsets(&q.take_batch(10, 10_000, Ordering::PerUser)),
        vec![1]
    );
    assert_eq!(q.total, 0);
}

/// Events read back from the parking topic for a source partition this pod no longer
/// owns go too: its new owner reads them again from the parking topic, and delivering
/// them here as well could land a user's older event after the newer ones it sends.
#[tokio::test]
async fn a_revoked_partitions_parked_events_read_back_go_too() {
    let mut q = Queues::default();
    let parked = |partition, user, offset| {
        let mut e = env(user, offset, 10);
        // Read back from parking partition n, which holds source partition n.
        e.origin.tp = TopicPartition::new("t.park#w", partition);
        e.from_park = true;
        e
    };
    q.push(parked(0, "a", 10), Ordering::PerUser);
    q.push(parked(1, "b", 11), Ordering::PerUser);
    q.push(env("c", 12, 10), Ordering::PerUser);
    let dropped = q.drop_partitions(&[TopicPartition::new("t", 0)], Ordering::PerUser);
    assert_eq!(offsets(&dropped), vec![10, 12]);
    assert_eq!(
        offsets(&q.take_batch(10, 10_000, Ordering::PerUser)),
        vec![11]
    );
}

#[tokio::test]
async fn batches_respect_count_and_bytes_and_unordered_mode_is_fifo() {
    let mut q = Queues::default();
    for i in 0..5 {
        q.push(env("same", i, 100), Ordering::None);
    }
    // 12 overhead + 3 × 101 = 315 fits in 350; a fourth would not.
    assert_eq!(
        offsets(&q.take_batch(10, 350, Ordering::None)),
        vec![0, 1, 2]
    );
    // Unordered: the same user may be in two batches at once.
    assert_eq!(offsets(&q.take_batch(1, 350, Ordering::None)), vec![3]);
    assert_eq!(offsets(&q.take_batch(10, 350, Ordering::None)), vec![4]);
    assert_eq!((q.total, q.runnable_events, q.runnable_bytes), (0, 0, 0));
}

/// A batch still in flight (retrying) when its partition is revoked is abandoned: the
/// partition's new owner sends its events again, and a retry here could land a user's
/// older event after the newer ones it sends. Events of partitions still owned in that
/// batch go back ahead of their users' queued events.
#[tokio::test(start_paused = true)]
async fn a_revoked_partitions_batch_in_flight_is_abandoned_and_the_rest_goes_back_first() {
    let on = |partition, user, offset| {
        let mut e = env(user, offset, 10);
        e.origin.tp = TopicPartition::new("t", partition);
        e
    };
    let mut held = held::Held::default();
    // In flight: a's 0@p0 and b's 1@p1; queued behind it: b's 2@p1.
    held.push(on(0, "a", 0), Ordering::PerUser);
    held.push(on(1, "b", 1), Ordering::PerUser);
    let batch = Arc::new(held.queues.take_batch(10, 10_000, Ordering::PerUser));
    held.push(on(1, "b", 2), Ordering::PerUser);
    let id = 7;
    held.batches.insert(id, batch.clone());
    // Its request keeps retrying: it never answers.
    let task = held.in_flight.spawn(async move {
        let _carried = batch;
        std::future::pending::<()>().await;
        (id, Vec::new())
    });
    held.tasks.insert(task.id(), id);
    held.aborts.insert(id, task);

    let gone = held.revoke_in_flight(&[TopicPartition::new("t", 0)], Ordering::PerUser);
    assert_eq!(offsets(&gone), vec![0]);
    let ended = held.in_flight.join_next().await.expect("one task");
    assert!(
        ended.unwrap_err().is_cancelled(),
        "the request was abandoned"
    );
    assert_eq!(held.events(), 2);
    // b may send again, its 1@p1 ahead of its 2@p1.
    assert_eq!(
        offsets(&held.queues.take_batch(10, 10_000, Ordering::PerUser)),
        vec![1, 2]
    );
}
