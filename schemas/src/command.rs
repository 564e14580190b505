//! Remediation commands (for enforcement points), the audit of the actuator's decisions, and
//! alerts (for pager systems).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, Serializer};

use crate::time::{Rfc3339, agrees, beside};

/// An operational pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
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

/// How an enforcement point treats a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Log only what it would do (the default: nothing changes until an operator opts in).
    #[default]
    DryRun,
    /// Waiting for an operator's approval (`graywatch approve ID`): logged only, like a dry
    /// run; the approval sends the command again in [`Mode::Enforce`].
    Proposed,
    /// Apply.
    Enforce,
}

impl Mode {
    /// The name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::DryRun => "dry-run",
            Mode::Proposed => "proposed",
            Mode::Enforce => "enforce",
        }
    }
}

/// What a command message does to the command its id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CommandAction {
    /// Start applying it (revision 0, the approval of a proposed command, or the command back
    /// after a revoke when its incident opens again within a TTL).
    Issue,
    /// It goes on, with a later expiry and possibly new parameters or target.
    Renew,
    /// Stop applying it now (its incident resolved).
    Revoke,
}

impl CommandAction {
    /// The name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandAction::Issue => "issue",
            CommandAction::Renew => "renew",
            CommandAction::Revoke => "revoke",
        }
    }
}

/// Which traffic a command applies to: requests from any of `sources` (every caller when
/// empty) to any of `destinations`, narrowed by zone and version when given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Calling services whose requests are affected, sorted; empty: every caller.
    pub sources: Vec<String>,
    /// Called services, sorted (at least one).
    pub destinations: Vec<String>,
    /// Only requests from callers in this zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_zone: Option<String>,
    /// Only requests to instances in this zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_zone: Option<String>,
    /// Only the destinations' instances running this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// One edge, `source → destination` (an allow-list entry).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edge {
    /// Calling service.
    pub source: String,
    /// Called service.
    pub destination: String,
}

/// Backpressure: each listed caller may send at most its rate to the destinations. Where
/// several commands in force limit the same caller toward the same destination (a black
/// hole's and a storm's), the lowest limit applies; each command still goes with its own
/// incident.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackpressureParameters {
    /// Allowed rate per calling service, req/s (> 0; a caller not listed is not limited).
    pub rate_limit_rps: BTreeMap<String, f64>,
}

/// Circuit breaker: the matched requests fail at once with `status`, without reaching the
/// destinations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerParameters {
    /// HTTP status returned instead, e.g. 503.
    pub status: u16,
    /// Only callers with this tier label (the enforcement point's labelling of its callers,
    /// e.g. `batch`); every caller when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Only requests still running after this long, µs (a timeout shorter than the
    /// destination's current latency); every request when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slower_than_us: Option<u64>,
}

/// Bulkhead: cap or deny the matched traffic (between zones or pools), except the
/// allow-listed edges.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkheadParameters {
    /// Most requests in flight on the matched traffic (count); absent: the traffic is denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u64>,
    /// Edges left untouched (critical fail-over routes), sorted.
    #[serde(default)]
    pub allow: Vec<Edge>,
}

/// Segmentation: the matched edges are denied with `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentationParameters {
    /// HTTP status returned instead, e.g. 403.
    pub status: u16,
}

/// Quarantine: the target's version of its destinations is taken out of rotation (its
/// instances get no new requests, or `weight` of them; the other versions serve).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantineParameters {
    /// Share of the requests the quarantined version still gets, in [0, 1) (0: none).
    pub weight: f64,
}

/// A command's pattern and its typed parameters. In JSON: the `pattern` field, and a
/// `parameters` object of that pattern's shape (`schemas/json/remediation-command.schema.json`
/// defines one per pattern).
#[derive(Debug, Clone, PartialEq)]
pub enum Parameters {
    /// [`Pattern::Backpressure`].
    Backpressure(BackpressureParameters),
    /// [`Pattern::CircuitBreaker`].
    CircuitBreaker(CircuitBreakerParameters),
    /// [`Pattern::Bulkhead`].
    Bulkhead(BulkheadParameters),
    /// [`Pattern::Segmentation`].
    Segmentation(SegmentationParameters),
    /// [`Pattern::Quarantine`].
    Quarantine(QuarantineParameters),
}

