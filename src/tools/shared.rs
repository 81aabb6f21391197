//! Small pieces the load tools share: `KEY=VALUE` options and a topic's partition count.

use std::time::Duration;

use rdkafka::client::Client;
use rdkafka::ClientContext;

/// Parses a `KEY=VALUE` command-line value (librdkafka properties).
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))
}

/// The partitions of `topic` (0 when it does not exist).
pub fn partition_count<C: ClientContext>(client: &Client<C>, topic: &str) -> anyhow::Result<usize> {
    Ok(client
        .fetch_metadata(Some(topic), Duration::from_secs(15))?
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn key_values_parse_and_bad_ones_are_refused() {
        assert_eq!(
            super::parse_key_value("compression.type = lz4").unwrap(),
            ("compression.type".into(), "lz4".into())
        );
        assert!(super::parse_key_value("nokey").is_err());
        assert!(super::parse_key_value("=v").is_err());
    }
}
