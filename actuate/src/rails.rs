//! Safety rails: a remediation system must not cause the outage. Between the patterns and the
//! outputs, every new command (and every renewal that widens one) passes:
//!
//! | rail | refuses a command when |
//! |---|---|
//! | `protected` | its target names a protected service (as a caller or a destination) or edge |
//! | `max-active` | `max-active` commands are in force already |
//! | `max-new-per-minute` | `max-new-per-minute` commands were issued in the last minute of event time |
//! | `blast-radius` | the commands in force, with it, would match more than `max-blast-radius` of the landscape's requests in the deciding window |
//!
//! The blast radius counts the requests a command may change: every request of a matched pair
//! (a zone or version narrowing is not subtracted, so the rail errs on the side of acting
//! less), but for backpressure only those above the caller's limit (limit × window length;
//! for a storm's or a DoS's command, of the caller's normal traffic: the excess above its
//! baseline rate is what the limit is for, and counting it would refuse the command that
//! stops the storm), and none for a segmentation that answers a segmentation violation or a
//! fan-in surge, which denies only edges a segment policy forbids or that were never seen
//! before (a DoS from another segment is most of the landscape's requests while it lasts:
//! counting them would refuse exactly the command that stops it; `protected` still guards the
//! edges that must never be denied; a segmentation a policy asks for on any other finding
//! denies edges in use, all of whose requests count). A pair matched by several commands
//! counts with the most any of them may change, backpressure with the lowest limit in force on
//! its caller. In a
//! scaled-out deployment (`[scale-out]`) each judge acts alone for the nodes it owns, with its
//! share of the rails ([`crate::Actuator::share_rails`]): 1/partitions of the counts, and half
//! the blast radius over the pairs it sees, so that the judges together stay within the
//! configured rails.

use std::collections::BTreeMap;

use schemas::{PairWindow, Parameters, Signature, Target};

use crate::config::RailsConfig;
use crate::error::{Error, Result};

/// Whether `text` matches `pattern` (`*`: any run of characters, `?`: one character).
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < t.len() {
        if i < p.len() && (p[i] == '?' || p[i] == t[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

/// A protected service or edge (globs).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Protected {
    Service(String),
    Edge(String, String),
}

/// The validated rails.
#[derive(Debug, Clone, PartialEq)]
pub struct Rails {
    /// Most commands in force (>= 1).
    pub max_active: usize,
    /// Most new commands per minute of event time (>= 1).
    pub max_new_per_minute: usize,
    /// Most share of the landscape's requests the commands in force may match, in (0, 1].
    pub max_blast_radius: f64,
    protected: Vec<Protected>,
}

impl Rails {
    /// Validates `config`.
    ///
    /// # Errors
    /// [`Error::Config`] naming `rails.<key>`.
    pub fn new(config: &RailsConfig) -> Result<Self> {
        let bad = |key: &str, value: String, reason: &str| Error::Config {
            key: format!("rails.{key}"),
            value,
            reason: reason.into(),
        };
        if config.max_active == 0 {
            return Err(bad("max-active", "0".into(), "must be at least 1"));
        }
        if config.max_new_per_minute == 0 {
            return Err(bad("max-new-per-minute", "0".into(), "must be at least 1"));
        }
        let b = config.max_blast_radius;
        if !(b > 0.0 && b <= 1.0) {
            return Err(bad(
                "max-blast-radius",
                b.to_string(),
                "must be a share above 0 and at most 1",
            ));
        }
        let mut protected = Vec::new();
        for p in &config.protected {
            let entry = match p.split_once("->") {
                Some((s, d))
                    if !s.trim().is_empty() && !d.trim().is_empty() && !d.contains("->") =>
                {
                    Protected::Edge(s.trim().to_owned(), d.trim().to_owned())
                }
                None if !p.trim().is_empty() => Protected::Service(p.trim().to_owned()),
                _ => {
                    return Err(bad(
                        "protected",
                        format!("{p:?}"),
                        "must be a service (`payment`) or an edge (`web->payment`)",
                    ));
                }
            };
            protected.push(entry);
        }
        Ok(Rails {
            max_active: config.max_active,
            max_new_per_minute: config.max_new_per_minute,
            max_blast_radius: b,
            protected,
        })
    }

    /// Whether `target` touches a protected service or edge (a target with no sources
    /// matches every caller, so a protected edge into one of its destinations).
    pub fn protects(&self, target: &Target) -> bool {
        self.protected.iter().any(|p| match p {
            Protected::Service(s) => target
                .sources
                .iter()
                .chain(&target.destinations)
                .any(|name| glob(s, name)),
            Protected::Edge(s, d) => target.destinations.iter().any(|dst| {
                glob(d, dst)
                    && (target.sources.is_empty() || target.sources.iter().any(|src| glob(s, src)))
            }),
        })
    }
}

/// Whether `target` matches the pair `source → destination` (zone and version narrowing
/// ignored: see the module docs).
pub fn matches(target: &Target, source: &str, destination: &str) -> bool {
    target.destinations.iter().any(|d| d == destination)
        && (target.sources.is_empty() || target.sources.iter().any(|s| s == source))
}

/// What a command in force (or asked for) may reach: its target, its parameters, the
/// signature of the finding behind it, and for backpressure its callers' baseline rates,
/// req/s ([`crate::Remedy::baseline_rps`]).
#[derive(Debug, Clone, Copy)]
pub struct Reach<'a> {
    /// The traffic it acts on.
    pub target: &'a Target,
    /// Its pattern's parameters.
    pub parameters: &'a Parameters,
    /// The signature of the finding that asked for it.
    pub signature: Signature,
    /// Backpressure: each caller's baseline rate toward the target, req/s (a caller missing
    /// here counts with its current rate).
    pub baseline_rps: &'a BTreeMap<String, f64>,
}

/// Whether a finding of `signature` is about traffic in excess of the callers' normal (a
/// storm, a DoS): what a limit sheds of that excess is not counted.
fn excess(signature: Signature) -> bool {
    matches!(
        signature,
        Signature::SynchronizedBurst | Signature::FanInSurge
    )
}

/// Whether a segmentation of `signature` denies only edges a segment policy forbids or that
/// were never seen before.
fn denies_only_new_edges(signature: Signature) -> bool {
    matches!(
        signature,
        Signature::SegmentationViolation | Signature::FanInSurge
    )
}

/// How many of `p`'s requests the commands matching it may change, together:
/// - backpressure: the lowest limit in force on the caller applies, so what it sheds of the
///   caller's traffic, `max(0, n − min(limit) × window)`, where `n` is the pair's requests, or
///   when a storm's or a DoS's command (synchronized burst, fan-in surge) limits the caller
///   too, at most the caller's baseline × window (the excess above its normal is what the
///   limit is for, not collateral);
/// - segmentation after a segmentation violation or a fan-in surge: none (see the module
///   docs); after any other finding, all of them;
/// - every other pattern: all of them;
///
/// and of these, the most; but a pair a segmentation denies counts only as that
/// segmentation does (the other commands have nothing left to change there: a DoS's edges,
/// denied, do not count again for the black hole the DoS made).
pub fn affected<'a>(reaches: impl Iterator<Item = Reach<'a>> + Clone, p: &PairWindow) -> f64 {
    let requests = p.requests as f64;
    let seconds = (p.window.end_us - p.window.start_us) as f64 / 1e6;
    let on_pair = reaches.filter(|r| matches(r.target, &p.source, &p.destination));
    let denied = on_pair
        .clone()
        .filter(|r| matches!(r.parameters, Parameters::Segmentation(_)))
        .map(|r| {
            if denies_only_new_edges(r.signature) {
                0.0
            } else {
                requests
            }
        })
        .reduce(f64::max);
    if let Some(d) = denied {
        return d;
    }
    let (mut most, mut lowest, mut normal) = (0.0_f64, f64::INFINITY, None::<f64>);
    for r in on_pair {
        match r.parameters {
            Parameters::Backpressure(b) => {
                let Some(limit) = b.rate_limit_rps.get(&p.source) else {
                    continue;
                };
                lowest = lowest.min(*limit);
                let base = r
                    .baseline_rps
                    .get(&p.source)
                    .filter(|b| excess(r.signature) && b.is_finite() && **b > 0.0);
                let n = base.map_or(requests, |b| requests.min(b * seconds));
                normal = Some(normal.map_or(n, |m: f64| m.min(n)));
            }
            _ => most = most.max(requests),
        }
    }
    if let Some(n) = normal {
        most = most.max((n - lowest * seconds).max(0.0));
    }
    most
}

