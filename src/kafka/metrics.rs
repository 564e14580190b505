//! graywatch's own metrics, in Prometheus text format on `/metrics`.
//!
//! Names are [`names`] constants; the landscape's golden signals are [`crate::golden`]'s. Counters of the pipeline are kept by the stages and copied
//! here as deltas each loop turn; librdkafka's consumer lag arrives with its statistics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::golden::GoldenSignals;

/// Metric names (Prometheus appends `_total` to counters).
pub mod names {
    /// Kafka messages consumed, by topic.
    pub const MESSAGES_IN: &str = "graywatch_messages_in";
    /// Flow records parsed from input topics, by topic.
    pub const RECORDS_IN: &str = "graywatch_records_in";
    /// Flow records taken into windows by stage 1 (late ones included).
    pub const RECORDS_AGGREGATED: &str = "graywatch_records_aggregated";
    /// Messages produced, by topic.
    pub const MESSAGES_OUT: &str = "graywatch_messages_out";
    /// Lines or records not used, by reason (each one went to the dead-letter topic).
    pub const DEAD_LETTERS: &str = "graywatch_dead_letters";
    /// Consumer lag per assigned partition (messages), from librdkafka's statistics.
    pub const CONSUMER_LAG: &str = "graywatch_consumer_lag_messages";
    /// Processing time minus the merged watermark, seconds.
    pub const WATERMARK_DELAY: &str = "graywatch_watermark_delay_seconds";
    /// Windows closed.
    pub const WINDOWS_CLOSED: &str = "graywatch_windows_closed";
    /// Findings, by signature.
    pub const FINDINGS: &str = "graywatch_findings";
    /// Deployments read from the deployments topic (`[kafka] deployments`), each once.
    pub const DEPLOYMENTS: &str = "graywatch_deployments";
    /// Findings of user rules (`[[rules]]`), by rule.
    pub const RULE_FINDINGS: &str = "graywatch_rule_findings";
    /// User rules that failed on a window.
    pub const RULE_ERRORS: &str = "graywatch_rule_errors";
    /// Remediation commands written.
    pub const COMMANDS: &str = "graywatch_commands";
    /// Alerts written.
    pub const ALERTS: &str = "graywatch_alerts";
    /// Alert deliveries to pager systems, by sink and outcome (`delivered`, `retried`,
    /// `failed`, `dropped`).
    pub const ALERT_DELIVERIES: &str = "graywatch_alert_deliveries";
    /// Records late for their input's watermark.
    pub const LATE_RECORDS: &str = "graywatch_late_records";
    /// Values dropped from flow records for being longer than their cap (the records kept),
    /// by field (`request_id`: longer than 256 bytes; `upstream_address`: an upstream host or
    /// attempt address longer than 512 bytes).
    pub const DROPPED_VALUES: &str = "graywatch_dropped_values";
    /// Partial pair aggregates dropped (duplicate: sent again by a restarted input; late: the
    /// window closed without the input, it was idle), by kind.
    pub const DROPPED_PARTIALS: &str = "graywatch_dropped_partials";
    /// Records (stage 1, kind `records`) and merged pair aggregates (stage 2, kind
    /// `partials`) of new pairs in windows already holding `[detect.window] max-pairs` pairs,
    /// counted under the pair name `(other)`.
    pub const PAIR_OVERFLOW: &str = "graywatch_pair_overflow";
    /// Seconds since the last checkpoint was saved.
    pub const CHECKPOINT_AGE: &str = "graywatch_checkpoint_age_seconds";
    /// Time the last checkpoint took to save, seconds.
    pub const CHECKPOINT_DURATION: &str = "graywatch_checkpoint_duration_seconds";
    /// Size of the last checkpoint, bytes.
    pub const CHECKPOINT_BYTES: &str = "graywatch_checkpoint_bytes";
    /// Checkpoints or commits that failed.
    pub const CHECKPOINT_FAILURES: &str = "graywatch_checkpoint_failures";
    /// Pair-windows held in state (stage 1 and stage 2).
    pub const STATE_PAIRS: &str = "graywatch_state_pairs";
    /// Windows open in state.
    pub const STATE_WINDOWS: &str = "graywatch_state_windows";
    /// Nodes with a baseline.
    pub const STATE_NODES: &str = "graywatch_state_nodes";
    /// Input partitions assigned to this instance.
    pub const ASSIGNED: &str = "graywatch_assigned_partitions";
    /// 1 when a broker connection is up, 0 when none is.
    pub const BROKER_UP: &str = "graywatch_broker_up";
    /// Messages that could not be delivered (producer errors).
    pub const PRODUCE_ERRORS: &str = "graywatch_produce_errors";
}

