//! Root-cause hints: when a slowdown or an error rise spreads over many pairs, walk the call
//! graph from the affected pairs toward their dependencies and rank the services that most
//! likely started it.
//!
//! A pair is **affected** in a window when its p99 or p50 is at least 1.5 × its baseline with
//! P ≤ `max-tail-probability`, or its error ratio rose by 5 points with a binomial tail that
//! improbable. Its strength is −log10 of that probability (capped at 50). When at least
//! `min-pairs` pairs are affected, every service an affected pair reaches is a candidate,
//! scored by
//!
//! ```text
//! score(c) = in(c) × (1 − out_share(c)) × (1 + onset(c))
//! ```
//!
//! * `in(c)`: the summed strength of affected pairs *into* c — how strongly callers see c
//!   deviate;
//! * `out_share(c)`: the share of c's own calls (by requests) on affected pairs — a service
//!   that is slow because its dependency is slow passes the blame down the graph, the deepest
//!   affected service keeps it;
//! * `onset(c)`: 1 when c's inbound pairs were affected in an earlier window of the current
//!   episode than any other candidate's (it deviated first), else 0.
//!
//! Scores are normalized to [0, 1] (÷ the best). The finding (subject `landscape`) lists the
//! top `candidates` (role `candidate`, with score and evidence in `detail`); the best is its
//! anchor. [`rank`] gives the whole ranking for evaluation.
//!
//! What it can't see: a cause that does not show in traffic between services (a slow disk
//! under a service whose calls look normal is found as that service), and, with spans
//! rather than proxy logs, errors (spans carry no status).

use std::collections::BTreeMap;

use schemas::{Finding, PairWindow, Severity, Signature, Subject};
use serde::{Deserialize, Serialize};

use crate::config::RootCauseConfig;
use crate::error::{Error, Result};
use crate::node::is_service;
use crate::signatures::generic::{error_tail, far};
use crate::signatures::{
    Scope, SignatureDetector, WindowView, counted, finding, load_state, related, save_state,
};
use crate::store::{BaselineStore, Signal};
use crate::suite::tail;

/// The validated `[detect.root-cause]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct RootCauseSpec {
    min_pairs: usize,
    max_p: f64,
    candidates: usize,
}

impl TryFrom<&RootCauseConfig> for RootCauseSpec {
    type Error = Error;

    fn try_from(c: &RootCauseConfig) -> Result<Self> {
        if c.min_pairs < 2 || c.candidates == 0 {
            return Err(Error::Config {
                key: "root-cause.min-pairs",
                reason: format!(
                    "min-pairs {} must be >= 2 and candidates {} >= 1",
                    c.min_pairs, c.candidates
                ),
            });
        }
        Ok(RootCauseSpec {
            min_pairs: c.min_pairs,
            max_p: tail(c.max_tail_probability, "root-cause.max-tail-probability")?,
            candidates: c.candidates,
        })
    }
}

/// An affected pair: how improbable its latency or errors are (−log10 P, capped at 50).
fn strength(store: &BaselineStore, p: &PairWindow, max_p: f64) -> Option<f64> {
    if !is_service(&p.source) || !is_service(&p.destination) || p.requests == 0 {
        return None;
    }
    let mut best: Option<f64> = None;
    for signal in [Signal::P99Us, Signal::P50Us] {
        if let (Some(x), Some(sc)) = (signal.of_pair(p), far(store, p, signal))
            && sc.z > 0.0
            && x >= 1.5 * sc.expected
            && sc.p_high <= max_p
        {
            best = Some(best.map_or(sc.p_high, |b: f64| b.min(sc.p_high)));
        }
    }
    if let Some(b) = store
        .pair(&p.source, &p.destination)
        .and_then(|b| b.get(Signal::ErrorRatio))
        && let Some(e) = b.expected(&store.spec(Signal::ErrorRatio), p.window.start_us)
        && p.error_ratio >= e + 0.05
    {
        let t = error_tail(p.requests, p.errors, e);
        if t <= max_p {
            best = Some(best.map_or(t, |b: f64| b.min(t)));
        }
    }
    best.map(|p| (-p.max(1e-50).log10()).min(50.0))
}