/// The share of `pairs`' requests that the commands may change ([`affected`]), in [0, 1]
/// (0 when there is no request).
pub fn blast_radius<'a>(
    commands: impl Iterator<Item = Reach<'a>> + Clone,
    pairs: &[PairWindow],
) -> f64 {
    let (mut all, mut hit) = (0.0, 0.0);
    for p in pairs {
        all += p.requests as f64;
        hit += affected(commands.clone(), p);
    }
    if all == 0.0 { 0.0 } else { hit / all }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("room?-relay-*", "room2-relay-10"));
        assert!(!glob("room?-relay-*", "room12-relay-1"));
        assert!(glob("*-db", "order-db"));
        assert!(!glob("*-db", "order-dbx"));
        assert!(glob("a*b*c", "aXbYbZc"));
    }

    fn target(sources: &[&str], destinations: &[&str]) -> Target {
        Target {
            sources: sources.iter().map(|s| (*s).into()).collect(),
            destinations: destinations.iter().map(|s| (*s).into()).collect(),
            ..Target::default()
        }
    }

    #[test]
    fn protected_services_and_edges() {
        let rails = Rails::new(&RailsConfig {
            protected: vec!["payment*".into(), "web -> auth".into()],
            ..RailsConfig::default()
        })
        .unwrap();
        assert!(rails.protects(&target(&[], &["payment-gw"])));
        assert!(
            rails.protects(&target(&["payment"], &["ledger"])),
            "as a caller too"
        );
        assert!(rails.protects(&target(&["web", "mobile"], &["auth"])));
        assert!(
            rails.protects(&target(&[], &["auth"])),
            "every caller includes web"
        );
        assert!(!rails.protects(&target(&["mobile"], &["auth"])));
        let e = Rails::new(&RailsConfig {
            protected: vec!["->auth".into()],
            ..RailsConfig::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("rails.protected = \"->auth\""), "{e}");
        let e = Rails::new(&RailsConfig {
            protected: vec!["a->b->c".into()],
            ..RailsConfig::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("rails.protected = \"a->b->c\""), "{e}");
        let e = Rails::new(&RailsConfig {
            max_blast_radius: 0.0,
            ..RailsConfig::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("rails.max-blast-radius = 0"), "{e}");
    }
}
