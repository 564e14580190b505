//! Findings → alerts: one incident per signature and subject, triggered by its first finding
//! and resolved after `resolve-after-windows` closed windows in a row without one.
//!
//! The trigger/resolve pair shares a dedup key, as PagerDuty Events API v2 (`dedup_key`,
//! `event_action` `trigger`/`resolve`) and Alertmanager (alert labels, `endsAt`) expect:
//!
//! | subject | dedup key | example |
//! |---|---|---|
//! | node | `<signature>/node/<node>` | `black-hole/node/catalog` |
//! | pair | `<signature>/pair/<source>/<destination>` | `black-hole/pair/frontend/catalog` |
//! | a user rule's finding | `rule/<rule>/<subject key>` | `rule/slow-pair/pair/web/api` |
//!
//! Other subjects' keys are in `schemas::Subject::key`.

use std::collections::{BTreeMap, BTreeSet};

use schemas::{Alert, AlertAction, Finding, SCHEMA_VERSION, Severity, Signature, Subject};
use serde::{Deserialize, Serialize};

/// The dedup key of the incident a finding belongs to (see the module doc for the shapes).
///
/// ```
/// use schemas::{Signature, Subject};
/// let node = Subject::Node { node: "catalog".into() };
/// assert_eq!(actuate::dedup_key(Signature::BlackHole, &node), "black-hole/node/catalog");
/// ```
pub fn dedup_key(signature: Signature, subject: &Subject) -> String {
    format!("{}/{}", signature.as_str(), subject.key())
}

/// The dedup key of `finding`'s incident: [`dedup_key`] of its signature and subject, with a
/// user rule's name after `rule/` (two rules on one subject are two incidents).
pub fn finding_dedup_key(finding: &Finding) -> String {
    match &finding.rule {
        Some(rule) => format!(
            "{}/{rule}/{}",
            finding.signature.as_str(),
            finding.subject.key()
        ),
        None => dedup_key(finding.signature, &finding.subject),
    }
}

/// Turns findings into trigger and resolve alerts, one open incident per dedup key.
#[derive(Debug, Clone)]
pub struct Alerts {
    state: AlertState,
    resolve_after: u32,
    /// Per signature (as in dedup keys), a longer wait before resolving: the detector's own
    /// `resolve-after`, so that an incident its detector still holds open is not resolved
    /// and triggered again (see [`Alerts::resolve_after`]).
    by_signature: BTreeMap<String, u32>,
}

impl Default for Alerts {
    /// Resolves on the first window without a finding.
    fn default() -> Self {
        Alerts::new(1)
    }
}

/// The open incidents, by dedup key. Plain data, so it can be checkpointed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertState {
    /// Open incidents by dedup key.
    pub open: BTreeMap<String, Incident>,
}

impl AlertState {
    /// The trigger of each open incident as it stands (summary: its label, severity: the
    /// highest seen, time: when it opened): what a pager sink that forgot them in a restart
    /// is told again (Alertmanager expects firing alerts to be re-sent).
    pub fn firing(&self) -> Vec<Alert> {
        self.open
            .iter()
            .map(|(key, i)| {
                alert(
                    AlertAction::Trigger,
                    key,
                    i.label.clone(),
                    i.severity,
                    i.since_us,
                    &i.finding,
                )
            })
            .collect()
    }
}

/// One open incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incident {
    /// `<signature> at <subject>`, e.g. `black-hole at node catalog`, for summaries.
    pub label: String,
    /// The highest severity seen while open.
    pub severity: Severity,
    /// Id of the latest finding.
    pub finding: String,
    /// Event time of the trigger, µs since the epoch.
    pub since_us: i64,
    /// Closed windows in a row without a finding for it, so far.
    #[serde(default)]
    pub quiet_windows: u32,
}

impl Alerts {
    /// Incidents resolve after `resolve_after` (at least 1) quiet windows in a row.
    pub fn new(resolve_after: u32) -> Self {
        Alerts {
            state: AlertState::default(),
            resolve_after: resolve_after.max(1),
            by_signature: BTreeMap::new(),
        }
    }

    /// Incidents of `signature` resolve after at least `windows` quiet windows (the
    /// detector's debounce: it keeps an incident open that long without firing, and gives no
    /// finding meanwhile).
    pub fn resolve_after(&mut self, signature: Signature, windows: u32) {
        self.by_signature
            .insert(signature.as_str().to_owned(), windows);
    }

    /// The quiet windows that resolve the incident of `key`.
    fn quiet_limit(&self, key: &str) -> u32 {
        let signature = key.split('/').next().unwrap_or(key);
        self.by_signature
            .get(signature)
            .map_or(self.resolve_after, |&w| w.max(self.resolve_after))
    }

