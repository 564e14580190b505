//! Remediation commands (for enforcement points) and alerts (for pager systems).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An operational pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Pattern {
    /// Rate-limit or slow the callers of a node.
    Backpressure,
    /// Fail fast around a slow dependency.
    CircuitBreaker,
    /// Isolate zones or pools from each other.
    Bulkhead,
    /// Deny edges.
    Segmentation,
    /// Take a deployment or version out of rotation.
    Quarantine,
}

impl Pattern {
    /// The name used in JSON and in ids.
    pub fn as_str(self) -> &'static str {
        match self {
            Pattern::Backpressure => "backpressure",
            Pattern::CircuitBreaker => "circuit-breaker",
            Pattern::Bulkhead => "bulkhead",
            Pattern::Segmentation => "segmentation",
            Pattern::Quarantine => "quarantine",
        }
    }
}

/// Whether an enforcement point applies a command or only logs what it would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Log only (the default: nothing changes until an operator opts in).
    #[default]
    DryRun,
    /// Apply.
    Enforce,
}

/// Which traffic a command applies to: the edges from any of `sources` to `destination`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Calling services whose requests are affected.
    pub sources: Vec<String>,
    /// Called service.
    pub destination: String,
}

/// An instruction for enforcement points, valid until `expires_at_us`.
///
/// JSON: `schemas/json/remediation-command.schema.json` (`"kind": "remediation-command"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemediationCommand {
    /// Version of this document's schema.
    pub schema_version: u32,
    /// Always `"remediation-command"`.
    pub kind: String,
    /// Deterministic id (`<pattern>/<destination>/<issued µs>`): enforcement points drop a
    /// command whose id they have already applied.
    pub id: String,
    /// The pattern.
    pub pattern: Pattern,
    /// The traffic it applies to.
    pub target: Target,
    /// Pattern parameters. Backpressure: `rate_limit_rps.<source>` (req/s allowed per caller).
    pub parameters: BTreeMap<String, f64>,
    /// Event time at which it was issued, µs since the epoch.
    pub issued_at_us: i64,
    /// Event time after which enforcement points drop it, µs since the epoch.
    pub expires_at_us: i64,
    /// Id of the finding that caused it.
    pub reason: String,
    /// Dry run or enforce.
    pub mode: Mode,
}

/// Whether an alert opens or closes an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertAction {
    /// Open (or re-notify) the incident.
    Trigger,
    /// Close it.
    Resolve,
}

/// A notification to a pager system.
///
/// JSON: `schemas/json/alert.schema.json` (`"kind": "alert"`). `dedup_key` follows PagerDuty
/// Events API v2's `dedup_key`: a trigger and its resolve carry the same key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    /// Version of this document's schema.
    pub schema_version: u32,
    /// Always `"alert"`.
    pub kind: String,
    /// Trigger or resolve.
    pub action: AlertAction,
    /// `<signature>/<subject>`: the same for every window of one incident.
    pub dedup_key: String,
    /// One line for the pager.
    pub summary: String,
    /// `warning` or `critical`.
    pub severity: crate::finding::Severity,
    /// Event time of the trigger or resolve, µs since the epoch.
    pub at_us: i64,
    /// Id of the latest finding of the incident.
    pub finding: String,
}
