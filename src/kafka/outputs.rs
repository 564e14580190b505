//! [`Outputs`] as Kafka topics: each document as JSON (the same as `replay`'s lines), keyed so
//! that one consumer sees what concerns one subject in order.
//!
//! | document | topic | key |
//! |---|---|---|
//! | finding | `findings` | its subject: `node/<node>` |
//! | remediation command | `commands` | its id (the messages of one command stay in revision order) |
//! | audit record | `audit` (optional; else logged) | its command's id |
//! | alert | `alerts` | its dedup key |
//! | pair window, node window | `windows` | `<source>/<destination>`, `<node>` |
//! | dead letter | `dead-letters` | the original key; value: the original bytes (or the flow record's JSON) |
//!
//! A dead letter's headers are the original message's own, followed by graywatch's (so that a
//! reader taking a header's last value gets graywatch's, whatever the input carried):
//! `graywatch-reason`, `graywatch-detail`, `graywatch-source-topic`,
//! `graywatch-source-partition`, `graywatch-source-offset`, and `graywatch-truncated` (the
//! original size, bytes) when the value had to be cut to fit.
//!
//! No message larger than `[kafka.outputs] max-message-bytes` (value, key and headers; default
//! 1 000 000, under Kafka's and nisshi's default limits) is produced: a dead letter's value is
//! cut to fit, and a document that does not fit (a window of a pair with a megabyte-long
//! name) becomes a dead letter (`output-too-large`) holding its start. A message the broker
//! refuses would otherwise stop the run at the same input after every restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use schemas::{Alert, Finding, NodeWindow, PairWindow, RemediationCommand, Window};
use serde::Serialize;

use super::metrics::Metrics;
use crate::pipeline::{DeadLetter, Outputs, Payload, WindowTables};

/// Header names of dead letters.
pub mod headers {
    /// Why it was not used (`bad-json`, `malformed`, `too-large`, `late`, …).
    pub const REASON: &str = "graywatch-reason";
    /// What exactly was wrong.
    pub const DETAIL: &str = "graywatch-detail";
    /// The topic it came from.
    pub const SOURCE_TOPIC: &str = "graywatch-source-topic";
    /// The partition it came from.
    pub const SOURCE_PARTITION: &str = "graywatch-source-partition";
    /// Its offset there.
    pub const SOURCE_OFFSET: &str = "graywatch-source-offset";
    /// The value's original size, bytes, when it was cut to fit.
    pub const TRUNCATED: &str = "graywatch-truncated";
    /// For an `output-too-large` dead letter: the topic the document was for.
    pub const OUTPUT_TOPIC: &str = "graywatch-output-topic";
}

/// Why a document could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum KafkaOutputError {
    /// The producer refused or could not deliver in time (external; retrying may help).
    #[error("producing to {topic}: {source}")]
    Produce {
        /// The topic.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// Messages sent earlier could not be delivered: they are lost, so nothing may be
    /// committed (fatal for this process; a restart reads again from the last commit).
    #[error("{0} message(s) could not be delivered (see the log): stopping before committing")]
    Undelivered(u64),
    /// `[archive]`: a file could not be written (a full disk): fatal, the run stops before
    /// committing, and a restart closes the windows again.
    #[error(transparent)]
    Archive(#[from] crate::archive::ArchiveError),
}

/// The producer's context: counts delivery failures.
#[derive(Debug)]
pub struct ProducerCx {
    metrics: Arc<Metrics>,
    failed: Arc<AtomicU64>,
    quiet: super::consumer::Quiet,
}

impl ClientContext for ProducerCx {
    /// The consumer reports broker state; the producer's statistics (when
    /// `statistics.interval.ms` is set for every client) are not logged.
    fn stats(&self, _: rdkafka::statistics::Statistics) {}

    /// Also marks the broker down on `AllBrokersDown`: the producer's thread polls on its own,
    /// so this is seen while the main loop waits (a checkpoint's flush during an outage),
    /// when the consumer, polled by that loop, can't say it.
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error.rdkafka_error_code(),
            Some(rdkafka::error::RDKafkaErrorCode::AllBrokersDown)
        ) {
            self.metrics.broker_up.set(0);
        }
        if self.quiet.allow(&error.to_string()) {
            tracing::warn!(%error, reason, "kafka producer (repeats of this error are logged every 30 s)");
        }
    }
}

impl ProducerContext for ProducerCx {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            use rdkafka::Message as _;
            self.failed.fetch_add(1, Ordering::Relaxed);
            self.metrics.produce_errors.inc();
            tracing::error!(error = %e, topic = m.topic(), "message not delivered");
        }
    }
}

/// Headers as librdkafka takes them.
fn owned(headers: &[(&str, &[u8])]) -> OwnedHeaders {
    headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
        h.insert(Header {
            key: k,
            value: Some(*v),
        })
    })
}

