//! Synchronized bursts: retry and logging storms. Many sources' rates toward one destination
//! spike in the same window, shortly after the destination had a period of errors or
//! unavailability (senders buffered, or retried, and now flush at once).
//!
//! A destination is **troubled** in a window when its ok ratio fell far below its baseline
//! (P(ok ratio this low) ≤ `max-tail-probability` and at least 10 points under it) or its
//! inflow rate fell to at most 1 ÷ `rate-factor` of its baseline with the same improbability.
//! A source **spikes** toward it when the pair's rate is at least `rate-factor` × its baseline
//! with P(rate this high) ≤ `source-tail-probability` (default 0.05). One source's spike is
//! weak evidence (a sender at 0.4 req/s that sends 2 req/s in a 10 s window is not
//! surprising on its own); many at once are not chance. With `k` of the destination's `n`
//! callers spiking, the detector fires, within `after-trouble` of the end of the
//! destination's last troubled window, when
//!
//! ```text
//! k ≥ min-sources  ∧  k ≥ min-source-share × n
//!   ∧  P(K ≥ k) ≤ max-tail-probability,   K ~ Binomial(n, source-tail-probability)
//! ```
//!
//! (the chance that `k` independent callers would spike together if each did so with the
//! largest probability a spike may have, `statrs`).
//!
//! Subject: `sources/<destination>`, naming the synchronized sources; evidence: the
//! destination's inflow against its baseline (with its tail probability) and the count of
//! spiking sources against its callers, with the binomial tail. Severity `critical`: a storm
//! is what moves pods around and repeats the spike elsewhere.
//!
//! What it can't see: a storm toward a destination that had no trouble graywatch saw (a
//! cron job: the rate signatures see it), storms of fewer than `min-sources` senders, and
//! senders whose pairs have no baseline yet.

use std::collections::BTreeMap;

use schemas::{Finding, NodeWindow, Severity, Signature, Subject};
use statrs::distribution::{Binomial, DiscreteCDF};

use crate::adaptive::Score;
use crate::config::StormConfig;
use crate::error::{Error, Result};
use crate::node::is_service;
use crate::signatures::{
    Scope, SignatureDetector, WindowView, confidence, counted, finding, load_state, related,
    save_state, scored,
};
use crate::store::{BaselineStore, Signal};
use crate::suite::{factor, tail};

/// The validated `[detect.storm]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct StormSpec {
    min_sources: usize,
    min_source_share: f64,
    rate_factor: f64,
    source_p: f64,
    max_p: f64,
    after_trouble_us: i64,
}

impl StormSpec {
    /// Validates `c`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the key.
    pub fn new(c: &StormConfig, _window_us: i64) -> Result<Self> {
        if c.min_sources < 2 {
            return Err(Error::Config {
                key: "storm.min-sources",
                reason: format!("{} is fewer than 2 sources", c.min_sources),
            });
        }
        if !(c.min_source_share > 0.0 && c.min_source_share <= 1.0) {
            return Err(Error::Config {
                key: "storm.min-source-share",
                reason: format!("{} is not a share in (0, 1]", c.min_source_share),
            });
        }
        Ok(StormSpec {
            min_sources: c.min_sources,
            min_source_share: c.min_source_share,
            rate_factor: factor(c.rate_factor, "storm.rate-factor")?,
            source_p: tail(c.source_tail_probability, "storm.source-tail-probability")?,
            max_p: tail(c.max_tail_probability, "storm.max-tail-probability")?,
            after_trouble_us: i64::try_from(c.after_trouble.as_micros()).unwrap_or(i64::MAX),
        })
    }
}

/// The storm detector: the end of each destination's last troubled window.
#[derive(Debug, Clone)]
pub struct Storm {
    spec: StormSpec,
    troubled_until: BTreeMap<String, i64>,
}

impl Storm {
    /// A detector with `spec`.
    pub fn new(spec: StormSpec) -> Self {
        Storm {
            spec,
            troubled_until: BTreeMap::new(),
        }
    }
}

/// P(K ≥ `spiking`) for K ~ Binomial(`callers`, `p`): how likely that many of the callers
/// spike in one window by chance, each with probability at most `p` and independently.
fn synchronized_by_chance(callers: usize, spiking: usize, p: f64) -> f64 {
    if spiking == 0 {
        return 1.0;
    }
    Binomial::new(p, callers as u64).map_or(1.0, |b| b.sf(spiking as u64 - 1))
}

/// Whether `node`'s `signal` fell: `low(value, expected)` and a lower tail probability of at
/// most `max_p`. The tail probability, the costly part, is computed only for a value that
/// moved (most nodes in most windows did not).
fn fell(
    store: &BaselineStore,
    node: &NodeWindow,
    signal: Signal,
    max_p: f64,
    low: impl Fn(f64, f64) -> bool,
) -> bool {
    let Some(x) = signal.of_node(node) else {
        return false;
    };
    store
        .expected_node(&node.node, signal, node.window.start_us)
        .is_some_and(|(expected, _)| low(x, expected))
        && store
            .score_node(node, signal)
            .is_some_and(|sc| sc.p_low <= max_p)
}

