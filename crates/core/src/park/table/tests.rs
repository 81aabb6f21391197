//! Unit tests of [`super`].

use super::*;
use crate::deliver::Encoded;
use crate::record::{Origin, Raw};

fn env(offset: i64) -> Envelope {
    Envelope {
        origin: Origin {
            tp: TopicPartition::new("t", 0),
            offset,
        },
        raw: Raw::default(),
        user: "u".into(),
        event_time: None,
        encoded: Encoded::BatchItem(vec![]),
        arrived: tokio::time::Instant::now(),
        from_park: false,
    }
}

/// Marks of a pod that owns `tps` (their marks inherited, none found).
fn owning(tps: &[&TopicPartition]) -> ParkedMarks {
    let marks = ParkedMarks::default();
    for tp in tps {
        marks
            .lock()
            .unwrap()
            .insert((*tp).clone(), PartitionMarks::new(BTreeMap::new()));
    }
    marks
}

fn offsets(held: &VecDeque<Envelope>) -> Vec<i64> {
    held.iter().map(|e| e.origin.offset).collect()
}

#[test]
fn a_workspace_parks_returns_through_its_fence_and_its_mark_goes_once_committed_past() {
    let tp = TopicPartition::new("t", 0);
    let marks = owning(&[&tp]);
    let mut t = ParkTable::new(marks.clone());
    assert_eq!(t.route("a", &tp), Route::Lane);
    t.park("a", &tp, 40);
    assert_eq!(t.route("a", &tp), Route::Park);
    assert_eq!(t.route("b", &tp), Route::Lane, "others stay direct");
    assert_eq!(marks.lock().unwrap()[&tp].starts["a"], 40);

    let epoch = t.begin_return("a", &tp).unwrap();
    assert_eq!(t.route("a", &tp), Route::Hold);
    t.hold("a", &tp, env(7));
    t.hold("a", &tp, env(8));
    assert_eq!(t.held("a"), 2);
    // A stale fence releases nothing.
    assert!(t.fence_read("a", &tp, epoch + 9).is_none());
    let held = t.fence_read("a", &tp, epoch).unwrap();
    assert_eq!(offsets(&held), vec![7, 8]);
    assert_eq!(t.route("a", &tp), Route::Lane);
    // Until the reader's commit passes the fence, the mark stays (the floor waits).
    assert!(marks.lock().unwrap()[&tp].starts.contains_key("a"));
    assert!(t.fence_committed("a", &tp, epoch));
    assert!(marks.lock().unwrap()[&tp].starts.is_empty());
    assert!(!t.is_parked("a"));
}

#[test]
fn two_workspaces_tables_share_one_partitions_marks() {
    let tp = TopicPartition::new("t", 0);
    let marks = owning(&[&tp]);
    let (mut a, mut b) = (ParkTable::new(marks.clone()), ParkTable::new(marks.clone()));
    a.park("a", &tp, 10);
    b.park("b", &tp, 20);
    assert_eq!(marks.lock().unwrap()[&tp].starts.len(), 2);
    let epoch = b.begin_return("b", &tp).unwrap();
    b.fence_read("b", &tp, epoch);
    b.fence_committed("b", &tp, epoch);
    assert_eq!(
        marks.lock().unwrap()[&tp].starts,
        BTreeMap::from([("a".to_string(), 10)])
    );
    let epoch = a.begin_return("a", &tp).unwrap();
    a.fence_read("a", &tp, epoch);
    a.fence_committed("a", &tp, epoch);
    assert!(marks.lock().unwrap()[&tp].starts.is_empty());
}

#[test]
fn a_table_never_marks_a_partition_this_pod_does_not_own() {
    // A lane that has not yet heard of a revocation parks on the partition: the
    // revoked partition must not come back into the marks the ledger keeps floors of.
    let marks = ParkedMarks::default();
    let mut t = ParkTable::new(marks.clone());
    let tp = TopicPartition::new("t", 2);
    t.park("a", &tp, 7);
    assert_eq!(t.route("a", &tp), Route::Park);
    assert!(marks.lock().unwrap().is_empty());
}

#[test]
fn a_crashed_pods_fence_is_never_taken_for_a_new_ones() {
    // Both pods' tables take their first epoch: the new pod must not mistake the
    // old pod's fence, still in the parking topic, for its own.
    let tp = TopicPartition::new("t", 0);
    let mut old = ParkTable::new(ParkedMarks::default());
    old.park("a", &tp, 0);
    let stale = old.begin_return("a", &tp).unwrap();
    let mut new = ParkTable::new(ParkedMarks::default());
    let epoch = new.inherit("a", &tp, 0);
    assert_ne!(stale, epoch);
    assert!(new.fence_read("a", &tp, stale).is_none());
    assert!(new.fence_read("a", &tp, epoch).is_some());
}

#[test]
fn too_much_held_goes_back_to_parked_in_order() {
    let mut t = ParkTable::new(ParkedMarks::default());
    let tp = TopicPartition::new("t", 3);
    t.park("a", &tp, 0);
    let epoch = t.begin_return("a", &tp).unwrap();
    for o in 10..13 {
        t.hold("a", &tp, env(o));
    }
    assert_eq!(offsets(&t.abort_return("a", &tp)), vec![10, 11, 12]);
    assert_eq!(t.route("a", &tp), Route::Park);
    assert!(
        t.fence_read("a", &tp, epoch).is_none(),
        "its fence is stale"
    );
}