impl Parameters {
    /// The pattern these parameters are for.
    pub fn pattern(&self) -> Pattern {
        match self {
            Parameters::Backpressure(_) => Pattern::Backpressure,
            Parameters::CircuitBreaker(_) => Pattern::CircuitBreaker,
            Parameters::Bulkhead(_) => Pattern::Bulkhead,
            Parameters::Segmentation(_) => Pattern::Segmentation,
            Parameters::Quarantine(_) => Pattern::Quarantine,
        }
    }

    fn to_value(&self) -> serde_json::Result<serde_json::Value> {
        match self {
            Parameters::Backpressure(p) => serde_json::to_value(p),
            Parameters::CircuitBreaker(p) => serde_json::to_value(p),
            Parameters::Bulkhead(p) => serde_json::to_value(p),
            Parameters::Segmentation(p) => serde_json::to_value(p),
            Parameters::Quarantine(p) => serde_json::to_value(p),
        }
    }

    fn from_value(pattern: Pattern, v: serde_json::Value) -> serde_json::Result<Self> {
        Ok(match pattern {
            Pattern::Backpressure => Parameters::Backpressure(serde_json::from_value(v)?),
            Pattern::CircuitBreaker => Parameters::CircuitBreaker(serde_json::from_value(v)?),
            Pattern::Bulkhead => Parameters::Bulkhead(serde_json::from_value(v)?),
            Pattern::Segmentation => Parameters::Segmentation(serde_json::from_value(v)?),
            Pattern::Quarantine => Parameters::Quarantine(serde_json::from_value(v)?),
        })
    }
}

/// Why a command exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    /// Id of the (latest) finding that asks for it.
    pub finding: String,
    /// Its signature.
    pub signature: crate::finding::Signature,
    /// Dedup key of its incident: the command is revoked when that incident resolves.
    pub incident: String,
    /// One line for humans: the finding's summary.
    pub summary: String,
}

/// A command's authentication: HMAC-SHA256 (RFC 2104 over FIPS 180-4's SHA-256) of its
/// canonical JSON without this field and without the RFC 3339 texts
/// ([`RemediationCommand::canonical_json`]), with the key named `key_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSignature {
    /// Which key signed it (keys rotate: an enforcement point may know several).
    pub key_id: String,
    /// The MAC, 64 lowercase hex digits.
    pub hmac_sha256: String,
}

/// An instruction for enforcement points: one action (issue, renew, revoke) on the command
/// `id` names, in force until `expires_at_us`.
///
/// JSON: `schemas/json/remediation-command.schema.json` (`"kind": "remediation-command"`).
/// Messages of one id come in `revision` order; an enforcement point keeps the latest
/// revision of each id, drops it at `expires_at_us` or on a revoke, and ignores a revision it
/// has already applied (a replay sends the same messages again). A revoke may be followed by
/// an `issue` of the next revision: a flapping incident's command back under its id.
///
/// In JSON, `issued_at` and `expires_at` give `issued_at_us` and `expires_at_us` as RFC 3339
/// times for people ([`crate::time`]); the signature does not cover them (see
/// [`RemediationCommand::canonical_json`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawCommand")]
pub struct RemediationCommand {
    /// Version of this document's schema.
    pub schema_version: u32,
    /// Always `"remediation-command"`.
    pub kind: String,
    /// Deterministic id, `<pattern>/<subject key>/<µs of the first issue>` (the subject of the
    /// finding that asked for it, `schemas::Subject::key`): the same on every replay.
    pub id: String,
    /// What this message does.
    pub action: CommandAction,
    /// 0 for the first message of the id, then +1 per message.
    pub revision: u32,
    /// The pattern and its parameters.
    pub parameters: Parameters,
    /// The traffic it applies to.
    pub target: Target,
    /// Event time of this message (the end of the window that decided it), µs since the epoch.
    pub issued_at_us: i64,
    /// Lifetime this message grants, µs (`expires_at_us − issued_at_us`; 0 for a revoke).
    pub ttl_us: i64,
    /// Event time after which enforcement points drop it, µs since the epoch.
    pub expires_at_us: i64,
    /// The finding and incident behind it.
    pub reason: Reason,
    /// Dry run, proposed or enforce.
    pub mode: Mode,
    /// HMAC of the rest; absent when no signing key is configured.
    pub signature: Option<CommandSignature>,
}

