//! The black-hole signature: **inflow without outflow**. A node keeps receiving requests while
//! its successful responses *and* its own calls to its dependencies collapse.
//!
//! For each node, in each closed window, with the node's baseline being the medians of its last
//! `baseline-windows` healthy windows (see below):
//!
//! ```text
//! fires  ⇔  baseline has ≥ min-baseline-windows windows
//!        ∧  inflow ≥ min-inflow-requests                       (hold-inflow-requests while its incident is open)
//!        ∧  inflow ≥ inflow-ratio × baseline inflow            (callers still call: not a quiet landscape)
//!        ∧  witnesses ≥ min(2, callers)                         (seen by two callers, or by the only one)
//!        ∧  judged ok ratio ≤ collapse-ratio × baseline ok ratio              (baseline ok ratio > 0)
//!        ∧  ( baseline downstream per request = 0                              (a leaf node)
//!           ∨ downstream per request ≤ collapse-ratio × baseline )
//! ```
//!
//! where ok ratio = ok responses ÷ inflow requests and downstream per request = the node's own
//! requests to its dependencies ÷ inflow requests. Both outflows must fail: a node that answers
//! but stops calling its database (a warm cache) is not a black hole, nor is one that returns
//! errors while still calling its dependencies (an error cascade: another signature's work).
//! Findings are `critical`.
//!
//! The ok ratio counts what [`crate::flags`] blames on the destination: for HTTP a 5xx, a
//! timeout or reset flag, a caller that waited a second for nothing; for a TCP proxy
//! connection, request bytes with no byte back (**bytes in, nothing out**). So a TCP service
//! that accepts connections, reads, and never answers is a black hole like an HTTP one.
//!
//! # Evidence per source
//!
//! The ok ratio is judged per caller too. `callers` are the sources with at least one request
//! to the node in the window; a **witness** is a caller whose own ok ratio (its ok responses ÷
//! its requests) is at most `collapse-ratio` × the baseline ok ratio. The *judged* ok ratio is
//! that of the requests of every caller but the new bystanders: callers that are not
//! witnesses and never called the node in its baseline.
//!
//! What a single source **cannot** trigger: when two or more callers call the node in the
//! window, one caller whose requests fail (because it aborts them, sends requests the node
//! rejects, or floods it with requests of its own making) is one witness, and a finding needs
//! two. Nor can a new caller hide a collapse the other callers see by adding requests the node
//! answers: it is a bystander, left out of the judged ok ratio.
//!
//! What a single source **can** trigger: a node with one caller in the window (a landscape
//! with only one caller, or a window in which only one calls) is judged on that caller's
//! requests alone — there is no other view of it, and a real black hole behind a single caller
//! must still be found. The finding then names that caller alone, and the backpressure it asks
//! for limits only that caller: one source's evidence throttles nobody but that source. A
//! caller that has called the node in its healthy windows (it is in the baseline) still
//! weighs in the judged ok ratio, so such a caller sending many requests the node answers can
//! dilute a collapse. The downstream and inflow gates are the node's totals; one caller
//! flooding the node raises its inflow and lowers its downstream calls per request, but that
//! alone fires nothing without the witnesses.
//!
//! Where one proxy writes the lines of many clients (an edge whose lines all name the edge as
//! their source), those clients are one source: the per-source rule cannot tell them apart;
//! attribution does (see `ingest`: a request that reached no service goes to
//! [`schemas::UNROUTED`], never judged).
//!
//! The finding's evidence lists `collapsed_callers`: the witnesses, against the callers in the
//! window as its baseline.
//!
//! # Baseline
//!
//! A window joins the baseline only when it looks healthy against it: it has inflow, no
//! finding fired, and neither outflow collapsed over the node's whole traffic (while the
//! baseline is still being learnt, every window with inflow joins). So a lasting black hole
//! keeps firing instead of becoming the new normal, even in windows it is not judged in
//! (callers backing off below `inflow-ratio`, or below `min-inflow-requests`).

use std::collections::BTreeMap;

use schemas::{
    Caller, Confidence, Evidence, Finding, NodeWindow, SCHEMA_VERSION, Severity, Signature, Subject,
};
use serde::{Deserialize, Serialize};

use crate::baseline::NodeBaseline;
use crate::config::BlackHoleConfig;
use crate::error::{Error, Result};
use crate::node::CallerWindow;
use crate::signatures::{Scope, SignatureDetector, WindowView};

/// The evidence signal naming how many callers saw the collapse themselves (see
/// [`schemas::COLLAPSED_CALLERS`]).
pub use schemas::COLLAPSED_CALLERS;

