//! graywatch actuation: findings become remediation commands (operational patterns) and
//! alerts (trigger/resolve incidents), with safety rails and an audit of every decision.
//!
//! ```text
//!   closed window, its findings, its pairs
//!        │
//!        ├─▶ alerts ─────────────────────────────────────────────▶ Alert (trigger/resolve)
//!        │     └─ resolved incidents ──▶ revoke their commands
//!        ▼
//!   policy ([[actuate.policy]]: signature, subject glob → pattern)
//!        ▼
//!   patterns (backpressure, circuit breaker, bulkhead, segmentation, quarantine): Remedy
//!        ▼
//!   commands in force: issue │ renew (half the TTL gone, or a wider remedy) │ revoke │ expire
//!        ▼
//!   rails (protected, max-active, max-new-per-minute, blast-radius; approval) ──▶ AuditRecord
//!        ▼
//!   signer (HMAC-SHA256) ───────────────────────────────────────▶ RemediationCommand
//! ```
//!
//! The [`Actuator`] is called once per closed window, in window order, with that window's
//! findings and pairs ([`Actuator::on_window`]); when every input is idle and no window
//! closes, the driver still moves event time on with [`Actuator::advance`], so commands expire
//! in a landscape gone silent. Time is event time (a window's end): there are no clocks here,
//! so a replay of the same input gives the same commands, ids and signatures included. What it
//! remembers (commands in force, recent issues, open incidents) is plain data,
//! [`ActuatorState`], checkpointed with the input offsets.
//!
//! A command's life: issued (revision 0) when a finding's policy asks for a pattern and the
//! rails let it through; renewed (revision + 1, a fresh TTL) when a finding asks again after
//! half its TTL, or asks for more (a backpressure command with a new caller); revoked when its
//! incident resolves ([`alerts`]); expired when event time reaches its expiry without a
//! renewal. An incident that opens again within a TTL of its command's revoke (it flapped)
//! gets that command back: the same id, the next revision, an `issue` (an enforcement point
//! accepts it over the revoke's tombstone, which refuses only older revisions); with
//! approval, an operator's approval stands when the remedy asks for no more than the approved
//! one, else it is proposed again. Every one of these, and every refusal by a rail, is an
//! [`AuditRecord`].
//!
//! ```
//! use actuate::{ActuateConfig, Actuator};
//! use schemas::{AlertAction, Caller, CommandAction, Finding, Parameters, Severity, Signature, Subject, Window};
//!
//! let mut actuator = Actuator::try_from(ActuateConfig::default()).unwrap(); // dry-run
//! let window = Window { start_us: 1_674_982_200_000_000, end_us: 1_674_982_210_000_000 };
//! let finding = Finding {
//!     schema_version: schemas::SCHEMA_VERSION,
//!     kind: "finding".into(),
//!     id: "black-hole/node/catalog/1674982200000000".into(),
//!     signature: Signature::BlackHole,
//!     subject: Subject::Node { node: "catalog".into() },
//!     window,
//!     severity: Severity::Critical,
//!     evidence: vec![],
//!     callers: vec![Caller { service: "frontend".into(), rate_rps: 120.0, baseline_rate_rps: 118.5 }],
//!     summary: "catalog answers nothing".into(),
//!     score: 0.999,
//!     confidence: schemas::Confidence::Normal,
//!     related: vec![],
//!     rule: None,
//! };
//! let actions = actuator.on_window(window, &[finding], &[]);
//! let command = &actions.commands[0];
//! assert_eq!(command.id, "backpressure/node/catalog/1674982210000000");
//! assert_eq!(command.action, CommandAction::Issue);
//! let Parameters::Backpressure(p) = &command.parameters else { unreachable!() };
//! assert_eq!(p.rate_limit_rps["frontend"], 59.25); // 0.5 × 118.5 req/s
//! assert_eq!(command.expires_at_us, 1_674_982_510_000_000); // + 5 min
//! assert_eq!(actions.alerts[0].action, AlertAction::Trigger);
//!
//! // Three windows without a finding (`resolve-after-windows`): the incident resolves in the
//! // third, and its command is revoked.
//! let mut end = window.end_us;
//! let mut quiet = || {
//!     end += 10_000_000;
//!     actuator.on_window(Window { start_us: end - 10_000_000, end_us: end }, &[], &[])
//! };
//! assert!(quiet().is_empty() && quiet().is_empty());
//! let actions = quiet();
//! assert_eq!(actions.commands[0].action, CommandAction::Revoke);
//! assert_eq!(actions.alerts[0].action, AlertAction::Resolve);
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod alerts;
pub mod config;
mod error;
pub mod patterns;
pub mod rails;
pub mod sign;

