//! Customer.io's documented limits on what one event may carry, and the checks that
//! turn a breach into [`InvalidEvent::OverLimit`].

use serde_json::{Map, Value};

use super::InvalidEvent;

/// Customer.io's limit on an identifier, in bytes.
pub const MAX_IDENTIFIER_BYTES: usize = 150;
/// Customer.io's limit on an event name, in bytes.
pub const MAX_EVENT_NAME_BYTES: usize = 100;
/// Customer.io's limit on an attribute name, in bytes.
pub const MAX_ATTRIBUTE_NAME_BYTES: usize = 150;
/// Customer.io's limit on an attribute value, in bytes.
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 1_000;
/// Customer.io's limit on the number of attributes in one identify.
pub const MAX_ATTRIBUTES: usize = 300;
/// Customer.io's limit on a v1 event's `data`, in bytes.
pub const MAX_EVENT_DATA_BYTES: usize = 100_000;

/// `value` of `field` within `limit` bytes.
pub(super) fn check_len(
    field: &'static str,
    value: &str,
    limit: usize,
) -> Result<(), InvalidEvent> {
    if value.len() > limit {
        return Err(InvalidEvent::OverLimit {
            field,
            detail: format!("{} bytes, limit {limit}", value.len()),
        });
    }
    Ok(())
}

/// An identify's attributes within Customer.io's count and size limits.
pub(super) fn check_attributes(attributes: &Map<String, Value>) -> Result<(), InvalidEvent> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(InvalidEvent::OverLimit {
            field: "traits",
            detail: format!("{} attributes, limit {MAX_ATTRIBUTES}", attributes.len()),
        });
    }
    for (name, value) in attributes {
        check_len("trait name", name, MAX_ATTRIBUTE_NAME_BYTES)?;
        let size = match value {
            Value::String(s) => s.len(),
            other => other.to_string().len(),
        };
        if size > MAX_ATTRIBUTE_VALUE_BYTES {
            return Err(InvalidEvent::OverLimit {
                field: "trait value",
                detail: format!("`{name}` is {size} bytes, limit {MAX_ATTRIBUTE_VALUE_BYTES}"),
            });
        }
    }
    Ok(())
}
