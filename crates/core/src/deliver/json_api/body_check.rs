//! Checking that a rendered body is JSON without reading all of it. What `tojson`
//! wrote is JSON already (serde_json's text), so each such value found in the body
//! is stood in for by `[\n]` and only the rest — the template's own text, mostly —
//! is read: that skeleton is valid only where each stand-in is a whole value (a raw
//! newline cannot sit inside a string, and `[` then `]` is an empty array), and one
//! value may stand for any other, so a valid skeleton means a valid body. Where a
//! value's text is found does not matter: any part of the body that is the text of a
//! JSON value may be stood in for. A skeleton that is not valid proves nothing: the
//! body is then read whole, as before. Most templates make one skeleton per branch,
//! so the valid ones are remembered and a body is then checked by comparing bytes.
//!
//! `tojson` notes what it makes on its thread while a body renders (the template
//! engine tells nobody what it writes where).

use std::cell::RefCell;
use std::ops::Range;

use minijinja::value::Value as TemplateValue;
use minijinja::{Error, Template};
use serde::de::IgnoredAny;

/// Skeletons remembered as valid, per thread: enough for a template's branches, few
/// enough that a template writing other text into each body costs a lookup, not memory.
const KNOWN_SKELETONS: usize = 16;

thread_local! {
    static WATCH: RefCell<Watched> = const {
        RefCell::new(Watched {
            on: false,
            made: Vec::new(),
            skeleton: Vec::new(),
            known: Vec::new(),
        })
    };
}

/// A thread's watch over the bodies it renders (kept between renders for its room).
struct Watched {
    /// Whether a body is rendering on this thread.
    on: bool,
    /// The values `tojson` made in this render, in order.
    made: Vec<TemplateValue>,
    /// The last body's skeleton.
    skeleton: Vec<u8>,
    /// Skeletons found valid.
    known: Vec<Box<[u8]>>,
}

/// Notes `value` as `tojson`'s output, when a body is rendering on this thread.
pub(super) fn made_json(value: &TemplateValue) {
    WATCH.with_borrow_mut(|watch| {
        if watch.on {
            watch.made.push(value.clone());
        }
    });
}

/// Why a rendered body cannot be sent.
pub(super) enum BodyError {
    /// The template failed.
    Render(Error),
    /// What it wrote is not JSON.
    NotJson(serde_json::Error),
}

/// Stops noting `tojson`'s values however the render ends.
struct On;

impl On {
    fn start() -> Self {
        WATCH.with_borrow_mut(|watch| {
            watch.on = true;
            watch.made.clear();
        });
        On
    }
}

impl Drop for On {
    fn drop(&mut self) {
        WATCH.with_borrow_mut(|watch| watch.on = false);
    }
}

/// `template` rendered from `context`, checked to be JSON.
pub(super) fn render_json(
    template: &Template<'_, '_>,
    context: &TemplateValue,
) -> Result<String, BodyError> {
    let on = On::start();
    let body = template.render(context).map_err(BodyError::Render)?;
    drop(on);
    WATCH
        .with_borrow_mut(|watch| {
            let result = watch.check(body.as_bytes());
            watch.made.clear();
            result
        })
        .map_err(BodyError::NotJson)?;
    Ok(body)
}

impl Watched {
    /// `body` is JSON: its skeleton is a known or a valid one, or it is all read.
    fn check(&mut self, body: &[u8]) -> Result<(), serde_json::Error> {
        let spans = found(body, &self.made);
        if !spans.is_empty() {
            self.skeleton.clear();
            let mut at = 0;
            for span in &spans {
                self.skeleton.extend_from_slice(&body[at..span.start]);
                self.skeleton.extend_from_slice(b"[\n]");
                at = span.end;
            }
            self.skeleton.extend_from_slice(&body[at..]);
            if self.known.iter().any(|k| **k == *self.skeleton) {
                return Ok(());
            }
            if serde_json::from_slice::<IgnoredAny>(&self.skeleton).is_ok() {
                if self.known.len() < KNOWN_SKELETONS {
                    self.known.push(self.skeleton.as_slice().into());
                }
                return Ok(());
            }
        }
        serde_json::from_slice::<IgnoredAny>(body).map(|_| ())
    }
}

/// Where in `body` the texts of `made` are, each looked for after the last found (the
/// order they were made in is mostly the order they were written in).
fn found(body: &[u8], made: &[TemplateValue]) -> Vec<Range<usize>> {
    let mut spans = Vec::with_capacity(made.len());
    let mut at = 0;
    // (`tojson` never writes nothing: were a text empty, it would stand in for nothing.)
    for text in made
        .iter()
        .filter_map(TemplateValue::as_str)
        .filter(|t| !t.is_empty())
    {
        if let Some(start) = find(&body[at..], text.as_bytes()) {
            let start = at + start;
            spans.push(start..start + text.len());
            at = start + text.len();
        }
    }
    spans
}

/// Where `needle` first is in `body`, looked for by its first byte and a comparison
/// (setting up a substring search cost more than most searches), at the first
/// [`CANDIDATES`] places that byte is: past those, not found (the body is then read
/// whole), so no body costs its length times the needle's.
fn find(body: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    memchr::memchr_iter(first, body)
        .take(CANDIDATES)
        .find(|&i| body[i..].starts_with(needle))
}