use std::collections::{BTreeMap, BTreeSet};

use schemas::{
    AuditRecord, CommandAction, Decision, Finding, Mode, PairWindow, Reason, RemediationCommand,
    SCHEMA_VERSION, Signature, Subject,
};
use serde::{Deserialize, Serialize};

pub use alerts::{AlertState, Alerts, Incident, dedup_key, finding_dedup_key};
pub use config::{ActuateConfig, AlertsConfig, PolicyConfig, RailsConfig, SigningConfig};
pub use error::{Error, Result};
pub use patterns::{OperationalPattern, Remedy};

use crate::patterns::build;
use crate::rails::{Rails, Reach, blast_radius, glob};
use crate::sign::Signer;

/// Event time of one minute, µs.
const MINUTE_US: i64 = 60_000_000;

/// What one window (or one advance of event time) asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Actions {
    /// Command messages (issue, renew, revoke), signed when a key is configured: revokes and
    /// renewals first, then issues, each in finding order.
    pub commands: Vec<RemediationCommand>,
    /// Alerts: triggers in finding order, then resolves in dedup-key order.
    pub alerts: Vec<schemas::Alert>,
    /// Every decision about a command, in the order taken.
    pub audit: Vec<AuditRecord>,
}

impl Actions {
    /// True when nothing was decided.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty() && self.alerts.is_empty() && self.audit.is_empty()
    }
}

/// One policy rule, validated: what it matches and its pattern.
#[derive(Debug, Clone)]
struct Rule {
    signature: Signature,
    rule: Option<String>,
    subject: String,
    min_severity: schemas::Severity,
    ttl_us: i64,
    pattern: std::sync::Arc<dyn OperationalPattern>,
}

impl Rule {
    /// Whether the rule acts on `f`, whose incident's severity is `severity` (the highest its
    /// findings reached: a quarantine issued when a deployment turned critical is renewed by
    /// the incident's later warnings).
    fn matches(&self, f: &Finding, severity: schemas::Severity) -> bool {
        f.signature == self.signature
            && severity >= self.min_severity
            && (self.rule.is_none() || self.rule == f.rule)
            && glob(&self.subject, &f.subject.key())
    }
}

/// Turns each closed window's findings into [`Actions`]; built from a validated
/// [`ActuateConfig`].
#[derive(Debug, Clone)]
pub struct Actuator {
    rules: Vec<Rule>,
    rails: Rails,
    mode: Mode,
    signer: Option<Signer>,
    alerts: Alerts,
    state: ActuatorState,
}

/// A command in force: its latest message (unsigned) and the policy rule behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveCommand {
    /// The latest message sent for it.
    pub command: RemediationCommand,
    /// The policy rule that asked for it (its index in `[[actuate.policy]]`).
    pub rule: usize,
    /// Every open incident that asked for it (two user rules on one node share a command):
    /// it is revoked when the last of them resolves. Empty in a checkpoint from before this
    /// field: the command's own `reason.incident` only.
    #[serde(default)]
    pub incidents: BTreeSet<String>,
    /// Backpressure: each limited caller's baseline rate, req/s, for the blast radius
    /// ([`Remedy::baseline_rps`]); empty in a checkpoint from before this field (the callers'
    /// current rates count then).
    #[serde(default)]
    pub baseline_rps: BTreeMap<String, f64>,
    /// The revision since which its proposed remedy is the same (renewals that change nothing
    /// keep it): an approval of any revision from it on approves what is proposed now.
    #[serde(default)]
    pub proposed_at: u32,
}