/// `topic` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    /// The topic.
    pub topic: String,
}

/// `topic`, `partition` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: String,
}

/// `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The reason (`bad-json`, `late`, …).
    pub reason: String,
}

/// `sink` and `outcome` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    /// The sink's name (`pagerduty`).
    pub sink: String,
    /// `delivered`, `retried`, `failed` or `dropped`.
    pub outcome: String,
}

/// `signature` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignatureLabel {
    /// The signature (`black-hole`).
    pub signature: String,
}

/// `rule` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabel {
    /// The rule's name (`slow-pair`).
    pub rule: String,
}

/// `field` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FieldLabel {
    /// The flow-record field (`request_id`, `upstream_address`).
    pub field: String,
}

/// `kind` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The kind.
    pub kind: String,
}

/// Every metric, registered; cheap to update from any thread.
#[derive(Debug, Default)]
pub struct Metrics {
    /// See [`names::MESSAGES_IN`].
    pub messages_in: Family<TopicLabel, Counter>,
    /// See [`names::RECORDS_IN`].
    pub records_in: Family<TopicLabel, Counter>,
    /// See [`names::RECORDS_AGGREGATED`].
    pub records_aggregated: Counter,
    /// See [`names::MESSAGES_OUT`].
    pub messages_out: Family<TopicLabel, Counter>,
    /// See [`names::DEAD_LETTERS`].
    pub dead_letters: Family<ReasonLabel, Counter>,
    /// See [`names::CONSUMER_LAG`].
    pub consumer_lag: Family<PartitionLabels, Gauge>,
    /// See [`names::WATERMARK_DELAY`].
    pub watermark_delay: Gauge<f64, AtomicU64>,
    /// See [`names::WINDOWS_CLOSED`].
    pub windows_closed: Counter,
    /// See [`names::FINDINGS`].
    pub findings: Family<SignatureLabel, Counter>,
    /// See [`names::RULE_FINDINGS`].
    pub rule_findings: Family<RuleLabel, Counter>,
    /// See [`names::DEPLOYMENTS`].
    pub deployments: Counter,
    /// See [`names::RULE_ERRORS`].
    pub rule_errors: Counter,
    /// See [`names::COMMANDS`].
    pub commands: Counter,
    /// See [`names::ALERTS`].
    pub alerts: Counter,
    /// Alert deliveries to pager systems, by sink and outcome.
    pub alert_deliveries: Family<SinkLabels, Counter>,
    /// See [`names::LATE_RECORDS`].
    pub late_records: Counter,
    /// See [`names::DROPPED_VALUES`].
    pub dropped_values: Family<FieldLabel, Counter>,
    /// See [`names::DROPPED_PARTIALS`].
    pub dropped_partials: Family<KindLabel, Counter>,
    /// See [`names::PAIR_OVERFLOW`].
    pub pair_overflow: Family<KindLabel, Counter>,
    /// See [`names::CHECKPOINT_AGE`].
    pub checkpoint_age: Gauge<f64, AtomicU64>,
    /// See [`names::CHECKPOINT_DURATION`].
    pub checkpoint_duration: Gauge<f64, AtomicU64>,
    /// See [`names::CHECKPOINT_BYTES`].
    pub checkpoint_bytes: Gauge,
    /// See [`names::CHECKPOINT_FAILURES`].
    pub checkpoint_failures: Counter,
    /// See [`names::STATE_PAIRS`].
    pub state_pairs: Gauge,
    /// See [`names::STATE_WINDOWS`].
    pub state_windows: Gauge,
    /// See [`names::STATE_NODES`].
    pub state_nodes: Gauge,
    /// See [`names::ASSIGNED`].
    pub assigned: Gauge,
    /// See [`names::BROKER_UP`].
    pub broker_up: Gauge,
    /// See [`names::PRODUCE_ERRORS`].
    pub produce_errors: Counter,
    /// The golden signals of the last closed window (see [`crate::golden`]).
    pub golden: Arc<GoldenSignals>,
    /// Readiness: state restored and a first assignment received from the group.
    pub ready: AtomicBool,
    /// The main loop's last turn, ms since the epoch (a stalled loop is not ready;
    /// `i64::MAX`: no loop to watch, as under `replay --serve`).
    pub last_turn_ms: AtomicI64,
}