/// Most windows a baseline may remember (bounds the state per node).
pub const MAX_BASELINE_WINDOWS: usize = 10_000;

/// The validated `[detect.black-hole]` config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlackHoleSpec {
    baseline_windows: usize,
    min_baseline_windows: usize,
    min_inflow_requests: u64,
    inflow_ratio: f64,
    collapse_ratio: f64,
    /// 0 in a checkpoint from before this field: `min_inflow_requests / 4`. Last: checkpoints
    /// encode fields by position.
    #[serde(default)]
    hold_inflow_requests: u64,
}

/// `hold-inflow-requests` when the config gives none: `min-inflow-requests` ÷ 4, at least 1.
fn default_hold(min_inflow_requests: u64) -> u64 {
    (min_inflow_requests / 4).max(1)
}

fn ratio(value: f64, key: &'static str) -> Result<f64> {
    if value.is_finite() && value > 0.0 && value <= 1.0 {
        Ok(value)
    } else {
        Err(Error::Config {
            key,
            reason: format!("{value} is not a ratio in (0, 1]"),
        })
    }
}

impl TryFrom<&BlackHoleConfig> for BlackHoleSpec {
    type Error = Error;

    fn try_from(c: &BlackHoleConfig) -> Result<Self> {
        if c.baseline_windows == 0 || c.baseline_windows > MAX_BASELINE_WINDOWS {
            return Err(Error::Config {
                key: "black-hole.baseline-windows",
                reason: format!(
                    "{} is not in 1..={MAX_BASELINE_WINDOWS}",
                    c.baseline_windows
                ),
            });
        }
        if c.min_baseline_windows == 0 || c.min_baseline_windows > c.baseline_windows {
            return Err(Error::Config {
                key: "black-hole.min-baseline-windows",
                reason: format!(
                    "{} is not in 1..=black-hole.baseline-windows ({})",
                    c.min_baseline_windows, c.baseline_windows
                ),
            });
        }
        if c.min_inflow_requests == 0 {
            return Err(Error::Config {
                key: "black-hole.min-inflow-requests",
                reason: "must be >= 1".into(),
            });
        }
        let hold = c
            .hold_inflow_requests
            .unwrap_or_else(|| default_hold(c.min_inflow_requests));
        if hold == 0 || hold > c.min_inflow_requests {
            return Err(Error::Config {
                key: "black-hole.hold-inflow-requests",
                reason: format!(
                    "{hold} is not in 1..=black-hole.min-inflow-requests ({})",
                    c.min_inflow_requests
                ),
            });
        }
        Ok(BlackHoleSpec {
            baseline_windows: c.baseline_windows,
            min_baseline_windows: c.min_baseline_windows,
            min_inflow_requests: c.min_inflow_requests,
            hold_inflow_requests: hold,
            inflow_ratio: ratio(c.inflow_ratio, "black-hole.inflow-ratio")?,
            collapse_ratio: ratio(c.collapse_ratio, "black-hole.collapse-ratio")?,
        })
    }
}

/// The black-hole detector: the spec and one baseline per node seen with inflow.
///
/// Plain data (serde): checkpoint it with the input offsets it covers. State is one
/// [`NodeBaseline`] per node, at most `baseline-windows` samples each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlackHole {
    spec: BlackHoleSpec,
    baselines: BTreeMap<String, NodeBaseline>,
}

impl BlackHole {
    /// A detector with empty baselines.
    pub fn new(spec: BlackHoleSpec) -> Self {
        BlackHole {
            spec,
            baselines: BTreeMap::new(),
        }
    }

    /// Judges with `spec` from now on; baselines already learnt are kept (each keeps the
    /// number of windows it was made with until it fills or is forgotten).
    pub fn set_spec(&mut self, spec: BlackHoleSpec) {
        self.spec = spec;
    }

    /// The baseline of `node`, if it has one.
    pub fn baseline(&self, node: &str) -> Option<&NodeBaseline> {
        self.baselines.get(node)
    }

    /// Nodes with a baseline.
    pub fn nodes(&self) -> usize {
        self.baselines.len()
    }

    /// Least inflow (requests) of the window that starts a node's baseline:
    /// `min-inflow-requests` × `inflow-ratio` (10 by default). Below it, the node could never
    /// be judged against that window anyway.
    pub fn learn_from(&self) -> f64 {
        self.spec.min_inflow_requests as f64 * self.spec.inflow_ratio
    }