/// Everything an [`Actuator`] remembers between windows, to checkpoint and restore.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActuatorState {
    /// Commands in force, by `<pattern>/<subject key>`.
    #[serde(default)]
    pub active: BTreeMap<String, ActiveCommand>,
    /// Event times of the issues of the last minute, µs, oldest first.
    #[serde(default)]
    pub recent_issues_us: Vec<i64>,
    /// Commands a rail refused, by `<pattern>/<subject key>`, with the rail, until their
    /// incident resolves (a refusal is audited once per incident, not every window).
    #[serde(default)]
    pub suppressed: BTreeMap<String, (String, String)>,
    /// Open incidents.
    #[serde(default)]
    pub alerts: AlertState,
    /// Commands revoked because their incident resolved, by `<pattern>/<subject key>`, with
    /// their revoke message (target, parameters and mode as they were in force), for one TTL
    /// of their rule after the revoke: an incident that opens again on the same subject (it
    /// flapped) gets its command back under the same id, the next revision, and an approval
    /// it had (it was in enforce mode under `approval = true`) stands ([`Actuator::on_window`]).
    #[serde(default)]
    pub revoked: BTreeMap<String, ActiveCommand>,
}

impl ActiveCommand {
    /// What it asks for, as a remedy.
    fn remedy(&self) -> Remedy {
        Remedy {
            target: self.command.target.clone(),
            parameters: self.command.parameters.clone(),
            baseline_rps: self.baseline_rps.clone(),
        }
    }
}

/// The TTL of `a`'s policy rule, µs (its own, from a checkpoint restored under a policy that
/// lost the rule).
fn ttl_of(rules: &[Rule], a: &ActiveCommand) -> i64 {
    rules.get(a.rule).map_or(a.command.ttl_us, |r| r.ttl_us)
}

/// Until when (event time, µs) a revoked command comes back under its id: one TTL of its
/// rule after its revoke (none when a restored checkpoint names a rule the policy lost: the
/// revoke message's own TTL is 0).
fn held_until(rules: &[Rule], revoked: &ActiveCommand) -> i64 {
    revoked
        .command
        .issued_at_us
        .saturating_add(ttl_of(rules, revoked))
}

/// Why an approval is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApproveError {
    /// No command in force has this id (never issued, revoked or expired).
    #[error("no command {0} is in force (revoked, expired, or never issued)")]
    Unknown(String),
    /// The command is not waiting for an approval.
    #[error("command {id} is {mode}, not proposed")]
    NotProposed {
        /// The command's id.
        id: String,
        /// Its mode.
        mode: &'static str,
    },
    /// The approval names a revision older than the remedy proposed now (the command was
    /// proposed again since, wider), or one not sent yet.
    #[error(
        "command {id} is proposed at revision {current}, not {asked}: look at revision {current} and approve it"
    )]
    Revision {
        /// The command's id.
        id: String,
        /// The revision the operator approved.
        asked: u32,
        /// The revision proposed now.
        current: u32,
    },
}

impl TryFrom<ActuateConfig> for Actuator {
    type Error = Error;

