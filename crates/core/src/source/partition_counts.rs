//! How many partitions the source topics have, as the brokers last said: the
//! denominator of this pod's share of the limit ([`crate::limit::Share`]).

use std::collections::HashMap;

use super::TopicPartition;

/// The source topics' partition counts the brokers confirmed.
#[derive(Debug, Default)]
pub(super) struct PartitionCounts {
    known: HashMap<String, usize>,
}

impl PartitionCounts {
    /// The brokers said `topic` has `partitions` (0: they do not know it yet).
    pub(super) fn learn(&mut self, topic: &str, partitions: usize) {
        if partitions > 0 {
            self.known.insert(topic.to_string(), partitions);
        }
    }

    /// Partitions of all `topics`, or `None` while a topic's count is unknown, or lower
    /// than an assigned partition shows (the topic grew since). Never a guess from the
    /// assignment: holding 4 of 8 partitions with "highest + 1" = 4 would take the whole
    /// limit while the peers take half of it.
    pub(super) fn total<'a>(
        &self,
        topics: &[String],
        assigned: impl IntoIterator<Item = &'a TopicPartition>,
    ) -> Option<usize> {
        let stale = assigned.into_iter().any(|tp| {
            self.known
                .get(&*tp.topic)
                .is_some_and(|n| tp.partition.max(0) as usize >= *n)
        });
        if stale {
            return None;
        }
        topics.iter().map(|t| self.known.get(t).copied()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tps(topic: &str, partitions: &[i32]) -> Vec<TopicPartition> {
        partitions
            .iter()
            .map(|p| TopicPartition::new(topic, *p))
            .collect()
    }

    #[test]
    fn an_unconfirmed_partition_count_is_unknown_not_guessed_from_the_assignment() {
        let topics = vec!["events".to_string()];
        let mut counts = PartitionCounts::default();
        // Metadata failed at the first assignment: 4 of 8 partitions held, 0..=3.
        assert_eq!(counts.total(&topics, &tps("events", &[0, 1, 2, 3])), None);
        counts.learn("events", 8);
        assert_eq!(
            counts.total(&topics, &tps("events", &[0, 1, 2, 3])),
            Some(8)
        );
        // The topic grew to 16 and this pod was given partition 12 before the brokers
        // said so: unknown again, not 13.
        assert_eq!(counts.total(&topics, &tps("events", &[0, 12])), None);
        counts.learn("events", 16);
        assert_eq!(counts.total(&topics, &tps("events", &[0, 12])), Some(16));
    }

    #[test]
    fn every_source_topic_counts_and_one_unknown_makes_the_total_unknown() {
        let topics = vec!["a".to_string(), "b".to_string()];
        let mut counts = PartitionCounts::default();
        counts.learn("a", 4);
        counts.learn("b", 0);
        assert_eq!(counts.total(&topics, &tps("a", &[0])), None);
        counts.learn("b", 2);
        assert_eq!(counts.total(&topics, &tps("a", &[0])), Some(6));
    }
}
