//! Unit tests of [`super`].

use serde_json::{json, Map, Value};

use super::*;
use crate::event::{Action, Person};

fn event(person: Person, action: Action, timestamp: Option<i64>) -> Event {
    Event {
        workspace: "acme".into(),
        person,
        action,
        timestamp,
        dedup_id: "01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
    }
}

fn call(e: &Event) -> Value {
    serde_json::from_slice(&SegmentBatch::encode_call(e)).unwrap()
}

#[test]
fn identify_and_track_become_segment_spec_calls() {
    let mut traits = Map::new();
    traits.insert("plan".into(), "pro".into());
    traits.insert("nested".into(), json!({"a": [1, 2.5, null]}));
    let identify = event(
        Person::Id("u1".into()),
        Action::Identify {
            attributes: Fields::from_map(&traits),
        },
        Some(1_700_000_000),
    );
    assert_eq!(
        call(&identify),
        json!({"type": "identify", "userId": "u1", "traits": traits,
               "messageId": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "timestamp": "2023-11-14T22:13:20Z"})
    );

    let mut properties = Map::new();
    properties.insert("total".into(), json!(9.5));
    let track = event(
        Person::Anonymous("anon-7".into()),
        Action::Track {
            name: "Order Completed".into(),
            data: Fields::from_map(&properties),
        },
        None,
    );
    assert_eq!(
        call(&track),
        json!({"type": "track", "anonymousId": "anon-7", "event": "Order Completed",
               "properties": properties, "messageId": "01ARZ3NDEKTSV4RRFFQ69G5FAV"})
    );
}

#[test]
fn a_timestamp_out_of_range_is_left_out_not_invented() {
    let e = event(
        Person::Id("u".into()),
        Action::Track {
            name: "x".into(),
            data: Fields::empty(),
        },
        Some(i64::MAX),
    );
    assert!(call(&e).get("timestamp").is_none());
}
