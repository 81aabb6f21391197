//! A duration setting: a number of milliseconds, or a duration with its unit.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration in the configuration. Its key keeps its `_ms` name and takes a number
/// of milliseconds (`linger_ms = 200`) or a duration with its unit, as humantime
/// reads it (`linger_ms = "200ms"`, `"5s"`, `"2m"`); it is printed back in
/// milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(u64);

impl Millis {
    /// `ms` milliseconds.
    pub const fn new(ms: u64) -> Self {
        Millis(ms)
    }

    /// In milliseconds.
    pub const fn ms(self) -> u64 {
        self.0
    }

    /// As a [`Duration`].
    pub const fn duration(self) -> Duration {
        Duration::from_millis(self.0)
    }
}

impl Serialize for Millis {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(MillisVisitor)
    }
}

struct MillisVisitor;

impl Visitor<'_> for MillisVisitor {
    type Value = Millis;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"milliseconds (200) or a duration with its unit ("200ms", "5s", "2m")"#)
    }

    fn visit_u64<E: de::Error>(self, ms: u64) -> Result<Millis, E> {
        Ok(Millis(ms))
    }

    fn visit_i64<E: de::Error>(self, ms: i64) -> Result<Millis, E> {
        u64::try_from(ms)
            .map(Millis)
            .map_err(|_| E::custom(format!("{ms}: a duration cannot be negative")))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Millis, E> {
        let d = humantime::parse_duration(text.trim())
            .map_err(|e| E::custom(format!("{text:?}: {e} (e.g. \"200ms\", \"5s\", \"2m\")")))?;
        if d.subsec_nanos() % 1_000_000 != 0 {
            return Err(E::custom(format!(
                "{text:?}: not a whole number of milliseconds"
            )));
        }
        u64::try_from(d.as_millis())
            .map(Millis)
            .map_err(|_| E::custom(format!("{text:?}: too long")))
    }
}
