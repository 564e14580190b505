//! Root-cause hints: when a slowdown or an error rise spreads over many pairs, walk the call
//! graph from the affected pairs toward their dependencies and rank the services that most
//! likely started it.
//!
//! A pair **deviates** in a window when its p99 or p50 moved by a factor 1.5 either way
//! (a failing service often answers faster) with P ≤ `max-tail-probability`, or its error
//! ratio rose by 5 points with a binomial tail that improbable (blamed on its destination),
//! or its rate fell to half its baseline that improbably (blamed on its source: the calls a
//! failing service stopped making). A deviation's strength is −log10 of its probability
//! (capped at 50). When at least `min-pairs` pairs deviate, every service blamed is a
//! candidate, scored by
//!
//! ```text
//! score(c) = (in(c) + dropped(c)) × (1 − out_share(c)) × (1 + onset(c))
//! ```
//!
//! * `in(c)`: the summed strength of latency/error deviations of pairs *into* c — how
//!   strongly callers see c deviate; `dropped(c)`: of the calls c stopped making;
//! * `out_share(c)`: the share of c's own calls (by requests) on affected pairs — a service
//!   that is slow because its dependency is slow passes the blame down the graph, the deepest
//!   affected service keeps it;
//! * `onset(c)`: 1 when c's inbound pairs were affected in an earlier window of the current
//!   episode than any other candidate's (it deviated first), else 0.
//!
//! The finding needs `min-pairs` deviating pairs whose baselines are confident
//! (`confident-after` windows): on young baselines, at start-up, every pair's normal is
//! still being learned and the walk would blame noise ([`rank`] itself ranks on any
//! baseline, for evaluation on short traces). Scores are normalized to [0, 1] (÷ the best). The finding (subject `landscape`) lists the
//! top `candidates` (role `candidate`, with score and evidence in `detail`); the best is its
//! anchor. Its evidence: `inbound_deviation`, the strongest candidate's `in` (−log10 P; its
//! probability 10^−in is the finding's tail probability, so its score is 1 − 10^−in), then
//! the `deviating_pairs` and the `candidates`. [`rank`] gives the whole ranking for evaluation.
//!
//! What it can't see: a cause that does not show in traffic between services (a slow disk
//! under a service whose calls look normal is found as that service), and, with spans
//! rather than proxy logs, errors (spans carry no status).

use std::collections::BTreeMap;

use schemas::{Evidence, Finding, PairWindow, Severity, Signature, Subject};
use serde::{Deserialize, Serialize};

use crate::config::RootCauseConfig;
use crate::error::{Error, Result};
use crate::node::is_service;
use crate::signatures::generic::{error_tail, far};
use crate::signatures::{
    Scope, SignatureDetector, WindowView, counted, finding, load_state, related, save_state,
};
use crate::store::{BaselineStore, Baselines, Signal};
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

/// −log10 of a probability, capped at 50.
fn strength_of(p: f64) -> f64 {
    (-p.max(1e-50).log10()).min(50.0)
}

/// How a pair deviates in a window: its latency or errors (blamed on the destination), and
/// the calls its source stopped making (blamed on the source), each as −log10 P.
#[derive(Debug, Clone, Copy, Default)]
struct Deviation {
    /// Latency (either way: a failing service often answers faster) or errors.
    into: f64,
    /// Rate fallen to at most half its baseline.
    dropped: f64,
}

fn deviation(
    store: &BaselineStore,
    baselines: Option<&Baselines>,
    p: &PairWindow,
    max_p: f64,
) -> Deviation {
    let mut d = Deviation::default();
    if !is_service(&p.source) || !is_service(&p.destination) {
        return d;
    }
    for signal in [Signal::P99Us, Signal::P50Us] {
        if let (Some(x), Some(sc)) = (signal.of_pair(p), far(store, baselines, p, signal)) {
            let (tail, moved) = if sc.z > 0.0 {
                (sc.p_high, x >= 1.5 * sc.expected)
            } else {
                (sc.p_low, x * 1.5 <= sc.expected)
            };
            if moved && tail <= max_p {
                d.into = d.into.max(strength_of(tail));
            }
        }
    }
    if let Some(b) = baselines.and_then(|b| b.get(Signal::ErrorRatio))
        && let Some(e) = b.expected(&store.spec(Signal::ErrorRatio), p.window.start_us)
        && p.requests > 0
        && p.error_ratio >= e + 0.05
    {
        let t = error_tail(p.requests, p.errors, e);
        if t <= max_p {
            d.into = d.into.max(strength_of(t));
        }
    }
    if let Some(r) = far(store, baselines, p, Signal::RateRps)
        && r.z < 0.0
        && p.rate_rps * 2.0 <= r.expected
        && r.p_low <= max_p
    {
        d.dropped = strength_of(r.p_low);
    }
    d
}

