//! Findings: detected gray-failure signatures with their evidence.

use serde::{Deserialize, Serialize};

use crate::window::Window;

/// The gray-failure signature a finding reports. Each detector's definition, evidence and
/// blind spots are in its module under `detect/src/signatures/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Signature {
    /// Inflow without outflow: a node keeps receiving requests while its successful
    /// responses and its own downstream calls collapse (or, for TCP, bytes in and none out).
    BlackHole,
    /// A new version of a service appeared and, after it, latency or errors rose downstream
    /// of it; the finding names the version and how its call pattern changed.
    DeployRegression,
    /// Many sources' rates toward one destination spiked in the same windows after a period
    /// of errors or unavailability (a retry or logging storm).
    SynchronizedBurst,
    /// Edges that the segmentation policy forbids, or never-seen edges from a source.
    SegmentationViolation,
    /// A destination called by abnormally many sources, or at an abnormal rate by new ones
    /// (fan-in DoS).
    FanInSurge,
    /// A source calling abnormally many destinations (fan-out surge, scanning).
    FanOutSurge,
    /// Traffic between zones above the allowed share of a pair's requests.
    CrossZone,
    /// A pair's or node's request rate far below its baseline.
    RateDrop,
    /// A pair's or node's request rate far above its baseline.
    RateSpike,
    /// A pair's latency (p50 or p99) shifted above its baseline.
    LatencyShift,
    /// A pair's error ratio far above its baseline.
    ErrorSpike,
    /// Concurrency rising at a flat rate: requests queue (Little's law, concurrency = rate ×
    /// latency).
    Queueing,
    /// Slowdown or errors spread over many pairs; the finding ranks the likely root causes.
    SpreadingDegradation,
    /// A user rule (SQL over the window tables) returned a row; `Finding::rule` names it.
    Rule,
}

impl Signature {
    /// Every signature, in declaration order.
    pub const ALL: [Signature; 14] = [
        Signature::BlackHole,
        Signature::DeployRegression,
        Signature::SynchronizedBurst,
        Signature::SegmentationViolation,
        Signature::FanInSurge,
        Signature::FanOutSurge,
        Signature::CrossZone,
        Signature::RateDrop,
        Signature::RateSpike,
        Signature::LatencyShift,
        Signature::ErrorSpike,
        Signature::Queueing,
        Signature::SpreadingDegradation,
        Signature::Rule,
    ];

    /// The name used in JSON and in ids.
    pub fn as_str(self) -> &'static str {
        match self {
            Signature::BlackHole => "black-hole",
            Signature::DeployRegression => "deploy-regression",
            Signature::SynchronizedBurst => "synchronized-burst",
            Signature::SegmentationViolation => "segmentation-violation",
            Signature::FanInSurge => "fan-in-surge",
            Signature::FanOutSurge => "fan-out-surge",
            Signature::CrossZone => "cross-zone",
            Signature::RateDrop => "rate-drop",
            Signature::RateSpike => "rate-spike",
            Signature::LatencyShift => "latency-shift",
            Signature::ErrorSpike => "error-spike",
            Signature::Queueing => "queueing",
            Signature::SpreadingDegradation => "spreading-degradation",
            Signature::Rule => "rule",
        }
    }

    /// What findings of this signature are about: the kinds of their subjects, as the first
    /// segment of [`Subject::key`] (`node`, `pair`, `version`, `zones`, `sources`,
    /// `landscape`). A policy's subject glob that can match none of them is a config error;
    /// the detectors keep to it (checked where `detect` builds a finding).
    pub fn subject_kinds(self) -> &'static [&'static str] {
        match self {
            Signature::BlackHole | Signature::FanOutSurge => &["node"],
            Signature::DeployRegression => &["version"],
            Signature::SynchronizedBurst | Signature::FanInSurge => &["sources"],
            Signature::SegmentationViolation => &["pair", "sources"],
            Signature::CrossZone => &["zones"],
            Signature::RateDrop
            | Signature::RateSpike
            | Signature::LatencyShift
            | Signature::ErrorSpike
            | Signature::Queueing => &["pair"],
            Signature::SpreadingDegradation => &["landscape"],
            Signature::Rule => &["node", "pair", "version", "zones"],
        }
    }
}

impl std::fmt::Display for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a finding is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Subject {
    /// One service.
    Node {
        /// The service.
        node: String,
    },
    /// One pair.
    Pair {
        /// Calling service.
        source: String,
        /// Called service.
        destination: String,
    },
    /// One version of a service (a deployment).
    Version {
        /// The service.
        service: String,
        /// Its version, as the records give it.
        version: String,
    },
    /// The traffic of one pair from one zone to another.
    ZonePair {
        /// Calling service.
        source: String,
        /// Called service.
        destination: String,
        /// The caller's zone.
        source_zone: String,
        /// The callee's zone.
        destination_zone: String,
    },
    /// A set of sources acting together toward one destination (a storm, a fan-in surge, a
    /// breach into a segment). The key names the destination only, so that one incident
    /// keeps its key while the set of sources changes from window to window.
    Sources {
        /// The destination (a service, or a segment's name for segmentation).
        destination: String,
        /// The sources, sorted.
        sources: Vec<String>,
    },
    /// The whole landscape (a degradation spread over many pairs).
    Landscape,
}