impl RemediationCommand {
    /// The pattern.
    pub fn pattern(&self) -> Pattern {
        self.parameters.pattern()
    }

    /// The bytes a [`CommandSignature`] is computed over: the command's JSON without its
    /// `signature` field and without the RFC 3339 texts `issued_at` and `expires_at`, in the
    /// JSON Canonicalization Scheme's form (RFC 8785): object keys sorted, no white space,
    /// integral numbers without a fraction. The numbers graywatch writes are integers, or
    /// decimals at least 0.001 and below 1e15, whose shortest round-trip form (Rust's
    /// `Display`) is the one RFC 8785 (ECMAScript's `Number.prototype.toString`) gives.
    ///
    /// The RFC 3339 texts are left out because they only repeat the signed µs values for
    /// people (the bytes signed are those of commands written before the texts existed, so
    /// their signatures still verify); a reader refuses a command whose text names another
    /// instant than its µs value, so an altered text can't pass either.
    pub fn canonical_json(&self) -> Vec<u8> {
        let mut raw = RawCommandOut::new(self, false);
        raw.signature = None;
        let value = serde_json::to_value(&raw).expect("a command serializes");
        canonical_json(&value)
    }
}

/// `value` in RFC 8785's canonical form (see [`RemediationCommand::canonical_json`]).
pub fn canonical_json(value: &serde_json::Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            // RFC 8785 sorts by UTF-16 code units
            entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(Value::String(k.clone()).to_string().as_bytes());
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out);
            }
            out.push(b']');
        }
        Value::Number(n) => {
            let text = if let Some(i) = n.as_i64() {
                i.to_string()
            } else if let Some(u) = n.as_u64() {
                u.to_string()
            } else {
                let f = n.as_f64().unwrap_or(0.0);
                if f.fract() == 0.0 && f.abs() < 1e15 {
                    // ECMAScript writes 59.0 as 59
                    format!("{}", f as i64)
                } else {
                    // shortest round-trip digits without an exponent, as ECMAScript writes
                    // 1e-6 <= |f| < 1e21
                    format!("{f}")
                }
            };
            out.extend_from_slice(text.as_bytes());
        }
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

impl Serialize for RemediationCommand {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let texts = s.is_human_readable();
        RawCommandOut::new(self, texts).serialize(s)
    }
}

/// How [`RemediationCommand`] is written: `pattern` beside untyped `parameters`, and the RFC
/// 3339 texts after their µs values when `texts`.
#[derive(Serialize)]
struct RawCommandOut<'a> {
    schema_version: u32,
    kind: &'a str,
    id: &'a str,
    action: CommandAction,
    revision: u32,
    pattern: Pattern,
    target: &'a Target,
    parameters: serde_json::Value,
    issued_at_us: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    issued_at: Option<Rfc3339>,
    ttl_us: i64,
    expires_at_us: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<Rfc3339>,
    reason: &'a Reason,
    mode: Mode,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature: Option<&'a CommandSignature>,
}

