//! The black-hole signature: **inflow without outflow**. A node keeps receiving requests while
//! its successful responses, or its own calls to its dependencies, collapse.
//!
//! For each node, in each closed window, with the node's baseline being the medians of its last
//! `baseline-windows` windows in which it had inflow and no black-hole finding:
//!
//! ```text
//! fires  ⇔  baseline has ≥ min-baseline-windows windows
//!        ∧  inflow ≥ min-inflow-requests
//!        ∧  inflow ≥ inflow-ratio × baseline inflow            (callers still call: not a quiet landscape)
//!        ∧  ( ok ratio ≤ collapse-ratio × baseline ok ratio                    (baseline ok ratio > 0)
//!           ∨ downstream per request ≤ collapse-ratio × baseline               (baseline > 0) )
//! ```
//!
//! where ok ratio = ok responses ÷ inflow requests and downstream per request = the node's own
//! requests to its dependencies ÷ inflow requests. Severity is `critical` when both outflows
//! collapsed, `warning` when one did. A window in which the signature fires is not added to the
//! baseline, so a lasting black hole keeps firing instead of becoming the new normal.

use std::collections::BTreeMap;

use schemas::{
    Caller, Evidence, Finding, NodeWindow, SCHEMA_VERSION, Severity, Signature, Subject,
};
use serde::{Deserialize, Serialize};

use crate::baseline::{NodeBaseline, NodeSample};
use crate::config::BlackHoleConfig;
use crate::error::{Error, Result};

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
        Ok(BlackHoleSpec {
            baseline_windows: c.baseline_windows,
            min_baseline_windows: c.min_baseline_windows,
            min_inflow_requests: c.min_inflow_requests,
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

    /// The baseline of `node`, if it has one.
    pub fn baseline(&self, node: &str) -> Option<&NodeBaseline> {
        self.baselines.get(node)
    }

    /// Judges `node` in its window, with its `callers` (service, req/s in the window), then
    /// adds the window to the node's baseline unless the signature fired.
    pub fn check(&mut self, node: &NodeWindow, callers: &[(&str, f64)]) -> Option<Finding> {
        let finding = self
            .baselines
            .get(&node.node)
            .and_then(|b| self.judge(b, node, callers));
        if finding.is_none() {
            if let Some(sample) = NodeSample::new(node, callers) {
                let capacity = self.spec.baseline_windows;
                self.baselines
                    .entry(node.node.clone())
                    .or_insert_with(|| NodeBaseline::new(capacity))
                    .push(sample);
            }
        }
        finding
    }

    fn judge(
        &self,
        baseline: &NodeBaseline,
        node: &NodeWindow,
        callers: &[(&str, f64)],
    ) -> Option<Finding> {
        let s = &self.spec;
        if baseline.len() < s.min_baseline_windows || node.inflow_requests < s.min_inflow_requests {
            return None;
        }
        let inflow = node.inflow_requests as f64;
        let base_inflow = baseline.inflow_requests();
        if inflow < s.inflow_ratio * base_inflow {
            return None;
        }
        let ok_ratio = node.ok_responses as f64 / inflow;
        let base_ok = baseline.ok_ratio();
        let dpr = node.downstream_requests as f64 / inflow;
        let base_dpr = baseline.downstream_per_request();
        let ok_collapsed = base_ok > 0.0 && ok_ratio <= s.collapse_ratio * base_ok;
        let downstream_collapsed = base_dpr > 0.0 && dpr <= s.collapse_ratio * base_dpr;
        if !ok_collapsed && !downstream_collapsed {
            return None;
        }
        let severity = if ok_collapsed && downstream_collapsed {
            Severity::Critical
        } else {
            Severity::Warning
        };
        let evidence = |signal: &str, value: f64, baseline: f64, unit: &str| Evidence {
            signal: signal.into(),
            value,
            baseline,
            unit: unit.into(),
        };
        let callers = callers
            .iter()
            .map(|&(service, rate_rps)| Caller {
                service: service.to_owned(),
                rate_rps,
                baseline_rate_rps: baseline.caller_rate(service),
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
                "{}/{}/{}",
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
                evidence("ok_response_ratio", ok_ratio, base_ok, "ratio"),
                evidence("downstream_per_request", dpr, base_dpr, "ratio"),
            ],
            callers,
            summary,
        })
    }
}