/// The output topics.
#[derive(Debug, Clone)]
pub struct OutputTopics {
    /// Findings.
    pub findings: String,
    /// Remediation commands.
    pub commands: String,
    /// Alerts.
    pub alerts: String,
    /// Audit records, when written to a topic (else logged at info).
    pub audit: Option<String>,
    /// Dead letters.
    pub dead_letters: String,
    /// Window aggregates, when written.
    pub windows: Option<String>,
}

/// [`Outputs`] on Kafka (see the [module docs](self)).
pub struct KafkaOutputs {
    producer: ThreadedProducer<ProducerCx>,
    topics: OutputTopics,
    metrics: Arc<Metrics>,
    failed: Arc<AtomicU64>,
    /// Delivery failures already reported.
    reported: u64,
    flush_timeout: Duration,
    buf: Vec<u8>,
    /// Largest message produced (value + key + headers), bytes.
    max_bytes: usize,
    /// Alert sinks (`[[alerting.sinks]]`), when configured.
    alerting: Option<crate::alerting::Dispatcher>,
    /// The sinks' counters as last exported.
    exported: std::collections::BTreeMap<String, crate::alerting::SinkCounters>,
    /// `[archive]`: closed windows as Parquet, completed at each checkpoint.
    archive: Option<crate::archive::Archive>,
}

/// Bytes a header costs in a message, roughly (name, value, framing).
fn header_bytes(headers: &[(&str, &[u8])]) -> usize {
    headers.iter().map(|(k, v)| k.len() + v.len() + 8).sum()
}

impl KafkaOutputs {
    /// Outputs through a producer made from `config` (idempotent; see `super::client`).
    ///
    /// # Errors
    /// librdkafka refuses the config.
    pub fn new(
        config: &rdkafka::ClientConfig,
        topics: OutputTopics,
        metrics: Arc<Metrics>,
        flush_timeout: Duration,
        max_bytes: usize,
    ) -> Result<Self, KafkaError> {
        let failed = Arc::new(AtomicU64::new(0));
        let producer = config.create_with_context(ProducerCx {
            metrics: Arc::clone(&metrics),
            failed: Arc::clone(&failed),
            quiet: Default::default(),
        })?;
        Ok(KafkaOutputs {
            producer,
            topics,
            metrics,
            failed,
            reported: 0,
            flush_timeout,
            buf: Vec::with_capacity(1024),
            max_bytes,
            alerting: None,
            exported: std::collections::BTreeMap::new(),
            archive: None,
        })
    }

    /// Closed windows, findings and what was done also go to `archive` ([`crate::archive`]).
    pub fn with_archive(mut self, archive: Option<crate::archive::Archive>) -> Self {
        self.archive = archive;
        self
    }

    /// Completes the archive's files: every window closed so far becomes readable. Called
    /// before a checkpoint is saved, so that the archive holds what the checkpoint has
    /// closed (a crash after this and before the save closes those windows again, and the
    /// archive skips them).
    ///
    /// # Errors
    /// A file that can't be written or renamed.
    pub fn commit_archive(&mut self) -> Result<(), crate::archive::ArchiveError> {
        match &mut self.archive {
            Some(a) => a.commit(),
            None => Ok(()),
        }
    }