impl<'a> RawCommandOut<'a> {
    fn new(c: &'a RemediationCommand, texts: bool) -> Self {
        RawCommandOut {
            schema_version: c.schema_version,
            kind: &c.kind,
            id: &c.id,
            action: c.action,
            revision: c.revision,
            pattern: c.parameters.pattern(),
            target: &c.target,
            parameters: c
                .parameters
                .to_value()
                .expect("parameters serialize (finite numbers)"),
            issued_at_us: c.issued_at_us,
            issued_at: texts.then_some(Rfc3339(c.issued_at_us)),
            ttl_us: c.ttl_us,
            expires_at_us: c.expires_at_us,
            expires_at: texts.then_some(Rfc3339(c.expires_at_us)),
            reason: &c.reason,
            mode: c.mode,
            signature: c.signature.as_ref(),
        }
    }
}

/// How [`RemediationCommand`] is read: `pattern` beside untyped `parameters`; the RFC 3339
/// texts are optional, must agree with their µs values, and come last (a binary encoding
/// without them, a sequence, reads too).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    schema_version: u32,
    kind: String,
    id: String,
    action: CommandAction,
    revision: u32,
    pattern: Pattern,
    target: Target,
    parameters: serde_json::Value,
    issued_at_us: i64,
    ttl_us: i64,
    expires_at_us: i64,
    reason: Reason,
    mode: Mode,
    #[serde(default)]
    signature: Option<CommandSignature>,
    #[serde(default)]
    issued_at: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
}

impl TryFrom<RawCommand> for RemediationCommand {
    type Error = String;

    fn try_from(r: RawCommand) -> Result<Self, Self::Error> {
        agrees("issued_at", r.issued_at.as_deref(), r.issued_at_us)?;
        agrees("expires_at", r.expires_at.as_deref(), r.expires_at_us)?;
        Ok(RemediationCommand {
            schema_version: r.schema_version,
            kind: r.kind,
            id: r.id,
            action: r.action,
            revision: r.revision,
            parameters: Parameters::from_value(r.pattern, r.parameters)
                .map_err(|e| e.to_string())?,
            target: r.target,
            issued_at_us: r.issued_at_us,
            ttl_us: r.ttl_us,
            expires_at_us: r.expires_at_us,
            reason: r.reason,
            mode: r.mode,
            signature: r.signature,
        })
    }
}

/// What the actuator decided about a command, for the audit stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    /// Issued (dry-run or enforce).
    Issued,
    /// Issued as proposed: waits for an approval.
    Proposed,
    /// An operator approved a proposed command: issued again in enforce mode.
    Approved,
    /// Renewed: a later expiry, or new parameters or target.
    Renewed,
    /// Not issued or not renewed: a safety rail refused it (`rail` names which).
    Suppressed,
    /// Revoked: its incident resolved.
    Revoked,
    /// Reached its expiry (event time) without a renewal.
    Expired,
}

impl Decision {
    /// The name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Issued => "issued",
            Decision::Proposed => "proposed",
            Decision::Approved => "approved",
            Decision::Renewed => "renewed",
            Decision::Suppressed => "suppressed",
            Decision::Revoked => "revoked",
            Decision::Expired => "expired",
        }
    }
}

/// One decision of the actuator about one command, for the audit stream (a file or a
/// topic): every issue, proposal, approval, renewal, suppression, revoke and expiry.
///
/// JSON: `schemas/json/audit.schema.json` (`"kind": "audit"`), with `at`, the RFC 3339 time
/// of `at_us` ([`crate::time`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "AuditDoc")]
pub struct AuditRecord {
    /// Version of this document's schema.
    pub schema_version: u32,
    /// Always `"audit"`.
    pub kind: String,
    /// Event time of the decision, µs since the epoch.
    pub at_us: i64,
    /// What was decided.
    pub decision: Decision,
    /// The command's id (for a suppressed issue, the id it would have had).
    pub command: String,
    /// Its pattern.
    pub pattern: Pattern,
    /// The revision the decision produced or concerns.
    pub revision: u32,
    /// The safety rail that refused it (`suppressed` only): `max-active`,
    /// `max-new-per-minute`, `blast-radius` or `protected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rail: Option<String>,
    /// The finding and incident behind it.
    pub reason: Reason,
    /// One line for humans.
    pub detail: String,
}

