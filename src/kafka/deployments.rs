//! The deployments topic (`[kafka] deployments`): the deploy history as a CD system writes it
//! while it rolls out, for logs that don't say which version answered.
//!
//! Each message holds one or more lines of the deploy history file's form
//! ([`crate::config::parse_deployment`]); blank lines and lines starting with `#` are skipped.
//! Every instance reads the whole topic, not as a member of the consumer group: a deployment
//! concerns every node a judge may own. At start-up the topic is read to its end before any
//! record is consumed, so windows read again after a restart see the same history; after that,
//! new messages are read each turn of the main loop and count from the next window judged.
//! Nothing is committed: a restart reads the topic from its start again, and a deployment
//! seen twice counts once.

use std::time::{Duration, Instant};

use detect::signatures::deploy::DeploymentEvent;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers as _, Message as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Messages taken per [`DeploymentsReader::poll`] at most, so that a burst of history does
/// not stall the main loop.
const POLL_MESSAGES: usize = 256;

/// A line of the topic that is not a deployment: what the dead-letter topic gets.
#[derive(Debug, Clone, PartialEq)]
pub struct BadLine {
    /// The message's partition.
    pub partition: i32,
    /// The message's offset.
    pub offset: i64,
    /// The message's key.
    pub key: Option<Vec<u8>>,
    /// The whole message value.
    pub payload: Vec<u8>,
    /// The message's headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// What is wrong, naming the line of the message (`line 2 of the message: …`).
    pub detail: String,
}

/// What some messages of the topic held.
#[derive(Debug, Default)]
pub struct Read {
    /// Deployments, in the topic's order within each partition.
    pub events: Vec<DeploymentEvent>,
    /// Lines that were not.
    pub bad: Vec<BadLine>,
}

impl Read {
    /// The lines of one message's value.
    fn message(&mut self, partition: i32, offset: i64, m: &BorrowedMessage<'_>) {
        let payload = m.payload().unwrap_or_default();
        let mut bad = |detail: String| {
            self.bad.push(BadLine {
                partition,
                offset,
                key: m.key().map(<[u8]>::to_vec),
                payload: payload.to_vec(),
                headers: m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default(),
                detail,
            });
        };
        let mut any = false;
        for (i, line) in super::message_lines(payload).enumerate() {
            let Ok(line) = std::str::from_utf8(line) else {
                any = true;
                bad(format!("line {} of the message is not UTF-8", i + 1));
                continue;
            };
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            any = true;
            match crate::config::parse_deployment(trimmed) {
                Ok(e) => self.events.push(e),
                Err(e) => bad(format!("line {} of the message: {e}", i + 1)),
            }
        }
        if !any {
            bad("the message holds no deployment".into());
        }
    }
}

/// Reads the deployments topic (see the [module docs](self)).
pub struct DeploymentsReader {
    consumer: BaseConsumer,
    topic: String,
}

impl DeploymentsReader {
    /// A reader of every partition of `topic` from its start (`config`: the consumer's
    /// properties; it joins no group and commits nothing).
    ///
    /// # Errors
    /// librdkafka refuses the config, or the topic's partitions can't be learned within
    /// `timeout` (named).
    pub fn new(mut config: ClientConfig, topic: &str, timeout: Duration) -> anyhow::Result<Self> {
        config
            .set("enable.auto.commit", "false")
            .set("statistics.interval.ms", "0");
        let consumer: BaseConsumer = config.create()?;
        let metadata = consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| anyhow::anyhow!("deployments topic {topic}: {e}"))?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        anyhow::ensure!(
            partitions > 0,
            "deployments topic {topic}: no partition (does it exist?)"
        );
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p as i32, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        Ok(DeploymentsReader {
            consumer,
            topic: topic.to_owned(),
        })
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Everything written to the topic before the call: reads until every partition reaches
    /// the end it had then, or `stop` is set (a shutdown: what was read is returned).
    ///
    /// # Errors
    /// The brokers don't answer within `timeout` (for the ends, or for the messages up to
    /// them), named.
    pub fn read_to_end(
        &self,
        timeout: Duration,
        stop: &std::sync::atomic::AtomicBool,
    ) -> anyhow::Result<Read> {
        let deadline = Instant::now() + timeout;
        let assigned = self.consumer.assignment()?;
        let mut ends = Vec::new();
        for e in assigned.elements() {
            let (low, high) = self
                .consumer
                .fetch_watermarks(&self.topic, e.partition(), timeout)
                .map_err(|err| {
                    anyhow::anyhow!("deployments topic {}/{}: {err}", self.topic, e.partition())
                })?;
            if high > low {
                ends.push((e.partition(), high));
            }
        }
        let mut read = Read::default();
        let mut next: std::collections::BTreeMap<i32, i64> = Default::default();
        while ends
            .iter()
            .any(|(p, high)| next.get(p).copied().unwrap_or(0) < *high)
            && !stop.load(std::sync::atomic::Ordering::SeqCst)
        {
            anyhow::ensure!(
                Instant::now() < deadline,
                "deployments topic {}: not read to its end within {timeout:?}",
                self.topic
            );
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    next.insert(m.partition(), m.offset() + 1);
                    read.message(m.partition(), m.offset(), &m);
                }
                Some(Err(e)) => {
                    tracing::warn!(topic = %self.topic, error = %e, "reading deployments")
                }
                None => {
                    // a partition whose last messages were deleted (retention) ends early
                    for (p, _) in &ends {
                        if let Ok(Offset::Offset(o)) = self.position(*p) {
                            let n = next.entry(*p).or_insert(0);
                            *n = (*n).max(o);
                        }
                    }
                }
            }
        }
        Ok(read)
    }

    /// The reader's position in `partition`.
    fn position(&self, partition: i32) -> anyhow::Result<Offset> {
        let tpl = self.consumer.position()?;
        Ok(tpl
            .find_partition(&self.topic, partition)
            .map_or(Offset::Invalid, |e| e.offset()))
    }

    /// The messages that have arrived, without waiting (256 at most, so that a burst of history
    /// does not stall the main loop).
    pub fn poll(&self) -> Read {
        let mut read = Read::default();
        for _ in 0..POLL_MESSAGES {
            match self.consumer.poll(Duration::ZERO) {
                Some(Ok(m)) => read.message(m.partition(), m.offset(), &m),
                Some(Err(e)) => {
                    tracing::debug!(topic = %self.topic, error = %e, "reading deployments");
                    break;
                }
                None => break,
            }
        }
        read
    }
}
