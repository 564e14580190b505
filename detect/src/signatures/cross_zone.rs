//! Cross-zone traffic: a pair sends more of its requests across availability zones than the
//! bulkhead policy allows.
//!
//! For each pair and each of its source zones, from the pair's zone breakdown
//! ([`schemas::Breakdown`], requests whose records name both zones): `cross` = requests from
//! that zone to another, `zoned` = all requests from that zone (a misrouted zone is seen even
//! when the pair's other zones stay home). A window whose share `cross ÷ zoned` is above
//! `allowed-share` starts that zone's **run**; every later window with the zone's requests
//! joins it, and the counts of the run's windows within `span` add up. The run ends when its
//! share over the span is back within the allowed share (a window without the zone's requests
//! leaves it as it is). A pair at 0.3 req/s from a zone sends 3 requests a window, too few to
//! be sure of in one window (3 of 4 crossing has a tail probability of 5e-4 under 5 %), and
//! plenty in a minute; a window that happens to stay home (1 request of a quiet pair that
//! misroutes 60 %) does not throw the run's evidence away. It fires, on the source zone whose
//! crossing is least likely, when over the run
//!
//! ```text
//! cross ≥ min-requests  ∧  P(X ≥ cross) ≤ max-tail-probability,
//!   X ~ Binomial(zoned, allowed-share)
//! ```
//!
//! unless the pair is allow-listed (critical fail-over paths). The finding's subject is the
//! pair with its busiest crossing (source zone → destination zone); evidence: the share
//! against the allowed share (with the binomial tail probability) and the cross-zone
//! requests; related: every crossing zone pair with its requests. Severity `warning`: cross-zone
//! traffic costs money and couples failure domains, it is rarely an outage by itself.
//!
//! What it can't see: records without zones (Envoy's default text format names none; map
//! them with `[mapping]` rules or log JSON with the peer metadata), crossings within the
//! allowed share, and zones that are named differently by the two ends.

use std::collections::{BTreeMap, VecDeque};

use schemas::{Finding, Severity, Signature, Subject};
use serde::{Deserialize, Serialize};
use statrs::distribution::{Binomial, DiscreteCDF};

use crate::config::CrossZoneConfig;
use crate::error::{Error, Result};
use crate::node::is_service;
use crate::signatures::{
    NamePattern, Scope, SignatureDetector, WindowView, counted, finding, load_state, related,
    save_state,
};
use crate::suite::tail;

/// The validated `[detect.cross-zone]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct CrossZoneSpec {
    allowed_share: f64,
    min_requests: u64,
    max_p: f64,
    span_us: i64,
    allow: Vec<(NamePattern, NamePattern)>,
}

impl CrossZoneSpec {
    /// Validates `c` for windows of `window_us` µs.
    ///
    /// # Errors
    /// [`Error::Config`] naming the key.
    pub fn new(c: &CrossZoneConfig, window_us: i64) -> Result<Self> {
        if !(c.allowed_share >= 0.0 && c.allowed_share < 1.0) {
            return Err(Error::Config {
                key: "cross-zone.allowed-share",
                reason: format!("{} is not a share in [0, 1)", c.allowed_share),
            });
        }
        let pattern = |s: &str| {
            NamePattern::try_from(s.to_owned()).map_err(|reason| Error::Config {
                key: "cross-zone.allow",
                reason,
            })
        };
        Ok(CrossZoneSpec {
            allowed_share: c.allowed_share,
            min_requests: c.min_requests.max(1),
            max_p: tail(c.max_tail_probability, "cross-zone.max-tail-probability")?,
            span_us: i64::try_from(c.span.as_micros())
                .unwrap_or(i64::MAX)
                .max(window_us),
            allow: c
                .allow
                .iter()
                .map(|a| Ok((pattern(&a.source)?, pattern(&a.destination)?)))
                .collect::<Result<_>>()?,
        })
    }
}

/// One window of a run: its start (µs), the zone's requests, and where the crossing ones went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct RunWindow {
    start_us: i64,
    zoned: u64,
    to: BTreeMap<String, u64>,
}

/// Runs by source, destination, then source zone: nested so that a pair's lookup borrows its
/// names (no allocation per pair and window; one only when a run starts).
type Runs = BTreeMap<String, BTreeMap<String, BTreeMap<String, VecDeque<RunWindow>>>>;

/// The cross-zone detector: per (source, destination, source zone), its run of windows
/// crossing above the allowed share.
#[derive(Debug, Clone)]
pub struct CrossZone {
    spec: CrossZoneSpec,
    runs: Runs,
}

impl CrossZone {
    /// A detector with `spec` and no runs.
    pub fn new(spec: CrossZoneSpec) -> Self {
        CrossZone {
            spec,
            runs: BTreeMap::new(),
        }
    }
}