    /// Completes the archive's files at shutdown, with what came after the last window.
    ///
    /// # Errors
    /// As [`KafkaOutputs::commit_archive`].
    pub fn close_archive(&mut self) -> Result<(), crate::archive::ArchiveError> {
        match &mut self.archive {
            Some(a) => {
                a.close()?;
                tracing::info!(
                    files = a.files,
                    rows = a.rows,
                    skipped_windows = a.skipped,
                    "archive closed"
                );
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Alerts go to `alerting`'s sinks too.
    pub fn with_alerting(mut self, alerting: Option<crate::alerting::Dispatcher>) -> Self {
        self.alerting = alerting;
        self
    }

    /// Tells the alert sinks which alerts still fire after a restore
    /// ([`crate::alerting::Dispatcher::resume`]).
    pub fn resume_alerting(&self, firing: &[schemas::Alert]) {
        if let Some(d) = &self.alerting {
            d.resume(firing);
        }
    }

    /// Tells the alert sinks that `firing` alerts are another instance's now
    /// ([`crate::alerting::Dispatcher::hand_over`]).
    pub fn hand_over_alerting(&self, firing: &[schemas::Alert]) {
        if let Some(d) = &self.alerting {
            d.hand_over(firing);
        }
    }

    /// Waits for the alert sinks to deliver what they hold, until `deadline` at most.
    pub fn close_alerting(&mut self, deadline: std::time::Instant) {
        if let Some(d) = self.alerting.take() {
            for (sink, c) in d.close(deadline) {
                tracing::info!(
                    sink = %sink,
                    delivered = c.delivered,
                    retried = c.retries,
                    failed = c.failed,
                    dropped = c.dropped,
                    "alert sink closed"
                );
            }
        }
    }

    /// Exports the alert sinks' counters to `/metrics` (what changed since the last call).
    pub fn export_alerting(&mut self) {
        let Some(d) = &self.alerting else { return };
        for (sink, now) in d.counters() {
            let before = self.exported.get(&sink).copied().unwrap_or_default();
            for (outcome, n, b) in [
                ("delivered", now.delivered, before.delivered),
                ("retried", now.retries, before.retries),
                ("failed", now.failed, before.failed),
                ("dropped", now.dropped, before.dropped),
            ] {
                self.metrics
                    .alert_deliveries
                    .get_or_create(&super::metrics::SinkLabels {
                        sink: sink.clone(),
                        outcome: outcome.to_owned(),
                    })
                    .inc_by(n.saturating_sub(b));
            }
            self.exported.insert(sink, now);
        }
    }

    /// The producer, for other topics of the same process (repartition, state).
    pub fn producer(&self) -> &ThreadedProducer<ProducerCx> {
        &self.producer
    }

    /// Produces `payload` to `topic` with `key` (and `partition`, when given), waiting while
    /// the producer's queue is full: when outputs can't keep up, consumption slows down.
    ///
    /// # Errors
    /// [`KafkaOutputError::Produce`] for anything but a full queue.
    pub fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        partition: Option<i32>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<(), KafkaOutputError> {
        let mut headers = headers;
        loop {
            let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(payload);
            if let Some(k) = key {
                record = record.key(k);
            }
            if let Some(p) = partition {
                record = record.partition(p);
            }
            if let Some(h) = headers.take() {
                record = record.headers(h);
            }
            match self.producer.send(record) {
                Ok(()) => {
                    Metrics::by_topic(&self.metrics.messages_out, topic, 1);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    headers = r.headers;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((source, _)) => {
                    return Err(KafkaOutputError::Produce {
                        topic: topic.to_owned(),
                        source,
                    });
                }
            }
        }
    }

    /// Produces `doc` as JSON with `key` to the topic `topic` picks (nothing when it picks
    /// none); a document too large for a message goes to the dead letters instead.
    fn json<T: Serialize>(
        &mut self,
        topic: fn(&OutputTopics) -> Option<&str>,
        key: &str,
        doc: &T,
    ) -> Result<(), KafkaOutputError> {
        let Some(topic) = topic(&self.topics) else {
            return Ok(());
        };
        let mut payload = std::mem::take(&mut self.buf);
        payload.clear();
        serde_json::to_writer(&mut payload, doc).expect("documents serialize to JSON");
        let sent = if payload.len() + key.len() + 64 > self.max_bytes {
            tracing::error!(%topic, bytes = payload.len(), "document too large for a message: sent to the dead letters");
            self.too_large(topic, key, &payload)
        } else {
            self.send(topic, Some(key.as_bytes()), None, &payload, None)
        };
        self.buf = payload;
        sent
    }

    /// A document that does not fit in a message, as a dead letter holding its start.
    fn too_large(&self, topic: &str, key: &str, payload: &[u8]) -> Result<(), KafkaOutputError> {
        self.metrics
            .dead_letters
            .get_or_create(&super::metrics::ReasonLabel {
                reason: "output-too-large".into(),
            })
            .inc();
        let size = payload.len().to_string();
        let detail = format!("a {} byte document for {topic}", payload.len());
        let ours: [(&str, &[u8]); 4] = [
            (headers::REASON, b"output-too-large"),
            (headers::DETAIL, detail.as_bytes()),
            (headers::OUTPUT_TOPIC, topic.as_bytes()),
            (headers::TRUNCATED, size.as_bytes()),
        ];
        let key = &key.as_bytes()[..key.len().min(1024)];
        let room = self
            .max_bytes
            .saturating_sub(header_bytes(&ours) + key.len() + 64);
        let cut = &payload[..payload.len().min(room)];
        let dead_letters = &self.topics.dead_letters;
        self.send(dead_letters, Some(key), None, cut, Some(owned(&ours)))
    }

    /// Fails if a message sent earlier was not delivered.
    fn check_delivered(&mut self) -> Result<(), KafkaOutputError> {
        let failed = self.failed.load(Ordering::Relaxed);
        if failed > self.reported {
            self.reported = failed;
            return Err(KafkaOutputError::Undelivered(failed));
        }
        Ok(())
    }
}

impl Outputs for KafkaOutputs {
    type Error = KafkaOutputError;

    fn pair_window(&mut self, w: &PairWindow) -> Result<(), KafkaOutputError> {
        if self.topics.windows.is_none() {
            return Ok(()); // before formatting a key for nothing
        }
        let key = format!("{}/{}", w.source, w.destination);
        self.json(|t| t.windows.as_deref(), &key, w)
    }

    fn node_window(&mut self, w: &NodeWindow) -> Result<(), KafkaOutputError> {
        self.json(|t| t.windows.as_deref(), &w.node, w)
    }

    fn wants_tables(&self) -> bool {
        true // the golden-signal metrics
    }

    fn window_tables(&mut self, t: &WindowTables) -> Result<(), KafkaOutputError> {
        self.metrics.golden.tables(t);
        if let Some(a) = &mut self.archive {
            a.tables(t)?;
        }
        Ok(())
    }

    fn window_closed(&mut self, _window: Window) -> Result<(), KafkaOutputError> {
        self.metrics.golden.publish();
        if let Some(a) = &mut self.archive {
            a.window_closed()?;
        }
        Ok(())
    }

    fn finding(&mut self, f: &Finding) -> Result<(), KafkaOutputError> {
        self.metrics.golden.finding(f);
        if let Some(a) = &mut self.archive {
            a.finding(f);
        }
        self.json(|t| Some(&t.findings), &f.subject.key(), f)
    }

    fn command(&mut self, c: &RemediationCommand) -> Result<(), KafkaOutputError> {
        self.metrics.golden.command(c);
        if let Some(a) = &mut self.archive {
            a.command(c);
        }
        self.json(|t| Some(&t.commands), &c.id, c)
    }

    fn audit(&mut self, a: &schemas::AuditRecord) -> Result<(), KafkaOutputError> {
        self.metrics.golden.audit(a);
        if let Some(archive) = &mut self.archive {
            archive.audit(a);
        }
        if self.topics.audit.is_none() {
            tracing::info!(
                target: "graywatch::audit",
                decision = a.decision.as_str(),
                command = %a.command,
                revision = a.revision,
                rail = a.rail.as_deref().unwrap_or(""),
                "{}",
                a.detail
            );
            return Ok(());
        }
        self.json(|t| t.audit.as_deref(), &a.command, a)
    }

    fn alert(&mut self, a: &Alert) -> Result<(), KafkaOutputError> {
        self.metrics.golden.alert(a);
        if let Some(archive) = &mut self.archive {
            archive.alert(a);
        }
        if let Some(d) = &self.alerting {
            d.send(a);
        }
        self.json(|t| Some(&t.alerts), &a.dedup_key, a)
    }

    fn dead_letter(&mut self, d: &DeadLetter<'_>) -> Result<(), KafkaOutputError> {
        self.metrics
            .dead_letters
            .get_or_create(&super::metrics::ReasonLabel {
                reason: d.reason.to_owned(),
            })
            .inc();
        let (source_topic, source_partition) = match d.input.topic_partition() {
            Some((t, p)) => (t.to_owned(), p.to_string()),
            None => (d.input.to_string(), String::new()),
        };
        let offset = d.position.map(|p| p.to_string()).unwrap_or_default();
        let record_json;
        let payload: &[u8] = match d.payload {
            Payload::Bytes(b) => b,
            Payload::Record(r) => {
                record_json = serde_json::to_vec(r).expect("records serialize to JSON");
                &record_json
            }
        };
        let mut all: Vec<(&str, &[u8])> = d.headers.to_vec();
        all.extend([
            (headers::REASON, d.reason.as_bytes()),
            (headers::DETAIL, d.detail.as_bytes()),
            (headers::SOURCE_TOPIC, source_topic.as_bytes()),
            (headers::SOURCE_PARTITION, source_partition.as_bytes()),
            (headers::SOURCE_OFFSET, offset.as_bytes()),
        ]);
        let key = d.key.map(|k| &k[..k.len().min(1024)]);
        let size = payload.len().to_string();
        let max = self.max_bytes;
        let room = |all: &[(&str, &[u8])]| {
            max.saturating_sub(header_bytes(all) + key.map_or(0, <[u8]>::len) + 64)
        };
        let payload = if payload.len() > room(&all) {
            all.retain(|(k, _)| k.starts_with("graywatch-"));
            all.push((headers::TRUNCATED, size.as_bytes()));
            &payload[..payload.len().min(room(&all))]
        } else {
            payload
        };
        self.send(
            &self.topics.dead_letters,
            key,
            None,
            payload,
            Some(owned(&all)),
        )
    }

    fn flush(&mut self) -> Result<(), KafkaOutputError> {
        self.producer
            .flush(self.flush_timeout)
            .map_err(|source| KafkaOutputError::Produce {
                topic: "(flush)".into(),
                source,
            })?;
        self.check_delivered()
    }
}
