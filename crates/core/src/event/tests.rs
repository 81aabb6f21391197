//! Unit tests of [`super`].

use super::*;
use serde_json::json;

fn dec(v: Value) -> Result<Event, InvalidEvent> {
    decode(v.to_string().as_bytes(), None, Some("acme"), |w| {
        w == "acme"
    })
}

#[test]
fn segment_identify_and_snake_case_track_decode() {
    let e = dec(
        json!({"type":"identify","userId":"u1","traits":{"plan":"pro"},
                       "timestamp":"2026-01-02T03:04:05Z","messageId":"m-1"}),
    )
    .unwrap();
    assert_eq!(e.person, Person::Id("u1".into()));
    assert_eq!(e.timestamp, Some(1_767_323_045));
    assert!(
        matches!(e.action, Action::Identify { ref attributes } if attributes.to_map().unwrap()["plan"] == "pro")
    );

    let e = dec(
        json!({"type":"track","user_id":42,"name":"Signed Up","data":{"x":1},
                       "timestamp":1700000000,"event_id":"e-9"}),
    )
    .unwrap();
    assert_eq!(e.person, Person::Id("42".into()));
    assert_eq!(e.timestamp, Some(1_700_000_000));
    assert!(matches!(e.action, Action::Track { ref name, .. } if name == "Signed Up"));
}

#[test]
fn invalid_events_have_reasons() {
    let cases = [
        (json!({"type":"identify"}), "missing_user_id"),
        (json!({"type":"alias","userId":"u"}), "unknown_type"),
        (json!({"userId":"u"}), "unknown_type"),
        (json!({"type":"track","userId":"u"}), "missing_event_name"),
        (
            json!({"type":"track","userId":"u","event":"x","timestamp":"yesterday"}),
            "bad_timestamp",
        ),
        (
            json!({"type":"track","userId":"u","event":"x","workspace":"nope"}),
            "unknown_workspace",
        ),
        (
            json!({"type":"identify","userId":"x".repeat(151)}),
            "over_limit",
        ),
        (
            json!({"type":"track","userId":"u","event":"e".repeat(101)}),
            "over_limit",
        ),
        (
            json!({"type":"identify","userId":"u","traits":{"a":"v".repeat(1001)}}),
            "over_limit",
        ),
        (
            json!({"type":"identify","userId":"u","traits":[1]}),
            "malformed_json",
        ),
        (json!([1, 2]), "malformed_json"),
    ];
    for (input, reason) in cases {
        assert_eq!(dec(input.clone()).unwrap_err().reason(), reason, "{input}");
    }
    let err = decode(b"{not json", None, Some("acme"), |_| true).unwrap_err();
    assert_eq!(err.reason(), "malformed_json");
    let small = Decoder::new(["acme".to_string()], Some("acme".into()), 64);
    let big = json!({"type":"track","userId":"u","event":"x","properties":{"p":"y".repeat(64)}});
    let err = small.decode(big.to_string().as_bytes(), None).unwrap_err();
    assert_eq!(err.reason(), "too_large");
}

#[test]
fn workspace_comes_from_field_then_header_then_default() {
    let known = |w: &str| ["a", "b", "c"].contains(&w);
    let with_field = br#"{"type":"track","userId":"u","event":"x","workspace":"a"}"#;
    let without = br#"{"type":"track","userId":"u","event":"x"}"#;
    assert_eq!(
        decode(with_field, Some("b"), Some("c"), known)
            .unwrap()
            .workspace,
        "a"
    );
    assert_eq!(
        decode(without, Some("b"), Some("c"), known)
            .unwrap()
            .workspace,
        "b"
    );
    assert_eq!(
        decode(without, None, Some("c"), known).unwrap().workspace,
        "c"
    );
    assert_eq!(
        decode(without, None, None, known).unwrap_err().reason(),
        "unknown_workspace"
    );
}

#[test]
fn byte_identical_events_at_two_records_keep_two_ids() {
    let d = Decoder::new(["acme".to_string()], None, 32_000);
    let e = json!({"type":"track","userId":"u","event":"e","workspace":"acme"}).to_string();
    let at = |record| {
        d.decode_record(e.as_bytes(), None, Some(record))
            .unwrap()
            .dedup_id
    };
    assert_ne!(at("t:0:5"), at("t:0:6"), "two records, two events");
    assert_eq!(
        at("t:0:5"),
        at("t:0:5"),
        "a redelivered record keeps its id"
    );
    let with_id = json!({"type":"track","userId":"u","event":"e","workspace":"acme",
                         "messageId":"m-1"})
    .to_string();
    let id = |record| {
        d.decode_record(with_id.as_bytes(), None, Some(record))
            .unwrap()
            .dedup_id
    };
    assert_eq!(id("t:0:5"), id("t:9:9"), "a messageId decides alone");
}

#[test]
fn dedup_id_keeps_ulids_and_derives_the_rest_deterministically() {
    let ulid = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    assert_eq!(dedup_id(Some(ulid), b"", None), ulid);
    let a = dedup_id(Some("msg-1"), b"p1", Some(1_700_000_000));
    assert_eq!(a, dedup_id(Some("msg-1"), b"p2", Some(1_700_000_000)));
    assert_ne!(a, dedup_id(Some("msg-2"), b"p1", Some(1_700_000_000)));
    let parsed = ulid::Ulid::from_string(&a).unwrap();
    assert_eq!(parsed.timestamp_ms(), 1_700_000_000_000);
    assert_eq!(dedup_id(None, b"same", None), dedup_id(None, b"same", None));
    assert_ne!(
        dedup_id(None, b"same", None),
        dedup_id(None, b"other", None)
    );
}

