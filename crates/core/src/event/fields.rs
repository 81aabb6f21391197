//! An event's `traits` or `properties`: a JSON object kept as the text it came in,
//! checked as parsing it would check it and never built into a tree unless a check or
//! an encoder needs one. Every encoder writes it out as it is (serde's `RawValue`):
//! the largest part of most events is read once and copied once.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// A JSON object's text, as the producer wrote it (whitespace inside kept, keys in
/// their order).
#[derive(Debug, Clone)]
pub struct Fields(Box<RawValue>);

impl Fields {
    /// `{}`.
    pub fn empty() -> Self {
        Fields(RawValue::from_string("{}".into()).expect("{} is JSON"))
    }

    /// `map`'s JSON.
    pub fn from_map(map: &Map<String, Value>) -> Self {
        Fields(serde_json::value::to_raw_value(map).expect("a JSON map serializes"))
    }

    /// `raw` (an object: the decoder checks that first), if parsing into a
    /// `serde_json::Value` would accept it
    /// (nesting within its depth limit, numbers in range, strings with valid escapes,
    /// no object keyed first by serde_json's raw-value token: serde_json takes a raw
    /// value without these checks). Parsed again only when a quick look finds
    /// something parsing could refuse (see [`may_refuse`]), through serde_json's own
    /// parser with a visitor that keeps nothing.
    pub(crate) fn checked(raw: &RawValue) -> Result<Self, String> {
        if may_refuse(raw.get().as_bytes()) {
            serde_json::from_str::<Checked>(raw.get()).map_err(|e| e.to_string())?;
        }
        Ok(Fields(raw.to_owned()))
    }

    /// [`checked`](Self::checked), read as a map in the same pass, with the number of
    /// keys at its top level (more than its map's when a key is repeated).
    pub(crate) fn object_map(raw: &RawValue) -> Result<(Self, Map<String, Value>, usize), String> {
        let CountedMap(map, keys) =
            serde_json::from_str::<CountedMap>(raw.get()).map_err(|e| e.to_string())?;
        Ok((Fields(raw.to_owned()), map, keys))
    }

    /// The object's JSON text.
    pub fn json(&self) -> &str {
        self.0.get()
    }

    /// The object as a map (for the checks and encoders that need its values).
    pub fn to_map(&self) -> serde_json::Result<Map<String, Value>> {
        serde_json::from_str(self.0.get())
    }
}

impl PartialEq for Fields {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Serialize for Fields {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// Nesting past which [`may_refuse`] has the text parsed: well within serde_json's
/// limit of 128 (a bracket inside a string counts too).
const MAX_BRACKETS: usize = 100;

/// A run of digits past which [`may_refuse`] has the text parsed: an integer of 309
/// digits or more may be out of an f64's range.
const MAX_DIGITS: usize = 300;

/// Whether parsing `text` into a `serde_json::Value` could refuse it, when serde_json
/// has already taken it as a raw value (its structure, the syntax of its escapes and
/// numbers, UTF-8). What is left to refuse is nesting past the depth limit, a number
/// out of range, an escape that is half a surrogate pair, and an object whose first
/// key is serde_json's raw-value token; each is looked for loosely (any bracket, any
/// exponent, any long run of digits, any `\u`, the token anywhere), so `false` is
/// certain and `true` means parse it and see.
fn may_refuse(text: &[u8]) -> bool {
    if memchr::memchr2_iter(b'{', b'[', text)
        .nth(MAX_BRACKETS)
        .is_some()
    {
        return true;
    }
    // Any `\u` escape: half a surrogate pair, or a key spelled with escapes.
    if memchr::memchr_iter(b'\\', text).any(|i| text.get(i + 1) == Some(&b'u')) {
        return true;
    }
    // The raw-value key spelled out (no other escape can spell it).
    let token = |i: usize| text[i..].starts_with(RAW_VALUE_KEY.as_bytes());
    if memchr::memchr_iter(b'$', text).any(token) {
        return true;
    }
    if memchr::memchr2_iter(b'e', b'E', text).any(|i| is_exponent(text, i)) {
        return true;
    }
    text.len() > MAX_DIGITS
        && text
            .split(|b| !b.is_ascii_digit())
            .any(|run| run.len() > MAX_DIGITS)
}

/// Whether the `e` at `i` may be a number's exponent: it follows a run of digits (and
/// `.` or `-`) that begins where a JSON value can — after `:`, `,`, `[`, whitespace or
/// at the start — and is followed by a digit or a sign. (In a hex id such as `"a3e4"`
/// the run begins after a letter or a quote: text in a string, not a number.)
fn is_exponent(text: &[u8], i: usize) -> bool {
    let before = &text[..i];
    let run = before
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-'))
        .count();
    let digit_before = before.last().is_some_and(u8::is_ascii_digit);
    let starts_a_value = match before.len().checked_sub(run + 1) {
        None => true,
        Some(at) => matches!(text[at], b':' | b',' | b'[' | b' ' | b'\t' | b'\n' | b'\r'),
    };
    let then = matches!(text.get(i + 1), Some(b'0'..=b'9' | b'+' | b'-'));
    digit_before && starts_a_value && then
}

/// The key by which serde_json reads an object as a raw value when it is the object's
/// first (its private `raw::TOKEN`): parsing refuses such an object unless its value
/// is a string of JSON, and reads it as that JSON when it is. Refused here either way.
const RAW_VALUE_KEY: &str = "$serde_json::private::RawValue";

fn raw_value_key<E: de::Error>() -> E {
    E::custom("an object whose first key is serde_json's raw-value token")
}

/// An object's key, checked as parsing checks it: whether it is [`RAW_VALUE_KEY`].
struct Key(bool);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> Visitor<'de> for Text {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(Key(key == RAW_VALUE_KEY))
            }
        }
        deserializer.deserialize_str(Text)
    }
}

