//! Bulkhead: cap or deny the traffic between zones or pools.
//!
//! The remedy for accidental cross-zone traffic (MISSION.md, example 5) and for one pool
//! flooding another: the matched traffic is capped at `max-concurrency` requests in flight, or
//! denied when no cap is given, except the edges of the `allow` list (critical fail-over
//! routes, e.g. a database's replica in another zone). The target is the finding's subject: a
//! zone pair (the edge from one zone to the other), a pair, or a set of sources.
//!
//! An allow-listed edge is never the target: a finding on one gives nothing.

use schemas::{BulkheadParameters, Edge, Finding, Parameters, Pattern, Subject};

use super::{OperationalPattern, Remedy, only, target_of};
use crate::config::PolicyConfig;
use crate::error::{Error, Result};

/// The bulkhead pattern, validated from a policy rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Bulkhead {
    parameters: BulkheadParameters,
}

impl Bulkhead {
    /// Validates `max-concurrency` (>= 1) and the allow-list (no empty name).
    ///
    /// # Errors
    /// [`Error::Config`] naming `policy[index].<key>`.
    pub fn new(index: usize, rule: &PolicyConfig) -> Result<Self> {
        only(index, rule, &["max-concurrency", "allow"])?;
        if rule.max_concurrency == Some(0) {
            return Err(Error::Config {
                key: format!("policy[{index}].max-concurrency"),
                value: "0".into(),
                reason: "must be at least 1 (leave it out to deny the traffic)".into(),
            });
        }
        if let Some(e) = rule
            .allow
            .iter()
            .find(|e| e.source.is_empty() || e.destination.is_empty())
        {
            return Err(Error::Config {
                key: format!("policy[{index}].allow"),
                value: format!("{} -> {}", e.source, e.destination),
                reason: "an edge names both services".into(),
            });
        }
        let mut allow = rule.allow.clone();
        allow.sort();
        allow.dedup();
        Ok(Bulkhead {
            parameters: BulkheadParameters {
                max_concurrency: rule.max_concurrency,
                allow,
            },
        })
    }

    fn allowed(&self, source: &str, destination: &str) -> bool {
        self.parameters
            .allow
            .binary_search(&Edge {
                source: source.to_owned(),
                destination: destination.to_owned(),
            })
            .is_ok()
    }
}

impl OperationalPattern for Bulkhead {
    fn pattern(&self) -> Pattern {
        Pattern::Bulkhead
    }

    fn subject_kinds(&self) -> &'static [&'static str] {
        &["zones", "pair", "sources"]
    }

    fn remedy(&self, finding: &Finding) -> Option<Remedy> {
        match &finding.subject {
            Subject::ZonePair {
                source,
                destination,
                ..
            }
            | Subject::Pair {
                source,
                destination,
            } if self.allowed(source, destination) => return None,
            Subject::ZonePair { .. } | Subject::Pair { .. } | Subject::Sources { .. } => {}
            _ => return None,
        }
        Some(Remedy {
            target: target_of(finding)?,
            parameters: Parameters::Bulkhead(self.parameters.clone()),
            baseline_rps: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use schemas::Signature;

    use super::*;
    use crate::patterns::testing::finding;

    fn zone_pair(source: &str, destination: &str) -> Subject {
        Subject::ZonePair {
            source: source.into(),
            destination: destination.into(),
            source_zone: "zone-b".into(),
            destination_zone: "zone-a".into(),
        }
    }

    #[test]
    fn caps_the_zone_pair_but_never_an_allowed_edge() {
        let mut rule = PolicyConfig::new(Signature::CrossZone, Pattern::Bulkhead);
        rule.max_concurrency = Some(8);
        rule.allow = vec![Edge {
            source: "order".into(),
            destination: "order-db".into(),
        }];
        let b = Bulkhead::new(0, &rule).unwrap();
        let r = b
            .remedy(&finding(
                Signature::CrossZone,
                zone_pair("checkout-api", "order"),
            ))
            .unwrap();
        assert_eq!(r.target.sources, ["checkout-api"]);
        assert_eq!(r.target.destinations, ["order"]);
        assert_eq!(r.target.source_zone.as_deref(), Some("zone-b"));
        assert_eq!(r.target.destination_zone.as_deref(), Some("zone-a"));
        let Parameters::Bulkhead(p) = &r.parameters else {
            panic!("{r:?}")
        };
        assert_eq!(p.max_concurrency, Some(8));
        assert_eq!(p.allow.len(), 1);
        assert!(
            b.remedy(&finding(
                Signature::CrossZone,
                zone_pair("order", "order-db")
            ))
            .is_none()
        );
        rule.max_concurrency = Some(0);
        let e = Bulkhead::new(5, &rule).unwrap_err().to_string();
        assert!(e.starts_with("policy[5].max-concurrency = 0"), "{e}");
    }
}
