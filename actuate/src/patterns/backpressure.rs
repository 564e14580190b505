//! Backpressure: rate-limit the callers of a node that swallows their requests.
//!
//! The remedy for a black hole (MISSION.md, example 1): while the node receives requests and
//! answers none, every request sent to it is wasted and holds resources on the caller's side.
//! Each caller is limited to `rate-fraction` × its baseline rate to the node until the command
//! expires (`ttl`, event time) or an operator replaces the node.
//!
//! One command per node at a time: while a command for the node is in force, later findings
//! for it issue nothing — unless a caller that the command does not cover appears, in which
//! case a new command covers every caller (the old ones keep their limits).
//!
//! Never on one source's evidence alone: a command limits several callers only when the
//! finding shows at least two of them saw the failure themselves (its
//! [`schemas::COLLAPSED_CALLERS`] evidence); a finding with a single caller limits only that
//! caller, whose own traffic is the evidence. A finding with several callers and fewer than two
//! witnesses (or no such evidence) issues nothing: the failure could be one caller's doing, and
//! limiting the others would punish them for it.

use std::collections::BTreeMap;

use schemas::{
    COLLAPSED_CALLERS, Finding, Mode, Pattern, RemediationCommand, SCHEMA_VERSION, Signature,
    Subject,
};
use serde::{Deserialize, Serialize};

use crate::config::BackpressureConfig;
use crate::error::{Error, Result};

/// Prefix of the per-caller parameter: `rate_limit_rps.<caller>` is the rate, req/s, the caller
/// may send to the command's destination.
pub const RATE_LIMIT_PARAMETER: &str = "rate_limit_rps";

/// The backpressure pattern, validated from [`BackpressureConfig`], with its state.
#[derive(Debug, Clone)]
pub struct Backpressure {
    /// Fraction of a caller's baseline rate it keeps, in (0, 1].
    rate_fraction: f64,
    /// Lifetime of a command, µs of event time, > 0.
    ttl_us: i64,
    mode: Mode,
    state: BackpressureState,
}

/// What backpressure remembers between windows: the latest command per node while it may
/// still be in force. Plain data, so it can be checkpointed with the input offsets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackpressureState {
    /// Latest command per destination node. Dropped once expired.
    pub active: BTreeMap<String, ActiveCommand>,
}

/// The part of an issued command that later windows need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveCommand {
    /// The command's id.
    pub id: String,
    /// Event time at which it stops being in force, µs since the epoch.
    pub expires_at_us: i64,
    /// The limit it set per calling service, req/s.
    pub rate_limits_rps: BTreeMap<String, f64>,
}

impl TryFrom<BackpressureConfig> for Backpressure {
    type Error = Error;

    /// Validates `0 < rate-fraction <= 1` and `0 < ttl <= i64::MAX µs`.
    ///
    /// # Errors
    /// [`Error::Config`] naming `backpressure.rate-fraction` or `backpressure.ttl`.
    fn try_from(config: BackpressureConfig) -> Result<Self> {
        let f = config.rate_fraction;
        // Written so that NaN fails too.
        if !(f > 0.0 && f <= 1.0) {
            return Err(Error::Config {
                key: "backpressure.rate-fraction",
                value: f.to_string(),
                reason: "must be greater than 0 and at most 1",
            });
        }
        let ttl = config.ttl;
        let ttl_us = i64::try_from(ttl.as_micros()).unwrap_or(0);
        if ttl_us <= 0 {
            return Err(Error::Config {
                key: "backpressure.ttl",
                value: humantime_serde::re::humantime::format_duration(ttl).to_string(),
                reason: "must be at least 1µs and at most 292 years",
            });
        }
        Ok(Backpressure {
            rate_fraction: f,
            ttl_us,
            mode: config.mode,
            state: BackpressureState::default(),
        })
    }
}

/// Per node, the callers to limit in this window and the finding that asks for it.
struct Request<'a> {
    /// Id of the first black-hole finding for the node in the window.
    reason: &'a str,
    /// Rate each caller's limit is a fraction of, req/s (baseline, or current rate).
    base_rps: BTreeMap<&'a str, f64>,
}

