//! Unit tests of [`super`]: a workspace's side of the protocol against the mock
//! cluster (its reader is real; the lane is played by hand).

use std::collections::BTreeMap;

use rdkafka::mocking::MockCluster;
use tokio::sync::mpsc;

use super::*;
use crate::config::Config;
use crate::deliver::Encoded;
use crate::metrics::Metrics;
use crate::record::{Origin, Raw};
use crate::shutdown::Shutdown;

/// A pod of two workspaces on a mock cluster whose topic `events` has `partitions`.
/// (The cluster is leaked: a test that fails leaves a reader behind, whose last
/// commit would wait for ever on a cluster that is gone.)
struct Pod {
    _stop: Shutdown,
    setup: ParkingSetup,
    services: Arc<Services>,
}

async fn pod(partitions: i32) -> Pod {
    let cluster = Box::leak(Box::new(MockCluster::new(1).unwrap()));
    for (topic, n) in [
        ("events", partitions),
        ("events.park", partitions),
        ("events.dlq", 1),
    ] {
        cluster.create_topic(topic, n, 1).unwrap();
    }
    let text = format!(
        r#"[kafka]
brokers = "{}"
group_id = "g"
topics = ["events"]
dlq_topic = "events.dlq"

[destination]
kind = "customerio"
base_url = "http://127.0.0.1:9"

[[workspaces]]
id = "a"
site_id = "a"
api_key_env = "KEY"

[[workspaces]]
id = "b"
site_id = "b"
api_key_env = "KEY"
"#,
        cluster.bootstrap_servers()
    );
    let config = Config::from_toml(&text, "test", [("KEY".into(), "k".into())]).unwrap();
    let stop = Shutdown::new();
    let built = crate::pipeline::build_delivery(&config, Metrics::new(), &stop).unwrap();
    let setup = ParkingSetup::new(
        &config,
        built.intake.clone(),
        table::ParkedMarks::default(),
        stop.dead_letter_tasks(),
        &built.services.metrics,
    )
    .await
    .unwrap()
    .expect("parking is on");
    Pod {
        _stop: stop,
        setup,
        services: built.services,
    }
}

/// An event read back by the reader named `synthetic` from parking partition `p`.
fn read_back_of(synthetic: &str, p: i32, offset: i64) -> Envelope {
    Envelope {
        origin: Origin {
            tp: TopicPartition::new(synthetic, p),
            offset,
        },
        raw: Raw::default(),
        user: "u".into(),
        event_time: None,
        encoded: Encoded::BatchItem(vec![]),
        arrived: tokio::time::Instant::now(),
        from_park: true,
    }
}

/// Looks until its turn comes (granted by a task of the turns) and its reader starts.
async fn gets_a_reader(parking: &mut LaneParking) -> bool {
    for _ in 0..200 {
        parking.maybe_return(0, 0);
        if parking.reader.is_some() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readers_events_of_a_partition_revoked_and_given_back_are_not_taken_for_new_ones() {
    let pod = pod(2).await;
    let (lane, _events) = mpsc::unbounded_channel();
    let mut a = LaneParking::new(&pod.setup, "a", lane, &pod.services);
    let (p0, p1) = (
        TopicPartition::new("events", 0),
        TopicPartition::new("events", 1),
    );
    a.on_control(ParkingStep::Assigned(vec![
        (p0.clone(), BTreeMap::new()),
        (p1.clone(), BTreeMap::new()),
    ]))
    .await;
    assert!(a.park(Vec::new()).is_empty());
    assert!(
        gets_a_reader(&mut a).await,
        "a parked workspace gets a reader"
    );
    let reader = a.synthetic.to_string();
    assert!(a.read_back(read_back_of(&reader, 0, 0)).is_some());

    // p0 is revoked and given back to this pod; `a` stays parked on p1, so it keeps
    // reading. What its reader read of p0 before it heard (sent to the lane after the
    // new assignment) is older than what the lane let go of at the revocation.
    a.on_control(ParkingStep::Revoked(vec![p0.clone()])).await;
    a.on_control(ParkingStep::Assigned(vec![(
        p0.clone(),
        BTreeMap::from([("a".to_string(), 0)]),
    )]))
    .await;
    assert!(
        a.read_back(read_back_of(&reader, 0, 1)).is_none(),
        "an event read before the revocation was delivered after it: a reorder"
    );
    assert!(
        a.read_back(read_back_of(&reader, 1, 1)).is_none(),
        "the old reader's events of p1 would be read again by the next: let go of too"
    );
    // The lane hands the reading on (nothing of the old reader's kept); a new reader
    // reads both partitions from where the old one committed.
    assert!(a.should_step_aside());
    assert!(a.step_aside(Vec::new()).await.is_empty());
    assert!(gets_a_reader(&mut a).await);
    assert_ne!(*a.synthetic, *reader);
    let fresh = a.synthetic.to_string();
    assert!(a.read_back(read_back_of(&fresh, 0, 1)).is_some());
    a.close().await;
}