    /// Turns one closed window's findings into alerts, at event time `now_us` (the window's
    /// end, µs since the epoch).
    ///
    /// - A finding whose dedup key has no open incident opens one: a [`AlertAction::Trigger`]
    ///   with summary `<signature> at <subject>: <finding summary>`.
    /// - Further findings for an open incident (in this window or later ones) update its
    ///   latest finding and its severity (the highest seen); they raise nothing, but for one
    ///   that raises the severity (a deployment's changed call pattern, a warning, turned
    ///   critical when its harm showed): a [`AlertAction::Trigger`] again, same dedup key,
    ///   the new severity and the finding's summary, so a pager routing by severity hears it.
    /// - An open incident with no finding in `resolve_after` windows in a row (see
    ///   [`Alerts::new`]) is closed: a [`AlertAction::Resolve`]
    ///   with the same dedup key, the incident's severity and its latest finding, summary
    ///   `resolved: <signature> at <subject>`.
    ///
    /// Triggers come first, in the order of `findings`, then resolves in dedup-key order.
    pub fn on_window(&mut self, now_us: i64, findings: &[Finding]) -> Vec<Alert> {
        let mut alerts = Vec::new();
        let mut seen = BTreeSet::new();
        for finding in findings {
            let key = finding_dedup_key(finding);
            match self.state.open.get_mut(&key) {
                Some(incident) => {
                    if finding.severity > incident.severity {
                        alerts.push(alert(
                            AlertAction::Trigger,
                            &key,
                            format!("{}: {}", incident.label, finding.summary),
                            finding.severity,
                            now_us,
                            &finding.id,
                        ));
                        incident.severity = finding.severity;
                    }
                    incident.finding.clone_from(&finding.id);
                    incident.quiet_windows = 0;
                }
                None => {
                    let label = match &finding.rule {
                        Some(rule) => format!("rule {rule} at {}", finding.subject),
                        None => format!("{} at {}", finding.signature.as_str(), finding.subject),
                    };
                    alerts.push(alert(
                        AlertAction::Trigger,
                        &key,
                        format!("{label}: {}", finding.summary),
                        finding.severity,
                        now_us,
                        &finding.id,
                    ));
                    self.state.open.insert(
                        key.clone(),
                        Incident {
                            label,
                            severity: finding.severity,
                            finding: finding.id.clone(),
                            since_us: now_us,
                            quiet_windows: 0,
                        },
                    );
                }
            }
            seen.insert(key);
        }
        let mut closed: Vec<String> = Vec::new();
        let limits: Vec<u32> = self
            .state
            .open
            .keys()
            .map(|k| self.quiet_limit(k))
            .collect();
        for ((key, incident), limit) in self.state.open.iter_mut().zip(limits) {
            if !seen.contains(key) {
                incident.quiet_windows += 1;
                if incident.quiet_windows >= limit {
                    closed.push(key.clone());
                }
            }
        }
        for key in closed {
            if let Some(incident) = self.state.open.remove(&key) {
                alerts.push(alert(
                    AlertAction::Resolve,
                    &key,
                    format!("resolved: {}", incident.label),
                    incident.severity,
                    now_us,
                    &incident.finding,
                ));
            }
        }
        alerts
    }

    /// The state to checkpoint.
    pub fn state(&self) -> &AlertState {
        &self.state
    }

    /// Replaces the state with a checkpointed one.
    pub fn restore(&mut self, state: AlertState) {
        self.state = state;
    }
}

