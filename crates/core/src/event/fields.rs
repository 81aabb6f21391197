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

    /// `raw`, if it is an object that parsing into a `serde_json::Value` would accept
    /// (nesting within its depth limit, numbers in range, strings with valid escapes:
    /// serde_json takes a raw value without these checks), with the number of keys at
    /// its top level (more than its map's when a key is repeated).
    pub(crate) fn object(raw: &RawValue) -> Result<(Self, usize), String> {
        let keys = serde_json::from_str::<TopLevel>(raw.get())
            .map_err(|e| e.to_string())?
            .0;
        Ok((Fields(raw.to_owned()), keys))
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

/// An object, checked through serde_json's own parser (which keeps its depth,
/// number and escape checks on this path), nothing kept but its top-level key count.
struct TopLevel(usize);

/// Any JSON value, checked the same way, nothing kept.
struct Checked;

impl<'de> Deserialize<'de> for TopLevel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = TopLevel;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
                let mut keys = 0;
                while map.next_key::<Checked>()?.is_some() {
                    map.next_value::<Checked>()?;
                    keys += 1;
                }
                Ok(TopLevel(keys))
            }
        }
        deserializer.deserialize_map(Object)
    }
}

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
                while map.next_key::<Checked>()?.is_some() {
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
        Fields::object(raw)
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
            assert!(Fields::object(raw).is_err(), "{bad}");
            assert!(
                serde_json::from_str::<Value>(bad).is_err(),
                "parsing refuses {bad}"
            );
        }
    }
}
