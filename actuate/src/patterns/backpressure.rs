//! Backpressure: rate-limit the callers of a node that is in trouble.
//!
//! The remedy for a black hole (MISSION.md, example 1) and for storms: while a node swallows
//! requests, every request sent to it is wasted and holds resources on the caller's side; while
//! callers burst together, the burst is what hurts. Each caller the finding names is limited to
//! `rate-fraction` × its baseline rate to the node (× its current rate when it has no
//! baseline), or to a fixed `rate-limit-rps`.
//!
//! Never on one source's evidence alone: a black-hole finding with several callers limits them
//! only when at least two saw the failure themselves (its [`COLLAPSED_CALLERS`] evidence); a
//! finding with a single caller limits only that caller, whose own traffic is the evidence. The
//! failure could otherwise be one caller's doing, and limiting the others would punish them
//! for it.
//!
//! A later finding naming a caller the command does not cover renews it with every caller;
//! the callers it had keep their limits.
//!
//! The remedy also keeps each caller's baseline rate (not sent), so that the blast-radius
//! rail counts what the limit takes from the caller's normal traffic: a storm's callers send
//! several times their baseline, and counting the excess a limit sheds would refuse exactly the
//! command that stops the storm.

use std::collections::BTreeMap;

use schemas::{
    BackpressureParameters, COLLAPSED_CALLERS, Finding, Parameters, Pattern, Signature, Subject,
    Target,
};

use super::{OperationalPattern, Remedy, only};
use crate::config::PolicyConfig;
use crate::error::{Error, Result};

/// The backpressure pattern, validated from a policy rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Backpressure {
    /// Fraction of a caller's baseline rate it keeps, in (0, 1].
    rate_fraction: f64,
    /// Or a fixed limit per caller, req/s.
    rate_limit_rps: Option<f64>,
}

impl Backpressure {
    /// Validates `0 < rate-fraction <= 1` (default 0.5) and `rate-limit-rps >= 0.001` (rounded
    /// to 0.001, the precision commands carry), not both.
    ///
    /// # Errors
    /// [`Error::Config`] naming `policy[index].<key>`.
    pub fn new(index: usize, rule: &PolicyConfig) -> Result<Self> {
        only(index, rule, &["rate-fraction", "rate-limit-rps"])?;
        let f = rule.rate_fraction.unwrap_or(0.5);
        // written so that NaN fails too
        if !(f > 0.0 && f <= 1.0) {
            return Err(Error::Config {
                key: format!("policy[{index}].rate-fraction"),
                value: f.to_string(),
                reason: "must be greater than 0 and at most 1".into(),
            });
        }
        if let Some(r) = rule.rate_limit_rps {
            if !(r.is_finite() && (0.001..1e12).contains(&r)) {
                return Err(Error::Config {
                    key: format!("policy[{index}].rate-limit-rps"),
                    value: r.to_string(),
                    reason: "must be a rate of 0.001 to 1e12 req/s (a limit of 0 is segmentation)"
                        .into(),
                });
            }
            if rule.rate_fraction.is_some() {
                return Err(Error::Config {
                    key: format!("policy[{index}].rate-fraction"),
                    value: f.to_string(),
                    reason: "give rate-fraction or rate-limit-rps, not both".into(),
                });
            }
        }
        Ok(Backpressure {
            rate_fraction: f,
            rate_limit_rps: rule.rate_limit_rps.map(rounded),
        })
    }
}

/// How many callers saw the finding's failure themselves (its [`COLLAPSED_CALLERS`] evidence;
/// 0 when absent or not a number).
fn witnesses(finding: &Finding) -> f64 {
    finding
        .evidence
        .iter()
        .find(|e| e.signal == COLLAPSED_CALLERS)
        .map_or(0.0, |e| if e.value.is_finite() { e.value } else { 0.0 })
}

/// A rate rounded to 0.001 req/s (the precision commands carry, see
/// `RemediationCommand::canonical_json`), at least 0.001.
fn rounded(rps: f64) -> f64 {
    ((rps * 1000.0).round() / 1000.0).max(0.001)
}

impl OperationalPattern for Backpressure {
    fn pattern(&self) -> Pattern {
        Pattern::Backpressure
    }