/// An object read into a map, with its top-level key count (more than the map's when a
/// key is repeated).
struct CountedMap(Map<String, Value>, usize);

impl<'de> Deserialize<'de> for CountedMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = CountedMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<CountedMap, A::Error> {
                let mut map = Map::new();
                let mut keys = 0;
                while let Some((key, value)) = access.next_entry::<String, Value>()? {
                    if keys == 0 && key == RAW_VALUE_KEY {
                        return Err(raw_value_key());
                    }
                    map.insert(key, value);
                    keys += 1;
                }
                Ok(CountedMap(map, keys))
            }
        }
        deserializer.deserialize_map(Object)
    }
}

/// Any JSON value, checked through serde_json's own parser (which keeps its depth,
/// number and escape checks on this path), nothing kept.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Any;
        impl<'de> Visitor<'de> for Any {
            type Value = Checked;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
                while seq.next_element::<Checked>()?.is_some() {}
                Ok(Checked)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
                let mut first = true;
                while let Some(Key(raw_value_token)) = map.next_key::<Key>()? {
                    if first && raw_value_token {
                        return Err(raw_value_key());
                    }
                    first = false;
                    map.next_value::<Checked>()?;
                }
                Ok(Checked)
            }
        }
        deserializer.deserialize_any(Any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(text: &str) -> Result<(Fields, usize), String> {
        let raw: &RawValue = serde_json::from_str(text).unwrap();
        Fields::object_map(raw).map(|(fields, _, keys)| (fields, keys))
    }

    #[test]
    fn fields_are_written_as_they_came_and_read_as_a_map() {
        let (fields, keys) = object(r#"{"b": 1, "a": [1, {"x": "<y>"}]}"#).unwrap();
        assert_eq!(keys, 2);
        #[derive(Serialize)]
        struct Item<'a> {
            attributes: &'a Fields,
        }
        let written = serde_json::to_string(&Item {
            attributes: &fields,
        })
        .unwrap();
        assert_eq!(
            written,
            r#"{"attributes":{"b": 1, "a": [1, {"x": "<y>"}]}}"#
        );
        assert_eq!(fields.to_map().unwrap()["a"][1]["x"], "<y>");
        assert_eq!(Fields::empty().to_map().unwrap().len(), 0);
        // A repeated key: counted twice, read once.
        let (fields, keys) = object(r#"{"a": 1, "a": 2}"#).unwrap();
        assert_eq!((keys, fields.to_map().unwrap().len()), (2, 1));
    }

    /// Each way parsing refuses what serde_json took raw is seen by the quick look, and
    /// an everyday event's properties are not parsed again.
    #[test]
    fn the_quick_look_sees_what_parsing_would_refuse_and_passes_the_rest() {
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
        let long = format!("{{\"n\": {}}}", "9".repeat(400));
        for refused in [
            r#"{"n": 1e400}"#,
            r#"{"n": -2E+999}"#,
            r#"{"s": "\udc00"}"#,
            r#"{"s": "\uD800x"}"#,
            r#"{"x": {"$serde_json::private::RawValue": 1}}"#,
            r#"{"x": [{"$serde_json::private::Raw\u0056alue": "oops"}]}"#,
            deep.as_str(),
            long.as_str(),
        ] {
            assert!(serde_json::from_str::<Value>(refused).is_err(), "{refused}");
            assert!(may_refuse(refused.as_bytes()), "{refused}");
            let raw: &RawValue = serde_json::from_str(refused).unwrap();
            assert!(Fields::checked(raw).is_err(), "{refused}");
        }
        for everyday in [
            r#"{"plan": "pro", "seats": 12, "price": 9.5, "tags": ["a", "b"], "note": "e.g. a E"}"#,
            r#"{"name": "Nuño", "nested": {"deep": [1, {"x": null}]}, "ok": true}"#,
            r#"{"id": "5f2c13e4-0e9b-43e1", "hex": "a3e4", "v": "1e5"}"#,
        ] {
            assert!(!may_refuse(everyday.as_bytes()), "{everyday}");
            let raw: &RawValue = serde_json::from_str(everyday).unwrap();
            assert_eq!(Fields::checked(raw).unwrap().json(), everyday);
        }
    }

    /// Loose: what only looks like a number's exponent is parsed, and passes.
    #[test]
    fn a_lookalike_is_parsed_and_passes() {
        for text in [
            r#"{"room": "is 3e5"}"#,
            r#"{"name": "Nu\u00f1o", "$": "$serde"}"#,
        ] {
            assert!(may_refuse(text.as_bytes()), "{text}");
            let raw: &RawValue = serde_json::from_str(text).unwrap();
            assert_eq!(Fields::checked(raw).unwrap().json(), text);
        }
    }

    /// One pass for an identify's traits: the map parsing makes and the key count.
    #[test]
    fn an_object_is_read_as_a_map_and_counted_in_one_pass() {
        let raw: &RawValue = serde_json::from_str(r#"{"a": 1, "b": [2], "a": 3}"#).unwrap();
        let (fields, map, keys) = Fields::object_map(raw).unwrap();
        assert_eq!((keys, map.len(), map["a"].clone()), (3, 2, Value::from(3)));
        assert_eq!(fields.json(), raw.get());
        let raw: &RawValue = serde_json::from_str(r#"{"n": 1e400}"#).unwrap();
        assert!(Fields::object_map(raw).is_err());
    }

    fn json_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just("1e400".to_string()),
            Just("-1E-400".to_string()),
            Just("2.5e3".to_string()),
            Just("9".repeat(310)),
            Just("0.5".to_string()),
            Just("\"\\ud800\"".to_string()),
            Just("\"\\udc00\\ud800\"".to_string()),
            Just("\"\\ud83d\\ude00\"".to_string()),
            Just("\"\\u00e9 e1 [{\"".to_string()),
            Just("\"\\\\ud800\"".to_string()),
            Just("null".to_string()),
            Just("{\"$serde_json::private::RawValue\":1}".to_string()),
            Just("{\"$serde_json::private::Raw\\u0056alue\":[]}".to_string()),
            Just("{\"a\":1,\"$serde_json::private::RawValue\":1}".to_string()),
            "[a-z0-9 ]{0,8}".prop_map(|s| format!("{s:?}")),
            any::<i64>().prop_map(|n| n.to_string()),
        ];
        leaf.prop_recursive(140, 400, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                proptest::collection::vec(("[a-e]{1,3}", inner), 0..4).prop_map(|v| {
                    let fields: Vec<String> =
                        v.into_iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
                    format!("{{{}}}", fields.join(","))
                }),
            ]
        })
    }

    proptest::proptest! {
        /// Never a pass for what parsing refuses: the quick look is loose, never wrong.
        #[test]
        fn what_the_quick_look_passes_parsing_accepts(inner in json_text()) {
            let text = format!("{{\"p\":{inner}}}");
            let parsed = serde_json::from_str::<Value>(&text).is_ok();
            if !may_refuse(text.as_bytes()) {
                proptest::prop_assert!(parsed, "{}", text);
            }
            let raw: &RawValue = serde_json::from_str(&text).unwrap();
            proptest::prop_assert_eq!(Fields::checked(raw).is_ok(), parsed);
        }
    }

    /// serde_json takes a raw value without the checks it makes when it parses one:
    /// each of these reached the encoders, and panicked where a map was read.
    #[test]
    fn what_parsing_refuses_is_refused_here_too() {
        for not_an_object in ["[1]", "\"x\"", "3", "true", "null"] {
            assert!(object(not_an_object).is_err(), "{not_an_object}");
        }
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
        for bad in [
            r#"{"n": 1e400}"#,
            r#"{"s": "\udc00"}"#,
            r#"{"s": "\ud800x"}"#,
            deep.as_str(),
        ] {
            let raw: &RawValue = serde_json::from_str(bad).expect("serde_json takes it raw");
            assert!(Fields::checked(raw).is_err(), "{bad}");
            assert!(
                serde_json::from_str::<Value>(bad).is_err(),
                "parsing refuses {bad}"
            );
        }
    }
}
