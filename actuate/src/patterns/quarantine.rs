//! Quarantine: take one version of a service out of rotation.
//!
//! The remedy for a deployment regression (MISSION.md, example 2): the version the finding
//! names gets no new requests (or `weight` of them, default 0), the service's other versions
//! serve; a rollback without a redeploy. Only findings on a version subject; nothing else
//! names what to take out.

use schemas::{Finding, Parameters, Pattern, QuarantineParameters, Signature, Subject};

use super::{OperationalPattern, Remedy, only, target_of};
use crate::config::PolicyConfig;
use crate::error::{Error, Result};

/// The quarantine pattern, validated from a policy rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Quarantine {
    weight: f64,
}

impl Quarantine {
    /// Validates `0 <= weight < 1` (default 0), rounded to 0.001 (the precision commands
    /// carry).
    ///
    /// # Errors
    /// [`Error::Config`] naming `policy[index].weight`, or `policy[index].signature` for a
    /// signature whose findings never name a version (the rule could never act).
    pub fn new(index: usize, rule: &PolicyConfig) -> Result<Self> {
        only(index, rule, &["weight"])?;
        if !matches!(
            rule.signature,
            Signature::DeployRegression | Signature::Rule
        ) {
            return Err(Error::Config {
                key: format!("policy[{index}].signature"),
                value: rule.signature.as_str().into(),
                reason: "quarantine acts only on findings that name a version: deploy-regression, or a rule returning service and version".into(),
            });
        }
        let weight = rule.weight.unwrap_or(0.0);
        if !(0.0..1.0).contains(&weight) {
            return Err(Error::Config {
                key: format!("policy[{index}].weight"),
                value: weight.to_string(),
                reason: "must be at least 0 and below 1".into(),
            });
        }
        Ok(Quarantine {
            weight: (weight * 1000.0).round() / 1000.0,
        })
    }
}

impl OperationalPattern for Quarantine {
    fn pattern(&self) -> Pattern {
        Pattern::Quarantine
    }

    fn subject_kinds(&self) -> &'static [&'static str] {
        &["version"]
    }

    fn remedy(&self, finding: &Finding) -> Option<Remedy> {
        if !matches!(finding.subject, Subject::Version { .. }) {
            return None;
        }
        Some(Remedy {
            target: target_of(finding)?,
            parameters: Parameters::Quarantine(QuarantineParameters {
                weight: self.weight,
            }),
            baseline_rps: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patterns::testing::finding;

    #[test]
    fn takes_the_version_out() {
        let q = Quarantine::new(
            0,
            &PolicyConfig::new(Signature::DeployRegression, Pattern::Quarantine),
        )
        .unwrap();
        let f = finding(
            Signature::DeployRegression,
            Subject::Version {
                service: "pricing".into(),
                version: "v2.6.0".into(),
            },
        );
        let r = q.remedy(&f).unwrap();
        assert_eq!(r.target.destinations, ["pricing"]);
        assert_eq!(r.target.version.as_deref(), Some("v2.6.0"));
        assert!(r.target.sources.is_empty(), "every caller");
        let node = finding(
            Signature::DeployRegression,
            Subject::Node {
                node: "pricing".into(),
            },
        );
        assert!(q.remedy(&node).is_none());
        let mut rule = PolicyConfig::new(Signature::DeployRegression, Pattern::Quarantine);
        rule.weight = Some(1.0);
        let e = Quarantine::new(4, &rule).unwrap_err().to_string();
        assert_eq!(e, "policy[4].weight = 1: must be at least 0 and below 1");
    }

    #[test]
    fn a_signature_that_names_no_version_is_a_config_error() {
        let e = Quarantine::new(
            2,
            &PolicyConfig::new(Signature::BlackHole, Pattern::Quarantine),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("policy[2].signature"), "{e}");
        assert!(e.contains("black-hole"), "{e}");
        assert!(
            Quarantine::new(0, &PolicyConfig::new(Signature::Rule, Pattern::Quarantine)).is_ok()
        );
    }
}
