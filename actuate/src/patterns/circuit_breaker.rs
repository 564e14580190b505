//! Circuit breaker: fail fast on calls to a service in trouble.
//!
//! While a dependency is slow or failing, callers that wait on it pile up requests and
//! threads (MISSION.md: gray failures spread through waiting). The breaker answers the matched
//! requests at once with `status` (default 503) instead of sending them on: optionally only
//! for callers with a tier label (`tier = "batch"`: shed the batch jobs, keep the
//! interactive traffic), optionally only for requests still running after `slower-than`
//! (a timeout shorter than the dependency's current latency).
//!
//! The target is the finding's subject (a node: every caller; a pair: its source; a version;
//! a zone pair; a set of sources). Nothing for a landscape-wide finding.

use schemas::{CircuitBreakerParameters, Finding, Parameters, Pattern};

use super::{OperationalPattern, Remedy, only, status, target_of};
use crate::config::PolicyConfig;
use crate::error::{Error, Result};

/// The circuit-breaker pattern, validated from a policy rule.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitBreaker {
    parameters: CircuitBreakerParameters,
}

impl CircuitBreaker {
    /// Validates `status` (100 to 599, default 503), `slower-than` (> 0, at most
    /// 2^64 − 1 µs) and `tier` (not empty).
    ///
    /// # Errors
    /// [`Error::Config`] naming `policy[index].<key>`.
    pub fn new(index: usize, rule: &PolicyConfig) -> Result<Self> {
        only(index, rule, &["status", "tier", "slower-than"])?;
        let slower_than_us = match rule.slower_than {
            None => None,
            Some(d) => match u64::try_from(d.as_micros()) {
                Ok(us) if us > 0 => Some(us),
                _ => {
                    return Err(Error::Config {
                        key: format!("policy[{index}].slower-than"),
                        value: format!("{d:?}"),
                        reason: "must be at least 1µs".into(),
                    });
                }
            },
        };
        if rule.tier.as_deref() == Some("") {
            return Err(Error::Config {
                key: format!("policy[{index}].tier"),
                value: "\"\"".into(),
                reason: "must name a tier (or be left out: every caller)".into(),
            });
        }
        Ok(CircuitBreaker {
            parameters: CircuitBreakerParameters {
                status: status(index, rule, 503)?,
                tier: rule.tier.clone(),
                slower_than_us,
            },
        })
    }
}

impl OperationalPattern for CircuitBreaker {
    fn pattern(&self) -> Pattern {
        Pattern::CircuitBreaker
    }

    fn remedy(&self, finding: &Finding) -> Option<Remedy> {
        Some(Remedy {
            target: target_of(finding)?,
            parameters: Parameters::CircuitBreaker(self.parameters.clone()),
            baseline_rps: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use schemas::{Signature, Subject};

    use super::*;
    use crate::patterns::testing::finding;

    #[test]
    fn breaks_the_pair_for_slow_requests_of_one_tier() {
        let mut rule = PolicyConfig::new(Signature::LatencyShift, Pattern::CircuitBreaker);
        rule.tier = Some("batch".into());
        rule.slower_than = Some(Duration::from_millis(1500));
        let cb = CircuitBreaker::new(0, &rule).unwrap();
        let f = finding(
            Signature::LatencyShift,
            Subject::Pair {
                source: "reports".into(),
                destination: "orders-db".into(),
            },
        );
        let r = cb.remedy(&f).unwrap();
        assert_eq!(r.target.sources, ["reports"]);
        assert_eq!(r.target.destinations, ["orders-db"]);
        assert_eq!(
            r.parameters,
            Parameters::CircuitBreaker(CircuitBreakerParameters {
                status: 503,
                tier: Some("batch".into()),
                slower_than_us: Some(1_500_000),
            })
        );
        assert!(
            cb.remedy(&finding(
                Signature::SpreadingDegradation,
                Subject::Landscape
            ))
            .is_none()
        );
    }

    #[test]
    fn config_is_validated_naming_the_key() {
        let mut rule = PolicyConfig::new(Signature::ErrorSpike, Pattern::CircuitBreaker);
        rule.status = Some(999);
        let e = CircuitBreaker::new(2, &rule).unwrap_err().to_string();
        assert_eq!(
            e,
            "policy[2].status = 999: must be an HTTP status, 100 to 599"
        );
        let mut rule = PolicyConfig::new(Signature::ErrorSpike, Pattern::CircuitBreaker);
        rule.weight = Some(0.5);
        let e = CircuitBreaker::new(0, &rule).unwrap_err().to_string();
        assert!(e.starts_with("policy[0].weight"), "{e}");
    }
}