impl SignatureDetector for Storm {
    fn name(&self) -> &'static str {
        "storm"
    }

    fn scope(&self) -> Scope {
        Scope::Landscape
    }

    fn judge(&mut self, view: &WindowView<'_>, out: &mut Vec<Finding>) {
        let s = &self.spec;
        let store = view.baselines;
        let w = view.window;
        for (node, callers) in view.nodes.iter().zip(view.callers) {
            // trouble first: a window can be both (the flush starts while errors go on)
            let troubled = fell(store, node, Signal::OkRatio, s.max_p, |x, e| x <= e - 0.1)
                || fell(store, node, Signal::InflowRps, s.max_p, |x, e| {
                    x * s.rate_factor <= e
                });
            if troubled {
                self.troubled_until.insert(node.node.clone(), w.end_us);
            }
            let Some(&until) = self.troubled_until.get(&node.node) else {
                continue;
            };
            if w.start_us.saturating_sub(until) > s.after_trouble_us {
                continue;
            }
            let mut spiking: Vec<(&str, Score, f64)> = Vec::new();
            for p in view.inflow(&node.node) {
                if !is_service(&p.source) || p.requests == 0 {
                    continue;
                }
                if let Some(r) = store.score_pair(p, Signal::RateRps)
                    && r.z > 0.0
                    && p.rate_rps >= s.rate_factor * r.expected
                    && r.p_high <= s.source_p
                {
                    spiking.push((&p.source, r, p.rate_rps));
                }
            }
            let calling = callers.len().max(spiking.len()).max(1);
            if spiking.len() < s.min_sources
                || (spiking.len() as f64) < s.min_source_share * calling as f64
            {
                continue;
            }
            let chance = synchronized_by_chance(calling, spiking.len(), s.source_p);
            if chance > s.max_p {
                continue;
            }
            let mut evidence = Vec::new();
            if let Some(i) = &store.score_node(node, Signal::InflowRps) {
                let x = Signal::InflowRps.of_node(node).unwrap_or(0.0);
                evidence.push(scored(Signal::InflowRps, x, i, true));
            }
            evidence.push(counted(
                "spiking_sources",
                spiking.len() as f64,
                calling as f64,
                "sources",
            ));
            if let Some(e) = evidence.last_mut() {
                e.tail_probability = Some(chance);
            }
            let mut f = finding(
                Signature::SynchronizedBurst,
                Subject::Sources {
                    destination: node.node.clone(),
                    sources: spiking.iter().map(|x| x.0.to_owned()).collect(),
                },
                w,
                Severity::Critical,
                evidence,
                spiking
                    .iter()
                    .map(|(src, r, rate)| {
                        related(
                            "source",
                            src,
                            Some(*rate),
                            format!(
                                "{rate:.1} req/s, {:.1}× its baseline",
                                rate / r.expected.max(1e-9)
                            ),
                        )
                    })
                    .collect(),
                confidence(spiking.iter().map(|x| &x.1)),
                format!(
                    "{} of {} callers of {} spiked together (≥ {:.0}× their baseline rates) \
                     after it was in trouble: a synchronized burst (retry or logging storm)",
                    spiking.len(),
                    calling,
                    node.node,
                    s.rate_factor
                ),
            );
            // the callers with their rates: backpressure limits each to a share of its baseline
            f.callers = spiking
                .iter()
                .map(|(src, r, rate)| schemas::Caller {
                    service: (*src).to_owned(),
                    rate_rps: *rate,
                    baseline_rate_rps: r.expected,
                })
                .collect();
            out.push(f);
        }
    }

    fn forget_before(&mut self, before_us: i64) {
        self.troubled_until.retain(|_, &mut t| t > before_us);
    }

    fn save(&self) -> Vec<u8> {
        save_state(&self.troubled_until)
    }

    fn load(&mut self, state: &[u8]) -> std::result::Result<(), String> {
        self.troubled_until = load_state(state)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chance_of_a_synchronized_spike_is_the_binomial_tail() {
        // P(K >= 2), K ~ Binomial(3, 0.1) = 3 × 0.01 × 0.9 + 0.001 = 0.028
        assert!((synchronized_by_chance(3, 2, 0.1) - 0.028).abs() < 1e-12);
        // 20 of 40 callers at 5 % each: 4.96e-16 (the sum of C(40, i) 0.05^i 0.95^(40-i)
        // for i >= 20), far below 1e-4
        let many = synchronized_by_chance(40, 20, 0.05);
        assert!((many / 4.960_102e-16 - 1.0).abs() < 1e-4, "{many}");
        // 3 of 40 at 5 %: common (about 0.32), no storm
        let few = synchronized_by_chance(40, 3, 0.05);
        assert!((few - 0.3233).abs() < 1e-3, "{few}");
        assert_eq!(synchronized_by_chance(40, 0, 0.05), 1.0);
    }
}
