//! The consumer's side of rebalances: where each assigned partition starts, and the offsets a
//! revoked partition leaves for its next owner.
//!
//! # Commits
//!
//! graywatch commits, per input partition, the **lowest offset still held in an open window**
//! (or the next offset to read, when no window is open), with metadata naming the partition's
//! watermark at that moment and who committed:
//!
//! ```json
//! {"v":1,"wm":1714521735000000,"by":"9f2c…","seq":42}
//! ```
//!
//! Reading the partition again from that offset with that watermark rebuilds exactly the
//! windows that were open (records of closed windows are late again, as they were), so a
//! partition that moves to another instance takes no half-window with it. A broker that
//! keeps no commit metadata (nisshi 0.8.1, the tests' broker, answers every OffsetFetch with
//! an empty one) leaves the watermark unknown: records that were late for the previous owner
//! are then aggregated again, and stage 2 refuses their windows as duplicates when it has
//! seen that partition's mark (`detect::merge`).
//!
//! # Where an assigned partition starts
//!
//! - this instance's checkpoint holds the partition, and the committed metadata says this
//!   instance committed last (or nothing is committed): restore its state, read from the
//!   checkpoint's position;
//! - else, something is committed: start empty at the committed offset with its watermark;
//! - else: start empty at the beginning.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use serde::{Deserialize, Serialize};

use super::metrics::{Metrics, PartitionLabels};
use super::repartition::PartitionState;

/// The metadata of a graywatch commit (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitMeta {
    /// Format version (1).
    pub v: u32,
    /// The partition's watermark, µs since the epoch.
    pub wm: Option<i64>,
    /// The instance that committed (its checkpoint directory's id).
    pub by: String,
    /// The checkpoint the commit belongs to.
    pub seq: u64,
}

/// Where an assigned partition starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Restore its state from this instance's checkpoint and read from `offset`.
    Restore {
        /// The checkpoint's position: the next offset to read.
        offset: i64,
    },
    /// Start empty at the committed `offset`, with the committed watermark.
    Resume {
        /// The committed offset.
        offset: i64,
        /// The watermark committed with it.
        watermark: Option<i64>,
    },
    /// Start empty at the beginning (nothing committed).
    Beginning,
    /// Start empty at the group's committed offset, its watermark unknown (the brokers did not
    /// say what was committed).
    Committed,
}

/// A rebalance, as the main loop learns it after `poll` returns.
#[derive(Debug, Clone)]
pub enum Event {
    /// Partitions assigned, each with where it starts.
    Assigned(Vec<(String, i32, Start)>),
    /// Partitions revoked (their offsets were committed first).
    Revoked(Vec<(String, i32)>),
}

/// What the rebalance callback shares with the main loop.
#[derive(Debug, Default)]
pub struct Shared {
    /// Rebalances not yet handled by the main loop.
    pub events: Vec<Event>,
    /// Per partition, what the last saved checkpoint lets be committed: (offset, metadata).
    pub commits: HashMap<(String, i32), (i64, String)>,
    /// Partitions this instance's checkpoint holds, with their positions.
    pub checkpointed: HashMap<(String, i32), i64>,
    /// Stage-2 states read from the state topic for repartition partitions just assigned.
    pub stage2: HashMap<i32, PartitionState>,
    /// Shutting down: revocations commit nothing more.
    pub closing: bool,
    /// Assigned partitions that librdkafka's last statistics show fetched to their end (see
    /// [`fetched_to_end`]).
    pub fetched: HashMap<(String, i32), FetchedTo>,
}

/// A partition fetched to its end, per librdkafka's statistics (offsets; see
/// [`fetched_to_end`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchedTo {
    /// The end of what it may read: the last stable offset with `isolation.level`
    /// `read_committed` (librdkafka's default), else the high watermark.
    pub end: i64,
    /// How far the application has been given its messages (`app_offset`: the last one's
    /// offset + 1, past transaction markers), or how far its group had committed when nothing
    /// was given yet, or its low watermark when neither is known.
    pub read: i64,
}

impl FetchedTo {
    /// Whether the main loop, at `next` (the next offset it reads; negative before its first
    /// message), has read everything up to the end.
    pub fn caught_up(&self, next: i64) -> bool {
        next.max(self.read) >= self.end
    }
}