/// How many callers saw the finding's failure themselves (its [`COLLAPSED_CALLERS`] evidence;
/// 0 when absent or not a number).
fn witnesses(finding: &Finding) -> f64 {
    finding
        .evidence
        .iter()
        .find(|e| e.signal == COLLAPSED_CALLERS)
        .map_or(0.0, |e| if e.value.is_finite() { e.value } else { 0.0 })
}

impl Backpressure {
    /// Turns one closed window's findings into backpressure commands.
    ///
    /// `now_us` is the window's end, µs since the epoch: commands are issued at it and commands
    /// issued earlier count as in force while `now_us < expires_at_us`. Only
    /// [`Signature::BlackHole`] findings on a [`Subject::Node`] ask for backpressure; a caller
    /// is limited to `rate_fraction` × its `baseline_rate_rps`, or × its `rate_rps` when the
    /// baseline is 0. A caller with neither (both 0, negative or not finite) is left out: a limit
    /// of 0 req/s would deny the edge, which is segmentation, not backpressure. A finding with
    /// no caller left issues nothing. A caller listed twice for one node in one window counts
    /// with its larger rate. A finding with several callers but fewer than two
    /// [`COLLAPSED_CALLERS`] issues nothing (see the module docs). Commands come out in node
    /// order.
    pub fn on_window(&mut self, now_us: i64, findings: &[Finding]) -> Vec<RemediationCommand> {
        self.state
            .active
            .retain(|_, active| now_us < active.expires_at_us);

        let mut requests: BTreeMap<&str, Request<'_>> = BTreeMap::new();
        for finding in findings {
            let (Signature::BlackHole, Subject::Node { node }) =
                (finding.signature, &finding.subject)
            else {
                continue;
            };
            if finding.callers.len() > 1 && witnesses(finding) < 2.0 {
                continue;
            }
            let request = requests.entry(node).or_insert_with(|| Request {
                reason: &finding.id,
                base_rps: BTreeMap::new(),
            });
            for caller in &finding.callers {
                let base = [caller.baseline_rate_rps, caller.rate_rps]
                    .into_iter()
                    .find(|r| r.is_finite() && *r > 0.0);
                if let Some(base) = base {
                    let slot = request.base_rps.entry(&caller.service).or_insert(0.0);
                    *slot = slot.max(base);
                }
            }
        }

        let mut commands = Vec::new();
        for (node, request) in requests {
            if request.base_rps.is_empty() {
                continue;
            }
            let mut limits: BTreeMap<String, f64> = request
                .base_rps
                .iter()
                .map(|(caller, base)| ((*caller).to_owned(), self.rate_fraction * base))
                .collect();
            if let Some(active) = self.state.active.get(node) {
                if limits
                    .keys()
                    .all(|caller| active.rate_limits_rps.contains_key(caller))
                {
                    continue;
                }
                // The caller set grew: the new command covers the old callers too, at the
                // limits they already have.
                for (caller, limit) in &active.rate_limits_rps {
                    limits.entry(caller.clone()).or_insert(*limit);
                }
            }
            let command = self.command(node, now_us, request.reason, &limits);
            self.state.active.insert(
                node.to_owned(),
                ActiveCommand {
                    id: command.id.clone(),
                    expires_at_us: command.expires_at_us,
                    rate_limits_rps: limits,
                },
            );
            commands.push(command);
        }
        commands
    }

    fn command(
        &self,
        node: &str,
        issued_at_us: i64,
        reason: &str,
        limits: &BTreeMap<String, f64>,
    ) -> RemediationCommand {
        let pattern = Pattern::Backpressure;
        RemediationCommand {
            schema_version: SCHEMA_VERSION,
            kind: "remediation-command".to_owned(),
            id: format!("{}/{node}/{issued_at_us}", pattern.as_str()),
            pattern,
            target: schemas::Target {
                sources: limits.keys().cloned().collect(),
                destination: node.to_owned(),
            },
            parameters: limits
                .iter()
                .map(|(caller, limit)| (format!("{RATE_LIMIT_PARAMETER}.{caller}"), *limit))
                .collect(),
            issued_at_us,
            expires_at_us: issued_at_us.saturating_add(self.ttl_us),
            reason: reason.to_owned(),
            mode: self.mode,
        }
    }

