//! What a `kind = "http"` destination's templates see of an event, borrowed from it:
//! serialized as the body itself when no template is written, else made once into the
//! one value every template of the event renders from, whose `properties` and `traits`
//! are their JSON text until a template looks inside.

use std::sync::{Arc, OnceLock};

use minijinja::value::{
    from_args, Enumerator, Kwargs, Object, ObjectRepr, Rest, Value as TemplateValue, ValueKind,
};
use serde::Serialize;
use serde_json::Value;

use super::body_check;
use crate::event::{Event, Fields};

/// `type`, `user_id` or `anonymous_id`, `event` and `properties` (track) or `traits`
/// (identify), `message_id`, `timestamp` (unix seconds, when known) and `workspace`.
#[derive(Serialize)]
pub(super) struct Context<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    anonymous_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    properties: Option<&'a Fields>,
    #[serde(skip_serializing_if = "Option::is_none")]
    traits: Option<&'a Fields>,
    message_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<i64>,
    workspace: &'a str,
}

impl<'a> Context<'a> {
    /// `event` as the templates see it.
    pub(super) fn of(event: &'a Event) -> Self {
        let (user_id, anonymous_id) = event.person.ids();
        let (kind, name, traits, properties) = event.action.parts();
        Context {
            kind,
            user_id,
            anonymous_id,
            event: name,
            properties,
            traits,
            message_id: &event.dedup_id,
            timestamp: event.timestamp,
            workspace: &event.workspace,
        }
    }
}

impl Context<'_> {
    /// The value every template of the event renders from: an [`EventObject`] whose
    /// `properties` and `traits` are [`JsonMap`]s (written once, as JSON text; read
    /// into template values only if a template looks inside them).
    pub(super) fn template_value(&self) -> TemplateValue {
        let text = |s: Option<&str>| s.map(TemplateValue::from);
        TemplateValue::from_object(EventObject {
            kind: self.kind,
            user_id: text(self.user_id),
            anonymous_id: text(self.anonymous_id),
            event: text(self.event),
            properties: self.properties.map(JsonMap::value),
            traits: self.traits.map(JsonMap::value),
            message_id: self.message_id.into(),
            timestamp: self.timestamp,
            workspace: self.workspace.into(),
        })
    }
}

/// The template context: the event's fields answered by name, each a template value
/// made once (a lookup is a reference count, not a copy), and no map of them built (a
/// map cost more to build than most templates cost to render).
#[derive(Debug)]
struct EventObject {
    kind: &'static str,
    user_id: Option<TemplateValue>,
    anonymous_id: Option<TemplateValue>,
    event: Option<TemplateValue>,
    properties: Option<TemplateValue>,
    traits: Option<TemplateValue>,
    message_id: TemplateValue,
    timestamp: Option<i64>,
    workspace: TemplateValue,
}

/// The names an [`EventObject`] answers to, in the order it lists them.
const NAMES: [&str; 9] = [
    "type",
    "user_id",
    "anonymous_id",
    "event",
    "properties",
    "traits",
    "message_id",
    "timestamp",
    "workspace",
];

impl EventObject {
    fn field(&self, name: &str) -> Option<TemplateValue> {
        match name {
            "type" => Some(self.kind.into()),
            "user_id" => self.user_id.clone(),
            "anonymous_id" => self.anonymous_id.clone(),
            "event" => self.event.clone(),
            "properties" => self.properties.clone(),
            "traits" => self.traits.clone(),
            "message_id" => Some(self.message_id.clone()),
            "timestamp" => self.timestamp.map(TemplateValue::from),
            "workspace" => Some(self.workspace.clone()),
            _ => None,
        }
    }
}

impl Object for EventObject {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &TemplateValue) -> Option<TemplateValue> {
        self.field(key.as_str()?)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let present = NAMES
            .iter()
            .filter(|name| self.field(name).is_some())
            .map(|name| TemplateValue::from(*name))
            .collect();
        Enumerator::Values(present)
    }
}

/// An event's `properties` or `traits` in a template: its JSON text as `tojson` writes
/// it (made once per event; the common `{{ properties | tojson }}` shares it), and the
/// template values read from that text the first time a template looks inside.
#[derive(Debug)]
pub(super) struct JsonMap {
    /// The text with `<`, `>`, `&` and `'` escaped: the same JSON value.
    json: TemplateValue,
    read: OnceLock<TemplateValue>,
}

impl JsonMap {
    fn value(fields: &Fields) -> TemplateValue {
        TemplateValue::from_object(JsonMap {
            json: TemplateValue::from_safe_string(escaped(fields.json().to_string())),
            read: OnceLock::new(),
        })
    }

    fn read(&self) -> &TemplateValue {
        // Checked at decode as parsing checks it; were it not, a template looking
        // inside would find nothing there (a strict error), never a panic.
        self.read.get_or_init(|| {
            serde_json::from_str::<Value>(self.json.as_str().unwrap_or_default())
                .map(|map| TemplateValue::from_serialize(&map))
                .unwrap_or(TemplateValue::UNDEFINED)
        })
    }
}

impl Object for JsonMap {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &TemplateValue) -> Option<TemplateValue> {
        self.read().get_item(key).ok().filter(|v| !v.is_undefined())
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        match self.read().try_iter() {
            Ok(keys) => Enumerator::Values(keys.collect()),
            Err(_) => Enumerator::Empty,
        }
    }
}

/// minijinja's `tojson` without options, done here: a [`JsonMap`] as its text, any
/// other value through serde_json, both escaped as minijinja escapes them (`<`, `>`,
/// `&` and `'` as `\u…`, so the output stays safe in HTML too). With an `indent`, or
/// any other argument, minijinja's own.
pub(super) fn tojson(
    value: &TemplateValue,
    options: Rest<TemplateValue>,
) -> Result<TemplateValue, minijinja::Error> {
    let map = value.downcast_object_ref::<JsonMap>();
    if !options.is_empty() {
        // (No options is the common case: taken as `Rest`, it costs no keyword map.)
        let (indent, args): (Option<TemplateValue>, Kwargs) = from_args(&options)?;
        let json = minijinja::filters::tojson(map.map_or(value, JsonMap::read), indent, args)?;
        body_check::made_json(&json);
        return Ok(json);
    }
    if let Some(map) = map {
        body_check::made_json(&map.json);
        return Ok(map.json.clone());
    }
    let text = match value.as_str() {
        // A text (an id, an event's name) written directly, as serde_json writes it.
        Some(text) if value.kind() == ValueKind::String => {
            serde_json::to_string(text).expect("a string serializes")
        }
        _ => serde_json::to_string(value).map_err(|e| {
            minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                "cannot serialize to JSON",
            )
            .with_source(e)
        })?,
    };
    let json = TemplateValue::from_safe_string(escaped(text));
    body_check::made_json(&json);
    Ok(json)
}

/// JSON `text` with `<`, `>`, `&` and `'` written as `\u…` escapes (as minijinja's
/// `tojson` writes them).
fn escaped(text: String) -> String {
    // Looked for with SIMD: a byte at a time cost a tenth of a templated encode.
    let bytes = text.as_bytes();
    if memchr::memchr3(b'<', b'>', b'&', bytes).is_none() && memchr::memchr(b'\'', bytes).is_none()
    {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\'' => out.push_str("\\u0027"),
            _ => out.push(c),
        }
    }
    out
}