impl SignatureDetector for CrossZone {
    fn name(&self) -> &'static str {
        "cross-zone"
    }

    fn scope(&self) -> Scope {
        Scope::Pair
    }

    fn judge(&mut self, view: &WindowView<'_>, out: &mut Vec<Finding>) {
        let s = &self.spec;
        let w = view.window;
        for p in view.pairs {
            if p.breakdown.is_empty() || !is_service(&p.source) || !is_service(&p.destination) {
                continue;
            }
            if s.allow
                .iter()
                .any(|(a, b)| a.matches(&p.source) && b.matches(&p.destination))
            {
                continue;
            }
            // per source zone: its requests with both zones, and where they went
            let mut by_zone: BTreeMap<&str, (u64, BTreeMap<&str, u64>)> = BTreeMap::new();
            for b in &p.breakdown {
                if let (Some(sz), Some(dz)) = (&b.source_zone, &b.destination_zone) {
                    let e = by_zone.entry(sz).or_default();
                    e.0 += b.requests;
                    if sz != dz {
                        *e.1.entry(dz).or_default() += b.requests;
                    }
                }
            }
            // the source zone whose run's crossing is least likely under the allowed share
            // (tail probability, source zone, zoned, cross, crossings by destination zone,
            // start of the run's first window counted)
            type Crossing<'a> = (f64, &'a str, u64, u64, BTreeMap<String, u64>, i64);
            let mut worst: Option<Crossing<'_>> = None;
            for (sz, (zoned, to)) in &by_zone {
                let cross: u64 = to.values().sum();
                if *zoned == 0 {
                    continue;
                }
                let within = cross as f64 <= s.allowed_share * *zoned as f64;
                let run = match self
                    .runs
                    .get_mut(&p.source)
                    .and_then(|d| d.get_mut(&p.destination))
                    .and_then(|z| z.get_mut(*sz))
                {
                    Some(run) => run,
                    None if within => continue,
                    None => self
                        .runs
                        .entry(p.source.clone())
                        .or_default()
                        .entry(p.destination.clone())
                        .or_default()
                        .entry((*sz).to_owned())
                        .or_default(),
                };
                run.push_back(RunWindow {
                    start_us: w.start_us,
                    zoned: *zoned,
                    to: to.iter().map(|(d, n)| ((*d).to_owned(), *n)).collect(),
                });
                while run
                    .front()
                    .is_some_and(|f| w.end_us.saturating_sub(f.start_us) > s.span_us)
                {
                    run.pop_front();
                }
                let zoned: u64 = run.iter().map(|r| r.zoned).sum();
                let mut to: BTreeMap<String, u64> = BTreeMap::new();
                for r in run.iter() {
                    for (d, n) in &r.to {
                        *to.entry(d.clone()).or_default() += n;
                    }
                }
                let cross: u64 = to.values().sum();
                if cross as f64 <= s.allowed_share * zoned as f64 {
                    // the run's share is back within the policy: it ends
                    if let Some(zones) = self
                        .runs
                        .get_mut(&p.source)
                        .and_then(|d| d.get_mut(&p.destination))
                    {
                        zones.remove(*sz);
                    }
                    continue;
                }
                if cross < s.min_requests {
                    continue;
                }
                let p_tail = if s.allowed_share == 0.0 {
                    0.0
                } else {
                    Binomial::new(s.allowed_share, zoned).map_or(1.0, |b| b.sf(cross - 1))
                };
                if p_tail <= s.max_p && worst.as_ref().is_none_or(|w| p_tail < w.0) {
                    let since = run.front().map_or(w.start_us, |f| f.start_us);
                    worst = Some((p_tail, sz, zoned, cross, to, since));
                }
            }
            let Some((p_tail, sz, zoned, cross, to, since)) = worst else {
                continue;
            };
            let share = cross as f64 / zoned as f64;
            let (dz, _) = to
                .iter()
                .max_by_key(|(k, n)| (**n, std::cmp::Reverse(*k)))
                .expect("cross > 0");
            let mut share_ev = counted("cross_zone_share", share, s.allowed_share, "ratio");
            share_ev.tail_probability = Some(p_tail);
            out.push(finding(
                Signature::CrossZone,
                Subject::ZonePair {
                    source: p.source.clone(),
                    destination: p.destination.clone(),
                    source_zone: sz.to_owned(),
                    destination_zone: dz.clone(),
                },
                w,
                Severity::Warning,
                vec![
                    share_ev,
                    counted(
                        "cross_zone_requests",
                        cross as f64,
                        s.allowed_share * zoned as f64,
                        "requests",
                    ),
                ],
                to.iter()
                    .map(|(d, n)| {
                        related(
                            "zone",
                            &format!("{sz}->{d}"),
                            Some(*n as f64),
                            format!("{n} requests from zone {sz} to zone {d}"),
                        )
                    })
                    .collect(),
                schemas::Confidence::Normal,
                format!(
                    "{} -> {}: {:.0} % of its requests from zone {sz} cross zones ({} of {} \
                     over the last {} s, most to {dz}); the policy allows {:.0} %",
                    p.source,
                    p.destination,
                    100.0 * share,
                    cross,
                    zoned,
                    (w.end_us - since) / 1_000_000,
                    100.0 * s.allowed_share
                ),
            ));
        }
    }

    fn forget_before(&mut self, before_us: i64) {
        self.runs.retain(|_, destinations| {
            destinations.retain(|_, zones| {
                zones.retain(|_, run| run.back().is_some_and(|r| r.start_us >= before_us));
                !zones.is_empty()
            });
            !destinations.is_empty()
        });
    }

    fn save(&self) -> Vec<u8> {
        save_state(&self.runs)
    }

    fn load(&mut self, state: &[u8]) -> std::result::Result<(), String> {
        self.runs = load_state(state)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use schemas::Breakdown;

    use super::*;
    use crate::config::PairAllow;
    use crate::signatures::generic::tests::pw;

    fn zones(sz: &str, dz: &str, requests: u64) -> Breakdown {
        Breakdown {
            source_zone: Some(sz.into()),
            destination_zone: Some(dz.into()),
            requests,
            ..Breakdown::default()
        }
    }

    fn judge(c: &CrossZoneConfig, b: Vec<Breakdown>) -> Vec<Finding> {
        judge_in(
            &mut CrossZone::new(CrossZoneSpec::new(c, 10_000_000).unwrap()),
            0,
            b,
        )
    }

    /// `d` judges window `k` (10 s windows) of checkout -> payment with breakdown `b`.
    fn judge_in(d: &mut CrossZone, k: i64, b: Vec<Breakdown>) -> Vec<Finding> {
        let mut p = pw(
            k,
            "checkout",
            "payment",
            b.iter().map(|x| x.requests).sum(),
            0,
            1,
        );
        p.breakdown = b;
        crate::signatures::judge_pairs(d, std::slice::from_ref(&p))
    }

    #[test]
    fn a_pair_crossing_zones_above_its_allowed_share_is_found() {
        let c = CrossZoneConfig::default();
        // 4 % crossing: within the 5 % allowed
        assert!(judge(&c, vec![zones("a", "a", 960), zones("a", "b", 40)]).is_empty());
        let f = judge(
            &c,
            vec![
                zones("a", "a", 600),
                zones("a", "b", 300),
                zones("a", "c", 100),
            ],
        );
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].subject.key(), "zones/a/b/checkout/payment");
        assert_eq!(f[0].evidence[0].value, 0.4);
        assert_eq!(f[0].evidence[1].value, 400.0);
        assert!(f[0].evidence[0].tail_probability.unwrap() < 1e-100);
        assert_eq!(f[0].related.len(), 2);
        // allow-listed: nothing
        let allow = CrossZoneConfig {
            allow: vec![PairAllow {
                source: "checkout".into(),
                destination: "pay*".into(),
            }],
            ..c
        };
        assert!(judge(&allow, vec![zones("a", "a", 600), zones("a", "b", 400)]).is_empty());
    }

    #[test]
    fn a_quiet_pair_crossing_is_added_up_over_its_run() {
        let c = CrossZoneConfig {
            min_requests: 10,
            ..CrossZoneConfig::default()
        };
        let mut d = CrossZone::new(CrossZoneSpec::new(&c, 10_000_000).unwrap());
        // 3 of 4 requests from zone a cross each window: 3 < 10 requests, and
        // P(X >= 3), X ~ Binomial(4, 0.05) = 4.8e-4, is not sure enough alone
        let quiet = || vec![zones("a", "a", 1), zones("a", "b", 3)];
        assert!(judge_in(&mut d, 0, quiet()).is_empty());
        assert!(judge_in(&mut d, 1, quiet()).is_empty());
        assert!(judge_in(&mut d, 2, quiet()).is_empty());
        // the fourth window makes 12 of 16: P(X >= 12), X ~ Binomial(16, 0.05), is 3.7e-13
        // (the third window's 9 of 12 was sure enough, 3.7e-10, but under 10 requests)
        let f = judge_in(&mut d, 3, quiet());
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].subject.key(), "zones/a/b/checkout/payment");
        assert_eq!(f[0].evidence[0].value, 0.75);
        assert_eq!(f[0].evidence[1].value, 12.0);
        let p = f[0].evidence[0].tail_probability.unwrap();
        assert!((p / 3.6784e-13 - 1.0).abs() < 1e-3, "{p}");
        // a window that stays home joins the run: 12 of 17 still cross
        let f = judge_in(&mut d, 4, vec![zones("a", "a", 1)]);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].evidence[1].value, 12.0);
        // the run ends once its share is back within the allowed: 12 of 417 (2.9 %)
        assert!(judge_in(&mut d, 5, vec![zones("a", "a", 400)]).is_empty());
        // and starts over
        assert!(judge_in(&mut d, 6, quiet()).is_empty());
        // a run counts at most `span` (1 min, 6 windows) back: windows 6..=11 hold 18 of 24,
        // the same as windows 7..=12
        for k in 7..=11 {
            judge_in(&mut d, k, quiet());
        }
        let f = judge_in(&mut d, 12, quiet());
        assert_eq!(f[0].evidence[1].value, 18.0);
    }
}