    /// Forgets the baseline of `node` (gone for long: it has no current normal, and a
    /// landscape whose names churn, pods and clients, must not grow the state without bound).
    pub fn forget(&mut self, node: &str) {
        self.baselines.remove(node);
    }

    /// Judges `node` in its window, with its `callers` in the window (each with its requests
    /// and ok responses), then adds the window to the node's baseline if it looks healthy
    /// (see the module docs).
    ///
    /// `open`: the node's black-hole incident is open, and it is judged down to
    /// `hold-inflow-requests` instead of `min-inflow-requests` (hysteresis).
    pub fn check(
        &mut self,
        node: &NodeWindow,
        callers: &[CallerWindow<'_>],
        open: bool,
    ) -> Option<Finding> {
        let baseline = self.baselines.get(&node.node);
        let finding = baseline.and_then(|b| self.judge_node(b, node, callers, open));
        let degraded = baseline.is_some_and(|b| {
            let (ok, downstream) = self.collapsed(b, node);
            b.len() >= self.spec.min_baseline_windows && (ok || downstream)
        });
        if finding.is_none() && !degraded && node.inflow_requests > 0 {
            let capacity = self.spec.baseline_windows;
            let rates: Vec<(&str, f64)> = callers.iter().map(|c| (c.service, c.rate_rps)).collect();
            let learn_from = self.learn_from();
            match self.baselines.get_mut(&node.node) {
                Some(b) => {
                    b.push(node, &rates);
                }
                // a baseline starts with a window busy enough to be judged against one day:
                // a flood of names with a request or two each costs no baseline
                None if node.inflow_requests as f64 >= learn_from => {
                    let mut b = NodeBaseline::new(capacity);
                    b.push(node, &rates);
                    self.baselines.insert(node.node.clone(), b);
                }
                None => {}
            }
        }
        finding
    }

    /// The callers whose own ok ratio collapsed against `base_ok` (see the module docs).
    fn witnesses<'c>(
        &self,
        base_ok: f64,
        callers: &'c [CallerWindow<'c>],
    ) -> impl Iterator<Item = &'c CallerWindow<'c>> + use<'c> {
        let c = self.spec.collapse_ratio;
        callers.iter().filter(move |w| {
            w.requests > 0 && w.ok_responses as f64 / w.requests as f64 <= c * base_ok
        })
    }

    /// Whether the node's ok ratio and its downstream calls per request have collapsed
    /// against `baseline` (each false when its baseline is 0 or the node had no inflow).
    fn collapsed(&self, baseline: &NodeBaseline, node: &NodeWindow) -> (bool, bool) {
        if node.inflow_requests == 0 {
            return (false, false);
        }
        let inflow = node.inflow_requests as f64;
        let c = self.spec.collapse_ratio;
        let (base_ok, base_dpr) = (baseline.ok_ratio(), baseline.downstream_per_request());
        (
            base_ok > 0.0 && node.ok_responses as f64 / inflow <= c * base_ok,
            base_dpr > 0.0 && node.downstream_requests as f64 / inflow <= c * base_dpr,
        )
    }

    fn judge_node(
        &self,
        baseline: &NodeBaseline,
        node: &NodeWindow,
        callers: &[CallerWindow<'_>],
        open: bool,
    ) -> Option<Finding> {
        let s = &self.spec;
        let least = match (open, s.hold_inflow_requests) {
            (false, _) => s.min_inflow_requests,
            (true, 0) => default_hold(s.min_inflow_requests),
            (true, hold) => hold,
        };
        if baseline.len() < s.min_baseline_windows || node.inflow_requests < least {
            return None;
        }
        let inflow = node.inflow_requests as f64;
        let base_inflow = baseline.inflow_requests();
        if inflow < s.inflow_ratio * base_inflow {
            return None;
        }
        let base_ok = baseline.ok_ratio();
        let dpr = node.downstream_requests as f64 / inflow;
        let base_dpr = baseline.downstream_per_request();
        let (_, downstream_collapsed) = self.collapsed(baseline, node);
        if base_ok <= 0.0 || (base_dpr > 0.0 && !downstream_collapsed) {
            return None;
        }
        // Evidence per source: two witnesses (or the only caller), and the ok ratio of every
        // caller but the new bystanders.
        let calling = callers.iter().filter(|c| c.requests > 0).count();
        let witnesses: Vec<&str> = self
            .witnesses(base_ok, callers)
            .map(|w| w.service)
            .collect();
        if calling == 0 || witnesses.len() < calling.min(2) {
            return None;
        }
        let (judged, judged_ok) = callers
            .iter()
            .filter(|c| witnesses.contains(&c.service) || baseline.caller_rate(c.service) > 0.0)
            .fold((0u64, 0u64), |(n, ok), c| {
                (n + c.requests, ok + c.ok_responses)
            });
        let ok_ratio = judged_ok as f64 / judged.max(1) as f64;
        if judged == 0 || ok_ratio > s.collapse_ratio * base_ok {
            return None;
        }
        let severity = Severity::Critical;
        // P(at most `judged_ok` ok responses of `judged` requests | each ok with the baseline
        // ok ratio): the binomial lower tail (statrs)
        let p_ok = ok_tail(judged, judged_ok, base_ok);
        let evidence = |signal: &str, value: f64, baseline: f64, unit: &str| Evidence {
            signal: signal.into(),
            value,
            baseline,
            unit: unit.into(),
            tail_probability: None,
        };
        let callers = callers
            .iter()
            .filter(|c| c.requests > 0)
            .map(|c| Caller {
                service: c.service.to_owned(),
                rate_rps: c.rate_rps,
                baseline_rate_rps: baseline.caller_rate(c.service),
            })
            .collect();
        let summary = format!(
            "{} keeps receiving requests ({} in the window, baseline {:.0}) but answered {:.0} % \
             of them successfully (baseline {:.0} %) and made {:.2} downstream calls per request \
             (baseline {:.2}): inflow without outflow",
            node.node,
            node.inflow_requests,
            base_inflow,
            ok_ratio * 100.0,
            base_ok * 100.0,
            dpr,
            base_dpr
        );
        Some(Finding {
            schema_version: SCHEMA_VERSION,
            kind: "finding".into(),
            id: format!(
                "{}/node/{}/{}",
                Signature::BlackHole.as_str(),
                node.node,
                node.window.start_us
            ),
            signature: Signature::BlackHole,
            subject: Subject::Node {
                node: node.node.clone(),
            },
            window: node.window,
            severity,
            evidence: vec![
                evidence("inflow_requests", inflow, base_inflow, "requests"),
                Evidence {
                    tail_probability: Some(p_ok),
                    ..evidence("ok_response_ratio", ok_ratio, base_ok, "ratio")
                },
                evidence("downstream_per_request", dpr, base_dpr, "ratio"),
                evidence(
                    COLLAPSED_CALLERS,
                    witnesses.len() as f64,
                    calling as f64,
                    "callers",
                ),
            ],
            callers,
            summary,
            score: 1.0 - p_ok,
            confidence: if baseline.len() >= self.spec.baseline_windows {
                Confidence::Normal
            } else {
                Confidence::Low
            },
            related: Vec::new(),
            rule: None,
        })
    }
}

