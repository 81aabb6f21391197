//! The checks Customer.io's and Segment's own request schemas make, so the emulator
//! refuses what the real APIs refuse. Plus one test hook: an item whose attributes hold
//! `"mock_reject": "<reason>"` is refused with that reason (207), and one holding
//! `"mock_reject_request": true` makes the whole request a 400.

use serde_json::{Map, Value};

/// Customer.io's limit on one v2 item, in bytes.
pub(super) const MAX_ITEM_BYTES: usize = 32_000;

/// Why an item is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ItemError {
    /// Short reason.
    pub reason: String,
    /// The field at fault.
    pub field: String,
    /// A sentence.
    pub message: String,
}

fn err(reason: &str, field: &str, message: impl Into<String>) -> ItemError {
    ItemError {
        reason: reason.into(),
        field: field.into(),
        message: message.into(),
    }
}

/// Whether any item asks for the whole request to be refused.
pub(super) fn rejects_request(items: &[Value]) -> bool {
    items.iter().any(|item| {
        ["attributes", "properties", "traits", "data"]
            .iter()
            .any(|f| item[f]["mock_reject_request"] == Value::Bool(true))
    })
}

fn test_hook(item: &Value) -> Option<ItemError> {
    ["attributes", "properties", "traits", "data"]
        .iter()
        .find_map(|f| item[f]["mock_reject"].as_str())
        .map(|reason| {
            err(
                reason,
                "attributes.mock_reject",
                "refused on request (test hook)",
            )
        })
}

/// Checks one v2 batch item (`type: person`).
pub(super) fn v2_item(item: &Value) -> Result<(), ItemError> {
    if item.to_string().len() > MAX_ITEM_BYTES {
        return Err(err(
            "too_large",
            "",
            format!("item over {MAX_ITEM_BYTES} bytes"),
        ));
    }
    if let Some(e) = test_hook(item) {
        return Err(e);
    }
    if item["type"] != "person" {
        return Err(err("invalid", "type", "only type person is emulated"));
    }
    let identifiers = item["identifiers"]
        .as_object()
        .ok_or_else(|| err("invalid", "identifiers", "identifiers must be an object"))?;
    let known = ["id", "email", "phone", "cio_id"];
    if identifiers.len() != 1 || !identifiers.keys().all(|k| known.contains(&k.as_str())) {
        return Err(err(
            "invalid",
            "identifiers",
            "exactly one of id, email, phone, cio_id",
        ));
    }
    if !identifiers.values().all(Value::is_string) {
        return Err(err(
            "invalid",
            "identifiers",
            "identifier values are strings",
        ));
    }
    match item["action"].as_str() {
        Some("identify") | Some("delete") => {}
        Some("event") | Some("page") | Some("screen") => {
            if !item["name"].is_string() {
                return Err(err("required", "name", "event actions need a name"));
            }
            if let Some(id) = item.get("id") {
                if id
                    .as_str()
                    .and_then(|s| ulid::Ulid::from_string(s).ok())
                    .is_none()
                {
                    return Err(err("invalid", "id", "id must be a ULID"));
                }
            }
        }
        _ => return Err(err("invalid", "action", "unknown action")),
    }
    if item.get("timestamp").is_some_and(|t| !t.is_i64()) {
        return Err(err("invalid", "timestamp", "timestamp must be an integer"));
    }
    if item.get("attributes").is_some_and(|a| !a.is_object()) {
        return Err(err("invalid", "attributes", "attributes must be an object"));
    }
    Ok(())
}

/// Checks a v1 identify body: attribute values must be strings, integers or booleans.
pub(super) fn v1_identify(body: &Map<String, Value>) -> Result<(), ItemError> {
    if let Some(e) = test_hook(&Value::Object(Map::from_iter([(
        "attributes".to_string(),
        Value::Object(body.clone()),
    )]))) {
        return Err(e);
    }
    for (key, value) in body {
        let ok = value.is_string() || value.is_boolean() || value.is_i64() || value.is_u64();
        if !ok {
            return Err(err(
                "invalid",
                key,
                "values must be strings, integers or booleans",
            ));
        }
    }
    Ok(())
}