/// How many places [`find`] looks at.
const CANDIDATES: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    fn environment() -> minijinja::Environment<'static> {
        let mut env = minijinja::Environment::new();
        env.add_filter(
            "tojson",
            |v: &TemplateValue| -> Result<TemplateValue, Error> {
                let text = serde_json::to_string(v).map_err(|e| {
                    Error::new(minijinja::ErrorKind::InvalidOperation, "json").with_source(e)
                })?;
                let made = TemplateValue::from_safe_string(text);
                made_json(&made);
                Ok(made)
            },
        );
        env
    }

    /// Each template over each value: refused exactly when serde_json refuses the
    /// whole body — the stand-ins and the remembered skeletons never let through what
    /// reading it all would not.
    #[test]
    fn a_body_is_json_exactly_when_reading_it_whole_says_so() {
        let mut env = environment();
        let templates = [
            r#"{"a": {{ x | tojson }}}"#,
            r#"{{ x | tojson }}"#,
            r#"[{{ x | tojson }}, {{ x | tojson }}]"#,
            // Inside a string: valid for no value.
            r#"{"a": "{{ x | tojson }}"}"#,
            // After an escaping backslash: the body can be valid, the skeleton is not.
            r#"{"a": "\{{ x | tojson }}}"#,
            r#"{"a": {{ x | tojson }} {{ x | tojson }}}"#,
            r#"[{{ x | tojson }},]"#,
            r#"{"a": {{ x | tojson }}"#,
            r#"{"a": {% filter upper %}{{ x | tojson }}{% endfilter %}}"#,
            r#"{"a": {{ x | tojson }}{{ x }}}"#,
            r#"{"a": [{% for i in [1, 2] %}{{ x | tojson }}{% if not loop.last %},{% endif %}{% endfor %}]}"#,
            r#"{"{{ x | tojson }}": 1}"#,
            r#"{{ x | tojson }}{{ x | tojson }}"#,
            // Made but written elsewhere, or not at all.
            r#"{% set j = x | tojson %}{"b": "{{ j }}", "a": {{ j }}}"#,
            r#"{% set j = x | tojson %}{"a": 3}"#,
            // A value's text also in the template's own: the first one found stands in.
            r#"{"null": {{ x | tojson }}, "3": "[]"}"#,
        ];
        let values = [
            serde_json::json!("plain"),
            serde_json::json!("a \"quoted\" [text]\n"),
            serde_json::json!(3),
            serde_json::json!(null),
            serde_json::json!({"k": [1, "]"]}),
            serde_json::json!([]),
        ];
        for round in 0..2 {
            for text in templates {
                env.add_template_owned("body", text.to_string()).unwrap();
                let template = env.get_template("body").unwrap();
                for x in &values {
                    let context = TemplateValue::from_serialize(serde_json::json!({ "x": x }));
                    let whole = template.render(&context).unwrap();
                    let expected = serde_json::from_str::<IgnoredAny>(&whole).is_ok();
                    let checked = match render_json(&template, &context) {
                        Ok(body) => {
                            assert_eq!(body, whole, "{text} with {x}");
                            true
                        }
                        Err(BodyError::NotJson(_)) => false,
                        Err(BodyError::Render(e)) => panic!("{text}: {e}"),
                    };
                    assert_eq!(checked, expected, "round {round}: {text} with {x}: {whole}");
                }
            }
        }
        // The second round found the first round's skeletons: some were remembered.
        assert!(WATCH.with_borrow(|w| !w.known.is_empty()));
    }

    #[test]
    fn a_text_is_found_where_it_first_is_short_or_long() {
        let long = format!("{{\"k\": \"{}\"}}", "x".repeat(100));
        let body = format!("{{\"a\": \"x\", \"b\": {long}, \"c\": {long}}}");
        for needle in ["\"x\"", "{", "}", long.as_str(), "\"b\": {"] {
            assert_eq!(
                find(body.as_bytes(), needle.as_bytes()),
                body.find(needle),
                "{needle}"
            );
        }
        assert_eq!(find(b"abc", b"abd"), None);
        assert_eq!(find(b"ab", b"abc"), None);
        assert_eq!(find(b"abc", b""), None);
        // Past the places looked at: not found, not slow.
        let crowded = format!("{}\"x\"", "\"".repeat(CANDIDATES));
        assert_eq!(find(crowded.as_bytes(), b"\"x\""), None);
    }

    #[test]
    fn what_tojson_made_is_found_in_the_body_in_order_and_nothing_else() {
        let env = {
            let mut env = environment();
            env.add_template("body", r#"{"a": {{ x | tojson }}, "b": "X", "c": {{ y | tojson }}, "d": {{ x | tojson }}}"#)
                .unwrap();
            env
        };
        let context = TemplateValue::from_serialize(serde_json::json!({"x": "X", "y": [1]}));
        let template = env.get_template("body").unwrap();
        let on = On::start();
        let body = template.render(&context).unwrap();
        drop(on);
        let spans = WATCH.with_borrow(|w| found(body.as_bytes(), &w.made));
        assert_eq!(body, r#"{"a": "X", "b": "X", "c": [1], "d": "X"}"#);
        let texts: Vec<&str> = spans.iter().map(|s| &body[s.clone()]).collect();
        assert_eq!(texts, [r#""X""#, "[1]", r#""X""#]);
        assert_eq!(spans[0], 6..9);
        // Nothing is noted outside a body's render.
        let before = WATCH.with_borrow(|w| w.made.len());
        template.render(&context).unwrap();
        assert_eq!(WATCH.with_borrow(|w| w.made.len()), before);
    }
}