#[test]
fn a_revoked_partition_drops_what_it_held_and_an_inherited_one_returns_at_once() {
    let tp = TopicPartition::new("t", 1);
    let marks = owning(&[&tp]);
    let mut t = ParkTable::new(marks.clone());
    t.park("a", &tp, 5);
    t.begin_return("a", &tp).unwrap();
    t.hold("a", &tp, env(1));
    assert_eq!(t.revoked(std::slice::from_ref(&tp)).len(), 1);
    assert_eq!(t.route("a", &tp), Route::Lane);
    // Clearing the partition's marks is the revocation's (the consumer's), not the table's.
    assert!(marks.lock().unwrap()[&tp].starts.contains_key("a"));

    let epoch = t.inherit("a", &tp, 5);
    assert_eq!(t.route("a", &tp), Route::Hold);
    assert!(t.fence_read("a", &tp, epoch).is_some());
}

/// A return whose fence the reader does not meet (its lane refused by the API and full,
/// the parking topic away) must not hold the events that arrived meanwhile — and with
/// them the source partition's commits — for ever: after the limit they are due to be
/// parked behind the stale fence.
#[tokio::test(start_paused = true)]
async fn a_return_that_does_not_meet_its_fence_in_time_is_overdue_while_it_holds_events() {
    let tp = TopicPartition::new("t", 0);
    let other = TopicPartition::new("t", 1);
    let mut t = ParkTable::new(owning(&[&tp, &other]));
    t.park("a", &tp, 0);
    t.park("a", &other, 0);
    t.begin_return("a", &tp).unwrap();
    t.begin_return("a", &other).unwrap();
    t.hold("a", &tp, env(7));
    let limit = std::time::Duration::from_secs(5);
    tokio::time::advance(std::time::Duration::from_secs(4)).await;
    assert!(t.overdue("a", limit).is_empty(), "not yet");
    tokio::time::advance(std::time::Duration::from_secs(1)).await;
    assert_eq!(
        t.overdue("a", limit),
        vec![tp.clone()],
        "only where events are held"
    );
    assert_eq!(offsets(&t.abort_return("a", &tp)), vec![7]);
    assert_eq!(t.route("a", &tp), Route::Park);
    assert!(t.overdue("a", limit).is_empty());
}

#[test]
fn a_workspace_handing_its_reader_on_is_parked_everywhere_and_late_fences_are_ignored() {
    let (p0, p1, p2) = (
        TopicPartition::new("t", 0),
        TopicPartition::new("t", 1),
        TopicPartition::new("t", 2),
    );
    let marks = owning(&[&p0, &p1, &p2]);
    let mut t = ParkTable::new(marks.clone());
    t.park("a", &p0, 10);
    // p1 returning, holding two new events; p2 draining (its fence read, direct).
    t.park("a", &p1, 20);
    let returning = t.begin_return("a", &p1).unwrap();
    t.hold("a", &p1, env(5));
    t.hold("a", &p1, env(6));
    t.park("a", &p2, 30);
    let draining = t.begin_return("a", &p2).unwrap();
    assert!(t.fence_read("a", &p2, draining).unwrap().is_empty());
    assert_eq!(t.route("a", &p2), Route::Lane);

    let held = t.park_all("a");
    assert_eq!(
        held.iter().map(|e| e.origin.offset).collect::<Vec<_>>(),
        vec![5, 6]
    );
    for tp in [&p0, &p1, &p2] {
        assert_eq!(t.route("a", tp), Route::Park, "{tp:?}");
    }
    // The old reader's fence reports, still in the lane's channel, change nothing.
    assert!(t.fence_read("a", &p1, returning).is_none());
    assert!(!t.fence_committed("a", &p2, draining));
    assert_eq!(t.route("a", &p1), Route::Park);
    assert_eq!(t.route("a", &p2), Route::Park);
    // The marks keep their starts: the next reader reads from them.
    let m = marks.lock().unwrap();
    assert_eq!(
        (m[&p0].starts["a"], m[&p1].starts["a"], m[&p2].starts["a"]),
        (10, 20, 30)
    );
}

#[test]
fn a_fence_committed_after_its_partition_came_back_keeps_the_new_assignments_mark() {
    let tp = TopicPartition::new("t", 0);
    let marks = owning(&[&tp]);
    let mut t = ParkTable::new(marks.clone());
    t.park("a", &tp, 40);
    let epoch = t.begin_return("a", &tp).unwrap();
    t.fence_read("a", &tp, epoch).unwrap();
    // The partition was revoked and assigned here again before the lane heard of it:
    // the new assignment's marks say `a` has parked events (another pod's) from 90.
    marks.lock().unwrap().insert(
        tp.clone(),
        PartitionMarks::new(BTreeMap::from([("a".to_string(), 90)])),
    );
    // The old reader's commit past the old fence reaches the lane first.
    t.fence_committed("a", &tp, epoch);
    assert_eq!(
        marks.lock().unwrap()[&tp].starts.get("a"),
        Some(&90),
        "the floor must stay at or below the parked events the new assignment found"
    );
}