/// The candidates of one window, best first: (service, score in [0, 1], inbound strength,
/// outbound affected share). Empty when fewer than `min_pairs` pairs are affected.
/// `first_affected` gives the window start (µs) at which a service's inbound pairs were first
/// affected in the current episode.
pub fn rank(
    view: &WindowView<'_>,
    max_p: f64,
    min_pairs: usize,
    first_affected: &BTreeMap<String, i64>,
) -> Vec<(String, f64, f64, f64)> {
    let affected: Vec<(&PairWindow, f64)> = view
        .pairs
        .iter()
        .filter_map(|p| strength(view.baselines, p, max_p).map(|s| (p, s)))
        .collect();
    if affected.len() < min_pairs {
        return Vec::new();
    }
    let mut inbound: BTreeMap<&str, f64> = BTreeMap::new();
    let mut out_affected: BTreeMap<&str, u64> = BTreeMap::new();
    for (p, s) in &affected {
        *inbound.entry(&p.destination).or_default() += s;
        *out_affected.entry(&p.source).or_default() += p.requests;
    }
    let earliest = inbound
        .keys()
        .filter_map(|c| first_affected.get(*c))
        .min()
        .copied();
    let mut scored: Vec<(String, f64, f64, f64)> = inbound
        .iter()
        .map(|(c, s_in)| {
            let out_total: u64 = view.outflow(c).iter().map(|p| p.requests).sum();
            let share = if out_total == 0 {
                0.0
            } else {
                out_affected.get(c).copied().unwrap_or(0) as f64 / out_total as f64
            };
            let onset = match (earliest, first_affected.get(*c)) {
                (Some(e), Some(f)) if *f == e => 1.0,
                _ => 0.0,
            };
            (
                (*c).to_owned(),
                s_in * (1.0 - share) * (1.0 + onset),
                *s_in,
                share,
            )
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let best = scored.first().map_or(1.0, |c| c.1).max(f64::MIN_POSITIVE);
    for c in &mut scored {
        c.1 /= best;
    }
    scored
}

/// The root-cause detector: when each service's inbound pairs were first affected in the
/// current episode.
#[derive(Debug, Clone)]
pub struct RootCause {
    spec: RootCauseSpec,
    first_affected: BTreeMap<String, i64>,
}

/// Kept between windows (checkpointed).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    first_affected: BTreeMap<String, i64>,
}

impl RootCause {
    /// A detector with `spec`.
    pub fn new(spec: RootCauseSpec) -> Self {
        RootCause {
            spec,
            first_affected: BTreeMap::new(),
        }
    }
}

impl SignatureDetector for RootCause {
    fn name(&self) -> &'static str {
        "root-cause"
    }

    fn scope(&self) -> Scope {
        Scope::Landscape
    }

    fn judge(&mut self, view: &WindowView<'_>, out: &mut Vec<Finding>) {
        let s = &self.spec;
        let ranked = rank(view, s.max_p, s.min_pairs, &self.first_affected);
        // the episode: services affected now keep their first window, the others leave it
        let now: Vec<&str> = ranked.iter().map(|c| c.0.as_str()).collect();
        self.first_affected.retain(|c, _| now.contains(&c.as_str()));
        for c in &now {
            self.first_affected
                .entry((*c).to_owned())
                .or_insert(view.window.start_us);
        }
        if ranked.is_empty() {
            return;
        }
        let top: Vec<_> = ranked.iter().take(s.candidates).collect();
        out.push(finding(
            Signature::SpreadingDegradation,
            Subject::Landscape,
            view.window,
            Severity::Warning,
            vec![counted("candidates", ranked.len() as f64, 0.0, "services")],
            top.iter()
                .map(|(c, score, s_in, share)| {
                    related(
                        "candidate",
                        c,
                        Some(*score),
                        format!(
                            "inbound deviation {s_in:.1} (−log10 P), {:.0} % of its own calls \
                             affected",
                            100.0 * share
                        ),
                    )
                })
                .collect(),
            schemas::Confidence::Normal,
            format!(
                "slowdown or errors on pairs into {} services; most likely cause: {}",
                ranked.len(),
                top.iter()
                    .map(|c| c.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }

    fn save(&self) -> Vec<u8> {
        save_state(&State {
            first_affected: self.first_affected.clone(),
        })
    }

    fn load(&mut self, state: &[u8]) -> std::result::Result<(), String> {
        let s: State = load_state(state)?;
        self.first_affected = s.first_affected;
        Ok(())
    }
}