fn alert(
    action: AlertAction,
    dedup_key: &str,
    summary: String,
    severity: Severity,
    at_us: i64,
    finding: &str,
) -> Alert {
    Alert {
        schema_version: SCHEMA_VERSION,
        kind: "alert".to_owned(),
        action,
        dedup_key: dedup_key.to_owned(),
        summary,
        severity,
        at_us,
        finding: finding.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use schemas::Window;

    use super::*;

    const T0: i64 = 1_674_982_200_000_000; // 2023-01-29T08:50:00Z
    const W: i64 = 10_000_000; // 10 s windows

    fn end(i: i64) -> i64 {
        T0 + (i + 1) * W
    }

    fn finding(subject: Subject, i: i64, severity: Severity) -> Finding {
        let window = Window {
            start_us: T0 + i * W,
            end_us: end(i),
        };
        let key = dedup_key(Signature::BlackHole, &subject);
        Finding {
            schema_version: SCHEMA_VERSION,
            kind: "finding".into(),
            id: format!("{key}/{}", window.start_us),
            signature: Signature::BlackHole,
            subject,
            window,
            severity,
            evidence: vec![],
            callers: vec![],
            summary: "no successful responses".into(),
            score: 0.0,
            confidence: schemas::Confidence::Normal,
            related: Vec::new(),
            rule: None,
        }
    }

    fn node(name: &str) -> Subject {
        Subject::Node { node: name.into() }
    }

    fn actions(alerts: &[Alert]) -> Vec<(AlertAction, &str)> {
        alerts
            .iter()
            .map(|a| (a.action, a.dedup_key.as_str()))
            .collect()
    }

    #[test]
    fn dedup_keys_name_signature_and_subject() {
        assert_eq!(
            dedup_key(Signature::BlackHole, &node("catalog")),
            "black-hole/node/catalog"
        );
        let pair = Subject::Pair {
            source: "frontend".into(),
            destination: "catalog".into(),
        };
        assert_eq!(
            dedup_key(Signature::BlackHole, &pair),
            "black-hole/pair/frontend/catalog"
        );
    }

    #[test]
    fn trigger_once_then_resolve_after_the_first_quiet_window() {
        use AlertAction::{Resolve, Trigger};
        let mut alerts = Alerts::default();
        let key = "black-hole/node/catalog";

        // Window 0: first finding → trigger at its end.
        let a = alerts.on_window(end(0), &[finding(node("catalog"), 0, Severity::Warning)]);
        assert_eq!(actions(&a), [(Trigger, key)]);
        assert_eq!(a[0].kind, "alert");
        assert_eq!(a[0].schema_version, 1);
        assert_eq!(a[0].at_us, 1_674_982_210_000_000);
        assert_eq!(a[0].severity, Severity::Warning);
        assert_eq!(a[0].finding, "black-hole/node/catalog/1674982200000000");
        assert_eq!(
            a[0].summary,
            "black-hole at node catalog: no successful responses"
        );

        // Window 1: still there → nothing new; window 2: worse → a trigger again, same key,
        // the new severity; window 3: critical still, a warning too → nothing new.
        let a = alerts.on_window(end(1), &[finding(node("catalog"), 1, Severity::Warning)]);
        assert!(a.is_empty());
        let a = alerts.on_window(end(2), &[finding(node("catalog"), 2, Severity::Critical)]);
        assert_eq!(actions(&a), [(Trigger, key)]);
        assert_eq!(a[0].severity, Severity::Critical);
        assert_eq!(a[0].finding, "black-hole/node/catalog/1674982220000000");
        assert_eq!(
            a[0].summary,
            "black-hole at node catalog: no successful responses"
        );
        let a = alerts.on_window(
            end(3),
            &[
                finding(node("catalog"), 3, Severity::Critical),
                finding(node("catalog"), 3, Severity::Warning),
            ],
        );
        assert!(a.is_empty());

        // Window 4: no finding → resolve with the same key, the highest severity seen and
        // the latest finding (window 3 starts at T0 + 30 s).
        let a = alerts.on_window(end(4), &[]);
        assert_eq!(actions(&a), [(Resolve, key)]);
        assert_eq!(a[0].at_us, 1_674_982_250_000_000);
        assert_eq!(a[0].severity, Severity::Critical);
        assert_eq!(a[0].finding, "black-hole/node/catalog/1674982230000000");
        assert_eq!(a[0].summary, "resolved: black-hole at node catalog");

        // Window 5: still quiet → nothing; window 6: back → a new trigger.
        assert!(alerts.on_window(end(5), &[]).is_empty());
        let a = alerts.on_window(end(6), &[finding(node("catalog"), 6, Severity::Warning)]);
        assert_eq!(actions(&a), [(Trigger, key)]);
        assert_eq!(a[0].at_us, T0 + 70_000_000);
    }

    #[test]
    fn open_incidents_fire_again_from_their_state() {
        let mut a = Alerts::new(3);
        a.on_window(end(0), &[finding(node("catalog"), 0, Severity::Warning)]);
        a.on_window(end(1), &[finding(node("catalog"), 1, Severity::Critical)]);
        let firing = a.state().firing();
        assert_eq!(firing.len(), 1);
        let f = &firing[0];
        assert_eq!(
            (f.action, f.dedup_key.as_str()),
            (AlertAction::Trigger, "black-hole/node/catalog")
        );
        assert_eq!(f.at_us, end(0), "when it opened");
        assert_eq!(f.severity, Severity::Critical, "the highest seen");
        assert_eq!(f.finding, format!("black-hole/node/catalog/{}", T0 + W));
    }

    #[test]
    fn incidents_are_independent_per_key() {
        use AlertAction::{Resolve, Trigger};
        let mut alerts = Alerts::default();
        let pair = || Subject::Pair {
            source: "frontend".into(),
            destination: "orders".into(),
        };
        let a = alerts.on_window(
            end(0),
            &[
                finding(node("orders"), 0, Severity::Critical),
                finding(node("catalog"), 0, Severity::Critical),
                // Twice in one window: one trigger.
                finding(node("catalog"), 0, Severity::Critical),
            ],
        );
        assert_eq!(
            actions(&a),
            [
                (Trigger, "black-hole/node/orders"),
                (Trigger, "black-hole/node/catalog")
            ]
        );
        // catalog stays, orders goes quiet, a pair incident opens.
        let a = alerts.on_window(
            end(1),
            &[
                finding(node("catalog"), 1, Severity::Critical),
                finding(pair(), 1, Severity::Warning),
            ],
        );
        assert_eq!(
            actions(&a),
            [
                (Trigger, "black-hole/pair/frontend/orders"),
                (Resolve, "black-hole/node/orders")
            ]
        );
        assert_eq!(
            a[0].summary,
            "black-hole at pair frontend -> orders: no successful responses"
        );
        // Everything quiet: both resolve, in key order.
        let a = alerts.on_window(end(2), &[]);
        assert_eq!(
            actions(&a),
            [
                (Resolve, "black-hole/node/catalog"),
                (Resolve, "black-hole/pair/frontend/orders")
            ]
        );
        assert!(alerts.state().open.is_empty());
    }
}