/// Where a partition's statistics show it fetched to: `Some` when it is fetching
/// (`fetch_state` `active`), its next fetch offset is at or past the end of what it may read,
/// and a fetch response of this assignment said so (`eof_offset` is that end: librdkafka
/// resets it whenever fetching starts, while the other offsets outlive a re-assignment).
/// Fields per librdkafka's STATISTICS.md.
///
/// A partition is caught up when, besides, the application has read to that end
/// ([`FetchedTo::caught_up`]). Not caught up, a partition is being read or waits for its first
/// fetch: its silence says nothing about its producers, so it must not stop holding the
/// watermark back (as Kafka Streams' task idling waits for a partition's known lag to be 0,
/// KIP-695).
pub fn fetched_to_end(
    p: &rdkafka::statistics::Partition,
    read_committed: bool,
) -> Option<FetchedTo> {
    let end = if read_committed {
        p.ls_offset
    } else {
        p.hi_offset
    };
    let fetched =
        p.fetch_state == "active" && end >= 0 && p.next_offset >= end && p.eof_offset == end;
    let read = if p.app_offset >= 0 {
        p.app_offset
    } else if p.committed_offset >= 0 {
        p.committed_offset
    } else {
        p.lo_offset
    };
    fetched.then_some(FetchedTo { end, read })
}

/// Reads the latest stage-2 state of a repartition partition from the state topic (its
/// partition of the same number; see `super::repartition`).
pub struct StateReader {
    consumer: BaseConsumer,
    topic: String,
    /// The repartition topic whose partitions' states it reads.
    pub repartition: String,
}

impl StateReader {
    /// A reader of `topic` (no group: it assigns partitions itself).
    ///
    /// # Errors
    /// librdkafka refuses the config.
    pub fn new(
        mut config: rdkafka::ClientConfig,
        topic: &str,
        repartition: &str,
    ) -> Result<Self, KafkaError> {
        // polled only on assignments: statistics would pile up in its queue
        config
            .set("enable.auto.commit", "false")
            .set("statistics.interval.ms", "0");
        Ok(StateReader {
            consumer: config.create()?,
            topic: topic.to_owned(),
            repartition: repartition.to_owned(),
        })
    }

    /// The last state published for repartition partition `partition`, if any.
    ///
    /// # Errors
    /// The brokers don't answer, or the last message does not decode (named).
    pub fn latest(&self, partition: i32) -> Result<Option<PartitionState>, String> {
        let timeout = Duration::from_secs(10);
        let (low, high) = self
            .consumer
            .fetch_watermarks(&self.topic, partition, timeout)
            .map_err(|e| format!("watermarks of {}/{partition}: {e}", self.topic))?;
        if high <= low {
            return Ok(None);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition, Offset::Offset(high - 1))
            .map_err(|e| e.to_string())?;
        self.consumer.assign(&tpl).map_err(|e| e.to_string())?;
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    use rdkafka::Message as _;
                    let state = super::repartition::decode::<PartitionState>(
                        m.payload().unwrap_or_default(),
                    )
                    .map_err(|e| format!("{}/{partition} offset {}: {e}", self.topic, m.offset()));
                    let _ = self.consumer.unassign();
                    return state.map(Some);
                }
                Some(Err(e)) => tracing::warn!(error = %e, "reading the state topic"),
                None => {}
            }
        }
        let _ = self.consumer.unassign();
        Err(format!(
            "{}/{partition}: no message at offset {} within {timeout:?}",
            self.topic,
            high - 1
        ))
    }
}

/// The consumer's context: handles rebalances, reads librdkafka's statistics into metrics.
pub struct ConsumerCx {
    /// Shared with the main loop.
    pub shared: Arc<Mutex<Shared>>,
    /// This instance's id (commit metadata `by`).
    pub instance: String,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Repeated errors are logged now and then.
    pub quiet: Quiet,
    /// With `[scale-out]`: where stage-2 states are.
    pub state: Option<StateReader>,
    /// The consumer reads committed records only (`isolation.level`, librdkafka's default
    /// `read_committed`): a partition ends at its last stable offset.
    pub read_committed: bool,
    /// Its `group.instance.id` (static membership), if any.
    pub static_id: Option<String>,
}

impl ClientContext for ConsumerCx {
    fn stats(&self, stats: Statistics) {
        let up = stats
            .brokers
            .values()
            .any(|b| b.state == "UP" && b.nodeid >= 0);
        self.metrics.broker_up.set(i64::from(up));
        let mut fetched = HashMap::new();
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                if *p < 0 || !part.desired {
                    continue;
                }
                if let Some(at) = fetched_to_end(part, self.read_committed) {
                    fetched.insert((topic.clone(), *p), at);
                }
                self.metrics
                    .consumer_lag
                    .get_or_create(&PartitionLabels {
                        topic: topic.clone(),
                        partition: p.to_string(),
                    })
                    .set(part.consumer_lag.max(0));
            }
        }
        self.shared.lock().expect("rebalance state lock").fetched = fetched;
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error.rdkafka_error_code(),
            Some(rdkafka::error::RDKafkaErrorCode::AllBrokersDown)
        ) {
            self.metrics.broker_up.set(0);
        }
        if self.quiet.allow(&error.to_string()) {
            tracing::warn!(%error, reason, "kafka consumer (repeats of this error are logged every 30 s)");
        }
    }
}

