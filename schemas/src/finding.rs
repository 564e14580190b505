//! Findings: detected gray-failure signatures with their evidence.

use serde::{Deserialize, Serialize};

use crate::window::Window;

/// The gray-failure signature a finding reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Signature {
    /// Inflow without outflow: a node keeps receiving requests while its successful
    /// responses and its own downstream calls collapse.
    BlackHole,
}

impl Signature {
    /// The name used in JSON and in ids.
    pub fn as_str(self) -> &'static str {
        match self {
            Signature::BlackHole => "black-hole",
        }
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
}

impl Subject {
    /// The subject as a path segment of ids and dedup keys: `node/<node>` or
    /// `pair/<source>/<destination>`.
    pub fn key(&self) -> String {
        match self {
            Subject::Node { node } => format!("node/{node}"),
            Subject::Pair {
                source,
                destination,
            } => format!("pair/{source}/{destination}"),
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
}