impl Metrics {
    /// A registry holding every metric of `self` (which must outlive nothing: metrics are
    /// shared handles).
    pub fn registry(&self) -> Registry {
        use names::*;
        let mut r = Registry::default();
        r.register(
            MESSAGES_IN,
            "Kafka messages consumed",
            self.messages_in.clone(),
        );
        r.register(
            RECORDS_IN,
            "Flow records parsed from input topics",
            self.records_in.clone(),
        );
        r.register(
            RECORDS_AGGREGATED,
            "Flow records taken into windows by stage 1 (late ones included)",
            self.records_aggregated.clone(),
        );
        r.register(MESSAGES_OUT, "Messages produced", self.messages_out.clone());
        r.register(
            DEAD_LETTERS,
            "Lines, messages or records not used, by reason (each went to the dead-letter topic)",
            self.dead_letters.clone(),
        );
        r.register(
            CONSUMER_LAG,
            "Messages behind the end of each assigned partition",
            self.consumer_lag.clone(),
        );
        r.register(
            WATERMARK_DELAY,
            "Processing time minus the merged watermark (event time), seconds",
            self.watermark_delay.clone(),
        );
        r.register(
            WINDOWS_CLOSED,
            "Windows closed",
            self.windows_closed.clone(),
        );
        r.register(FINDINGS, "Findings, by signature", self.findings.clone());
        r.register(
            DEPLOYMENTS,
            "Deployments read from the deployments topic, each once",
            self.deployments.clone(),
        );
        r.register(
            RULE_FINDINGS,
            "Findings of user rules, by rule",
            self.rule_findings.clone(),
        );
        r.register(
            RULE_ERRORS,
            "User rules that failed on a window",
            self.rule_errors.clone(),
        );
        r.register(
            COMMANDS,
            "Remediation commands written",
            self.commands.clone(),
        );
        r.register(ALERTS, "Alerts written", self.alerts.clone());
        r.register(
            ALERT_DELIVERIES,
            "Alert deliveries to pager systems, by sink and outcome",
            self.alert_deliveries.clone(),
        );
        r.register(
            LATE_RECORDS,
            "Records that arrived after their window had closed for their input",
            self.late_records.clone(),
        );
        r.register(
            DROPPED_VALUES,
            "Values dropped from flow records for being longer than their cap (records kept), by field",
            self.dropped_values.clone(),
        );
        r.register(
            DROPPED_PARTIALS,
            "Partial pair aggregates dropped: duplicate (sent again) or late (their window closed without them)",
            self.dropped_partials.clone(),
        );
        r.register(
            PAIR_OVERFLOW,
            "Records (records) and merged pair aggregates (partials) of new pairs in windows already holding max-pairs pairs, counted under (other)",
            self.pair_overflow.clone(),
        );
        r.register(
            CHECKPOINT_AGE,
            "Seconds since the last checkpoint was saved",
            self.checkpoint_age.clone(),
        );
        r.register(
            CHECKPOINT_DURATION,
            "Time the last checkpoint took to save, seconds",
            self.checkpoint_duration.clone(),
        );
        r.register(
            CHECKPOINT_BYTES,
            "Size of the last checkpoint, bytes",
            self.checkpoint_bytes.clone(),
        );
        r.register(
            CHECKPOINT_FAILURES,
            "Checkpoints or offset commits that failed (retried at the next interval)",
            self.checkpoint_failures.clone(),
        );
        r.register(
            STATE_PAIRS,
            "Pair-windows held in state",
            self.state_pairs.clone(),
        );
        r.register(
            STATE_WINDOWS,
            "Windows open in state",
            self.state_windows.clone(),
        );
        r.register(
            STATE_NODES,
            "Nodes with a baseline",
            self.state_nodes.clone(),
        );
        r.register(
            ASSIGNED,
            "Partitions assigned to this instance",
            self.assigned.clone(),
        );
        r.register(
            BROKER_UP,
            "1 when a broker connection is up, 0 when none is",
            self.broker_up.clone(),
        );
        r.register(
            PRODUCE_ERRORS,
            "Messages that could not be delivered",
            self.produce_errors.clone(),
        );
        r.register_collector(Box::new(Arc::clone(&self.golden)));
        r
    }

    /// Counts `n` for `topic` in a topic family.
    pub fn by_topic(family: &Family<TopicLabel, Counter>, topic: &str, n: u64) {
        family
            .get_or_create(&TopicLabel {
                topic: topic.to_owned(),
            })
            .inc_by(n);
    }

    /// The main loop turned now (`now_ms`, ms since the epoch).
    pub fn turned(&self, now_ms: i64) {
        self.last_turn_ms.store(now_ms, Ordering::Relaxed);
    }
}

/// Copies a monotone total into a counter as the delta since the last copy.
#[derive(Debug, Default)]
pub struct Delta(u64);

impl Delta {
    /// Adds `total − last total` to `counter`.
    pub fn update(&mut self, counter: &Counter, total: u64) {
        if total > self.0 {
            counter.inc_by(total - self.0);
        }
        self.0 = total;
    }
}
