//! Where a replay reads: a topic range ([`TopicReader`]) or a record file, with the
//! time selection applied to file records (the reader applies it to topic ones).

use std::fs::File;
use std::io::BufReader;

use rdkafka::ClientConfig;

use super::range::{Selection, TopicReader};
use super::ReplayArgs;
use crate::dump::{self, DumpedRecord};

pub(super) enum Source {
    Topic(Box<TopicReader>),
    File(
        Box<dyn Iterator<Item = Result<DumpedRecord, dump::DumpError>>>,
        Selection,
    ),
}

/// The source the arguments name, its display name, and the highest partition its
/// records name where that matters (kept partitions into a topic).
pub(super) struct Opened {
    pub source: Source,
    pub name: String,
    pub highest_partition: Option<i32>,
}

impl Source {
    /// Opens `--source-topic` (through `client`) or `--from-file`.
    pub(super) fn open(
        args: &ReplayArgs,
        selection: &Selection,
        client: impl Fn() -> anyhow::Result<ClientConfig>,
    ) -> anyhow::Result<Opened> {
        match (&args.source_topic, &args.from_file) {
            (Some(topic), _) => {
                let reader = TopicReader::open(&client()?, topic, selection)?;
                let highest_partition = reader.spans().iter().map(|s| s.partition).max();
                Ok(Opened {
                    source: Source::Topic(Box::new(reader)),
                    name: topic.clone(),
                    highest_partition,
                })
            }
            (None, Some(path)) => {
                let file = File::open(path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                let highest_partition = if args.repartition || args.to_topic.is_none() {
                    None
                } else {
                    dump::read(BufReader::new(File::open(path)?))
                        .filter_map(Result::ok)
                        .filter_map(|r| r.partition)
                        .max()
                };
                Ok(Opened {
                    source: Source::File(
                        Box::new(dump::read(BufReader::new(file))),
                        selection.clone(),
                    ),
                    name: path.display().to_string(),
                    highest_partition,
                })
            }
            (None, None) => anyhow::bail!("give --source-topic or --from-file"),
        }
    }

    /// Records in the source, if it knows (a topic range does).
    pub(super) fn total(&self) -> Option<u64> {
        match self {
            Source::Topic(r) => Some(r.total()),
            Source::File(..) => None,
        }
    }

    /// Records read but outside the time selection.
    pub(super) fn skipped(&self) -> u64 {
        match self {
            Source::Topic(r) => r.skipped,
            Source::File(..) => 0,
        }
    }

    pub(super) fn next(&mut self) -> anyhow::Result<Option<DumpedRecord>> {
        match self {
            Source::Topic(reader) => reader.next_record(),
            Source::File(lines, selection) => loop {
                let Some(raw) = lines.next().transpose()? else {
                    return Ok(None);
                };
                let inside = raw.timestamp.is_none_or(|t| {
                    selection.from.is_none_or(|f| t >= f.0)
                        && selection.to.is_none_or(|to| t < to.0)
                });
                if inside {
                    return Ok(Some(raw));
                }
            },
        }
    }
}