proptest::proptest! {
    /// Whatever arrives — bytes, near-JSON, deep or odd values — decoding answers
    /// with an event or a reason, never a panic.
    #[test]
    fn arbitrary_input_never_panics(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
        text in "\\{\"(type|userId|event|workspace|timestamp|messageId|traits|properties)\":.{0,80}\\}",
    ) {
        let d = Decoder::new(["acme".to_string()], Some("acme".to_string()), 32_000);
        let _ = d.decode(&bytes, None);
        let _ = d.decode_record(text.as_bytes(), Some("acme"), Some("t:0:1"));
        let mut prefixed = b"{".to_vec();
        prefixed.extend_from_slice(&bytes);
        let _ = d.decode(&prefixed, None);
    }
}

#[test]
fn deep_nesting_and_huge_numbers_are_reasons_not_panics() {
    let d = Decoder::new(["acme".to_string()], Some("acme".to_string()), 1 << 20);
    let deep = format!(
        "{{\"type\":\"track\",\"userId\":\"u\",\"event\":\"e\",\"properties\":{}{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert_eq!(
        d.decode(deep.as_bytes(), None).unwrap_err().reason(),
        "malformed_json"
    );
    let huge = br#"{"type":"track","userId":1e999999,"event":"e","timestamp":1e400}"#;
    assert!(d.decode(huge, None).is_err());
}

/// Traits and properties are kept as their text, which serde_json takes without the
/// checks it makes when it parses: an event whose fields parsing would refuse is
/// malformed (dead-lettered with its reason), as it was when they were parsed, and
/// never reaches an encoder that reads them (where it panicked, stalling the worker).
#[test]
fn fields_that_parsing_refuses_make_the_event_malformed() {
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    for inside in [
        r#"{"n": 1e400}"#,
        r#"{"s": "\udc00"}"#,
        &format!("{{\"d\": {deep}}}"),
    ] {
        malformed_as_traits_and_as_properties(inside);
    }
    // Spaced and in the producer's order: kept as written.
    let payload =
        br#"{"type":"track","userId":"u1","event":"E","properties": { "b" : 1, "a" : 2 }}"#;
    let e = decode(payload, None, Some("acme"), |w| w == "acme").unwrap();
    let Action::Track { data, .. } = &e.action else {
        panic!("{e:?}")
    };
    assert_eq!(data.json(), r#"{ "b" : 1, "a" : 2 }"#);
}

/// serde_json reads an object whose first key is its raw-value token as a raw value
/// (and refuses it unless the value is a string of JSON): parsing refuses these, so
/// decode does too, however the key is spelled — found by a red-team read, the
/// properties passed decode and failed later, where an encoder read them.
#[test]
fn a_key_serde_json_keeps_for_its_raw_values_makes_the_event_malformed() {
    for inside in [
        r#"{"x": {"$serde_json::private::RawValue": 1}}"#,
        r#"{"x": [{"$serde_json::private::Raw\u0056alue": "oops"}]}"#,
        r#"{"$serde_json::private::RawValue": true}"#,
    ] {
        assert!(serde_json::from_str::<Value>(inside).is_err(), "{inside}");
        malformed_as_traits_and_as_properties(inside);
    }
}

/// `inside` as an identify's traits and as a track's properties: each event malformed.
fn malformed_as_traits_and_as_properties(inside: &str) {
    for (kind, field) in [("identify", "traits"), ("track", "properties")] {
        let payload =
            format!(r#"{{"type":"{kind}","userId":"u1","event":"E","{field}":{inside}}}"#);
        let e =
            decode(payload.as_bytes(), None, Some("acme"), |w| w == "acme").expect_err(&payload);
        assert_eq!(e.reason(), FailureReason::MalformedJson, "{payload}: {e}");
    }
}

/// A trait named twice is sent as it is checked: once, the last value (a repeated key
/// would otherwise pass Customer.io's size and count limits unchecked).
#[test]
fn a_repeated_trait_is_sent_once_as_checked() {
    let big = "x".repeat(5_000);
    let payload =
        format!(r#"{{"type":"identify","userId":"u1","traits":{{"a":"{big}","a":"ok"}}}}"#);
    let e = decode(payload.as_bytes(), None, Some("acme"), |w| w == "acme").unwrap();
    let Action::Identify { attributes } = &e.action else {
        panic!("{e:?}")
    };
    assert_eq!(attributes.json(), r#"{"a":"ok"}"#);
}

/// Bytes that are not UTF-8, in a string or anywhere else, make the event malformed
/// with where they are; text beyond ASCII is decoded as it is.
#[test]
fn a_payload_that_is_not_utf8_is_malformed_and_says_where() {
    let known = |w: &str| w == "acme";
    let mut payload = br#"{"type":"track","userId":"u","event":"caf"#.to_vec();
    let at = format!("index {}", payload.len());
    payload.extend_from_slice(&[0xC3, 0x28]);
    payload.extend_from_slice(br#""}"#);
    match decode(&payload, None, Some("acme"), known) {
        Err(InvalidEvent::Malformed(why)) => {
            assert!(why.starts_with("not UTF-8: "), "{why}");
            assert!(why.contains(&at), "{why}");
        }
        other => panic!("{other:?}"),
    }
    let e = decode(
        r#"{"type":"track","userId":"Zoë","event":"café ☕"}"#.as_bytes(),
        None,
        Some("acme"),
        known,
    )
    .unwrap();
    assert_eq!(e.person, Person::Id("Zoë".into()));
    assert!(matches!(e.action, Action::Track { ref name, .. } if name == "café ☕"));
}