impl Subject {
    /// The first segment of [`Subject::key`]: `node`, `pair`, `version`, `zones`, `sources`
    /// or `landscape`.
    pub fn kind(&self) -> &'static str {
        match self {
            Subject::Node { .. } => "node",
            Subject::Pair { .. } => "pair",
            Subject::Version { .. } => "version",
            Subject::ZonePair { .. } => "zones",
            Subject::Sources { .. } => "sources",
            Subject::Landscape => "landscape",
        }
    }

    /// How the key of a subject of `kind` reads, for messages: `node/<service>`, …
    pub fn key_shape(kind: &str) -> &'static str {
        match kind {
            "node" => "node/<service>",
            "pair" => "pair/<source>/<destination>",
            "version" => "version/<service>/<version>",
            "zones" => "zones/<source zone>/<destination zone>/<source>/<destination>",
            "sources" => "sources/<destination>",
            _ => "landscape",
        }
    }

    /// The subject as a path segment of ids and dedup keys: `node/<node>`,
    /// `pair/<source>/<destination>`, `version/<service>/<version>`,
    /// `zones/<source zone>/<destination zone>/<source>/<destination>`,
    /// `sources/<destination>` or `landscape`.
    pub fn key(&self) -> String {
        match self {
            Subject::Node { node } => format!("node/{node}"),
            Subject::Pair {
                source,
                destination,
            } => format!("pair/{source}/{destination}"),
            Subject::Version { service, version } => format!("version/{service}/{version}"),
            Subject::ZonePair {
                source,
                destination,
                source_zone,
                destination_zone,
            } => format!("zones/{source_zone}/{destination_zone}/{source}/{destination}"),
            Subject::Sources { destination, .. } => format!("sources/{destination}"),
            Subject::Landscape => "landscape".to_owned(),
        }
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Node { node } => write!(f, "node {node}"),
            Subject::Pair {
                source,
                destination,
            } => write!(f, "pair {source} -> {destination}"),
            Subject::Version { service, version } => write!(f, "{service} version {version}"),
            Subject::ZonePair {
                source,
                destination,
                source_zone,
                destination_zone,
            } => write!(
                f,
                "pair {source} -> {destination} from zone {source_zone} to zone {destination_zone}"
            ),
            Subject::Sources {
                destination,
                sources,
            } => write!(f, "{} sources -> {destination}", sources.len()),
            Subject::Landscape => f.write_str("the landscape"),
        }
    }
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// Worth a look.
    Warning,
    /// Needs action now.
    Critical,
}

impl Severity {
    /// The name used in JSON: `warning`, `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// The evidence signal giving how many callers saw the failure themselves (`value`), against
/// the callers with requests in the window (`baseline`), unit `callers`: a finding with
/// several callers but fewer than two such witnesses could be one caller's doing, and
/// backpressure issues no command on it.
pub const COLLAPSED_CALLERS: &str = "collapsed_callers";

/// One signal's value in the finding's window against its baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// Signal name, e.g. `inflow_requests`, `ok_response_ratio`.
    pub signal: String,
    /// Value in the finding's window.
    pub value: f64,
    /// Baseline value (what is normal for this subject).
    pub baseline: f64,
    /// Unit: `requests`, `ratio`, `req/s`, `µs`, `bytes/s`.
    pub unit: String,
    /// The probability, under the baseline, of a value at least this far from it in the
    /// direction of the signature (a one-sided tail probability); absent when the evidence
    /// is a count or a rule rather than a scored signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail_probability: Option<f64>,
}

/// How much history a finding's baselines had.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Confidence {
    /// The baselines are young (fewer windows than `[detect.baseline] confident-after`).
    Low,
    /// The baselines have enough history.
    #[default]
    Normal,
}

/// An entity related to a finding, with its role: `caller`, `source` (of a storm or a
/// breach), `destination`, `suspect-version`, `previous-version`, `zone`, `candidate` (a
/// ranked root-cause candidate), `new-destination`, `vanished-destination`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Related {
    /// What the entity is to the finding (see the type's docs).
    pub role: String,
    /// The entity: a service, a version, a zone.
    pub name: String,
    /// A number that ranks or weighs it, with its meaning in `detail` (e.g. a candidate's
    /// score in [0, 1], calls per request).
    #[serde(default)]
    pub score: Option<f64>,
    /// One phrase for humans: why it is related.
    #[serde(default)]
    pub detail: String,
}

/// A caller of the finding's subject, with its rate now and in the baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Caller {
    /// Calling service.
    pub service: String,
    /// Its request rate to the subject in the finding's window, req/s.
    pub rate_rps: f64,
    /// Its baseline request rate to the subject, req/s.
    pub baseline_rate_rps: f64,
}

/// A detected signature, with its evidence.
///
/// JSON: `schemas/json/finding.schema.json` (`"kind": "finding"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    /// Version of this document's schema.
    pub schema_version: u32,
    /// Always `"finding"`.
    pub kind: String,
    /// Deterministic id: `<signature>/<subject key>/<window start µs>` (see [`Subject::key`]),
    /// e.g. `black-hole/node/catalog/1674982200000000`, the same on every replay.
    pub id: String,
    /// The signature detected.
    pub signature: Signature,
    /// What it is about.
    pub subject: Subject,
    /// The window in which it was seen.
    pub window: Window,
    /// How bad it is.
    pub severity: Severity,
    /// The signals that make the signature, against their baselines.
    pub evidence: Vec<Evidence>,
    /// Callers of the subject in the window (empty for pair subjects).
    pub callers: Vec<Caller>,
    /// One sentence for humans.
    pub summary: String,
    /// How anomalous, in [0, 1]: 1 − the tail probability of the strongest evidence under
    /// its baseline (0 when no evidence was scored).
    #[serde(default)]
    pub score: f64,
    /// Whether the baselines behind it had enough history.
    #[serde(default)]
    pub confidence: Confidence,
    /// Related entities: callers, sources, suspect version, zones, root-cause candidates.
    #[serde(default)]
    pub related: Vec<Related>,
    /// For [`Signature::Rule`]: the rule's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}