/// P(X ≤ `ok`) for X ~ Binomial(`n`, `p`): how likely so few ok responses are if the node
/// still answered as in its baseline.
fn ok_tail(n: u64, ok: u64, p: f64) -> f64 {
    use statrs::distribution::{Binomial, DiscreteCDF};
    match Binomial::new(p.clamp(0.0, 1.0), n) {
        Ok(b) => b.cdf(ok),
        Err(_) => 1.0,
    }
}

impl SignatureDetector for BlackHole {
    fn name(&self) -> &'static str {
        "black-hole"
    }

    fn scope(&self) -> Scope {
        Scope::Node
    }

    fn judge(&mut self, view: &WindowView<'_>, out: &mut Vec<Finding>) {
        for (node, callers) in view.nodes.iter().zip(view.callers) {
            // the incident's key is built only when some incident is tracked (rarely)
            let open = !view.incidents.is_empty() && {
                let subject = Subject::Node {
                    node: node.node.clone(),
                };
                let incident = (Signature::BlackHole.as_str().to_owned(), subject.key());
                view.incidents.is_open(&incident)
            };
            if let Some(f) = self.check(node, callers, open) {
                out.push(f);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use schemas::{FlowBatchBuilder, FlowRecordRef, Reporter};

    use crate::{ClosedWindow, DetectConfig, Detector};

    use super::*;

    const T0: i64 = 1_700_000_000_000_000;
    const L: i64 = 10_000_000;

    /// Traffic of one 10 s window: `(source, destination, requests, status, flags)`, each
    /// group's requests spread evenly over the window, 10 ms each.
    type Traffic<'a> = &'a [(&'a str, &'a str, i64, u16, Option<&'a str>)];

    /// Runs windows 0, 1, … with the given traffic through a default detector and returns all
    /// closed windows.
    fn run(windows: &[Traffic<'_>]) -> Vec<ClosedWindow> {
        let mut d = Detector::try_from(DetectConfig::default()).unwrap();
        let mut out = Vec::new();
        for (k, traffic) in windows.iter().enumerate() {
            let mut b = FlowBatchBuilder::new();
            for &(src, dst, n, status, flags) in traffic.iter() {
                for i in 0..n {
                    let t = T0 + k as i64 * L + i * (L / n);
                    let mut r = FlowRecordRef::new(t, src, dst, Reporter::Envoy);
                    r.duration_us = Some(10_000);
                    r.status = Some(status);
                    r.response_flags = flags;
                    b.append(&r);
                }
            }
            out.extend(d.push(&b.finish()).unwrap());
        }
        out.extend(d.flush());
        assert_eq!(out.len(), windows.len());
        out
    }

    const HEALTHY: Traffic<'static> = &[
        ("frontend", "checkout", 50, 200, None),
        ("mobile", "checkout", 30, 200, None),
        ("checkout", "payments", 80, 200, None),
    ];

    /// checkout still receives its 80 requests but times them all out (504 UT) and no longer
    /// calls payments.
    const BLACK_HOLE: Traffic<'static> = &[
        ("frontend", "checkout", 50, 504, Some("UT")),
        ("mobile", "checkout", 30, 504, Some("UT")),
    ];

    fn findings(windows: &[ClosedWindow]) -> Vec<Vec<&Finding>> {
        windows
            .iter()
            .map(|w| w.findings.iter().collect())
            .collect()
    }

    #[test]
    fn fires_in_the_first_bad_window_after_a_stable_baseline_and_not_before() {
        let closed = run(&[HEALTHY, HEALTHY, HEALTHY, BLACK_HOLE, BLACK_HOLE]);
        let f = findings(&closed);
        assert!(f[..3].iter().all(Vec::is_empty), "{f:?}");
        assert_eq!(f[3].len(), 1, "{f:?}");
        let finding = f[3][0];
        assert_eq!(
            finding.id,
            format!("black-hole/node/checkout/{}", T0 + 3 * L),
            "id is <signature>/node/<node>/<window start µs>"
        );
        assert_eq!(
            finding.subject,
            Subject::Node {
                node: "checkout".into()
            }
        );
        assert_eq!(finding.window, closed[3].window);
        // ok ratio 0 of 1 and downstream calls 0 of 1 per request: both collapsed
        assert_eq!(finding.severity, Severity::Critical);
        let ev: Vec<(&str, f64, f64, &str)> = finding
            .evidence
            .iter()
            .map(|e| (e.signal.as_str(), e.value, e.baseline, e.unit.as_str()))
            .collect();
        assert_eq!(
            ev,
            vec![
                ("inflow_requests", 80.0, 80.0, "requests"),
                ("ok_response_ratio", 0.0, 1.0, "ratio"),
                ("downstream_per_request", 0.0, 1.0, "ratio"),
                ("collapsed_callers", 2.0, 2.0, "callers"),
            ]
        );
        // 50 and 30 requests per 10 s, as in the baseline
        let callers: Vec<(&str, f64, f64)> = finding
            .callers
            .iter()
            .map(|c| (c.service.as_str(), c.rate_rps, c.baseline_rate_rps))
            .collect();
        assert_eq!(callers, vec![("frontend", 5.0, 5.0), ("mobile", 3.0, 3.0)]);
        assert!(finding.summary.starts_with("checkout keeps receiving"));
        // the failure is not learned as normal: it fires again in the next window
        assert_eq!(f[4].len(), 1);
        assert_eq!(
            f[4][0].id,
            format!("black-hole/node/checkout/{}", T0 + 4 * L)
        );
    }

    /// A node whose callers send about `min-inflow-requests` (20) a window: once its incident
    /// is open, windows down to `hold-inflow-requests` (20 ÷ 4 = 5) are still judged, so the
    /// incident does not resolve and open again while the black hole lasts; before it opens,
    /// such a window is not judged.
    #[test]
    fn an_open_incident_is_judged_down_to_the_hold_inflow() {
        let healthy: Traffic<'_> = &[
            ("frontend", "checkout", 14, 200, None),
            ("mobile", "checkout", 10, 200, None),
            ("checkout", "payments", 24, 200, None),
        ];
        let hole = |n: i64, m: i64| {
            vec![
                ("frontend", "checkout", n, 504, Some("UT")),
                ("mobile", "checkout", m, 504, Some("UT")),
            ]
        };
        let (busy, quiet) = (hole(14, 10), hole(7, 5));
        let closed = run(&[healthy, healthy, healthy, &busy, &quiet, &quiet, &busy]);
        let fired: Vec<usize> = findings(&closed).iter().map(Vec::len).collect();
        assert_eq!(
            fired,
            [0, 0, 0, 1, 1, 1, 1],
            "12 requests: judged while open"
        );
        let f = &closed[4].findings[0];
        assert_eq!(f.evidence[0].signal, "inflow_requests");
        assert_eq!(f.evidence[0].value, 12.0);
        // the same quiet window before any incident opened is not judged
        let closed = run(&[healthy, healthy, healthy, &quiet, &busy]);
        let fired: Vec<usize> = findings(&closed).iter().map(Vec::len).collect();
        assert_eq!(fired, [0, 0, 0, 0, 1]);
    }

    #[test]
    fn needs_min_baseline_windows_first() {
        // two healthy windows are not a baseline (min-baseline-windows = 3)
        let closed = run(&[HEALTHY, HEALTHY, BLACK_HOLE]);
        assert!(closed.iter().all(|w| w.findings.is_empty()));
    }

    #[test]
    fn answering_but_no_longer_calling_downstream_is_not_a_black_hole() {
        // A warm cache: checkout answers everything but calls payments 0.1 times per request
        // (baseline 1.0).
        let cached: Traffic<'_> = &[
            ("frontend", "checkout", 50, 200, None),
            ("mobile", "checkout", 30, 200, None),
            ("checkout", "payments", 8, 200, None),
        ];
        let closed = run(&[HEALTHY, HEALTHY, HEALTHY, cached]);
        assert!(closed[3].findings.is_empty());
    }

    #[test]
    fn an_error_cascade_still_calling_downstream_is_not_a_black_hole() {
        // checkout fails fast (503) but still calls payments (which answers) for every request.
        let cascade: Traffic<'_> = &[
            ("frontend", "checkout", 50, 503, None),
            ("mobile", "checkout", 30, 503, None),
            ("checkout", "payments", 80, 200, None),
        ];
        let closed = run(&[HEALTHY, HEALTHY, HEALTHY, cascade]);
        assert!(closed[3].findings.is_empty());
    }

    #[test]
    fn a_leaf_that_stops_answering_is_a_black_hole() {
        // payments calls nothing; from window 3 on it answers none of checkout's 80 calls
        // (checkout is its only caller: its view is all there is).
        let dead_leaf: Traffic<'_> = &[
            ("frontend", "checkout", 50, 200, None),
            ("mobile", "checkout", 30, 200, None),
            ("checkout", "payments", 80, 504, Some("UT")),
        ];
        let closed = run(&[HEALTHY, HEALTHY, HEALTHY, dead_leaf]);
        let f = &closed[3].findings;
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(
            f[0].subject,
            Subject::Node {
                node: "payments".into()
            }
        );
        assert_eq!(f[0].severity, Severity::Critical);
    }

    /// Traffic with durations: `(source, destination, requests, status, flags, µs each)`.
    type TimedTraffic<'a> = &'a [(&'a str, &'a str, i64, u16, Option<&'a str>, u64)];

    /// The requests of `traffic` as flow records of one window `k`.
    fn window_with_durations(k: i64, traffic: TimedTraffic<'_>) -> arrow::array::RecordBatch {
        let mut b = FlowBatchBuilder::new();
        for &(src, dst, n, status, flags, duration_us) in traffic {
            for i in 0..n {
                let mut r = FlowRecordRef::new(T0 + k * L + i * (L / n), src, dst, Reporter::Envoy);
                r.duration_us = Some(duration_us);
                r.status = Some(status);
                r.response_flags = flags;
                b.append(&r);
            }
        }
        b.finish()
    }

    #[test]
    fn one_client_aborting_at_once_cannot_fake_a_black_hole_on_a_healthy_leaf() {
        // payments is a healthy leaf called by checkout (80 per window, answered). From
        // window 3 a client hangs up 1,600 requests per window after 1 ms (0 DC): the
        // client's doing, not payments' failure.
        let mut d = Detector::try_from(DetectConfig::default()).unwrap();
        let healthy = [("checkout", "payments", 80, 200, None, 10_000)];
        let attacked = [
            ("checkout", "payments", 80, 200, None, 10_000),
            ("scraper", "payments", 1_600, 0, Some("DC"), 1_000),
        ];
        let mut closed = Vec::new();
        for k in 0..6 {
            let batch = if k < 3 {
                window_with_durations(k, &healthy)
            } else {
                window_with_durations(k, &attacked)
            };
            closed.extend(d.push(&batch).unwrap());
        }
        closed.extend(d.flush());
        assert_eq!(closed.len(), 6);
        let payments = |w: &ClosedWindow| {
            w.nodes
                .iter()
                .find(|n| n.node == "payments")
                .map(|n| (n.inflow_requests, n.ok_responses))
        };
        // the aborts are requests payments received, none of them its error
        assert_eq!(payments(&closed[3]), Some((1_680, 1_680)));
        assert!(
            closed.iter().all(|w| w.findings.is_empty()),
            "{:?}",
            findings(&closed)
        );
    }

    #[test]
    fn one_caller_whose_own_requests_fail_cannot_fake_a_black_hole() {
        // mobile floods checkout with 300 requests that checkout rejects (503), while frontend
        // is still answered and checkout still calls payments for frontend's requests: over
        // the node's whole traffic the ok ratio (50 / 350) and the downstream calls per
        // request (50 / 350) both collapse, but only one of the two callers sees it.
        let one_bad_caller: Traffic<'_> = &[
            ("frontend", "checkout", 50, 200, None),
            ("mobile", "checkout", 300, 503, None),
            ("checkout", "payments", 50, 200, None),
        ];
        let closed = run(&[HEALTHY, HEALTHY, HEALTHY, one_bad_caller, one_bad_caller]);
        assert!(
            closed.iter().all(|w| w.findings.is_empty()),
            "{:?}",
            findings(&closed)
        );
        // the same collapse seen by both callers is a black hole
        let closed = run(&[HEALTHY, HEALTHY, HEALTHY, BLACK_HOLE]);
        let f = &closed[3].findings;
        assert_eq!(f.len(), 1);
        assert_eq!(
            f[0].evidence[3],
            Evidence {
                signal: COLLAPSED_CALLERS.into(),
                value: 2.0,
                baseline: 2.0,
                unit: "callers".into(),
                tail_probability: None,
            }
        );
    }

    #[test]
    fn a_new_caller_answered_fine_cannot_hide_a_black_hole() {
        // checkout times out for frontend and mobile; a new client, never seen in the
        // baseline, sends 400 requests that another code path of checkout answers: over the
        // whole traffic the ok ratio is 400 / 480, but the callers that know checkout all see
        // it collapse.
        let hidden: Traffic<'_> = &[
            ("frontend", "checkout", 50, 504, Some("UT")),
            ("mobile", "checkout", 30, 504, Some("UT")),
            ("prober", "checkout", 400, 200, None),
        ];
        let closed = run(&[HEALTHY, HEALTHY, HEALTHY, hidden]);
        let f = &closed[3].findings;
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(
            f[0].evidence[1].value, 0.0,
            "judged ok ratio: frontend and mobile"
        );
        let callers: Vec<&str> = f[0].callers.iter().map(|c| c.service.as_str()).collect();
        assert_eq!(callers, ["frontend", "mobile", "prober"]);
    }

    #[test]
    fn the_unrouted_sink_is_never_judged_nor_a_downstream_call() {
        // The edge sends 80 requests per window to checkout; from window 3 on, 1,000 more per
        // window reach no service (404 NR): they go to the unrouted sink.
        let healthy: Traffic<'_> = &[
            ("edge", "checkout", 80, 200, None),
            ("edge", schemas::UNROUTED, 80, 404, Some("NR")),
        ];
        let flood: Traffic<'_> = &[
            ("edge", "checkout", 80, 200, None),
            ("edge", schemas::UNROUTED, 1_000, 404, Some("NR")),
        ];
        let closed = run(&[healthy, healthy, healthy, flood, flood]);
        assert!(closed.iter().all(|w| w.findings.is_empty()));
        let node = |w: &ClosedWindow, name: &str| {
            w.nodes
                .iter()
                .find(|n| n.node == name)
                .map(|n| (n.inflow_requests, n.ok_responses, n.downstream_requests))
        };
        assert_eq!(node(&closed[3], schemas::UNROUTED), Some((1_000, 0, 0)));
        assert_eq!(node(&closed[3], "edge"), Some((0, 0, 80)));
        let pair = closed[3]
            .pairs
            .iter()
            .find(|p| p.destination == schemas::UNROUTED)
            .unwrap();
        assert_eq!(
            (pair.requests, pair.errors),
            (1_000, 1_000),
            "visible for the caller"
        );
    }

    #[test]
    fn callers_backing_off_do_not_teach_the_baseline_the_failure() {
        // The black hole's callers back off to 30 of 80 requests (below inflow-ratio 0.5, so
        // not judged) for 6 windows — as long as the whole baseline — then come back.
        const BACKED_OFF: Traffic<'static> = &[
            ("frontend", "checkout", 20, 504, Some("UT")),
            ("mobile", "checkout", 10, 504, Some("UT")),
        ];
        let mut windows = vec![HEALTHY, HEALTHY, HEALTHY, BLACK_HOLE];
        windows.extend([BACKED_OFF; 6]);
        windows.push(BLACK_HOLE);
        let closed = run(&windows);
        let f = findings(&closed);
        assert_eq!(f[3].len(), 1);
        assert!(
            f[4..10].iter().all(Vec::is_empty),
            "not judged while backed off"
        );
        assert_eq!(
            f[10].len(),
            1,
            "still a black hole against the healthy baseline"
        );
        assert_eq!(f[10][0].evidence[1].baseline, 1.0);
    }

    #[test]
    fn a_quieter_landscape_is_not_a_black_hole() {
        // everything drops to a fifth: ratios unchanged
        let quiet: Traffic<'_> = &[
            ("frontend", "checkout", 10, 200, None),
            ("mobile", "checkout", 6, 200, None),
            ("checkout", "payments", 16, 200, None),
        ];
        // inflow 30 >= min-inflow 20, nothing answered, downstream gone — but 30 < 0.5 × 80:
        // the callers went quiet, the node does not "keep receiving" (the inflow-ratio gate)
        let quieter_and_failing: Traffic<'_> = &[
            ("frontend", "checkout", 20, 504, Some("UT")),
            ("mobile", "checkout", 10, 504, Some("UT")),
        ];
        let closed = run(&[HEALTHY, HEALTHY, HEALTHY, quiet, quieter_and_failing]);
        assert!(
            closed.iter().all(|w| w.findings.is_empty()),
            "{:?}",
            findings(&closed)
        );
    }

    #[test]
    fn config_is_validated_naming_the_key() {
        let bad = |c: BlackHoleConfig| BlackHoleSpec::try_from(&c).unwrap_err().to_string();
        let d = BlackHoleConfig::default;
        let e = bad(BlackHoleConfig {
            collapse_ratio: 0.0,
            ..d()
        });
        assert!(e.contains("black-hole.collapse-ratio"), "{e}");
        let e = bad(BlackHoleConfig {
            inflow_ratio: f64::NAN,
            ..d()
        });
        assert!(e.contains("black-hole.inflow-ratio"), "{e}");
        let e = bad(BlackHoleConfig {
            min_baseline_windows: 7,
            ..d()
        });
        assert!(e.contains("black-hole.min-baseline-windows"), "{e}");
        let e = bad(BlackHoleConfig {
            baseline_windows: 0,
            ..d()
        });
        assert!(e.contains("black-hole.baseline-windows"), "{e}");
        let e = bad(BlackHoleConfig {
            hold_inflow_requests: Some(21),
            ..d()
        });
        assert_eq!(
            e,
            "invalid config black-hole.hold-inflow-requests: 21 is not in 1..=black-hole.min-inflow-requests (20)"
        );
        // min-inflow-requests 3: the hold defaults to 1, not 0
        let spec = BlackHoleSpec::try_from(&BlackHoleConfig {
            min_inflow_requests: 3,
            ..d()
        })
        .unwrap();
        assert_eq!(spec.hold_inflow_requests, 1);
    }

    #[test]
    fn state_round_trips_through_serde() {
        let mut bh = BlackHole::new(BlackHoleSpec::try_from(&BlackHoleConfig::default()).unwrap());
        let node = NodeWindow {
            schema_version: SCHEMA_VERSION,
            kind: "node-window".into(),
            window: schemas::Window {
                start_us: 0,
                end_us: L,
            },
            node: "checkout".into(),
            inflow_requests: 80,
            inflow_bytes: 0,
            ok_responses: 80,
            outflow_bytes: 0,
            downstream_requests: 80,
            callers: 1,
        };
        let frontend = CallerWindow {
            service: "frontend",
            rate_rps: 8.0,
            requests: 80,
            ok_responses: 80,
        };
        assert!(bh.check(&node, &[frontend], false).is_none());
        let json = serde_json::to_string(&bh).unwrap();
        let back: BlackHole = serde_json::from_str(&json).unwrap();
        assert_eq!(back, bh);
        assert_eq!(back.baseline("checkout").unwrap().len(), 1);
    }
}
