//! Operational patterns: each turns one finding into what it asks of enforcement points (a
//! [`Remedy`]: the traffic to act on and the pattern's parameters), or nothing.
//!
//! A pattern is one file behind one small trait, [`OperationalPattern`]: findings in, remedies
//! out. Patterns keep no state and read no clock; the [`crate::Actuator`] keeps the commands
//! in force, issues, renews and revokes them, and passes every new one through the safety
//! rails ([`crate::rails`]). A policy rule (`[[actuate.policy]]`) picks the pattern for a
//! finding, with its parameters; [`build`] validates it.
//!
//! | pattern | asks for | on subjects |
//! |---|---|---|
//! | [`backpressure`] | each caller limited to a fraction of its baseline rate (or a fixed rate) | findings that name callers |
//! | [`circuit_breaker`] | matched requests fail fast with a status | any but the landscape |
//! | [`bulkhead`] | matched traffic capped in concurrency or denied, with an allow-list | zone pairs, pairs, sources |
//! | [`segmentation`] | the offending edges denied | sources, pairs |
//! | [`quarantine`] | one version of a service out of rotation | versions |

pub mod backpressure;
pub mod bulkhead;
pub mod circuit_breaker;
pub mod quarantine;
pub mod segmentation;

use std::collections::BTreeMap;

use schemas::{Finding, Parameters, Pattern, Subject, Target};

use crate::config::PolicyConfig;
use crate::error::Result;

/// What a pattern asks for on one finding: the traffic and the parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Remedy {
    /// The traffic to act on.
    pub target: Target,
    /// The pattern's parameters.
    pub parameters: Parameters,
    /// Each limited caller's baseline rate toward the target, req/s, where the finding knows
    /// it (backpressure; empty for the other patterns). Not sent: the rails count what a
    /// backpressure command takes from a caller's normal traffic, not from a storm's excess
    /// ([`crate::rails::affected`]).
    pub baseline_rps: BTreeMap<String, f64>,
}

/// One operational pattern, validated from a policy rule.
pub trait OperationalPattern: std::fmt::Debug + Send + Sync {
    /// Which pattern this is.
    fn pattern(&self) -> Pattern;

    /// What `finding` asks of this pattern; `None` when the pattern can't act on it (a subject
    /// it has no target for, no caller to limit, an allow-listed edge).
    fn remedy(&self, finding: &Finding) -> Option<Remedy>;

    /// The kinds of subjects it can act on (`schemas::Subject::kind`); a policy rule whose
    /// signature has none of them is a config error. Default: every kind but the landscape.
    fn subject_kinds(&self) -> &'static [&'static str] {
        &["node", "pair", "version", "zones", "sources"]
    }

    /// The remedy of a command in force (`active`) that a later finding asks for again
    /// (`new`): what the renewed command says. Default: the new one.
    fn merge(&self, _active: &Remedy, new: Remedy) -> Remedy {
        new
    }
}

/// The pattern `rule` asks for, validated (`index`: the rule's position, for errors).
///
/// # Errors
/// [`crate::Error::Config`] naming `policy[index].<key>`: a parameter out of range, or one
/// the pattern does not take.
pub fn build(index: usize, rule: &PolicyConfig) -> Result<Box<dyn OperationalPattern>> {
    Ok(match rule.pattern {
        Pattern::Backpressure => Box::new(backpressure::Backpressure::new(index, rule)?),
        Pattern::CircuitBreaker => Box::new(circuit_breaker::CircuitBreaker::new(index, rule)?),
        Pattern::Bulkhead => Box::new(bulkhead::Bulkhead::new(index, rule)?),
        Pattern::Segmentation => Box::new(segmentation::Segmentation::new(index, rule)?),
        Pattern::Quarantine => Box::new(quarantine::Quarantine::new(index, rule)?),
    })
}

