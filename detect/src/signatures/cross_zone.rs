//! Cross-zone traffic: a pair sends more of its requests across availability zones than the
//! bulkhead policy allows.
//!
//! For each pair and each of its source zones, from the pair's zone breakdown
//! ([`schemas::Breakdown`], requests whose records name both zones): `cross` = requests from
//! that zone to another, `zoned` = all requests from that zone, share = cross ÷ zoned (a
//! misrouted zone is seen even when the pair's other zones stay home). It fires, on the
//! source zone whose crossing is least likely, when
//!
//! ```text
//! cross ≥ min-requests  ∧  share > allowed-share
//!   ∧  P(X ≥ cross) ≤ max-tail-probability,   X ~ Binomial(zoned, allowed-share)
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

use std::collections::BTreeMap;

use schemas::{Finding, Severity, Signature, Subject};
use statrs::distribution::{Binomial, DiscreteCDF};

use crate::config::CrossZoneConfig;
use crate::error::{Error, Result};
use crate::node::is_service;
use crate::signatures::{
    NamePattern, Scope, SignatureDetector, WindowView, counted, finding, related,
};
use crate::suite::tail;

/// The validated `[detect.cross-zone]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct CrossZoneSpec {
    allowed_share: f64,
    min_requests: u64,
    max_p: f64,
    allow: Vec<(NamePattern, NamePattern)>,
}

impl TryFrom<&CrossZoneConfig> for CrossZoneSpec {
    type Error = Error;

    fn try_from(c: &CrossZoneConfig) -> Result<Self> {
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
            allow: c
                .allow
                .iter()
                .map(|a| Ok((pattern(&a.source)?, pattern(&a.destination)?)))
                .collect::<Result<_>>()?,
        })
    }
}

/// The cross-zone detector (stateless).
#[derive(Debug, Clone)]
pub struct CrossZone {
    spec: CrossZoneSpec,
}

impl CrossZone {
    /// A detector with `spec`.
    pub fn new(spec: CrossZoneSpec) -> Self {
        CrossZone { spec }
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
            // the source zone whose crossing is least likely under the allowed share
            // (tail probability, source zone, zoned, cross, crossings by destination zone)
            type Crossing<'a> = (f64, &'a str, u64, u64, &'a BTreeMap<&'a str, u64>);
            let mut worst: Option<Crossing<'_>> = None;
            for (sz, (zoned, to)) in &by_zone {
                let cross: u64 = to.values().sum();
                if cross < s.min_requests || cross as f64 <= s.allowed_share * *zoned as f64 {
                    continue;
                }
                let p_tail = if s.allowed_share == 0.0 {
                    0.0
                } else {
                    Binomial::new(s.allowed_share, *zoned).map_or(1.0, |b| b.sf(cross - 1))
                };
                if p_tail <= s.max_p && worst.as_ref().is_none_or(|w| p_tail < w.0) {
                    worst = Some((p_tail, sz, *zoned, cross, to));
                }
            }
            let Some((p_tail, sz, zoned, cross, to)) = worst else {
                continue;
            };
            let share = cross as f64 / zoned as f64;
            let (&dz, _) = to
                .iter()
                .max_by_key(|(k, n)| (**n, std::cmp::Reverse(**k)))
                .expect("cross > 0");
            let crossings: BTreeMap<(&str, &str), u64> =
                to.iter().map(|(d, n)| ((sz, *d), *n)).collect();
            let mut share_ev = counted("cross_zone_share", share, s.allowed_share, "ratio");
            share_ev.tail_probability = Some(p_tail);
            out.push(finding(
                Signature::CrossZone,
                Subject::ZonePair {
                    source: p.source.clone(),
                    destination: p.destination.clone(),
                    source_zone: sz.to_owned(),
                    destination_zone: dz.to_owned(),
                },
                view.window,
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
                crossings
                    .iter()
                    .map(|((a, b), n)| {
                        related(
                            "zone",
                            &format!("{a}->{b}"),
                            Some(*n as f64),
                            format!("{n} requests from zone {a} to zone {b}"),
                        )
                    })
                    .collect(),
                schemas::Confidence::Normal,
                format!(
                    "{} -> {}: {:.0} % of its requests from zone {sz} cross zones ({} of {}, \
                     most to {dz}); the policy allows {:.0} %",
                    p.source,
                    p.destination,
                    100.0 * share,
                    cross,
                    zoned,
                    100.0 * s.allowed_share
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use schemas::Breakdown;

    use super::*;
    use crate::config::PairAllow;
    use crate::signatures::generic::tests::pw;
    use crate::store::BaselineStore;

    fn zones(sz: &str, dz: &str, requests: u64) -> Breakdown {
        Breakdown {
            source_zone: Some(sz.into()),
            destination_zone: Some(dz.into()),
            requests,
            ..Breakdown::default()
        }
    }

    fn judge(c: &CrossZoneConfig, b: Vec<Breakdown>) -> Vec<Finding> {
        let mut p = pw(
            0,
            "checkout",
            "payment",
            b.iter().map(|x| x.requests).sum(),
            0,
            1,
        );
        p.breakdown = b;
        let mut out = Vec::new();
        CrossZone::new(CrossZoneSpec::try_from(c).unwrap()).judge(
            &WindowView {
                window: p.window,
                pairs: std::slice::from_ref(&p),
                nodes: &[],
                callers: &[],
                baselines: &BaselineStore::default(),
            },
            &mut out,
        );
        out
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
}
