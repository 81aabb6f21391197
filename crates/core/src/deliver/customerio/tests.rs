//! Unit tests of [`super`].

use super::*;

fn event(person: Person, action: Action) -> Event {
    Event {
        workspace: "acme".into(),
        person,
        action,
        timestamp: Some(1_700_000_000),
        dedup_id: "01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
    }
}

#[test]
fn v2_items_follow_the_track_api_schema() {
    let mut attrs = Map::new();
    attrs.insert("plan".into(), "pro".into());
    attrs.insert(
        "nested".into(),
        json!({"b": [1, 2.5, null], "a": "\u{e9}\"q\""}),
    );
    let bytes = CustomerIo::encode_v2(&event(
        Person::Id("u1".into()),
        Action::Identify {
            attributes: Fields::from_map(&attrs),
        },
    ))
    .unwrap();
    let expected = json!({"type":"person","identifiers":{"id":"u1"},"action":"identify",
               "attributes": attrs,"timestamp":1_700_000_000});
    assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), expected);
    // Byte for byte what the item built as a Value serializes to.
    assert_eq!(bytes, serde_json::to_vec(&expected).unwrap());

    let bytes = CustomerIo::encode_v2(&event(
        Person::Id("u1".into()),
        Action::Track {
            name: "Signed Up".into(),
            data: Fields::empty(),
        },
    ))
    .unwrap();
    let expected = json!({"type":"person","identifiers":{"id":"u1"},"action":"event",
        "name":"Signed Up","id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","attributes":{},
        "timestamp":1_700_000_000});
    assert_eq!(bytes, serde_json::to_vec(&expected).unwrap());

    // No timestamp, and attributes named like the item's own fields.
    let mut data = Map::new();
    data.insert("type".into(), "x".into());
    data.insert("id".into(), json!(7));
    let mut untimed = event(
        Person::Id("u\"2".into()),
        Action::Track {
            name: "é".into(),
            data: Fields::from_map(&data),
        },
    );
    untimed.timestamp = None;
    let bytes = CustomerIo::encode_v2(&untimed).unwrap();
    let expected = json!({"type":"person","identifiers":{"id":"u\"2"},"action":"event",
        "name":"é","id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","attributes": data});
    assert_eq!(bytes, serde_json::to_vec(&expected).unwrap());
}

#[test]
fn v1_paths_are_percent_encoded_and_attributes_flattened() {
    let mut attrs = Map::new();
    attrs.insert("score".into(), json!(1.5));
    attrs.insert("tags".into(), json!(["a"]));
    attrs.insert("gone".into(), Value::Null);
    attrs.insert("n".into(), json!(3));
    let (method, path, body) = CustomerIo::encode_v1(&event(
        Person::Id("a/b c@x.io".into()),
        Action::Identify {
            attributes: Fields::from_map(&attrs),
        },
    ))
    .unwrap();
    assert_eq!(method, Method::PUT);
    assert_eq!(path, "/api/v1/customers/a%2Fb%20c%40x.io");
    assert_eq!(body, json!({"score":"1.5","tags":"[\"a\"]","n":3}));

    let (_, path, body) = CustomerIo::encode_v1(&event(
        Person::Anonymous("anon-1".into()),
        Action::Track {
            name: "viewed".into(),
            data: Fields::empty(),
        },
    ))
    .unwrap();
    assert_eq!(path, "/api/v1/events");
    assert_eq!(body["anonymous_id"], "anon-1");
}

#[test]
fn a_207_refuses_only_the_listed_items() {
    let body = r#"{"errors":[{"batch_index":1,"reason":"invalid","field":"identifiers","message":"bad"},
                              {"batch_index":9,"reason":"out of range"}]}"#;
    let outcomes = partial_outcomes(body, 3);
    assert_eq!(outcomes[0], ItemOutcome::Delivered);
    assert!(matches!(&outcomes[1], ItemOutcome::Rejected(f)
        if f.reason == FailureReason::InvalidItem && f.detail.contains("identifiers")));
    assert_eq!(outcomes[2], ItemOutcome::Delivered);
}

#[test]
fn a_207_without_an_errors_list_counts_nothing_delivered() {
    for body in [
        "{}",
        r#"{"errors":[]}"#,
        r#"{"errors":[{"batch_index":7}]}"#,
        "not json",
    ] {
        let outcomes = partial_outcomes(body, 2);
        assert!(
            outcomes.iter().all(|o| matches!(o, ItemOutcome::Rejected(f)
                if f.reason == FailureReason::Unreadable207)),
            "{body}: {outcomes:?}"
        );
    }
}

#[test]
fn errors_listed_on_a_200_refuse_those_items() {
    let body = r#"{"errors":[{"batch_index":0,"reason":"invalid","message":"no id"}]}"#;
    let outcomes = accepted_outcomes(body, 2);
    assert!(matches!(&outcomes[0], ItemOutcome::Rejected(f)
        if f.reason == FailureReason::InvalidItem && f.status == Some(200)));
    assert_eq!(outcomes[1], ItemOutcome::Delivered);
    for body in ["", "{}", r#"{"errors":[]}"#, "ok"] {
        assert_eq!(
            accepted_outcomes(body, 2),
            vec![ItemOutcome::Delivered; 2],
            "{body}"
        );
    }
}

proptest::proptest! {
    /// Whatever a 207 or a 200 carries — any text, any JSON shaped like an `errors`
    /// list, indexes in or out of the batch — every item gets one outcome, no panic,
    /// and a 207 counts an item delivered only when a readable list names another one.
    #[test]
    fn any_answer_body_gives_one_outcome_per_item_and_never_panics(
        text in proptest::prelude::any::<String>(),
        indexes in proptest::collection::vec(proptest::prelude::any::<i64>(), 0..8),
        reason in "\\PC{0,40}",
        count in 0usize..12,
    ) {
        let listed = serde_json::json!({
            "errors": indexes
                .iter()
                .map(|i| serde_json::json!({"batch_index": i, "reason": reason, "field": reason}))
                .collect::<Vec<_>>()
        })
        .to_string();
        for body in [text.as_str(), listed.as_str()] {
            let partial = partial_outcomes(body, count);
            proptest::prop_assert_eq!(partial.len(), count);
            let named = listed_errors(body, 207, count).map_or(0, |l| l.len());
            let delivered = partial.iter().filter(|o| **o == ItemOutcome::Delivered).count();
            if named == 0 {
                proptest::prop_assert_eq!(delivered, 0, "an unreadable 207 delivered items");
            }
            proptest::prop_assert_eq!(accepted_outcomes(body, count).len(), count);
        }
    }
}