/// Lets one log line through per key every [`Quiet::EVERY`]: a broker outage makes librdkafka
/// report the same error many times a second.
#[derive(Debug, Default)]
pub struct Quiet {
    last: Mutex<HashMap<String, std::time::Instant>>,
}

impl Quiet {
    /// How often a repeated error is logged.
    pub const EVERY: Duration = Duration::from_secs(30);

    /// Whether to log `key` now.
    pub fn allow(&self, key: &str) -> bool {
        let mut last = self.last.lock().expect("log limiter lock");
        let now = std::time::Instant::now();
        match last.get(key) {
            Some(t) if now.duration_since(*t) < Self::EVERY => false,
            _ => {
                last.insert(key.to_owned(), now);
                true
            }
        }
    }
}

impl ConsumerContext for ConsumerCx {
    /// The outcome of an asynchronous offset commit (the main loop commits after each
    /// checkpoint without waiting): a failure is logged and counted; the next checkpoint
    /// commits again.
    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        _offsets: &TopicPartitionList,
    ) {
        if let Err(e) = result {
            if self.quiet.allow(&e.to_string()) {
                tracing::warn!(error = %e, "offsets not committed (the checkpoint is saved; retried next time)");
            }
            self.metrics.checkpoint_failures.inc();
        }
    }

    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.revoke(consumer, tpl),
            other => {
                tracing::error!(error = ?other, "rebalance failed");
                if let Err(e) = consumer.unassign() {
                    tracing::error!(error = %e, "unassign after a failed rebalance");
                }
            }
        }
    }

    fn pre_rebalance(&self, _: &BaseConsumer<Self>, _: &Rebalance<'_>) {}
}

impl ConsumerCx {
    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let committed = committed_with_retries(consumer, tpl);
        let checkpointed = self
            .shared
            .lock()
            .expect("rebalance state lock")
            .checkpointed
            .clone();
        let mut starts = Vec::new();
        for elem in tpl.elements() {
            let key = (elem.topic().to_owned(), elem.partition());
            if let Some(reader) = self.state.as_ref().filter(|r| r.repartition == key.0) {
                let start = match reader.latest(key.1) {
                    Ok(Some(state)) => {
                        let offset = state.position;
                        self.shared
                            .lock()
                            .expect("rebalance state lock")
                            .stage2
                            .insert(key.1, state);
                        Start::Restore { offset }
                    }
                    Ok(None) => Start::Beginning,
                    Err(e) => {
                        tracing::error!(error = %e, "stage-2 state unreadable: reading the partition from its beginning");
                        Start::Beginning
                    }
                };
                starts.push((key.0, key.1, start));
                continue;
            }
            let (offset, meta) = match committed
                .as_ref()
                .and_then(|c| c.find_partition(elem.topic(), elem.partition()))
            {
                Some(c) => (
                    match c.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    },
                    serde_json::from_str::<CommitMeta>(c.metadata()).ok(),
                ),
                None => (None, None),
            };
            let ours = meta.as_ref().is_none_or(|m| m.by == self.instance);
            let start = match (checkpointed.get(&key), offset) {
                (Some(&position), None) => Start::Restore { offset: position },
                (Some(&position), Some(_)) if ours => Start::Restore { offset: position },
                (_, Some(o)) => Start::Resume {
                    offset: o,
                    watermark: meta.and_then(|m| m.wm),
                },
                (None, None) => Start::Beginning,
            };
            let start = match (committed.is_none(), start) {
                (true, Start::Beginning) => Start::Committed,
                (_, s) => s,
            };
            starts.push((key.0, key.1, start));
        }
        {
            // what the statistics said before this assignment is not about its positions
            let mut shared = self.shared.lock().expect("rebalance state lock");
            for (topic, partition, _) in &starts {
                shared.fetched.remove(&(topic.clone(), *partition));
            }
        }
        let mut assignment = TopicPartitionList::new();
        for (topic, partition, start) in &starts {
            let offset = match start {
                Start::Restore { offset } | Start::Resume { offset, .. } => Offset::Offset(*offset),
                Start::Beginning => Offset::Beginning,
                Start::Committed => Offset::Invalid,
            };
            if let Err(e) = assignment.add_partition_offset(topic, *partition, offset) {
                tracing::error!(%topic, partition, error = %e, "bad start offset");
            }
        }
        if let Err(e) = consumer.assign(&assignment) {
            tracing::error!(error = %e, "assign");
        }
        tracing::info!(partitions = ?starts, "assigned");
        self.shared
            .lock()
            .expect("rebalance state lock")
            .events
            .push(Event::Assigned(starts));
    }

    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let revoked: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let mut commit = TopicPartitionList::new();
        {
            let shared = self.shared.lock().expect("rebalance state lock");
            if shared.closing {
                // the last checkpoint committed already (or could not: no broker answers)
                drop(shared);
                if let Err(e) = consumer.unassign() {
                    tracing::error!(error = %e, "unassign");
                }
                return;
            }
            for key in &revoked {
                if let Some((offset, meta)) = shared.commits.get(key)
                    && let Ok(()) =
                        commit.add_partition_offset(&key.0, key.1, Offset::Offset(*offset))
                    && let Some(mut e) = commit.find_partition(&key.0, key.1)
                {
                    e.set_metadata(meta);
                }
            }
        }
        if commit.count() > 0
            && let Err(e) = consumer.commit(&commit, CommitMode::Sync)
        {
            tracing::warn!(error = %e, "commit of revoked partitions failed: their next owner starts from the previous commit");
        }
        if let Err(e) = consumer.unassign() {
            tracing::error!(error = %e, "unassign");
        }
        tracing::info!(partitions = ?revoked, "revoked");
        self.shared
            .lock()
            .expect("rebalance state lock")
            .events
            .push(Event::Revoked(revoked));
    }
}