    fn subject_kinds(&self) -> &'static [&'static str] {
        &["node", "pair", "sources"]
    }

    /// The finding's callers (the destination: its node, the pair's destination or the
    /// sources' destination), each limited; a caller with neither a baseline nor a current
    /// rate (0, negative or not finite) is left out, unless the limit is fixed. A caller listed
    /// twice counts with its larger rate. `None`: no caller left, a landscape or version
    /// subject, or a black hole with several callers and fewer than two witnesses.
    fn remedy(&self, finding: &Finding) -> Option<Remedy> {
        let destination = match &finding.subject {
            Subject::Node { node } => node,
            Subject::Pair { destination, .. } | Subject::Sources { destination, .. } => destination,
            _ => return None,
        };
        if finding.signature == Signature::BlackHole
            && finding.callers.len() > 1
            && witnesses(finding) < 2.0
        {
            return None;
        }
        let mut limits: BTreeMap<String, f64> = BTreeMap::new();
        let mut baseline_rps: BTreeMap<String, f64> = BTreeMap::new();
        for caller in &finding.callers {
            let known = Some(caller.baseline_rate_rps).filter(|r| r.is_finite() && *r > 0.0);
            let base = known.or(Some(caller.rate_rps).filter(|r| r.is_finite() && *r > 0.0));
            let limit = match (self.rate_limit_rps, base) {
                (Some(fixed), _) => fixed,
                (None, Some(base)) => rounded(self.rate_fraction * base),
                (None, None) => continue,
            };
            let slot = limits.entry(caller.service.clone()).or_insert(0.0);
            *slot = slot.max(limit);
            if let Some(b) = known {
                let slot = baseline_rps.entry(caller.service.clone()).or_insert(0.0);
                *slot = slot.max(b);
            }
        }
        if limits.is_empty() {
            return None;
        }
        Some(Remedy {
            target: Target {
                sources: limits.keys().cloned().collect(),
                destinations: vec![destination.clone()],
                ..Target::default()
            },
            parameters: Parameters::Backpressure(BackpressureParameters {
                rate_limit_rps: limits,
            }),
            baseline_rps,
        })
    }

    /// Every caller of both, the ones in force keeping their limits.
    fn merge(&self, active: &Remedy, new: Remedy) -> Remedy {
        let (Parameters::Backpressure(old), Parameters::Backpressure(mut now)) =
            (&active.parameters, new.parameters)
        else {
            return active.clone();
        };
        for (caller, limit) in &old.rate_limit_rps {
            now.rate_limit_rps.insert(caller.clone(), *limit);
        }
        // a caller's baseline as the command in force knew it: what its limit was taken from
        let mut baseline_rps = new.baseline_rps;
        baseline_rps.extend(active.baseline_rps.iter().map(|(k, v)| (k.clone(), *v)));
        Remedy {
            target: Target {
                sources: now.rate_limit_rps.keys().cloned().collect(),
                ..new.target
            },
            parameters: Parameters::Backpressure(now),
            baseline_rps,
        }
    }
}

#[cfg(test)]
mod tests {
    use schemas::Evidence;

    use super::*;
    use crate::patterns::testing::{caller, finding};

    fn rule() -> PolicyConfig {
        PolicyConfig::new(Signature::BlackHole, Pattern::Backpressure)
    }

    fn black_hole(node: &str, callers: Vec<schemas::Caller>, witnesses: usize) -> Finding {
        let mut f = finding(Signature::BlackHole, Subject::Node { node: node.into() });
        f.callers = callers;
        f.evidence.push(Evidence {
            signal: COLLAPSED_CALLERS.into(),
            value: witnesses as f64,
            baseline: 0.0,
            unit: "callers".into(),
            tail_probability: None,
        });
        f
    }

    fn limits(r: &Remedy) -> Vec<(&str, f64)> {
        let Parameters::Backpressure(p) = &r.parameters else {
            panic!("not backpressure: {r:?}")
        };
        p.rate_limit_rps
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect()
    }

    #[test]
    fn each_caller_keeps_a_fraction_of_its_baseline() {
        let mut r = rule();
        r.rate_fraction = Some(0.25);
        let bp = Backpressure::new(0, &r).unwrap();
        let f = black_hole(
            "catalog",
            vec![
                caller("web", 10.0, 118.5),
                caller("mobile", 7.0, 0.0), // no baseline: its current rate
                caller("batch", 0.0, f64::NAN), // nothing to take a fraction of
            ],
            2,
        );
        let remedy = bp.remedy(&f).unwrap();
        assert_eq!(limits(&remedy), [("mobile", 1.75), ("web", 29.625)]);
        assert_eq!(remedy.target.sources, ["mobile", "web"]);
        assert_eq!(remedy.target.destinations, ["catalog"]);
        // only a known baseline is kept (mobile's limit comes from its current rate)
        assert_eq!(
            remedy.baseline_rps.into_iter().collect::<Vec<_>>(),
            [("web".to_owned(), 118.5)]
        );
    }