    /// The state to checkpoint.
    pub fn state(&self) -> &BackpressureState {
        &self.state
    }

    /// Replaces the state with a checkpointed one.
    pub fn restore(&mut self, state: BackpressureState) {
        self.state = state;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use schemas::{Caller, Severity, Window};

    use super::*;

    const T0: i64 = 1_674_982_200_000_000; // 2023-01-29T08:50:00Z
    const W: i64 = 10_000_000; // 10 s windows

    fn backpressure(rate_fraction: f64, ttl: Duration) -> Backpressure {
        Backpressure::try_from(BackpressureConfig {
            rate_fraction,
            ttl,
            mode: Mode::Enforce,
        })
        .unwrap()
    }

    fn caller(service: &str, rate_rps: f64, baseline_rate_rps: f64) -> Caller {
        Caller {
            service: service.into(),
            rate_rps,
            baseline_rate_rps,
        }
    }

    /// A black-hole finding on `node` in window `i` (`[T0 + i·W, T0 + (i+1)·W)`).
    fn black_hole(node: &str, i: i64, callers: Vec<Caller>) -> Finding {
        let window = Window {
            start_us: T0 + i * W,
            end_us: T0 + (i + 1) * W,
        };
        Finding {
            schema_version: SCHEMA_VERSION,
            kind: "finding".into(),
            id: format!("black-hole/node/{node}/{}", window.start_us),
            signature: Signature::BlackHole,
            subject: Subject::Node { node: node.into() },
            window,
            severity: Severity::Critical,
            evidence: vec![schemas::Evidence {
                signal: COLLAPSED_CALLERS.into(),
                value: callers.len() as f64,
                baseline: callers.len() as f64,
                unit: "callers".into(),
                tail_probability: None,
            }],
            callers,
            summary: format!("{node} answers nothing"),
            score: 0.0,
            confidence: schemas::Confidence::Normal,
            related: Vec::new(),
            rule: None,
        }
    }

    fn end(i: i64) -> i64 {
        T0 + (i + 1) * W
    }

    #[test]
    fn rate_limits_are_a_fraction_of_each_callers_baseline() {
        let mut bp = backpressure(0.5, Duration::from_secs(300));
        // Callers out of order, to check that sources come out sorted.
        let f = black_hole(
            "catalog",
            0,
            vec![
                caller("frontend", 120.0, 118.5),
                caller("checkout", 30.0, 29.5),
                caller("batch", 4.0, 0.0), // no baseline yet: its current rate counts
            ],
        );
        let commands = bp.on_window(end(0), std::slice::from_ref(&f));
        assert_eq!(commands.len(), 1);
        let c = &commands[0];
        assert_eq!(c.schema_version, 1);
        assert_eq!(c.kind, "remediation-command");
        assert_eq!(c.pattern, Pattern::Backpressure);
        assert_eq!(c.id, "backpressure/catalog/1674982210000000");
        assert_eq!(c.target.destination, "catalog");
        assert_eq!(c.target.sources, ["batch", "checkout", "frontend"]);
        // 0.5 × 4.0 = 2.0 (current rate), 0.5 × 29.5 = 14.75, 0.5 × 118.5 = 59.25.
        let expected = BTreeMap::from([
            ("rate_limit_rps.batch".to_owned(), 2.0),
            ("rate_limit_rps.checkout".to_owned(), 14.75),
            ("rate_limit_rps.frontend".to_owned(), 59.25),
        ]);
        assert_eq!(c.parameters, expected);
        assert_eq!(c.issued_at_us, 1_674_982_210_000_000);
        // 5 min = 300 000 000 µs after issue.
        assert_eq!(c.expires_at_us, 1_674_982_510_000_000);
        assert_eq!(c.reason, "black-hole/node/catalog/1674982200000000");
        assert_eq!(c.mode, Mode::Enforce);
    }

    #[test]
    fn no_command_limits_others_on_one_callers_evidence() {
        let mut bp = backpressure(0.5, Duration::from_secs(300));
        let callers = || vec![caller("checkout", 8.0, 8.0), caller("scraper", 160.0, 0.0)];
        let mut f = black_hole("payments", 0, callers());
        // only one of the two callers saw the failure: it could be that caller's doing
        f.evidence[0].value = 1.0;
        assert!(bp.on_window(end(0), std::slice::from_ref(&f)).is_empty());
        // no such evidence at all: the same
        f.evidence.clear();
        assert!(bp.on_window(end(0), std::slice::from_ref(&f)).is_empty());
        // two witnesses: every caller is limited
        let f = black_hole("payments", 1, callers());
        let c = &bp.on_window(end(1), &[f])[0];
        assert_eq!(c.target.sources, ["checkout", "scraper"]);
        // a single caller, the source of the evidence, is limited alone
        let mut f = black_hole("ledger", 1, vec![caller("payments", 20.0, 20.0)]);
        f.evidence[0].value = 1.0;
        let c = &bp.on_window(end(1), &[f])[0];
        assert_eq!(c.target.sources, ["payments"]);
    }

    #[test]
    fn callers_with_no_rate_at_all_are_left_out() {
        let mut bp = backpressure(0.25, Duration::from_secs(60));
        let f = black_hole(
            "catalog",
            0,
            vec![
                caller("idle", 0.0, 0.0),
                caller("broken", f64::NAN, -1.0),
                caller("frontend", 10.0, 8.0),
            ],
        );
        let c = &bp.on_window(end(0), &[f])[0];
        assert_eq!(c.target.sources, ["frontend"]);
        // 0.25 × 8.0 = 2.0
        assert_eq!(c.parameters["rate_limit_rps.frontend"], 2.0);

        // Nothing left to limit: no command.
        let f = black_hole("orders", 1, vec![caller("idle", 0.0, 0.0)]);
        assert!(bp.on_window(end(1), &[f]).is_empty());
        let f = black_hole("orders", 2, vec![]);
        assert!(bp.on_window(end(2), &[f]).is_empty());
    }

    #[test]
    fn no_second_command_while_the_first_is_in_force_and_a_new_one_after_expiry() {
        // TTL 30 s, windows of 10 s: the command issued at the end of window 0 (T0 + 10 s)
        // expires at T0 + 40 s, the end of window 3.
        let mut bp = backpressure(0.5, Duration::from_secs(30));
        let callers = || vec![caller("frontend", 100.0, 100.0)];
        let first = bp.on_window(end(0), &[black_hole("catalog", 0, callers())]);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].expires_at_us, T0 + 40_000_000);
        // Windows 1 and 2 end at T0 + 20 s and T0 + 30 s: still in force.
        for i in [1, 2] {
            assert!(
                bp.on_window(end(i), &[black_hole("catalog", i, callers())])
                    .is_empty()
            );
        }
        // At T0 + 40 s it has expired (in force while now < expires_at_us): a new command.
        let again = bp.on_window(end(3), &[black_hole("catalog", 3, callers())]);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].id, "backpressure/catalog/1674982240000000");
        assert_eq!(again[0].issued_at_us, T0 + 40_000_000);
        assert_eq!(again[0].expires_at_us, T0 + 70_000_000);
        assert_eq!(again[0].reason, "black-hole/node/catalog/1674982230000000");
        // 0.5 × 100 = 50
        assert_eq!(again[0].parameters["rate_limit_rps.frontend"], 50.0);
    }

    #[test]
    fn a_window_without_findings_issues_nothing_and_forgets_expired_commands() {
        let mut bp = backpressure(0.5, Duration::from_secs(10));
        bp.on_window(
            end(0),
            &[black_hole("catalog", 0, vec![caller("a", 1.0, 1.0)])],
        );
        assert_eq!(bp.state().active.len(), 1);
        // Issued at end(0), expires at end(0) + 10 s = end(1).
        assert!(bp.on_window(end(1), &[]).is_empty());
        assert!(bp.state().active.is_empty());
    }

    #[test]
    fn a_new_caller_gets_a_new_command_covering_every_caller() {
        let mut bp = backpressure(0.5, Duration::from_secs(300));
        bp.on_window(
            end(0),
            &[black_hole(
                "catalog",
                0,
                vec![caller("frontend", 100.0, 80.0)],
            )],
        );
        // Same caller, a different rate: still covered, nothing new.
        let f = black_hole("catalog", 1, vec![caller("frontend", 90.0, 70.0)]);
        assert!(bp.on_window(end(1), &[f]).is_empty());
        // checkout appears: a new command for frontend (old limit 0.5 × 80 = 40) and checkout
        // (0.5 × 12 = 6); frontend no longer calls in this window but stays limited.
        let f = black_hole("catalog", 2, vec![caller("checkout", 12.0, 12.0)]);
        let c = bp.on_window(end(2), &[f]);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].id, "backpressure/catalog/1674982230000000");
        assert_eq!(c[0].target.sources, ["checkout", "frontend"]);
        assert_eq!(
            c[0].parameters,
            BTreeMap::from([
                ("rate_limit_rps.checkout".to_owned(), 6.0),
                ("rate_limit_rps.frontend".to_owned(), 40.0),
            ])
        );
        // The new command's TTL runs from its own issue time.
        assert_eq!(c[0].expires_at_us, T0 + 30_000_000 + 300_000_000);
    }

    #[test]
    fn one_command_per_node_per_window_in_node_order() {
        let mut bp = backpressure(1.0, Duration::from_secs(300));
        let findings = [
            black_hole("orders", 0, vec![caller("frontend", 5.0, 5.0)]),
            black_hole("catalog", 0, vec![caller("frontend", 7.0, 6.0)]),
            // The same node twice (e.g. a duplicated finding), with another caller and the
            // same caller at a higher baseline: merged, the larger rate counts.
            black_hole(
                "catalog",
                0,
                vec![caller("frontend", 7.0, 9.0), caller("search", 3.0, 3.0)],
            ),
        ];
        let c = bp.on_window(end(0), &findings);
        let ids: Vec<&str> = c.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "backpressure/catalog/1674982210000000",
                "backpressure/orders/1674982210000000"
            ]
        );
        assert_eq!(
            c[0].parameters,
            BTreeMap::from([
                ("rate_limit_rps.frontend".to_owned(), 9.0),
                ("rate_limit_rps.search".to_owned(), 3.0),
            ])
        );
    }

    #[test]
    fn pair_subjects_ask_for_no_backpressure() {
        let mut bp = backpressure(0.5, Duration::from_secs(300));
        let mut f = black_hole("catalog", 0, vec![caller("frontend", 1.0, 1.0)]);
        f.subject = Subject::Pair {
            source: "frontend".into(),
            destination: "catalog".into(),
        };
        assert!(bp.on_window(end(0), &[f]).is_empty());
    }

    #[test]
    fn config_is_validated_naming_the_key() {
        let config = |rate_fraction: f64, ttl: Duration| BackpressureConfig {
            rate_fraction,
            ttl,
            mode: Mode::DryRun,
        };
        for bad in [0.0, -0.5, 1.5, f64::NAN, f64::INFINITY] {
            let e = Backpressure::try_from(config(bad, Duration::from_secs(1))).unwrap_err();
            assert!(
                e.to_string().starts_with("backpressure.rate-fraction = "),
                "{e}"
            );
        }
        assert_eq!(
            Backpressure::try_from(config(2.0, Duration::from_secs(1)))
                .unwrap_err()
                .to_string(),
            "backpressure.rate-fraction = 2: must be greater than 0 and at most 1"
        );
        for bad in [Duration::ZERO, Duration::from_nanos(999), Duration::MAX] {
            let e = Backpressure::try_from(config(0.5, bad)).unwrap_err();
            assert!(e.to_string().starts_with("backpressure.ttl = "), "{e}");
        }
        let ok = Backpressure::try_from(config(1.0, Duration::from_micros(1))).unwrap();
        assert_eq!(ok.ttl_us, 1);
    }
}
