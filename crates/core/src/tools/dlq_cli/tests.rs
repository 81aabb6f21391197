use super::*;

#[test]
fn inspect_shows_a_hostile_letter_without_a_control_character() {
    let every_byte: Vec<u8> = (0..=255u8).collect();
    let letter = StoredRecord {
        partition: 0,
        offset: 7,
        key: Some(b"\x1b[2J".to_vec()),
        payload: Some(every_byte[..160].to_vec()),
        headers: [
            (headers::REASON, "malformed\x1b]0;owned\x07"),
            (headers::WORKSPACE, "ws\x1b[31m"),
            (headers::TOPIC, "events\r\n"),
            (headers::MESSAGE, "bad \x1b[1A line"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    };
    let shown = report(&[letter], 1);
    for line in shown.lines() {
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
    }
    assert!(shown.contains("malformed\\u{1b}]0;owned\\u{7}"), "{shown}");
    assert!(shown.contains("ws\\u{1b}[31m"), "{shown}");
}