/// The committed offsets of `tpl`, asking a few times while the brokers don't answer.
fn committed_with_retries(
    consumer: &BaseConsumer<ConsumerCx>,
    tpl: &TopicPartitionList,
) -> Option<TopicPartitionList> {
    for attempt in 1..=6 {
        match consumer.committed_offsets(tpl.clone(), Duration::from_secs(5)) {
            Ok(c) => return Some(c),
            Err(e) => tracing::warn!(error = %e, attempt, "reading committed offsets"),
        }
    }
    tracing::error!(
        "committed offsets unknown: partitions start from the group's offsets without their watermarks"
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A partition's statistics: fetching `state`, next fetch offset `next`, high watermark
    /// `hi`, last stable offset `ls`, end-of-partition offset `eof`, application offset `app`,
    /// no commit, low watermark 0.
    fn stats(
        state: &str,
        next: i64,
        hi: i64,
        ls: i64,
        eof: i64,
        app: i64,
    ) -> rdkafka::statistics::Partition {
        rdkafka::statistics::Partition {
            fetch_state: state.into(),
            next_offset: next,
            hi_offset: hi,
            ls_offset: ls,
            eof_offset: eof,
            app_offset: app,
            committed_offset: -1001,
            ..Default::default()
        }
    }

    #[test]
    fn a_partition_is_fetched_to_its_end_only_when_a_fetch_of_this_assignment_said_so() {
        let at = |end, read| Some(FetchedTo { end, read });
        assert_eq!(
            fetched_to_end(&stats("active", 120, 120, 120, 120, 120), true),
            at(120, 120)
        );
        // 20 records not fetched yet: behind
        assert_eq!(
            fetched_to_end(&stats("active", 100, 120, 120, -1001, 100), true),
            None
        );
        // assigned again at 100: the offsets of the last assignment, no fetch response yet
        assert_eq!(
            fetched_to_end(&stats("active", 100, 100, 100, -1001, -1001), true),
            None
        );
        // just assigned: the offset is being looked up, the end is unknown
        assert_eq!(
            fetched_to_end(
                &stats("offset-query", -1001, -1001, -1001, -1001, -1001),
                true
            ),
            None
        );
        // an open transaction: read_committed ends at the last stable offset…
        assert_eq!(
            fetched_to_end(&stats("active", 110, 120, 110, 110, 110), true),
            at(110, 110)
        );
        // …read_uncommitted at the high watermark
        assert_eq!(
            fetched_to_end(&stats("active", 110, 120, 110, 110, 110), false),
            None
        );
    }

    #[test]
    fn caught_up_counts_what_the_application_was_given() {
        let f = FetchedTo {
            end: 120,
            read: 119,
        };
        // the loop read to 119; the last offset, a transaction marker, was passed by librdkafka
        assert!(
            FetchedTo {
                end: 120,
                read: 120
            }
            .caught_up(119)
        );
        assert!(!f.caught_up(119));
        assert!(f.caught_up(120));
        // nothing read yet, librdkafka has given nothing either: the low watermark
        assert!(!FetchedTo { end: 120, read: 0 }.caught_up(-1));
        assert!(FetchedTo { end: 0, read: 0 }.caught_up(-1));
    }
}