/// Whether `node` still receives at least half its baseline inflow: only then are the calls
/// it stopped making its own doing (a service whose callers went quiet, or an entry point with
/// no inflow, calls less because it is asked less).
fn still_called(view: &WindowView<'_>, node: &str) -> bool {
    let Some((n, _)) = view.node(node) else {
        return false;
    };
    let Some(x) = Signal::InflowRps.of_node(n) else {
        return false;
    };
    let expected = view
        .baselines
        .expected_node(node, Signal::InflowRps, n.window.start_us)
        .map_or(0.0, |e| e.0);
    x > 0.0 && x * 2.0 >= expected
}

/// The candidates of one window, best first: (service, score in [0, 1], inbound deviation,
/// share of its own calls deviating). Empty when fewer than `min_pairs` pairs deviate.
/// `first_affected` gives the window start (µs) at which a service was first a candidate in
/// the current episode.
///
/// A candidate's score is `(in + dropped) × (1 − out_share) × (1 + onset)`: `in`, the summed
/// latency/error deviation of pairs into it; `dropped`, the summed deviation of the calls it
/// stopped making (a service that fails fast stops calling its dependencies); `out_share`,
/// the share of its own calls (by requests) on pairs whose latency or errors deviate (slow
/// because its dependency is); `onset` 1 for the candidate(s) that deviated first.
pub fn rank(
    view: &WindowView<'_>,
    max_p: f64,
    min_pairs: usize,
    first_affected: &BTreeMap<String, i64>,
) -> Vec<(String, f64, f64, f64)> {
    let devs: Vec<(&PairWindow, Deviation)> = view
        .pairs_with_baselines()
        .map(|(p, b)| (p, deviation(view.baselines, b, p, max_p)))
        .filter(|(_, d)| d.into > 0.0 || d.dropped > 0.0)
        .collect();
    if devs.len() < min_pairs {
        return Vec::new();
    }
    let mut evidence: BTreeMap<&str, f64> = BTreeMap::new();
    let mut out_deviating: BTreeMap<&str, u64> = BTreeMap::new();
    for (p, d) in &devs {
        if d.into > 0.0 {
            *evidence.entry(&p.destination).or_default() += d.into;
            *out_deviating.entry(&p.source).or_default() += p.requests;
        }
        if d.dropped > 0.0 && still_called(view, &p.source) {
            *evidence.entry(&p.source).or_default() += d.dropped;
        }
    }
    let earliest = evidence
        .keys()
        .filter_map(|c| first_affected.get(*c))
        .min()
        .copied();
    let mut scored: Vec<(String, f64, f64, f64)> = evidence
        .iter()
        .map(|(c, ev)| {
            let out_total: u64 = view.outflow(c).iter().map(|p| p.requests).sum();
            let share = if out_total == 0 {
                0.0
            } else {
                (out_deviating.get(c).copied().unwrap_or(0) as f64 / out_total as f64).min(1.0)
            };
            let onset = match (earliest, first_affected.get(*c)) {
                (Some(e), Some(f)) if *f == e => 1.0,
                _ => 0.0,
            };
            (
                (*c).to_owned(),
                ev * (1.0 - share) * (1.0 + onset),
                *ev,
                share,
            )
        })
        .filter(|c| c.1 > 0.0)
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
        // a hint on young baselines is noise (every pair's normal is still being learned): the
        // finding wants `min-pairs` deviating pairs with confident baselines
        let store = view.baselines;
        let confident_after = u64::from(store.spec(Signal::P99Us).confident_after);
        let mature = view
            .pairs_with_baselines()
            .filter(|(_, b)| {
                b.and_then(|b| b.get(Signal::P99Us).or_else(|| b.get(Signal::RateRps)))
                    .is_some_and(|b| b.len() >= confident_after)
            })
            .filter(|(p, b)| {
                let d = deviation(store, *b, p, s.max_p);
                d.into > 0.0 || d.dropped > 0.0
            })
            .count();
        if mature < s.min_pairs {
            return;
        }
        let top: Vec<_> = ranked.iter().take(s.candidates).collect();
        // the finding's score: the strongest inbound deviation, −log10 of the probability of
        // its pairs' deviations together under their baselines
        let strongest = ranked.iter().map(|c| c.2).fold(0.0, f64::max);
        let deviation = Evidence {
            tail_probability: Some(10f64.powf(-strongest)),
            ..counted("inbound_deviation", strongest, 0.0, "-log10 P")
        };
        out.push(finding(
            Signature::SpreadingDegradation,
            Subject::Landscape,
            view.window,
            Severity::Warning,
            vec![
                deviation,
                counted("deviating_pairs", mature as f64, 0.0, "pairs"),
                counted("candidates", ranked.len() as f64, 0.0, "services"),
            ],
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adaptive::BaselineSpec;
    use crate::signatures::generic::tests::pw;

    /// web → api → db and web → cart: db slows down, which slows api (whose own call to db
    /// deviates) and web's calls to api; cart is untouched.
    #[test]
    fn the_deepest_slow_service_ranks_first() {
        let mut store = BaselineStore::new(BaselineSpec::default());
        let normal = |k: i64| {
            vec![
                pw(k, "api", "db", 300, 0, 20_000 + (k as u64 % 3) * 1_000),
                pw(k, "web", "api", 300, 0, 50_000 + (k as u64 % 3) * 2_000),
                pw(k, "web", "cart", 300, 0, 30_000 + (k as u64 % 3) * 1_000),
            ]
        };
        for k in 0..40 {
            for p in normal(k) {
                store.learn_pair(&p);
            }
        }
        let slow = vec![
            pw(40, "api", "db", 300, 0, 400_000),
            pw(40, "web", "api", 300, 0, 450_000),
            pw(40, "web", "cart", 300, 0, 31_000),
        ];
        let incidents = crate::incident::Incidents::default();
        let view = WindowView::new(slow[0].window, &slow, &[], &[], &store, &incidents);
        let ranked = rank(&view, 1e-4, 2, &BTreeMap::new());
        let names: Vec<&str> = ranked.iter().map(|c| c.0.as_str()).collect();
        // api's evidence is as strong as db's, but all of api's own calls deviate
        assert_eq!(names[0], "db");
        assert_eq!(ranked[0].1, 1.0);
        let api = ranked.iter().find(|c| c.0 == "api");
        assert!(api.is_none_or(|c| c.3 == 1.0 && c.1 == 0.0), "{api:?}");
        assert!(!names.contains(&"cart"));
        // below min-pairs: nothing
        assert!(rank(&view, 1e-4, 3, &BTreeMap::new()).is_empty());
        // the finding scores the strongest inbound deviation: db's, ~all of it improbable
        let mut detector = RootCause::new(RootCauseSpec {
            min_pairs: 2,
            max_p: 1e-4,
            candidates: 3,
        });
        let mut found = Vec::new();
        detector.judge(&view, &mut found);
        let [f] = found.as_slice() else {
            panic!("one finding: {found:?}")
        };
        assert_eq!(f.signature, Signature::SpreadingDegradation);
        assert_eq!(f.related[0].name, "db");
        let deviation = &f.evidence[0];
        assert_eq!(deviation.signal, "inbound_deviation");
        assert_eq!(deviation.value, ranked[0].2);
        assert!(deviation.value > 4.0, "{deviation:?}");
        assert!(f.score > 0.9999, "{}", f.score);
        assert_eq!(
            f.evidence[1].value, 2.0,
            "two deviating pairs: {:?}",
            f.evidence
        );
    }
}