    /// 0.1 × 50.5 req/s is 5.050000000000001 in binary floating point: limits are rounded to
    /// 0.001 req/s where they are computed, so the command's JSON says 5.05.
    #[test]
    fn limits_carry_no_float_noise() {
        assert_eq!(0.1 * 50.5, 5.050000000000001);
        let mut r = rule();
        r.rate_fraction = Some(0.1);
        let bp = Backpressure::new(0, &r).unwrap();
        let f = black_hole(
            "x",
            vec![caller("a", 1.0, 50.5), caller("b", 1.0, 1.0999999999999999)],
            2,
        );
        let remedy = bp.remedy(&f).unwrap();
        assert_eq!(limits(&remedy), [("a", 5.05), ("b", 0.11)]);
        let Parameters::Backpressure(p) = &remedy.parameters else {
            unreachable!()
        };
        assert_eq!(
            serde_json::to_string(p).unwrap(),
            r#"{"rate_limit_rps":{"a":5.05,"b":0.11}}"#
        );
        // a fixed limit from the config too
        let mut r = rule();
        r.rate_limit_rps = Some(2.0 / 3.0);
        let bp = Backpressure::new(0, &r).unwrap();
        assert_eq!(
            limits(&bp.remedy(&f).unwrap()),
            [("a", 0.667), ("b", 0.667)]
        );
    }

    #[test]
    fn several_callers_need_two_witnesses() {
        let bp = Backpressure::new(0, &rule()).unwrap();
        let callers = vec![caller("a", 1.0, 10.0), caller("b", 1.0, 20.0)];
        assert!(bp.remedy(&black_hole("x", callers.clone(), 1)).is_none());
        assert_eq!(
            limits(&bp.remedy(&black_hole("x", callers, 2)).unwrap()),
            [("a", 5.0), ("b", 10.0)]
        );
        // one caller is its own witness
        let one = black_hole("x", vec![caller("a", 1.0, 10.0)], 0);
        assert_eq!(limits(&bp.remedy(&one).unwrap()), [("a", 5.0)]);
    }

    #[test]
    fn a_fixed_limit_and_a_merge_that_keeps_the_old_limits() {
        let mut r = rule();
        r.rate_limit_rps = Some(3.0);
        let bp = Backpressure::new(0, &r).unwrap();
        let first = bp
            .remedy(&black_hole("x", vec![caller("a", 1.0, 10.0)], 1))
            .unwrap();
        let mut r = rule();
        r.rate_fraction = Some(0.5);
        let later = Backpressure::new(0, &r)
            .unwrap()
            .remedy(&black_hole(
                "x",
                vec![caller("a", 1.0, 100.0), caller("b", 1.0, 8.0)],
                2,
            ))
            .unwrap();
        let merged = bp.merge(&first, later);
        assert_eq!(limits(&merged), [("a", 3.0), ("b", 4.0)]);
        // the baselines the limits were taken from: a's from the command in force
        assert_eq!(
            merged.baseline_rps.into_iter().collect::<Vec<_>>(),
            [("a".to_owned(), 10.0), ("b".to_owned(), 8.0)]
        );
        assert_eq!(merged.target.sources, ["a", "b"]);
    }

    #[test]
    fn config_is_validated_naming_the_key() {
        for (fraction, fixed, key) in [
            (Some(0.0), None, "policy[3].rate-fraction"),
            (Some(1.5), None, "policy[3].rate-fraction"),
            (Some(f64::NAN), None, "policy[3].rate-fraction"),
            (None, Some(0.0), "policy[3].rate-limit-rps"),
            (None, Some(0.000_000_1), "policy[3].rate-limit-rps"),
            (Some(0.5), Some(10.0), "policy[3].rate-fraction"),
        ] {
            let mut r = rule();
            r.rate_fraction = fraction;
            r.rate_limit_rps = fixed;
            let e = Backpressure::new(3, &r).unwrap_err().to_string();
            assert!(e.starts_with(key), "{e}");
        }
        let mut r = rule();
        r.status = Some(503);
        let e = Backpressure::new(1, &r).unwrap_err().to_string();
        assert_eq!(e, "policy[1].status = (set): backpressure takes no status");
    }
}