/// How [`AuditRecord`] is written: its fields, `at` after `at_us` when the serializer is
/// human-readable.
#[derive(Serialize)]
struct AuditOut<'a> {
    schema_version: u32,
    kind: &'a str,
    at_us: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    at: Option<Rfc3339>,
    decision: Decision,
    command: &'a str,
    pattern: Pattern,
    revision: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    rail: Option<&'a str>,
    reason: &'a Reason,
    detail: &'a str,
}

impl Serialize for AuditRecord {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        AuditOut {
            schema_version: self.schema_version,
            kind: &self.kind,
            at_us: self.at_us,
            at: beside(&s, self.at_us),
            decision: self.decision,
            command: &self.command,
            pattern: self.pattern,
            revision: self.revision,
            rail: self.rail.as_deref(),
            reason: &self.reason,
            detail: &self.detail,
        }
        .serialize(s)
    }
}

/// How [`AuditRecord`] is read: `at` optional, agreeing with `at_us`, and last.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditDoc {
    schema_version: u32,
    kind: String,
    at_us: i64,
    decision: Decision,
    command: String,
    pattern: Pattern,
    revision: u32,
    #[serde(default)]
    rail: Option<String>,
    reason: Reason,
    detail: String,
    #[serde(default)]
    at: Option<String>,
}

impl TryFrom<AuditDoc> for AuditRecord {
    type Error = String;

    fn try_from(d: AuditDoc) -> Result<Self, String> {
        agrees("at", d.at.as_deref(), d.at_us)?;
        Ok(AuditRecord {
            schema_version: d.schema_version,
            kind: d.kind,
            at_us: d.at_us,
            decision: d.decision,
            command: d.command,
            pattern: d.pattern,
            revision: d.revision,
            rail: d.rail,
            reason: d.reason,
            detail: d.detail,
        })
    }
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
/// Events API v2's `dedup_key`: a trigger and its resolve carry the same key. `at` is the RFC
/// 3339 time of `at_us` ([`crate::time`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "AlertDoc")]
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

/// How [`Alert`] is written: its fields, `at` after `at_us` when the serializer is
/// human-readable.
#[derive(Serialize)]
struct AlertOut<'a> {
    schema_version: u32,
    kind: &'a str,
    action: AlertAction,
    dedup_key: &'a str,
    summary: &'a str,
    severity: crate::finding::Severity,
    at_us: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    at: Option<Rfc3339>,
    finding: &'a str,
}

impl Serialize for Alert {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        AlertOut {
            schema_version: self.schema_version,
            kind: &self.kind,
            action: self.action,
            dedup_key: &self.dedup_key,
            summary: &self.summary,
            severity: self.severity,
            at_us: self.at_us,
            at: beside(&s, self.at_us),
            finding: &self.finding,
        }
        .serialize(s)
    }
}

/// How [`Alert`] is read: `at` optional, agreeing with `at_us`, and last.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertDoc {
    schema_version: u32,
    kind: String,
    action: AlertAction,
    dedup_key: String,
    summary: String,
    severity: crate::finding::Severity,
    at_us: i64,
    finding: String,
    #[serde(default)]
    at: Option<String>,
}

impl TryFrom<AlertDoc> for Alert {
    type Error = String;

    fn try_from(d: AlertDoc) -> Result<Self, String> {
        agrees("at", d.at.as_deref(), d.at_us)?;
        Ok(Alert {
            schema_version: d.schema_version,
            kind: d.kind,
            action: d.action,
            dedup_key: d.dedup_key,
            summary: d.summary,
            severity: d.severity,
            at_us: d.at_us,
            finding: d.finding,
        })
    }
}
