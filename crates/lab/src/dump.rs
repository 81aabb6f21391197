//! The record file that `sluice loadgen --to-file`, `sluice replay --to-file` write and
//! `sluice replay --from-file` reads: one JSON object per line, lossless.
//!
//! Keys, values and header values are JSON strings when they are UTF-8 (so a person, k6
//! or `jq` can read them) and `{"base64": "…"}` otherwise; an absent field is a null key,
//! a null value (tombstone) or a header without a value. A topic → file → topic round
//! trip therefore keeps every byte.
//!
//! ```json
//! {"topic":"events","partition":3,"offset":17,"timestamp":1764590400123,"key":"u42",
//!  "value":"{\"type\":\"track\",…}","headers":[{"name":"workspace","value":"acme"}]}
//! ```

use std::io::{BufRead, Write};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Bytes as they appear in the file: text when UTF-8, base64 otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Bytes {
    /// Valid UTF-8, kept as a JSON string.
    Text(String),
    /// Anything else.
    Binary {
        /// Standard base64 with padding.
        base64: String,
    },
}

impl Bytes {
    /// The file form of `raw`.
    pub fn of(raw: &[u8]) -> Bytes {
        match std::str::from_utf8(raw) {
            Ok(text) => Bytes::Text(text.to_string()),
            Err(_) => Bytes::Binary {
                base64: base64::engine::general_purpose::STANDARD.encode(raw),
            },
        }
    }

    /// The bytes back.
    pub fn to_vec(&self) -> Result<Vec<u8>, base64::DecodeError> {
        match self {
            Bytes::Text(text) => Ok(text.as_bytes().to_vec()),
            Bytes::Binary { base64 } => base64::engine::general_purpose::STANDARD.decode(base64),
        }
    }
}

/// One Kafka header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Its name.
    pub name: String,
    /// Its value; absent for a header without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Bytes>,
}

/// One record of the file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The topic it was read from (absent for generated events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Its partition (absent: let the producer choose by key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    /// Its offset in `topic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    /// Its timestamp, unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// The key; absent for a null key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Bytes>,
    /// The value; absent for a null value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Bytes>,
    /// Headers, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<Header>,
}

/// A line of the file that is not a record.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// The file could not be read.
    #[error("reading line {line}: {source}")]
    Io {
        /// 1-based line number.
        line: usize,
        /// The cause.
        source: std::io::Error,
    },
    /// The line is not a record.
    #[error("line {line} is not a record: {source}")]
    Json {
        /// 1-based line number.
        line: usize,
        /// The cause.
        source: serde_json::Error,
    },
    /// A base64 field does not decode.
    #[error("line {line}: bad base64: {source}")]
    Base64 {
        /// 1-based line number.
        line: usize,
        /// The cause.
        source: base64::DecodeError,
    },
}

/// A record decoded to raw bytes, ready to produce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DumpedRecord {
    /// The topic it was read from, if known.
    pub topic: Option<String>,
    /// Partition, if known.
    pub partition: Option<i32>,
    /// Offset, if known.
    pub offset: Option<i64>,
    /// Timestamp, unix milliseconds.
    pub timestamp: Option<i64>,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes.
    pub value: Option<Vec<u8>>,
    /// Headers (name, value).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl DumpedRecord {
    /// A record as read from `topic`, whole.
    pub fn of_message(topic: &str, m: &impl rdkafka::Message) -> DumpedRecord {
        use rdkafka::message::Headers;
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        DumpedRecord {
            topic: Some(topic.to_string()),
            partition: Some(m.partition()),
            offset: Some(m.offset()),
            timestamp: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
        }
    }

    /// The file form.
    pub(crate) fn to_record(&self) -> Record {
        Record {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
            timestamp: self.timestamp,
            key: self.key.as_deref().map(Bytes::of),
            value: self.value.as_deref().map(Bytes::of),
            headers: self
                .headers
                .iter()
                .map(|(name, value)| Header {
                    name: name.clone(),
                    value: value.as_deref().map(Bytes::of),
                })
                .collect(),
        }
    }

    /// Writes it as one line.
    pub(crate) fn write_line(&self, out: &mut impl Write) -> std::io::Result<()> {
        serde_json::to_writer(&mut *out, &self.to_record())?;
        out.write_all(b"\n")
    }
}

impl Record {
    fn into_raw(self, line: usize) -> Result<DumpedRecord, DumpError> {
        let bytes = |b: Option<Bytes>| {
            b.map(|b| b.to_vec())
                .transpose()
                .map_err(|source| DumpError::Base64 { line, source })
        };
        let mut headers = Vec::with_capacity(self.headers.len());
        for h in self.headers {
            headers.push((h.name, bytes(h.value)?));
        }
        Ok(DumpedRecord {
            topic: self.topic,
            partition: self.partition,
            offset: self.offset,
            timestamp: self.timestamp,
            key: bytes(self.key)?,
            value: bytes(self.value)?,
            headers,
        })
    }
}

/// Reads the records of a file one by one; blank lines are skipped.
pub fn read(input: impl BufRead) -> impl Iterator<Item = Result<DumpedRecord, DumpError>> {
    input.lines().enumerate().filter_map(|(i, line)| {
        let line_no = i + 1;
        match line {
            Err(source) => Some(Err(DumpError::Io {
                line: line_no,
                source,
            })),
            Ok(text) if text.trim().is_empty() => None,
            Ok(text) => Some(
                serde_json::from_str::<Record>(&text)
                    .map_err(|source| DumpError::Json {
                        line: line_no,
                        source,
                    })
                    .and_then(|r| r.into_raw(line_no)),
            ),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_bytes_survive_a_write_and_a_read() {
        let raw = DumpedRecord {
            topic: Some("events".into()),
            partition: Some(3),
            offset: Some(17),
            timestamp: Some(1_764_590_400_123),
            key: Some(b"u\xff42".to_vec()),
            value: Some("{\"type\":\"track\",\"e\":\"caf\u{e9}\\n\"}".into()),
            headers: vec![
                ("workspace".into(), Some(b"acme".to_vec())),
                ("bin".into(), Some(vec![0, 159, 146, 150])),
                ("flag".into(), None),
                ("empty".into(), Some(Vec::new())),
            ],
        };
        let tombstone = DumpedRecord {
            key: Some(Vec::new()),
            ..DumpedRecord::default()
        };
        let mut file = Vec::new();
        raw.write_line(&mut file).unwrap();
        file.extend_from_slice(b"\n");
        tombstone.write_line(&mut file).unwrap();
        let back: Vec<DumpedRecord> = read(&file[..]).map(Result::unwrap).collect();
        assert_eq!(back, vec![raw, tombstone]);
        let text = String::from_utf8(file).unwrap();
        assert!(
            text.contains("\"value\":\"acme\""),
            "UTF-8 stays readable: {text}"
        );
        assert!(text.contains("\"base64\":"), "{text}");
    }

    #[test]
    fn a_bad_line_names_its_number() {
        let file = b"{\"key\":\"a\"}\nnot json\n";
        let results: Vec<_> = read(&file[..]).collect();
        assert!(results[0].is_ok());
        let err = results[1].as_ref().unwrap_err().to_string();
        assert!(err.starts_with("line 2 "), "{err}");
    }
}