    /// Validates the config: each policy rule's pattern parameters and TTL, the rails,
    /// `alerts.resolve-after-windows` >= 1, `approval` only with `mode = "enforce"`, and
    /// reads the signing key.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first offending key; [`Error::Key`] for the signing key.
    fn try_from(config: ActuateConfig) -> Result<Self> {
        if config.alerts.resolve_after_windows == 0 {
            return Err(Error::Config {
                key: "alerts.resolve-after-windows".into(),
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        if config.approval && config.mode != Mode::Enforce {
            return Err(Error::Config {
                key: "approval".into(),
                value: "true".into(),
                reason: "approves enforcement: set mode = \"enforce\" too".into(),
            });
        }
        if config.mode == Mode::Proposed {
            return Err(Error::Config {
                key: "mode".into(),
                value: "\"proposed\"".into(),
                reason: "must be dry-run or enforce (proposing is `approval = true`)".into(),
            });
        }
        let mut rules = Vec::new();
        for (i, r) in config.policy.iter().enumerate() {
            let ttl_us = i64::try_from(r.ttl.as_micros()).unwrap_or(0);
            if ttl_us <= 0 {
                return Err(Error::Config {
                    key: format!("policy[{i}].ttl"),
                    value: format!("{:?}", r.ttl),
                    reason: "must be at least 1µs and at most 292 years".into(),
                });
            }
            if r.rule.is_some() && r.signature != Signature::Rule {
                return Err(Error::Config {
                    key: format!("policy[{i}].rule"),
                    value: format!("{:?}", r.rule.as_deref().unwrap_or_default()),
                    reason: "names a user rule: only with signature = \"rule\"".into(),
                });
            }
            let pattern = build(i, r)?;
            // the subjects a finding of this signature can have that the pattern acts on
            let acts_on = pattern.subject_kinds();
            let kinds: Vec<&str> = r
                .signature
                .subject_kinds()
                .iter()
                .copied()
                .filter(|k| acts_on.contains(k))
                .collect();
            if kinds.is_empty() {
                return Err(Error::Config {
                    key: format!("policy[{i}].pattern"),
                    value: format!("{:?}", r.pattern.as_str()),
                    reason: format!(
                        "acts on {} subjects, and {} findings are about {}: the rule could never act",
                        acts_on.join(" or "),
                        r.signature,
                        r.signature.subject_kinds().join(" or ")
                    ),
                });
            }
            if !can_match(&r.subject, &kinds) {
                let shapes: Vec<&str> = kinds.iter().map(|k| Subject::key_shape(k)).collect();
                let hint = match kinds[..] {
                    [kind] if !r.subject.contains('/') && kind != "landscape" => {
                        format!(" (did you mean \"{kind}/{}\"?)", r.subject)
                    }
                    _ => String::new(),
                };
                return Err(Error::Config {
                    key: format!("policy[{i}].subject"),
                    value: format!("{:?}", r.subject),
                    reason: format!(
                        "matches no {} finding {} acts on, whose subject keys read {}{hint}",
                        r.signature,
                        r.pattern.as_str(),
                        shapes.join(" or ")
                    ),
                });
            }
            rules.push(Rule {
                signature: r.signature,
                rule: r.rule.clone(),
                subject: r.subject.clone(),
                min_severity: r.min_severity.unwrap_or(match r.signature {
                    Signature::DeployRegression => schemas::Severity::Critical,
                    _ => schemas::Severity::Warning,
                }),
                ttl_us,
                pattern: pattern.into(),
            });
        }
        Ok(Actuator {
            rules,
            rails: Rails::new(&config.rails)?,
            mode: if config.approval {
                Mode::Proposed
            } else {
                config.mode
            },
            signer: Signer::from_config(&config.signing)?,
            alerts: Alerts::new(config.alerts.resolve_after_windows),
            state: ActuatorState::default(),
        })
    }
}

/// Whether the subject glob `pattern` can match the key of a subject of one of `kinds`
/// (`node`, `pair`, …; see [`Signature::subject_kinds`]): its literal start (up to the first
/// `*` or `?`) agrees with `<kind>/`, and without a `*` it has room for the kind's `/`s (a
/// `?` may stand for one; names may hold more) and is as long as such a key can be.
fn can_match(pattern: &str, kinds: &[&str]) -> bool {
    let literal = &pattern[..pattern.find(['*', '?']).unwrap_or(pattern.len())];
    let star = pattern.contains('*');
    let slashes = pattern.matches('/').count();
    let unknown = pattern.matches('?').count();
    kinds.iter().any(|&kind| {
        // node/<service>: 2 segments; zones/<from>/<to>/<source>/<destination>: 6
        let segments = Subject::key_shape(kind).matches('/').count() + 1;
        if segments == 1 {
            // the landscape: its key is the kind alone
            return kind.starts_with(literal) && (star || pattern.len() == kind.len());
        }
        let start = format!("{kind}/");
        let shortest = kind.len() + 2 * (segments - 1);
        (literal.starts_with(&start)
            || (literal.len() < pattern.len() && start.starts_with(literal)))
            && (star || (slashes + unknown >= segments - 1 && pattern.len() >= shortest))
    })
}

fn audit(at_us: i64, decision: Decision, c: &RemediationCommand, detail: String) -> AuditRecord {
    AuditRecord {
        schema_version: SCHEMA_VERSION,
        kind: "audit".into(),
        at_us,
        decision,
        command: c.id.clone(),
        pattern: c.pattern(),
        revision: c.revision,
        rail: None,
        reason: c.reason.clone(),
        detail,
    }
}

fn reason(f: &Finding) -> Reason {
    Reason {
        finding: f.id.clone(),
        signature: f.signature,
        incident: finding_dedup_key(f),
        summary: f.summary.clone(),
    }
}

impl Actuator {
    /// Whether commands are signed.
    pub fn signs(&self) -> bool {
        self.signer.is_some()
    }

    /// Incidents of every signature resolve after at least `windows(signature)` quiet windows:
    /// give the detectors' `resolve-after`, so that alerts (and the commands they revoke)
    /// follow the detectors' incidents instead of resolving and triggering again while a
    /// detector holds one open.
    pub fn align_resolve_after(&mut self, windows: impl Fn(Signature) -> u32) {
        for s in Signature::ALL {
            self.alerts.resolve_after(s, windows(s));
        }
    }

    /// Scaled out over `parts` judges (`[scale-out]`'s stage-2 partitions), each acting only
    /// for the nodes it owns and knowing nothing of the others' commands: each gets its share
    /// of the rails, so that together they stay within them without talking to each other.
    /// `max-active` and `max-new-per-minute` become ⌊limit / parts⌋ (at least 1; validation
    /// refuses enforce mode with a limit below `parts`), and `max-blast-radius` becomes half
    /// of it, measured over the pairs the judge sees: a pair is seen by the judges of its two
    /// ends only, so the judges' traffic sums to at most twice the landscape's `T`, and what
    /// their commands match to at most `Σ ½·c·Tⱼ ≤ c·T`.
    pub fn share_rails(&mut self, parts: usize) {
        let parts = parts.max(1);
        if parts == 1 {
            return;
        }
        let r = &mut self.rails;
        r.max_active = (r.max_active / parts).max(1);
        r.max_new_per_minute = (r.max_new_per_minute / parts).max(1);
        r.max_blast_radius /= 2.0;
    }

    /// The rails in force (after [`Actuator::share_rails`]).
    pub fn rails(&self) -> &Rails {
        &self.rails
    }

    /// One line for `graywatch validate`: mode, policy rules, signing.
    pub fn summary(&self) -> String {
        let patterns: Vec<String> = self
            .rules
            .iter()
            .map(|r| {
                format!(
                    "{} → {}",
                    r.signature.as_str(),
                    r.pattern.pattern().as_str()
                )
            })
            .collect();
        format!(
            "{} commands, {} policy rule(s) ({}), {}",
            self.mode.as_str(),
            self.rules.len(),
            patterns.join(", "),
            match &self.signer {
                Some(s) => format!("signed with key {:?}", s.key_id()),
                None => "unsigned (no [actuate.signing] key)".to_owned(),
            }
        )
    }

    /// Called once per closed window, in window order, with that window's findings (possibly
    /// none) and pairs (for the blast radius). Decisions are taken at `window.end_us`.
    pub fn on_window(
        &mut self,
        window: schemas::Window,
        findings: &[Finding],
        pairs: &[PairWindow],
    ) -> Actions {
        let now_us = window.end_us;
        let mut out = self.advance(now_us);
        out.alerts = self.alerts.on_window(now_us, findings);
        let resolved: BTreeSet<String> = out
            .alerts
            .iter()
            .filter(|a| a.action == schemas::AlertAction::Resolve)
            .map(|a| a.dedup_key.clone())
            .collect();
        self.revoke_resolved(now_us, &resolved, &mut out);
        self.state
            .suppressed
            .retain(|_, (incident, _)| !resolved.contains(incident));

        // what the policy asks for, merged per command key in finding order
        let mut asked: BTreeMap<String, (usize, Remedy, &Finding)> = BTreeMap::new();
        // the incidents behind each asked command
        let mut asking: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut order: Vec<String> = Vec::new();
        for f in findings {
            let severity = self
                .alerts
                .state()
                .open
                .get(&finding_dedup_key(f))
                .map_or(f.severity, |i| i.severity.max(f.severity));
            let mut patterns = BTreeSet::new();
            for (i, rule) in self.rules.iter().enumerate() {
                if !rule.matches(f, severity) || !patterns.insert(rule.pattern.pattern()) {
                    continue;
                }
                let Some(remedy) = rule.pattern.remedy(f) else {
                    continue;
                };
                let key = format!("{}/{}", rule.pattern.pattern().as_str(), f.subject.key());
                asking
                    .entry(key.clone())
                    .or_default()
                    .insert(finding_dedup_key(f));
                match asked.get_mut(&key) {
                    Some((j, before, _)) => *before = self.rules[*j].pattern.merge(before, remedy),
                    None => {
                        order.push(key.clone());
                        asked.insert(key, (i, remedy, f));
                    }
                }
            }
        }
        let mut issues = Vec::new();
        for key in order {
            let (i, remedy, f) = asked.remove(&key).expect("ordered keys are asked");
            if self.state.active.contains_key(&key) {
                self.renew(now_us, &key, remedy, f, pairs, &mut out);
            } else {
                issues.extend(self.issue(now_us, key.clone(), i, remedy, f, pairs, &mut out));
            }
            if let Some(a) = self.state.active.get_mut(&key) {
                a.incidents.extend(asking.remove(&key).unwrap_or_default());
            }
        }
        out.commands.extend(issues);
        if let Some(signer) = &self.signer {
            for c in &mut out.commands {
                signer.sign(c);
            }
        }
        out
    }

    /// Moves event time to `now_us` without a window (every input idle): commands whose
    /// expiry has come are dropped, each with an `expired` audit record. Also the first step
    /// of [`Actuator::on_window`].
    pub fn advance(&mut self, now_us: i64) -> Actions {
        let mut out = Actions::default();
        let expired: Vec<String> = self
            .state
            .active
            .iter()
            .filter(|(_, a)| a.command.expires_at_us <= now_us)
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            let a = self.state.active.remove(&key).expect("listed");
            out.audit.push(audit(
                now_us,
                Decision::Expired,
                &a.command,
                format!(
                    "expired at {} (event time) without a renewal",
                    a.command.expires_at_us
                ),
            ));
        }
        self.state
            .recent_issues_us
            .retain(|&t| t > now_us - MINUTE_US);
        let rules = &self.rules;
        self.state
            .revoked
            .retain(|_, r| held_until(rules, r) > now_us);
        out
    }

    /// An operator approves the proposed command `id` (at `revision`, when given: the one
    /// they looked at) at event time `now_us`: it is sent again as an `issue` in enforce mode
    /// (next revision, a fresh TTL), and audited.
    ///
    /// # Errors
    /// [`ApproveError`]: no such command in force, not a proposed one, or proposed now at
    /// another revision than `revision`.
    pub fn approve(
        &mut self,
        id: &str,
        revision: Option<u32>,
        now_us: i64,
    ) -> std::result::Result<Actions, ApproveError> {
        let rules = &self.rules;
        let Some(a) = self.state.active.values_mut().find(|a| a.command.id == id) else {
            return Err(ApproveError::Unknown(id.to_owned()));
        };
        if a.command.mode != Mode::Proposed {
            return Err(ApproveError::NotProposed {
                id: id.to_owned(),
                mode: a.command.mode.as_str(),
            });
        }
        let now_proposed = a.proposed_at..=a.command.revision;
        if let Some(asked) = revision.filter(|r| !now_proposed.contains(r)) {
            return Err(ApproveError::Revision {
                id: id.to_owned(),
                asked,
                current: a.command.revision,
            });
        }
        let ttl_us = ttl_of(rules, a);
        let c = &mut a.command;
        c.mode = Mode::Enforce;
        c.action = CommandAction::Issue;
        c.revision += 1;
        c.issued_at_us = now_us;
        c.ttl_us = ttl_us;
        c.expires_at_us = now_us.saturating_add(ttl_us);
        let mut out = Actions::default();
        out.audit.push(audit(
            now_us,
            Decision::Approved,
            c,
            "approved by an operator: enforced".into(),
        ));
        let mut sent = c.clone();
        if let Some(signer) = &self.signer {
            signer.sign(&mut sent);
        }
        out.commands.push(sent);
        Ok(out)
    }

    fn revoke_resolved(&mut self, now_us: i64, resolved: &BTreeSet<String>, out: &mut Actions) {
        // a command goes when the last incident that asked for it resolves
        let mut keys: Vec<String> = Vec::new();
        for (k, a) in &mut self.state.active {
            if a.incidents.is_empty() {
                a.incidents.insert(a.command.reason.incident.clone());
            }
            a.incidents.retain(|i| !resolved.contains(i));
            if a.incidents.is_empty() {
                keys.push(k.clone());
            }
        }
        for key in keys {
            let mut a = self.state.active.remove(&key).expect("listed");
            let c = &mut a.command;
            c.action = CommandAction::Revoke;
            c.revision += 1;
            c.issued_at_us = now_us;
            c.ttl_us = 0;
            c.expires_at_us = now_us;
            out.audit.push(audit(
                now_us,
                Decision::Revoked,
                c,
                "every incident that asked for it resolved".into(),
            ));
            out.commands.push(c.clone());
            self.state.revoked.insert(key, a);
        }
    }

    /// A rail that refuses `remedy` as a new command or a wider one (`replacing`: the key of
    /// the command it would replace, left out of the blast radius).
    fn refused_by(
        &self,
        remedy: &Remedy,
        signature: Signature,
        replacing: Option<&str>,
        now_us: i64,
        pairs: &[PairWindow],
    ) -> Option<(&'static str, String)> {
        if self.rails.protects(&remedy.target) {
            return Some((
                "protected",
                "its target touches a protected service or edge".into(),
            ));
        }
        if replacing.is_none() {
            if self.state.active.len() >= self.rails.max_active {
                return Some((
                    "max-active",
                    format!("{} commands in force already", self.state.active.len()),
                ));
            }
            let recent = self
                .state
                .recent_issues_us
                .iter()
                .filter(|&&t| t > now_us - MINUTE_US)
                .count();
            if recent >= self.rails.max_new_per_minute {
                return Some((
                    "max-new-per-minute",
                    format!("{recent} commands issued in the last minute"),
                ));
            }
        }
        let targets = self
            .state
            .active
            .iter()
            .filter(|(k, _)| Some(k.as_str()) != replacing)
            .map(|(_, a)| Reach {
                target: &a.command.target,
                parameters: &a.command.parameters,
                signature: a.command.reason.signature,
                baseline_rps: &a.baseline_rps,
            })
            .chain(std::iter::once(Reach {
                target: &remedy.target,
                parameters: &remedy.parameters,
                signature,
                baseline_rps: &remedy.baseline_rps,
            }));
        let share = blast_radius(targets, pairs);
        if share > self.rails.max_blast_radius {
            return Some((
                "blast-radius",
                format!(
                    "the commands in force would match {:.2} % of the landscape's requests (at most {:.2} %)",
                    100.0 * share,
                    100.0 * self.rails.max_blast_radius
                ),
            ));
        }
        None
    }

    #[allow(clippy::too_many_arguments)]
    fn issue(
        &mut self,
        now_us: i64,
        key: String,
        rule: usize,
        remedy: Remedy,
        f: &Finding,
        pairs: &[PairWindow],
        out: &mut Actions,
    ) -> Option<RemediationCommand> {
        let ttl_us = self.rules[rule].ttl_us;
        let pattern = remedy.parameters.pattern();
        // a flapping incident gets its revoked command back: same id, next revision; an
        // approval stands for what was approved (a remedy that asks for no more than it)
        let mut remedy = remedy;
        let (mut id, mut revision, mut mode) = (
            format!("{}/{}/{now_us}", pattern.as_str(), f.subject.key()),
            0,
            self.mode,
        );
        let mut approved = false;
        let mut back = None;
        let held = self
            .state
            .revoked
            .get(&key)
            .filter(|r| held_until(&self.rules, r) > now_us);
        if let Some(r) = held {
            id.clone_from(&r.command.id);
            revision = r.command.revision + 1;
            // approved: enforced while the policy asks for approval
            if r.command.mode == Mode::Enforce && self.mode == Mode::Proposed {
                let was = r.remedy();
                let within = self.rules[rule].pattern.merge(&was, remedy.clone());
                if within == was {
                    (remedy, mode, approved) = (was, Mode::Enforce, true);
                }
            }
            back = Some(r.command.revision);
        }
        let command = RemediationCommand {
            schema_version: SCHEMA_VERSION,
            kind: "remediation-command".into(),
            id,
            action: CommandAction::Issue,
            revision,
            parameters: remedy.parameters.clone(),
            target: remedy.target.clone(),
            issued_at_us: now_us,
            ttl_us,
            expires_at_us: now_us.saturating_add(ttl_us),
            reason: reason(f),
            mode,
            signature: None,
        };
        if let Some((rail, why)) = self.refused_by(&remedy, f.signature, None, now_us, pairs) {
            let incident = command.reason.incident.clone();
            let before = self
                .state
                .suppressed
                .insert(key, (incident, rail.to_owned()));
            if before.as_ref().map(|(_, r)| r.as_str()) != Some(rail) {
                let mut a = audit(now_us, Decision::Suppressed, &command, why);
                a.rail = Some(rail.to_owned());
                out.audit.push(a);
            }
            return None;
        }
        self.state.suppressed.remove(&key);
        self.state.revoked.remove(&key);
        self.state.recent_issues_us.push(now_us);
        let decision = if command.mode == Mode::Proposed {
            Decision::Proposed
        } else {
            Decision::Issued
        };
        let again = match back {
            None => String::new(),
            Some(r) if approved => {
                format!("; back after its revoke (revision {r}): the operator's approval stands")
            }
            Some(r) => format!("; back after its revoke (revision {r})"),
        };
        out.audit.push(audit(
            now_us,
            decision,
            &command,
            format!("{} ({}){again}", f.summary, command.mode.as_str()),
        ));
        self.state.active.insert(
            key,
            ActiveCommand {
                command: command.clone(),
                rule,
                incidents: BTreeSet::new(),
                baseline_rps: remedy.baseline_rps,
                proposed_at: revision,
            },
        );
        Some(command)
    }

    fn renew(
        &mut self,
        now_us: i64,
        key: &str,
        remedy: Remedy,
        f: &Finding,
        pairs: &[PairWindow],
        out: &mut Actions,
    ) {
        let a = &self.state.active[key];
        // a checkpoint restored under another policy may name a rule that is gone
        let rule = self.rules.get(a.rule);
        let before = a.remedy();
        let mut merged = rule.map_or_else(|| before.clone(), |r| r.pattern.merge(&before, remedy));
        let mut wider = merged != before;
        let half_gone = now_us >= a.command.expires_at_us - a.command.ttl_us / 2;
        if !wider && !half_gone {
            return;
        }
        let ttl_us = ttl_of(&self.rules, a);
        if wider
            && let Some((rail, why)) =
                self.refused_by(&merged, f.signature, Some(key), now_us, pairs)
        {
            // audited once per incident and rail, like a refused issue
            let mut record = audit(now_us, Decision::Suppressed, &a.command, why);
            record.detail = format!("not widened: {}", record.detail);
            record.rail = Some(rail.to_owned());
            let incident = a.command.reason.incident.clone();
            let earlier = self
                .state
                .suppressed
                .insert(format!("{key} (widening)"), (incident, rail.to_owned()));
            if earlier.as_ref().map(|(_, r)| r.as_str()) != Some(rail) {
                out.audit.push(record);
            }
            if !half_gone {
                return;
            }
            // the command goes on as it was
            merged = before;
            wider = false;
        }
        // with approval, what was approved is what may be enforced: a wider command is
        // proposed again (an enforcement point holds it until it is approved)
        let again = wider && self.mode == Mode::Proposed && a.command.mode == Mode::Enforce;
        let a = self.state.active.get_mut(key).expect("in force");
        a.baseline_rps = merged.baseline_rps;
        if again {
            a.command.mode = Mode::Proposed;
        }
        if wider && a.command.mode == Mode::Proposed {
            // what an operator approves from now on is this revision's remedy
            a.proposed_at = a.command.revision + 1;
        }
        let c = &mut a.command;
        c.action = CommandAction::Renew;
        c.revision += 1;
        c.target = merged.target;
        c.parameters = merged.parameters;
        c.issued_at_us = now_us;
        c.ttl_us = ttl_us;
        c.expires_at_us = now_us.saturating_add(ttl_us);
        c.reason = reason(f);
        let (decision, detail) = if again {
            (
                Decision::Proposed,
                "wider than what an operator approved: proposed again, not enforced until approved",
            )
        } else if wider {
            (
                Decision::Renewed,
                "renewed with a wider target or new parameters",
            )
        } else {
            (Decision::Renewed, "renewed: its incident goes on")
        };
        out.audit.push(audit(now_us, decision, c, detail.into()));
        out.commands.push(c.clone());
    }

    /// A copy of the state, to checkpoint.
    pub fn state(&self) -> ActuatorState {
        ActuatorState {
            alerts: self.alerts.state().clone(),
            ..self.state.clone()
        }
    }

    /// Replaces the state with a checkpointed one (the config stays as built).
    pub fn restore(&mut self, mut state: ActuatorState) {
        // the open incidents live in `alerts` only; `state()` puts them back in a copy
        self.alerts.restore(std::mem::take(&mut state.alerts));
        self.state = state;
    }
}

#[cfg(test)]
mod tests;