/// `Err` naming `policy[index].<key>` when `rule` sets a key its pattern does not take
/// (`used`: the pattern's own keys).
pub(crate) fn only(index: usize, rule: &PolicyConfig, used: &[&str]) -> Result<()> {
    let set = [
        ("rate-fraction", rule.rate_fraction.is_some()),
        ("rate-limit-rps", rule.rate_limit_rps.is_some()),
        ("status", rule.status.is_some()),
        ("tier", rule.tier.is_some()),
        ("slower-than", rule.slower_than.is_some()),
        ("max-concurrency", rule.max_concurrency.is_some()),
        ("allow", !rule.allow.is_empty()),
        ("weight", rule.weight.is_some()),
    ];
    for (key, given) in set {
        if given && !used.contains(&key) {
            return Err(crate::Error::Config {
                key: format!("policy[{index}].{key}"),
                value: "(set)".into(),
                reason: format!("{} takes no {key}", rule.pattern.as_str()),
            });
        }
    }
    Ok(())
}

/// The HTTP status of `rule`, or `default`; 100 to 599.
pub(crate) fn status(index: usize, rule: &PolicyConfig, default: u16) -> Result<u16> {
    let s = rule.status.unwrap_or(default);
    if !(100..=599).contains(&s) {
        return Err(crate::Error::Config {
            key: format!("policy[{index}].status"),
            value: s.to_string(),
            reason: "must be an HTTP status, 100 to 599".into(),
        });
    }
    Ok(s)
}

/// The services a finding's subject is about, as a target: a node (every caller), a pair, a
/// version of a service, a zone pair, or a set of sources toward a destination (toward the
/// services the finding names `destination` in its related entities, when the subject's
/// destination is a segment's name). `None` for the landscape.
pub fn target_of(finding: &Finding) -> Option<Target> {
    let t = match &finding.subject {
        Subject::Node { node } => Target {
            destinations: vec![node.clone()],
            ..Target::default()
        },
        Subject::Pair {
            source,
            destination,
        } => Target {
            sources: vec![source.clone()],
            destinations: vec![destination.clone()],
            ..Target::default()
        },
        Subject::Version { service, version } => Target {
            destinations: vec![service.clone()],
            version: Some(version.clone()),
            ..Target::default()
        },
        Subject::ZonePair {
            source,
            destination,
            source_zone,
            destination_zone,
        } => Target {
            sources: vec![source.clone()],
            destinations: vec![destination.clone()],
            source_zone: Some(source_zone.clone()),
            destination_zone: Some(destination_zone.clone()),
            version: None,
        },
        Subject::Sources {
            destination,
            sources,
        } => {
            let mut reached: Vec<String> = finding
                .related
                .iter()
                .filter(|r| r.role == "destination")
                .map(|r| r.name.clone())
                .collect();
            if reached.is_empty() {
                reached.push(destination.clone());
            }
            reached.sort();
            reached.dedup();
            let mut sources = sources.clone();
            sources.sort();
            sources.dedup();
            Target {
                sources,
                destinations: reached,
                ..Target::default()
            }
        }
        Subject::Landscape => return None,
    };
    Some(t)
}

#[cfg(test)]
pub(crate) mod testing {
    //! Findings for the patterns' tests.

    use schemas::{
        Caller, Confidence, Finding, Related, SCHEMA_VERSION, Severity, Signature, Subject, Window,
    };

    /// 2023-01-29T08:50:00Z, µs.
    pub const T0: i64 = 1_674_982_200_000_000;

    /// A finding of `signature` on `subject` in the window starting at `T0`.
    pub fn finding(signature: Signature, subject: Subject) -> Finding {
        let window = Window {
            start_us: T0,
            end_us: T0 + 10_000_000,
        };
        Finding {
            schema_version: SCHEMA_VERSION,
            kind: "finding".into(),
            id: format!("{}/{}/{T0}", signature.as_str(), subject.key()),
            signature,
            subject,
            window,
            severity: Severity::Critical,
            evidence: Vec::new(),
            callers: Vec::new(),
            summary: "something is wrong".into(),
            score: 0.999,
            confidence: Confidence::Normal,
            related: Vec::new(),
            rule: None,
        }
    }

    /// A caller with its rate now and its baseline, req/s.
    pub fn caller(service: &str, rate_rps: f64, baseline_rate_rps: f64) -> Caller {
        Caller {
            service: service.into(),
            rate_rps,
            baseline_rate_rps,
        }
    }

    /// A related entity.
    pub fn related(role: &str, name: &str) -> Related {
        Related {
            role: role.into(),
            name: name.into(),
            score: None,
            detail: String::new(),
        }
    }
}
