//! An event's `traits` or `properties`: a JSON object kept as the text it came in,
//! checked to be an object and never built into a tree unless a check or an encoder
//! needs one. Every encoder writes it out as it is (serde's `RawValue`): the largest
//! part of most events is read once and copied once.

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

    /// `raw` if it is an object (`None` if it is any other JSON value).
    pub(crate) fn object(raw: &RawValue) -> Option<Self> {
        raw.get().starts_with('{').then(|| Fields(raw.to_owned()))
    }

    /// The object's JSON text.
    pub fn json(&self) -> &str {
        self.0.get()
    }

    /// The object as a map (for the encoders that change its values, and for tests).
    pub fn to_map(&self) -> Map<String, Value> {
        serde_json::from_str(self.0.get()).expect("checked to be an object when decoded")
    }

    /// Whether it has no fields.
    pub fn is_empty(&self) -> bool {
        self.0
            .get()
            .bytes()
            .all(|b| matches!(b, b'{' | b'}' | b' ' | b'\t' | b'\n' | b'\r'))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_written_as_they_came_and_read_as_a_map() {
        let raw: &RawValue = serde_json::from_str(r#"{"b": 1, "a": [1, {"x": "<y>"}]}"#).unwrap();
        let fields = Fields::object(raw).unwrap();
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
        assert_eq!(fields.to_map()["a"][1]["x"], "<y>");
        assert!(!fields.is_empty());
        assert!(Fields::empty().is_empty());
        for not_an_object in ["[1]", "\"x\"", "3", "true"] {
            let raw: &RawValue = serde_json::from_str(not_an_object).unwrap();
            assert!(Fields::object(raw).is_none(), "{not_an_object}");
        }
    }
}