/// Checks a v1 event body.
pub(super) fn v1_event(body: &Value, anonymous: bool) -> Result<(), ItemError> {
    if let Some(e) = test_hook(body) {
        return Err(e);
    }
    if !body["name"].is_string() {
        return Err(err("required", "name", "events need a name"));
    }
    if anonymous && !body["anonymous_id"].is_string() && body.get("anonymous_id").is_some() {
        return Err(err(
            "invalid",
            "anonymous_id",
            "anonymous_id must be a string",
        ));
    }
    if let Some(id) = body.get("id") {
        if id
            .as_str()
            .and_then(|s| ulid::Ulid::from_string(s).ok())
            .is_none()
        {
            return Err(err("invalid", "id", "id must be a ULID"));
        }
    }
    if body.get("timestamp").is_some_and(|t| !t.is_i64()) {
        return Err(err("invalid", "timestamp", "timestamp must be an integer"));
    }
    Ok(())
}

/// Checks one Segment message (`/v1/identify`, `/v1/track`, or an item of `/v1/batch`).
pub(super) fn segment_message(message: &Value, kind: Option<&str>) -> Result<(), ItemError> {
    if message.to_string().len() > MAX_ITEM_BYTES {
        return Err(err(
            "too_large",
            "",
            format!("message over {MAX_ITEM_BYTES} bytes"),
        ));
    }
    if let Some(e) = test_hook(message) {
        return Err(e);
    }
    let kind = kind
        .or_else(|| message["type"].as_str())
        .unwrap_or_default();
    if !["identify", "track", "page", "screen", "group", "alias"].contains(&kind) {
        return Err(err("invalid", "type", "unknown type"));
    }
    if !message["userId"].is_string() && !message["anonymousId"].is_string() {
        return Err(err(
            "required",
            "userId",
            "userId or anonymousId is required",
        ));
    }
    if kind == "track" && !message["event"].is_string() {
        return Err(err("required", "event", "track needs an event"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn v2_items_are_checked_like_the_spec() {
        let ok = json!({"type":"person","identifiers":{"id":"1"},"action":"event","name":"x",
                        "id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","timestamp":1,"attributes":{}});
        assert_eq!(v2_item(&ok), Ok(()));
        let two_ids =
            json!({"type":"person","identifiers":{"id":"1","email":"a"},"action":"identify"});
        assert_eq!(v2_item(&two_ids).unwrap_err().field, "identifiers");
        let no_name = json!({"type":"person","identifiers":{"id":"1"},"action":"event"});
        assert_eq!(v2_item(&no_name).unwrap_err().field, "name");
        let bad_ts =
            json!({"type":"person","identifiers":{"id":"1"},"action":"identify","timestamp":"now"});
        assert_eq!(v2_item(&bad_ts).unwrap_err().field, "timestamp");
        let hook = json!({"type":"person","identifiers":{"id":"1"},"action":"identify",
                          "attributes":{"mock_reject":"bad_email"}});
        assert_eq!(v2_item(&hook).unwrap_err().reason, "bad_email");
        assert!(rejects_request(&[
            json!({"attributes":{"mock_reject_request":true}})
        ]));
    }

    #[test]
    fn v1_and_segment_bodies_are_checked() {
        let mut attrs = Map::new();
        attrs.insert("score".into(), json!(1.5));
        assert!(v1_identify(&attrs).is_err());
        assert!(v1_event(&json!({"data":{}}), false).is_err());
        assert!(segment_message(&json!({"type":"track","userId":"u"}), None).is_err());
        assert!(segment_message(&json!({"anonymousId":"a","event":"e"}), Some("track")).is_ok());
    }
}
